//! `/api/v1/clinicians`: register, read, search, deactivate and reactivate clinicians.

use crate::AppState;
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http::{self, JsonBody, ListParams, eq};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use salus_domain::staff::clinician::{self, ClinicianInput};
use salus_domain::staff::{Clinician, ClinicianCommand};
use salus_kernel::text::fold;
use salus_store::{Filter, FilterOp};
use std::collections::HashMap;
use uuid::Uuid;

const BASE: &str = "/api/v1/clinicians";

/// Register a clinician.
#[utoipa::path(post, path = "/api/v1/clinicians", tag = "staff",
    request_body = ClinicianInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Registered", body = Clinician), (status = 409, description = "The credential is already registered")),
    security(("bearer" = ["clinicians:write"])))]
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<ClinicianInput>,
) -> Result<Response, ApiError> {
    let id = Uuid::now_v7();
    let input = body.value;
    if let Some(u) = input.user_id
        && state
            .services
            .row::<salus_domain::access::User>(&actor.ctx, u)
            .await?
            .is_none()
    {
        return Err(ApiError::validation(format!("no user with id {u}")).with("field", "user_id"));
    }
    http::create_resource(&state, &actor, &headers, BASE, &body.raw, |spec| {
        state.services.create::<Clinician, _>(
            &actor.ctx,
            id,
            move |_, _| Ok(ClinicianCommand::Register { id, input }),
            spec,
        )
    })
    .await
}

/// One clinician.
#[utoipa::path(get, path = "/api/v1/clinicians/{id}", tag = "staff",
    params(("id" = Uuid, Path, description = "Clinician id"), http::ReadParams),
    responses((status = 200, description = "The clinician", body = Clinician), (status = 404, description = "No such clinician")),
    security(("bearer" = ["clinicians:read"])))]
pub async fn read(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(params): Query<http::ReadParams>,
) -> Result<Response, ApiError> {
    http::read_resource::<Clinician>(
        &state,
        &actor,
        "clinician",
        &id,
        BASE,
        params.as_of.as_deref(),
    )
    .await
}

/// Clinicians in registration order: `name` (prefix of a family or given name, case and
/// accents ignored), `specialty`, `org_unit`, `status` (active | inactive).
#[utoipa::path(get, path = "/api/v1/clinicians", tag = "staff",
    params(("name" = Option<String>, Query, description = "Name prefix"), ("specialty" = Option<String>, Query, description = "Specialty"),
           ("org_unit" = Option<String>, Query, description = "Org unit"), ("status" = Option<String>, Query, description = "active | inactive"),
           ("limit" = Option<u32>, Query, description = "1-200, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items, next_cursor }")),
    security(("bearer" = ["clinicians:read"])))]
pub async fn search(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = ListParams::parse(raw, &["name", "specialty", "org_unit", "status"])?;
    let mut filters = Vec::new();
    if let Some(n) = p.get("name") {
        filters.push(Filter {
            also: Vec::new(),
            param: "name".into(),
            system: None,
            op: FilterOp::Prefix,
            value: fold(&n),
        });
    }
    for key in ["specialty", "org_unit"] {
        if let Some(v) = p.get(key) {
            filters.push(eq(key, fold(&v)));
        }
    }
    if let Some(s) = p.get("status") {
        if s != "active" && s != "inactive" {
            return Err(ApiError::bad_request(format!(
                "status '{s}' is not active or inactive"
            )));
        }
        filters.push(eq("status", s));
    }
    let rows = state
        .services
        .store
        .search(&actor.ctx, &p.query("clinician", filters, false))
        .await?;
    p.page(&state, &actor, rows).await
}

/// `deactivate` or `reactivate`. Needs If-Match.
#[utoipa::path(post, path = "/api/v1/clinicians/{id}/{action}", tag = "staff",
    params(("id" = Uuid, Path, description = "Clinician id"), ("action" = String, Path, description = "deactivate | reactivate"),
           ("If-Match" = String, Header, description = "The ETag read")),
    responses((status = 200, description = "Done", body = Clinician), (status = 422, description = "Not allowed in the current state")),
    security(("bearer" = ["clinicians:write"])))]
pub async fn action(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let target = http::ActionTarget {
        what: "clinician",
        collection: BASE,
        actions: clinician::ACTIONS,
    };
    http::act_on_resource::<Clinician, _>(
        &state,
        &actor,
        &headers,
        target,
        &id,
        action,
        &[],
        |action, _| Ok(ClinicianCommand::Transition(action)),
    )
    .await
}

/// Every event of the clinician, oldest first.
#[utoipa::path(get, path = "/api/v1/clinicians/{id}/history", tag = "staff",
    params(("id" = Uuid, Path, description = "Clinician id")),
    responses((status = 200, description = "{ id, items: [event] }"), (status = 404, description = "No such clinician")),
    security(("bearer" = ["clinicians:read"])))]
pub async fn history(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    http::history_resource::<Clinician>(&state, &actor, "clinician", &id).await
}

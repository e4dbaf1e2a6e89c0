//! `/api/v1/procedures`: record, read, history, list and enter-in-error.

use crate::AppState;
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http::{self, JsonBody, ListParams, OptionalJson, eq};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use salus_domain::clinical::procedure::{self, Procedure, ProcedureCommand, ProcedureInput};
use serde::Deserialize;
use std::collections::HashMap;

const BASE: &str = "/api/v1/procedures";

/// Record a performed procedure (SNOMED CT, check digit verified, or a local code).
#[utoipa::path(post, path = "/api/v1/procedures", tag = "procedures",
    request_body = ProcedureInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Recorded", body = Procedure), (status = 422, description = "Invalid code, patient, encounter or performer")),
    security(("bearer" = ["procedures:write"])))]
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<ProcedureInput>,
) -> Result<Response, ApiError> {
    let input = body.value;
    http::create_resource(&state, &actor, &headers, BASE, &body.raw, |spec| {
        procedure::record(&state.services, &actor.ctx, input, spec)
    })
    .await
}

/// One procedure, now or `as_of` a past instant.
#[utoipa::path(get, path = "/api/v1/procedures/{id}", tag = "procedures",
    params(("id" = Uuid, Path, description = "Procedure id"), http::ReadParams),
    responses((status = 200, description = "The procedure", body = Procedure), (status = 404, description = "No such procedure")),
    security(("bearer" = ["procedures:read"])))]
pub async fn read(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(params): Query<http::ReadParams>,
) -> Result<Response, ApiError> {
    http::read_resource::<Procedure>(
        &state,
        &actor,
        "procedure",
        &id,
        BASE,
        params.as_of.as_deref(),
    )
    .await
}

/// Every event of the procedure, oldest first.
#[utoipa::path(get, path = "/api/v1/procedures/{id}/history", tag = "procedures",
    params(("id" = Uuid, Path, description = "Procedure id")),
    responses((status = 200, description = "{ id, items: [event] }"), (status = 404, description = "No such procedure")),
    security(("bearer" = ["procedures:read"])))]
pub async fn history(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    http::history_resource::<Procedure>(&state, &actor, "procedure", &id).await
}

/// Procedures, latest performed first: by `patient_id`, `performer_id`, `code`
/// (`system|code` or bare), `from`/`to` on `performed_at`.
#[utoipa::path(get, path = "/api/v1/procedures", tag = "procedures",
    params(("patient_id" = Option<Uuid>, Query, description = "Patient (following merges)"), ("performer_id" = Option<Uuid>, Query, description = "Clinician"),
           ("code" = Option<String>, Query, description = "system|code or code"),
           ("from" = Option<String>, Query, description = "performed at or after (RFC 3339)"), ("to" = Option<String>, Query, description = "performed before (RFC 3339)"),
           ("limit" = Option<u32>, Query, description = "1-200, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items, next_cursor }")),
    security(("bearer" = ["procedures:read"])))]
pub async fn search(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = ListParams::parse(raw, &["patient_id", "performer_id", "code", "from", "to"])?;
    let mut filters = Vec::new();
    if let Some(v) = p.get("patient_id") {
        filters.push(http::patient_filter(&state, &actor, &v).await?);
    }
    if let Some(v) = p.get("performer_id") {
        let id = uuid::Uuid::parse_str(&v)
            .map_err(|_| ApiError::bad_request("performer_id must be a UUID"))?;
        filters.push(eq("performer", id.to_string()));
    }
    if let Some(c) = p.get("code") {
        filters.push(http::token("code", &c));
    }
    filters.extend(http::instant_range(&p, "performed_at")?);
    let rows = state
        .services
        .store
        .search(
            &actor.ctx,
            &p.query_ordered("procedure", filters, true, "performed_at"),
        )
        .await?;
    p.page_ordered(&state, &actor, rows, |r| {
        http::doc_instant(r, "performed_at")
    })
    .await
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcedureActionInput {
    /// Why the record is withdrawn (required).
    pub reason: Option<String>,
}

/// `enter-in-error` with a reason. Needs If-Match.
#[utoipa::path(post, path = "/api/v1/procedures/{id}/{action}", tag = "procedures",
    params(("id" = Uuid, Path, description = "Procedure id"), ("action" = String, Path, description = "enter-in-error"),
           ("If-Match" = String, Header, description = "The ETag read"),
           ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    request_body = ProcedureActionInput,
    responses((status = 200, description = "Done", body = Procedure), (status = 422, description = "Missing reason, or withdrawn already"), (status = 412, description = "Stale If-Match")),
    security(("bearer" = ["procedures:write"])))]
pub async fn action(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: OptionalJson<ProcedureActionInput>,
) -> Result<Response, ApiError> {
    let target = http::ActionTarget {
        what: "procedure",
        collection: BASE,
        actions: procedure::ACTIONS,
    };
    let reason = body.value.unwrap_or_default().reason.unwrap_or_default();
    http::act_on_resource::<Procedure, _>(
        &state,
        &actor,
        &headers,
        target,
        &id,
        action,
        &body.raw,
        move |_, _| Ok(ProcedureCommand::EnterInError { reason }),
    )
    .await
}

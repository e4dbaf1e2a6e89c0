//! `/api/v1/outcomes` and `/api/v1/interactions` (requirements/004): the tenant's
//! configurable outcomes, and interactions recorded against patients with one of them.

use crate::AppState;
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http::{self, JsonBody, ListParams, finish};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use salus_domain::clinical::interaction::{self, InteractionInput};
use salus_domain::clinical::outcome::{self, OutcomeInput};
use salus_domain::clinical::{Interaction, InteractionKind, Outcome, OutcomeCommand};
use salus_store::{Filter, FilterOp};
use serde_json::json;
use std::collections::HashMap;
use uuid::Uuid;

const OUTCOMES: &str = "/api/v1/outcomes";
const INTERACTIONS: &str = "/api/v1/interactions";

/// The tenant's outcomes, least severe first. Retired ones only with `include_retired=true`.
#[utoipa::path(get, path = "/api/v1/outcomes", tag = "interactions",
    params(("include_retired" = Option<bool>, Query, description = "Also list retired outcomes")),
    responses((status = 200, description = "{ items: [Outcome] }")),
    security(("bearer" = [])))]
pub async fn list_outcomes(
    State(state): State<AppState>,
    actor: Actor,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    actor.require("interactions:read")?;
    let include_retired = match q.get("include_retired").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "include_retired '{other}' is not true or false"
            )));
        }
    };
    let items: Vec<Outcome> = outcome::list(&state.services, &actor.ctx)
        .await?
        .into_iter()
        .filter(|o| include_retired || o.active)
        .collect();
    Ok(axum::Json(json!({ "items": items })).into_response())
}

/// Define a new outcome.
#[utoipa::path(post, path = "/api/v1/outcomes", tag = "interactions",
    request_body = OutcomeInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Defined", body = Outcome), (status = 409, description = "The code is taken")),
    security(("bearer" = [])))]
pub async fn define_outcome(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<OutcomeInput>,
) -> Result<Response, ApiError> {
    actor.require("outcomes:write")?;
    let id = Uuid::now_v7();
    let input = body.value;
    http::create_resource(&state, &actor, &headers, OUTCOMES, &body.raw, |spec| {
        state.services.create::<Outcome, _>(
            &actor.ctx,
            id,
            move |_, _| Ok(OutcomeCommand::Define { id, input }),
            spec,
        )
    })
    .await
}

/// Retire an outcome: interactions already recorded keep it; new ones may not use it.
#[utoipa::path(post, path = "/api/v1/outcomes/{id}/retire", tag = "interactions",
    params(("id" = Uuid, Path, description = "Outcome id"), ("If-Match" = String, Header, description = "The ETag read")),
    responses((status = 200, description = "Retired", body = Outcome), (status = 412, description = "Stale If-Match")),
    security(("bearer" = [])))]
pub async fn retire_outcome(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    actor.require("outcomes:write")?;
    let id = http::parse_uuid("outcome", &id)?;
    let expected = http::if_match(&headers)?;
    let result = state
        .services
        .execute::<Outcome, _>(
            &actor.ctx,
            id,
            expected,
            |_, _| Ok(OutcomeCommand::Retire),
            None,
        )
        .await;
    finish(&state, &actor, OUTCOMES, None, result.map(|c| (200, c.row))).await
}

/// Record an interaction with a patient.
#[utoipa::path(post, path = "/api/v1/interactions", tag = "interactions",
    request_body = InteractionInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Recorded", body = Interaction), (status = 422, description = "Unknown patient, kind or outcome")),
    security(("bearer" = [])))]
pub async fn record(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<InteractionInput>,
) -> Result<Response, ApiError> {
    actor.require("interactions:write")?;
    let input = body.value;
    http::create_resource(&state, &actor, &headers, INTERACTIONS, &body.raw, |spec| {
        interaction::record(&state.services, &actor.ctx, input, spec)
    })
    .await
}

/// One interaction.
#[utoipa::path(get, path = "/api/v1/interactions/{id}", tag = "interactions",
    params(("id" = Uuid, Path, description = "Interaction id"), http::ReadParams),
    responses((status = 200, description = "The interaction", body = Interaction), (status = 404, description = "No such interaction")),
    security(("bearer" = [])))]
pub async fn read(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(params): Query<http::ReadParams>,
) -> Result<Response, ApiError> {
    actor.require("interactions:read")?;
    http::read_resource::<Interaction>(
        &state,
        &actor,
        "interaction",
        &id,
        INTERACTIONS,
        params.as_of.as_deref(),
    )
    .await
}

const LIST_KEYS: &[&str] = &["patient_id", "kind", "outcome", "from", "to"];

/// Interactions, the latest `occurred_at` first (then the latest recorded), filtered by patient, kind, outcome and the
/// time they occurred (`from` inclusive, `to` exclusive, RFC 3339 with a time zone).
#[utoipa::path(get, path = "/api/v1/interactions", tag = "interactions",
    params(("patient_id" = Option<Uuid>, Query, description = "Only this patient's"),
           ("kind" = Option<String>, Query, description = "visit | call | message | home_visit"),
           ("outcome" = Option<String>, Query, description = "An outcome code"),
           ("from" = Option<String>, Query, description = "occurred_at at or after"),
           ("to" = Option<String>, Query, description = "occurred_at before"),
           ("limit" = Option<u32>, Query, description = "1-200, default 50"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items, next_cursor }")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    actor.require("interactions:read")?;
    let params = ListParams::parse(raw, LIST_KEYS)?;
    let get = |k: &str| params.get(k);
    let filter = |param: &str, op: FilterOp, value: String| Filter {
        param: param.into(),
        system: None,
        op,
        value,
    };
    let mut filters = Vec::new();
    if let Some(p) = get("patient_id") {
        let id =
            Uuid::parse_str(&p).map_err(|_| ApiError::bad_request("patient_id must be a UUID"))?;
        filters.push(filter("patient", FilterOp::Eq, id.to_string()));
    }
    if let Some(k) = get("kind") {
        let kind = InteractionKind::parse(&k).map_err(|e| ApiError::bad_request(e.to_string()))?;
        filters.push(filter("kind", FilterOp::Eq, kind.as_str().into()));
    }
    if let Some(o) = get("outcome") {
        filters.push(filter("outcome", FilterOp::Eq, o.to_ascii_lowercase()));
    }
    filters.extend(http::instant_range(&params, "occurred_at")?);
    let rows = state
        .services
        .store
        .search(
            &actor.ctx,
            &params.query_ordered("interaction", filters, true, "occurred_at"),
        )
        .await?;
    Ok(params.page_ordered(rows, |r| http::doc_instant(r, "occurred_at")))
}

/// Every event of the interaction, oldest first.
#[utoipa::path(get, path = "/api/v1/interactions/{id}/history", tag = "interactions",
    params(("id" = Uuid, Path, description = "Interaction id")),
    responses((status = 200, description = "{ id, items: [event] }"), (status = 404, description = "No such interaction")),
    security(("bearer" = [])))]
pub async fn history(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    actor.require("interactions:read")?;
    http::history_resource::<Interaction>(&state, &actor, "interaction", &id).await
}

//! `/api/v1/encounters`: schedule, read, list, and move encounters through
//! `scheduled → in_progress → completed → archived` (or `scheduled → cancelled`).

use crate::AppState;
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http::{self, JsonBody, ListParams, OptionalJson, eq};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use salus_domain::clinical::encounter::{
    self, Encounter, EncounterCommand, EncounterInput, EncounterStatus, EncounterType,
};
use serde::Deserialize;
use std::collections::HashMap;
use uuid::Uuid;

const BASE: &str = "/api/v1/encounters";

/// Schedule an encounter for a patient with an active clinician.
#[utoipa::path(post, path = "/api/v1/encounters", tag = "encounters",
    request_body = EncounterInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Scheduled", body = Encounter), (status = 422, description = "Unknown patient, clinician or department (or an inactive one), bad type")),
    security(("bearer" = ["encounters:write"])))]
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<EncounterInput>,
) -> Result<Response, ApiError> {
    let input = body.value;
    http::create_resource(&state, &actor, &headers, BASE, &body.raw, |spec| {
        encounter::schedule(&state.services, &actor.ctx, input, spec)
    })
    .await
}

/// One encounter.
#[utoipa::path(get, path = "/api/v1/encounters/{id}", tag = "encounters",
    params(("id" = Uuid, Path, description = "Encounter id"), http::ReadParams),
    responses((status = 200, description = "The encounter", body = Encounter), (status = 404, description = "No such encounter")),
    security(("bearer" = ["encounters:read"])))]
pub async fn read(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(params): Query<http::ReadParams>,
) -> Result<Response, ApiError> {
    http::read_resource::<Encounter>(
        &state,
        &actor,
        "encounter",
        &id,
        BASE,
        params.as_of.as_deref(),
    )
    .await
}

/// Encounters, most recently scheduled first: by `patient_id`, `clinician_id`, `department_id`, `status`,
/// `type`, and a date range (`from` inclusive, `to` exclusive) on the start time, or the
/// planned time while not started.
#[utoipa::path(get, path = "/api/v1/encounters", tag = "encounters",
    params(("patient_id" = Option<Uuid>, Query, description = "Patient (following merges)"), ("clinician_id" = Option<Uuid>, Query, description = "Clinician"),
           ("department_id" = Option<Uuid>, Query, description = "Department"),
           ("status" = Option<String>, Query, description = "scheduled | in_progress | completed | archived | cancelled"),
           ("type" = Option<String>, Query, description = "inpatient | outpatient | emergency | virtual | home"),
           ("from" = Option<String>, Query, description = "date at or after (RFC 3339)"), ("to" = Option<String>, Query, description = "date before (RFC 3339)"),
           ("limit" = Option<u32>, Query, description = "1-200, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items, next_cursor }")),
    security(("bearer" = ["encounters:read"])))]
pub async fn search(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = ListParams::parse(
        raw,
        &[
            "patient_id",
            "clinician_id",
            "department_id",
            "status",
            "type",
            "from",
            "to",
        ],
    )?;
    let mut filters = Vec::new();
    if let Some(v) = p.get("patient_id") {
        filters.push(http::patient_filter(&state, &actor, &v).await?);
    }
    for (key, param) in [
        ("clinician_id", "clinician"),
        ("department_id", "department"),
    ] {
        if let Some(v) = p.get(key) {
            let id = Uuid::parse_str(&v)
                .map_err(|_| ApiError::bad_request(format!("{key} must be a UUID")))?;
            filters.push(eq(param, id.to_string()));
        }
    }
    if let Some(s) = p.get("status") {
        let s = EncounterStatus::parse(&s).ok_or_else(|| {
            ApiError::bad_request(format!("status '{s}' is not an encounter status"))
        })?;
        filters.push(eq("status", s.as_str()));
    }
    if let Some(t) = p.get("type") {
        let t = EncounterType::parse(&t).map_err(|e| ApiError::bad_request(e.to_string()))?;
        filters.push(eq("type", t.as_str()));
    }
    filters.extend(http::instant_range(&p, "date")?);
    let rows = state
        .services
        .store
        .search(&actor.ctx, &p.query("encounter", filters, true))
        .await?;
    p.page(&state, &actor, rows).await
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EncounterActionInput {
    /// Why (cancel).
    pub reason: Option<String>,
}

/// `start`, `complete`, `archive` or `cancel`. Needs If-Match. Start and end times are the
/// moments of `start` and `complete`.
#[utoipa::path(post, path = "/api/v1/encounters/{id}/{action}", tag = "encounters",
    params(("id" = Uuid, Path, description = "Encounter id"), ("action" = String, Path, description = "start | complete | archive | cancel"),
           ("If-Match" = String, Header, description = "The ETag read"),
           ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    request_body(content = Option<EncounterActionInput>),
    responses((status = 200, description = "Done", body = Encounter), (status = 422, description = "Not allowed in the current state"), (status = 412, description = "Stale If-Match")),
    security(("bearer" = ["encounters:write"])))]
pub async fn action(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: OptionalJson<EncounterActionInput>,
) -> Result<Response, ApiError> {
    let target = http::ActionTarget {
        what: "encounter",
        collection: BASE,
        actions: encounter::ACTIONS,
    };
    let reason = body.value.unwrap_or_default().reason;
    http::act_on_resource::<Encounter, _>(
        &state,
        &actor,
        &headers,
        target,
        &id,
        action,
        &body.raw,
        move |action, now| {
            Ok(EncounterCommand::Transition {
                action,
                at: now,
                reason,
            })
        },
    )
    .await
}

/// Every event of the encounter, oldest first.
#[utoipa::path(get, path = "/api/v1/encounters/{id}/history", tag = "encounters",
    params(("id" = Uuid, Path, description = "Encounter id")),
    responses((status = 200, description = "{ id, items: [event] }"), (status = 404, description = "No such encounter")),
    security(("bearer" = ["encounters:read"])))]
pub async fn history(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    http::history_resource::<Encounter>(&state, &actor, "encounter", &id).await
}

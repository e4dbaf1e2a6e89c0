//! `/api/v1/observations`: record, read, history, list, amend and enter-in-error.

use crate::AppState;
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http::{self, JsonBody, ListParams, OptionalJson, eq};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use salus_domain::clinical::observation::{
    self, Observation, ObservationCommand, ObservationInput, ObservationStatus, ObservationValue,
};
use salus_kernel::DomainError;
use serde::Deserialize;
use std::collections::HashMap;

const BASE: &str = "/api/v1/observations";

/// Record an observation (LOINC or local code, typed value).
#[utoipa::path(post, path = "/api/v1/observations", tag = "observations",
    request_body = ObservationInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Recorded", body = Observation), (status = 422, description = "Invalid code, value, patient or encounter")),
    security(("bearer" = ["observations:write"])))]
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<ObservationInput>,
) -> Result<Response, ApiError> {
    let input = body.value;
    http::create_resource(&state, &actor, &headers, BASE, &body.raw, |spec| {
        observation::record(&state.services, &actor.ctx, input, spec)
    })
    .await
}

/// One observation, now or `as_of` a past instant.
#[utoipa::path(get, path = "/api/v1/observations/{id}", tag = "observations",
    params(("id" = Uuid, Path, description = "Observation id"), http::ReadParams),
    responses((status = 200, description = "The observation", body = Observation), (status = 404, description = "No such observation")),
    security(("bearer" = ["observations:read"])))]
pub async fn read(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(params): Query<http::ReadParams>,
) -> Result<Response, ApiError> {
    http::read_resource::<Observation>(
        &state,
        &actor,
        "observation",
        &id,
        BASE,
        params.as_of.as_deref(),
    )
    .await
}

/// Every event of the observation (its values before amendment included), oldest first.
#[utoipa::path(get, path = "/api/v1/observations/{id}/history", tag = "observations",
    params(("id" = Uuid, Path, description = "Observation id")),
    responses((status = 200, description = "{ id, items: [event] }"), (status = 404, description = "No such observation")),
    security(("bearer" = ["observations:read"])))]
pub async fn history(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    http::history_resource::<Observation>(&state, &actor, "observation", &id).await
}

/// Observations, latest `effective_at` first: by `patient_id`, `code` (`system|code` or a
/// bare code), `status`, and `from`/`to` on `effective_at`.
#[utoipa::path(get, path = "/api/v1/observations", tag = "observations",
    params(("patient_id" = Option<Uuid>, Query, description = "Patient (following merges)"), ("code" = Option<String>, Query, description = "system|code or code"),
           ("status" = Option<String>, Query, description = "preliminary | final | amended | entered_in_error"),
           ("from" = Option<String>, Query, description = "effective at or after (RFC 3339)"), ("to" = Option<String>, Query, description = "effective before (RFC 3339)"),
           ("limit" = Option<u32>, Query, description = "1-200, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items, next_cursor }")),
    security(("bearer" = ["observations:read"])))]
pub async fn search(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = ListParams::parse(raw, &["patient_id", "code", "status", "from", "to"])?;
    let mut filters = Vec::new();
    if let Some(v) = p.get("patient_id") {
        filters.push(http::patient_filter(&state, &actor, &v).await?);
    }
    if let Some(c) = p.get("code") {
        filters.push(http::token("code", &c));
    }
    if let Some(s) = p.get("status") {
        let s = ObservationStatus::parse(&s).ok_or_else(|| {
            ApiError::bad_request(format!("status '{s}' is not an observation status"))
        })?;
        filters.push(eq("status", s.as_str()));
    }
    filters.extend(http::instant_range(&p, "effective_at")?);
    let rows = state
        .services
        .store
        .search(
            &actor.ctx,
            &p.query_ordered("observation", filters, true, "effective_at"),
        )
        .await?;
    p.page_ordered(&state, &actor, rows, |r| {
        http::doc_instant(r, "effective_at")
    })
    .await
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservationActionInput {
    /// The corrected value (amend).
    pub value: Option<ObservationValue>,
    /// Why: required for both actions.
    pub reason: Option<String>,
}

/// `amend` (a new value, with a reason) or `enter-in-error` (with a reason). Needs If-Match.
#[utoipa::path(post, path = "/api/v1/observations/{id}/{action}", tag = "observations",
    params(("id" = Uuid, Path, description = "Observation id"), ("action" = String, Path, description = "amend | enter-in-error"),
           ("If-Match" = String, Header, description = "The ETag read"),
           ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    request_body = ObservationActionInput,
    responses((status = 200, description = "Done", body = Observation), (status = 422, description = "Missing reason or value, or withdrawn already"), (status = 412, description = "Stale If-Match")),
    security(("bearer" = ["observations:write"])))]
pub async fn action(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: OptionalJson<ObservationActionInput>,
) -> Result<Response, ApiError> {
    let target = http::ActionTarget {
        what: "observation",
        collection: BASE,
        actions: observation::ACTIONS,
    };
    let input = body.value.unwrap_or_default();
    http::act_on_resource::<Observation, _>(
        &state,
        &actor,
        &headers,
        target,
        &id,
        action,
        &body.raw,
        move |action, _| {
            let reason = input.reason.unwrap_or_default();
            if action == "amend" {
                let value = input.value.ok_or_else(|| {
                    DomainError::invalid("value", "amend needs the corrected value")
                })?;
                Ok(ObservationCommand::Amend {
                    value,
                    reason,
                    fhir_elements: None,
                })
            } else {
                Ok(ObservationCommand::EnterInError { reason })
            }
        },
    )
    .await
}

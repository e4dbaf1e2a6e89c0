//! `/api/v1/conditions` and `/api/v1/allergies`: record, read, history, list and change
//! the status of the patient's coded statements. One generic implementation serves both;
//! the handlers below only name the route, the kind and the permission.

use crate::AppState;
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http::{self, JsonBody, ListParams, OptionalJson, eq};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use salus_domain::clinical::statement::{
    self, Allergy, AllergyKind, Condition, ConditionKind, Statement, StatementCommand,
    StatementInput, StatementKind, StatusInput,
};
use std::collections::HashMap;

const CONDITIONS: &str = "/api/v1/conditions";
const ALLERGIES: &str = "/api/v1/allergies";

async fn create<K: StatementKind>(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    body: JsonBody<StatementInput>,
    base: &str,
) -> Result<Response, ApiError> {
    let input = body.value;
    http::create_resource(state, actor, headers, base, &body.raw, |spec| {
        statement::record::<K>(&state.services, &actor.ctx, input, spec)
    })
    .await
}

async fn search<K: StatementKind>(
    state: &AppState,
    actor: &Actor,
    raw: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let p = ListParams::parse(
        raw,
        &[
            "patient_id",
            "code",
            "clinical_status",
            "verification_status",
        ],
    )?;
    let mut filters = Vec::new();
    if let Some(v) = p.get("patient_id") {
        filters.push(http::patient_filter(state, actor, &v).await?);
    }
    if let Some(c) = p.get("code") {
        filters.push(http::token("code", &c));
    }
    for (key, allowed) in [
        ("clinical_status", K::CLINICAL),
        ("verification_status", K::VERIFICATION),
    ] {
        if let Some(v) = p.get(key) {
            if !allowed.contains(&v.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "{key} '{v}' is not one of {}",
                    allowed.join(", ")
                )));
            }
            filters.push(eq(key, v));
        }
    }
    let rows = state
        .services
        .store
        .search(&actor.ctx, &p.query(K::NAME, filters, true))
        .await?;
    p.page(state, actor, rows).await
}

#[allow(clippy::too_many_arguments)]
async fn set_status<K: StatementKind>(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    id: &str,
    action: String,
    body: OptionalJson<StatusInput>,
    base: &str,
) -> Result<Response, ApiError> {
    let target = http::ActionTarget {
        what: K::NAME,
        collection: base,
        actions: &["set-status"],
    };
    let input = body.value.unwrap_or_default();
    http::act_on_resource::<Statement<K>, _>(
        state,
        actor,
        headers,
        target,
        id,
        action,
        &body.raw,
        move |_, _| Ok(StatementCommand::SetStatus(input)),
    )
    .await
}

/// Record a condition (problem or diagnosis).
#[utoipa::path(post, path = "/api/v1/conditions", tag = "conditions", request_body = StatementInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Recorded", body = Condition), (status = 422, description = "Invalid input")), security(("bearer" = ["conditions:write"])))]
pub async fn create_condition(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<StatementInput>,
) -> Result<Response, ApiError> {
    create::<ConditionKind>(&state, &actor, &headers, body, CONDITIONS).await
}

/// Conditions, most recently recorded first: by `patient_id`, `code`, `clinical_status`, `verification_status`.
#[utoipa::path(get, path = "/api/v1/conditions", tag = "conditions",
    params(("patient_id" = Option<Uuid>, Query, description = "Patient (following merges)"), ("code" = Option<String>, Query, description = "system|code or code"),
           ("clinical_status" = Option<String>, Query, description = "active | recurrence | relapse | inactive | remission | resolved"),
           ("verification_status" = Option<String>, Query, description = "unconfirmed | provisional | differential | confirmed | refuted | entered_in_error"),
           ("limit" = Option<u32>, Query, description = "1-200, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items, next_cursor }")), security(("bearer" = ["conditions:read"])))]
pub async fn search_conditions(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    search::<ConditionKind>(&state, &actor, raw).await
}

/// One condition, now or `as_of` a past instant.
#[utoipa::path(get, path = "/api/v1/conditions/{id}", tag = "conditions", params(("id" = Uuid, Path, description = "Condition id"), http::ReadParams),
    responses((status = 200, description = "The condition", body = Condition), (status = 404, description = "No such condition")), security(("bearer" = ["conditions:read"])))]
pub async fn read_condition(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(params): Query<http::ReadParams>,
) -> Result<Response, ApiError> {
    http::read_resource::<Condition>(
        &state,
        &actor,
        "condition",
        &id,
        CONDITIONS,
        params.as_of.as_deref(),
    )
    .await
}

/// Every event of the condition, oldest first.
#[utoipa::path(get, path = "/api/v1/conditions/{id}/history", tag = "conditions", params(("id" = Uuid, Path, description = "Condition id")),
    responses((status = 200, description = "{ id, items: [event] }"), (status = 404, description = "No such condition")), security(("bearer" = ["conditions:read"])))]
pub async fn condition_history(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    http::history_resource::<Condition>(&state, &actor, "condition", &id).await
}

/// `set-status`: change the clinical and/or verification status. Needs If-Match.
#[utoipa::path(post, path = "/api/v1/conditions/{id}/{action}", tag = "conditions",
    params(("id" = Uuid, Path, description = "Condition id"), ("action" = String, Path, description = "set-status"), ("If-Match" = String, Header, description = "The ETag read")),
    request_body = StatusInput, responses((status = 200, description = "Changed", body = Condition), (status = 412, description = "Stale If-Match")), security(("bearer" = ["conditions:write"])))]
pub async fn condition_action(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: OptionalJson<StatusInput>,
) -> Result<Response, ApiError> {
    set_status::<ConditionKind>(&state, &actor, &headers, &id, action, body, CONDITIONS).await
}

/// Record an allergy or intolerance (publishes `allergy.recorded`).
#[utoipa::path(post, path = "/api/v1/allergies", tag = "allergies", request_body = StatementInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Recorded", body = Allergy), (status = 422, description = "Invalid input")), security(("bearer" = ["allergies:write"])))]
pub async fn create_allergy(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<StatementInput>,
) -> Result<Response, ApiError> {
    create::<AllergyKind>(&state, &actor, &headers, body, ALLERGIES).await
}

/// Allergies, most recently recorded first: by `patient_id`, `code`, `clinical_status`, `verification_status`.
#[utoipa::path(get, path = "/api/v1/allergies", tag = "allergies",
    params(("patient_id" = Option<Uuid>, Query, description = "Patient (following merges)"), ("code" = Option<String>, Query, description = "system|code or code"),
           ("clinical_status" = Option<String>, Query, description = "active | inactive | resolved"),
           ("verification_status" = Option<String>, Query, description = "unconfirmed | presumed | confirmed | refuted | entered_in_error"),
           ("limit" = Option<u32>, Query, description = "1-200, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items, next_cursor }")), security(("bearer" = ["allergies:read"])))]
pub async fn search_allergies(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    search::<AllergyKind>(&state, &actor, raw).await
}

/// One allergy, now or `as_of` a past instant.
#[utoipa::path(get, path = "/api/v1/allergies/{id}", tag = "allergies", params(("id" = Uuid, Path, description = "Allergy id"), http::ReadParams),
    responses((status = 200, description = "The allergy", body = Allergy), (status = 404, description = "No such allergy")), security(("bearer" = ["allergies:read"])))]
pub async fn read_allergy(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(params): Query<http::ReadParams>,
) -> Result<Response, ApiError> {
    http::read_resource::<Allergy>(
        &state,
        &actor,
        "allergy",
        &id,
        ALLERGIES,
        params.as_of.as_deref(),
    )
    .await
}

/// Every event of the allergy, oldest first.
#[utoipa::path(get, path = "/api/v1/allergies/{id}/history", tag = "allergies", params(("id" = Uuid, Path, description = "Allergy id")),
    responses((status = 200, description = "{ id, items: [event] }"), (status = 404, description = "No such allergy")), security(("bearer" = ["allergies:read"])))]
pub async fn allergy_history(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    http::history_resource::<Allergy>(&state, &actor, "allergy", &id).await
}

/// `set-status`: change the clinical and/or verification status. Needs If-Match.
#[utoipa::path(post, path = "/api/v1/allergies/{id}/{action}", tag = "allergies",
    params(("id" = Uuid, Path, description = "Allergy id"), ("action" = String, Path, description = "set-status"), ("If-Match" = String, Header, description = "The ETag read")),
    request_body = StatusInput, responses((status = 200, description = "Changed", body = Allergy), (status = 412, description = "Stale If-Match")), security(("bearer" = ["allergies:write"])))]
pub async fn allergy_action(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: OptionalJson<StatusInput>,
) -> Result<Response, ApiError> {
    set_status::<AllergyKind>(&state, &actor, &headers, &id, action, body, ALLERGIES).await
}

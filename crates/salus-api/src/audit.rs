//! The audit API over the data-access log: every read of patient data
//! (`GET /api/v1/audit/access`), the break-glass report (`GET /api/v1/audit/break-glass`),
//! and a patient's "who looked at my record" (`GET /api/v1/patients/{id}/access`).

use crate::AppState;
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use salus_kernel::ActorId;
use salus_store::access::{AccessAction, AccessQuery};
use std::collections::HashMap;
use uuid::Uuid;

/// The filters and page of an access-log query, from query parameters (`known` of them).
fn parse_query(raw: &HashMap<String, String>, known: &[&str]) -> Result<AccessQuery, ApiError> {
    if let Some(k) = raw
        .keys()
        .find(|k| !known.contains(&k.as_str()) && *k != "limit" && *k != "cursor")
    {
        return Err(ApiError::bad_request(format!(
            "unknown parameter '{k}'; parameters are: {}, limit, cursor",
            known.join(", ")
        )));
    }
    let get = |k: &str| raw.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let uuid = |k: &str| -> Result<Option<Uuid>, ApiError> {
        get(k)
            .map(|v| {
                Uuid::parse_str(v).map_err(|_| ApiError::bad_request(format!("{k} must be a UUID")))
            })
            .transpose()
    };
    let limit = match get("limit") {
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| ApiError::bad_request("limit must be a whole number from 1 to 500"))?,
        None => 100,
    };
    let after = get("cursor")
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::bad_request("cursor must be a next_cursor of this list"))
        })
        .transpose()?;
    let action = get("action")
        .map(|a| {
            AccessAction::parse(a).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "action '{a}' is not one of {}",
                    AccessAction::ALL.map(AccessAction::as_str).join(", ")
                ))
            })
        })
        .transpose()?;
    Ok(AccessQuery {
        patient: uuid("patient_id")?,
        actor: uuid("actor_id")?.map(ActorId),
        from: get("from")
            .map(|t| http::parse_instant("from", t))
            .transpose()?,
        to: get("to")
            .map(|t| http::parse_instant("to", t))
            .transpose()?,
        action,
        break_glass: None,
        after,
        limit: limit + 1,
    })
}

/// `{ items, next_cursor }` for a query (which asked for one entry more than the page).
async fn page(state: &AppState, actor: &Actor, q: AccessQuery) -> Result<Response, ApiError> {
    let mut rows = state.services.store.access_log(&actor.ctx, &q).await?;
    let limit = q.limit.saturating_sub(1) as usize;
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| r.seq.to_string())
    } else {
        None
    };
    Ok(axum::Json(serde_json::json!({ "items": rows, "next_cursor": next })).into_response())
}

const FILTERS: &[&str] = &["patient_id", "actor_id", "from", "to", "action"];

/// The tenant's data-access log: who read which patient's data, when, why and from where,
/// in the order it was logged.
#[utoipa::path(get, path = "/api/v1/audit/access", tag = "audit",
    params(("patient_id" = Option<Uuid>, Query, description = "Only reads of this patient's data"),
           ("actor_id" = Option<Uuid>, Query, description = "Only reads by this user"),
           ("from" = Option<String>, Query, description = "Logged at or after (RFC 3339)"),
           ("to" = Option<String>, Query, description = "Logged before (RFC 3339)"),
           ("action" = Option<String>, Query, description = "read | search | export | download"),
           ("limit" = Option<u32>, Query, description = "1-500, default 100"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items: [access entry], next_cursor }"), (status = 400, description = "A bad filter")),
    security(("bearer" = ["audit:read"])))]
pub async fn access(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = parse_query(&raw, FILTERS)?;
    page(&state, &actor, q).await
}

/// The break-glass report: reads made under `X-Break-Glass`, with their reasons.
#[utoipa::path(get, path = "/api/v1/audit/break-glass", tag = "audit",
    params(("patient_id" = Option<Uuid>, Query, description = "Only reads of this patient's data"),
           ("actor_id" = Option<Uuid>, Query, description = "Only reads by this user"),
           ("from" = Option<String>, Query, description = "Logged at or after (RFC 3339)"),
           ("to" = Option<String>, Query, description = "Logged before (RFC 3339)"),
           ("action" = Option<String>, Query, description = "read | search | export | download"),
           ("limit" = Option<u32>, Query, description = "1-500, default 100"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items: [access entry], next_cursor }"), (status = 400, description = "A bad filter")),
    security(("bearer" = ["audit:read"])))]
pub async fn break_glass(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut q = parse_query(&raw, FILTERS)?;
    q.break_glass = Some(true);
    page(&state, &actor, q).await
}

/// Who looked at this patient's record: every logged read of the patient's data. For
/// holders of `audit:read`, or a patient-context token of this same patient. Reading the
/// report is itself logged as a read of the patient's data.
#[utoipa::path(get, path = "/api/v1/patients/{id}/access", tag = "audit",
    params(("id" = Uuid, Path, description = "Patient id"),
           ("from" = Option<String>, Query, description = "Logged at or after (RFC 3339)"),
           ("to" = Option<String>, Query, description = "Logged before (RFC 3339)"),
           ("action" = Option<String>, Query, description = "read | search | export | download"),
           ("limit" = Option<u32>, Query, description = "1-500, default 100"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items: [access entry], next_cursor }"), (status = 403, description = "Neither audit:read nor this patient's own token")),
    security(("bearer" = ["patients:read"])))]
pub async fn patient_access(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = http::parse_uuid("patient", &id)?;
    if actor.patient != Some(id) {
        actor.require("audit:read")?;
    }
    let mut q = parse_query(&raw, &["from", "to", "action"])?;
    q.patient = Some(id);
    crate::access_log::record(
        &state,
        &actor,
        AccessAction::Read,
        "access_report",
        [crate::access_log::Access {
            patient: id,
            resource_id: None,
        }],
    )
    .await?;
    page(&state, &actor, q).await
}

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
use salus_store::access::{AccessAction, AccessQuery, AccessRecord};
use std::collections::HashMap;

/// The filters and page of an access-log query, from query parameters (`known` of them).
fn parse_query(raw: &HashMap<String, String>, known: &[&str]) -> Result<AccessQuery, ApiError> {
    let params = crate::audit_events::ReportParams::new(raw, known)?;
    let get = |k| params.get(k);
    let (limit, after) = params.page()?;
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
        patient: params.uuid("patient_id")?,
        actor: params.uuid("actor_id")?.map(ActorId),
        from: params.instant("from")?,
        to: params.instant("to")?,
        action,
        break_glass: None,
        after,
        limit: limit + 1,
    })
}

/// `{ items, next_cursor }` for a query (which asked for one entry more than the page),
/// or with `format=csv` every matching entry as a streamed CSV file.
async fn page(
    state: &AppState,
    actor: &Actor,
    mut q: AccessQuery,
    raw: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    if crate::audit_events::format_of(raw)? == crate::audit_events::Format::Csv {
        q.limit = crate::audit_events::csv_batch();
        return csv(state, actor, q).await;
    }
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

const ACCESS_COLUMNS: &[&str] = &[
    "seq",
    "recorded_at",
    "tenant_id",
    "entry_id",
    "actor_id",
    "patient_id",
    "resource_type",
    "resource_id",
    "action",
    "purpose",
    "justification",
    "break_glass",
    "client",
    "request_id",
    "hash",
];

fn access_row(r: &AccessRecord) -> Vec<String> {
    vec![
        r.seq.to_string(),
        salus_kernel::event::format_instant(&r.recorded_at),
        r.tenant_id.0.to_string(),
        r.entry_id.to_string(),
        r.actor_id.0.to_string(),
        r.patient_id.to_string(),
        r.resource_type.clone(),
        r.resource_id.map(|i| i.to_string()).unwrap_or_default(),
        r.action.as_str().to_owned(),
        r.purpose.clone(),
        r.justification.clone().unwrap_or_default(),
        r.break_glass.to_string(),
        r.client.clone().unwrap_or_default(),
        r.request_id.to_string(),
        r.hash.to_hex(),
    ]
}

/// Every entry of `q` (whose limit is the batch size) as a streamed CSV file.
async fn csv(state: &AppState, actor: &Actor, mut q: AccessQuery) -> Result<Response, ApiError> {
    use crate::audit_events::{BatchFuture, csv_response, full_batch};
    let rows = state.services.store.access_log(&actor.ctx, &q).await?;
    let first = rows.iter().map(access_row).collect();
    let cursor = full_batch(&rows, |r| r.seq);
    let (state, ctx) = (state.clone(), actor.ctx.clone());
    let next = move |after: i64| {
        q.after = Some(after);
        let (state, ctx, q) = (state.clone(), ctx.clone(), q.clone());
        Box::pin(async move {
            let rows = state.services.store.access_log(&ctx, &q).await?;
            Ok((
                rows.iter().map(access_row).collect(),
                full_batch(&rows, |r| r.seq),
            ))
        }) as BatchFuture
    };
    Ok(csv_response(
        "access-log.csv",
        ACCESS_COLUMNS,
        first,
        cursor,
        next,
    ))
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
           ("format" = Option<String>, Query, description = "json (default) | csv: every matching entry as one streamed RFC 4180 file"),
           ("limit" = Option<u32>, Query, description = "1-500, default 100 (json only)"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items: [access entry], next_cursor }, or text/csv"), (status = 400, description = "A bad filter")),
    security(("bearer" = ["audit:read"])))]
pub async fn access(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = parse_query(&raw, FILTERS)?;
    page(&state, &actor, q, &raw).await
}

/// The break-glass report: reads made under `X-Break-Glass`, with their reasons.
#[utoipa::path(get, path = "/api/v1/audit/break-glass", tag = "audit",
    params(("patient_id" = Option<Uuid>, Query, description = "Only reads of this patient's data"),
           ("actor_id" = Option<Uuid>, Query, description = "Only reads by this user"),
           ("from" = Option<String>, Query, description = "Logged at or after (RFC 3339)"),
           ("to" = Option<String>, Query, description = "Logged before (RFC 3339)"),
           ("action" = Option<String>, Query, description = "read | search | export | download"),
           ("format" = Option<String>, Query, description = "json (default) | csv: every matching entry as one streamed RFC 4180 file"),
           ("limit" = Option<u32>, Query, description = "1-500, default 100 (json only)"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items: [access entry], next_cursor }, or text/csv"), (status = 400, description = "A bad filter")),
    security(("bearer" = ["audit:read"])))]
pub async fn break_glass(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut q = parse_query(&raw, FILTERS)?;
    q.break_glass = Some(true);
    page(&state, &actor, q, &raw).await
}

/// Who looked at this patient's record: every logged read of the patient's data. For
/// holders of `audit:read`, or a patient-context token of this same patient. Reading the
/// report is itself logged as a read of the patient's data.
#[utoipa::path(get, path = "/api/v1/patients/{id}/access", tag = "audit",
    params(("id" = Uuid, Path, description = "Patient id"),
           ("from" = Option<String>, Query, description = "Logged at or after (RFC 3339)"),
           ("to" = Option<String>, Query, description = "Logged before (RFC 3339)"),
           ("action" = Option<String>, Query, description = "read | search | export | download"),
           ("format" = Option<String>, Query, description = "json (default) | csv: every matching entry as one streamed RFC 4180 file"),
           ("limit" = Option<u32>, Query, description = "1-500, default 100 (json only)"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items: [access entry], next_cursor }, or text/csv"), (status = 403, description = "Neither audit:read nor this patient's own token")),
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
    // A patient not in the tenant has no report (nor an entry for reading one).
    if state
        .services
        .row::<salus_domain::registry::Patient>(&actor.ctx, id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!("no patient with id {id}")));
    }
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
    page(&state, &actor, q, &raw).await
}

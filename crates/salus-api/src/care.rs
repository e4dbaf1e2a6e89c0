//! Care relationships at the HTTP edge: a patient's care team
//! (`/api/v1/patients/{id}/care-team`), the tenant's policy (`/api/v1/care-policy`), and
//! [`admit`], which every logged read of patient data passes before it is logged and
//! answered (see [`salus_domain::access::care`] for the rules).
//!
//! [`admit`] refuses (403 `care-relationship-required`) a read by a user the policy binds,
//! of a patient they have no care relationship with, unless the request carries
//! `X-Break-Glass: <reason>`; such a read is allowed, and its access-log entries are
//! flagged, so it appears in `GET /api/v1/audit/break-glass`. Not gated: patient-context
//! tokens (their own patient only anyway), searches of the patient registry (finding a
//! patient, by name or identifier, is how care starts: an encounter is scheduled for a
//! patient found there), and reads of the audit trail (`audit:read`, not care).

use crate::AppState;
use crate::access_log::Access;
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http::{self, JsonBody};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use salus_domain::access::User;
use salus_domain::access::care::{
    self, CareAssignment, CareAssignmentCommand, CarePolicy, SetPolicy,
};
use salus_domain::registry::Patient;
use salus_kernel::TenantId;
use salus_store::access::AccessAction;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Reads that are never gated by care relationships (see the module doc).
const UNGATED: &[&str] = &[crate::audit_events::AUDIT_RESOURCE, "access_report"];

/// The tenants' policies, held briefly: every gated read needs its tenant's.
pub struct PolicyCache {
    ttl: Duration,
    held: Mutex<HashMap<TenantId, (Instant, Arc<CarePolicy>)>>,
}

impl Default for PolicyCache {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(5),
            held: Mutex::new(HashMap::new()),
        }
    }
}

impl PolicyCache {
    fn get(&self, t: TenantId) -> Option<Arc<CarePolicy>> {
        let held = self.held.lock().ok()?;
        held.get(&t)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, p)| p.clone())
    }

    fn put(&self, t: TenantId, p: Arc<CarePolicy>) {
        if let Ok(mut held) = self.held.lock() {
            if held.len() > 10_000 {
                held.clear();
            }
            held.insert(t, (Instant::now(), p));
        }
    }
}

async fn policy_of(state: &AppState, actor: &Actor) -> Result<Arc<CarePolicy>, ApiError> {
    if let Some(p) = state.care.get(actor.ctx.tenant) {
        return Ok(p);
    }
    let p = Arc::new(care::policy(&state.services, &actor.ctx).await?);
    state.care.put(actor.ctx.tenant, p.clone());
    Ok(p)
}

/// Allow or refuse reading `accesses` (see the module doc); called by
/// [`crate::access_log::record`] before anything is logged.
pub async fn admit(
    state: &AppState,
    actor: &Actor,
    action: AccessAction,
    resource_type: &str,
    accesses: &[Access],
) -> Result<(), ApiError> {
    if accesses.is_empty()
        || actor.patient.is_some()
        || actor.access.break_glass.is_some()
        || UNGATED.contains(&resource_type)
        || (action == AccessAction::Search && resource_type == "patient")
    {
        return Ok(());
    }
    let policy = policy_of(state, actor).await?;
    if !policy.binds(actor.roles.iter().map(String::as_str)) {
        return Ok(());
    }
    let now = state.services.now();
    let mut checked = std::collections::HashSet::new();
    for a in accesses {
        if !checked.insert(a.patient) {
            continue;
        }
        let group =
            salus_domain::registry::patient::merge_group(&state.services, &actor.ctx, a.patient)
                .await?;
        if !care::has_relationship(&state.services, &actor.ctx, actor.user.id, &group, now).await? {
            state
                .metrics
                .access_denied
                .get_or_create(&crate::metrics::DeniedLabels {
                    permission: "care_relationship".to_owned(),
                })
                .inc();
            return Err(ApiError::new(
                "care-relationship-required",
                format!(
                    "you have no care relationship with patient {}: no care-team assignment and no encounter of yours; in an emergency, repeat the request with the header X-Break-Glass: <reason> (the read is flagged and reported)",
                    a.patient
                ),
            )
            .with("patient_id", a.patient.to_string())
            .with("header", "X-Break-Glass"));
        }
    }
    Ok(())
}

/// A care-team assignment to make.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignInput {
    pub user_id: Uuid,
    /// The user's part in the patient's care ("attending", "nurse"...).
    pub role: String,
    /// Until when it counts (RFC 3339 with offset); open when absent.
    #[serde(default)]
    pub valid_until: Option<String>,
}

/// Why an assignment ends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndInput {
    pub reason: String,
}

/// The tenant's care-relationship policy to set.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    pub enforced: bool,
    /// The roles whose holders are bound (default `["provider"]`).
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

fn team_path(patient: Uuid) -> String {
    format!("/api/v1/patients/{patient}/care-team")
}

async fn patient_exists(state: &AppState, actor: &Actor, id: Uuid) -> Result<(), ApiError> {
    match state.services.row::<Patient>(&actor.ctx, id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!("no patient with id {id}"))),
    }
}

/// The assignment as the API shows it: with its status now.
fn view(state: &AppState, row: &salus_store::ResourceRow) -> Value {
    let mut v = http::resource_json(row);
    if let Ok(a) = serde_json::from_value::<CareAssignment>(row.doc.clone()) {
        v["status"] = json!(a.status_at(state.services.now()));
    }
    v
}

/// Put a user on the patient's care team: until `valid_until` (or until ended), the user
/// has a care relationship with the patient.
#[utoipa::path(post, path = "/api/v1/patients/{id}/care-team", tag = "care", request_body = AssignInput,
    params(("id" = Uuid, Path, description = "Patient id"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "The assignment", body = CareAssignment), (status = 404, description = "No such patient"),
              (status = 422, description = "No such user, or a valid_until already past")),
    security(("bearer" = ["care_team:write"])))]
pub async fn assign(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonBody<AssignInput>,
) -> Result<Response, ApiError> {
    let patient = http::parse_uuid("patient", &id)?;
    patient_exists(&state, &actor, patient).await?;
    let input = body.value;
    if state
        .services
        .row::<User>(&actor.ctx, input.user_id)
        .await?
        .is_none()
    {
        return Err(
            ApiError::validation(format!("no user with id {}", input.user_id))
                .with("field", "user_id"),
        );
    }
    let valid_until = match input.valid_until.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => Some(
            salus_domain::clinical::interaction::parse_instant("valid_until", t)
                .map_err(ApiError::from)?,
        ),
        _ => None,
    };
    let aid = Uuid::now_v7();
    let by = actor.user.id;
    let path = team_path(patient);
    let resp = http::create_resource(&state, &actor, &headers, &path, &body.raw, |spec| {
        state.services.create::<CareAssignment, _>(
            &actor.ctx,
            aid,
            move |_, now| {
                Ok(CareAssignmentCommand::Assign {
                    id: aid,
                    patient_id: patient,
                    user_id: input.user_id,
                    role: input.role,
                    valid_until,
                    by,
                    now,
                })
            },
            spec,
        )
    })
    .await?;
    Ok(resp)
}

/// The patient's care team: every assignment, newest first, with its status now
/// (`active`, `expired`, `ended`). A read of the patient's data (logged).
#[utoipa::path(get, path = "/api/v1/patients/{id}/care-team", tag = "care",
    params(("id" = Uuid, Path, description = "Patient id")),
    responses((status = 200, description = "{ items: [assignment] }"), (status = 404, description = "No such patient")),
    security(("bearer" = ["patients:read"])))]
pub async fn team(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let patient = http::parse_uuid("patient", &id)?;
    if actor.patient.is_some_and(|p| p != patient) {
        return Err(ApiError::not_found(format!("no patient with id {patient}")));
    }
    patient_exists(&state, &actor, patient).await?;
    let q = salus_store::SearchQuery {
        resource_type: care::ASSIGNMENT_TYPE.into(),
        filters: vec![http::eq("patient", patient.to_string())],
        after: None,
        limit: 500,
        newest_first: true,
        order_by: None,
    };
    let rows = state.services.store.search(&actor.ctx, &q).await?;
    crate::access_log::record(
        &state,
        &actor,
        AccessAction::Read,
        care::ASSIGNMENT_TYPE,
        [Access {
            patient,
            resource_id: None,
        }],
    )
    .await?;
    let items: Vec<Value> = rows.iter().map(|r| view(&state, r)).collect();
    Ok(axum::Json(json!({ "items": items })).into_response())
}

/// End a care-team assignment (body `{ "reason": … }`, If-Match): for good; a new
/// assignment is the way back.
#[utoipa::path(post, path = "/api/v1/patients/{id}/care-team/{assignment_id}/end", tag = "care", request_body = EndInput,
    params(("id" = Uuid, Path, description = "Patient id"), ("assignment_id" = Uuid, Path, description = "Assignment id"),
           ("If-Match" = String, Header, description = "The ETag of the assignment")),
    responses((status = 200, description = "The ended assignment", body = CareAssignment), (status = 404, description = "No such assignment of this patient"),
              (status = 409, description = "Already ended")),
    security(("bearer" = ["care_team:write"])))]
pub async fn end(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, assignment)): Path<(String, String)>,
    headers: HeaderMap,
    body: JsonBody<EndInput>,
) -> Result<Response, ApiError> {
    let patient = http::parse_uuid("patient", &id)?;
    let aid = http::parse_uuid("care assignment", &assignment)?;
    let current = state
        .services
        .load::<CareAssignment>(&actor.ctx, aid)
        .await?
        .filter(|c| c.state.patient_id == patient)
        .ok_or_else(|| ApiError::not_found(format!("no care assignment with id {aid}")))?;
    let expected = http::if_match(&headers)?;
    let by = actor.user.id;
    let reason = body.value.reason;
    let result = state
        .services
        .execute::<CareAssignment, _>(
            &actor.ctx,
            current.row.id,
            expected,
            move |_, now| Ok(CareAssignmentCommand::End { reason, by, now }),
            None,
        )
        .await;
    http::finish(
        &state,
        &actor,
        &team_path(patient),
        None,
        result.map(|c| (200, c.row)),
    )
    .await
}

fn policy_view(p: &CarePolicy, version: i64) -> Response {
    http::with_etag(
        axum::http::StatusCode::OK,
        version,
        json!({ "enforced": p.enforced, "roles": p.roles, "version": version }),
    )
}

/// The tenant's care-relationship policy (off, binding `provider`, until set).
#[utoipa::path(get, path = "/api/v1/care-policy", tag = "care",
    responses((status = 200, description = "{ enforced, roles, version }", body = CarePolicy)),
    security(("bearer" = ["roles:read"])))]
pub async fn read_policy(
    State(state): State<AppState>,
    actor: Actor,
) -> Result<Response, ApiError> {
    let id = care::policy_id(actor.ctx.tenant);
    Ok(
        match state.services.load::<CarePolicy>(&actor.ctx, id).await? {
            Some(c) => policy_view(&c.state, c.row.version),
            None => policy_view(&CarePolicy::default(), 0),
        },
    )
}

/// Set the tenant's care-relationship policy: whether reads by holders of `roles` need a
/// care relationship with the patient (or break-glass). Takes effect within seconds on
/// every server.
#[utoipa::path(put, path = "/api/v1/care-policy", tag = "care", request_body = PolicyInput,
    responses((status = 200, description = "{ enforced, roles, version }", body = CarePolicy), (status = 422, description = "A role name that is not one")),
    security(("bearer" = ["roles:write"])))]
pub async fn set_policy(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<PolicyInput>,
) -> Result<Response, ApiError> {
    let id = care::policy_id(actor.ctx.tenant);
    let expected = match headers.get(axum::http::header::IF_MATCH) {
        Some(_) => http::if_match(&headers)?,
        None => None,
    };
    let input = body.value;
    let c = state
        .services
        .execute::<CarePolicy, _>(
            &actor.ctx,
            id,
            expected,
            move |_, _| {
                Ok(SetPolicy {
                    enforced: input.enforced,
                    roles: input.roles,
                })
            },
            None,
        )
        .await?;
    state.care.put(actor.ctx.tenant, Arc::new(c.state.clone()));
    Ok(policy_view(&c.state, c.row.version))
}

//! `/api/v1/patients`: register, read (now or `as_of`), history, update with If-Match,
//! lifecycle actions, and search. Handlers only parse, authorise, call the service and map
//! the result.

use crate::AppState;
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http::{self, JsonBody, ListParams, OptionalJson, finish};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use salus_domain::registry::patient::{self, PatientInput, parse_date};
use salus_domain::registry::{Patient, PatientCommand, PatientDetails};
use salus_kernel::text::fold;
use salus_store::{Filter, FilterOp};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use utoipa::IntoParams;
use uuid::Uuid;

const BASE: &str = "/api/v1/patients";

/// Register a patient.
#[utoipa::path(post, path = "/api/v1/patients", tag = "patients",
    request_body = PatientInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Registered", body = Patient), (status = 409, description = "An identifier is already used"), (status = 422, description = "Invalid input")),
    security(("bearer" = ["patients:write"])))]
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<PatientInput>,
) -> Result<Response, ApiError> {
    let id = Uuid::now_v7();
    let input = body.value;
    http::create_resource(&state, &actor, &headers, BASE, &body.raw, |spec| {
        state.services.create::<Patient, _>(
            &actor.ctx,
            id,
            move |_, now| {
                Ok(PatientCommand::Register {
                    id,
                    details: PatientDetails::parse(input, now.date_naive())?,
                })
            },
            spec,
        )
    })
    .await
}

/// Read a patient, now or as of a past instant.
#[utoipa::path(get, path = "/api/v1/patients/{id}", tag = "patients",
    params(("id" = Uuid, Path, description = "Patient id"), http::ReadParams),
    responses((status = 200, description = "The patient", body = Patient), (status = 404, description = "No such patient")),
    security(("bearer" = ["patients:read"])))]
pub async fn read(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(params): Query<http::ReadParams>,
) -> Result<Response, ApiError> {
    if params.as_of.is_none() {
        let row = http::read_current::<Patient>(&state, &actor, "patient", &id).await?;
        let Some(members) = http::doc_members(&row.doc) else {
            let row = http::parse_text_row::<Patient>(row)?;
            return Ok(http::respond(200, &row, BASE));
        };
        // A merged patient's current record lives on in the survivor: send the client there.
        if let Some(into) = members
            .get("merged_into")
            .and_then(|v| serde_json::from_str::<Option<Uuid>>(v.get()).ok())
            .flatten()
        {
            let location = format!("{BASE}/{into}");
            let mut resp = (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                axum::Json(serde_json::json!({ "id": row.id, "merged_into": into })),
            )
                .into_response();
            if let Ok(v) = axum::http::HeaderValue::from_str(&location) {
                resp.headers_mut().insert(axum::http::header::LOCATION, v);
            }
            return Ok(resp);
        }
        return Ok(http::respond_text(
            row.version,
            http::resource_text_json(&row, &members),
        ));
    }
    http::read_resource::<Patient>(
        &state,
        &actor,
        "patient",
        &id,
        BASE,
        params.as_of.as_deref(),
    )
    .await
}

/// The patient's full history: every event, oldest first.
#[utoipa::path(get, path = "/api/v1/patients/{id}/history", tag = "patients",
    params(("id" = Uuid, Path, description = "Patient id")),
    responses((status = 200, description = "Events of the patient's stream"), (status = 404, description = "No such patient")),
    security(("bearer" = ["patients:read"])))]
pub async fn history(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    http::history_resource::<Patient>(&state, &actor, "patient", &id).await
}

/// Change a patient's details with a JSON merge patch (RFC 7396). Needs If-Match.
#[utoipa::path(patch, path = "/api/v1/patients/{id}", tag = "patients",
    params(("id" = Uuid, Path, description = "Patient id"), ("If-Match" = String, Header, description = "The ETag read")),
    request_body(content = Object, content_type = "application/merge-patch+json"),
    responses((status = 200, description = "Updated", body = Patient), (status = 412, description = "Stale If-Match"), (status = 428, description = "If-Match missing")),
    security(("bearer" = ["patients:write"])))]
pub async fn patch(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonBody<Value>,
) -> Result<Response, ApiError> {
    let id = http::parse_uuid("patient", &id)?;
    let expected = http::if_match(&headers)?;
    if !body.value.is_object() {
        return Err(ApiError::validation("a merge patch must be a JSON object"));
    }
    let patch = body.value;
    let result = state
        .services
        .execute::<Patient, _>(
            &actor.ctx,
            id,
            expected,
            |current, now| {
                let Some(p) = current else {
                    return Err(salus_kernel::DomainError::NotFound("patient".into()));
                };
                let mut doc = p.details.to_input_json();
                http::merge_patch(&mut doc, &patch);
                let input: PatientInput = serde_json::from_value(doc).map_err(|e| {
                    salus_kernel::DomainError::invalid(
                        "body",
                        format!("the patched patient does not fit: {e}"),
                    )
                })?;
                Ok(PatientCommand::Update {
                    details: PatientDetails::parse(input, now.date_naive())?,
                })
            },
            None,
        )
        .await;
    finish(&state, &actor, BASE, None, result.map(|c| (200, c.row))).await
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionInput {
    /// Why (suspend, retire).
    pub reason: Option<String>,
    /// Date of death (record-death), `YYYY-MM-DD`.
    pub date: Option<String>,
    /// The surviving patient (merge).
    pub into: Option<Uuid>,
}

/// Lifecycle actions: activate, suspend, reactivate, retire, record-death, merge (into a
/// surviving patient: reads then redirect to it), unmerge. Needs If-Match.
#[utoipa::path(post, path = "/api/v1/patients/{id}/{action}", tag = "patients",
    params(("id" = Uuid, Path, description = "Patient id"), ("action" = String, Path, description = "activate | suspend | reactivate | retire | record-death"),
           ("If-Match" = String, Header, description = "The ETag read"),
           ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    request_body(content = Option<ActionInput>),
    responses((status = 200, description = "Done", body = Patient), (status = 422, description = "Not allowed in the current state"), (status = 412, description = "Stale If-Match")),
    security(("bearer" = ["patients:write"])))]
pub async fn action(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: OptionalJson<ActionInput>,
) -> Result<Response, ApiError> {
    let target = http::ActionTarget {
        what: "patient",
        collection: BASE,
        actions: patient::ACTIONS,
    };
    let input = body.value.unwrap_or_default();
    let survivor_ok = match input.into {
        Some(into) => {
            salus_domain::registry::patient::can_survive(&state.services, &actor.ctx, into).await?
        }
        None => false,
    };
    http::act_on_resource::<Patient, _>(
        &state,
        &actor,
        &headers,
        target,
        &id,
        action,
        &body.raw,
        move |action, now| {
            if action == "record-death" {
                let date = input.date.as_deref().ok_or_else(|| {
                    salus_kernel::DomainError::invalid(
                        "date",
                        "record-death needs the date of death",
                    )
                })?;
                Ok(PatientCommand::RecordDeath {
                    date: parse_date("date", date)?,
                    today: now.date_naive(),
                })
            } else if action == "merge" {
                let survivor = input.into.ok_or_else(|| {
                    salus_kernel::DomainError::invalid(
                        "into",
                        "merge needs the surviving patient's id in 'into'",
                    )
                })?;
                Ok(PatientCommand::Merge {
                    survivor,
                    survivor_ok,
                })
            } else if action == "unmerge" {
                Ok(PatientCommand::Unmerge)
            } else {
                Ok(PatientCommand::Transition {
                    action,
                    reason: input.reason,
                })
            }
        },
    )
    .await
}

/// Search parameters: every one given must match.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SearchParams {
    /// `system|value`, or a bare value in any system.
    pub identifier: Option<String>,
    /// Prefix of a family or given name, or of the full name; case and accents ignored.
    pub name: Option<String>,
    /// `YYYY-MM-DD`, optionally prefixed `eq`, `ge`, `le`, `gt`, `lt`.
    pub birth_date: Option<String>,
    /// registered | active | suspended | retired
    pub status: Option<String>,
    pub gender: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

const SEARCH_KEYS: &[&str] = &[
    "identifier",
    "name",
    "birth_date",
    "status",
    "gender",
    "phone",
    "email",
];

/// Search patients. Results are in registration order; page with `cursor`.
#[utoipa::path(get, path = "/api/v1/patients", tag = "patients",
    params(SearchParams),
    responses((status = 200, description = "A page of patients: { items, next_cursor }")),
    security(("bearer" = ["patients:read"])))]
pub async fn search(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = ListParams::parse(raw, SEARCH_KEYS)?;
    let get = |k: &str| params.get(k);
    let mut filters = Vec::new();
    if let Some(v) = get("identifier") {
        filters.push(http::token("identifier", &v));
    }
    if let Some(v) = get("name") {
        filters.push(Filter {
            also: Vec::new(),
            param: "name".into(),
            system: None,
            op: FilterOp::Prefix,
            value: fold(&v),
        });
    }
    if let Some(v) = get("birth_date") {
        let (op, date) = match v.get(..2) {
            Some("ge") => (FilterOp::Ge, &v[2..]),
            Some("le") => (FilterOp::Le, &v[2..]),
            Some("gt") => (FilterOp::Gt, &v[2..]),
            Some("lt") => (FilterOp::Lt, &v[2..]),
            Some("eq") => (FilterOp::Eq, &v[2..]),
            _ => (FilterOp::Eq, v.as_str()),
        };
        let date = parse_date("birth_date", date).map_err(ApiError::from)?;
        filters.push(Filter {
            also: Vec::new(),
            param: "birth_date".into(),
            system: None,
            op,
            value: date.format("%Y-%m-%d").to_string(),
        });
    }
    if let Some(v) = get("status") {
        if patient::PatientStatus::parse(&v).is_none() {
            return Err(ApiError::bad_request(format!(
                "status '{v}' is not one of registered, active, suspended, retired"
            )));
        }
        filters.push(http::eq("status", v));
    }
    if let Some(v) = get("gender") {
        filters.push(http::eq("gender", v.to_ascii_lowercase()));
    }
    if let Some(v) = get("phone") {
        let p = salus_domain::registry::values::E164Phone::parse(&v).map_err(ApiError::from)?;
        filters.push(http::eq("phone", p.as_str().to_owned()));
    }
    if let Some(v) = get("email") {
        filters.push(http::eq("email", v.to_lowercase()));
    }
    let rows = state
        .services
        .store
        .search(&actor.ctx, &params.query("patient", filters, false))
        .await?;
    params.page(&state, &actor, rows).await
}

//! `/api/v1/medical-records` and `/api/v1/notes` (requirements/003 §2): records per patient
//! and department, append-only clinical notes whose SHA-256 is checked on every read.

use crate::AppState;
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http::{self, JsonBody, ListParams, eq};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use salus_domain::clinical::record::{
    self, ClinicalNote, MedicalRecord, NoteCommand, NoteInput, RecordCommand, RecordInput,
};
use salus_domain::service::Projected;
use salus_store::ResourceRow;
use std::collections::HashMap;

const RECORDS: &str = "/api/v1/medical-records";
const NOTES: &str = "/api/v1/notes";

/// Open a medical record for a patient in an active department (one per pair).
#[utoipa::path(post, path = "/api/v1/medical-records", tag = "medical-records", request_body = RecordInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Opened", body = MedicalRecord), (status = 409, description = "The patient has a record in that department"), (status = 422, description = "Unknown patient, unknown or inactive department")), security(("bearer" = ["medical_records:write"])))]
pub async fn open(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<RecordInput>,
) -> Result<Response, ApiError> {
    let input = body.value;
    http::create_resource(&state, &actor, &headers, RECORDS, &body.raw, |spec| {
        record::open_record(&state.services, &actor.ctx, input, spec)
    })
    .await
}

/// Medical records, newest first: by `patient_id`, `department_id`, `status` (open | deleted).
#[utoipa::path(get, path = "/api/v1/medical-records", tag = "medical-records",
    params(("patient_id" = Option<Uuid>, Query, description = "Patient (following merges)"), ("department_id" = Option<Uuid>, Query, description = "Department"),
           ("status" = Option<String>, Query, description = "open | deleted"),
           ("limit" = Option<u32>, Query, description = "1-200, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items, next_cursor }")), security(("bearer" = ["medical_records:read"])))]
pub async fn search(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = ListParams::parse(raw, &["patient_id", "department_id", "status"])?;
    let mut filters = Vec::new();
    if let Some(v) = p.get("patient_id") {
        filters.push(http::patient_filter(&state, &actor, &v).await?);
    }
    if let Some(d) = p.get("department_id") {
        let id = uuid::Uuid::parse_str(&d)
            .map_err(|_| ApiError::bad_request("department_id must be a UUID"))?;
        filters.push(eq("department", id.to_string()));
    }
    if let Some(s) = p.get("status") {
        if s != "open" && s != "deleted" {
            return Err(ApiError::bad_request(format!(
                "status '{s}' is not open or deleted"
            )));
        }
        filters.push(eq("status", s));
    }
    let rows = state
        .services
        .store
        .search(&actor.ctx, &p.query("medical_record", filters, true))
        .await?;
    p.page(&state, &actor, rows).await
}

/// One medical record, now or `as_of` a past instant.
#[utoipa::path(get, path = "/api/v1/medical-records/{id}", tag = "medical-records", params(("id" = Uuid, Path, description = "Record id"), http::ReadParams),
    responses((status = 200, description = "The record", body = MedicalRecord), (status = 404, description = "No such record")), security(("bearer" = ["medical_records:read"])))]
pub async fn read(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(params): Query<http::ReadParams>,
) -> Result<Response, ApiError> {
    http::read_resource::<MedicalRecord>(
        &state,
        &actor,
        "medical record",
        &id,
        RECORDS,
        params.as_of.as_deref(),
    )
    .await
}

/// `delete`: soft-delete a record that has no notes (status `deleted`). Needs If-Match.
#[utoipa::path(post, path = "/api/v1/medical-records/{id}/{action}", tag = "medical-records",
    params(("id" = Uuid, Path, description = "Record id"), ("action" = String, Path, description = "delete"), ("If-Match" = String, Header, description = "The ETag read")),
    responses((status = 200, description = "Deleted (soft)", body = MedicalRecord), (status = 422, description = "The record has notes")), security(("bearer" = ["medical_records:write"])))]
pub async fn action(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let record_id = http::parse_uuid("medical record", &id)?;
    let has_notes = record::record_has_notes(&state.services, &actor.ctx, record_id).await?;
    let target = http::ActionTarget {
        what: "medical record",
        collection: RECORDS,
        actions: &["delete"],
    };
    http::act_on_resource::<MedicalRecord, _>(
        &state,
        &actor,
        &headers,
        target,
        &id,
        action,
        &[],
        move |_, _| Ok(RecordCommand::Delete { has_notes }),
    )
    .await
}

/// Write a clinical note in the record (or an amendment, naming the note it amends).
#[utoipa::path(post, path = "/api/v1/medical-records/{id}/notes", tag = "notes", request_body = NoteInput,
    params(("id" = Uuid, Path, description = "Record id"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Written", body = ClinicalNote), (status = 404, description = "No open record")), security(("bearer" = ["notes:write"])))]
pub async fn write_note(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonBody<NoteInput>,
) -> Result<Response, ApiError> {
    let record_id = http::parse_uuid("medical record", &id)?;
    let input = body.value;
    http::create_resource(&state, &actor, &headers, NOTES, &body.raw, |spec| {
        record::write_note(&state.services, &actor.ctx, record_id, input, spec)
    })
    .await
}

/// Check a stored note against its hash; a mismatch is logged, counted and refused.
fn verified(state: &AppState, row: &ResourceRow) -> Result<(), ApiError> {
    let note: ClinicalNote = serde_json::from_value(row.doc.clone()).map_err(ApiError::internal)?;
    if note.verify() {
        Ok(())
    } else {
        state.metrics.integrity_failures.inc();
        tracing::error!(note_id = %row.id, "clinical note text does not match its SHA-256: refusing to serve it");
        Err(ApiError::new(
            "integrity",
            format!(
                "note {} failed its integrity check and is withheld; the incident is logged",
                row.id
            ),
        ))
    }
}

/// The notes of a record, newest first; every note's hash is checked before it is served.
#[utoipa::path(get, path = "/api/v1/medical-records/{id}/notes", tag = "notes",
    params(("id" = Uuid, Path, description = "Record id"), ("limit" = Option<u32>, Query, description = "1-200, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items, next_cursor }"), (status = 500, description = "A note failed its integrity check")), security(("bearer" = ["notes:read"])))]
pub async fn list_notes(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let record_id = http::parse_uuid("medical record", &id)?;
    let p = ListParams::parse(raw, &[])?;
    let rows = state
        .services
        .store
        .search(
            &actor.ctx,
            &p.query(
                ClinicalNote::RESOURCE_TYPE,
                vec![eq("record", record_id.to_string())],
                true,
            ),
        )
        .await?;
    let mut rows = rows;
    rows.retain(|r| actor.sees("note", &r.doc));
    for row in &rows {
        verified(&state, row)?;
    }
    p.page(&state, &actor, rows).await
}

/// One note, its hash checked; `as_of` shows it before signing.
#[utoipa::path(get, path = "/api/v1/notes/{id}", tag = "notes", params(("id" = Uuid, Path, description = "Note id"), http::ReadParams),
    responses((status = 200, description = "The note", body = ClinicalNote), (status = 404, description = "No such note"), (status = 500, description = "The note failed its integrity check")), security(("bearer" = ["notes:read"])))]
pub async fn read_note(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(params): Query<http::ReadParams>,
) -> Result<Response, ApiError> {
    let row = http::load_row::<ClinicalNote>(&state, &actor, "note", &id, params.as_of.as_deref())
        .await?;
    verified(&state, &row)?;
    Ok(http::respond(200, &row, NOTES))
}

/// Every event of the note, oldest first.
#[utoipa::path(get, path = "/api/v1/notes/{id}/history", tag = "notes", params(("id" = Uuid, Path, description = "Note id")),
    responses((status = 200, description = "{ id, items: [event] }"), (status = 404, description = "No such note")), security(("bearer" = ["notes:read"])))]
pub async fn note_history(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    http::history_resource::<ClinicalNote>(&state, &actor, "note", &id).await
}

/// `sign`: the author signs the note; afterwards only amendments are possible. Needs If-Match.
#[utoipa::path(post, path = "/api/v1/notes/{id}/{action}", tag = "notes",
    params(("id" = Uuid, Path, description = "Note id"), ("action" = String, Path, description = "sign"), ("If-Match" = String, Header, description = "The ETag read")),
    responses((status = 200, description = "Signed", body = ClinicalNote), (status = 422, description = "Not the author, or signed already")), security(("bearer" = ["notes:write"])))]
pub async fn note_action(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let by = actor.user.id;
    let target = http::ActionTarget {
        what: "note",
        collection: NOTES,
        actions: &["sign"],
    };
    http::act_on_resource::<ClinicalNote, _>(
        &state,
        &actor,
        &headers,
        target,
        &id,
        action,
        &[],
        move |_, now| Ok(NoteCommand::Sign { by, at: now }),
    )
    .await
}

/// Full-text search over the tenant's clinical notes (`q`: every word must occur; case and
/// accents ignored), best matches first, optionally for one patient. Each note's hash is
/// checked before it is served.
#[utoipa::path(get, path = "/api/v1/notes", tag = "notes",
    params(("q" = String, Query, description = "Words to find"), ("patient_id" = Option<Uuid>, Query, description = "Only this patient's notes (following merges)"),
           ("limit" = Option<u32>, Query, description = "1-100, default 20")),
    responses((status = 200, description = "{ items: [note + rank] }"), (status = 400, description = "No query")), security(("bearer" = ["notes:read"])))]
pub async fn search_notes(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(k) = raw
        .keys()
        .find(|k| !["q", "patient_id", "limit"].contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "unknown parameter '{k}'; parameters are: q, patient_id, limit"
        )));
    }
    let q = raw
        .get("q")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("give the words to find in q"))?;
    let limit = match raw.get("limit") {
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::bad_request("limit must be a whole number from 1 to 100"))?,
        None => 20,
    };
    // The patient's merge group, as the lists follow merges.
    let patient = match raw.get("patient_id") {
        Some(p) => Some(http::patient_group(&state, &actor, p).await?),
        None => None,
    };
    // With a patient filter, look further down the ranking before filtering.
    let fetch = if patient.is_some() {
        limit.saturating_mul(10).min(1000)
    } else {
        limit
    };
    let hits = state
        .services
        .store
        .search_text(&actor.ctx, ClinicalNote::RESOURCE_TYPE, q, fetch)
        .await?;
    let mut items = Vec::new();
    let mut rows = Vec::new();
    for hit in hits {
        if let Some(group) = &patient
            && !hit.row.doc["patient_id"]
                .as_str()
                .and_then(|p| uuid::Uuid::parse_str(p).ok())
                .is_some_and(|p| group.contains(&p))
        {
            continue;
        }
        verified(&state, &hit.row)?;
        let mut doc = http::resource_json(&hit.row);
        doc["rank"] = serde_json::json!(hit.rank);
        items.push(doc);
        rows.push(hit.row);
        if items.len() >= limit as usize {
            break;
        }
    }
    crate::access_log::record_docs(
        &state,
        &actor,
        salus_store::access::AccessAction::Search,
        ClinicalNote::RESOURCE_TYPE,
        rows.iter().map(|r| (r.id, &r.doc)),
    )
    .await?;
    Ok(axum::Json(serde_json::json!({ "items": items })).into_response())
}

//! `/api/v1/consent-templates` and `/api/v1/consents` (requirements/003 §3): versioned
//! consent templates, a patient's consents (acknowledge, sign, revoke), the signed
//! consent's PDF (re-hashed before it is served) and `GET /api/v1/patients/{id}/consents`
//! (`?kind=research&active=true`: the patient's active consents of a kind). Reads of
//! consents are patient data and go through the data-access log like every other.

use crate::AppState;
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http::{self, IdemStart, JsonBody, ListParams, eq, finish};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use salus_domain::clinical::consent::template::{self, ConsentTemplate, DraftInput, TemplateInput};
use salus_domain::clinical::consent::{
    self, Consent, ConsentActionInput, ConsentInput, ConsentStatus, MissingClause, SignError,
};
use salus_domain::service::Projected;
use salus_kernel::Hash32;
use salus_store::ResourceRow;
use salus_store::access::AccessAction;
use serde_json::Value;
use std::collections::HashMap;

const TEMPLATES: &str = "/api/v1/consent-templates";
const CONSENTS: &str = "/api/v1/consents";

/// Create a consent template; its first version is a draft.
#[utoipa::path(post, path = "/api/v1/consent-templates", tag = "consents", request_body = TemplateInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Created, version 1 a draft", body = ConsentTemplate), (status = 422, description = "Invalid kind, title, sections or clauses")),
    security(("bearer" = ["consent_templates:write"])))]
pub async fn create_template(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<TemplateInput>,
) -> Result<Response, ApiError> {
    let input = body.value;
    http::create_resource(&state, &actor, &headers, TEMPLATES, &body.raw, |spec| {
        template::create_template(&state.services, &actor.ctx, input, spec)
    })
    .await
}

/// Consent templates, newest first: by `kind`, `published` (true: those with a published
/// version).
#[utoipa::path(get, path = "/api/v1/consent-templates", tag = "consents",
    params(("kind" = Option<String>, Query, description = "Kind code (research, treatment, …)"), ("published" = Option<bool>, Query, description = "true: only templates with a published version; false: only drafts"),
           ("limit" = Option<u32>, Query, description = "1-200, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items, next_cursor }")), security(("bearer" = ["consent_templates:read"])))]
pub async fn search_templates(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = ListParams::parse(raw, &["kind", "published"])?;
    let mut filters = Vec::new();
    if let Some(k) = p.get("kind") {
        filters.push(eq("kind", template::parse_kind(&k)?));
    }
    if let Some(v) = p.get("published") {
        if v != "true" && v != "false" {
            return Err(ApiError::bad_request("published must be true or false"));
        }
        filters.push(eq("published", v));
    }
    let rows = state
        .services
        .store
        .search(
            &actor.ctx,
            &p.query(ConsentTemplate::RESOURCE_TYPE, filters, true),
        )
        .await?;
    p.page(&state, &actor, rows).await
}

/// A consent template with every version, now or `as_of` a past instant.
#[utoipa::path(get, path = "/api/v1/consent-templates/{id}", tag = "consents", params(("id" = Uuid, Path, description = "Template id"), http::ReadParams),
    responses((status = 200, description = "The template", body = ConsentTemplate), (status = 404, description = "No such template")), security(("bearer" = ["consent_templates:read"])))]
pub async fn read_template(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(params): Query<http::ReadParams>,
) -> Result<Response, ApiError> {
    http::read_resource::<ConsentTemplate>(
        &state,
        &actor,
        "consent template",
        &id,
        TEMPLATES,
        params.as_of.as_deref(),
    )
    .await
}

/// Edit the draft version: each field given (`title`, `description`, `sections`) replaces
/// the draft's. A published version never changes (409): draft a new version first. Needs
/// If-Match.
#[utoipa::path(patch, path = "/api/v1/consent-templates/{id}", tag = "consents", request_body = DraftInput,
    params(("id" = Uuid, Path, description = "Template id"), ("If-Match" = String, Header, description = "The ETag read")),
    responses((status = 200, description = "The draft edited", body = ConsentTemplate), (status = 409, description = "The latest version is published"), (status = 412, description = "Stale If-Match"), (status = 422, description = "Invalid content")),
    security(("bearer" = ["consent_templates:write"])))]
pub async fn edit_template(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: JsonBody<DraftInput>,
) -> Result<Response, ApiError> {
    let id = http::parse_uuid("consent template", &id)?;
    let expected = http::if_match(&headers)?;
    let edit = body.value;
    let result = state
        .services
        .execute::<ConsentTemplate, _>(
            &actor.ctx,
            id,
            expected,
            |current, _| template::edit_command(current, &edit),
            None,
        )
        .await;
    finish(
        &state,
        &actor,
        TEMPLATES,
        None,
        result.map(|c| (200, c.row)),
    )
    .await
}

/// Every event of the template, oldest first.
#[utoipa::path(get, path = "/api/v1/consent-templates/{id}/history", tag = "consents", params(("id" = Uuid, Path, description = "Template id")),
    responses((status = 200, description = "{ id, items: [event] }"), (status = 404, description = "No such template")), security(("bearer" = ["consent_templates:read"])))]
pub async fn template_history(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    http::history_resource::<ConsentTemplate>(&state, &actor, "consent template", &id).await
}

/// `publish`: the draft becomes the newest published version, immutable from then on.
/// `new-version`: a draft of the next version, copied from the newest published one (new
/// clause ids). Needs If-Match.
#[utoipa::path(post, path = "/api/v1/consent-templates/{id}/{action}", tag = "consents",
    params(("id" = Uuid, Path, description = "Template id"), ("action" = String, Path, description = "publish | new-version"), ("If-Match" = String, Header, description = "The ETag read"),
           ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 200, description = "Done", body = ConsentTemplate), (status = 422, description = "Nothing to publish, or a draft exists already"), (status = 412, description = "Stale If-Match")),
    security(("bearer" = ["consent_templates:write"])))]
pub async fn template_action(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tid = http::parse_uuid("consent template", &id)?;
    if !template::ACTIONS.contains(&action.as_str()) {
        return Err(ApiError::not_found(format!(
            "no action '{action}'; actions are: {}",
            template::ACTIONS.join(", ")
        )));
    }
    let expected = http::if_match(&headers)?;
    let path = format!("{TEMPLATES}/{tid}/{action}");
    let key = match http::idempotency_start(&state, &actor, &headers, "POST", &path, &[]).await? {
        IdemStart::Replay(r) => return Ok(r),
        IdemStart::Run(k) => k,
    };
    let by = actor.user.id;
    // The command is made from the template as it stands (a new version copies the newest
    // published one).
    let result = state
        .services
        .execute::<ConsentTemplate, _>(
            &actor.ctx,
            tid,
            expected,
            move |current, now| template::action_command(current, &action, by, now),
            http::idempotency_spec(&state, key.as_ref(), &http::ok),
        )
        .await;
    finish(&state, &actor, TEMPLATES, key, result.map(|c| (200, c.row))).await
}

/// Create a consent for a patient from a published template version (the newest published
/// one when `template_version` is left out).
#[utoipa::path(post, path = "/api/v1/consents", tag = "consents", request_body = ConsentInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 201, description = "Created (pending)", body = Consent), (status = 422, description = "Unknown or retired patient, unknown template, or a version that is not published")),
    security(("bearer" = ["consents:write"])))]
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<ConsentInput>,
) -> Result<Response, ApiError> {
    let input = body.value;
    http::create_resource(&state, &actor, &headers, CONSENTS, &body.raw, |spec| {
        consent::create_consent(&state.services, &actor.ctx, input, spec)
    })
    .await
}

fn parse_status(s: &str) -> Result<ConsentStatus, ApiError> {
    ConsentStatus::parse(s).ok_or_else(|| {
        ApiError::bad_request(format!(
            "status '{s}' is not one of pending, signed, revoked"
        ))
    })
}

/// Check a stored consent's snapshots against their hashes; a mismatch is logged, counted
/// and refused.
fn verified(state: &AppState, row: &ResourceRow) -> Result<(), ApiError> {
    let c: Consent = serde_json::from_value(row.doc.clone()).map_err(ApiError::internal)?;
    if c.verify() {
        Ok(())
    } else {
        state.metrics.integrity_failures.inc();
        tracing::error!(consent_id = %row.id, "consent clause snapshot does not match its SHA-256: refusing to serve it");
        Err(ApiError::new(
            "integrity",
            format!(
                "consent {} failed its integrity check and is withheld; the incident is logged",
                row.id
            ),
        ))
    }
}

/// Consents, newest first: by `patient_id` (following merges), `kind`, `status` (pending |
/// signed | revoked), `template_id`. Every consent's snapshots are checked before it is
/// served.
#[utoipa::path(get, path = "/api/v1/consents", tag = "consents",
    params(("patient_id" = Option<Uuid>, Query, description = "Patient (following merges)"), ("kind" = Option<String>, Query, description = "Kind code"),
           ("status" = Option<String>, Query, description = "pending | signed | revoked"), ("template_id" = Option<Uuid>, Query, description = "Template"),
           ("limit" = Option<u32>, Query, description = "1-200, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items, next_cursor }")), security(("bearer" = ["consents:read"])))]
pub async fn search(
    State(state): State<AppState>,
    actor: Actor,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = ListParams::parse(raw, &["patient_id", "kind", "status", "template_id"])?;
    let mut filters = Vec::new();
    if let Some(v) = p.get("patient_id") {
        filters.push(http::patient_filter(&state, &actor, &v).await?);
    }
    if let Some(k) = p.get("kind") {
        filters.push(eq("kind", template::parse_kind(&k)?));
    }
    if let Some(s) = p.get("status") {
        filters.push(eq("status", parse_status(&s)?.as_str()));
    }
    if let Some(t) = p.get("template_id") {
        let id = uuid::Uuid::parse_str(&t)
            .map_err(|_| ApiError::bad_request("template_id must be a UUID"))?;
        filters.push(eq("template", id.to_string()));
    }
    let mut rows = state
        .services
        .store
        .search(&actor.ctx, &p.query(Consent::RESOURCE_TYPE, filters, true))
        .await?;
    rows.retain(|r| actor.sees(Consent::RESOURCE_TYPE, &r.doc));
    for row in &rows {
        verified(&state, row)?;
    }
    p.page(&state, &actor, rows).await
}

/// One consent, its snapshots checked; `as_of` shows it as it stood.
#[utoipa::path(get, path = "/api/v1/consents/{id}", tag = "consents", params(("id" = Uuid, Path, description = "Consent id"), http::ReadParams),
    responses((status = 200, description = "The consent", body = Consent), (status = 404, description = "No such consent"), (status = 500, description = "A snapshot failed its integrity check")),
    security(("bearer" = ["consents:read"])))]
pub async fn read(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(params): Query<http::ReadParams>,
) -> Result<Response, ApiError> {
    let row =
        http::load_row::<Consent>(&state, &actor, "consent", &id, params.as_of.as_deref()).await?;
    verified(&state, &row)?;
    Ok(http::respond(200, &row, CONSENTS))
}

/// Every event of the consent, oldest first.
#[utoipa::path(get, path = "/api/v1/consents/{id}/history", tag = "consents", params(("id" = Uuid, Path, description = "Consent id")),
    responses((status = 200, description = "{ id, items: [event] }"), (status = 404, description = "No such consent")), security(("bearer" = ["consents:read"])))]
pub async fn history(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    http::history_resource::<Consent>(&state, &actor, "consent", &id).await
}

/// `acknowledge` {`clause_id`, `acknowledged_by`?}: snapshot a clause of the pinned version
/// (again: no change). `sign` {`signatures`: [{`signer_name`, `role`: patient | guardian |
/// witness, `method`: wet_ink_scan | electronic | verbal_witnessed}]}: refused with 409
/// `consent-incomplete` listing the required clauses not acknowledged; a revoked consent is
/// never signed (409); the signed consent's PDF is stored with its SHA-256. `revoke`
/// {`reason`, `requested_by`?}. Needs If-Match.
#[utoipa::path(post, path = "/api/v1/consents/{id}/{action}", tag = "consents", request_body = ConsentActionInput,
    params(("id" = Uuid, Path, description = "Consent id"), ("action" = String, Path, description = "acknowledge | sign | revoke"), ("If-Match" = String, Header, description = "The ETag read"),
           ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated request")),
    responses((status = 200, description = "Done", body = Consent), (status = 409, description = "Required clauses unacknowledged (consent-incomplete, with missing_clauses), or the consent is revoked"),
               (status = 412, description = "Stale If-Match"), (status = 422, description = "Invalid input, or not allowed in the current state")),
    security(("bearer" = ["consents:write"])))]
pub async fn action(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: JsonBody<ConsentActionInput>,
) -> Result<Response, ApiError> {
    let input = body.value;
    if action == "sign" {
        return sign(&state, &actor, &headers, &id, &input, &body.raw).await;
    }
    let by = actor.user.id;
    let target = http::ActionTarget {
        what: "consent",
        collection: CONSENTS,
        actions: consent::instance::ACTIONS,
    };
    http::act_on_resource::<Consent, _>(
        &state,
        &actor,
        &headers,
        target,
        &id,
        action,
        &body.raw,
        move |action, now| input.command(&action, by, now),
    )
    .await
}

/// The 409 of a signing with required clauses unacknowledged, listing them.
fn incomplete(missing: &[MissingClause]) -> ApiError {
    let listed: Vec<Value> = missing
        .iter()
        .map(|m| {
            serde_json::json!({
                "clause_id": m.clause_id,
                "section_id": m.section_id,
                "section_title": m.section_title,
                "text": m.text,
            })
        })
        .collect();
    ApiError::new(
        "consent-incomplete",
        consent::instance::incomplete_message(missing),
    )
    .with("missing_clauses", listed)
}

async fn sign(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    id: &str,
    input: &ConsentActionInput,
    raw: &[u8],
) -> Result<Response, ApiError> {
    let id = http::parse_uuid("consent", id)?;
    let expected = http::if_match(headers)?;
    let path = format!("{CONSENTS}/{id}/sign");
    let key = match http::idempotency_start(state, actor, headers, "POST", &path, raw).await? {
        IdemStart::Replay(r) => return Ok(r),
        IdemStart::Run(k) => k,
    };
    let signatures = input.signatures.clone().unwrap_or_default();
    let result = consent::sign(
        &state.services,
        &actor.ctx,
        &state.blobs,
        id,
        expected,
        &signatures,
        http::idempotency_spec(state, key.as_ref(), &http::ok),
    )
    .await;
    match result {
        Ok(c) => finish(state, actor, CONSENTS, key, Ok((200, c.row))).await,
        Err(SignError::Service(e)) => finish(state, actor, CONSENTS, key, Err(e)).await,
        Err(SignError::Incomplete(missing)) => Err(incomplete(&missing)),
        Err(SignError::Document(e)) => Err(crate::attachments::blob_error(state, e)),
    }
}

/// The signed consent's PDF, after its SHA-256 is checked against the consent. Evidence of
/// what was signed; the consent itself is the record.
#[utoipa::path(get, path = "/api/v1/consents/{id}/document", tag = "consents", params(("id" = Uuid, Path, description = "Consent id")),
    responses((status = 200, description = "The PDF", content_type = "application/pdf"), (status = 404, description = "No such consent, or not signed"), (status = 500, description = "The document failed its integrity check")),
    security(("bearer" = ["consents:read"])))]
pub async fn document(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = http::parse_uuid("consent", &id)?;
    let loaded = state
        .services
        .load::<Consent>(&actor.ctx, id)
        .await?
        .filter(|c| actor.sees(Consent::RESOURCE_TYPE, &c.row.doc))
        .ok_or_else(|| ApiError::not_found(format!("no consent with id {id}")))?;
    let doc = loaded.state.document.clone().ok_or_else(|| {
        ApiError::not_found(format!(
            "consent {id} has no document: one is made when it is signed"
        ))
    })?;
    crate::access_log::record_docs(
        &state,
        &actor,
        AccessAction::Download,
        Consent::RESOURCE_TYPE,
        [(loaded.row.id, &loaded.row.doc)],
    )
    .await?;
    let hash = Hash32::from_hex(&doc.sha256)
        .ok_or_else(|| ApiError::internal("stored consent document hash is malformed"))?;
    let (file, size) = state
        .blobs
        .open_verified(&hash)
        .await
        .map_err(|e| crate::attachments::blob_error(&state, e))?;
    let mut resp = (
        StatusCode::OK,
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/pdf"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&doc.sha256) {
        h.insert("x-content-sha256", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"consent-{id}.pdf\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// A patient's consents (following merges), newest first: by `kind`; `active=true` keeps
/// only the active ones (signed, not revoked), which answers "does this patient have an
/// active consent of kind X" (the same question `consent::has_active_consent` answers for
/// other modules).
#[utoipa::path(get, path = "/api/v1/patients/{id}/consents", tag = "consents",
    params(("id" = Uuid, Path, description = "Patient id"), ("kind" = Option<String>, Query, description = "Kind code"), ("active" = Option<bool>, Query, description = "true: only active consents (then all of them, up to limit, without a cursor)"),
           ("limit" = Option<u32>, Query, description = "1-200, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, description = "{ items, next_cursor }"), (status = 404, description = "No such patient")), security(("bearer" = ["consents:read"])))]
pub async fn patient_consents(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let pid = http::parse_uuid("patient", &id)?;
    let p = ListParams::parse(raw, &["kind", "active"])?;
    let kind = match p.get("kind") {
        Some(k) => Some(template::parse_kind(&k)?),
        None => None,
    };
    let active = match p.get("active").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::bad_request("active must be true or false")),
    };
    // The patient's merge group; a patient-context token's own patient only.
    let group = http::patient_group(&state, &actor, &pid.to_string()).await?;
    if active {
        let found =
            consent::active_consents(&state.services, &actor.ctx, pid, kind.as_deref(), p.limit)
                .await?;
        let rows: Vec<ResourceRow> = found.into_iter().map(|c| c.row).collect();
        for row in &rows {
            verified(&state, row)?;
        }
        crate::access_log::record_docs(
            &state,
            &actor,
            AccessAction::Search,
            Consent::RESOURCE_TYPE,
            rows.iter().map(|r| (r.id, &r.doc)),
        )
        .await?;
        let items: Vec<Value> = rows.iter().map(http::resource_json).collect();
        return Ok(
            axum::Json(serde_json::json!({ "items": items, "next_cursor": null })).into_response(),
        );
    }
    let mut filters = vec![salus_store::Filter {
        also: Vec::new(),
        param: "patient".into(),
        system: None,
        op: salus_store::FilterOp::In(group.iter().map(uuid::Uuid::to_string).collect()),
        value: String::new(),
    }];
    if let Some(k) = kind {
        filters.push(eq("kind", k));
    }
    let rows = state
        .services
        .store
        .search(&actor.ctx, &p.query(Consent::RESOURCE_TYPE, filters, true))
        .await?;
    for row in &rows {
        verified(&state, row)?;
    }
    p.page(&state, &actor, rows).await
}

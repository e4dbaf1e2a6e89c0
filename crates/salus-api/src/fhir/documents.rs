//! Every R4 resource type without a Salus module, kept whole as a versioned document
//! ([`FhirDocument`]) and searchable on every search parameter of its type that has an
//! expression (see `salus_fhir::search`).
//!
//! Interactions: create (with `If-None-Exist`), read, vread, update (with `If-Match`, and
//! create-on-update with the client's id), patch (JSON Patch), delete (a tombstone
//! version: reads answer 410 Gone, history keeps every version), history-instance, and
//! search by GET and by POST `_search`, with chained reference parameters one level deep.
//!
//! A document whose `patient` or `subject` (or `beneficiary`) names a Salus Patient is that
//! patient's data: a patient-context token sees only its own, and every read is logged.

use super::results::{self, Hit, ResultParams, TypeSearch};
use super::*;
use salus_domain::documents::{
    self, DocumentCommand, FhirDocument, client_stream_id, legacy_client_stream_id, row_param,
};
use salus_fhir::search::{self as fsearch, Clause, SearchError};
use salus_store::{FilterOp, SearchQuery};

/// Resource types that a Salus module serves (they are not documents).
pub const DOMAIN_TYPES: &[&str] = &[
    "Patient",
    "AuditEvent",
    "Observation",
    "Condition",
    "AllergyIntolerance",
    "Encounter",
    "Procedure",
    "DocumentReference",
    "Consent",
    "Practitioner",
    "Organization",
    "Location",
];

/// The stored resource type of documents.
const STORED: &str = FhirDocument::RESOURCE_TYPE;

/// Register the FHIR indexer with the domain (idempotent; the server does it at start,
/// and so does every command that rebuilds projections).
pub fn register_indexer() {
    documents::set_indexer(fsearch::rows_of);
    salus_domain::clinical::fhir_view::set_viewer(salus_fhir::clinical::rows);
    salus_domain::clinical::fhir_view::set_meta_viewer(salus_fhir::clinical::meta_rows);
}

/// Whether Salus keeps resources of type `t` as documents.
pub fn is_document_type(t: &str) -> bool {
    t != "Resource"
        && t != "DomainResource"
        && !DOMAIN_TYPES.contains(&t)
        && salus_fhir::definitions::structures().is_resource(t)
}

fn check_type(t: &str) -> Result<(), FhirError> {
    if is_document_type(t) {
        Ok(())
    } else {
        Err(FhirError::new(
            404,
            "not-supported",
            format!("'{t}' is not a resource type served here"),
        ))
    }
}

/// What this module serves of each document type (their CapabilityStatement entries).
pub(super) fn capabilities() -> Vec<Value> {
    let st = salus_fhir::definitions::structures();
    let mut types: Vec<&str> = st
        .types
        .keys()
        .map(String::as_str)
        .filter(|t| is_document_type(t))
        .collect();
    types.sort_unstable();
    types
        .into_iter()
        .map(|t| {
            let params: Vec<Value> = search_parameters()
                .of(t)
                .into_iter()
                        .filter(|p| fsearch::is_searchable(p))
                .filter_map(|p| {
                    let modifiers = fsearch::modifiers_doc(p.kind);
                    capability_param(t, &p.code, &modifiers)
                })
                .collect();
            json!({
                "type": t,
                "profile": format!("http://hl7.org/fhir/StructureDefinition/{t}"),
                "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "update"}, {"code": "patch"}, {"code": "delete"}, {"code": "history-instance"}, {"code": "history-type"}, {"code": "create"}, {"code": "search-type"}],
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchInclude": includes_of(t),
                "searchRevInclude": revincludes_of(t),
                "searchParam": params
            })
        })
        .collect()
}

/// The `_include` values a search of `t` takes: `*` and each reference parameter.
pub(super) fn includes_of(t: &str) -> Vec<String> {
    let mut out = vec!["*".to_owned()];
    out.extend(
        search_parameters()
            .of(t)
            .into_iter()
            .filter(|p| {
                p.kind == salus_fhir::definitions::ParamType::Reference && p.expression.is_some()
            })
            .map(|p| format!("{t}:{}", p.code)),
    );
    out
}

/// The `_revinclude` values a search of `t` takes: the reference parameters of Patient,
/// document types and domain-backed types that may point at `t`.
pub(super) fn revincludes_of(t: &str) -> Vec<String> {
    let mut out: Vec<String> = search_parameters()
        .all
        .iter()
        .filter(|p| {
            p.kind == salus_fhir::definitions::ParamType::Reference
                && p.expression.is_some()
                && p.target.iter().any(|x| x == t)
        })
        .flat_map(|p| {
            p.base
                .iter()
                .filter(|b| {
                    b.as_str() == "Patient"
                        || is_document_type(b)
                        || super::rest::DomainType::of(b).is_some()
                })
                .map(|b| format!("{b}:{}", p.code))
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The resource as answered: the stored form with `id` and `meta.versionId`.
pub(super) fn render(d: &FhirDocument, version: i64) -> Value {
    let mut r = d.resource.clone();
    if let Some(o) = r.as_object_mut() {
        o.insert("id".into(), Value::String(d.id.clone()));
        if let Some(m) = o.get_mut("meta").and_then(Value::as_object_mut) {
            m.insert("versionId".into(), Value::String(version.to_string()));
        }
    }
    r
}

fn not_found(t: &str, id: &str) -> FhirError {
    FhirError::new(404, "not-found", format!("no {t}/{id}"))
}

/// A document's current row and state, found by its FHIR id: a server-minted id is the
/// stream id, a client's the name-based one.
pub(super) async fn find(
    state: &AppState,
    actor: &Actor,
    t: &str,
    id: &str,
) -> Result<Option<Current<FhirDocument>>, FhirError> {
    let mut candidates = Vec::with_capacity(3);
    if let Ok(u) = Uuid::parse_str(id) {
        candidates.push(u);
    }
    candidates.push(client_stream_id(actor.ctx.tenant, t, id));
    candidates.push(legacy_client_stream_id(t, id));
    for stream in candidates {
        if let Some(c) = state
            .services
            .load::<FhirDocument>(&actor.ctx, stream)
            .await?
            && c.state.resource_type == t
            && c.state.id == id
        {
            if !actor.sees(STORED, &c.row.doc) {
                return Ok(None);
            }
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// The document `t/id`, deleted or not, its read logged; 404 when there is none.
async fn found(
    state: &AppState,
    actor: &Actor,
    t: &str,
    id: &str,
) -> Result<Current<FhirDocument>, FhirError> {
    let c = find(state, actor, t, id)
        .await?
        .ok_or_else(|| not_found(t, id))?;
    access_log::record_docs(
        state,
        actor,
        AccessAction::Read,
        STORED,
        [(c.row.id, &c.row.doc)],
    )
    .await?;
    Ok(c)
}

/// The live document `t/id`, its read logged; 404 when there is none, 410 when deleted.
async fn load(
    state: &AppState,
    actor: &Actor,
    t: &str,
    id: &str,
) -> Result<Current<FhirDocument>, FhirError> {
    check_type(t)?;
    let c = found(state, actor, t, id).await?;
    if c.state.deleted {
        return Err(FhirError::new(
            410,
            "deleted",
            format!("{t}/{id} was deleted (its history is kept)"),
        ));
    }
    Ok(c)
}

fn document_response(status: StatusCode, c: &Current<FhirDocument>, location: bool) -> Response {
    let body = render(&c.state, c.row.version);
    let loc = location.then(|| {
        format!(
            "{BASE}/{}/{}/_history/{}",
            c.state.resource_type, c.state.id, c.row.version
        )
    });
    resource_response(status, &body, c.row.version, c.row.updated_at, loc)
}

/// The Salus patient a resource is about: a `patient`, `subject` or `beneficiary`
/// reference to `Patient/<uuid>`.
fn patient_of(t: &str, resource: &Value) -> Option<Uuid> {
    for code in ["patient", "subject", "beneficiary"] {
        let Some(p) = search_parameters().get(t, code) else {
            continue;
        };
        let Ok(values) = salus_fhir::index::extract(p, resource) else {
            continue;
        };
        for v in values {
            if let salus_fhir::index::IndexValue::Reference(r) = v
                && let Some(id) = fsearch::reference_key(&r).strip_prefix("Patient/")
                && let Ok(u) = Uuid::parse_str(id)
            {
                return Some(u);
            }
        }
    }
    None
}

/// A FHIR id: 1–64 of `A-Z a-z 0-9 - .` (R4 §2.1.0.3 "id").
pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The body as a resource of type `t` that may be stored: its type, and structurally valid.
pub(super) fn checked_body(t: &str, body: &Value) -> Result<(), FhirError> {
    if body.get("resourceType").and_then(Value::as_str) != Some(t) {
        return Err(FhirError {
            status: StatusCode::BAD_REQUEST,
            issues: vec![
                Issue::error("invalid", format!("the body must be a {t} resource"))
                    .at("resourceType"),
            ],
        });
    }
    let issues = salus_fhir::validate::validate(body);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(FhirError::invalid(issues))
    }
}

pub(super) fn store_command(
    t: &str,
    id: &str,
    resource: &Value,
    at: DateTime<Utc>,
) -> DocumentCommand {
    let mut r = resource.clone();
    if let Some(o) = r.as_object_mut() {
        o.insert("id".into(), Value::String(id.to_owned()));
    }
    DocumentCommand::Store {
        resource_type: t.to_owned(),
        id: id.to_owned(),
        patient_id: patient_of(t, &r),
        resource: r,
        at,
    }
}

/// Read a resource kept as a document.
#[utoipa::path(get, path = "/fhir/R4/{type}/{id}", tag = "fhir",
    params(("type" = String, Path, description = "An R4 resource type kept as a document (not Patient)"), ("id" = String, Path, description = "Resource id")),
    responses((status = 200, description = "The resource", content_type = "application/fhir+json"), (status = 404, description = "No such resource (OperationOutcome)"), (status = 410, description = "Deleted")),
    security(("bearer" = ["fhir_resources:read"])))]
pub async fn read(
    State(state): State<AppState>,
    actor: Actor,
    Path((t, id)): Path<(String, String)>,
) -> Result<Response, FhirError> {
    let c = load(&state, &actor, &t, &id).await?;
    Ok(document_response(StatusCode::OK, &c, false))
}

/// Read a resource as it stood at version `vid`.
#[utoipa::path(get, path = "/fhir/R4/{type}/{id}/_history/{vid}", tag = "fhir",
    params(("type" = String, Path, description = "Resource type"), ("id" = String, Path, description = "Resource id"), ("vid" = String, Path, description = "Version id")),
    responses((status = 200, description = "The resource at that version", content_type = "application/fhir+json"), (status = 404, description = "No such resource or version"), (status = 410, description = "That version is the deletion")),
    security(("bearer" = ["fhir_resources:read"])))]
pub async fn vread(
    State(state): State<AppState>,
    actor: Actor,
    Path((t, id, vid)): Path<(String, String, String)>,
) -> Result<Response, FhirError> {
    check_type(&t)?;
    let missing = || FhirError::new(404, "not-found", format!("no {t}/{id} at version {vid}"));
    let version = vid
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(missing)?;
    let c = found(&state, &actor, &t, &id).await?;
    let at = state
        .services
        .at_version::<FhirDocument>(&actor.ctx, c.row.id, version)
        .await?
        .ok_or_else(missing)?;
    if at.state.deleted {
        return Err(FhirError::new(
            410,
            "deleted",
            format!("version {vid} of {t}/{id} is its deletion"),
        ));
    }
    Ok(document_response(StatusCode::OK, &at, false))
}

/// Every version of a resource, newest first, deletions included, as a history Bundle.
#[utoipa::path(get, path = "/fhir/R4/{type}/{id}/_history", tag = "fhir",
    params(("type" = String, Path, description = "Resource type"), ("id" = String, Path, description = "Resource id")),
    responses((status = 200, description = "A history Bundle, newest version first", content_type = "application/fhir+json"), (status = 404, description = "No such resource")),
    security(("bearer" = ["fhir_resources:read"])))]
pub async fn history(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Path((t, id)): Path<(String, String)>,
) -> Result<Response, FhirError> {
    check_type(&t)?;
    let c = found(&state, &actor, &t, &id).await?;
    let versions = state
        .services
        .versions::<FhirDocument>(&actor.ctx, c.row.id)
        .await?;
    let base = base_url(&headers);
    let mut entries: Vec<Value> = versions.iter().map(|v| version_entry(&base, v)).collect();
    entries.reverse();
    let links = vec![json!({"relation": "self", "url": format!("{base}/{t}/{id}/_history")})];
    let mut bundle = bundle_of(&state, "history", links, entries);
    bundle["total"] = json!(versions.len());
    Ok(ok_json(&bundle))
}

/// One version of a document as a history Bundle entry (a deletion as a DELETE).
pub(super) fn version_entry(base: &str, v: &Current<FhirDocument>) -> Value {
    let (t, id) = (&v.state.resource_type, &v.state.id);
    let url = format!("{t}/{id}");
    let response = |status: &str| json!({"status": status, "etag": format!("W/\"{}\"", v.row.version), "lastModified": salus_fhir::patient::instant(v.row.updated_at)});
    if v.state.deleted {
        return json!({
            "fullUrl": format!("{base}/{url}"),
            "request": {"method": "DELETE", "url": url},
            "response": response("204 No Content"),
        });
    }
    let (method, status, request_url) = if v.row.version == 1 {
        ("POST", "201 Created", t.clone())
    } else {
        ("PUT", "200 OK", url.clone())
    };
    json!({
        "fullUrl": format!("{base}/{url}"),
        "resource": render(&v.state, v.row.version),
        "request": {"method": method, "url": request_url},
        "response": response(status),
    })
}

/// Create a resource kept as a document; with `If-None-Exist` (a search), only when none
/// matches. The server assigns the id.
#[utoipa::path(post, path = "/fhir/R4/{type}", tag = "fhir",
    params(("type" = String, Path, description = "Resource type"), ("If-None-Exist" = Option<String>, Header, description = "A search: create only when it matches nothing")),
    request_body(content = Object, content_type = "application/fhir+json"),
    responses((status = 201, description = "Created (Location, ETag)"), (status = 200, description = "If-None-Exist matched one: that one"), (status = 412, description = "If-None-Exist matched more than one"), (status = 422, description = "Invalid (OperationOutcome naming the elements)")),
    security(("bearer" = ["fhir_resources:write"])))]
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Path(t): Path<String>,
    body: JsonBody<Value>,
) -> Result<Response, FhirError> {
    check_type(&t)?;
    checked_body(&t, &body.value)?;
    if let Some(pairs) = if_none_exist(&headers)? {
        let search = DocumentSearch::parse(&state, &actor, &t, &pairs, true).await?;
        let found = search.run(&state, &actor, None, 2).await?;
        match found.as_slice() {
            [] => {}
            [one] => {
                access_log::record_docs(
                    &state,
                    &actor,
                    AccessAction::Read,
                    STORED,
                    [(one.row.id, &one.row.doc)],
                )
                .await?;
                return Ok(document_response(StatusCode::OK, one, false));
            }
            _ => {
                return Err(FhirError::new(
                    412,
                    "duplicate",
                    format!("If-None-Exist matches more than one {t}"),
                ));
            }
        }
    }
    create_new(&state, &actor, &headers, &t, &body.value).await
}

/// Store `body` as a new resource of type `t` under a server-minted id.
async fn create_new(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    t: &str,
    body: &Value,
) -> Result<Response, FhirError> {
    let stream = Uuid::now_v7();
    let id = stream.to_string();
    let c = state
        .services
        .create::<FhirDocument, _>(
            &actor.ctx,
            stream,
            |_, now| Ok(store_command(t, &id, body, now)),
            None,
        )
        .await?;
    Ok(preferred(headers, document_response(StatusCode::CREATED, &c, true)).await)
}

/// Replace a resource (`If-Match: W/"n"` makes it conditional), or create it under the
/// client's id when there is none.
#[utoipa::path(put, path = "/fhir/R4/{type}/{id}", tag = "fhir",
    params(("type" = String, Path, description = "Resource type"), ("id" = String, Path, description = "Resource id"), ("If-Match" = Option<String>, Header, description = "W/\"n\": update only version n")),
    request_body(content = Object, content_type = "application/fhir+json"),
    responses((status = 200, description = "Updated (ETag)"), (status = 201, description = "Created under the client's id"), (status = 412, description = "Stale If-Match"), (status = 422, description = "Invalid (OperationOutcome naming the elements)")),
    security(("bearer" = ["fhir_resources:write"])))]
pub async fn update(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Path((t, id)): Path<(String, String)>,
    body: JsonBody<Value>,
) -> Result<Response, FhirError> {
    check_type(&t)?;
    checked_body(&t, &body.value)?;
    put_document(&state, &actor, &headers, &t, &id, &body.value).await
}

/// Replace `t/id` with `body` (whose id must be `id`), or create it under that id.
async fn put_document(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    t: &str,
    id: &str,
    body: &Value,
) -> Result<Response, FhirError> {
    match body.get("id").and_then(Value::as_str) {
        Some(b) if b == id => {}
        Some(b) => {
            return Err(FhirError {
                status: StatusCode::BAD_REQUEST,
                issues: vec![
                    Issue::error(
                        "invalid",
                        format!("the body's id '{b}' is not the id in the URL"),
                    )
                    .at(format!("{t}.id")),
                ],
            });
        }
        None => {
            return Err(FhirError {
                status: StatusCode::BAD_REQUEST,
                issues: vec![
                    Issue::error("required", "an update needs the resource's id in the body")
                        .at(format!("{t}.id")),
                ],
            });
        }
    }
    let expected = match headers.get(header::IF_MATCH) {
        Some(_) => http::if_match(headers)?,
        None => None,
    };
    let existing = find(state, actor, t, id).await?;
    let (stream, created) = match &existing {
        Some(c) => (c.row.id, false),
        None => {
            if !valid_id(id) {
                return Err(FhirError::new(
                    400,
                    "invalid",
                    format!("'{id}' is not a FHIR id (1-64 of A-Z, a-z, 0-9, '-', '.')"),
                ));
            }
            (client_stream_id(actor.ctx.tenant, t, id), true)
        }
    };
    let c = state
        .services
        .execute::<FhirDocument, _>(
            &actor.ctx,
            stream,
            expected,
            |_, now| Ok(store_command(t, id, body, now)),
            None,
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(preferred(headers, document_response(status, &c, created)).await)
}

/// The one document of type `t` a conditional interaction's search matches (`None`: none);
/// more than one is a 412.
async fn conditional_match(
    state: &AppState,
    actor: &Actor,
    t: &str,
    pairs: &[(String, String)],
    what: &str,
) -> Result<Option<Current<FhirDocument>>, FhirError> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "_format")
        .cloned()
        .collect();
    if pairs.is_empty() {
        return Err(FhirError::new(
            400,
            "invalid",
            format!(
                "a conditional {what} needs search parameters (PUT or DELETE {t}?parameter=value)"
            ),
        ));
    }
    let search = DocumentSearch::parse(state, actor, t, &pairs, true).await?;
    let mut found = search.run(state, actor, None, 2).await?;
    if found.len() > 1 {
        return Err(FhirError::new(
            412,
            "multiple-matches",
            format!("the conditional {what}'s search matches more than one {t}"),
        ));
    }
    Ok(found.pop())
}

/// Conditional update (`PUT {type}?search`): the one match is replaced; with none, the
/// body is created (under its id when it has one); more than one is a 412.
#[utoipa::path(put, path = "/fhir/R4/{type}", tag = "fhir",
    params(("type" = String, Path, description = "Resource type"), ("If-Match" = Option<String>, Header, description = "W/\"n\": update only version n")),
    request_body(content = Object, content_type = "application/fhir+json"),
    responses((status = 200, description = "The match updated"), (status = 201, description = "Created"), (status = 400, description = "No search, or the body's id is not the match's"), (status = 412, description = "More than one match, or a stale If-Match")),
    security(("bearer" = ["fhir_resources:write"])))]
pub async fn conditional_update(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Path(t): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
    body: JsonBody<Value>,
) -> Result<Response, FhirError> {
    check_type(&t)?;
    checked_body(&t, &body.value)?;
    let body_id = body
        .value
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    match conditional_match(&state, &actor, &t, &pairs, "update").await? {
        Some(one) => {
            if body_id.as_deref().is_some_and(|b| b != one.state.id) {
                return Err(FhirError {
                    status: StatusCode::BAD_REQUEST,
                    issues: vec![
                        Issue::error(
                            "invalid",
                            format!(
                                "the body's id is not that of the match ({t}/{})",
                                one.state.id
                            ),
                        )
                        .at(format!("{t}.id")),
                    ],
                });
            }
            let mut r = body.value.clone();
            r["id"] = Value::String(one.state.id.clone());
            put_document(&state, &actor, &headers, &t, &one.state.id, &r).await
        }
        None => match body_id {
            Some(id) => put_document(&state, &actor, &headers, &t, &id, &body.value).await,
            None => create_new(&state, &actor, &headers, &t, &body.value).await,
        },
    }
}

/// Conditional delete (`DELETE {type}?search`): the one match is deleted (204 also when
/// nothing matches); more than one is a 412.
#[utoipa::path(delete, path = "/fhir/R4/{type}", tag = "fhir",
    params(("type" = String, Path, description = "Resource type")),
    responses((status = 204, description = "Deleted, or nothing matched"), (status = 400, description = "No search"), (status = 412, description = "More than one match")),
    security(("bearer" = ["fhir_resources:write"])))]
pub async fn conditional_delete(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Path(t): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    check_type(&t)?;
    match conditional_match(&state, &actor, &t, &pairs, "delete").await? {
        Some(one) => delete_document(&state, &actor, &headers, &one).await,
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// Change a resource with a JSON Patch (RFC 6902, `application/json-patch+json`);
/// `If-Match` as for an update. The result must still be a valid resource of its type.
#[utoipa::path(patch, path = "/fhir/R4/{type}/{id}", tag = "fhir",
    params(("type" = String, Path, description = "Resource type"), ("id" = String, Path, description = "Resource id"), ("If-Match" = Option<String>, Header, description = "W/\"n\": patch only version n")),
    request_body(content = Object, content_type = "application/json-patch+json"),
    responses((status = 200, description = "Patched (ETag)"), (status = 404, description = "No such resource"), (status = 412, description = "Stale If-Match"), (status = 422, description = "The patch does not apply, or its result is invalid")),
    security(("bearer" = ["fhir_resources:write"])))]
pub async fn patch(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Path((t, id)): Path<(String, String)>,
    body: JsonBody<Value>,
) -> Result<Response, FhirError> {
    let current = load(&state, &actor, &t, &id).await?;
    let mut doc = render(&current.state, current.row.version);
    apply_json_patch(&mut doc, &body.value)?;
    if doc.get("id").and_then(Value::as_str) != Some(id.as_str()) {
        return Err(FhirError::new(
            422,
            "processing",
            "a patch may not change or remove the resource's id",
        ));
    }
    checked_body(&t, &doc)?;
    let expected = match headers.get(header::IF_MATCH) {
        Some(_) => http::if_match(&headers)?,
        None => Some(current.row.version),
    };
    let c = state
        .services
        .execute::<FhirDocument, _>(
            &actor.ctx,
            current.row.id,
            expected,
            |_, now| Ok(store_command(&t, &id, &doc, now)),
            None,
        )
        .await?;
    Ok(preferred(&headers, document_response(StatusCode::OK, &c, false)).await)
}

/// Delete a resource: a new version that is its tombstone (reads answer 410, its history
/// stays). Deleting a deleted resource changes nothing.
#[utoipa::path(delete, path = "/fhir/R4/{type}/{id}", tag = "fhir",
    params(("type" = String, Path, description = "Resource type"), ("id" = String, Path, description = "Resource id"), ("If-Match" = Option<String>, Header, description = "W/\"n\": delete only version n")),
    responses((status = 204, description = "Deleted (or already deleted)"), (status = 404, description = "No such resource"), (status = 412, description = "Stale If-Match")),
    security(("bearer" = ["fhir_resources:write"])))]
pub async fn delete(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Path((t, id)): Path<(String, String)>,
) -> Result<Response, FhirError> {
    check_type(&t)?;
    let c = find(&state, &actor, &t, &id)
        .await?
        .ok_or_else(|| not_found(&t, &id))?;
    delete_document(&state, &actor, &headers, &c).await
}

/// Delete a document (a tombstone version), `If-Match` honoured.
async fn delete_document(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    c: &Current<FhirDocument>,
) -> Result<Response, FhirError> {
    let expected = match headers.get(header::IF_MATCH) {
        Some(_) => http::if_match(headers)?,
        None => None,
    };
    let done = state
        .services
        .execute::<FhirDocument, _>(
            &actor.ctx,
            c.row.id,
            expected,
            |_, now| Ok(DocumentCommand::Delete { at: now }),
            None,
        )
        .await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Some(v) = weak_etag(done.row.version) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

/// A search over documents of one type.
pub(super) struct DocumentSearch {
    resource_type: String,
    pub(super) q: RowSearch,
}

/// A search over resources indexed by their FHIR rendering (rows named `Type.code`, as
/// documents and the domain-backed types are): store filters, and the paging and result
/// options.
pub(super) struct RowSearch {
    pub(super) filters: Vec<Filter>,
    pub(super) count: u32,
    pub(super) cursor: Option<Uuid>,
    /// `_sort`, `_summary`, `_include` and the other result parameters.
    pub(super) results: ResultParams,
    /// The parameters applied, for the self and next links.
    pub(super) applied: Vec<(String, String)>,
    /// What lenient handling left out, and why.
    pub(super) ignored: Vec<String>,
}

/// The most ids a chained parameter may resolve to.
const CHAIN_LIMIT: u32 = 1000;

impl RowSearch {
    /// A search with these filters and the default paging.
    pub(super) fn of(filters: Vec<Filter>) -> Self {
        RowSearch {
            filters,
            count: 50,
            cursor: None,
            results: ResultParams::default(),
            applied: Vec::new(),
            ignored: Vec::new(),
        }
    }

    /// The parameters of a search of type `t`: every R4 search parameter of the type (with
    /// chains and `_has`), paging, and the result parameters.
    pub(super) async fn parse(
        state: &AppState,
        actor: &Actor,
        t: &str,
        pairs: &[(String, String)],
        strict: bool,
    ) -> Result<Self, FhirError> {
        let mut s = RowSearch::of(Vec::new());
        for (key, value) in pairs {
            let value = value.trim();
            match key.as_str() {
                "_count" => {
                    s.count = value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .map(|n| n.min(200))
                        .ok_or_else(|| {
                            FhirError::new(
                                400,
                                "invalid",
                                "_count must be a whole number from 1 (at most 200 are returned)",
                            )
                        })?;
                    continue;
                }
                "_cursor" => {
                    s.cursor = Some(http::decode_cursor(value)?);
                    continue;
                }
                "_format" => continue,
                "_contained" | "_containedType" => {
                    let msg = format!("the result parameter '{key}' is not supported");
                    strict_or_ignore(strict, msg, &mut s.ignored)?;
                    continue;
                }
                _ => {}
            }
            if key.starts_with("_has:") {
                let ids = resolve_has(state, actor, t, key, value).await?;
                s.applied.push((key.clone(), value.to_owned()));
                s.filters.push(Filter {
                    also: Vec::new(),
                    param: row_param(t, "_id"),
                    system: None,
                    op: FilterOp::In(ids),
                    value: String::new(),
                });
                continue;
            }
            if s.results.take(t, key, value)? {
                if ResultParams::linked(key) {
                    s.applied.push((key.clone(), value.to_owned()));
                }
                continue;
            }
            let clause = match fsearch::parse(t, key, value) {
                Ok(c) => c,
                Err(e @ (SearchError::Unknown { .. } | SearchError::NotSupported(_)))
                    if !strict && fsearch::parse_key(key).modifier.is_none() =>
                {
                    s.ignored.push(e.to_string());
                    continue;
                }
                Err(SearchError::Invalid(m)) => return Err(FhirError::new(400, "invalid", m)),
                Err(e) => return Err(FhirError::new(400, "not-supported", e.to_string())),
            };
            s.applied.push((key.clone(), value.to_owned()));
            match clause {
                Clause::Filters(fs) => {
                    for f in fs {
                        s.filters.push(salus_domain::documents::row_filter(t, f));
                    }
                }
                Clause::Chain {
                    param,
                    targets,
                    inner,
                    value,
                } => {
                    let refs = resolve_chain(state, actor, &targets, &inner, &value).await?;
                    s.filters.push(naming(t, &param, refs));
                }
            }
        }
        Ok(s)
    }

    /// Resources of type `t` whose reference parameter `param` names one of `refs`.
    pub(super) fn referencing(t: &str, param: &str, refs: Vec<String>) -> Self {
        RowSearch::of(vec![naming(t, param, refs)])
    }
}

impl DocumentSearch {
    pub(super) async fn parse(
        state: &AppState,
        actor: &Actor,
        t: &str,
        pairs: &[(String, String)],
        strict: bool,
    ) -> Result<Self, FhirError> {
        let mut q = RowSearch::parse(state, actor, t, pairs, strict).await?;
        // A search that asks nothing positive of the rows still asks for the type.
        if !q
            .filters
            .iter()
            .any(|f| !matches!(f.op, FilterOp::NoneOf(_)))
        {
            q.filters.push(Filter {
                also: Vec::new(),
                param: "_type".into(),
                system: None,
                op: FilterOp::Eq,
                value: t.to_owned(),
            });
        }
        Ok(DocumentSearch {
            resource_type: t.to_owned(),
            q,
        })
    }

    /// Documents of type `t` whose reference parameter `param` names one of `refs`.
    pub(super) fn referencing(t: &str, param: &str, refs: Vec<String>) -> Self {
        DocumentSearch {
            resource_type: t.to_owned(),
            q: RowSearch::referencing(t, param, refs),
        }
    }

    fn query(&self, after: Option<Uuid>, limit: u32) -> SearchQuery {
        SearchQuery {
            resource_type: STORED.into(),
            filters: self.q.filters.clone(),
            after,
            limit,
            newest_first: false,
            order_by: None,
        }
    }

    /// The matches as search results (reads not yet logged).
    pub(super) async fn hits(
        &self,
        state: &AppState,
        actor: &Actor,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Hit>, FhirError> {
        Ok(self
            .run(state, actor, after, limit)
            .await?
            .iter()
            .map(hit_of)
            .collect())
    }

    /// How many documents match; `None` when the store cannot say (a patient-context
    /// actor sees only some of them).
    pub(super) async fn count(
        &self,
        state: &AppState,
        actor: &Actor,
    ) -> Result<Option<u64>, FhirError> {
        if actor.patient.is_some() {
            return Ok(None);
        }
        Ok(Some(
            state
                .services
                .count(&actor.ctx, &self.query(None, 1))
                .await?,
        ))
    }

    /// The matching documents after `after`, at most `limit`, the ones the actor may see.
    pub(super) async fn run(
        &self,
        state: &AppState,
        actor: &Actor,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Current<FhirDocument>>, FhirError> {
        let q = self.query(after, limit);
        let found = state
            .services
            .search::<FhirDocument>(&actor.ctx, &q)
            .await?;
        Ok(found
            .into_iter()
            .filter(|c| c.state.resource_type == self.resource_type && !c.state.deleted)
            .filter(|c| actor.sees(STORED, &c.row.doc))
            .collect())
    }
}

/// One page of the live documents of type `t` in id order after `after` (for `$export`):
/// each with the resource as a read renders it, and the id to continue after (`None` at
/// the end). Deleted documents have no search rows, so none is found.
pub(super) async fn export_page(
    state: &AppState,
    actor: &Actor,
    t: &str,
    after: Option<Uuid>,
    limit: u32,
) -> Result<(Vec<(Current<FhirDocument>, Value)>, Option<Uuid>), FhirError> {
    let q = SearchQuery {
        resource_type: STORED.into(),
        filters: vec![Filter {
            also: Vec::new(),
            param: "_type".into(),
            system: None,
            op: FilterOp::Eq,
            value: t.to_owned(),
        }],
        after,
        limit,
        newest_first: false,
        order_by: None,
    };
    let found = state
        .services
        .search::<FhirDocument>(&actor.ctx, &q)
        .await?;
    let next = if found.len() >= limit as usize {
        found.last().map(|c| c.row.id)
    } else {
        None
    };
    let page = found
        .into_iter()
        .filter(|c| c.state.resource_type == t && !c.state.deleted)
        .map(|c| {
            let r = render(&c.state, c.row.version);
            (c, r)
        })
        .collect();
    Ok((page, next))
}

/// The ids of the resources of type `t` that a reverse chain names:
/// `_has:Observation:patient:code=1234-5` stands for the `t`s that Observations with code
/// 1234-5 reference through their `patient` parameter (the part after the parameter may be
/// another `_has`). The source type must be kept as a document.
pub(super) async fn resolve_has(
    state: &AppState,
    actor: &Actor,
    t: &str,
    key: &str,
    value: &str,
) -> Result<Vec<String>, FhirError> {
    let bad = |m: String| FhirError::new(400, "invalid", m);
    let rest = key.strip_prefix("_has:").unwrap_or(key);
    let mut parts = rest.splitn(3, ':');
    let (Some(source), Some(param), Some(inner)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(format!(
            "'{key}' is not _has:Type:reference-parameter:search-parameter"
        )));
    };
    let domain = super::rest::DomainType::of(source);
    if source != "Patient" && !is_document_type(source) && domain.is_none() {
        return Err(FhirError::new(
            400,
            "not-supported",
            format!("_has from {source} is not supported (not a resource type served here)"),
        ));
    }
    let points_here = search_parameters().get(source, param).is_some_and(|p| {
        p.kind == salus_fhir::definitions::ParamType::Reference
            && p.expression.is_some()
            && (p.target.is_empty() || p.target.iter().any(|x| x == t))
    });
    if !points_here {
        return Err(bad(format!(
            "'{param}' is not a reference search parameter of {source} that can point at {t}"
        )));
    }
    let pairs = [(inner.to_owned(), value.to_owned())];
    let sources: Vec<Value> = match domain {
        None if source == "Patient" => {
            let search = super::patient::PatientSearch::parse(&pairs, true)?;
            Box::pin(search.run(state, actor, None, CHAIN_LIMIT))
                .await?
                .iter()
                .map(|c| salus_fhir::patient::to_fhir(&c.state, c.row.version, c.row.updated_at))
                .collect()
        }
        Some(d) => Box::pin(d.matching_resources(state, actor, &pairs, CHAIN_LIMIT)).await?,
        None => {
            let search =
                Box::pin(DocumentSearch::parse(state, actor, source, &pairs, true)).await?;
            search
                .run(state, actor, None, CHAIN_LIMIT)
                .await?
                .into_iter()
                .map(|d| d.state.resource)
                .collect()
        }
    };
    let prefix = format!("{t}/");
    let mut ids: Vec<String> = Vec::new();
    for r in &sources {
        for row in fsearch::rows_of(source, r) {
            if row.param == param
                && let Some(id) = row.value.strip_prefix(&prefix)
            {
                ids.push(id.to_owned());
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// The filter "the reference parameter `param` of `t` names one of `refs` (`Type/id`)",
/// over the rows of the FHIR rendering: what a chain or a reverse include asks.
pub(super) fn naming(t: &str, param: &str, refs: Vec<String>) -> Filter {
    Filter {
        also: Vec::new(),
        param: row_param(t, param),
        system: None,
        op: FilterOp::In(refs),
        value: String::new(),
    }
}

/// The references (`Type/id`) to resources of `targets` that match `inner=value`: the ids
/// a chained parameter stands for.
pub(super) async fn resolve_chain(
    state: &AppState,
    actor: &Actor,
    targets: &[String],
    inner: &str,
    value: &str,
) -> Result<Vec<String>, FhirError> {
    if fsearch::parse_key(inner).chain.is_some() {
        return Err(FhirError::new(
            400,
            "not-supported",
            "chains are followed one level deep",
        ));
    }
    let pairs = [(inner.to_owned(), value.to_owned())];
    // A reference that may point at several types is followed to those where the inner
    // parameter is defined (`general-practitioner.name`: Practitioner and Organization, not
    // PractitionerRole); at least one must define it.
    let code = fsearch::parse_key(inner).name;
    let defines = |t: &str| code.starts_with('_') || search_parameters().get(t, code).is_some();
    let followed: Vec<&String> = if targets.len() > 1 {
        targets.iter().filter(|t| defines(t)).collect()
    } else {
        targets.iter().collect()
    };
    if followed.is_empty() {
        return Err(FhirError::new(
            400,
            "not-supported",
            format!(
                "'{code}' is not a search parameter of {}",
                targets.join(" or ")
            ),
        ));
    }
    let mut out = Vec::new();
    for t in followed {
        if t == "Patient" {
            let search = super::patient::PatientSearch::parse(&pairs, true)?;
            for p in search.run(state, actor, None, CHAIN_LIMIT).await? {
                out.push(format!("Patient/{}", p.row.id));
            }
        } else if let Some(d) = super::rest::DomainType::of(t) {
            out.extend(Box::pin(d.refs(state, actor, &pairs, CHAIN_LIMIT)).await?);
        } else if is_document_type(t) {
            let search = Box::pin(DocumentSearch::parse(state, actor, t, &pairs, true)).await?;
            for d in search.run(state, actor, None, CHAIN_LIMIT).await? {
                out.push(format!("{t}/{}", d.state.id));
            }
        }
    }
    Ok(out)
}

async fn answer_search(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    t: &str,
    pairs: &[(String, String)],
) -> Result<Response, FhirError> {
    check_type(t)?;
    let mut search = DocumentSearch::parse(state, actor, t, pairs, prefers_strict(headers)).await?;
    let results = std::mem::take(&mut search.q.results);
    let (applied, ignored) = (
        std::mem::take(&mut search.q.applied),
        std::mem::take(&mut search.q.ignored),
    );
    let (count, cursor) = (search.q.count, search.q.cursor);
    results::answer(
        state,
        actor,
        headers,
        t,
        TypeSearch::Document(search),
        &results,
        &applied,
        count,
        cursor,
        &ignored,
    )
    .await
}

/// A document as a search result.
fn hit_of(c: &Current<FhirDocument>) -> Hit {
    Hit {
        row_id: c.row.id,
        stored: STORED,
        patient: access_log::patient_of(STORED, &c.row.doc),
        reference: format!("{}/{}", c.state.resource_type, c.state.id),
        resource: render(&c.state, c.row.version),
    }
}

/// The live document `t/id` as a search result (for `_include`), if the actor may see it.
pub(super) async fn hit(
    state: &AppState,
    actor: &Actor,
    t: &str,
    id: &str,
) -> Result<Option<Hit>, FhirError> {
    Ok(find(state, actor, t, id)
        .await?
        .filter(|c| !c.state.deleted)
        .map(|c| hit_of(&c)))
}

/// Search resources kept as documents, on every search parameter of their type.
#[utoipa::path(get, path = "/fhir/R4/{type}", tag = "fhir",
    params(("type" = String, Path, description = "Resource type"), ("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)"), ("Prefer" = Option<String>, Header, description = "handling=strict: unknown parameters are a 400")),
    responses((status = 200, description = "A searchset Bundle", content_type = "application/fhir+json"), (status = 400, description = "A parameter is malformed, or unknown under handling=strict")),
    security(("bearer" = ["fhir_resources:read"])))]
pub async fn search(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Path(t): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    answer_search(&state, &actor, &headers, &t, &pairs).await
}

/// Search by POST: the parameters in an `application/x-www-form-urlencoded` body (and the
/// query string).
#[utoipa::path(post, path = "/fhir/R4/{type}/_search", tag = "fhir",
    params(("type" = String, Path, description = "Resource type")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "A searchset Bundle", content_type = "application/fhir+json"), (status = 400, description = "A parameter is malformed")),
    security(("bearer" = ["fhir_resources:read"])))]
pub async fn search_post(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Path(t): Path<String>,
    Query(mut pairs): Query<Vec<(String, String)>>,
    body: axum::body::Bytes,
) -> Result<Response, FhirError> {
    pairs.extend(search_form(&headers, &body)?);
    answer_search(&state, &actor, &headers, &t, &pairs).await
}

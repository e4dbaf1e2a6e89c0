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

use super::*;
use salus_domain::documents::{self, DocumentCommand, FhirDocument, client_stream_id, row_param};
use salus_fhir::search::{self as fsearch, Clause, SearchError};
use salus_store::{FilterOp, SearchQuery};

/// Resource types that a Salus module serves (they are not documents).
pub const DOMAIN_TYPES: &[&str] = &["Patient", "Observation"];

/// The stored resource type of documents.
const STORED: &str = FhirDocument::RESOURCE_TYPE;

/// Register the FHIR indexer with the domain (idempotent; the server does it at start,
/// and so does every command that rebuilds projections).
pub fn register_indexer() {
    documents::set_indexer(fsearch::rows_of);
    salus_domain::clinical::fhir_view::set_viewer(salus_fhir::clinical::rows);
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
                .filter(|p| fsearch::is_searchable(p.kind) && p.expression.is_some())
                .filter_map(|p| {
                    let modifiers = fsearch::SUPPORTED_MODIFIERS
                        .iter()
                        .find(|(k, _)| *k == p.kind)
                        .map(|(_, ms)| ms.join(", :"))
                        .unwrap_or_default();
                    capability_param(t, &p.code, &format!("Modifiers :{modifiers}"))
                })
                .collect();
            json!({
                "type": t,
                "profile": format!("http://hl7.org/fhir/StructureDefinition/{t}"),
                "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "update"}, {"code": "patch"}, {"code": "delete"}, {"code": "history-instance"}, {"code": "create"}, {"code": "search-type"}],
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
                "searchParam": params
            })
        })
        .collect()
}

/// The resource as answered: the stored form with `id` and `meta.versionId`.
fn render(d: &FhirDocument, version: i64) -> Value {
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
    let mut candidates = Vec::with_capacity(2);
    if let Ok(u) = Uuid::parse_str(id) {
        candidates.push(u);
    }
    candidates.push(client_stream_id(t, id));
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
    let mut entries: Vec<Value> = Vec::with_capacity(versions.len());
    for v in &versions {
        let url = format!("{t}/{id}");
        let entry = if v.state.deleted {
            json!({
                "fullUrl": format!("{base}/{url}"),
                "request": {"method": "DELETE", "url": url},
                "response": {"status": "204 No Content", "etag": format!("W/\"{}\"", v.row.version), "lastModified": salus_fhir::patient::instant(v.row.updated_at)},
            })
        } else {
            let (method, status) = if v.row.version == 1 {
                ("POST", "201 Created")
            } else {
                ("PUT", "200 OK")
            };
            json!({
                "fullUrl": format!("{base}/{url}"),
                "resource": render(&v.state, v.row.version),
                "request": {"method": method, "url": if method == "POST" { t.clone() } else { url }},
                "response": {"status": status, "etag": format!("W/\"{}\"", v.row.version), "lastModified": salus_fhir::patient::instant(v.row.updated_at)},
            })
        };
        entries.push(entry);
    }
    entries.reverse();
    let links = vec![json!({"relation": "self", "url": format!("{base}/{t}/{id}/_history")})];
    let mut bundle = bundle_of(&state, "history", links, entries);
    bundle["total"] = json!(versions.len());
    Ok(ok_json(&bundle))
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
    let stream = Uuid::now_v7();
    let id = stream.to_string();
    let c = state
        .services
        .create::<FhirDocument, _>(
            &actor.ctx,
            stream,
            |_, now| Ok(store_command(&t, &id, &body.value, now)),
            None,
        )
        .await?;
    Ok(preferred(&headers, document_response(StatusCode::CREATED, &c, true)).await)
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
    match body.value.get("id").and_then(Value::as_str) {
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
        Some(_) => http::if_match(&headers)?,
        None => None,
    };
    let existing = find(&state, &actor, &t, &id).await?;
    let (stream, created) = match &existing {
        Some(c) => (c.row.id, false),
        None => {
            if !valid_id(&id) {
                return Err(FhirError::new(
                    400,
                    "invalid",
                    format!("'{id}' is not a FHIR id (1-64 of A-Z, a-z, 0-9, '-', '.')"),
                ));
            }
            (client_stream_id(&t, &id), true)
        }
    };
    let c = state
        .services
        .execute::<FhirDocument, _>(
            &actor.ctx,
            stream,
            expected,
            |_, now| Ok(store_command(&t, &id, &body.value, now)),
            None,
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(preferred(&headers, document_response(status, &c, created)).await)
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
    let ops: json_patch::Patch = serde_json::from_value(body.value.clone()).map_err(|e| {
        FhirError::new(
            400,
            "invalid",
            format!("the body is not a JSON Patch (an array of operations): {e}"),
        )
    })?;
    let mut doc = render(&current.state, current.row.version);
    json_patch::patch(&mut doc, &ops)
        .map_err(|e| FhirError::new(422, "processing", format!("the patch does not apply: {e}")))?;
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
    let expected = match headers.get(header::IF_MATCH) {
        Some(_) => http::if_match(&headers)?,
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

/// A search over documents of one type: store filters, and the paging and result options.
pub(super) struct DocumentSearch {
    resource_type: String,
    filters: Vec<Filter>,
    pub(super) count: u32,
    cursor: Option<Uuid>,
    elements: Option<Vec<String>>,
    /// The parameters applied, for the self and next links.
    applied: Vec<(String, String)>,
    /// What lenient handling left out, and why.
    ignored: Vec<String>,
}

/// The most ids a chained parameter may resolve to.
const CHAIN_LIMIT: u32 = 1000;

impl DocumentSearch {
    pub(super) async fn parse(
        state: &AppState,
        actor: &Actor,
        t: &str,
        pairs: &[(String, String)],
        strict: bool,
    ) -> Result<Self, FhirError> {
        let mut s = DocumentSearch {
            resource_type: t.to_owned(),
            filters: Vec::new(),
            count: 50,
            cursor: None,
            elements: None,
            applied: Vec::new(),
            ignored: Vec::new(),
        };
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
                "_elements" => {
                    s.elements = Some(
                        value
                            .split(',')
                            .map(|e| e.trim().to_owned())
                            .filter(|e| !e.is_empty())
                            .collect(),
                    );
                    s.applied.push((key.clone(), value.to_owned()));
                    continue;
                }
                "_total" if value == "none" => continue,
                "_sort" | "_include" | "_revinclude" | "_summary" | "_total" | "_contained"
                | "_containedType" => {
                    let msg = format!("the result parameter '{key}' is not supported");
                    strict_or_ignore(strict, msg, &mut s.ignored)?;
                    continue;
                }
                _ => {}
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
                    for mut f in fs {
                        f.param = row_param(t, &f.param);
                        s.filters.push(f);
                    }
                }
                Clause::Chain {
                    param,
                    targets,
                    inner,
                    value,
                } => {
                    let refs = resolve_chain(state, actor, &targets, &inner, &value).await?;
                    s.filters.push(Filter {
                        param: row_param(t, &param),
                        system: None,
                        op: FilterOp::In(refs),
                        value: String::new(),
                    });
                }
            }
        }
        // A search that asks nothing positive of the rows still asks for the type.
        if !s
            .filters
            .iter()
            .any(|f| !matches!(f.op, FilterOp::NoneOf(_)))
        {
            s.filters.push(Filter {
                param: "_type".into(),
                system: None,
                op: FilterOp::Eq,
                value: t.to_owned(),
            });
        }
        Ok(s)
    }

    /// The matching documents after `after`, at most `limit`, the ones the actor may see.
    pub(super) async fn run(
        &self,
        state: &AppState,
        actor: &Actor,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Current<FhirDocument>>, FhirError> {
        let q = SearchQuery {
            resource_type: STORED.into(),
            filters: self.filters.clone(),
            after,
            limit,
            newest_first: false,
            order_by: None,
        };
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
    let mut out = Vec::new();
    for t in targets {
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

/// Keep only the elements `_elements` asks for (and those every resource must have).
fn only_elements(mut r: Value, elements: &[String]) -> Value {
    if let Some(o) = r.as_object_mut() {
        o.retain(|k, _| {
            k == "resourceType" || k == "id" || k == "meta" || elements.iter().any(|e| e == k)
        });
        if let Some(m) = o.get_mut("meta").and_then(Value::as_object_mut) {
            let tags = m.entry("tag").or_insert_with(|| json!([]));
            if let Some(a) = tags.as_array_mut() {
                // R4 §3.1.1.5.9: a summarised resource is marked SUBSETTED.
                a.push(json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}));
            }
        }
    }
    r
}

async fn answer_search(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    t: &str,
    pairs: &[(String, String)],
) -> Result<Response, FhirError> {
    check_type(t)?;
    let search = DocumentSearch::parse(state, actor, t, pairs, prefers_strict(headers)).await?;
    let mut found = search
        .run(state, actor, search.cursor, search.count + 1)
        .await?;
    let more = found.len() > search.count as usize;
    found.truncate(search.count as usize);
    access_log::record_docs(
        state,
        actor,
        AccessAction::Search,
        STORED,
        found.iter().map(|c| (c.row.id, &c.row.doc)),
    )
    .await?;
    let next_after = if more {
        found.last().map(|c| c.row.id)
    } else {
        None
    };
    let matches = found
        .iter()
        .map(|c| {
            let r = render(&c.state, c.row.version);
            let r = match &search.elements {
                Some(e) => only_elements(r, e),
                None => r,
            };
            (format!("{t}/{}", c.state.id), r)
        })
        .collect();
    Ok(searchset(
        state,
        &base_url(headers),
        t,
        &search.applied,
        search.count,
        search.cursor,
        next_after,
        matches,
        &search.ignored,
    ))
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
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if !body.is_empty() && !form {
        return Err(FhirError::new(
            415,
            "not-supported",
            "POST _search takes an application/x-www-form-urlencoded body",
        ));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| FhirError::new(400, "invalid", "the form body is not UTF-8"))?;
    pairs.extend(form_pairs(text));
    answer_search(&state, &actor, &headers, &t, &pairs).await
}

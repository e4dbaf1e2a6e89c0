//! `POST /fhir/R4` with a `transaction` or `batch` Bundle (FHIR R4 §3.1.0.11 "Batch/
//! Transaction").
//!
//! A **transaction** is all or nothing: its entries are processed in the order the
//! specification gives (DELETE, POST, PUT/PATCH, then GET), `urn:uuid:` full URLs and
//! conditional references (`Patient?identifier=…`) are resolved to the ids they stand for
//! and rewritten in every resource, conditional creates (`ifNoneExist`) and conditional
//! updates (`PUT Type?query`) are decided by searching first, and every write is decided
//! against the stored state and then committed in one durable store transaction
//! ([`salus_domain::service::Services::commit_prepared`]); any failure answers an
//! OperationOutcome naming the entry, and nothing is written.
//!
//! A **batch** runs each entry on its own, exactly as the matching REST interaction would
//! (the same handlers), and answers each entry's outcome in a `batch-response`.
//!
//! Each entry needs the permission its interaction needs (the route itself declares
//! `fhir_resources:write`); reads inside a bundle are logged like any read.

use super::documents::{self, DocumentSearch, checked_body, find, store_command, valid_id};
use super::patient::{
    PatientSearch, lifecycle_path, parse_patient, replace_command, update_command,
};
use super::rest::{DomainType, Pending, TxWrite};
use super::*;
use axum::http::HeaderName;
use salus_domain::documents::{DocumentCommand, FhirDocument, client_stream_id};
use salus_domain::service::{Done, Prepared, ServiceError};
use std::collections::HashMap;

/// The most entries one Bundle may hold.
pub const MAX_ENTRIES: usize = 10_000;

/// An entry's request, parsed.
#[derive(Debug, Clone)]
struct Entry {
    index: usize,
    method: String,
    /// The resource type the URL names.
    resource_type: String,
    /// `Type/id`: the id; `Type?query`: the query; `Type`: neither.
    id: Option<String>,
    query: Option<String>,
    version: Option<String>,
    full_url: Option<String>,
    resource: Option<Value>,
    if_none_exist: Option<String>,
    if_match: Option<String>,
}

fn entry_error(index: usize, mut e: FhirError) -> FhirError {
    for i in &mut e.issues {
        i.diagnostics = format!("Bundle.entry[{index}]: {}", i.diagnostics);
        if i.expression.is_none() {
            i.expression = Some(format!("Bundle.entry[{index}]"));
        }
    }
    e
}

fn bad(index: usize, msg: impl Into<String>) -> FhirError {
    entry_error(index, FhirError::new(400, "invalid", msg))
}

/// The part of a request URL after the FHIR base (`Patient/1`, `Patient?x=y`).
fn relative_url(url: &str) -> &str {
    let url = url.trim();
    if let Some(i) = url.find("/fhir/R4/") {
        return &url[i + "/fhir/R4/".len()..];
    }
    url.trim_start_matches('/')
}

fn parse_entry(index: usize, e: &Value) -> Result<Entry, FhirError> {
    let req = e
        .get("request")
        .ok_or_else(|| bad(index, "an entry of a transaction or batch needs a request"))?;
    let method = req
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_uppercase();
    if !matches!(
        method.as_str(),
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE"
    ) {
        return Err(bad(
            index,
            "request.method must be GET, HEAD, POST, PUT, PATCH or DELETE",
        ));
    }
    let url = req
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(index, "request.url is required"))?;
    let rel = relative_url(url);
    let (path, query) = match rel.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (rel, None),
    };
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    let resource_type = segs.next().unwrap_or("").to_owned();
    let id = segs.next().map(str::to_owned);
    let version = match (segs.next(), segs.next()) {
        (Some("_history"), Some(v)) => Some(v.to_owned()),
        (None, _) => None,
        _ => {
            return Err(bad(
                index,
                format!("request.url '{url}' is not one this server serves in a bundle"),
            ));
        }
    };
    if resource_type.is_empty() || !resource_type.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(bad(
            index,
            format!("request.url '{url}' does not name a resource type"),
        ));
    }
    let s = |k: &str| req.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(Entry {
        index,
        method,
        resource_type,
        id,
        query,
        version,
        full_url: e.get("fullUrl").and_then(Value::as_str).map(str::to_owned),
        resource: e.get("resource").cloned(),
        if_none_exist: s("ifNoneExist"),
        if_match: s("ifMatch"),
    })
}

/// The permission an interaction of `method` on `resource_type` needs.
fn permission(resource_type: &str, method: &str) -> &'static str {
    let read = matches!(method, "GET" | "HEAD");
    if let Some(d) = DomainType::of(resource_type) {
        return d.permission(read);
    }
    match (resource_type, read) {
        ("Patient", true) => "patients:read",
        ("Patient", false) => "patients:write",
        (_, true) => "fhir_resources:read",
        (_, false) => "fhir_resources:write",
    }
}

fn check_served(e: &Entry) -> Result<(), FhirError> {
    if e.resource_type == "Patient"
        || DomainType::of(&e.resource_type).is_some()
        || documents::is_document_type(&e.resource_type)
    {
        Ok(())
    } else {
        Err(entry_error(
            e.index,
            FhirError::new(
                404,
                "not-supported",
                format!("'{}' is not a resource type served here", e.resource_type),
            ),
        ))
    }
}

/// Where a search of `resource_type` with `query` leads: the ids it matches (at most 2,
/// enough to tell none, one and many).
async fn search_ids(
    state: &AppState,
    actor: &Actor,
    resource_type: &str,
    query: &str,
) -> Result<Vec<String>, FhirError> {
    let pairs = form_pairs(query);
    if pairs.is_empty() {
        return Err(FhirError::new(
            400,
            "invalid",
            "a conditional names no search parameter",
        ));
    }
    if resource_type == "Patient" {
        let s = PatientSearch::parse(&pairs, true)?;
        let found = s.run(state, actor, None, 2).await?;
        access_log::record_docs(
            state,
            actor,
            AccessAction::Search,
            "patient",
            found.iter().map(|c| (c.row.id, &c.row.doc)),
        )
        .await?;
        Ok(found.into_iter().map(|c| c.row.id.to_string()).collect())
    } else if let Some(d) = DomainType::of(resource_type) {
        let refs = d.refs(state, actor, &pairs, 2).await?;
        Ok(refs
            .into_iter()
            .filter_map(|r| r.split_once('/').map(|(_, id)| id.to_owned()))
            .collect())
    } else {
        let s = DocumentSearch::parse(state, actor, resource_type, &pairs, true).await?;
        let found = s.run(state, actor, None, 2).await?;
        access_log::record_docs(
            state,
            actor,
            AccessAction::Search,
            FhirDocument::RESOURCE_TYPE,
            found.iter().map(|c| (c.row.id, &c.row.doc)),
        )
        .await?;
        Ok(found.into_iter().map(|c| c.state.id).collect())
    }
}

/// Replace every `reference` that `map` knows (full URLs of entries), and resolve
/// conditional references (`Type?query`) by searching.
async fn rewrite_references(
    state: &AppState,
    actor: &Actor,
    index: usize,
    v: &mut Value,
    map: &HashMap<String, String>,
    resolved: &mut HashMap<String, String>,
) -> Result<(), FhirError> {
    // Collect first (the walk cannot await), then resolve, then write back.
    let mut refs: Vec<String> = Vec::new();
    collect_refs(v, &mut refs);
    for r in refs {
        if map.contains_key(&r) || resolved.contains_key(&r) {
            continue;
        }
        if let Some((t, q)) = r.split_once('?')
            && !t.contains('/')
            && !t.contains(':')
        {
            let ids = search_ids(state, actor, t, q)
                .await
                .map_err(|e| entry_error(index, e))?;
            match ids.as_slice() {
                [one] => {
                    resolved.insert(r.clone(), format!("{t}/{one}"));
                }
                [] => {
                    return Err(entry_error(
                        index,
                        FhirError::new(
                            404,
                            "not-found",
                            format!("the conditional reference '{r}' matches nothing"),
                        ),
                    ));
                }
                _ => {
                    return Err(entry_error(
                        index,
                        FhirError::new(
                            412,
                            "multiple-matches",
                            format!("the conditional reference '{r}' matches more than one"),
                        ),
                    ));
                }
            }
        } else if r.starts_with("urn:uuid:") || r.starts_with("urn:oid:") {
            return Err(entry_error(
                index,
                FhirError::new(
                    400,
                    "invalid",
                    format!("the reference '{r}' names no entry of the Bundle"),
                ),
            ));
        }
    }
    replace_refs(v, map, resolved);
    Ok(())
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if k == "reference"
                    && let Value::String(s) = x
                {
                    out.push(s.clone());
                } else {
                    collect_refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

fn replace_refs(v: &mut Value, map: &HashMap<String, String>, resolved: &HashMap<String, String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if k == "reference"
                    && let Value::String(s) = x
                {
                    if let Some(to) = map.get(s.as_str()).or_else(|| resolved.get(s.as_str())) {
                        *s = to.clone();
                    }
                } else {
                    replace_refs(x, map, resolved);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| replace_refs(x, map, resolved)),
        _ => {}
    }
}

/// What one entry of a transaction will do once its references are known.
enum Plan {
    /// Create under this id.
    Create { id: String },
    /// Update (or create under) this id.
    Update { id: String, expected: Option<i64> },
    /// Delete this id (`None`: a conditional delete that matched nothing, a no-op).
    Delete {
        id: Option<String>,
        expected: Option<i64>,
    },
    /// A conditional create that matched this existing resource: nothing is written.
    Exists { id: String },
    /// A read, answered after the commit.
    Read,
}

fn expected_version(e: &Entry) -> Result<Option<i64>, FhirError> {
    match &e.if_match {
        None => Ok(None),
        Some(m) => {
            let tag = m
                .trim()
                .strip_prefix("W/")
                .unwrap_or(m.trim())
                .trim_matches('"');
            tag.parse::<i64>().map(Some).map_err(|_| {
                bad(
                    e.index,
                    format!("ifMatch '{m}' is not an ETag such as W/\"3\""),
                )
            })
        }
    }
}

/// The id a conditional interaction (`Type?query`) stands for: `Ok(None)` when nothing
/// matches, 412 when more than one does.
async fn conditional_target(
    state: &AppState,
    actor: &Actor,
    e: &Entry,
    query: &str,
) -> Result<Option<String>, FhirError> {
    let ids = search_ids(state, actor, &e.resource_type, query)
        .await
        .map_err(|x| entry_error(e.index, x))?;
    match ids.len() {
        0 => Ok(None),
        1 => Ok(ids.into_iter().next()),
        _ => Err(entry_error(
            e.index,
            FhirError::new(
                412,
                "multiple-matches",
                format!(
                    "the condition '{query}' matches more than one {}",
                    e.resource_type
                ),
            ),
        )),
    }
}

/// Process order of the specification: DELETE, POST, PUT/PATCH, GET/HEAD.
fn rank(method: &str) -> u8 {
    match method {
        "DELETE" => 0,
        "POST" => 1,
        "PUT" | "PATCH" => 2,
        _ => 3,
    }
}

/// Handle a `transaction` or `batch` Bundle.
#[utoipa::path(post, path = "/fhir/R4", tag = "fhir",
    request_body(content = Object, content_type = "application/fhir+json", description = "A Bundle of type transaction (all or nothing) or batch (each entry on its own)"),
    responses((status = 200, description = "A transaction-response or batch-response Bundle", content_type = "application/fhir+json"), (status = 400, description = "Not a transaction or batch Bundle, or an entry is malformed (OperationOutcome naming the entry)"), (status = 412, description = "A conditional matched more than one resource"), (status = 422, description = "An entry's resource is invalid")),
    security(("bearer" = ["fhir_resources:write"])))]
pub async fn process(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<Value>,
) -> Result<Response, FhirError> {
    let base = base_url(&headers);
    let answer = run_bundle(&state, &actor, &base, &headers, &body.value).await?;
    Ok(ok_json(&answer))
}

/// Run a `transaction` or `batch` Bundle as `actor` (the REST entry point, and `salus
/// import` of FHIR files): the `transaction-response` or `batch-response` Bundle, or the
/// OperationOutcome of a transaction that wrote nothing. `base` is the server's base URL
/// as the client names it (absolute full URLs are read against it).
pub async fn run_bundle(
    state: &AppState,
    actor: &Actor,
    base: &str,
    headers: &HeaderMap,
    b: &Value,
) -> Result<Value, FhirError> {
    if b.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(FhirError::new(
            400,
            "invalid",
            "POST to the base takes a Bundle of type transaction or batch",
        ));
    }
    let kind = b.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "transaction" && kind != "batch" {
        return Err(FhirError::new(
            400,
            "invalid",
            format!("Bundle.type must be transaction or batch, not '{kind}'"),
        ));
    }
    let raw: &[Value] = match b.get("entry") {
        None => &[],
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(FhirError::new(
                400,
                "invalid",
                "Bundle.entry must be an array",
            ));
        }
    };
    if raw.len() > MAX_ENTRIES {
        return Err(FhirError::new(
            413,
            "too-costly",
            format!("a Bundle may hold at most {MAX_ENTRIES} entries"),
        ));
    }
    if kind == "batch" {
        let mut out = Vec::with_capacity(raw.len());
        for (i, e) in raw.iter().enumerate() {
            out.push(match parse_entry(i, e) {
                Ok(entry) => batch_entry(state, actor, headers, entry).await,
                Err(err) => error_entry(err),
            });
        }
        return Ok(response_bundle("batch-response", out, state));
    }
    let entries: Vec<Entry> = raw
        .iter()
        .enumerate()
        .map(|(i, e)| parse_entry(i, e))
        .collect::<Result<_, _>>()?;
    let out = transaction(state, actor, base, headers, entries).await?;
    Ok(response_bundle("transaction-response", out, state))
}

fn response_bundle(kind: &str, entries: Vec<Value>, state: &AppState) -> Value {
    bundle_of(state, kind, Vec::new(), entries)
}

fn error_entry(e: FhirError) -> Value {
    json!({
        "response": {
            "status": status_line(e.status),
            "outcome": operation_outcome(&e.issues),
        }
    })
}

fn status_line(s: StatusCode) -> String {
    format!("{} {}", s.as_u16(), s.canonical_reason().unwrap_or(""))
        .trim()
        .to_owned()
}

/// A REST answer as a response entry (status, location, etag, lastModified, resource or
/// outcome).
/// The Bundle entry of an interaction's answer; an OperationOutcome body goes to
/// `response.outcome` when it reports a failure or was asked for (`outcome_wanted`:
/// `Prefer: return=OperationOutcome`).
async fn entry_of(resp: Response, outcome_wanted: bool) -> Value {
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let h = |n: header::HeaderName| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut response = json!({"status": status_line(parts.status)});
    if let Some(l) = h(header::LOCATION) {
        response["location"] = json!(l.trim_start_matches(&format!("{BASE}/")[..]));
    }
    if let Some(t) = h(header::ETAG) {
        response["etag"] = json!(t);
    }
    if let Some(lm) = h(header::LAST_MODIFIED)
        && let Ok(t) = DateTime::parse_from_rfc2822(&lm)
    {
        response["lastModified"] = json!(salus_fhir::patient::instant(t.with_timezone(&Utc)));
    }
    let mut entry = json!({});
    if value.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome")
        && (!parts.status.is_success() || outcome_wanted)
    {
        response["outcome"] = value;
    } else if value.is_object() {
        entry["resource"] = value;
    }
    entry["response"] = response;
    entry
}

/// One batch entry, run exactly as its REST interaction.
async fn batch_entry(state: &AppState, actor: &Actor, headers: &HeaderMap, e: Entry) -> Value {
    let outcome_wanted = return_preference(headers).as_deref() == Some("OperationOutcome");
    match batch_entry_inner(state, actor, headers, e).await {
        Ok(resp) => entry_of(resp, outcome_wanted).await,
        Err(err) => error_entry(err),
    }
}

async fn batch_entry_inner(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    e: Entry,
) -> Result<Response, FhirError> {
    check_served(&e)?;
    actor
        .require(permission(&e.resource_type, &e.method))
        .map_err(|x| entry_error(e.index, x.into()))?;
    let mut h = HeaderMap::new();
    for name in [
        header::HOST,
        HeaderName::from_static("x-forwarded-proto"),
        HeaderName::from_static("prefer"),
    ] {
        if let Some(v) = headers.get(&name) {
            h.insert(name, v.clone());
        }
    }
    if let Some(v) = e
        .if_match
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        h.insert(header::IF_MATCH, v);
    }
    if let Some(v) = e
        .if_none_exist
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        h.insert(HeaderName::from_static("if-none-exist"), v);
    }
    let st = State(state.clone());
    let body = || -> Result<JsonBody<Value>, FhirError> {
        let r = e
            .resource
            .clone()
            .ok_or_else(|| bad(e.index, format!("{} needs entry.resource", e.method)))?;
        Ok(JsonBody {
            raw: axum::body::Bytes::from(r.to_string()),
            value: r,
        })
    };
    let t = e.resource_type.clone();
    let pairs = e.query.as_deref().map(form_pairs).unwrap_or_default();
    let patient = t == "Patient";
    if let Some(d) = DomainType::of(&t) {
        let (state, actor) = (&st.0, actor);
        return match (e.method.as_str(), e.id.clone(), e.version.clone()) {
            ("GET" | "HEAD", Some(id), Some(vid)) => d.vread(state, actor, &id, &vid).await,
            ("GET" | "HEAD", Some(id), None) => d.read(state, actor, &id).await,
            ("GET" | "HEAD", None, _) => d.search(state, actor, &h, &pairs).await,
            ("POST", None, None) => d.create(state, actor, &h, &body()?.value).await,
            ("PUT", Some(id), None) => d.update(state, actor, &h, &id, &body()?.value).await,
            ("DELETE", Some(id), None) => d.delete(state, actor, &h, &id).await,
            _ => Err(FhirError::new(
                400,
                "not-supported",
                format!("{} of {t} is not supported in a batch here", e.method),
            )),
        }
        .map_err(|x| entry_error(e.index, x));
    }
    match (e.method.as_str(), e.id.clone(), e.version.clone()) {
        ("GET" | "HEAD", Some(id), Some(vid)) if patient => {
            super::patient::vread(st, actor.clone(), Path((id, vid))).await
        }
        ("GET" | "HEAD", Some(id), Some(vid)) => {
            documents::vread(st, actor.clone(), Path((t, id, vid))).await
        }
        ("GET" | "HEAD", Some(id), None) if patient => {
            super::patient::read(st, actor.clone(), Path(id)).await
        }
        ("GET" | "HEAD", Some(id), None) => documents::read(st, actor.clone(), Path((t, id))).await,
        ("GET" | "HEAD", None, _) if patient => {
            super::patient::search(st, actor.clone(), h, Query(pairs)).await
        }
        ("GET" | "HEAD", None, _) => {
            documents::search(st, actor.clone(), h, Path(t), Query(pairs)).await
        }
        ("POST", None, None) if patient => {
            super::patient::create(st, actor.clone(), h, body()?).await
        }
        ("POST", None, None) => documents::create(st, actor.clone(), h, Path(t), body()?).await,
        ("PUT", Some(id), None) if patient => {
            super::patient::update(st, actor.clone(), Path(id), h, body()?).await
        }
        ("PUT", Some(id), None) => {
            documents::update(st, actor.clone(), h, Path((t, id)), body()?).await
        }
        ("PATCH", Some(id), None) if patient => {
            super::patient::patch(st, actor.clone(), Path(id), h, body()?).await
        }
        ("PATCH", Some(id), None) => {
            documents::patch(st, actor.clone(), h, Path((t, id)), body()?).await
        }
        ("DELETE", Some(id), None) if !patient => {
            documents::delete(st, actor.clone(), h, Path((t, id))).await
        }
        _ => Err(entry_error(
            e.index,
            FhirError::new(
                400,
                "not-supported",
                format!(
                    "{} of {} is not supported in a batch here",
                    e.method,
                    e.id.map(|i| format!("{t}/{i}")).unwrap_or(t.clone())
                ),
            ),
        )),
    }
    .map_err(|x| entry_error(e.index, x))
}

/// A transaction: resolve, decide every write, commit them together, answer each entry.
async fn transaction(
    state: &AppState,
    actor: &Actor,
    base: &str,
    headers: &HeaderMap,
    mut entries: Vec<Entry>,
) -> Result<Vec<Value>, FhirError> {
    let prefer = return_preference(headers);
    for e in &entries {
        check_served(e)?;
        actor
            .require(permission(&e.resource_type, &e.method))
            .map_err(|x| entry_error(e.index, x.into()))?;
    }
    // 1. What each entry will do, and the id each full URL stands for.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|i| (rank(&entries[*i].method), *i));
    let mut plans: HashMap<usize, Plan> = HashMap::new();
    let mut map: HashMap<String, String> = HashMap::new();
    let mut touched: HashMap<String, usize> = HashMap::new();
    for &i in &order {
        let e = &entries[i];
        let new_id = || -> String { Uuid::now_v7().to_string() };
        let creates = match (e.method.as_str(), &e.id, &e.query) {
            ("PUT", Some(id), None) if e.if_match.is_none() => {
                creates_on_update(state, actor, &e.resource_type, id).await?
            }
            _ => false,
        };
        let plan = match (e.method.as_str(), &e.id, &e.query) {
            ("GET" | "HEAD", _, _) => Plan::Read,
            ("PUT", Some(id), None) if creates => {
                let body_id = e.resource.as_ref().and_then(|r| r.get("id"));
                if body_id.is_some_and(|b| b.as_str() != Some(id.as_str())) {
                    return Err(bad(
                        i,
                        format!("the resource's id is not '{id}', the id the request names"),
                    ));
                }
                Plan::Create { id: id.clone() }
            }
            ("POST", None, _) => match &e.if_none_exist {
                Some(cond) => {
                    let q = cond.split_once('?').map(|(_, q)| q).unwrap_or(cond);
                    match conditional_target(state, actor, e, q).await? {
                        Some(id) => Plan::Exists { id },
                        None => Plan::Create { id: new_id() },
                    }
                }
                None => Plan::Create { id: new_id() },
            },
            ("PUT" | "PATCH", Some(id), None) => Plan::Update {
                id: id.clone(),
                expected: expected_version(e)?,
            },
            ("PUT", None, Some(q)) => match conditional_target(state, actor, e, q).await? {
                Some(id) => Plan::Update {
                    id,
                    expected: expected_version(e)?,
                },
                None => Plan::Create { id: new_id() },
            },
            ("DELETE", Some(id), None) => Plan::Delete {
                id: Some(id.clone()),
                expected: expected_version(e)?,
            },
            ("DELETE", None, Some(q)) => Plan::Delete {
                id: conditional_target(state, actor, e, q).await?,
                expected: None,
            },
            _ => {
                return Err(bad(
                    i,
                    format!(
                        "{} {} is not a transaction interaction served here",
                        e.method, e.resource_type
                    ),
                ));
            }
        };
        let target = match &plan {
            Plan::Create { id } | Plan::Update { id, .. } | Plan::Exists { id } => Some(id.clone()),
            Plan::Delete { id, .. } => id.clone(),
            Plan::Read => None,
        };
        if let Some(id) = &target {
            let key = format!("{}/{id}", e.resource_type);
            if !matches!(plan, Plan::Exists { .. })
                && let Some(prev) = touched.insert(key.clone(), i)
            {
                return Err(bad(
                    i,
                    format!(
                        "{key} is also written by entry {prev}; a transaction writes a resource once"
                    ),
                ));
            }
            if let Some(full) = &e.full_url {
                map.insert(full.clone(), key.clone());
                // The full URL may be absolute on this server.
                map.insert(format!("{base}/{key}"), key);
            }
        }
        plans.insert(i, plan);
    }
    // The patients (and departments and clinicians) this transaction creates: the entries
    // about them may name them.
    let mut pending = Pending::default();
    for (i, plan) in &plans {
        if let Plan::Create { id } = plan
            && let Ok(u) = Uuid::parse_str(id)
        {
            match entries[*i].resource_type.as_str() {
                "Patient" => {
                    pending.patients.insert(u);
                }
                "Organization" => {
                    pending.departments.insert(u);
                }
                "Practitioner"
                    if entries[*i]
                        .resource
                        .as_ref()
                        .is_none_or(|r| r.get("active") != Some(&Value::Bool(false))) =>
                {
                    pending.clinicians.insert(u);
                }
                _ => {}
            }
        }
    }
    // 2. References rewritten; every write decided on the stored state.
    let mut resolved: HashMap<String, String> = HashMap::new();
    let mut prepared: Vec<Prepared> = Vec::new();
    let mut writer_of: Vec<usize> = Vec::new();
    // Whether each write is one an entry needed first (not the entry's own).
    let mut companion: Vec<bool> = Vec::new();
    for &i in &order {
        let Some(plan) = plans.get(&i) else { continue };
        if matches!(plan, Plan::Read | Plan::Exists { .. }) {
            continue;
        }
        let e = &mut entries[i];
        if let Some(r) = e.resource.as_mut() {
            rewrite_references(state, actor, i, r, &map, &mut resolved).await?;
        }
        let e = &entries[i];
        let p = prepare(state, actor, e, plan, &pending)
            .await
            .map_err(|x| entry_error(i, x))?;
        // An encounter this transaction creates: what follows may be recorded in it.
        if let (Plan::Create { id }, Some(_)) = (plan, &p)
            && e.resource_type == "Encounter"
            && let Ok(enc) = Uuid::parse_str(id)
            && let Some(patient) = e
                .resource
                .as_ref()
                .and_then(|r| r["subject"]["reference"].as_str())
                .and_then(|r| r.strip_prefix("Patient/"))
                .and_then(|id| Uuid::parse_str(id).ok())
        {
            pending.encounters.insert(enc, patient);
        }
        // What the entry needs first (a note's medical record) commits before it; its
        // errors are the entry's.
        for first in pending.take_opened() {
            prepared.push(first);
            writer_of.push(i);
            companion.push(true);
        }
        if let Some(p) = p {
            prepared.push(p);
            writer_of.push(i);
            companion.push(false);
        }
    }
    // 3. One durable commit.
    let done: Vec<Done> = match state.services.commit_prepared(&actor.ctx, prepared).await {
        Ok(d) => d,
        Err(ServiceError::InGroup { index, source }) => {
            let i = writer_of.get(index).copied().unwrap_or(0);
            return Err(entry_error(i, FhirError::from(*source)));
        }
        Err(other) => return Err(other.into()),
    };
    let mut results: HashMap<usize, Done> = writer_of
        .into_iter()
        .zip(companion)
        .zip(done)
        .filter(|((_, first), _)| !first)
        .map(|((i, _), d)| (i, d))
        .collect();
    // 4. The answers, in the order of the request.
    let mut out = Vec::with_capacity(entries.len());
    for e in &entries {
        let entry = match plans.get(&e.index) {
            Some(Plan::Read) => {
                let dummy = HeaderMap::new();
                batch_entry(state, actor, &dummy, e.clone()).await
            }
            Some(Plan::Exists { id }) => {
                let resp = exists_response(state, actor, &e.resource_type, id).await?;
                entry_of(resp, false).await
            }
            Some(Plan::Delete { id: None, .. }) => {
                json!({"response": {"status": "204 No Content"}})
            }
            _ => match results.remove(&e.index) {
                Some(d) => {
                    let planned = matches!(plans.get(&e.index), Some(Plan::Create { .. }));
                    written_entry(base, &e.resource_type, e, d, planned, prefer.as_deref())
                }
                None => json!({"response": {"status": "200 OK"}}),
            },
        };
        out.push(entry);
    }
    Ok(out)
}

/// The answer for a conditional create that matched: the existing resource (its read
/// already logged by the search that found it).
async fn exists_response(
    state: &AppState,
    actor: &Actor,
    t: &str,
    id: &str,
) -> Result<Response, FhirError> {
    if t == "Patient" {
        super::patient::read(State(state.clone()), actor.clone(), Path(id.to_owned())).await
    } else if let Some(d) = DomainType::of(t) {
        d.read(state, actor, id).await
    } else {
        documents::read(
            State(state.clone()),
            actor.clone(),
            Path((t.to_owned(), id.to_owned())),
        )
        .await
    }
}

/// The answer for a committed write; `planned`: the plan was a create (a POST, or a PUT
/// that creates under the client's UUID). A document's PUT creates when it writes version 1
/// (documents decide that themselves); an update that changed nothing is a 200.
fn written_entry(
    base: &str,
    t: &str,
    e: &Entry,
    d: Done,
    planned: bool,
    prefer: Option<&str>,
) -> Value {
    let row = d.row().clone();
    let created = planned
        || e.method == "POST"
        || (row.version == 1 && e.method == "PUT" && documents::is_document_type(t));
    let (id, deleted, resource) = if t == "Patient" {
        let r = d
            .into_current::<Patient>()
            .ok()
            .map(|c| salus_fhir::patient::to_fhir(&c.state, c.row.version, c.row.updated_at));
        (row.id.to_string(), false, r)
    } else if let Some(kind) = DomainType::of(t) {
        let deleted = e.method == "DELETE";
        let r = if deleted { None } else { kind.render(d) };
        (row.id.to_string(), deleted, r)
    } else {
        match d.into_current::<FhirDocument>() {
            Ok(c) => {
                let r = (!c.state.deleted).then(|| documents::render(&c.state, c.row.version));
                (c.state.id.clone(), c.state.deleted, r)
            }
            Err(_) => (row.id.to_string(), false, None),
        }
    };
    let status = if deleted {
        "204 No Content"
    } else if created {
        "201 Created"
    } else {
        "200 OK"
    };
    let mut response = json!({
        "status": status,
        "etag": format!("W/\"{}\"", row.version),
        "lastModified": salus_fhir::patient::instant(row.updated_at),
    });
    if !deleted {
        response["location"] = json!(format!("{t}/{id}/_history/{}", row.version));
    }
    let mut entry = json!({"response": response});
    match prefer {
        Some("minimal") => {}
        Some("OperationOutcome") => {
            let what = if created { "created" } else { "updated" };
            entry["response"]["outcome"] = operation_outcome(&[Issue {
                severity: "information",
                code: "informational",
                diagnostics: format!("{t}/{id} was {what}"),
                expression: None,
            }]);
        }
        _ => {
            if let Some(r) = resource {
                entry["fullUrl"] = json!(format!("{base}/{t}/{id}"));
                entry["resource"] = r;
            }
        }
    }
    entry
}

/// Decide one write of a transaction: `None` when there is nothing to write.
async fn prepare(
    state: &AppState,
    actor: &Actor,
    e: &Entry,
    plan: &Plan,
    pending: &Pending,
) -> Result<Option<Prepared>, FhirError> {
    let t = e.resource_type.as_str();
    let body = || {
        e.resource.clone().ok_or_else(|| {
            FhirError::new(400, "invalid", format!("{} needs entry.resource", e.method))
        })
    };
    if let Some(d) = DomainType::of(t) {
        let r = e.resource.clone().unwrap_or(Value::Null);
        let d = match plan {
            Plan::Create { .. } => d.for_create(&r),
            _ => d,
        };
        let write = match plan {
            Plan::Create { id } => TxWrite::Create { id, body: &r },
            Plan::Update { id, expected } => TxWrite::Update {
                id,
                expected: *expected,
                body: &r,
            },
            Plan::Delete {
                id: Some(id),
                expected,
            } => TxWrite::Delete {
                id,
                expected: *expected,
            },
            _ => return Ok(None),
        };
        if !matches!(write, TxWrite::Delete { .. }) {
            body()?;
        }
        return d.prepare(state, actor, &e.method, write, pending).await;
    }
    if t == "Patient" {
        return prepare_patient(state, actor, e, plan, body).await.map(Some);
    }
    let svc = &state.services;
    match plan {
        Plan::Create { id } => {
            let r = body()?;
            checked_body(t, &r)?;
            let stream =
                Uuid::parse_str(id).unwrap_or_else(|_| client_stream_id(actor.ctx.tenant, t, id));
            Ok(Some(svc.prepare_new::<FhirDocument, _>(
                stream,
                |_, now| Ok(store_command(t, id, &r, now)),
                None,
            )?))
        }
        Plan::Update { id, expected } => {
            let mut r = body()?;
            let existing = find(state, actor, t, id).await?;
            if e.method == "PATCH" {
                let Some(c) = &existing else {
                    return Err(FhirError::new(404, "not-found", format!("no {t}/{id}")));
                };
                let mut doc = c.state.resource.clone();
                super::apply_json_patch(&mut doc, &r)?;
                r = doc;
            } else if let Some(o) = r.as_object_mut() {
                // A conditional update's body may leave the id out.
                o.entry("id").or_insert_with(|| Value::String(id.clone()));
            }
            if r.get("id").and_then(Value::as_str) != Some(id.as_str()) {
                return Err(FhirError::new(
                    400,
                    "invalid",
                    format!("the resource's id is not '{id}', the id the request names"),
                ));
            }
            checked_body(t, &r)?;
            let stream = match &existing {
                Some(c) => c.row.id,
                None if valid_id(id) => client_stream_id(actor.ctx.tenant, t, id),
                None => {
                    return Err(FhirError::new(
                        400,
                        "invalid",
                        format!("'{id}' is not a FHIR id"),
                    ));
                }
            };
            Ok(Some(
                svc.prepare::<FhirDocument, _>(
                    &actor.ctx,
                    stream,
                    *expected,
                    |_, now| Ok(store_command(t, id, &r, now)),
                    None,
                )
                .await?,
            ))
        }
        Plan::Delete {
            id: Some(id),
            expected,
        } => {
            let Some(c) = find(state, actor, t, id).await? else {
                return Err(FhirError::new(404, "not-found", format!("no {t}/{id}")));
            };
            Ok(Some(
                svc.prepare::<FhirDocument, _>(
                    &actor.ctx,
                    c.row.id,
                    *expected,
                    |_, now| Ok(DocumentCommand::Delete { at: now }),
                    None,
                )
                .await?,
            ))
        }
        _ => Ok(None),
    }
}

/// Whether a `PUT t/id` creates a Patient or a domain-backed resource under the client's
/// id: a UUID the tenant holds nothing under (types kept as documents decide their own
/// creates on update).
async fn creates_on_update(
    state: &AppState,
    actor: &Actor,
    t: &str,
    id: &str,
) -> Result<bool, FhirError> {
    let Ok(uuid) = Uuid::parse_str(id) else {
        return Ok(false);
    };
    if t == "Patient" {
        return Ok(!super::patient::held(state, actor, uuid).await?);
    }
    match DomainType::of(t) {
        Some(d) => Ok(!d.exists(state, actor, uuid).await?),
        None => Ok(false),
    }
}

async fn prepare_patient(
    state: &AppState,
    actor: &Actor,
    e: &Entry,
    plan: &Plan,
    body: impl Fn() -> Result<Value, FhirError>,
) -> Result<Prepared, FhirError> {
    use salus_domain::registry::Patient;
    let svc = &state.services;
    match plan {
        Plan::Create { id } => {
            let write = parse_patient(&body()?)?;
            let uuid = Uuid::parse_str(id).map_err(ApiError::internal)?;
            svc.prepare_new::<Patient, _>(
                uuid,
                |_, now| replace_command(None, uuid, &write, now.date_naive()),
                None,
            )
            .map_err(lifecycle_path)
        }
        Plan::Update { id, expected } if e.method == "PUT" => {
            let mut r = body()?;
            if let Some(o) = r.as_object_mut() {
                o.entry("id").or_insert_with(|| Value::String(id.clone()));
            }
            let write = parse_patient(&r)?;
            if write.id.as_deref() != Some(id.as_str()) {
                return Err(FhirError::new(
                    400,
                    "invalid",
                    format!("the Patient's id is not '{id}', the id the request names"),
                ));
            }
            let uuid = Uuid::parse_str(id).map_err(|_| super::rest::not_created("Patient", id))?;
            svc.prepare::<Patient, _>(
                &actor.ctx,
                uuid,
                *expected,
                |current, now| update_command(current, uuid, &write, now.date_naive()),
                None,
            )
            .await
            .map_err(lifecycle_path)
        }
        _ => Err(FhirError::new(
            400,
            "not-supported",
            format!(
                "{} of a Patient is not supported in a transaction",
                e.method
            ),
        )),
    }
}

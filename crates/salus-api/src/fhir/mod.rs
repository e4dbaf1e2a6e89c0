//! `/fhir/R4`: the FHIR R4 REST API over the same aggregates as `/api/v1` (DESIGN.md §4).
//!
//! What is served is exactly what [`capability_statement`] lists: `metadata`; Patient
//! (the registry, [`patient`]); the types Salus aggregates serve ([`rest`] over
//! [`rest::Mapped`]: Observation, Condition, AllergyIntolerance, Encounter, Procedure,
//! DocumentReference, Consent, Practitioner, Organization, Location); AuditEvent, read-only
//! from the log; every other R4 type as a versioned document ([`documents`]); Bundles
//! ([`bundle`]), history ([`history`]) and Bulk Data ([`export`]). Each route declares the same permission as its `/api/v1` twin, so bearer
//! tokens, roles and SMART scopes work alike; every read of patient data goes through
//! [`access_log::record`] before it is answered. Errors are OperationOutcome: handlers
//! return [`FhirError`], and [`outcomes`] turns any problem+json answered under `/fhir/`
//! (the guard's 401/403, an unknown route) into one with the same status.
//!
//! The mappings themselves (FHIR Patient, Observation, Condition, AllergyIntolerance,
//! Encounter, Procedure, DocumentReference, Consent, Practitioner, Organization, Location ⇄
//! their aggregates) live in `salus-fhir`; handlers only
//! parse, call the service and map.

pub mod audit_event;
pub mod bundle;
pub mod consent;
pub mod documents;
pub mod encounter;
pub mod export;
pub mod history;
pub mod note;
pub mod observation;
pub mod patient;
pub mod rest;
pub mod results;
pub mod staff;
pub mod statement;

use crate::AppState;
use crate::access_log::{self, Access};
use crate::auth::Actor;
use crate::error::ApiError;
use crate::http::{self, JsonBody};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use salus_domain::registry::{Patient, PatientCommand, PatientDetails};
use salus_domain::service::{Current, Projected};
use salus_fhir::definitions::{ParamType, search_parameters};
use salus_fhir::outcome::{Issue, issue_code_for_status, operation_outcome};
use salus_fhir::patient::{self as fhir_patient, fhir_path_of_field};
use salus_kernel::text::fold;
use salus_store::access::AccessAction;
use salus_store::{Filter, FilterOp};
use serde_json::{Value, json};
use uuid::Uuid;

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";
const BASE: &str = "/fhir/R4";

/// A failure answered as an OperationOutcome.
#[derive(Debug)]
pub struct FhirError {
    pub status: StatusCode,
    pub issues: Vec<Issue>,
}

impl FhirError {
    pub fn new(status: u16, code: &'static str, msg: impl Into<String>) -> Self {
        FhirError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            issues: vec![Issue::error(code, msg)],
        }
    }

    fn invalid(issues: Vec<Issue>) -> Self {
        FhirError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            issues,
        }
    }
}

/// The IssueType code for a problem kind.
fn issue_code(kind: &str, status: u16) -> &'static str {
    match kind {
        "rule-violation" | "illegal-transition" | "consent-incomplete" => "business-rule",
        "conflict" => "conflict",
        "precondition-failed" => "conflict",
        "validation" => "invalid",
        "care-relationship-required" => "security",
        _ => issue_code_for_status(status),
    }
}

impl From<ApiError> for FhirError {
    fn from(e: ApiError) -> Self {
        let mut issue = Issue::error(issue_code(e.kind, e.status.as_u16()), e.detail);
        if let Some(f) = e.extra.get("field").and_then(Value::as_str) {
            issue = issue.at(fhir_path_of_field(f));
        }
        FhirError {
            status: e.status,
            issues: vec![issue],
        }
    }
}

impl From<salus_domain::service::ServiceError> for FhirError {
    fn from(e: salus_domain::service::ServiceError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<salus_kernel::DomainError> for FhirError {
    fn from(e: salus_kernel::DomainError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, operation_outcome(&self.issues).to_string()).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        resp
    }
}

/// Middleware: a problem+json answer to a `/fhir/` request becomes an OperationOutcome with
/// the same status and headers (the guard and the fallbacks speak problem+json).
pub async fn outcomes(req: Request, next: Next) -> Response {
    let is_fhir = req.uri().path().starts_with("/fhir/");
    if is_fhir && let Some(refusal) = refuse_format(&req) {
        return refusal.into_response();
    }
    let resp = next.run(req).await;
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with(crate::error::PROBLEM_JSON));
    if !is_fhir || !is_problem {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let problem: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let kind = problem["type"]
        .as_str()
        .and_then(|t| t.strip_prefix("urn:salus:problem:"))
        .unwrap_or("");
    let detail = problem["detail"]
        .as_str()
        .unwrap_or("the request failed")
        .to_owned();
    let issue = Issue::error(issue_code(kind, parts.status.as_u16()), detail);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(operation_outcome(&[issue]).to_string()))
}

/// Whether a media type (or `_format` value) names JSON.
fn is_json_format(m: &str) -> bool {
    let m = m
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        m.as_str(),
        "*/*" | "application/*" | "application/json" | "application/fhir+json" | "json"
    ) || m.ends_with("+json")
}

/// A 406 when the request asks only for formats other than JSON (`Accept`, `_format`):
/// this server speaks FHIR JSON alone.
fn refuse_format(req: &Request) -> Option<FhirError> {
    if req.uri().path().starts_with("/fhir/R4/$export-files/") {
        // Bulk Data files are NDJSON, and clients ask for it.
        return None;
    }
    let format = req.uri().query().and_then(|q| {
        form_pairs(q)
            .into_iter()
            .find(|(k, _)| k == "_format")
            .map(|(_, v)| v)
    });
    if let Some(f) = format
        && !is_json_format(&f)
    {
        return Some(FhirError::new(
            406,
            "not-supported",
            format!("_format '{f}' is not served; only JSON (_format=json)"),
        ));
    }
    let accept: Vec<String> = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|m| m.trim().to_owned()))
        .filter(|m| !m.is_empty())
        .collect();
    if !accept.is_empty() && !accept.iter().any(|m| is_json_format(m)) {
        return Some(FhirError::new(
            406,
            "not-supported",
            "only application/fhir+json is served",
        ));
    }
    None
}

fn http_date(t: DateTime<Utc>) -> Option<HeaderValue> {
    HeaderValue::from_str(&t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()).ok()
}

fn weak_etag(version: i64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("W/\"{version}\"")).ok()
}

/// A resource answer: FHIR JSON, `ETag`, `Last-Modified`, and `Location` for a 201.
fn resource_response(
    status: StatusCode,
    body: &Value,
    version: i64,
    updated: DateTime<Utc>,
    location: Option<String>,
) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    if let Some(v) = weak_etag(version) {
        h.insert(header::ETAG, v);
    }
    if let Some(v) = http_date(updated) {
        h.insert(header::LAST_MODIFIED, v);
    }
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert(header::LOCATION, loc);
    }
    resp
}

fn patient_response(status: StatusCode, c: &Current<Patient>, location: bool) -> Response {
    let body = fhir_patient::to_fhir(&c.state, c.row.version, c.row.updated_at);
    let loc = location.then(|| format!("{BASE}/Patient/{}/_history/{}", c.row.id, c.row.version));
    resource_response(status, &body, c.row.version, c.row.updated_at, loc)
}

/// A write's answer shaped by `Prefer: return=` (RFC 7240, FHIR R4 §3.1.0.8.1):
/// `representation` (the default) the resource, `minimal` no body, `OperationOutcome` an
/// outcome saying what was done. Status and headers stay.
async fn preferred(headers: &HeaderMap, resp: Response) -> Response {
    let wanted = return_preference(headers);
    let (mut parts, body) = resp.into_parts();
    match wanted.as_deref() {
        Some("minimal") => {
            parts.headers.remove(header::CONTENT_TYPE);
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::empty())
        }
        Some("OperationOutcome") => {
            let what = if parts.status == StatusCode::CREATED {
                "created"
            } else {
                "updated"
            };
            let issue = Issue {
                severity: "information",
                code: "informational",
                diagnostics: format!("the resource was {what}"),
                expression: None,
            };
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(operation_outcome(&[issue]).to_string()))
        }
        _ => Response::from_parts(parts, body),
    }
}

/// What `Prefer: return=` asks for (`minimal`, `representation`, `OperationOutcome`).
fn return_preference(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().strip_prefix("return="))
        .map(|v| v.trim_matches('"').to_owned())
        .next_back()
}

/// The server's base URL as the client reached it (for `fullUrl` and paging links).
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    format!("{proto}://{host}{BASE}")
}

/// What this server can do: exactly the routes of this module. Each resource type's module
/// says what it serves of its type (`capability()`, one `rest.resource` entry).
pub fn capability_statement(base: &str) -> Value {
    let mut resources: Vec<Value> = vec![patient::capability(), audit_event::capability()];
    resources.extend(rest::DomainType::capabilities());
    resources.extend(documents::capabilities());
    let operations = export::capability_operations(&mut resources);
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-02",
        "publisher": "Salus",
        "kind": "instance",
        "software": {"name": "Salus", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Salus clinical record platform, FHIR R4 API", "url": base},
        "fhirVersion": salus_fhir::definitions::FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Unknown search parameters are ignored unless the request says Prefer: handling=strict (then 400). Paging: _count (1-200, default 50) and the next link. Result parameters on every search: _sort (any search parameter of the type, - for descending; at most 5000 matches are ordered), _total (accurate and estimate count the matches), _summary (true, text, data, count, false), _elements, _include and _revinclude (with :iterate, up to three rounds and 1000 added resources; _revinclude from types kept as documents and from the domain-backed types, not from Patient).",
            "security": {
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
                "description": "Bearer tokens (JWT) as for /api/v1; SMART scopes (patient/, user/, system/; v1 read/write and v2 cruds) narrow the token's roles. Every read of patient data is written to the data-access log."
            },
            "resource": resources,
            "operation": operations,
            "interaction": [
                {"code": "transaction", "documentation": "POST a transaction Bundle to the base: all or nothing, urn:uuid and conditional references resolved"},
                {"code": "batch", "documentation": "POST a batch Bundle to the base: each entry on its own"},
                {"code": "history-system", "documentation": "GET _history: every version of every resource served, newest first (_count, _since; Patients only with patients:read)"}
            ]
        }]
    })
}

/// Drop what the server sets in `meta` (`versionId`, `lastUpdated`) from a resource about
/// to be written back, keeping its profiles, tags and security labels.
pub(super) fn drop_version_meta(doc: &mut Value) {
    let Some(o) = doc.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(m)) = o.get_mut("meta") {
        m.remove("versionId");
        m.remove("lastUpdated");
        if m.is_empty() {
            o.remove("meta");
        }
    }
}

/// Apply a JSON Patch (RFC 6902) to `doc`: 400 when `ops` is no patch, 422 when it does
/// not apply.
pub(super) fn apply_json_patch(doc: &mut Value, ops: &Value) -> Result<(), FhirError> {
    let ops: json_patch::Patch = serde_json::from_value(ops.clone()).map_err(|e| {
        FhirError::new(
            400,
            "invalid",
            format!("the body is not a JSON Patch (an array of operations): {e}"),
        )
    })?;
    json_patch::patch(doc, &ops)
        .map_err(|e| FhirError::new(422, "processing", format!("the patch does not apply: {e}")))
}

/// A `searchParam` entry of the CapabilityStatement for parameter `code` of `resource_type`
/// (from the R4 definitions), with what this server does with it.
pub(crate) fn capability_param(
    resource_type: &str,
    code: &str,
    documentation: &str,
) -> Option<Value> {
    let p = search_parameters().get(resource_type, code)?;
    Some(json!({
        "name": p.code,
        "definition": p.url,
        "type": p.kind.as_str(),
        "documentation": documentation,
    }))
}

/// The CapabilityStatement: what this server serves.
#[utoipa::path(get, path = "/fhir/R4/metadata", tag = "fhir",
    responses((status = 200, description = "The CapabilityStatement", content_type = "application/fhir+json")))]
pub async fn metadata(headers: HeaderMap) -> Response {
    ok_json(&capability_statement(&base_url(&headers)))
}

/// `a=1&b=2` as decoded pairs.
fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16)).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(b.get(i + 1)), hex(b.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A 200 answer of FHIR JSON.
fn ok_json(body: &Value) -> Response {
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    resp
}

/// A Bundle of `kind` (searchset, history, transaction-response, …) with these links and
/// entries, stamped now.
fn bundle_of(state: &AppState, kind: &str, links: Vec<Value>, entries: Vec<Value>) -> Value {
    let mut b = json!({
        "resourceType": "Bundle",
        "id": Uuid::now_v7().to_string(),
        "meta": {"lastUpdated": salus_fhir::patient::instant(state.services.now())},
        "type": kind,
    });
    if !links.is_empty() {
        b["link"] = Value::Array(links);
    }
    b["entry"] = Value::Array(entries);
    b
}

/// The OperationOutcome of a searchset saying what lenient handling ignored, as the
/// specification suggests.
fn ignored_outcome(ignored: &[String]) -> Value {
    let issues: Vec<Issue> = ignored
        .iter()
        .map(|m| Issue {
            severity: "warning",
            code: "not-supported",
            diagnostics: format!("ignored: {m}"),
            expression: None,
        })
        .collect();
    operation_outcome(&issues)
}

/// The search of an `If-None-Exist` header (a query string, with or without `Type?`), or
/// `None` without the header; 400 when it names no parameter.
fn if_none_exist(headers: &HeaderMap) -> Result<Option<Vec<(String, String)>>, FhirError> {
    let Some(cond) = headers.get("if-none-exist") else {
        return Ok(None);
    };
    let cond = cond
        .to_str()
        .map_err(|_| FhirError::new(400, "invalid", "If-None-Exist must be a query string"))?;
    let cond = cond.split_once('?').map(|(_, q)| q).unwrap_or(cond);
    let pairs = form_pairs(cond);
    if pairs.is_empty() {
        return Err(FhirError::new(
            400,
            "invalid",
            "If-None-Exist names no search parameter",
        ));
    }
    Ok(Some(pairs))
}

/// The parameters of a `POST _search` body (`application/x-www-form-urlencoded`).
fn search_form(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, FhirError> {
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
    let text = std::str::from_utf8(body)
        .map_err(|_| FhirError::new(400, "invalid", "the form body is not UTF-8"))?;
    Ok(form_pairs(text))
}

/// Whether the request asks for strict handling of search parameters (`Prefer: handling=strict`).
fn prefers_strict(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("handling=strict"))
}

/// An unsupported parameter: refused under strict handling, else noted as ignored.
fn strict_or_ignore(strict: bool, msg: String, ignored: &mut Vec<String>) -> Result<(), FhirError> {
    if strict {
        Err(FhirError::new(400, "not-supported", msg))
    } else {
        ignored.push(msg);
        Ok(())
    }
}

/// Percent-encode a query component.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_decode_and_encode() {
        assert_eq!(
            form_pairs("identifier=urn%3Amrn%7C1&name=Ada+L&x"),
            vec![
                ("identifier".to_owned(), "urn:mrn|1".to_owned()),
                ("name".to_owned(), "Ada L".to_owned()),
                ("x".to_owned(), String::new()),
            ]
        );
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(encode("urn:mrn|1 2"), "urn:mrn%7C1%202");
    }
}

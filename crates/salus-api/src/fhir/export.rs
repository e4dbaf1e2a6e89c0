//! FHIR Bulk Data Access IG (v2) `$export`: asynchronous exports of NDJSON files.
//!
//! - Kick-off: `GET [base]/$export` (system), `GET [base]/Patient/$export` (every
//!   patient's compartment), `GET [base]/Group/{id}/$export` (the compartments of the
//!   Group's `member.entity` Patients). `Prefer: respond-async` is required;
//!   `_outputFormat` (`application/fhir+ndjson`, `application/ndjson`, `ndjson`), `_type`
//!   (a comma list of served types) and `_since` (an instant) are read, any other
//!   parameter is a 400. Answers 202 with `Content-Location` of the status URL.
//! - Status: `GET [base]/$export-status/{job}`: 202 with `X-Progress` while it runs, 200
//!   with the manifest when done, an OperationOutcome (500) when it failed; `DELETE`
//!   cancels it or, when done, removes it (202).
//! - Files: `GET [base]/$export-files/{job}/{Type}.ndjson`, one resource a line, as a
//!   read renders it.
//!
//! Jobs are [`ExportJob`] records in the tenant's event log (status survives across
//! requests and servers); the work runs as a task of the server that took the kick-off,
//! and the files are blobs. A job still `running` in the store that no task of this
//! server runs (its server stopped) is recorded failed when its status is next asked.
//!
//! Where each type's resources come from is [`MODULES`]: one line per source. A type
//! served by a new module needs its line there (a test walks the CapabilityStatement).
//!
//! Permissions: every route needs `exports:read` (admin), and a kick-off the read
//! permission of every type it exports; a token with a patient context never holds
//! `exports:read` (403), and one with SMART scopes only through a `system/` read scope
//! (Backend Services, as the Bulk Data IG has it). Only the user who started a job sees it (404
//! to anyone else). Each exported patient gets one data-access-log entry (`export`),
//! written before the files are offered.

use super::documents;
use super::*;
use axum::extract::OriginalUri;
use salus_domain::bulk::export_job::{
    self, ExportJob, ExportOutput, ExportScope, ExportSpec, ExportStatus,
};
use salus_domain::documents::FhirDocument;
use salus_kernel::Hash32;
use salus_store::SearchQuery;
use salus_store::blobs::BlobStore;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The media type of the files.
pub const NDJSON: &str = "application/fhir+ndjson";

/// `_outputFormat` values accepted (all mean [`NDJSON`]); a `+` left unencoded in a query
/// string reads as a space.
const OUTPUT_FORMATS: &[&str] = &[
    "application/fhir+ndjson",
    "application/fhir ndjson",
    "application/ndjson",
    "ndjson",
];

/// Resources read from the store at a time.
const PAGE: u32 = 500;

/// Where the resources of a type come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The registry's Patient aggregate.
    Patients,
    /// Resources kept whole as FHIR documents.
    Documents,
    /// The event log, as AuditEvents.
    AuditEvents,
    /// A clinical aggregate served as its FHIR type.
    Clinical(super::rest::DomainType),
}

/// One source of exported resources: the types it serves, and the permission reading
/// them needs.
pub(super) struct Module {
    pub(super) name: &'static str,
    pub(super) serves: fn(&str) -> bool,
    pub(super) permission: &'static str,
    pub(super) source: Source,
}

fn is_patient(t: &str) -> bool {
    t == "Patient"
}

/// Every source of `$export`, one line each. A type that becomes domain-backed gets its
/// own line here (and leaves the documents, see `documents::DOMAIN_TYPES`).
pub(super) const MODULES: &[Module] = &[
    Module {
        name: "registry",
        serves: is_patient,
        permission: "patients:read",
        source: Source::Patients,
    },
    Module {
        name: "documents",
        serves: documents::is_document_type,
        permission: "fhir_resources:read",
        source: Source::Documents,
    },
    Module {
        name: "observations",
        serves: is_observation,
        permission: "observations:read",
        source: Source::Clinical(super::rest::DomainType::Observation),
    },
    Module {
        name: "conditions",
        serves: is_condition,
        permission: "conditions:read",
        source: Source::Clinical(super::rest::DomainType::Condition),
    },
    Module {
        name: "allergies",
        serves: is_allergy,
        permission: "allergies:read",
        source: Source::Clinical(super::rest::DomainType::AllergyIntolerance),
    },
    Module {
        name: "encounters",
        serves: is_encounter,
        permission: "encounters:read",
        source: Source::Clinical(super::rest::DomainType::Encounter),
    },
    Module {
        name: "procedures",
        serves: is_procedure,
        permission: "procedures:read",
        source: Source::Clinical(super::rest::DomainType::Procedure),
    },
    Module {
        name: "clinicians",
        serves: is_practitioner,
        permission: "clinicians:read",
        source: Source::Clinical(super::rest::DomainType::Practitioner),
    },
    Module {
        name: "departments",
        serves: is_organization,
        permission: "places:read",
        source: Source::Clinical(super::rest::DomainType::Organization),
    },
    Module {
        name: "locations",
        serves: is_location,
        permission: "places:read",
        source: Source::Clinical(super::rest::DomainType::Location),
    },
    Module {
        name: "notes",
        serves: is_note,
        permission: "notes:read",
        source: Source::Clinical(super::rest::DomainType::DocumentReference),
    },
    Module {
        name: "consents",
        serves: is_consent,
        permission: "consents:read",
        source: Source::Clinical(super::rest::DomainType::Consent),
    },
    Module {
        name: "audit",
        serves: is_audit_event,
        permission: "audit:read",
        source: Source::AuditEvents,
    },
];

fn is_observation(t: &str) -> bool {
    t == "Observation"
}

fn is_condition(t: &str) -> bool {
    t == "Condition"
}

fn is_allergy(t: &str) -> bool {
    t == "AllergyIntolerance"
}

fn is_encounter(t: &str) -> bool {
    t == "Encounter"
}

fn is_procedure(t: &str) -> bool {
    t == "Procedure"
}

fn is_practitioner(t: &str) -> bool {
    t == "Practitioner"
}

fn is_organization(t: &str) -> bool {
    t == "Organization"
}

fn is_location(t: &str) -> bool {
    t == "Location"
}

fn is_note(t: &str) -> bool {
    t == "DocumentReference"
}

fn is_consent(t: &str) -> bool {
    t == "Consent"
}

fn is_audit_event(t: &str) -> bool {
    t == "AuditEvent"
}

/// The module exporting type `t`.
pub(super) fn module_of(t: &str) -> Option<&'static Module> {
    MODULES.iter().find(|m| (m.serves)(t))
}

/// Every exportable type: Patient first, then the others by name.
fn all_types() -> Vec<String> {
    let mut out: Vec<String> = salus_fhir::definitions::structures()
        .types
        .keys()
        // The audit trail is exported only when `_type` names it.
        .filter(|t| t.as_str() != "Patient" && t.as_str() != "AuditEvent" && module_of(t).is_some())
        .cloned()
        .collect();
    out.sort_unstable();
    out.insert(0, "Patient".into());
    out
}

/// The operations of the CapabilityStatement: system-level in `rest.operation` (returned),
/// Patient- and Group-level on their `rest.resource` entries.
pub(super) fn capability_operations(resources: &mut [Value]) -> Value {
    let def = |name: &str| format!("http://hl7.org/fhir/uv/bulkdata/OperationDefinition/{name}");
    for r in resources.iter_mut() {
        let op = match r["type"].as_str() {
            Some("Patient") => json!({"name": "export", "definition": def("patient-export")}),
            Some("Group") => json!({"name": "export", "definition": def("group-export")}),
            _ => continue,
        };
        r["operation"] = json!([op]);
    }
    json!([
        {"name": "export", "definition": def("export"), "documentation": "Bulk Data export of the whole tenant (Prefer: respond-async; _type, _since, _outputFormat)"},
        {"name": "patient-export", "definition": def("patient-export"), "documentation": "GET Patient/$export: every patient's compartment"},
        {"name": "group-export", "definition": def("group-export"), "documentation": "GET Group/{id}/$export: the compartments of the Group's member patients"}
    ])
}

/// Live state of the export tasks running in this server.
#[derive(Default)]
pub struct Running {
    live: Mutex<HashMap<Uuid, Arc<Live>>>,
}

#[derive(Default)]
struct Live {
    types_total: u64,
    types_done: AtomicU64,
    resources: AtomicU64,
    cancelled: AtomicBool,
}

impl Running {
    fn insert(&self, id: Uuid, live: Arc<Live>) {
        if let Ok(mut m) = self.live.lock() {
            m.insert(id, live);
        }
    }

    fn remove(&self, id: Uuid) {
        if let Ok(mut m) = self.live.lock() {
            m.remove(&id);
        }
    }

    fn get(&self, id: Uuid) -> Option<Arc<Live>> {
        self.live.lock().ok().and_then(|m| m.get(&id).cloned())
    }
}

fn bad(msg: impl Into<String>) -> FhirError {
    FhirError::new(400, "invalid", msg)
}

/// Answers of these routes name no patient data themselves (the files are the job's
/// disclosure, logged when it ran): mark the request as having gone through the log.
async fn nothing_to_log(state: &AppState, actor: &Actor) -> Result<(), FhirError> {
    access_log::record(state, actor, AccessAction::Export, "patient", []).await?;
    Ok(())
}

fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}

/// The kick-off's parameters, checked.
struct KickOff {
    types: Vec<String>,
    since: Option<DateTime<Utc>>,
}

fn parse_kick_off(pairs: &[(String, String)]) -> Result<KickOff, FhirError> {
    let mut types: Option<Vec<String>> = None;
    let mut since = None;
    for (k, v) in pairs {
        let v = v.trim();
        match k.as_str() {
            "_outputFormat" => {
                if !OUTPUT_FORMATS.contains(&v) {
                    return Err(FhirError::new(
                        400,
                        "not-supported",
                        format!("_outputFormat '{v}' is not served; use application/fhir+ndjson"),
                    ));
                }
            }
            "_type" => {
                let mut list = types.take().unwrap_or_default();
                for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if module_of(t).is_none() {
                        return Err(FhirError::new(
                            400,
                            "not-supported",
                            format!("_type '{t}' is not a resource type served here"),
                        ));
                    }
                    if !list.iter().any(|x| x == t) {
                        list.push(t.to_owned());
                    }
                }
                types = Some(list);
            }
            "_since" => {
                let t = DateTime::parse_from_rfc3339(v).map_err(|_| {
                    bad(format!(
                        "_since '{v}' is not an instant such as 2024-01-01T00:00:00Z"
                    ))
                })?;
                since = Some(t.with_timezone(&Utc));
            }
            // The JSON check of `_format` is the middleware's.
            "_format" => {}
            other => {
                return Err(FhirError::new(
                    400,
                    "not-supported",
                    format!("the $export parameter '{other}' is not supported"),
                ));
            }
        }
    }
    let types = match types {
        Some(t) if !t.is_empty() => t,
        Some(_) => return Err(bad("_type names no resource type")),
        None => all_types(),
    };
    Ok(KickOff { types, since })
}

/// The patients a Group's `member.entity` references name.
fn group_members(group: &FhirDocument) -> HashSet<Uuid> {
    group.resource["member"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["entity"]["reference"].as_str())
        .filter_map(|r| relative_reference(r).strip_prefix("Patient/"))
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect()
}

/// `http://host/fhir/R4/Patient/1` as `Patient/1`.
fn relative_reference(r: &str) -> &str {
    match r.find("/fhir/R4/") {
        Some(i) => &r[i + "/fhir/R4/".len()..],
        None => r,
    }
}

async fn kick_off(
    state: AppState,
    actor: Actor,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    pairs: &[(String, String)],
    scope: ExportScope,
) -> Result<Response, FhirError> {
    if actor.patient.is_some() {
        return Err(FhirError::new(
            403,
            "forbidden",
            "a token with a patient context may not export",
        ));
    }
    if !prefers_async(headers) {
        return Err(bad(
            "$export runs asynchronously: send the header Prefer: respond-async",
        ));
    }
    let k = parse_kick_off(pairs)?;
    for t in &k.types {
        if let Some(m) = module_of(t) {
            actor.require(m.permission)?;
        }
    }
    let members = match &scope {
        ExportScope::Group { group } => {
            actor.require("fhir_resources:read")?;
            let g = documents::find(&state, &actor, "Group", group)
                .await?
                .filter(|c| !c.state.deleted)
                .ok_or_else(|| FhirError::new(404, "not-found", format!("no Group/{group}")))?;
            Some(group_members(&g.state))
        }
        _ => None,
    };
    let request = format!(
        "{}{}",
        base_url(headers).trim_end_matches(BASE),
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("")
    );
    let spec = ExportSpec {
        scope,
        types: k.types,
        since: k.since,
        output_format: NDJSON.into(),
        request,
    };
    let job = export_job::start(&state.services, &actor.ctx, spec).await?;
    let live = Arc::new(Live {
        types_total: job.state.types.len() as u64,
        ..Live::default()
    });
    state.exports.insert(job.row.id, live.clone());
    nothing_to_log(&state, &actor).await?;
    let status_url = format!("{}/$export-status/{}", base_url(headers), job.row.id);
    let task_state = state.clone();
    let task_actor = actor.clone();
    let j = job.state.clone();
    tokio::spawn(async move {
        run(task_state, task_actor, j, members, live).await;
    });
    let mut resp = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = HeaderValue::from_str(&status_url) {
        resp.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    Ok(resp)
}

/// The export task: every type's file, then the access log, then the job's end.
async fn run(
    state: AppState,
    actor: Actor,
    job: ExportJob,
    members: Option<HashSet<Uuid>>,
    live: Arc<Live>,
) {
    let outcome = produce(&state, &actor, &job, members, &live).await;
    if !live.cancelled.load(Ordering::SeqCst) {
        let outcome = outcome.map_err(|e| {
            tracing::warn!(job = %job.id, error = %e, "export failed");
            e
        });
        if let Err(e) = export_job::finish(&state.services, &actor.ctx, job.id, outcome).await {
            tracing::error!(job = %job.id, error = %e, "the export's end could not be recorded");
        }
    }
    state.exports.remove(job.id);
}

/// Which resources an export holds, by the patient whose data they are.
enum Compartment {
    All,
    AnyPatient,
    Members(HashSet<Uuid>),
}

impl Compartment {
    fn admits(&self, patient: Option<Uuid>) -> bool {
        match self {
            Compartment::All => true,
            Compartment::AnyPatient => patient.is_some(),
            Compartment::Members(m) => patient.is_some_and(|p| m.contains(&p)),
        }
    }
}

async fn produce(
    state: &AppState,
    actor: &Actor,
    job: &ExportJob,
    members: Option<HashSet<Uuid>>,
    live: &Arc<Live>,
) -> Result<Vec<ExportOutput>, String> {
    let compartment = Arc::new(match &job.scope {
        ExportScope::System => Compartment::All,
        ExportScope::Patient => Compartment::AnyPatient,
        ExportScope::Group { .. } => Compartment::Members(members.unwrap_or_default()),
    });
    // Export files are not attachments: no attachment size limit.
    let blobs = BlobStore::new(&state.config.blob_dir, u64::MAX);
    let patients: Arc<Mutex<BTreeSet<Uuid>>> = Arc::default();
    let mut outputs = Vec::new();
    for t in &job.types {
        let module = module_of(t).ok_or_else(|| format!("'{t}' is no longer exported"))?;
        let source = module.source;
        let count = Arc::new(AtomicU64::new(0));
        let scan = Scan {
            state: state.clone(),
            actor: actor.clone(),
            t: t.clone(),
            source,
            since: job.since,
            compartment: compartment.clone(),
            count: count.clone(),
            patients: patients.clone(),
            live: live.clone(),
        };
        let stream =
            futures_util::stream::unfold((Some(None), scan), |(cursor, scan)| async move {
                let after = cursor?;
                if scan.live.cancelled.load(Ordering::SeqCst) {
                    return Some((Err("the export was cancelled".to_owned()), (None, scan)));
                }
                match scan.page(after).await {
                    Ok((bytes, next)) => Some((Ok(bytes), (next.map(Some), scan))),
                    Err(e) => Some((Err(e), (None, scan))),
                }
            });
        // Pages with nothing to write are left out; a type with nothing has no file.
        let stream = Box::pin(futures_util::StreamExt::filter(
            stream,
            |r: &Result<bytes::Bytes, String>| {
                let keep = r.as_ref().map(|b| !b.is_empty()).unwrap_or(true);
                async move { keep }
            },
        ));
        match blobs.put(stream).await {
            Ok(stored) => outputs.push(ExportOutput {
                resource_type: t.clone(),
                sha256: stored.sha256.to_hex(),
                count: count.load(Ordering::SeqCst),
            }),
            Err(salus_store::blobs::BlobError::Empty) => {}
            Err(e) => return Err(format!("the {t} file could not be written: {e}")),
        }
        tracing::debug!(job = %job.id, resource_type = %t, module = module.name,
            count = count.load(Ordering::SeqCst), "export type written");
        live.types_done.fetch_add(1, Ordering::SeqCst);
    }
    let exported: Vec<Uuid> = patients
        .lock()
        .map(|p| p.iter().copied().collect())
        .unwrap_or_default();
    access_log::record(
        state,
        actor,
        AccessAction::Export,
        "patient",
        exported.into_iter().map(|patient| access_log::Access {
            patient,
            resource_id: None,
        }),
    )
    .await
    .map_err(|e| e.detail)?;
    Ok(outputs)
}

/// One type's scan through the store, a page at a time.
struct Scan {
    state: AppState,
    actor: Actor,
    t: String,
    source: Source,
    since: Option<DateTime<Utc>>,
    compartment: Arc<Compartment>,
    count: Arc<AtomicU64>,
    patients: Arc<Mutex<BTreeSet<Uuid>>>,
    live: Arc<Live>,
}

impl Scan {
    /// The NDJSON lines of the page after `after`, and the id to continue after.
    async fn page(&self, after: Option<Uuid>) -> Result<(bytes::Bytes, Option<Uuid>), String> {
        let fail = |e: FhirError| {
            e.issues
                .first()
                .map(|i| i.diagnostics.clone())
                .unwrap_or_else(|| "the store could not be read".into())
        };
        let since = self.since;
        let fresh = |t: DateTime<Utc>| since.is_none_or(|s| t > s);
        let mut lines: Vec<(Option<Uuid>, Value)> = Vec::new();
        let next = match self.source {
            Source::Patients => {
                let q = SearchQuery {
                    resource_type: "patient".into(),
                    filters: Vec::new(),
                    after,
                    limit: PAGE,
                    newest_first: false,
                    order_by: None,
                };
                let rows = self
                    .state
                    .services
                    .search::<salus_domain::registry::Patient>(&self.actor.ctx, &q)
                    .await
                    .map_err(|e| fail(e.into()))?;
                let next = (rows.len() >= PAGE as usize)
                    .then(|| rows.last().map(|c| c.row.id))
                    .flatten();
                for c in rows {
                    if fresh(c.row.updated_at) && self.compartment.admits(Some(c.row.id)) {
                        let r = fhir_patient::to_fhir(&c.state, c.row.version, c.row.updated_at);
                        lines.push((Some(c.row.id), r));
                    }
                }
                next
            }
            Source::Clinical(kind) => {
                let (found, next) = kind
                    .export_page(&self.state, &self.actor, after, PAGE)
                    .await
                    .map_err(fail)?;
                for (patient, updated, r) in found {
                    if fresh(updated) && self.compartment.admits(patient) {
                        lines.push((patient, r));
                    }
                }
                next
            }
            Source::AuditEvents => {
                // The log is paged by position; the page cursor carries it as the low
                // half of a UUID.
                let q = salus_store::audit::EventQuery {
                    after: after.map(|u| u.as_u64_pair().1 as i64),
                    limit: PAGE,
                    ..Default::default()
                };
                let items = salus_domain::audit::page(&self.state.services, &self.actor.ctx, &q)
                    .await
                    .map_err(|e| fail(e.into()))?;
                let next = (items.len() >= PAGE as usize)
                    .then(|| {
                        items
                            .last()
                            .map(|i| Uuid::from_u64_pair(0, i.event.seq as u64))
                    })
                    .flatten();
                for i in items {
                    if fresh(i.event.recorded_at) && self.compartment.admits(i.patient_id) {
                        lines.push((i.patient_id, super::audit_event::to_fhir(&i)));
                    }
                }
                next
            }
            Source::Documents => {
                let (found, next) =
                    documents::export_page(&self.state, &self.actor, &self.t, after, PAGE)
                        .await
                        .map_err(fail)?;
                for (c, r) in found {
                    if fresh(c.row.updated_at) && self.compartment.admits(c.state.patient_id) {
                        lines.push((c.state.patient_id, r));
                    }
                }
                next
            }
        };
        let mut out = Vec::with_capacity(lines.len() * 512);
        if let Ok(mut p) = self.patients.lock() {
            p.extend(lines.iter().filter_map(|(p, _)| *p));
        }
        for (_, r) in &lines {
            serde_json::to_writer(&mut out, r).map_err(|e| e.to_string())?;
            out.push(b'\n');
        }
        self.count.fetch_add(lines.len() as u64, Ordering::SeqCst);
        self.live
            .resources
            .fetch_add(lines.len() as u64, Ordering::SeqCst);
        Ok((bytes::Bytes::from(out), next))
    }
}

/// The job `id` if the actor started it (anyone else is answered as if there were none).
async fn own_job(
    state: &AppState,
    actor: &Actor,
    id: &str,
) -> Result<Current<ExportJob>, FhirError> {
    let missing = || FhirError::new(404, "not-found", format!("no export job {id}"));
    let uuid = Uuid::parse_str(id).map_err(|_| missing())?;
    let job = state
        .services
        .load::<ExportJob>(&actor.ctx, uuid)
        .await?
        .filter(|c| c.state.requested_by == actor.ctx.actor.0)
        .filter(|c| c.state.status != ExportStatus::Cancelled)
        .ok_or_else(missing)?;
    Ok(job)
}

fn manifest(base: &str, job: &ExportJob) -> Value {
    let output: Vec<Value> = job
        .outputs
        .iter()
        .map(|o| {
            json!({
                "type": o.resource_type,
                "url": format!("{base}/$export-files/{}/{}.ndjson", job.id, o.resource_type),
                "count": o.count,
            })
        })
        .collect();
    json!({
        "transactionTime": salus_fhir::patient::instant(job.transaction_time),
        "request": job.request,
        "requiresAccessToken": true,
        "output": output,
        "error": [],
    })
}

/// Bulk Data export of the whole tenant (asynchronous).
#[utoipa::path(get, path = "/fhir/R4/$export", tag = "fhir",
    params(("Prefer" = String, Header, description = "respond-async (required)"),
           ("_outputFormat" = Option<String>, Query, description = "application/fhir+ndjson (also application/ndjson, ndjson)"),
           ("_type" = Option<String>, Query, description = "Resource types, comma-separated (default: every type)"),
           ("_since" = Option<String>, Query, description = "Only resources updated after this instant")),
    responses((status = 202, description = "Accepted: Content-Location names the status URL"), (status = 400, description = "No Prefer: respond-async, or a parameter is not served (OperationOutcome)")),
    security(("bearer" = ["exports:read"])))]
pub async fn system_export(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    kick_off(state, actor, &headers, &uri, &pairs, ExportScope::System).await
}

/// Bulk Data export of every patient's compartment (asynchronous).
#[utoipa::path(get, path = "/fhir/R4/Patient/$export", tag = "fhir",
    params(("Prefer" = String, Header, description = "respond-async (required)"),
           ("_outputFormat" = Option<String>, Query, description = "application/fhir+ndjson"),
           ("_type" = Option<String>, Query, description = "Resource types, comma-separated"),
           ("_since" = Option<String>, Query, description = "Only resources updated after this instant")),
    responses((status = 202, description = "Accepted: Content-Location names the status URL"), (status = 400, description = "A parameter is not served (OperationOutcome)")),
    security(("bearer" = ["exports:read"])))]
pub async fn patient_export(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    kick_off(state, actor, &headers, &uri, &pairs, ExportScope::Patient).await
}

/// Bulk Data export of a Group's member patients (asynchronous); only `Group` has it.
#[utoipa::path(get, path = "/fhir/R4/{type}/{id}/$export", tag = "fhir",
    params(("type" = String, Path, description = "Group"), ("id" = String, Path, description = "The Group's id"),
           ("Prefer" = String, Header, description = "respond-async (required)"),
           ("_outputFormat" = Option<String>, Query, description = "application/fhir+ndjson"),
           ("_type" = Option<String>, Query, description = "Resource types, comma-separated"),
           ("_since" = Option<String>, Query, description = "Only resources updated after this instant")),
    responses((status = 202, description = "Accepted: Content-Location names the status URL"), (status = 404, description = "No such Group")),
    security(("bearer" = ["exports:read"])))]
pub async fn group_export(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path((t, id)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    if t != "Group" {
        return Err(FhirError::new(
            404,
            "not-supported",
            format!("$export is served on Group instances, not {t}"),
        ));
    }
    kick_off(
        state,
        actor,
        &headers,
        &uri,
        &pairs,
        ExportScope::Group { group: id },
    )
    .await
}

/// An export's status: 202 with `X-Progress` while it runs, 200 with the manifest when done.
#[utoipa::path(get, path = "/fhir/R4/$export-status/{job}", tag = "fhir",
    params(("job" = String, Path, description = "The export job")),
    responses((status = 200, description = "Done: the manifest (transactionTime, request, requiresAccessToken, output, error)"), (status = 202, description = "Running (X-Progress)"), (status = 404, description = "No such job (or not the caller's)"), (status = 500, description = "The export failed (OperationOutcome)")),
    security(("bearer" = ["exports:read"])))]
pub async fn status(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let mut job = own_job(&state, &actor, &id).await?;
    if job.state.status == ExportStatus::Running {
        match state.exports.get(job.row.id) {
            Some(live) => {
                nothing_to_log(&state, &actor).await?;
                let progress = format!(
                    "{} resources, {} of {} types",
                    live.resources.load(Ordering::SeqCst),
                    live.types_done.load(Ordering::SeqCst),
                    live.types_total
                );
                let mut resp = StatusCode::ACCEPTED.into_response();
                let h = resp.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&progress) {
                    h.insert("x-progress", v);
                }
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Ok(resp);
            }
            None => {
                // The task records the end before it leaves the table, so it may have
                // finished since the job was read: read it again.
                job = own_job(&state, &actor, &id).await?;
            }
        }
    }
    if job.state.status == ExportStatus::Running && state.exports.get(job.row.id).is_none() {
        // No task of this server runs it: its server stopped while it ran.
        job = export_job::finish(
            &state.services,
            &actor.ctx,
            job.row.id,
            Err("interrupted: the server stopped while the export ran; start it again".into()),
        )
        .await?;
    }
    match job.state.status {
        ExportStatus::Completed => {
            nothing_to_log(&state, &actor).await?;
            Ok(ok_json(&manifest(&base_url(&headers), &job.state)))
        }
        _ => Err(FhirError::new(
            500,
            "exception",
            format!(
                "the export failed: {}",
                job.state
                    .failure
                    .as_deref()
                    .unwrap_or("no reason was recorded")
            ),
        )),
    }
}

/// Cancel a running export, or remove a finished one (its files are no longer offered).
#[utoipa::path(delete, path = "/fhir/R4/$export-status/{job}", tag = "fhir",
    params(("job" = String, Path, description = "The export job")),
    responses((status = 202, description = "Cancelled or removed"), (status = 404, description = "No such job (or not the caller's)")),
    security(("bearer" = ["exports:read"])))]
pub async fn cancel(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let job = own_job(&state, &actor, &id).await?;
    if let Some(live) = state.exports.get(job.row.id) {
        live.cancelled.store(true, Ordering::SeqCst);
    }
    export_job::cancel(&state.services, &actor.ctx, job.row.id).await?;
    nothing_to_log(&state, &actor).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// One output file of a completed export: NDJSON, one resource a line.
#[utoipa::path(get, path = "/fhir/R4/$export-files/{job}/{file}", tag = "fhir",
    params(("job" = String, Path, description = "The export job"), ("file" = String, Path, description = "<Type>.ndjson")),
    responses((status = 200, description = "The file", content_type = "application/fhir+ndjson"), (status = 404, description = "No such job or file")),
    security(("bearer" = ["exports:read"])))]
pub async fn file(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, FhirError> {
    let job = own_job(&state, &actor, &id).await?;
    let missing = || FhirError::new(404, "not-found", format!("export {id} has no file {name}"));
    if job.state.status != ExportStatus::Completed {
        return Err(missing());
    }
    let t = name.strip_suffix(".ndjson").ok_or_else(missing)?;
    let out = job
        .state
        .outputs
        .iter()
        .find(|o| o.resource_type == t)
        .ok_or_else(missing)?;
    let hash = Hash32::from_hex(&out.sha256).ok_or_else(missing)?;
    let blobs = BlobStore::new(&state.config.blob_dir, u64::MAX);
    let (f, size) = blobs
        .open_verified(&hash)
        .await
        .map_err(|e| FhirError::from(crate::attachments::blob_error(&state, e)))?;
    nothing_to_log(&state, &actor).await?;
    let mut resp = (
        StatusCode::OK,
        Body::from_stream(tokio_util::io::ReaderStream::new(f)),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_type_has_exactly_one_export_module() {
        let cs = super::super::capability_statement("http://x");
        let resources = cs["rest"][0]["resource"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(resources.len() > 100);
        for r in &resources {
            let t = r["type"].as_str().unwrap_or_default();
            let by: Vec<&str> = MODULES
                .iter()
                .filter(|m| (m.serves)(t))
                .map(|m| m.name)
                .collect();
            assert_eq!(by.len(), 1, "{t} is exported by {by:?} (see MODULES)");
        }
        // Every served type once, but AuditEvent (exported only when `_type` names it).
        let all = all_types();
        assert_eq!(all.len(), resources.len() - 1, "every served type, once");
        assert!(!all.iter().any(|t| t == "AuditEvent"));
        assert!(all.iter().any(|t| t == "Observation"));
        assert_eq!(all[0], "Patient");
    }

    #[test]
    fn kick_off_parameters_are_checked() {
        let p = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        assert!(parse_kick_off(&p("_outputFormat", "application/fhir+ndjson")).is_ok());
        assert!(parse_kick_off(&p("_outputFormat", "application/fhir ndjson")).is_ok());
        assert!(parse_kick_off(&p("_outputFormat", "text/csv")).is_err());
        assert!(parse_kick_off(&p("_type", "Patient,Nonsense")).is_err());
        assert!(parse_kick_off(&p("_type", ",")).is_err());
        assert!(parse_kick_off(&p("_since", "yesterday")).is_err());
        assert!(parse_kick_off(&p("_typeFilter", "x")).is_err());
        let k = parse_kick_off(&p("_type", "Immunization, Patient,Immunization")).unwrap();
        assert_eq!(k.types, ["Immunization", "Patient"]);
        let k = parse_kick_off(&p("_since", "2024-01-01T00:00:00+01:00")).unwrap();
        assert_eq!(
            k.since.map(|s| s.to_rfc3339()),
            Some("2023-12-31T23:00:00+00:00".to_owned())
        );
    }

    #[test]
    fn group_members_are_its_patient_references() {
        let g = FhirDocument {
            resource_type: "Group".into(),
            id: "g".into(),
            patient_id: None,
            resource: json!({"member": [
                {"entity": {"reference": "Patient/0190a5c4-0000-7000-8000-000000000001"}},
                {"entity": {"reference": "http://x/fhir/R4/Patient/0190a5c4-0000-7000-8000-000000000002"}},
                {"entity": {"reference": "Practitioner/1"}},
                {"entity": {"reference": "Patient/not-a-uuid"}}
            ]}),
            deleted: false,
        };
        assert_eq!(group_members(&g).len(), 2);
    }
}

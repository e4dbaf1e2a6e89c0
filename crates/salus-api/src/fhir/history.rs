//! Type and system history: `GET /fhir/R4/{type}/_history` and `GET /fhir/R4/_history`,
//! every version of the resources of one type (or of every type served), newest first,
//! read from the event log: each event of a FHIR-served stream is one version.
//!
//! `_count` (1–200, default 50) and `_since` (an instant: versions recorded at or after it)
//! are taken; `_at` and `_list` are refused. Pages are linked by `_before`, the log position
//! the next page starts below, so a page never repeats or skips a version that was written
//! meanwhile. A page reads at most [`SCAN_LIMIT`] events of the log; when the type is rare
//! it may hold fewer than `_count` entries and still link to the next.

use super::rest::DomainType;
use super::*;
use salus_domain::documents::FhirDocument;
use salus_store::audit::EventQuery;

/// The most events one page reads from the log.
const SCAN_LIMIT: u32 = 5_000;
/// Events read per store call.
const SCAN_BATCH: u32 = 500;

/// What a history asks for.
struct Params {
    count: u32,
    since: Option<DateTime<Utc>>,
    before: Option<i64>,
}

fn parse(pairs: &[(String, String)]) -> Result<Params, FhirError> {
    let mut p = Params {
        count: 50,
        since: None,
        before: None,
    };
    for (k, v) in pairs {
        let v = v.trim();
        match k.as_str() {
            "_count" => {
                p.count = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .map(|n| n.min(200))
                    .ok_or_else(|| {
                        FhirError::new(400, "invalid", "_count must be a whole number from 1")
                    })?;
            }
            "_since" => {
                let t = DateTime::parse_from_rfc3339(v).map_err(|_| {
                    FhirError::new(
                        400,
                        "invalid",
                        format!("_since '{v}' is not an instant like 2024-01-01T00:00:00Z"),
                    )
                })?;
                p.since = Some(t.with_timezone(&Utc));
            }
            "_before" => {
                p.before = Some(v.parse::<i64>().map_err(|_| {
                    FhirError::new(400, "invalid", "_before must be a log position")
                })?);
            }
            "_at" | "_list" => {
                return Err(FhirError::new(
                    400,
                    "not-supported",
                    format!("the history parameter '{k}' is not supported"),
                ));
            }
            _ => {}
        }
    }
    Ok(p)
}

/// Which resources a history covers.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Patients,
    Documents(&'a str),
    Clinical(DomainType),
    /// Every type served: Patients and the clinical types only with their read permission.
    All {
        patients: bool,
        clinical: &'a [DomainType],
    },
}

/// One page of history: its entries, and where the next page starts (`None`: the log's
/// beginning was reached).
async fn page(
    state: &AppState,
    actor: &Actor,
    base: &str,
    scope: Scope<'_>,
    p: &Params,
) -> Result<(Vec<Value>, Option<i64>), FhirError> {
    let stream_type = match scope {
        Scope::Patients => Some("patient".to_owned()),
        Scope::Documents(_) => Some(FhirDocument::RESOURCE_TYPE.to_owned()),
        Scope::Clinical(kind) => Some(kind.stored().to_owned()),
        Scope::All { .. } => None,
    };
    let mut entries = Vec::new();
    let mut patients: Vec<Access> = Vec::new();
    let mut docs: Vec<(Uuid, Value)> = Vec::new();
    let mut clinical: Vec<(&'static str, Access)> = Vec::new();
    let mut before = p.before;
    let mut scanned = 0;
    let next = loop {
        let q = EventQuery {
            stream_type: stream_type.clone(),
            from: p.since,
            before,
            newest_first: true,
            limit: SCAN_BATCH,
            ..Default::default()
        };
        let events = state
            .services
            .store
            .audit_events(&actor.ctx, &q)
            .await
            .map_err(ApiError::from)?;
        let exhausted = events.len() < SCAN_BATCH as usize;
        let mut full = None;
        for e in &events {
            scanned += 1;
            before = Some(e.seq);
            let entry = match (e.stream_type.as_str(), scope) {
                ("patient", Scope::Patients | Scope::All { patients: true, .. }) => {
                    let Some(c) = state
                        .services
                        .at_version::<Patient>(&actor.ctx, e.stream_id, e.version)
                        .await?
                    else {
                        continue;
                    };
                    if !actor.sees("patient", &c.row.doc) {
                        continue;
                    }
                    patients.push(Access {
                        patient: c.row.id,
                        resource_id: Some(c.row.id),
                    });
                    super::patient::version_entry(base, &c)
                }
                (s, Scope::Documents(_) | Scope::All { .. })
                    if s == FhirDocument::RESOURCE_TYPE =>
                {
                    let Some(c) = state
                        .services
                        .at_version::<FhirDocument>(&actor.ctx, e.stream_id, e.version)
                        .await?
                    else {
                        continue;
                    };
                    if let Scope::Documents(t) = scope
                        && c.state.resource_type != t
                    {
                        continue;
                    }
                    if !actor.sees(FhirDocument::RESOURCE_TYPE, &c.row.doc) {
                        continue;
                    }
                    docs.push((c.row.id, c.row.doc.clone()));
                    super::documents::version_entry(base, &c)
                }
                (s, Scope::Clinical(_) | Scope::All { .. }) => {
                    let kind = match scope {
                        Scope::Clinical(k) => Some(k),
                        Scope::All { clinical: ks, .. } => {
                            ks.iter().copied().find(|k| k.stored() == s)
                        }
                        _ => None,
                    };
                    let Some(kind) = kind.filter(|k| k.stored() == s) else {
                        continue;
                    };
                    let Some((entry, patient, row)) = kind
                        .history_entry(state, actor, base, e.stream_id, e.version)
                        .await?
                    else {
                        continue;
                    };
                    if let Some(p) = patient {
                        clinical.push((
                            kind.stored(),
                            Access {
                                patient: p,
                                resource_id: Some(row),
                            },
                        ));
                    }
                    entry
                }
                _ => continue,
            };
            entries.push(entry);
            if entries.len() >= p.count as usize {
                full = Some(e.seq);
                break;
            }
        }
        if let Some(seq) = full {
            break Some(seq);
        }
        if exhausted {
            break None;
        }
        if scanned >= SCAN_LIMIT {
            break before;
        }
    };
    access_log::record(state, actor, AccessAction::Search, "patient", patients).await?;
    for kind in DomainType::ALL {
        let of_kind = clinical
            .iter()
            .filter(|(s, _)| *s == kind.stored())
            .map(|(_, a)| *a);
        access_log::record(state, actor, AccessAction::Search, kind.stored(), of_kind).await?;
    }
    access_log::record_docs(
        state,
        actor,
        AccessAction::Search,
        FhirDocument::RESOURCE_TYPE,
        docs.iter().map(|(id, d)| (*id, d)),
    )
    .await?;
    Ok((entries, next))
}

async fn answer(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    path: &str,
    scope: Scope<'_>,
    pairs: &[(String, String)],
) -> Result<Response, FhirError> {
    let p = parse(pairs)?;
    let base = base_url(headers);
    let (entries, next) = page(state, actor, &base, scope, &p).await?;
    let link = |before: Option<i64>| {
        let mut q = vec![format!("_count={}", p.count)];
        if let Some(s) = p.since {
            q.push(format!(
                "_since={}",
                encode(&salus_fhir::patient::instant(s))
            ));
        }
        if let Some(b) = before {
            q.push(format!("_before={b}"));
        }
        format!("{base}{path}?{}", q.join("&"))
    };
    let mut links = vec![json!({"relation": "self", "url": link(p.before)})];
    if let Some(n) = next {
        links.push(json!({"relation": "next", "url": link(Some(n))}));
    }
    Ok(ok_json(&bundle_of(state, "history", links, entries)))
}

/// Every version of every Patient, newest first.
#[utoipa::path(get, path = "/fhir/R4/Patient/_history", tag = "fhir",
    params(("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)"), ("_since" = Option<String>, Query, description = "Only versions recorded at or after this instant")),
    responses((status = 200, description = "A history Bundle, newest version first", content_type = "application/fhir+json"), (status = 400, description = "A malformed parameter")),
    security(("bearer" = ["patients:read"])))]
pub async fn patients(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    answer(
        &state,
        &actor,
        &headers,
        "/Patient/_history",
        Scope::Patients,
        &pairs,
    )
    .await
}

/// Every version of every Observation, newest first.
#[utoipa::path(get, path = "/fhir/R4/Observation/_history", tag = "fhir",
    params(("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)"), ("_since" = Option<String>, Query, description = "Only versions recorded at or after this instant")),
    responses((status = 200, description = "A history Bundle, newest version first", content_type = "application/fhir+json")),
    security(("bearer" = ["observations:read"])))]
pub async fn observations(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    let scope = Scope::Clinical(DomainType::Observation);
    answer(
        &state,
        &actor,
        &headers,
        "/Observation/_history",
        scope,
        &pairs,
    )
    .await
}

/// Every version of every Condition, newest first.
#[utoipa::path(get, path = "/fhir/R4/Condition/_history", tag = "fhir",
    params(("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)"), ("_since" = Option<String>, Query, description = "Only versions recorded at or after this instant")),
    responses((status = 200, description = "A history Bundle, newest version first", content_type = "application/fhir+json")),
    security(("bearer" = ["conditions:read"])))]
pub async fn conditions(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    let scope = Scope::Clinical(DomainType::Condition);
    answer(
        &state,
        &actor,
        &headers,
        "/Condition/_history",
        scope,
        &pairs,
    )
    .await
}

/// Every version of every AllergyIntolerance, newest first.
#[utoipa::path(get, path = "/fhir/R4/AllergyIntolerance/_history", tag = "fhir",
    params(("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)"), ("_since" = Option<String>, Query, description = "Only versions recorded at or after this instant")),
    responses((status = 200, description = "A history Bundle, newest version first", content_type = "application/fhir+json")),
    security(("bearer" = ["allergies:read"])))]
pub async fn allergies(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    let scope = Scope::Clinical(DomainType::AllergyIntolerance);
    answer(
        &state,
        &actor,
        &headers,
        "/AllergyIntolerance/_history",
        scope,
        &pairs,
    )
    .await
}

/// Every version of every Consent, newest first.
#[utoipa::path(get, path = "/fhir/R4/Consent/_history", tag = "fhir",
    params(("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)"), ("_since" = Option<String>, Query, description = "Only versions recorded at or after this instant")),
    responses((status = 200, description = "A history Bundle, newest version first", content_type = "application/fhir+json")),
    security(("bearer" = ["consents:read"])))]
pub async fn consents(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    let scope = Scope::Clinical(DomainType::Consent);
    answer(&state, &actor, &headers, "/Consent/_history", scope, &pairs).await
}

/// Every version of every DocumentReference, newest first.
#[utoipa::path(get, path = "/fhir/R4/DocumentReference/_history", tag = "fhir",
    params(("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)"), ("_since" = Option<String>, Query, description = "Only versions recorded at or after this instant")),
    responses((status = 200, description = "A history Bundle, newest version first", content_type = "application/fhir+json")),
    security(("bearer" = ["notes:read"])))]
pub async fn notes(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    let scope = Scope::Clinical(DomainType::DocumentReference);
    answer(
        &state,
        &actor,
        &headers,
        "/DocumentReference/_history",
        scope,
        &pairs,
    )
    .await
}

/// Every version of every Practitioner, newest first.
#[utoipa::path(get, path = "/fhir/R4/Practitioner/_history", tag = "fhir",
    params(("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)"), ("_since" = Option<String>, Query, description = "Only versions recorded at or after this instant")),
    responses((status = 200, description = "A history Bundle, newest version first", content_type = "application/fhir+json")),
    security(("bearer" = ["clinicians:read"])))]
pub async fn practitioners(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    let scope = Scope::Clinical(DomainType::Practitioner);
    answer(
        &state,
        &actor,
        &headers,
        "/Practitioner/_history",
        scope,
        &pairs,
    )
    .await
}

/// Every version of every Organization, newest first.
#[utoipa::path(get, path = "/fhir/R4/Organization/_history", tag = "fhir",
    params(("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)"), ("_since" = Option<String>, Query, description = "Only versions recorded at or after this instant")),
    responses((status = 200, description = "A history Bundle, newest version first", content_type = "application/fhir+json")),
    security(("bearer" = ["places:read"])))]
pub async fn organizations(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    let scope = Scope::Clinical(DomainType::Organization);
    answer(
        &state,
        &actor,
        &headers,
        "/Organization/_history",
        scope,
        &pairs,
    )
    .await
}

/// Every version of every Location, newest first.
#[utoipa::path(get, path = "/fhir/R4/Location/_history", tag = "fhir",
    params(("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)"), ("_since" = Option<String>, Query, description = "Only versions recorded at or after this instant")),
    responses((status = 200, description = "A history Bundle, newest version first", content_type = "application/fhir+json")),
    security(("bearer" = ["places:read"])))]
pub async fn locations(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    let scope = Scope::Clinical(DomainType::Location);
    answer(
        &state,
        &actor,
        &headers,
        "/Location/_history",
        scope,
        &pairs,
    )
    .await
}

/// Every version of every Encounter, newest first.
#[utoipa::path(get, path = "/fhir/R4/Encounter/_history", tag = "fhir",
    params(("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)"), ("_since" = Option<String>, Query, description = "Only versions recorded at or after this instant")),
    responses((status = 200, description = "A history Bundle, newest version first", content_type = "application/fhir+json")),
    security(("bearer" = ["encounters:read"])))]
pub async fn encounters(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    let scope = Scope::Clinical(DomainType::Encounter);
    answer(
        &state,
        &actor,
        &headers,
        "/Encounter/_history",
        scope,
        &pairs,
    )
    .await
}

/// Every version of every Procedure, newest first.
#[utoipa::path(get, path = "/fhir/R4/Procedure/_history", tag = "fhir",
    params(("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)"), ("_since" = Option<String>, Query, description = "Only versions recorded at or after this instant")),
    responses((status = 200, description = "A history Bundle, newest version first", content_type = "application/fhir+json")),
    security(("bearer" = ["procedures:read"])))]
pub async fn procedures(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    let scope = Scope::Clinical(DomainType::Procedure);
    answer(
        &state,
        &actor,
        &headers,
        "/Procedure/_history",
        scope,
        &pairs,
    )
    .await
}

/// Every version of every resource of a type kept as a document, newest first.
#[utoipa::path(get, path = "/fhir/R4/{type}/_history", tag = "fhir",
    params(("type" = String, Path, description = "Resource type"), ("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)"), ("_since" = Option<String>, Query, description = "Only versions recorded at or after this instant")),
    responses((status = 200, description = "A history Bundle, newest version first", content_type = "application/fhir+json"), (status = 404, description = "Not a type served here")),
    security(("bearer" = ["fhir_resources:read"])))]
pub async fn of_type(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Path(t): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    if !super::documents::is_document_type(&t) {
        return Err(FhirError::new(
            404,
            "not-supported",
            format!("'{t}' is not a resource type served here"),
        ));
    }
    let path = format!("/{t}/_history");
    answer(
        &state,
        &actor,
        &headers,
        &path,
        Scope::Documents(&t),
        &pairs,
    )
    .await
}

/// Every version of every resource served, newest first (Patients only with
/// `patients:read`).
#[utoipa::path(get, path = "/fhir/R4/_history", tag = "fhir",
    params(("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)"), ("_since" = Option<String>, Query, description = "Only versions recorded at or after this instant")),
    responses((status = 200, description = "A history Bundle, newest version first", content_type = "application/fhir+json")),
    security(("bearer" = ["fhir_resources:read"])))]
pub async fn system(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    let patients = actor.permissions.allows("patients:read");
    let clinical: Vec<DomainType> = DomainType::ALL
        .iter()
        .copied()
        .filter(|k| actor.permissions.allows(k.permission(true)))
        .collect();
    let scope = Scope::All {
        patients,
        clinical: &clinical,
    };
    answer(&state, &actor, &headers, "/_history", scope, &pairs).await
}

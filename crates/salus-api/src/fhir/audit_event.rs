//! AuditEvent, read-only, from the event log: every event of the log is one AuditEvent
//! (its id is the event's id), saying what changed (`entity`: the record, its version, the
//! event's hash and ledger position), how (`subtype`: the event type; `action` C, U or D),
//! when (`recorded`) and by whom (`agent`: the user). Clients cannot write AuditEvents; the
//! log is written by Salus alone and is hash-chained (`salus audit verify`).
//!
//! Search: `date` (with prefixes), `patient` (the patient's own record, the records merged
//! into it, and every clinical record that belongs to it), `entity` (one record by
//! reference), `agent` (a user id), `subtype` (an event type), `_count` and paging by log
//! position. Reading the trail is a read of patient data, logged as the `/api/v1` trail's is.

use super::*;
use salus_domain::audit::AuditItem;
use salus_domain::documents::FhirDocument;
use salus_kernel::ActorId;
use salus_store::audit::EventQuery;

/// The code system of Salus event types (`patient.registered`, `fhir.resource.created`…).
pub const EVENT_TYPE_SYSTEM: &str = "urn:salus:event-type";
/// The identifier system of Salus users (an agent's `who`).
pub const USER_SYSTEM: &str = "urn:salus:user";

pub(super) fn capability() -> Value {
    let params: Vec<Value> = [
        (
            "date",
            "When the event was recorded; prefixes eq, gt, ge, lt, le",
        ),
        (
            "patient",
            "Patient/<id>: the patient's record, records merged into it, and its clinical records",
        ),
        ("entity", "Type/id of the record changed"),
        ("agent", "The user (id) who made the change"),
        ("subtype", "The Salus event type, e.g. patient.registered"),
    ]
    .iter()
    .filter_map(|(c, d)| capability_param("AuditEvent", c, d))
    .collect();
    json!({
        "type": "AuditEvent",
        "profile": "http://hl7.org/fhir/StructureDefinition/AuditEvent",
        "documentation": "Read-only: every event of the hash-chained event log, as an AuditEvent.",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": params
    })
}

/// The FHIR reference of the record an event changed, when it has one.
fn entity_reference(i: &AuditItem) -> Option<String> {
    let e = &i.event;
    match e.stream_type.as_str() {
        "patient" => Some(format!("Patient/{}", e.stream_id)),
        s if s == FhirDocument::RESOURCE_TYPE => {
            let st = if i.after.is_null() {
                &i.before
            } else {
                &i.after
            };
            let t = st.get("resource_type").and_then(Value::as_str)?;
            let id = st.get("id").and_then(Value::as_str)?;
            Some(format!("{t}/{id}"))
        }
        _ => None,
    }
}

/// One event of the log as an AuditEvent.
pub fn to_fhir(i: &AuditItem) -> Value {
    let e = &i.event;
    let action = if e.version == 1 {
        "C"
    } else if e.event_type.ends_with(".deleted") {
        "D"
    } else {
        "U"
    };
    let what = match entity_reference(i) {
        Some(r) => json!({"reference": r}),
        None => {
            json!({"identifier": {"system": format!("urn:salus:{}", e.stream_type), "value": e.stream_id.to_string()}})
        }
    };
    let recorded = salus_fhir::patient::instant(e.recorded_at);
    json!({
        "resourceType": "AuditEvent",
        "id": e.event_id.to_string(),
        "meta": {"versionId": "1", "lastUpdated": recorded},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": EVENT_TYPE_SYSTEM, "code": e.event_type}],
        "action": action,
        "recorded": recorded,
        "outcome": "0",
        "agent": [{"who": {"identifier": {"system": USER_SYSTEM, "value": e.actor_id.0.to_string()}}, "requestor": true}],
        "source": {"observer": {"display": "Salus"}},
        "entity": [{
            "what": what,
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
            "detail": [
                {"type": "version", "valueString": e.version.to_string()},
                {"type": "ledger-seq", "valueString": e.seq.to_string()},
                {"type": "hash", "valueString": e.hash.to_hex()},
            ]
        }]
    })
}

/// One AuditEvent by id: the log's event with that id, in the caller's tenant.
#[utoipa::path(get, path = "/fhir/R4/AuditEvent/{id}", tag = "fhir",
    params(("id" = String, Path, description = "The event's id")),
    responses((status = 200, description = "The AuditEvent", content_type = "application/fhir+json"), (status = 404, description = "No such event")),
    security(("bearer" = ["audit:read"])))]
pub async fn read(
    State(state): State<AppState>,
    mut actor: Actor,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    actor.access = crate::audit_events::audit_access(&headers)?;
    let missing = || FhirError::new(404, "not-found", format!("no AuditEvent/{id}"));
    let event_id = Uuid::parse_str(&id).map_err(|_| missing())?;
    let e = state
        .services
        .store
        .event_by_id(event_id)
        .await
        .map_err(ApiError::from)?
        .filter(|e| e.tenant_id == actor.ctx.tenant)
        .ok_or_else(missing)?;
    let q = EventQuery {
        stream_id: Some(e.stream_id),
        after: Some(e.seq - 1),
        limit: 1,
        ..Default::default()
    };
    let items = salus_domain::audit::page(&state.services, &actor.ctx, &q).await?;
    let item = items
        .into_iter()
        .find(|i| i.event.event_id == event_id)
        .ok_or_else(missing)?;
    crate::audit_events::log_items(&state, &actor, std::slice::from_ref(&item)).await?;
    let body = to_fhir(&item);
    Ok(resource_response(
        StatusCode::OK,
        &body,
        1,
        item.event.recorded_at,
        None,
    ))
}

/// A `date` value as recorded-at bounds (`from` inclusive, `to` exclusive).
fn date_bounds(value: &str, q: &mut EventQuery) -> Result<(), FhirError> {
    let (prefix, date) = match value.get(..2) {
        Some(p) if p.bytes().all(|b| b.is_ascii_alphabetic()) => (p, &value[2..]),
        _ => ("eq", value),
    };
    let (low, high) = salus_fhir::index::date_range(date).ok_or_else(|| {
        FhirError::new(
            400,
            "invalid",
            format!("date '{value}' is not a date or date-time"),
        )
    })?;
    let later = |a: Option<DateTime<Utc>>, b| Some(a.map_or(b, |a: DateTime<Utc>| a.max(b)));
    let sooner = |a: Option<DateTime<Utc>>, b| Some(a.map_or(b, |a: DateTime<Utc>| a.min(b)));
    match prefix {
        "eq" => {
            q.from = later(q.from, low);
            q.to = sooner(q.to, high);
        }
        "ge" => q.from = later(q.from, low),
        "gt" => q.from = later(q.from, high),
        "lt" => q.to = sooner(q.to, low),
        "le" => q.to = sooner(q.to, high),
        other => {
            return Err(FhirError::new(
                400,
                "not-supported",
                format!(
                    "the date prefix '{other}' is not supported here; use eq, gt, ge, lt or le"
                ),
            ));
        }
    }
    Ok(())
}

/// The Salus id in a reference or a bare id (`Patient/1` or `1`).
fn ref_id(value: &str, want: Option<&str>) -> Option<Uuid> {
    let id = match value.split_once('/') {
        Some((t, id)) if want.is_none_or(|w| w == t) => id,
        Some(_) => return None,
        None => value,
    };
    Uuid::parse_str(id).ok()
}

/// Search the log's events as AuditEvents, oldest first.
#[utoipa::path(get, path = "/fhir/R4/AuditEvent", tag = "fhir",
    params(("date" = Option<String>, Query, description = "Recorded: a date with a prefix eq, gt, ge, lt, le"),
           ("patient" = Option<String>, Query, description = "Patient/<id>: its record and its clinical records"),
           ("entity" = Option<String>, Query, description = "Type/id of the record"),
           ("agent" = Option<String>, Query, description = "The user's id"),
           ("subtype" = Option<String>, Query, description = "An event type"),
           ("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)")),
    responses((status = 200, description = "A searchset Bundle", content_type = "application/fhir+json"), (status = 400, description = "A bad parameter")),
    security(("bearer" = ["audit:read"])))]
pub async fn search(
    State(state): State<AppState>,
    mut actor: Actor,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    actor.access = crate::audit_events::audit_access(&headers)?;
    let strict = prefers_strict(&headers);
    let mut q = EventQuery::default();
    let mut count = 50u32;
    let mut applied: Vec<(String, String)> = Vec::new();
    let mut ignored: Vec<String> = Vec::new();
    let mut nothing = false;
    for (k, v) in &pairs {
        let v = v.trim();
        let bad = |what: &str| FhirError::new(400, "invalid", format!("{k}: {what}"));
        match k.as_str() {
            "_count" => {
                count = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .map(|n| n.min(200))
                    .ok_or_else(|| bad("a whole number from 1"))?;
                continue;
            }
            "_cursor" => {
                q.after = Some(v.parse().map_err(|_| bad("not a cursor of this search"))?);
                continue;
            }
            "_format" => continue,
            "date" => date_bounds(v, &mut q)?,
            "subtype" => {
                let code = v.rsplit('|').next().unwrap_or(v);
                q.event_type = Some(code.to_owned());
            }
            "agent" => {
                let code = v.rsplit('|').next().unwrap_or(v);
                match ref_id(code, None) {
                    Some(u) => q.actor = Some(ActorId(u)),
                    None => nothing = true,
                }
            }
            "patient" => match ref_id(v, Some("Patient")) {
                Some(p) => {
                    q.streams = Some(
                        salus_domain::audit::patient_streams(&state.services, &actor.ctx, p)
                            .await?,
                    );
                }
                None => nothing = true,
            },
            "entity" => {
                let (t, id) = v
                    .split_once('/')
                    .ok_or_else(|| bad("a reference Type/id"))?;
                let stream = if t == "Patient" {
                    Uuid::parse_str(id).ok()
                } else if super::documents::is_document_type(t) {
                    super::documents::find(&state, &actor, t, id)
                        .await?
                        .map(|c| c.row.id)
                } else {
                    None
                };
                match stream {
                    Some(s) => q.stream_id = Some(s),
                    None => nothing = true,
                }
            }
            other => {
                let msg = format!("the search parameter '{other}' is not supported on AuditEvent");
                strict_or_ignore(strict, msg, &mut ignored)?;
                continue;
            }
        }
        applied.push((k.clone(), v.to_owned()));
    }
    let cursor = q.after;
    q.limit = count + 1;
    let mut items = if nothing {
        Vec::new()
    } else {
        salus_domain::audit::page(&state.services, &actor.ctx, &q).await?
    };
    let more = items.len() > count as usize;
    items.truncate(count as usize);
    crate::audit_events::log_items(&state, &actor, &items).await?;
    let base = base_url(&headers);
    let links = super::results::Links {
        base: &base,
        t: "AuditEvent",
        applied: &applied,
        count,
    };
    let mut link_list = vec![links.link("self", cursor.map(|c| format!("_cursor={c}")))];
    if more && let Some(last) = items.last() {
        link_list.push(links.link("next", Some(format!("_cursor={}", last.event.seq))));
    }
    let entries: Vec<Value> = items
        .iter()
        .map(|i| {
            json!({
                "fullUrl": format!("{base}/AuditEvent/{}", i.event.event_id),
                "resource": to_fhir(i),
                "search": {"mode": "match"},
            })
        })
        .collect();
    let bundle = super::results::searchset_bundle(&state, link_list, entries, None, &ignored);
    Ok(ok_json(&bundle))
}

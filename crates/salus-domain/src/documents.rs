//! FHIR resources that Salus keeps as documents: every R4 resource type without a Salus
//! module of its own (CarePlan, Goal, Immunization, …) is stored whole, versioned through
//! the event log like any aggregate, and searchable on every R4 search parameter of its
//! type.
//!
//! The domain does not read FHIR: a document's search rows come from an [`Indexer`] that
//! the FHIR layer registers at start ([`set_indexer`]); without one a document is found by
//! its type alone. Rows are named `Type.code` ([`row_param`]) so that each type's
//! parameters are indexed apart, plus one `_type` row.
//!
//! Lifecycle: stored (created or replaced whole) and deleted. A delete is a version of its
//! own (a tombstone: the resource is gone from reads and searches, its history stays); a
//! deleted resource may be stored again.

use crate::service::Projected;
use chrono::{DateTime, Utc};
use salus_kernel::{Aggregate, DomainError, domain_events};
use salus_store::SearchRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::OnceLock;
use uuid::Uuid;

/// Index rows of a resource: `(resource type, resource) → rows` named by parameter code.
pub type Indexer = fn(&str, &Value) -> Vec<SearchRow>;

static INDEXER: OnceLock<Indexer> = OnceLock::new();

/// Register how documents are indexed (once; later calls are ignored).
pub fn set_indexer(f: Indexer) {
    let _ = INDEXER.set(f);
}

/// The search-row parameter name of `code` on documents of `resource_type`.
pub fn row_param(resource_type: &str, code: &str) -> String {
    format!("{resource_type}.{code}")
}

/// `f` on the search rows of `resource_type` (see [`row_param`]): its parameter and the
/// ones whose rows also count.
pub fn row_filter(resource_type: &str, mut f: salus_store::Filter) -> salus_store::Filter {
    f.param = row_param(resource_type, &f.param);
    f.also = f.also.iter().map(|a| row_param(resource_type, a)).collect();
    f
}

/// The stream id of the document `resource_type/id` of `tenant` when the id was chosen by
/// a client (an update that creates): a name-based UUID (version 8, from SHA-256 of the
/// name), so that every tenant and every type has its own ids (stream ids are unique
/// across tenants).
pub fn client_stream_id(tenant: salus_kernel::TenantId, resource_type: &str, id: &str) -> Uuid {
    name_uuid(&format!("salus:fhir:{tenant}:{resource_type}/{id}"))
}

/// The stream id a client's id was given before [`client_stream_id`] named the tenant:
/// documents created then are still found by it (in their own tenant only, as every
/// read is).
pub fn legacy_client_stream_id(resource_type: &str, id: &str) -> Uuid {
    name_uuid(&format!("salus:fhir:{resource_type}/{id}"))
}

fn name_uuid(name: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FhirDocument {
    pub resource_type: String,
    /// The FHIR id (a server-minted UUID, or what a client chose on an update that created).
    pub id: String,
    /// The patient whose record it is part of (the Patient compartment), when Salus knows
    /// the patient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<Uuid>,
    /// The resource as stored: `meta.lastUpdated` set, without `meta.versionId` (the
    /// version is the stream's).
    pub resource: Value,
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, Clone)]
pub enum DocumentCommand {
    Store {
        resource_type: String,
        id: String,
        patient_id: Option<Uuid>,
        resource: Value,
        at: DateTime<Utc>,
    },
    Delete {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub resource_type: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<Uuid>,
    pub resource: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    pub at: DateTime<Utc>,
}

domain_events! {
    pub enum DocumentEvent {
        Created(Stored) = "fhir.resource.created",
        Updated(Stored) = "fhir.resource.updated",
        Deleted(Deleted) = "fhir.resource.deleted",
    }
}

/// `resource` with `meta.lastUpdated` at `at` and no `meta.versionId`.
fn stamped(resource: &Value, at: DateTime<Utc>) -> Value {
    let mut r = resource.clone();
    if let Some(obj) = r.as_object_mut() {
        let meta = obj
            .entry("meta")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(m) = meta.as_object_mut() {
            m.remove("versionId");
            m.insert(
                "lastUpdated".into(),
                Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            );
        }
    }
    r
}

/// Whether two stored forms say the same (ignoring when they were stored).
fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("meta").and_then(Value::as_object_mut) {
            m.remove("lastUpdated");
            m.remove("versionId");
            if m.is_empty()
                && let Some(o) = v.as_object_mut()
            {
                o.remove("meta");
            }
        }
        v
    };
    strip(a) == strip(b)
}

impl Aggregate for FhirDocument {
    const STREAM_TYPE: &'static str = "fhir_document";
    type Command = DocumentCommand;
    type Event = DocumentEvent;

    fn decide(
        state: Option<&Self>,
        command: &DocumentCommand,
    ) -> Result<Vec<DocumentEvent>, DomainError> {
        match (state, command) {
            (
                _,
                DocumentCommand::Store {
                    resource_type,
                    id,
                    patient_id,
                    resource,
                    at,
                },
            ) => {
                if resource.get("resourceType").and_then(Value::as_str)
                    != Some(resource_type.as_str())
                {
                    return Err(DomainError::invalid(
                        "resourceType",
                        format!("the resource must be a {resource_type}"),
                    ));
                }
                if let Some(s) = state {
                    if s.resource_type != *resource_type || s.id != *id {
                        return Err(DomainError::Conflict(format!(
                            "this stream holds {}/{}, not {resource_type}/{id}",
                            s.resource_type, s.id
                        )));
                    }
                    if !s.deleted && same_content(&s.resource, resource) {
                        return Ok(Vec::new());
                    }
                }
                let stored = Stored {
                    resource_type: resource_type.clone(),
                    id: id.clone(),
                    patient_id: *patient_id,
                    resource: stamped(resource, *at),
                };
                Ok(vec![match state {
                    None => DocumentEvent::Created(stored),
                    Some(_) => DocumentEvent::Updated(stored),
                }])
            }
            (None, DocumentCommand::Delete { .. }) => Err(DomainError::NotFound("resource".into())),
            (Some(s), DocumentCommand::Delete { .. }) if s.deleted => Ok(Vec::new()),
            (Some(_), DocumentCommand::Delete { at }) => {
                Ok(vec![DocumentEvent::Deleted(Deleted { at: *at })])
            }
        }
    }

    fn evolve(state: Option<Self>, event: &DocumentEvent) -> Option<Self> {
        match (state, event) {
            (_, DocumentEvent::Created(s) | DocumentEvent::Updated(s)) => Some(FhirDocument {
                resource_type: s.resource_type.clone(),
                id: s.id.clone(),
                patient_id: s.patient_id,
                resource: s.resource.clone(),
                deleted: false,
            }),
            (Some(mut d), DocumentEvent::Deleted(_)) => {
                d.deleted = true;
                Some(d)
            }
            (None, DocumentEvent::Deleted(_)) => None,
        }
    }

    fn decode_event(event_type: &str, payload: &Value) -> Result<DocumentEvent, serde_json::Error> {
        DocumentEvent::decode(event_type, payload)
    }
}

impl Projected for FhirDocument {
    const RESOURCE_TYPE: &'static str = "fhir_document";

    fn search_rows(&self) -> Vec<SearchRow> {
        if self.deleted {
            return Vec::new();
        }
        let mut rows: Vec<SearchRow> = INDEXER
            .get()
            .map(|index| index(&self.resource_type, &self.resource))
            .unwrap_or_default()
            .into_iter()
            .map(|mut r| {
                r.param = row_param(&self.resource_type, &r.param);
                r
            })
            .collect();
        rows.push(SearchRow::new("_type", self.resource_type.clone()));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store(id: &str, r: Value) -> DocumentCommand {
        DocumentCommand::Store {
            resource_type: "Goal".into(),
            id: id.into(),
            patient_id: None,
            resource: r,
            at: Utc::now(),
        }
    }

    fn fold(events: &[DocumentEvent]) -> Option<FhirDocument> {
        events.iter().fold(None, FhirDocument::evolve)
    }

    #[test]
    fn store_replace_delete_and_store_again() {
        let g = json!({"resourceType": "Goal", "id": "g", "lifecycleStatus": "active"});
        let e1 = FhirDocument::decide(None, &store("g", g.clone())).unwrap();
        assert!(matches!(e1[..], [DocumentEvent::Created(_)]));
        let s = fold(&e1).unwrap();
        assert!(s.resource["meta"]["lastUpdated"].is_string());
        assert!(
            FhirDocument::decide(Some(&s), &store("g", g.clone()))
                .unwrap()
                .is_empty(),
            "storing the same content again is no new version"
        );
        let d =
            FhirDocument::decide(Some(&s), &DocumentCommand::Delete { at: Utc::now() }).unwrap();
        let s = FhirDocument::evolve(Some(s), &d[0]).unwrap();
        assert!(s.deleted && s.search_rows().is_empty());
        assert!(
            FhirDocument::decide(Some(&s), &DocumentCommand::Delete { at: Utc::now() })
                .unwrap()
                .is_empty(),
            "deleting twice is one tombstone"
        );
        let again = FhirDocument::decide(Some(&s), &store("g", g)).unwrap();
        assert!(matches!(again[..], [DocumentEvent::Updated(_)]));
        assert!(!FhirDocument::evolve(Some(s), &again[0]).unwrap().deleted);
    }

    #[test]
    fn a_stream_keeps_its_type_and_id() {
        let g = json!({"resourceType": "Goal", "id": "g"});
        let s = fold(&FhirDocument::decide(None, &store("g", g.clone())).unwrap()).unwrap();
        assert!(FhirDocument::decide(Some(&s), &store("h", g)).is_err());
        let wrong = json!({"resourceType": "CarePlan"});
        assert!(FhirDocument::decide(None, &store("g", wrong)).is_err());
    }
}

//! Medical records and clinical notes (requirements/003 §2).
//!
//! A [`MedicalRecord`] is kept per patient and department (one per pair). It can be
//! soft-deleted (status `deleted`) only while it holds no notes. A [`ClinicalNote`] is
//! append-only: its text and the SHA-256 of that text are fixed when it is written; a
//! correction is a new note that `amends` the old one; the author can sign a note, after
//! which only amendments are possible. Every read re-computes the hash
//! ([`ClinicalNote::verify`]) so that altered text is never served.

use crate::service::Projected;
use chrono::{DateTime, Utc};
use salus_kernel::{Aggregate, DomainError, Hash32, domain_events};
use salus_store::{SearchRow, UniqueKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    Open,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MedicalRecord {
    pub id: Uuid,
    pub patient_id: Uuid,
    /// The department the record is kept in (active when the record was opened).
    pub department_id: Uuid,
    pub status: RecordStatus,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordInput {
    pub patient_id: Uuid,
    /// An active department of the tenant.
    pub department_id: Uuid,
}

#[derive(Debug, Clone)]
pub enum RecordCommand {
    Open {
        id: Uuid,
        input: RecordInput,
        patient_open: bool,
        /// The department exists in the tenant and is active.
        department_active: bool,
    },
    /// Soft delete; `has_notes` is gathered by the service.
    Delete { has_notes: bool },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deleted {}

domain_events! {
    pub enum RecordEvent {
        Opened(MedicalRecord) = "medical_record.opened",
        Deleted(Deleted) = "medical_record.deleted",
    }
}

pub const RECORD_KEY_SCOPE: &str = "medical_record.patient_department";

impl Aggregate for MedicalRecord {
    const STREAM_TYPE: &'static str = "medical_record";
    type Command = RecordCommand;
    type Event = RecordEvent;

    fn decide(
        state: Option<&Self>,
        command: &RecordCommand,
    ) -> Result<Vec<RecordEvent>, DomainError> {
        match (state, command) {
            (
                None,
                RecordCommand::Open {
                    id,
                    input,
                    patient_open,
                    department_active,
                },
            ) => {
                if !patient_open {
                    return Err(DomainError::invalid(
                        "patient_id",
                        format!(
                            "patient {} does not exist in this tenant or is retired",
                            input.patient_id
                        ),
                    ));
                }
                if !department_active {
                    return Err(crate::staff::place::unknown_department(
                        "department_id",
                        input.department_id,
                    ));
                }
                Ok(vec![RecordEvent::Opened(MedicalRecord {
                    id: *id,
                    patient_id: input.patient_id,
                    department_id: input.department_id,
                    status: RecordStatus::Open,
                })])
            }
            (Some(_), RecordCommand::Open { .. }) => {
                Err(DomainError::Rule("medical record already exists".into()))
            }
            (None, _) => Err(DomainError::NotFound("medical record".into())),
            (Some(r), RecordCommand::Delete { has_notes }) => {
                if r.status == RecordStatus::Deleted {
                    return Err(DomainError::IllegalTransition {
                        action: "delete".into(),
                        from: "deleted".into(),
                        allowed: "open".into(),
                    });
                }
                if *has_notes {
                    return Err(DomainError::Rule(
                        "a medical record with notes cannot be deleted".into(),
                    ));
                }
                Ok(vec![RecordEvent::Deleted(Deleted {})])
            }
        }
    }

    fn evolve(state: Option<Self>, event: &RecordEvent) -> Option<Self> {
        match (state, event) {
            (_, RecordEvent::Opened(r)) => Some(r.clone()),
            (Some(mut r), RecordEvent::Deleted(_)) => {
                r.status = RecordStatus::Deleted;
                Some(r)
            }
            (None, _) => None,
        }
    }

    fn decode_event(event_type: &str, payload: &Value) -> Result<RecordEvent, serde_json::Error> {
        RecordEvent::decode(event_type, payload)
    }
}

impl Projected for MedicalRecord {
    const RESOURCE_TYPE: &'static str = "medical_record";

    fn search_rows(&self) -> Vec<SearchRow> {
        vec![
            SearchRow::new("patient", self.patient_id.to_string()),
            SearchRow::new("department", self.department_id.to_string()),
            SearchRow::new(
                "status",
                if self.status == RecordStatus::Open {
                    "open"
                } else {
                    "deleted"
                },
            ),
        ]
    }

    fn unique_keys(&self) -> Vec<UniqueKey> {
        // Released on delete, so a department can get a fresh record.
        if self.status == RecordStatus::Deleted {
            return vec![];
        }
        vec![UniqueKey::new(
            RECORD_KEY_SCOPE,
            format!("{}|{}", self.patient_id, self.department_id),
        )]
    }
}

pub const NOTE_TYPES: &[&str] = &[
    "progress",
    "operative",
    "discharge",
    "admission",
    "consult",
    "procedure",
    "nursing",
    "other",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClinicalNote {
    pub id: Uuid,
    pub record_id: Uuid,
    pub patient_id: Uuid,
    pub note_type: String,
    pub author_id: Uuid,
    pub text: String,
    /// SHA-256 (hex) of `text` as written.
    pub content_sha256: String,
    /// The note this one amends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amends: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<DateTime<Utc>>,
    /// The department of the record (since schema version 2 of `clinical_note.written`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department_id: Option<Uuid>,
    /// FHIR elements Salus does not model, kept as sent with the note (a JSON object; since
    /// schema version 2). Fixed at write like the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
}

impl ClinicalNote {
    /// Whether the text still hashes to the stored digest.
    pub fn verify(&self) -> bool {
        Hash32::sha256(self.text.as_bytes()).to_hex() == self.content_sha256
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteInput {
    /// progress | operative | discharge | admission | consult | procedure | nursing | other
    pub note_type: String,
    pub text: String,
    /// The id of the note this one amends (same record).
    #[serde(default)]
    pub amends: Option<Uuid>,
    /// FHIR elements Salus does not model, kept with the note (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct NoteFacts {
    pub record: Option<MedicalRecord>,
    /// The amended note, when `amends` is given and it is in the same record.
    pub amended_in_record: bool,
    pub author_id: Uuid,
    /// The author signs the note as it is written, at this time (a note that arrives
    /// final, as a FHIR DocumentReference can).
    pub sign_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub enum NoteCommand {
    Write {
        id: Uuid,
        record_id: Uuid,
        input: NoteInput,
        facts: Box<NoteFacts>,
    },
    Sign {
        by: Uuid,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signed {
    pub at: DateTime<Utc>,
}

domain_events! {
    pub enum NoteEvent {
        Written(ClinicalNote) = "clinical_note.written" @ 2,
        Signed(Signed) = "clinical_note.signed",
    }
}

impl Aggregate for ClinicalNote {
    const STREAM_TYPE: &'static str = "clinical_note";
    type Command = NoteCommand;
    type Event = NoteEvent;

    fn decide(state: Option<&Self>, command: &NoteCommand) -> Result<Vec<NoteEvent>, DomainError> {
        match (state, command) {
            (
                None,
                NoteCommand::Write {
                    id,
                    record_id,
                    input,
                    facts,
                },
            ) => {
                let record = facts
                    .record
                    .as_ref()
                    .filter(|r| r.status == RecordStatus::Open)
                    .ok_or_else(|| {
                        DomainError::NotFound(format!("open medical record {record_id}"))
                    })?;
                if !NOTE_TYPES.contains(&input.note_type.trim()) {
                    return Err(DomainError::invalid(
                        "note_type",
                        format!(
                            "note_type '{}' is not one of {}",
                            input.note_type,
                            NOTE_TYPES.join(", ")
                        ),
                    ));
                }
                if input.text.trim().is_empty() || input.text.chars().count() > 200_000 {
                    return Err(DomainError::invalid(
                        "text",
                        "text must be 1-200,000 characters",
                    ));
                }
                if input.amends.is_some() && !facts.amended_in_record {
                    return Err(DomainError::invalid(
                        "amends",
                        "the amended note does not exist in this medical record",
                    ));
                }
                let mut events = vec![NoteEvent::Written(ClinicalNote {
                    id: *id,
                    record_id: *record_id,
                    patient_id: record.patient_id,
                    note_type: input.note_type.trim().to_owned(),
                    author_id: facts.author_id,
                    content_sha256: Hash32::sha256(input.text.as_bytes()).to_hex(),
                    text: input.text.clone(),
                    amends: input.amends,
                    signed_at: None,
                    department_id: Some(record.department_id),
                    fhir_elements: super::fhir_elements(input.fhir_elements.as_ref())?,
                })];
                if let Some(at) = facts.sign_at {
                    events.push(NoteEvent::Signed(Signed { at }));
                }
                Ok(events)
            }
            (Some(_), NoteCommand::Write { .. }) => {
                Err(DomainError::Rule("note already written".into()))
            }
            (None, _) => Err(DomainError::NotFound("clinical note".into())),
            (Some(n), NoteCommand::Sign { by, at }) => {
                if n.author_id != *by {
                    return Err(DomainError::Rule(
                        "only the note's author can sign it".into(),
                    ));
                }
                if n.signed_at.is_some() {
                    return Err(DomainError::IllegalTransition {
                        action: "sign".into(),
                        from: "signed".into(),
                        allowed: "unsigned".into(),
                    });
                }
                Ok(vec![NoteEvent::Signed(Signed { at: *at })])
            }
        }
    }

    fn evolve(state: Option<Self>, event: &NoteEvent) -> Option<Self> {
        match (state, event) {
            (_, NoteEvent::Written(n)) => Some(n.clone()),
            (Some(mut n), NoteEvent::Signed(s)) => {
                n.signed_at = Some(s.at);
                Some(n)
            }
            (None, _) => None,
        }
    }

    fn decode_event(event_type: &str, payload: &Value) -> Result<NoteEvent, serde_json::Error> {
        NoteEvent::decode(event_type, payload)
    }

    /// Version 2 of `clinical_note.written` added the optional `department_id` and
    /// `fhir_elements`: a version 1 payload reads as it is.
    fn upcast(event_type: &str, from: i32, payload: Value) -> Result<Value, String> {
        match (event_type, from) {
            ("clinical_note.written", 1) => Ok(payload),
            _ => Err(format!(
                "no upcaster from schema version {from} of '{event_type}'"
            )),
        }
    }
}

impl Projected for ClinicalNote {
    const RESOURCE_TYPE: &'static str = "clinical_note";

    fn full_text(&self) -> Option<String> {
        Some(self.text.clone())
    }

    fn search_rows(&self) -> Vec<SearchRow> {
        let mut rows = vec![
            SearchRow::new("record", self.record_id.to_string()),
            SearchRow::new("patient", self.patient_id.to_string()),
            SearchRow::new("note_type", self.note_type.clone()),
            SearchRow::new("author", self.author_id.to_string()),
        ];
        if let Some(a) = self.amends {
            rows.push(SearchRow::new("amends", a.to_string()));
        }
        rows.extend(super::fhir_view::rows(Self::STREAM_TYPE, self));
        rows
    }
}

/// Open a medical record for an open patient in an active department (one per patient and
/// department).
pub async fn open_record(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    input: RecordInput,
    idempotency: Option<crate::service::Idempotency<'_>>,
) -> Result<crate::service::Current<MedicalRecord>, crate::service::ServiceError> {
    let patient_open = super::patient_open(services, ctx, input.patient_id).await?;
    let department_active =
        crate::staff::place::department_active(services, ctx, Some(input.department_id)).await?;
    let id = Uuid::now_v7();
    services
        .create::<MedicalRecord, _>(
            ctx,
            id,
            move |_, _| {
                Ok(RecordCommand::Open {
                    id,
                    input,
                    patient_open,
                    department_active,
                })
            },
            idempotency,
        )
        .await
}

/// Whether any note was written in the record.
pub async fn record_has_notes(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    record_id: Uuid,
) -> Result<bool, crate::service::ServiceError> {
    let q = salus_store::SearchQuery {
        resource_type: ClinicalNote::RESOURCE_TYPE.into(),
        filters: vec![salus_store::Filter {
            also: Vec::new(),
            param: "record".into(),
            system: None,
            op: salus_store::FilterOp::Eq,
            value: record_id.to_string(),
        }],
        after: None,
        limit: 1,
        newest_first: false,
        order_by: None,
    };
    Ok(!services.store.search(ctx, &q).await?.is_empty())
}

/// Write a note in a record (an amendment names the note it amends, in the same record).
pub async fn write_note(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    record_id: Uuid,
    input: NoteInput,
    idempotency: Option<crate::service::Idempotency<'_>>,
) -> Result<crate::service::Current<ClinicalNote>, crate::service::ServiceError> {
    let record = services
        .load::<MedicalRecord>(ctx, record_id)
        .await?
        .map(|c| c.state);
    let amended_in_record = match input.amends {
        Some(a) => services
            .load::<ClinicalNote>(ctx, a)
            .await?
            .is_some_and(|n| n.state.record_id == record_id),
        None => false,
    };
    let facts = Box::new(NoteFacts {
        record,
        amended_in_record,
        author_id: ctx.actor.0,
        sign_at: None,
    });
    let id = Uuid::now_v7();
    services
        .create::<ClinicalNote, _>(
            ctx,
            id,
            move |_, _| {
                Ok(NoteCommand::Write {
                    id,
                    record_id,
                    input,
                    facts,
                })
            },
            idempotency,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_hashes_its_text_and_only_its_author_signs_once() {
        let record = MedicalRecord {
            id: Uuid::nil(),
            patient_id: Uuid::nil(),
            department_id: Uuid::nil(),
            status: RecordStatus::Open,
        };
        let author = Uuid::from_u128(7);
        let facts = Box::new(NoteFacts {
            record: Some(record),
            amended_in_record: false,
            author_id: author,
            sign_at: None,
        });
        let input = NoteInput {
            note_type: "progress".into(),
            text: "Stable. BP 120/80.".into(),
            amends: None,
            fhir_elements: None,
        };
        let evs = ClinicalNote::decide(
            None,
            &NoteCommand::Write {
                id: Uuid::nil(),
                record_id: Uuid::nil(),
                input,
                facts,
            },
        )
        .unwrap();
        let note = evs.iter().fold(None, ClinicalNote::evolve).unwrap();
        assert!(note.verify());
        let mut altered = note.clone();
        altered.text.push('!');
        assert!(!altered.verify());
        let at = Utc::now();
        assert!(
            ClinicalNote::decide(
                Some(&note),
                &NoteCommand::Sign {
                    by: Uuid::nil(),
                    at
                }
            )
            .is_err()
        );
        let signed =
            ClinicalNote::decide(Some(&note), &NoteCommand::Sign { by: author, at }).unwrap();
        let note = signed
            .iter()
            .fold(Some(note), ClinicalNote::evolve)
            .unwrap();
        assert!(matches!(
            ClinicalNote::decide(Some(&note), &NoteCommand::Sign { by: author, at }),
            Err(DomainError::IllegalTransition { .. })
        ));
    }
}

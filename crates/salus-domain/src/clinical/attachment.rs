//! Attachments of a medical record: the blob's hash, size and checked media type. The
//! content itself lives in the blob store; the event log records what was attached, by
//! whom, and its SHA-256, so that the bytes can be proven unchanged.

use crate::service::Projected;
use salus_kernel::{Aggregate, DomainError, domain_events};
use salus_store::SearchRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Media types an attachment may have, and the declared types accepted for each.
pub const ALLOWED: &[&str] = &[
    "application/pdf",
    "image/png",
    "image/jpeg",
    "image/gif",
    "text/plain",
    "application/dicom",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attachment {
    pub id: Uuid,
    pub record_id: Uuid,
    pub patient_id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    pub uploaded_by: Uuid,
    /// What a FHIR DocumentReference that brought the file said beyond the file (its type,
    /// date, author, …), kept as sent; none for an upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_elements: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct AttachFacts {
    pub record_open_for: Option<Uuid>,
    pub declared_type: String,
    pub sniffed_type: Option<String>,
    pub uploaded_by: Uuid,
}

#[derive(Debug, Clone)]
pub enum AttachmentCommand {
    Attach {
        id: Uuid,
        record_id: Uuid,
        filename: String,
        size: u64,
        sha256: String,
        /// See [`Attachment::fhir_elements`].
        fhir_elements: Option<Value>,
        facts: Box<AttachFacts>,
    },
}

domain_events! {
    pub enum AttachmentEvent {
        Added(Attachment) = "attachment.added",
    }
}

/// A file name: 1–255 characters, no path separators or control characters.
pub fn parse_filename(s: &str) -> Result<String, DomainError> {
    let t = s.trim();
    if t.is_empty()
        || t.chars().count() > 255
        || t.chars().any(|c| c.is_control() || c == '/' || c == '\\')
        || t == "."
        || t == ".."
    {
        return Err(DomainError::invalid(
            "filename",
            "filename must be 1-255 characters without '/', '\\\\' or control characters",
        ));
    }
    Ok(t.to_owned())
}

impl Aggregate for Attachment {
    const STREAM_TYPE: &'static str = "attachment";
    type Command = AttachmentCommand;
    type Event = AttachmentEvent;

    fn decide(
        state: Option<&Self>,
        command: &AttachmentCommand,
    ) -> Result<Vec<AttachmentEvent>, DomainError> {
        let AttachmentCommand::Attach {
            id,
            record_id,
            filename,
            size,
            sha256,
            fhir_elements,
            facts,
        } = command;
        if state.is_some() {
            return Err(DomainError::Rule("attachment already added".into()));
        }
        let patient_id = facts
            .record_open_for
            .ok_or_else(|| DomainError::NotFound(format!("open medical record {record_id}")))?;
        let declared = facts
            .declared_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !ALLOWED.contains(&declared.as_str()) {
            return Err(DomainError::invalid(
                "content_type",
                format!(
                    "content type '{declared}' is not accepted; accepted: {}",
                    ALLOWED.join(", ")
                ),
            ));
        }
        // DICOM files carry their magic at byte 128, which the sniffer does not read: trust
        // the declaration only for types the sniffer cannot see.
        let matches = match facts.sniffed_type.as_deref() {
            Some(s) => {
                s == declared || (declared == "application/dicom" && s == "application/dicom")
            }
            None => declared == "application/dicom",
        };
        if !matches {
            return Err(DomainError::invalid(
                "content_type",
                format!(
                    "the content is {} but was declared as {declared}",
                    facts
                        .sniffed_type
                        .as_deref()
                        .unwrap_or("of an unrecognised type")
                ),
            ));
        }
        Ok(vec![AttachmentEvent::Added(Attachment {
            id: *id,
            record_id: *record_id,
            patient_id,
            filename: parse_filename(filename)?,
            content_type: declared,
            size: *size,
            sha256: sha256.clone(),
            uploaded_by: facts.uploaded_by,
            fhir_elements: fhir_elements.clone(),
        })])
    }

    fn evolve(_state: Option<Self>, event: &AttachmentEvent) -> Option<Self> {
        match event {
            AttachmentEvent::Added(a) => Some(a.clone()),
        }
    }

    fn decode_event(
        event_type: &str,
        payload: &Value,
    ) -> Result<AttachmentEvent, serde_json::Error> {
        AttachmentEvent::decode(event_type, payload)
    }
}

impl Projected for Attachment {
    const RESOURCE_TYPE: &'static str = "attachment";

    fn search_rows(&self) -> Vec<SearchRow> {
        let mut rows = vec![
            SearchRow::new("record", self.record_id.to_string()),
            SearchRow::new("patient", self.patient_id.to_string()),
        ];
        rows.extend(super::fhir_view::rows(Self::STREAM_TYPE, self));
        rows
    }
}

/// Record an attachment whose bytes are already in the blob store.
pub async fn attach(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    record_id: Uuid,
    filename: String,
    blob: &salus_store::blobs::StoredBlob,
    declared_type: String,
) -> Result<crate::service::Current<Attachment>, crate::service::ServiceError> {
    use super::record::{MedicalRecord, RecordStatus};
    let record_open_for = services
        .load::<MedicalRecord>(ctx, record_id)
        .await?
        .filter(|r| r.state.status == RecordStatus::Open)
        .map(|r| r.state.patient_id);
    let facts = Box::new(AttachFacts {
        record_open_for,
        declared_type,
        sniffed_type: blob.sniffed.map(str::to_owned),
        uploaded_by: ctx.actor.0,
    });
    let (size, sha256) = (blob.size, blob.sha256.to_hex());
    let id = Uuid::now_v7();
    services
        .create::<Attachment, _>(
            ctx,
            id,
            move |_, _| {
                Ok(AttachmentCommand::Attach {
                    id,
                    record_id,
                    filename,
                    size,
                    sha256,
                    fhir_elements: None,
                    facts,
                })
            },
            None,
        )
        .await
}

//! FHIR DocumentReference: the clinical note (`/api/v1/medical-records/{id}/notes`,
//! `/api/v1/notes/{id}`), both ways; the mapping is `salus_fhir::note`. A create writes a
//! note in the patient's medical record of the `custodian` department (or the patient's
//! only open record when no custodian is named); a DocumentReference that arrives `final`
//! is signed by its writer as it is written. An update may only sign it; there is no
//! delete (a note is append-only). Every read checks the note's text against its SHA-256
//! and withholds a note that fails (a loud error and a metric). The attachments of
//! medical records read as DocumentReferences beside the notes ([`Mapped::ALSO`]), and a
//! DocumentReference holding a file (not a note's text) is created as one.

use super::rest::{self, Mapped, Pending};
use super::*;
use salus_domain::clinical::attachment::{AttachFacts, Attachment, AttachmentCommand};
use salus_domain::clinical::record::{
    ClinicalNote, MedicalRecord, NoteCommand, NoteFacts, NoteInput, RECORD_KEY_SCOPE, RecordStatus,
};
use salus_fhir::note as fnote;

impl Mapped for ClinicalNote {
    const FHIR_TYPE: &'static str = "DocumentReference";
    const READ: &'static str = "notes:read";
    const WRITE: &'static str = "notes:write";
    const DELETES: bool = false;
    const ALSO: Option<rest::DomainType> = Some(rest::DomainType::DocumentFile);

    fn creates_also(body: &Value) -> bool {
        fnote::holds_file(body)
    }

    fn render(&self, version: i64, updated: DateTime<Utc>) -> Value {
        fnote::to_fhir(self, Some((version, updated)))
    }

    fn path_of_field(field: &str) -> String {
        fnote::path_of_field(field)
    }

    fn intact(&self) -> bool {
        self.verify()
    }

    async fn create_command(
        state: &AppState,
        actor: &Actor,
        id: Uuid,
        body: &Value,
        pending: &Pending,
    ) -> Result<NoteCommand, FhirError> {
        let mut w = fnote::from_fhir(body).map_err(FhirError::invalid)?;
        w.settle(actor.ctx.actor.0, &serde_json::Map::new());
        let record = record_of(state, actor, w.patient_id, w.department_id, pending).await?;
        let amended_in_record = match w.amends {
            Some(a) => state
                .services
                .load::<ClinicalNote>(&actor.ctx, a)
                .await?
                .is_some_and(|n| n.state.record_id == record.id),
            None => false,
        };
        let now = state.services.now();
        Ok(NoteCommand::Write {
            id,
            record_id: record.id,
            input: NoteInput {
                note_type: w.note_type,
                text: w.text,
                amends: w.amends,
                fhir_elements: Some(Value::Object(w.kept)),
            },
            facts: Box::new(NoteFacts {
                record: Some(record),
                amended_in_record,
                author_id: actor.ctx.actor.0,
                sign_at: w.signed.then_some(now),
            }),
        })
    }

    async fn update_command(
        state: &AppState,
        actor: &Actor,
        current: &ClinicalNote,
        body: &Value,
        _pending: &Pending,
    ) -> Result<Option<NoteCommand>, FhirError> {
        let w = fnote::from_fhir(body).map_err(FhirError::invalid)?;
        let signs = fnote::update_signs(current, &w).map_err(FhirError::invalid)?;
        Ok(signs.then(|| NoteCommand::Sign {
            by: actor.ctx.actor.0,
            at: state.services.now(),
        }))
    }

    fn delete_command(_current: &ClinicalNote) -> Option<NoteCommand> {
        None
    }
}

/// An attachment of a medical record, read as a DocumentReference beside the notes (its
/// routes are the notes'). A DocumentReference holding a file (not a note's text) is
/// created as one; it never changes after.
impl Mapped for Attachment {
    const FHIR_TYPE: &'static str = "DocumentReference";
    const READ: &'static str = "attachments:read";
    const WRITE: &'static str = "attachments:write";
    const DELETES: bool = false;

    fn render(&self, version: i64, updated: DateTime<Utc>) -> Value {
        fnote::file_to_fhir(self, Some((version, updated)))
    }

    fn path_of_field(field: &str) -> String {
        match field {
            "content_type" => "DocumentReference.content[0].attachment.contentType".into(),
            "filename" => "DocumentReference.content[0].attachment.title".into(),
            other => fnote::path_of_field(other),
        }
    }

    /// The file goes to the blob store first (content-addressed: a write that then fails
    /// leaves only bytes no entry names), in the record a note would go in.
    async fn create_command(
        state: &AppState,
        actor: &Actor,
        id: Uuid,
        body: &Value,
        pending: &Pending,
    ) -> Result<AttachmentCommand, FhirError> {
        actor.require(Self::WRITE)?;
        let w = fnote::file_from_fhir(body).map_err(FhirError::invalid)?;
        let record = record_of(state, actor, w.patient_id, w.department_id, pending).await?;
        let data = bytes::Bytes::from(w.data);
        let blob = state
            .blobs
            .put(futures_util::stream::iter([Ok::<
                _,
                std::convert::Infallible,
            >(data)]))
            .await
            .map_err(|e| FhirError::from(crate::attachments::blob_error(state, e)))?;
        Ok(AttachmentCommand::Attach {
            id,
            record_id: record.id,
            filename: w.filename,
            size: blob.size,
            sha256: blob.sha256.to_hex(),
            fhir_elements: Some(Value::Object(w.kept)),
            facts: Box::new(AttachFacts {
                record_open_for: Some(record.patient_id),
                declared_type: w.content_type,
                sniffed_type: blob.sniffed.map(str::to_owned),
                uploaded_by: actor.ctx.actor.0,
            }),
        })
    }

    async fn update_command(
        _state: &AppState,
        _actor: &Actor,
        _current: &Attachment,
        _body: &Value,
        _pending: &Pending,
    ) -> Result<Option<AttachmentCommand>, FhirError> {
        Err(file_unchangeable())
    }

    fn delete_command(_current: &Attachment) -> Option<AttachmentCommand> {
        None
    }
}

fn file_unchangeable() -> FhirError {
    FhirError::new(
        422,
        "not-supported",
        "an attachment never changes: send a new DocumentReference (or upload through POST /api/v1/medical-records/{id}/attachments)",
    )
}

/// The open medical record a new note of `patient` goes in: the one of `department` when
/// named (opened with the note, in the same commit, when the patient has none there
/// yet), else the patient's only open record.
async fn record_of(
    state: &AppState,
    actor: &Actor,
    patient: Uuid,
    department: Option<Uuid>,
    pending: &Pending,
) -> Result<MedicalRecord, FhirError> {
    let unprocessable = |path: &str, msg: String| {
        FhirError::invalid(vec![
            salus_fhir::outcome::Issue::error("processing", msg).at(path),
        ])
    };
    let open = |r: &MedicalRecord| r.status == RecordStatus::Open && r.patient_id == patient;
    if let Some(d) = department {
        // Opened by an earlier entry of this transaction.
        let opened_here = pending
            .records
            .lock()
            .ok()
            .and_then(|m| m.get(&(patient, d)).cloned());
        if let Some(record) = opened_here {
            return Ok(record);
        }
        let key = format!("{patient}|{d}");
        let owner = state
            .services
            .store
            .unique_owner(&actor.ctx, RECORD_KEY_SCOPE, &key)
            .await
            .map_err(ApiError::internal)?;
        let record = match owner {
            Some(id) => state
                .services
                .load::<MedicalRecord>(&actor.ctx, id)
                .await?
                .map(|c| c.state),
            None => None,
        };
        return match record {
            Some(r) if open(&r) => Ok(r),
            Some(_) => Err(unprocessable(
                "DocumentReference.custodian",
                format!(
                    "Patient/{patient}'s medical record in Organization/{d} is deleted: a note cannot be written in it"
                ),
            )),
            None => open_with_note(state, actor, patient, d, pending).await,
        };
    }
    let q = salus_store::SearchQuery {
        resource_type: <MedicalRecord as salus_domain::service::Projected>::RESOURCE_TYPE.into(),
        filters: vec![
            salus_store::Filter {
                also: Vec::new(),
                param: "patient".into(),
                system: None,
                op: salus_store::FilterOp::Eq,
                value: patient.to_string(),
            },
            salus_store::Filter {
                also: Vec::new(),
                param: "status".into(),
                system: None,
                op: salus_store::FilterOp::Eq,
                value: "open".into(),
            },
        ],
        after: None,
        limit: 2,
        newest_first: false,
        order_by: None,
    };
    let mut found = state
        .services
        .search::<MedicalRecord>(&actor.ctx, &q)
        .await?;
    match found.len() {
        1 => Ok(found.remove(0).state),
        0 => Err(unprocessable(
            "DocumentReference.subject",
            format!(
                "Patient/{patient} has no open medical record: open one (POST /api/v1/medical-records)"
            ),
        )),
        _ => Err(unprocessable(
            "DocumentReference.custodian",
            format!(
                "Patient/{patient} has medical records in several departments: name one as custodian (Organization/<department id>)"
            ),
        )),
    }
}

/// Open the medical record of `patient` in `department` for a note: decided now, committed
/// with the note ([`Pending::take_opened`]).
async fn open_with_note(
    state: &AppState,
    actor: &Actor,
    patient: Uuid,
    department: Uuid,
    pending: &Pending,
) -> Result<MedicalRecord, FhirError> {
    let patient_open = pending.patient_open(state, actor, patient).await?;
    let department_active = pending.department_active(state, actor, department).await?;
    let id = Uuid::now_v7();
    let input = salus_domain::clinical::record::RecordInput {
        patient_id: patient,
        department_id: department,
    };
    let prepared = state
        .services
        .prepare_new::<MedicalRecord, _>(
            id,
            move |_, _| {
                Ok(salus_domain::clinical::record::RecordCommand::Open {
                    id,
                    input,
                    patient_open,
                    department_active,
                })
            },
            None,
        )
        .map_err(|e| {
            let mut e = FhirError::from(ApiError::from(e));
            for i in &mut e.issues {
                i.expression = Some("DocumentReference.custodian".into());
            }
            e
        })?;
    let record = prepared
        .state::<MedicalRecord>()
        .cloned()
        .ok_or_else(|| FhirError::from(ApiError::internal("the record was not opened")))?;
    if let Ok(mut m) = pending.records.lock() {
        m.insert((patient, department), record.clone());
    }
    if let Ok(mut o) = pending.opened.lock() {
        o.push(prepared);
    }
    Ok(record)
}

/// What this module serves of DocumentReference (its CapabilityStatement entry).
pub(super) fn capability() -> Value {
    rest::capability::<ClinicalNote>(
        "The DocumentReference is a Salus clinical note (also /api/v1/medical-records/{id}/notes and /api/v1/notes/{id}). The note keeps its text (the one content entry: a text/plain UTF-8 attachment with base64 data; size and hash, the SHA-1 of the data, computed on read; the text is checked against its SHA-256 on every read), type (the LOINC document codes of progress 11506-3, operative 11504-8, discharge 18842-5, admission 47039-3, consult 11488-4, procedure 28570-0, nursing 34746-8, other 34109-9), subject (Patient/<id>), custodian (Organization/<department id>: the department of the medical record, opened with the note when the patient has none there; a create without one uses the patient's only open record), docStatus (preliminary, final once its author signed), the note it amends (relatesTo appends or replaces DocumentReference/<id>), its writer (author and, once signed, authenticator, by identifier of system urn:salus:user, unless the resource names its own). Every other element is kept as sent. status is current (superseded when sent so). A note is append-only: an update may only sign it (docStatus final, by its author); amend it with a new DocumentReference. No delete. The attachments of medical records read as DocumentReferences too (by id, and in every search beside the notes: content type, size, file name and the download path /api/v1/attachments/{id}/content). A DocumentReference whose one content entry holds data of another media type than text/plain (PDF, PNG, JPEG, GIF, DICOM; the declared type must be what the bytes are) is written as such an attachment (needs attachments:write), in the record chosen as for a note: the file goes to the blob store, the attachment's title becomes the file name, and every other element is kept as sent, so it reads back as sent with the data given as its download path, size and SHA-1 hash. Attachments never change (an update is refused); they are also uploaded through /api/v1/medical-records/{id}/attachments.",
    )
}

/// The routes of FHIR DocumentReference.
pub mod document_reference {
    use super::super::*;
    use super::rest;
    use salus_domain::clinical::record::ClinicalNote;

    rest::mapped_routes!(
        patient ClinicalNote,
        read: "notes:read",
        write: "notes:write",
        type: "/fhir/R4/DocumentReference",
        search: "/fhir/R4/DocumentReference/_search",
        instance: "/fhir/R4/DocumentReference/{id}",
        history: "/fhir/R4/DocumentReference/{id}/_history",
        version: "/fhir/R4/DocumentReference/{id}/_history/{vid}",
    );
}

//! The interchange record of each kind: what one CSV row, JSON array element or NDJSON line
//! holds. Its JSON shape is the resource as the API shows it (so an export is a list of
//! API resources), plus the natural keys that let another tenant resolve references
//! (`patient_identifier`, `clinician_credential`, `department_code`). Export-only fields (`version`,
//! `created_at`, `updated_at`, `recorded_by`) are accepted on import and ignored.

use super::{Kind, RowError};
use crate::registry::patient::{IdentifierInput, NameInput};
use crate::registry::values::Address;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

/// One decoded row, of the kind being imported.
#[derive(Debug, Clone)]
pub enum Record {
    Patient(Box<PatientRecord>),
    Interaction(Box<InteractionRecord>),
    Encounter(Box<EncounterRecord>),
    Observation(Box<ObservationRecord>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeceasedRecord {
    pub date: String,
}

/// A patient. Natural key: its identifiers (`system|value`), else its `id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientRecord {
    #[serde(default)]
    pub id: Option<Uuid>,
    #[serde(default)]
    pub identifiers: Vec<IdentifierInput>,
    #[serde(default)]
    pub name: Vec<NameInput>,
    #[serde(default)]
    pub birth_date: Option<String>,
    #[serde(default)]
    pub gender: Option<String>,
    #[serde(default)]
    pub phones: Vec<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub address: Option<Address>,
    #[serde(default)]
    pub persona_profile_id: Option<Uuid>,
    #[serde(default)]
    pub shard_id: Option<Uuid>,
    /// registered (default) | active | suspended | retired
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub status_reason: Option<String>,
    #[serde(default)]
    pub deceased: Option<DeceasedRecord>,
    /// The surviving record (by its id in the file's tenant).
    #[serde(default)]
    pub merged_into: Option<Uuid>,
    /// What the FHIR API keeps beside the fields (see `PatientInput::fhir_elements`).
    #[serde(default)]
    pub fhir_elements: Option<Value>,
    #[serde(default)]
    pub version: Option<Value>,
    #[serde(default)]
    pub created_at: Option<Value>,
    #[serde(default)]
    pub updated_at: Option<Value>,
}

/// How a clinical entry names its patient: by id, or by an identifier `system|value`.
#[derive(Debug, Clone, Default)]
pub struct PatientRef {
    pub id: Option<Uuid>,
    pub identifier: Option<String>,
}

/// An interaction. Natural key: its `id`. An amended or withdrawn interaction is recorded
/// with the file's values and then amended or entered in error with its `status_reason`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractionRecord {
    #[serde(default)]
    pub id: Option<Uuid>,
    #[serde(default)]
    pub patient_id: Option<Uuid>,
    #[serde(default)]
    pub patient_identifier: Option<String>,
    pub kind: String,
    #[serde(default)]
    pub occurred_at: Option<String>,
    pub outcome: String,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub encounter_id: Option<Uuid>,
    /// final (default) | amended | entered_in_error, reached with the amend and
    /// enter-in-error commands, `status_reason` being their reason.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub status_reason: Option<String>,
    /// Export only: the importing user records the interaction.
    #[serde(default)]
    pub recorded_by: Option<Value>,
    #[serde(default)]
    pub version: Option<Value>,
    #[serde(default)]
    pub created_at: Option<Value>,
    #[serde(default)]
    pub updated_at: Option<Value>,
}

/// An encounter. Natural key: its `id`. The status is reached through the lifecycle, with
/// the start and end times of the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncounterRecord {
    #[serde(default)]
    pub id: Option<Uuid>,
    #[serde(default)]
    pub patient_id: Option<Uuid>,
    #[serde(default)]
    pub patient_identifier: Option<String>,
    #[serde(default)]
    pub clinician_id: Option<Uuid>,
    #[serde(default)]
    pub clinician_credential: Option<String>,
    #[serde(rename = "type")]
    pub encounter_type: String,
    #[serde(default)]
    pub department_id: Option<Uuid>,
    /// The department's code (its natural key), for another tenant.
    #[serde(default)]
    pub department_code: Option<String>,
    #[serde(default)]
    pub scheduled_for: Option<String>,
    /// scheduled (default) | in_progress | completed | archived | cancelled
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub end_time: Option<String>,
    #[serde(default)]
    pub cancel_reason: Option<String>,
    /// What the FHIR API keeps beside the fields (given to a new entry).
    #[serde(default)]
    pub fhir_elements: Option<Value>,
    #[serde(default)]
    pub version: Option<Value>,
    #[serde(default)]
    pub created_at: Option<Value>,
    #[serde(default)]
    pub updated_at: Option<Value>,
}

/// An observation. Natural key: its `id`. `amended` and `entered_in_error` are reached with
/// the amend and enter-in-error commands, `status_reason` being their reason.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservationRecord {
    #[serde(default)]
    pub id: Option<Uuid>,
    #[serde(default)]
    pub patient_id: Option<Uuid>,
    #[serde(default)]
    pub patient_identifier: Option<String>,
    #[serde(default)]
    pub encounter_id: Option<Uuid>,
    pub code: crate::clinical::observation::Coding,
    pub value: crate::clinical::observation::ObservationValue,
    /// preliminary | final (default) | amended | entered_in_error
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub effective_at: Option<String>,
    #[serde(default)]
    pub status_reason: Option<String>,
    /// What the FHIR API keeps beside the fields (given to a new entry).
    #[serde(default)]
    pub fhir_elements: Option<Value>,
    #[serde(default)]
    pub version: Option<Value>,
    #[serde(default)]
    pub created_at: Option<Value>,
    #[serde(default)]
    pub updated_at: Option<Value>,
}

impl InteractionRecord {
    pub fn patient(&self) -> PatientRef {
        PatientRef {
            id: self.patient_id,
            identifier: self.patient_identifier.clone(),
        }
    }
}

impl EncounterRecord {
    pub fn patient(&self) -> PatientRef {
        PatientRef {
            id: self.patient_id,
            identifier: self.patient_identifier.clone(),
        }
    }
}

impl ObservationRecord {
    pub fn patient(&self) -> PatientRef {
        PatientRef {
            id: self.patient_id,
            identifier: self.patient_identifier.clone(),
        }
    }
}

/// The field a serde message names (`missing field `kind``, `unknown field `x``).
fn serde_field(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let end = start + msg[start..].find('`')?;
    Some(msg[start..end].to_owned())
}

/// Decode one row (as its JSON form) into the record of `kind`.
pub fn decode(kind: Kind, row: u64, value: Value) -> Result<Record, RowError> {
    if !value.is_object() {
        return Err(RowError::new(
            row,
            None,
            "a record must be a JSON object".to_owned(),
        ));
    }
    let bad = |e: serde_json::Error| {
        let msg = e.to_string();
        let field = serde_field(&msg);
        RowError {
            row,
            field,
            reason: msg,
        }
    };
    Ok(match kind {
        Kind::Patients => Record::Patient(Box::new(serde_json::from_value(value).map_err(bad)?)),
        Kind::Interactions => {
            Record::Interaction(Box::new(serde_json::from_value(value).map_err(bad)?))
        }
        Kind::Encounters => {
            Record::Encounter(Box::new(serde_json::from_value(value).map_err(bad)?))
        }
        Kind::Observations => {
            Record::Observation(Box::new(serde_json::from_value(value).map_err(bad)?))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exported_resources_decode_and_unknown_fields_name_themselves() {
        let exported = json!({
            "id": "0190a5a8-0000-7000-8000-000000000001", "identifiers": [{"system": "urn:mrn", "value": "1"}],
            "name": [{"family": "Lovelace", "given": ["Ada"]}], "birth_date": "1815-12-10",
            "gender": "female", "phones": [], "email": null, "address": null,
            "persona_profile_id": null, "shard_id": null, "status": "active",
            "version": 2, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
        });
        let Record::Patient(p) = decode(Kind::Patients, 1, exported).unwrap() else {
            panic!("patient")
        };
        assert_eq!(p.status.as_deref(), Some("active"));
        let err = decode(
            Kind::Interactions,
            7,
            json!({"kind": "call", "outcome": "healthy", "colour": "red"}),
        )
        .unwrap_err();
        assert_eq!(err.row, 7);
        assert_eq!(err.field.as_deref(), Some("colour"));
        let err = decode(Kind::Interactions, 8, json!({"outcome": "healthy"})).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("kind"));
        assert!(decode(Kind::Encounters, 9, json!([1])).is_err());
    }
}

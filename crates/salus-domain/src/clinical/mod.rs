//! The clinical record: interactions with patients and the tenant's configurable outcomes
//! (requirements/004), encounters, observations (with UCUM units), procedures, conditions
//! and allergies, medical records, notes and attachments.

pub mod attachment;
pub mod consent;
pub mod encounter;
pub mod fhir_view;
pub mod interaction;
pub mod observation;
pub mod outcome;
pub mod procedure;
pub mod record;
pub mod statement;
pub mod ucum;

pub use interaction::{Interaction, InteractionCommand, InteractionKind, InteractionStatus};
pub use outcome::{Outcome, OutcomeCommand};

use crate::service::{ServiceError, Services};
use salus_kernel::TenantContext;
use uuid::Uuid;

/// Whether the patient exists in the tenant and its record is not retired: the fact every
/// clinical entry checks before it is written.
pub async fn patient_open(
    services: &Services,
    ctx: &TenantContext,
    patient_id: Uuid,
) -> Result<bool, ServiceError> {
    use crate::registry::{Patient, PatientStatus};
    Ok(services
        .load::<Patient>(ctx, patient_id)
        .await?
        .is_some_and(|p| p.state.status != PatientStatus::Retired))
}

/// Whether `encounter_id`, when given, names an encounter of `patient_id` (true when none).
pub async fn encounter_of_patient(
    services: &Services,
    ctx: &TenantContext,
    encounter_id: Option<Uuid>,
    patient_id: Uuid,
) -> Result<bool, ServiceError> {
    match encounter_id {
        None => Ok(true),
        Some(e) => Ok(services
            .load::<encounter::Encounter>(ctx, e)
            .await?
            .is_some_and(|enc| enc.state.patient_id == patient_id)),
    }
}

/// The unmodelled FHIR elements an entry keeps: a JSON object of at most 64 KiB, or
/// nothing (an empty object is nothing).
pub fn fhir_elements(
    v: Option<&serde_json::Value>,
) -> Result<Option<serde_json::Value>, salus_kernel::DomainError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Object(m)) if m.is_empty() => Ok(None),
        Some(o @ serde_json::Value::Object(_)) => {
            if o.to_string().len() > 64 * 1024 {
                return Err(salus_kernel::DomainError::invalid(
                    "fhir_elements",
                    "the FHIR elements kept with an entry are at most 64 KiB",
                ));
            }
            Ok(Some(o.clone()))
        }
        Some(_) => Err(salus_kernel::DomainError::invalid(
            "fhir_elements",
            "fhir_elements is a JSON object of FHIR elements",
        )),
    }
}

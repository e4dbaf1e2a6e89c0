//! FHIR Condition and AllergyIntolerance: the clinical Statement aggregate
//! (`Statement<ConditionKind>`, `Statement<AllergyKind>`), both ways; the mapping is
//! `salus_fhir::statement`. A FHIR update changes the clinical and verification statuses
//! and the unmodelled elements kept with the statement; the code, the patient, the onset,
//! the note, the category and the criticality cannot change (422 naming the element). A
//! delete enters it in error (verification status `entered-in-error`).

use super::rest::{self, Mapped, Pending};
use super::*;
use salus_domain::clinical::statement::{
    AllergyKind, ConditionKind, Statement, StatementCommand, StatementKind,
};
use salus_fhir::statement::{self as fhir_st, FhirKind};

/// The permissions of a statement kind's `/api/v1` twin.
pub(super) trait Permissions: FhirKind {
    const READ: &'static str;
    const WRITE: &'static str;
}

impl Permissions for ConditionKind {
    const READ: &'static str = "conditions:read";
    const WRITE: &'static str = "conditions:write";
}

impl Permissions for AllergyKind {
    const READ: &'static str = "allergies:read";
    const WRITE: &'static str = "allergies:write";
}

impl<K: Permissions> Mapped for Statement<K> {
    const FHIR_TYPE: &'static str = K::PROFILE.fhir_type;
    const READ: &'static str = <K as Permissions>::READ;
    const WRITE: &'static str = <K as Permissions>::WRITE;
    const DELETES: bool = true;

    fn render(&self, version: i64, updated: DateTime<Utc>) -> Value {
        fhir_st::to_fhir(self, Some((version, updated)))
    }

    fn path_of_field(field: &str) -> String {
        fhir_st::path_of_field::<K>(field)
    }

    async fn create_command(
        state: &AppState,
        actor: &Actor,
        id: Uuid,
        body: &Value,
        pending: &Pending,
    ) -> Result<StatementCommand, FhirError> {
        let w = fhir_st::from_fhir::<K>(body).map_err(FhirError::invalid)?;
        let patient_open = pending.patient_open(state, actor, w.patient_id).await?;
        Ok(StatementCommand::Record {
            id,
            input: Box::new(w.input()),
            now: state.services.now(),
            patient_open,
        })
    }

    async fn update_command(
        _state: &AppState,
        _actor: &Actor,
        current: &Statement<K>,
        body: &Value,
        _pending: &Pending,
    ) -> Result<Option<StatementCommand>, FhirError> {
        let w = fhir_st::from_fhir::<K>(body).map_err(FhirError::invalid)?;
        fhir_st::update_command(current, &w).map_err(FhirError::invalid)
    }

    fn delete_command(current: &Statement<K>) -> Option<StatementCommand> {
        let _ = current;
        Some(fhir_st::delete_command())
    }
}

/// The CapabilityStatement entry of a statement type.
fn capability_of<K: Permissions>(extra: &str) -> Value {
    let t = K::PROFILE.fhir_type;
    let api = if <K as StatementKind>::ALLERGY {
        "allergies"
    } else {
        "conditions"
    };
    let fixed = if <K as StatementKind>::ALLERGY {
        "the code, the patient, the onset, the note, the category and the criticality"
    } else {
        "the code, the patient, the onset and the note"
    };
    rest::capability::<Statement<K>>(&format!(
        "The {t} is Salus's {} statement (also /api/v1/{api}). The aggregate keeps clinicalStatus and verificationStatus (HL7 codes), code (its first coding; SNOMED CT check digits verified), {}, onsetDateTime (a whole day or an instant), the first note's text{extra}; every other element (another onset[x], a partial onset date, abatement, reaction, …) is kept as sent and read back. An update changes the statuses and those other elements; {fixed} cannot change (enter it in error and record a new one). Delete enters it in error (verificationStatus entered-in-error; it then shows no clinicalStatus).",
        K::NAME,
        fhir_st_patient::<K>(),
    ))
}

fn fhir_st_patient<K: FhirKind>() -> String {
    format!("{} (Patient/<id>)", K::PROFILE.patient)
}

/// What this module serves of Condition (its CapabilityStatement entry).
pub(super) fn condition_capability() -> Value {
    capability_of::<ConditionKind>("")
}

/// What this module serves of AllergyIntolerance (its CapabilityStatement entry).
pub(super) fn allergy_capability() -> Value {
    capability_of::<AllergyKind>(
        ", the first category and criticality (unable-to-assess as unable_to_assess)",
    )
}

/// The routes of FHIR Condition.
pub mod condition {
    use super::super::*;
    use super::rest;
    use salus_domain::clinical::statement::Condition;

    rest::mapped_routes!(
        patient Condition,
        read: "conditions:read",
        write: "conditions:write",
        type: "/fhir/R4/Condition",
        search: "/fhir/R4/Condition/_search",
        instance: "/fhir/R4/Condition/{id}",
        history: "/fhir/R4/Condition/{id}/_history",
        version: "/fhir/R4/Condition/{id}/_history/{vid}",
    );
}

/// The routes of FHIR AllergyIntolerance.
pub mod allergy {
    use super::super::*;
    use super::rest;
    use salus_domain::clinical::statement::Allergy;

    rest::mapped_routes!(
        patient Allergy,
        read: "allergies:read",
        write: "allergies:write",
        type: "/fhir/R4/AllergyIntolerance",
        search: "/fhir/R4/AllergyIntolerance/_search",
        instance: "/fhir/R4/AllergyIntolerance/{id}",
        history: "/fhir/R4/AllergyIntolerance/{id}/_history",
        version: "/fhir/R4/AllergyIntolerance/{id}/_history/{vid}",
    );
}

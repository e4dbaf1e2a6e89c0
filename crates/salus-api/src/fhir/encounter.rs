//! FHIR Encounter and Procedure: the clinical Encounter and Procedure aggregates, both
//! ways (the mappings are `salus_fhir::encounter` and `salus_fhir::procedure`), so what is
//! written through `/api/v1/encounters` or `/api/v1/procedures` reads through FHIR under
//! the same id and version, and back.
//!
//! An Encounter is created in the state it is in; an update moves it along the domain's
//! transition table (an illegal move is refused with the statuses allowed) and keeps the
//! elements Salus does not model; it is never deleted (405). A Procedure is recorded
//! completed; an update changes only the kept elements or enters it in error, as a delete
//! does.

use super::rest::{self, Mapped, Pending};
use super::*;
use salus_domain::clinical::encounter::{self, Encounter, EncounterCommand};
use salus_domain::clinical::procedure::{Procedure, ProcedureCommand, ProcedureFacts};
use salus_fhir::{encounter as fhir_enc, procedure as fhir_proc};

impl Mapped for Encounter {
    const FHIR_TYPE: &'static str = "Encounter";
    const READ: &'static str = "encounters:read";
    const WRITE: &'static str = "encounters:write";
    const DELETES: bool = false;

    fn render(&self, version: i64, updated: DateTime<Utc>) -> Value {
        fhir_enc::to_fhir(self, Some((version, updated)))
    }

    fn path_of_field(field: &str) -> String {
        fhir_enc::path_of_field(field)
    }

    async fn create_command(
        state: &AppState,
        actor: &Actor,
        id: Uuid,
        body: &Value,
        pending: &Pending,
    ) -> Result<EncounterCommand, FhirError> {
        let w = fhir_enc::from_fhir(body).map_err(FhirError::invalid)?;
        let (input, documented) = w.input();
        let mut facts = encounter::schedule_facts(&state.services, &actor.ctx, &input).await?;
        // What the same transaction creates counts as there.
        if pending.patients.contains(&input.patient_id) {
            facts.patient_open = true;
        }
        if pending.clinicians.contains(&input.clinician_id) {
            facts.clinician_active = true;
        }
        if input
            .department_id
            .is_some_and(|d| pending.departments.contains(&d))
        {
            facts.department_active = true;
        }
        Ok(EncounterCommand::Record {
            id,
            input,
            facts,
            state: documented,
            now: state.services.now(),
        })
    }

    async fn update_command(
        state: &AppState,
        _actor: &Actor,
        current: &Encounter,
        body: &Value,
        _pending: &Pending,
    ) -> Result<Option<EncounterCommand>, FhirError> {
        let w = fhir_enc::from_fhir(body).map_err(FhirError::invalid)?;
        fhir_enc::update_command(current, &w, state.services.now()).map_err(FhirError::invalid)
    }

    fn delete_command(current: &Encounter) -> Option<EncounterCommand> {
        let _ = current;
        None
    }
}

impl Mapped for Procedure {
    const FHIR_TYPE: &'static str = "Procedure";
    const READ: &'static str = "procedures:read";
    const WRITE: &'static str = "procedures:write";
    const DELETES: bool = true;

    fn render(&self, version: i64, updated: DateTime<Utc>) -> Value {
        fhir_proc::to_fhir(self, Some((version, updated)))
    }

    fn path_of_field(field: &str) -> String {
        fhir_proc::path_of_field(field)
    }

    async fn create_command(
        state: &AppState,
        actor: &Actor,
        id: Uuid,
        body: &Value,
        pending: &Pending,
    ) -> Result<ProcedureCommand, FhirError> {
        let w = fhir_proc::from_fhir(body).map_err(FhirError::invalid)?;
        if w.status != "completed" {
            return Err(FhirError::invalid(vec![
                Issue::error(
                    "business-rule",
                    "a procedure is recorded completed; entered-in-error is what an update or a delete makes of it",
                )
                .at("Procedure.status"),
            ]));
        }
        let patient_open = pending.patient_open(state, actor, w.patient_id).await?;
        let encounter_ok = pending
            .encounter_of_patient(state, actor, w.encounter_id, w.patient_id)
            .await?;
        let performer_known = match w.performer_id {
            None => true,
            Some(p) if pending.clinicians.contains(&p) => true,
            Some(p) => state
                .services
                .load::<salus_domain::staff::Clinician>(&actor.ctx, p)
                .await?
                .is_some(),
        };
        Ok(ProcedureCommand::Record {
            id,
            input: w.input(),
            facts: ProcedureFacts {
                now: state.services.now(),
                patient_open,
                encounter_ok,
                performer_known,
            },
        })
    }

    async fn update_command(
        _state: &AppState,
        _actor: &Actor,
        current: &Procedure,
        body: &Value,
        _pending: &Pending,
    ) -> Result<Option<ProcedureCommand>, FhirError> {
        let w = fhir_proc::from_fhir(body).map_err(FhirError::invalid)?;
        fhir_proc::update_command(current, &w).map_err(FhirError::invalid)
    }

    fn delete_command(current: &Procedure) -> Option<ProcedureCommand> {
        let _ = current;
        Some(fhir_proc::delete_command())
    }
}

/// What this module serves of Encounter (its CapabilityStatement entry).
pub(super) fn encounter_capability() -> Value {
    rest::capability::<Encounter>(
        "The Encounter aggregate (also /api/v1/encounters, same id and version). Kept: status (planned, in-progress, finished, cancelled; archived is finished with the extension urn:salus:fhir:extension:encounter-archived), class (v3 ActCode IMP, AMB, EMER, VR, HH), subject (Patient/<id>), the clinician (the first participant whose individual is Practitioner/<id> of a Salus clinician: required), serviceProvider (Organization/<id> of a Salus department), period (the planned start while planned, else the start; the end once finished), a cancellation's reason (extension urn:salus:fhir:extension:status-reason); every other element is kept as sent and read back. A create records the encounter in the state it is in; an update moves it along planned → in-progress → finished → archived or planned → cancelled (an illegal move is refused) and changes the other elements; the subject, clinician, class, department and a start or end already held cannot change. Encounters are never deleted.",
    )
}

/// What this module serves of Procedure (its CapabilityStatement entry).
pub(super) fn procedure_capability() -> Value {
    rest::capability::<Procedure>(
        "The Procedure aggregate (also /api/v1/procedures, same id and version). Kept: status (completed, entered-in-error), code (its first coding; SNOMED CT check digits verified), subject (Patient/<id>), encounter (Encounter/<id> of the patient's Salus encounter), the first performer's actor (Practitioner/<id> of a Salus clinician), performedDateTime or the start of performedPeriod, the text of outcome; every other element is kept as sent and read back. An update changes only those other elements, or enters it in error (the reason in extension urn:salus:fhir:extension:status-reason); delete enters it in error.",
    )
}

/// The routes of FHIR Encounter.
pub mod encounters {
    use super::super::*;
    use super::rest;
    use salus_domain::clinical::encounter::Encounter;

    rest::mapped_routes!(
        patient Encounter,
        read: "encounters:read",
        write: "encounters:write",
        type: "/fhir/R4/Encounter",
        search: "/fhir/R4/Encounter/_search",
        instance: "/fhir/R4/Encounter/{id}",
        history: "/fhir/R4/Encounter/{id}/_history",
        version: "/fhir/R4/Encounter/{id}/_history/{vid}",
    );
}

/// The routes of FHIR Procedure.
pub mod procedures {
    use super::super::*;
    use super::rest;
    use salus_domain::clinical::procedure::Procedure;

    rest::mapped_routes!(
        patient Procedure,
        read: "procedures:read",
        write: "procedures:write",
        type: "/fhir/R4/Procedure",
        search: "/fhir/R4/Procedure/_search",
        instance: "/fhir/R4/Procedure/{id}",
        history: "/fhir/R4/Procedure/{id}/_history",
        version: "/fhir/R4/Procedure/{id}/_history/{vid}",
    );
}

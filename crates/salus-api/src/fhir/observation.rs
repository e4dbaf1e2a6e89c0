//! FHIR Observation: the clinical Observation aggregate, both ways (the mapping is
//! `salus_fhir::observation`). A FHIR update amends (a new value, or new unmodelled
//! elements) or withdraws (`entered-in-error`); a delete enters it in error.

use super::rest::{self, Mapped, Pending};
use super::*;
use salus_domain::clinical::observation::{Observation, ObservationCommand, RecordFacts};
use salus_fhir::observation as fhir_obs;

impl Mapped for Observation {
    const FHIR_TYPE: &'static str = "Observation";
    const READ: &'static str = "observations:read";
    const WRITE: &'static str = "observations:write";
    const DELETES: bool = true;

    fn render(&self, version: i64, updated: DateTime<Utc>) -> Value {
        fhir_obs::to_fhir(self, Some((version, updated)))
    }

    fn path_of_field(field: &str) -> String {
        fhir_obs::path_of_field(field)
    }

    async fn create_command(
        state: &AppState,
        actor: &Actor,
        id: Uuid,
        body: &Value,
        pending: &Pending,
    ) -> Result<ObservationCommand, FhirError> {
        let w = fhir_obs::from_fhir(body).map_err(FhirError::invalid)?;
        if !matches!(w.status.as_str(), "preliminary" | "final") {
            return Err(FhirError::invalid(vec![
                Issue::error(
                    "business-rule",
                    "an observation is recorded preliminary or final; amended and entered-in-error are what an update makes of it",
                )
                .at("Observation.status"),
            ]));
        }
        let patient_open = pending.patient_open(state, actor, w.patient_id).await?;
        let encounter_known = encounter_known(state, actor, &w, pending).await?;
        Ok(ObservationCommand::Record {
            id,
            input: w.input(encounter_known),
            facts: RecordFacts {
                now: state.services.now(),
                patient_open,
                encounter_ok: true,
            },
        })
    }

    async fn update_command(
        state: &AppState,
        actor: &Actor,
        current: &Observation,
        body: &Value,
        pending: &Pending,
    ) -> Result<Option<ObservationCommand>, FhirError> {
        let w = fhir_obs::from_fhir(body).map_err(FhirError::invalid)?;
        let encounter_known = encounter_known(state, actor, &w, pending).await?;
        fhir_obs::update_command(current, &w, encounter_known).map_err(FhirError::invalid)
    }

    fn delete_command(current: &Observation) -> Option<ObservationCommand> {
        let _ = current;
        Some(ObservationCommand::EnterInError {
            reason: salus_fhir::datatypes::DEFAULT_REASON.to_owned(),
        })
    }
}

/// Whether the encounter the observation names is a Salus encounter of its patient, stored
/// or created by the same transaction (else the reference is kept as sent).
async fn encounter_known(
    state: &AppState,
    actor: &Actor,
    w: &fhir_obs::ObservationWrite,
    pending: &Pending,
) -> Result<bool, FhirError> {
    match w.encounter {
        None => Ok(false),
        Some(e) => {
            pending
                .encounter_of_patient(state, actor, Some(e), w.patient_id)
                .await
        }
    }
}

/// What this module serves of Observation (its CapabilityStatement entry).
pub(super) fn capability() -> Value {
    rest::capability::<Observation>(
        "The Observation aggregate (also /api/v1/observations). An update amends (new value) or withdraws (status entered-in-error); delete enters it in error. The reason is the extension urn:salus:fhir:extension:status-reason.",
    )
}

rest::mapped_routes!(
    patient Observation,
    read: "observations:read",
    write: "observations:write",
    type: "/fhir/R4/Observation",
    search: "/fhir/R4/Observation/_search",
    instance: "/fhir/R4/Observation/{id}",
    history: "/fhir/R4/Observation/{id}/_history",
    version: "/fhir/R4/Observation/{id}/_history/{vid}",
);

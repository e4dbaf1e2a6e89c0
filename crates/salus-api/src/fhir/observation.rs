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
        let encounter_known = encounter_known(state, actor, &w).await?;
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
        _pending: &Pending,
    ) -> Result<Option<ObservationCommand>, FhirError> {
        let w = fhir_obs::from_fhir(body).map_err(FhirError::invalid)?;
        let encounter_known = encounter_known(state, actor, &w).await?;
        fhir_obs::update_command(current, &w, encounter_known).map_err(FhirError::invalid)
    }

    fn delete_command(current: &Observation) -> Option<ObservationCommand> {
        let _ = current;
        Some(ObservationCommand::EnterInError {
            reason: salus_fhir::datatypes::DEFAULT_REASON.to_owned(),
        })
    }
}

/// Whether the encounter the observation names is a Salus encounter of its patient (else
/// the reference is kept as sent).
async fn encounter_known(
    state: &AppState,
    actor: &Actor,
    w: &fhir_obs::ObservationWrite,
) -> Result<bool, FhirError> {
    match w.encounter {
        None => Ok(false),
        Some(e) => Ok(salus_domain::clinical::encounter_of_patient(
            &state.services,
            &actor.ctx,
            Some(e),
            w.patient_id,
        )
        .await?),
    }
}

/// What this module serves of Observation (its CapabilityStatement entry).
pub(super) fn capability() -> Value {
    rest::capability::<Observation>(
        "The Observation aggregate (also /api/v1/observations). An update amends (new value) or withdraws (status entered-in-error); delete enters it in error. The reason is the extension urn:salus:fhir:extension:status-reason.",
    )
}

/// Read an Observation.
#[utoipa::path(get, path = "/fhir/R4/Observation/{id}", tag = "fhir",
    params(("id" = String, Path, description = "Observation id")),
    responses((status = 200, description = "The Observation", content_type = "application/fhir+json"), (status = 404, description = "No such observation (OperationOutcome)")),
    security(("bearer" = ["observations:read"])))]
pub async fn read(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    rest::read::<Observation>(&state, &actor, &id).await
}

/// Read an Observation as it stood at version `vid`.
#[utoipa::path(get, path = "/fhir/R4/Observation/{id}/_history/{vid}", tag = "fhir",
    params(("id" = String, Path, description = "Observation id"), ("vid" = String, Path, description = "Version id")),
    responses((status = 200, description = "The Observation at that version", content_type = "application/fhir+json"), (status = 404, description = "No such observation or version")),
    security(("bearer" = ["observations:read"])))]
pub async fn vread(
    State(state): State<AppState>,
    actor: Actor,
    Path((id, vid)): Path<(String, String)>,
) -> Result<Response, FhirError> {
    rest::vread::<Observation>(&state, &actor, &id, &vid).await
}

/// Every version of an Observation, newest first.
#[utoipa::path(get, path = "/fhir/R4/Observation/{id}/_history", tag = "fhir",
    params(("id" = String, Path, description = "Observation id")),
    responses((status = 200, description = "A history Bundle", content_type = "application/fhir+json"), (status = 404, description = "No such observation")),
    security(("bearer" = ["observations:read"])))]
pub async fn history(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    rest::history::<Observation>(&state, &actor, &headers, &id).await
}

/// Record an Observation; with `If-None-Exist`, only when none matches.
#[utoipa::path(post, path = "/fhir/R4/Observation", tag = "fhir",
    params(("If-None-Exist" = Option<String>, Header, description = "A search: create only when it matches nothing")),
    request_body(content = Object, content_type = "application/fhir+json"),
    responses((status = 201, description = "Created (Location, ETag)"), (status = 200, description = "If-None-Exist matched one"), (status = 412, description = "If-None-Exist matched more than one"), (status = 422, description = "Invalid, or not what Salus keeps (OperationOutcome naming the element)")),
    security(("bearer" = ["observations:write"])))]
pub async fn create(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    body: JsonBody<Value>,
) -> Result<Response, FhirError> {
    rest::create::<Observation>(&state, &actor, &headers, &body.value).await
}

/// Amend or withdraw an Observation. `If-Match: W/"n"` makes it conditional.
#[utoipa::path(put, path = "/fhir/R4/Observation/{id}", tag = "fhir",
    params(("id" = String, Path, description = "Observation id"), ("If-Match" = Option<String>, Header, description = "W/\"n\": update only version n")),
    request_body(content = Object, content_type = "application/fhir+json"),
    responses((status = 200, description = "Updated (ETag)"), (status = 404, description = "No such observation"), (status = 412, description = "Stale If-Match"), (status = 422, description = "A change the aggregate does not allow (OperationOutcome naming the element)")),
    security(("bearer" = ["observations:write"])))]
pub async fn update(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: JsonBody<Value>,
) -> Result<Response, FhirError> {
    rest::update::<Observation>(&state, &actor, &headers, &id, &body.value).await
}

/// Delete an Observation: it is entered in error (its history stays, reads show the status).
#[utoipa::path(delete, path = "/fhir/R4/Observation/{id}", tag = "fhir",
    params(("id" = String, Path, description = "Observation id"), ("If-Match" = Option<String>, Header, description = "W/\"n\": only version n")),
    responses((status = 204, description = "Entered in error"), (status = 404, description = "No such observation"), (status = 412, description = "Stale If-Match")),
    security(("bearer" = ["observations:write"])))]
pub async fn delete(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    rest::delete::<Observation>(&state, &actor, &headers, &id).await
}

/// Search Observations on every R4 search parameter of the type.
#[utoipa::path(get, path = "/fhir/R4/Observation", tag = "fhir",
    params(("patient_id" = Option<String>, Query, description = "Salus: confine to this patient (set for patient-context tokens)"), ("_count" = Option<u32>, Query, description = "Page size (1-200, default 50)"), ("Prefer" = Option<String>, Header, description = "handling=strict: unknown parameters are a 400")),
    responses((status = 200, description = "A searchset Bundle", content_type = "application/fhir+json"), (status = 400, description = "A parameter is malformed")),
    security(("bearer" = ["observations:read"])))]
pub async fn search(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, FhirError> {
    rest::search::<Observation>(&state, &actor, &headers, &pairs).await
}

/// Search Observations by POST (a form body).
#[utoipa::path(post, path = "/fhir/R4/Observation/_search", tag = "fhir",
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "A searchset Bundle", content_type = "application/fhir+json"), (status = 400, description = "A parameter is malformed")),
    security(("bearer" = ["observations:read"])))]
pub async fn search_post(
    State(state): State<AppState>,
    actor: Actor,
    headers: HeaderMap,
    Query(mut pairs): Query<Vec<(String, String)>>,
    body: axum::body::Bytes,
) -> Result<Response, FhirError> {
    pairs.extend(search_form(&headers, &body)?);
    rest::search::<Observation>(&state, &actor, &headers, &pairs).await
}

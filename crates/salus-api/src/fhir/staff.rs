//! FHIR Practitioner, Organization and Location: the staff Clinician, Department and
//! Location aggregates, both ways (the mapping is `salus_fhir::staff`). They are not
//! patient data: no patient confinement, and reads are not written to the data-access
//! log. A FHIR update is the aggregate's revision (one version); a delete deactivates.

use super::rest::{self, Mapped, Pending};
use super::*;
use salus_domain::staff::clinician::{Clinician, ClinicianCommand};
use salus_domain::staff::place::{
    Department, DepartmentInput, Location, LocationInput, PlaceCommand,
};
use salus_fhir::staff as fhir_staff;

impl Mapped for Clinician {
    const FHIR_TYPE: &'static str = "Practitioner";
    const READ: &'static str = "clinicians:read";
    const WRITE: &'static str = "clinicians:write";
    const DELETES: bool = true;

    fn render(&self, version: i64, updated: DateTime<Utc>) -> Value {
        fhir_staff::practitioner(self, Some((version, updated)))
    }

    fn path_of_field(field: &str) -> String {
        fhir_staff::practitioner_path(field)
    }

    async fn create_command(
        _state: &AppState,
        _actor: &Actor,
        id: Uuid,
        body: &Value,
        _pending: &Pending,
    ) -> Result<ClinicianCommand, FhirError> {
        let w = fhir_staff::practitioner_from_fhir(body).map_err(FhirError::invalid)?;
        Ok(w.register(id))
    }

    async fn update_command(
        _state: &AppState,
        _actor: &Actor,
        current: &Clinician,
        body: &Value,
        _pending: &Pending,
    ) -> Result<Option<ClinicianCommand>, FhirError> {
        let w = fhir_staff::practitioner_from_fhir(body).map_err(FhirError::invalid)?;
        Ok(fhir_staff::practitioner_update(current, &w))
    }

    fn delete_command(_current: &Clinician) -> Option<ClinicianCommand> {
        Some(fhir_staff::practitioner_delete())
    }
}

impl Mapped for Department {
    const FHIR_TYPE: &'static str = "Organization";
    const READ: &'static str = "places:read";
    const WRITE: &'static str = "places:write";
    const DELETES: bool = true;

    fn render(&self, version: i64, updated: DateTime<Utc>) -> Value {
        fhir_staff::organization(self, Some((version, updated)))
    }

    fn path_of_field(field: &str) -> String {
        fhir_staff::organization_path(field)
    }

    async fn create_command(
        _state: &AppState,
        _actor: &Actor,
        id: Uuid,
        body: &Value,
        _pending: &Pending,
    ) -> Result<PlaceCommand<DepartmentInput>, FhirError> {
        let w = fhir_staff::organization_from_fhir(body).map_err(FhirError::invalid)?;
        Ok(w.create(id))
    }

    async fn update_command(
        _state: &AppState,
        _actor: &Actor,
        current: &Department,
        body: &Value,
        _pending: &Pending,
    ) -> Result<Option<PlaceCommand<DepartmentInput>>, FhirError> {
        let w = fhir_staff::organization_from_fhir(body).map_err(FhirError::invalid)?;
        Ok(fhir_staff::organization_update(current, &w))
    }

    fn delete_command(_current: &Department) -> Option<PlaceCommand<DepartmentInput>> {
        Some(fhir_staff::place_delete())
    }
}

impl Mapped for Location {
    const FHIR_TYPE: &'static str = "Location";
    const READ: &'static str = "places:read";
    const WRITE: &'static str = "places:write";
    const DELETES: bool = true;

    fn render(&self, version: i64, updated: DateTime<Utc>) -> Value {
        fhir_staff::location(self, Some((version, updated)))
    }

    fn path_of_field(field: &str) -> String {
        fhir_staff::location_path(field)
    }

    async fn create_command(
        state: &AppState,
        actor: &Actor,
        id: Uuid,
        body: &Value,
        pending: &Pending,
    ) -> Result<PlaceCommand<LocationInput>, FhirError> {
        let body = with_logical_department(state, actor, body).await?;
        let w = fhir_staff::location_from_fhir(&body).map_err(FhirError::invalid)?;
        let active = pending
            .department_active(state, actor, w.department_id)
            .await?;
        Ok(w.create(id, active))
    }

    async fn update_command(
        state: &AppState,
        actor: &Actor,
        current: &Location,
        body: &Value,
        _pending: &Pending,
    ) -> Result<Option<PlaceCommand<LocationInput>>, FhirError> {
        let body = with_logical_department(state, actor, body).await?;
        let w = fhir_staff::location_from_fhir(&body).map_err(FhirError::invalid)?;
        fhir_staff::location_update(current, &w).map_err(FhirError::invalid)
    }

    fn delete_command(_current: &Location) -> Option<PlaceCommand<LocationInput>> {
        Some(fhir_staff::place_delete())
    }
}

/// A Location whose `managingOrganization` names its Organization by identifier only (a
/// logical reference, as Synthea writes them) gets the reference of the one Organization
/// with that identifier; the identifier stays beside it.
async fn with_logical_department<'a>(
    state: &AppState,
    actor: &Actor,
    body: &'a Value,
) -> Result<std::borrow::Cow<'a, Value>, FhirError> {
    use std::borrow::Cow;
    let Some(m) = body.get("managingOrganization") else {
        return Ok(Cow::Borrowed(body));
    };
    let text = |p: &str| m.pointer(p).and_then(Value::as_str);
    let (None, Some(system), Some(value)) = (
        m.get("reference"),
        text("/identifier/system"),
        text("/identifier/value"),
    ) else {
        return Ok(Cow::Borrowed(body));
    };
    let token = format!(
        "{system}|{}",
        value.replace('\\', "\\\\").replace(',', "\\,")
    );
    let found = rest::DomainType::Organization
        .refs(state, actor, &[("identifier".to_owned(), token)], 2)
        .await?;
    match found.as_slice() {
        [one] => {
            let mut b = body.clone();
            b["managingOrganization"]["reference"] = json!(one);
            Ok(Cow::Owned(b))
        }
        [] => Err(FhirError::new(
            422,
            "not-found",
            format!(
                "no Organization has the identifier {system}|{value} (Location.managingOrganization.identifier)"
            ),
        )),
        _ => Err(FhirError::new(
            422,
            "multiple-matches",
            format!(
                "more than one Organization has the identifier {system}|{value} (Location.managingOrganization.identifier)"
            ),
        )),
    }
}

const KEPT: &str = "Every other element (telecom, address, other identifiers, extensions, …) is kept as sent and read back; a status left out reads back left out while it stays active. An update is the aggregate's revision (one version); delete deactivates (the resource stays readable, its history too).";

/// What this module serves of Practitioner (its CapabilityStatement entry).
pub(super) fn practitioner_capability() -> Value {
    rest::capability::<Clinician>(&format!(
        "The Practitioner is a Salus clinician (also /api/v1/clinicians; not patient data). The aggregate keeps the identifier of system {} (the credential, unique), the first name's family and given, active (active | inactive), and the specialty and org unit as the valueString of the extensions {} and {}; only the family name is required: without a credential, specialty or org unit a new clinician gets the first identifier as system|value and unspecified, read back left out (an update that leaves them out keeps them). An update changes any of them. {KEPT}",
        fhir_staff::CREDENTIAL,
        fhir_staff::SPECIALTY,
        fhir_staff::ORG_UNIT,
    ))
}

/// What this module serves of Organization (its CapabilityStatement entry).
pub(super) fn organization_capability() -> Value {
    rest::capability::<Department>(&format!(
        "The Organization is a Salus department (also /api/v1/departments; not patient data). The aggregate keeps the identifier of system {} (the department's unique code, upper case; without one Salus makes ORG- and twelve hex digits, read back left out), name (required) and active. An update changes any of them. {KEPT}",
        fhir_staff::DEPARTMENT_CODE,
    ))
}

/// What this module serves of Location (its CapabilityStatement entry).
pub(super) fn location_capability() -> Value {
    rest::capability::<Location>(&format!(
        "The Location is a Salus location (also /api/v1/locations; not patient data). The aggregate keeps name and managingOrganization (Organization/<id> of an active department, or a reference by identifier to the one Organization with it; both required; the department cannot change), status (active | inactive; suspended is refused) and physicalType as the location's kind (a coding of {} — ward, room, bed, theatre, clinic, other — or of {} wa, ro, bd; none, or another, is kind other). An update changes the name, the status and the kind. {KEPT}",
        fhir_staff::LOCATION_KIND,
        fhir_staff::PHYSICAL_TYPE,
    ))
}

/// The routes of FHIR Practitioner.
pub mod practitioner {
    use super::super::*;
    use super::rest;
    use salus_domain::staff::clinician::Clinician;

    rest::mapped_routes!(
        shared Clinician,
        read: "clinicians:read",
        write: "clinicians:write",
        type: "/fhir/R4/Practitioner",
        search: "/fhir/R4/Practitioner/_search",
        instance: "/fhir/R4/Practitioner/{id}",
        history: "/fhir/R4/Practitioner/{id}/_history",
        version: "/fhir/R4/Practitioner/{id}/_history/{vid}",
    );
}

/// The routes of FHIR Organization.
pub mod organization {
    use super::super::*;
    use super::rest;
    use salus_domain::staff::place::Department;

    rest::mapped_routes!(
        shared Department,
        read: "places:read",
        write: "places:write",
        type: "/fhir/R4/Organization",
        search: "/fhir/R4/Organization/_search",
        instance: "/fhir/R4/Organization/{id}",
        history: "/fhir/R4/Organization/{id}/_history",
        version: "/fhir/R4/Organization/{id}/_history/{vid}",
    );
}

/// The routes of FHIR Location.
pub mod location {
    use super::super::*;
    use super::rest;
    use salus_domain::staff::place::Location;

    rest::mapped_routes!(
        shared Location,
        read: "places:read",
        write: "places:write",
        type: "/fhir/R4/Location",
        search: "/fhir/R4/Location/_search",
        instance: "/fhir/R4/Location/{id}",
        history: "/fhir/R4/Location/{id}/_history",
        version: "/fhir/R4/Location/{id}/_history/{vid}",
    );
}

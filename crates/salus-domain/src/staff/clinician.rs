//! The Clinician aggregate (requirements/000): a provider with a credential, a specialty
//! and an org unit, `active ⇄ inactive`. Encounters name an active clinician.
//!
//! A clinician keeps beside it the FHIR elements Salus does not model (`fhir_elements`:
//! a Practitioner's telecom, address, gender, qualification, …) as a FHIR client sent
//! them. A revision ([`ClinicianCommand::Revise`], what a FHIR update becomes) changes the
//! name, the credential, the specialty, the org unit, the status (through the same
//! `active ⇄ inactive` table as the actions) and those kept elements in one event.

use crate::registry::values::HumanName;
use crate::service::Projected;
use salus_kernel::text::fold;
use salus_kernel::{Aggregate, DomainError, domain_events};
use salus_store::{SearchRow, UniqueKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClinicianStatus {
    Active,
    Inactive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Clinician {
    pub id: Uuid,
    pub name: HumanName,
    /// Professional registration (e.g. a GMC or NPI number); unique per tenant.
    pub credential: String,
    pub specialty: String,
    pub org_unit: String,
    pub status: ClinicianStatus,
    /// The Salus user who is this clinician, if any: encounters naming the clinician give
    /// that user a care relationship with the patient (see [`crate::access::care`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    /// The FHIR elements of the Practitioner that Salus does not model, kept as a FHIR
    /// client sent them and given back with it (since schema version 2 of the events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClinicianInput {
    pub family: String,
    #[serde(default)]
    pub given: Vec<String>,
    pub credential: String,
    pub specialty: String,
    pub org_unit: String,
    /// The Salus user who is this clinician (at most one clinician per user).
    #[serde(default)]
    pub user_id: Option<Uuid>,
    /// FHIR elements Salus does not model, kept with the clinician (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
    /// Registered active unless `false` (a FHIR Practitioner sent with `active: false`).
    #[serde(default)]
    pub active: Option<bool>,
}

/// What a revision changes; `None`: unchanged (for `fhir_elements`, an empty object: none
/// any more).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClinicianRevision {
    pub family: Option<String>,
    pub given: Option<Vec<String>>,
    pub credential: Option<String>,
    pub specialty: Option<String>,
    pub org_unit: Option<String>,
    pub status: Option<ClinicianStatus>,
    pub fhir_elements: Option<Value>,
}

#[derive(Debug, Clone)]
pub enum ClinicianCommand {
    Register {
        id: Uuid,
        input: ClinicianInput,
    },
    /// `deactivate` or `reactivate`.
    Transition(String),
    /// Several changes as one event; no change at all is no event.
    Revise(ClinicianRevision),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSet {
    pub status: ClinicianStatus,
}

/// The clinician's revisable parts after a revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revised {
    pub name: HumanName,
    pub credential: String,
    pub specialty: String,
    pub org_unit: String,
    pub status: ClinicianStatus,
    /// The kept FHIR elements after the revision (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_elements: Option<Value>,
}

domain_events! {
    pub enum ClinicianEvent {
        Registered(Clinician) = "clinician.registered" @ 2,
        Deactivated(StatusSet) = "clinician.deactivated",
        Reactivated(StatusSet) = "clinician.reactivated",
        Revised(Revised) = "clinician.revised",
    }
}

pub const ACTIONS: &[&str] = &["deactivate", "reactivate"];
pub const CREDENTIAL_SCOPE: &str = "clinician.credential";
/// One clinician per Salus user.
pub const USER_SCOPE: &str = "clinician.user";

fn text(field: &str, s: &str) -> Result<String, DomainError> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > 200 || t.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            field,
            format!("{field} must be 1-200 printable characters"),
        ));
    }
    Ok(t.to_owned())
}

impl Aggregate for Clinician {
    const STREAM_TYPE: &'static str = "clinician";
    type Command = ClinicianCommand;
    type Event = ClinicianEvent;

    fn decide(
        state: Option<&Self>,
        command: &ClinicianCommand,
    ) -> Result<Vec<ClinicianEvent>, DomainError> {
        match (state, command) {
            (None, ClinicianCommand::Register { id, input }) => {
                Ok(vec![ClinicianEvent::Registered(Clinician {
                    id: *id,
                    name: HumanName::parse(&input.family, &input.given)?,
                    credential: text("credential", &input.credential)?,
                    specialty: text("specialty", &input.specialty)?,
                    org_unit: text("org_unit", &input.org_unit)?,
                    status: if input.active == Some(false) {
                        ClinicianStatus::Inactive
                    } else {
                        ClinicianStatus::Active
                    },
                    user_id: input.user_id,
                    fhir_elements: crate::clinical::fhir_elements(input.fhir_elements.as_ref())?,
                })])
            }
            (Some(_), ClinicianCommand::Register { .. }) => {
                Err(DomainError::Rule("clinician already registered".into()))
            }
            (None, _) => Err(DomainError::NotFound("clinician".into())),
            (Some(c), ClinicianCommand::Revise(r)) => Ok(revise(c, r)?.into_iter().collect()),
            (Some(c), ClinicianCommand::Transition(action)) => {
                let (from, to) = match action.as_str() {
                    "deactivate" => (ClinicianStatus::Active, ClinicianStatus::Inactive),
                    "reactivate" => (ClinicianStatus::Inactive, ClinicianStatus::Active),
                    other => {
                        return Err(DomainError::invalid(
                            "action",
                            format!(
                                "unknown action '{other}'; actions are: {}",
                                ACTIONS.join(", ")
                            ),
                        ));
                    }
                };
                if c.status != from {
                    return Err(DomainError::IllegalTransition {
                        action: action.clone(),
                        from: status_str(c.status).into(),
                        allowed: status_str(from).into(),
                    });
                }
                let set = StatusSet { status: to };
                Ok(vec![if to == ClinicianStatus::Inactive {
                    ClinicianEvent::Deactivated(set)
                } else {
                    ClinicianEvent::Reactivated(set)
                }])
            }
        }
    }

    fn evolve(state: Option<Self>, event: &ClinicianEvent) -> Option<Self> {
        match (state, event) {
            (_, ClinicianEvent::Registered(c)) => Some(c.clone()),
            (Some(mut c), ClinicianEvent::Deactivated(s) | ClinicianEvent::Reactivated(s)) => {
                c.status = s.status;
                Some(c)
            }
            (Some(mut c), ClinicianEvent::Revised(r)) => {
                c.name = r.name.clone();
                c.credential = r.credential.clone();
                c.specialty = r.specialty.clone();
                c.org_unit = r.org_unit.clone();
                c.status = r.status;
                c.fhir_elements = r.fhir_elements.clone();
                Some(c)
            }
            (None, _) => None,
        }
    }

    /// Version 2 of `clinician.registered` added the optional `fhir_elements`: a version 1
    /// payload is the same payload without it.
    fn upcast(event_type: &str, from: i32, payload: Value) -> Result<Value, String> {
        if from == 1 && event_type == "clinician.registered" {
            Ok(payload)
        } else {
            Err(format!(
                "no upcaster from schema version {from} of '{event_type}'"
            ))
        }
    }

    fn decode_event(
        event_type: &str,
        payload: &Value,
    ) -> Result<ClinicianEvent, serde_json::Error> {
        ClinicianEvent::decode(event_type, payload)
    }
}

/// The event a revision makes of `c`; `None`: it changes nothing. A status change is
/// checked against the same table as `deactivate` / `reactivate`.
fn revise(c: &Clinician, r: &ClinicianRevision) -> Result<Option<ClinicianEvent>, DomainError> {
    let name = match (&r.family, &r.given) {
        (None, None) => c.name.clone(),
        (family, given) => HumanName::parse(
            family.as_deref().unwrap_or(&c.name.family),
            given.as_deref().unwrap_or(&c.name.given),
        )?,
    };
    let field = |f: &str, new: &Option<String>, now: &str| match new {
        Some(v) => text(f, v),
        None => Ok(now.to_owned()),
    };
    let status = r.status.unwrap_or(c.status);
    let fhir_elements = match &r.fhir_elements {
        None => c.fhir_elements.clone(),
        Some(f) => crate::clinical::fhir_elements(Some(f))?,
    };
    let next = Revised {
        name,
        credential: field("credential", &r.credential, &c.credential)?,
        specialty: field("specialty", &r.specialty, &c.specialty)?,
        org_unit: field("org_unit", &r.org_unit, &c.org_unit)?,
        status,
        fhir_elements,
    };
    let now = Revised {
        name: c.name.clone(),
        credential: c.credential.clone(),
        specialty: c.specialty.clone(),
        org_unit: c.org_unit.clone(),
        status: c.status,
        fhir_elements: c.fhir_elements.clone(),
    };
    if next == now {
        return Ok(None);
    }
    if status != c.status {
        // The lifecycle's own check (the only two states: always one step).
        let action = if status == ClinicianStatus::Inactive {
            "deactivate"
        } else {
            "reactivate"
        };
        Clinician::decide(Some(c), &ClinicianCommand::Transition(action.into()))?;
    }
    Ok(Some(ClinicianEvent::Revised(next)))
}

pub fn status_str(s: ClinicianStatus) -> &'static str {
    match s {
        ClinicianStatus::Active => "active",
        ClinicianStatus::Inactive => "inactive",
    }
}

impl Projected for Clinician {
    const RESOURCE_TYPE: &'static str = "clinician";

    fn search_rows(&self) -> Vec<SearchRow> {
        let mut rows = vec![
            SearchRow::new("name", fold(&self.name.family)),
            SearchRow::new("specialty", fold(&self.specialty)),
            SearchRow::new("org_unit", fold(&self.org_unit)),
            SearchRow::new("status", status_str(self.status)),
        ];
        rows.extend(
            self.name
                .given
                .iter()
                .map(|g| SearchRow::new("name", fold(g))),
        );
        if let Some(u) = self.user_id {
            rows.push(SearchRow::new("user", u.to_string()));
        }
        rows.extend(crate::clinical::fhir_view::rows(Self::STREAM_TYPE, self));
        rows
    }

    fn unique_keys(&self) -> Vec<UniqueKey> {
        let mut keys = vec![UniqueKey::new(CREDENTIAL_SCOPE, self.credential.clone())];
        if let Some(u) = self.user_id {
            keys.push(UniqueKey::new(USER_SCOPE, u.to_string()));
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use salus_kernel::aggregate::DomainEvent;

    #[test]
    fn deactivate_twice_is_an_illegal_transition_and_events_round_trip() {
        let input = ClinicianInput {
            family: "House".into(),
            given: vec!["Gregory".into()],
            credential: "NPI-1".into(),
            specialty: "Diagnostics".into(),
            org_unit: "Internal medicine".into(),
            user_id: None,
            fhir_elements: None,
            active: None,
        };
        let evs = Clinician::decide(
            None,
            &ClinicianCommand::Register {
                id: Uuid::nil(),
                input,
            },
        )
        .unwrap();
        let c = evs.iter().fold(None, Clinician::evolve).unwrap();
        let off = Clinician::decide(Some(&c), &ClinicianCommand::Transition("deactivate".into()))
            .unwrap();
        let ne = off[0].to_new_event().unwrap();
        assert_eq!(
            Clinician::decode_event(&ne.event_type, &ne.payload).unwrap(),
            off[0]
        );
        let inactive = off.iter().fold(Some(c), Clinician::evolve).unwrap();
        assert!(matches!(
            Clinician::decide(
                Some(&inactive),
                &ClinicianCommand::Transition("deactivate".into())
            ),
            Err(DomainError::IllegalTransition { .. })
        ));
    }

    fn registered() -> Clinician {
        let input: ClinicianInput = serde_json::from_value(serde_json::json!({
            "family": "House", "given": ["Gregory"], "credential": "NPI-1",
            "specialty": "Diagnostics", "org_unit": "Internal medicine",
            "fhir_elements": {"gender": "male"},
        }))
        .unwrap();
        let evs = Clinician::decide(
            None,
            &ClinicianCommand::Register {
                id: Uuid::nil(),
                input,
            },
        )
        .unwrap();
        evs.iter().fold(None, Clinician::evolve).unwrap()
    }

    #[test]
    fn version_1_registrations_decode_without_kept_elements() {
        let mut c = registered();
        c.fhir_elements = None;
        let payload = serde_json::to_value(&c).unwrap();
        let e = Clinician::decode_stored("clinician.registered", 1, &payload).unwrap();
        assert_eq!(e, ClinicianEvent::Registered(c));
        assert!(Clinician::decode_stored("clinician.registered", 3, &payload).is_err());
    }

    #[test]
    fn a_revision_is_one_event_and_no_change_is_none() {
        let c = registered();
        let same = ClinicianRevision {
            family: Some("House".into()),
            status: Some(ClinicianStatus::Active),
            fhir_elements: Some(serde_json::json!({"gender": "male"})),
            ..Default::default()
        };
        assert!(
            Clinician::decide(Some(&c), &ClinicianCommand::Revise(same))
                .unwrap()
                .is_empty()
        );
        let change = ClinicianRevision {
            given: Some(vec!["Greg".into()]),
            specialty: Some("Nephrology".into()),
            status: Some(ClinicianStatus::Inactive),
            fhir_elements: Some(serde_json::json!({})),
            ..Default::default()
        };
        let e = Clinician::decide(Some(&c), &ClinicianCommand::Revise(change)).unwrap();
        assert_eq!(e.len(), 1);
        let ne = e[0].to_new_event().unwrap();
        assert_eq!(
            Clinician::decode_event(&ne.event_type, &ne.payload).unwrap(),
            e[0]
        );
        let after = Clinician::evolve(Some(c.clone()), &e[0]).unwrap();
        assert_eq!(after.status, ClinicianStatus::Inactive);
        assert_eq!(after.name.given, ["Greg"]);
        assert_eq!(after.specialty, "Nephrology");
        assert_eq!(after.fhir_elements, None);
        let bad = ClinicianRevision {
            credential: Some(" ".into()),
            ..Default::default()
        };
        assert!(matches!(
            Clinician::decide(Some(&c), &ClinicianCommand::Revise(bad)),
            Err(DomainError::Invalid { field: Some(f), .. }) if f == "credential"
        ));
    }
}

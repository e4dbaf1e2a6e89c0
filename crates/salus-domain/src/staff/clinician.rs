//! The Clinician aggregate (requirements/000): a provider with a credential, a specialty
//! and an org unit, `active ⇄ inactive`. Encounters name an active clinician.

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
}

#[derive(Debug, Clone)]
pub enum ClinicianCommand {
    Register {
        id: Uuid,
        input: ClinicianInput,
    },
    /// `deactivate` or `reactivate`.
    Transition(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSet {
    pub status: ClinicianStatus,
}

domain_events! {
    pub enum ClinicianEvent {
        Registered(Clinician) = "clinician.registered",
        Deactivated(StatusSet) = "clinician.deactivated",
        Reactivated(StatusSet) = "clinician.reactivated",
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
                    status: ClinicianStatus::Active,
                    user_id: input.user_id,
                })])
            }
            (Some(_), ClinicianCommand::Register { .. }) => {
                Err(DomainError::Rule("clinician already registered".into()))
            }
            (None, _) => Err(DomainError::NotFound("clinician".into())),
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
            (None, _) => None,
        }
    }

    fn decode_event(
        event_type: &str,
        payload: &Value,
    ) -> Result<ClinicianEvent, serde_json::Error> {
        ClinicianEvent::decode(event_type, payload)
    }
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
}

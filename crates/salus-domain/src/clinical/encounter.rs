//! The Encounter aggregate (requirements/000): a clinical contact of a patient with a
//! clinician, `scheduled → in_progress → completed → archived`, or `scheduled → cancelled`.
//! Start and end times are set by the transitions; an encounter is never deleted.

use crate::service::Projected;
use chrono::{DateTime, Utc};
use salus_kernel::event::format_instant;
use salus_kernel::{Aggregate, DomainError, domain_events};
use salus_store::SearchRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EncounterType {
    Inpatient,
    Outpatient,
    Emergency,
    Virtual,
    Home,
}

impl EncounterType {
    pub const ALL: &'static [&'static str] =
        &["inpatient", "outpatient", "emergency", "virtual", "home"];

    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Ok(match s.trim() {
            "inpatient" => Self::Inpatient,
            "outpatient" => Self::Outpatient,
            "emergency" => Self::Emergency,
            "virtual" => Self::Virtual,
            "home" => Self::Home,
            other => {
                return Err(DomainError::invalid(
                    "type",
                    format!("type '{other}' is not one of {}", Self::ALL.join(", ")),
                ));
            }
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Inpatient => "inpatient",
            Self::Outpatient => "outpatient",
            Self::Emergency => "emergency",
            Self::Virtual => "virtual",
            Self::Home => "home",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EncounterStatus {
    Scheduled,
    InProgress,
    Completed,
    Archived,
    Cancelled,
}

impl EncounterStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Archived => "archived",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "scheduled" => Self::Scheduled,
            "in_progress" => Self::InProgress,
            "completed" => Self::Completed,
            "archived" => Self::Archived,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// (action, from, to).
pub const TRANSITIONS: &[(&str, EncounterStatus, EncounterStatus)] = &[
    (
        "start",
        EncounterStatus::Scheduled,
        EncounterStatus::InProgress,
    ),
    (
        "complete",
        EncounterStatus::InProgress,
        EncounterStatus::Completed,
    ),
    (
        "archive",
        EncounterStatus::Completed,
        EncounterStatus::Archived,
    ),
    (
        "cancel",
        EncounterStatus::Scheduled,
        EncounterStatus::Cancelled,
    ),
];

pub const ACTIONS: &[&str] = &["start", "complete", "archive", "cancel"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Encounter {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub clinician_id: Uuid,
    #[serde(rename = "type")]
    pub encounter_type: EncounterType,
    /// The department (an active one when the encounter was scheduled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<DateTime<Utc>>,
    pub status: EncounterStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EncounterInput {
    pub patient_id: Uuid,
    pub clinician_id: Uuid,
    /// inpatient | outpatient | emergency | virtual | home
    #[serde(rename = "type")]
    pub encounter_type: String,
    /// An active department of the tenant.
    #[serde(default)]
    pub department_id: Option<Uuid>,
    /// Planned start, RFC 3339 with a time zone.
    #[serde(default)]
    pub scheduled_for: Option<String>,
}

/// Facts gathered before scheduling.
#[derive(Debug, Clone)]
pub struct ScheduleFacts {
    pub patient_open: bool,
    pub clinician_active: bool,
    /// The department, when one is named, exists in the tenant and is active.
    pub department_active: bool,
}

#[derive(Debug, Clone)]
pub enum EncounterCommand {
    Schedule {
        id: Uuid,
        input: EncounterInput,
        facts: ScheduleFacts,
    },
    Transition {
        action: String,
        at: DateTime<Utc>,
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moved {
    pub to: EncounterStatus,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

domain_events! {
    pub enum EncounterEvent {
        Scheduled(Encounter) = "encounter.scheduled",
        Started(Moved) = "encounter.started",
        Completed(Moved) = "encounter.completed",
        Archived(Moved) = "encounter.archived",
        Cancelled(Moved) = "encounter.cancelled",
    }
}

impl Aggregate for Encounter {
    const STREAM_TYPE: &'static str = "encounter";
    type Command = EncounterCommand;
    type Event = EncounterEvent;

    fn decide(
        state: Option<&Self>,
        command: &EncounterCommand,
    ) -> Result<Vec<EncounterEvent>, DomainError> {
        match (state, command) {
            (None, EncounterCommand::Schedule { id, input, facts }) => {
                if !facts.patient_open {
                    return Err(DomainError::invalid(
                        "patient_id",
                        format!(
                            "patient {} does not exist in this tenant, is retired or deceased",
                            input.patient_id
                        ),
                    ));
                }
                if !facts.clinician_active {
                    return Err(DomainError::invalid(
                        "clinician_id",
                        format!(
                            "clinician {} does not exist in this tenant or is inactive",
                            input.clinician_id
                        ),
                    ));
                }
                if let Some(d) = input.department_id
                    && !facts.department_active
                {
                    return Err(crate::staff::place::unknown_department("department_id", d));
                }
                let scheduled_for = input
                    .scheduled_for
                    .as_deref()
                    .map(|t| super::interaction::parse_instant("scheduled_for", t))
                    .transpose()?;
                Ok(vec![EncounterEvent::Scheduled(Encounter {
                    id: *id,
                    patient_id: input.patient_id,
                    clinician_id: input.clinician_id,
                    encounter_type: EncounterType::parse(&input.encounter_type)?,
                    department_id: input.department_id,
                    scheduled_for,
                    status: EncounterStatus::Scheduled,
                    start_time: None,
                    end_time: None,
                    cancel_reason: None,
                })])
            }
            (Some(_), EncounterCommand::Schedule { .. }) => {
                Err(DomainError::Rule("encounter already exists".into()))
            }
            (None, _) => Err(DomainError::NotFound("encounter".into())),
            (Some(e), EncounterCommand::Transition { action, at, reason }) => {
                let Some((_, from, to)) = TRANSITIONS.iter().find(|(a, _, _)| a == action) else {
                    return Err(DomainError::invalid(
                        "action",
                        format!(
                            "unknown action '{action}'; actions are: {}",
                            ACTIONS.join(", ")
                        ),
                    ));
                };
                if e.status != *from {
                    return Err(DomainError::IllegalTransition {
                        action: action.clone(),
                        from: e.status.as_str().into(),
                        allowed: from.as_str().into(),
                    });
                }
                let moved = Moved {
                    to: *to,
                    at: *at,
                    reason: reason.clone(),
                };
                Ok(vec![match to {
                    EncounterStatus::InProgress => EncounterEvent::Started(moved),
                    EncounterStatus::Completed => EncounterEvent::Completed(moved),
                    EncounterStatus::Archived => EncounterEvent::Archived(moved),
                    _ => EncounterEvent::Cancelled(moved),
                }])
            }
        }
    }

    fn evolve(state: Option<Self>, event: &EncounterEvent) -> Option<Self> {
        match (state, event) {
            (_, EncounterEvent::Scheduled(e)) => Some(e.clone()),
            (Some(mut e), EncounterEvent::Started(m)) => {
                e.status = m.to;
                e.start_time = Some(m.at);
                Some(e)
            }
            (Some(mut e), EncounterEvent::Completed(m)) => {
                e.status = m.to;
                e.end_time = Some(m.at);
                Some(e)
            }
            (Some(mut e), EncounterEvent::Archived(m)) => {
                e.status = m.to;
                Some(e)
            }
            (Some(mut e), EncounterEvent::Cancelled(m)) => {
                e.status = m.to;
                e.cancel_reason = m.reason.clone();
                Some(e)
            }
            (None, _) => None,
        }
    }

    fn decode_event(
        event_type: &str,
        payload: &Value,
    ) -> Result<EncounterEvent, serde_json::Error> {
        EncounterEvent::decode(event_type, payload)
    }
}

impl Projected for Encounter {
    const RESOURCE_TYPE: &'static str = "encounter";

    fn search_rows(&self) -> Vec<SearchRow> {
        let mut rows = vec![
            SearchRow::new("patient", self.patient_id.to_string()),
            SearchRow::new("clinician", self.clinician_id.to_string()),
            SearchRow::new("status", self.status.as_str()),
            SearchRow::new("type", self.encounter_type.as_str()),
        ];
        if let Some(d) = self.department_id {
            rows.push(SearchRow::new("department", d.to_string()));
        }
        // The encounter's date: when it started, else when it is planned.
        if let Some(t) = self.start_time.or(self.scheduled_for) {
            rows.push(SearchRow::new("date", format_instant(&t)));
        }
        rows
    }
}

/// Schedule an encounter: check that the patient is open (exists, not retired, not
/// deceased), the clinician active and the department, when named, active; then run the
/// command.
pub async fn schedule(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    input: EncounterInput,
    idempotency: Option<crate::service::Idempotency<'_>>,
) -> Result<crate::service::Current<Encounter>, crate::service::ServiceError> {
    use crate::registry::{Patient, PatientStatus};
    use crate::staff::{Clinician, ClinicianStatus};
    let patient_open = services
        .load::<Patient>(ctx, input.patient_id)
        .await?
        .is_some_and(|p| p.state.status != PatientStatus::Retired && p.state.deceased.is_none());
    let clinician_active = services
        .load::<Clinician>(ctx, input.clinician_id)
        .await?
        .is_some_and(|c| c.state.status == ClinicianStatus::Active);
    let department_active =
        crate::staff::place::department_active(services, ctx, input.department_id).await?;
    let id = Uuid::now_v7();
    let facts = ScheduleFacts {
        patient_open,
        clinician_active,
        department_active,
    };
    services
        .create::<Encounter, _>(
            ctx,
            id,
            move |_, _| Ok(EncounterCommand::Schedule { id, input, facts }),
            idempotency,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scheduled() -> Encounter {
        let input = EncounterInput {
            patient_id: Uuid::nil(),
            clinician_id: Uuid::nil(),
            encounter_type: "outpatient".into(),
            department_id: None,
            scheduled_for: None,
        };
        let facts = ScheduleFacts {
            patient_open: true,
            clinician_active: true,
            department_active: true,
        };
        let evs = Encounter::decide(
            None,
            &EncounterCommand::Schedule {
                id: Uuid::nil(),
                input,
                facts,
            },
        )
        .unwrap();
        evs.iter().fold(None, Encounter::evolve).unwrap()
    }

    proptest! {
        /// Any sequence of actions only moves along the table; cancelled and archived are
        /// terminal; start and end times appear exactly when the transitions set them.
        #[test]
        fn encounters_only_move_along_the_table(actions in proptest::collection::vec(0usize..5, 0..12)) {
            let names = ["start", "complete", "archive", "cancel", "delete"];
            let mut e = scheduled();
            let at = Utc::now();
            for a in actions {
                let before = e.status;
                let cmd = EncounterCommand::Transition { action: names[a].into(), at, reason: None };
                match Encounter::decide(Some(&e), &cmd) {
                    Ok(evs) => {
                        let (_, from, to) = TRANSITIONS.iter().find(|t| t.0 == names[a]).unwrap();
                        prop_assert_eq!(before, *from);
                        e = evs.iter().fold(Some(e), Encounter::evolve).unwrap();
                        prop_assert_eq!(e.status, *to);
                    }
                    Err(_) => prop_assert!(names[a] == "delete" || TRANSITIONS.iter().find(|t| t.0 == names[a]).unwrap().1 != before),
                }
                prop_assert_eq!(e.start_time.is_some(), matches!(e.status, EncounterStatus::InProgress | EncounterStatus::Completed | EncounterStatus::Archived));
                prop_assert_eq!(e.end_time.is_some(), matches!(e.status, EncounterStatus::Completed | EncounterStatus::Archived));
            }
        }
    }

    #[test]
    fn an_inactive_or_unknown_department_is_refused_naming_the_field() {
        let department = Uuid::now_v7();
        let input = EncounterInput {
            patient_id: Uuid::nil(),
            clinician_id: Uuid::nil(),
            encounter_type: "outpatient".into(),
            department_id: Some(department),
            scheduled_for: None,
        };
        let cmd = |department_active| EncounterCommand::Schedule {
            id: Uuid::nil(),
            input: input.clone(),
            facts: ScheduleFacts {
                patient_open: true,
                clinician_active: true,
                department_active,
            },
        };
        match Encounter::decide(None, &cmd(false)) {
            Err(DomainError::Invalid { field, message }) => {
                assert_eq!(field.as_deref(), Some("department_id"));
                assert!(message.contains(&department.to_string()), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let evs = Encounter::decide(None, &cmd(true)).unwrap();
        let e = evs.iter().fold(None, Encounter::evolve).unwrap();
        assert_eq!(e.department_id, Some(department));
        assert!(
            e.search_rows()
                .contains(&SearchRow::new("department", department.to_string()))
        );
    }
}

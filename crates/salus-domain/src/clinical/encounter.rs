//! The Encounter aggregate (requirements/000): a clinical contact of a patient with a
//! clinician, `scheduled → in_progress → completed → archived`, or `scheduled → cancelled`.
//! Start and end times are set by the transitions; an encounter is never deleted.
//!
//! An encounter documented after the fact (a FHIR client's, an import's) is recorded in
//! the state it is in ([`EncounterCommand::Record`]: in progress since a time, completed
//! between two), and a FHIR update moves it along the same transition table
//! ([`EncounterCommand::Revise`]). Beside what Salus models the encounter keeps the FHIR
//! elements it does not (`fhir_elements`: type, reasonCode, location, hospitalization, …)
//! as a client sent them (since schema version 2 of the events).

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
    /// The FHIR elements of the resource that Salus does not model, kept as a FHIR client
    /// sent them and given back with it (since schema version 2 of the events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
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
    /// FHIR elements Salus does not model, kept with the encounter (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
}

/// The state an encounter documented after the fact is recorded in.
#[derive(Debug, Clone, PartialEq)]
pub struct Documented {
    /// In progress, completed, archived or cancelled (scheduled is a plain schedule).
    pub status: EncounterStatus,
    /// Since when it is in progress (in progress, completed, archived).
    pub start_time: Option<DateTime<Utc>>,
    /// When it ended (completed, archived).
    pub end_time: Option<DateTime<Utc>>,
    /// Why it was cancelled.
    pub reason: Option<String>,
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
    /// An encounter documented in the state it is in (one event, `encounter.recorded`).
    Record {
        id: Uuid,
        input: EncounterInput,
        facts: ScheduleFacts,
        state: Documented,
        now: DateTime<Utc>,
    },
    /// Move the encounter to `to` along the transition table (each step an event, the
    /// start at `start`, the end at `end`, else `now`) and keep `fhir_elements` (`None`:
    /// unchanged, an empty object: none any more), carried by the last step or, with no
    /// step, by an `encounter.revised` event; no change at all is no event.
    Revise {
        to: EncounterStatus,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        reason: Option<String>,
        fhir_elements: Option<Value>,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moved {
    pub to: EncounterStatus,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Since schema version 2: the kept FHIR elements after the move, when they changed
    /// with it (an empty object: none any more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_elements: Option<Value>,
}

/// The kept FHIR elements changed, nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revised {
    /// The kept elements after the change (an empty object: none any more).
    pub fhir_elements: Value,
}

domain_events! {
    /// Version 2 of the events added the optional `fhir_elements` (a version 1 payload is
    /// the same payload without it).
    pub enum EncounterEvent {
        Scheduled(Encounter) = "encounter.scheduled" @ 2,
        Started(Moved) = "encounter.started" @ 2,
        Completed(Moved) = "encounter.completed" @ 2,
        Archived(Moved) = "encounter.archived" @ 2,
        Cancelled(Moved) = "encounter.cancelled" @ 2,
        Recorded(Encounter) = "encounter.recorded",
        Revised(Revised) = "encounter.revised",
    }
}

/// The events whose version 1 is the same payload without `fhir_elements`.
const FHIR_ELEMENTS_SINCE_2: &[&str] = &[
    "encounter.scheduled",
    "encounter.started",
    "encounter.completed",
    "encounter.archived",
    "encounter.cancelled",
];

/// An instant more than five minutes ahead of `now` has not happened yet.
fn not_future(field: &str, at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), DomainError> {
    if at > now + chrono::Duration::minutes(5) {
        return Err(DomainError::invalid(
            field,
            format!("{field} is in the future"),
        ));
    }
    Ok(())
}

/// The actions that take an encounter from `from` to `to` (none when they are the same);
/// `None` when the table has no way.
fn path(from: EncounterStatus, to: EncounterStatus) -> Option<Vec<&'static str>> {
    let mut steps = Vec::new();
    let mut at = from;
    while at != to {
        // Each status has at most one way forward towards any other (the table is a tree).
        let next = TRANSITIONS
            .iter()
            .filter(|(_, f, _)| *f == at)
            .find(|(_, _, t)| *t == to || reaches(*t, to))?;
        steps.push(next.0);
        at = next.2;
    }
    Some(steps)
}

fn reaches(from: EncounterStatus, to: EncounterStatus) -> bool {
    from == to
        || TRANSITIONS
            .iter()
            .any(|(_, f, t)| *f == from && reaches(*t, to))
}

/// Check the schedule facts and build the encounter `input` describes.
fn scheduled(
    id: Uuid,
    input: &EncounterInput,
    facts: &ScheduleFacts,
) -> Result<Encounter, DomainError> {
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
    Ok(Encounter {
        id,
        patient_id: input.patient_id,
        clinician_id: input.clinician_id,
        encounter_type: EncounterType::parse(&input.encounter_type)?,
        department_id: input.department_id,
        scheduled_for,
        status: EncounterStatus::Scheduled,
        start_time: None,
        end_time: None,
        cancel_reason: None,
        fhir_elements: super::fhir_elements(input.fhir_elements.as_ref())?,
    })
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
                Ok(vec![EncounterEvent::Scheduled(scheduled(
                    *id, input, facts,
                )?)])
            }
            (
                None,
                EncounterCommand::Record {
                    id,
                    input,
                    facts,
                    state,
                    now,
                },
            ) => {
                let mut e = scheduled(*id, input, facts)?;
                if state.status == EncounterStatus::Scheduled {
                    return Ok(vec![EncounterEvent::Scheduled(e)]);
                }
                let started = matches!(
                    state.status,
                    EncounterStatus::InProgress
                        | EncounterStatus::Completed
                        | EncounterStatus::Archived
                );
                let ended = matches!(
                    state.status,
                    EncounterStatus::Completed | EncounterStatus::Archived
                );
                match (started, state.start_time) {
                    (true, None) => {
                        return Err(DomainError::invalid(
                            "start_time",
                            format!("a {} encounter has a start time", state.status.as_str()),
                        ));
                    }
                    (false, Some(_)) => {
                        return Err(DomainError::invalid(
                            "start_time",
                            "a cancelled encounter never started",
                        ));
                    }
                    (_, Some(t)) => not_future("start_time", t, *now)?,
                    _ => {}
                }
                match (ended, state.end_time) {
                    (true, None) => {
                        return Err(DomainError::invalid(
                            "end_time",
                            format!("a {} encounter has an end time", state.status.as_str()),
                        ));
                    }
                    (false, Some(_)) => {
                        return Err(DomainError::invalid(
                            "end_time",
                            format!("a {} encounter has not ended", state.status.as_str()),
                        ));
                    }
                    (_, Some(t)) => {
                        not_future("end_time", t, *now)?;
                        if state.start_time.is_some_and(|s| t < s) {
                            return Err(DomainError::invalid(
                                "end_time",
                                "an encounter ends after it starts",
                            ));
                        }
                    }
                    _ => {}
                }
                e.status = state.status;
                e.start_time = state.start_time;
                e.end_time = state.end_time;
                if state.status == EncounterStatus::Cancelled {
                    e.cancel_reason = state.reason.clone();
                }
                Ok(vec![EncounterEvent::Recorded(e)])
            }
            (Some(_), EncounterCommand::Schedule { .. } | EncounterCommand::Record { .. }) => {
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
                    fhir_elements: None,
                };
                Ok(vec![moved_event(moved)])
            }
            (
                Some(e),
                EncounterCommand::Revise {
                    to,
                    start,
                    end,
                    reason,
                    fhir_elements,
                    now,
                },
            ) => revise(
                e,
                *to,
                *start,
                *end,
                reason.as_deref(),
                fhir_elements.as_ref(),
                *now,
            ),
        }
    }

    fn evolve(state: Option<Self>, event: &EncounterEvent) -> Option<Self> {
        match (state, event) {
            (_, EncounterEvent::Scheduled(e)) => Some(e.clone()),
            (_, EncounterEvent::Recorded(e)) => Some(e.clone()),
            (Some(mut e), EncounterEvent::Started(m)) => {
                e.status = m.to;
                e.start_time = Some(m.at);
                keep(&mut e, m.fhir_elements.as_ref());
                Some(e)
            }
            (Some(mut e), EncounterEvent::Completed(m)) => {
                e.status = m.to;
                e.end_time = Some(m.at);
                keep(&mut e, m.fhir_elements.as_ref());
                Some(e)
            }
            (Some(mut e), EncounterEvent::Archived(m)) => {
                e.status = m.to;
                keep(&mut e, m.fhir_elements.as_ref());
                Some(e)
            }
            (Some(mut e), EncounterEvent::Cancelled(m)) => {
                e.status = m.to;
                e.cancel_reason = m.reason.clone();
                keep(&mut e, m.fhir_elements.as_ref());
                Some(e)
            }
            (Some(mut e), EncounterEvent::Revised(r)) => {
                keep(&mut e, Some(&r.fhir_elements));
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

    /// Version 2 added the optional `fhir_elements`: a version 1 payload is the same
    /// payload without it.
    fn upcast(event_type: &str, from: i32, payload: Value) -> Result<Value, String> {
        if from == 1 && FHIR_ELEMENTS_SINCE_2.contains(&event_type) {
            Ok(payload)
        } else {
            Err(format!(
                "no upcaster from schema version {from} of '{event_type}'"
            ))
        }
    }
}

/// The kept elements after a change that carries them (an empty object: none).
fn keep(e: &mut Encounter, kept: Option<&Value>) {
    if let Some(k) = kept {
        e.fhir_elements = Some(k.clone()).filter(|k| k.as_object().is_some_and(|m| !m.is_empty()));
    }
}

fn moved_event(moved: Moved) -> EncounterEvent {
    match moved.to {
        EncounterStatus::InProgress => EncounterEvent::Started(moved),
        EncounterStatus::Completed => EncounterEvent::Completed(moved),
        EncounterStatus::Archived => EncounterEvent::Archived(moved),
        _ => EncounterEvent::Cancelled(moved),
    }
}

/// The events of a revision ([`EncounterCommand::Revise`]).
fn revise(
    e: &Encounter,
    to: EncounterStatus,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    reason: Option<&str>,
    fhir_elements: Option<&Value>,
    now: DateTime<Utc>,
) -> Result<Vec<EncounterEvent>, DomainError> {
    let Some(steps) = path(e.status, to) else {
        let allowed: Vec<&str> = TRANSITIONS
            .iter()
            .filter(|(_, from, _)| *from == e.status)
            .map(|(_, _, t)| t.as_str())
            .collect();
        return Err(DomainError::IllegalTransition {
            action: format!("to {}", to.as_str()),
            from: e.status.as_str().into(),
            allowed: if allowed.is_empty() {
                "none (it is final)".into()
            } else {
                allowed.join(", ")
            },
        });
    };
    let kept = match fhir_elements {
        None => None,
        Some(f) => Some(
            super::fhir_elements(Some(f))?.unwrap_or_else(|| Value::Object(Default::default())),
        ),
    };
    let now_kept = e
        .fhir_elements
        .clone()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let kept = kept.filter(|k| *k != now_kept);
    let mut events = Vec::with_capacity(steps.len());
    let mut started = e.start_time;
    for action in &steps {
        let at = match *action {
            "start" => start.unwrap_or(now),
            "complete" => end.unwrap_or(now),
            _ => now,
        };
        let field = if *action == "start" {
            "start_time"
        } else {
            "end_time"
        };
        if matches!(*action, "start" | "complete") {
            not_future(field, at, now)?;
        }
        if *action == "complete" && started.is_some_and(|s| at < s) {
            return Err(DomainError::invalid(
                "end_time",
                "an encounter ends after it starts",
            ));
        }
        if *action == "start" {
            started = Some(at);
        }
        let Some((_, _, target)) = TRANSITIONS.iter().find(|(a, _, _)| a == action) else {
            continue;
        };
        events.push(Moved {
            to: *target,
            at,
            reason: (*action == "cancel")
                .then(|| reason.map(str::to_owned))
                .flatten(),
            fhir_elements: None,
        });
    }
    let mut out: Vec<EncounterEvent> = Vec::with_capacity(events.len() + 1);
    let last = events.len();
    for (i, mut m) in events.into_iter().enumerate() {
        if i + 1 == last {
            m.fhir_elements = kept.clone();
        }
        out.push(moved_event(m));
    }
    if last == 0
        && let Some(k) = kept
    {
        out.push(EncounterEvent::Revised(Revised { fhir_elements: k }));
    }
    Ok(out)
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
        rows.extend(super::fhir_view::rows(Self::STREAM_TYPE, self));
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
    let facts = schedule_facts(services, ctx, &input).await?;
    let id = Uuid::now_v7();
    services
        .create::<Encounter, _>(
            ctx,
            id,
            move |_, _| Ok(EncounterCommand::Schedule { id, input, facts }),
            idempotency,
        )
        .await
}

/// The facts a schedule (or a record) of `input` checks: the patient open (exists, not
/// retired, not deceased), the clinician active, the department, when named, active.
pub async fn schedule_facts(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    input: &EncounterInput,
) -> Result<ScheduleFacts, crate::service::ServiceError> {
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
    Ok(ScheduleFacts {
        patient_open,
        clinician_active,
        department_active,
    })
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
            fhir_elements: None,
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
            fhir_elements: None,
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

    #[test]
    fn version_1_events_read_as_ones_without_kept_elements() {
        let e = scheduled();
        let payload = serde_json::to_value(&e).unwrap();
        let ev = Encounter::decode_stored("encounter.scheduled", 1, &payload).unwrap();
        assert_eq!(ev, EncounterEvent::Scheduled(e));
        let moved = serde_json::json!({"to": "in_progress", "at": "2024-01-01T00:00:00Z"});
        assert!(matches!(
            Encounter::decode_stored("encounter.started", 1, &moved).unwrap(),
            EncounterEvent::Started(Moved {
                fhir_elements: None,
                ..
            })
        ));
        assert!(Encounter::decode_stored("encounter.started", 3, &moved).is_err());
    }

    #[test]
    fn a_revision_walks_the_table_and_carries_the_kept_elements_on_its_last_step() {
        let e = scheduled();
        let now = Utc::now();
        let kept = serde_json::json!({"reasonCode": [{"text": "x"}]});
        let cmd = |to, fhir_elements: Option<Value>| EncounterCommand::Revise {
            to,
            start: None,
            end: None,
            reason: None,
            fhir_elements,
            now,
        };
        let events = Encounter::decide(
            Some(&e),
            &cmd(EncounterStatus::Completed, Some(kept.clone())),
        )
        .unwrap();
        assert_eq!(events.len(), 2);
        assert!(matches!(
            &events[1],
            EncounterEvent::Completed(Moved {
                fhir_elements: Some(_),
                ..
            })
        ));
        let done = events
            .iter()
            .fold(Some(e.clone()), Encounter::evolve)
            .unwrap();
        assert_eq!(done.fhir_elements, Some(kept.clone()));
        // Kept elements alone: one encounter.revised; nothing at all: no event.
        let only = Encounter::decide(
            Some(&done),
            &cmd(EncounterStatus::Completed, Some(serde_json::json!({}))),
        )
        .unwrap();
        assert!(matches!(&only[..], [EncounterEvent::Revised(_)]));
        assert!(
            Encounter::decide(Some(&done), &cmd(EncounterStatus::Completed, Some(kept)))
                .unwrap()
                .is_empty()
        );
        // No way back, naming what is allowed.
        match Encounter::decide(Some(&done), &cmd(EncounterStatus::Scheduled, None)) {
            Err(DomainError::IllegalTransition { from, allowed, .. }) => {
                assert_eq!((from.as_str(), allowed.as_str()), ("completed", "archived"));
            }
            other => panic!("{other:?}"),
        }
        // A start in the future is refused.
        let future = EncounterCommand::Revise {
            to: EncounterStatus::InProgress,
            start: Some(now + chrono::Duration::hours(1)),
            end: None,
            reason: None,
            fhir_elements: None,
            now,
        };
        assert!(Encounter::decide(Some(&e), &future).is_err());
    }
}

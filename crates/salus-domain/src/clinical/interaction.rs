//! Interactions (requirements/004): a documented contact with a patient — a visit, a call,
//! a message, a home visit — with exactly one of the tenant's configured outcomes.
//! Recorded once and never edited in place: `amend` records corrected values with a reason
//! (the old ones stay in the history) and `enter-in-error` withdraws one that should never
//! have been recorded. Status: `final → amended → amended …`, and `final | amended →
//! entered_in_error`, which is terminal.

use crate::service::Projected;
use chrono::{DateTime, Duration, Utc};
use salus_kernel::event::format_instant;
use salus_kernel::{Aggregate, DomainError, domain_events};
use salus_store::SearchRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InteractionKind {
    Visit,
    Call,
    Message,
    HomeVisit,
}

impl InteractionKind {
    pub const ALL: &'static [&'static str] = &["visit", "call", "message", "home_visit"];

    pub fn parse(s: &str) -> Result<Self, DomainError> {
        match s.trim() {
            "visit" => Ok(Self::Visit),
            "call" => Ok(Self::Call),
            "message" => Ok(Self::Message),
            "home_visit" => Ok(Self::HomeVisit),
            other => Err(DomainError::invalid(
                "kind",
                format!("kind '{other}' is not one of {}", Self::ALL.join(", ")),
            )),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Visit => "visit",
            Self::Call => "call",
            Self::Message => "message",
            Self::HomeVisit => "home_visit",
        }
    }
}

/// Where an interaction stands: as recorded, corrected, or withdrawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InteractionStatus {
    /// As recorded (interactions recorded before statuses existed read as final).
    #[default]
    Final,
    Amended,
    EnteredInError,
}

impl InteractionStatus {
    pub const ALL: &'static [&'static str] = &["final", "amended", "entered_in_error"];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Final => "final",
            Self::Amended => "amended",
            Self::EnteredInError => "entered_in_error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "final" => Self::Final,
            "amended" => Self::Amended,
            "entered_in_error" => Self::EnteredInError,
            _ => return None,
        })
    }
}

/// The actions on a recorded interaction.
pub const ACTIONS: &[&str] = &["amend", "enter-in-error"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Interaction {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub kind: InteractionKind,
    /// When the contact happened (UTC).
    pub occurred_at: DateTime<Utc>,
    /// The outcome's code.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter_id: Option<Uuid>,
    /// The user who recorded it.
    pub recorded_by: Uuid,
    /// final | amended | entered_in_error
    #[serde(default)]
    pub status: InteractionStatus,
    /// Why it was last amended or entered in error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
}

/// What a client sends to record an interaction.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InteractionInput {
    pub patient_id: Uuid,
    /// visit | call | message | home_visit
    pub kind: String,
    /// RFC 3339 with a time zone; defaults to now.
    #[serde(default)]
    pub occurred_at: Option<String>,
    /// An active outcome code of the tenant.
    pub outcome: String,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub encounter_id: Option<Uuid>,
}

/// The facts the service gathered for a recording: checked here, not looked up.
#[derive(Debug, Clone)]
pub struct RecordContext {
    pub now: DateTime<Utc>,
    /// The patient exists in the tenant and is not retired.
    pub patient_open: bool,
    /// The tenant's active outcome codes.
    pub active_outcomes: Vec<String>,
    pub recorded_by: Uuid,
}

/// The corrected values of an amendment: a field left out keeps its value.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InteractionAmendment {
    /// visit | call | message | home_visit
    #[serde(default)]
    pub kind: Option<String>,
    /// RFC 3339 with a time zone.
    #[serde(default)]
    pub occurred_at: Option<String>,
    /// An active outcome code of the tenant (the current one may stay even if retired).
    #[serde(default)]
    pub outcome: Option<String>,
    /// The corrected notes; an empty string removes them.
    #[serde(default)]
    pub notes: Option<String>,
}

impl InteractionAmendment {
    fn is_empty(&self) -> bool {
        self.kind.is_none()
            && self.occurred_at.is_none()
            && self.outcome.is_none()
            && self.notes.is_none()
    }
}

/// The facts the service gathered for an amendment.
#[derive(Debug, Clone)]
pub struct AmendContext {
    pub now: DateTime<Utc>,
    /// The tenant's active outcome codes.
    pub active_outcomes: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum InteractionCommand {
    Record {
        id: Uuid,
        input: InteractionInput,
        facts: RecordContext,
    },
    Amend {
        changes: InteractionAmendment,
        reason: String,
        facts: AmendContext,
    },
    EnterInError {
        reason: String,
    },
}

/// The values an amendment leaves the interaction with, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Amended {
    pub kind: InteractionKind,
    pub occurred_at: DateTime<Utc>,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Withdrawn {
    pub reason: String,
}

domain_events! {
    pub enum InteractionEvent {
        Recorded(Interaction) = "interaction.recorded",
        Amended(Amended) = "interaction.amended",
        EnteredInError(Withdrawn) = "interaction.entered_in_error",
    }
}

/// An outcome code checked against the tenant's active ones (`keep`, the current outcome of
/// an amended interaction, stays allowed even when it has been retired since).
fn outcome_code(raw: &str, active: &[String], keep: Option<&str>) -> Result<String, DomainError> {
    let code = raw.trim().to_ascii_lowercase();
    if active.contains(&code) || keep == Some(code.as_str()) {
        return Ok(code);
    }
    Err(DomainError::invalid(
        "outcome",
        format!(
            "outcome '{raw}' is unknown or retired; valid outcomes are: {}",
            active.join(", ")
        ),
    ))
}

fn occurred(raw: Option<&str>, now: DateTime<Utc>) -> Result<DateTime<Utc>, DomainError> {
    let at = match raw {
        Some(t) => parse_instant("occurred_at", t)?,
        None => now,
    };
    if at > now + Duration::minutes(5) {
        return Err(DomainError::invalid(
            "occurred_at",
            "occurred_at is in the future",
        ));
    }
    Ok(at)
}

fn notes_text(raw: Option<&str>) -> Result<Option<String>, DomainError> {
    match raw.map(str::trim) {
        Some("") | None => Ok(None),
        Some(n) if n.chars().count() > 10_000 => Err(DomainError::invalid(
            "notes",
            "notes are longer than 10,000 characters",
        )),
        Some(n)
            if n.chars()
                .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') =>
        {
            Err(DomainError::invalid(
                "notes",
                "notes contain control characters",
            ))
        }
        Some(n) => Ok(Some(n.to_owned())),
    }
}

fn reason(s: &str) -> Result<String, DomainError> {
    let r = s.trim();
    if r.is_empty() || r.chars().count() > 1000 || r.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            "reason",
            "a reason (1-1000 printable characters) is required",
        ));
    }
    Ok(r.to_owned())
}

/// Parse an instant that carries its time zone (a bare local time is refused: it would be
/// ambiguous).
pub fn parse_instant(field: &str, s: &str) -> Result<DateTime<Utc>, DomainError> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| salus_kernel::clock::truncate_micros(t.with_timezone(&Utc)))
        .map_err(|_| {
            DomainError::invalid(
                field,
                format!("{field} '{s}' is not an RFC 3339 instant with a time zone, like 2026-01-31T09:30:00+01:00"),
            )
        })
}

impl Aggregate for Interaction {
    const STREAM_TYPE: &'static str = "interaction";
    type Command = InteractionCommand;
    type Event = InteractionEvent;

    fn decide(
        state: Option<&Self>,
        command: &InteractionCommand,
    ) -> Result<Vec<InteractionEvent>, DomainError> {
        let (id, input, facts) = match (state, command) {
            (None, InteractionCommand::Record { id, input, facts }) => (id, input, facts),
            (Some(_), InteractionCommand::Record { .. }) => {
                return Err(DomainError::Rule("interaction already recorded".into()));
            }
            (None, _) => return Err(DomainError::NotFound("interaction".into())),
            (Some(i), _) if i.status == InteractionStatus::EnteredInError => {
                return Err(DomainError::IllegalTransition {
                    action: match command {
                        InteractionCommand::Amend { .. } => "amend".into(),
                        _ => "enter-in-error".into(),
                    },
                    from: i.status.as_str().into(),
                    allowed: "final, amended".into(),
                });
            }
            (
                Some(i),
                InteractionCommand::Amend {
                    changes,
                    reason: r,
                    facts,
                },
            ) => {
                if changes.is_empty() {
                    return Err(DomainError::Invalid {
                        message: "amend needs at least one corrected field: kind, occurred_at, outcome or notes".into(),
                        field: None,
                    });
                }
                let kind = match &changes.kind {
                    Some(k) => InteractionKind::parse(k)?,
                    None => i.kind,
                };
                let occurred_at = match &changes.occurred_at {
                    Some(t) => occurred(Some(t), facts.now)?,
                    None => i.occurred_at,
                };
                let outcome = match &changes.outcome {
                    Some(o) => outcome_code(o, &facts.active_outcomes, Some(&i.outcome))?,
                    None => i.outcome.clone(),
                };
                let notes = match &changes.notes {
                    Some(n) => notes_text(Some(n))?,
                    None => i.notes.clone(),
                };
                return Ok(vec![InteractionEvent::Amended(Amended {
                    kind,
                    occurred_at,
                    outcome,
                    notes,
                    reason: reason(r)?,
                })]);
            }
            (Some(_), InteractionCommand::EnterInError { reason: r }) => {
                return Ok(vec![InteractionEvent::EnteredInError(Withdrawn {
                    reason: reason(r)?,
                })]);
            }
        };
        if !facts.patient_open {
            return Err(DomainError::invalid(
                "patient_id",
                format!(
                    "patient {} does not exist in this tenant or its record is retired",
                    input.patient_id
                ),
            ));
        }
        let kind = InteractionKind::parse(&input.kind)?;
        let code = outcome_code(&input.outcome, &facts.active_outcomes, None)?;
        let occurred_at = occurred(input.occurred_at.as_deref(), facts.now)?;
        let notes = notes_text(input.notes.as_deref())?;
        Ok(vec![InteractionEvent::Recorded(Interaction {
            id: *id,
            patient_id: input.patient_id,
            kind,
            occurred_at,
            outcome: code,
            notes,
            encounter_id: input.encounter_id,
            recorded_by: facts.recorded_by,
            status: InteractionStatus::Final,
            status_reason: None,
        })])
    }

    fn evolve(state: Option<Self>, event: &InteractionEvent) -> Option<Self> {
        match (state, event) {
            (_, InteractionEvent::Recorded(i)) => Some(i.clone()),
            (Some(mut i), InteractionEvent::Amended(a)) => {
                i.kind = a.kind;
                i.occurred_at = a.occurred_at;
                i.outcome = a.outcome.clone();
                i.notes = a.notes.clone();
                i.status = InteractionStatus::Amended;
                i.status_reason = Some(a.reason.clone());
                Some(i)
            }
            (Some(mut i), InteractionEvent::EnteredInError(w)) => {
                i.status = InteractionStatus::EnteredInError;
                i.status_reason = Some(w.reason.clone());
                Some(i)
            }
            (None, _) => None,
        }
    }

    fn decode_event(
        event_type: &str,
        payload: &Value,
    ) -> Result<InteractionEvent, serde_json::Error> {
        InteractionEvent::decode(event_type, payload)
    }
}

impl Projected for Interaction {
    const RESOURCE_TYPE: &'static str = "interaction";

    fn search_rows(&self) -> Vec<SearchRow> {
        vec![
            SearchRow::new("patient", self.patient_id.to_string()),
            SearchRow::new("kind", self.kind.as_str()),
            SearchRow::new("outcome", self.outcome.clone()),
            SearchRow::new("occurred_at", format_instant(&self.occurred_at)),
            SearchRow::new("status", self.status.as_str()),
        ]
    }
}

/// Record an interaction: gather the facts the decision needs (the patient is open, the
/// tenant's active outcomes) and run the command.
pub async fn record(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    input: InteractionInput,
    idempotency: Option<crate::service::Idempotency<'_>>,
) -> Result<crate::service::Current<Interaction>, crate::service::ServiceError> {
    let patient_open = super::patient_open(services, ctx, input.patient_id).await?;
    let active_outcomes = super::outcome::active_codes(services, ctx).await?;
    let id = Uuid::now_v7();
    let recorded_by = ctx.actor.0;
    services
        .create::<Interaction, _>(
            ctx,
            id,
            move |_, now| {
                Ok(InteractionCommand::Record {
                    id,
                    input,
                    facts: RecordContext {
                        now,
                        patient_open,
                        active_outcomes,
                        recorded_by,
                    },
                })
            },
            idempotency,
        )
        .await
}

/// The facts an amendment is decided on (the tenant's active outcomes), gathered now.
pub async fn amend_facts(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
) -> Result<AmendContext, crate::service::ServiceError> {
    Ok(AmendContext {
        now: services.now(),
        active_outcomes: super::outcome::active_codes(services, ctx).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> RecordContext {
        RecordContext {
            now: DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            patient_open: true,
            active_outcomes: vec!["healthy".into(), "monitor".into()],
            recorded_by: Uuid::nil(),
        }
    }

    fn input(outcome: &str, at: Option<&str>) -> InteractionInput {
        InteractionInput {
            patient_id: Uuid::nil(),
            kind: "call".into(),
            occurred_at: at.map(str::to_owned),
            outcome: outcome.into(),
            notes: None,
            encounter_id: None,
        }
    }

    #[test]
    fn unknown_outcome_names_the_valid_codes_and_times_become_utc() {
        let cmd = InteractionCommand::Record {
            id: Uuid::nil(),
            input: input("critical", None),
            facts: facts(),
        };
        let err = Interaction::decide(None, &cmd).unwrap_err();
        assert!(err.to_string().contains("healthy, monitor"), "{err}");
        let cmd = InteractionCommand::Record {
            id: Uuid::nil(),
            input: input("Monitor", Some("2026-06-01T09:30:00+02:00")),
            facts: facts(),
        };
        let evs = Interaction::decide(None, &cmd).unwrap();
        let InteractionEvent::Recorded(i) = &evs[0] else {
            panic!("recorded")
        };
        assert_eq!(
            format_instant(&i.occurred_at),
            "2026-06-01T07:30:00.000000Z"
        );
        assert_eq!(i.outcome, "monitor");
        let cmd = InteractionCommand::Record {
            id: Uuid::nil(),
            input: input("healthy", Some("2026-06-01T09:30:00")),
            facts: facts(),
        };
        assert!(
            Interaction::decide(None, &cmd).is_err(),
            "a time without a zone is refused"
        );
    }

    fn apply(state: Option<Interaction>, events: &[InteractionEvent]) -> Interaction {
        let mut state = state;
        for e in events {
            state = Interaction::evolve(state, e);
        }
        state.expect("a state")
    }

    fn recorded() -> Interaction {
        let cmd = InteractionCommand::Record {
            id: Uuid::nil(),
            input: input("healthy", Some("2026-06-01T09:30:00Z")),
            facts: facts(),
        };
        let evs = Interaction::decide(None, &cmd).unwrap();
        apply(None, &evs)
    }

    fn amend(changes: InteractionAmendment, reason: &str) -> InteractionCommand {
        InteractionCommand::Amend {
            changes,
            reason: reason.into(),
            facts: AmendContext {
                now: facts().now,
                active_outcomes: vec!["monitor".into()],
            },
        }
    }

    #[test]
    fn amend_corrects_values_and_entered_in_error_is_terminal() {
        let i = recorded();
        assert_eq!(i.status, InteractionStatus::Final);
        // Nothing to correct, no reason, an unknown outcome: refused with the field.
        let err = Interaction::decide(Some(&i), &amend(Default::default(), "typo")).unwrap_err();
        assert!(err.to_string().contains("at least one"), "{err}");
        let change = InteractionAmendment {
            outcome: Some("Monitor".into()),
            notes: Some("called back".into()),
            ..Default::default()
        };
        assert!(matches!(
            Interaction::decide(Some(&i), &amend(change.clone(), " ")),
            Err(DomainError::Invalid { field: Some(f), .. }) if f == "reason"
        ));
        // "healthy" is the current outcome: kept even though it is not active any more;
        // another inactive one is refused.
        let keep = InteractionAmendment {
            outcome: Some("healthy".into()),
            ..Default::default()
        };
        assert!(Interaction::decide(Some(&i), &amend(keep, "same")).is_ok());
        let retired = InteractionAmendment {
            outcome: Some("critical".into()),
            ..Default::default()
        };
        assert!(Interaction::decide(Some(&i), &amend(retired, "x")).is_err());
        let evs = Interaction::decide(Some(&i), &amend(change, "wrong outcome")).unwrap();
        let a = apply(Some(i.clone()), &evs);
        assert_eq!(a.status, InteractionStatus::Amended);
        assert_eq!(a.outcome, "monitor");
        assert_eq!(a.notes.as_deref(), Some("called back"));
        assert_eq!(
            a.occurred_at, i.occurred_at,
            "untouched fields keep their value"
        );
        assert_eq!(a.status_reason.as_deref(), Some("wrong outcome"));
        let evs = Interaction::decide(
            Some(&a),
            &InteractionCommand::EnterInError {
                reason: "wrong patient".into(),
            },
        )
        .unwrap();
        let w = apply(Some(a.clone()), &evs);
        assert_eq!(w.status, InteractionStatus::EnteredInError);
        assert_eq!(w.outcome, "monitor", "withdrawing keeps the values");
        for cmd in [
            amend(
                InteractionAmendment {
                    notes: Some("again".into()),
                    ..Default::default()
                },
                "r",
            ),
            InteractionCommand::EnterInError { reason: "r".into() },
        ] {
            assert!(matches!(
                Interaction::decide(Some(&w), &cmd),
                Err(DomainError::IllegalTransition { .. })
            ));
        }
    }

    #[test]
    fn interactions_stored_before_statuses_read_as_final() {
        let mut doc = serde_json::to_value(recorded()).unwrap();
        let obj = doc.as_object_mut().unwrap();
        obj.remove("status");
        let old: Interaction = serde_json::from_value(doc).unwrap();
        assert_eq!(old.status, InteractionStatus::Final);
    }
}

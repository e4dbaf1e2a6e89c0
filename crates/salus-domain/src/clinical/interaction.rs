//! Interactions (requirements/004): a documented contact with a patient — a visit, a call,
//! a message, a home visit — with exactly one of the tenant's configured outcomes.
//! Recorded once; corrections come as later events (not built yet), never edits in place.

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

#[derive(Debug, Clone)]
pub enum InteractionCommand {
    Record {
        id: Uuid,
        input: InteractionInput,
        facts: RecordContext,
    },
}

domain_events! {
    pub enum InteractionEvent {
        Recorded(Interaction) = "interaction.recorded",
    }
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
        let InteractionCommand::Record { id, input, facts } = command;
        if state.is_some() {
            return Err(DomainError::Rule("interaction already recorded".into()));
        }
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
        let code = input.outcome.trim().to_ascii_lowercase();
        if !facts.active_outcomes.contains(&code) {
            return Err(DomainError::invalid(
                "outcome",
                format!(
                    "outcome '{}' is unknown or retired; valid outcomes are: {}",
                    input.outcome,
                    facts.active_outcomes.join(", ")
                ),
            ));
        }
        let occurred_at = match &input.occurred_at {
            Some(t) => parse_instant("occurred_at", t)?,
            None => facts.now,
        };
        if occurred_at > facts.now + Duration::minutes(5) {
            return Err(DomainError::invalid(
                "occurred_at",
                "occurred_at is in the future",
            ));
        }
        let notes = match input.notes.as_deref().map(str::trim) {
            Some("") | None => None,
            Some(n) if n.chars().count() > 10_000 => {
                return Err(DomainError::invalid(
                    "notes",
                    "notes are longer than 10,000 characters",
                ));
            }
            Some(n)
                if n.chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') =>
            {
                return Err(DomainError::invalid(
                    "notes",
                    "notes contain control characters",
                ));
            }
            Some(n) => Some(n.to_owned()),
        };
        Ok(vec![InteractionEvent::Recorded(Interaction {
            id: *id,
            patient_id: input.patient_id,
            kind,
            occurred_at,
            outcome: code,
            notes,
            encounter_id: input.encounter_id,
            recorded_by: facts.recorded_by,
        })])
    }

    fn evolve(_state: Option<Self>, event: &InteractionEvent) -> Option<Self> {
        match event {
            InteractionEvent::Recorded(i) => Some(i.clone()),
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
        let InteractionEvent::Recorded(i) = &evs[0];
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
}

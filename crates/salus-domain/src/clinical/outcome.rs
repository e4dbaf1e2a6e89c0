//! Outcomes: tenant reference data naming how an interaction ended (Healthy, Monitor,
//! Critical, …). Configured per tenant, never an enum in code; an outcome in use is retired
//! (no new interactions may use it), never deleted.

use crate::service::Projected;
use salus_kernel::{Aggregate, DomainError, domain_events};
use salus_store::{SearchRow, UniqueKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The outcomes every new tenant starts with: (code, display, severity rank).
pub const DEFAULT_OUTCOMES: &[(&str, &str, i32)] = &[
    ("healthy", "Healthy", 0),
    ("monitor", "Monitor", 1),
    ("critical", "Critical", 2),
];

/// Unique-key scope: one outcome per (tenant, code).
pub const CODE_SCOPE: &str = "outcome.code";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Outcome {
    pub id: Uuid,
    /// Stable machine code, lower case (`a-z 0-9 _ -`).
    pub code: String,
    pub display: String,
    /// Higher is more severe.
    pub severity_rank: i32,
    pub active: bool,
}

/// What a client sends to define an outcome.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomeInput {
    pub code: String,
    pub display: String,
    #[serde(default)]
    pub severity_rank: i32,
}

#[derive(Debug, Clone)]
pub enum OutcomeCommand {
    Define { id: Uuid, input: OutcomeInput },
    Retire,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Defined {
    pub id: Uuid,
    pub code: String,
    pub display: String,
    pub severity_rank: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retired {}

domain_events! {
    pub enum OutcomeEvent {
        Defined(Defined) = "outcome.defined",
        Retired(Retired) = "outcome.retired",
    }
}

/// An outcome code: 1–64 of `a-z 0-9 _ -`, case folded.
pub fn parse_code(s: &str) -> Result<String, DomainError> {
    let c = s.trim().to_ascii_lowercase();
    if !c.is_empty()
        && c.len() <= 64
        && c.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
    {
        Ok(c)
    } else {
        Err(DomainError::invalid(
            "code",
            "an outcome code is 1-64 characters of a-z, 0-9, '_' or '-'",
        ))
    }
}

impl Aggregate for Outcome {
    const STREAM_TYPE: &'static str = "outcome";
    type Command = OutcomeCommand;
    type Event = OutcomeEvent;

    fn decide(
        state: Option<&Self>,
        command: &OutcomeCommand,
    ) -> Result<Vec<OutcomeEvent>, DomainError> {
        match (state, command) {
            (None, OutcomeCommand::Define { id, input }) => {
                let code = parse_code(&input.code)?;
                let display = input.display.trim();
                if display.is_empty()
                    || display.chars().count() > 200
                    || display.chars().any(char::is_control)
                {
                    return Err(DomainError::invalid(
                        "display",
                        "display must be 1-200 printable characters",
                    ));
                }
                Ok(vec![OutcomeEvent::Defined(Defined {
                    id: *id,
                    code,
                    display: display.to_owned(),
                    severity_rank: input.severity_rank,
                })])
            }
            (Some(_), OutcomeCommand::Define { .. }) => {
                Err(DomainError::Rule("outcome already defined".into()))
            }
            (None, _) => Err(DomainError::NotFound("outcome".into())),
            (Some(o), OutcomeCommand::Retire) => {
                if !o.active {
                    return Err(DomainError::Rule(format!(
                        "outcome '{}' is already retired",
                        o.code
                    )));
                }
                Ok(vec![OutcomeEvent::Retired(Retired {})])
            }
        }
    }

    fn evolve(state: Option<Self>, event: &OutcomeEvent) -> Option<Self> {
        match (state, event) {
            (_, OutcomeEvent::Defined(d)) => Some(Outcome {
                id: d.id,
                code: d.code.clone(),
                display: d.display.clone(),
                severity_rank: d.severity_rank,
                active: true,
            }),
            (Some(mut o), OutcomeEvent::Retired(_)) => {
                o.active = false;
                Some(o)
            }
            (None, _) => None,
        }
    }

    fn decode_event(event_type: &str, payload: &Value) -> Result<OutcomeEvent, serde_json::Error> {
        OutcomeEvent::decode(event_type, payload)
    }
}

impl Projected for Outcome {
    const RESOURCE_TYPE: &'static str = "outcome";

    fn search_rows(&self) -> Vec<SearchRow> {
        vec![
            SearchRow::new("code", self.code.clone()),
            SearchRow::new("active", if self.active { "true" } else { "false" }),
        ]
    }

    fn unique_keys(&self) -> Vec<UniqueKey> {
        vec![UniqueKey::new(CODE_SCOPE, self.code.clone())]
    }
}

/// Every outcome of the tenant (retired ones too), most severe last, then by code.
pub async fn list(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
) -> Result<Vec<Outcome>, crate::service::ServiceError> {
    let query = salus_store::SearchQuery {
        resource_type: Outcome::RESOURCE_TYPE.into(),
        filters: vec![],
        after: None,
        limit: 1000,
        newest_first: false,
        order_by: None,
    };
    let mut all: Vec<Outcome> = services
        .search::<Outcome>(ctx, &query)
        .await?
        .into_iter()
        .map(|c| c.state)
        .collect();
    all.sort_by(|a, b| (a.severity_rank, &a.code).cmp(&(b.severity_rank, &b.code)));
    Ok(all)
}

/// The codes an interaction may use now.
pub async fn active_codes(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
) -> Result<Vec<String>, crate::service::ServiceError> {
    Ok(list(services, ctx)
        .await?
        .into_iter()
        .filter(|o| o.active)
        .map(|o| o.code)
        .collect())
}

/// Give a new tenant the default outcomes.
pub async fn define_defaults(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
) -> Result<(), crate::service::ServiceError> {
    for (code, display, rank) in DEFAULT_OUTCOMES {
        let id = Uuid::now_v7();
        let input = OutcomeInput {
            code: (*code).into(),
            display: (*display).into(),
            severity_rank: *rank,
        };
        services
            .create::<Outcome, _>(
                ctx,
                id,
                move |_, _| Ok(OutcomeCommand::Define { id, input }),
                None,
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_fold_and_retire_once() {
        let input = OutcomeInput {
            code: " Follow-Up ".into(),
            display: "Follow up".into(),
            severity_rank: 1,
        };
        let evs = Outcome::decide(
            None,
            &OutcomeCommand::Define {
                id: Uuid::nil(),
                input,
            },
        )
        .unwrap();
        let o = evs.iter().fold(None, Outcome::evolve).unwrap();
        assert_eq!(o.code, "follow-up");
        let evs = Outcome::decide(Some(&o), &OutcomeCommand::Retire).unwrap();
        let retired = evs.iter().fold(Some(o), Outcome::evolve).unwrap();
        assert!(!retired.active);
        assert!(Outcome::decide(Some(&retired), &OutcomeCommand::Retire).is_err());
        assert!(parse_code("no spaces").is_err());
    }
}

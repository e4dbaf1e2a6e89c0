//! Conditions and allergies (FHIR Condition / AllergyIntolerance): coded statements about
//! a patient with a clinical status, a verification status and an onset. They share one
//! aggregate, [`Statement`], parameterised by a [`StatementKind`] that names the stream, the
//! events and the allowed status values. Orders and population health read them; recording
//! one is an event in the log (`allergy.recorded`, `condition.recorded`) for consumers.
//!
//! A statement keeps beside it the FHIR elements Salus does not model (`fhir_elements`:
//! a Condition's category, encounter, abatement, an allergy's reaction, …), as a FHIR
//! client sent them. After recording, only the statuses and those kept elements change
//! ([`StatementCommand::Revise`], what a FHIR update becomes); the code, the patient, the
//! onset, the note, the category and the criticality never do: a statement that got them
//! wrong is entered in error and a new one recorded.

use super::observation::Coding;
use super::procedure::{SNOMED, parse_sctid};
use crate::service::Projected;
use chrono::{DateTime, NaiveDate, Utc};
use salus_kernel::aggregate::DomainEvent;
use salus_kernel::{Aggregate, DomainError, NewEvent};
use salus_store::SearchRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::marker::PhantomData;
use uuid::Uuid;

/// What distinguishes conditions from allergies.
pub trait StatementKind: Clone + Send + Sync + std::fmt::Debug + PartialEq + 'static {
    const NAME: &'static str;
    const RECORDED: &'static str;
    const STATUS_CHANGED: &'static str;
    const CLINICAL: &'static [&'static str];
    const VERIFICATION: &'static [&'static str];
    /// Allergies carry a category and a criticality.
    const ALLERGY: bool;
}

#[derive(Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct ConditionKind;

impl StatementKind for ConditionKind {
    const NAME: &'static str = "condition";
    const RECORDED: &'static str = "condition.recorded";
    const STATUS_CHANGED: &'static str = "condition.status_changed";
    const CLINICAL: &'static [&'static str] = &[
        "active",
        "recurrence",
        "relapse",
        "inactive",
        "remission",
        "resolved",
    ];
    const VERIFICATION: &'static [&'static str] = &[
        "unconfirmed",
        "provisional",
        "differential",
        "confirmed",
        "refuted",
        "entered_in_error",
    ];
    const ALLERGY: bool = false;
}

#[derive(Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct AllergyKind;

impl StatementKind for AllergyKind {
    const NAME: &'static str = "allergy";
    const RECORDED: &'static str = "allergy.recorded";
    const STATUS_CHANGED: &'static str = "allergy.status_changed";
    const CLINICAL: &'static [&'static str] = &["active", "inactive", "resolved"];
    const VERIFICATION: &'static [&'static str] = &[
        "unconfirmed",
        "presumed",
        "confirmed",
        "refuted",
        "entered_in_error",
    ];
    const ALLERGY: bool = true;
}

pub const CATEGORIES: &[&str] = &["food", "medication", "environment", "biologic"];
pub const CRITICALITIES: &[&str] = &["low", "high", "unable_to_assess"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(bound = "")]
pub struct Statement<K: StatementKind> {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub code: Coding,
    pub clinical_status: String,
    pub verification_status: String,
    /// `YYYY-MM-DD`, or an RFC 3339 instant in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criticality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The FHIR elements of the resource that Salus does not model, kept as a FHIR client
    /// sent them and given back with it (since schema version 2 of the events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
    #[serde(skip)]
    #[schema(ignore)]
    pub kind: PhantomData<K>,
}

pub type Condition = Statement<ConditionKind>;
pub type Allergy = Statement<AllergyKind>;

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatementInput {
    pub patient_id: Uuid,
    pub code: Coding,
    /// Default `active`.
    #[serde(default)]
    pub clinical_status: Option<String>,
    /// Default `unconfirmed`.
    #[serde(default)]
    pub verification_status: Option<String>,
    /// `YYYY-MM-DD` or an RFC 3339 instant with a time zone.
    #[serde(default)]
    pub onset: Option<String>,
    /// Allergies: food | medication | environment | biologic.
    #[serde(default)]
    pub category: Option<String>,
    /// Allergies: low | high | unable_to_assess.
    #[serde(default)]
    pub criticality: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
    /// FHIR elements Salus does not model, kept with the statement (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusInput {
    #[serde(default)]
    pub clinical_status: Option<String>,
    #[serde(default)]
    pub verification_status: Option<String>,
}

#[derive(Debug, Clone)]
pub enum StatementCommand {
    Record {
        id: Uuid,
        input: Box<StatementInput>,
        now: DateTime<Utc>,
        patient_open: bool,
    },
    SetStatus(StatusInput),
    /// The statuses (`None`: unchanged) and the kept FHIR elements (`None`: unchanged,
    /// an empty object: none any more); no change at all is no event.
    Revise {
        clinical_status: Option<String>,
        verification_status: Option<String>,
        fhir_elements: Option<Value>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChanged {
    pub clinical_status: String,
    pub verification_status: String,
    /// Since schema version 2: the kept FHIR elements after the change, when they changed
    /// (an empty object: none any more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_elements: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StatementEvent<K: StatementKind> {
    Recorded(Statement<K>),
    StatusChanged(StatusChanged),
}

impl<K: StatementKind> Serialize for StatementEvent<K> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StatementEvent::Recorded(e) => e.serialize(s),
            StatementEvent::StatusChanged(e) => e.serialize(s),
        }
    }
}

impl<K: StatementKind> DomainEvent for StatementEvent<K> {
    fn event_type(&self) -> &'static str {
        match self {
            StatementEvent::Recorded(_) => K::RECORDED,
            StatementEvent::StatusChanged(_) => K::STATUS_CHANGED,
        }
    }

    /// Version 2 of both events added `fhir_elements`.
    fn current_version(event_type: &str) -> Option<i32> {
        (event_type == K::RECORDED || event_type == K::STATUS_CHANGED).then_some(2)
    }

    fn to_new_event(&self) -> Result<NewEvent, serde_json::Error> {
        Ok(NewEvent {
            event_type: self.event_type().to_owned(),
            schema_version: 2,
            payload: serde_json::to_value(self)?,
        })
    }
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<String, DomainError> {
    let v = value.trim();
    if allowed.contains(&v) {
        Ok(v.to_owned())
    } else {
        Err(DomainError::invalid(
            field,
            format!("{field} '{v}' is not one of {}", allowed.join(", ")),
        ))
    }
}

fn parse_onset(s: &str, now: DateTime<Utc>) -> Result<String, DomainError> {
    let t = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if d > now.date_naive() {
            return Err(DomainError::invalid("onset", "onset is in the future"));
        }
        return Ok(d.format("%Y-%m-%d").to_string());
    }
    let at = super::interaction::parse_instant("onset", t)?;
    if at > now {
        return Err(DomainError::invalid("onset", "onset is in the future"));
    }
    Ok(salus_kernel::event::format_instant(&at))
}

impl<K: StatementKind> Aggregate for Statement<K> {
    const STREAM_TYPE: &'static str = K::NAME;
    type Command = StatementCommand;
    type Event = StatementEvent<K>;

    fn decide(
        state: Option<&Self>,
        command: &StatementCommand,
    ) -> Result<Vec<StatementEvent<K>>, DomainError> {
        match (state, command) {
            (
                None,
                StatementCommand::Record {
                    id,
                    input,
                    now,
                    patient_open,
                },
            ) => {
                if !patient_open {
                    return Err(DomainError::invalid(
                        "patient_id",
                        format!(
                            "patient {} does not exist in this tenant or is retired",
                            input.patient_id
                        ),
                    ));
                }
                let mut code = input.code.clone();
                if code.system.trim() == SNOMED {
                    code.code = parse_sctid(&code.code)?;
                }
                let (category, criticality) = if K::ALLERGY {
                    (
                        input
                            .category
                            .as_deref()
                            .map(|c| one_of("category", c, CATEGORIES))
                            .transpose()?,
                        input
                            .criticality
                            .as_deref()
                            .map(|c| one_of("criticality", c, CRITICALITIES))
                            .transpose()?,
                    )
                } else if input.category.is_some() || input.criticality.is_some() {
                    return Err(DomainError::invalid(
                        "category",
                        "category and criticality are for allergies",
                    ));
                } else {
                    (None, None)
                };
                let note = match input.note.as_deref().map(str::trim) {
                    None | Some("") => None,
                    Some(n) if n.chars().count() > 10_000 => {
                        return Err(DomainError::invalid(
                            "note",
                            "note is longer than 10,000 characters",
                        ));
                    }
                    Some(n) => Some(n.to_owned()),
                };
                Ok(vec![StatementEvent::Recorded(Statement {
                    id: *id,
                    patient_id: input.patient_id,
                    code: code.checked()?,
                    clinical_status: one_of(
                        "clinical_status",
                        input.clinical_status.as_deref().unwrap_or("active"),
                        K::CLINICAL,
                    )?,
                    verification_status: one_of(
                        "verification_status",
                        input
                            .verification_status
                            .as_deref()
                            .unwrap_or("unconfirmed"),
                        K::VERIFICATION,
                    )?,
                    onset: input
                        .onset
                        .as_deref()
                        .map(|o| parse_onset(o, *now))
                        .transpose()?,
                    category,
                    criticality,
                    note,
                    fhir_elements: super::fhir_elements(input.fhir_elements.as_ref())?,
                    kind: PhantomData,
                })])
            }
            (Some(_), StatementCommand::Record { .. }) => {
                Err(DomainError::Rule(format!("{} already recorded", K::NAME)))
            }
            (None, _) => Err(DomainError::NotFound(K::NAME.into())),
            (Some(s), _) if s.verification_status == "entered_in_error" => Err(DomainError::Rule(
                format!("this {} was entered in error; record a new one", K::NAME),
            )),
            (Some(s), StatementCommand::SetStatus(input)) => {
                if input.clinical_status.is_none() && input.verification_status.is_none() {
                    return Err(DomainError::invalid(
                        "clinical_status",
                        "give clinical_status, verification_status or both",
                    ));
                }
                Ok(revise(
                    s,
                    input.clinical_status.as_deref(),
                    input.verification_status.as_deref(),
                    None,
                )?
                .into_iter()
                .collect())
            }
            (
                Some(s),
                StatementCommand::Revise {
                    clinical_status,
                    verification_status,
                    fhir_elements,
                },
            ) => Ok(revise(
                s,
                clinical_status.as_deref(),
                verification_status.as_deref(),
                fhir_elements.as_ref(),
            )?
            .into_iter()
            .collect()),
        }
    }

    fn evolve(state: Option<Self>, event: &StatementEvent<K>) -> Option<Self> {
        match (state, event) {
            (_, StatementEvent::Recorded(s)) => Some(s.clone()),
            (Some(mut s), StatementEvent::StatusChanged(c)) => {
                s.clinical_status = c.clinical_status.clone();
                s.verification_status = c.verification_status.clone();
                if let Some(f) = &c.fhir_elements {
                    s.fhir_elements =
                        Some(f.clone()).filter(|f| f.as_object().is_some_and(|m| !m.is_empty()));
                }
                Some(s)
            }
            (None, _) => None,
        }
    }

    fn decode_event(
        event_type: &str,
        payload: &Value,
    ) -> Result<StatementEvent<K>, serde_json::Error> {
        use serde::de::Error as _;
        if event_type == K::RECORDED {
            Ok(StatementEvent::Recorded(serde_json::from_value(
                payload.clone(),
            )?))
        } else if event_type == K::STATUS_CHANGED {
            Ok(StatementEvent::StatusChanged(serde_json::from_value(
                payload.clone(),
            )?))
        } else {
            Err(serde_json::Error::custom(format!(
                "unknown {} event '{event_type}'",
                K::NAME
            )))
        }
    }

    /// Version 2 of both events added the optional `fhir_elements`: a version 1 payload is
    /// the same payload without it.
    fn upcast(event_type: &str, from: i32, payload: Value) -> Result<Value, String> {
        if from == 1 && (event_type == K::RECORDED || event_type == K::STATUS_CHANGED) {
            Ok(payload)
        } else {
            Err(format!(
                "no upcaster from schema version {from} of '{event_type}'"
            ))
        }
    }
}

/// The change a status update (and new kept elements) makes of `s`; `None`: none.
fn revise<K: StatementKind>(
    s: &Statement<K>,
    clinical: Option<&str>,
    verification: Option<&str>,
    fhir_elements: Option<&Value>,
) -> Result<Option<StatementEvent<K>>, DomainError> {
    let kept = match fhir_elements {
        None => None,
        Some(f) => Some(
            super::fhir_elements(Some(f))?.unwrap_or_else(|| Value::Object(Default::default())),
        ),
    };
    let change = StatusChanged {
        clinical_status: match clinical {
            Some(c) => one_of("clinical_status", c, K::CLINICAL)?,
            None => s.clinical_status.clone(),
        },
        verification_status: match verification {
            Some(v) => one_of("verification_status", v, K::VERIFICATION)?,
            None => s.verification_status.clone(),
        },
        fhir_elements: kept.filter(|k| {
            let now = s
                .fhir_elements
                .clone()
                .unwrap_or_else(|| Value::Object(Default::default()));
            *k != now
        }),
    };
    if change.clinical_status == s.clinical_status
        && change.verification_status == s.verification_status
        && change.fhir_elements.is_none()
    {
        return Ok(None);
    }
    Ok(Some(StatementEvent::StatusChanged(change)))
}

impl<K: StatementKind> Projected for Statement<K> {
    const RESOURCE_TYPE: &'static str = K::NAME;

    fn search_rows(&self) -> Vec<SearchRow> {
        vec![
            SearchRow::new("patient", self.patient_id.to_string()),
            SearchRow::token("code", &self.code.system, self.code.code.clone()),
            SearchRow::new("clinical_status", self.clinical_status.clone()),
            SearchRow::new("verification_status", self.verification_status.clone()),
        ]
        .into_iter()
        .chain(super::fhir_view::rows(Self::STREAM_TYPE, self))
        .collect()
    }
}

/// Record a condition or an allergy for an open patient.
pub async fn record<K: StatementKind>(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    input: StatementInput,
    idempotency: Option<crate::service::Idempotency<'_>>,
) -> Result<crate::service::Current<Statement<K>>, crate::service::ServiceError> {
    let patient_open = super::patient_open(services, ctx, input.patient_id).await?;
    let id = Uuid::now_v7();
    services
        .create::<Statement<K>, _>(
            ctx,
            id,
            move |_, now| {
                Ok(StatementCommand::Record {
                    id,
                    input: Box::new(input),
                    now,
                    patient_open,
                })
            },
            idempotency,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn recorded() -> Condition {
        let input: StatementInput = serde_json::from_value(json!({
            "patient_id": Uuid::nil(),
            "code": {"system": "urn:local", "code": "x"},
            "fhir_elements": {"recordedDate": "2024-01-01"},
        }))
        .unwrap();
        let cmd = StatementCommand::Record {
            id: Uuid::nil(),
            input: Box::new(input),
            now: Utc::now(),
            patient_open: true,
        };
        let e = Condition::decide(None, &cmd).unwrap();
        Condition::evolve(None, &e[0]).unwrap()
    }

    #[test]
    fn version_1_events_decode_as_ones_without_kept_elements() {
        let mut c = recorded();
        c.fhir_elements = None;
        let payload = serde_json::to_value(&c).unwrap();
        let e = Condition::decode_stored("condition.recorded", 1, &payload).unwrap();
        assert_eq!(e, StatementEvent::Recorded(c));
        let e = Condition::decode_stored(
            "condition.status_changed",
            1,
            &json!({"clinical_status": "resolved", "verification_status": "confirmed"}),
        )
        .unwrap();
        assert!(matches!(
            e,
            StatementEvent::StatusChanged(StatusChanged {
                fhir_elements: None,
                ..
            })
        ));
        assert!(Condition::decode_stored("condition.recorded", 3, &payload).is_err());
    }

    #[test]
    fn a_revision_changes_statuses_and_kept_elements_and_nothing_is_no_event() {
        let c = recorded();
        let same = StatementCommand::Revise {
            clinical_status: Some("active".into()),
            verification_status: None,
            fhir_elements: Some(json!({"recordedDate": "2024-01-01"})),
        };
        assert!(Condition::decide(Some(&c), &same).unwrap().is_empty());
        let cleared = StatementCommand::Revise {
            clinical_status: None,
            verification_status: Some("entered_in_error".into()),
            fhir_elements: Some(json!({})),
        };
        let e = Condition::decide(Some(&c), &cleared).unwrap();
        let after = Condition::evolve(Some(c.clone()), &e[0]).unwrap();
        assert_eq!(after.fhir_elements, None);
        assert_eq!(after.verification_status, "entered_in_error");
        // Entered in error is final.
        assert!(Condition::decide(Some(&after), &same).is_err());
        let bad = StatementCommand::Revise {
            clinical_status: Some("cured".into()),
            verification_status: None,
            fhir_elements: None,
        };
        assert!(Condition::decide(Some(&c), &bad).is_err());
    }
}

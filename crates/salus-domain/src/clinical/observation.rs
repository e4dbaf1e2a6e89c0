//! The Observation aggregate (requirements/000): a measurement or finding about a patient,
//! coded (LOINC, or a local code system), with a typed value. Observations are never edited
//! in place: `amend` records a new value (the old one stays in the history) and
//! `enter-in-error` withdraws one that should never have been recorded.

use crate::service::Projected;
use chrono::{DateTime, Duration, Utc};
use salus_kernel::event::format_instant;
use salus_kernel::{Aggregate, DomainError, domain_events};
use salus_store::SearchRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub const LOINC: &str = "http://loinc.org";

/// A LOINC code `NNNNN-C`: 1–7 digits, a dash, and the Mod 10 (Luhn) check digit.
pub fn parse_loinc(s: &str) -> Result<String, DomainError> {
    let t = s.trim();
    let bad = || {
        DomainError::invalid(
            "code.code",
            format!("'{t}' is not a LOINC code like 2345-7 (digits, dash, check digit)"),
        )
    };
    let (num, check) = t.split_once('-').ok_or_else(bad)?;
    if num.is_empty()
        || num.len() > 7
        || !num.bytes().all(|b| b.is_ascii_digit())
        || check.len() != 1
    {
        return Err(bad());
    }
    let check = check
        .bytes()
        .next()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .ok_or_else(bad)?;
    let mut sum = 0u32;
    for (i, b) in num.bytes().rev().enumerate() {
        let d = u32::from(b - b'0');
        sum += if i % 2 == 0 {
            let x = d * 2;
            x / 10 + x % 10
        } else {
            d
        };
    }
    let expected = ((10 - sum % 10) % 10) as u8;
    if expected != check {
        return Err(DomainError::invalid(
            "code.code",
            format!("LOINC code '{t}' has a wrong check digit (expected {expected})"),
        ));
    }
    Ok(t.to_owned())
}

/// A UCUM unit expression (c/s form), checked against UCUM's grammar and its tables of
/// units and prefixes ([`super::ucum`]); the error says what is wrong and where.
pub fn parse_ucum(s: &str) -> Result<String, DomainError> {
    let t = s.trim();
    super::ucum::check(t).map_err(|why| {
        DomainError::invalid(
            "value.unit",
            format!("'{t}' is not a UCUM unit like mg/dL or mm[Hg]: {why}"),
        )
    })?;
    Ok(t.to_owned())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Coding {
    pub system: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl Coding {
    pub fn checked(self) -> Result<Self, DomainError> {
        let system = self.system.trim().to_owned();
        if system.is_empty()
            || system.len() > 256
            || system.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(DomainError::invalid(
                "code.system",
                "a code system is a URI without spaces",
            ));
        }
        let code = if system == LOINC {
            parse_loinc(&self.code)?
        } else {
            let c = self.code.trim();
            if c.is_empty() || c.len() > 64 || c.chars().any(char::is_control) {
                return Err(DomainError::invalid(
                    "code.code",
                    "a code is 1-64 printable characters",
                ));
            }
            c.to_owned()
        };
        Ok(Coding {
            system,
            code,
            display: self
                .display
                .map(|d| d.trim().to_owned())
                .filter(|d| !d.is_empty()),
        })
    }
}

/// The typed value of an observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ObservationValue {
    Quantity {
        value: f64,
        /// A UCUM unit (case-sensitive c/s form), e.g. mg/dL, mm[Hg], 10*3/uL.
        unit: String,
    },
    Code {
        coding: Coding,
    },
    String {
        value: String,
    },
    Boolean {
        value: bool,
    },
    Range {
        low: f64,
        high: f64,
        /// A UCUM unit (case-sensitive c/s form).
        unit: String,
    },
    /// No value of a type above: a panel whose components or members carry the values
    /// (a blood pressure), a value that is absent (FHIR `dataAbsentReason`), or a FHIR
    /// value of a type Salus keeps as sent in the FHIR elements (`valueInteger`,
    /// `valueRatio`, `valueSampledData`, `valueTime`, `valueDateTime`, `valuePeriod`).
    Untyped,
}

impl ObservationValue {
    pub fn checked(self) -> Result<Self, DomainError> {
        let finite = |v: f64| {
            if v.is_finite() {
                Ok(v)
            } else {
                Err(DomainError::invalid("value", "numbers must be finite"))
            }
        };
        Ok(match self {
            ObservationValue::Quantity { value, unit } => ObservationValue::Quantity {
                value: finite(value)?,
                unit: parse_ucum(&unit)?,
            },
            ObservationValue::Range { low, high, unit } => {
                if finite(low)? > finite(high)? {
                    return Err(DomainError::invalid(
                        "value",
                        "a range's low is above its high",
                    ));
                }
                ObservationValue::Range {
                    low,
                    high,
                    unit: parse_ucum(&unit)?,
                }
            }
            ObservationValue::Code { coding } => ObservationValue::Code {
                coding: coding.checked()?,
            },
            ObservationValue::String { value } => {
                let v = value.trim();
                if v.is_empty() || v.chars().count() > 10_000 {
                    return Err(DomainError::invalid(
                        "value",
                        "a string value is 1-10,000 characters",
                    ));
                }
                ObservationValue::String {
                    value: v.to_owned(),
                }
            }
            v @ (ObservationValue::Boolean { .. } | ObservationValue::Untyped) => v,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObservationStatus {
    Preliminary,
    Final,
    Amended,
    EnteredInError,
}

impl ObservationStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Preliminary => "preliminary",
            Self::Final => "final",
            Self::Amended => "amended",
            Self::EnteredInError => "entered_in_error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "preliminary" => Self::Preliminary,
            "final" => Self::Final,
            "amended" => Self::Amended,
            "entered_in_error" => Self::EnteredInError,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Observation {
    pub id: Uuid,
    pub patient_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter_id: Option<Uuid>,
    pub code: Coding,
    pub value: ObservationValue,
    pub status: ObservationStatus,
    /// When the observed fact held (UTC).
    pub effective_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// The FHIR elements of the resource that Salus does not model (category, issued,
    /// interpretation, …), kept as a FHIR client sent them and given back with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservationInput {
    pub patient_id: Uuid,
    #[serde(default)]
    pub encounter_id: Option<Uuid>,
    pub code: Coding,
    pub value: ObservationValue,
    /// preliminary | final (default final)
    #[serde(default)]
    pub status: Option<String>,
    /// RFC 3339 with a time zone; defaults to now.
    #[serde(default)]
    pub effective_at: Option<String>,
    /// FHIR elements Salus does not model, kept with the observation (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct RecordFacts {
    pub now: DateTime<Utc>,
    pub patient_open: bool,
    /// The encounter, when given, exists and belongs to the patient.
    pub encounter_ok: bool,
}

#[derive(Debug, Clone)]
pub enum ObservationCommand {
    Record {
        id: Uuid,
        input: ObservationInput,
        facts: RecordFacts,
    },
    Amend {
        value: ObservationValue,
        reason: String,
        /// The unmodelled FHIR elements as they are after the amendment (`None`: unchanged).
        fhir_elements: Option<Value>,
    },
    EnterInError {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Amended {
    pub value: ObservationValue,
    pub reason: String,
    /// Since schema version 2: the unmodelled FHIR elements after the amendment, when they
    /// changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_elements: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Withdrawn {
    pub reason: String,
}

domain_events! {
    pub enum ObservationEvent {
        Recorded(Observation) = "observation.recorded" @ 2,
        Amended(Amended) = "observation.amended" @ 2,
        EnteredInError(Withdrawn) = "observation.entered_in_error",
    }
}

pub const ACTIONS: &[&str] = &["amend", "enter-in-error"];

fn reason(s: &str) -> Result<String, DomainError> {
    let r = s.trim();
    if r.is_empty() || r.chars().count() > 1000 {
        return Err(DomainError::invalid(
            "reason",
            "a reason (1-1000 characters) is required",
        ));
    }
    Ok(r.to_owned())
}

impl Aggregate for Observation {
    const STREAM_TYPE: &'static str = "observation";
    type Command = ObservationCommand;
    type Event = ObservationEvent;

    fn decide(
        state: Option<&Self>,
        command: &ObservationCommand,
    ) -> Result<Vec<ObservationEvent>, DomainError> {
        match (state, command) {
            (None, ObservationCommand::Record { id, input, facts }) => {
                if !facts.patient_open {
                    return Err(DomainError::invalid(
                        "patient_id",
                        format!(
                            "patient {} does not exist in this tenant or is retired",
                            input.patient_id
                        ),
                    ));
                }
                if !facts.encounter_ok {
                    return Err(DomainError::invalid(
                        "encounter_id",
                        "the encounter does not exist or belongs to another patient",
                    ));
                }
                let status = match input.status.as_deref().map(str::trim) {
                    None | Some("final") => ObservationStatus::Final,
                    Some("preliminary") => ObservationStatus::Preliminary,
                    Some(other) => {
                        return Err(DomainError::invalid(
                            "status",
                            format!("status '{other}' is not preliminary or final"),
                        ));
                    }
                };
                let effective_at = match &input.effective_at {
                    Some(t) => super::interaction::parse_instant("effective_at", t)?,
                    None => facts.now,
                };
                if effective_at > facts.now + Duration::minutes(5) {
                    return Err(DomainError::invalid(
                        "effective_at",
                        "effective_at is in the future",
                    ));
                }
                Ok(vec![ObservationEvent::Recorded(Observation {
                    id: *id,
                    patient_id: input.patient_id,
                    encounter_id: input.encounter_id,
                    code: input.code.clone().checked()?,
                    value: input.value.clone().checked()?,
                    status,
                    effective_at,
                    status_reason: None,
                    fhir_elements: super::fhir_elements(input.fhir_elements.as_ref())?,
                })])
            }
            (Some(_), ObservationCommand::Record { .. }) => {
                Err(DomainError::Rule("observation already recorded".into()))
            }
            (None, _) => Err(DomainError::NotFound("observation".into())),
            (Some(o), _) if o.status == ObservationStatus::EnteredInError => {
                Err(DomainError::IllegalTransition {
                    action: match command {
                        ObservationCommand::Amend { .. } => "amend".into(),
                        _ => "enter-in-error".into(),
                    },
                    from: o.status.as_str().into(),
                    allowed: "preliminary, final, amended".into(),
                })
            }
            (
                Some(_),
                ObservationCommand::Amend {
                    value,
                    reason: r,
                    fhir_elements,
                },
            ) => Ok(vec![ObservationEvent::Amended(Amended {
                value: value.clone().checked()?,
                reason: reason(r)?,
                fhir_elements: super::fhir_elements(fhir_elements.as_ref())?,
            })]),
            (Some(_), ObservationCommand::EnterInError { reason: r }) => {
                Ok(vec![ObservationEvent::EnteredInError(Withdrawn {
                    reason: reason(r)?,
                })])
            }
        }
    }

    fn evolve(state: Option<Self>, event: &ObservationEvent) -> Option<Self> {
        match (state, event) {
            (_, ObservationEvent::Recorded(o)) => Some(o.clone()),
            (Some(mut o), ObservationEvent::Amended(a)) => {
                o.value = a.value.clone();
                if let Some(f) = &a.fhir_elements {
                    o.fhir_elements =
                        Some(f.clone()).filter(|f| f.as_object().is_some_and(|m| !m.is_empty()));
                }
                o.status = ObservationStatus::Amended;
                o.status_reason = Some(a.reason.clone());
                Some(o)
            }
            (Some(mut o), ObservationEvent::EnteredInError(w)) => {
                o.status = ObservationStatus::EnteredInError;
                o.status_reason = Some(w.reason.clone());
                Some(o)
            }
            (None, _) => None,
        }
    }

    fn decode_event(
        event_type: &str,
        payload: &Value,
    ) -> Result<ObservationEvent, serde_json::Error> {
        ObservationEvent::decode(event_type, payload)
    }

    /// Version 2 of `observation.recorded` and `observation.amended` added the optional
    /// `fhir_elements`: a version 1 payload is the same payload without it.
    fn upcast(event_type: &str, from: i32, payload: Value) -> Result<Value, String> {
        match (event_type, from) {
            ("observation.recorded" | "observation.amended", 1) => Ok(payload),
            _ => Err(format!(
                "no upcaster from schema version {from} of '{event_type}'"
            )),
        }
    }
}

impl Projected for Observation {
    const RESOURCE_TYPE: &'static str = "observation";

    fn search_rows(&self) -> Vec<SearchRow> {
        vec![
            SearchRow::new("patient", self.patient_id.to_string()),
            SearchRow::token("code", &self.code.system, self.code.code.clone()),
            SearchRow::new("status", self.status.as_str()),
            SearchRow::new("effective_at", format_instant(&self.effective_at)),
        ]
        .into_iter()
        .chain(super::fhir_view::rows(Self::STREAM_TYPE, self))
        .collect()
    }
}

/// Record an observation: the patient must be open and the encounter, when named, the
/// patient's.
pub async fn record(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    input: ObservationInput,
    idempotency: Option<crate::service::Idempotency<'_>>,
) -> Result<crate::service::Current<Observation>, crate::service::ServiceError> {
    let patient_open = super::patient_open(services, ctx, input.patient_id).await?;
    let encounter_ok =
        super::encounter_of_patient(services, ctx, input.encounter_id, input.patient_id).await?;
    let id = Uuid::now_v7();
    services
        .create::<Observation, _>(
            ctx,
            id,
            move |_, now| {
                Ok(ObservationCommand::Record {
                    id,
                    input,
                    facts: RecordFacts {
                        now,
                        patient_open,
                        encounter_ok,
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
    use proptest::prelude::*;

    #[test]
    fn loinc_check_digits_are_verified() {
        for ok in ["2345-7", "8480-6", "8462-4", "718-7", "4548-4"] {
            assert!(parse_loinc(ok).is_ok(), "{ok}");
        }
        for bad in ["2345-8", "2345", "23a5-7", "-7", "12345678-0", "2345-77"] {
            assert!(parse_loinc(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Exactly one check digit makes any digit string a valid LOINC code.
        #[test]
        fn exactly_one_check_digit_is_valid(num in "[0-9]{1,7}") {
            let valid: Vec<u8> = (0..10u8).filter(|d| parse_loinc(&format!("{num}-{d}")).is_ok()).collect();
            prop_assert_eq!(valid.len(), 1);
        }

        /// The parser never panics on arbitrary input.
        #[test]
        fn loinc_parser_takes_any_text(s in ".{0,20}") {
            let _ = parse_loinc(&s);
        }
    }
}

//! The Procedure aggregate (requirements/000): a procedure performed on a patient, coded
//! with SNOMED CT or a local code system, with its outcome and, when it was one of the
//! tenant's clinicians, its performer (requirements/000 names none for a procedure; a FHIR
//! Procedure may have been performed by someone Salus does not know). Corrections are
//! `enter-in-error`, never edits.
//!
//! Beside what Salus models a procedure keeps the FHIR elements it does not
//! (`fhir_elements`: category, performedPeriod, reasonCode, bodySite, …) as a client sent
//! them (since schema version 2 of the events); only they change after recording
//! ([`ProcedureCommand::Revise`]).

use super::observation::Coding;
use crate::service::Projected;
use chrono::{DateTime, Duration, Utc};
use salus_kernel::event::format_instant;
use salus_kernel::{Aggregate, DomainError, domain_events};
use salus_store::SearchRow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub const SNOMED: &str = "http://snomed.info/sct";

/// A SNOMED CT identifier: 6–18 digits, no leading zero, with a valid Verhoeff check digit.
pub fn parse_sctid(s: &str) -> Result<String, DomainError> {
    const D: [[u8; 10]; 10] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ];
    const P: [[u8; 10]; 8] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ];
    let t = s.trim();
    if !(6..=18).contains(&t.len()) || !t.bytes().all(|b| b.is_ascii_digit()) || t.starts_with('0')
    {
        return Err(DomainError::invalid(
            "code.code",
            format!("'{t}' is not a SNOMED CT identifier (6-18 digits)"),
        ));
    }
    let mut c = 0u8;
    for (i, b) in t.bytes().rev().enumerate() {
        c = D[c as usize][P[i % 8][(b - b'0') as usize] as usize];
    }
    if c != 0 {
        return Err(DomainError::invalid(
            "code.code",
            format!("SNOMED CT identifier '{t}' has a wrong check digit"),
        ));
    }
    Ok(t.to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProcedureStatus {
    Completed,
    EnteredInError,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Procedure {
    pub id: Uuid,
    pub patient_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter_id: Option<Uuid>,
    pub code: Coding,
    /// What came of it (free text, e.g. "successful", "converted to open").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The clinician who performed it, when it was one of the tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performer_id: Option<Uuid>,
    pub performed_at: DateTime<Utc>,
    pub status: ProcedureStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// The FHIR elements of the resource that Salus does not model, kept as a FHIR client
    /// sent them and given back with it (since schema version 2 of the events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcedureInput {
    pub patient_id: Uuid,
    #[serde(default)]
    pub encounter_id: Option<Uuid>,
    pub code: Coding,
    #[serde(default)]
    pub outcome: Option<String>,
    /// A clinician of the tenant, when one performed it.
    #[serde(default)]
    pub performer_id: Option<Uuid>,
    /// RFC 3339 with a time zone; defaults to now.
    #[serde(default)]
    pub performed_at: Option<String>,
    /// FHIR elements Salus does not model, kept with the procedure (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub fhir_elements: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct ProcedureFacts {
    pub now: DateTime<Utc>,
    pub patient_open: bool,
    pub encounter_ok: bool,
    pub performer_known: bool,
}

#[derive(Debug, Clone)]
pub enum ProcedureCommand {
    Record {
        id: Uuid,
        input: ProcedureInput,
        facts: ProcedureFacts,
    },
    EnterInError {
        reason: String,
    },
    /// Keep other FHIR elements (`None`: unchanged, an empty object: none any more) and,
    /// with `enter_in_error`, withdraw it for that reason, in one event; no change at all
    /// is no event.
    Revise {
        fhir_elements: Option<Value>,
        enter_in_error: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Withdrawn {
    pub reason: String,
    /// Since schema version 2: the kept FHIR elements after the withdrawal, when they
    /// changed with it (an empty object: none any more).
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
    /// Version 2 added the optional `fhir_elements` and made the performer optional (a
    /// version 1 payload reads as it is).
    pub enum ProcedureEvent {
        Recorded(Procedure) = "procedure.recorded" @ 2,
        EnteredInError(Withdrawn) = "procedure.entered_in_error" @ 2,
        Revised(Revised) = "procedure.revised",
    }
}

fn checked_reason(reason: &str) -> Result<String, DomainError> {
    let r = reason.trim();
    if r.is_empty() || r.chars().count() > 1000 {
        return Err(DomainError::invalid(
            "reason",
            "a reason (1-1000 characters) is required",
        ));
    }
    Ok(r.to_owned())
}

pub const ACTIONS: &[&str] = &["enter-in-error"];

impl Aggregate for Procedure {
    const STREAM_TYPE: &'static str = "procedure";
    type Command = ProcedureCommand;
    type Event = ProcedureEvent;

    fn decide(
        state: Option<&Self>,
        command: &ProcedureCommand,
    ) -> Result<Vec<ProcedureEvent>, DomainError> {
        match (state, command) {
            (None, ProcedureCommand::Record { id, input, facts }) => {
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
                if let Some(performer) = input.performer_id
                    && !facts.performer_known
                {
                    return Err(DomainError::invalid(
                        "performer_id",
                        format!("clinician {performer} does not exist in this tenant"),
                    ));
                }
                let mut code = input.code.clone();
                if code.system.trim() == SNOMED {
                    code.code = parse_sctid(&code.code)?;
                }
                let code = code.checked()?;
                let performed_at = match &input.performed_at {
                    Some(t) => super::interaction::parse_instant("performed_at", t)?,
                    None => facts.now,
                };
                if performed_at > facts.now + Duration::minutes(5) {
                    return Err(DomainError::invalid(
                        "performed_at",
                        "performed_at is in the future",
                    ));
                }
                let outcome = match input.outcome.as_deref().map(str::trim) {
                    None | Some("") => None,
                    Some(o) if o.chars().count() > 1000 || o.chars().any(char::is_control) => {
                        return Err(DomainError::invalid(
                            "outcome",
                            "outcome must be 1-1000 printable characters",
                        ));
                    }
                    Some(o) => Some(o.to_owned()),
                };
                Ok(vec![ProcedureEvent::Recorded(Procedure {
                    id: *id,
                    patient_id: input.patient_id,
                    encounter_id: input.encounter_id,
                    code,
                    outcome,
                    performer_id: input.performer_id,
                    performed_at,
                    status: ProcedureStatus::Completed,
                    status_reason: None,
                    fhir_elements: super::fhir_elements(input.fhir_elements.as_ref())?,
                })])
            }
            (Some(_), ProcedureCommand::Record { .. }) => {
                Err(DomainError::Rule("procedure already recorded".into()))
            }
            (None, _) => Err(DomainError::NotFound("procedure".into())),
            (Some(p), ProcedureCommand::EnterInError { reason }) => {
                if p.status == ProcedureStatus::EnteredInError {
                    return Err(DomainError::IllegalTransition {
                        action: "enter-in-error".into(),
                        from: "entered_in_error".into(),
                        allowed: "completed".into(),
                    });
                }
                Ok(vec![ProcedureEvent::EnteredInError(Withdrawn {
                    reason: checked_reason(reason)?,
                    fhir_elements: None,
                })])
            }
            (
                Some(p),
                ProcedureCommand::Revise {
                    fhir_elements,
                    enter_in_error,
                },
            ) => {
                let kept = match fhir_elements {
                    None => None,
                    Some(f) => Some(
                        super::fhir_elements(Some(f))?
                            .unwrap_or_else(|| Value::Object(Default::default())),
                    ),
                };
                let now = p
                    .fhir_elements
                    .clone()
                    .unwrap_or_else(|| Value::Object(Default::default()));
                let kept = kept.filter(|k| *k != now);
                match enter_in_error {
                    Some(_) if p.status == ProcedureStatus::EnteredInError => {
                        Err(DomainError::IllegalTransition {
                            action: "enter-in-error".into(),
                            from: "entered_in_error".into(),
                            allowed: "completed".into(),
                        })
                    }
                    Some(reason) => Ok(vec![ProcedureEvent::EnteredInError(Withdrawn {
                        reason: checked_reason(reason)?,
                        fhir_elements: kept,
                    })]),
                    None if p.status == ProcedureStatus::EnteredInError && kept.is_some() => {
                        Err(DomainError::Rule(
                            "this procedure was entered in error; record a new one".into(),
                        ))
                    }
                    None => Ok(kept
                        .map(|k| ProcedureEvent::Revised(Revised { fhir_elements: k }))
                        .into_iter()
                        .collect()),
                }
            }
        }
    }

    fn evolve(state: Option<Self>, event: &ProcedureEvent) -> Option<Self> {
        match (state, event) {
            (_, ProcedureEvent::Recorded(p)) => Some(p.clone()),
            (Some(mut p), ProcedureEvent::EnteredInError(w)) => {
                p.status = ProcedureStatus::EnteredInError;
                p.status_reason = Some(w.reason.clone());
                keep(&mut p, w.fhir_elements.as_ref());
                Some(p)
            }
            (Some(mut p), ProcedureEvent::Revised(r)) => {
                keep(&mut p, Some(&r.fhir_elements));
                Some(p)
            }
            (None, _) => None,
        }
    }

    fn decode_event(
        event_type: &str,
        payload: &Value,
    ) -> Result<ProcedureEvent, serde_json::Error> {
        ProcedureEvent::decode(event_type, payload)
    }

    /// Version 2 added the optional `fhir_elements` (and an absent performer): a version 1
    /// payload is a version 2 one.
    fn upcast(event_type: &str, from: i32, payload: Value) -> Result<Value, String> {
        if from == 1
            && matches!(
                event_type,
                "procedure.recorded" | "procedure.entered_in_error"
            )
        {
            Ok(payload)
        } else {
            Err(format!(
                "no upcaster from schema version {from} of '{event_type}'"
            ))
        }
    }
}

/// The kept elements after a change that carries them (an empty object: none).
fn keep(p: &mut Procedure, kept: Option<&Value>) {
    if let Some(k) = kept {
        p.fhir_elements = Some(k.clone()).filter(|k| k.as_object().is_some_and(|m| !m.is_empty()));
    }
}

impl Projected for Procedure {
    const RESOURCE_TYPE: &'static str = "procedure";

    fn search_rows(&self) -> Vec<SearchRow> {
        let mut rows = vec![
            SearchRow::new("patient", self.patient_id.to_string()),
            SearchRow::token("code", &self.code.system, self.code.code.clone()),
            SearchRow::new("performed_at", format_instant(&self.performed_at)),
        ];
        if let Some(p) = self.performer_id {
            rows.push(SearchRow::new("performer", p.to_string()));
        }
        rows.extend(super::fhir_view::rows(Self::STREAM_TYPE, self));
        rows
    }
}

/// Record a procedure: the patient open, the encounter (when named) the patient's, the
/// performer a clinician of the tenant.
pub async fn record(
    services: &crate::service::Services,
    ctx: &salus_kernel::TenantContext,
    input: ProcedureInput,
    idempotency: Option<crate::service::Idempotency<'_>>,
) -> Result<crate::service::Current<Procedure>, crate::service::ServiceError> {
    let patient_open = super::patient_open(services, ctx, input.patient_id).await?;
    let encounter_ok =
        super::encounter_of_patient(services, ctx, input.encounter_id, input.patient_id).await?;
    let performer_known = match input.performer_id {
        None => true,
        Some(p) => services
            .load::<crate::staff::Clinician>(ctx, p)
            .await?
            .is_some(),
    };
    let id = Uuid::now_v7();
    services
        .create::<Procedure, _>(
            ctx,
            id,
            move |_, now| {
                Ok(ProcedureCommand::Record {
                    id,
                    input,
                    facts: ProcedureFacts {
                        now,
                        patient_open,
                        encounter_ok,
                        performer_known,
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

    #[test]
    fn sctids_are_verhoeff_checked() {
        for ok in ["80146002", "260385009", "22298006", "38341003", "73211009"] {
            assert!(parse_sctid(ok).is_ok(), "{ok}");
        }
        for bad in ["80146003", "12345", "0123456", "abc123456"] {
            assert!(parse_sctid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn version_1_events_read_and_a_revision_keeps_or_withdraws_in_one_event() {
        let v1 = serde_json::json!({
            "id": Uuid::nil(), "patient_id": Uuid::nil(),
            "code": {"system": SNOMED, "code": "80146002"},
            "performer_id": Uuid::nil(), "performed_at": "2024-01-01T00:00:00Z",
            "status": "completed",
        });
        let ev = Procedure::decode_stored("procedure.recorded", 1, &v1).unwrap();
        let p = Procedure::evolve(None, &ev).unwrap();
        assert_eq!(p.performer_id, Some(Uuid::nil()));
        assert_eq!(p.fhir_elements, None);
        let kept = serde_json::json!({"note": [{"text": "ok"}]});
        let cmd = ProcedureCommand::Revise {
            fhir_elements: Some(kept.clone()),
            enter_in_error: Some("wrong patient".into()),
        };
        let events = Procedure::decide(Some(&p), &cmd).unwrap();
        assert_eq!(events.len(), 1);
        let after = Procedure::evolve(Some(p.clone()), &events[0]).unwrap();
        assert_eq!(after.status, ProcedureStatus::EnteredInError);
        assert_eq!(after.fhir_elements, Some(kept));
        assert!(Procedure::decide(Some(&after), &cmd).is_err());
        let same = ProcedureCommand::Revise {
            fhir_elements: None,
            enter_in_error: None,
        };
        assert!(Procedure::decide(Some(&p), &same).unwrap().is_empty());
    }
}

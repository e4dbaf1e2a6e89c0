//! FHIR Procedure ⇄ the clinical Procedure aggregate.
//!
//! Modelled: `status` (completed, entered-in-error; the reason of a withdrawal is the
//! extension [`STATUS_REASON`]), `code` (its first coding: SNOMED CT with its check digit,
//! or a local system), `subject` (`Patient/<id>`), `encounter` (`Encounter/<id>` of a
//! Salus encounter of the patient; a reference that names no Salus id is kept as sent),
//! the performer (the first `performer`'s `actor` when it is `Practitioner/<id>` of a
//! Salus clinician; other performers are kept as sent), when it was performed
//! (`performedDateTime`, or the start of `performedPeriod`, the period kept as sent), and
//! the text of `outcome`. Every other element (category, reasonCode, reasonReference,
//! bodySite, note, an outcome's codings, …) is kept as sent in the aggregate's
//! `fhir_elements` and merged back on read.
//!
//! A procedure is recorded `completed`; an update changes only the kept elements, or
//! withdraws it (`entered-in-error`, as a delete does). The code, the patient, the
//! encounter, the performer, the time and the outcome cannot change (enter it in error
//! and record a new one).

use crate::datatypes::{self, *};
use crate::outcome::Issue;
use chrono::{DateTime, Utc};
use salus_domain::clinical::observation::Coding;
use salus_domain::clinical::procedure::{
    Procedure, ProcedureCommand, ProcedureInput, ProcedureStatus, SNOMED, parse_sctid,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// The kept element marking a procedure sent without any `performed[x]`: the domain's
/// time (when it was recorded) is then not rendered.
pub const NOT_PERFORMED_AT: &str = "salus:performed[x].absent";

/// The FHIR status of a procedure's state.
pub fn status_code(s: ProcedureStatus) -> &'static str {
    match s {
        ProcedureStatus::Completed => "completed",
        ProcedureStatus::EnteredInError => "entered-in-error",
    }
}

/// The kept elements whose names `pick` takes.
fn kept_part(m: Option<&Map<String, Value>>, pick: impl Fn(&str) -> bool) -> Vec<(String, Value)> {
    m.map(|m| {
        m.iter()
            .filter(|(k, _)| pick(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

fn performed_key(k: &str) -> bool {
    k.starts_with("performed") || k == NOT_PERFORMED_AT
}

/// The Procedure an aggregate is: `version` and `updated` make its `meta` (`None` for the
/// search index, which has no version).
pub fn to_fhir(p: &Procedure, version: Option<(i64, DateTime<Utc>)>) -> Value {
    let mut r = json!({
        "resourceType": "Procedure",
        "id": p.id.to_string(),
        "status": status_code(p.status),
    });
    if let Some((v, at)) = version {
        r["meta"] = datatypes::meta(v, at);
    }
    let kept = p.fhir_elements.as_ref().and_then(Value::as_object);
    let part = |k: &str| kept.and_then(|m| m.get(k));
    r["code"] = concept(&p.code, part("code"));
    r["subject"] = reference("Patient", p.patient_id, part("subject"));
    if let Some(e) = p.encounter_id {
        r["encounter"] = reference("Encounter", e, part("encounter"));
    }
    if kept_part(kept, performed_key).is_empty() {
        r["performedDateTime"] = json!(date_time(p.performed_at));
    }
    let mut performers: Vec<Value> = part("performer")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(c) = p.performer_id {
        let actor = json!({ "actor": { "reference": format!("Practitioner/{c}") } });
        match performers.first_mut() {
            Some(first) => merge(first, &actor),
            None => performers.push(actor),
        }
    }
    if !performers.is_empty() {
        r["performer"] = Value::Array(performers);
    }
    if let Some(o) = &p.outcome {
        let mut outcome = json!({ "text": o });
        if let Some(rest) = part("outcome") {
            merge(&mut outcome, rest);
        }
        r["outcome"] = outcome;
    }
    if let Some(m) = kept {
        let mut rest = m.clone();
        for k in ["code", "subject", "performer", NOT_PERFORMED_AT] {
            rest.remove(k);
        }
        if p.encounter_id.is_some() {
            rest.remove("encounter");
        }
        if p.outcome.is_some() {
            rest.remove("outcome");
        }
        merge(&mut r, &Value::Object(rest));
    }
    if let Some(reason) = &p.status_reason {
        let ext = status_reason_extension(reason);
        match r.get_mut("extension").and_then(Value::as_array_mut) {
            Some(a) => a.push(ext),
            None => r["extension"] = json!([ext]),
        }
    }
    r
}

/// What a FHIR Procedure says, in the aggregate's terms.
#[derive(Debug, Clone)]
pub struct ProcedureWrite {
    /// The resource's `id`, if it has one.
    pub id: Option<String>,
    /// The FHIR status (`completed`, `entered-in-error`).
    pub status: String,
    /// The [`STATUS_REASON`] extension.
    pub reason: Option<String>,
    pub patient_id: Uuid,
    /// `Encounter/<uuid>`, when the `encounter` element names one by id.
    pub encounter_id: Option<Uuid>,
    pub code: Coding,
    pub outcome: Option<String>,
    /// `Practitioner/<uuid>` of the first performer's actor.
    pub performer_id: Option<Uuid>,
    pub performed_at: Option<DateTime<Utc>>,
    /// Every element not modelled (and the parts of modelled ones the domain does not
    /// keep).
    pub kept: Map<String, Value>,
}

impl ProcedureWrite {
    /// The input of a new procedure.
    pub fn input(&self) -> ProcedureInput {
        ProcedureInput {
            patient_id: self.patient_id,
            encounter_id: self.encounter_id,
            code: self.code.clone(),
            outcome: self.outcome.clone(),
            performer_id: self.performer_id,
            performed_at: self.performed_at.map(|t| t.to_rfc3339()),
            fhir_elements: Some(Value::Object(self.kept.clone())),
        }
    }
}

/// Read a FHIR Procedure: structural validation first, then what the aggregate keeps. The
/// domain still checks the values (SNOMED CT check digits, a time not in the future, the
/// patient, encounter and performer known) when it decides.
pub fn from_fhir(r: &Value) -> Result<ProcedureWrite, Vec<Issue>> {
    let issues = crate::validate::validate(r);
    if !issues.is_empty() {
        return Err(issues);
    }
    let Some(obj) = r.as_object() else {
        return Err(vec![invalid("Procedure", "a Procedure is a JSON object")]);
    };
    let mut o = obj.clone();
    let id = o.get("id").and_then(Value::as_str).map(str::to_owned);
    strip_managed(&mut o);
    let mut issues = Vec::new();
    let reason = take_status_reason(&mut o, "Procedure").unwrap_or_else(|e| {
        issues.push(e);
        None
    });
    let status = o
        .remove("status")
        .and_then(|s| s.as_str().map(str::to_owned))
        .unwrap_or_default();
    if !matches!(status.as_str(), "completed" | "entered-in-error") {
        issues.push(refused(
            "Procedure.status",
            format!("status '{status}' is not kept by Salus: a procedure is recorded completed, and withdrawn as entered-in-error"),
        ));
    }
    let code = match o.remove("code") {
        Some(c) => match split_concept(&c, "Procedure.code") {
            Ok((coding, rest)) => {
                if let Some(rest) = rest {
                    o.insert("code".into(), rest);
                }
                Some(coding)
            }
            Err(e) => {
                issues.push(e);
                None
            }
        },
        None => {
            issues.push(required(
                "Procedure.code",
                "Salus keeps a coded procedure: code needs a coding",
            ));
            None
        }
    };
    let patient_id = take_required_reference(
        &mut o,
        "subject",
        "Patient",
        "Procedure",
        "Salus keeps procedures of a patient: subject is Patient/<id>",
        &mut issues,
    );
    // An encounter named by a Salus id is the aggregate's (the domain checks it is the
    // patient's); any other reference is kept as sent.
    let encounter_id = match o.get("encounter") {
        Some(e) => match split_reference(e, "Encounter", "Procedure.encounter") {
            Ok((id, rest)) => {
                match rest {
                    Some(rest) => o.insert("encounter".into(), rest),
                    None => o.remove("encounter"),
                };
                Some(id)
            }
            Err(_) => None,
        },
        None => None,
    };
    let performer_id = take_performer(&mut o);
    let performed_at = take_performed(&mut o);
    let outcome = take_outcome(&mut o);
    match (issues.is_empty(), code, patient_id) {
        (true, Some(code), Some(patient_id)) => Ok(ProcedureWrite {
            id,
            status,
            reason,
            patient_id,
            encounter_id,
            code,
            outcome,
            performer_id,
            performed_at,
            kept: o,
        }),
        _ => Err(issues),
    }
}

/// The clinician of the first performer (`actor` `Practitioner/<uuid>`); the performers
/// stay in `performer`, the first without its actor's reference.
fn take_performer(o: &mut Map<String, Value>) -> Option<Uuid> {
    let list = o.get_mut("performer")?.as_array_mut()?;
    let first = list.first_mut()?.as_object_mut()?;
    let r = first.get("actor")?.get("reference")?.as_str()?;
    let id = Uuid::parse_str(r.strip_prefix("Practitioner/")?).ok()?;
    if let Some(Value::Object(actor)) = first.get_mut("actor") {
        actor.remove("reference");
        if actor.is_empty() {
            first.remove("actor");
        }
    }
    if list.len() == 1 && list[0].as_object().is_some_and(Map::is_empty) {
        o.remove("performer");
    }
    Some(id)
}

/// When it was performed: `performedDateTime` (kept as sent too when the rendering would
/// write it otherwise), or the start of `performedPeriod` (kept as sent); any other
/// performed[x] is kept as sent, none is marked [`NOT_PERFORMED_AT`].
fn take_performed(o: &mut Map<String, Value>) -> Option<DateTime<Utc>> {
    if let Some(v) = o.get("performedDateTime") {
        let sent = v.as_str().unwrap_or("").to_owned();
        // A partial date (`2019-05`) is kept as sent; the aggregate's time is then when
        // it was recorded.
        let at = DateTime::parse_from_rfc3339(sent.trim())
            .ok()
            .map(|t| t.with_timezone(&Utc))?;
        if date_time(at) == sent {
            o.remove("performedDateTime");
        }
        return Some(at);
    }
    if let Some(p) = o.get("performedPeriod") {
        // A start that is a partial date is kept as sent, as above.
        let start = p.get("start").and_then(Value::as_str)?;
        return parse_date_time(start, "Procedure.performedPeriod.start").ok();
    }
    if !o.keys().any(|k| k.starts_with("performed")) {
        o.insert(NOT_PERFORMED_AT.into(), json!(true));
    }
    None
}

/// The text of `outcome` as the domain keeps it (1-1000 printable characters, no
/// surrounding space); the rest of the concept stays.
fn take_outcome(o: &mut Map<String, Value>) -> Option<String> {
    let outcome = o.get_mut("outcome")?.as_object_mut()?;
    let text = outcome.get("text")?.as_str()?;
    if text.is_empty()
        || text.trim() != text
        || text.chars().count() > 1000
        || text.chars().any(char::is_control)
    {
        return None;
    }
    let text = text.to_owned();
    outcome.remove("text");
    if outcome.is_empty() {
        o.remove("outcome");
    }
    Some(text)
}

/// The code as the domain keeps it (SNOMED CT identifiers checked and normalised).
fn checked_code(c: &Coding) -> Option<Coding> {
    let mut c = c.clone();
    if c.system.trim() == SNOMED {
        c.code = parse_sctid(&c.code).ok()?;
    }
    c.checked().ok()
}

/// The command a FHIR update of `current` is: `None` when it changes nothing. Only the
/// kept elements change, or it is withdrawn (`entered-in-error`).
pub fn update_command(
    current: &Procedure,
    w: &ProcedureWrite,
) -> Result<Option<ProcedureCommand>, Vec<Issue>> {
    let fixed = "cannot change: enter the procedure in error and record a new one";
    let mut issues = Vec::new();
    if checked_code(&w.code).as_ref() != Some(&current.code) {
        issues.push(refused("Procedure.code", format!("the code {fixed}")));
    }
    if w.patient_id != current.patient_id {
        issues.push(refused("Procedure.subject", format!("the subject {fixed}")));
    }
    if w.encounter_id != current.encounter_id {
        issues.push(refused(
            "Procedure.encounter",
            format!("the encounter {fixed}"),
        ));
    }
    if w.performer_id != current.performer_id {
        issues.push(refused(
            "Procedure.performer",
            format!("the performer {fixed}"),
        ));
    }
    let held = current.fhir_elements.as_ref().and_then(Value::as_object);
    if w.performed_at.is_some_and(|t| t != current.performed_at)
        || kept_part(Some(&w.kept), performed_key) != kept_part(held, performed_key)
    {
        issues.push(refused(
            "Procedure.performed[x]",
            format!("when it was performed {fixed}"),
        ));
    }
    if w.outcome != current.outcome {
        issues.push(refused("Procedure.outcome", format!("the outcome {fixed}")));
    }
    let withdraw = w.status == "entered-in-error";
    if !withdraw && current.status == ProcedureStatus::EnteredInError {
        issues.push(refused(
            "Procedure.status",
            "a procedure entered in error stays so; record a new one",
        ));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let kept = Value::Object(w.kept.clone());
    let unchanged = kept == current.fhir_elements.clone().unwrap_or_else(|| json!({}));
    let enter_in_error =
        (withdraw && current.status != ProcedureStatus::EnteredInError).then(|| {
            w.reason
                .clone()
                .unwrap_or_else(|| DEFAULT_REASON.to_owned())
        });
    if unchanged && enter_in_error.is_none() {
        return Ok(None);
    }
    Ok(Some(ProcedureCommand::Revise {
        fhir_elements: Some(kept),
        enter_in_error,
    }))
}

/// The withdrawal a FHIR delete is.
pub fn delete_command() -> ProcedureCommand {
    ProcedureCommand::EnterInError {
        reason: DEFAULT_REASON.to_owned(),
    }
}

/// The FHIRPath of a field the domain names in an error.
pub fn path_of_field(field: &str) -> String {
    match field {
        "patient_id" => "Procedure.subject".into(),
        "encounter_id" => "Procedure.encounter".into(),
        "performer_id" => "Procedure.performer.actor".into(),
        "code.code" => "Procedure.code.coding[0].code".into(),
        "code.system" => "Procedure.code.coding[0].system".into(),
        "performed_at" => "Procedure.performed[x]".into(),
        "outcome" => "Procedure.outcome".into(),
        "reason" => format!("Procedure.extension('{STATUS_REASON}')"),
        "action" | "status" => "Procedure.status".into(),
        _ => "Procedure".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use salus_domain::clinical::procedure::ProcedureFacts;
    use salus_kernel::{Aggregate, DomainError};

    const PATIENT: &str = "Patient/0190c3a0-0000-7000-8000-000000000001";
    const DOCTOR: &str = "Practitioner/0190c3a0-0000-7000-8000-000000000002";
    const VISIT: &str = "Encounter/0190c3a0-0000-7000-8000-000000000003";

    fn sample() -> Value {
        json!({
            "resourceType": "Procedure",
            "status": "completed",
            "category": {"coding": [{"system": SNOMED, "code": "387713003", "display": "Surgical procedure"}]},
            "code": {"coding": [{"system": SNOMED, "code": "80146002", "display": "Appendectomy"}], "text": "Appendectomy"},
            "subject": {"reference": PATIENT},
            "encounter": {"reference": VISIT},
            "performedPeriod": {"start": "2024-05-01T10:00:00Z", "end": "2024-05-01T11:00:00Z"},
            "performer": [{"function": {"text": "surgeon"}, "actor": {"reference": DOCTOR, "display": "Dr B"}},
                          {"actor": {"display": "an assistant"}}],
            "outcome": {"coding": [{"system": SNOMED, "code": "385669000", "display": "Successful"}], "text": "successful"},
            "reasonCode": [{"text": "appendicitis"}],
        })
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn recorded(w: &ProcedureWrite) -> Result<Procedure, DomainError> {
        let cmd = ProcedureCommand::Record {
            id: Uuid::nil(),
            input: w.input(),
            facts: ProcedureFacts {
                now: now(),
                patient_open: true,
                encounter_ok: true,
                performer_known: true,
            },
        };
        let events = Procedure::decide(None, &cmd)?;
        Ok(events.iter().fold(None, Procedure::evolve).unwrap())
    }

    fn back(p: &Procedure) -> Value {
        let mut r = to_fhir(p, None);
        r.as_object_mut().unwrap().remove("id");
        r
    }

    #[test]
    fn a_procedure_reads_back_as_sent() {
        let w = from_fhir(&sample()).unwrap();
        let p = recorded(&w).unwrap();
        assert_eq!(
            p.performer_id.map(|u| u.to_string()).as_deref(),
            Some(&DOCTOR[13..])
        );
        assert_eq!(
            p.encounter_id.map(|u| u.to_string()).as_deref(),
            Some(&VISIT[10..])
        );
        assert_eq!(p.outcome.as_deref(), Some("successful"));
        assert_eq!(date_time(p.performed_at), "2024-05-01T10:00:00Z");
        assert_eq!(back(&p), sample());
        assert!(update_command(&p, &w).unwrap().is_none());
        // performedDateTime, no performer, no outcome; then without any performed[x].
        let mut r = sample();
        let o = r.as_object_mut().unwrap();
        for k in ["performedPeriod", "performer", "outcome", "encounter"] {
            o.remove(k);
        }
        o.insert("performedDateTime".into(), json!("2024-05-01T10:00:00Z"));
        let p = recorded(&from_fhir(&r).unwrap()).unwrap();
        assert_eq!(p.performer_id, None);
        assert_eq!(back(&p), r);
        r.as_object_mut().unwrap().remove("performedDateTime");
        let p = recorded(&from_fhir(&r).unwrap()).unwrap();
        assert_eq!(back(&p), r);
    }

    #[test]
    fn what_the_aggregate_cannot_hold_is_refused_naming_the_element() {
        let mut r = sample();
        r["status"] = json!("in-progress");
        let e = from_fhir(&r).unwrap_err();
        assert_eq!(e[0].expression.as_deref(), Some("Procedure.status"));
        let mut r = sample();
        r.as_object_mut().unwrap().remove("code");
        let e = from_fhir(&r).unwrap_err();
        assert_eq!(e[0].expression.as_deref(), Some("Procedure.code"));
        // A wrong SNOMED CT check digit: the domain names the code.
        let mut r = sample();
        r["code"]["coding"][0]["code"] = json!("80146003");
        match recorded(&from_fhir(&r).unwrap()) {
            Err(DomainError::Invalid { field, .. }) => assert_eq!(
                path_of_field(field.as_deref().unwrap()),
                "Procedure.code.coding[0].code"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_update_keeps_other_elements_or_withdraws_but_never_edits() {
        let w = from_fhir(&sample()).unwrap();
        let p = recorded(&w).unwrap();
        let mut r = sample();
        r["note"] = json!([{"text": "uneventful"}]);
        let cmd = update_command(&p, &from_fhir(&r).unwrap())
            .unwrap()
            .unwrap();
        let events = Procedure::decide(Some(&p), &cmd).unwrap();
        let after = events
            .iter()
            .fold(Some(p.clone()), Procedure::evolve)
            .unwrap();
        assert_eq!(back(&after), r);
        r["status"] = json!("entered-in-error");
        r["extension"] = json!([status_reason_extension("wrong patient")]);
        let cmd = update_command(&after, &from_fhir(&r).unwrap())
            .unwrap()
            .unwrap();
        let events = Procedure::decide(Some(&after), &cmd).unwrap();
        assert_eq!(events.len(), 1);
        let withdrawn = events
            .iter()
            .fold(Some(after.clone()), Procedure::evolve)
            .unwrap();
        assert_eq!(withdrawn.status, ProcedureStatus::EnteredInError);
        assert_eq!(back(&withdrawn), r);
        for (k, v) in [
            (
                "code",
                json!({"coding": [{"system": SNOMED, "code": "22298006"}]}),
            ),
            ("performedPeriod", json!({"start": "2024-05-02T10:00:00Z"})),
            ("outcome", json!({"text": "failed"})),
        ] {
            let mut r = sample();
            r[k] = v;
            let e = update_command(&p, &from_fhir(&r).unwrap()).unwrap_err();
            assert!(
                e[0].expression
                    .as_deref()
                    .unwrap()
                    .starts_with("Procedure."),
                "{k}"
            );
        }
    }
}

//! FHIR Encounter ⇄ the clinical Encounter aggregate.
//!
//! Modelled: `status` (planned ⇄ scheduled, in-progress ⇄ in_progress, finished ⇄
//! completed, cancelled ⇄ cancelled; an archived encounter is `finished` with the
//! extension [`ARCHIVED`], and a finished one sent with it is archived), `class` (v3
//! ActCode: IMP ⇄ inpatient, AMB ⇄ outpatient, EMER ⇄ emergency, VR ⇄ virtual, HH ⇄
//! home), `subject` (`Patient/<id>`), the clinician (the first `participant` whose
//! `individual` is `Practitioner/<id>` of a Salus clinician: Salus keeps no encounter
//! without one, requirements/000), the department (`serviceProvider`:
//! `Organization/<id>` of a Salus department), `period` (its start is the planned start
//! while planned or cancelled, else when it started; its end when it finished), and the
//! reason of a cancellation (the extension [`STATUS_REASON`]). Every other element (type,
//! reasonCode, location, hospitalization, the other participants, a planned end, …) is
//! kept as sent in the aggregate's `fhir_elements` and merged back on read.
//!
//! A create records the encounter in the state it is in (planned, in progress since
//! `period.start`, finished between `period.start` and `period.end`, cancelled). An update
//! moves it along the domain's transition table (planned → in-progress → finished →
//! archived, planned → cancelled; a start or end the aggregate has not yet got is taken
//! from `period`) and keeps the other elements; the patient, the clinician, the class,
//! the department and a start or end already held cannot change. Encounters are never
//! deleted.

use crate::datatypes::{self, *};
use crate::outcome::Issue;
use chrono::{DateTime, Utc};
use salus_domain::clinical::encounter::{
    Documented, Encounter, EncounterCommand, EncounterInput, EncounterStatus, EncounterType,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// The code system of `Encounter.class` (the R4 binding).
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// The extension marking an archived encounter (`valueBoolean` true on a finished one).
pub const ARCHIVED: &str = "urn:salus:fhir:extension:encounter-archived";

/// The kept element saying at which place of `participant` the clinician stands, when it
/// is not the first.
pub const CLINICIAN_AT: &str = "salus:participant";

/// The ActCode class of an encounter type.
pub fn class_code(t: EncounterType) -> &'static str {
    match t {
        EncounterType::Inpatient => "IMP",
        EncounterType::Outpatient => "AMB",
        EncounterType::Emergency => "EMER",
        EncounterType::Virtual => "VR",
        EncounterType::Home => "HH",
    }
}

fn type_of_class(code: &str) -> Option<EncounterType> {
    Some(match code {
        "IMP" => EncounterType::Inpatient,
        "AMB" => EncounterType::Outpatient,
        "EMER" => EncounterType::Emergency,
        "VR" => EncounterType::Virtual,
        "HH" => EncounterType::Home,
        _ => return None,
    })
}

/// The FHIR status of an encounter's state.
pub fn status_code(s: EncounterStatus) -> &'static str {
    match s {
        EncounterStatus::Scheduled => "planned",
        EncounterStatus::InProgress => "in-progress",
        EncounterStatus::Completed | EncounterStatus::Archived => "finished",
        EncounterStatus::Cancelled => "cancelled",
    }
}

/// Whether the start of the period is the planned start (not yet, or never, started).
fn planned(s: EncounterStatus) -> bool {
    matches!(s, EncounterStatus::Scheduled | EncounterStatus::Cancelled)
}

fn ended(s: EncounterStatus) -> bool {
    matches!(s, EncounterStatus::Completed | EncounterStatus::Archived)
}

fn push_extension(r: &mut Value, ext: Value) {
    match r.get_mut("extension").and_then(Value::as_array_mut) {
        Some(a) => a.push(ext),
        None => r["extension"] = json!([ext]),
    }
}

/// The Encounter an aggregate is: `version` and `updated` make its `meta` (`None` for the
/// search index, which has no version).
pub fn to_fhir(e: &Encounter, version: Option<(i64, DateTime<Utc>)>) -> Value {
    let mut r = json!({
        "resourceType": "Encounter",
        "id": e.id.to_string(),
        "status": status_code(e.status),
    });
    if let Some((v, at)) = version {
        r["meta"] = datatypes::meta(v, at);
    }
    let kept = e.fhir_elements.as_ref().and_then(Value::as_object);
    let part = |k: &str| kept.and_then(|m| m.get(k));
    let mut class = json!({ "system": ACT_CODE, "code": class_code(e.encounter_type) });
    if let Some(rest) = part("class") {
        merge(&mut class, rest);
    }
    r["class"] = class;
    r["subject"] = reference("Patient", e.patient_id, part("subject"));
    // The clinician, at its place among the other participants (the kept list holds its
    // entry, without the reference, at that place).
    let clinician =
        json!({ "individual": { "reference": format!("Practitioner/{}", e.clinician_id) } });
    let mut participants: Vec<Value> = part("participant")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let at = part(CLINICIAN_AT)
        .and_then(Value::as_u64)
        .map_or(0, |i| i as usize);
    match participants.get_mut(at) {
        Some(p) => merge(p, &clinician),
        None => participants.push(clinician),
    }
    r["participant"] = Value::Array(participants);
    let start = if planned(e.status) {
        e.scheduled_for
    } else {
        e.start_time
    };
    let mut period = Map::new();
    if let Some(s) = start {
        period.insert("start".into(), json!(date_time(s)));
    }
    if let Some(end) = e.end_time.filter(|_| ended(e.status)) {
        period.insert("end".into(), json!(date_time(end)));
    }
    let end = e.end_time.filter(|_| ended(e.status));
    let mut period = Value::Object(period);
    if let Some(mut rest) = part("period").cloned() {
        // A start or end kept as it was spelled (`+02:00`, a fraction) while it is still
        // the instant the aggregate holds.
        if let Some(m) = rest.as_object_mut() {
            for (k, held) in [("start", start), ("end", end)] {
                let sent = m.get(k).and_then(Value::as_str).map(|s| {
                    DateTime::parse_from_rfc3339(s)
                        .ok()
                        .map(|t| t.with_timezone(&Utc))
                });
                if let (Some(sent), Some(held)) = (sent, held)
                    && sent != Some(held)
                {
                    m.remove(k);
                }
            }
        }
        merge(&mut period, &rest);
    }
    if period.as_object().is_some_and(|m| !m.is_empty()) {
        r["period"] = period;
    }
    if let Some(d) = e.department_id {
        r["serviceProvider"] = reference("Organization", d, part("serviceProvider"));
    }
    if let Some(m) = kept {
        let mut rest = m.clone();
        for k in ["class", "subject", "participant", "period", CLINICIAN_AT] {
            rest.remove(k);
        }
        if e.department_id.is_some() {
            rest.remove("serviceProvider");
        }
        merge(&mut r, &Value::Object(rest));
    }
    if e.status == EncounterStatus::Archived {
        push_extension(&mut r, json!({ "url": ARCHIVED, "valueBoolean": true }));
    }
    if let Some(reason) = e
        .cancel_reason
        .as_deref()
        .filter(|_| e.status == EncounterStatus::Cancelled)
    {
        push_extension(&mut r, status_reason_extension(reason));
    }
    r
}

/// What a FHIR Encounter says, in the aggregate's terms.
#[derive(Debug, Clone)]
pub struct EncounterWrite {
    /// The resource's `id`, if it has one.
    pub id: Option<String>,
    pub status: EncounterStatus,
    pub encounter_type: EncounterType,
    pub patient_id: Uuid,
    pub clinician_id: Uuid,
    pub department_id: Option<Uuid>,
    /// `period.start`, `period.end` as instants.
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// The [`STATUS_REASON`] extension (why it was cancelled).
    pub reason: Option<String>,
    /// Every element not modelled (and the parts of modelled ones the domain does not
    /// keep), the period's start and end apart.
    pub kept: Map<String, Value>,
    /// The period as sent, for the parts the status does not model (a planned end).
    period_sent: Map<String, Value>,
}

impl EncounterWrite {
    /// The start the aggregate keeps as such (not a planned one).
    fn started_at(&self) -> Option<DateTime<Utc>> {
        self.start.filter(|_| !planned(self.status))
    }

    /// The end the aggregate keeps (that of a finished encounter).
    fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.end.filter(|_| ended(self.status))
    }

    /// The kept elements once the status is this write's: the period without what the
    /// aggregate holds of it.
    fn kept_now(&self) -> Map<String, Value> {
        let mut kept = self.kept.clone();
        let mut period = self.period_sent.clone();
        // What the aggregate holds is rendered from it; a spelling it would not render
        // (`+02:00`, a fraction) is kept beside it.
        let rendered = |k: &str, t: Option<DateTime<Utc>>| {
            t.is_some_and(|t| period.get(k).and_then(Value::as_str) == Some(&date_time(t)))
        };
        let (start_as_rendered, end_as_rendered) =
            (rendered("start", self.start), rendered("end", self.end));
        if start_as_rendered {
            period.remove("start");
        }
        if ended(self.status) && end_as_rendered {
            period.remove("end");
        }
        if let Some(p) = nonempty(period) {
            kept.insert("period".into(), p);
        }
        kept
    }

    /// The input of a new encounter and the state it is documented in.
    pub fn input(&self) -> (EncounterInput, Documented) {
        let input = EncounterInput {
            patient_id: self.patient_id,
            clinician_id: self.clinician_id,
            encounter_type: self.encounter_type.as_str().to_owned(),
            department_id: self.department_id,
            scheduled_for: self
                .start
                .filter(|_| planned(self.status))
                .map(|t| t.to_rfc3339()),
            fhir_elements: Some(Value::Object(self.kept_now())),
        };
        let documented = Documented {
            status: self.status,
            start_time: self.started_at(),
            end_time: self.ended_at(),
            reason: self.reason.clone(),
        };
        (input, documented)
    }
}

/// Take the clinician out of `participant`: the first whose individual is
/// `Practitioner/<uuid>`.
fn take_clinician(o: &mut Map<String, Value>) -> Result<Uuid, Issue> {
    let missing = || {
        required(
            "Encounter.participant",
            "Salus keeps an encounter with its clinician: a participant whose individual is Practitioner/<id> of a Salus clinician",
        )
    };
    let Some(Value::Array(mut list)) = o.remove("participant") else {
        return Err(missing());
    };
    let found = list.iter().enumerate().find_map(|(i, p)| {
        let r = p.get("individual")?.get("reference")?.as_str()?;
        let id = Uuid::parse_str(r.strip_prefix("Practitioner/")?).ok()?;
        Some((i, id))
    });
    let Some((i, id)) = found else {
        o.insert("participant".into(), Value::Array(list));
        return Err(missing());
    };
    let mut entry_rest = list[i].as_object().cloned().unwrap_or_default();
    if let Some(Value::Object(ind)) = entry_rest.get_mut("individual") {
        ind.remove("reference");
        if ind.is_empty() {
            entry_rest.remove("individual");
        }
    }
    list[i] = Value::Object(entry_rest);
    if i > 0 {
        o.insert(CLINICIAN_AT.into(), json!(i));
    }
    // The clinician alone, with nothing beside its reference: nothing to keep.
    if list != [json!({})] {
        o.insert("participant".into(), Value::Array(list));
    }
    Ok(id)
}

/// Read a FHIR Encounter: structural validation first, then what the aggregate keeps. The
/// domain still decides (the patient open, the clinician active, the department active,
/// times not in the future).
pub fn from_fhir(r: &Value) -> Result<EncounterWrite, Vec<Issue>> {
    let issues = crate::validate::validate(r);
    if !issues.is_empty() {
        return Err(issues);
    }
    let Some(obj) = r.as_object() else {
        return Err(vec![invalid("Encounter", "an Encounter is a JSON object")]);
    };
    let mut o = obj.clone();
    let id = o.get("id").and_then(Value::as_str).map(str::to_owned);
    strip_managed(&mut o);
    let mut issues = Vec::new();
    let reason = take_status_reason(&mut o, "Encounter").unwrap_or_else(|e| {
        issues.push(e);
        None
    });
    let archived = take_archived(&mut o).unwrap_or_else(|e| {
        issues.push(e);
        false
    });
    let status_text = o
        .remove("status")
        .and_then(|s| s.as_str().map(str::to_owned))
        .unwrap_or_default();
    let status = match (status_text.as_str(), archived) {
        ("planned", false) => Some(EncounterStatus::Scheduled),
        ("in-progress", false) => Some(EncounterStatus::InProgress),
        ("finished", false) => Some(EncounterStatus::Completed),
        ("finished", true) => Some(EncounterStatus::Archived),
        ("cancelled", false) => Some(EncounterStatus::Cancelled),
        (_, true) => {
            issues.push(invalid(
                format!("Encounter.extension('{ARCHIVED}')"),
                "only a finished encounter is archived",
            ));
            None
        }
        (other, _) => {
            issues.push(refused(
                "Encounter.status",
                format!("status '{other}' is not kept by Salus: planned, in-progress, finished or cancelled"),
            ));
            None
        }
    };
    let encounter_type = match o.remove("class") {
        Some(Value::Object(mut c)) => {
            let system = c.remove("system");
            let code = c.remove("code");
            let t = match (
                system.as_ref().and_then(Value::as_str),
                code.as_ref().and_then(Value::as_str),
            ) {
                (Some(ACT_CODE), Some(code)) => type_of_class(code),
                _ => None,
            };
            match t {
                Some(t) => {
                    if !c.is_empty() {
                        o.insert("class".into(), Value::Object(c));
                    }
                    Some(t)
                }
                None => {
                    issues.push(refused(
                        "Encounter.class",
                        format!("Salus keeps the class as a code of {ACT_CODE}: IMP, AMB, EMER, VR or HH"),
                    ));
                    None
                }
            }
        }
        _ => {
            issues.push(required("Encounter.class", "an Encounter needs a class"));
            None
        }
    };
    let patient_id = take_required_reference(
        &mut o,
        "subject",
        "Patient",
        "Encounter",
        "Salus keeps encounters of a patient: subject is Patient/<id>",
        &mut issues,
    );
    let clinician_id = take_clinician(&mut o).map_err(|e| issues.push(e)).ok();
    let department_id = match o.get("serviceProvider") {
        Some(s)
            if s.get("reference")
                .and_then(Value::as_str)
                .is_some_and(|r| r.starts_with("Organization/")) =>
        {
            match split_reference(s, "Organization", "Encounter.serviceProvider") {
                Ok((d, rest)) => {
                    match rest {
                        Some(rest) => o.insert("serviceProvider".into(), rest),
                        None => o.remove("serviceProvider"),
                    };
                    Some(d)
                }
                Err(e) => {
                    issues.push(e);
                    None
                }
            }
        }
        _ => None,
    };
    let mut period_sent = Map::new();
    let (mut start, mut end) = (None, None);
    if let Some(p) = o.remove("period") {
        match p {
            Value::Object(m) => {
                for (k, slot) in [("start", &mut start), ("end", &mut end)] {
                    if let Some(v) = m.get(k) {
                        match parse_date_time(
                            v.as_str().unwrap_or(""),
                            &format!("Encounter.period.{k}"),
                        ) {
                            Ok(t) => *slot = Some(t),
                            Err(e) => issues.push(e),
                        }
                    }
                }
                period_sent = m;
            }
            _ => issues.push(invalid("Encounter.period", "a Period is a JSON object")),
        }
    }
    if let (Some(s), Some(e)) = (start, end)
        && e < s
    {
        issues.push(invalid(
            "Encounter.period.end",
            "the period ends before it starts (R4 per-1)",
        ));
    }
    match (
        issues.is_empty(),
        status,
        encounter_type,
        patient_id,
        clinician_id,
    ) {
        (true, Some(status), Some(encounter_type), Some(patient_id), Some(clinician_id)) => {
            Ok(EncounterWrite {
                id,
                status,
                encounter_type,
                patient_id,
                clinician_id,
                department_id,
                start,
                end,
                reason,
                kept: o,
                period_sent,
            })
        }
        _ => Err(issues),
    }
}

/// Whether the resource carries [`ARCHIVED`] (taken out of its extensions).
fn take_archived(o: &mut Map<String, Value>) -> Result<bool, Issue> {
    let Some(Value::Array(exts)) = o.get_mut("extension") else {
        return Ok(false);
    };
    let mut archived = Ok(false);
    exts.retain(|x| {
        if x.get("url").and_then(Value::as_str) != Some(ARCHIVED) {
            return true;
        }
        archived = match x.get("valueBoolean").and_then(Value::as_bool) {
            Some(b) => Ok(b),
            None => Err(invalid(
                format!("Encounter.extension('{ARCHIVED}')"),
                "the archived extension carries a valueBoolean",
            )),
        };
        false
    });
    if exts.is_empty() {
        o.remove("extension");
    }
    archived
}

/// The command a FHIR update of `current` is: `None` when it changes nothing. The status
/// moves along the domain's table and the kept elements change; the patient, the clinician,
/// the class, the department, a planned start while planned, and a start or end already
/// held cannot.
pub fn update_command(
    current: &Encounter,
    w: &EncounterWrite,
    now: DateTime<Utc>,
) -> Result<Option<EncounterCommand>, Vec<Issue>> {
    let fixed = "cannot change through an update";
    let mut issues = Vec::new();
    if w.patient_id != current.patient_id {
        issues.push(refused("Encounter.subject", format!("the subject {fixed}")));
    }
    if w.clinician_id != current.clinician_id {
        issues.push(refused(
            "Encounter.participant",
            format!(
                "the clinician (the participant Practitioner/{}) {fixed}",
                current.clinician_id
            ),
        ));
    }
    if w.encounter_type != current.encounter_type {
        issues.push(refused("Encounter.class", format!("the class {fixed}")));
    }
    if w.department_id != current.department_id {
        issues.push(refused(
            "Encounter.serviceProvider",
            format!("the department (serviceProvider) {fixed}"),
        ));
    }
    if planned(w.status) && planned(current.status) && w.start != current.scheduled_for {
        issues.push(refused(
            "Encounter.period.start",
            format!("the planned start {fixed}"),
        ));
    }
    if let (Some(held), Some(sent)) = (current.start_time, w.started_at())
        && held != sent
    {
        issues.push(refused(
            "Encounter.period.start",
            format!("the start ({}) {fixed}", date_time(held)),
        ));
    }
    if let (Some(held), Some(sent)) = (current.end_time, w.ended_at())
        && held != sent
    {
        issues.push(refused(
            "Encounter.period.end",
            format!("the end ({}) {fixed}", date_time(held)),
        ));
    }
    if current.status == EncounterStatus::Cancelled
        && w.status == EncounterStatus::Cancelled
        && w.reason != current.cancel_reason
    {
        issues.push(refused(
            format!("Encounter.extension('{STATUS_REASON}')"),
            format!("the reason of the cancellation {fixed}"),
        ));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let kept = w.kept_now();
    let held = kept_of(&current.fhir_elements);
    if w.status == current.status && kept == held {
        return Ok(None);
    }
    Ok(Some(EncounterCommand::Revise {
        to: w.status,
        start: w.started_at().filter(|_| current.start_time.is_none()),
        end: w.ended_at().filter(|_| current.end_time.is_none()),
        reason: w.reason.clone(),
        fhir_elements: Some(Value::Object(kept)),
        now,
    }))
}

/// The FHIRPath of a field the domain names in an error.
pub fn path_of_field(field: &str) -> String {
    match field {
        "patient_id" => "Encounter.subject".into(),
        "clinician_id" => "Encounter.participant".into(),
        "type" => "Encounter.class".into(),
        "department_id" => "Encounter.serviceProvider".into(),
        "scheduled_for" | "start_time" => "Encounter.period.start".into(),
        "end_time" => "Encounter.period.end".into(),
        "action" | "status" => "Encounter.status".into(),
        _ => "Encounter".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use salus_domain::clinical::encounter::ScheduleFacts;
    use salus_kernel::{Aggregate, DomainError};

    const PATIENT: &str = "Patient/0190c3a0-0000-7000-8000-000000000001";
    const DOCTOR: &str = "Practitioner/0190c3a0-0000-7000-8000-000000000002";

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn finished() -> Value {
        json!({
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"},
            "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "185349003", "display": "Encounter for check up"}], "text": "Check up"}],
            "subject": {"reference": PATIENT, "display": "Ada"},
            "participant": [
                {"type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "ATND"}]}],
                 "individual": {"reference": DOCTOR, "display": "Dr B"}},
                {"individual": {"display": "a student"}}
            ],
            "period": {"start": "2024-05-01T10:00:00Z", "end": "2024-05-01T10:30:00Z"},
            "location": [{"location": {"display": "Room 4"}}],
            "serviceProvider": {"display": "Clinic"},
        })
    }

    fn recorded(w: &EncounterWrite) -> Encounter {
        let (input, state) = w.input();
        let cmd = EncounterCommand::Record {
            id: Uuid::nil(),
            input,
            facts: ScheduleFacts {
                patient_open: true,
                clinician_active: true,
                department_active: true,
            },
            state,
            now: now(),
        };
        let events = Encounter::decide(None, &cmd).unwrap();
        events.iter().fold(None, Encounter::evolve).unwrap()
    }

    fn back(e: &Encounter) -> Value {
        let mut r = to_fhir(e, None);
        r.as_object_mut().unwrap().remove("id");
        r
    }

    fn apply(e: &Encounter, cmd: &EncounterCommand) -> Result<Encounter, DomainError> {
        let events = Encounter::decide(Some(e), cmd)?;
        Ok(events
            .iter()
            .fold(Some(e.clone()), Encounter::evolve)
            .unwrap())
    }

    #[test]
    fn an_encounter_reads_back_as_sent() {
        let w = from_fhir(&finished()).unwrap();
        let e = recorded(&w);
        assert_eq!(e.status, EncounterStatus::Completed);
        assert_eq!(e.encounter_type, EncounterType::Outpatient);
        assert_eq!(e.clinician_id.to_string(), DOCTOR[13..]);
        assert!(e.start_time.is_some() && e.end_time.is_some());
        assert_eq!(back(&e), finished());
        assert!(update_command(&e, &w, now()).unwrap().is_none());
        // A start spelled with an offset reads back so.
        let mut r = finished();
        r["period"]["start"] = json!("2024-05-01T12:00:00+02:00");
        let w = from_fhir(&r).unwrap();
        let e = recorded(&w);
        assert_eq!(
            e.start_time.map(date_time).as_deref(),
            Some("2024-05-01T10:00:00Z")
        );
        assert_eq!(back(&e), r);
        assert!(update_command(&e, &w, now()).unwrap().is_none());
        // The clinician second among the participants, and a planned encounter's end.
        let mut r = finished();
        r["status"] = json!("planned");
        r["participant"] = json!([{"individual": {"display": "a student"}}, {"individual": {"reference": DOCTOR}}]);
        let w = from_fhir(&r).unwrap();
        let e = recorded(&w);
        assert_eq!(e.status, EncounterStatus::Scheduled);
        assert!(e.scheduled_for.is_some() && e.start_time.is_none());
        assert_eq!(back(&e), r);
    }

    #[test]
    fn what_the_aggregate_cannot_hold_is_refused_naming_the_element() {
        let at = |r: &Value| -> Vec<String> {
            from_fhir(r)
                .unwrap_err()
                .into_iter()
                .filter_map(|i| i.expression)
                .collect()
        };
        let mut r = finished();
        r["participant"] = json!([{"individual": {"reference": "RelatedPerson/x"}}]);
        assert_eq!(at(&r), ["Encounter.participant"]);
        let mut r = finished();
        r["class"]["code"] = json!("PRENC");
        assert_eq!(at(&r), ["Encounter.class"]);
        let mut r = finished();
        r["status"] = json!("arrived");
        assert_eq!(at(&r), ["Encounter.status"]);
        let mut r = finished();
        r["period"]["start"] = json!("2024-05");
        assert_eq!(at(&r), ["Encounter.period.start"]);
        let mut r = finished();
        r["subject"] = json!({"reference": "Group/1"});
        assert_eq!(at(&r), ["Encounter.subject.reference"]);
        // A finished encounter without its end: the domain names the period's end.
        let mut r = finished();
        r["period"] = json!({"start": "2024-05-01T10:00:00Z"});
        let w = from_fhir(&r).unwrap();
        let (input, state) = w.input();
        let cmd = EncounterCommand::Record {
            id: Uuid::nil(),
            input,
            facts: ScheduleFacts {
                patient_open: true,
                clinician_active: true,
                department_active: true,
            },
            state,
            now: now(),
        };
        match Encounter::decide(None, &cmd) {
            Err(DomainError::Invalid { field, .. }) => {
                assert_eq!(
                    path_of_field(field.as_deref().unwrap()),
                    "Encounter.period.end"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_update_moves_the_status_along_the_table() {
        let mut r = finished();
        r["status"] = json!("planned");
        r["period"] = json!({"start": "2026-02-01T09:00:00Z"});
        let e = recorded(&from_fhir(&r).unwrap());
        // Started: the start is when it started (not the planned start).
        r["status"] = json!("in-progress");
        r["period"] = json!({"start": "2025-12-31T23:50:00Z"});
        let cmd = update_command(&e, &from_fhir(&r).unwrap(), now())
            .unwrap()
            .unwrap();
        let started = apply(&e, &cmd).unwrap();
        assert_eq!(started.status, EncounterStatus::InProgress);
        assert_eq!(back(&started), r);
        // Finished, then archived (the extension).
        r["status"] = json!("finished");
        r["period"]["end"] = json!("2025-12-31T23:59:00Z");
        let cmd = update_command(&started, &from_fhir(&r).unwrap(), now())
            .unwrap()
            .unwrap();
        let done = apply(&started, &cmd).unwrap();
        assert_eq!(back(&done), r);
        r["extension"] = json!([{"url": ARCHIVED, "valueBoolean": true}]);
        let cmd = update_command(&done, &from_fhir(&r).unwrap(), now())
            .unwrap()
            .unwrap();
        let archived = apply(&done, &cmd).unwrap();
        assert_eq!(archived.status, EncounterStatus::Archived);
        assert_eq!(back(&archived), r);
        // Back to planned: an illegal transition; a new start: refused.
        let mut again = r.clone();
        again.as_object_mut().unwrap().remove("extension");
        again["status"] = json!("planned");
        let cmd = update_command(&archived, &from_fhir(&again).unwrap(), now());
        let refused = match cmd {
            Ok(Some(c)) => apply(&archived, &c).is_err(),
            Ok(None) => false,
            Err(_) => true,
        };
        assert!(refused);
        let mut moved = r.clone();
        moved["period"]["start"] = json!("2025-12-31T23:00:00Z");
        let e = update_command(&archived, &from_fhir(&moved).unwrap(), now()).unwrap_err();
        assert_eq!(e[0].expression.as_deref(), Some("Encounter.period.start"));
        // Planned straight to cancelled with a reason.
        let mut p = finished();
        p["status"] = json!("planned");
        p.as_object_mut().unwrap().remove("period");
        let e = recorded(&from_fhir(&p).unwrap());
        p["status"] = json!("cancelled");
        p["extension"] = json!([status_reason_extension("patient unwell")]);
        let cmd = update_command(&e, &from_fhir(&p).unwrap(), now())
            .unwrap()
            .unwrap();
        let cancelled = apply(&e, &cmd).unwrap();
        assert_eq!(cancelled.cancel_reason.as_deref(), Some("patient unwell"));
        assert_eq!(back(&cancelled), p);
        p["extension"] = json!([status_reason_extension("another reason")]);
        assert!(update_command(&cancelled, &from_fhir(&p).unwrap(), now()).is_err());
    }
}

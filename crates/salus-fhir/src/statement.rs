//! FHIR Condition and AllergyIntolerance ⇄ the clinical Statement aggregate
//! (`Statement<ConditionKind>`, `Statement<AllergyKind>`): one mapping, told apart by a
//! [`Profile`].
//!
//! Modelled: `clinicalStatus` and `verificationStatus` (the coding of the HL7 code system
//! of each, `entered-in-error` ⇄ `entered_in_error`), `code` (its first coding's system,
//! code and display; what else that coding holds is kept, [`FIRST_CODING`]), the
//! patient (`Condition.subject`, `AllergyIntolerance.patient`: `Patient/<id>`),
//! `onsetDateTime` when it is a whole day or an instant, the text of the first `note`;
//! for allergies the first `category` and `criticality` (`unable-to-assess` ⇄
//! `unable_to_assess`). Every other element (a Condition's category, encounter,
//! abatement[x], recordedDate, an allergy's type, reaction, the other categories, an onset
//! the domain cannot hold such as `2019-05`, `onsetAge`, `onsetPeriod`, `onsetString`, …)
//! is kept as sent in the aggregate's `fhir_elements` and merged back on read, so a
//! resource reads back as it was sent apart from `id` and `meta`. A status the resource
//! leaves out is the domain's default (`active`, `unconfirmed`), and the kept elements
//! remember that it was left out ([`ABSENT`]) so it reads back without one while the
//! status stays that.
//!
//! The R4 invariants hold on what is rendered: an entered-in-error statement shows no
//! clinical status (con-5, ait-2), and a Condition shows its kept abatement only while it
//! is inactive, in remission or resolved (con-4). A resource that breaks them (con-4,
//! con-5, ait-1, ait-2) is refused, naming the element.
//!
//! An update changes the statuses and the kept elements ([`StatementCommand::Revise`]);
//! the code, the patient, the onset, the note, the category and the criticality cannot
//! change (enter it in error and record a new one). A delete is `entered-in-error`.

use crate::datatypes::{self, *};
use crate::outcome::Issue;
use chrono::{DateTime, NaiveDate, Utc};
use salus_domain::clinical::observation::Coding;
use salus_domain::clinical::procedure::{SNOMED, parse_sctid};
use salus_domain::clinical::statement::{
    AllergyKind, ConditionKind, Statement, StatementCommand, StatementInput, StatementKind,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// The kept element that says which statuses the resource left out, with the status the
/// domain took for each (`{"clinicalStatus": "active"}`): while the status is still that,
/// the rendering has none.
pub const ABSENT: &str = "salus:absent";

/// The kept element holding what the code's first coding has beyond system, code and
/// display (`version`, `userSelected`, extensions), merged back into that coding.
pub const FIRST_CODING: &str = "salus:code.coding[0]";

/// How a FHIR type spells a statement.
#[derive(Debug)]
pub struct Profile {
    pub fhir_type: &'static str,
    /// The element naming the patient (`subject`, `patient`).
    pub patient: &'static str,
    pub clinical_system: &'static str,
    pub verification_system: &'static str,
    /// The clinical status may be left out while not entered in error (R4 Condition);
    /// AllergyIntolerance requires one (ait-1).
    pub clinical_optional: bool,
    /// An AllergyIntolerance: category and criticality are the domain's.
    pub allergy: bool,
}

pub const CONDITION: Profile = Profile {
    fhir_type: "Condition",
    patient: "subject",
    clinical_system: "http://terminology.hl7.org/CodeSystem/condition-clinical",
    verification_system: "http://terminology.hl7.org/CodeSystem/condition-ver-status",
    clinical_optional: true,
    allergy: false,
};

pub const ALLERGY: Profile = Profile {
    fhir_type: "AllergyIntolerance",
    patient: "patient",
    clinical_system: "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
    verification_system: "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
    clinical_optional: false,
    allergy: true,
};

/// A statement kind with its FHIR spelling.
pub trait FhirKind: StatementKind {
    const PROFILE: &'static Profile;
}

impl FhirKind for ConditionKind {
    const PROFILE: &'static Profile = &CONDITION;
}

impl FhirKind for AllergyKind {
    const PROFILE: &'static Profile = &ALLERGY;
}

const EIE: &str = "entered_in_error";

/// A domain code (`entered_in_error`) as FHIR writes it (`entered-in-error`).
fn fhir_code(s: &str) -> String {
    s.replace('_', "-")
}

fn domain_code(s: &str) -> String {
    s.trim().replace('-', "_")
}

/// A Condition's clinical statuses under which its abatement holds (con-4).
const ABATED: &[&str] = &["inactive", "remission", "resolved"];

/// The coded status of system `system`, `code`: the concept as it was sent when that is
/// what it still says, else the bare coding.
fn status_concept(system: &str, code: &str, kept: Option<&Value>) -> Value {
    if let Some(k) = kept
        && coded_status(k, system).as_deref() == Some(code)
    {
        return k.clone();
    }
    json!({ "coding": [{ "system": system, "code": code }] })
}

/// The code of the coding of `system` in a CodeableConcept.
fn coded_status(v: &Value, system: &str) -> Option<String> {
    v.get("coding")?
        .as_array()?
        .iter()
        .find(|c| c.get("system").and_then(Value::as_str) == Some(system))?
        .get("code")?
        .as_str()
        .map(str::to_owned)
}

/// An onset as rendered: a day as it is, an instant in UTC.
fn onset_text(onset: &str) -> String {
    match DateTime::parse_from_rfc3339(onset) {
        Ok(t) => date_time(t.with_timezone(&Utc)),
        Err(_) => onset.to_owned(),
    }
}

/// The resource a statement is: `version` and `updated` make its `meta` (`None` for the
/// search index, which has no version).
pub fn to_fhir<K: FhirKind>(s: &Statement<K>, version: Option<(i64, DateTime<Utc>)>) -> Value {
    let p = K::PROFILE;
    let mut r = json!({ "resourceType": p.fhir_type, "id": s.id.to_string() });
    if let Some((v, at)) = version {
        r["meta"] = datatypes::meta(v, at);
    }
    let kept = s.fhir_elements.as_ref().and_then(Value::as_object);
    let part = |k: &str| kept.and_then(|m| m.get(k));
    let absent = |k: &str, now: &str| kept.is_some_and(|m| datatypes::absent(m, k, &json!(now)));
    let eie = s.verification_status == EIE;
    if !eie && !absent("clinicalStatus", &s.clinical_status) {
        r["clinicalStatus"] = status_concept(
            p.clinical_system,
            &fhir_code(&s.clinical_status),
            part("clinicalStatus"),
        );
    }
    if !absent("verificationStatus", &s.verification_status) {
        r["verificationStatus"] = status_concept(
            p.verification_system,
            &fhir_code(&s.verification_status),
            part("verificationStatus"),
        );
    }
    if let Some(c) = &s.category {
        r["category"] = json!([c]);
    }
    if let Some(c) = &s.criticality {
        r["criticality"] = json!(fhir_code(c));
    }
    r["code"] = concept(&s.code, part("code"));
    if let (Some(extra), Some(first)) = (part(FIRST_CODING), r["code"]["coding"].get_mut(0)) {
        merge(first, extra);
    }
    r[p.patient] = reference("Patient", s.patient_id, part(p.patient));
    if let Some(o) = &s.onset {
        r["onsetDateTime"] = json!(onset_text(o));
    }
    if let Some(n) = &s.note {
        let mut first = json!({ "text": n });
        let kept_notes = part("note").and_then(Value::as_array);
        if let Some(rest) = kept_notes.and_then(|a| a.first()) {
            merge(&mut first, rest);
        }
        let mut notes = vec![first];
        notes.extend(kept_notes.into_iter().flatten().skip(1).cloned());
        r["note"] = Value::Array(notes);
    }
    if let Some(m) = kept {
        let mut rest = m.clone();
        for k in [
            ABSENT,
            FIRST_CODING,
            "clinicalStatus",
            "verificationStatus",
            "code",
            p.patient,
        ] {
            rest.remove(k);
        }
        if s.note.is_some() {
            rest.remove("note");
        }
        if !p.allergy && (eie || !ABATED.contains(&s.clinical_status.as_str())) {
            rest.retain(|k, _| !k.starts_with("abatement"));
        }
        merge(&mut r, &Value::Object(rest));
    }
    r
}

/// What a FHIR Condition or AllergyIntolerance says, in the aggregate's terms.
#[derive(Debug, Clone)]
pub struct StatementWrite {
    /// The resource's `id`, if it has one.
    pub id: Option<String>,
    pub patient_id: Uuid,
    pub code: Coding,
    /// Domain spelling; `None`: the resource has none.
    pub clinical_status: Option<String>,
    pub verification_status: Option<String>,
    /// A day (`YYYY-MM-DD`) or an RFC 3339 instant.
    pub onset: Option<String>,
    pub category: Option<String>,
    pub criticality: Option<String>,
    pub note: Option<String>,
    /// Every element not modelled (and the parts of modelled ones the domain does not
    /// keep), without [`ABSENT`].
    pub kept: Map<String, Value>,
}

impl StatementWrite {
    /// The kept elements once the statuses are `clinical` and `verification` (what the
    /// domain holds after the write): with [`ABSENT`] for the statuses left out.
    fn kept_at(&self, clinical: &str, verification: &str) -> Map<String, Value> {
        let mut marks = Vec::new();
        if self.clinical_status.is_none() && verification != EIE {
            marks.push(("clinicalStatus", json!(clinical)));
        }
        if self.verification_status.is_none() {
            marks.push(("verificationStatus", json!(verification)));
        }
        datatypes::with_absent(self.kept.clone(), &marks)
    }

    /// The input of a new statement.
    pub fn input(&self) -> StatementInput {
        let clinical = self.clinical_status.as_deref().unwrap_or("active");
        let verification = self.verification_status.as_deref().unwrap_or("unconfirmed");
        StatementInput {
            patient_id: self.patient_id,
            code: self.code.clone(),
            clinical_status: Some(clinical.to_owned()),
            verification_status: Some(verification.to_owned()),
            onset: self.onset.clone(),
            category: self.category.clone(),
            criticality: self.criticality.clone(),
            note: self.note.clone(),
            fhir_elements: Some(Value::Object(self.kept_at(clinical, verification))),
        }
    }
}

/// Take `key` out of `o` as a coded status of `system` (domain spelling), keeping the
/// concept as sent when it holds more than that coding.
fn take_status(
    o: &mut Map<String, Value>,
    key: &str,
    system: &str,
    path: &str,
) -> Result<Option<String>, Issue> {
    let Some(v) = o.remove(key) else {
        return Ok(None);
    };
    let Some(code) = coded_status(&v, system) else {
        return Err(refused(
            format!("{path}.coding"),
            format!("Salus keeps this status as a coding of {system}"),
        ));
    };
    if v != json!({ "coding": [{ "system": system, "code": code }] }) {
        o.insert(key.into(), v);
    }
    Ok(Some(domain_code(&code)))
}

/// Read a FHIR Condition or AllergyIntolerance: structural validation first, then what the
/// aggregate keeps. The domain still checks the values (SNOMED CT check digits, status
/// codes, an onset not in the future) when it decides.
pub fn from_fhir<K: FhirKind>(r: &Value) -> Result<StatementWrite, Vec<Issue>> {
    let p = K::PROFILE;
    let t = p.fhir_type;
    let issues = crate::validate::validate(r);
    if !issues.is_empty() {
        return Err(issues);
    }
    let Some(obj) = r.as_object() else {
        return Err(vec![invalid(t, format!("a {t} is a JSON object"))]);
    };
    let mut o = obj.clone();
    let id = o.get("id").and_then(Value::as_str).map(str::to_owned);
    strip_managed(&mut o);
    let mut issues = Vec::new();
    let mut status = |o: &mut Map<String, Value>, key: &str, system: &str| {
        take_status(o, key, system, &format!("{t}.{key}")).unwrap_or_else(|e| {
            issues.push(e);
            None
        })
    };
    let clinical = status(&mut o, "clinicalStatus", p.clinical_system);
    let verification = status(&mut o, "verificationStatus", p.verification_system);
    let eie = verification.as_deref() == Some(EIE);
    if eie && clinical.is_some() {
        issues.push(invalid(
            format!("{t}.clinicalStatus"),
            format!(
                "a {t} entered in error has no clinicalStatus (R4 {})",
                if p.allergy { "ait-2" } else { "con-5" }
            ),
        ));
    }
    if !eie && clinical.is_none() && !p.clinical_optional {
        issues.push(required(
            format!("{t}.clinicalStatus"),
            format!("a {t} not entered in error needs a clinicalStatus (R4 ait-1)"),
        ));
    }
    if !p.allergy
        && o.keys().any(|k| k.starts_with("abatement"))
        && !clinical.as_deref().is_some_and(|c| ABATED.contains(&c))
    {
        issues.push(invalid(
            format!("{t}.abatement[x]"),
            "an abated Condition is inactive, in remission or resolved (R4 con-4)",
        ));
    }
    let code = match o.remove("code").map(first_coding_apart) {
        Some((c, extra)) => match split_concept(&c, &format!("{t}.code")) {
            Ok((coding, rest)) => {
                if let Some(rest) = rest {
                    o.insert("code".into(), rest);
                }
                if let Some(extra) = extra {
                    o.insert(FIRST_CODING.into(), extra);
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
                format!("{t}.code"),
                format!("Salus keeps a coded {t}: code needs a coding"),
            ));
            None
        }
    };
    let path = format!("{t}.{}", p.patient);
    let patient_id = take_required_reference(
        &mut o,
        p.patient,
        "Patient",
        t,
        format!("Salus keeps statements about a patient: {path} is Patient/<id>"),
        &mut issues,
    );
    let onset = take_onset(&mut o);
    let note = take_note(&mut o);
    let (category, criticality) = if p.allergy {
        let category = match o.remove("category") {
            Some(Value::Array(mut cs)) if !cs.is_empty() => {
                let first = cs.remove(0);
                if !cs.is_empty() {
                    o.insert("category".into(), Value::Array(cs));
                }
                first.as_str().map(str::to_owned)
            }
            Some(other) => {
                o.insert("category".into(), other);
                None
            }
            None => None,
        };
        let criticality = o
            .remove("criticality")
            .and_then(|c| c.as_str().map(domain_code));
        (category, criticality)
    } else {
        (None, None)
    };
    match (issues.is_empty(), code, patient_id) {
        (true, Some(code), Some(patient_id)) => Ok(StatementWrite {
            id,
            patient_id,
            code,
            clinical_status: clinical,
            verification_status: verification,
            onset,
            category,
            criticality,
            note,
            kept: o,
        }),
        _ => Err(issues),
    }
}

/// The concept with its first coding reduced to system, code and display, and what else
/// that coding held.
fn first_coding_apart(mut c: Value) -> (Value, Option<Value>) {
    let Some(first) = c
        .get_mut("coding")
        .and_then(Value::as_array_mut)
        .and_then(|a| a.first_mut())
        .and_then(Value::as_object_mut)
    else {
        return (c, None);
    };
    let mut extra = Map::new();
    first.retain(|k, v| {
        if matches!(k.as_str(), "system" | "code" | "display") {
            true
        } else {
            extra.insert(k.clone(), v.clone());
            false
        }
    });
    (c, nonempty(extra))
}

/// `onsetDateTime` as the domain keeps it (a whole day or an instant), the element kept as
/// sent too when the rendering would write it otherwise; any other onset is kept as sent.
fn take_onset(o: &mut Map<String, Value>) -> Option<String> {
    let sent = o.get("onsetDateTime")?.as_str()?.to_owned();
    let t = sent.trim();
    let onset = if NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok() && t.len() == 10 {
        t.to_owned()
    } else {
        let at = DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc);
        at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    };
    if onset_text(&onset) == sent {
        o.remove("onsetDateTime");
    }
    Some(onset)
}

/// The text of the first annotation, when the domain keeps it as sent (1-10,000
/// characters, no surrounding space); the annotations' other parts stay in `note`, the
/// first one's rest first (`{}` when it has none).
fn take_note(o: &mut Map<String, Value>) -> Option<String> {
    let notes = o.get("note")?.as_array()?;
    let first = notes.first()?.as_object()?;
    let text = first.get("text")?.as_str()?;
    if text.is_empty() || text.trim() != text || text.chars().count() > 10_000 {
        return None;
    }
    let text = text.to_owned();
    let mut rest = first.clone();
    rest.remove("text");
    let mut kept = vec![Value::Object(rest)];
    kept.extend(notes.iter().skip(1).cloned());
    if kept.len() == 1 && kept[0].as_object().is_some_and(Map::is_empty) {
        o.remove("note");
    } else {
        o.insert("note".into(), Value::Array(kept));
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

/// The kept elements whose names `pick` takes.
fn kept_part(m: Option<&Value>, pick: impl Fn(&str) -> bool) -> Vec<(&String, &Value)> {
    m.and_then(Value::as_object)
        .map(|m| m.iter().filter(|(k, _)| pick(k)).collect())
        .unwrap_or_default()
}

/// The command a FHIR update of `current` is: `None` when it changes nothing. The statuses
/// and the kept elements change (a revision); the code, the patient, the onset, the note,
/// the category and the criticality cannot.
pub fn update_command<K: FhirKind>(
    current: &Statement<K>,
    w: &StatementWrite,
) -> Result<Option<StatementCommand>, Vec<Issue>> {
    let p = K::PROFILE;
    let t = p.fhir_type;
    let fixed = format!("cannot change: enter the {t} in error and record a new one");
    let mut issues = Vec::new();
    if checked_code(&w.code).as_ref() != Some(&current.code) {
        issues.push(refused(format!("{t}.code"), format!("the code {fixed}")));
    }
    if w.patient_id != current.patient_id {
        issues.push(refused(
            format!("{t}.{}", p.patient),
            format!("the patient {fixed}"),
        ));
    }
    let wk = Value::Object(w.kept.clone());
    let onset = |k: &str| k.starts_with("onset");
    if w.onset.as_deref().map(onset_text) != current.onset.as_deref().map(onset_text)
        || kept_part(Some(&wk), onset) != kept_part(current.fhir_elements.as_ref(), onset)
    {
        issues.push(refused(
            format!("{t}.onset[x]"),
            format!("the onset {fixed}"),
        ));
    }
    let note = |k: &str| k == "note";
    if w.note != current.note
        || kept_part(Some(&wk), note) != kept_part(current.fhir_elements.as_ref(), note)
    {
        issues.push(refused(format!("{t}.note"), format!("the note {fixed}")));
    }
    if p.allergy {
        let category = |k: &str| k == "category";
        if w.category != current.category
            || kept_part(Some(&wk), category) != kept_part(current.fhir_elements.as_ref(), category)
        {
            issues.push(refused(
                format!("{t}.category"),
                format!("the category {fixed}"),
            ));
        }
        if w.criticality != current.criticality {
            issues.push(refused(
                format!("{t}.criticality"),
                format!("the criticality {fixed}"),
            ));
        }
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let clinical = w
        .clinical_status
        .clone()
        .unwrap_or_else(|| current.clinical_status.clone());
    let verification = w
        .verification_status
        .clone()
        .unwrap_or_else(|| current.verification_status.clone());
    let kept = w.kept_at(&clinical, &verification);
    let now = kept_of(&current.fhir_elements);
    if clinical == current.clinical_status
        && verification == current.verification_status
        && kept == now
    {
        return Ok(None);
    }
    Ok(Some(StatementCommand::Revise {
        clinical_status: Some(clinical),
        verification_status: Some(verification),
        fhir_elements: Some(Value::Object(kept)),
    }))
}

/// The withdrawal a FHIR delete is: the verification status entered in error.
pub fn delete_command() -> StatementCommand {
    StatementCommand::Revise {
        clinical_status: None,
        verification_status: Some(EIE.into()),
        fhir_elements: None,
    }
}

/// The FHIRPath of a field the domain names in an error.
pub fn path_of_field<K: FhirKind>(field: &str) -> String {
    let p = K::PROFILE;
    let t = p.fhir_type;
    match field {
        "patient_id" => format!("{t}.{}", p.patient),
        "code.code" => format!("{t}.code.coding[0].code"),
        "code.system" => format!("{t}.code.coding[0].system"),
        "clinical_status" => format!("{t}.clinicalStatus"),
        "verification_status" => format!("{t}.verificationStatus"),
        "onset" => format!("{t}.onset[x]"),
        "category" => format!("{t}.category"),
        "criticality" => format!("{t}.criticality"),
        "note" => format!("{t}.note"),
        _ => t.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use salus_domain::clinical::statement::{Allergy, Condition};
    use salus_kernel::Aggregate;

    const PATIENT: &str = "Patient/0190c3a0-0000-7000-8000-000000000001";

    fn condition() -> Value {
        json!({
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [{"system": CONDITION.clinical_system, "code": "resolved"}]},
            "verificationStatus": {"coding": [{"system": CONDITION.verification_system, "code": "confirmed", "display": "Confirmed"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
            "code": {"coding": [{"system": SNOMED, "code": "44054006", "display": "Diabetes mellitus type 2", "version": "http://snomed.info/sct/900000000000207008", "userSelected": true}], "text": "Type 2 diabetes"},
            "subject": {"reference": PATIENT, "display": "Ada"},
            "encounter": {"reference": "Encounter/abc"},
            "onsetDateTime": "2019-05-03",
            "abatementDateTime": "2021-01-01",
            "recordedDate": "2019-05-04T10:00:00Z",
            "note": [{"text": "diet controlled", "authorString": "Dr B"}, {"text": "second"}],
        })
    }

    fn allergy() -> Value {
        json!({
            "resourceType": "AllergyIntolerance",
            "clinicalStatus": {"coding": [{"system": ALLERGY.clinical_system, "code": "active"}]},
            "verificationStatus": {"coding": [{"system": ALLERGY.verification_system, "code": "confirmed"}]},
            "type": "allergy",
            "category": ["food", "medication"],
            "criticality": "unable-to-assess",
            "code": {"coding": [{"system": SNOMED, "code": "91935009", "display": "Allergy to peanut"}]},
            "patient": {"reference": PATIENT},
            "onsetDateTime": "2010-04-01T08:30:00+02:00",
            "reaction": [{"manifestation": [{"coding": [{"system": SNOMED, "code": "39579001"}]}], "severity": "severe"}],
        })
    }

    fn recorded<K: FhirKind>(w: &StatementWrite) -> Statement<K> {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cmd = StatementCommand::Record {
            id: Uuid::nil(),
            input: Box::new(w.input()),
            now,
            patient_open: true,
        };
        let events = Statement::<K>::decide(None, &cmd).unwrap();
        events.iter().fold(None, Statement::<K>::evolve).unwrap()
    }

    fn back<K: FhirKind>(s: &Statement<K>) -> Value {
        let mut r = to_fhir(s, None);
        r.as_object_mut().unwrap().remove("id");
        r
    }

    #[test]
    fn a_condition_and_an_allergy_read_back_as_sent() {
        let w = from_fhir::<ConditionKind>(&condition()).unwrap();
        let c: Condition = recorded(&w);
        assert_eq!(c.clinical_status, "resolved");
        assert_eq!(c.onset.as_deref(), Some("2019-05-03"));
        assert_eq!(c.note.as_deref(), Some("diet controlled"));
        assert_eq!(back(&c), condition());
        assert!(update_command(&c, &w).unwrap().is_none());

        let w = from_fhir::<AllergyKind>(&allergy()).unwrap();
        let a: Allergy = recorded(&w);
        assert_eq!(a.category.as_deref(), Some("food"));
        assert_eq!(a.criticality.as_deref(), Some("unable_to_assess"));
        assert_eq!(
            a.onset.as_deref().map(onset_text).as_deref(),
            Some("2010-04-01T06:30:00Z")
        );
        assert_eq!(back(&a), allergy());
        assert!(update_command(&a, &w).unwrap().is_none());
    }

    #[test]
    fn an_onset_or_status_the_domain_cannot_hold_is_kept_as_sent() {
        for onset in [
            json!({"onsetDateTime": "2019-05"}),
            json!({"onsetAge": {"value": 40, "unit": "a", "system": UCUM, "code": "a"}}),
            json!({"onsetString": "in childhood"}),
            json!({"onsetPeriod": {"start": "2019"}}),
        ] {
            let mut r = condition();
            let o = r.as_object_mut().unwrap();
            o.remove("onsetDateTime");
            o.remove("clinicalStatus");
            o.remove("verificationStatus");
            o.remove("abatementDateTime");
            merge(&mut r, &onset);
            let w = from_fhir::<ConditionKind>(&r).unwrap();
            let c: Condition = recorded(&w);
            assert_eq!(
                (c.onset.as_deref(), c.clinical_status.as_str()),
                (None, "active")
            );
            assert_eq!(back(&c), r);
        }
    }

    #[test]
    fn the_r4_invariants_hold_on_what_is_rendered() {
        let w = from_fhir::<ConditionKind>(&condition()).unwrap();
        let c: Condition = recorded(&w);
        // A recurrence: the abatement no longer holds (con-4).
        let mut again = c.clone();
        again.clinical_status = "recurrence".into();
        assert!(to_fhir(&again, None).get("abatementDateTime").is_none());
        // Entered in error: no clinical status (con-5).
        let mut eie = c.clone();
        eie.verification_status = EIE.into();
        let r = to_fhir(&eie, None);
        assert!(r.get("clinicalStatus").is_none() && r.get("abatementDateTime").is_none());
        assert_eq!(
            r["verificationStatus"]["coding"][0]["code"],
            "entered-in-error"
        );
        // What breaks them is refused, naming the element.
        let mut bad = condition();
        bad["clinicalStatus"]["coding"][0]["code"] = json!("active");
        let e = from_fhir::<ConditionKind>(&bad).unwrap_err();
        assert_eq!(e[0].expression.as_deref(), Some("Condition.abatement[x]"));
        let mut bad = allergy();
        bad.as_object_mut().unwrap().remove("clinicalStatus");
        let e = from_fhir::<AllergyKind>(&bad).unwrap_err();
        assert_eq!(
            e[0].expression.as_deref(),
            Some("AllergyIntolerance.clinicalStatus")
        );
    }

    #[test]
    fn an_update_revises_statuses_and_kept_elements_but_not_the_code() {
        let w = from_fhir::<AllergyKind>(&allergy()).unwrap();
        let a: Allergy = recorded(&w);
        let mut r = allergy();
        r["clinicalStatus"]["coding"][0]["code"] = json!("resolved");
        r["lastOccurrence"] = json!("2020-01-01");
        match update_command(&a, &from_fhir::<AllergyKind>(&r).unwrap()).unwrap() {
            Some(StatementCommand::Revise {
                clinical_status,
                fhir_elements,
                ..
            }) => {
                assert_eq!(clinical_status.as_deref(), Some("resolved"));
                assert_eq!(fhir_elements.unwrap()["lastOccurrence"], "2020-01-01");
            }
            other => panic!("{other:?}"),
        }
        let mut r = allergy();
        r["code"]["coding"][0]["code"] = json!("227493005");
        let e = update_command(&a, &from_fhir::<AllergyKind>(&r).unwrap()).unwrap_err();
        assert_eq!(e[0].expression.as_deref(), Some("AllergyIntolerance.code"));
        let mut r = allergy();
        r["onsetDateTime"] = json!("2011");
        let e = update_command(&a, &from_fhir::<AllergyKind>(&r).unwrap()).unwrap_err();
        assert_eq!(
            e[0].expression.as_deref(),
            Some("AllergyIntolerance.onset[x]")
        );
        // Entered in error through an update: no clinical status, and it reads back so.
        let mut r = allergy();
        r.as_object_mut().unwrap().remove("clinicalStatus");
        r["verificationStatus"]["coding"][0]["code"] = json!("entered-in-error");
        let cmd = update_command(&a, &from_fhir::<AllergyKind>(&r).unwrap())
            .unwrap()
            .unwrap();
        let events = Allergy::decide(Some(&a), &cmd).unwrap();
        let after = events
            .iter()
            .try_fold(a.clone(), |s, e| Allergy::evolve(Some(s), e))
            .unwrap();
        assert_eq!(back(&after), r);
    }
}

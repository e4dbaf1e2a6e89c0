//! FHIR Observation ⇄ the clinical Observation aggregate.
//!
//! Modelled: `status` (preliminary, final, amended, entered-in-error; `corrected` is read
//! as an amendment), `code` (its first coding), `subject` (`Patient/<id>`), `encounter`
//! (`Encounter/<id>` of a Salus encounter; otherwise kept as sent), `effectiveDateTime` or
//! `effectiveInstant` (an instant with a zone; an `effectivePeriod` or a partial date is
//! held as its first instant and kept as sent while that instant stands), and one value: `valueQuantity` (UCUM),
//! `valueCodeableConcept`, `valueString`, `valueBoolean` or `valueRange`; no value (a panel
//! whose components carry the values, a `dataAbsentReason`) or a value of another type
//! (`valueInteger`, `valueRatio`, `valueSampledData`, …) is the aggregate's untyped value,
//! the element kept as sent. The reason of an
//! amendment or withdrawal is the extension [`STATUS_REASON`]. Every other element
//! (category, issued, interpretation, referenceRange, note, component, …) is kept as sent
//! in the aggregate's `fhir_elements` and merged back on read. What the aggregate cannot
//! hold (an effective timing, a period with neither start nor end) is refused, naming the
//! element.

use crate::datatypes::{self, *};
use crate::outcome::Issue;
use chrono::{DateTime, Utc};
use salus_domain::clinical::observation::{
    Observation, ObservationCommand, ObservationInput, ObservationStatus, ObservationValue,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// The FHIR status of an observation's state.
pub fn status_code(s: ObservationStatus) -> &'static str {
    match s {
        ObservationStatus::Preliminary => "preliminary",
        ObservationStatus::Final => "final",
        ObservationStatus::Amended => "amended",
        ObservationStatus::EnteredInError => "entered-in-error",
    }
}

/// The Observation an aggregate is: `version` and `updated` make its `meta` (`None` for
/// the search index, which has no version).
pub fn to_fhir(o: &Observation, version: Option<(i64, DateTime<Utc>)>) -> Value {
    let mut r = json!({
        "resourceType": "Observation",
        "id": o.id.to_string(),
        "status": status_code(o.status),
    });
    if let Some((v, at)) = version {
        r["meta"] = datatypes::meta(v, at);
    }
    let kept = o.fhir_elements.as_ref().and_then(Value::as_object);
    let part = |k: &str| kept.and_then(|m| m.get(k));
    r["code"] = concept(&o.code, part("code"));
    r["subject"] = reference("Patient", o.patient_id, part("subject"));
    if let Some(e) = o.encounter_id {
        r["encounter"] = reference("Encounter", e, part("encounter"));
    }
    r["effectiveDateTime"] = json!(date_time(o.effective_at));
    let typed = match &o.value {
        ObservationValue::Quantity { value, unit } => Some((
            "valueQuantity",
            quantity(*value, unit, part("valueQuantity")),
        )),
        ObservationValue::Code { coding } => Some((
            "valueCodeableConcept",
            concept(coding, part("valueCodeableConcept")),
        )),
        ObservationValue::String { value } => Some(("valueString", json!(value))),
        ObservationValue::Boolean { value } => Some(("valueBoolean", json!(value))),
        // None, or kept as sent (merged below).
        ObservationValue::Untyped => None,
        ObservationValue::Range { low, high, unit } => {
            let rest = part("valueRange");
            let side = |k: &str, x: f64| quantity(x, unit, rest.and_then(|r| r.get(k)));
            Some((
                "valueRange",
                json!({ "low": side("low", *low), "high": side("high", *high) }),
            ))
        }
    };
    if let Some((key, value)) = typed {
        r[key] = value;
    }
    if let Some(m) = kept {
        let mut rest = m.clone();
        // An effective time sent as a period or a partial date is kept as sent while it
        // still says the instant held; the rendering's effectiveDateTime then gives way.
        for k in ["effectivePeriod", "effectiveDateTime"] {
            if let Some(v) = rest.get(k) {
                if effective_of(k, v) == Some(o.effective_at) {
                    if k == "effectivePeriod" {
                        r.as_object_mut().map(|r| r.remove("effectiveDateTime"));
                    }
                } else {
                    rest.remove(k);
                }
            }
        }
        for k in ["code", "subject", "encounter"].into_iter().chain(TYPED) {
            // Merged above (an encounter that is no Salus encounter is kept whole; an
            // untyped value is kept as sent).
            let merged = match k {
                "encounter" => o.encounter_id.is_some(),
                "code" | "subject" => true,
                _ => o.value != ObservationValue::Untyped,
            };
            if merged {
                rest.remove(k);
            }
        }
        merge(&mut r, &Value::Object(rest));
    }
    if let Some(reason) = &o.status_reason {
        let ext = status_reason_extension(reason);
        match r.get_mut("extension").and_then(Value::as_array_mut) {
            Some(a) => a.push(ext),
            None => r["extension"] = json!([ext]),
        }
    }
    r
}

/// The instant the aggregate holds for an effective time sent as `key`: a period's start
/// (else its end), a date-time with a zone, or a partial date (`2024`, `2024-05`,
/// `2024-05-01`) as its first instant in UTC.
fn effective_of(key: &str, v: &Value) -> Option<DateTime<Utc>> {
    let at = |s: &str| -> Option<DateTime<Utc>> {
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Some(t.with_timezone(&Utc));
        }
        let full = match s.len() {
            4 => format!("{s}-01-01"),
            7 => format!("{s}-01"),
            10 => s.to_owned(),
            _ => return None,
        };
        let day = chrono::NaiveDate::parse_from_str(&full, "%Y-%m-%d").ok()?;
        Some(day.and_hms_opt(0, 0, 0)?.and_utc())
    };
    match key {
        "effectivePeriod" => {
            let p = v.as_object()?;
            p.get("start")
                .or_else(|| p.get("end"))
                .and_then(Value::as_str)
                .and_then(at)
        }
        _ => v.as_str().and_then(at),
    }
}

/// What a FHIR Observation says, in the aggregate's terms.
#[derive(Debug, Clone)]
pub struct ObservationWrite {
    /// The resource's `id`, if it has one.
    pub id: Option<String>,
    /// The FHIR status (`final`, `amended`, `entered-in-error`, …).
    pub status: String,
    /// The [`STATUS_REASON`] extension.
    pub reason: Option<String>,
    pub patient_id: Uuid,
    /// `Encounter/<uuid>` of the `encounter` element, when it names one by id.
    pub encounter: Option<Uuid>,
    pub code: salus_domain::clinical::observation::Coding,
    pub value: ObservationValue,
    pub effective_at: Option<DateTime<Utc>>,
    /// Every element not modelled (and the parts of modelled ones the domain does not
    /// keep), the encounter not yet placed.
    pub kept: Map<String, Value>,
    /// The `encounter` element, whole, and what is left of it without its reference.
    encounter_element: Option<(Value, Option<Value>)>,
}

impl ObservationWrite {
    /// The input of a new observation; `encounter_known`: the encounter it names is a
    /// Salus encounter of the patient (else the element is kept as sent).
    pub fn input(&self, encounter_known: bool) -> ObservationInput {
        let (encounter_id, kept) = self.placed(encounter_known);
        ObservationInput {
            patient_id: self.patient_id,
            encounter_id,
            code: self.code.clone(),
            value: self.value.clone(),
            status: Some(
                if self.status == "preliminary" {
                    "preliminary"
                } else {
                    "final"
                }
                .into(),
            ),
            effective_at: self.effective_at.map(|t| t.to_rfc3339()),
            fhir_elements: Some(Value::Object(kept)),
        }
    }

    fn placed(&self, encounter_known: bool) -> (Option<Uuid>, Map<String, Value>) {
        let mut kept = self.kept.clone();
        let mut encounter_id = None;
        if let Some((whole, rest)) = &self.encounter_element {
            match (encounter_known, self.encounter) {
                (true, Some(e)) => {
                    encounter_id = Some(e);
                    if let Some(r) = rest {
                        kept.insert("encounter".into(), r.clone());
                    }
                }
                _ => {
                    kept.insert("encounter".into(), whole.clone());
                }
            }
        }
        (encounter_id, kept)
    }
}

/// Read a FHIR Observation: structural validation first, then what the aggregate keeps.
/// The domain still checks the values (LOINC check digits, UCUM units, dates not in the
/// future) when it decides.
pub fn from_fhir(r: &Value) -> Result<ObservationWrite, Vec<Issue>> {
    let issues = crate::validate::validate(r);
    if !issues.is_empty() {
        return Err(issues);
    }
    let Some(obj) = r.as_object() else {
        return Err(vec![invalid(
            "Observation",
            "an Observation is a JSON object",
        )]);
    };
    let mut o = obj.clone();
    let id = o.get("id").and_then(Value::as_str).map(str::to_owned);
    strip_managed(&mut o);
    let mut issues = Vec::new();
    let reason = take_status_reason(&mut o, "Observation").unwrap_or_else(|e| {
        issues.push(e);
        None
    });
    let status = o
        .remove("status")
        .and_then(|s| s.as_str().map(str::to_owned))
        .unwrap_or_default();
    if !matches!(
        status.as_str(),
        "preliminary" | "final" | "amended" | "corrected" | "entered-in-error"
    ) {
        issues.push(refused(
            "Observation.status",
            format!("status '{status}' is not kept by Salus: preliminary, final, amended, corrected or entered-in-error"),
        ));
    }
    let code = match o.remove("code") {
        Some(c) => match split_concept(&c, "Observation.code") {
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
        None => None,
    };
    let patient_id = take_required_reference(
        &mut o,
        "subject",
        "Patient",
        "Observation",
        "Salus keeps observations of a patient: subject is Patient/<id>",
        &mut issues,
    );
    let (encounter, encounter_element) = match o.remove("encounter") {
        Some(e) => match split_reference(&e, "Encounter", "Observation.encounter") {
            Ok((id, rest)) => (Some(id), Some((e, rest))),
            Err(_) => (None, Some((e, None))),
        },
        None => (None, None),
    };
    let mut effective_at = None;
    for k in ["effectiveDateTime", "effectiveInstant"] {
        if let Some(v) = o.remove(k) {
            match parse_date_time(v.as_str().unwrap_or(""), &format!("Observation.{k}")) {
                Ok(t) => effective_at = Some(t),
                Err(e) => match effective_of(k, &v) {
                    // A partial date: held as its first instant, kept as sent.
                    Some(t) => {
                        effective_at = Some(t);
                        o.insert(k.into(), v);
                    }
                    None => issues.push(e),
                },
            }
        }
    }
    if let Some(p) = o.get("effectivePeriod") {
        match effective_of("effectivePeriod", p) {
            Some(t) => effective_at = Some(t),
            None => issues.push(invalid(
                "Observation.effectivePeriod",
                "Salus holds an observation's time as an instant: the period needs a start or an end (a date or a date-time with a zone)",
            )),
        }
    }
    if o.contains_key("effectiveTiming") {
        issues.push(refused(
            "Observation.effectiveTiming",
            "Salus keeps when an observation held as an instant (effectiveDateTime, or a period or partial date kept as sent)",
        ));
    }
    let value = read_value(&mut o, &mut issues);
    match (issues.is_empty(), code, patient_id, value) {
        (true, Some(code), Some(patient_id), Some(value)) => Ok(ObservationWrite {
            id,
            status,
            reason,
            patient_id,
            encounter,
            code,
            value,
            effective_at,
            kept: o,
            encounter_element,
        }),
        _ => {
            if issues.is_empty() {
                issues.push(required("Observation.code", "an Observation needs a code"));
            }
            Err(issues)
        }
    }
}

/// The value[x] types the aggregate types.
const TYPED: [&str; 5] = [
    "valueQuantity",
    "valueCodeableConcept",
    "valueString",
    "valueBoolean",
    "valueRange",
];

fn read_value(o: &mut Map<String, Value>, issues: &mut Vec<Issue>) -> Option<ObservationValue> {
    let keys: Vec<String> = o
        .keys()
        .filter(|k| k.starts_with("value"))
        .cloned()
        .collect();
    // No value (a panel, an absent value) or one of a type the aggregate does not type:
    // untyped, the element kept as sent.
    let Some(key) = keys.first() else {
        return Some(ObservationValue::Untyped);
    };
    if !TYPED.contains(&key.as_str()) {
        return Some(ObservationValue::Untyped);
    }
    let path = format!("Observation.{key}");
    let v = o.remove(key.as_str())?;
    let keep = |o: &mut Map<String, Value>, rest: Option<Value>| {
        if let Some(r) = rest {
            o.insert(key.clone(), r);
        }
    };
    let out = match key.as_str() {
        "valueQuantity" => split_quantity(&v, &path).map(|(value, unit, rest)| {
            keep(o, rest);
            ObservationValue::Quantity { value, unit }
        }),
        "valueCodeableConcept" => split_concept(&v, &path).map(|(coding, rest)| {
            keep(o, rest);
            ObservationValue::Code { coding }
        }),
        "valueString" => Ok(ObservationValue::String {
            value: v.as_str().unwrap_or("").to_owned(),
        }),
        "valueBoolean" => Ok(ObservationValue::Boolean {
            value: v.as_bool().unwrap_or(false),
        }),
        "valueRange" => (|| {
            let side = |k: &str| {
                let p = format!("{path}.{k}");
                v.get(k)
                    .ok_or_else(|| required(&p, "Salus keeps a range with both low and high"))
                    .and_then(|q| split_quantity(q, &p))
            };
            let (low, lu, lrest) = side("low")?;
            let (high, hu, hrest) = side("high")?;
            if lu != hu {
                return Err(refused(
                    format!("{path}.high.code"),
                    "Salus keeps a range in one unit: low and high differ",
                ));
            }
            let mut rest = Map::new();
            if let Some(r) = lrest {
                rest.insert("low".into(), r);
            }
            if let Some(r) = hrest {
                rest.insert("high".into(), r);
            }
            keep(o, nonempty(rest));
            Ok(ObservationValue::Range {
                low,
                high,
                unit: lu,
            })
        })(),
        other => Err(refused(
            format!("Observation.{other}"),
            format!(
                "{other} is not a value Salus keeps: valueQuantity, valueCodeableConcept, valueString, valueBoolean or valueRange"
            ),
        )),
    };
    match out {
        Ok(v) => Some(v),
        Err(e) => {
            issues.push(e);
            None
        }
    }
}

/// The command a FHIR update of `current` is: `None` when it changes nothing. An
/// observation is never edited in place: a new value or new kept elements are an
/// amendment, `entered-in-error` a withdrawal; the code, the patient, the encounter and
/// the time cannot change (enter it in error and record a new one).
pub fn update_command(
    current: &Observation,
    w: &ObservationWrite,
    encounter_known: bool,
) -> Result<Option<ObservationCommand>, Vec<Issue>> {
    let (encounter_id, kept) = w.placed(encounter_known);
    let mut issues = Vec::new();
    let fixed = "cannot change: enter the observation in error and record a new one";
    let code = w.code.clone().checked().ok();
    if code.as_ref() != Some(&current.code) {
        issues.push(refused("Observation.code", format!("the code {fixed}")));
    }
    if w.patient_id != current.patient_id {
        issues.push(refused(
            "Observation.subject",
            format!("the subject {fixed}"),
        ));
    }
    if encounter_id != current.encounter_id {
        issues.push(refused(
            "Observation.encounter",
            format!("the encounter {fixed}"),
        ));
    }
    if w.effective_at.is_some_and(|t| t != current.effective_at) {
        issues.push(refused(
            "Observation.effective[x]",
            format!("the effective time {fixed}"),
        ));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let reason = w
        .reason
        .clone()
        .unwrap_or_else(|| DEFAULT_REASON.to_owned());
    if w.status == "entered-in-error" && current.status != ObservationStatus::EnteredInError {
        return Ok(Some(ObservationCommand::EnterInError { reason }));
    }
    let value_changed = w.value.clone().checked().ok().as_ref() != Some(&current.value);
    let kept = Some(Value::Object(kept)).filter(|k| k.as_object().is_some_and(|m| !m.is_empty()));
    if value_changed || kept != current.fhir_elements {
        return Ok(Some(ObservationCommand::Amend {
            value: w.value.clone(),
            reason,
            fhir_elements: Some(kept.unwrap_or_else(|| json!({}))),
        }));
    }
    let same = status_code(current.status) == w.status
        || (w.status == "corrected" && current.status == ObservationStatus::Amended);
    if same {
        Ok(None)
    } else {
        Err(vec![refused(
            "Observation.status",
            format!(
                "an observation that is {} cannot become {} unchanged: a new value is an amendment, a withdrawal is entered-in-error",
                status_code(current.status),
                w.status
            ),
        )])
    }
}

/// The FHIRPath of a field the domain names in an error.
pub fn path_of_field(field: &str) -> String {
    match field {
        "patient_id" => "Observation.subject".into(),
        "encounter_id" => "Observation.encounter".into(),
        "code.code" => "Observation.code.coding[0].code".into(),
        "code.system" => "Observation.code.coding[0].system".into(),
        "effective_at" => "Observation.effective[x]".into(),
        "status" => "Observation.status".into(),
        "reason" => format!("Observation.extension('{STATUS_REASON}')"),
        f if f.starts_with("value") => "Observation.value[x]".into(),
        _ => "Observation".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        json!({
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}], "text": "Heart rate"},
            "subject": {"reference": "Patient/0190c3a0-0000-7000-8000-000000000001"},
            "encounter": {"reference": "Encounter/0190c3a0-0000-7000-8000-000000000002"},
            "effectiveDateTime": "2024-05-01T10:00:00Z",
            "issued": "2024-05-01T10:05:00.000Z",
            "valueQuantity": {"value": 72, "unit": "beats/minute", "system": UCUM, "code": "/min"},
        })
    }

    fn recorded(w: &ObservationWrite, known: bool) -> Observation {
        let input = w.input(known);
        Observation {
            id: Uuid::nil(),
            patient_id: input.patient_id,
            encounter_id: input.encounter_id,
            code: input.code,
            value: input.value,
            status: ObservationStatus::Final,
            effective_at: w.effective_at.unwrap_or_default(),
            status_reason: None,
            fhir_elements: input.fhir_elements,
        }
    }

    #[test]
    fn an_observation_reads_back_as_sent_with_or_without_a_salus_encounter() {
        for known in [false, true] {
            let w = from_fhir(&sample()).unwrap();
            let o = recorded(&w, known);
            assert_eq!(o.encounter_id.is_some(), known);
            let mut back = to_fhir(&o, None);
            back.as_object_mut().unwrap().remove("id");
            assert_eq!(back, sample(), "known encounter: {known}");
            assert_eq!(update_command(&o, &w, known).unwrap().map(|_| ()), None);
        }
    }

    #[test]
    fn periods_and_partial_dates_are_held_as_their_first_instant_and_kept() {
        for (k, v, at) in [
            (
                "effectivePeriod",
                json!({"start": "2024-05-01T10:00:00+02:00", "end": "2024-05-02"}),
                "2024-05-01T08:00:00Z",
            ),
            (
                "effectivePeriod",
                json!({"end": "2024-05-02"}),
                "2024-05-02T00:00:00Z",
            ),
            (
                "effectiveDateTime",
                json!("2024-05"),
                "2024-05-01T00:00:00Z",
            ),
            ("effectiveDateTime", json!("2024"), "2024-01-01T00:00:00Z"),
        ] {
            let mut r = sample();
            r.as_object_mut().unwrap().remove("effectiveDateTime");
            r[k] = v.clone();
            let w = from_fhir(&r).unwrap();
            let at: DateTime<Utc> = at.parse().unwrap();
            assert_eq!(w.effective_at, Some(at), "{k} {v}");
            let mut o = recorded(&w, true);
            o.effective_at = at;
            let back = to_fhir(&o, None);
            assert_eq!(back[k], v, "{back}");
            if k == "effectivePeriod" {
                assert!(back.get("effectiveDateTime").is_none(), "{back}");
            }
            // Once the instant held changes, the kept form gives way.
            o.effective_at = at + chrono::Duration::hours(1);
            let back = to_fhir(&o, None);
            assert!(back.get("effectivePeriod").is_none(), "{back}");
            assert_eq!(back["effectiveDateTime"], json!(date_time(o.effective_at)));
        }
    }

    #[test]
    fn what_the_aggregate_cannot_hold_is_refused_naming_the_element() {
        let mut r = sample();
        r.as_object_mut().unwrap().remove("valueQuantity");
        r["effectivePeriod"] = json!({"id": "p"});
        r.as_object_mut().unwrap().remove("effectiveDateTime");
        let e = from_fhir(&r).unwrap_err();
        let at: Vec<_> = e.iter().filter_map(|i| i.expression.clone()).collect();
        assert!(
            at.contains(&"Observation.effectivePeriod".to_owned()),
            "{at:?}"
        );
        assert!(!at.contains(&"Observation.value[x]".to_owned()), "{at:?}");
        let mut r = sample();
        r["subject"] = json!({"reference": "Group/1"});
        let e = from_fhir(&r).unwrap_err();
        assert_eq!(
            e[0].expression.as_deref(),
            Some("Observation.subject.reference")
        );
    }

    #[test]
    fn panels_absent_and_untyped_values_read_back_as_sent() {
        let q = |v: i64| json!({"value": v, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"});
        let mut panel = sample();
        let o = panel.as_object_mut().unwrap();
        o.remove("valueQuantity");
        o["code"] = json!({"coding": [{"system": "http://loinc.org", "code": "85354-9"}]});
        o.insert("component".into(), json!([
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "valueQuantity": q(120)},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]}, "valueQuantity": q(80)}
        ]));
        let mut absent = sample();
        absent.as_object_mut().unwrap().remove("valueQuantity");
        absent["dataAbsentReason"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "not-performed"}]});
        let mut integer = sample();
        integer.as_object_mut().unwrap().remove("valueQuantity");
        integer["valueInteger"] = json!(3);
        let mut ratio = sample();
        ratio.as_object_mut().unwrap().remove("valueQuantity");
        ratio["valueRatio"] = json!({"numerator": {"value": 1}, "denominator": {"value": 128}});
        for sent in [panel, absent, integer, ratio] {
            let w = from_fhir(&sent).unwrap();
            assert_eq!(w.value, ObservationValue::Untyped);
            let o = recorded(&w, true);
            let mut back = to_fhir(&o, None);
            back.as_object_mut().unwrap().remove("id");
            assert_eq!(back, sent);
            assert_eq!(update_command(&o, &w, true).unwrap().map(|_| ()), None);
        }
    }

    #[test]
    fn an_update_amends_withdraws_or_is_refused() {
        let w = from_fhir(&sample()).unwrap();
        let o = recorded(&w, false);
        let mut r = sample();
        r["valueQuantity"]["value"] = json!(75);
        r["extension"] = json!([status_reason_extension("recounted")]);
        match update_command(&o, &from_fhir(&r).unwrap(), false).unwrap() {
            Some(ObservationCommand::Amend { reason, value, .. }) => {
                assert_eq!(reason, "recounted");
                assert_eq!(
                    value,
                    ObservationValue::Quantity {
                        value: 75.0,
                        unit: "/min".into()
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        let mut r = sample();
        r["status"] = json!("entered-in-error");
        assert!(matches!(
            update_command(&o, &from_fhir(&r).unwrap(), false).unwrap(),
            Some(ObservationCommand::EnterInError { .. })
        ));
        let mut r = sample();
        r["code"]["coding"][0]["code"] = json!("8480-6");
        let e = update_command(&o, &from_fhir(&r).unwrap(), false).unwrap_err();
        assert_eq!(e[0].expression.as_deref(), Some("Observation.code"));
        let mut r = sample();
        r["status"] = json!("preliminary");
        assert!(update_command(&o, &from_fhir(&r).unwrap(), false).is_err());
    }
}

//! FHIR Patient ⇄ the Salus Patient aggregate.
//!
//! Modelled (the aggregate's fields): identifiers (one per system), names with a family
//! name, phones in E.164 form and the first e-mail address, gender, a full birthDate, the
//! first address, `active` (the lifecycle status is `active`), `deceasedDateTime` (the
//! recorded date of death), and `link` `replaced-by` for a record merged into another.
//!
//! Everything else a resource holds is kept as sent in the patient's `fhir_elements` and
//! given back on read: extensions, `communication`, `maritalStatus`, `contact`,
//! `generalPractitioner`, `meta.profile`/`tag`/`security`, what else a modelled identifier,
//! name, telecom or address says (`use`, `type`, `period`, `prefix`, their extensions),
//! and the items the aggregate cannot hold (a phone not in E.164 form, a second address or
//! e-mail, a second identifier of a system, a name without a family name, a partial
//! birthDate). What else a modelled item said is given back while the item is unchanged;
//! an `active` left out reads back left out while the status stays what it was. So a
//! resource reads back as sent apart from `id`, `meta`, the order of array items (modelled
//! ones first).
//!
//! Refused with a 422 naming the element: what the aggregate needs and does not get (no
//! name with a family name) and `deceasedBoolean: true` (Salus records a death with its
//! date). A generated narrative (`text.status` `generated`) is not kept: it says nothing
//! the structured content does not.

use crate::datatypes::{absent, kept_of, with_absent};
use crate::outcome::Issue;
use crate::statement::ABSENT;
use crate::validate::validate;
use chrono::{DateTime, NaiveDate, Utc};
use salus_domain::registry::Patient;
use salus_domain::registry::patient::{IdentifierInput, NameInput, PatientInput, PatientStatus};
use salus_domain::registry::values::{Address, E164Phone, Email, HumanName, Identifier};
use serde_json::{Map, Value, json};

/// The kept element holding what else the modelled items of an array said:
/// `{"identifier": [{"of": <the item as modelled>, "rest": {…}}], "name": […], …}`.
const REST: &str = "salus:rest";
/// The kept element holding a `deceasedDateTime` sent with a time: `{"of": day, "as": …}`.
const DECEASED: &str = "salus:deceasedDateTime";

/// The FHIR resource of a patient at `version`, last changed at `updated`.
pub fn to_fhir(p: &Patient, version: i64, updated: DateTime<Utc>) -> Value {
    let d = &p.details;
    let kept = kept_of(&d.fhir_elements);
    let rests = kept.get(REST).and_then(Value::as_object);
    let mut r = Map::new();
    r.insert("resourceType".into(), json!("Patient"));
    r.insert("id".into(), json!(p.id.to_string()));
    r.insert(
        "meta".into(),
        json!({"versionId": version.to_string(), "lastUpdated": instant(updated)}),
    );
    let mut arrays: Vec<(&str, Vec<Value>)> = Vec::new();
    arrays.push((
        "identifier",
        d.identifiers
            .iter()
            .map(|i| json!({"system": i.system, "value": i.value}))
            .collect(),
    ));
    let active = json!(p.status == PatientStatus::Active);
    if !absent(&kept, "active", &active) {
        r.insert("active".into(), active);
    }
    arrays.push(("name", d.name.iter().map(name_of).collect()));
    let mut telecom: Vec<Value> = d
        .phones
        .iter()
        .map(|ph| json!({"system": "phone", "value": ph.as_str()}))
        .collect();
    if let Some(e) = &d.email {
        telecom.push(json!({"system": "email", "value": e.as_str()}));
    }
    arrays.push(("telecom", telecom));
    if let Some(g) = d.gender {
        r.insert("gender".into(), json!(g.as_str()));
    }
    if let Some(b) = d.birth_date {
        r.insert("birthDate".into(), json!(b.format("%Y-%m-%d").to_string()));
    }
    if let Some(dec) = &p.deceased {
        let day = json!(dec.date.format("%Y-%m-%d").to_string());
        let sent = kept
            .get(DECEASED)
            .filter(|k| k.get("of") == Some(&day))
            .and_then(|k| k.get("as"));
        r.insert(
            "deceasedDateTime".into(),
            sent.cloned().unwrap_or(day.clone()),
        );
    }
    arrays.push((
        "address",
        d.address.iter().filter_map(address_of).collect::<Vec<_>>(),
    ));
    arrays.push((
        "link",
        p.merged_into
            .iter()
            .map(|into| {
                json!({"other": {"reference": format!("Patient/{into}")}, "type": "replaced-by"})
            })
            .collect(),
    ));
    for (element, mut items) in arrays {
        if let Some(rest) = rests.and_then(|m| m.get(element)).and_then(Value::as_array) {
            give_back_rest(&mut items, rest);
        }
        for more in kept
            .get(element)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // A kept item the rendering already has (a sent merge link) is not repeated.
            if !items.contains(more) {
                items.push(more.clone());
            }
        }
        if !items.is_empty() {
            r.insert(element.into(), Value::Array(items));
        }
    }
    for (k, v) in &kept {
        match k.as_str() {
            ABSENT | REST | DECEASED | "identifier" | "name" | "telecom" | "address" | "link" => {}
            "meta" => {
                if let (Some(Value::Object(m)), Some(extra)) = (r.get_mut("meta"), v.as_object()) {
                    for (mk, mv) in extra {
                        m.entry(mk.clone()).or_insert_with(|| mv.clone());
                    }
                }
            }
            _ => {
                r.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    Value::Object(r)
}

fn name_of(n: &HumanName) -> Value {
    let mut m = json!({"family": n.family});
    if !n.given.is_empty() {
        m["given"] = json!(n.given);
    }
    m
}

fn address_of(a: &Address) -> Option<Value> {
    let mut m = Map::new();
    if !a.line.is_empty() {
        m.insert("line".into(), json!(a.line));
    }
    for (k, v) in [
        ("city", &a.city),
        ("district", &a.district),
        ("state", &a.state),
        ("postalCode", &a.postal_code),
        ("country", &a.country),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    (!m.is_empty()).then_some(Value::Object(m))
}

/// Merge what else each modelled item said into it, while the item is as it was then
/// (each kept rest at most once, in order).
fn give_back_rest(items: &mut [Value], rest: &[Value]) {
    let mut used = vec![false; rest.len()];
    for item in items.iter_mut() {
        let found = rest
            .iter()
            .enumerate()
            .find(|(i, k)| !used[*i] && k.get("of") == Some(&*item));
        if let Some((i, k)) = found {
            used[i] = true;
            if let (Some(o), Some(extra)) = (
                item.as_object_mut(),
                k.get("rest").and_then(Value::as_object),
            ) {
                for (ek, ev) in extra {
                    o.insert(ek.clone(), ev.clone());
                }
            }
        }
    }
}

/// An instant as FHIR writes it (RFC 3339, UTC, milliseconds).
pub fn instant(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// What a FHIR Patient says, in the aggregate's terms.
#[derive(Debug, Clone)]
pub struct PatientWrite {
    /// The resource's `id`, if it has one.
    pub id: Option<String>,
    /// The fields, and in `fhir_elements` what else the resource holds (without the mark
    /// of an `active` left out: [`PatientWrite::input_for`]).
    pub input: PatientInput,
    /// `active`, when given.
    pub active: Option<bool>,
    /// The date of death, when given (`deceasedDateTime`, or `deceasedBoolean: false` as
    /// `Some(None)`).
    pub deceased: Option<Option<NaiveDate>>,
}

impl PatientWrite {
    /// The input of the write to a patient whose record is `active_before` (false for a
    /// new one): a resource without `active` reads back without it while the status stays.
    pub fn input_for(&self, active_before: bool) -> PatientInput {
        let mut input = self.input.clone();
        if self.active.is_none() {
            let marks = [("active", json!(active_before))];
            let kept = with_absent(kept_of(&input.fhir_elements), &marks);
            input.fhir_elements = Some(Value::Object(kept));
        }
        input
    }
}

/// What a write keeps of an array element: the items not modelled, and what else the
/// modelled ones said.
#[derive(Default)]
struct Kept {
    elements: Map<String, Value>,
    rest: Map<String, Value>,
}

impl Kept {
    /// An item the aggregate does not hold, kept whole.
    fn item(&mut self, element: &str, v: &Value) {
        if let Value::Array(a) = self
            .elements
            .entry(element.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            a.push(v.clone());
        }
    }

    /// A modelled item `of` (as the rendering gives it) that was sent as `sent`: what
    /// else it said.
    fn rest(&mut self, element: &str, of: Value, sent: &Value) {
        let Some(m) = sent.as_object() else {
            return;
        };
        let rest: Map<String, Value> = m
            .iter()
            .filter(|(k, v)| of.get(k.as_str()) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if rest.is_empty() {
            return;
        }
        if let Value::Array(a) = self
            .rest
            .entry(element.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            a.push(json!({"of": of, "rest": rest}));
        }
    }

    fn into_value(mut self) -> Option<Value> {
        if !self.rest.is_empty() {
            self.elements.insert(REST.into(), Value::Object(self.rest));
        }
        (!self.elements.is_empty()).then_some(Value::Object(self.elements))
    }
}

/// Read a FHIR Patient: structural validation first, then what the aggregate keeps; the
/// rest is kept beside it (see the module doc). The domain still checks the values (a
/// birth date in the past, identifiers unique in the tenant, …) when it decides.
pub fn from_fhir(r: &Value) -> Result<PatientWrite, Vec<Issue>> {
    let mut issues = validate(r);
    if !issues.is_empty() {
        return Err(issues);
    }
    let Some(obj) = r.as_object() else {
        return Err(vec![Issue::error(
            "structure",
            "a resource must be a JSON object",
        )]);
    };
    if obj.get("resourceType").and_then(Value::as_str) != Some("Patient") {
        return Err(vec![
            Issue::error("invalid", "the resource is not a Patient").at("resourceType"),
        ]);
    }
    let mut out = PatientWrite {
        id: obj.get("id").and_then(Value::as_str).map(str::to_owned),
        input: PatientInput::default(),
        active: obj.get("active").and_then(Value::as_bool),
        deceased: None,
    };
    let mut kept = Kept::default();
    let items = |v: &Value| v.as_array().cloned().unwrap_or_default();
    for (key, v) in obj {
        let path = format!("Patient.{key}");
        match key.as_str() {
            "resourceType" | "id" | "active" => {}
            // A narrative generated entirely from the structured content says nothing
            // that content does not (R4 Narrative.status `generated`): it is not kept,
            // and nothing is lost. Any other narrative is the author's own text, kept.
            "text" if v.get("status").and_then(Value::as_str) == Some("generated") => {}
            "meta" => {
                // versionId and lastUpdated are the server's; the rest is kept.
                if let Some(m) = v.as_object() {
                    let rest: Map<String, Value> = m
                        .iter()
                        .filter(|(k, _)| *k != "versionId" && *k != "lastUpdated")
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    if !rest.is_empty() {
                        kept.elements.insert("meta".into(), Value::Object(rest));
                    }
                }
            }
            "identifier" => {
                for id in items(v) {
                    let (system, value) = (
                        id.get("system").and_then(Value::as_str),
                        id.get("value").and_then(Value::as_str),
                    );
                    let modelled = match (system, value) {
                        (Some(system), Some(value))
                            if Identifier::parse(system, value).is_ok()
                                && !out.input.identifiers.iter().any(|i| i.system == system) =>
                        {
                            Some((system.to_owned(), value.to_owned()))
                        }
                        _ => None,
                    };
                    match modelled {
                        Some((system, value)) => {
                            kept.rest("identifier", json!({"system": system, "value": value}), &id);
                            out.input
                                .identifiers
                                .push(IdentifierInput { system, value });
                        }
                        None => kept.item("identifier", &id),
                    }
                }
            }
            "name" => {
                for n in items(v) {
                    let given: Vec<String> = n
                        .get("given")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect();
                    let parsed = n
                        .get("family")
                        .and_then(Value::as_str)
                        .and_then(|f| HumanName::parse(f, &given).ok());
                    match parsed {
                        Some(h) => {
                            kept.rest("name", name_of(&h), &n);
                            out.input.name.push(NameInput {
                                family: h.family,
                                given: h.given,
                            });
                        }
                        None => kept.item("name", &n),
                    }
                }
            }
            "telecom" => {
                for t in items(v) {
                    let value = t.get("value").and_then(Value::as_str);
                    match (t.get("system").and_then(Value::as_str), value) {
                        (Some("phone"), Some(s)) => match E164Phone::parse(s) {
                            Ok(ph) => {
                                let of = json!({"system": "phone", "value": ph.as_str()});
                                kept.rest("telecom", of, &t);
                                out.input.phones.push(ph.as_str().to_owned());
                            }
                            Err(_) => kept.item("telecom", &t),
                        },
                        (Some("email"), Some(s)) if out.input.email.is_none() => {
                            match Email::parse(s) {
                                Ok(e) => {
                                    let of = json!({"system": "email", "value": e.as_str()});
                                    kept.rest("telecom", of, &t);
                                    out.input.email = Some(e.as_str().to_owned());
                                }
                                Err(_) => kept.item("telecom", &t),
                            }
                        }
                        _ => kept.item("telecom", &t),
                    }
                }
            }
            "gender" => out.input.gender = v.as_str().map(str::to_owned),
            "birthDate" => match v.as_str() {
                // A full date is the aggregate's; a year or a month is kept as sent.
                Some(s) if s.len() == 10 => out.input.birth_date = Some(s.to_owned()),
                _ => {
                    kept.elements.insert(key.clone(), v.clone());
                }
            },
            "deceasedBoolean" => match v.as_bool() {
                Some(false) => out.deceased = Some(None),
                _ => issues.push(
                    Issue::error(
                        "required",
                        "Salus records a death with its date: send deceasedDateTime",
                    )
                    .at(path),
                ),
            },
            "deceasedDateTime" => {
                let day = v.as_str().and_then(|s| s.get(..10));
                match day.and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()) {
                    Some(d) => {
                        out.deceased = Some(Some(d));
                        if v.as_str().is_some_and(|s| s.len() > 10) {
                            kept.elements.insert(
                                DECEASED.into(),
                                json!({"of": d.format("%Y-%m-%d").to_string(), "as": v}),
                            );
                        }
                    }
                    None => issues.push(
                        Issue::error(
                            "value",
                            "the date of death needs at least a day (YYYY-MM-DD)",
                        )
                        .at(path),
                    ),
                }
            }
            "address" => {
                for a in items(v) {
                    if out.input.address.is_some() {
                        kept.item("address", &a);
                        continue;
                    }
                    let text = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_owned);
                    let address = Address {
                        line: a
                            .get("line")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect(),
                        city: text("city"),
                        district: text("district"),
                        state: text("state"),
                        postal_code: text("postalCode"),
                        country: text("country"),
                    };
                    match address
                        .clone()
                        .checked()
                        .ok()
                        .and_then(|c| address_of(&c).map(|of| (c, of)))
                    {
                        Some((checked, of)) => {
                            kept.rest("address", of, &a);
                            out.input.address = Some(checked);
                        }
                        None => kept.item("address", &a),
                    }
                }
            }
            // The merge link is the aggregate's (`replaced-by`, rendered); any other link
            // is kept.
            "link" => {
                for l in items(v) {
                    kept.item("link", &l);
                }
            }
            _ => {
                kept.elements.insert(key.clone(), v.clone());
            }
        }
    }
    if out.input.name.is_empty() && issues.is_empty() {
        issues.push(
            Issue::error(
                "required",
                "Salus keeps a patient with at least one name with a family name",
            )
            .at("Patient.name"),
        );
    }
    out.input.fhir_elements = kept.into_value();
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// The FHIRPath of a domain field named in an error (`birth_date` → `Patient.birthDate`).
pub fn fhir_path_of_field(field: &str) -> String {
    let f = match field.split('.').next().unwrap_or(field) {
        "identifiers" => "identifier",
        "name" => "name",
        "birth_date" => "birthDate",
        "gender" => "gender",
        "phone" | "phones" => "telecom",
        "email" => "telecom",
        "address" => "address",
        "date" => "deceasedDateTime",
        other => other,
    };
    format!("Patient.{f}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use salus_domain::registry::PatientDetails;
    use salus_domain::registry::patient::Deceased;
    use uuid::Uuid;

    #[test]
    fn a_patient_maps_out_and_back_without_loss() {
        let r = json!({"resourceType": "Patient",
            "identifier": [{"system": "urn:mrn", "value": "1"}],
            "active": true,
            "name": [{"family": "Lovelace", "given": ["Ada"]}],
            "telecom": [{"system": "phone", "value": "+442079460958"}, {"system": "email", "value": "ada@example.org"}],
            "gender": "female", "birthDate": "1815-12-10",
            "address": [{"line": ["12 St James's Square"], "city": "London", "postalCode": "SW1Y", "country": "GB"}]});
        let w = from_fhir(&r).unwrap();
        assert_eq!(w.active, Some(true));
        let today = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let details = PatientDetails::parse(w.input, today).unwrap();
        let p = Patient {
            id: Uuid::now_v7(),
            details,
            status: PatientStatus::Active,
            status_reason: None,
            deceased: None,
            merged_into: None,
        };
        let mut out = to_fhir(&p, 3, Utc::now());
        assert_eq!(out["meta"]["versionId"], "3");
        let obj = out.as_object_mut().unwrap();
        obj.remove("id");
        obj.remove("meta");
        assert_eq!(out, r);
    }

    #[test]
    fn a_generated_narrative_is_let_go_and_an_authored_one_kept() {
        let with = |status: &str| {
            json!({"resourceType": "Patient", "name": [{"family": "Ng", "given": ["Li"]}],
                "text": {"status": status,
                    "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Li Ng</div>"}})
        };
        let generated = from_fhir(&with("generated")).unwrap();
        assert_eq!(generated.input.name[0].family, "Ng");
        assert!(generated.input.fhir_elements.is_none());
        for status in ["additional", "extensions", "empty"] {
            let kept = from_fhir(&with(status))
                .unwrap()
                .input
                .fhir_elements
                .unwrap();
            assert_eq!(kept["text"]["status"], status);
        }
    }

    /// The patient `r` becomes when written as a new one (status registered).
    fn written(r: &Value) -> Patient {
        let w = from_fhir(r).unwrap();
        let today = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let details = PatientDetails::parse(w.input_for(false), today).unwrap();
        Patient {
            id: Uuid::now_v7(),
            details,
            status: PatientStatus::Registered,
            status_reason: None,
            deceased: w.deceased.flatten().map(|date| Deceased { date }),
            merged_into: None,
        }
    }

    /// `r` without what the server sets, its arrays' items in a stable order.
    fn as_sent(mut r: Value) -> Value {
        let o = r.as_object_mut().unwrap();
        o.remove("id");
        if let Some(Value::Object(m)) = o.get_mut("meta") {
            m.remove("versionId");
            m.remove("lastUpdated");
        }
        if o.get("meta")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
        {
            o.remove("meta");
        }
        for (_, v) in o.iter_mut() {
            if let Value::Array(a) = v {
                a.sort_by_key(|x| x.to_string());
            }
        }
        r
    }

    /// A patient as Synthea and US Core write one: every element the aggregate does not
    /// model (extensions, identifier types, a maiden name, a phone not in E.164 form, …).
    fn synthea_like() -> Value {
        json!({"resourceType": "Patient",
            "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]},
            "extension": [
                {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
                 "extension": [{"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3", "display": "White"}},
                               {"url": "text", "valueString": "White"}]},
                {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex", "valueCode": "F"}],
            "identifier": [
                {"system": "https://github.com/synthetichealth/synthea", "value": "7d4b4a8c"},
                {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}], "text": "Medical Record Number"},
                 "system": "http://hospital.smarthealthit.org", "value": "7d4b4a8c"},
                {"system": "http://hospital.smarthealthit.org", "value": "second-in-system"},
                {"value": "no-system"}],
            "name": [
                {"use": "official", "family": "Lind531", "given": ["Ada662"], "prefix": ["Mrs."]},
                {"use": "maiden", "family": "Kub800", "given": ["Ada662"], "prefix": ["Mrs."]},
                {"text": "Ada"}],
            "telecom": [
                {"system": "phone", "value": "555-515-2334", "use": "home"},
                {"system": "phone", "value": "+44 20 7946 0958", "use": "work"},
                {"system": "email", "value": "ada@example.org"},
                {"system": "email", "value": "second@example.org"},
                {"system": "fax", "value": "+442079460959"}],
            "gender": "female", "birthDate": "1980-04-23",
            "deceasedDateTime": "2020-12-03T10:07:26-05:00",
            "address": [
                {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/geolocation",
                                "extension": [{"url": "latitude", "valueDecimal": 42.3}, {"url": "longitude", "valueDecimal": -71.0}]}],
                 "use": "home", "line": ["1075 Bahringer Ramp"], "city": "Boston", "state": "MA", "postalCode": "02118", "country": "US"},
                {"use": "old", "city": "Quincy"}],
            "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}], "text": "M"},
            "multipleBirthBoolean": false,
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-US"}], "text": "English"}}],
            "link": [{"other": {"reference": "Patient/3f1c0e7a-0000-4000-8000-000000000001"}, "type": "seealso"}]})
    }

    #[test]
    fn what_the_aggregate_does_not_model_is_kept_and_read_back_as_sent() {
        let sent = synthea_like();
        let p = written(&sent);
        // The aggregate holds what it models...
        let d = &p.details;
        assert_eq!(d.identifiers.len(), 2);
        assert_eq!(d.name.len(), 2);
        assert_eq!(d.name[0].family, "Lind531");
        assert_eq!(d.phones.len(), 1, "only the phone in E.164 form");
        assert_eq!(
            d.email.as_ref().map(|e| e.as_str()),
            Some("ada@example.org")
        );
        assert_eq!(
            p.deceased.as_ref().map(|x| x.date.to_string()).as_deref(),
            Some("2020-12-03")
        );
        // ...and reads back as sent, with no `active` added (none was sent).
        let back = to_fhir(&p, 1, Utc::now());
        assert!(back.get("active").is_none(), "{back}");
        assert_eq!(as_sent(back), as_sent(sent.clone()));
        // An authored narrative is kept too.
        let mut with_text = sent;
        with_text["text"] = json!({"status": "additional", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Ada</div>"});
        assert_eq!(
            to_fhir(&written(&with_text), 1, Utc::now())["text"],
            with_text["text"]
        );
    }

    #[test]
    fn what_else_a_modelled_item_said_goes_when_the_item_changes() {
        let mut p = written(&synthea_like());
        // The JSON API renames the patient and activates the record.
        p.details.name[0] = HumanName::parse("Byron", &["Ada".to_owned()]).unwrap();
        p.status = PatientStatus::Active;
        let back = to_fhir(&p, 2, Utc::now());
        assert_eq!(back["active"], true, "the status changed: it is rendered");
        assert_eq!(
            back["name"][0],
            json!({"family": "Byron", "given": ["Ada"]})
        );
        assert_eq!(
            back["name"][1]["use"], "maiden",
            "the unchanged name keeps its use"
        );
        assert_eq!(back["extension"].as_array().unwrap().len(), 2);
        assert_eq!(back["meta"]["versionId"], "2");
        assert_eq!(
            back["meta"]["profile"][0],
            "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
        );
    }

    #[test]
    fn what_the_aggregate_needs_is_refused_with_its_path() {
        let issues = from_fhir(&json!({"resourceType": "Patient",
            "name": [{"given": ["Ada"]}], "deceasedBoolean": true}))
        .unwrap_err();
        let mut paths: Vec<_> = issues.iter().filter_map(|i| i.expression.clone()).collect();
        paths.sort();
        assert_eq!(paths, ["Patient.deceasedBoolean"]);
        let issues = from_fhir(&json!({"resourceType": "Patient", "name": [{"given": ["Ada"]}]}))
            .unwrap_err();
        assert_eq!(issues[0].expression.as_deref(), Some("Patient.name"));
        let structural =
            from_fhir(&json!({"resourceType": "Patient", "birthDate": 1980})).unwrap_err();
        assert_eq!(
            structural[0].expression.as_deref(),
            Some("Patient.birthDate")
        );
    }

    use proptest::prelude::*;

    fn extras() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec(
            ("[a-z]{1,8}", "[A-Za-z0-9]([A-Za-z0-9 ]{0,10}[A-Za-z0-9])?"),
            0..4,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Whatever another system adds to a patient, it reads back as sent: extensions,
        /// identifier types, name uses and prefixes, phones in any form, a second address.
        #[test]
        fn any_patient_reads_back_as_sent(
            family in "[A-Z][a-z]{1,10}",
            given in prop::collection::vec("[A-Z][a-z]{1,8}", 0..3),
            systems in prop::collection::btree_set("[a-z]{1,6}", 1..4),
            typed in prop::collection::vec(any::<bool>(), 4),
            phones in prop::collection::vec(prop_oneof!["[+][1-9][0-9]{8,12}", "[0-9]{3}-[0-9]{3}-[0-9]{4}"], 0..3),
            exts in extras(),
            prefix in prop::option::of("(Mr|Mrs|Dr)[.]"),
            marital in prop::option::of("[SMDW]"),
            second_address in any::<bool>(),
            active in prop::option::of(any::<bool>()),
        ) {
            let mut r = json!({"resourceType": "Patient", "gender": "unknown", "birthDate": "1990-01-02"});
            let ids: Vec<Value> = systems.iter().zip(typed.iter().cycle()).map(|(sys, t)| {
                let mut i = json!({"system": format!("urn:{sys}"), "value": format!("{sys}-1")});
                if *t {
                    i["type"] = json!({"text": "Medical Record Number"});
                }
                i
            }).collect();
            r["identifier"] = json!(ids);
            let mut name = json!({"family": family, "use": "official"});
            if !given.is_empty() {
                name["given"] = json!(given);
            }
            if let Some(p) = &prefix {
                name["prefix"] = json!([p]);
            }
            r["name"] = json!([name]);
            if !phones.is_empty() {
                r["telecom"] = json!(phones.iter().map(|p| json!({"system": "phone", "value": p, "use": "home"})).collect::<Vec<_>>());
            }
            if !exts.is_empty() {
                r["extension"] = json!(exts.iter().map(|(u, v)| json!({"url": format!("http://example.org/{u}"), "valueString": v})).collect::<Vec<_>>());
            }
            if let Some(m) = &marital {
                r["maritalStatus"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": m}]});
            }
            let mut addresses = vec![json!({"use": "home", "city": "Leeds", "country": "GB"})];
            if second_address {
                addresses.push(json!({"use": "old", "text": "somewhere else"}));
            }
            r["address"] = json!(addresses);
            if let Some(a) = active {
                r["active"] = json!(a);
            }
            let mut p = written(&r);
            if active == Some(true) {
                p.status = PatientStatus::Active;
            }
            prop_assert_eq!(as_sent(to_fhir(&p, 1, Utc::now())), as_sent(r));
        }
    }
}

//! FHIR Patient ⇄ the Salus Patient aggregate.
//!
//! Out: identifiers, names, telecom (phones, e-mail), gender, birthDate, address, `active`
//! (the lifecycle status is `active`), `deceasedDateTime` (the recorded date of death), and
//! `link` `replaced-by` for a record merged into another.
//!
//! In: a resource becomes a [`PatientInput`] plus the lifecycle facts it states (`active`,
//! the date of death). Nothing is dropped silently: an element the aggregate cannot keep
//! (a name without a family name, a second address, `telecom` of another system, …) is a
//! 422 issue naming it, never lost.

use crate::outcome::Issue;
use crate::validate::validate;
use chrono::{DateTime, NaiveDate, Utc};
use salus_domain::registry::Patient;
use salus_domain::registry::patient::{IdentifierInput, NameInput, PatientInput, PatientStatus};
use salus_domain::registry::values::Address;
use serde_json::{Map, Value, json};

/// The FHIR resource of a patient at `version`, last changed at `updated`.
pub fn to_fhir(p: &Patient, version: i64, updated: DateTime<Utc>) -> Value {
    let d = &p.details;
    let mut r = Map::new();
    r.insert("resourceType".into(), json!("Patient"));
    r.insert("id".into(), json!(p.id.to_string()));
    r.insert(
        "meta".into(),
        json!({"versionId": version.to_string(), "lastUpdated": instant(updated)}),
    );
    if !d.identifiers.is_empty() {
        r.insert(
            "identifier".into(),
            Value::Array(
                d.identifiers
                    .iter()
                    .map(|i| json!({"system": i.system, "value": i.value}))
                    .collect(),
            ),
        );
    }
    r.insert("active".into(), json!(p.status == PatientStatus::Active));
    if !d.name.is_empty() {
        r.insert(
            "name".into(),
            Value::Array(
                d.name
                    .iter()
                    .map(|n| {
                        let mut m = json!({"family": n.family});
                        if !n.given.is_empty() {
                            m["given"] = json!(n.given);
                        }
                        m
                    })
                    .collect(),
            ),
        );
    }
    let mut telecom: Vec<Value> = d
        .phones
        .iter()
        .map(|ph| json!({"system": "phone", "value": ph.as_str()}))
        .collect();
    if let Some(e) = &d.email {
        telecom.push(json!({"system": "email", "value": e.as_str()}));
    }
    if !telecom.is_empty() {
        r.insert("telecom".into(), Value::Array(telecom));
    }
    if let Some(g) = d.gender {
        r.insert("gender".into(), json!(g.as_str()));
    }
    if let Some(b) = d.birth_date {
        r.insert("birthDate".into(), json!(b.format("%Y-%m-%d").to_string()));
    }
    if let Some(dec) = &p.deceased {
        r.insert(
            "deceasedDateTime".into(),
            json!(dec.date.format("%Y-%m-%d").to_string()),
        );
    }
    if let Some(a) = &d.address {
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
        if !m.is_empty() {
            r.insert("address".into(), json!([Value::Object(m)]));
        }
    }
    if let Some(into) = p.merged_into {
        r.insert(
            "link".into(),
            json!([{"other": {"reference": format!("Patient/{into}")}, "type": "replaced-by"}]),
        );
    }
    Value::Object(r)
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
    pub input: PatientInput,
    /// `active`, when given.
    pub active: Option<bool>,
    /// The date of death, when given (`deceasedDateTime`, or `deceasedBoolean: false` as
    /// `Some(None)`).
    pub deceased: Option<Option<NaiveDate>>,
}

/// Read a FHIR Patient: structural validation first, then what the aggregate keeps. The
/// domain still checks the values (E.164 phones, dates in the past, …) when it decides.
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
    let not_kept = |path: &str, what: &str| {
        Issue::error(
            "not-supported",
            format!("{what} is not kept by Salus; the resource cannot be stored without losing it"),
        )
        .at(path)
    };
    let mut out = PatientWrite {
        id: obj.get("id").and_then(Value::as_str).map(str::to_owned),
        input: PatientInput::default(),
        active: obj.get("active").and_then(Value::as_bool),
        deceased: None,
    };
    for (key, v) in obj {
        let path = format!("Patient.{key}");
        match key.as_str() {
            "resourceType" | "id" | "active" => {}
            // A narrative generated entirely from the structured content says nothing
            // that content does not (R4 Narrative.status `generated`): it is not kept,
            // and nothing is lost. Any other narrative is the author's own text.
            "text" if v.get("status").and_then(Value::as_str) == Some("generated") => {}
            "meta" => {
                // Server-managed: versionId and lastUpdated are set by Salus.
                if let Some(m) = v.as_object() {
                    for k in m.keys() {
                        if k != "versionId" && k != "lastUpdated" {
                            issues
                                .push(not_kept(&format!("Patient.meta.{k}"), &format!("meta.{k}")));
                        }
                    }
                }
            }
            "identifier" => {
                for (i, id) in v.as_array().into_iter().flatten().enumerate() {
                    let here = format!("{path}[{i}]");
                    check_keys(id, &here, &["system", "value"], &mut issues);
                    match (
                        id.get("system").and_then(Value::as_str),
                        id.get("value").and_then(Value::as_str),
                    ) {
                        (Some(system), Some(value)) => {
                            out.input.identifiers.push(IdentifierInput {
                                system: system.to_owned(),
                                value: value.to_owned(),
                            })
                        }
                        _ => issues.push(
                            Issue::error("required", "an identifier needs a system and a value")
                                .at(here),
                        ),
                    }
                }
            }
            "name" => {
                for (i, n) in v.as_array().into_iter().flatten().enumerate() {
                    let here = format!("{path}[{i}]");
                    check_keys(n, &here, &["family", "given"], &mut issues);
                    let given: Vec<String> = n
                        .get("given")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect();
                    match n.get("family").and_then(Value::as_str) {
                        Some(family) => out.input.name.push(NameInput {
                            family: family.to_owned(),
                            given,
                        }),
                        None => issues.push(
                            Issue::error("required", "Salus keeps names with a family name")
                                .at(format!("{here}.family")),
                        ),
                    }
                }
            }
            "telecom" => {
                for (i, t) in v.as_array().into_iter().flatten().enumerate() {
                    let here = format!("{path}[{i}]");
                    check_keys(t, &here, &["system", "value"], &mut issues);
                    let value = t.get("value").and_then(Value::as_str);
                    match (t.get("system").and_then(Value::as_str), value) {
                        (Some("phone"), Some(v)) => out.input.phones.push(v.to_owned()),
                        (Some("email"), Some(v)) if out.input.email.is_none() => {
                            out.input.email = Some(v.to_owned())
                        }
                        (Some("email"), Some(_)) => {
                            issues.push(not_kept(&here, "a second e-mail address"))
                        }
                        (_, None) => issues.push(
                            Issue::error("required", "a telecom needs a value")
                                .at(format!("{here}.value")),
                        ),
                        (other, _) => issues.push(not_kept(
                            &format!("{here}.system"),
                            &format!("telecom of system '{}'", other.unwrap_or("(none)")),
                        )),
                    }
                }
            }
            "gender" => out.input.gender = v.as_str().map(str::to_owned),
            "birthDate" => out.input.birth_date = v.as_str().map(str::to_owned),
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
                let date = v
                    .as_str()
                    .and_then(|s| s.get(..10))
                    .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok());
                match date {
                    Some(d) => out.deceased = Some(Some(d)),
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
                let items = v.as_array().cloned().unwrap_or_default();
                if items.len() > 1 {
                    issues.push(not_kept(&format!("{path}[1]"), "a second address"));
                }
                if let Some(a) = items.first() {
                    let here = format!("{path}[0]");
                    check_keys(
                        a,
                        &here,
                        &["line", "city", "district", "state", "postalCode", "country"],
                        &mut issues,
                    );
                    let text = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_owned);
                    out.input.address = Some(Address {
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
                    });
                }
            }
            other => issues.push(not_kept(&path, &format!("Patient.{other}"))),
        }
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// Refuse members of `v` other than `allowed` (they would be lost).
fn check_keys(v: &Value, path: &str, allowed: &[&str], issues: &mut Vec<Issue>) {
    if let Some(m) = v.as_object() {
        for k in m.keys() {
            if !allowed.contains(&k.as_str()) {
                issues.push(
                    Issue::error(
                        "not-supported",
                        format!("{k} is not kept by Salus; the resource cannot be stored without losing it"),
                    )
                    .at(format!("{path}.{k}")),
                );
            }
        }
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
    fn a_generated_narrative_is_let_go_and_an_authored_one_refused() {
        let with = |status: &str| {
            json!({"resourceType": "Patient", "name": [{"family": "Ng", "given": ["Li"]}],
                "text": {"status": status,
                    "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Li Ng</div>"}})
        };
        let kept = from_fhir(&with("generated")).unwrap();
        assert_eq!(kept.input.name[0].family, "Ng");
        for status in ["additional", "extensions", "empty"] {
            let issues = from_fhir(&with(status)).unwrap_err();
            assert!(
                issues
                    .iter()
                    .any(|i| i.expression.as_deref() == Some("Patient.text")),
                "{status}: {issues:?}"
            );
        }
    }

    #[test]
    fn what_cannot_be_kept_is_refused_with_its_path() {
        let issues = from_fhir(&json!({"resourceType": "Patient",
            "name": [{"given": ["Ada"]}, {"family": "X", "use": "official"}],
            "telecom": [{"system": "fax", "value": "1"}],
            "maritalStatus": {"text": "M"}}))
        .unwrap_err();
        let mut paths: Vec<_> = issues.iter().filter_map(|i| i.expression.clone()).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "Patient.maritalStatus",
                "Patient.name[0].family",
                "Patient.name[1].use",
                "Patient.telecom[0].system"
            ]
        );
        let structural =
            from_fhir(&json!({"resourceType": "Patient", "birthDate": 1980})).unwrap_err();
        assert_eq!(
            structural[0].expression.as_deref(),
            Some("Patient.birthDate")
        );
    }
}

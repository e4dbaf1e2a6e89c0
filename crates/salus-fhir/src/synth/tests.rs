use super::*;
use crate::validate::validate;
use chrono::NaiveDate;
use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

fn bytes(config: &Config) -> Vec<u8> {
    let mut out = Vec::new();
    for b in transactions(config) {
        out.extend(serde_json::to_vec(&b).unwrap());
        out.push(b'\n');
    }
    out
}

/// Every `reference` string in `v`.
fn references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x.as_str()) {
                    ("reference", Some(s)) => out.push(s.to_owned()),
                    _ => references(x, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| references(x, out)),
        _ => {}
    }
}

/// Every string in `v` under a key that holds a date, dateTime or instant.
fn dates(v: &Value, out: &mut Vec<String>) {
    const KEYS: &[&str] = &[
        "birthDate",
        "start",
        "end",
        "effectiveDateTime",
        "issued",
        "onsetDateTime",
        "abatementDateTime",
        "recordedDate",
        "authoredOn",
        "occurrenceDateTime",
        "created",
    ];
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (KEYS.contains(&k.as_str()), x.as_str()) {
                    (true, Some(s)) => out.push(s.to_owned()),
                    _ => dates(x, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| dates(x, out)),
        _ => {}
    }
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_another_seed_others() {
    let a = Config::new(42, 25);
    assert_eq!(bytes(&a), bytes(&a));
    assert_ne!(bytes(&a), bytes(&Config::new(43, 25)));
    let later = Config {
        as_of: NaiveDate::from_ymd_opt(2026, 6, 1).unwrap(),
        ..a
    };
    assert_ne!(bytes(&a), bytes(&later));
    // Patient i does not depend on how many come after it.
    assert_eq!(patient(&Config::new(42, 1000), 7), patient(&a, 7));
    assert_eq!(population(&a).len(), 25);
}

#[test]
fn every_resource_of_both_shapes_is_valid_r4() {
    for record in population(&Config::new(1, 80)) {
        let bundle = record.transaction();
        let issues = validate(&bundle);
        assert!(issues.is_empty(), "patient {}: {issues:?}", record.index);
        for (t, r) in record.bulk_resources() {
            let issues = validate(&r);
            assert!(issues.is_empty(), "{t} {r}: {issues:?}");
        }
    }
}

#[test]
fn every_reference_of_a_bundle_names_one_of_its_entries() {
    for record in population(&Config::new(2, 100)) {
        let bundle = record.transaction();
        let entries = bundle["entry"].as_array().unwrap();
        let full_urls: HashSet<&str> = entries
            .iter()
            .map(|e| e["fullUrl"].as_str().unwrap())
            .collect();
        assert_eq!(full_urls.len(), entries.len(), "fullUrls are unique");
        assert_eq!(entries[0]["resource"]["resourceType"], "Patient");
        let value = entries[0]["resource"]["identifier"][0]["value"]
            .as_str()
            .unwrap();
        assert_eq!(
            entries[0]["request"]["ifNoneExist"],
            format!("identifier={PATIENT_IDENTIFIER_SYSTEM}|{value}")
        );
        for e in entries {
            assert!(e["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"));
            assert_eq!(e["request"]["method"], "POST");
            assert_eq!(e["request"]["url"], e["resource"]["resourceType"]);
            assert!(e["resource"].get("id").is_none());
            let mut refs = Vec::new();
            references(&e["resource"], &mut refs);
            for r in refs {
                assert!(full_urls.contains(r.as_str()), "{r} of {}", e["resource"]);
            }
        }
    }
}

#[test]
fn bulk_references_name_resources_of_the_population() {
    let config = Config::new(3, 60);
    let mut ids = HashSet::new();
    let mut refs = Vec::new();
    for record in population(&config) {
        for (t, r) in record.bulk_resources() {
            assert_eq!(r["resourceType"], t);
            let id = r["id"].as_str().unwrap().to_owned();
            assert!(ids.insert(format!("{t}/{id}")), "ids are unique");
            references(&r, &mut refs);
        }
    }
    assert!(!refs.is_empty());
    for r in refs {
        assert!(ids.contains(&r), "{r} names no resource of the population");
    }
}

#[test]
fn two_hundred_patients_make_tens_of_thousands_of_resources_quickly() {
    let started = Instant::now();
    let mut summary = Summary::default();
    for record in population(&Config::new(2025, 200)) {
        summary.add(&record);
    }
    let took = started.elapsed();
    println!("{summary}\nin {took:?}");
    assert_eq!(summary.patients, 200);
    assert_eq!(summary.by_type["Patient"], 200);
    assert!(summary.total() >= 20_000, "{summary}");
    for t in [
        "Encounter",
        "Observation",
        "Condition",
        "Procedure",
        "AllergyIntolerance",
        "MedicationRequest",
        "Immunization",
        "CarePlan",
        "DiagnosticReport",
        "Coverage",
        "Claim",
    ] {
        assert!(summary.by_type.get(t).is_some_and(|n| *n > 0), "no {t}");
    }
    // Unoptimised, on a shared machine: generous; the release build is far faster.
    assert!(took.as_secs() < 60, "{took:?}");
}

#[test]
fn the_code_tables_hold_real_codes_and_units() {
    use salus_domain::clinical::observation::{parse_loinc, parse_ucum};
    use salus_domain::clinical::procedure::parse_sctid;
    let mut displays: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for c in codes::all() {
        match c.system {
            codes::LOINC => assert!(parse_loinc(c.code).is_ok(), "{c:?}"),
            codes::SNOMED => assert!(parse_sctid(c.code).is_ok(), "{c:?}"),
            codes::RXNORM => assert!(c.code.bytes().all(|b| b.is_ascii_digit()), "{c:?}"),
            codes::CVX => assert!(
                (2..=3).contains(&c.code.len()) && c.code.bytes().all(|b| b.is_ascii_digit()),
                "{c:?}"
            ),
            codes::ACT_CODE => {
                assert!(["AMB", "IMP", "EMER", "VR", "HH"].contains(&c.code))
            }
            other => panic!("unexpected system {other}"),
        }
        assert!(!c.display.is_empty());
        let seen = displays.entry((c.system, c.code)).or_insert(c.display);
        assert_eq!(*seen, c.display, "{c:?} has two displays");
    }
    for u in codes::units() {
        assert!(parse_ucum(u).is_ok(), "{u}");
    }
}

#[test]
fn patients_hold_only_what_the_patient_mapping_keeps() {
    let config = Config::new(4, 300);
    let mut accented = 0;
    let mut genders = BTreeSet::new();
    for record in population(&config) {
        let p = &record.entries[0].resource;
        let write = crate::patient::from_fhir(p).unwrap_or_else(|e| panic!("{p}: {e:?}"));
        salus_domain::registry::PatientDetails::parse(write.input, config.as_of)
            .unwrap_or_else(|e| panic!("{p}: {e:?}"));
        let name = p["name"].to_string();
        if !name.is_ascii() {
            accented += 1;
        }
        genders.insert(p["gender"].as_str().unwrap().to_owned());
        assert_eq!(
            p["identifier"][0]["value"],
            medical_record_number(4, record.index)
        );
    }
    assert!(accented > 30, "{accented} accented names of 300");
    assert!(genders.contains("female") && genders.contains("male"));
}

#[test]
fn histories_are_coded_as_the_brief_and_r4_bindings_ask() {
    let config = Config::new(5, 150);
    let as_of = config.as_of.format("%Y-%m-%d").to_string();
    let mut classes = BTreeSet::new();
    let mut categories = BTreeSet::new();
    for record in population(&config) {
        let birth = record.entries[0].resource["birthDate"]
            .as_str()
            .unwrap()
            .to_owned();
        for e in &record.entries {
            let r = &e.resource;
            let mut ds = Vec::new();
            dates(r, &mut ds);
            for d in ds {
                assert!(d[..10] <= *as_of, "{d} after {as_of}: {r}");
                assert!(d[..10] >= *birth, "{d} before birth {birth}: {r}");
            }
            match e.resource_type {
                "Encounter" => {
                    assert_eq!(r["status"], "finished");
                    assert_eq!(r["class"]["system"], codes::ACT_CODE);
                    classes.insert(r["class"]["code"].as_str().unwrap().to_owned());
                    assert!(r["period"]["start"].as_str() <= r["period"]["end"].as_str());
                }
                "Observation" => {
                    assert_eq!(r["status"], "final");
                    let cat = r["category"][0]["coding"][0]["code"].as_str().unwrap();
                    categories.insert(cat.to_owned());
                    assert_eq!(r["code"]["coding"][0]["system"], codes::LOINC);
                    assert!(r["encounter"]["reference"].is_string());
                    assert!(r["effectiveDateTime"].is_string());
                    let quantities: Vec<&Value> = match r.get("component") {
                        Some(c) => c
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|c| &c["valueQuantity"])
                            .collect(),
                        None => vec![&r["valueQuantity"]],
                    };
                    for q in quantities {
                        assert_eq!(q["system"], codes::UCUM, "{r}");
                        assert!(q["value"].is_number() && q["code"] == q["unit"], "{r}");
                    }
                }
                "Condition" => {
                    assert_eq!(
                        r["clinicalStatus"]["coding"][0]["system"],
                        codes::CONDITION_CLINICAL
                    );
                    let status = r["clinicalStatus"]["coding"][0]["code"].as_str().unwrap();
                    assert_eq!(status == "resolved", r.get("abatementDateTime").is_some());
                    assert_eq!(
                        r["verificationStatus"]["coding"][0]["system"],
                        codes::CONDITION_VERIFICATION
                    );
                    assert_eq!(r["code"]["coding"][0]["system"], codes::SNOMED);
                }
                "Procedure" => {
                    assert_eq!(r["status"], "completed");
                    assert_eq!(r["code"]["coding"][0]["system"], codes::SNOMED);
                }
                "MedicationRequest" => {
                    assert!(["active", "completed"].contains(&r["status"].as_str().unwrap()));
                    assert_eq!(r["intent"], "order");
                    assert_eq!(
                        r["medicationCodeableConcept"]["coding"][0]["system"],
                        codes::RXNORM
                    );
                }
                "Immunization" => {
                    assert_eq!(r["status"], "completed");
                    assert_eq!(r["vaccineCode"]["coding"][0]["system"], codes::CVX);
                }
                "AllergyIntolerance" => {
                    assert!(
                        ["food", "medication", "environment"]
                            .contains(&r["category"][0].as_str().unwrap())
                    );
                    assert!(["low", "high"].contains(&r["criticality"].as_str().unwrap()));
                }
                _ => {}
            }
        }
    }
    assert_eq!(
        classes,
        ["AMB", "EMER", "HH", "IMP", "VR"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    assert_eq!(
        categories,
        ["laboratory", "vital-signs"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}

#[test]
fn a_long_term_prescription_stays_active_only_until_renewed() {
    for record in population(&Config::new(6, 60)) {
        let mut active = BTreeMap::new();
        for e in &record.entries {
            if e.resource_type == "MedicationRequest" && e.resource["status"] == "active" {
                let code = e.resource["medicationCodeableConcept"]["coding"][0]["code"]
                    .as_str()
                    .unwrap();
                *active.entry(code.to_owned()).or_insert(0) += 1;
            }
        }
        assert!(active.values().all(|n| *n == 1), "{active:?}");
    }
}

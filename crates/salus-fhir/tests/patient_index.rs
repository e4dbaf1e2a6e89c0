//! The search rows the Patient aggregate writes (which `/fhir/R4/Patient` searches) agree
//! with what the R4 definitions say each supported parameter indexes, evaluated by this
//! crate's FHIRPath over the FHIR form of the same patient.

use chrono::NaiveDate;
use salus_domain::registry::patient::PatientInput;
use salus_domain::registry::{Patient, PatientDetails, PatientStatus};
use salus_domain::service::Projected;
use salus_fhir::definitions::search_parameters;
use salus_fhir::index::{IndexValue, extract};
use salus_kernel::text::fold;
use std::collections::BTreeSet;

fn patient() -> Patient {
    let input: PatientInput = serde_json::from_value(serde_json::json!({
        "identifiers": [{"system": "urn:mrn", "value": "42"}, {"system": "urn:nhs", "value": "943 476 5919"}],
        "name": [{"family": "Müller", "given": ["Zoë", "Anne"]}, {"family": "Smith"}],
        "birth_date": "1980-04-23", "gender": "female", "phones": ["+442079460958"]
    }))
    .unwrap();
    Patient {
        id: uuid::Uuid::now_v7(),
        details: PatientDetails::parse(input, NaiveDate::from_ymd_opt(2026, 1, 1).unwrap())
            .unwrap(),
        status: PatientStatus::Active,
        status_reason: None,
        deceased: None,
        merged_into: None,
    }
}

#[test]
fn the_aggregates_search_rows_agree_with_the_r4_definitions() {
    let p = patient();
    let fhir = salus_fhir::patient::to_fhir(&p, 1, chrono::Utc::now());
    let rows = p.search_rows();
    let domain = |param: &str| -> BTreeSet<(String, String)> {
        rows.iter()
            .filter(|r| r.param == param)
            .map(|r| (r.system.clone(), r.value.clone()))
            .collect()
    };
    let r4 = |code: &str| -> BTreeSet<(String, String)> {
        let sp = search_parameters().get("Patient", code).unwrap();
        extract(sp, &fhir)
            .unwrap()
            .into_iter()
            .filter_map(|v| match v {
                IndexValue::String(s) => Some((String::new(), fold(&s))),
                IndexValue::Token { system, code } => Some((system.unwrap_or_default(), code)),
                IndexValue::Date { low, .. } => {
                    Some((String::new(), low.format("%Y-%m-%d").to_string()))
                }
                // Rows of the modifiers, which the registry does not search on.
                IndexValue::Text(_) | IndexValue::TypedIdentifier { .. } => None,
                other => panic!("{code}: unexpected {other:?}"),
            })
            .collect()
    };
    assert_eq!(r4("identifier"), domain("identifier"));
    assert_eq!(r4("family"), domain("family"));
    assert_eq!(r4("given"), domain("given"));
    assert_eq!(r4("birthdate"), domain("birth_date"));
    assert_eq!(r4("gender"), domain("gender"));
    // The domain's `name` rows hold every part R4's `name` indexes, plus the full name.
    let names = domain("name");
    assert!(r4("name").is_subset(&names), "{:?} ⊄ {names:?}", r4("name"));
    assert_eq!(
        r4("_id"),
        BTreeSet::from([(String::new(), p.id.to_string())])
    );
}

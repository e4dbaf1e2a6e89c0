//! The FHIR view of clinical aggregates (and the registry's Patient, the staff's
//! Practitioner, Organization and Location) for search: each entry rendered as its FHIR
//! resource and indexed on every R4 search parameter of its type
//! ([`crate::search::rows_of`]), rows named `Type.code`. Registered with the domain by
//! the API at start ([`salus_domain::clinical::fhir_view::set_viewer`]).

use salus_domain::clinical::statement::{Allergy, Condition};
use salus_domain::documents::row_param;
use salus_store::SearchRow;
use serde_json::Value;

/// The FHIR resource type of a clinical stream type, when it has one here.
pub fn fhir_type(stream_type: &str) -> Option<&'static str> {
    Some(match stream_type {
        "observation" => "Observation",
        "condition" => "Condition",
        "allergy" => "AllergyIntolerance",
        "patient" => "Patient",
        "encounter" => "Encounter",
        "procedure" => "Procedure",
        "clinical_note" | "attachment" => "DocumentReference",
        "consent" => "Consent",
        "clinician" => "Practitioner",
        "department" => "Organization",
        "location" => "Location",
        _ => return None,
    })
}

/// The FHIR rendering of a clinical entry (its JSON document), without `meta`.
pub fn render(stream_type: &str, doc: &Value) -> Option<Value> {
    match stream_type {
        "observation" => serde_json::from_value(doc.clone())
            .ok()
            .map(|o| crate::observation::to_fhir(&o, None)),
        "condition" => serde_json::from_value(doc.clone())
            .ok()
            .map(|c: Condition| crate::statement::to_fhir(&c, None)),
        "allergy" => serde_json::from_value(doc.clone())
            .ok()
            .map(|a: Allergy| crate::statement::to_fhir(&a, None)),
        "encounter" => serde_json::from_value(doc.clone())
            .ok()
            .map(|e| crate::encounter::to_fhir(&e, None)),
        "procedure" => serde_json::from_value(doc.clone())
            .ok()
            .map(|p| crate::procedure::to_fhir(&p, None)),
        "consent" => serde_json::from_value(doc.clone())
            .ok()
            .map(|c| crate::consent::to_fhir(&c, None)),
        "attachment" => serde_json::from_value(doc.clone())
            .ok()
            .map(|a| crate::note::file_to_fhir(&a, None)),
        "clinical_note" => serde_json::from_value(doc.clone())
            .ok()
            .map(|n| crate::note::to_fhir(&n, None)),
        "clinician" => serde_json::from_value(doc.clone())
            .ok()
            .map(|c| crate::staff::practitioner(&c, None)),
        "department" => serde_json::from_value(doc.clone())
            .ok()
            .map(|d| crate::staff::organization(&d, None)),
        "location" => serde_json::from_value(doc.clone())
            .ok()
            .map(|l| crate::staff::location(&l, None)),
        "patient" => serde_json::from_value(doc.clone()).ok().map(|p| {
            // Indexed without the version and time the index does not have (the kept
            // profile, tags and security labels stay).
            let mut r = crate::patient::to_fhir(&p, 1, chrono::DateTime::UNIX_EPOCH);
            if let Some(Value::Object(m)) = r.get_mut("meta") {
                m.remove("versionId");
                m.remove("lastUpdated");
                if m.is_empty() {
                    r.as_object_mut().map(|o| o.remove("meta"));
                }
            }
            r
        }),
        _ => None,
    }
}

/// The FHIR search rows of a clinical entry: a [`salus_domain::clinical::fhir_view::Viewer`].
pub fn rows(stream_type: &str, doc: &Value) -> Vec<SearchRow> {
    let (Some(t), Some(r)) = (fhir_type(stream_type), render(stream_type, doc)) else {
        return Vec::new();
    };
    crate::search::rows_of(t, &r)
        .into_iter()
        .map(|mut row| {
            row.param = row_param(t, &row.param);
            row
        })
        .collect()
}

/// The FHIR `meta` rows (`_lastUpdated`) of an entry last changed at `updated`: a
/// [`salus_domain::clinical::fhir_view::MetaViewer`].
pub fn meta_rows(stream_type: &str, updated: chrono::DateTime<chrono::Utc>) -> Vec<SearchRow> {
    let Some(t) = fhir_type(stream_type) else {
        return Vec::new();
    };
    let meta = serde_json::json!({
        "resourceType": t,
        "meta": {"lastUpdated": crate::patient::instant(updated)},
    });
    crate::search::rows_of_one(t, "_lastUpdated", &meta)
        .into_iter()
        .map(|mut row| {
            row.param = row_param(t, &row.param);
            row
        })
        .collect()
}

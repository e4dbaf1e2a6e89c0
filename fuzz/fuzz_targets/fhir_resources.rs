//! FHIR input: a Patient resource as a client sends it (structure validation against the R4
//! definitions, then the mapping to the aggregate's input), and FHIRPath text (parse, print,
//! parse again to the same tree, evaluate over the resource).
#![no_main]

use libfuzzer_sys::fuzz_target;
use salus_fhir::fhirpath;

fuzz_target!(|data: &[u8]| {
    if let Ok(resource) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = salus_fhir::patient::from_fhir(&resource);
        let _ = salus_fhir::validate::validate(&resource);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(expr) = fhirpath::parse(text) {
            assert_eq!(fhirpath::parse(&expr.to_string()).ok(), Some(expr.clone()));
            let _ = fhirpath::evaluate(&expr, &serde_json::json!({"resourceType": "Patient"}));
        }
    }
});

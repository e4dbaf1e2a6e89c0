//! A patient registration body as a client sends it: JSON, then the domain's checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use salus_domain::registry::patient::{PatientDetails, PatientInput};

fuzz_target!(|data: &[u8]| {
    if let Ok(input) = serde_json::from_slice::<PatientInput>(data) {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap_or_default();
        let _ = PatientDetails::parse(input, today);
    }
});

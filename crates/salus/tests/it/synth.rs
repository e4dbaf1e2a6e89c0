//! `salus synth` as a user runs it: a small population written in both shapes, the same
//! bytes again for the same seed, and every resource of it (each transaction Bundle, each
//! of its entries, each NDJSON line) validated by an independent implementation,
//! `fhir.resources` (`fhir.rs` says how it is found or installed).

use crate::fhir::validate_with_fhir_resources;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_salus");

fn synth(out: &Path, format: &str, seed: &str) -> String {
    let out = Command::new(BIN)
        .args(["synth", "--patients", "12", "--seed", seed, "--quiet"])
        .args(["--format", format, "--out"])
        .arg(out)
        .env("SALUS_LOG", "warn")
        .output()
        .expect("run salus synth");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every file of `dir` by name, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_synthetic_population_is_valid_fhir_to_an_independent_validator() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bundles = dir.path().join("bundles");
    let report = synth(&bundles, "bundles", "7");
    assert!(report.contains("12 patients"), "{report}");
    assert!(
        report.lines().any(|l| l.starts_with("Observation")),
        "{report}"
    );

    // Same seed, same bytes; the directory must be new or empty.
    let again = dir.path().join("again");
    synth(&again, "bundles", "7");
    assert_eq!(files(&bundles), files(&again));
    let refused = Command::new(BIN)
        .args(["synth", "--patients", "1", "--out"])
        .arg(&bundles)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));

    let ndjson = dir.path().join("ndjson");
    synth(&ndjson, "ndjson", "7");

    let mut resources: Vec<Value> = Vec::new();
    let bundle_files = files(&bundles);
    assert_eq!(bundle_files.len(), 12);
    assert!(bundle_files.contains_key("patient-0000001.json"));
    let mut in_bundles = 0;
    for bytes in bundle_files.values() {
        let b: Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(b["type"], "transaction");
        for e in b["entry"].as_array().unwrap() {
            resources.push(e["resource"].clone());
            in_bundles += 1;
        }
        resources.push(b);
    }
    let mut in_ndjson = 0;
    for (name, bytes) in files(&ndjson) {
        let resource_type = name.strip_suffix(".ndjson").unwrap().to_owned();
        for line in String::from_utf8(bytes).unwrap().lines() {
            let r: Value = serde_json::from_str(line).unwrap();
            assert_eq!(r["resourceType"], resource_type.as_str());
            resources.push(r);
            in_ndjson += 1;
        }
    }
    assert_eq!(in_bundles, in_ndjson, "both shapes hold the same resources");
    assert!(in_ndjson > 1000, "{in_ndjson} resources");

    validate_with_fhir_resources(&resources);
}

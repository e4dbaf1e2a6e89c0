//! `salus bench-fhir` in its quickest configuration on SQLite: it starts its own server,
//! imports, loads, searches, exits 0 and prints its table, targets and summary. No timing
//! is asserted (the figures of such a run mean nothing).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_salus");

#[test]
fn bench_fhir_runs_its_quickest_configuration_and_prints_the_table() {
    let work = tempfile::tempdir().expect("temp dir");
    let out = Command::new(BIN)
        .args(["bench-fhir", "--backend", "sqlite", "--patients", "3"])
        .args(["--import-clients", "1", "--observations", "2000"])
        .args(["--seconds", "1", "--search-clients", "1"])
        .arg("--work-dir")
        .arg(work.path())
        .env("SALUS_LOG", "warn")
        .output()
        .expect("run salus bench-fhir");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("| backend | phase | clients | resources/s |"),
        "{stdout}"
    );
    for phase in [
        "| sqlite | import | 1 |",
        "| sqlite | load | 4 |",
        "| sqlite | search code=system\\|code | 1 |",
        "| sqlite | search code=code | 1 |",
        "| sqlite | search subject=Patient/id | 1 |",
    ] {
        assert!(stdout.contains(phase), "no row {phase}:\n{stdout}");
    }
    assert!(stdout.contains("### Targets"), "{stdout}");
    assert!(stdout.contains("\nsummary: sqlite import "), "{stdout}");
    // The data directory is removed after the run.
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}

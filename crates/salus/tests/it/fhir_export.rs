//! FHIR Bulk Data `$export` over real HTTP on both backends: kick-off, polling, the
//! manifest and the NDJSON files (each line as a read renders it, every resource validated
//! by `fhir.resources`), `_type`, `_since`, Patient- and Group-level exports, cancel,
//! refusals (no `Prefer: respond-async`, bad parameters, permissions, someone else's job),
//! one `export` access-log entry per exported patient; and `salus import --kind fhir` of
//! `salus synth` output (NDJSON and Bundles), read back.

use crate::app::{TestApp, on_both_backends};
use crate::fhir::{Fhir, validate_with_fhir_resources};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

on_both_backends!(
    a_system_export_is_kicked_off_polled_and_downloaded,
    exports_follow_type_since_patient_and_group,
    exports_are_refused_without_async_bad_parameters_or_permission,
    salus_import_reads_back_what_salus_synth_wrote,
);

const BIN: &str = env!("CARGO_BIN_EXE_salus");
const ASYNC: (&str, &str) = ("prefer", "respond-async");

fn fhir_patient(mrn: &str, family: &str) -> Value {
    json!({"resourceType": "Patient",
        "identifier": [{"system": "urn:mrn", "value": mrn}],
        "name": [{"family": family, "given": ["Ada"]}],
        "gender": "female", "birthDate": "1980-04-23"})
}

fn immunization(patient: &str, vaccine: &str) -> Value {
    json!({
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": vaccine}]},
        "patient": {"reference": format!("Patient/{patient}")},
        "occurrenceDateTime": "2024-01-05"
    })
}

async fn created(fhir: &Fhir<'_>, path: &str, body: &Value) -> String {
    let r = fhir.post(path, body, &[]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

/// Kick off `path` (with `Prefer: respond-async`) as `token`; the status URL.
async fn kick_off(fhir: &Fhir<'_>, path: &str, token: &str) -> String {
    let r = fhir
        .send(Method::GET, path, Some(token), None, &[ASYNC])
        .await;
    assert_eq!(r.status, 202, "{path}: {}", r.body);
    let loc = r.header("content-location").to_owned();
    assert!(loc.contains("/fhir/R4/$export-status/"), "{loc}");
    loc
}

/// Poll the status URL until the manifest (200); every 202 carries X-Progress.
async fn manifest(fhir: &Fhir<'_>, status_url: &str, token: &str) -> Value {
    for _ in 0..300 {
        let r = fhir
            .send(Method::GET, status_url, Some(token), None, &[])
            .await;
        match r.status {
            202 => assert!(!r.header("x-progress").is_empty()),
            200 => return r.body,
            other => panic!("status {other}: {}", r.body),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the export did not finish");
}

/// Every output file of a manifest, by type: its resources, checked against `count`.
async fn files(app: &TestApp, m: &Value, token: &str) -> BTreeMap<String, Vec<Value>> {
    let mut out = BTreeMap::new();
    for o in m["output"].as_array().unwrap() {
        let t = o["type"].as_str().unwrap().to_owned();
        let url = o["url"].as_str().unwrap();
        assert!(url.ends_with(&format!("/{t}.ndjson")), "{url}");
        let r = app
            .client
            .get(url)
            .bearer_auth(token)
            .header("accept", "application/fhir+ndjson")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/fhir+ndjson"
        );
        let text = r.text().await.unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one resource a line"))
            .collect();
        assert_eq!(lines.len() as u64, o["count"].as_u64().unwrap(), "{t}");
        assert!(lines.iter().all(|r| r["resourceType"] == t.as_str()));
        out.insert(t, lines);
    }
    out
}

fn ids_of(rs: &[Value]) -> BTreeSet<String> {
    rs.iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The `export` entries of the access log, as (patient, count).
async fn exported_patients(app: &TestApp) -> BTreeMap<String, usize> {
    let r = app
        .get("/api/v1/audit/access?action=export&limit=500", &app.token)
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let mut out = BTreeMap::new();
    for e in v["items"].as_array().unwrap() {
        assert_eq!(e["action"], "export");
        *out.entry(e["patient_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    out
}

async fn a_system_export_is_kicked_off_polled_and_downloaded(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let ada = created(&fhir, "/Patient", &fhir_patient("E-1", "Lovelace")).await;
    let bob = created(&fhir, "/Patient", &fhir_patient("E-2", "Babbage")).await;
    let i1 = created(&fhir, "/Immunization", &immunization(&ada, "207")).await;
    let i2 = created(&fhir, "/Immunization", &immunization(&bob, "208")).await;
    let org = created(
        &fhir,
        "/Organization",
        &json!({"resourceType": "Organization", "name": "St Elsewhere",
                "identifier": [{"system": "urn:salus:department-code", "value": "STE"}]}),
    )
    .await;
    // An Observation: the clinical aggregate, exported as its FHIR form.
    let obs = created(
        &fhir,
        "/Observation",
        &json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": format!("Patient/{ada}")},
            "effectiveDateTime": "2024-05-01T10:00:00Z",
            "valueQuantity": {"value": 72, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"}
        }),
    )
    .await;
    // A deleted document is not exported.
    let gone = created(&fhir, "/Immunization", &immunization(&bob, "209")).await;
    let d = fhir
        .send(
            Method::DELETE,
            &format!("/Immunization/{gone}"),
            Some(&app.token),
            None,
            &[],
        )
        .await;
    assert_eq!(d.status, 204);
    let before = exported_patients(&app).await;
    assert!(before.is_empty(), "{before:?}");

    let status = kick_off(
        &fhir,
        "/$export?_outputFormat=application%2Ffhir%2Bndjson",
        &app.token,
    )
    .await;
    let m = manifest(&fhir, &status, &app.token).await;
    assert_eq!(m["requiresAccessToken"], true);
    assert!(
        m["request"]
            .as_str()
            .unwrap()
            .ends_with("/fhir/R4/$export?_outputFormat=application%2Ffhir%2Bndjson"),
        "{m}"
    );
    assert!(chrono::DateTime::parse_from_rfc3339(m["transactionTime"].as_str().unwrap()).is_ok());
    assert_eq!(m["error"], json!([]));
    let got = files(&app, &m, &app.token).await;
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        ["Immunization", "Observation", "Organization", "Patient"],
        "types with nothing have no file"
    );
    assert_eq!(ids_of(&got["Observation"]), BTreeSet::from([obs]));
    assert_eq!(
        ids_of(&got["Patient"]),
        BTreeSet::from([ada.clone(), bob.clone()])
    );
    assert_eq!(ids_of(&got["Immunization"]), BTreeSet::from([i1, i2]));
    assert_eq!(ids_of(&got["Organization"]), BTreeSet::from([org]));
    // Each line is the resource as a read renders it.
    for t in ["Patient", "Immunization", "Observation", "Organization"] {
        for r in &got[t] {
            let read = fhir
                .get(&format!("/{t}/{}", r["id"].as_str().unwrap()))
                .await;
            assert_eq!(&read.body, r);
        }
    }
    let all: Vec<Value> = got.values().flatten().cloned().collect();
    validate_with_fhir_resources(&all);
    // One export entry per exported patient.
    assert_eq!(
        exported_patients(&app).await,
        BTreeMap::from([(ada.clone(), 1), (bob.clone(), 1)])
    );

    // Cancel (remove) the finished job: it is gone, files too.
    let file_url = m["output"][0]["url"].as_str().unwrap().to_owned();
    let del = fhir
        .send(Method::DELETE, &status, Some(&app.token), None, &[])
        .await;
    assert_eq!(del.status, 202);
    fhir.send(Method::GET, &status, Some(&app.token), None, &[])
        .await
        .outcome(404);
    let r = app
        .client
        .get(&file_url)
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    fhir.send(Method::DELETE, &status, Some(&app.token), None, &[])
        .await
        .outcome(404);
    fhir.validate_all();
    app.stop().await;
}

async fn exports_follow_type_since_patient_and_group(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let ada = created(&fhir, "/Patient", &fhir_patient("G-1", "Lovelace")).await;
    let bob = created(&fhir, "/Patient", &fhir_patient("G-2", "Babbage")).await;
    let i1 = created(&fhir, "/Immunization", &immunization(&ada, "207")).await;
    created(&fhir, "/Immunization", &immunization(&bob, "208")).await;
    created(
        &fhir,
        "/Organization",
        &json!({"resourceType": "Organization", "name": "Nobody's",
                "identifier": [{"system": "urn:salus:department-code", "value": "NOB"}]}),
    )
    .await;
    let group = created(
        &fhir,
        "/Group",
        &json!({"resourceType": "Group", "type": "person", "actual": true,
                "member": [{"entity": {"reference": format!("Patient/{ada}")}}]}),
    )
    .await;

    // _type: only those types.
    let s = kick_off(&fhir, "/$export?_type=Immunization", &app.token).await;
    let got = files(&app, &manifest(&fhir, &s, &app.token).await, &app.token).await;
    assert_eq!(got.keys().collect::<Vec<_>>(), ["Immunization"]);
    assert_eq!(got["Immunization"].len(), 2);
    // The audit trail only when named: every event of the log so far, as AuditEvents.
    let s = kick_off(&fhir, "/$export?_type=AuditEvent", &app.token).await;
    let got = files(&app, &manifest(&fhir, &s, &app.token).await, &app.token).await;
    assert_eq!(got.keys().collect::<Vec<_>>(), ["AuditEvent"]);
    let events = &got["AuditEvent"];
    assert!(events.len() >= 5, "{} events", events.len());
    assert!(events.iter().all(|e| e["resourceType"] == "AuditEvent"));

    // _since: only what changed after it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let i3 = created(&fhir, "/Immunization", &immunization(&bob, "210")).await;
    let q = format!(
        "/$export?_type=Immunization,Patient&_since={}",
        since
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .replace('+', "%2B")
    );
    let got = files(
        &app,
        &manifest(&fhir, &kick_off(&fhir, &q, &app.token).await, &app.token).await,
        &app.token,
    )
    .await;
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["Immunization"],
        "no patient changed"
    );
    assert_eq!(ids_of(&got["Immunization"]), BTreeSet::from([i3]));

    // Patient level: every patient's compartment, not the organization.
    let got = files(
        &app,
        &manifest(
            &fhir,
            &kick_off(&fhir, "/Patient/$export", &app.token).await,
            &app.token,
        )
        .await,
        &app.token,
    )
    .await;
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["Immunization", "Patient"],
        "documents of no patient are left out"
    );
    assert_eq!(got["Immunization"].len(), 3);

    // Group level: the member's compartment only.
    let log_before = exported_patients(&app).await;
    let got = files(
        &app,
        &manifest(
            &fhir,
            &kick_off(&fhir, &format!("/Group/{group}/$export"), &app.token).await,
            &app.token,
        )
        .await,
        &app.token,
    )
    .await;
    assert_eq!(ids_of(&got["Patient"]), BTreeSet::from([ada.clone()]));
    assert_eq!(ids_of(&got["Immunization"]), BTreeSet::from([i1]));
    let log_after = exported_patients(&app).await;
    assert_eq!(log_after[&ada], log_before[&ada] + 1);
    assert_eq!(log_after[&bob], log_before[&bob], "bob was not exported");
    let all: Vec<Value> = got.values().flatten().cloned().collect();
    validate_with_fhir_resources(&all);

    fhir.send(
        Method::GET,
        "/Group/no-such-group/$export",
        Some(&app.token),
        None,
        &[ASYNC],
    )
    .await
    .outcome(404);
    fhir.send(
        Method::GET,
        &format!("/Immunization/{group}/$export"),
        Some(&app.token),
        None,
        &[ASYNC],
    )
    .await
    .outcome(404);
    app.stop().await;
}

async fn exports_are_refused_without_async_bad_parameters_or_permission(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let ada = created(&fhir, "/Patient", &fhir_patient("R-1", "Lovelace")).await;
    let get = |path: &'static str, token: String, headers: Vec<(&'static str, &'static str)>| {
        let fhir = &fhir;
        async move {
            fhir.send(Method::GET, path, Some(&token), None, &headers)
                .await
        }
    };
    let admin = app.token.clone();
    // Prefer: respond-async is required.
    let (code, _) = get("/$export", admin.clone(), vec![]).await.outcome(400);
    assert_eq!(code, "invalid");
    for bad in [
        "/$export?_outputFormat=text%2Fcsv",
        "/$export?_type=Immunization,NoSuchType",
        "/$export?_since=yesterday",
        "/$export?_typeFilter=Immunization%3Fstatus%3Dcompleted",
        "/Patient/$export?_type=",
    ] {
        get(bad, admin.clone(), vec![ASYNC]).await.outcome(400);
    }
    // The other accepted spellings of the output format.
    for ok in [
        "/$export?_outputFormat=ndjson",
        "/$export?_outputFormat=application/ndjson",
    ] {
        assert_eq!(get(ok, admin.clone(), vec![ASYNC]).await.status, 202);
    }

    // Only admin-ish roles export; a provider reads but may not.
    let provider = app.token_for("prov", &["provider"]).await;
    let r = get("/$export", provider.clone(), vec![ASYNC]).await;
    r.outcome(403);
    get("/Patient/$export", provider, vec![ASYNC])
        .await
        .outcome(403);
    // A patient-context token (SMART patient scope) may not export, whatever its roles.
    let running = app.running.as_ref().unwrap();
    let admin2 = running_admin(&app, "admin2").await;
    let patient_token = running
        .auth
        .issue_limited(
            admin2,
            app.tenant,
            Duration::from_secs(600),
            salus_api::auth::TokenLimits {
                scope: Some("patient/*.read".into()),
                patient: Some(uuid::Uuid::parse_str(&ada).unwrap()),
            },
        )
        .unwrap();
    get("/Patient/$export", patient_token.clone(), vec![ASYNC])
        .await
        .outcome(403);
    get("/$export", patient_token, vec![ASYNC])
        .await
        .outcome(403);

    // A backend service (SMART system scopes, as the Bulk Data IG has it) may export what
    // its scopes read: everything with system/*.read, only Patient with system/Patient.rs,
    // nothing with a user scope.
    let service = |scope: &str| {
        running
            .auth
            .issue_limited(
                admin2,
                app.tenant,
                Duration::from_secs(600),
                salus_api::auth::TokenLimits {
                    scope: Some(scope.into()),
                    patient: None,
                },
            )
            .unwrap()
    };
    let all = service("system/*.read");
    let status = kick_off(&fhir, "/$export", &all).await;
    let m = manifest(&fhir, &status, &all).await;
    let got = files(&app, &m, &all).await;
    assert!(got.contains_key("Patient"), "{m}");
    let only_patients = service("system/Patient.rs");
    get("/$export", only_patients.clone(), vec![ASYNC])
        .await
        .outcome(403);
    let status = kick_off(&fhir, "/$export?_type=Patient", &only_patients).await;
    let m = manifest(&fhir, &status, &only_patients).await;
    assert_eq!(
        files(&app, &m, &only_patients)
            .await
            .keys()
            .collect::<Vec<_>>(),
        ["Patient"]
    );
    get(
        "/$export?_type=Patient",
        service("user/*.read"),
        vec![ASYNC],
    )
    .await
    .outcome(403);

    // A job is its starter's: another admin of the tenant, or another tenant, sees none.
    let status = kick_off(&fhir, "/$export?_type=Patient", &app.token).await;
    let other_admin = running
        .auth
        .issue(admin2, app.tenant, Duration::from_secs(600))
        .unwrap();
    fhir.send(Method::GET, &status, Some(&other_admin), None, &[])
        .await
        .outcome(404);
    fhir.send(Method::DELETE, &status, Some(&other_admin), None, &[])
        .await
        .outcome(404);
    let other_tenant = app.other_tenant("elsewhere").await;
    fhir.send(Method::GET, &status, Some(&other_tenant), None, &[])
        .await
        .outcome(404);
    let m = manifest(&fhir, &status, &app.token).await;
    let url = m["output"][0]["url"].as_str().unwrap();
    for token in [&other_admin, &other_tenant] {
        let r = app.client.get(url).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 404);
    }
    let r = app.client.get(url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    fhir.send(
        Method::GET,
        "/$export-status/not-a-job",
        Some(&app.token),
        None,
        &[],
    )
    .await
    .outcome(404);
    fhir.send(
        Method::GET,
        &format!("/$export-status/{}", uuid::Uuid::now_v7()),
        Some(&app.token),
        None,
        &[],
    )
    .await
    .outcome(404);
    // The CapabilityStatement names the operations.
    let cap = fhir.send(Method::GET, "/metadata", None, None, &[]).await;
    let ops: Vec<&str> = cap.body["rest"][0]["operation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["definition"].as_str().unwrap())
        .collect();
    assert!(ops.contains(&"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"));
    assert!(ops.contains(&"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"));
    fhir.validate_all();
    app.stop().await;
}

/// A second admin of the app's tenant; its user id.
async fn running_admin(app: &TestApp, name: &str) -> uuid::Uuid {
    let running = app.running.as_ref().unwrap();
    salus::server::create_user(
        &running.services,
        app.tenant,
        name,
        name,
        vec!["admin".into()],
    )
    .await
    .unwrap()
}

fn salus(args: &[String], cmd: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(cmd)
        .env("SALUS_LOG", "warn")
        .output()
        .expect("run salus");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn salus_import_reads_back_what_salus_synth_wrote(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let settings = app.settings.clone();
    let tenant = app.tenant;
    let mut args = vec![
        "--data-dir".to_string(),
        settings.data_dir.to_string_lossy().into_owned(),
    ];
    if let Some(url) = &settings.database_url {
        args.push("--database-url".into());
        args.push(url.clone());
    }
    let _data = app.stop().await;
    let work = tempfile::tempdir().unwrap();
    let nd = work.path().join("nd");
    let nd_arg = nd.to_string_lossy().into_owned();
    let (code, out, err) = salus(
        &[],
        &[
            "synth",
            "--patients",
            "2",
            "--seed",
            "5",
            "--out",
            &nd_arg,
            "--format",
            "ndjson",
            "--quiet",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    // A bad line among good ones: reported with its file and line, the rest imported.
    let imm = nd.join("Immunization.ndjson");
    let mut text = std::fs::read_to_string(&imm).unwrap();
    let good_lines = text.lines().count();
    text.push_str("{\"resourceType\": \"Immunization\", \"status\": \"not-a-status\"}\n");
    std::fs::write(&imm, text).unwrap();
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    let mut lines_by_type: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for f in std::fs::read_dir(&nd).unwrap() {
        let p = f.unwrap().path();
        let t = p.file_stem().unwrap().to_string_lossy().into_owned();
        let rs: Vec<Value> = std::fs::read_to_string(&p)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r.get("id").is_some())
            .collect();
        expected.insert(t.clone(), rs.len());
        lines_by_type.insert(t, rs);
    }
    assert_eq!(expected["Immunization"], good_lines);
    let (code, out, err) = salus(
        &args,
        &[
            "import", &nd_arg, "--kind", "fhir", "--batch", "50", "--quiet",
        ],
    );
    assert_eq!(code, 1, "one line failed: {out}{err}");
    let line = good_lines + 1;
    assert!(
        err.contains(&format!("Immunization.ndjson:{line}:")),
        "the bad line is named: {err}"
    );
    let total: usize = expected.values().sum();
    assert!(
        out.contains(&format!("{total} resources")) && out.contains("1 failed"),
        "{out}"
    );
    // The Bundle form too (the same population under another seed).
    let bundles = work.path().join("bundles");
    let b_arg = bundles.to_string_lossy().into_owned();
    let (code, out, err) = salus(
        &[],
        &[
            "synth",
            "--patients",
            "1",
            "--seed",
            "6",
            "--out",
            &b_arg,
            "--quiet",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = salus(&args, &["import", &b_arg, "--kind", "fhir", "--quiet"]);
    assert_eq!(code, 0, "{out}{err}");
    // A usage mistake is exit 2.
    let (code, _, _) = salus(&args, &["import", &b_arg, "--kind", "fhir", "--dry-run"]);
    assert_eq!(code, 2);

    // Read back over HTTP, on the same data.
    let (running, boot) = salus::server::start(&settings).await.unwrap();
    assert!(boot.is_none());
    let reader = salus::server::create_user(
        &running.services,
        tenant,
        "reader",
        "reader",
        vec!["admin".into()],
    )
    .await
    .unwrap();
    let token = running
        .auth
        .issue(reader, tenant, Duration::from_secs(600))
        .unwrap();
    let base = format!("http://{}/fhir/R4", running.addr);
    let client = reqwest::Client::new();
    let get = |url: String| {
        let client = client.clone();
        let token = token.clone();
        async move {
            let r = client.get(url).bearer_auth(token).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, patients) = get(format!("{base}/Patient?_count=50")).await;
    assert_eq!(status, 200);
    assert_eq!(
        patients["entry"].as_array().unwrap().len(),
        3,
        "2 from NDJSON, 1 from the Bundle"
    );
    let patient_ids: BTreeSet<String> = patients["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .collect();
    // The Observations are the aggregate's: Salus minted their ids; every one arrived.
    let (_, obs) = get(format!("{base}/Observation?_summary=count")).await;
    let from_ndjson = lines_by_type["Observation"].len() as u64;
    assert!(
        obs["total"].as_u64().is_some_and(|n| n > from_ndjson),
        "the NDJSON's {from_ndjson} and the Bundle's: {obs}"
    );
    // So are the Conditions and AllergyIntolerances (the Statement aggregate's), the
    // Encounters, the Procedures and the practitioners who saw the patients.
    for t in [
        "Condition",
        "AllergyIntolerance",
        "Encounter",
        "Procedure",
        "Practitioner",
    ] {
        let (_, found) = get(format!("{base}/{t}?_summary=count")).await;
        let from_ndjson = lines_by_type.get(t).map_or(0, Vec::len) as u64;
        assert!(from_ndjson > 0, "the population has {t}s");
        assert!(
            found["total"].as_u64().is_some_and(|n| n >= from_ndjson),
            "the NDJSON's {from_ndjson} {t}s and the Bundle's: {found}"
        );
    }
    // Every other NDJSON resource is there under its id, and what named a patient names
    // the patient it became.
    let mut seen = Vec::new();
    for (t, rs) in &lines_by_type {
        if [
            "Patient",
            "Observation",
            "Condition",
            "AllergyIntolerance",
            "Encounter",
            "Procedure",
            "Practitioner",
        ]
        .contains(&t.as_str())
        {
            continue;
        }
        for r in rs.iter().take(5) {
            let (status, got) = get(format!("{base}/{t}/{}", r["id"].as_str().unwrap())).await;
            assert_eq!(status, 200, "{t}/{}: {got}", r["id"]);
            for key in ["subject", "patient", "beneficiary"] {
                if let Some(p) = got[key]["reference"].as_str() {
                    let id = p.strip_prefix("Patient/").unwrap();
                    assert!(patient_ids.contains(id), "{t}.{key} = {p}");
                }
            }
            seen.push(got);
        }
    }
    assert!(seen.len() > 20, "{}", seen.len());
    validate_with_fhir_resources(&seen);
    running.stop().await.unwrap();
}

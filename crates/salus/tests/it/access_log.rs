//! The data-access log over real HTTP, on both backends: a walk over the route table (every
//! route that reads patient data leaves a row when there is data), purpose of use and
//! justification from headers, one search row per patient of the page, break-glass, the
//! audit reports and who may read them, a read refused when the log cannot be written, and
//! `salus audit verify` naming a tampered row.

use crate::app::{TestApp, on_both_backends, patient, problem};
use reqwest::Method;
use salus_api::guard::{Access, RouteTable};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

on_both_backends!(
    every_route_that_reads_patient_data_logs_before_it_answers,
    reads_record_purpose_justification_and_client,
    audit_reports_are_for_auditors_and_the_patient_itself,
    a_read_is_refused_when_the_access_log_cannot_be_written,
    audit_verify_names_a_tampered_access_entry,
);

async fn created(app: &TestApp, path: &str, body: Value) -> String {
    let r = app.post(path, &app.token, &body).await;
    assert_eq!(r.status(), 201, "{path}: {:?}", r.text().await);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// One record of every kind of patient data, all of patient `pid`; ids by path prefix.
async fn seed(app: &TestApp) -> (String, HashMap<&'static str, String>) {
    let pid = app
        .create_patient(&patient("AL-1", "Access", "Logged"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dep = app.create_department("CARD", "Cardiology").await;
    let cid = created(app, "/api/v1/clinicians", json!({"family": "Grey", "given": ["Meredith"], "credential": "GMC-200", "specialty": "General surgery", "org_unit": "Theatres"})).await;
    let sct = |code: &str| json!({"system": "http://snomed.info/sct", "code": code});
    let mut ids = HashMap::new();
    ids.insert("patients", pid.clone());
    ids.insert(
        "interactions",
        created(
            app,
            "/api/v1/interactions",
            json!({"patient_id": pid, "kind": "call", "outcome": "healthy"}),
        )
        .await,
    );
    ids.insert("encounters", created(app, "/api/v1/encounters", json!({"patient_id": pid, "clinician_id": cid, "type": "outpatient", "department_id": dep, "scheduled_for": "2026-04-01T09:00:00+01:00"})).await);
    ids.insert("observations", created(app, "/api/v1/observations", json!({"patient_id": pid, "code": {"system": "http://loinc.org", "code": "8480-6"}, "value": {"type": "quantity", "value": 128.0, "unit": "mm[Hg]"}, "effective_at": "2026-05-01T08:00:00+02:00"})).await);
    ids.insert("procedures", created(app, "/api/v1/procedures", json!({"patient_id": pid, "code": sct("80146002"), "performer_id": cid, "outcome": "successful", "performed_at": "2026-06-01T10:00:00+00:00"})).await);
    ids.insert("conditions", created(app, "/api/v1/conditions", json!({"patient_id": pid, "code": sct("38341003"), "verification_status": "confirmed", "onset": "2019-05-01"})).await);
    ids.insert("allergies", created(app, "/api/v1/allergies", json!({"patient_id": pid, "code": {"system": "urn:local:allergen", "code": "penicillin"}, "category": "medication", "criticality": "high"})).await);
    let rid = created(
        app,
        "/api/v1/medical-records",
        json!({"patient_id": pid, "department_id": dep}),
    )
    .await;
    ids.insert(
        "notes",
        created(
            app,
            &format!("/api/v1/medical-records/{rid}/notes"),
            json!({"note_type": "progress", "text": "Stable. BP 120/80."}),
        )
        .await,
    );
    ids.insert("medical-records", rid.clone());
    let r = app
        .client
        .post(app.url(&format!(
            "/api/v1/medical-records/{rid}/attachments?filename=r.pdf"
        )))
        .bearer_auth(&app.token)
        .header("content-type", "application/pdf")
        .body(b"%PDF-1.4\n1 0 obj << >> endobj\n%%EOF\n".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let a: Value = r.json().await.unwrap();
    ids.insert("attachments", a["id"].as_str().unwrap().to_owned());
    ids.insert(
        "consents",
        crate::consents::seed_signed_consent(app, &pid).await,
    );
    // A FHIR resource kept as a document, of the patient.
    let r = app
        .client
        .post(app.url("/fhir/R4/Immunization"))
        .bearer_auth(&app.token)
        .header("content-type", "application/fhir+json")
        .body(
            json!({"resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": "flu"},
                   "patient": {"reference": format!("Patient/{pid}")}, "occurrenceDateTime": "2024-01-05"})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let d: Value = r.json().await.unwrap();
    ids.insert("{type}", d["id"].as_str().unwrap().to_owned());
    (pid, ids)
}

/// The entries logged after seq `after`, as an auditor sees them.
async fn logged_after(app: &TestApp, after: i64) -> Vec<Value> {
    let r = app
        .get(
            &format!("/api/v1/audit/access?cursor={after}&limit=500"),
            &app.token,
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["items"].as_array().unwrap().clone()
}

/// A concrete URL for a route pattern, naming the seeded record of its collection.
fn concrete(path: &str, ids: &HashMap<&'static str, String>) -> String {
    let segs: Vec<&str> = path.split('/').collect();
    let mut out = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        out.push(match *seg {
            "{kind}" => "patients".to_string(),
            "{type}" => "Immunization".to_string(),
            "{vid}" => "1".to_string(),
            s if s.starts_with('{') => ids
                .get(match segs[i - 1] {
                    // FHIR names the collection by its resource type.
                    "Patient" => "patients",
                    "Observation" => "observations",
                    "Condition" => "conditions",
                    "AllergyIntolerance" => "allergies",
                    "Encounter" => "encounters",
                    "Procedure" => "procedures",
                    "DocumentReference" => "notes",
                    "Consent" => "consents",
                    other => other,
                })
                .cloned()
                .unwrap_or_else(|| panic!("no seeded record for {path}")),
            s => s.to_string(),
        });
    }
    let url = out.join("/");
    if path == "/api/v1/notes" {
        format!("{url}?q=stable")
    } else if path == "/fhir/R4/Patient" {
        format!("{url}?_id={}", ids["patients"])
    } else if path == "/fhir/R4/{type}" {
        format!("{url}?_id={}", ids["{type}"])
    } else {
        url
    }
}

async fn every_route_that_reads_patient_data_logs_before_it_answers(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let (pid, ids) = seed(&app).await;
    let table = RouteTable::from_openapi(&salus_api::openapi());
    let mut last = 0;
    let mut walked = 0;
    for (method, path, access) in table.entries() {
        let Access::Permission(p) = access else {
            continue;
        };
        if !salus_api::guard::reads_patient_data(p) || method != "GET" {
            continue;
        }
        if path.contains("$export") {
            // Bulk Data: the export job logs each exported patient when it runs, not the
            // kick-off, status or file requests (fhir_export.rs tests those entries).
            continue;
        }
        let url = concrete(&path, &ids);
        let r = app
            .client
            .request(Method::GET, app.url(&url))
            .bearer_auth(&app.token)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.bytes().await.unwrap();
        assert_eq!(status, 200, "GET {url}: {}", String::from_utf8_lossy(&body));
        let rows = logged_after(&app, last).await;
        if path == "/api/v1/outcomes" {
            // The tenant's outcomes are nobody's data.
            assert!(rows.is_empty(), "{rows:?}");
            continue;
        }
        assert!(
            !rows.is_empty(),
            "GET {url} answered without an access-log row: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            rows.iter().all(|r| r["patient_id"] == pid.as_str()),
            "{rows:?}"
        );
        last = rows.last().unwrap()["seq"].as_i64().unwrap();
        walked += 1;
    }
    assert!(walked >= 30, "only {walked} patient-data routes walked");
    app.stop().await;
}

async fn reads_record_purpose_justification_and_client(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let p1 = app.create_patient(&patient("AL-2", "Ada", "One")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p2 = app.create_patient(&patient("AL-3", "Bea", "Two")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .client
        .get(app.url(&format!("/api/v1/patients/{p1}")))
        .bearer_auth(&app.token)
        .header("x-purpose-of-use", "hpaymt")
        .header("x-access-justification", "claim 42")
        .header("user-agent", "ward-tablet/2.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rows = logged_after(&app, 0).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let e = &rows[0];
    assert_eq!(e["patient_id"], p1.as_str());
    assert_eq!(e["resource_id"], p1.as_str());
    assert_eq!(e["resource_type"], "patient");
    assert_eq!(e["action"], "read");
    assert_eq!(e["purpose"], "HPAYMT");
    assert_eq!(e["justification"], "claim 42");
    assert_eq!(e["client"], "ward-tablet/2.1");
    assert_eq!(e["break_glass"], false);
    assert_eq!(e["seq"], 1);
    // An unknown purpose is a 400 naming the codes, and nothing is read.
    let r = app
        .client
        .get(app.url(&format!("/api/v1/patients/{p1}")))
        .bearer_auth(&app.token)
        .header("x-purpose-of-use", "CURIOSITY")
        .send()
        .await
        .unwrap();
    let body = problem(r, 400, "bad-request").await;
    assert!(body["detail"].as_str().unwrap().contains("TREAT"), "{body}");
    // A list page: one search row per patient on the page, purpose TREAT by default.
    for (p, code) in [(&p1, "8480-6"), (&p1, "8462-4"), (&p2, "8480-6")] {
        created(&app, "/api/v1/observations", json!({"patient_id": p, "code": {"system": "http://loinc.org", "code": code}, "value": {"type": "quantity", "value": 80.0, "unit": "mm[Hg]"}})).await;
    }
    let r = app.get("/api/v1/observations", &app.token).await;
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let rows = logged_after(&app, 1).await;
    let mut patients: Vec<&str> = rows
        .iter()
        .map(|r| r["patient_id"].as_str().unwrap())
        .collect();
    patients.sort();
    let mut want = vec![p1.as_str(), p2.as_str()];
    want.sort();
    assert_eq!(patients, want);
    assert!(rows.iter().all(|r| r["action"] == "search"
        && r["purpose"] == "TREAT"
        && r["resource_type"] == "observation"));
    app.stop().await;
}

async fn audit_reports_are_for_auditors_and_the_patient_itself(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let p1 = app.create_patient(&patient("AL-4", "Cy", "Three")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p2 = app.create_patient(&patient("AL-5", "Di", "Four")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let running = app.running.as_ref().unwrap();
    let provider_id = salus::server::create_user(
        &running.services,
        app.tenant,
        "doc",
        "doc",
        vec!["provider".into()],
    )
    .await
    .unwrap();
    let provider = running
        .auth
        .issue(provider_id, app.tenant, Duration::from_secs(600))
        .unwrap();
    let auditor = app.token_for("auditor1", &["auditor"]).await;
    // A provider without a care relationship reads under break-glass: allowed, flagged.
    let r = app
        .client
        .get(app.url(&format!("/api/v1/patients/{p1}")))
        .bearer_auth(&provider)
        .header("x-break-glass", "unconscious in ED")
        .header("x-purpose-of-use", "ETREAT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.get(&format!("/api/v1/patients/{p2}"), &provider)
            .await
            .status(),
        200
    );
    // Only audit:read sees the log and the reports.
    for path in [
        "/api/v1/audit/access",
        "/api/v1/audit/break-glass",
        &format!("/api/v1/patients/{p1}/access"),
    ] {
        let body = problem(app.get(path, &provider).await, 403, "forbidden").await;
        assert_eq!(body["permission"], "audit:read", "{path}");
    }
    let r = app.get("/api/v1/audit/break-glass", &auditor).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{v}");
    assert_eq!(items[0]["patient_id"], p1.as_str());
    assert_eq!(items[0]["break_glass"], true);
    assert_eq!(items[0]["justification"], "unconscious in ED");
    assert_eq!(items[0]["purpose"], "ETREAT");
    assert_eq!(items[0]["actor_id"], provider_id.to_string());
    // Filters and paging.
    let r = app
        .get(
            &format!("/api/v1/audit/access?actor_id={provider_id}&action=read&limit=1"),
            &auditor,
        )
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let next = v["next_cursor"].as_str().unwrap().to_owned();
    let r = app
        .get(
            &format!("/api/v1/audit/access?actor_id={provider_id}&cursor={next}"),
            &auditor,
        )
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["patient_id"], p2.as_str());
    assert!(v["next_cursor"].is_null());
    problem(
        app.get("/api/v1/audit/access?action=peek", &auditor).await,
        400,
        "bad-request",
    )
    .await;
    problem(
        app.get("/api/v1/audit/access?patient_id=nope", &auditor)
            .await,
        400,
        "bad-request",
    )
    .await;
    // The patient's own token sees who looked at its record, not another's.
    let me = running
        .auth
        .issue_limited(
            provider_id,
            app.tenant,
            Duration::from_secs(600),
            salus_api::auth::TokenLimits {
                scope: Some("patient/*.read".into()),
                patient: Some(uuid::Uuid::parse_str(&p1).unwrap()),
            },
        )
        .unwrap();
    let r = app.get(&format!("/api/v1/patients/{p1}/access"), &me).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let items = v["items"].as_array().unwrap();
    assert!(items.iter().all(|i| i["patient_id"] == p1.as_str()), "{v}");
    assert!(items.iter().any(|i| i["break_glass"] == true), "{v}");
    problem(
        app.get(&format!("/api/v1/patients/{p2}/access"), &me).await,
        403,
        "forbidden",
    )
    .await;
    // Tenants keep their logs apart.
    let other = app.other_tenant("elsewhere").await;
    let v: Value = app
        .get("/api/v1/audit/access", &other)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 0, "{v}");
    app.stop().await;
}

async fn a_read_is_refused_when_the_access_log_cannot_be_written(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let pid = app.create_patient(&patient("AL-6", "Ed", "Five")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    match &app.settings.database_url {
        None => {
            let main = app.settings.sqlite_path();
            let path = main.with_file_name("salus-access.db");
            let c = rusqlite::Connection::open(path).unwrap();
            c.execute_batch("CREATE TRIGGER refuse BEFORE INSERT ON access_log BEGIN SELECT RAISE(ABORT, 'disk full'); END;")
                .unwrap();
        }
        Some(url) => {
            let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            c.batch_execute(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$;
                 CREATE TRIGGER refuse BEFORE INSERT ON access_log FOR EACH ROW EXECUTE FUNCTION refuse();",
            )
            .await
            .unwrap();
        }
    }
    let body = problem(
        app.get(&format!("/api/v1/patients/{pid}"), &app.token)
            .await,
        503,
        "unavailable",
    )
    .await;
    assert!(!body.to_string().contains("Ed"), "{body}");
    problem(
        app.get("/api/v1/patients", &app.token).await,
        503,
        "unavailable",
    )
    .await;
    // Writes do not wait on the access log.
    app.create_patient(&patient("AL-7", "Flo", "Six")).await;
    app.stop().await;
}

fn salus(args: &[String], cmd: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_salus"))
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

async fn audit_verify_names_a_tampered_access_entry(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let pid = app.create_patient(&patient("AL-8", "Gus", "Seven")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..3 {
        assert_eq!(
            app.get(&format!("/api/v1/patients/{pid}"), &app.token)
                .await
                .status(),
            200
        );
    }
    let rows = logged_after(&app, 0).await;
    let victim = rows[1]["entry_id"].as_str().unwrap().to_owned();
    let mut args = vec![
        "--data-dir".to_string(),
        app.settings.data_dir.to_string_lossy().into_owned(),
    ];
    if let Some(url) = &app.settings.database_url {
        args.push("--database-url".into());
        args.push(url.clone());
    }
    let db_url = app.settings.database_url.clone();
    let access_path = app.settings.sqlite_path().with_file_name("salus-access.db");
    let _data = app.stop().await;
    let (code, out, err) = salus(&args, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 access entries verified"), "{out}");
    match db_url {
        None => {
            let c = rusqlite::Connection::open(&access_path).unwrap();
            c.execute_batch("DROP TRIGGER access_log_no_update; UPDATE access_log SET purpose = 'HPAYMT' WHERE seq = 2;")
                .unwrap();
        }
        Some(url) => {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            c.batch_execute(
                "ALTER TABLE access_log DISABLE TRIGGER access_log_append_only;
                 UPDATE access_log SET purpose = 'HPAYMT' WHERE seq = 2;",
            )
            .await
            .unwrap();
        }
    }
    let (code, out, err) = salus(&args, &["audit", "verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&format!("access entry {victim}")), "{err}");
}

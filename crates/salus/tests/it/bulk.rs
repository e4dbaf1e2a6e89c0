//! Bulk import and export over HTTP (requirements/004, "Bulk Operations"): async import
//! jobs with progress and an error report, dry runs, all-or-nothing, idempotent re-runs,
//! streamed exports, and an export → import → export round trip into another tenant.

use crate::app::{TestApp, on_both_backends, problem};
use base64::Engine;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

on_both_backends!(
    csv_import_reports_bad_rows_and_reruns_are_idempotent,
    dry_run_and_all_or_nothing_write_nothing_when_asked,
    export_then_import_into_an_empty_tenant_reproduces_the_data,
    bad_input_is_a_problem_and_permissions_are_checked,
    ndjson_import_of_many_rows_counts_every_row,
    clinical_rows_name_what_is_wrong,
    cli_import_and_export_work_on_the_store_directly,
);

/// POST a file as an import and wait for its job to end; the final job.
async fn import(app: &TestApp, token: &str, query: &str, content_type: &str, body: &str) -> Value {
    let r = app
        .client
        .post(app.url(&format!("/api/v1/imports?{query}")))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let job: Value = r.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/imports/{}", job["id"].as_str().unwrap())
    );
    wait(app, token, &location).await
}

async fn wait(app: &TestApp, token: &str, location: &str) -> Value {
    for _ in 0..600 {
        let job: Value = app.get(location, token).await.json().await.unwrap();
        if job["status"] != "running" {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the import job did not finish");
}

async fn export(app: &TestApp, token: &str, kind: &str, format: &str) -> String {
    let r = app
        .get(&format!("/api/v1/exports/{kind}?format={format}"), token)
        .await;
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        ct.starts_with(match format {
            "csv" => "text/csv",
            "json" => "application/json",
            _ => "application/x-ndjson",
        }),
        "{ct}"
    );
    r.text().await.unwrap()
}

fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn counts(job: &Value) -> (u64, u64, u64, u64, u64) {
    let c = &job["counts"];
    let n = |k: &str| c[k].as_u64().unwrap();
    (
        n("rows"),
        n("created"),
        n("updated"),
        n("unchanged"),
        n("failed"),
    )
}

const PATIENTS_CSV: &str = "identifiers,family,given,birth_date,gender,phones,email\n\
urn:mrn|B-1,Lovelace,Ada;Augusta,1815-12-10,female,+44 20 7946 0958,ada@example.org\n\
urn:mrn|B-2,Hopper,Grace,1906-12-09,female,,\n\
urn:mrn|B-3,,Nameless,1950-01-01,,,\n\
urn:mrn|B-4,Turing,Alan,1912-06-23,male,020 7946 0958,\n";

async fn csv_import_reports_bad_rows_and_reruns_are_idempotent(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let post = |key: &'static str| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/api/v1/imports?kind=patients"))
                .bearer_auth(&app.token)
                .header("content-type", "text/csv")
                .header("idempotency-key", key)
                .body(PATIENTS_CSV)
                .send()
                .await
                .unwrap()
        }
    };
    let r = post("bulk-1").await;
    assert_eq!(r.status(), 202);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["kind"], "patients");
    assert_eq!(first["format"], "csv");
    assert_eq!(first["status"], "running");
    assert_eq!(first["bytes"], PATIENTS_CSV.len());
    assert_eq!(
        first["progress"]["bytes_total"],
        PATIENTS_CSV.len(),
        "{first}"
    );
    let job = wait(
        &app,
        &app.token,
        &format!("/api/v1/imports/{}", first["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(counts(&job), (4, 2, 0, 0, 2));
    // The error report: row, field, reason.
    let errors = job["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["row"], 3);
    assert_eq!(errors[0]["field"], "name.family");
    assert_eq!(errors[1]["row"], 4);
    assert_eq!(errors[1]["field"], "phone");
    assert!(
        errors[1]["reason"].as_str().unwrap().contains("E.164"),
        "{job}"
    );
    // The good rows are ordinary patients: searchable, with their history.
    let found: Value = app
        .get("/api/v1/patients?identifier=urn:mrn%7CB-1", &app.token)
        .await
        .json()
        .await
        .unwrap();
    let ada = &found["items"][0];
    assert_eq!(ada["name"][0]["given"], json!(["Ada", "Augusta"]));
    assert_eq!(ada["phones"], json!(["+442079460958"]));
    let h: Value = app
        .get(
            &format!("/api/v1/patients/{}/history", ada["id"].as_str().unwrap()),
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(h["items"][0]["event_type"], "patient.registered");
    // The same key and file: the first answer again, no second job.
    let r = post("bulk-1").await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(r.json::<Value>().await.unwrap()["id"], first["id"]);
    // Running the file again changes nothing: the identifiers find their patients.
    let again = import(&app, &app.token, "kind=patients", "text/csv", PATIENTS_CSV).await;
    assert_eq!(counts(&again), (4, 0, 0, 2, 2));
    // A changed row updates its patient (through the domain: a patient.updated event).
    let changed = "identifiers,family,given,email,status\nurn:mrn|B-2,Hopper,Grace,grace@example.org,active\n";
    let job = import(&app, &app.token, "kind=patients", "text/csv", changed).await;
    assert_eq!(counts(&job), (1, 0, 1, 0, 0));
    let found: Value = app
        .get("/api/v1/patients?identifier=urn:mrn%7CB-2", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["items"][0]["email"], "grace@example.org");
    assert_eq!(found["items"][0]["status"], "active");
    assert_eq!(
        found["items"][0]["birth_date"],
        Value::Null,
        "the row is the patient now"
    );
    app.stop().await;
}

async fn dry_run_and_all_or_nothing_write_nothing_when_asked(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let good = "identifiers,family\nurn:mrn|D-1,Dry\nurn:mrn|D-2,Run\n";
    let job = import(
        &app,
        &app.token,
        "kind=patients&dry_run=true",
        "text/csv",
        good,
    )
    .await;
    assert_eq!(job["dry_run"], true);
    assert_eq!(counts(&job), (2, 2, 0, 0, 0));
    let found: Value = app
        .get("/api/v1/patients?identifier=urn:mrn%7CD-1", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["items"], json!([]), "a dry run writes nothing");

    let mixed = "identifiers,family,birth_date\nurn:mrn|A-1,Whole,1970-01-01\nurn:mrn|A-2,Broken,1970-13-01\n";
    let job = import(
        &app,
        &app.token,
        "kind=patients&all_or_nothing=true",
        "text/csv",
        mixed,
    )
    .await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["failure"]
            .as_str()
            .unwrap()
            .contains("nothing was imported"),
        "{job}"
    );
    assert_eq!(job["errors"][0]["row"], 2);
    assert_eq!(job["errors"][0]["field"], "birth_date");
    let found: Value = app
        .get("/api/v1/patients?identifier=urn:mrn%7CA-1", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        found["items"],
        json!([]),
        "the good row was not written either"
    );
    // Without the bad row, all-or-nothing imports everything.
    let whole = "identifiers,family\nurn:mrn|A-1,Whole\nurn:mrn|A-3,Also\n";
    let job = import(
        &app,
        &app.token,
        "kind=patients&all_or_nothing=true",
        "text/csv",
        whole,
    )
    .await;
    assert_eq!(
        (job["status"].as_str(), counts(&job)),
        (Some("completed"), (2, 2, 0, 0, 0))
    );
    // Two rows of one file with the same identifier are one patient (the store's unique key
    // decides which row created it; the other updates it).
    let twice = "identifiers,family\nurn:mrn|DUP,First\nurn:mrn|DUP,Second\n";
    let job = import(&app, &app.token, "kind=patients", "text/csv", twice).await;
    assert_eq!(counts(&job), (2, 1, 1, 0, 0), "{job}");
    let found: Value = app
        .get("/api/v1/patients?identifier=urn:mrn%7CDUP", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    // Without all-or-nothing the bad row never stops the good one.
    let job = import(&app, &app.token, "kind=patients", "text/csv", mixed).await;
    assert_eq!(
        counts(&job),
        (2, 0, 1, 0, 1),
        "A-1 gets its birth date, A-2 fails alone"
    );
    app.stop().await;
}

fn tenant_of(token: &str) -> salus_kernel::TenantId {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: Value = serde_json::from_slice(&bytes).unwrap();
    salus_kernel::TenantId(Uuid::parse_str(claims["tid"].as_str().unwrap()).unwrap())
}

/// A resource of tenant A as tenant B should hold it after the import: ids mapped to the
/// ids derived for B, store metadata and the recording user dropped.
fn as_imported(doc: &Value, kind: &str, into: salus_kernel::TenantId) -> Value {
    let mut d = doc.clone();
    let m = d.as_object_mut().unwrap();
    for k in [
        "version",
        "created_at",
        "updated_at",
        "recorded_by",
        "clinician_id",
        "department_id",
    ] {
        m.remove(k);
    }
    let derive = |rt: &str, v: &Value| {
        let id = Uuid::parse_str(v.as_str().unwrap()).unwrap();
        json!(salus_domain::bulk::derived_id(into, rt, id).to_string())
    };
    let own = match kind {
        "patients" => "patient",
        "interactions" => "interaction",
        "encounters" => "encounter",
        _ => "observation",
    };
    let id = derive(own, &m["id"]);
    m.insert("id".into(), id);
    for (field, rt) in [("patient_id", "patient"), ("encounter_id", "encounter")] {
        if let Some(v) = m.get(field).filter(|v| v.is_string()).cloned() {
            m.insert(field.into(), derive(rt, &v));
        }
    }
    d
}

fn plain(doc: &Value) -> Value {
    let mut d = doc.clone();
    let m = d.as_object_mut().unwrap();
    for k in [
        "version",
        "created_at",
        "updated_at",
        "recorded_by",
        "clinician_id",
        "department_id",
    ] {
        m.remove(k);
    }
    d
}

fn sorted(mut docs: Vec<Value>) -> Vec<Value> {
    docs.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    docs
}

async fn export_then_import_into_an_empty_tenant_reproduces_the_data(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let t = &app.token;
    let ok = |r: reqwest::Response| async move {
        assert!(r.status().is_success(), "{:?}", r.text().await);
        r.json::<Value>().await.unwrap()
    };
    let act = |path: String, version: i64, body: Value| {
        let app = &app;
        async move {
            let r = app
                .client
                .post(app.url(&path))
                .bearer_auth(&app.token)
                .header("if-match", format!("\"{version}\""))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}: {:?}", r.text().await);
            r.json::<Value>().await.unwrap()
        }
    };
    // Patients in every state, with everything a patient can hold.
    let p1 = ok(app.post("/api/v1/patients", t, &json!({
        "identifiers": [{"system": "urn:mrn", "value": "RT-1"}, {"system": "urn:nhs", "value": "9434765919"}],
        "name": [{"family": "Müller", "given": ["Zoë", "Anna"]}, {"family": "Meier; née", "given": ["Z|A"]}],
        "birth_date": "1980-04-23", "gender": "female", "phones": ["+44 20 7946 0958", "+49 30 1234567"],
        "email": "zoe@example.org",
        "address": {"line": ["1 High St", "Flat 2"], "city": "London", "postal_code": "N1 1AA", "country": "GB"},
        // What the FHIR API keeps beside the fields travels with the patient too.
        "fhir_elements": {"extension": [{"url": "http://example.org/birth-place", "valueString": "Zürich; \"old town\""}],
                          "communication": [{"language": {"text": "German"}}]}
    })).await).await;
    let p1id = p1["id"].as_str().unwrap().to_owned();
    act(format!("/api/v1/patients/{p1id}/activate"), 1, json!({})).await;
    let p2 = ok(app.post("/api/v1/patients", t, &json!({"identifiers": [{"system": "urn:mrn", "value": "RT-2"}], "name": [{"family": "Suspended", "given": []}]})).await).await;
    let p2id = p2["id"].as_str().unwrap().to_owned();
    act(format!("/api/v1/patients/{p2id}/activate"), 1, json!({})).await;
    act(
        format!("/api/v1/patients/{p2id}/suspend"),
        2,
        json!({"reason": "moved away"}),
    )
    .await;
    let p3 = ok(app.post("/api/v1/patients", t, &json!({"identifiers": [{"system": "urn:mrn", "value": "RT-3"}], "name": [{"family": "Gone"}], "birth_date": "1930-01-01"})).await).await;
    let p3id = p3["id"].as_str().unwrap().to_owned();
    act(
        format!("/api/v1/patients/{p3id}/record-death"),
        1,
        json!({"date": "2020-02-02"}),
    )
    .await;
    act(
        format!("/api/v1/patients/{p3id}/retire"),
        2,
        json!({"reason": "deceased"}),
    )
    .await;
    ok(app
        .post(
            "/api/v1/patients",
            t,
            &json!({"name": [{"family": "Anonymous"}]}),
        )
        .await)
    .await;
    // A clinician, encounters through their lifecycle, interactions and observations.
    let clin = json!({"family": "Quinn", "given": ["Michaela"], "credential": "GMC-RT-1", "specialty": "Family medicine", "org_unit": "Clinic A"});
    let c = ok(app.post("/api/v1/clinicians", t, &clin).await).await;
    let cid = c["id"].as_str().unwrap().to_owned();
    let cardiology = app.create_department("CARD", "Cardiology").await;
    let enc = |pid: &str, extra: Value| {
        let mut b = json!({"patient_id": pid, "clinician_id": cid, "type": "outpatient"});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let e1 = ok(app
        .post(
            "/api/v1/encounters",
            t,
            &enc(
                &p1id,
                json!({"department_id": cardiology,
                       "fhir_elements": {"reasonCode": [{"text": "check-up; yearly"}]}}),
            ),
        )
        .await)
    .await;
    let e1id = e1["id"].as_str().unwrap().to_owned();
    act(format!("/api/v1/encounters/{e1id}/start"), 1, json!({})).await;
    act(format!("/api/v1/encounters/{e1id}/complete"), 2, json!({})).await;
    let e2 = ok(app
        .post(
            "/api/v1/encounters",
            t,
            &enc(&p1id, json!({"scheduled_for": "2026-09-01T10:00:00+02:00"})),
        )
        .await)
    .await;
    act(
        format!("/api/v1/encounters/{}/cancel", e2["id"].as_str().unwrap()),
        1,
        json!({"reason": "patient request"}),
    )
    .await;
    ok(app
        .post(
            "/api/v1/encounters",
            t,
            &enc(&p2id, json!({"type": "virtual"})),
        )
        .await)
    .await;
    ok(app.post("/api/v1/interactions", t, &json!({"patient_id": p1id, "kind": "visit", "outcome": "monitor", "occurred_at": "2026-03-01T09:30:00.123456+01:00", "notes": "BP check; \"fine\"\nnext week", "encounter_id": e1id})).await).await;
    let i2 = ok(app.post("/api/v1/interactions", t, &json!({"patient_id": p2id, "kind": "call", "outcome": "healthy", "occurred_at": "2026-03-02T09:30:00Z"})).await).await;
    // Interactions carry their status: one amended, one entered in error.
    act(
        format!("/api/v1/interactions/{}/amend", i2["id"].as_str().unwrap()),
        1,
        json!({"outcome": "critical", "notes": "worse; call back", "reason": "misheard"}),
    )
    .await;
    let i3 = ok(app.post("/api/v1/interactions", t, &json!({"patient_id": p1id, "kind": "message", "outcome": "healthy", "occurred_at": "2026-03-03T09:30:00Z"})).await).await;
    act(
        format!(
            "/api/v1/interactions/{}/enter-in-error",
            i3["id"].as_str().unwrap()
        ),
        1,
        json!({"reason": "wrong patient"}),
    )
    .await;
    let loinc = json!({"system": "http://loinc.org", "code": "8480-6", "display": "Systolic BP"});
    ok(app.post("/api/v1/observations", t, &json!({"patient_id": p1id, "encounter_id": e1id, "code": loinc, "value": {"type": "quantity", "value": 128.25, "unit": "mm[Hg]"}, "effective_at": "2026-05-01T08:00:00+02:00",
        "fhir_elements": {"interpretation": [{"text": "high, \"borderline\""}]}})).await).await;
    let o2 = ok(app.post("/api/v1/observations", t, &json!({"patient_id": p1id, "code": {"system": "urn:local", "code": "dip"}, "value": {"type": "code", "coding": {"system": "http://snomed.info/sct", "code": "260385009", "display": "Negative"}}, "effective_at": "2026-05-02T08:00:00Z"})).await).await;
    act(format!("/api/v1/observations/{}/amend", o2["id"].as_str().unwrap()), 1, json!({"value": {"type": "code", "coding": {"system": "http://snomed.info/sct", "code": "10828004"}}, "reason": "misread"})).await;
    let o3 = ok(app.post("/api/v1/observations", t, &json!({"patient_id": p2id, "code": {"system": "urn:local", "code": "flag"}, "value": {"type": "boolean", "value": false}, "effective_at": "2026-05-03T08:00:00Z"})).await).await;
    act(
        format!(
            "/api/v1/observations/{}/enter-in-error",
            o3["id"].as_str().unwrap()
        ),
        1,
        json!({"reason": "wrong patient"}),
    )
    .await;
    ok(app.post("/api/v1/observations", t, &json!({"patient_id": p1id, "code": {"system": "urn:local", "code": "glu"}, "value": {"type": "range", "low": 4.5, "high": 6.0, "unit": "mmol/L"}, "status": "preliminary", "effective_at": "2026-05-04T08:00:00Z"})).await).await;
    ok(app.post("/api/v1/observations", t, &json!({"patient_id": p2id, "code": {"system": "urn:local", "code": "note"}, "value": {"type": "string", "value": "clear; | \\ ok"}, "effective_at": "2026-05-05T08:00:00Z"})).await).await;

    // Export every kind (each in another format), import into an empty tenant.
    let files = [
        ("patients", "csv", "text/csv"),
        ("encounters", "ndjson", "application/x-ndjson"),
        ("interactions", "json", "application/json"),
        ("observations", "csv", "text/csv"),
    ];
    let mut exported = Vec::new();
    for (kind, format, _) in files {
        exported.push(export(&app, t, kind, format).await);
    }
    let json_export: Value = serde_json::from_str(&exported[2]).unwrap();
    assert_eq!(
        json_export.as_array().unwrap().len(),
        3,
        "a JSON export is one array, entered in error included"
    );
    let statuses: Vec<&str> = json_export
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["final", "amended", "entered_in_error"]);
    let copy = app.other_tenant("copy").await;
    let b = tenant_of(&copy);
    // Clinicians and departments are not bulk kinds: the copy has its own, found by
    // credential and by code.
    ok(app.post("/api/v1/clinicians", &copy, &clin).await).await;
    let copy_cardiology = ok(app
        .post(
            "/api/v1/departments",
            &copy,
            &json!({"code": "card", "name": "Cardiology (copy)"}),
        )
        .await)
    .await;
    for ((kind, format, ct), body) in files.iter().zip(&exported) {
        let job = import(
            &app,
            &copy,
            &format!("kind={kind}&format={format}"),
            ct,
            body,
        )
        .await;
        let (rows, created, _, _, failed) = counts(&job);
        assert_eq!((failed, created), (0, rows), "{kind}: {job}");
    }
    for (kind, _, _) in files {
        let a: Vec<Value> = ndjson(&export(&app, t, kind, "ndjson").await)
            .iter()
            .map(|d| as_imported(d, kind, b))
            .collect();
        let bdocs: Vec<Value> = ndjson(&export(&app, &copy, kind, "ndjson").await)
            .iter()
            .map(plain)
            .collect();
        assert!(!a.is_empty());
        assert_eq!(sorted(bdocs), sorted(a), "{kind} round trip");
    }
    // The encounter names the copy's own department (found by its code).
    let copied = ndjson(&export(&app, &copy, "encounters", "ndjson").await);
    let with_department: Vec<&Value> = copied
        .iter()
        .filter(|e| e.get("department_id").is_some_and(|d| !d.is_null()))
        .collect();
    assert_eq!(with_department.len(), 1);
    assert_eq!(with_department[0]["department_id"], copy_cardiology["id"]);
    assert_eq!(with_department[0]["department_code"], "CARD");
    // Importing the same files again, into the copy or into the original, changes nothing.
    for token in [&copy, t] {
        for ((kind, format, ct), body) in files.iter().zip(&exported) {
            let job = import(
                &app,
                token,
                &format!("kind={kind}&format={format}"),
                ct,
                body,
            )
            .await;
            let (rows, created, updated, unchanged, failed) = counts(&job);
            assert_eq!(
                (created, updated, failed, unchanged),
                (0, 0, 0, rows),
                "{kind}: {job}"
            );
        }
    }
    // The CSV form carries the statuses too: the copy finds every interaction as it is.
    let csv = export(&app, t, "interactions", "csv").await;
    assert!(
        csv.lines().next().unwrap().contains("status,status_reason"),
        "{csv}"
    );
    let job = import(
        &app,
        &copy,
        "kind=interactions&format=csv",
        "text/csv",
        &csv,
    )
    .await;
    let (rows, created, updated, unchanged, failed) = counts(&job);
    assert_eq!(
        (rows, created, updated, failed, unchanged),
        (3, 0, 0, 0, 3),
        "{job}"
    );
    // A merged record follows its survivor into the copy (the survivor must be there first:
    // a second run merges what the first could not).
    let s = ok(app
        .post(
            "/api/v1/patients",
            t,
            &crate::app::patient("RT-S", "Survivor", "S"),
        )
        .await)
    .await;
    let m = ok(app
        .post(
            "/api/v1/patients",
            t,
            &crate::app::patient("RT-M", "Merged", "M"),
        )
        .await)
    .await;
    let sid = s["id"].as_str().unwrap().to_owned();
    act(
        format!("/api/v1/patients/{}/merge", m["id"].as_str().unwrap()),
        1,
        json!({"into": sid}),
    )
    .await;
    let file = export(&app, t, "patients", "ndjson").await;
    let copy2 = app.other_tenant("merge-copy").await;
    import(&app, &copy2, "kind=patients", "application/x-ndjson", &file).await;
    let job = import(&app, &copy2, "kind=patients", "application/x-ndjson", &file).await;
    assert_eq!(counts(&job).4, 0, "{job}");
    let merged = ndjson(&export(&app, &copy2, "patients", "ndjson").await)
        .into_iter()
        .find(|d| d["identifiers"][0]["value"] == "RT-M")
        .unwrap();
    let survivor = salus_domain::bulk::derived_id(
        tenant_of(&copy2),
        "patient",
        Uuid::parse_str(&sid).unwrap(),
    );
    assert_eq!(merged["merged_into"], json!(survivor.to_string()));
    app.stop().await;
}

async fn bad_input_is_a_problem_and_permissions_are_checked(backend: &str) {
    let app = TestApp::spawn_with(backend, |s| s.import_limit_bytes = 4096).await;
    let post = |query: &str, ct: &str, body: String, token: &str| {
        let req = app
            .client
            .post(app.url(&format!("/api/v1/imports{query}")))
            .bearer_auth(token)
            .header("content-type", ct)
            .body(body);
        async move { req.send().await.unwrap() }
    };
    let t = app.token.clone();
    let csv = "identifiers,family\nurn:mrn|X-1,Ok\n".to_string();
    problem(
        post("", "text/csv", csv.clone(), &t).await,
        400,
        "bad-request",
    )
    .await;
    problem(
        post("?kind=clinicians", "text/csv", csv.clone(), &t).await,
        400,
        "bad-request",
    )
    .await;
    problem(
        post("?kind=patients&colour=red", "text/csv", csv.clone(), &t).await,
        400,
        "bad-request",
    )
    .await;
    problem(
        post("?kind=patients&dry_run=maybe", "text/csv", csv.clone(), &t).await,
        400,
        "bad-request",
    )
    .await;
    problem(
        post("?kind=patients", "application/pdf", csv.clone(), &t).await,
        415,
        "unsupported-media-type",
    )
    .await;
    problem(
        post("?kind=patients&format=xml", "text/csv", csv.clone(), &t).await,
        400,
        "bad-request",
    )
    .await;
    let body = problem(
        post(
            "?kind=patients",
            "text/csv",
            "family,colour\nA,red\n".into(),
            &t,
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("unknown column 'colour'"),
        "{body}"
    );
    problem(
        post("?kind=patients", "text/csv", String::new(), &t).await,
        422,
        "validation",
    )
    .await;
    let body = problem(
        post(
            "?kind=patients",
            "application/json",
            "{\"family\": \"x\"}".into(),
            &t,
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("array"), "{body}");
    let big = format!("identifiers,family\n{}", "urn:mrn|Y,Big\n".repeat(400));
    problem(
        post("?kind=patients", "text/csv", big, &t).await,
        413,
        "payload-too-large",
    )
    .await;
    // A JSON file broken half-way keeps the rows before the break and fails the job.
    let job = import(
        &app,
        &t,
        "kind=patients",
        "application/json",
        r#"[{"name": [{"family": "Kept"}]} {"name": []}]"#,
    )
    .await;
    assert_eq!(job["status"], "failed");
    assert!(
        job["failure"].as_str().unwrap().contains("expected ','"),
        "{job}"
    );
    assert_eq!(counts(&job).1, 1);
    // Jobs and exports.
    problem(
        app.get(&format!("/api/v1/imports/{}", Uuid::now_v7()), &t)
            .await,
        404,
        "not-found",
    )
    .await;
    problem(
        app.get("/api/v1/imports/not-an-id", &t).await,
        404,
        "not-found",
    )
    .await;
    problem(
        app.get("/api/v1/exports/clinicians", &t).await,
        404,
        "not-found",
    )
    .await;
    problem(
        app.get("/api/v1/exports/patients?format=xml", &t).await,
        400,
        "bad-request",
    )
    .await;
    problem(
        app.get("/api/v1/exports/patients?since=x", &t).await,
        400,
        "bad-request",
    )
    .await;
    let empty: Value =
        serde_json::from_str(&export(&app, &t, "interactions", "json").await).unwrap();
    assert_eq!(empty, json!([]));
    // Permissions: imports need imports:write and the kind's write permission, exports
    // exports:read and the kind's read permission; clinical roles have neither.
    let provider = app.token_for("bulk-provider", &["provider"]).await;
    let body = problem(
        post("?kind=patients", "text/csv", csv.clone(), &provider).await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(body["permission"], "imports:write");
    let body = problem(
        app.get("/api/v1/exports/patients", &provider).await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(body["permission"], "exports:read");
    problem(
        app.get(&format!("/api/v1/imports/{}", Uuid::now_v7()), &provider)
            .await,
        403,
        "forbidden",
    )
    .await;
    problem(
        app.client
            .get(app.url("/api/v1/exports/patients"))
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    // Another tenant sees neither the jobs nor the records.
    let job = import(&app, &t, "kind=patients", "text/csv", &csv).await;
    let other = app.other_tenant("elsewhere").await;
    problem(
        app.get(
            &format!("/api/v1/imports/{}", job["id"].as_str().unwrap()),
            &other,
        )
        .await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(
        ndjson(&export(&app, &other, "patients", "ndjson").await).len(),
        0
    );
    // A job recorded as running that no server runs (its server stopped) is interrupted.
    let running = app.running.as_ref().unwrap();
    let spec = salus_domain::bulk::job::JobSpec {
        kind: salus_domain::bulk::Kind::Patients,
        format: "csv".into(),
        dry_run: false,
        all_or_nothing: false,
        bytes: 1,
    };
    let stale = salus_domain::bulk::job::start(
        &running.services,
        &salus::server::system_ctx(app.tenant),
        spec,
        None,
    )
    .await
    .unwrap();
    let job: Value = app
        .get(&format!("/api/v1/imports/{}", stale.row.id), &t)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "interrupted");
    app.stop().await;
}

async fn ndjson_import_of_many_rows_counts_every_row(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let mut body = String::new();
    for i in 0..3000 {
        if i % 500 == 7 {
            body.push_str("{\"identifiers\": [{\"system\": \"urn:mrn\", \"value\": \"bad\"}], \"name\": []}\n");
        } else {
            body.push_str(&format!(
                "{{\"identifiers\": [{{\"system\": \"urn:bulk\", \"value\": \"{i:05}\"}}], \"name\": [{{\"family\": \"Row{i}\"}}], \"status\": \"active\"}}\n"
            ));
        }
    }
    let job = import(
        &app,
        &app.token,
        "kind=patients",
        "application/x-ndjson",
        &body,
    )
    .await;
    assert_eq!(counts(&job), (3000, 2994, 0, 0, 6), "{}", job["errors"]);
    let rows: Vec<u64> = job["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["row"].as_u64().unwrap())
        .collect();
    assert_eq!(
        rows,
        [8, 508, 1008, 1508, 2008, 2508],
        "errors in row order, by line"
    );
    // The full report, as CSV.
    let r = app
        .get(
            &format!("/api/v1/imports/{}/errors", job["id"].as_str().unwrap()),
            &app.token,
        )
        .await;
    assert_eq!(r.status(), 200);
    let report = r.text().await.unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 7, "{report}");
    assert_eq!(lines[0], "row,field,reason");
    assert!(
        lines.iter().any(|l| l.starts_with("1508,name,")),
        "{report}"
    );
    let exported = ndjson(&export(&app, &app.token, "patients", "ndjson").await);
    assert_eq!(exported.len(), 2994);
    // Many pages make one JSON array and one CSV with one header.
    let json: Value =
        serde_json::from_str(&export(&app, &app.token, "patients", "json").await).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2994);
    let csv = export(&app, &app.token, "patients", "csv").await;
    assert_eq!(csv.lines().count(), 2995);
    assert_eq!(csv.matches("identifiers,family").count(), 1);
    app.stop().await;
}

async fn clinical_rows_name_what_is_wrong(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let p = app
        .create_patient(&crate::app::patient("CR-1", "Clinical", "Rows"))
        .await;
    let pid = p["id"].as_str().unwrap().to_owned();
    let csv = format!(
        "patient_id,patient_identifier,kind,outcome,occurred_at,notes\n\
         {pid},,call,monitor,2026-01-01T10:00:00Z,fine\n\
         ,urn:mrn|CR-1,visit,healthy,2026-01-02T10:00:00+01:00,\n\
         ,urn:mrn|NOPE,visit,healthy,,\n\
         {pid},,telepathy,healthy,,\n\
         {pid},,call,fine,,\n\
         {pid},,call,healthy,2026-01-01,\n"
    );
    let job = import(&app, &app.token, "kind=interactions", "text/csv", &csv).await;
    assert_eq!(counts(&job), (6, 2, 0, 0, 4), "{job}");
    let fields: Vec<&str> = job["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["patient_identifier", "kind", "outcome", "occurred_at"]
    );
    let list: Value = app
        .get(
            &format!("/api/v1/interactions?patient_id={pid}"),
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    // Observations: value columns by value_type.
    let csv = format!(
        "patient_id,code_system,code,value_type,value,value_unit,effective_at\n\
         {pid},http://loinc.org,8480-6,quantity,120,mm[Hg],2026-01-01T10:00:00Z\n\
         {pid},http://loinc.org,8480-7,quantity,120,mm[Hg],2026-01-01T10:00:00Z\n\
         {pid},urn:local,x,quantity,,mg,2026-01-01T10:00:00Z\n"
    );
    let job = import(&app, &app.token, "kind=observations", "text/csv", &csv).await;
    assert_eq!(counts(&job), (3, 1, 0, 0, 2), "{job}");
    assert_eq!(job["errors"][0]["field"], "code.code");
    assert_eq!(job["errors"][1]["field"], "value");
    // Encounters need a known clinician.
    let csv = format!("patient_id,clinician_credential,type\n{pid},GMC-NONE,outpatient\n");
    let job = import(&app, &app.token, "kind=encounters", "text/csv", &csv).await;
    assert_eq!(job["errors"][0]["field"], "clinician_credential");
    // ...and, when they name one, a known and active department (by code or id).
    let c = app
        .post(
            "/api/v1/clinicians",
            &app.token,
            &json!({"family": "Rows", "given": ["C"], "credential": "GMC-ROWS", "specialty": "GP", "org_unit": "A"}),
        )
        .await;
    assert_eq!(c.status(), 201);
    let closed = app.create_department("SHUT", "Shut").await;
    app.deactivate_department(&closed).await;
    app.create_department("OPEN", "Open").await;
    let csv = format!(
        "patient_id,clinician_credential,type,department_id,department_code\n\
         {pid},GMC-ROWS,outpatient,,NOWHERE\n\
         {pid},GMC-ROWS,outpatient,{},\n\
         {pid},GMC-ROWS,outpatient,{closed},\n\
         {pid},GMC-ROWS,outpatient,,open\n",
        uuid::Uuid::now_v7()
    );
    let job = import(&app, &app.token, "kind=encounters", "text/csv", &csv).await;
    assert_eq!(counts(&job), (4, 1, 0, 0, 3), "{job}");
    let fields: Vec<&str> = job["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["department_code", "department_id", "department_id"]
    );
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

async fn cli_import_and_export_work_on_the_store_directly(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let mut args = vec![
        "--data-dir".to_string(),
        app.settings.data_dir.to_string_lossy().into_owned(),
    ];
    if let Some(url) = &app.settings.database_url {
        args.push("--database-url".into());
        args.push(url.clone());
    }
    let _data = app.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("patients.csv");
    std::fs::write(
        &file,
        "identifiers,family\nurn:mrn|C-1,Cli\nurn:mrn|C-2,Tool\nurn:mrn|C-3,\n",
    )
    .unwrap();
    let f = file.to_string_lossy().into_owned();
    let errors = dir.path().join("errors.csv");
    let e = errors.to_string_lossy().into_owned();
    let (code, out, err) = salus(&args, &["import", &f, "--kind", "patients", "--errors", &e]);
    assert_eq!(code, 1, "a failed row exits 1: {out}{err}");
    assert!(
        out.contains("3 rows, 2 created, 0 updated, 0 unchanged, 1 failed"),
        "{out}"
    );
    assert!(err.contains("row 3 (name): a patient needs"), "{err}");
    let report = std::fs::read_to_string(&errors).unwrap();
    assert!(report.starts_with("row,field,reason\n3,name,"), "{report}");
    std::fs::write(
        &file,
        "identifiers,family\nurn:mrn|C-1,Cli\nurn:mrn|C-4,New\n",
    )
    .unwrap();
    let (code, out, _) = salus(&args, &["import", &f, "--kind", "patients", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("dry run") && out.contains("1 created, 0 updated, 1 unchanged"),
        "{out}"
    );
    let (code, out, _) = salus(
        &args,
        &["export", "--kind", "patients", "--format", "ndjson"],
    );
    assert_eq!(code, 0);
    let docs = ndjson(&out);
    assert_eq!(docs.len(), 2, "the dry run wrote nothing: {out}");
    // Rows are written concurrently, so their ids (and the export's order) may differ
    // from the file's order.
    let mut values: Vec<&str> = docs
        .iter()
        .filter_map(|d| d["identifiers"][0]["value"].as_str())
        .collect();
    values.sort_unstable();
    assert_eq!(values, ["C-1", "C-2"]);
    let out_file = dir.path().join("all.csv");
    let o = out_file.to_string_lossy().into_owned();
    let (code, _, err) = salus(&args, &["export", "--kind", "patients", "--out", &o]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = salus(&args, &["import", &o, "--kind", "patients"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("2 rows, 0 created, 0 updated, 2 unchanged, 0 failed"),
        "{out}"
    );
    // Usage errors exit 2; a file that does not fit exits 1.
    assert_eq!(salus(&args, &["import", &f, "--kind", "clinicians"]).0, 2);
    let txt = dir.path().join("patients.txt");
    std::fs::write(&txt, "x").unwrap();
    assert_eq!(
        salus(
            &args,
            &["import", &txt.to_string_lossy(), "--kind", "patients"]
        )
        .0,
        2
    );
    std::fs::write(&file, "colour\nred\n").unwrap();
    let (code, _, err) = salus(&args, &["import", &f, "--kind", "patients"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown column 'colour'"), "{err}");
}

//! FHIR `transaction` and `batch` Bundles over real HTTP on both backends: urn:uuid and
//! conditional references resolved, conditional create and update, all or nothing, batch
//! entries on their own, and a generated synthetic population imported through
//! transactions and read back unchanged in meaning.

use crate::app::{TestApp, on_both_backends};
use crate::fhir::{Fhir, ids};
use serde_json::{Value, json};
use std::collections::HashMap;

on_both_backends!(
    a_transaction_resolves_references_and_is_all_or_nothing,
    a_batch_runs_each_entry_on_its_own,
    a_synthetic_population_is_imported_by_transactions_and_read_back,
);

fn patient_resource(mrn: &str, family: &str) -> Value {
    json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": mrn}],
           "name": [{"family": family, "given": ["Tess"]}], "gender": "female", "birthDate": "1970-02-03"})
}

fn immunization(patient_ref: &str, vaccine: &str) -> Value {
    json!({"resourceType": "Immunization", "status": "completed",
           "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": vaccine}]},
           "patient": {"reference": patient_ref}, "occurrenceDateTime": "2024-05-01"})
}

fn statuses(b: &Value) -> Vec<String> {
    b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_transaction_resolves_references_and_is_all_or_nothing(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let pat = "urn:uuid:6f1c6b2e-0c39-4c3e-9a51-4d1f7c1e0001";
    let tx = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            // Listed first, processed after the POSTs (the order of the specification).
            {"fullUrl": "urn:uuid:6f1c6b2e-0c39-4c3e-9a51-4d1f7c1e0003",
             "resource": {"resourceType": "Goal", "id": "goal-1", "lifecycleStatus": "active", "description": {"text": "walk daily"},
                          "subject": {"reference": pat}},
             "request": {"method": "PUT", "url": "Goal/goal-1"}},
            {"fullUrl": pat, "resource": patient_resource("TX-1", "Bundled"),
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|TX-1"}},
            {"fullUrl": "urn:uuid:6f1c6b2e-0c39-4c3e-9a51-4d1f7c1e0002", "resource": immunization(pat, "207"),
             "request": {"method": "POST", "url": "Immunization"}},
        ]
    });
    let r = fhir.post("", &tx, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["type"], "transaction-response");
    assert_eq!(
        statuses(&r.body),
        ["201 Created", "201 Created", "201 Created"]
    );
    let loc = r.body["entry"][1]["response"]["location"].as_str().unwrap();
    assert!(loc.starts_with("Patient/"), "{loc}");
    let pid = loc.split('/').nth(1).unwrap().to_owned();
    // The urn:uuid references now name the patient.
    let imm_loc = r.body["entry"][2]["response"]["location"].as_str().unwrap();
    let imm_id = imm_loc.split('/').nth(1).unwrap();
    let imm = fhir.get(&format!("/Immunization/{imm_id}")).await;
    assert_eq!(imm.body["patient"]["reference"], format!("Patient/{pid}"));
    let goal = fhir.get("/Goal/goal-1").await;
    assert_eq!(goal.status, 200);
    assert_eq!(goal.body["subject"]["reference"], format!("Patient/{pid}"));
    // The patient is visible through the JSON API too.
    let p = app
        .get(&format!("/api/v1/patients/{pid}"), &app.token)
        .await;
    assert_eq!(p.status(), 200);

    // Again: the conditional create finds the patient (200), a conditional reference and
    // a conditional update are resolved by searching.
    let tx2 = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": pat, "resource": patient_resource("TX-1", "Bundled"),
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|TX-1"}},
            {"resource": immunization("Patient?identifier=urn:mrn|TX-1", "140"),
             "request": {"method": "POST", "url": "Immunization"}},
            {"resource": {"resourceType": "Goal", "lifecycleStatus": "completed", "description": {"text": "walk daily"}, "subject": {"reference": pat}},
             "request": {"method": "PUT", "url": "Goal?lifecycle-status=active"}},
        ]
    });
    let r = fhir.post("", &tx2, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(statuses(&r.body), ["200 OK", "201 Created", "200 OK"]);
    let r = fhir.get(&format!("/Immunization?patient={pid}")).await;
    assert_eq!(ids(&r.body).len(), 2);
    let goal = fhir.get("/Goal/goal-1").await;
    assert_eq!(goal.body["lifecycleStatus"], "completed");
    assert_eq!(goal.body["meta"]["versionId"], "2");

    // All or nothing: a bad entry leaves nothing of the others.
    let bad = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"resource": patient_resource("TX-2", "Never"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": immunization(&format!("Patient/{pid}"), "08"), "request": {"method": "POST", "url": "Immunization"}},
            {"resource": {"resourceType": "Immunization", "status": "completed", "bogus": true}, "request": {"method": "POST", "url": "Immunization"}},
        ]
    });
    let r = fhir.post("", &bad, &[]).await;
    let (_, at) = r.outcome(422);
    assert!(at.contains("bogus"), "{}", r.body);
    assert!(
        r.body["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("entry[2]"),
        "{}",
        r.body
    );
    let r = fhir.get("/Patient?identifier=urn:mrn|TX-2").await;
    assert!(
        ids(&r.body).is_empty(),
        "nothing of a failed transaction is kept"
    );
    let r = fhir.get("/Immunization?vaccine-code=08").await;
    assert!(ids(&r.body).is_empty());
    // A stale ifMatch fails the whole transaction too.
    let stale = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"resource": immunization(&format!("Patient/{pid}"), "03"), "request": {"method": "POST", "url": "Immunization"}},
            {"resource": {"resourceType": "Goal", "id": "goal-1", "lifecycleStatus": "cancelled", "description": {"text": "x"}, "subject": {"reference": format!("Patient/{pid}")}},
             "request": {"method": "PUT", "url": "Goal/goal-1", "ifMatch": "W/\"1\""}},
        ]
    });
    fhir.post("", &stale, &[]).await.outcome(412);
    let r = fhir.get("/Immunization?vaccine-code=03").await;
    assert!(ids(&r.body).is_empty());
    // References to no entry, and a resource written twice, are refused.
    let dangling = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": immunization("urn:uuid:00000000-0000-4000-8000-000000000000", "03"), "request": {"method": "POST", "url": "Immunization"}}]});
    fhir.post("", &dangling, &[]).await.outcome(400);
    let twice = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Goal", "id": "g2", "lifecycleStatus": "active", "description": {"text": "a"}, "subject": {"reference": format!("Patient/{pid}")}}, "request": {"method": "PUT", "url": "Goal/g2"}},
        {"resource": {"resourceType": "Goal", "id": "g2", "lifecycleStatus": "active", "description": {"text": "b"}, "subject": {"reference": format!("Patient/{pid}")}}, "request": {"method": "PUT", "url": "Goal/g2"}}]});
    fhir.post("", &twice, &[]).await.outcome(400);
    fhir.post(
        "",
        &json!({"resourceType": "Bundle", "type": "collection"}),
        &[],
    )
    .await
    .outcome(400);
    // DELETE and GET inside a transaction.
    let tx3 = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": "Goal/goal-1"}},
        {"request": {"method": "DELETE", "url": "Goal/goal-1"}}]});
    let r = fhir.post("", &tx3, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        statuses(&r.body),
        ["410 Gone", "204 No Content"],
        "GET runs after DELETE"
    );
    fhir.validate_all();
}

async fn a_batch_runs_each_entry_on_its_own(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let r = fhir
        .post("/Patient", &patient_resource("B-1", "Batched"), &[])
        .await;
    let pid = r.body["id"].as_str().unwrap().to_owned();
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": immunization(&format!("Patient/{pid}"), "207"), "request": {"method": "POST", "url": "Immunization"}},
        {"resource": {"resourceType": "Immunization", "bogus": 1}, "request": {"method": "POST", "url": "Immunization"}},
        {"request": {"method": "GET", "url": format!("Patient/{pid}")}},
        {"request": {"method": "GET", "url": "Immunization?vaccine-code=207"}},
        {"request": {"method": "GET", "url": "Goal/none"}},
        {"request": {"method": "GET", "url": "Nonsense/1"}},
    ]});
    let r = fhir.post("", &batch, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["type"], "batch-response");
    let s = statuses(&r.body);
    assert_eq!(s[0], "201 Created");
    assert!(s[1].starts_with("422"), "{s:?}");
    assert_eq!(
        r.body["entry"][1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert_eq!(s[2], "200 OK");
    assert_eq!(r.body["entry"][2]["resource"]["id"], pid.as_str());
    assert_eq!(s[3], "200 OK");
    assert_eq!(r.body["entry"][3]["resource"]["type"], "searchset");
    assert_eq!(
        ids(&r.body["entry"][3]["resource"]).len(),
        1,
        "the batch's own create is seen"
    );
    assert!(s[4].starts_with("404") && s[5].starts_with("404"), "{s:?}");
    // A viewer may read in a batch but not write.
    let viewer = app.token_for("viewer-b", &["viewer"]).await;
    let r = fhir
        .send(reqwest::Method::POST, "", Some(&viewer), Some(&batch), &[])
        .await;
    assert_eq!(
        r.status, 403,
        "the route needs fhir_resources:write: {}",
        r.body
    );
    fhir.validate_all();
}

/// Strip what the server manages (id, meta) so that content can be compared, numbers as
/// their values (a decimal the domain keeps, `17.0`, reads back as `17`).
fn content(r: &Value) -> Value {
    fn numbers(v: &mut Value) {
        match v {
            Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    *v = json!(x);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(numbers),
            Value::Object(o) => o.values_mut().for_each(numbers),
            _ => {}
        }
    }
    let mut r = r.clone();
    if let Some(o) = r.as_object_mut() {
        o.remove("id");
        o.remove("meta");
    }
    numbers(&mut r);
    r
}

async fn a_synthetic_population_is_imported_by_transactions_and_read_back(backend: &str) {
    use salus_fhir::synth;
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    // Each record holds its patient's general practitioner, whom its Encounters and
    // Procedures name (Salus keeps no encounter without its clinician).
    let config = synth::Config::new(2026, 64);
    // What was sent, by the `Type/id` it became, with its references rewritten likewise.
    let mut sent: Vec<(String, String, Value)> = Vec::new();
    for record in synth::population(&config) {
        let bundle = record.transaction();
        let r = fhir.post("", &bundle, &[]).await;
        assert_eq!(r.status, 200, "patient {}: {}", record.index, r.body);
        let answers = r.body["entry"].as_array().unwrap().clone();
        assert_eq!(answers.len(), record.entries.len());
        let mut map: HashMap<String, String> = HashMap::new();
        let mut placed = Vec::new();
        for (e, a) in record.entries.iter().zip(&answers) {
            let loc = a["response"]["location"].as_str().unwrap();
            let mut parts = loc.split('/');
            let (t, id) = (parts.next().unwrap(), parts.next().unwrap());
            assert_eq!(t, e.resource_type);
            map.insert(format!("urn:uuid:{}", e.id), format!("{t}/{id}"));
            placed.push((t.to_owned(), id.to_owned()));
        }
        for (e, (t, id)) in record.entries.iter().zip(placed) {
            let mut text = e.resource.to_string();
            for (from, to) in &map {
                text = text.replace(&format!("\"{from}\""), &format!("\"{to}\""));
            }
            sent.push((t, id, serde_json::from_str(&text).unwrap()));
        }
        // Keep the validator's sample small: the bundles' answers only.
        fhir.seen.lock().unwrap().truncate(40);
    }
    assert!(sent.len() > 15_000, "only {} resources", sent.len());
    // Read everything back, a hundred ids per `_id` search.
    let mut by_type: HashMap<&str, Vec<&(String, String, Value)>> = HashMap::new();
    for s in &sent {
        by_type.entry(s.0.as_str()).or_default().push(s);
    }
    let mut checked = 0usize;
    for (t, items) in by_type {
        for chunk in items.chunks(100) {
            let q: Vec<&str> = chunk.iter().map(|s| s.1.as_str()).collect();
            let r = fhir
                .get(&format!("/{t}?_id={}&_count=200", q.join(",")))
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            let got: HashMap<String, Value> = r.body["entry"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["search"]["mode"] == "match")
                .map(|e| {
                    (
                        e["resource"]["id"].as_str().unwrap().to_owned(),
                        e["resource"].clone(),
                    )
                })
                .collect();
            for (t, id, want) in chunk {
                let back = got.get(id).unwrap_or_else(|| panic!("{t}/{id} was lost"));
                if t == "Patient" {
                    // The Patient is the registry's aggregate: identifier, names, gender
                    // and birth date come back as sent.
                    for k in ["identifier", "gender", "birthDate"] {
                        assert_eq!(back[k], want[k], "{t}/{id} {k}");
                    }
                    assert_eq!(back["name"][0]["family"], want["name"][0]["family"]);
                } else {
                    assert_eq!(content(back), content(want), "{t}/{id} changed");
                }
                checked += 1;
            }
        }
        fhir.seen.lock().unwrap().truncate(80);
    }
    assert_eq!(checked, sent.len(), "every resource read back");
    fhir.validate_all();
}

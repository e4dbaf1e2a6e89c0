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
    records_as_synthea_writes_them_load_and_read_back_as_sent,
    an_update_creates_under_a_clients_uuid,
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

/// A resource as sent or read, for comparing meaning: no id, no server meta, no generated
/// narrative, every reference only by the type it names (`urn:uuid:`s by `types`), every
/// date-time as its instant in UTC, every array in a stable order.
fn meaning(v: &Value, types: &HashMap<String, String>) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                match k.as_str() {
                    "id" => {}
                    "text" if x["status"] == "generated" => {}
                    "meta" => {
                        let mut meta = x.as_object().cloned().unwrap_or_default();
                        meta.remove("versionId");
                        meta.remove("lastUpdated");
                        if !meta.is_empty() {
                            out.insert(k.clone(), meaning(&Value::Object(meta), types));
                        }
                    }
                    "reference" => {
                        let r = x.as_str().unwrap_or_default();
                        let t = types.get(r).cloned().unwrap_or_else(|| {
                            r.split(['/', '?']).next().unwrap_or_default().to_owned()
                        });
                        out.insert(k.clone(), json!(t));
                    }
                    _ => {
                        out.insert(k.clone(), meaning(x, types));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => {
            let mut items: Vec<Value> = a.iter().map(|x| meaning(x, types)).collect();
            items.sort_by_key(|x| x.to_string());
            Value::Array(items)
        }
        Value::String(s) if s.len() > 10 && s.as_bytes()[10] == b'T' => {
            match chrono::DateTime::parse_from_rfc3339(s) {
                Ok(t) => json!(t.with_timezone(&chrono::Utc).timestamp_millis()),
                Err(_) => v.clone(),
            }
        }
        _ => v.clone(),
    }
}

/// Synthea's output as it is loaded elsewhere: a batch of the hospital (conditional
/// creates by identifier, a Location naming its Organization by identifier only), one of
/// the practitioners (an NPI, none of Salus's extensions), then a patient's transaction
/// (US Core profiles and extensions, identifier types, a phone not in E.164 form, a maiden
/// name, conditional references to all three). Every entry is created and reads back
/// with its meaning unchanged; searches find them by what Salus keeps beside its fields.
async fn records_as_synthea_writes_them_load_and_read_back_as_sent(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let synthea = "https://github.com/synthetichealth/synthea";
    let (org, loc, npi) = (
        "ef6ab57c-ed94-3dbe-9861-812d515918b3",
        "a1b2c3d4-0000-3dbe-9861-812d515918b3",
        "9999941093",
    );
    let org_ref = json!({"reference": format!("Organization?identifier={synthea}|{org}"), "display": "BOSTON MEDICAL CENTER"});
    let loc_ref = json!({"reference": format!("Location?identifier={synthea}|{loc}"), "display": "BOSTON MEDICAL CENTER"});
    let pr_ref = json!({"reference": format!("Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|{npi}"), "display": "Dr. Jamey282 Wolff180"});
    let hospital = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"fullUrl": format!("urn:uuid:{org}"), "request": {"method": "POST", "url": "Organization", "ifNoneExist": format!("identifier={synthea}|{org}")},
         "resource": {"resourceType": "Organization",
            "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-organization"]},
            "extension": [{"url": "http://synthetichealth.github.io/synthea/utilization-encounters-extension", "valueInteger": 3}],
            "identifier": [{"system": synthea, "value": org}], "active": true,
            "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov", "display": "Healthcare Provider"}], "text": "Healthcare Provider"}],
            "name": "BOSTON MEDICAL CENTER", "telecom": [{"system": "phone", "value": "6176388000"}],
            "address": [{"line": ["1 BOSTON MEDICAL CENTER PLACE"], "city": "BOSTON", "state": "MA", "postalCode": "02118", "country": "US"}]}},
        {"fullUrl": format!("urn:uuid:{loc}"), "request": {"method": "POST", "url": "Location", "ifNoneExist": format!("identifier={synthea}|{loc}")},
         "resource": {"resourceType": "Location", "status": "active", "name": "BOSTON MEDICAL CENTER",
            "identifier": [{"system": synthea, "value": loc}],
            "address": {"line": ["1 BOSTON MEDICAL CENTER PLACE"], "city": "BOSTON", "state": "MA", "postalCode": "02118", "country": "US"},
            "position": {"longitude": -71.07, "latitude": 42.33},
            "managingOrganization": {"identifier": {"system": synthea, "value": org}, "display": "BOSTON MEDICAL CENTER"}}}]});
    let practitioners = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"fullUrl": "urn:uuid:0000016d-3a85-4cca-0000-000000000c8a", "request": {"method": "POST", "url": "Practitioner", "ifNoneExist": format!("identifier=http://hl7.org/fhir/sid/us-npi|{npi}")},
         "resource": {"resourceType": "Practitioner",
            "extension": [{"url": "http://synthetichealth.github.io/synthea/utilization-encounters-extension", "valueInteger": 3}],
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": npi}], "active": true,
            "name": [{"family": "Wolff180", "given": ["Jamey282"], "prefix": ["Dr."]}],
            "telecom": [{"extension": [{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-direct", "valueBoolean": true}],
                         "system": "email", "value": "Jamey282.Wolff180@example.com", "use": "work"}],
            "gender": "male"}}]});
    let (p, e) = (
        "urn:uuid:7d4b4a8c-1a53-4e63-bd1f-0a6b8a3c9e01",
        "urn:uuid:9f3c7a52-6b5e-4a5b-9c2d-1e8f0a7b3c11",
    );
    let patient = json!({"resourceType": "Patient",
        "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]},
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Generated by Synthea</div>"},
        "extension": [
            {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race", "extension": [
                {"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3", "display": "White"}},
                {"url": "text", "valueString": "White"}]},
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName", "valueString": "Kathey"},
            {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex", "valueCode": "F"},
            {"url": "http://synthetichealth.github.io/synthea/quality-adjusted-life-years", "valueDecimal": 39.5}],
        "identifier": [
            {"system": synthea, "value": "7d4b4a8c-1a53-4e63-bd1f-0a6b8a3c9e01"},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR", "display": "Medical Record Number"}], "text": "Medical Record Number"},
             "system": "http://hospital.smarthealthit.org", "value": "7d4b4a8c-1a53-4e63-bd1f-0a6b8a3c9e01"},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SS", "display": "Social Security Number"}], "text": "Social Security Number"},
             "system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-31-7734"}],
        "name": [{"use": "official", "family": "Lind531", "given": ["Ada662"], "prefix": ["Mrs."]},
                 {"use": "maiden", "family": "Kub800", "given": ["Ada662"], "prefix": ["Mrs."]}],
        "telecom": [{"system": "phone", "value": "555-515-2334", "use": "home"}],
        "gender": "female", "birthDate": "1980-04-23",
        "address": [{"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/geolocation", "extension": [
                        {"url": "latitude", "valueDecimal": 42.3}, {"url": "longitude", "valueDecimal": -71.05}]}],
                     "line": ["1075 Bahringer Ramp"], "city": "Boston", "state": "MA", "postalCode": "02118", "country": "US"}],
        "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M", "display": "M"}], "text": "M"},
        "multipleBirthBoolean": false,
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-US", "display": "English"}], "text": "English"}}]});
    let encounter = json!({"resourceType": "Encounter",
        "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-encounter"]},
        "identifier": [{"use": "official", "system": synthea, "value": "9f3c7a52"}], "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "162673000", "display": "General examination of patient (procedure)"}], "text": "General examination of patient (procedure)"}],
        "subject": {"reference": p, "display": "Mrs. Ada662 Lind531"},
        "participant": [{"type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PPRF", "display": "primary performer"}], "text": "primary performer"}],
                         "period": {"start": "2020-12-03T10:07:26-05:00", "end": "2020-12-03T10:22:26-05:00"}, "individual": pr_ref}],
        "period": {"start": "2020-12-03T10:07:26-05:00", "end": "2020-12-03T10:22:26-05:00"},
        "location": [{"location": loc_ref}], "serviceProvider": org_ref});
    let bmi = json!({"resourceType": "Observation", "status": "final",
        "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/bmi", "http://hl7.org/fhir/StructureDefinition/vitalsigns"]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "39156-5", "display": "Body Mass Index"}], "text": "Body Mass Index"},
        "subject": {"reference": p}, "encounter": {"reference": e},
        "effectiveDateTime": "2020-12-03T10:07:26-05:00", "issued": "2020-12-03T10:07:26.404-05:00",
        "valueQuantity": {"value": 30.1, "unit": "kg/m2", "system": "http://unitsofmeasure.org", "code": "kg/m2"}});
    let condition = json!({"resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "encounter-diagnosis", "display": "Encounter Diagnosis"}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "162864005", "display": "Body mass index 30+ - obesity (finding)"}], "text": "Body mass index 30+ - obesity (finding)"},
        "subject": {"reference": p}, "encounter": {"reference": e},
        "onsetDateTime": "2020-12-03T10:07:26-05:00", "recordedDate": "2020-12-03T10:07:26-05:00"});
    let medication = json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "314076", "display": "lisinopril 10 MG Oral Tablet"}]},
        "subject": {"reference": p}, "encounter": {"reference": e}, "authoredOn": "2020-12-03T10:07:26-05:00", "requester": pr_ref});
    let immunization = json!({"resourceType": "Immunization", "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140", "display": "Influenza, seasonal, injectable, preservative free"}]},
        "patient": {"reference": p}, "encounter": {"reference": e}, "occurrenceDateTime": "2020-12-03T10:07:26-05:00",
        "primarySource": true, "location": loc_ref});
    let note = json!({"resourceType": "DocumentReference",
        "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-documentreference"]},
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:3c9d8a11-0000-4000-8000-0000000000aa"}],
        "status": "superseded",
        "type": {"coding": [{"system": "http://loinc.org", "code": "34117-2", "display": "History and physical note"},
                            {"system": "http://loinc.org", "code": "51847-2", "display": "Evaluation + Plan note"}]},
        "category": [{"coding": [{"system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category", "code": "clinical-note", "display": "Clinical Note"}]}],
        "subject": {"reference": p}, "date": "2020-12-03T10:07:26.404-05:00", "author": [pr_ref], "custodian": org_ref,
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                    "data": "RGVjIDMsIDIwMjAKCiMgQ2hpZWYgQ29tcGxhaW50Ck5vIGNvbXBsYWludHMuCg=="},
                     "format": {"system": "http://ihe.net/fhir/ValueSet/IHE.FormatCode.codesystem", "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient", "display": "mimeType Sufficient"}}],
        "context": {"encounter": [{"reference": e}], "period": {"start": "2020-12-03T10:07:26-05:00", "end": "2020-12-03T10:22:26-05:00"}}});
    let claim = json!({"resourceType": "Claim", "status": "active", "use": "claim",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "patient": {"reference": p}, "created": "2020-12-03T10:22:26-05:00", "provider": org_ref,
        "billablePeriod": {"start": "2020-12-03T10:07:26-05:00", "end": "2020-12-03T10:22:26-05:00"},
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": true, "coverage": {"display": "Medicaid"}}],
        "item": [{"sequence": 1, "productOrService": {"coding": [{"system": "http://snomed.info/sct", "code": "162673000"}]}, "encounter": [{"reference": e}]}],
        "total": {"value": 129.16, "currency": "USD"}});
    let entries: Vec<(String, Value)> = vec![
        (p.to_owned(), patient),
        (e.to_owned(), encounter),
        (
            "urn:uuid:3c9d8a11-0000-4000-8000-000000000001".to_owned(),
            bmi,
        ),
        (
            "urn:uuid:3c9d8a11-0000-4000-8000-000000000002".to_owned(),
            condition,
        ),
        (
            "urn:uuid:3c9d8a11-0000-4000-8000-000000000003".to_owned(),
            medication,
        ),
        (
            "urn:uuid:3c9d8a11-0000-4000-8000-000000000004".to_owned(),
            immunization,
        ),
        (
            "urn:uuid:3c9d8a11-0000-4000-8000-000000000005".to_owned(),
            note,
        ),
        (
            "urn:uuid:3c9d8a11-0000-4000-8000-000000000006".to_owned(),
            claim,
        ),
    ];
    let record = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries.iter().map(|(full, r)| json!({
        "fullUrl": full, "resource": r, "request": {"method": "POST", "url": r["resourceType"]}})).collect::<Vec<_>>()});

    let mut sent: Vec<(Value, String)> = Vec::new();
    for bundle in [&hospital, &practitioners, &record] {
        let r = fhir.post("", bundle, &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        for (i, answer) in r.body["entry"].as_array().unwrap().iter().enumerate() {
            assert_eq!(answer["response"]["status"], "201 Created", "{}", answer);
            let location = answer["response"]["location"].as_str().unwrap();
            let at = location.split("/_history").next().unwrap().to_owned();
            sent.push((bundle["entry"][i]["resource"].clone(), at));
        }
    }
    let types: HashMap<String, String> = entries
        .iter()
        .map(|(full, r)| (full.clone(), r["resourceType"].as_str().unwrap().to_owned()))
        .collect();
    for (resource, at) in &sent {
        let read = fhir.get(&format!("/{at}")).await;
        assert_eq!(read.status, 200, "{at}: {}", read.body);
        let mut got = read.body.clone();
        // The one element Salus adds to what was sent: for a Location, the reference it
        // resolved a logical one to; for a note, its docStatus (preliminary: unsigned) and
        // the size and SHA-1 of its text.
        if got["resourceType"] == "DocumentReference" {
            assert_eq!(got["docStatus"], "preliminary");
            got.as_object_mut().unwrap().remove("docStatus");
            let a = got["content"][0]["attachment"].as_object_mut().unwrap();
            assert_eq!(a.remove("size"), Some(json!(46)));
            assert_eq!(
                a.remove("hash"),
                Some(json!("rDC4xxanVUpNMB8HEw0nwfWWUhM="))
            );
        }
        if got["resourceType"] == "Location" {
            assert!(
                got["managingOrganization"]["reference"]
                    .as_str()
                    .unwrap()
                    .starts_with("Organization/")
            );
            got["managingOrganization"]
                .as_object_mut()
                .unwrap()
                .remove("reference");
        }
        assert_eq!(meaning(&got, &types), meaning(resource, &types), "{at}");
    }
    // Found by what Salus keeps beside its fields.
    let patient_id = sent[3].1.trim_start_matches("Patient/").to_owned();
    for q in [
        "/Patient?_profile=http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient",
        "/Patient?identifier=http://hl7.org/fhir/sid/us-ssn|999-31-7734",
        "/Patient?language=en-US",
        "/Patient?phone=555-515-2334",
    ] {
        let r = fhir.get(q).await;
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        assert_eq!(ids(&r.body), vec![patient_id.clone()], "{q}");
    }
    let r = fhir
        .get(&format!(
            "/Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|{npi}"
        ))
        .await;
    assert_eq!(ids(&r.body).len(), 1, "{}", r.body);
    let r = fhir
        .get(&format!(
            "/Encounter?patient=Patient/{patient_id}&location={}",
            sent[1].1
        ))
        .await;
    assert_eq!(ids(&r.body).len(), 1, "{}", r.body);
    // The note went into a medical record opened with it, in the custodian's department.
    let records = app
        .get(
            &format!("/api/v1/medical-records?patient_id={patient_id}"),
            &app.token,
        )
        .await;
    let records: Value = records.json().await.unwrap();
    assert_eq!(records["items"].as_array().unwrap().len(), 1, "{records}");
    assert_eq!(
        format!(
            "Organization/{}",
            records["items"][0]["department_id"].as_str().unwrap()
        ),
        sent[0].1
    );
    // Loading the same batches again creates nothing new (conditional creates).
    for bundle in [&hospital, &practitioners] {
        let r = fhir.post("", bundle, &[]).await;
        assert!(
            r.body["entry"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["response"]["status"] == "200 OK"),
            "{}",
            r.body
        );
    }
    fhir.validate_all();
}

fn heart_rate(id: &str, patient: &str, bpm: i64) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
           "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
           "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
           "subject": {"reference": format!("Patient/{patient}")},
           "effectiveDateTime": "2024-03-01T09:00:00Z",
           "valueQuantity": {"value": bpm, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}})
}

/// Loaders that PUT each resource under its own UUID (Synthea's ids are UUIDs) create them
/// there, over REST and in a transaction; other ids are refused with what to do instead;
/// an id another tenant holds is not taken.
async fn an_update_creates_under_a_clients_uuid(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let pid = "5cbc121b-cd71-4428-b8b7-31e53eba8184";
    let mut p = patient_resource("PUT-1", "Upsert");
    p["id"] = json!(pid);
    let c = fhir.put(&format!("/Patient/{pid}"), &p, &[]).await;
    assert_eq!(c.status, 201, "{}", c.body);
    assert_eq!(c.body["id"], pid);
    assert_eq!(c.header("etag"), "W/\"1\"");
    assert!(
        c.header("location")
            .contains(&format!("/Patient/{pid}/_history/1")),
        "{:?}",
        c.headers
    );
    let (status, _, api) = crate::fhir::api_get(&app, &format!("/api/v1/patients/{pid}")).await;
    assert_eq!(status, 200, "{api}");
    p["birthDate"] = json!("1970-02-04");
    let u = fhir.put(&format!("/Patient/{pid}"), &p, &[]).await;
    assert_eq!(u.status, 200, "{}", u.body);
    assert_eq!(u.header("etag"), "W/\"2\"");

    let oid = "a0e5a5c2-7d55-4b4e-9a42-8c1f3c5d0e11";
    let c = fhir
        .put(
            &format!("/Observation/{oid}"),
            &heart_rate(oid, pid, 71),
            &[],
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.body);
    let r = fhir.get(&format!("/Observation/{oid}")).await;
    assert_eq!(r.body["valueQuantity"]["value"], 71);
    assert_eq!(r.body["subject"]["reference"], format!("Patient/{pid}"));
    // Not a UUID: refused, saying so; If-Match on nothing: 412.
    let (_, _) = fhir
        .put("/Observation/hr-1", &heart_rate("hr-1", pid, 70), &[])
        .await
        .outcome(404);
    let missing = "0b7f3f8e-1111-4222-8333-944455556666";
    fhir.put(
        &format!("/Observation/{missing}"),
        &heart_rate(missing, pid, 70),
        &[("if-match", "W/\"1\"")],
    )
    .await
    .outcome(412);
    let r = fhir
        .put(
            "/Patient/pat-1",
            &json!({"resourceType": "Patient", "id": "pat-1", "name": [{"family": "X"}]}),
            &[],
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(
        r.body["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("UUID"),
        "{}",
        r.body
    );

    // Another tenant cannot take an id this one holds, and is not told whose it is.
    let other = app.other_tenant("second").await;
    let r = fhir
        .send(
            reqwest::Method::PUT,
            &format!("/Patient/{pid}"),
            Some(&other),
            Some(&p),
            &[],
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = fhir
        .send(
            reqwest::Method::GET,
            &format!("/Patient/{pid}"),
            Some(&other),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 404);

    // A transaction of PUTs under the loader's ids, one naming the other: created; sent
    // again: updated.
    let (p2, o2) = (
        "7d9b6f0e-2a1c-4c7e-8f6d-1b2c3d4e5f60",
        "8e0c7a1f-3b2d-4d8f-9a7e-2c3d4e5f6071",
    );
    let mut pat = patient_resource("PUT-2", "Loaded");
    pat["id"] = json!(p2);
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": heart_rate(o2, p2, 66), "request": {"method": "PUT", "url": format!("Observation/{o2}")}},
        {"resource": pat, "request": {"method": "PUT", "url": format!("Patient/{p2}")}},
    ]});
    let r = fhir.post("", &tx, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let statuses: Vec<&str> = r.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.iter().all(|s| s.starts_with("201")),
        "{statuses:?}"
    );
    let r = fhir
        .get(&format!("/Observation?subject=Patient/{p2}"))
        .await;
    assert_eq!(ids(&r.body), vec![o2.to_owned()]);
    let r = fhir.post("", &tx, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let statuses: Vec<&str> = r.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.iter().all(|s| s.starts_with("200")),
        "{statuses:?}"
    );
    let m = fhir
        .send(reqwest::Method::GET, "/metadata", None, None, &[])
        .await;
    for r in m.body["rest"][0]["resource"].as_array().unwrap() {
        if ["Patient", "Observation"].contains(&r["type"].as_str().unwrap()) {
            assert_eq!(r["updateCreate"], true, "{}", r["type"]);
        }
    }
    fhir.validate_all();
    app.stop().await;
}

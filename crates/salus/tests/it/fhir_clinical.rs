//! FHIR types served by Salus's clinical aggregates, over real HTTP on both backends: a
//! write through FHIR is read through `/api/v1` at the same version and the other way
//! round; updates are the aggregate's own transitions (amend, enter in error); search on
//! the type's R4 parameters incl. chains; errors name the element; a patient-context token
//! sees only its patient; transactions write them all or nothing; every resource answered
//! validated by `fhir.resources`.

use crate::app::{TestApp, on_both_backends};
use crate::fhir::{Fhir, a_patient, api_get, content, ids};
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    observations_map_both_ways_with_the_same_versions,
    observations_are_found_by_their_r4_parameters,
    observation_errors_name_the_element,
    panels_and_untyped_values_load_and_read_back_as_sent,
    observations_take_patches_and_conditional_updates_and_deletes,
    a_patient_context_token_sees_only_its_patients_observations,
    a_transaction_records_a_patient_and_its_observations_or_nothing,
);

const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";

fn heart_rate(patient: &str, bpm: i64, at: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}], "text": "Heart rate"},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": at,
        "issued": "2024-05-01T10:05:00.000Z",
        "valueQuantity": {"value": bpm, "unit": "beats/minute", "system": UCUM, "code": "/min"},
        "note": [{"text": "at rest"}]
    })
}

async fn observations_map_both_ways_with_the_same_versions(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let pid = a_patient(&app, "O-1", "Obs").await;

    // FHIR → /api/v1: the aggregate, version 1, everything sent kept.
    let sent = heart_rate(&pid, 72, "2024-05-01T10:00:00Z");
    let created = fhir.post("/Observation", &sent, &[]).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.header("etag"), "W/\"1\"");
    assert!(
        created
            .header("location")
            .ends_with(&format!("/fhir/R4/Observation/{id}/_history/1")),
        "{}",
        created.header("location")
    );
    assert_eq!(content(&created.body), sent, "read back as sent");
    let (status, etag, api) = api_get(&app, &format!("/api/v1/observations/{id}")).await;
    assert_eq!(status, 200, "{api}");
    assert_eq!(etag, "\"1\"");
    assert_eq!(api["patient_id"], pid.as_str());
    assert_eq!(api["code"]["code"], "8867-4");
    assert_eq!(
        api["value"],
        json!({"type": "quantity", "value": 72.0, "unit": "/min"})
    );
    assert_eq!(api["effective_at"], "2024-05-01T10:00:00Z");
    assert_eq!(api["status"], "final");

    // A FHIR update with a new value is an amendment (version 2), with its reason.
    let mut amended = created.body.clone();
    amended["valueQuantity"]["value"] = json!(75);
    amended["extension"] =
        json!([{"url": "urn:salus:fhir:extension:status-reason", "valueString": "recounted"}]);
    let up = fhir
        .put(
            &format!("/Observation/{id}"),
            &amended,
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(up.status, 200, "{}", up.body);
    assert_eq!(up.header("etag"), "W/\"2\"");
    assert_eq!(up.body["status"], "amended");
    assert_eq!(up.body["valueQuantity"]["value"], 75);
    assert_eq!(up.body["extension"][0]["valueString"], "recounted");
    let (_, etag, api) = api_get(&app, &format!("/api/v1/observations/{id}")).await;
    assert_eq!(etag, "\"2\"");
    assert_eq!(api["status"], "amended");
    assert_eq!(api["status_reason"], "recounted");
    // A stale If-Match is a 412; the same content again is no new version.
    fhir.put(
        &format!("/Observation/{id}"),
        &amended,
        &[("if-match", "W/\"1\"")],
    )
    .await
    .outcome(412);
    let mut again = up.body.clone();
    again.as_object_mut().unwrap().remove("meta");
    let same = fhir.put(&format!("/Observation/{id}"), &again, &[]).await;
    assert_eq!(same.status, 200, "{}", same.body);
    assert_eq!(same.header("etag"), "W/\"2\"");

    // /api/v1 → FHIR: enter-in-error through the JSON API is version 3 through FHIR.
    let r = app
        .client
        .post(app.url(&format!("/api/v1/observations/{id}/enter-in-error")))
        .bearer_auth(&app.token)
        .header("if-match", "\"2\"")
        .json(&json!({"reason": "wrong patient"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let read = fhir.get(&format!("/Observation/{id}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["meta"]["versionId"], "3");
    assert_eq!(read.body["status"], "entered-in-error");
    assert_eq!(read.body["extension"][0]["valueString"], "wrong patient");
    // Every version, the same through both APIs.
    let h = fhir.get(&format!("/Observation/{id}/_history")).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.body["total"], 3);
    let versions: Vec<&str> = h.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["3", "2", "1"]);
    let (_, _, api_h) = api_get(&app, &format!("/api/v1/observations/{id}/history")).await;
    assert_eq!(api_h["items"].as_array().unwrap().len(), 3, "{api_h}");
    let v1 = fhir.get(&format!("/Observation/{id}/_history/1")).await;
    assert_eq!(v1.status, 200);
    assert_eq!(content(&v1.body), sent);
    fhir.get(&format!("/Observation/{id}/_history/9"))
        .await
        .outcome(404);
    // Withdrawn: nothing more changes it.
    let mut back = read.body.clone();
    back["valueQuantity"]["value"] = json!(80);
    let refused = fhir.put(&format!("/Observation/{id}"), &back, &[]).await;
    assert!(
        refused.status == 409 || refused.status == 422,
        "{}",
        refused.body
    );

    // /api/v1 → FHIR: an observation recorded through the JSON API, then deleted via FHIR.
    let r = app
        .post(
            "/api/v1/observations",
            &app.token,
            &json!({"patient_id": pid, "code": {"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"},
                    "value": {"type": "quantity", "value": 128.5, "unit": "mm[Hg]"}, "effective_at": "2024-05-02T08:00:00Z"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let api_obs: Value = r.json().await.unwrap();
    let oid = api_obs["id"].as_str().unwrap();
    let f = fhir.get(&format!("/Observation/{oid}")).await;
    assert_eq!(f.status, 200, "{}", f.body);
    assert_eq!(f.body["meta"]["versionId"], "1");
    assert_eq!(f.body["subject"]["reference"], format!("Patient/{pid}"));
    assert_eq!(
        f.body["valueQuantity"],
        json!({"value": 128.5, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"})
    );
    assert_eq!(f.body["effectiveDateTime"], "2024-05-02T08:00:00Z");
    let d = fhir
        .send(
            Method::DELETE,
            &format!("/Observation/{oid}"),
            Some(&app.token),
            None,
            &[],
        )
        .await;
    assert_eq!(d.status, 204, "{}", d.body);
    let (_, etag, api) = api_get(&app, &format!("/api/v1/observations/{oid}")).await;
    assert_eq!(etag, "\"2\"");
    assert_eq!(api["status"], "entered_in_error");
    fhir.validate_all();
}

async fn observations_are_found_by_their_r4_parameters(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let ada = a_patient(&app, "S-1", "Lovelace").await;
    let bob = a_patient(&app, "S-2", "Babbage").await;
    let mut made = Vec::new();
    for (p, bpm, at) in [
        (&ada, 60, "2024-01-10T08:00:00Z"),
        (&ada, 90, "2024-03-10T08:00:00Z"),
        (&bob, 75, "2024-02-10T08:00:00Z"),
    ] {
        let r = fhir
            .post("/Observation", &heart_rate(p, bpm, at), &[])
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        made.push(r.body["id"].as_str().unwrap().to_owned());
    }
    // One through the JSON API: found by FHIR search too.
    let r = app
        .post(
            "/api/v1/observations",
            &app.token,
            &json!({"patient_id": bob, "code": {"system": LOINC, "code": "8310-5"},
                    "value": {"type": "quantity", "value": 37.2, "unit": "Cel"}, "effective_at": "2024-02-11T08:00:00Z"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let temp = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let q = |path: &str| {
        let fhir = &fhir;
        let path = path.to_owned();
        async move {
            let r = fhir.get(&path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            sorted(ids(&r.body))
        }
    };
    let all = sorted(vec![
        made[0].clone(),
        made[1].clone(),
        made[2].clone(),
        temp.clone(),
    ]);
    assert_eq!(q("/Observation").await, all);
    assert_eq!(
        q(&format!("/Observation?subject=Patient/{ada}")).await,
        sorted(made[..2].to_vec())
    );
    assert_eq!(
        q(&format!("/Observation?patient={bob}")).await,
        sorted(vec![made[2].clone(), temp.clone()])
    );
    assert_eq!(
        q("/Observation?subject:Patient.name=lovelace").await,
        sorted(made[..2].to_vec())
    );
    assert_eq!(
        q("/Observation?patient.identifier=urn:mrn|S-2").await,
        sorted(vec![made[2].clone(), temp.clone()])
    );
    assert_eq!(
        q("/Observation?code=http://loinc.org|8867-4").await,
        sorted(made.clone())
    );
    assert_eq!(q("/Observation?code=8310-5").await, vec![temp.clone()]);
    assert_eq!(q("/Observation?code:not=8867-4").await, vec![temp.clone()]);
    assert_eq!(
        q("/Observation?date=ge2024-02-01&date=lt2024-03-01").await,
        sorted(vec![made[2].clone(), temp.clone()])
    );
    assert_eq!(
        q("/Observation?value-quantity=gt80").await,
        vec![made[1].clone()]
    );
    assert_eq!(
        q("/Observation?value-quantity=37.2|http://unitsofmeasure.org|Cel").await,
        vec![temp.clone()]
    );
    // _lastUpdated, from when each last changed.
    assert_eq!(q("/Observation?_lastUpdated=gt2000-01-01").await, all);
    assert_eq!(
        q("/Observation?_lastUpdated=lt2000-01-01").await,
        Vec::<String>::new()
    );
    // Patient: the registry's parameters and every other R4 one, over its FHIR rows.
    let both = sorted(vec![ada.clone(), bob.clone()]);
    // (Registered through the JSON API, not yet active.)
    assert_eq!(q("/Patient?active=false").await, both);
    assert_eq!(q("/Patient?active=true").await, Vec::<String>::new());
    assert_eq!(q("/Patient?active:not=true").await, both);
    assert_eq!(q("/Patient?phone=%2B442079460958").await, both);
    assert_eq!(q("/Patient?telecom=phone|%2B442079460958").await, both);
    assert_eq!(
        q("/Patient?_lastUpdated=gt2000-01-01&family=lovelace").await,
        vec![ada.clone()]
    );
    assert_eq!(
        q("/Patient?telecom:missing=true").await,
        Vec::<String>::new()
    );
    assert!(q("/Patient?general-practitioner.name=x").await.is_empty());
    // composite: the code and the value of one observation together.
    assert_eq!(
        q("/Observation?code-value-quantity=http://loinc.org|8867-4$gt80").await,
        vec![made[1].clone()]
    );
    assert_eq!(
        q("/Observation?code-value-quantity=8310-5$gt80").await,
        Vec::<String>::new()
    );
    assert_eq!(
        q("/Observation?code-value-quantity=8310-5$lt40,8867-4$lt70").await,
        sorted(vec![made[0].clone(), temp.clone()])
    );
    assert_eq!(
        q("/Observation?combo-code-value-quantity=8310-5$37.2|http://unitsofmeasure.org|Cel").await,
        vec![temp.clone()]
    );
    assert_eq!(
        q("/Observation?category=vital-signs").await,
        sorted(made.clone())
    );
    assert_eq!(q("/Observation?status=final").await, all);
    assert_eq!(
        q(&format!("/Observation?_id={}", made[1])).await,
        vec![made[1].clone()]
    );
    assert_eq!(q("/Observation?status=amended").await, Vec::<String>::new());
    // Paging follows the next link.
    let page = fhir.get("/Observation?_count=3").await;
    assert_eq!(ids(&page.body).len(), 3);
    let next = crate::fhir::next_link(&page.body).expect("a next link");
    let rest = fhir.get(next.split("/fhir/R4").nth(1).unwrap()).await;
    assert_eq!(ids(&rest.body).len(), 1);
    // POST _search.
    let r = app
        .client
        .post(app.url("/fhir/R4/Observation/_search"))
        .bearer_auth(&app.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("code=8867-4&patient.family=Babbage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(ids(&b), vec![made[2].clone()]);
    // A document's chain through Observation: a DiagnosticReport whose result is one.
    let report = json!({"resourceType": "DiagnosticReport", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "subject": {"reference": format!("Patient/{ada}")},
        "result": [{"reference": format!("Observation/{}", made[1])}]});
    let rep = fhir.post("/DiagnosticReport", &report, &[]).await;
    assert_eq!(rep.status, 201, "{}", rep.body);
    let r = fhir
        .get("/DiagnosticReport?result.value-quantity=gt80")
        .await;
    assert_eq!(
        ids(&r.body),
        vec![rep.body["id"].as_str().unwrap().to_owned()]
    );
    // If-None-Exist finds the one that matches.
    let again = fhir
        .post(
            "/Observation",
            &heart_rate(&ada, 60, "2024-01-10T08:00:00Z"),
            &[(
                "if-none-exist",
                "date=2024-01-10T08:00:00Z&patient.family=lovelace",
            )],
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["id"], made[0].as_str());
    let strict = fhir
        .send(
            Method::GET,
            "/Observation?nonsense=1",
            Some(&app.token),
            None,
            &[("prefer", "handling=strict")],
        )
        .await;
    strict.outcome(400);
    fhir.get("/Observation?date=yesterday").await.outcome(400);
    // Metadata lists Observation with its parameters, and no longer as a document.
    let meta = fhir.get("/metadata").await;
    let obs: Vec<&Value> = meta.body["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == "Observation")
        .collect();
    assert_eq!(obs.len(), 1);
    assert!(
        obs[0]["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "value-quantity")
    );
    fhir.validate_all();
}

async fn panels_and_untyped_values_load_and_read_back_as_sent(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let pid = a_patient(&app, "P-1", "Panel").await;
    let q = |v: i64| json!({"value": v, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"});
    let base = heart_rate(&pid, 70, "2024-05-01T10:00:00Z");
    let without_value = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut v = base.clone();
        let o = v.as_object_mut().unwrap();
        o.remove("valueQuantity");
        f(o);
        v
    };
    let panel = without_value(&|o| {
        o["code"] = json!({"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}]});
        o.insert("component".into(), json!([
            {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": q(150)},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": q(85)}
        ]));
    });
    let absent = without_value(&|o| {
        o.insert("dataAbsentReason".into(), json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "not-performed"}]}));
    });
    let integer = without_value(&|o| {
        o.insert("valueInteger".into(), json!(3));
    });
    let period = without_value(&|o| {
        o.insert("valuePeriod".into(), json!({"start": "2024-01-01"}));
    });
    // The first coding's version and userSelected are kept with it.
    let mut versioned = integer.clone();
    versioned["code"]["coding"][0]["version"] = json!("2.77");
    versioned["code"]["coding"][0]["userSelected"] = json!(true);
    let mut ids_made = Vec::new();
    for sent in [&panel, &absent, &integer, &period, &versioned] {
        let r = fhir.post("/Observation", sent, &[]).await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(content(&r.body), *sent);
        let id = r.body["id"].as_str().unwrap().to_owned();
        let back = fhir.get(&format!("/Observation/{id}")).await;
        assert_eq!(content(&back.body), *sent);
        // The JSON API has it, its value untyped (the FHIR elements keep what it is).
        let (status, _, api) = api_get(&app, &format!("/api/v1/observations/{id}")).await;
        assert_eq!(status, 200, "{api}");
        assert_eq!(api["value"]["type"], "untyped", "{api}");
        ids_made.push(id);
    }
    // The panel is found by its components' pairs, each within its own component.
    let found = |query: &str| {
        let fhir = &fhir;
        let query = query.to_owned();
        async move { ids(&fhir.get(&format!("/Observation?{query}")).await.body) }
    };
    assert_eq!(
        found("component-code-value-quantity=http://loinc.org|8480-6$gt140").await,
        vec![ids_made[0].clone()]
    );
    assert_eq!(
        found("component-code-value-quantity=8462-4$gt140").await,
        Vec::<String>::new()
    );
    assert_eq!(
        found("combo-code-value-quantity=8462-4$lt90").await,
        vec![ids_made[0].clone()]
    );
    // combo-code reads the rows of code and component-code (it has none of its own).
    assert_eq!(
        found("combo-code=http://loinc.org|8462-4").await,
        vec![ids_made[0].clone()]
    );
    assert_eq!(
        found("combo-code=8462-4&code=85354-9").await,
        vec![ids_made[0].clone()]
    );
    assert_eq!(found("combo-code=8867-4").await, ids_made[1..].to_vec());
    // An effective period and a partial date load, read back as sent, and are found by
    // date; the JSON API holds their first instant.
    let mut timed = Vec::new();
    for (k, v, held) in [
        (
            "effectivePeriod",
            json!({"start": "2023-03-01T08:00:00Z", "end": "2023-03-02T08:00:00Z"}),
            "2023-03-01T08:00:00Z",
        ),
        (
            "effectiveDateTime",
            json!("2022-07"),
            "2022-07-01T00:00:00Z",
        ),
    ] {
        let mut sent = heart_rate(&pid, 71, "2024-05-01T10:00:00Z");
        sent.as_object_mut().unwrap().remove("effectiveDateTime");
        sent[k] = v;
        let r = fhir.post("/Observation", &sent, &[]).await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(content(&r.body), sent);
        let id = r.body["id"].as_str().unwrap().to_owned();
        let (_, _, api) = api_get(&app, &format!("/api/v1/observations/{id}")).await;
        let at: chrono::DateTime<chrono::Utc> =
            api["effective_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            at,
            held.parse::<chrono::DateTime<chrono::Utc>>().unwrap(),
            "{api}"
        );
        timed.push(id);
    }
    assert_eq!(
        found("date=ge2023-03-01&date=lt2023-04-01").await,
        vec![timed[0].clone()]
    );
    assert_eq!(found("date=2022-07").await, vec![timed[1].clone()]);
    // ge and le take a period that only overlaps the day searched.
    assert_eq!(
        found("date=ge2023-03-02&date=le2023-03-03").await,
        vec![timed[0].clone()]
    );
    assert_eq!(
        found("date=ge2023-03-03&date=le2023-03-04").await,
        Vec::<String>::new()
    );
    fhir.validate_all();
}

async fn observations_take_patches_and_conditional_updates_and_deletes(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let pid = a_patient(&app, "C-1", "Cond").await;
    let mut sent = heart_rate(&pid, 70, "2024-05-01T10:00:00Z");
    sent["identifier"] = json!([{"system": "urn:lab", "value": "L-1"}]);
    let made = fhir.post("/Observation", &sent, &[]).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let id = made.body["id"].as_str().unwrap().to_owned();

    // JSON Patch of the current form: a new value is the aggregate's amendment.
    let patch = |ops: Value, if_match: Option<&'static str>| {
        let app = &app;
        let id = id.clone();
        async move {
            let mut req = app
                .client
                .patch(app.url(&format!("/fhir/R4/Observation/{id}")))
                .bearer_auth(&app.token)
                .header("content-type", "application/json-patch+json")
                .body(ops.to_string());
            if let Some(m) = if_match {
                req = req.header("if-match", m);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = patch(
        json!([{"op": "replace", "path": "/valueQuantity/value", "value": 75}]),
        Some("W/\"1\""),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "amended");
    assert_eq!(body["valueQuantity"]["value"], 75);
    assert_eq!(body["meta"]["versionId"], "2");
    let (status, _) = patch(
        json!([{"op": "replace", "path": "/valueQuantity/value", "value": 76}]),
        Some("W/\"1\""),
    )
    .await;
    assert_eq!(status, 412, "a stale If-Match");
    let (status, body) = patch(
        json!([{"op": "replace", "path": "/code/coding/0/code", "value": "8310-5"}]),
        None,
    )
    .await;
    assert_eq!(status, 422, "the code cannot change: {body}");
    let (status, _) = patch(json!([{"op": "remove", "path": "/nothing"}]), None).await;
    assert_eq!(status, 422, "a patch that does not apply");
    let (status, _) = patch(json!({"op": "remove"}), None).await;
    assert_eq!(status, 400, "not a patch");

    // Conditional update: the one match is updated; no match creates; several are a 412.
    let mut again = sent.clone();
    again["valueQuantity"]["value"] = json!(80);
    let r = fhir
        .put("/Observation?identifier=urn:lab|L-1", &again, &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["meta"]["versionId"], "3");
    let mut other = sent.clone();
    other["identifier"] = json!([{"system": "urn:lab", "value": "L-2"}]);
    let r = fhir
        .put("/Observation?identifier=urn:lab|L-2", &other, &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let second = r.body["id"].as_str().unwrap().to_owned();
    assert_ne!(second, id);
    let mut with_id = other.clone();
    with_id["id"] = json!("client-chosen");
    fhir.put("/Observation?identifier=urn:lab|L-3", &with_id, &[])
        .await
        .outcome(400);
    fhir.put("/Observation?code=8867-4", &again, &[])
        .await
        .outcome(412);
    fhir.put("/Observation?_count=1", &again, &[])
        .await
        .outcome(400);

    // Conditional delete: the one match is entered in error; none is a 204; several 412.
    let del = |q: &str| {
        let fhir = &fhir;
        let q = q.to_owned();
        async move {
            fhir.send(
                Method::DELETE,
                &format!("/Observation?{q}"),
                Some(&fhir.app.token),
                None,
                &[],
            )
            .await
        }
    };
    assert_eq!(del("code=8867-4").await.status, 412);
    assert_eq!(del("identifier=urn:lab|L-2").await.status, 204);
    let gone = fhir.get(&format!("/Observation/{second}")).await;
    assert_eq!(gone.body["status"], "entered-in-error");
    assert_eq!(del("identifier=urn:lab|nothing").await.status, 204);
    // The CapabilityStatement says so.
    let cap = fhir.get("/metadata").await;
    let obs = cap.body["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Observation")
        .unwrap()
        .clone();
    assert_eq!(obs["conditionalUpdate"], true);
    assert_eq!(obs["conditionalDelete"], "single");
    assert!(
        obs["interaction"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["code"] == "patch")
    );
    fhir.validate_all();
}

async fn observation_errors_name_the_element(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let pid = a_patient(&app, "E-1", "Err").await;
    let ok = heart_rate(&pid, 70, "2024-05-01T10:00:00Z");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = ok.clone();
        f(&mut v);
        v
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            with(&|v| v["code"]["coding"][0]["code"] = json!("8867-5")),
            422,
            "Observation.code.coding[0].code",
        ),
        (
            with(&|v| v["valueQuantity"]["code"] = json!("beats")),
            422,
            "Observation.value[x]",
        ),
        (
            with(&|v| v["effectiveDateTime"] = json!("2024-05-01T10:00")),
            422,
            "Observation.effectiveDateTime",
        ),
        (
            with(&|v| v["effectiveDateTime"] = json!("2099-05-01T10:00:00Z")),
            422,
            "Observation.effective[x]",
        ),
        (
            with(&|v| v["subject"] = json!({"reference": "Group/1"})),
            422,
            "Observation.subject.reference",
        ),
        (
            with(&|v| {
                v["subject"] = json!({"reference": format!("Patient/{}", uuid::Uuid::now_v7())})
            }),
            422,
            "Observation.subject",
        ),
        (
            with(&|v| v["status"] = json!("registered")),
            422,
            "Observation.status",
        ),
        (
            with(&|v| v["status"] = json!("amended")),
            422,
            "Observation.status",
        ),
        (
            with(&|v| v["valueQuantity"]["comparator"] = json!("<")),
            422,
            "Observation.valueQuantity.comparator",
        ),
    ];
    for (body, status, at) in cases {
        let r = fhir.post("/Observation", &body, &[]).await;
        let (_, expression) = r.outcome(status);
        assert_eq!(expression, at, "{}", r.body);
    }
    fhir.post("/Observation", &json!({"resourceType": "Patient"}), &[])
        .await
        .outcome(400);
    let created = fhir.post("/Observation", &ok, &[]).await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    // What never changes is refused by name; an id that is not the URL's is a 400.
    let mut moved = created.body.clone();
    moved["code"]["coding"][0]["code"] = json!("8480-6");
    let (_, at) = fhir
        .put(&format!("/Observation/{id}"), &moved, &[])
        .await
        .outcome(422);
    assert_eq!(at, "Observation.code");
    let mut other = created.body.clone();
    other["id"] = json!(uuid::Uuid::now_v7().to_string());
    fhir.put(&format!("/Observation/{id}"), &other, &[])
        .await
        .outcome(400);
    // An update creates only under a UUID.
    let missing = "ghost-1";
    let mut ghost = created.body.clone();
    ghost["id"] = json!(missing);
    fhir.put(&format!("/Observation/{missing}"), &ghost, &[])
        .await
        .outcome(404);
    fhir.get(&format!("/Observation/{missing}"))
        .await
        .outcome(404);
    fhir.get("/Observation/not-a-uuid").await.outcome(404);
    // A reader without observations:read is refused.
    let clerk = app.token_for("clerk-o", &["auditor"]).await;
    let r = fhir
        .send(
            Method::GET,
            &format!("/Observation/{id}"),
            Some(&clerk),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    fhir.validate_all();
}

async fn a_patient_context_token_sees_only_its_patients_observations(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let ada = a_patient(&app, "PC-1", "Own").await;
    let bob = a_patient(&app, "PC-2", "Other").await;
    let mine = fhir
        .post(
            "/Observation",
            &heart_rate(&ada, 61, "2024-01-01T08:00:00Z"),
            &[],
        )
        .await;
    let theirs = fhir
        .post(
            "/Observation",
            &heart_rate(&bob, 62, "2024-01-01T08:00:00Z"),
            &[],
        )
        .await;
    let token = app.patient_token("viewer-o", "patient/*.read", &ada).await;
    let get = |path: String| {
        let fhir = &fhir;
        let token = token.clone();
        async move { fhir.send(Method::GET, &path, Some(&token), None, &[]).await }
    };
    let r = get("/Observation?code=8867-4".into()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        ids(&r.body),
        vec![mine.body["id"].as_str().unwrap().to_owned()]
    );
    let r = get(format!("/Observation?patient={bob}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(ids(&r.body).is_empty(), "{}", r.body);
    get(format!(
        "/Observation/{}",
        theirs.body["id"].as_str().unwrap()
    ))
    .await
    .outcome(404);
    let r = get(format!(
        "/Observation/{}",
        mine.body["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(r.status, 200);
    let w = fhir
        .send(
            Method::POST,
            "/Observation",
            Some(&token),
            Some(&heart_rate(&ada, 1, "2024-01-01T08:00:00Z")),
            &[],
        )
        .await;
    w.outcome(403);
    fhir.validate_all();
}

async fn a_transaction_records_a_patient_and_its_observations_or_nothing(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let pat = "urn:uuid:0b0c2f52-5a8e-4bb4-9d0e-000000000001";
    let mut obs = heart_rate("x", 66, "2024-04-01T09:00:00Z");
    obs["subject"] = json!({"reference": pat});
    let tx = |obs: Value, mrn: &str| {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:0b0c2f52-5a8e-4bb4-9d0e-000000000002", "resource": obs, "request": {"method": "POST", "url": "Observation"}},
            {"fullUrl": pat, "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": mrn}],
                "name": [{"family": "Bundled", "given": ["Tess"]}], "gender": "female", "birthDate": "1970-02-03"},
             "request": {"method": "POST", "url": "Patient"}},
        ]})
    };
    let r = fhir.post("", &tx(obs.clone(), "TXO-1"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let loc = r.body["entry"][0]["response"]["location"].as_str().unwrap();
    assert!(
        loc.starts_with("Observation/") && loc.ends_with("/_history/1"),
        "{loc}"
    );
    let oid = loc.split('/').nth(1).unwrap();
    let pid = r.body["entry"][1]["response"]["location"]
        .as_str()
        .unwrap()
        .split('/')
        .nth(1)
        .unwrap()
        .to_owned();
    let (status, _, api) = api_get(&app, &format!("/api/v1/observations/{oid}")).await;
    assert_eq!(status, 200);
    assert_eq!(api["patient_id"], pid.as_str());
    // One refused observation and nothing is written, the patient included.
    let mut bad = obs.clone();
    bad["code"]["coding"][0]["code"] = json!("8867-5");
    let r = fhir.post("", &tx(bad, "TXO-2"), &[]).await;
    let (_, at) = r.outcome(422);
    assert_eq!(at, "Observation.code.coding[0].code", "{}", r.body);
    let r = fhir.get("/Patient?identifier=urn:mrn|TXO-2").await;
    assert!(ids(&r.body).is_empty());
    // A batch runs Observation entries as their REST interactions.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Observation/{oid}")}},
        {"request": {"method": "GET", "url": format!("Observation?patient={pid}")}},
        {"request": {"method": "DELETE", "url": format!("Observation/{oid}")}},
    ]});
    let r = fhir.post("", &batch, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["entry"][0]["response"]["status"], "200 OK");
    assert_eq!(
        r.body["entry"][1]["resource"]["total"].as_u64().or(Some(1)),
        Some(1)
    );
    assert_eq!(r.body["entry"][2]["response"]["status"], "204 No Content");
    let (_, _, api) = api_get(&app, &format!("/api/v1/observations/{oid}")).await;
    assert_eq!(api["status"], "entered_in_error");
    fhir.validate_all();
}

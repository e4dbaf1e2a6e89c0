//! FHIR Condition and AllergyIntolerance, served by the clinical Statement aggregate, over
//! real HTTP on both backends: a write through FHIR is read through `/api/v1` at the same
//! version and the other way round; an update changes statuses and kept elements and
//! never the code; a delete enters it in error; search on the types' R4 parameters; a
//! transaction creates a patient with both; errors name the element; every resource
//! answered is validated by `fhir.resources`.

use crate::app::{TestApp, on_both_backends};
use crate::fhir::{Fhir, a_patient, api_get, content, ids};
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    conditions_map_both_ways_with_the_same_versions,
    allergies_map_both_ways_and_a_delete_enters_them_in_error,
    conditions_and_allergies_are_found_by_their_r4_parameters,
    a_transaction_records_a_patient_with_a_condition_and_an_allergy,
    statement_errors_name_the_element,
    a_patient_context_token_sees_only_its_patients_statements,
);

const SCT: &str = "http://snomed.info/sct";
const CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
const VERIFICATION: &str = "http://terminology.hl7.org/CodeSystem/condition-ver-status";
const A_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical";
const A_VERIFICATION: &str =
    "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification";

fn coded(system: &str, code: &str) -> Value {
    json!({"coding": [{"system": system, "code": code}]})
}

fn diabetes(subject: &str, onset: &str) -> Value {
    json!({
        "resourceType": "Condition",
        "clinicalStatus": coded(CLINICAL, "active"),
        "verificationStatus": {"coding": [{"system": VERIFICATION, "code": "confirmed", "display": "Confirmed"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
        "code": {"coding": [{"system": SCT, "code": "44054006", "display": "Diabetes mellitus type 2"}], "text": "Type 2 diabetes"},
        "subject": {"reference": subject},
        "onsetDateTime": onset,
        "recordedDate": "2019-06-01T09:00:00Z",
        "note": [{"text": "diet controlled", "authorString": "Dr B"}],
    })
}

fn peanut(subject: &str) -> Value {
    json!({
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": coded(A_CLINICAL, "active"),
        "verificationStatus": coded(A_VERIFICATION, "confirmed"),
        "type": "allergy",
        "category": ["food", "medication"],
        "criticality": "unable-to-assess",
        "code": {"coding": [{"system": SCT, "code": "91935009", "display": "Allergy to peanut"}]},
        "patient": {"reference": subject},
        "onsetDateTime": "2010-04-01",
        "recordedDate": "2011-01-01",
        "reaction": [{"manifestation": [{"coding": [{"system": SCT, "code": "39579001", "display": "Anaphylaxis"}]}], "severity": "severe"}],
    })
}

async fn set_status(app: &TestApp, path: &str, version: &str, body: &Value) -> u16 {
    let r = app
        .client
        .post(app.url(path))
        .bearer_auth(&app.token)
        .header("if-match", format!("\"{version}\""))
        .json(body)
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

async fn conditions_map_both_ways_with_the_same_versions(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let pid = a_patient(&app, "C-1", "Cond").await;

    // FHIR → /api/v1: the aggregate, version 1, everything sent kept.
    let sent = diabetes(&format!("Patient/{pid}"), "2019-05-03");
    let created = fhir.post("/Condition", &sent, &[]).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.header("etag"), "W/\"1\"");
    assert_eq!(content(&created.body), sent, "read back as sent");
    let (status, etag, api) = api_get(&app, &format!("/api/v1/conditions/{id}")).await;
    assert_eq!(status, 200, "{api}");
    assert_eq!(etag, "\"1\"");
    assert_eq!(api["patient_id"], pid.as_str());
    assert_eq!(api["code"]["code"], "44054006");
    assert_eq!(api["clinical_status"], "active");
    assert_eq!(api["verification_status"], "confirmed");
    assert_eq!(api["onset"], "2019-05-03");
    assert_eq!(api["note"], "diet controlled");

    // /api/v1 → FHIR: a status change through the JSON API is version 2 through FHIR.
    let s = set_status(
        &app,
        &format!("/api/v1/conditions/{id}/set-status"),
        "1",
        &json!({"clinical_status": "resolved"}),
    )
    .await;
    assert_eq!(s, 200);
    let read = fhir.get(&format!("/Condition/{id}")).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["meta"]["versionId"], "2");
    assert_eq!(read.body["clinicalStatus"], coded(CLINICAL, "resolved"));
    assert_eq!(read.body["recordedDate"], "2019-06-01T09:00:00Z");

    // A FHIR update: back to active with an abatement kept … no: an abatement needs an
    // abated status (con-4), so the update says remission and adds one (version 3).
    let mut up = read.body.clone();
    up["clinicalStatus"] = coded(CLINICAL, "remission");
    up["abatementDateTime"] = json!("2023-02-01");
    let r = fhir
        .put(&format!("/Condition/{id}"), &up, &[("if-match", "W/\"2\"")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("etag"), "W/\"3\"");
    assert_eq!(r.body["abatementDateTime"], "2023-02-01");
    let (_, etag, api) = api_get(&app, &format!("/api/v1/conditions/{id}")).await;
    assert_eq!(etag, "\"3\"");
    assert_eq!(api["clinical_status"], "remission");
    // The same content again is no new version; a stale If-Match is a 412.
    let mut again = r.body.clone();
    again.as_object_mut().unwrap().remove("meta");
    let same = fhir.put(&format!("/Condition/{id}"), &again, &[]).await;
    assert_eq!(same.status, 200, "{}", same.body);
    assert_eq!(same.header("etag"), "W/\"3\"");
    fhir.put(&format!("/Condition/{id}"), &up, &[("if-match", "W/\"1\"")])
        .await
        .outcome(412);
    // An abatement with an active status breaks con-4: refused.
    let mut bad = again.clone();
    bad["clinicalStatus"] = coded(CLINICAL, "active");
    let (_, at) = fhir
        .put(&format!("/Condition/{id}"), &bad, &[])
        .await
        .outcome(422);
    assert_eq!(at, "Condition.abatement[x]");
    // The code, the onset and the patient cannot change.
    let mut bad = again.clone();
    bad["code"]["coding"][0]["code"] = json!("38341003");
    let (_, at) = fhir
        .put(&format!("/Condition/{id}"), &bad, &[])
        .await
        .outcome(422);
    assert_eq!(at, "Condition.code");
    let mut bad = again.clone();
    bad["onsetDateTime"] = json!("2018-01-01");
    let (_, at) = fhir
        .put(&format!("/Condition/{id}"), &bad, &[])
        .await
        .outcome(422);
    assert_eq!(at, "Condition.onset[x]");
    // A relapse through the JSON API: the abatement no longer shows (con-4).
    let s = set_status(
        &app,
        &format!("/api/v1/conditions/{id}/set-status"),
        "3",
        &json!({"clinical_status": "relapse"}),
    )
    .await;
    assert_eq!(s, 200);
    let read = fhir.get(&format!("/Condition/{id}")).await;
    assert_eq!(read.body["meta"]["versionId"], "4");
    assert!(
        read.body.get("abatementDateTime").is_none(),
        "{}",
        read.body
    );
    // Every version, the same through both APIs.
    let h = fhir.get(&format!("/Condition/{id}/_history")).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.body["total"], 4);
    let (_, _, api_h) = api_get(&app, &format!("/api/v1/conditions/{id}/history")).await;
    assert_eq!(api_h["items"].as_array().unwrap().len(), 4, "{api_h}");
    let v1 = fhir.get(&format!("/Condition/{id}/_history/1")).await;
    assert_eq!(content(&v1.body), sent);
    let th = fhir.get("/Condition/_history").await;
    assert_eq!(th.status, 200, "{}", th.body);
    assert_eq!(th.body["entry"].as_array().unwrap().len(), 4);

    // A Condition without clinical or verification status reads back without them; one
    // with a partial onset keeps it as sent (the JSON API has no onset).
    let mut bare = diabetes(&format!("Patient/{pid}"), "2019-05");
    let o = bare.as_object_mut().unwrap();
    o.remove("clinicalStatus");
    o.remove("verificationStatus");
    o.remove("category");
    let r = fhir.post("/Condition", &bare, &[]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(content(&r.body), bare);
    let bid = r.body["id"].as_str().unwrap().to_owned();
    let (_, _, api) = api_get(&app, &format!("/api/v1/conditions/{bid}")).await;
    assert!(api.get("onset").is_none(), "{api}");
    assert_eq!(api["clinical_status"], "active");
    // Once the JSON API confirms it, FHIR shows the verification status.
    assert_eq!(
        set_status(
            &app,
            &format!("/api/v1/conditions/{bid}/set-status"),
            "1",
            &json!({"verification_status": "confirmed"}),
        )
        .await,
        200
    );
    let read = fhir.get(&format!("/Condition/{bid}")).await;
    assert_eq!(
        read.body["verificationStatus"],
        coded(VERIFICATION, "confirmed")
    );
    assert!(read.body.get("clinicalStatus").is_none());

    // /api/v1 → FHIR: a condition recorded through the JSON API.
    let r = app
        .post(
            "/api/v1/conditions",
            &app.token,
            &json!({"patient_id": pid, "code": {"system": SCT, "code": "38341003", "display": "Hypertension"},
                    "verification_status": "confirmed", "onset": "2020-01-02T03:04:05Z"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let cid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let f = fhir.get(&format!("/Condition/{cid}")).await;
    assert_eq!(f.status, 200, "{}", f.body);
    assert_eq!(f.body["meta"]["versionId"], "1");
    assert_eq!(f.body["subject"]["reference"], format!("Patient/{pid}"));
    assert_eq!(f.body["clinicalStatus"], coded(CLINICAL, "active"));
    assert_eq!(f.body["onsetDateTime"], "2020-01-02T03:04:05Z");
    fhir.validate_all();
}

async fn allergies_map_both_ways_and_a_delete_enters_them_in_error(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let pid = a_patient(&app, "A-1", "Allergic").await;
    let sent = peanut(&format!("Patient/{pid}"));
    let created = fhir.post("/AllergyIntolerance", &sent, &[]).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(content(&created.body), sent);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let (_, etag, api) = api_get(&app, &format!("/api/v1/allergies/{id}")).await;
    assert_eq!(etag, "\"1\"");
    assert_eq!(api["category"], "food");
    assert_eq!(api["criticality"], "unable_to_assess");
    assert_eq!(api["onset"], "2010-04-01");

    // A FHIR update: resolved, with a last occurrence kept (version 2, both APIs).
    let mut up = created.body.clone();
    up["clinicalStatus"] = coded(A_CLINICAL, "resolved");
    up["lastOccurrence"] = json!("2015-03-01");
    let r = fhir
        .put(&format!("/AllergyIntolerance/{id}"), &up, &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("etag"), "W/\"2\"");
    assert_eq!(r.body["lastOccurrence"], "2015-03-01");
    let (_, etag, api) = api_get(&app, &format!("/api/v1/allergies/{id}")).await;
    assert_eq!(etag, "\"2\"");
    assert_eq!(api["clinical_status"], "resolved");
    // The criticality and the category cannot change.
    let mut bad = r.body.clone();
    bad["criticality"] = json!("high");
    let (_, at) = fhir
        .put(&format!("/AllergyIntolerance/{id}"), &bad, &[])
        .await
        .outcome(422);
    assert_eq!(at, "AllergyIntolerance.criticality");
    let mut bad = r.body.clone();
    bad["category"] = json!(["food"]);
    let (_, at) = fhir
        .put(&format!("/AllergyIntolerance/{id}"), &bad, &[])
        .await
        .outcome(422);
    assert_eq!(at, "AllergyIntolerance.category");

    // A delete enters it in error: version 3, no clinical status (ait-2), nothing more.
    let d = fhir
        .send(
            Method::DELETE,
            &format!("/AllergyIntolerance/{id}"),
            Some(&app.token),
            None,
            &[],
        )
        .await;
    assert_eq!(d.status, 204, "{}", d.body);
    let read = fhir.get(&format!("/AllergyIntolerance/{id}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["meta"]["versionId"], "3");
    assert!(read.body.get("clinicalStatus").is_none(), "{}", read.body);
    assert_eq!(
        read.body["verificationStatus"],
        coded(A_VERIFICATION, "entered-in-error")
    );
    let (_, _, api) = api_get(&app, &format!("/api/v1/allergies/{id}")).await;
    assert_eq!(api["verification_status"], "entered_in_error");
    let mut back = read.body.clone();
    back.as_object_mut().unwrap().remove("meta");
    back["verificationStatus"] = coded(A_VERIFICATION, "confirmed");
    back["clinicalStatus"] = coded(A_CLINICAL, "active");
    let refused = fhir
        .put(&format!("/AllergyIntolerance/{id}"), &back, &[])
        .await;
    assert!(
        refused.status == 409 || refused.status == 422,
        "{}",
        refused.body
    );

    // /api/v1 → FHIR and back: recorded through the JSON API, revised through FHIR.
    let r = app
        .post(
            "/api/v1/allergies",
            &app.token,
            &json!({"patient_id": pid, "code": {"system": "urn:local:allergen", "code": "penicillin"},
                    "category": "medication", "criticality": "high", "note": "hives"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let aid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let f = fhir.get(&format!("/AllergyIntolerance/{aid}")).await;
    assert_eq!(f.status, 200, "{}", f.body);
    assert_eq!(f.body["category"], json!(["medication"]));
    assert_eq!(f.body["criticality"], "high");
    assert_eq!(f.body["note"], json!([{"text": "hives"}]));
    assert_eq!(
        f.body["verificationStatus"],
        coded(A_VERIFICATION, "unconfirmed")
    );
    let mut up = f.body.clone();
    up["verificationStatus"] = coded(A_VERIFICATION, "confirmed");
    let r = fhir
        .put(
            &format!("/AllergyIntolerance/{aid}"),
            &up,
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, etag, api) = api_get(&app, &format!("/api/v1/allergies/{aid}")).await;
    assert_eq!(etag, "\"2\"");
    assert_eq!(api["verification_status"], "confirmed");
    fhir.validate_all();
}

async fn conditions_and_allergies_are_found_by_their_r4_parameters(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let ada = a_patient(&app, "S-1", "Lovelace").await;
    let bob = a_patient(&app, "S-2", "Babbage").await;
    let post = |path: &'static str, body: Value| {
        let fhir = &fhir;
        async move {
            let r = fhir.post(path, &body, &[]).await;
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["id"].as_str().unwrap().to_owned()
        }
    };
    let c1 = post(
        "/Condition",
        diabetes(&format!("Patient/{ada}"), "2019-05-03"),
    )
    .await;
    let mut hyp = diabetes(&format!("Patient/{bob}"), "2021-07-01");
    hyp["code"] = json!({"coding": [{"system": SCT, "code": "38341003"}]});
    hyp["clinicalStatus"] = coded(CLINICAL, "resolved");
    hyp["abatementDateTime"] = json!("2022-01-01");
    let c2 = post("/Condition", hyp).await;
    let a1 = post("/AllergyIntolerance", peanut(&format!("Patient/{ada}"))).await;
    let mut pen = peanut(&format!("Patient/{bob}"));
    pen["code"] = json!({"coding": [{"system": "urn:local:allergen", "code": "penicillin"}]});
    pen["category"] = json!(["medication"]);
    pen["criticality"] = json!("high");
    let a2 = post("/AllergyIntolerance", pen).await;
    let q = |path: String| {
        let fhir = &fhir;
        async move {
            let r = fhir.get(&path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            let mut v = ids(&r.body);
            v.sort();
            v
        }
    };
    let one = |s: &str| vec![s.to_owned()];
    assert_eq!(q(format!("/Condition?code={SCT}|44054006")).await, one(&c1));
    assert_eq!(q("/Condition?code=38341003".into()).await, one(&c2));
    assert_eq!(
        q("/Condition?clinical-status=resolved".into()).await,
        one(&c2)
    );
    assert_eq!(
        q(format!("/Condition?clinical-status={CLINICAL}|active")).await,
        one(&c1)
    );
    assert_eq!(
        q(format!("/Condition?subject=Patient/{ada}")).await,
        one(&c1)
    );
    assert_eq!(q(format!("/Condition?patient={bob}")).await, one(&c2));
    assert_eq!(q("/Condition?onset-date=lt2020".into()).await, one(&c1));
    assert_eq!(
        q("/Condition?onset-date=ge2021-07-01".into()).await,
        one(&c2)
    );
    assert_eq!(q("/Condition?abatement-date=2022".into()).await, one(&c2));
    assert_eq!(
        q("/Condition?category=problem-list-item".into())
            .await
            .len(),
        2
    );
    assert_eq!(
        q("/Condition?subject:Patient.family=Lovelace".into()).await,
        one(&c1)
    );
    assert_eq!(
        q("/AllergyIntolerance?category=food".into()).await,
        one(&a1)
    );
    assert_eq!(
        q("/AllergyIntolerance?category=medication".into())
            .await
            .len(),
        2
    );
    assert_eq!(
        q("/AllergyIntolerance?criticality=high".into()).await,
        one(&a2)
    );
    assert_eq!(
        q("/AllergyIntolerance?criticality=unable-to-assess".into()).await,
        one(&a1)
    );
    assert_eq!(
        q(format!("/AllergyIntolerance?patient={ada}")).await,
        one(&a1)
    );
    assert_eq!(
        q("/AllergyIntolerance?code=penicillin".into()).await,
        one(&a2)
    );
    assert_eq!(
        q("/AllergyIntolerance?clinical-status=active".into())
            .await
            .len(),
        2
    );
    assert_eq!(
        q("/AllergyIntolerance?date=2011-01-01".into()).await.len(),
        2
    );
    // A status changed through the JSON API is found by its new value.
    assert_eq!(
        set_status(
            &app,
            &format!("/api/v1/allergies/{a2}/set-status"),
            "1",
            &json!({"clinical_status": "inactive"}),
        )
        .await,
        200
    );
    assert_eq!(
        q("/AllergyIntolerance?clinical-status=inactive".into()).await,
        one(&a2)
    );
    assert_eq!(
        q("/AllergyIntolerance?verification-status=confirmed".into())
            .await
            .len(),
        2
    );
    fhir.validate_all();
}

async fn a_transaction_records_a_patient_with_a_condition_and_an_allergy(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let pat = "urn:uuid:0b0c2f52-5a8e-4bb4-9d0e-00000000c001";
    let tx = |condition: Value, mrn: &str| {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:0b0c2f52-5a8e-4bb4-9d0e-00000000c002", "resource": condition, "request": {"method": "POST", "url": "Condition"}},
            {"fullUrl": "urn:uuid:0b0c2f52-5a8e-4bb4-9d0e-00000000c003", "resource": peanut(pat), "request": {"method": "POST", "url": "AllergyIntolerance"}},
            {"fullUrl": pat, "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": mrn}],
                "name": [{"family": "Bundled", "given": ["Tess"]}], "gender": "female", "birthDate": "1970-02-03"},
             "request": {"method": "POST", "url": "Patient"}},
        ]})
    };
    let r = fhir
        .post("", &tx(diabetes(pat, "2019-05-03"), "TXS-1"), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let loc = |i: usize| {
        r.body["entry"][i]["response"]["location"]
            .as_str()
            .unwrap()
            .split('/')
            .take(2)
            .collect::<Vec<_>>()
            .join("/")
    };
    let (cond, allergy, pid) = (loc(0), loc(1), loc(2));
    assert!(cond.starts_with("Condition/"), "{cond}");
    assert!(allergy.starts_with("AllergyIntolerance/"), "{allergy}");
    let pid = pid.strip_prefix("Patient/").unwrap().to_owned();
    let cid = cond.strip_prefix("Condition/").unwrap();
    let aid = allergy.strip_prefix("AllergyIntolerance/").unwrap();
    let (status, _, api) = api_get(&app, &format!("/api/v1/conditions/{cid}")).await;
    assert_eq!(status, 200);
    assert_eq!(api["patient_id"], pid.as_str());
    let (_, _, api) = api_get(&app, &format!("/api/v1/allergies/{aid}")).await;
    assert_eq!(api["patient_id"], pid.as_str());
    let f = fhir.get(&format!("/{allergy}")).await;
    assert_eq!(content(&f.body), peanut(&format!("Patient/{pid}")));
    // One refused entry and nothing is written, the patient included.
    let mut bad = diabetes(pat, "2019-05-03");
    bad["code"]["coding"][0]["code"] = json!("44054007");
    let r = fhir.post("", &tx(bad, "TXS-2"), &[]).await;
    let (_, at) = r.outcome(422);
    assert_eq!(at, "Condition.code.coding[0].code", "{}", r.body);
    let r = fhir.get("/Patient?identifier=urn:mrn|TXS-2").await;
    assert!(ids(&r.body).is_empty());
    // A batch deletes through the aggregate.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Condition?patient={pid}")}},
        {"request": {"method": "DELETE", "url": cond}},
    ]});
    let r = fhir.post("", &batch, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["entry"][1]["response"]["status"], "204 No Content");
    let (_, _, api) = api_get(&app, &format!("/api/v1/conditions/{cid}")).await;
    assert_eq!(api["verification_status"], "entered_in_error");
    fhir.validate_all();
}

async fn statement_errors_name_the_element(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let pid = a_patient(&app, "E-1", "Err").await;
    let subject = format!("Patient/{pid}");
    let cond = diabetes(&subject, "2019-05-03");
    let allergy = peanut(&subject);
    let with = |base: &Value, f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        v
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/Condition",
            with(&cond, &|v| {
                v["code"]["coding"][0]["code"] = json!("44054007")
            }),
            "Condition.code.coding[0].code",
        ),
        (
            "/Condition",
            with(&cond, &|v| {
                v.as_object_mut().unwrap().remove("code");
            }),
            "Condition.code",
        ),
        (
            "/Condition",
            with(&cond, &|v| v["clinicalStatus"] = coded(CLINICAL, "cured")),
            "Condition.clinicalStatus",
        ),
        (
            "/Condition",
            with(&cond, &|v| {
                v["clinicalStatus"] = coded("urn:local:status", "active")
            }),
            "Condition.clinicalStatus.coding",
        ),
        (
            "/Condition",
            with(&cond, &|v| {
                v["verificationStatus"] = coded(VERIFICATION, "entered-in-error")
            }),
            "Condition.clinicalStatus",
        ),
        (
            "/Condition",
            with(&cond, &|v| v["onsetDateTime"] = json!("2099-01-01")),
            "Condition.onset[x]",
        ),
        (
            "/Condition",
            with(&cond, &|v| v["subject"] = json!({"reference": "Group/1"})),
            "Condition.subject.reference",
        ),
        (
            "/Condition",
            with(
                &cond,
                &|v| {
                    v["subject"] = json!({"reference": format!("Patient/{}", uuid::Uuid::now_v7())})
                },
            ),
            "Condition.subject",
        ),
        (
            "/AllergyIntolerance",
            with(&allergy, &|v| {
                v.as_object_mut().unwrap().remove("clinicalStatus");
            }),
            "AllergyIntolerance.clinicalStatus",
        ),
        (
            "/AllergyIntolerance",
            with(&allergy, &|v| {
                v["verificationStatus"] = coded(A_VERIFICATION, "presumed-ish")
            }),
            "AllergyIntolerance.verificationStatus",
        ),
    ];
    for (path, body, at) in cases {
        let r = fhir.post(path, &body, &[]).await;
        let (_, got) = r.outcome(422);
        assert_eq!(got, at, "{}", r.body);
    }
    // What the domain cannot hold as a value is kept, not refused: an onset as an age.
    let mut aged = with(&allergy, &|v| {
        v.as_object_mut().unwrap().remove("onsetDateTime");
    });
    aged["onsetAge"] =
        json!({"value": 4, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"});
    let r = fhir.post("/AllergyIntolerance", &aged, &[]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(content(&r.body), aged);
    fhir.validate_all();
}

async fn a_patient_context_token_sees_only_its_patients_statements(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let ada = a_patient(&app, "PC-1", "Own").await;
    let bob = a_patient(&app, "PC-2", "Other").await;
    let mine = fhir
        .post(
            "/AllergyIntolerance",
            &peanut(&format!("Patient/{ada}")),
            &[],
        )
        .await;
    let theirs = fhir
        .post(
            "/AllergyIntolerance",
            &peanut(&format!("Patient/{bob}")),
            &[],
        )
        .await;
    let their_condition = fhir
        .post(
            "/Condition",
            &diabetes(&format!("Patient/{bob}"), "2019-05-03"),
            &[],
        )
        .await;
    assert_eq!(their_condition.status, 201, "{}", their_condition.body);
    let token = app.patient_token("viewer-s", "patient/*.read", &ada).await;
    let get = |path: String| {
        let fhir = &fhir;
        let token = token.clone();
        async move { fhir.send(Method::GET, &path, Some(&token), None, &[]).await }
    };
    let r = get("/AllergyIntolerance?code=91935009".into()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        ids(&r.body),
        vec![mine.body["id"].as_str().unwrap().to_owned()]
    );
    let r = get("/Condition".into()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(ids(&r.body).is_empty(), "{}", r.body);
    get(format!(
        "/AllergyIntolerance/{}",
        theirs.body["id"].as_str().unwrap()
    ))
    .await
    .outcome(404);
    get(format!(
        "/Condition/{}",
        their_condition.body["id"].as_str().unwrap()
    ))
    .await
    .outcome(404);
    let w = fhir
        .send(
            Method::POST,
            "/Condition",
            Some(&token),
            Some(&diabetes(&format!("Patient/{ada}"), "2019-05-03")),
            &[],
        )
        .await;
    w.outcome(403);
    fhir.validate_all();
}

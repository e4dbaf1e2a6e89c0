//! FHIR resource types that Salus keeps as documents, over real HTTP on both backends:
//! create, read, vread, update (and create-on-update), patch, delete as a tombstone,
//! history; search on each parameter type with prefixes and modifiers, chains, paging and
//! POST `_search`; a patient-context token confined to its patient; every resource answered
//! validated by `fhir.resources`.

use crate::app::{TestApp, on_both_backends};
use crate::fhir::{Fhir, a_patient, ids, next_link};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    documents_are_created_read_updated_patched_deleted_with_history,
    documents_are_found_by_every_parameter_type,
    a_patient_context_token_sees_only_its_patients_documents,
    a_client_chosen_id_is_each_tenants_own,
);

fn immunization(patient: &str, vaccine: &str, date: &str) -> Value {
    json!({
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": vaccine}], "text": format!("vaccine {vaccine}")},
        "patient": {"reference": format!("Patient/{patient}")},
        "occurrenceDateTime": date,
        "lotNumber": format!("LOT-{vaccine}")
    })
}

async fn documents_are_created_read_updated_patched_deleted_with_history(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let pid = a_patient(&app, "D-1", "Doc").await;

    let created = fhir
        .post(
            "/Immunization",
            &immunization(&pid, "207", "2024-01-05"),
            &[],
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.header("etag"), "W/\"1\"");
    assert!(
        created
            .header("location")
            .ends_with(&format!("/fhir/R4/Immunization/{id}/_history/1"))
    );
    assert_eq!(created.body["meta"]["versionId"], "1");
    assert_eq!(created.body["lotNumber"], "LOT-207", "kept whole");

    let read = fhir.get(&format!("/Immunization/{id}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body, created.body);
    assert!(!read.header("last-modified").is_empty());

    // Update with If-Match; a stale one is refused.
    let mut changed = read.body.clone();
    changed["lotNumber"] = json!("LOT-207-B");
    let up = fhir
        .put(
            &format!("/Immunization/{id}"),
            &changed,
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(up.status, 200, "{}", up.body);
    assert_eq!(up.header("etag"), "W/\"2\"");
    let stale = fhir
        .put(
            &format!("/Immunization/{id}"),
            &changed,
            &[("if-match", "W/\"1\"")],
        )
        .await;
    stale.outcome(412);
    // The same content again is no new version.
    let same = fhir
        .put(&format!("/Immunization/{id}"), &changed, &[])
        .await;
    assert_eq!(same.header("etag"), "W/\"2\"");

    // JSON Patch.
    let patch = json!([{"op": "replace", "path": "/lotNumber", "value": "LOT-P"}]);
    let r = fhir
        .send(
            Method::PATCH,
            &format!("/Immunization/{id}"),
            Some(&app.token),
            None,
            &[],
        )
        .await;
    assert_ne!(r.status, 200, "a patch needs a body");
    let patched = app
        .client
        .patch(app.url(&format!("/fhir/R4/Immunization/{id}")))
        .bearer_auth(&app.token)
        .header("content-type", "application/json-patch+json")
        .header("if-match", "W/\"2\"")
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["lotNumber"], "LOT-P");
    assert_eq!(patched["meta"]["versionId"], "3");
    fhir.seen.lock().unwrap().push(patched.clone());
    let bad_patch = app
        .client
        .patch(app.url(&format!("/fhir/R4/Immunization/{id}")))
        .bearer_auth(&app.token)
        .header("content-type", "application/json-patch+json")
        .body(json!([{"op": "add", "path": "/notAnElement", "value": 1}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(bad_patch.status(), 422, "the patched resource is validated");

    let found = fhir.get(&format!("/Immunization?patient={pid}")).await;
    assert_eq!(ids(&found.body), vec![id.clone()]);

    // vread of an old version.
    let v1 = fhir.get(&format!("/Immunization/{id}/_history/1")).await;
    assert_eq!(v1.status, 200);
    assert_eq!(v1.body["lotNumber"], "LOT-207");
    fhir.get(&format!("/Immunization/{id}/_history/9"))
        .await
        .outcome(404);

    // Delete: a tombstone version; reads say Gone, history keeps everything.
    let del = fhir
        .send(
            Method::DELETE,
            &format!("/Immunization/{id}"),
            Some(&app.token),
            None,
            &[],
        )
        .await;
    assert_eq!(del.status, 204);
    fhir.get(&format!("/Immunization/{id}")).await.outcome(410);
    let again = fhir
        .send(
            Method::DELETE,
            &format!("/Immunization/{id}"),
            Some(&app.token),
            None,
            &[],
        )
        .await;
    assert_eq!(again.status, 204, "deleting twice is fine");
    let hist = fhir.get(&format!("/Immunization/{id}/_history")).await;
    assert_eq!(hist.status, 200);
    let methods: Vec<&str> = hist.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["request"]["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["DELETE", "PUT", "PUT", "POST"], "newest first");
    let search = fhir.get(&format!("/Immunization?_id={id}")).await;
    assert!(
        ids(&search.body).is_empty(),
        "a deleted resource is not found"
    );

    // Create-on-update with the client's id; then it reads back under that id.
    let mut mine = immunization(&pid, "140", "2023-10-01");
    mine["id"] = json!("flu-2023");
    let r = fhir.put("/Immunization/flu-2023", &mine, &[]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["id"], "flu-2023");
    let r = fhir.get("/Immunization/flu-2023").await;
    assert_eq!(r.status, 200);
    // The same client id on another type is another resource.
    fhir.get("/Goal/flu-2023").await.outcome(404);

    // Client mistakes are OperationOutcomes with the right status.
    let (code, path) = fhir
        .post(
            "/Immunization",
            &json!({"resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": "x"}, "patient": {"reference": "Patient/1"}, "occurrenceDateTime": "2024", "bogus": 1}),
            &[],
        )
        .await
        .outcome(422);
    assert_eq!(
        (code.as_str(), path.as_str()),
        ("structure", "Immunization.bogus")
    );
    let (code, _) = fhir
        .post("/Immunization", &json!({"resourceType": "Goal"}), &[])
        .await
        .outcome(400);
    assert_eq!(code, "invalid");
    fhir.get("/NotAType/1").await.outcome(404);
    fhir.get("/Immunization/nope").await.outcome(404);
    let mut wrong = mine.clone();
    wrong["id"] = json!("other");
    fhir.put("/Immunization/flu-2023", &wrong, &[])
        .await
        .outcome(400);

    // Every read of the patient's documents was logged.
    let log = app
        .get(
            &format!("/api/v1/audit/access?patient_id={pid}"),
            &app.token,
        )
        .await;
    let log: Value = log.json().await.unwrap();
    let kinds: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource_type"] == "fhir_document")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"read") && kinds.contains(&"search"),
        "{log}"
    );
    fhir.validate_all();
}

async fn documents_are_found_by_every_parameter_type(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let ada = a_patient(&app, "S-1", "Lovelace").await;
    let bob = a_patient(&app, "S-2", "Babbage").await;
    let mut imm = Vec::new();
    for (p, vaccine, date) in [
        (&ada, "207", "2024-01-05T10:00:00Z"),
        (&ada, "140", "2023-10-01"),
        (&bob, "207", "2024-02-10"),
        (&bob, "08", "1999"),
    ] {
        let r = fhir
            .post("/Immunization", &immunization(p, vaccine, date), &[])
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        imm.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let q = |query: &str| {
        let fhir = &fhir;
        let query = query.to_owned();
        async move {
            let r = fhir.get(&format!("/Immunization?{query}")).await;
            assert_eq!(r.status, 200, "{query}: {}", r.body);
            let mut got = ids(&r.body);
            got.sort();
            got
        }
    };
    let want = |idx: &[usize]| {
        let mut v: Vec<String> = idx.iter().map(|i| imm[*i].clone()).collect();
        v.sort();
        v
    };
    // token
    assert_eq!(q("vaccine-code=207").await, want(&[0, 2]));
    assert_eq!(
        q("vaccine-code=http://hl7.org/fhir/sid/cvx|140").await,
        want(&[1])
    );
    assert_eq!(q("vaccine-code=140,08").await, want(&[1, 3]));
    assert_eq!(q("vaccine-code:not=207").await, want(&[1, 3]));
    assert_eq!(q("status=completed").await, want(&[0, 1, 2, 3]));
    // reference, bare and typed, and a chain through Patient
    assert_eq!(q(&format!("patient={ada}")).await, want(&[0, 1]));
    assert_eq!(q(&format!("patient=Patient/{bob}")).await, want(&[2, 3]));
    assert_eq!(q("patient.family=babb").await, want(&[2, 3]));
    assert_eq!(q("patient:Patient.identifier=S-1").await, want(&[0, 1]));
    // date with prefixes
    assert_eq!(q("date=2024").await, want(&[0, 2]));
    assert_eq!(q("date=ge2024-01-06").await, want(&[2]));
    assert_eq!(q("date=lt2000").await, want(&[3]));
    assert_eq!(q("date=2024-01-05").await, want(&[0]));
    assert_eq!(q("date=ne2024-01-05").await, want(&[1, 2, 3]));
    // string (lot-number is a string parameter): starts-with, contains, exact
    assert_eq!(q("lot-number=lot-2").await, want(&[0, 2]));
    assert_eq!(q("lot-number:contains=-14").await, want(&[1]));
    assert_eq!(q("lot-number:exact=LOT-08").await, want(&[3]));
    assert!(q("lot-number:exact=lot-08").await.is_empty());
    // missing
    assert_eq!(q("reason-code:missing=true").await, want(&[0, 1, 2, 3]));
    assert!(q("patient:missing=true").await.is_empty());
    // several parameters together
    assert_eq!(
        q(&format!("patient={ada}&vaccine-code=207")).await,
        want(&[0])
    );
    // _id and _lastUpdated
    assert_eq!(q(&format!("_id={}", imm[1])).await, want(&[1]));
    assert_eq!(q("_lastUpdated=gt2000").await, want(&[0, 1, 2, 3]));

    // number and quantity and uri on other types
    for (p, prob) in [(0.2, "low"), (0.75, "high")] {
        let r = fhir
            .post(
                "/RiskAssessment",
                &json!({"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": format!("Patient/{ada}")},
                        "prediction": [{"probabilityDecimal": p, "qualitativeRisk": {"text": prob}}]}),
                &[],
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = fhir.get("/RiskAssessment?probability=gt0.5").await;
    assert_eq!(ids(&r.body).len(), 1);
    assert_eq!(
        r.body["entry"][0]["resource"]["prediction"][0]["probabilityDecimal"],
        0.75
    );
    let r = fhir.get("/RiskAssessment?probability=0.2").await;
    assert_eq!(ids(&r.body).len(), 1);
    let r = fhir
        .post(
            "/Substance",
            &json!({"resourceType": "Substance", "code": {"text": "saline"},
                    "instance": [{"quantity": {"value": 500, "unit": "mL", "system": "http://unitsofmeasure.org", "code": "mL"}}]}),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    for (query, n) in [
        ("quantity=500", 1),
        ("quantity=500|http://unitsofmeasure.org|mL", 1),
        ("quantity=500||mL", 1),
        ("quantity=500||L", 0),
        ("quantity=gt600", 0),
        ("quantity=le500", 1),
    ] {
        let r = fhir.get(&format!("/Substance?{query}")).await;
        assert_eq!(ids(&r.body).len(), n, "{query}");
    }
    let r = fhir
        .post(
            "/ValueSet",
            &json!({"resourceType": "ValueSet", "status": "active", "url": "http://example.org/fhir/ValueSet/colours"}),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = fhir
        .get("/ValueSet?url=http://example.org/fhir/ValueSet/colours")
        .await;
    assert_eq!(ids(&r.body).len(), 1);
    let r = fhir
        .get("/ValueSet?url:below=http://example.org/fhir")
        .await;
    assert_eq!(ids(&r.body).len(), 1);

    // Paging with _count and next links: every match once.
    let mut seen = Vec::new();
    let mut page = fhir.get("/Immunization?status=completed&_count=3").await;
    loop {
        seen.extend(ids(&page.body));
        match next_link(&page.body) {
            Some(next) => page = fhir.get(&next).await,
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, want(&[0, 1, 2, 3]));

    // POST _search with a form body.
    let r = app
        .client
        .post(app.url("/fhir/R4/Immunization/_search"))
        .bearer_auth(&app.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("vaccine-code=207&patient.family=Lovelace")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(ids(&b), vec![imm[0].clone()]);

    // Unknown parameters: ignored (with a warning) or refused under handling=strict; an
    // unknown modifier or a malformed value always refused.
    let r = fhir.get("/Immunization?nonsense=1&status=completed").await;
    assert_eq!(ids(&r.body).len(), 4);
    let strict = fhir
        .send(
            Method::GET,
            "/Immunization?nonsense=1",
            Some(&app.token),
            None,
            &[("prefer", "handling=strict")],
        )
        .await;
    strict.outcome(400);
    fhir.get("/Immunization?status:fuzzy=x").await.outcome(400);
    fhir.get("/Immunization?date=yesterday").await.outcome(400);
    fhir.get("/Immunization?_count=0").await.outcome(400);

    // composite: a Group's characteristic is found by its code and value together, never
    // by the code of one characteristic and the value of another.
    let group = |code: &str, value: &str| {
        json!({"resourceType": "Group", "type": "person", "actual": false,
        "characteristic": [
            {"code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
             "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": value}]},
             "exclude": false},
            {"code": {"coding": [{"system": "http://snomed.info/sct", "code": "263495000"}]},
             "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "248152002"}]},
             "exclude": false}
        ]})
    };
    let g1 = fhir
        .post("/Group", &group("73211009", "373066001"), &[])
        .await;
    assert_eq!(g1.status, 201, "{}", g1.body);
    let g2 = fhir
        .post("/Group", &group("38341003", "373067005"), &[])
        .await;
    assert_eq!(g2.status, 201, "{}", g2.body);
    let groups = |query: &str| {
        let fhir = &fhir;
        let query = query.to_owned();
        async move {
            let r = fhir.get(&format!("/Group?{query}")).await;
            assert_eq!(r.status, 200, "{query}: {}", r.body);
            let mut got = ids(&r.body);
            got.sort();
            got
        }
    };
    let (g1, g2) = (
        g1.body["id"].as_str().unwrap().to_owned(),
        g2.body["id"].as_str().unwrap().to_owned(),
    );
    assert_eq!(
        groups("characteristic-value=http://snomed.info/sct|73211009$373066001").await,
        vec![g1.clone()]
    );
    assert_eq!(
        groups("characteristic-value=73211009$373067005").await,
        Vec::<String>::new()
    );
    let mut both = vec![g1.clone(), g2.clone()];
    both.sort();
    assert_eq!(
        groups("characteristic-value=263495000$248152002").await,
        both
    );
    assert_eq!(
        groups("characteristic-value=73211009$373066001,38341003$373067005").await,
        both
    );
    fhir.get("/Group?characteristic-value=73211009")
        .await
        .outcome(400);

    // :text, :of-type, :identifier.
    assert_eq!(q("vaccine-code:text=Vaccine 20").await, want(&[0, 2]));
    assert_eq!(q("vaccine-code:text=207").await, Vec::<String>::new());
    let v2 = "http://terminology.hl7.org/CodeSystem/v2-0203";
    let mut logical = immunization(&ada, "33", "2024-04-01");
    logical["patient"] = json!({"identifier": {"system": "urn:mrn", "value": "S-1"}});
    logical["identifier"] = json!([{"type": {"coding": [{"system": v2, "code": "FILL"}]}, "system": "urn:fills", "value": "F-1"}]);
    let r = fhir.post("/Immunization", &logical, &[]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let logical = vec![r.body["id"].as_str().unwrap().to_owned()];
    assert_eq!(q("patient:identifier=urn:mrn|S-1").await, logical);
    assert_eq!(
        q("patient:identifier=urn:mrn|S-2").await,
        Vec::<String>::new()
    );
    assert_eq!(
        q(&format!("identifier:of-type={v2}|FILL|F-1")).await,
        logical
    );
    assert_eq!(
        q(&format!("identifier:of-type={v2}|PLAC|F-1")).await,
        Vec::<String>::new()
    );
    fhir.get("/Immunization?identifier:of-type=F-1")
        .await
        .outcome(400);
    fhir.validate_all();
}

async fn a_patient_context_token_sees_only_its_patients_documents(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let ada = a_patient(&app, "P-1", "Own").await;
    let bob = a_patient(&app, "P-2", "Other").await;
    let mine = fhir
        .post(
            "/Immunization",
            &immunization(&ada, "207", "2024-01-05"),
            &[],
        )
        .await;
    let theirs = fhir
        .post(
            "/Immunization",
            &immunization(&bob, "207", "2024-01-06"),
            &[],
        )
        .await;
    let running = app.running.as_ref().unwrap();
    let viewer = app.token_for("viewer-1", &["viewer"]).await;
    let claims: Value = {
        let payload = viewer.split('.').nth(1).unwrap();
        use base64::Engine;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    let uid = uuid::Uuid::parse_str(claims["sub"].as_str().unwrap()).unwrap();
    let token = running
        .auth
        .issue_limited(
            uid,
            app.tenant,
            Duration::from_secs(600),
            salus_api::auth::TokenLimits {
                scope: Some("patient/*.read".into()),
                patient: Some(uuid::Uuid::parse_str(&ada).unwrap()),
            },
        )
        .unwrap();
    let as_patient = |path: String| {
        let fhir = &fhir;
        let token = token.clone();
        async move { fhir.send(Method::GET, &path, Some(&token), None, &[]).await }
    };
    let r = as_patient("/Immunization?vaccine-code=207".into()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        ids(&r.body),
        vec![mine.body["id"].as_str().unwrap().to_owned()]
    );
    let r = as_patient(format!(
        "/Immunization/{}",
        theirs.body["id"].as_str().unwrap()
    ))
    .await;
    r.outcome(404);
    let r = as_patient(format!(
        "/Immunization/{}",
        mine.body["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(r.status, 200);
    // Read-only: a patient-context read token writes nothing.
    let w = fhir
        .send(
            Method::POST,
            "/Immunization",
            Some(&token),
            Some(&immunization(&ada, "140", "2024-02-01")),
            &[],
        )
        .await;
    w.outcome(403);
    fhir.validate_all();
}

/// Two tenants may each create `Account/shared` by an update (the id is the client's):
/// neither sees, blocks or learns of the other's.
async fn a_client_chosen_id_is_each_tenants_own(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let other = app.other_tenant("second").await;
    let account = |name: &str| json!({"resourceType": "Account", "id": "shared", "status": "active", "name": name});
    let a = fhir.put("/Account/shared", &account("first's"), &[]).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let b = fhir
        .send(
            Method::PUT,
            "/Account/shared",
            Some(&other),
            Some(&account("second's")),
            &[],
        )
        .await;
    assert_eq!(b.status, 201, "{}", b.body);
    assert_eq!(b.header("etag"), "W/\"1\"");
    let read = fhir
        .send(Method::GET, "/Account/shared", Some(&other), None, &[])
        .await;
    assert_eq!(read.body["name"], "second's");
    let read = fhir.get("/Account/shared").await;
    assert_eq!(read.body["name"], "first's");
    assert_eq!(read.header("etag"), "W/\"1\"");
    // In a transaction too.
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Account", "id": "tx-shared", "status": "active", "name": "mine"},
         "request": {"method": "PUT", "url": "Account/tx-shared"}},
    ]});
    let r = fhir.post("", &tx, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = fhir
        .send(Method::POST, "", Some(&other), Some(&tx), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["entry"][0]["response"]["status"].as_str().unwrap()[..3],
        *"201"
    );
    fhir.validate_all();
    app.stop().await;
}

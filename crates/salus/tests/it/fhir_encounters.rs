//! FHIR Encounter and Procedure, served by the clinical Encounter and Procedure
//! aggregates, over real HTTP on both backends: a write through FHIR is read through
//! `/api/v1` at the same version and the other way round; status changes through a FHIR
//! update follow the domain's transitions; search on the types' R4 parameters; history;
//! elements Salus does not model read back as sent; errors name the element; a
//! transaction creates a patient with an encounter and a procedure; a patient-context
//! token sees only its patient's; every resource answered is validated by `fhir.resources`.

use crate::app::{TestApp, on_both_backends};
use crate::fhir::{Fhir, a_patient, api_get, content, ids};
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    encounters_map_both_ways_and_move_through_the_domain_transitions,
    procedures_map_both_ways_and_a_delete_enters_them_in_error,
    encounters_and_procedures_are_found_by_their_r4_parameters,
    a_transaction_records_a_patient_with_an_encounter_and_a_procedure,
    a_transaction_names_the_practitioner_and_organization_it_creates,
    a_patient_context_token_sees_only_its_patients_encounters,
);

const SCT: &str = "http://snomed.info/sct";
const ACT: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const ARCHIVED: &str = "urn:salus:fhir:extension:encounter-archived";

async fn a_clinician(app: &TestApp, credential: &str) -> String {
    let clin = json!({"family": "Quinn", "given": ["Mia"], "credential": credential, "specialty": "Family medicine", "org_unit": "Clinic A"});
    let r = app.post("/api/v1/clinicians", &app.token, &clin).await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A finished outpatient visit with elements Salus does not model.
fn visit(patient: &str, clinician: &str) -> Value {
    json!({
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": ACT, "code": "AMB", "display": "ambulatory"},
        "type": [{"coding": [{"system": SCT, "code": "185349003", "display": "Encounter for check up"}], "text": "Check up"}],
        "subject": {"reference": format!("Patient/{patient}")},
        "participant": [{"type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "ATND"}]}],
                         "individual": {"reference": format!("Practitioner/{clinician}"), "display": "Dr Quinn"}}],
        "period": {"start": "2024-05-01T10:00:00Z", "end": "2024-05-01T10:30:00Z"},
        "reasonCode": [{"text": "annual review"}],
        "location": [{"location": {"display": "Room 4"}}],
    })
}

fn appendectomy(patient: &str, clinician: &str, encounter: Option<&str>) -> Value {
    let mut r = json!({
        "resourceType": "Procedure",
        "status": "completed",
        "category": {"coding": [{"system": SCT, "code": "387713003", "display": "Surgical procedure"}]},
        "code": {"coding": [{"system": SCT, "code": "80146002", "display": "Appendectomy"}], "text": "Appendectomy"},
        "subject": {"reference": format!("Patient/{patient}")},
        "performedPeriod": {"start": "2024-05-01T10:05:00Z", "end": "2024-05-01T10:25:00Z"},
        "performer": [{"actor": {"reference": format!("Practitioner/{clinician}")}}],
        "outcome": {"text": "successful"},
        "bodySite": [{"coding": [{"system": SCT, "code": "66754008", "display": "Appendix structure"}]}],
    });
    if let Some(e) = encounter {
        r["encounter"] = json!({"reference": format!("Encounter/{e}")});
    }
    r
}

/// The ids a search finds, sorted.
async fn find(fhir: &Fhir<'_>, q: &str) -> Vec<String> {
    let r = fhir.get(q).await;
    assert_eq!(r.status, 200, "{q}: {}", r.body);
    let mut found = ids(&r.body);
    found.sort();
    found
}

async fn act(app: &TestApp, path: &str, version: &str, body: &Value) -> u16 {
    app.client
        .post(app.url(path))
        .bearer_auth(&app.token)
        .header("if-match", format!("\"{version}\""))
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn without_meta(r: &Value) -> Value {
    let mut r = r.clone();
    if let Some(o) = r.as_object_mut() {
        o.remove("meta");
    }
    r
}

async fn encounters_map_both_ways_and_move_through_the_domain_transitions(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let pid = a_patient(&app, "E-1", "Enc").await;
    let cid = a_clinician(&app, "GMC-E1").await;
    let dep = app.create_department("CARD", "Cardiology").await;

    // /api/v1 → FHIR: a scheduled encounter is a planned one, version 1.
    let r = app
        .post(
            "/api/v1/encounters",
            &app.token,
            &json!({"patient_id": pid, "clinician_id": cid, "type": "outpatient", "department_id": dep, "scheduled_for": "2024-04-01T09:00:00+01:00"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = fhir.get(&format!("/Encounter/{id}")).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.header("etag"), "W/\"1\"");
    assert_eq!(read.body["status"], "planned");
    assert_eq!(read.body["class"], json!({"system": ACT, "code": "AMB"}));
    assert_eq!(read.body["subject"]["reference"], format!("Patient/{pid}"));
    assert_eq!(
        read.body["participant"][0]["individual"]["reference"],
        format!("Practitioner/{cid}")
    );
    assert_eq!(
        read.body["serviceProvider"]["reference"],
        format!("Organization/{dep}")
    );
    assert_eq!(read.body["period"]["start"], "2024-04-01T08:00:00Z");

    // A FHIR update starts it (version 2, through the domain's `start`).
    let mut up = without_meta(&read.body);
    up["status"] = json!("in-progress");
    up["period"] = json!({"start": "2024-04-01T08:05:00Z"});
    up["reasonCode"] = json!([{"text": "chest pain"}]);
    let r = fhir
        .put(&format!("/Encounter/{id}"), &up, &[("if-match", "W/\"1\"")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("etag"), "W/\"2\"");
    assert_eq!(content(&r.body), content(&up));
    let (_, etag, api) = api_get(&app, &format!("/api/v1/encounters/{id}")).await;
    assert_eq!(etag, "\"2\"");
    assert_eq!(api["status"], "in_progress");
    assert_eq!(api["start_time"], "2024-04-01T08:05:00Z");
    // The same content again is no new version.
    let same = fhir.put(&format!("/Encounter/{id}"), &up, &[]).await;
    assert_eq!(same.header("etag"), "W/\"2\"");

    // /api/v1 completes it: FHIR reads it finished at version 3 with the kept elements.
    assert_eq!(
        act(
            &app,
            &format!("/api/v1/encounters/{id}/complete"),
            "2",
            &json!({})
        )
        .await,
        200
    );
    let read = fhir.get(&format!("/Encounter/{id}")).await;
    assert_eq!(read.body["meta"]["versionId"], "3");
    assert_eq!(read.body["status"], "finished");
    assert!(read.body["period"]["end"].is_string(), "{}", read.body);
    assert_eq!(read.body["reasonCode"][0]["text"], "chest pain");

    // Archived through FHIR (the extension), version 4; going back is refused.
    let mut up = without_meta(&read.body);
    up["extension"] = json!([{"url": ARCHIVED, "valueBoolean": true}]);
    let r = fhir.put(&format!("/Encounter/{id}"), &up, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("etag"), "W/\"4\"");
    let (_, _, api) = api_get(&app, &format!("/api/v1/encounters/{id}")).await;
    assert_eq!(api["status"], "archived");
    let mut back = up.clone();
    back.as_object_mut().unwrap().remove("extension");
    back["status"] = json!("in-progress");
    let (code, at) = fhir
        .put(&format!("/Encounter/{id}"), &back, &[])
        .await
        .outcome(422);
    assert_eq!(
        (code.as_str(), at.as_str()),
        ("business-rule", "Encounter.status")
    );
    // The clinician and the start cannot change; a stale If-Match is a 412.
    let mut bad = up.clone();
    bad["period"]["start"] = json!("2024-04-01T07:00:00Z");
    let (_, at) = fhir
        .put(&format!("/Encounter/{id}"), &bad, &[])
        .await
        .outcome(422);
    assert_eq!(at, "Encounter.period.start");
    fhir.put(&format!("/Encounter/{id}"), &up, &[("if-match", "W/\"1\"")])
        .await
        .outcome(412);

    // History: four versions, newest first, each as it stood; vread of version 1.
    let h = fhir.get(&format!("/Encounter/{id}/_history")).await;
    assert_eq!(h.status, 200, "{}", h.body);
    assert_eq!(h.body["total"], 4);
    let statuses: Vec<&str> = h.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["finished", "finished", "in-progress", "planned"]);
    let v1 = fhir.get(&format!("/Encounter/{id}/_history/1")).await;
    assert_eq!(v1.body["status"], "planned");
    let (_, _, api_history) = api_get(&app, &format!("/api/v1/encounters/{id}/history")).await;
    assert_eq!(api_history["items"].as_array().unwrap().len(), 4);
    // Never deleted.
    fhir.send(
        Method::DELETE,
        &format!("/Encounter/{id}"),
        Some(&app.token),
        None,
        &[],
    )
    .await
    .outcome(405);

    // FHIR → /api/v1: a finished visit recorded as it is (one version), read back as sent.
    let sent = visit(&pid, &cid);
    let created = fhir.post("/Encounter", &sent, &[]).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("etag"), "W/\"1\"");
    assert_eq!(content(&created.body), sent, "read back as sent");
    let vid = created.body["id"].as_str().unwrap().to_owned();
    let (status, etag, api) = api_get(&app, &format!("/api/v1/encounters/{vid}")).await;
    assert_eq!(status, 200, "{api}");
    assert_eq!(etag, "\"1\"");
    assert_eq!(api["status"], "completed");
    assert_eq!(api["type"], "outpatient");
    assert_eq!(api["clinician_id"], cid.as_str());
    assert_eq!(api["start_time"], "2024-05-01T10:00:00Z");
    assert_eq!(api["end_time"], "2024-05-01T10:30:00Z");

    // What Salus cannot keep is a 422 naming the element.
    let mut bad = visit(&pid, &cid);
    bad.as_object_mut().unwrap().remove("participant");
    let (_, at) = fhir.post("/Encounter", &bad, &[]).await.outcome(422);
    assert_eq!(at, "Encounter.participant");
    let bad = visit(&pid, &uuid::Uuid::now_v7().to_string());
    let (_, at) = fhir.post("/Encounter", &bad, &[]).await.outcome(422);
    assert_eq!(at, "Encounter.participant");
    let mut bad = visit(&pid, &cid);
    bad["class"]["code"] = json!("PRENC");
    let (_, at) = fhir.post("/Encounter", &bad, &[]).await.outcome(422);
    assert_eq!(at, "Encounter.class");
    let mut bad = visit(&pid, &cid);
    bad["status"] = json!("arrived");
    let (_, at) = fhir.post("/Encounter", &bad, &[]).await.outcome(422);
    assert_eq!(at, "Encounter.status");
    let mut bad = visit(&pid, &cid);
    bad["period"]["end"] = json!("2024-05-01T09:00:00Z");
    let (_, at) = fhir.post("/Encounter", &bad, &[]).await.outcome(422);
    assert_eq!(at, "Encounter.period.end");
    let mut bad = visit(&pid, &cid);
    bad["period"] = json!({"start": "2024-05-01T10:00:00Z"});
    let (_, at) = fhir.post("/Encounter", &bad, &[]).await.outcome(422);
    assert_eq!(at, "Encounter.period.end");
    let mut bad = visit(&uuid::Uuid::now_v7().to_string(), &cid);
    bad["status"] = json!("planned");
    let (_, at) = fhir.post("/Encounter", &bad, &[]).await.outcome(422);
    assert_eq!(at, "Encounter.subject");
    fhir.validate_all();
}

async fn procedures_map_both_ways_and_a_delete_enters_them_in_error(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let pid = a_patient(&app, "P-1", "Proc").await;
    let cid = a_clinician(&app, "GMC-P1").await;
    let enc = fhir.post("/Encounter", &visit(&pid, &cid), &[]).await;
    assert_eq!(enc.status, 201, "{}", enc.body);
    let eid = enc.body["id"].as_str().unwrap().to_owned();

    // FHIR → /api/v1.
    let sent = appendectomy(&pid, &cid, Some(&eid));
    let created = fhir.post("/Procedure", &sent, &[]).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(content(&created.body), sent, "read back as sent");
    let id = created.body["id"].as_str().unwrap().to_owned();
    let (status, etag, api) = api_get(&app, &format!("/api/v1/procedures/{id}")).await;
    assert_eq!(status, 200, "{api}");
    assert_eq!(etag, "\"1\"");
    assert_eq!(api["encounter_id"], eid.as_str());
    assert_eq!(api["performer_id"], cid.as_str());
    assert_eq!(api["outcome"], "successful");
    assert_eq!(api["performed_at"], "2024-05-01T10:05:00Z");

    // An update keeps a note (version 2); the code cannot change.
    let mut up = sent.clone();
    up["id"] = json!(id);
    up["note"] = json!([{"text": "uneventful"}]);
    let r = fhir.put(&format!("/Procedure/{id}"), &up, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("etag"), "W/\"2\"");
    let mut bad = up.clone();
    bad["code"]["coding"][0]["code"] = json!("22298006");
    let (_, at) = fhir
        .put(&format!("/Procedure/{id}"), &bad, &[])
        .await
        .outcome(422);
    assert_eq!(at, "Procedure.code");
    // A delete enters it in error (version 3), seen through /api/v1.
    let d = fhir
        .send(
            Method::DELETE,
            &format!("/Procedure/{id}"),
            Some(&app.token),
            None,
            &[],
        )
        .await;
    assert_eq!(d.status, 204);
    let (_, etag, api) = api_get(&app, &format!("/api/v1/procedures/{id}")).await;
    assert_eq!(etag, "\"3\"");
    assert_eq!(api["status"], "entered_in_error");
    let read = fhir.get(&format!("/Procedure/{id}")).await;
    assert_eq!(read.body["status"], "entered-in-error");
    assert_eq!(read.body["note"][0]["text"], "uneventful");

    // /api/v1 → FHIR.
    let r = app
        .post(
            "/api/v1/procedures",
            &app.token,
            &json!({"patient_id": pid, "code": {"system": SCT, "code": "80146002"}, "performer_id": cid, "outcome": "successful", "performed_at": "2024-06-01T10:00:00+00:00"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let pid2 = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = fhir.get(&format!("/Procedure/{pid2}")).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.header("etag"), "W/\"1\"");
    assert_eq!(read.body["status"], "completed");
    assert_eq!(read.body["performedDateTime"], "2024-06-01T10:00:00Z");
    assert_eq!(
        read.body["performer"][0]["actor"]["reference"],
        format!("Practitioner/{cid}")
    );
    assert_eq!(read.body["outcome"]["text"], "successful");

    // Errors name the element.
    let mut bad = appendectomy(&pid, &cid, None);
    bad["code"]["coding"][0]["code"] = json!("80146003");
    let (_, at) = fhir.post("/Procedure", &bad, &[]).await.outcome(422);
    assert_eq!(at, "Procedure.code.coding[0].code");
    let bad = appendectomy(&pid, &uuid::Uuid::now_v7().to_string(), None);
    let (_, at) = fhir.post("/Procedure", &bad, &[]).await.outcome(422);
    assert_eq!(at, "Procedure.performer.actor");
    let mut bad = appendectomy(&pid, &cid, None);
    bad["status"] = json!("in-progress");
    let (_, at) = fhir.post("/Procedure", &bad, &[]).await.outcome(422);
    assert_eq!(at, "Procedure.status");
    let other = a_patient(&app, "P-2", "Other").await;
    let bad = appendectomy(&other, &cid, Some(&eid));
    let (_, at) = fhir.post("/Procedure", &bad, &[]).await.outcome(422);
    assert_eq!(at, "Procedure.encounter");
    fhir.validate_all();
}

async fn encounters_and_procedures_are_found_by_their_r4_parameters(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let ada = a_patient(&app, "S-1", "Search").await;
    let bob = a_patient(&app, "S-2", "Other").await;
    let cid = a_clinician(&app, "GMC-S1").await;
    let other_doc = a_clinician(&app, "GMC-S2").await;
    let e1 = fhir.post("/Encounter", &visit(&ada, &cid), &[]).await;
    assert_eq!(e1.status, 201, "{}", e1.body);
    let e1 = e1.body["id"].as_str().unwrap().to_owned();
    let mut er = visit(&bob, &other_doc);
    er["class"] = json!({"system": ACT, "code": "EMER"});
    er["period"] = json!({"start": "2023-01-10T22:00:00Z", "end": "2023-01-11T02:00:00Z"});
    let e2 = fhir.post("/Encounter", &er, &[]).await;
    assert_eq!(e2.status, 201, "{}", e2.body);
    let e2 = e2.body["id"].as_str().unwrap().to_owned();
    let p1 = fhir
        .post("/Procedure", &appendectomy(&ada, &cid, Some(&e1)), &[])
        .await;
    assert_eq!(p1.status, 201, "{}", p1.body);
    let p1 = p1.body["id"].as_str().unwrap().to_owned();

    let one = |id: &str| vec![id.to_owned()];
    for (q, want) in [
        (format!("/Encounter?patient={ada}"), one(&e1)),
        (format!("/Encounter?subject=Patient/{bob}"), one(&e2)),
        (
            format!("/Encounter?participant=Practitioner/{cid}"),
            one(&e1),
        ),
        (format!("/Encounter?practitioner={other_doc}"), one(&e2)),
        (format!("/Procedure?patient={ada}"), one(&p1)),
        (format!("/Procedure?performer=Practitioner/{cid}"), one(&p1)),
        (format!("/Procedure?encounter={e1}"), one(&p1)),
    ] {
        let r = fhir.get(&q).await;
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        assert_eq!(ids(&r.body), want, "{q}");
    }
    assert_eq!(
        find(&fhir, &format!("/Encounter?class={ACT}|EMER")).await,
        one(&e2)
    );
    let mut both = vec![e1.clone(), e2.clone()];
    both.sort();
    assert_eq!(find(&fhir, "/Encounter?status=finished").await, both);
    assert_eq!(find(&fhir, "/Encounter?type=185349003").await, both);
    assert_eq!(find(&fhir, "/Encounter?date=ge2024-01-01").await, one(&e1));
    assert_eq!(find(&fhir, "/Encounter?date=lt2024-01-01").await, one(&e2));
    assert_eq!(find(&fhir, "/Encounter?date=2024-05-01").await, one(&e1));
    assert_eq!(
        find(&fhir, "/Encounter?status=planned").await,
        Vec::<String>::new()
    );
    assert_eq!(find(&fhir, "/Procedure?code=80146002").await, one(&p1));
    assert_eq!(find(&fhir, "/Procedure?date=2024-05-01").await, one(&p1));
    assert_eq!(
        find(&fhir, "/Procedure?date=lt2024-01-01").await,
        Vec::<String>::new()
    );
    assert_eq!(find(&fhir, "/Procedure?status=completed").await, one(&p1));
    assert_eq!(
        find(&fhir, "/Encounter?_lastUpdated=gt2020-01-01").await,
        both
    );
    // A chain through the patient and an _include of the encounter.
    let r = fhir
        .get("/Procedure?subject:Patient.identifier=S-1&_include=Procedure:encounter")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let all: Vec<&str> = r.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert!(
        all.contains(&p1.as_str()) && all.contains(&e1.as_str()),
        "{all:?}"
    );
    // Reverse: the procedures recorded in an encounter, the patients with an emergency.
    let r = fhir
        .get(&format!(
            "/Encounter?_id={e1}&_revinclude=Procedure:encounter"
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let all: Vec<&str> = r.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(all, [e1.as_str(), p1.as_str()]);
    assert_eq!(
        find(&fhir, "/Patient?_has:Encounter:subject:class=EMER").await,
        one(&bob)
    );
    // The type history names both encounters.
    let h = fhir.get("/Encounter/_history").await;
    assert_eq!(h.status, 200, "{}", h.body);
    assert_eq!(h.body["entry"].as_array().unwrap().len(), 2);
    // /api/v1 filters still work on the same rows.
    let (_, _, list) = api_get(&app, &format!("/api/v1/encounters?patient_id={ada}")).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    fhir.validate_all();
}

async fn a_transaction_records_a_patient_with_an_encounter_and_a_procedure(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let cid = a_clinician(&app, "GMC-T1").await;
    let pat = "urn:uuid:7a1c6b2e-0c39-4c3e-9a51-4d1f7c1e0001";
    let enc = "urn:uuid:7a1c6b2e-0c39-4c3e-9a51-4d1f7c1e0002";
    let mut e = visit("x", &cid);
    e["subject"] = json!({"reference": pat});
    let mut p = appendectomy("x", &cid, None);
    p["subject"] = json!({"reference": pat});
    p["encounter"] = json!({"reference": enc});
    let tx = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": pat, "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "T-1"}],
                                          "name": [{"family": "Bundled", "given": ["Tess"]}], "gender": "female", "birthDate": "1970-02-03"},
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": enc, "resource": e, "request": {"method": "POST", "url": "Encounter"}},
            {"fullUrl": "urn:uuid:7a1c6b2e-0c39-4c3e-9a51-4d1f7c1e0003", "resource": p, "request": {"method": "POST", "url": "Procedure"}},
        ]
    });
    let r = fhir.post("", &tx, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let loc = |i: usize| {
        r.body["entry"][i]["response"]["location"]
            .as_str()
            .unwrap()
            .split('/')
            .nth(1)
            .unwrap()
            .to_owned()
    };
    let (pid, eid, prid) = (loc(0), loc(1), loc(2));
    let (_, _, api) = api_get(&app, &format!("/api/v1/procedures/{prid}")).await;
    assert_eq!(api["encounter_id"], eid.as_str());
    assert_eq!(api["patient_id"], pid.as_str());
    let (_, _, api) = api_get(&app, &format!("/api/v1/encounters/{eid}")).await;
    assert_eq!(api["patient_id"], pid.as_str());
    assert_eq!(api["status"], "completed");
    // All or nothing: an encounter without a clinician fails the whole transaction.
    let mut tx2 = tx.clone();
    tx2["entry"][0]["resource"]["identifier"][0]["value"] = json!("T-2");
    tx2["entry"][1]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("participant");
    let r = fhir.post("", &tx2, &[]).await;
    let (_, at) = r.outcome(422);
    assert_eq!(at, "Encounter.participant");
    let found = fhir.get("/Patient?identifier=urn:mrn|T-2").await;
    assert!(ids(&found.body).is_empty());
    fhir.validate_all();
}

async fn a_transaction_names_the_practitioner_and_organization_it_creates(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let urn = |n: u32| format!("urn:uuid:8b1c6b2e-0c39-4c3e-9a51-4d1f7c1e{n:04}");
    let (pat, doc, org, enc, proc) = (urn(1), urn(2), urn(3), urn(4), urn(5));
    let mut e = visit("x", "x");
    e["subject"] = json!({"reference": pat});
    e["participant"][0]["individual"] = json!({"reference": doc});
    e["serviceProvider"] = json!({"reference": org});
    let mut p = appendectomy("x", "x", None);
    p["subject"] = json!({"reference": pat});
    p["performer"][0]["actor"] = json!({"reference": doc});
    p["encounter"] = json!({"reference": enc});
    let tx = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": pat, "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "T-9"}],
                                          "name": [{"family": "Bundled", "given": ["Tess"]}], "gender": "female", "birthDate": "1970-02-03"},
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": doc, "resource": {"resourceType": "Practitioner",
                "identifier": [{"system": "urn:salus:credential", "value": "GMC-TX9"}],
                "name": [{"family": "House", "given": ["Greg"]}],
                "extension": [{"url": "urn:salus:fhir:extension:specialty", "valueString": "Diagnostics"},
                              {"url": "urn:salus:fhir:extension:org-unit", "valueString": "Medicine"}]},
             "request": {"method": "POST", "url": "Practitioner"}},
            {"fullUrl": org, "resource": {"resourceType": "Organization",
                "identifier": [{"system": "urn:salus:department-code", "value": "DIAG"}], "name": "Diagnostics"},
             "request": {"method": "POST", "url": "Organization"}},
            {"fullUrl": enc, "resource": e, "request": {"method": "POST", "url": "Encounter"}},
            {"fullUrl": proc, "resource": p, "request": {"method": "POST", "url": "Procedure"}},
        ]
    });
    let r = fhir.post("", &tx, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let loc = |i: usize| {
        r.body["entry"][i]["response"]["location"]
            .as_str()
            .unwrap()
            .split('/')
            .nth(1)
            .unwrap()
            .to_owned()
    };
    let (cid, did, eid, prid) = (loc(1), loc(2), loc(3), loc(4));
    let (_, _, api) = api_get(&app, &format!("/api/v1/encounters/{eid}")).await;
    assert_eq!(api["clinician_id"], cid.as_str());
    assert_eq!(api["department_id"], did.as_str());
    let (_, _, api) = api_get(&app, &format!("/api/v1/procedures/{prid}")).await;
    assert_eq!(api["performer_id"], cid.as_str());
    assert_eq!(api["encounter_id"], eid.as_str());
    let read = fhir.get(&format!("/Encounter/{eid}")).await;
    assert_eq!(
        read.body["serviceProvider"]["reference"],
        format!("Organization/{did}")
    );
    // The Practitioner the encounter names is the clinician, through FHIR too.
    let doc = fhir.get(&format!("/Practitioner/{cid}")).await;
    assert_eq!(doc.status, 200, "{}", doc.body);
    assert_eq!(
        find(
            &fhir,
            "/Encounter?practitioner.identifier=urn:salus:credential|GMC-TX9"
        )
        .await,
        vec![eid]
    );
    fhir.validate_all();
}

async fn a_patient_context_token_sees_only_its_patients_encounters(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let ada = a_patient(&app, "PC-1", "Own").await;
    let bob = a_patient(&app, "PC-2", "Other").await;
    let cid = a_clinician(&app, "GMC-C1").await;
    let mine = fhir.post("/Encounter", &visit(&ada, &cid), &[]).await;
    let theirs = fhir.post("/Encounter", &visit(&bob, &cid), &[]).await;
    let their_proc = fhir
        .post("/Procedure", &appendectomy(&bob, &cid, None), &[])
        .await;
    assert_eq!(their_proc.status, 201, "{}", their_proc.body);
    let token = app.patient_token("viewer-e", "patient/*.read", &ada).await;
    let get = |path: String| {
        let fhir = &fhir;
        let token = token.clone();
        async move { fhir.send(Method::GET, &path, Some(&token), None, &[]).await }
    };
    let r = get("/Encounter?status=finished".into()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        ids(&r.body),
        vec![mine.body["id"].as_str().unwrap().to_owned()]
    );
    let r = get("/Procedure".into()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(ids(&r.body).is_empty(), "{}", r.body);
    get(format!(
        "/Encounter/{}",
        theirs.body["id"].as_str().unwrap()
    ))
    .await
    .outcome(404);
    get(format!(
        "/Procedure/{}",
        their_proc.body["id"].as_str().unwrap()
    ))
    .await
    .outcome(404);
    fhir.send(
        Method::POST,
        "/Encounter",
        Some(&token),
        Some(&visit(&ada, &cid)),
        &[],
    )
    .await
    .outcome(403);
    fhir.validate_all();
}

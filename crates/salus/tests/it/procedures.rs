//! Procedures over HTTP: SNOMED CT codes with their check digit, a real performer,
//! withdrawal as an event.

use crate::app::{TestApp, on_both_backends, patient, problem};
use serde_json::{Value, json};

on_both_backends!(procedures_name_a_coded_act_and_its_performer);

async fn procedures_name_a_coded_act_and_its_performer(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let pid = app.create_patient(&patient("PR-1", "Proc", "Edure")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let clin = json!({"family": "Grey", "given": ["Meredith"], "credential": "GMC-200", "specialty": "General surgery", "org_unit": "Theatres"});
    let cid = app
        .post("/api/v1/clinicians", &app.token, &clin)
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sct = |code: &str| json!({"system": "http://snomed.info/sct", "code": code, "display": "Appendectomy"});
    let r = app.post("/api/v1/procedures", &app.token, &json!({"patient_id": pid, "code": sct("80146002"), "performer_id": cid, "outcome": "successful", "performed_at": "2026-06-01T10:00:00+00:00"})).await;
    assert_eq!(r.status(), 201);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["status"], "completed");
    let body = problem(
        app.post(
            "/api/v1/procedures",
            &app.token,
            &json!({"patient_id": pid, "code": sct("80146003"), "performer_id": cid}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "code.code");
    let body = problem(app.post("/api/v1/procedures", &app.token, &json!({"patient_id": pid, "code": sct("80146002"), "performer_id": uuid::Uuid::now_v7()})).await, 422, "validation").await;
    assert_eq!(body["field"], "performer_id");
    let r = app.post("/api/v1/procedures", &app.token, &json!({"patient_id": pid, "code": {"system": "urn:local:proc", "code": "DRESS-1"}, "performer_id": cid, "performed_at": "2026-06-02T10:00:00Z"})).await;
    assert_eq!(r.status(), 201);
    let list: Value = app
        .get(&format!("/api/v1/procedures?patient_id={pid}"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    let codes: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"]["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["DRESS-1", "80146002"], "latest performed first");
    let list: Value = app
        .get(
            &format!(
                "/api/v1/procedures?performer_id={cid}&code=http://snomed.info/sct%7C80146002"
            ),
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let url = app.url(&format!(
        "/api/v1/procedures/{}/enter-in-error",
        p["id"].as_str().unwrap()
    ));
    let r = app
        .client
        .post(&url)
        .bearer_auth(&app.token)
        .header("if-match", "\"1\"")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    problem(r, 422, "validation").await;
    let r = app
        .client
        .post(&url)
        .bearer_auth(&app.token)
        .header("if-match", "\"1\"")
        .json(&json!({"reason": "wrong patient"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["status"],
        "entered_in_error"
    );
    let r = app
        .client
        .post(&url)
        .bearer_auth(&app.token)
        .header("if-match", "\"2\"")
        .json(&json!({"reason": "again"}))
        .send()
        .await
        .unwrap();
    problem(r, 422, "illegal-transition").await;
    app.stop().await;
}

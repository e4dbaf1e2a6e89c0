//! Conditions and allergies over HTTP: coded, statused, and their events in the log.

use crate::app::{TestApp, on_both_backends, patient, problem};
use serde_json::{Value, json};

on_both_backends!(conditions_and_allergies_carry_statuses_and_events);

async fn conditions_and_allergies_carry_statuses_and_events(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let pid = app.create_patient(&patient("ST-1", "State", "Ment")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sct = |code: &str| json!({"system": "http://snomed.info/sct", "code": code});
    // A condition: hypertension, confirmed.
    let r = app.post("/api/v1/conditions", &app.token, &json!({"patient_id": pid, "code": sct("38341003"), "verification_status": "confirmed", "onset": "2019-05-01"})).await;
    assert_eq!(r.status(), 201);
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["clinical_status"], "active");
    assert_eq!(c["onset"], "2019-05-01");
    problem(
        app.post(
            "/api/v1/conditions",
            &app.token,
            &json!({"patient_id": pid, "code": sct("38341003"), "clinical_status": "cured"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    problem(
        app.post(
            "/api/v1/conditions",
            &app.token,
            &json!({"patient_id": pid, "code": sct("38341003"), "category": "food"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    // An allergy: penicillin, high criticality; its event is in the log as allergy.recorded.
    let r = app.post("/api/v1/allergies", &app.token, &json!({"patient_id": pid, "code": {"system": "urn:local:allergen", "code": "penicillin"}, "category": "medication", "criticality": "high", "onset": "2001-02-03T04:05:06+01:00"})).await;
    assert_eq!(r.status(), 201);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["onset"], "2001-02-03T03:05:06.000000Z");
    let aid = a["id"].as_str().unwrap().to_owned();
    let h: Value = app
        .get(&format!("/api/v1/allergies/{aid}/history"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(h["items"][0]["event_type"], "allergy.recorded");
    problem(app.post("/api/v1/allergies", &app.token, &json!({"patient_id": pid, "code": {"system": "urn:local:allergen", "code": "nuts"}, "criticality": "deadly"})).await, 422, "validation").await;
    // Status changes need If-Match and are events; entered-in-error is final.
    let url = app.url(&format!("/api/v1/allergies/{aid}/set-status"));
    let r = app
        .client
        .post(&url)
        .bearer_auth(&app.token)
        .json(&json!({"verification_status": "confirmed"}))
        .send()
        .await
        .unwrap();
    problem(r, 428, "precondition-required").await;
    let r = app
        .client
        .post(&url)
        .bearer_auth(&app.token)
        .header("if-match", "\"1\"")
        .json(&json!({"verification_status": "confirmed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["verification_status"],
        "confirmed"
    );
    let r = app
        .client
        .post(&url)
        .bearer_auth(&app.token)
        .header("if-match", "\"2\"")
        .json(&json!({"verification_status": "entered_in_error"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .post(&url)
        .bearer_auth(&app.token)
        .header("if-match", "\"3\"")
        .json(&json!({"clinical_status": "resolved"}))
        .send()
        .await
        .unwrap();
    problem(r, 422, "rule-violation").await;
    // Lists by patient and status.
    let list: Value = app
        .get(
            &format!("/api/v1/conditions?patient_id={pid}&verification_status=confirmed"),
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["id"], c["id"]);
    let list: Value = app
        .get(
            &format!("/api/v1/allergies?patient_id={pid}&verification_status=confirmed"),
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    problem(
        app.get("/api/v1/allergies?clinical_status=remission", &app.token)
            .await,
        400,
        "bad-request",
    )
    .await;
    let viewer = app.token_for("viewer-st", &["viewer"]).await;
    assert_eq!(
        app.get(
            &format!("/api/v1/conditions/{}", c["id"].as_str().unwrap()),
            &viewer
        )
        .await
        .status(),
        200
    );
    problem(
        app.post(
            "/api/v1/allergies",
            &viewer,
            &json!({"patient_id": pid, "code": sct("38341003")}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    app.stop().await;
}

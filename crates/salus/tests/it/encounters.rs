//! Clinicians and encounters over HTTP.

use crate::app::{TestApp, on_both_backends, patient, problem};
use serde_json::{Value, json};

on_both_backends!(clinicians_and_encounter_lifecycle);

async fn clinicians_and_encounter_lifecycle(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let clin = json!({"family": "Quinn", "given": ["Michaela"], "credential": "GMC-100", "specialty": "Family medicine", "org_unit": "Clinic A"});
    let r = app.post("/api/v1/clinicians", &app.token, &clin).await;
    assert_eq!(r.status(), 201);
    let c: Value = r.json().await.unwrap();
    let cid = c["id"].as_str().unwrap().to_owned();
    problem(
        app.post("/api/v1/clinicians", &app.token, &clin).await,
        409,
        "conflict",
    )
    .await;
    let found: Value = app
        .get("/api/v1/clinicians?name=MICH&status=active", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    let found: Value = app
        .get("/api/v1/clinicians?specialty=family%20medicine", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["items"][0]["id"], cid);

    let p = app
        .create_patient(&patient("EN-1", "Encounter", "Eve"))
        .await;
    let pid = p["id"].as_str().unwrap().to_owned();
    let schedule = |body: Value| {
        let app = &app;
        async move { app.post("/api/v1/encounters/", &app.token, &body).await }
    };
    let cardiology = app.create_department("CARD", "Cardiology").await;
    let r = schedule(json!({"patient_id": pid, "clinician_id": cid, "type": "outpatient", "department_id": cardiology, "scheduled_for": "2026-04-01T09:00:00+01:00"})).await;
    assert_eq!(r.status(), 201);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["department_id"], cardiology);
    assert_eq!(e["status"], "scheduled");
    assert_eq!(e["scheduled_for"], "2026-04-01T08:00:00Z");
    assert!(e.get("start_time").is_none());
    let eid = e["id"].as_str().unwrap().to_owned();

    let body = problem(
        schedule(
            json!({"patient_id": pid, "clinician_id": uuid::Uuid::now_v7(), "type": "outpatient"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "clinician_id");
    let body = problem(
        schedule(
            json!({"patient_id": uuid::Uuid::now_v7(), "clinician_id": cid, "type": "outpatient"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "patient_id");
    // The department, when named, is a real and active one: else a 422 naming the field,
    // as for the clinician.
    let unknown = uuid::Uuid::now_v7();
    let body = problem(
        schedule(json!({"patient_id": pid, "clinician_id": cid, "type": "outpatient", "department_id": unknown}))
            .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "department_id");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains(&unknown.to_string()),
        "{body}"
    );
    let closed = app.create_department("SHUT", "Shut ward").await;
    app.deactivate_department(&closed).await;
    let body = problem(
        schedule(json!({"patient_id": pid, "clinician_id": cid, "type": "outpatient", "department_id": closed}))
            .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "department_id");
    problem(
        schedule(json!({"patient_id": pid, "clinician_id": cid, "type": "outpatient", "department": "Cardiology"}))
            .await,
        422,
        "validation",
    )
    .await;
    let by_department: Value = app
        .get(
            &format!("/api/v1/encounters?department_id={cardiology}"),
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = by_department["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [eid.as_str()]);
    problem(
        schedule(json!({"patient_id": pid, "clinician_id": cid, "type": "spa"})).await,
        422,
        "validation",
    )
    .await;

    let act = |action: &'static str, version: i64, body: Option<Value>| {
        let app = &app;
        let eid = eid.clone();
        async move {
            let mut req = app
                .client
                .post(app.url(&format!("/api/v1/encounters/{eid}/{action}")))
                .bearer_auth(&app.token)
                .header("if-match", format!("\"{version}\""));
            if let Some(b) = body {
                req = req.json(&b);
            }
            req.send().await.unwrap()
        }
    };
    let body = problem(act("complete", 1, None).await, 422, "illegal-transition").await;
    assert_eq!(body["allowed_from"], json!(["in_progress"]));
    let started: Value = act("start", 1, None).await.json().await.unwrap();
    assert_eq!(started["status"], "in_progress");
    assert!(started["start_time"].is_string());
    problem(act("cancel", 2, None).await, 422, "illegal-transition").await;
    problem(act("complete", 1, None).await, 412, "precondition-failed").await;
    let done: Value = act("complete", 2, None).await.json().await.unwrap();
    assert_eq!(done["status"], "completed");
    assert!(done["end_time"].as_str().unwrap() >= done["start_time"].as_str().unwrap());
    let archived: Value = act("archive", 3, None).await.json().await.unwrap();
    assert_eq!(archived["status"], "archived");
    problem(act("delete", 4, None).await, 404, "not-found").await;
    // History from the log, and the encounter as it stood before it started.
    let h: Value = app
        .get(&format!("/api/v1/encounters/{eid}/history"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "encounter.scheduled",
            "encounter.started",
            "encounter.completed",
            "encounter.archived"
        ]
    );
    let first = h["items"][0]["recorded_at"].as_str().unwrap().to_owned();
    let r = app
        .client
        .get(app.url(&format!("/api/v1/encounters/{eid}")))
        .bearer_auth(&app.token)
        .query(&[("as_of", first.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["etag"], "\"1\"");
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "scheduled");

    // A second encounter, cancelled with a reason; the list filters by status and patient.
    let r = schedule(json!({"patient_id": pid, "clinician_id": cid, "type": "virtual"})).await;
    let e2: Value = r.json().await.unwrap();
    let url = format!("/api/v1/encounters/{}/cancel", e2["id"].as_str().unwrap());
    let r = app
        .client
        .post(app.url(&url))
        .bearer_auth(&app.token)
        .header("if-match", "\"1\"")
        .json(&json!({"reason": "patient called"}))
        .send()
        .await
        .unwrap();
    let cancelled: Value = r.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["cancel_reason"], "patient called");
    let list: Value = app
        .get(&format!("/api/v1/encounters?patient_id={pid}"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [e2["id"].as_str().unwrap(), eid.as_str()],
        "newest first"
    );
    let list: Value = app
        .get(
            &format!("/api/v1/encounters?clinician_id={cid}&status=archived"),
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let list: Value = app
        .get(
            "/api/v1/encounters?from=2026-04-01T00:00:00Z&to=2026-04-02T00:00:00Z&type=outpatient",
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        0,
        "started now, so no longer dated by its plan"
    );
    problem(
        app.get("/api/v1/encounters?status=lost", &app.token).await,
        400,
        "bad-request",
    )
    .await;

    // An inactive clinician takes no new encounters; a viewer cannot schedule.
    let r = app
        .client
        .post(app.url(&format!("/api/v1/clinicians/{cid}/deactivate")))
        .bearer_auth(&app.token)
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "inactive");
    let body = problem(
        schedule(json!({"patient_id": pid, "clinician_id": cid, "type": "home"})).await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "clinician_id");
    let viewer = app.token_for("v2", &["viewer"]).await;
    assert_eq!(
        app.get(&format!("/api/v1/encounters/{eid}"), &viewer)
            .await
            .status(),
        200
    );
    problem(
        app.post(
            "/api/v1/encounters",
            &viewer,
            &json!({"patient_id": pid, "clinician_id": cid, "type": "home"}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    app.stop().await;
}

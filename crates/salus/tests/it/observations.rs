//! Observations over HTTP: coded, typed values; amend and enter-in-error keep the history.

use crate::app::{TestApp, on_both_backends, patient, problem};
use serde_json::{Value, json};

on_both_backends!(observations_are_coded_typed_and_corrected_by_events);

async fn observations_are_coded_typed_and_corrected_by_events(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let p = app.create_patient(&patient("OB-1", "Obs", "Erva")).await;
    let pid = p["id"].as_str().unwrap().to_owned();
    let provider = app.token_for("nurse-ob", &["provider"]).await;
    let record = |body: Value| {
        let app = &app;
        let t = provider.clone();
        async move { app.post("/api/v1/observations", &t, &body).await }
    };
    let loinc = |code: &str| json!({"system": "http://loinc.org", "code": code});
    let r = record(json!({"patient_id": pid, "code": loinc("8480-6"), "value": {"type": "quantity", "value": 128.0, "unit": "mm[Hg]"}, "effective_at": "2026-05-01T08:00:00+02:00"})).await;
    assert_eq!(r.status(), 201);
    let bp: Value = r.json().await.unwrap();
    assert_eq!(bp["status"], "final");
    assert_eq!(bp["effective_at"], "2026-05-01T06:00:00Z");
    for v in [
        json!({"type": "boolean", "value": true}),
        json!({"type": "string", "value": "clear"}),
        json!({"type": "range", "low": 4.0, "high": 6.0, "unit": "mmol/L"}),
        json!({"type": "code", "coding": {"system": "http://snomed.info/sct", "code": "260385009", "display": "Negative"}}),
    ] {
        let r = record(json!({"patient_id": pid, "code": {"system": "urn:local", "code": "x1"}, "value": v, "effective_at": "2026-04-01T08:00:00Z"})).await;
        assert_eq!(r.status(), 201, "{v}");
    }
    // Bad input: LOINC check digit, unit, range, value type, unknown patient.
    let body = problem(record(json!({"patient_id": pid, "code": loinc("8480-7"), "value": {"type": "boolean", "value": true}})).await, 422, "validation").await;
    assert_eq!(body["field"], "code.code");
    problem(record(json!({"patient_id": pid, "code": loinc("8480-6"), "value": {"type": "quantity", "value": 1.0, "unit": "mm Hg"}})).await, 422, "validation").await;
    // Units are real UCUM: grammar, atoms and prefixes are checked, and the problem says why.
    for (unit, why) in [
        ("mg/dx", "unknown unit 'dx'"),
        ("kh", "not a metric unit"),
        ("mg/", "needs a unit after it"),
        ("MOL/L", "case-sensitive: 'mol'"),
        ("[foo]", "unknown unit '[foo]'"),
    ] {
        let body = problem(record(json!({"patient_id": pid, "code": loinc("8480-6"), "value": {"type": "quantity", "value": 1.0, "unit": unit}})).await, 422, "validation").await;
        assert_eq!(body["field"], "value.unit", "{unit}");
        assert!(
            body["detail"].as_str().unwrap().contains(why),
            "{unit}: {body}"
        );
    }
    let r = record(json!({"patient_id": pid, "code": {"system": "urn:local", "code": "egfr"}, "value": {"type": "quantity", "value": 90.0, "unit": "mL/min/{1.73_m2}"}, "effective_at": "2026-04-02T08:00:00Z"})).await;
    assert_eq!(r.status(), 201, "an annotated UCUM unit");
    problem(record(json!({"patient_id": pid, "code": loinc("8480-6"), "value": {"type": "range", "low": 9.0, "high": 1.0, "unit": "g"}})).await, 422, "validation").await;
    problem(record(json!({"patient_id": pid, "code": loinc("8480-6"), "value": {"type": "colour", "value": "red"}})).await, 422, "validation").await;
    let body = problem(record(json!({"patient_id": uuid::Uuid::now_v7(), "code": loinc("8480-6"), "value": {"type": "boolean", "value": true}})).await, 422, "validation").await;
    assert_eq!(body["field"], "patient_id");

    // Amend keeps the old value in the history; enter-in-error withdraws; then nothing more.
    let id = bp["id"].as_str().unwrap().to_owned();
    let act = |action: &'static str, version: i64, body: Value| {
        let app = &app;
        let (id, t) = (id.clone(), provider.clone());
        async move {
            app.client
                .post(app.url(&format!("/api/v1/observations/{id}/{action}")))
                .bearer_auth(t)
                .header("if-match", format!("\"{version}\""))
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    problem(
        act(
            "amend",
            1,
            json!({"value": {"type": "quantity", "value": 118.0, "unit": "mm[Hg]"}}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    let amended: Value = act("amend", 1, json!({"value": {"type": "quantity", "value": 118.0, "unit": "mm[Hg]"}, "reason": "transcription error"})).await.json().await.unwrap();
    assert_eq!(amended["status"], "amended");
    assert_eq!(amended["value"]["value"], 118.0);
    let withdrawn: Value = act("enter-in-error", 2, json!({"reason": "wrong patient"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(withdrawn["status"], "entered_in_error");
    problem(
        act(
            "amend",
            3,
            json!({"value": {"type": "boolean", "value": true}, "reason": "x"}),
        )
        .await,
        422,
        "illegal-transition",
    )
    .await;
    let h: Value = app
        .get(&format!("/api/v1/observations/{id}/history"), &provider)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        h["items"][0]["data"]["value"]["value"], 128.0,
        "the first value stays in the log"
    );
    assert_eq!(h["items"].as_array().unwrap().len(), 3);

    // List: latest effective first; by code and status.
    let list: Value = app
        .get(&format!("/api/v1/observations?patient_id={pid}"), &provider)
        .await
        .json()
        .await
        .unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 6);
    assert_eq!(
        items[0]["id"], bp["id"],
        "effective 2026-05-01 comes before the April ones"
    );
    let list: Value = app
        .get(
            "/api/v1/observations?code=http://loinc.org%7C8480-6&status=entered_in_error",
            &provider,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let viewer = app.token_for("viewer-ob", &["viewer"]).await;
    problem(app.post("/api/v1/observations", &viewer, &json!({"patient_id": pid, "code": loinc("8480-6"), "value": {"type": "boolean", "value": true}})).await, 403, "forbidden").await;
    app.stop().await;
}

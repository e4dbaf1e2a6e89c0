//! Departments and locations over HTTP.

use crate::app::{TestApp, on_both_backends, problem};
use serde_json::{Value, json};

on_both_backends!(departments_hold_locations_and_both_deactivate);

async fn departments_hold_locations_and_both_deactivate(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .post(
            "/api/v1/departments",
            &app.token,
            &json!({"code": "card", "name": "Cardiology"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["code"], "CARD");
    let did = d["id"].as_str().unwrap().to_owned();
    problem(
        app.post(
            "/api/v1/departments",
            &app.token,
            &json!({"code": "CARD", "name": "Again"}),
        )
        .await,
        409,
        "conflict",
    )
    .await;
    problem(
        app.post(
            "/api/v1/departments",
            &app.token,
            &json!({"code": "a b", "name": "Bad"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    let r = app
        .post(
            "/api/v1/locations",
            &app.token,
            &json!({"department_id": did, "name": "Ward 3", "kind": "ward"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    problem(
        app.post(
            "/api/v1/locations",
            &app.token,
            &json!({"department_id": did, "name": "Roof", "kind": "helipad"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    let found: Value = app
        .get("/api/v1/departments?name=cardio", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["items"][0]["id"], did);
    let found: Value = app
        .get(
            &format!("/api/v1/locations?department_id={did}&kind=ward&active=true"),
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    // An inactive department takes no new locations.
    let r = app
        .client
        .post(app.url(&format!("/api/v1/departments/{did}/deactivate")))
        .bearer_auth(&app.token)
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["active"], false);
    let body = problem(
        app.post(
            "/api/v1/locations",
            &app.token,
            &json!({"department_id": did, "name": "Ward 4", "kind": "ward"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "department_id");
    let r = app
        .client
        .post(app.url(&format!("/api/v1/departments/{did}/deactivate")))
        .bearer_auth(&app.token)
        .header("if-match", "\"2\"")
        .send()
        .await
        .unwrap();
    problem(r, 422, "illegal-transition").await;
    let viewer = app.token_for("viewer-pl", &["viewer"]).await;
    assert_eq!(
        app.get(&format!("/api/v1/departments/{did}"), &viewer)
            .await
            .status(),
        200
    );
    problem(
        app.post(
            "/api/v1/departments",
            &viewer,
            &json!({"code": "X", "name": "X"}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    app.stop().await;
}

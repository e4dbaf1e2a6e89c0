//! Care relationships and break-glass over real HTTP, on both backends: the tenant's
//! policy (off by default), reads refused without a relationship, break-glass reads
//! allowed, flagged and reported, care-team assignments (expiry, ending), encounters of a
//! clinician who is the user, and who may change any of it.

use crate::app::{TestApp, on_both_backends, patient, problem};
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(reads_need_a_care_relationship_or_break_glass_when_the_tenant_says_so);

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

async fn user_id(app: &TestApp, username: &str) -> String {
    let u: Value = app
        .get(&format!("/api/v1/users?username={username}"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    u["items"][0]["id"].as_str().unwrap().to_owned()
}

async fn get_with(
    app: &TestApp,
    path: &str,
    token: &str,
    glass: Option<&str>,
) -> reqwest::Response {
    let mut req = app.client.get(app.url(path)).bearer_auth(token);
    if let Some(reason) = glass {
        req = req.header("x-break-glass", reason);
    }
    req.send().await.unwrap()
}

async fn set_policy(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.client
        .put(app.url("/api/v1/care-policy"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn refused(r: reqwest::Response, patient: &str) {
    let body = problem(r, 403, "care-relationship-required").await;
    assert_eq!(body["patient_id"], patient);
    assert_eq!(body["header"], "X-Break-Glass");
    assert!(body["detail"].as_str().unwrap().contains("X-Break-Glass"));
}

async fn reads_need_a_care_relationship_or_break_glass_when_the_tenant_says_so(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let p = app.create_patient(&patient("CR-1", "Care", "Cara")).await;
    let q = app.create_patient(&patient("CR-2", "Other", "Otto")).await;
    let (pid, qid) = (id(&p), id(&q));
    let obs = json!({"patient_id": pid, "code": {"system": "http://loinc.org", "code": "8480-6"},
                     "value": {"type": "quantity", "value": 120, "unit": "mm[Hg]"}});
    let r = app.post("/api/v1/observations", &app.token, &obs).await;
    assert_eq!(r.status(), 201);
    let oid = id(&r.json().await.unwrap());
    let doc = app.token_for("doc", &["provider"]).await;
    let doc_id = user_id(&app, "doc").await;
    let viewer = app.token_for("vic", &["viewer"]).await;
    let ppath = format!("/api/v1/patients/{pid}");
    let qpath = format!("/api/v1/patients/{qid}");

    // Off by default: nothing changes for anyone.
    let policy: Value = app
        .get("/api/v1/care-policy", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(policy["enforced"], false);
    assert_eq!(policy["roles"], json!(["provider"]));
    assert_eq!(app.get(&ppath, &doc).await.status(), 200);

    // Only roles:write sets it; an unknown shape or role name is a 4xx.
    let body = problem(
        set_policy(&app, &doc, json!({"enforced": false})).await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(body["permission"], "roles:write");
    problem(
        set_policy(
            &app,
            &app.token,
            json!({"enforced": true, "roles": ["Not a role!"]}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    problem(
        set_policy(&app, &app.token, json!({"enforced": "yes"})).await,
        422,
        "validation",
    )
    .await;
    let r = set_policy(&app, &app.token, json!({"enforced": true})).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let policy: Value = r.json().await.unwrap();
    assert_eq!(policy["enforced"], true);
    assert_eq!(policy["roles"], json!(["provider"]));

    // A bound provider without a relationship: refused with the way out named...
    refused(app.get(&ppath, &doc).await, &pid).await;
    refused(
        app.get(&format!("/api/v1/observations/{oid}"), &doc).await,
        &pid,
    )
    .await;
    refused(
        app.get(&format!("/api/v1/observations?patient_id={pid}"), &doc)
            .await,
        &pid,
    )
    .await;
    refused(app.get(&format!("{ppath}/history"), &doc).await, &pid).await;
    // ...but finding a patient in the registry is how care starts.
    let found: Value = app
        .get("/api/v1/patients?identifier=urn:mrn|CR-1", &doc)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["items"][0]["id"], pid.as_str());
    // Roles the policy does not bind read as before.
    assert_eq!(app.get(&ppath, &viewer).await.status(), 200);
    assert_eq!(app.get(&ppath, &app.token).await.status(), 200);
    // A refused read leaves no access-log entry.
    let auditor = app.token_for("aud", &["auditor"]).await;
    let log: Value = app
        .get(
            &format!("/api/v1/audit/access?actor_id={doc_id}&patient_id={pid}"),
            &auditor,
        )
        .await
        .json()
        .await
        .unwrap();
    let before_glass = log["items"].as_array().unwrap().len();

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("salus_access_denied_total{permission=\"care_relationship\"}"),
        "refusals are counted"
    );

    // Break-glass: allowed, flagged, in the report with its reason.
    let r = get_with(&app, &ppath, &doc, Some("unconscious in ED, no ID")).await;
    assert_eq!(r.status(), 200);
    let r = get_with(
        &app,
        &format!("/api/v1/observations?patient_id={pid}"),
        &doc,
        Some("unconscious in ED, no ID"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let report: Value = app
        .get(
            &format!("/api/v1/audit/break-glass?actor_id={doc_id}"),
            &auditor,
        )
        .await
        .json()
        .await
        .unwrap();
    let items = report["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{report}");
    assert!(items.iter().all(|e| e["patient_id"] == pid.as_str()
        && e["break_glass"] == true
        && e["justification"] == "unconscious in ED, no ID"));
    let log: Value = app
        .get(
            &format!("/api/v1/audit/access?actor_id={doc_id}&patient_id={pid}"),
            &auditor,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(log["items"].as_array().unwrap().len(), before_glass + 2);

    // A care-team assignment: only with care_team:write (a provider cannot put itself on).
    let team = format!("/api/v1/patients/{pid}/care-team");
    let body = problem(
        app.post(
            &team,
            &doc,
            &json!({"user_id": doc_id, "role": "attending"}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(body["permission"], "care_team:write");
    let body = problem(
        app.post(
            &team,
            &app.token,
            &json!({"user_id": uuid::Uuid::now_v7(), "role": "attending"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "user_id");
    let past = (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339();
    let body = problem(
        app.post(
            &team,
            &app.token,
            &json!({"user_id": doc_id, "role": "attending", "valid_until": past}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "valid_until");
    problem(
        app.post(
            &format!("/api/v1/patients/{}/care-team", uuid::Uuid::now_v7()),
            &app.token,
            &json!({"user_id": doc_id, "role": "attending"}),
        )
        .await,
        404,
        "not-found",
    )
    .await;
    // One that expires on its own.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let r = app
        .post(
            &team,
            &app.token,
            &json!({"user_id": doc_id, "role": "night cover", "valid_until": soon}),
        )
        .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_eq!(app.get(&ppath, &doc).await.status(), 200);
    assert_eq!(
        app.get(&format!("/api/v1/observations/{oid}"), &doc)
            .await
            .status(),
        200
    );
    // The relationship is with this patient only.
    refused(app.get(&qpath, &doc).await, &qid).await;
    let listed: Value = app.get(&team, &app.token).await.json().await.unwrap();
    assert_eq!(listed["items"][0]["status"], "active");
    assert_eq!(listed["items"][0]["user_id"], doc_id.as_str());
    tokio::time::sleep(Duration::from_millis(2300)).await;
    refused(app.get(&ppath, &doc).await, &pid).await;
    let listed: Value = app.get(&team, &app.token).await.json().await.unwrap();
    assert_eq!(listed["items"][0]["status"], "expired");
    // One that is ended: at once, for good.
    let r = app
        .post(
            &team,
            &app.token,
            &json!({"user_id": doc_id, "role": "attending"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let a: Value = r.json().await.unwrap();
    assert_eq!(app.get(&ppath, &doc).await.status(), 200);
    let end = |etag: i64, body: Value| {
        app.client
            .post(app.url(&format!("{team}/{}/end", id(&a))))
            .bearer_auth(&app.token)
            .header("if-match", format!("\"{etag}\""))
            .json(&body)
            .send()
    };
    problem(
        end(1, json!({"reason": " "})).await.unwrap(),
        422,
        "validation",
    )
    .await;
    let r = end(1, json!({"reason": "transferred"})).await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    refused(app.get(&ppath, &doc).await, &pid).await;
    problem(
        end(2, json!({"reason": "again"})).await.unwrap(),
        409,
        "conflict",
    )
    .await;

    // An encounter whose clinician is the user gives a relationship; cancelled, it does not.
    let r = app
        .post(
            "/api/v1/clinicians",
            &app.token,
            &json!({"family": "Doc", "credential": "GMC-9", "specialty": "ED", "org_unit": "ED",
                    "user_id": uuid::Uuid::now_v7()}),
        )
        .await;
    assert_eq!(problem(r, 422, "validation").await["field"], "user_id");
    let r = app
        .post(
            "/api/v1/clinicians",
            &app.token,
            &json!({"family": "Doc", "credential": "GMC-9", "specialty": "ED", "org_unit": "ED",
                    "user_id": doc_id}),
        )
        .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let clin: Value = r.json().await.unwrap();
    assert_eq!(clin["user_id"], doc_id.as_str());
    // One clinician per user.
    let r = app
        .post(
            "/api/v1/clinicians",
            &app.token,
            &json!({"family": "Twin", "credential": "GMC-10", "specialty": "ED", "org_unit": "ED",
                    "user_id": doc_id}),
        )
        .await;
    problem(r, 409, "conflict").await;
    let r = app
        .post(
            "/api/v1/encounters",
            &app.token,
            &json!({"patient_id": qid, "clinician_id": id(&clin), "type": "emergency"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let e: Value = r.json().await.unwrap();
    assert_eq!(app.get(&qpath, &doc).await.status(), 200);
    refused(app.get(&ppath, &doc).await, &pid).await;
    let r = app
        .client
        .post(app.url(&format!("/api/v1/encounters/{}/cancel", id(&e))))
        .bearer_auth(&app.token)
        .header("if-match", "\"1\"")
        .json(&json!({"reason": "booked in error"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    refused(app.get(&qpath, &doc).await, &qid).await;

    // The policy may bind other roles; turned off, everyone reads as before.
    let r = set_policy(
        &app,
        &app.token,
        json!({"enforced": true, "roles": ["viewer"]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.get(&ppath, &doc).await.status(), 200);
    refused(app.get(&ppath, &viewer).await, &pid).await;
    let r = set_policy(&app, &app.token, json!({"enforced": false})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.get(&ppath, &viewer).await.status(), 200);

    // Every change of it is in the audit trail.
    let trail: Value = app
        .get("/api/v1/audit/events?entity_type=care_policy", &auditor)
        .await
        .json()
        .await
        .unwrap();
    let changes = trail["items"].as_array().unwrap();
    assert_eq!(changes.len(), 3);
    assert_eq!(changes[0]["after_state"]["enforced"], true);
    assert_eq!(changes[1]["before_state"]["roles"], json!(["provider"]));
    assert_eq!(changes[1]["after_state"]["roles"], json!(["viewer"]));
    let trail: Value = app
        .get(
            &format!("/api/v1/audit/events?patient_id={pid}&entity_type=care_assignment"),
            &auditor,
        )
        .await
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "care_team.assigned",
            "care_team.assigned",
            "care_team.ended"
        ]
    );
    app.stop().await;
}

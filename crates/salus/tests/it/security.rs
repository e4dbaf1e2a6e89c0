//! Security over real HTTP, on both backends, beyond what `auth.rs` and `access.rs`
//! already assert (token checks, expiry and revocation of assignments, a provider granting
//! itself admin, scope narrowing of reads, patient-context reads):
//! - another tenant's records are 404 for every read and write shape, and nothing of them
//!   shows in lists, cursors, unique keys or idempotency replays;
//! - escalation through role definitions and grants is refused for a role manager;
//! - patient-context and read-only SMART tokens write nothing and reach no audit data;
//! - SQL-shaped input in every filter of every list is a plain value (never a 500, never
//!   more rows than without it), and the data is intact afterwards;
//! - an oversized body on every route that takes one is a 413 (or the route's own limit).

use crate::app::{TestApp, on_both_backends, patient, problem};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    another_tenants_records_are_404_and_leak_nothing,
    role_managers_cannot_escalate_through_roles_or_grants,
    patient_context_and_read_scopes_write_nothing_and_reach_no_audit,
    sql_shaped_filters_are_plain_values_on_every_list,
    oversized_bodies_are_refused_on_every_route_that_takes_one,
);

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

async fn created(app: &TestApp, path: &str, token: &str, body: Value) -> Value {
    let r = app.post(path, token, &body).await;
    assert_eq!(r.status(), 201, "{path}: {:?}", r.text().await);
    r.json().await.unwrap()
}

fn observation(patient: &str) -> Value {
    json!({"patient_id": patient, "code": {"system": "http://loinc.org", "code": "8480-6"},
           "value": {"type": "quantity", "value": 120, "unit": "mm[Hg]"}})
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = app
        .client
        .request(method, app.url(path))
        .bearer_auth(token)
        .header("if-match", "\"1\"");
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn another_tenants_records_are_404_and_leak_nothing(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let ours = created(
        &app,
        "/api/v1/patients",
        &app.token,
        patient("X-1", "Ours", "Ann"),
    )
    .await;
    let pid = id(&ours);
    let o = created(&app, "/api/v1/observations", &app.token, observation(&pid)).await;
    let oid = id(&o);
    let clin = created(
        &app,
        "/api/v1/clinicians",
        &app.token,
        json!({"family": "Quinn", "credential": "GMC-X", "specialty": "GP", "org_unit": "A"}),
    )
    .await;
    let enc = created(
        &app,
        "/api/v1/encounters",
        &app.token,
        json!({"patient_id": pid, "clinician_id": id(&clin), "type": "outpatient"}),
    )
    .await;
    let dept = app.create_department("GEN", "General").await;
    let rec = created(
        &app,
        "/api/v1/medical-records",
        &app.token,
        json!({"patient_id": pid, "department_id": dept}),
    )
    .await;
    let them = app.other_tenant("elsewhere").await;
    let secret_ids = [pid.clone(), oid.clone(), id(&clin), id(&enc), id(&rec)];

    // Reads of every shape: 404, as for a record that never existed.
    for path in [
        format!("/api/v1/patients/{pid}"),
        format!("/api/v1/patients/{pid}?as_of=2030-01-01T00:00:00Z"),
        format!("/api/v1/patients/{pid}/history"),
        format!("/api/v1/patients/{pid}/care-team"),
        format!("/api/v1/observations/{oid}"),
        format!("/api/v1/observations/{oid}/history"),
        format!("/api/v1/clinicians/{}", id(&clin)),
        format!("/api/v1/encounters/{}", id(&enc)),
        format!("/api/v1/encounters/{}/history", id(&enc)),
        format!("/api/v1/medical-records/{}", id(&rec)),
        format!("/api/v1/medical-records/{}/notes", id(&rec)),
    ] {
        let r = app.get(&path, &them).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        // Exactly what a made-up id gets: a 404, or for a list under a record an empty one.
        let made_up = app
            .get(
                &path
                    .replace(&pid, &uuid::Uuid::now_v7().to_string())
                    .replace(&oid, &uuid::Uuid::now_v7().to_string())
                    .replace(&id(&enc), &uuid::Uuid::now_v7().to_string())
                    .replace(&id(&clin), &uuid::Uuid::now_v7().to_string())
                    .replace(&id(&rec), &uuid::Uuid::now_v7().to_string()),
                &them,
            )
            .await;
        assert_eq!(
            status,
            made_up.status(),
            "GET {path} from another tenant: {text}"
        );
        if status == 200 {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["items"], json!([]), "GET {path}: {v}");
        } else {
            assert_eq!(status, 404, "GET {path}: {text}");
        }
    }
    // Writes of every shape: 404 (or, where our id is a reference in a body, a 422 that
    // says it does not exist, exactly as for a made-up id).
    let writes = [
        (
            Method::PATCH,
            format!("/api/v1/patients/{pid}"),
            json!({"email": "x@example.org"}),
        ),
        (
            Method::POST,
            format!("/api/v1/patients/{pid}/suspend"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/api/v1/observations/{oid}/enter-in-error"),
            json!({"reason": "x"}),
        ),
        (
            Method::POST,
            format!("/api/v1/encounters/{}/start", id(&enc)),
            json!({}),
        ),
        (
            Method::POST,
            format!("/api/v1/clinicians/{}/deactivate", id(&clin)),
            json!({}),
        ),
        (
            Method::POST,
            format!("/api/v1/medical-records/{}/notes", id(&rec)),
            json!({"kind": "progress", "text": "x"}),
        ),
        (
            Method::POST,
            format!("/api/v1/patients/{pid}/care-team"),
            json!({"user_id": pid, "role": "x"}),
        ),
    ];
    for (m, path, body) in writes {
        let r = send(&app, m.clone(), &path, &them, Some(body)).await;
        assert!(
            r.status() == 404 || r.status() == 422,
            "{m} {path} from another tenant: {} {:?}",
            r.status(),
            r.text().await
        );
    }
    for (field, body) in [
        ("patient_id", observation(&pid)),
        (
            "clinician_id",
            json!({"patient_id": uuid::Uuid::now_v7(), "clinician_id": id(&clin), "type": "outpatient"}),
        ),
    ] {
        let path = if field == "patient_id" {
            "/api/v1/observations"
        } else {
            "/api/v1/encounters"
        };
        let made_up = {
            let mut b = body.clone();
            b[field] = json!(uuid::Uuid::now_v7());
            send(&app, Method::POST, path, &them, Some(b))
                .await
                .status()
        };
        let real = send(&app, Method::POST, path, &them, Some(body))
            .await
            .status();
        assert_eq!(
            real, made_up,
            "{path} {field}: ours looks like a made-up id"
        );
        assert!(real == 422 || real == 404, "{path}: {real}");
    }
    // Nothing of ours changed.
    let still: Value = app
        .get(&format!("/api/v1/patients/{pid}"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(still["version"], 1);
    assert_eq!(still["status"], ours["status"]);

    // Unique keys are the tenant's: our MRN is free there (a 409 naming our patient
    // would tell them it exists).
    let theirs = created(
        &app,
        "/api/v1/patients",
        &them,
        patient("X-1", "Theirs", "Tom"),
    )
    .await;
    assert_ne!(id(&theirs), pid);
    // Idempotency keys are the tenant's: the same key and body is their own request.
    let key = "shared-key-0001";
    let post_keyed = |token: &str| {
        app.client
            .post(app.url("/api/v1/patients"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&patient("K-1", "Keyed", "Kim"))
            .send()
    };
    let a: Value = post_keyed(&app.token).await.unwrap().json().await.unwrap();
    let r = post_keyed(&them).await.unwrap();
    assert_eq!(r.status(), 201);
    let b: Value = r.json().await.unwrap();
    assert_ne!(
        id(&a),
        id(&b),
        "another tenant's replay must not answer ours"
    );
    let again: Value = post_keyed(&app.token).await.unwrap().json().await.unwrap();
    assert_eq!(id(&again), id(&a));

    // Lists, reports and cursors: none of our ids, and no sign that more exist.
    let ours_page: Value = app
        .get("/api/v1/patients?limit=1", &app.token)
        .await
        .json()
        .await
        .unwrap();
    let cursor = ours_page["next_cursor"].as_str().unwrap().to_owned();
    for path in [
        "/api/v1/patients".to_string(),
        format!("/api/v1/patients?cursor={cursor}"),
        "/api/v1/patients?identifier=urn:mrn|X-1".into(),
        format!("/api/v1/observations?patient_id={pid}"),
        "/api/v1/observations".into(),
        "/api/v1/encounters".into(),
        "/api/v1/clinicians".into(),
        "/api/v1/medical-records".into(),
        "/api/v1/audit/events?limit=500".into(),
        format!("/api/v1/audit/events?patient_id={pid}"),
        "/api/v1/audit/events?cursor=0".into(),
        "/api/v1/audit/access?limit=500".into(),
        format!("/api/v1/patients/{pid}/access"),
        "/api/v1/audit/events?format=csv".into(),
        "/api/v1/exports/patients".into(),
    ] {
        let r = app.get(&path, &them).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(
            status == 200 || status == 404,
            "GET {path}: {status} {text}"
        );
        if status == 404 {
            // The detail repeats the id asked for, as for any missing record.
            continue;
        }
        for s in &secret_ids {
            assert!(
                !text.contains(s.as_str()),
                "GET {path} shows our {s}: {text}"
            );
        }
        assert!(
            !text.contains(&app.tenant.0.to_string()),
            "GET {path}: {text}"
        );
        if status == 200 && text.starts_with('{') {
            let v: Value = serde_json::from_str(&text).unwrap();
            if path.starts_with("/api/v1/patients") || path.contains("observations") {
                assert!(v["next_cursor"].is_null(), "GET {path}: {v}");
            }
        }
    }
    app.stop().await;
}

async fn role_managers_cannot_escalate_through_roles_or_grants(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .post(
            "/api/v1/roles",
            &app.token,
            &json!({"name": "role-manager", "permissions":
                ["roles:read", "roles:write", "roles:grant", "users:read", "patients:read"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let manager = app.token_for("rm", &["role-manager"]).await;
    let me: Value = app
        .get("/api/v1/users?username=rm", &app.token)
        .await
        .json()
        .await
        .unwrap();
    let my_id = me["items"][0]["id"].as_str().unwrap().to_owned();
    // A new role with a permission it lacks.
    let r = app
        .post(
            "/api/v1/roles",
            &manager,
            &json!({"name": "superuser", "permissions": ["audit:read", "patients:read"]}),
        )
        .await;
    let body = problem(r, 403, "forbidden").await;
    assert!(
        body["detail"].as_str().unwrap().contains("audit:read"),
        "{body}"
    );
    // Its own role widened.
    let r = app
        .client
        .patch(app.url("/api/v1/roles/role-manager"))
        .bearer_auth(&manager)
        .header("if-match", "\"1\"")
        .json(
            &json!({"permissions": ["roles:read", "roles:write", "roles:grant", "users:read",
                                       "patients:read", "users:write"]}),
        )
        .send()
        .await
        .unwrap();
    problem(r, 403, "forbidden").await;
    // Itself granted a role above it, built-in or not.
    for role in ["admin", "auditor", "provider"] {
        let r = app
            .post(
                &format!("/api/v1/users/{my_id}/assignments"),
                &manager,
                &json!({"role": role}),
            )
            .await;
        problem(r, 403, "forbidden").await;
    }
    // The tenant's care policy is roles:write: a role manager may set it, but that gives it
    // nothing to read.
    problem(
        app.get("/api/v1/audit/events", &manager).await,
        403,
        "forbidden",
    )
    .await;
    problem(
        app.post(
            "/api/v1/users",
            &manager,
            &json!({"username": "puppet", "roles": ["admin"]}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    // Its token still holds what it held.
    let perms: Value = app
        .get(&format!("/api/v1/users/{my_id}"), &manager)
        .await
        .json()
        .await
        .unwrap();
    let roles: Vec<&str> = perms["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["role-manager"]);
    app.stop().await;
}

async fn patient_context_and_read_scopes_write_nothing_and_reach_no_audit(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let p1 = id(&app.create_patient(&patient("PC-1", "One", "Pat")).await);
    let p2 = id(&app.create_patient(&patient("PC-2", "Two", "Pat")).await);
    let provider_token = app.token_for("doc", &["provider"]).await;
    drop(provider_token);
    let me: Value = app
        .get("/api/v1/users?username=doc", &app.token)
        .await
        .json()
        .await
        .unwrap();
    let uid = uuid::Uuid::parse_str(me["items"][0]["id"].as_str().unwrap()).unwrap();
    let running = app.running.as_ref().unwrap();
    let token = |scope: &str, patient: Option<&str>| {
        running
            .auth
            .issue_limited(
                uid,
                app.tenant,
                Duration::from_secs(600),
                salus_api::auth::TokenLimits {
                    scope: Some(scope.into()),
                    patient: patient.map(|p| uuid::Uuid::parse_str(p).unwrap()),
                },
            )
            .unwrap()
    };
    // patient/*.read in its patient's context: reads its patient, writes nothing.
    let t = token("launch/patient patient/*.read", Some(&p1));
    assert_eq!(
        app.get(&format!("/api/v1/patients/{p1}"), &t)
            .await
            .status(),
        200
    );
    for (m, path, body) in [
        (
            Method::POST,
            "/api/v1/observations".to_string(),
            observation(&p1),
        ),
        (
            Method::PATCH,
            format!("/api/v1/patients/{p1}"),
            json!({"email": "p@example.org"}),
        ),
        (
            Method::POST,
            format!("/api/v1/patients/{p1}/suspend"),
            json!({}),
        ),
        (
            Method::POST,
            "/api/v1/medical-records".into(),
            json!({"patient_id": p1, "department_id": p1}),
        ),
        (
            Method::POST,
            format!("/api/v1/patients/{p1}/care-team"),
            json!({"user_id": uid, "role": "self"}),
        ),
        (
            Method::PUT,
            "/api/v1/care-policy".into(),
            json!({"enforced": false}),
        ),
    ] {
        let r = send(&app, m.clone(), &path, &t, Some(body)).await;
        problem(r, 403, "forbidden").await;
    }
    // No audit data, not even about its own patient (its own access report is the way).
    for path in [
        "/api/v1/audit/events".to_string(),
        format!("/api/v1/audit/events?patient_id={p1}"),
        "/api/v1/audit/access".into(),
        "/api/v1/audit/break-glass".into(),
        format!("/api/v1/patients/{p2}/access"),
    ] {
        problem(app.get(&path, &t).await, 403, "forbidden").await;
    }
    assert_eq!(
        app.get(&format!("/api/v1/patients/{p1}/access"), &t)
            .await
            .status(),
        200
    );
    // The other patient's care team is not there for it; its own is.
    problem(
        app.get(&format!("/api/v1/patients/{p2}/care-team"), &t)
            .await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(
        app.get(&format!("/api/v1/patients/{p1}/care-team"), &t)
            .await
            .status(),
        200
    );
    // user/*.read without a patient: reads across patients, writes nothing.
    let t = token("user/*.read", None);
    assert_eq!(app.get("/api/v1/patients", &t).await.status(), 200);
    let body = problem(
        app.post("/api/v1/patients", &t, &patient("PC-3", "New", "Pat"))
            .await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(body["permission"], "patients:write");
    problem(
        send(
            &app,
            Method::PATCH,
            &format!("/api/v1/patients/{p2}"),
            &t,
            Some(json!({"email": "x@example.org"})),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    app.stop().await;
}

/// Values shaped like SQL injection, LIKE wildcards, quotes and control characters.
const NASTY: &[&str] = &[
    "' OR '1'='1",
    "1; DROP TABLE events; --",
    "%' OR 1=1 --",
    "\") OR 1=1 --",
    "%",
    "_",
    "*",
    "\\",
    "' UNION SELECT doc FROM resources --",
    "a\u{0}b",
    "😀",
];

async fn sql_shaped_filters_are_plain_values_on_every_list(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let p = id(&app.create_patient(&patient("SQL-1", "Drop", "Bobby")).await);
    created(&app, "/api/v1/observations", &app.token, observation(&p)).await;
    let doc: Value = app
        .get("/api/v1/openapi.json", &app.token)
        .await
        .json()
        .await
        .unwrap();
    let mut walked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(op) = item.get("get") else { continue };
        if path.contains('{') || !path.starts_with("/api/v1/") || path.ends_with("openapi.json") {
            continue;
        }
        let params: Vec<String> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .filter(|n| n != "limit" && n != "cursor")
                    .collect()
            })
            .unwrap_or_default();
        let base_query = if path == "/api/v1/notes" {
            "q=stable&"
        } else {
            ""
        };
        let baseline = app
            .client
            .get(app.url(&format!("{path}?{base_query}limit=200")))
            .bearer_auth(&app.token)
            .send()
            .await
            .unwrap();
        let baseline_count = if baseline.status() == 200 {
            baseline
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["items"].as_array().map(Vec::len))
        } else {
            None
        };
        for param in &params {
            for value in NASTY {
                let r = app
                    .client
                    .get(app.url(path))
                    .query(&[(param.as_str(), *value)])
                    .bearer_auth(&app.token)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let text = r.text().await.unwrap();
                assert!(
                    [200, 400, 404, 422].contains(&status),
                    "GET {path}?{param}={value:?}: {status} {text}"
                );
                // No record holds such a value: a filter on it finds nothing (a wildcard
                // or a clause that got through would find the seeded records).
                if status == 200
                    && baseline_count.is_some_and(|b| b > 0)
                    && let Ok(v) = serde_json::from_str::<Value>(&text)
                    && let Some(items) = v["items"].as_array()
                {
                    assert!(
                        items.is_empty(),
                        "GET {path}?{param}={value:?} found records: {text}"
                    );
                }
                walked += 1;
            }
        }
    }
    assert!(walked > 100, "only {walked} filter values tried");
    // A NUL in a body is the client's mistake too.
    for (path, body) in [
        ("/api/v1/patients", patient("NUL-1", "a\u{0}b", "c")),
        (
            "/api/v1/clinicians",
            json!({"family": "x", "credential": "a\u{0}b", "specialty": "s", "org_unit": "o"}),
        ),
        (
            "/api/v1/roles",
            json!({"name": "r\u{0}", "permissions": []}),
        ),
    ] {
        let r = app.post(path, &app.token, &body).await;
        let status = r.status().as_u16();
        assert!(
            (400..500).contains(&status),
            "POST {path} with a NUL: {status} {:?}",
            r.text().await
        );
    }
    // The data is all there afterwards, and the log still verifies.
    let r = app.get(&format!("/api/v1/patients/{p}"), &app.token).await;
    assert_eq!(r.status(), 200);
    let all: Value = app
        .get("/api/v1/audit/events?entity_type=patient", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    app.stop().await;
}

async fn oversized_bodies_are_refused_on_every_route_that_takes_one(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let p = id(&app.create_patient(&patient("BIG-1", "Big", "Bea")).await);
    let doc: Value = app
        .get("/api/v1/openapi.json", &app.token)
        .await
        .json()
        .await
        .unwrap();
    // Just over the JSON body limit (1 MiB by default).
    let big = format!(
        r#"{{"family":"{}"}}"#,
        "a".repeat(app.settings.body_limit + 16)
    );
    let mut walked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["post", "put", "patch"] {
            let Some(op) = item.get(method) else { continue };
            let Some(content) = op["requestBody"]["content"].as_object() else {
                continue;
            };
            let url = path
                .split('/')
                .map(|s| match s {
                    "{id}" => p.clone(),
                    "{name}" => "some-role".into(),
                    "{kind}" => "patients".into(),
                    s if s.starts_with('{') => uuid::Uuid::now_v7().to_string(),
                    s => s.into(),
                })
                .collect::<Vec<_>>()
                .join("/");
            let r = app
                .client
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    app.url(&url),
                )
                .bearer_auth(&app.token)
                .header("content-type", "application/json")
                .header("if-match", "\"1\"")
                .body(big.clone())
                .send()
                .await;
            // A server may close the connection once it has refused a body it will not read.
            let Ok(r) = r else { continue };
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            if content.contains_key("application/json") {
                assert_eq!(status, 413, "{method} {url}: {text}");
                assert!(text.contains("payload-too-large"), "{method} {url}: {text}");
            } else {
                // Uploads take other content types and have limits of their own.
                assert!(
                    (400..500).contains(&status),
                    "{method} {url}: {status} {text}"
                );
            }
            walked += 1;
        }
    }
    assert!(walked > 15, "only {walked} routes walked");
    // Nothing was written.
    let v: Value = app
        .get(&format!("/api/v1/patients/{p}"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["version"], 1);
    app.stop().await;
}

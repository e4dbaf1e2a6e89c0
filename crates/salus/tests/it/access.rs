//! Users, roles, assignments and scopes over real HTTP, on both backends: every route of
//! the route table refuses a request without a token (401), a user without an active role
//! (403) and a user whose role lacks the route's permission (403); tenant roles; expiry and
//! revocation of assignments; privilege escalation; SMART scopes and patient context; the
//! CLI's `salus user` and `salus role`.

use crate::app::{TestApp, on_both_backends, patient, problem};
use reqwest::Method;
use salus_api::guard::{Access, RouteTable};
use serde_json::{Value, json};
use std::time::Duration;

/// A concrete URL for a route pattern: ids are fresh UUIDs, other segments a plausible word.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| match seg {
            "{kind}" => "patients".to_string(),
            "{action}" => "activate".to_string(),
            "{name}" => "some-role".to_string(),
            s if s.starts_with('{') => uuid::Uuid::now_v7().to_string(),
            s => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn call(app: &TestApp, method: &str, path: &str, token: Option<&str>) -> reqwest::Response {
    let m = Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = app.client.request(m, app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request")
}

/// A refusal: problem+json of `kind`, or under `/fhir/` an OperationOutcome with the same
/// status (the FHIR API's error form). Returns the detail (diagnostics) text.
async fn refused(r: reqwest::Response, path: &str, status: u16, kind: &str) -> String {
    if !path.starts_with("/fhir/") {
        let body = problem(r, status, kind).await;
        if kind == "forbidden"
            && let Some(p) = body["permission"].as_str()
        {
            return format!("{} '{p}'", body["detail"].as_str().unwrap_or(""));
        }
        return body["detail"].as_str().unwrap_or("").to_owned();
    }
    assert_eq!(r.status().as_u16(), status, "{path}");
    assert_eq!(
        r.headers()["content-type"],
        "application/fhir+json; charset=utf-8"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    let code = if status == 401 { "login" } else { "forbidden" };
    assert_eq!(body["issue"][0]["code"], code, "{body}");
    body["issue"][0]["diagnostics"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// A user holding only the tenant role `name` with `permissions`; returns its token.
async fn user_with_role(app: &TestApp, username: &str, name: &str, permissions: &[&str]) -> String {
    let r = app
        .post(
            "/api/v1/roles",
            &app.token,
            &json!({"name": name, "permissions": permissions}),
        )
        .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    app.token_for(username, &[name]).await
}

on_both_backends!(every_route_enforces_its_declared_permission);

async fn every_route_enforces_its_declared_permission(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let table = RouteTable::from_openapi(&salus_api::openapi());
    let routes = table.entries();
    assert!(routes.len() > 60);
    let nobody = app.token_for("nobody", &[]).await;
    let reader = user_with_role(&app, "reader", "clinician-reader", &["clinicians:read"]).await;
    for (method, path, access) in &routes {
        let url = concrete(path);
        match access {
            Access::Public => {
                let r = call(&app, method, &url, None).await;
                assert!(
                    r.status().is_success(),
                    "{method} {path} is public: {}",
                    r.status()
                );
            }
            Access::Permission(p) => {
                let r = call(&app, method, &url, None).await;
                refused(r, path, 401, "unauthorized").await;
                let r = call(&app, method, &url, Some(&nobody)).await;
                let detail = refused(r, path, 403, "forbidden").await;
                assert!(detail.contains("no active role"), "{detail}");
                let r = call(&app, method, &url, Some(&reader)).await;
                if p.as_str() == "clinicians:read" {
                    assert_ne!(r.status(), 403, "{method} {path}");
                } else {
                    let detail = refused(r, path, 403, "forbidden").await;
                    assert!(
                        detail.contains(&format!("'{}'", p.as_str())),
                        "{method} {path}: {detail}"
                    );
                }
            }
            Access::Undeclared => panic!("{method} {path} declares no permission"),
        }
    }
    // The refusals are counted by the permission lacked.
    let metrics = app.get("/metrics", "").await.text().await.unwrap();
    assert!(
        metrics.contains("salus_access_denied_total{permission=\"active_role\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("salus_access_denied_total{permission=\"patients:read\"}"));
    // The OpenAPI document shows each operation's permission.
    let doc: Value = app
        .get("/api/v1/openapi.json", "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["paths"]["/api/v1/patients/{id}"]["get"]["security"][0]["bearer"][0],
        "patients:read"
    );
    app.stop().await;
}

on_both_backends!(tenant_roles_are_defined_from_the_list_and_built_in_ones_are_fixed);

async fn tenant_roles_are_defined_from_the_list_and_built_in_ones_are_fixed(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .post(
            "/api/v1/roles",
            &app.token,
            &json!({"name": "ward-clerk", "permissions": ["patients:read", "patients:delete"]}),
        )
        .await;
    let body = problem(r, 422, "validation").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("'patients:delete'"),
        "{body}"
    );
    assert_eq!(body["field"], "permissions");
    for name in ["admin", "Viewer"] {
        let r = app
            .post(
                "/api/v1/roles",
                &app.token,
                &json!({"name": name, "permissions": []}),
            )
            .await;
        problem(r, 409, "conflict").await;
    }
    // Idempotency-Key: a retry replays the first answer.
    let define = || {
        app.client
            .post(app.url("/api/v1/roles"))
            .bearer_auth(&app.token)
            .header("idempotency-key", "role-0001")
            .json(&json!({"name": "ward-clerk", "description": "front desk", "permissions": ["patients:read"]}))
            .send()
    };
    let r = define().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["etag"], "\"1\"");
    let first: Value = r.json().await.unwrap();
    let r = define().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let r = app
        .post(
            "/api/v1/roles",
            &app.token,
            &json!({"name": "ward-clerk", "permissions": []}),
        )
        .await;
    problem(r, 409, "conflict").await;

    // A holder reads patients but cannot register one; a changed role counts at once.
    let clerk = app.token_for("clerk", &["ward-clerk"]).await;
    assert_eq!(app.get("/api/v1/patients", &clerk).await.status(), 200);
    problem(
        app.post("/api/v1/patients", &clerk, &patient("R-1", "A", "B"))
            .await,
        403,
        "forbidden",
    )
    .await;
    let role: Value = app
        .get("/api/v1/roles/ward-clerk", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(role["permissions"], json!(["patients:read"]));
    assert_eq!(role["builtin"], false);
    let patch = |etag: &str, body: Value| {
        app.client
            .patch(app.url("/api/v1/roles/ward-clerk"))
            .bearer_auth(&app.token)
            .header("if-match", etag.to_string())
            .json(&body)
            .send()
    };
    problem(
        patch("\"7\"", json!({"permissions": ["patients:write"]}))
            .await
            .unwrap(),
        412,
        "precondition-failed",
    )
    .await;
    let r = patch(
        "\"1\"",
        json!({"permissions": ["patients:read", "patients:write"]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"2\"");
    assert_eq!(
        app.post("/api/v1/patients", &clerk, &patient("R-1", "A", "B"))
            .await
            .status(),
        201
    );
    let h: Value = app
        .get("/api/v1/roles/ward-clerk/history", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(h["items"][1]["event_type"], "role.changed");

    // Built-in roles are listed and read-only.
    let list: Value = app
        .get("/api/v1/roles", &app.token)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["admin", "provider", "viewer", "auditor", "ward-clerk"]
    );
    let r = app
        .client
        .patch(app.url("/api/v1/roles/viewer"))
        .bearer_auth(&app.token)
        .header("if-match", "\"1\"")
        .json(&json!({"permissions": ["patients:write"]}))
        .send()
        .await
        .unwrap();
    problem(r, 409, "conflict").await;
    let perms: Value = app
        .get("/api/v1/permissions", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        perms["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "orders:write:medication")
    );
    app.stop().await;
}

/// A new user (no role) and its token; returns (id, token).
async fn bare_user(app: &TestApp, username: &str) -> (String, String) {
    let r = app
        .post("/api/v1/users", &app.token, &json!({"username": username}))
        .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let u: Value = r.json().await.unwrap();
    let id = u["id"].as_str().unwrap().to_owned();
    let running = app.running.as_ref().unwrap();
    let token = running
        .auth
        .issue(
            uuid::Uuid::parse_str(&id).unwrap(),
            app.tenant,
            Duration::from_secs(600),
        )
        .unwrap();
    (id, token)
}

/// How long the windows of the expiry test last: long enough for a request on a busy
/// machine, short enough to wait out.
const WINDOW_SECS: i64 = 3;

fn in_secs(s: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds(s * 1000)).to_rfc3339()
}

on_both_backends!(assignments_expire_on_their_own_and_revocation_is_final);

async fn assignments_expire_on_their_own_and_revocation_is_final(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let (id, token) = bare_user(&app, "locum").await;
    let grants = format!("/api/v1/users/{id}/assignments");
    problem(app.get("/api/v1/patients", &token).await, 403, "forbidden").await;

    // A window already past never counts: refused at grant time.
    let r = app
        .post(
            &grants,
            &app.token,
            &json!({"role": "viewer", "valid_until": in_secs(-1)}),
        )
        .await;
    assert_eq!(problem(r, 422, "validation").await["field"], "valid_until");
    let r = app
        .post(&grants, &app.token, &json!({"role": "no-such-role"}))
        .await;
    let body = problem(r, 422, "validation").await;
    assert!(body["detail"].as_str().unwrap().contains("no-such-role"));

    // Counts until valid_until, then stops by itself (no job, no request in between).
    let r = app
        .post(
            &grants,
            &app.token,
            &json!({"role": "viewer", "valid_until": in_secs(WINDOW_SECS), "reason": "night cover"}),
        )
        .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let u: Value = r.json().await.unwrap();
    assert_eq!(u["assignments"][0]["status"], "active");
    assert_eq!(app.get("/api/v1/patients", &token).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(WINDOW_SECS as u64 * 1000 + 300)).await;
    problem(app.get("/api/v1/patients", &token).await, 403, "forbidden").await;
    let u: Value = app
        .get(&format!("/api/v1/users/{id}"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(u["assignments"][0]["status"], "expired");

    // One that starts later counts only from valid_from.
    let r = app
        .post(
            &grants,
            &app.token,
            &json!({"role": "viewer", "valid_from": in_secs(WINDOW_SECS)}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let u: Value = r.json().await.unwrap();
    assert_eq!(u["assignments"][1]["status"], "pending");
    problem(app.get("/api/v1/patients", &token).await, 403, "forbidden").await;
    tokio::time::sleep(Duration::from_millis(WINDOW_SECS as u64 * 1000 + 300)).await;
    assert_eq!(app.get("/api/v1/patients", &token).await.status(), 200);

    // Revoked: at once, for good, with who, why and when.
    let aid = u["assignments"][1]["id"].as_str().unwrap().to_owned();
    let version = u["version"].as_i64().unwrap();
    let act = |action: &str, etag: i64, body: Value| {
        app.client
            .post(app.url(&format!("/api/v1/users/{id}/assignments/{aid}/{action}")))
            .bearer_auth(&app.token)
            .header("if-match", format!("\"{etag}\""))
            .json(&body)
            .send()
    };
    problem(
        act("revoke", version, json!({})).await.unwrap(),
        422,
        "validation",
    )
    .await;
    let r = act("revoke", version, json!({"reason": "contract ended"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let u: Value = r.json().await.unwrap();
    let a = &u["assignments"][1];
    assert_eq!(a["status"], "revoked");
    assert_eq!(a["revoked"]["reason"], "contract ended");
    assert!(a["revoked"]["by"].is_string() && a["revoked"]["at"].is_string());
    problem(app.get("/api/v1/patients", &token).await, 403, "forbidden").await;
    let v = u["version"].as_i64().unwrap();
    problem(
        act("revoke", v, json!({"reason": "again"})).await.unwrap(),
        409,
        "conflict",
    )
    .await;
    let body = problem(
        act("reactivate", v, json!({})).await.unwrap(),
        409,
        "conflict",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("grant"), "{body}");
    // The way back is a new assignment.
    assert_eq!(
        app.post(&grants, &app.token, &json!({"role": "viewer"}))
            .await
            .status(),
        201
    );
    assert_eq!(app.get("/api/v1/patients", &token).await.status(), 200);
    let h: Value = app
        .get(&format!("/api/v1/users/{id}/history"), &app.token)
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
            "user.created",
            "user.role_granted",
            "user.role_granted",
            "user.role_revoked",
            "user.role_granted"
        ]
    );

    // Disabled users are refused outright.
    let v: Value = app
        .get(&format!("/api/v1/users/{id}"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    let r = app
        .client
        .post(app.url(&format!("/api/v1/users/{id}/disable")))
        .bearer_auth(&app.token)
        .header("if-match", format!("\"{}\"", v["version"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    problem(
        app.get("/api/v1/patients", &token).await,
        401,
        "unauthorized",
    )
    .await;
    app.stop().await;
}

on_both_backends!(no_one_grants_what_they_do_not_hold);

async fn no_one_grants_what_they_do_not_hold(backend: &str) {
    let app = TestApp::spawn(backend).await;
    // A provider granting itself admin: it lacks roles:grant.
    let (pid, provider) = bare_user(&app, "doc").await;
    let r = app
        .post(
            &format!("/api/v1/users/{pid}/assignments"),
            &app.token,
            &json!({"role": "provider"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = app
        .post(
            &format!("/api/v1/users/{pid}/assignments"),
            &provider,
            &json!({"role": "admin"}),
        )
        .await;
    let body = problem(r, 403, "forbidden").await;
    assert_eq!(body["permission"], "roles:grant");

    // A ward manager may grant, but only roles within what it holds, and never admin.
    let manager = user_with_role(
        &app,
        "manager",
        "ward-manager",
        &[
            "patients:read",
            "patients:write",
            "roles:grant",
            "users:read",
            "roles:read",
        ],
    )
    .await;
    let (tid, _) = bare_user(&app, "trainee").await;
    let grants = format!("/api/v1/users/{tid}/assignments");
    let r = app.post(&grants, &manager, &json!({"role": "admin"})).await;
    let body = problem(r, 403, "forbidden").await;
    assert!(body["detail"].as_str().unwrap().contains("admin"), "{body}");
    let r = app
        .post(&grants, &manager, &json!({"role": "viewer"}))
        .await;
    let body = problem(r, 403, "forbidden").await;
    assert!(
        body["detail"].as_str().unwrap().contains("notes:read"),
        "{body}"
    );
    // Its own role is within what it holds.
    let r = app
        .post(&grants, &manager, &json!({"role": "ward-manager"}))
        .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    // Nor may it revoke the admin's assignment.
    let admins: Value = app
        .get("/api/v1/users?role=admin", &manager)
        .await
        .json()
        .await
        .unwrap();
    let admin = &admins["items"][0];
    let aid = admin["assignments"][0]["id"].as_str().unwrap();
    let r = app
        .client
        .post(app.url(&format!(
            "/api/v1/users/{}/assignments/{aid}/revoke",
            admin["id"].as_str().unwrap()
        )))
        .bearer_auth(&manager)
        .header("if-match", format!("\"{}\"", admin["version"]))
        .json(&json!({"reason": "coup"}))
        .send()
        .await
        .unwrap();
    problem(r, 403, "forbidden").await;
    // Creating a user with roles needs roles:grant (and the same rule) as well as users:write.
    let r = app
        .post(
            "/api/v1/users",
            &manager,
            &json!({"username": "x", "roles": ["admin"]}),
        )
        .await;
    problem(r, 403, "forbidden").await;
    let r = app
        .post(
            "/api/v1/users",
            &app.token,
            &json!({"username": "auditor1", "roles": ["auditor"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    app.stop().await;
}

on_both_backends!(smart_scopes_narrow_tokens_and_patient_context_confines_them);

async fn smart_scopes_narrow_tokens_and_patient_context_confines_them(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let p1 = app.create_patient(&patient("S-1", "One", "Pat")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p2 = app.create_patient(&patient("S-2", "Two", "Pat")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let obs = |pid: &str| {
        json!({"patient_id": pid, "code": {"system": "http://loinc.org", "code": "8480-6"},
        "value": {"type": "quantity", "value": 120, "unit": "mm[Hg]"}})
    };
    let r = app
        .post("/api/v1/observations", &app.token, &obs(&p1))
        .await;
    assert_eq!(r.status(), 201);
    let o1: Value = r.json().await.unwrap();
    let r = app
        .post("/api/v1/observations", &app.token, &obs(&p2))
        .await;
    let o2: Value = r.json().await.unwrap();

    let running = app.running.as_ref().unwrap();
    let (uid, _) = bare_user(&app, "app-user").await;
    let r = app
        .post(
            &format!("/api/v1/users/{uid}/assignments"),
            &app.token,
            &json!({"role": "provider"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let uid = uuid::Uuid::parse_str(&uid).unwrap();
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

    // user/Observation.rs (v2) reads observations and nothing else; .read (v1) is the same.
    for scope in ["openid user/Observation.rs", "user/Observation.read"] {
        let t = token(scope, None);
        assert_eq!(app.get("/api/v1/observations", &t).await.status(), 200);
        let body = problem(app.get("/api/v1/patients", &t).await, 403, "forbidden").await;
        assert_eq!(body["permission"], "patients:read");
        problem(
            app.post("/api/v1/observations", &t, &obs(&p1)).await,
            403,
            "forbidden",
        )
        .await;
    }
    // Scopes never add to roles: system/*.* does not make a provider an admin.
    let t = token("system/*.*", None);
    assert_eq!(
        app.post("/api/v1/observations", &t, &obs(&p1))
            .await
            .status(),
        201
    );
    problem(app.get("/api/v1/users", &t).await, 403, "forbidden").await;
    // Only non-resource scopes: the roles alone count.
    assert_eq!(
        app.get("/api/v1/patients", &token("openid profile", None))
            .await
            .status(),
        200
    );
    // A malformed resource scope grants nothing (fail closed).
    problem(
        app.get("/api/v1/observations", &token("user/Observation.sr", None))
            .await,
        403,
        "forbidden",
    )
    .await;
    // patient/ scopes need a patient context.
    problem(
        app.get("/api/v1/observations", &token("patient/*.read", None))
            .await,
        403,
        "forbidden",
    )
    .await;

    // A patient-context token sees its patient only; others are not there (404).
    let t = token("launch/patient patient/*.read", Some(&p1));
    assert_eq!(
        app.get(&format!("/api/v1/patients/{p1}"), &t)
            .await
            .status(),
        200
    );
    problem(
        app.get(&format!("/api/v1/patients/{p2}"), &t).await,
        404,
        "not-found",
    )
    .await;
    problem(
        app.get(&format!("/api/v1/patients/{p2}/history"), &t).await,
        404,
        "not-found",
    )
    .await;
    let oid = |o: &Value| o["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get(&format!("/api/v1/observations/{}", oid(&o1)), &t)
            .await
            .status(),
        200
    );
    problem(
        app.get(&format!("/api/v1/observations/{}", oid(&o2)), &t)
            .await,
        404,
        "not-found",
    )
    .await;
    problem(
        app.get(&format!("/api/v1/observations/{}/history", oid(&o2)), &t)
            .await,
        404,
        "not-found",
    )
    .await;
    problem(
        app.get(&format!("/api/v1/observations?patient_id={p2}"), &t)
            .await,
        404,
        "not-found",
    )
    .await;
    let list: Value = app
        .get("/api/v1/observations", &t)
        .await
        .json()
        .await
        .unwrap();
    let items = list["items"].as_array().unwrap();
    assert!(!items.is_empty());
    assert!(
        items.iter().all(|o| o["patient_id"] == p1.as_str()),
        "{list}"
    );
    // Lists across patients and writes are refused.
    problem(app.get("/api/v1/patients", &t).await, 403, "forbidden").await;
    let t = token("patient/*.*", Some(&p1));
    problem(
        app.post("/api/v1/observations", &t, &obs(&p1)).await,
        403,
        "forbidden",
    )
    .await;
    // A patient context without scopes still reaches clinical data only, even for an admin.
    let me: Value = app
        .get("/api/v1/users?username=admin", &app.token)
        .await
        .json()
        .await
        .unwrap();
    let admin_id = uuid::Uuid::parse_str(me["items"][0]["id"].as_str().unwrap()).unwrap();
    let admin = running
        .auth
        .issue_limited(
            admin_id,
            app.tenant,
            Duration::from_secs(600),
            salus_api::auth::TokenLimits {
                scope: None,
                patient: Some(uuid::Uuid::parse_str(&p1).unwrap()),
            },
        )
        .unwrap();
    assert_eq!(
        app.get(&format!("/api/v1/patients/{p1}"), &admin)
            .await
            .status(),
        200
    );
    problem(
        app.get(&format!("/api/v1/patients/{p2}"), &admin).await,
        404,
        "not-found",
    )
    .await;
    for path in ["/api/v1/exports/patients", "/api/v1/users", "/api/v1/roles"] {
        problem(app.get(path, &admin).await, 403, "forbidden").await;
    }
    app.stop().await;
}

on_both_backends!(the_cli_manages_users_roles_and_assignments);

async fn the_cli_manages_users_roles_and_assignments(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let mut args = vec![
        "--data-dir".to_string(),
        app.settings.data_dir.to_string_lossy().into_owned(),
    ];
    if let Some(url) = &app.settings.database_url {
        args.push("--database-url".into());
        args.push(url.clone());
    }
    let _data = app.stop().await;
    let run = |cmd: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_salus"))
            .args(&args)
            .args(cmd)
            .env("SALUS_LOG", "warn")
            .output()
            .expect("run salus");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["user", "create", "--username", "nurse1", "--roles", ""]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = run(&[
        "role",
        "create",
        "ward-nurse",
        "--permissions",
        "patients:read,notes:wrote",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("notes:wrote"), "{err}");
    let (code, out, err) = run(&[
        "role",
        "create",
        "ward-nurse",
        "--permissions",
        "patients:read,notes:write",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&["role", "grant", "nurse1", "ward-nurse", "--reason", "rota"]);
    assert_eq!(code, 0, "{out}{err}");
    let aid = out.trim().rsplit(' ').next().unwrap().to_owned();
    let (_, out, _) = run(&["role", "list"]);
    assert!(
        out.contains("ward-nurse\ttenant\tpatients:read,notes:write"),
        "{out}"
    );
    assert!(out.contains("admin\tbuilt-in"), "{out}");
    let (_, out, _) = run(&["user", "list"]);
    assert!(
        out.lines()
            .any(|l| l.contains("\tnurse1\tactive\tward-nurse")),
        "{out}"
    );
    let (code, out, err) = run(&["role", "revoke", "nurse1", &aid, "--reason", "left"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = run(&["role", "revoke", "nurse1", &aid, "--reason", "twice"]);
    assert_eq!(code, 1);
    assert!(err.contains("already revoked"), "{err}");
    let (_, out, _) = run(&["role", "assignments", "nurse1"]);
    assert!(
        out.contains(&format!("{aid}\tward-nurse\trevoked")),
        "{out}"
    );
    assert!(out.contains(": left"), "{out}");
    let (code, out, err) = run(&["user", "disable", "nurse1"]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = run(&["user", "list"]);
    assert!(
        out.lines().any(|l| l.contains("\tnurse1\tdisabled")),
        "{out}"
    );
}

on_both_backends!(users_and_roles_stay_in_their_tenant);

async fn users_and_roles_stay_in_their_tenant(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .post(
            "/api/v1/roles",
            &app.token,
            &json!({"name": "ward-clerk", "permissions": ["patients:read"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let (uid, _) = bare_user(&app, "clerk").await;
    let other = app.other_tenant("elsewhere").await;
    // The other tenant's admin sees neither the user nor the role, and cannot grant to it.
    problem(
        app.get(&format!("/api/v1/users/{uid}"), &other).await,
        404,
        "not-found",
    )
    .await;
    problem(
        app.get("/api/v1/roles/ward-clerk", &other).await,
        404,
        "not-found",
    )
    .await;
    let r = app
        .post(
            &format!("/api/v1/users/{uid}/assignments"),
            &other,
            &json!({"role": "viewer"}),
        )
        .await;
    problem(r, 404, "not-found").await;
    let users: Value = app.get("/api/v1/users", &other).await.json().await.unwrap();
    let names: Vec<&str> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin"]);
    // A role of one tenant means nothing in another: granting it there is a 422.
    let them: Value = app
        .get("/api/v1/users?username=admin", &other)
        .await
        .json()
        .await
        .unwrap();
    let their_admin = them["items"][0]["id"].as_str().unwrap().to_owned();
    let r = app
        .post(
            &format!("/api/v1/users/{their_admin}/assignments"),
            &other,
            &json!({"role": "ward-clerk"}),
        )
        .await;
    problem(r, 422, "validation").await;
    app.stop().await;
}

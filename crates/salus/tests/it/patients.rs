//! The patient registry over HTTP.

use crate::app::{TestApp, on_both_backends, patient, problem};
use serde_json::{Value, json};

on_both_backends!(
    register_read_update_and_history,
    lifecycle_actions_follow_the_table,
    bad_input_is_a_clear_client_error,
    idempotency_key_replays_the_first_response,
    search_by_name_identifier_birth_date_and_status_with_paging,
    concurrent_registrations_all_land,
    merge_redirects_reads_to_the_survivor_and_unmerge_restores,
);

async fn register_read_update_and_history(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .post(
            "/api/v1/patients/",
            &app.token,
            &patient("M-1", "Müller", "Zoë"),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["etag"], "\"1\"");
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["status"], "registered");
    assert_eq!(created["phones"][0], "+442079460958");
    assert_eq!(
        location,
        format!("/api/v1/patients/{}", created["id"].as_str().unwrap())
    );

    let r = app.get(&location, &app.token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"1\"");
    let read: Value = r.json().await.unwrap();
    assert_eq!(read, created, "the read returns what the create answered");

    // An update needs If-Match.
    let patch = json!({"email": "zoe@example.org", "phones": null});
    let r = app
        .client
        .patch(app.url(&location))
        .bearer_auth(&app.token)
        .json(&patch)
        .send()
        .await
        .unwrap();
    problem(r, 428, "precondition-required").await;
    let r = app
        .client
        .patch(app.url(&location))
        .bearer_auth(&app.token)
        .header("if-match", "\"1\"")
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"2\"");
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["email"], "zoe@example.org");
    assert_eq!(updated["phones"], json!([]));
    assert_eq!(
        updated["name"], created["name"],
        "a merge patch keeps what it does not name"
    );
    // A stale If-Match loses nothing: 412 and the data stays.
    let r = app
        .client
        .patch(app.url(&location))
        .bearer_auth(&app.token)
        .header("if-match", "\"1\"")
        .json(&json!({"email": "lost@example.org"}))
        .send()
        .await
        .unwrap();
    let body = problem(r, 412, "precondition-failed").await;
    assert_eq!(body["current_version"], 2);
    // A patch that makes the patient invalid is refused.
    let r = app
        .client
        .patch(app.url(&location))
        .bearer_auth(&app.token)
        .header("if-match", "\"2\"")
        .json(&json!({"birth_date": "2999-01-01"}))
        .send()
        .await
        .unwrap();
    problem(r, 422, "validation").await;

    // History: both events, oldest first, chained.
    let h: Value = app
        .get(&format!("{location}/history"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    let items = h["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["event_type"], "patient.registered");
    assert_eq!(items[1]["event_type"], "patient.updated");
    assert_eq!(items[1]["version"], 2);

    // as_of the first event's time shows the patient before the update.
    let first_time = items[0]["recorded_at"].as_str().unwrap();
    let r = app
        .client
        .get(app.url(&location))
        .bearer_auth(&app.token)
        .query(&[("as_of", first_time)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"1\"");
    let past: Value = r.json().await.unwrap();
    assert_eq!(past["email"], Value::Null);
    assert_eq!(past["version"], 1);
    let r = app
        .client
        .get(app.url(&location))
        .bearer_auth(&app.token)
        .query(&[("as_of", "2000-01-01T00:00:00Z")])
        .send()
        .await
        .unwrap();
    problem(r, 404, "not-found").await;
    let r = app
        .client
        .get(app.url(&location))
        .bearer_auth(&app.token)
        .query(&[("as_of", "yesterday")])
        .send()
        .await
        .unwrap();
    problem(r, 400, "bad-request").await;
    // Unknown and malformed ids are 404s.
    problem(
        app.get("/api/v1/patients/not-a-uuid", &app.token).await,
        404,
        "not-found",
    )
    .await;
    problem(
        app.get(
            &format!("/api/v1/patients/{}", uuid::Uuid::now_v7()),
            &app.token,
        )
        .await,
        404,
        "not-found",
    )
    .await;
    app.stop().await;
}

async fn lifecycle_actions_follow_the_table(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let p = app.create_patient(&patient("L-1", "Doe", "Jo")).await;
    let base = format!("/api/v1/patients/{}", p["id"].as_str().unwrap());
    let act = |action: &str, version: i64, body: Option<Value>| {
        let mut req = app
            .client
            .post(app.url(&format!("{base}/{action}")))
            .bearer_auth(&app.token)
            .header("if-match", format!("\"{version}\""));
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send()
    };
    let body = problem(
        act("suspend", 1, None).await.unwrap(),
        422,
        "illegal-transition",
    )
    .await;
    assert_eq!(body["allowed_from"], json!(["active"]));
    assert_eq!(body["current_status"], "registered");
    let r = act("activate", 1, None).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "active");
    let r = act("suspend", 2, Some(json!({"reason": "moved away"})))
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "suspended");
    assert_eq!(v["status_reason"], "moved away");
    problem(
        act("suspend", 2, None).await.unwrap(),
        412,
        "precondition-failed",
    )
    .await;
    problem(act("teleport", 3, None).await.unwrap(), 404, "not-found").await;
    let r = act("record-death", 3, Some(json!({"date": "2026-01-02"})))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = problem(
        act("reactivate", 4, None).await.unwrap(),
        422,
        "rule-violation",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("deceased"));
    let r = act("retire", 4, None).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "retired");
    let body = problem(
        act("activate", 5, None).await.unwrap(),
        422,
        "illegal-transition",
    )
    .await;
    assert_eq!(body["allowed_from"], json!(["registered"]));
    let r = app
        .client
        .patch(app.url(&base))
        .bearer_auth(&app.token)
        .header("if-match", "\"5\"")
        .json(&json!({"email": "a@b.org"}))
        .send()
        .await
        .unwrap();
    problem(r, 422, "rule-violation").await;
    app.stop().await;
}

async fn bad_input_is_a_clear_client_error(backend: &str) {
    let app = TestApp::spawn_with(backend, |s| s.body_limit = 4096).await;
    let url = app.url("/api/v1/patients");
    let send = |body: &'static str, ct: &'static str| {
        app.client
            .post(&url)
            .bearer_auth(&app.token)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    problem(
        send("{not json", "application/json").await.unwrap(),
        400,
        "bad-request",
    )
    .await;
    problem(
        send("{}", "text/plain").await.unwrap(),
        415,
        "unsupported-media-type",
    )
    .await;
    let body = problem(
        send(
            r#"{"name":[{"family":"A"}],"favourite_colour":"red"}"#,
            "application/json",
        )
        .await
        .unwrap(),
        422,
        "validation",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("favourite_colour")
    );
    let body = problem(
        send(
            r#"{"name":[{"family":"A"}],"phones":["555-1234"]}"#,
            "application/json",
        )
        .await
        .unwrap(),
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "phone");
    let body = problem(
        send(r#"{"name":[]}"#, "application/json").await.unwrap(),
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "name");
    problem(
        send(
            r#"{"name":[{"family":"A"}],"gender":"robot"}"#,
            "application/json",
        )
        .await
        .unwrap(),
        422,
        "validation",
    )
    .await;
    let big = format!(r#"{{"name":[{{"family":"{}"}}]}}"#, "a".repeat(5000));
    let r = app
        .client
        .post(&url)
        .bearer_auth(&app.token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    problem(r, 413, "payload-too-large").await;
    // The same identifier twice is a conflict naming the holder.
    let first = app.create_patient(&patient("D-1", "One", "A")).await;
    let body = problem(
        app.post("/api/v1/patients", &app.token, &patient("D-1", "Two", "B"))
            .await,
        409,
        "conflict",
    )
    .await;
    assert_eq!(body["existing_id"], first["id"]);
    // Two values in one system on one patient are refused.
    let two = json!({"name": [{"family": "A"}], "identifiers": [{"system": "s", "value": "1"}, {"system": "s", "value": "2"}]});
    problem(
        app.post("/api/v1/patients", &app.token, &two).await,
        422,
        "validation",
    )
    .await;
    app.stop().await;
}

async fn idempotency_key_replays_the_first_response(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let url = app.url("/api/v1/patients");
    let body = patient("I-1", "Idem", "Potent");
    let send = |b: &Value, key: &str| {
        app.client
            .post(&url)
            .bearer_auth(&app.token)
            .header("idempotency-key", key)
            .json(b)
            .send()
    };
    let first = send(&body, "key-1").await.unwrap();
    assert_eq!(first.status(), 201);
    let first_location = first.headers()["location"].clone();
    let first_body: Value = first.json().await.unwrap();
    let again = send(&body, "key-1").await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], first_location);
    assert_eq!(again.headers()["etag"], "\"1\"");
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        first_body,
        "same status and body"
    );
    // The same key with another body is refused.
    problem(
        send(&patient("I-2", "Other", "Body"), "key-1")
            .await
            .unwrap(),
        422,
        "idempotency-key-reused",
    )
    .await;
    // Only one patient exists.
    let page: Value = app
        .get("/api/v1/patients?name=idem", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    // Concurrent duplicates with one key: one patient, every answer identical.
    let body = patient("I-3", "Race", "Key");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, u, t, b) = (
            app.client.clone(),
            url.clone(),
            app.token.clone(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(u)
                .bearer_auth(t)
                .header("idempotency-key", "race")
                .json(&b)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (status, b) = t.await.unwrap();
        if status == 201 {
            ids.insert(b["id"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(status, 409, "{b}");
        }
    }
    assert_eq!(ids.len(), 1);
    let page: Value = app
        .get("/api/v1/patients?name=race", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    // Keys are per user: another user's same key is a new request.
    let other = app.token_for("nurse", &["provider"]).await;
    let r = app
        .client
        .post(&url)
        .bearer_auth(&other)
        .header("idempotency-key", "key-1")
        .json(&patient("I-4", "Else", "Where"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    app.stop().await;
}

async fn search_by_name_identifier_birth_date_and_status_with_paging(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let people = [
        ("S-1", "Müller", "Zoë", "1970-01-01"),
        ("S-2", "Mulligan", "Aoife", "1980-06-15"),
        ("S-3", "Smith", "José", "1990-12-31"),
        ("S-4", "MULLER", "Hans", "1980-06-15"),
        ("S-5", "Okafor", "Ngozi", "2001-03-03"),
    ];
    let mut ids = Vec::new();
    for (mrn, family, given, born) in people {
        let mut b = patient(mrn, family, given);
        b["birth_date"] = json!(born);
        ids.push(
            app.create_patient(&b).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let app_ref = &app;
    let names = |q: &'static str| async move {
        let page: Value = app_ref
            .get(&format!("/api/v1/patients?{q}"), &app_ref.token)
            .await
            .json()
            .await
            .unwrap();
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["identifiers"][0]["value"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names("name=mul").await, vec!["S-1", "S-2", "S-4"]);
    assert_eq!(
        names("name=MULLER").await,
        vec!["S-1", "S-4"],
        "case and accents fold"
    );
    assert_eq!(names("name=zoe").await, vec!["S-1"]);
    assert_eq!(
        names("name=jose%20smith").await,
        vec!["S-3"],
        "full-name prefix"
    );
    assert_eq!(names("identifier=urn:mrn%7CS-3").await, vec!["S-3"]);
    assert_eq!(names("identifier=S-5").await, vec!["S-5"]);
    assert_eq!(names("identifier=other%7CS-5").await, Vec::<String>::new());
    assert_eq!(names("birth_date=1980-06-15").await, vec!["S-2", "S-4"]);
    assert_eq!(names("birth_date=ge1990-01-01").await, vec!["S-3", "S-5"]);
    assert_eq!(names("birth_date=lt1980-06-15&name=m").await, vec!["S-1"]);
    assert_eq!(names("status=registered&name=ok").await, vec!["S-5"]);
    assert_eq!(names("status=active").await, Vec::<String>::new());
    // Paging: every patient once, in registration order, across pages of 2.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut url = app.url("/api/v1/patients?limit=2");
        if let Some(c) = &next {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app
            .client
            .get(url)
            .bearer_auth(&app.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for p in page["items"].as_array().unwrap() {
            seen.push(p["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => next = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    problem(
        app.get("/api/v1/patients?colour=red", &app.token).await,
        400,
        "bad-request",
    )
    .await;
    problem(
        app.get("/api/v1/patients?limit=0", &app.token).await,
        400,
        "bad-request",
    )
    .await;
    problem(
        app.get("/api/v1/patients?cursor=zzz", &app.token).await,
        400,
        "bad-request",
    )
    .await;
    problem(
        app.get("/api/v1/patients?status=dead", &app.token).await,
        400,
        "bad-request",
    )
    .await;
    app.stop().await;
}

async fn concurrent_registrations_all_land(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (c, u, t) = (
            app.client.clone(),
            app.url("/api/v1/patients"),
            app.token.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(u)
                .bearer_auth(t)
                .json(&patient(&format!("C-{i}"), "Concurrent", "Case"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    for id in ids {
        assert_eq!(
            app.get(&format!("/api/v1/patients/{id}"), &app.token)
                .await
                .status(),
            200
        );
    }
    app.stop().await;
}

async fn merge_redirects_reads_to_the_survivor_and_unmerge_restores(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_patient(&patient("MG-1", "Dup", "Licate")).await;
    let b = app.create_patient(&patient("MG-2", "Dup", "Licate")).await;
    let (aid, bid) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );
    let act = |id: &str, action: &str, version: i64, body: Value| {
        let app = &app;
        let url = app.url(&format!("/api/v1/patients/{id}/{action}"));
        async move {
            app.client
                .post(url)
                .bearer_auth(&app.token)
                .header("if-match", format!("\"{version}\""))
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    problem(act(&aid, "merge", 1, json!({})).await, 422, "validation").await;
    problem(
        act(&aid, "merge", 1, json!({"into": aid})).await,
        422,
        "validation",
    )
    .await;
    problem(
        act(&aid, "merge", 1, json!({"into": uuid::Uuid::now_v7()})).await,
        422,
        "validation",
    )
    .await;
    let merged: Value = act(&aid, "merge", 1, json!({"into": bid}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(merged["merged_into"], bid);
    assert_eq!(
        merged["identifiers"], a["identifiers"],
        "nothing moves silently"
    );
    // Reads of the merged patient redirect to the survivor.
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_follow
        .get(app.url(&format!("/api/v1/patients/{aid}")))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(r.headers()["location"], format!("/api/v1/patients/{bid}"));
    let followed: Value = app
        .get(&format!("/api/v1/patients/{aid}"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(followed["id"], bid);
    // The merged record takes no changes; the survivor cannot be merged into a merged one.
    problem(
        act(&aid, "suspend", 2, json!({})).await,
        422,
        "rule-violation",
    )
    .await;
    problem(
        act(&bid, "merge", 1, json!({"into": aid})).await,
        422,
        "validation",
    )
    .await;
    // Unmerge restores both.
    let restored: Value = act(&aid, "unmerge", 2, json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert!(restored.get("merged_into").is_none());
    let r = no_follow
        .get(app.url(&format!("/api/v1/patients/{aid}")))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h: Value = app
        .get(&format!("/api/v1/patients/{aid}/history"), &app.token)
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
        ["patient.registered", "patient.merged", "patient.unmerged"]
    );
    app.stop().await;
}

//! Interactions and configurable outcomes over HTTP (requirements/004's API).

use crate::app::{TestApp, on_both_backends, patient, problem};
use serde_json::{Value, json};

on_both_backends!(
    outcomes_are_tenant_data_and_interactions_use_them,
    interactions_are_amended_and_entered_in_error_by_events,
);

async fn outcomes_are_tenant_data_and_interactions_use_them(backend: &str) {
    let app = TestApp::spawn(backend).await;
    // A new tenant starts with Healthy / Monitor / Critical.
    let list: Value = app
        .get("/api/v1/outcomes", &app.token)
        .await
        .json()
        .await
        .unwrap();
    let codes: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["healthy", "monitor", "critical"]);

    let p = app
        .create_patient(&patient("IX-1", "Inter", "Action"))
        .await;
    let pid = p["id"].as_str().unwrap().to_owned();
    let app_ref = &app;
    let record = |body: Value| async move {
        app_ref
            .post("/api/v1/interactions/", &app_ref.token, &body)
            .await
    };

    let r = record(json!({"patient_id": pid, "kind": "call", "outcome": "Monitor", "occurred_at": "2026-03-01T09:30:00+02:00", "notes": "BP follow-up"})).await;
    assert_eq!(r.status(), 201);
    let first: Value = r.json().await.unwrap();
    assert_eq!(
        first["occurred_at"], "2026-03-01T07:30:00Z",
        "stored and returned in UTC"
    );
    assert_eq!(first["outcome"], "monitor");
    let got: Value = app
        .get(
            &format!("/api/v1/interactions/{}", first["id"].as_str().unwrap()),
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got, first);

    // Unknown outcome: 422 naming the valid codes.
    let body = problem(
        record(json!({"patient_id": pid, "kind": "call", "outcome": "fine"})).await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "outcome");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("healthy, monitor, critical"),
        "{body}"
    );
    // Unknown patient, kind, zone-less time.
    let body = problem(
        record(json!({"patient_id": uuid::Uuid::now_v7(), "kind": "call", "outcome": "healthy"}))
            .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "patient_id");
    problem(
        record(json!({"patient_id": pid, "kind": "telepathy", "outcome": "healthy"})).await,
        422,
        "validation",
    )
    .await;
    problem(record(json!({"patient_id": pid, "kind": "visit", "outcome": "healthy", "occurred_at": "2026-03-01T09:30:00"})).await, 422, "validation").await;

    // Configure a new outcome, use it, retire it: it stays on old interactions, new ones refuse it.
    let r = app
        .post(
            "/api/v1/outcomes",
            &app.token,
            &json!({"code": "follow_up", "display": "Follow up", "severity_rank": 1}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let fu: Value = r.json().await.unwrap();
    problem(
        app.post(
            "/api/v1/outcomes",
            &app.token,
            &json!({"code": "FOLLOW_UP", "display": "Again"}),
        )
        .await,
        409,
        "conflict",
    )
    .await;
    let r = record(json!({"patient_id": pid, "kind": "home_visit", "outcome": "follow_up", "occurred_at": "2026-03-02T10:00:00Z"})).await;
    assert_eq!(r.status(), 201);
    let with_fu: Value = r.json().await.unwrap();
    let retire = format!("/api/v1/outcomes/{}/retire", fu["id"].as_str().unwrap());
    let r = app
        .client
        .post(app.url(&retire))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    problem(r, 428, "precondition-required").await;
    let r = app
        .client
        .post(app.url(&retire))
        .bearer_auth(&app.token)
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["active"], false);
    problem(
        record(json!({"patient_id": pid, "kind": "call", "outcome": "follow_up"})).await,
        422,
        "validation",
    )
    .await;
    let kept: Value = app
        .get(
            &format!("/api/v1/interactions/{}", with_fu["id"].as_str().unwrap()),
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(kept["outcome"], "follow_up");
    let active: Value = app
        .get("/api/v1/outcomes", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(active["items"].as_array().unwrap().len(), 3);
    let all: Value = app
        .get("/api/v1/outcomes?include_retired=true", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 4);

    // History of the patient: newest first, paged, filtered.
    for i in 0..3 {
        let r = record(json!({"patient_id": pid, "kind": "message", "outcome": "healthy", "occurred_at": format!("2026-03-1{i}T08:00:00Z")})).await;
        assert_eq!(r.status(), 201);
    }
    // Recorded last but back-dated: it lists by when it happened, not when recorded.
    let r = record(json!({"patient_id": pid, "kind": "visit", "outcome": "healthy", "occurred_at": "2026-02-01T08:00:00Z"})).await;
    let backdated: Value = r.json().await.unwrap();
    let other = app.create_patient(&patient("IX-2", "Other", "One")).await;
    record(json!({"patient_id": other["id"], "kind": "visit", "outcome": "critical"})).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("/api/v1/interactions/?patient_id={pid}&limit=2");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app.get(&url, &app.token).await.json().await.unwrap();
        for i in page["items"].as_array().unwrap() {
            assert_eq!(i["patient_id"], pid);
            seen.push(i["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    assert_eq!(
        seen.last().map(String::as_str),
        backdated["id"].as_str(),
        "the earliest occurrence comes last"
    );
    let mut times = Vec::new();
    for id in &seen {
        let i: Value = app
            .get(&format!("/api/v1/interactions/{id}"), &app.token)
            .await
            .json()
            .await
            .unwrap();
        times.push(i["occurred_at"].as_str().unwrap().to_owned());
    }
    let mut sorted = times.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(times, sorted, "latest occurrence first");
    let count = |q: String| {
        let app = &app;
        async move {
            let page: Value = app
                .get(&format!("/api/v1/interactions?{q}"), &app.token)
                .await
                .json()
                .await
                .unwrap();
            page["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(count(format!("patient_id={pid}&kind=message")).await, 3);
    assert_eq!(count(format!("patient_id={pid}&kind=visit")).await, 1);
    assert_eq!(
        count(format!("patient_id={pid}&outcome=follow_up")).await,
        1
    );
    assert_eq!(
        count(format!(
            "patient_id={pid}&from=2026-03-10T00:00:00Z&to=2026-03-12T00:00:00Z"
        ))
        .await,
        2
    );
    assert_eq!(count("outcome=critical".into()).await, 1);
    problem(
        app.get("/api/v1/interactions?patient_id=nope", &app.token)
            .await,
        400,
        "bad-request",
    )
    .await;
    problem(
        app.get("/api/v1/interactions?when=today", &app.token).await,
        400,
        "bad-request",
    )
    .await;

    // A viewer reads but cannot record or configure.
    let viewer = app.token_for("viewer1", &["viewer"]).await;
    assert_eq!(app.get("/api/v1/outcomes", &viewer).await.status(), 200);
    problem(
        app.post(
            "/api/v1/interactions",
            &viewer,
            &json!({"patient_id": pid, "kind": "call", "outcome": "healthy"}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    let provider = app.token_for("prov1", &["provider"]).await;
    problem(
        app.post(
            "/api/v1/outcomes",
            &provider,
            &json!({"code": "x", "display": "X"}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    app.stop().await;
}

async fn interactions_are_amended_and_entered_in_error_by_events(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let p = app.create_patient(&patient("IA-1", "Amend", "Ment")).await;
    let pid = p["id"].as_str().unwrap().to_owned();
    let nurse = app.token_for("nurse-ia", &["provider"]).await;
    let record = |body: Value| {
        let (app, t) = (&app, nurse.clone());
        async move {
            let r = app.post("/api/v1/interactions", &t, &body).await;
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()
        }
    };
    let first = record(json!({"patient_id": pid, "kind": "call", "outcome": "healthy", "occurred_at": "2026-03-01T09:00:00Z", "notes": "all well"})).await;
    let second = record(json!({"patient_id": pid, "kind": "visit", "outcome": "monitor", "occurred_at": "2026-03-02T09:00:00Z"})).await;
    assert_eq!(first["status"], "final");
    let id = first["id"].as_str().unwrap().to_owned();
    let act = |id: String,
               action: &'static str,
               if_match: Option<&'static str>,
               key: Option<&'static str>,
               body: Value| {
        let (app, t) = (&app, nurse.clone());
        async move {
            let mut req = app
                .client
                .post(app.url(&format!("/api/v1/interactions/{id}/{action}")))
                .bearer_auth(t)
                .json(&body);
            if let Some(m) = if_match {
                req = req.header("if-match", m);
            }
            if let Some(k) = key {
                req = req.header("idempotency-key", k);
            }
            req.send().await.unwrap()
        }
    };
    let fix = json!({"outcome": "critical", "notes": "called back: worse", "reason": "outcome recorded wrongly"});
    // If-Match is required (428) and must be current (412); the reason and a change are required.
    problem(
        act(id.clone(), "amend", None, None, fix.clone()).await,
        428,
        "precondition-required",
    )
    .await;
    problem(
        act(id.clone(), "amend", Some("\"7\""), None, fix.clone()).await,
        412,
        "precondition-failed",
    )
    .await;
    let body = problem(
        act(
            id.clone(),
            "amend",
            Some("\"1\""),
            None,
            json!({"outcome": "critical"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "reason");
    problem(
        act(
            id.clone(),
            "amend",
            Some("\"1\""),
            None,
            json!({"reason": "nothing"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    let body = problem(
        act(
            id.clone(),
            "amend",
            Some("\"1\""),
            None,
            json!({"outcome": "fine", "reason": "x"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "outcome");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("healthy, monitor, critical"),
        "{body}"
    );
    problem(
        act(id.clone(), "retract", Some("\"1\""), None, json!({})).await,
        404,
        "not-found",
    )
    .await;

    // Amend: the corrected values, a new version and ETag; replayed under its Idempotency-Key.
    let r = act(
        id.clone(),
        "amend",
        Some("\"1\""),
        Some("amend-1"),
        fix.clone(),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"2\"");
    let amended: Value = r.json().await.unwrap();
    assert_eq!(amended["status"], "amended");
    assert_eq!(amended["outcome"], "critical");
    assert_eq!(amended["notes"], "called back: worse");
    assert_eq!(amended["kind"], "call", "fields left out keep their values");
    assert_eq!(amended["status_reason"], "outcome recorded wrongly");
    let again = act(
        id.clone(),
        "amend",
        Some("\"1\""),
        Some("amend-1"),
        fix.clone(),
    )
    .await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), amended);

    // The history keeps what was first recorded; as_of shows it.
    let h: Value = app
        .get(&format!("/api/v1/interactions/{id}/history"), &nurse)
        .await
        .json()
        .await
        .unwrap();
    let events: Vec<&str> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["interaction.recorded", "interaction.amended"]);
    assert_eq!(h["items"][0]["data"]["outcome"], "healthy");
    let recorded_at = h["items"][0]["recorded_at"].as_str().unwrap().to_owned();
    let then: Value = app
        .client
        .get(app.url(&format!("/api/v1/interactions/{id}")))
        .bearer_auth(&nurse)
        .query(&[("as_of", recorded_at.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(then["outcome"], "healthy");
    assert_eq!(then["status"], "final");

    // The outcome filter sees the corrected outcome.
    let ids = |q: String| {
        let (app, t) = (&app, nurse.clone());
        async move {
            let r = app.get(&format!("/api/v1/interactions?{q}"), &t).await;
            assert_eq!(r.status(), 200);
            let page: Value = r.json().await.unwrap();
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        ids(format!("patient_id={pid}&outcome=critical")).await,
        [id.as_str()]
    );
    assert!(
        ids(format!("patient_id={pid}&outcome=healthy"))
            .await
            .is_empty()
    );

    // Enter in error: withdrawn, terminal, and left out of the default list.
    let sid = second["id"].as_str().unwrap().to_owned();
    let r = act(
        sid.clone(),
        "enter-in-error",
        Some("\"1\""),
        None,
        json!({"reason": "wrong patient"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let withdrawn: Value = r.json().await.unwrap();
    assert_eq!(withdrawn["status"], "entered_in_error");
    assert_eq!(withdrawn["status_reason"], "wrong patient");
    problem(
        act(
            sid.clone(),
            "amend",
            Some("\"2\""),
            None,
            json!({"notes": "x", "reason": "x"}),
        )
        .await,
        422,
        "illegal-transition",
    )
    .await;
    problem(
        act(
            sid.clone(),
            "enter-in-error",
            Some("\"2\""),
            None,
            json!({"reason": "again"}),
        )
        .await,
        422,
        "illegal-transition",
    )
    .await;
    assert_eq!(
        ids(format!("patient_id={pid}")).await,
        [id.as_str()],
        "entered in error is left out by default"
    );
    assert_eq!(
        ids(format!("patient_id={pid}&status=entered_in_error")).await,
        [sid.as_str()]
    );
    assert_eq!(
        ids(format!(
            "patient_id={pid}&status=final,amended,entered_in_error"
        ))
        .await,
        [sid.as_str(), id.as_str()]
    );
    assert_eq!(
        ids(format!("patient_id={pid}&status=amended&kind=call")).await,
        [id.as_str()]
    );
    assert!(
        ids(format!("patient_id={pid}&status=final"))
            .await
            .is_empty()
    );
    problem(
        app.get(
            &format!("/api/v1/interactions?patient_id={pid}&status=void"),
            &nurse,
        )
        .await,
        400,
        "bad-request",
    )
    .await;
    // A read by id still shows it, with its status.
    let got: Value = app
        .get(&format!("/api/v1/interactions/{sid}"), &nurse)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["status"], "entered_in_error");

    // A viewer may not correct.
    let viewer = app.token_for("viewer-ia", &["viewer"]).await;
    let r = app
        .client
        .post(app.url(&format!("/api/v1/interactions/{id}/enter-in-error")))
        .bearer_auth(viewer)
        .header("if-match", "\"2\"")
        .json(&json!({"reason": "x"}))
        .send()
        .await
        .unwrap();
    problem(r, 403, "forbidden").await;
    app.stop().await;
}

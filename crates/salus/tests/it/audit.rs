//! The audit trail over real HTTP, on both backends: `GET /api/v1/audit/events` with the
//! state before and after each change and its JSON Patch, every filter, cursor pages, bad
//! filters as 400s, who may read it, the access-log entries its reads leave, and the CSV
//! files of the trail and of the access log.

use crate::app::{TestApp, on_both_backends, patient, problem};
use futures_util::StreamExt;
use serde_json::{Value, json};

on_both_backends!(
    audit_events_carry_states_and_diffs_and_filter,
    audit_trail_and_access_log_export_as_csv,
);

async fn created(app: &TestApp, path: &str, body: Value) -> Value {
    let r = app.post(path, &app.token, &body).await;
    assert_eq!(r.status(), 201, "{path}: {:?}", r.text().await);
    r.json().await.unwrap()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

async fn events(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/api/v1/audit/events?{query}"), token)
        .await;
    assert_eq!(r.status(), 200, "{query}: {:?}", r.text().await);
    let page: Value = r.json().await.unwrap();
    assert!(page["next_cursor"].is_null(), "{query}: more than one page");
    page["items"].as_array().unwrap().clone()
}

fn keys(items: &[Value]) -> Vec<(String, i64)> {
    items
        .iter()
        .map(|i| {
            (
                i["entity_id"].as_str().unwrap().to_owned(),
                i["version"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Apply an RFC 6902 patch of `add`/`remove`/`replace` operations (what the diff emits).
fn apply(doc: &Value, patch: &Value) -> Value {
    let mut doc = doc.clone();
    for op in patch.as_array().unwrap() {
        let path = op["path"].as_str().unwrap();
        if path.is_empty() {
            doc = op["value"].clone();
            continue;
        }
        let parts: Vec<String> = path[1..]
            .split('/')
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect();
        let (last, parents) = parts.split_last().unwrap();
        let mut at = &mut doc;
        for p in parents {
            at = match at {
                Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
                other => other.get_mut(p.as_str()).unwrap(),
            };
        }
        match (op["op"].as_str().unwrap(), at) {
            ("remove", Value::Object(m)) => {
                m.remove(last);
            }
            ("remove", Value::Array(a)) => {
                a.remove(last.parse::<usize>().unwrap());
            }
            ("add", Value::Array(a)) if last == "-" => a.push(op["value"].clone()),
            ("add", Value::Array(a)) => a.insert(last.parse().unwrap(), op["value"].clone()),
            ("replace", Value::Array(a)) => a[last.parse::<usize>().unwrap()] = op["value"].clone(),
            (_, Value::Object(m)) => {
                m.insert(last.clone(), op["value"].clone());
            }
            (op, at) => panic!("cannot {op} at {path} in {at}"),
        }
    }
    doc
}

async fn audit_events_carry_states_and_diffs_and_filter(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let p = created(&app, "/api/v1/patients", patient("AU-1", "Audit", "Ada")).await;
    let pid = id(&p);
    let q = created(&app, "/api/v1/patients", patient("AU-2", "Other", "Olu")).await;
    let qid = id(&q);
    let r = app
        .client
        .patch(app.url(&format!("/api/v1/patients/{pid}")))
        .bearer_auth(&app.token)
        .header("if-match", "\"1\"")
        .json(&json!({"email": "ada@example.org"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let clin = created(
        &app,
        "/api/v1/clinicians",
        json!({"family": "Quinn", "credential": "GMC-1", "specialty": "GP", "org_unit": "A"}),
    )
    .await;
    let enc = created(
        &app,
        "/api/v1/encounters",
        json!({"patient_id": pid, "clinician_id": id(&clin), "type": "outpatient"}),
    )
    .await;
    let provider = app.token_for("doc", &["provider"]).await;
    let obs = |patient: &str| {
        json!({"patient_id": patient, "code": {"system": "http://loinc.org", "code": "8480-6"},
               "value": {"type": "quantity", "value": 120, "unit": "mm[Hg]"}})
    };
    let r = app
        .post("/api/v1/observations", &provider, &obs(&pid))
        .await;
    assert_eq!(r.status(), 201);
    let o: Value = r.json().await.unwrap();
    let r = app
        .post("/api/v1/observations", &provider, &obs(&qid))
        .await;
    assert_eq!(r.status(), 201);
    let auditor = app.token_for("aud", &["auditor"]).await;

    // Everything about the patient: its own stream and the records that are its, in log
    // order; nothing of the other patient.
    let items = events(&app, &auditor, &format!("patient_id={pid}")).await;
    assert_eq!(
        keys(&items),
        [
            (pid.clone(), 1),
            (pid.clone(), 2),
            (id(&enc), 1),
            (id(&o), 1)
        ]
    );
    assert!(items.iter().all(|i| i["patient_id"] == pid.as_str()));
    assert!(
        items
            .windows(2)
            .all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64())
    );
    let first = &items[0];
    assert_eq!(first["action"], "patient.registered");
    assert_eq!(first["entity_type"], "patient");
    assert_eq!(first["tenant_id"], app.tenant.0.to_string());
    assert!(first["before_state"].is_null());
    assert_eq!(first["after_state"]["id"], pid.as_str());
    assert!(first["actor_id"].is_string() && first["timestamp"].is_string());
    assert!(first["audit_event_id"].is_string());
    // The update: one change, and the patch turns the state before into the state after.
    let update = &items[1];
    assert_eq!(update["action"], "patient.updated");
    assert_eq!(update["after_state"]["email"], "ada@example.org");
    assert!(
        update["before_state"]
            .get("email")
            .is_none_or(Value::is_null)
    );
    assert_eq!(
        apply(&update["before_state"], &update["diff"]),
        update["after_state"]
    );
    assert!(
        update["diff"]
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["path"] == "/email"),
        "{}",
        update["diff"]
    );
    for i in &items {
        assert_eq!(
            apply(&i["before_state"], &i["diff"]),
            i["after_state"],
            "{i}"
        );
    }

    // Each filter.
    let of_entity = events(
        &app,
        &auditor,
        &format!("entity_type=patient&entity_id={pid}"),
    )
    .await;
    assert_eq!(keys(&of_entity), [(pid.clone(), 1), (pid.clone(), 2)]);
    let patients = events(&app, &auditor, "entity_type=patient").await;
    assert!(patients.iter().all(|i| i["entity_type"] == "patient"));
    assert!(patients.iter().any(|i| i["entity_id"] == qid.as_str()));
    let users: Value = app
        .get("/api/v1/users?username=doc", &app.token)
        .await
        .json()
        .await
        .unwrap();
    let doc_id = users["items"][0]["id"].as_str().unwrap().to_owned();
    let by_doc = events(&app, &auditor, &format!("actor_id={doc_id}")).await;
    assert_eq!(by_doc.len(), 2);
    assert!(by_doc.iter().all(|i| i["action"] == "observation.recorded"));
    let scheduled = events(&app, &auditor, "action=encounter.scheduled").await;
    assert_eq!(keys(&scheduled), [(id(&enc), 1)]);
    // Time range: from the observation's instant (its offset given, `+` encoded or not).
    let at = chrono::DateTime::parse_from_rfc3339(by_doc[0]["timestamp"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    let since = events(
        &app,
        &auditor,
        &format!("from={}&entity_type=observation", at.replace('+', "%2B")),
    )
    .await;
    assert_eq!(keys(&since), keys(&by_doc));
    let since_raw = events(
        &app,
        &auditor,
        &format!("from={at}&entity_type=observation"),
    )
    .await;
    assert_eq!(keys(&since_raw), keys(&by_doc));
    let until = events(
        &app,
        &auditor,
        &format!("to={}&entity_type=observation", at.replace('+', "%2B")),
    )
    .await;
    assert!(until.is_empty());

    // Cursor pages: nothing twice, nothing skipped, stable order.
    let all = events(&app, &auditor, "limit=500").await;
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("/api/v1/audit/events?limit=3&cursor={c}"),
            None => "/api/v1/audit/events?limit=3".into(),
        };
        let page: Value = app.get(&url, &auditor).await.json().await.unwrap();
        paged.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(keys(&paged), keys(&all));

    // A bad filter is a 400 that says what to fix, never a 500.
    for bad in [
        "entity_id=nope",
        "patient_id=1",
        "actor_id=x",
        "from=yesterday",
        "to=2026-13-01T00:00:00Z",
        "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "action=DROP%20TABLE%20events",
        "entity_type=patient';--",
        "limit=0",
        "limit=501",
        "cursor=-1",
        "cursor=abc",
        "format=xml",
        "format=csv&limit=5",
        "sort=seq",
    ] {
        let r = app
            .get(&format!("/api/v1/audit/events?{bad}"), &auditor)
            .await;
        problem(r, 400, "bad-request").await;
    }

    // Auditors and admins only.
    for role in ["provider", "viewer"] {
        let t = app.token_for(&format!("not-{role}"), &[role]).await;
        let body = problem(app.get("/api/v1/audit/events", &t).await, 403, "forbidden").await;
        assert_eq!(body["permission"], "audit:read");
    }
    assert_eq!(
        app.get("/api/v1/audit/events", &app.token).await.status(),
        200
    );

    // The auditor's reads of patient states are in the data-access log, as healthcare
    // operations unless the request says otherwise.
    let aud: Value = app
        .get("/api/v1/users?username=aud", &app.token)
        .await
        .json()
        .await
        .unwrap();
    let aud_id = aud["items"][0]["id"].as_str().unwrap().to_owned();
    let log: Value = app
        .get(
            &format!("/api/v1/audit/access?actor_id={aud_id}&patient_id={pid}&limit=500"),
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    let entries = log["items"].as_array().unwrap();
    assert!(!entries.is_empty(), "{log}");
    assert!(entries.iter().all(|e| e["resource_type"] == "audit_event"
        && e["action"] == "search"
        && e["purpose"] == "HOPERAT"));
    let r = app
        .client
        .get(app.url(&format!("/api/v1/audit/events?entity_id={qid}")))
        .bearer_auth(&auditor)
        .header("x-purpose-of-use", "HLEGAL")
        .header("x-access-justification", "subpoena 42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let log: Value = app
        .get(
            &format!("/api/v1/audit/access?actor_id={aud_id}&patient_id={qid}"),
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    let last = log["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["purpose"], "HLEGAL");
    assert_eq!(last["justification"], "subpoena 42");

    // Another tenant sees none of it, whatever it filters on.
    let other = app.other_tenant("elsewhere").await;
    for query in [
        String::new(),
        format!("patient_id={pid}"),
        format!("entity_id={pid}"),
        "entity_type=patient".into(),
    ] {
        let page: Value = app
            .get(&format!("/api/v1/audit/events?{query}"), &other)
            .await
            .json()
            .await
            .unwrap();
        assert!(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["tenant_id"] != app.tenant.0.to_string()
                    && i["entity_id"] != pid.as_str()),
            "{query}: {page}"
        );
    }
    app.stop().await;
}

fn parse_csv(text: &str) -> (Vec<String>, Vec<csv::StringRecord>) {
    let mut r = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let head = r.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = r.records().collect::<Result<Vec<_>, _>>().unwrap();
    (head, rows)
}

async fn audit_trail_and_access_log_export_as_csv(backend: &str) {
    let app = TestApp::spawn(backend).await;
    // A name that needs quoting in CSV, and enough patients for several batches of 500.
    let mut awkward = patient("CSV-0", "O'Brien, \"Jr\"", "Line\nBreak");
    awkward["name"][0]["given"] = json!(["Ann, \"Q\""]);
    let p = created(&app, "/api/v1/patients", awkward).await;
    let pid = id(&p);
    let n = 520;
    futures_util::stream::iter(1..=n)
        .map(|i| {
            let app = &app;
            async move {
                let r = app
                    .post(
                        "/api/v1/patients",
                        &app.token,
                        &patient(&format!("CSV-{i}"), "Bulk", "Bea"),
                    )
                    .await;
                assert_eq!(r.status(), 201);
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let auditor = app.token_for("aud", &["auditor"]).await;

    let r = app
        .get(
            "/api/v1/audit/events?format=csv&entity_type=patient",
            &auditor,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = r.text().await.unwrap();
    assert!(text.contains("\r\n"), "RFC 4180 line ends");
    let (head, rows) = parse_csv(&text);
    assert_eq!(
        head,
        [
            "audit_event_id",
            "seq",
            "timestamp",
            "occurred_at",
            "tenant_id",
            "entity_type",
            "entity_id",
            "version",
            "action",
            "actor_id",
            "correlation_id",
            "patient_id",
            "payload",
            "before_state",
            "after_state",
            "diff"
        ]
    );
    assert_eq!(
        rows.len(),
        n + 1,
        "every patient's registration, over several batches"
    );
    let seqs: Vec<i64> = rows.iter().map(|r| r[1].parse().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in log order, once each"
    );
    let first = &rows[0];
    assert_eq!(&first[6], pid.as_str());
    assert_eq!(&first[8], "patient.registered");
    assert_eq!(&first[11], pid.as_str());
    let after: Value = serde_json::from_str(&first[14]).unwrap();
    assert_eq!(after["name"][0]["family"], "O'Brien, \"Jr\"");
    assert_eq!(after["name"][0]["given"][0], "Ann, \"Q\"");
    assert_eq!(&first[13], "null");
    let diff: Value = serde_json::from_str(&first[15]).unwrap();
    assert_eq!(diff[0]["op"], "replace");
    // The same filters as the JSON list: one patient's file is that patient's events.
    let text = app
        .get(
            &format!("/api/v1/audit/events?format=csv&patient_id={pid}"),
            &auditor,
        )
        .await
        .text()
        .await
        .unwrap();
    let (_, rows) = parse_csv(&text);
    assert_eq!(rows.len(), 1);
    let text = app
        .get(
            "/api/v1/audit/events?format=csv&action=patient.updated",
            &auditor,
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(parse_csv(&text).1.len(), 0, "a header and no rows");
    problem(
        app.get("/api/v1/audit/events?format=csv&from=soon", &auditor)
            .await,
        400,
        "bad-request",
    )
    .await;

    // The access log as CSV: the same rows as its JSON pages, quoted where needed.
    let r = app
        .client
        .get(app.url(&format!("/api/v1/patients/{pid}")))
        .bearer_auth(&app.token)
        .header("x-access-justification", "follow-up, \"urgent\"")
        .header("x-break-glass", "ED, resus bay")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut json_rows = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = app
            .get(&format!("/api/v1/audit/access?limit=500{cursor}"), &auditor)
            .await
            .json()
            .await
            .unwrap();
        json_rows.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert!(json_rows.len() > 500, "the auditor's reads were logged");
    let text = app
        .get("/api/v1/audit/access?format=csv", &auditor)
        .await
        .text()
        .await
        .unwrap();
    let (head, rows) = parse_csv(&text);
    assert_eq!(head[0], "seq");
    assert_eq!(rows.len(), json_rows.len());
    for (row, j) in rows.iter().zip(&json_rows) {
        assert_eq!(row[0].parse::<i64>().unwrap(), j["seq"].as_i64().unwrap());
        assert_eq!(&row[5], j["patient_id"].as_str().unwrap());
    }
    let col = |name: &str| head.iter().position(|h| h == name).unwrap();
    let glass: Vec<_> = rows
        .iter()
        .filter(|r| &r[col("break_glass")] == "true")
        .collect();
    assert_eq!(glass.len(), 1);
    assert_eq!(
        &glass[0][col("justification")],
        "ED, resus bay (follow-up, \"urgent\")"
    );
    // The break-glass report too, with its filters.
    let text = app
        .get(
            &format!("/api/v1/audit/break-glass?format=csv&patient_id={pid}"),
            &auditor,
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(parse_csv(&text).1.len(), 1);
    problem(
        app.get("/api/v1/audit/access?format=csv&limit=2", &auditor)
            .await,
        400,
        "bad-request",
    )
    .await;
    app.stop().await;
}

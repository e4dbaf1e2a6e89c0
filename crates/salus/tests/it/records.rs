//! Medical records and append-only notes over HTTP, including tampering with a stored note.

use crate::app::{TestApp, on_both_backends, patient, problem};
use serde_json::{Value, json};

on_both_backends!(notes_are_append_only_signed_and_hash_checked_on_read);

async fn notes_are_append_only_signed_and_hash_checked_on_read(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let pid = app.create_patient(&patient("MR-1", "Record", "Ed")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cardiology = app.create_department("CARD", "Cardiology").await;
    let dermatology = app.create_department("DERM", "Dermatology").await;
    let r = app
        .post(
            "/api/v1/medical-records",
            &app.token,
            &json!({"patient_id": pid, "department_id": cardiology}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let rec: Value = r.json().await.unwrap();
    let rid = rec["id"].as_str().unwrap().to_owned();
    problem(
        app.post(
            "/api/v1/medical-records",
            &app.token,
            &json!({"patient_id": pid, "department_id": cardiology}),
        )
        .await,
        409,
        "conflict",
    )
    .await;
    // The department must be a real, active one of the tenant: else a 422 naming the field.
    let unknown = uuid::Uuid::now_v7();
    let body = problem(
        app.post(
            "/api/v1/medical-records",
            &app.token,
            &json!({"patient_id": pid, "department_id": unknown}),
        )
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
    let closed = app.create_department("CLOSED", "Closed ward").await;
    app.deactivate_department(&closed).await;
    let body = problem(
        app.post(
            "/api/v1/medical-records",
            &app.token,
            &json!({"patient_id": pid, "department_id": closed}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "department_id");
    problem(
        app.post(
            "/api/v1/medical-records",
            &app.token,
            &json!({"patient_id": pid, "department": "Cardiology"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    let listed: Value = app
        .get(
            &format!("/api/v1/medical-records?department_id={cardiology}"),
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [rid.as_str()]);

    // An empty record can be soft-deleted; one with notes cannot.
    let spare: Value = app
        .post(
            "/api/v1/medical-records",
            &app.token,
            &json!({"patient_id": pid, "department_id": dermatology}),
        )
        .await
        .json()
        .await
        .unwrap();
    let del = |id: &str, v: i64| {
        let app = &app;
        let url = app.url(&format!("/api/v1/medical-records/{id}/delete"));
        async move {
            app.client
                .post(url)
                .bearer_auth(&app.token)
                .header("if-match", format!("\"{v}\""))
                .send()
                .await
                .unwrap()
        }
    };
    let r = del(spare["id"].as_str().unwrap(), 1).await;
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "deleted");

    let notes = format!("/api/v1/medical-records/{rid}/notes");
    let r = app
        .post(
            &notes,
            &app.token,
            &json!({"note_type": "progress", "text": "Stable. BP 120/80."}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let note: Value = r.json().await.unwrap();
    let nid = note["id"].as_str().unwrap().to_owned();
    assert_eq!(note["content_sha256"].as_str().unwrap().len(), 64);
    problem(del(&rid, 1).await, 422, "rule-violation").await;
    problem(
        app.post(
            &notes,
            &app.token,
            &json!({"note_type": "gossip", "text": "x"}),
        )
        .await,
        422,
        "validation",
    )
    .await;

    // Only the author signs, once; amendments are new notes linked to the original.
    let other = app.token_for("dr-other", &["provider"]).await;
    let sign = |t: String, v: i64| {
        let app = &app;
        let url = app.url(&format!("/api/v1/notes/{nid}/sign"));
        async move {
            app.client
                .post(url)
                .bearer_auth(t)
                .header("if-match", format!("\"{v}\""))
                .send()
                .await
                .unwrap()
        }
    };
    problem(sign(other.clone(), 1).await, 422, "rule-violation").await;
    let signed: Value = sign(app.token.clone(), 1).await.json().await.unwrap();
    assert!(signed["signed_at"].is_string());
    problem(sign(app.token.clone(), 2).await, 422, "illegal-transition").await;
    let r = app
        .post(
            &notes,
            &other,
            &json!({"note_type": "progress", "text": "Correction: BP 125/80.", "amends": nid}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let amendment: Value = r.json().await.unwrap();
    assert_eq!(amendment["amends"], nid);
    problem(
        app.post(
            &notes,
            &app.token,
            &json!({"note_type": "progress", "text": "x", "amends": uuid::Uuid::now_v7()}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    let list: Value = app.get(&notes, &app.token).await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    // Full-text search, ranked, case-insensitive, optionally per patient.
    let found: Value = app
        .get("/api/v1/notes?q=bp%20STABLE", &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    assert_eq!(found["items"][0]["id"], nid);
    assert!(found["items"][0]["rank"].is_number());
    let found: Value = app
        .get(&format!("/api/v1/notes?q=bp&patient_id={pid}"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["items"].as_array().unwrap().len(), 2);
    let found: Value = app
        .get(
            &format!("/api/v1/notes?q=bp&patient_id={}", uuid::Uuid::now_v7()),
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["items"].as_array().unwrap().len(), 0);
    problem(
        app.get("/api/v1/notes", &app.token).await,
        400,
        "bad-request",
    )
    .await;

    // Tamper with the stored text beneath the server: the note is withheld, loudly.
    match &app.settings.database_url {
        None => {
            let c = rusqlite::Connection::open(app.settings.sqlite_path()).unwrap();
            let n = c.execute("UPDATE resources SET doc = replace(doc, 'BP 120/80', 'BP 90/60') WHERE resource_type = 'clinical_note'", []).unwrap();
            assert_eq!(n, 2);
        }
        Some(url) => {
            let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            c.batch_execute("UPDATE resources SET doc = jsonb_set(doc, '{text}', '\"Stable. BP 90/60.\"') WHERE resource_type = 'clinical_note' AND doc->>'text' LIKE 'Stable%'").await.unwrap();
        }
    }
    let body = problem(
        app.get(&format!("/api/v1/notes/{nid}"), &app.token).await,
        500,
        "integrity",
    )
    .await;
    assert!(
        !body.to_string().contains("90/60"),
        "the altered text is not served"
    );
    problem(app.get(&notes, &app.token).await, 500, "integrity").await;
    assert_eq!(
        app.get(
            &format!("/api/v1/notes/{}", amendment["id"].as_str().unwrap()),
            &app.token
        )
        .await
        .status(),
        200
    );
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
        metrics.contains("salus_integrity_failures_total 2"),
        "{metrics}"
    );
    app.stop().await;
}

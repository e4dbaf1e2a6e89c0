//! The audit commands as an operator runs them: verify passes on an honest log, exits 1
//! naming the first bad event after tampering; prove writes a proof that check-proof
//! accepts offline and rejects once altered.

use crate::app::{TestApp, on_both_backends, patient};
use serde_json::Value;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_salus");

on_both_backends!(
    audit_verify_prove_and_check_proof,
    reindex_derives_projections_again_from_the_log
);

fn salus(args: &[String], cmd: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(cmd)
        .env("SALUS_LOG", "warn")
        .output()
        .expect("run salus");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn audit_verify_prove_and_check_proof(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let p = app.create_patient(&patient("AU-1", "Audit", "Trail")).await;
    let id = p["id"].as_str().unwrap().to_owned();
    let h: Value = app
        .get(&format!("/api/v1/patients/{id}/history"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    let event_id = h["items"][0]["event_id"].as_str().unwrap().to_owned();
    let mut args = vec![
        "--data-dir".to_string(),
        app.settings.data_dir.to_string_lossy().into_owned(),
    ];
    if let Some(url) = &app.settings.database_url {
        args.push("--database-url".into());
        args.push(url.clone());
    }
    let db_url = app.settings.database_url.clone();
    let db_path = app.settings.sqlite_path();
    let _data = app.stop().await; // a clean stop seals what is left

    let (code, out, err) = salus(&args, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok:"), "{out}");

    let proof_path = std::env::temp_dir().join(format!("proof-{event_id}.json"));
    let proof_arg = proof_path.to_string_lossy().into_owned();
    let (code, _, err) = salus(&args, &["audit", "prove", &event_id, "--out", &proof_arg]);
    assert_eq!(code, 0, "{err}");
    // Offline: only the file and the public key.
    let (_, key, _) = salus(&args, &["audit", "public-key"]);
    let offline = ["--data-dir".to_string(), "/nonexistent".to_string()];
    let (code, out, err) = salus(
        &offline,
        &[
            "audit",
            "check-proof",
            &proof_arg,
            "--public-key",
            key.trim(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&event_id));
    let mut proof: Value =
        serde_json::from_str(&std::fs::read_to_string(&proof_path).unwrap()).unwrap();
    proof["event"]["payload"]["name"][0]["family"] = Value::String("Forged".into());
    std::fs::write(&proof_path, proof.to_string()).unwrap();
    let (code, _, err) = salus(
        &offline,
        &[
            "audit",
            "check-proof",
            &proof_arg,
            "--public-key",
            key.trim(),
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("FAILED"), "{err}");
    let _ = std::fs::remove_file(&proof_path);
    // Verifying a deployment that is not there is an error, not an empty "ok".
    if backend == "sqlite" {
        let (code, _, err) = salus(&offline, &["audit", "verify"]);
        assert_eq!(code, 1);
        assert!(err.contains("no database"), "{err}");
    }

    // Alter the stored event beneath the server.
    match db_url {
        None => {
            let c = rusqlite::Connection::open(&db_path).unwrap();
            c.execute_batch("DROP TRIGGER events_no_update;").unwrap();
            let n = c
                .execute(
                    "UPDATE events SET payload = replace(payload, 'Audit', 'Mallory') WHERE hex(event_id) = upper(?1)",
                    [event_id.replace('-', "")],
                )
                .unwrap();
            assert_eq!(n, 1);
        }
        Some(url) => {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            c.batch_execute(&format!(
                "ALTER TABLE events DISABLE TRIGGER events_append_only;
                 UPDATE events SET payload = jsonb_set(payload, '{{name,0,family}}', '\"Mallory\"') WHERE event_id = '{event_id}';"
            ))
            .await
            .unwrap();
        }
    }
    let (code, out, err) = salus(&args, &["audit", "verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("first bad event") && err.contains(&event_id),
        "{err}"
    );
}

/// `salus reindex` rebuilds documents and search rows from the log at the same versions,
/// as after an upgrade that changed how they are derived (here: a projection altered and
/// its search rows lost beneath a running server); the log is untouched and verifies.
async fn reindex_derives_projections_again_from_the_log(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let id = app
        .create_patient(&patient("RX-1", "Reindex", "Rita"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let search = |q: &'static str| {
        let app = &app;
        async move {
            let v: Value = app
                .get(&format!("/api/v1/patients?name={q}"), &app.token)
                .await
                .json()
                .await
                .unwrap();
            v["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(search("reind").await, 1);
    let mut args = vec![
        "--data-dir".to_string(),
        app.settings.data_dir.to_string_lossy().into_owned(),
    ];
    match &app.settings.database_url {
        None => {
            let c = rusqlite::Connection::open(app.settings.sqlite_path()).unwrap();
            let hex = id.replace('-', "");
            c.execute_batch(&format!(
                "UPDATE resources SET doc = json_set(doc, '$.name[0].family', 'Stale'), search_keys = '[]' WHERE hex(id) = upper('{hex}');
                 DELETE FROM search_rows WHERE hex(resource_id) = upper('{hex}');"
            ))
            .unwrap();
        }
        Some(url) => {
            args.push("--database-url".into());
            args.push(url.clone());
            let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            c.batch_execute(&format!(
                "UPDATE resources SET doc = jsonb_set(doc, '{{name,0,family}}', '\"Stale\"'), search_keys = '[]' WHERE id = '{id}';
                 DELETE FROM search_index WHERE resource_id = '{id}';"
            ))
            .await
            .unwrap();
        }
    }
    let read = || async {
        let r = app.get(&format!("/api/v1/patients/{id}"), &app.token).await;
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        let v: Value = r.json().await.unwrap();
        (etag, v)
    };
    let (_, stale) = read().await;
    assert!(stale.to_string().contains("Stale"), "{stale}");
    assert_eq!(search("reind").await, 0);
    // While the server runs.
    let (code, out, err) = salus(&args, &["reindex"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rebuilt"), "{out}");
    let (etag, fresh) = read().await;
    assert_eq!(etag, "\"1\"");
    assert!(!fresh.to_string().contains("Stale"), "{fresh}");
    assert!(fresh.to_string().contains("Reindex"), "{fresh}");
    assert_eq!(search("reind").await, 1);
    let h: Value = app
        .get(&format!("/api/v1/patients/{id}/history"), &app.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(h["items"].as_array().unwrap().len(), 1);
    // An unknown tenant is an error that says so.
    let (code, _, err) = salus(&args, &["reindex", "--tenant", "nosuch"]);
    assert_ne!(code, 0);
    assert!(err.contains("nosuch"), "{err}");
    let _data = app.stop().await;
    let (code, out, err) = salus(&args, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

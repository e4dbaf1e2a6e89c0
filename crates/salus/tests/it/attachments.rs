//! Attachments over HTTP: streamed in, type checked, hash checked on the way out.

use crate::app::{TestApp, on_both_backends, patient, problem};
use serde_json::{Value, json};

on_both_backends!(attachments_are_typed_limited_and_verified_before_download);

async fn attachments_are_typed_limited_and_verified_before_download(backend: &str) {
    let app = TestApp::spawn_with(backend, |s| s.attachment_limit_bytes = 4096).await;
    let pid = app.create_patient(&patient("AT-1", "Attach", "Ment")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let radiology = app.create_department("RAD", "Radiology").await;
    let rec: Value = app
        .post(
            "/api/v1/medical-records",
            &app.token,
            &json!({"patient_id": pid, "department_id": radiology}),
        )
        .await
        .json()
        .await
        .unwrap();
    let rid = rec["id"].as_str().unwrap().to_owned();
    let upload = |name: &str, ct: &'static str, bytes: Vec<u8>| {
        let app = &app;
        let url = app.url(&format!(
            "/api/v1/medical-records/{rid}/attachments?filename={name}"
        ));
        async move {
            app.client
                .post(url)
                .bearer_auth(&app.token)
                .header("content-type", ct)
                .body(bytes)
                .send()
                .await
                .unwrap()
        }
    };
    let pdf = b"%PDF-1.4\n1 0 obj << >> endobj\n%%EOF\n".to_vec();
    let r = upload("report.pdf", "application/pdf", pdf.clone()).await;
    assert_eq!(r.status(), 201);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["size"], pdf.len());
    assert_eq!(a["content_type"], "application/pdf");
    problem(
        upload("fake.png", "image/png", pdf.clone()).await,
        422,
        "validation",
    )
    .await;
    problem(
        upload("x.zip", "application/zip", b"PK\x03\x04rest".to_vec()).await,
        422,
        "validation",
    )
    .await;
    problem(
        upload("big.txt", "text/plain", vec![b'a'; 5000]).await,
        413,
        "payload-too-large",
    )
    .await;
    problem(
        upload("empty.txt", "text/plain", vec![]).await,
        422,
        "validation",
    )
    .await;
    let r = app
        .client
        .post(app.url(&format!("/api/v1/medical-records/{rid}/attachments")))
        .bearer_auth(&app.token)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    problem(r, 400, "bad-request").await;

    let content = format!("/api/v1/attachments/{}/content", a["id"].as_str().unwrap());
    let r = app.get(&content, &app.token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("report.pdf")
    );
    assert_eq!(r.bytes().await.unwrap().to_vec(), pdf);
    let list: Value = app
        .get(
            &format!("/api/v1/medical-records/{rid}/attachments"),
            &app.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // Alter the stored bytes: the download is refused and counted.
    let sha = a["sha256"].as_str().unwrap();
    let path = app
        .settings
        .data_dir
        .join("blobs")
        .join(&sha[0..2])
        .join(&sha[2..4])
        .join(sha);
    std::fs::write(&path, b"%PDF-1.4\ntampered").unwrap();
    problem(app.get(&content, &app.token).await, 500, "integrity").await;
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
        metrics.contains("salus_integrity_failures_total 1"),
        "{metrics}"
    );
    let viewer = app.token_for("viewer-at", &["viewer"]).await;
    problem(
        app.client
            .post(app.url(&format!(
                "/api/v1/medical-records/{rid}/attachments?filename=a.txt"
            )))
            .bearer_auth(viewer)
            .header("content-type", "text/plain")
            .body("hi")
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    app.stop().await;
}

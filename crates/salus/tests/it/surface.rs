//! The operational surface: OpenAPI, metrics, health, routing errors and limits.

use crate::app::{TestApp, problem};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_route_and_every_documented_route_answers() {
    let app = TestApp::spawn("sqlite").await;
    let doc: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    // The request and resource shapes of the clinical endpoints are documented.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "InteractionActionInput",
        "InteractionStatus",
        "Interaction",
        "RecordInput",
    ] {
        assert!(schemas.contains_key(name), "schema {name} is documented");
    }
    assert!(
        schemas["Interaction"]["properties"].get("status").is_some(),
        "{}",
        schemas["Interaction"]
    );
    assert!(
        schemas["RecordInput"]["properties"]
            .get("department_id")
            .is_some(),
        "{}",
        schemas["RecordInput"]
    );
    // Every route the server serves is documented...
    let served = [
        ("get", "/api/v1/openapi.json"),
        ("post", "/api/v1/users"),
        ("get", "/api/v1/users"),
        ("get", "/api/v1/users/{id}"),
        ("get", "/api/v1/users/{id}/history"),
        ("post", "/api/v1/users/{id}/{action}"),
        ("post", "/api/v1/users/{id}/assignments"),
        (
            "post",
            "/api/v1/users/{id}/assignments/{assignment_id}/{action}",
        ),
        ("get", "/api/v1/roles"),
        ("post", "/api/v1/roles"),
        ("get", "/api/v1/roles/{name}"),
        ("patch", "/api/v1/roles/{name}"),
        ("get", "/api/v1/roles/{name}/history"),
        ("get", "/api/v1/permissions"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/.well-known/jwks.json"),
        ("post", "/api/v1/patients"),
        ("get", "/api/v1/patients"),
        ("get", "/api/v1/patients/{id}"),
        ("patch", "/api/v1/patients/{id}"),
        ("get", "/api/v1/patients/{id}/history"),
        ("post", "/api/v1/patients/{id}/{action}"),
        ("get", "/api/v1/outcomes"),
        ("post", "/api/v1/outcomes"),
        ("post", "/api/v1/outcomes/{id}/retire"),
        ("get", "/api/v1/interactions"),
        ("post", "/api/v1/interactions"),
        ("get", "/api/v1/interactions/{id}"),
        ("post", "/api/v1/clinicians"),
        ("get", "/api/v1/clinicians"),
        ("get", "/api/v1/clinicians/{id}"),
        ("post", "/api/v1/clinicians/{id}/{action}"),
        ("post", "/api/v1/encounters"),
        ("get", "/api/v1/encounters"),
        ("get", "/api/v1/encounters/{id}"),
        ("post", "/api/v1/encounters/{id}/{action}"),
        ("get", "/api/v1/interactions/{id}/history"),
        ("post", "/api/v1/interactions/{id}/{action}"),
        ("get", "/api/v1/clinicians/{id}/history"),
        ("get", "/api/v1/encounters/{id}/history"),
        ("post", "/api/v1/observations"),
        ("get", "/api/v1/observations"),
        ("get", "/api/v1/observations/{id}"),
        ("get", "/api/v1/observations/{id}/history"),
        ("post", "/api/v1/observations/{id}/{action}"),
        ("post", "/api/v1/procedures"),
        ("get", "/api/v1/procedures"),
        ("get", "/api/v1/procedures/{id}"),
        ("get", "/api/v1/procedures/{id}/history"),
        ("post", "/api/v1/procedures/{id}/{action}"),
        ("post", "/api/v1/conditions"),
        ("get", "/api/v1/conditions"),
        ("get", "/api/v1/conditions/{id}"),
        ("get", "/api/v1/conditions/{id}/history"),
        ("post", "/api/v1/conditions/{id}/{action}"),
        ("post", "/api/v1/allergies"),
        ("get", "/api/v1/allergies"),
        ("get", "/api/v1/allergies/{id}"),
        ("get", "/api/v1/allergies/{id}/history"),
        ("post", "/api/v1/allergies/{id}/{action}"),
        ("post", "/api/v1/medical-records"),
        ("get", "/api/v1/medical-records"),
        ("get", "/api/v1/medical-records/{id}"),
        ("post", "/api/v1/medical-records/{id}/{action}"),
        ("post", "/api/v1/medical-records/{id}/notes"),
        ("get", "/api/v1/medical-records/{id}/notes"),
        ("get", "/api/v1/notes/{id}"),
        ("get", "/api/v1/notes"),
        ("get", "/api/v1/notes/{id}/history"),
        ("post", "/api/v1/notes/{id}/{action}"),
        ("post", "/api/v1/medical-records/{id}/attachments"),
        ("get", "/api/v1/medical-records/{id}/attachments"),
        ("get", "/api/v1/attachments/{id}"),
        ("get", "/api/v1/attachments/{id}/content"),
        ("post", "/api/v1/consent-templates"),
        ("get", "/api/v1/consent-templates"),
        ("get", "/api/v1/consent-templates/{id}"),
        ("patch", "/api/v1/consent-templates/{id}"),
        ("get", "/api/v1/consent-templates/{id}/history"),
        ("post", "/api/v1/consent-templates/{id}/{action}"),
        ("post", "/api/v1/consents"),
        ("get", "/api/v1/consents"),
        ("get", "/api/v1/consents/{id}"),
        ("get", "/api/v1/consents/{id}/history"),
        ("post", "/api/v1/consents/{id}/{action}"),
        ("get", "/api/v1/consents/{id}/document"),
        ("get", "/api/v1/patients/{id}/consents"),
        ("post", "/api/v1/departments"),
        ("get", "/api/v1/departments"),
        ("get", "/api/v1/departments/{id}"),
        ("post", "/api/v1/departments/{id}/{action}"),
        ("post", "/api/v1/locations"),
        ("get", "/api/v1/locations"),
        ("get", "/api/v1/locations/{id}"),
        ("post", "/api/v1/locations/{id}/{action}"),
        ("post", "/api/v1/imports"),
        ("get", "/api/v1/imports/{id}"),
        ("get", "/api/v1/imports/{id}/errors"),
        ("get", "/api/v1/exports/{kind}"),
        ("get", "/api/v1/audit/access"),
        ("get", "/api/v1/audit/break-glass"),
        ("get", "/api/v1/patients/{id}/access"),
        ("get", "/api/v1/audit/events"),
        ("get", "/api/v1/patients/{id}/care-team"),
        ("post", "/api/v1/patients/{id}/care-team"),
        (
            "post",
            "/api/v1/patients/{id}/care-team/{assignment_id}/end",
        ),
        ("get", "/api/v1/care-policy"),
        ("put", "/api/v1/care-policy"),
        // FHIR R4 routes are declared and guarded like the others (see crate::fhir).
        ("get", "/fhir/R4/metadata"),
        ("get", "/fhir/R4/_history"),
        ("post", "/fhir/R4"),
        ("post", "/fhir/R4/Patient"),
        ("post", "/fhir/R4/Patient/_search"),
        ("get", "/fhir/R4/Patient"),
        ("get", "/fhir/R4/Patient/{id}"),
        ("put", "/fhir/R4/Patient/{id}"),
        ("patch", "/fhir/R4/Patient/{id}"),
        ("put", "/fhir/R4/Patient"),
        ("get", "/fhir/R4/Patient/{id}/_history"),
        ("get", "/fhir/R4/Patient/_history"),
        ("get", "/fhir/R4/Patient/{id}/_history/{vid}"),
        // AuditEvent, read-only from the log (see crate::fhir::audit_event).
        ("get", "/fhir/R4/AuditEvent"),
        ("get", "/fhir/R4/AuditEvent/{id}"),
        ("post", "/fhir/R4/Observation"),
        ("get", "/fhir/R4/Observation"),
        ("post", "/fhir/R4/Observation/_search"),
        ("get", "/fhir/R4/Observation/{id}"),
        ("put", "/fhir/R4/Observation"),
        ("delete", "/fhir/R4/Observation"),
        ("put", "/fhir/R4/Observation/{id}"),
        ("patch", "/fhir/R4/Observation/{id}"),
        ("delete", "/fhir/R4/Observation/{id}"),
        ("get", "/fhir/R4/Observation/{id}/_history"),
        ("get", "/fhir/R4/Observation/_history"),
        ("get", "/fhir/R4/Observation/{id}/_history/{vid}"),
        ("post", "/fhir/R4/Condition"),
        ("get", "/fhir/R4/Condition"),
        ("post", "/fhir/R4/Condition/_search"),
        ("get", "/fhir/R4/Condition/{id}"),
        ("put", "/fhir/R4/Condition/{id}"),
        ("delete", "/fhir/R4/Condition/{id}"),
        ("get", "/fhir/R4/Condition/{id}/_history"),
        ("get", "/fhir/R4/Condition/_history"),
        ("get", "/fhir/R4/Condition/{id}/_history/{vid}"),
        ("put", "/fhir/R4/Condition"),
        ("delete", "/fhir/R4/Condition"),
        ("patch", "/fhir/R4/Condition/{id}"),
        ("post", "/fhir/R4/AllergyIntolerance"),
        ("get", "/fhir/R4/AllergyIntolerance"),
        ("post", "/fhir/R4/AllergyIntolerance/_search"),
        ("get", "/fhir/R4/AllergyIntolerance/{id}"),
        ("put", "/fhir/R4/AllergyIntolerance/{id}"),
        ("delete", "/fhir/R4/AllergyIntolerance/{id}"),
        ("get", "/fhir/R4/AllergyIntolerance/{id}/_history"),
        ("get", "/fhir/R4/AllergyIntolerance/_history"),
        ("get", "/fhir/R4/AllergyIntolerance/{id}/_history/{vid}"),
        ("put", "/fhir/R4/AllergyIntolerance"),
        ("delete", "/fhir/R4/AllergyIntolerance"),
        ("patch", "/fhir/R4/AllergyIntolerance/{id}"),
        ("post", "/fhir/R4/Encounter"),
        ("get", "/fhir/R4/Encounter"),
        ("post", "/fhir/R4/Encounter/_search"),
        ("get", "/fhir/R4/Encounter/{id}"),
        ("put", "/fhir/R4/Encounter/{id}"),
        ("delete", "/fhir/R4/Encounter/{id}"),
        ("get", "/fhir/R4/Encounter/{id}/_history"),
        ("get", "/fhir/R4/Encounter/_history"),
        ("get", "/fhir/R4/Encounter/{id}/_history/{vid}"),
        ("put", "/fhir/R4/Encounter"),
        ("delete", "/fhir/R4/Encounter"),
        ("patch", "/fhir/R4/Encounter/{id}"),
        ("post", "/fhir/R4/Procedure"),
        ("get", "/fhir/R4/Procedure"),
        ("post", "/fhir/R4/Procedure/_search"),
        ("get", "/fhir/R4/Procedure/{id}"),
        ("put", "/fhir/R4/Procedure/{id}"),
        ("delete", "/fhir/R4/Procedure/{id}"),
        ("get", "/fhir/R4/Procedure/{id}/_history"),
        ("get", "/fhir/R4/Procedure/_history"),
        ("get", "/fhir/R4/Procedure/{id}/_history/{vid}"),
        ("put", "/fhir/R4/Procedure"),
        ("delete", "/fhir/R4/Procedure"),
        ("patch", "/fhir/R4/Procedure/{id}"),
        ("post", "/fhir/R4/DocumentReference"),
        ("get", "/fhir/R4/DocumentReference"),
        ("post", "/fhir/R4/DocumentReference/_search"),
        ("get", "/fhir/R4/DocumentReference/{id}"),
        ("put", "/fhir/R4/DocumentReference/{id}"),
        ("delete", "/fhir/R4/DocumentReference/{id}"),
        ("get", "/fhir/R4/DocumentReference/{id}/_history"),
        ("get", "/fhir/R4/DocumentReference/_history"),
        ("get", "/fhir/R4/DocumentReference/{id}/_history/{vid}"),
        ("put", "/fhir/R4/DocumentReference"),
        ("delete", "/fhir/R4/DocumentReference"),
        ("patch", "/fhir/R4/DocumentReference/{id}"),
        ("post", "/fhir/R4/Consent"),
        ("get", "/fhir/R4/Consent"),
        ("post", "/fhir/R4/Consent/_search"),
        ("get", "/fhir/R4/Consent/{id}"),
        ("put", "/fhir/R4/Consent/{id}"),
        ("delete", "/fhir/R4/Consent/{id}"),
        ("get", "/fhir/R4/Consent/{id}/_history"),
        ("get", "/fhir/R4/Consent/_history"),
        ("get", "/fhir/R4/Consent/{id}/_history/{vid}"),
        ("put", "/fhir/R4/Consent"),
        ("delete", "/fhir/R4/Consent"),
        ("patch", "/fhir/R4/Consent/{id}"),
        ("post", "/fhir/R4/Practitioner"),
        ("get", "/fhir/R4/Practitioner"),
        ("post", "/fhir/R4/Practitioner/_search"),
        ("get", "/fhir/R4/Practitioner/{id}"),
        ("put", "/fhir/R4/Practitioner/{id}"),
        ("delete", "/fhir/R4/Practitioner/{id}"),
        ("get", "/fhir/R4/Practitioner/{id}/_history"),
        ("get", "/fhir/R4/Practitioner/_history"),
        ("get", "/fhir/R4/Practitioner/{id}/_history/{vid}"),
        ("put", "/fhir/R4/Practitioner"),
        ("delete", "/fhir/R4/Practitioner"),
        ("patch", "/fhir/R4/Practitioner/{id}"),
        ("post", "/fhir/R4/Organization"),
        ("get", "/fhir/R4/Organization"),
        ("post", "/fhir/R4/Organization/_search"),
        ("get", "/fhir/R4/Organization/{id}"),
        ("put", "/fhir/R4/Organization/{id}"),
        ("delete", "/fhir/R4/Organization/{id}"),
        ("get", "/fhir/R4/Organization/{id}/_history"),
        ("get", "/fhir/R4/Organization/_history"),
        ("get", "/fhir/R4/Organization/{id}/_history/{vid}"),
        ("put", "/fhir/R4/Organization"),
        ("delete", "/fhir/R4/Organization"),
        ("patch", "/fhir/R4/Organization/{id}"),
        ("post", "/fhir/R4/Location"),
        ("get", "/fhir/R4/Location"),
        ("post", "/fhir/R4/Location/_search"),
        ("get", "/fhir/R4/Location/{id}"),
        ("put", "/fhir/R4/Location/{id}"),
        ("delete", "/fhir/R4/Location/{id}"),
        ("get", "/fhir/R4/Location/{id}/_history"),
        ("get", "/fhir/R4/Location/_history"),
        ("get", "/fhir/R4/Location/{id}/_history/{vid}"),
        ("put", "/fhir/R4/Location"),
        ("delete", "/fhir/R4/Location"),
        ("patch", "/fhir/R4/Location/{id}"),
        // Every other resource type, kept as a document (see crate::fhir::documents).
        ("get", "/fhir/R4/{type}"),
        ("post", "/fhir/R4/{type}"),
        ("put", "/fhir/R4/{type}"),
        ("delete", "/fhir/R4/{type}"),
        ("post", "/fhir/R4/{type}/_search"),
        ("get", "/fhir/R4/{type}/{id}"),
        ("put", "/fhir/R4/{type}/{id}"),
        ("patch", "/fhir/R4/{type}/{id}"),
        ("delete", "/fhir/R4/{type}/{id}"),
        ("get", "/fhir/R4/{type}/{id}/_history"),
        ("get", "/fhir/R4/{type}/_history"),
        ("get", "/fhir/R4/{type}/{id}/_history/{vid}"),
        // Bulk Data $export (see crate::fhir::export).
        ("get", "/fhir/R4/$export"),
        ("get", "/fhir/R4/Patient/$export"),
        ("get", "/fhir/R4/{type}/{id}/$export"),
        ("get", "/fhir/R4/$export-status/{job}"),
        ("delete", "/fhir/R4/$export-status/{job}"),
        ("get", "/fhir/R4/$export-files/{job}/{file}"),
    ];
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                documented.push((method.to_owned(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = served
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    expected.sort();
    assert_eq!(documented, expected);
    // ...and every documented operation is routed (never the "no such route" fallback).
    let id = uuid::Uuid::now_v7().to_string();
    for (method, path) in &documented {
        let url = app.url(
            &path
                .replace("{id}", &id)
                .replace("{action}", "start")
                .replace("{type}", "Immunization")
                .replace("{vid}", "1"),
        );
        let req = match method.as_str() {
            "get" => app.client.get(url),
            "post" => app.client.post(url),
            "patch" => app.client.patch(url),
            "put" => app.client.put(url),
            "delete" => app.client.delete(url),
            other => panic!("unexpected method {other}"),
        };
        let r = req.bearer_auth(&app.token).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        // A 405 with an OperationOutcome is the type's documented refusal (an Encounter or
        // a DocumentReference is never deleted), not the router's.
        let refusal = status == 405 && body.contains("OperationOutcome");
        assert!(
            !body.contains("no such route") && (status != 405 || refusal),
            "{method} {path} is documented but not routed: {status} {body}"
        );
        if path.contains("patients") && method != "get" {
            continue;
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_routing_errors() {
    let app = TestApp::spawn("sqlite").await;
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["backend"], "sqlite");
    app.create_patient(&crate::app::patient("X-1", "Metric", "Ada"))
        .await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"salus_http_requests_total{method="POST",route="/api/v1/patients",status="201"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("salus_http_request_duration_seconds_bucket"));
    assert!(text.contains("salus_store_commit_batch_size_count"));
    assert!(!text.contains("X-1"), "no patient data in metrics");
    problem(
        app.client.get(app.url("/nowhere")).send().await.unwrap(),
        404,
        "not-found",
    )
    .await;
    problem(
        app.client.delete(app.url("/healthz")).send().await.unwrap(),
        405,
        "method-not-allowed",
    )
    .await;
    let huge = "x".repeat(40 * 1024);
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("x-filler", huge)
        .send()
        .await
        .unwrap();
    problem(r, 431, "headers-too-large").await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(
        r.headers().get("x-request-id").is_some(),
        "every response carries a request id"
    );
    app.stop().await;
}

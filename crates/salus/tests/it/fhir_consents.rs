//! FHIR Consent, served by the patient's consent, over real HTTP on both backends: a
//! consent made through FHIR pins its template and is signed through `/api/v1` (the next
//! version through FHIR, with signer, time and PDF); a FHIR update revokes it and nothing
//! else; search on the R4 Consent parameters; errors name the element; every resource
//! answered is validated by `fhir.resources`.

use crate::app::{TestApp, on_both_backends, patient};
use crate::consents::{acknowledge, clauses, ok, patient_signs, published_template, send};
use crate::fhir::{Fhir, ids};
use serde_json::json;

on_both_backends!(consents_map_both_ways_and_a_fhir_update_revokes);

const REASON: &str = "urn:salus:fhir:extension:status-reason";

async fn consents_map_both_ways_and_a_fhir_update_revokes(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let fhir = Fhir::new(&app);
    let pid = app
        .create_patient(&patient("CN-1", "Consenting", "Ada"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = published_template(&app, "research").await;
    let tid = t["id"].as_str().unwrap().to_owned();

    // FHIR → /api/v1: proposed, pinned to the newest published version, the rest kept.
    let sent = json!({
        "resourceType": "Consent",
        "status": "proposed",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}], "text": "Biobank"}],
        "patient": {"reference": format!("Patient/{pid}")},
        "policy": [{"uri": format!("urn:salus:consent-template:{tid}")}],
        "provision": {"type": "permit", "period": {"start": "2024-01-01"}},
    });
    let created = fhir.post("/Consent", &sent, &[]).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["status"], "proposed");
    assert_eq!(created.body["provision"], sent["provision"]);
    assert_eq!(created.body["category"], sent["category"]);
    let version = t["published_version"].as_i64().unwrap();
    assert_eq!(
        created.body["policy"][0]["uri"],
        format!("urn:salus:consent-template:{tid}:v{version}")
    );
    let mut c = ok(
        app.get(&format!("/api/v1/consents/{id}"), &app.token).await,
        200,
    )
    .await;
    assert_eq!(c["status"], "pending");
    assert_eq!(c["template_id"], tid.as_str());

    // Acknowledged and signed through /api/v1: FHIR shows the signing.
    for (clause, _, required) in clauses(&c["sections"]) {
        if required {
            c = acknowledge(&app, &c, &clause).await;
        }
    }
    ok(
        send(
            &app,
            &format!("/api/v1/consents/{id}/sign"),
            c["version"].as_i64(),
            Some(&patient_signs()),
        )
        .await,
        200,
    )
    .await;
    let signed = fhir.get(&format!("/Consent/{id}")).await;
    assert_eq!(signed.status, 200, "{}", signed.body);
    assert_eq!(signed.body["status"], "active");
    assert!(signed.body["dateTime"].is_string(), "{}", signed.body);
    assert!(
        signed.body["performer"][0]["display"]
            .as_str()
            .unwrap()
            .ends_with("(patient)")
    );
    assert_eq!(
        signed.body["sourceAttachment"]["contentType"],
        "application/pdf"
    );
    let pdf = app
        .get(
            signed.body["sourceAttachment"]["url"].as_str().unwrap(),
            &app.token,
        )
        .await;
    assert_eq!(pdf.status(), 200);
    let v = signed.body["meta"]["versionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        v,
        c["version"].as_i64().map(|v| (v + 1).to_string()).unwrap()
    );

    // Search on the R4 parameters.
    for (query, hits) in [
        (format!("patient={pid}"), 1),
        ("status=active".to_owned(), 1),
        ("status=proposed".to_owned(), 0),
        ("scope=research".to_owned(), 1),
        ("category=http://loinc.org|59284-0".to_owned(), 1),
        (
            format!("policy=urn:salus:consent-template:{tid}:v{version}"),
            1,
        ),
        ("period=ge2024-01-01".to_owned(), 1),
    ] {
        let b = fhir.get(&format!("/Consent?{query}")).await;
        assert_eq!(b.status, 200, "{query}: {}", b.body);
        assert_eq!(ids(&b.body).len(), hits, "{query}: {}", b.body);
    }

    // Only a revocation changes it through FHIR; the signing is /api/v1's.
    let mut changed = signed.body.clone();
    changed["provision"]["type"] = json!("deny");
    let (_, at) = fhir
        .put(&format!("/Consent/{id}"), &changed, &[])
        .await
        .outcome(422);
    assert_eq!(at, "Consent.provision");
    let mut revoke = signed.body.clone();
    revoke["status"] = json!("inactive");
    revoke["extension"] = json!([{"url": REASON, "valueString": "moved abroad"}]);
    let r = fhir
        .put(
            &format!("/Consent/{id}"),
            &revoke,
            &[("if-match", &format!("W/\"{v}\""))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "inactive");
    assert_eq!(r.body["extension"][0]["valueString"], "moved abroad");
    let api = ok(
        app.get(&format!("/api/v1/consents/{id}"), &app.token).await,
        200,
    )
    .await;
    assert_eq!(api["status"], "revoked");
    assert_eq!(api["revocation"]["reason"], "moved abroad");
    let mut again = r.body.clone();
    again["status"] = json!("active");
    let (_, at) = fhir
        .put(&format!("/Consent/{id}"), &again, &[])
        .await
        .outcome(422);
    assert_eq!(at, "Consent.status");

    // A consent made through /api/v1 and revoked before signing reads as rejected.
    let c2 = ok(
        app.post(
            "/api/v1/consents",
            &app.token,
            &json!({"patient_id": pid, "template_id": tid}),
        )
        .await,
        201,
    )
    .await;
    let id2 = c2["id"].as_str().unwrap();
    ok(
        send(
            &app,
            &format!("/api/v1/consents/{id2}/revoke"),
            c2["version"].as_i64(),
            Some(&json!({"reason": "declined"})),
        )
        .await,
        200,
    )
    .await;
    let r = fhir.get(&format!("/Consent/{id2}")).await;
    assert_eq!(r.body["status"], "rejected", "{}", r.body);
    let h = fhir.get("/Consent/_history").await;
    assert_eq!(h.status, 200, "{}", h.body);

    // Errors name the element.
    let mut foreign = sent.clone();
    foreign["policy"] = json!([{"uri": "https://example.org/policy/1"}]);
    let (_, at) = fhir.post("/Consent", &foreign, &[]).await.outcome(422);
    assert_eq!(at, "Consent.policy[0].uri");
    let mut unknown = sent.clone();
    unknown["policy"] =
        json!([{"uri": format!("urn:salus:consent-template:{}", uuid::Uuid::now_v7())}]);
    let (_, at) = fhir.post("/Consent", &unknown, &[]).await.outcome(422);
    assert_eq!(at, "Consent.policy[0].uri");
    let mut active = sent.clone();
    active["status"] = json!("active");
    let (_, at) = fhir.post("/Consent", &active, &[]).await.outcome(422);
    assert_eq!(at, "Consent.status");
    fhir.validate_all();
    app.stop().await;
}

//! Consents over HTTP, on both backends: versioned templates whose published versions never
//! change, consents that pin a published version, clause snapshots with their SHA-256,
//! signing refused until every required clause is acknowledged, revocation for good, the
//! signed PDF read back and verified on download, and the active-consent question.

use crate::app::{TestApp, on_both_backends, patient, problem};
use reqwest::Response;
use salus_kernel::{ActorId, Hash32, TenantContext};
use serde_json::{Value, json};
use uuid::Uuid;

on_both_backends!(
    consent_templates_are_versioned_and_a_published_version_never_changes,
    a_consent_is_signed_only_when_every_required_clause_is_acknowledged_and_never_after_revocation,
    the_signed_consent_pdf_round_trips_its_text_and_is_verified_on_download,
    an_active_consent_of_a_kind_is_answered_for_other_modules,
    consent_reads_are_logged_checked_and_confined,
);

const RESEARCH_CLAUSES: [(&str, bool); 3] = [
    (
        "My coded data may be used for approved research studies.",
        true,
    ),
    ("Researchers may contact me about future studies.", false),
    (
        "I may withdraw this consent at any time without affecting my care.",
        true,
    ),
];

fn template_body(kind: &str, clauses: &[(&str, bool)]) -> Value {
    let list = |cs: &[(&str, bool)]| -> Vec<Value> {
        cs.iter()
            .map(|(t, r)| json!({"text": t, "required": r}))
            .collect()
    };
    let split = clauses.len().min(2);
    let mut sections = vec![json!({"title": "Use of my data", "clauses": list(&clauses[..split])})];
    if clauses.len() > split {
        sections.push(json!({"title": "My rights", "clauses": list(&clauses[split..])}));
    }
    json!({"kind": kind, "title": format!("{kind} consent"), "sections": sections})
}

pub(crate) async fn send(
    app: &TestApp,
    path: &str,
    if_match: Option<i64>,
    body: Option<&Value>,
) -> Response {
    let mut req = app.client.post(app.url(path)).bearer_auth(&app.token);
    if let Some(v) = if_match {
        req = req.header("if-match", format!("\"{v}\""));
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.unwrap()
}

pub(crate) async fn ok(r: Response, status: u16) -> Value {
    let s = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(s, status, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A published template of `kind` with [`RESEARCH_CLAUSES`]; returns it.
pub(crate) async fn published_template(app: &TestApp, kind: &str) -> Value {
    let t = ok(
        app.post(
            "/api/v1/consent-templates",
            &app.token,
            &template_body(kind, &RESEARCH_CLAUSES),
        )
        .await,
        201,
    )
    .await;
    let id = t["id"].as_str().unwrap();
    ok(
        send(
            app,
            &format!("/api/v1/consent-templates/{id}/publish"),
            Some(1),
            None,
        )
        .await,
        200,
    )
    .await
}

/// Every clause of a consent (or template version): (id, text, required).
pub(crate) fn clauses(sections: &Value) -> Vec<(String, String, bool)> {
    sections
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["clauses"].as_array().unwrap().clone())
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["text"].as_str().unwrap().to_owned(),
                c["required"].as_bool().unwrap(),
            )
        })
        .collect()
}

async fn new_consent(app: &TestApp, pid: &str, tid: &str) -> Value {
    ok(
        app.post(
            "/api/v1/consents",
            &app.token,
            &json!({"patient_id": pid, "template_id": tid}),
        )
        .await,
        201,
    )
    .await
}

pub(crate) async fn acknowledge(app: &TestApp, c: &Value, clause: &str) -> Value {
    let id = c["id"].as_str().unwrap();
    ok(
        send(
            app,
            &format!("/api/v1/consents/{id}/acknowledge"),
            c["version"].as_i64(),
            Some(&json!({"clause_id": clause, "acknowledged_by": "Ada Patient"})),
        )
        .await,
        200,
    )
    .await
}

pub(crate) fn patient_signs() -> Value {
    json!({"signatures": [{"signer_name": "Ada Patient", "role": "patient", "method": "electronic"}]})
}

/// A signed consent of kind `research` for patient `pid` (its required clauses acknowledged);
/// returns its id. Used by the data-access log's route walk too.
pub async fn seed_signed_consent(app: &TestApp, pid: &str) -> String {
    let t = published_template(app, "research").await;
    let mut c = new_consent(app, pid, t["id"].as_str().unwrap()).await;
    for (id, _, required) in clauses(&c["sections"]) {
        if required {
            c = acknowledge(app, &c, &id).await;
        }
    }
    let id = c["id"].as_str().unwrap().to_owned();
    ok(
        send(
            app,
            &format!("/api/v1/consents/{id}/sign"),
            c["version"].as_i64(),
            Some(&patient_signs()),
        )
        .await,
        200,
    )
    .await;
    id
}

async fn consent_templates_are_versioned_and_a_published_version_never_changes(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let provider = app.token_for("dr-consent", &["provider"]).await;
    let viewer = app.token_for("viewer-consent", &["viewer"]).await;
    let body = template_body("Research", &RESEARCH_CLAUSES);
    problem(
        app.post("/api/v1/consent-templates", &provider, &body)
            .await,
        403,
        "forbidden",
    )
    .await;
    let t = ok(
        app.post("/api/v1/consent-templates", &app.token, &body)
            .await,
        201,
    )
    .await;
    let tid = t["id"].as_str().unwrap().to_owned();
    assert_eq!(t["kind"], "research");
    assert_eq!(t["latest_version"], 1);
    assert!(t.get("published_version").is_none(), "{t}");
    assert_eq!(t["versions"][0]["status"], "draft");
    let v1 = clauses(&t["versions"][0]["sections"]);
    assert_eq!(v1.len(), 3);
    assert_eq!(t["versions"][0]["sections"][1]["clauses"][0]["order"], 1);
    assert!(!v1[1].2 && v1[0].2);

    // Input is checked: the kind is a code, a template has sections of clauses.
    for (bad, field) in [
        (
            json!({"kind": "no spaces", "title": "x", "sections": [{"title": "s", "clauses": [{"text": "t", "required": true}]}]}),
            "kind",
        ),
        (
            json!({"kind": "research", "title": "x", "sections": []}),
            "sections",
        ),
        (
            json!({"kind": "research", "title": "x", "sections": [{"title": "s", "clauses": [{"text": " ", "required": true}]}]}),
            "sections[0].clauses[0].text",
        ),
    ] {
        let p = problem(
            app.post("/api/v1/consent-templates", &app.token, &bad)
                .await,
            422,
            "validation",
        )
        .await;
        assert_eq!(p["field"], field, "{p}");
    }
    problem(
        app.post(
            "/api/v1/consent-templates",
            &app.token,
            &json!({"kind": "research", "title": "x", "sections": [{"title": "s", "clauses": [{"text": "t"}]}]}),
        )
        .await,
        422,
        "validation",
    )
    .await;

    // The draft edits in place (If-Match required and checked).
    let path = format!("/api/v1/consent-templates/{tid}");
    let patch = |v: Option<i64>, b: Value| {
        let mut req = app
            .client
            .patch(app.url(&path))
            .bearer_auth(&app.token)
            .json(&b);
        if let Some(v) = v {
            req = req.header("if-match", format!("\"{v}\""));
        }
        req.send()
    };
    problem(
        patch(None, json!({"title": "x"})).await.unwrap(),
        428,
        "precondition-required",
    )
    .await;
    problem(
        patch(Some(7), json!({"title": "x"})).await.unwrap(),
        412,
        "precondition-failed",
    )
    .await;
    let t = ok(
        patch(Some(1), json!({"title": "Research registry"}))
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(t["versions"][0]["title"], "Research registry");
    assert_eq!(
        clauses(&t["versions"][0]["sections"]),
        v1,
        "sections left out are kept"
    );

    let publish = format!("/api/v1/consent-templates/{tid}/publish");
    let t = ok(send(&app, &publish, Some(2), None).await, 200).await;
    assert_eq!(t["published_version"], 1);
    assert_eq!(t["versions"][0]["status"], "published");
    assert!(t["versions"][0]["published_at"].is_string());
    let published_v1 = t["versions"][0].clone();

    // Published: never edited again, never published twice.
    let p = problem(
        patch(Some(3), json!({"title": "Changed"})).await.unwrap(),
        409,
        "conflict",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("new-version"), "{p}");
    problem(
        send(&app, &publish, Some(3), None).await,
        422,
        "illegal-transition",
    )
    .await;
    problem(
        send(
            &app,
            &format!("/api/v1/consent-templates/{tid}/retract"),
            Some(3),
            None,
        )
        .await,
        404,
        "not-found",
    )
    .await;

    // An edit is a new version: a draft copied from the published one, with new clause ids.
    let new_version = format!("/api/v1/consent-templates/{tid}/new-version");
    let t = ok(send(&app, &new_version, Some(3), None).await, 200).await;
    assert_eq!(
        (
            t["latest_version"].as_i64(),
            t["published_version"].as_i64()
        ),
        (Some(2), Some(1))
    );
    let v2 = clauses(&t["versions"][1]["sections"]);
    assert_eq!(
        v2.iter().map(|c| &c.1).collect::<Vec<_>>(),
        v1.iter().map(|c| &c.1).collect::<Vec<_>>()
    );
    assert!(v2.iter().zip(&v1).all(|(a, b)| a.0 != b.0));
    problem(
        send(&app, &new_version, Some(4), None).await,
        422,
        "illegal-transition",
    )
    .await;
    let t = ok(
        patch(Some(4), json!({"sections": [{"title": "Use of my data", "clauses": [{"text": "My data may be used for research, version two.", "required": true}]}]}))
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        t["versions"][0], published_v1,
        "editing version 2 leaves version 1 as published"
    );
    assert_eq!(clauses(&t["versions"][1]["sections"]).len(), 1);

    // Reads and lists (viewers read templates; they are nobody's data).
    let read = ok(app.get(&path, &viewer).await, 200).await;
    assert_eq!(read["version"], 5);
    let listed = ok(
        app.get(
            "/api/v1/consent-templates?kind=RESEARCH&published=true",
            &viewer,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let draft_only = ok(
        app.post(
            "/api/v1/consent-templates",
            &app.token,
            &template_body("treatment", &RESEARCH_CLAUSES),
        )
        .await,
        201,
    )
    .await;
    let listed = ok(
        app.get("/api/v1/consent-templates?published=false", &viewer)
            .await,
        200,
    )
    .await;
    assert_eq!(listed["items"][0]["id"], draft_only["id"]);
    problem(
        app.get("/api/v1/consent-templates?published=maybe", &viewer)
            .await,
        400,
        "bad-request",
    )
    .await;
    // The shapes are documented under names of their own (none shadows another's).
    let doc: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "ConsentTemplate",
        "TemplateInput",
        "Consent",
        "ConsentActionInput",
        "ConsentRevocation",
        "ConsentSignature",
        "ClauseAcknowledgement",
        "Revocation",
    ] {
        assert!(schemas.contains_key(name), "schema {name} is documented");
    }
    assert!(
        schemas["Revocation"]["properties"].get("by").is_some(),
        "the role assignment's revocation is its own"
    );
    let history = ok(app.get(&format!("{path}/history"), &viewer).await, 200).await;
    let types: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "consent_template.created",
            "consent_template.draft_edited",
            "consent_template.published",
            "consent_template.version_drafted",
            "consent_template.draft_edited"
        ]
    );
    app.stop().await;
}

async fn a_consent_is_signed_only_when_every_required_clause_is_acknowledged_and_never_after_revocation(
    backend: &str,
) {
    let app = TestApp::spawn(backend).await;
    let pid = app.create_patient(&patient("CN-1", "Consent", "Ada")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let draft = ok(
        app.post(
            "/api/v1/consent-templates",
            &app.token,
            &template_body("research", &RESEARCH_CLAUSES),
        )
        .await,
        201,
    )
    .await;
    let p = problem(
        app.post(
            "/api/v1/consents",
            &app.token,
            &json!({"patient_id": pid, "template_id": draft["id"]}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(
        p["field"], "template_id",
        "a template with no published version: {p}"
    );
    let p = problem(
        app.post(
            "/api/v1/consents",
            &app.token,
            &json!({"patient_id": pid, "template_id": draft["id"], "template_version": 1}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("draft"), "{p}");
    let t = published_template(&app, "research").await;
    let tid = t["id"].as_str().unwrap().to_owned();
    for bad in [
        json!({"patient_id": Uuid::now_v7(), "template_id": tid}),
        json!({"patient_id": pid, "template_id": Uuid::now_v7()}),
        json!({"patient_id": pid, "template_id": tid, "template_version": 2}),
    ] {
        problem(
            app.post("/api/v1/consents", &app.token, &bad).await,
            422,
            "validation",
        )
        .await;
    }
    let viewer = app.token_for("viewer-c", &["viewer"]).await;
    problem(
        app.post(
            "/api/v1/consents",
            &viewer,
            &json!({"patient_id": pid, "template_id": tid}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;

    // A repeated create under its Idempotency-Key answers the first consent again.
    let keyed = || {
        app.client
            .post(app.url("/api/v1/consents"))
            .bearer_auth(&app.token)
            .header("idempotency-key", "consent-once")
            .json(&json!({"patient_id": pid, "template_id": tid}))
            .send()
    };
    let first = ok(keyed().await.unwrap(), 201).await;
    let again = keyed().await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(ok(again, 201).await["id"], first["id"]);

    let c = new_consent(&app, &pid, &tid).await;
    let cid = c["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (c["status"].as_str(), c["template_version"].as_i64()),
        (Some("pending"), Some(1))
    );
    assert_eq!(c["kind"], "research");
    let cl = clauses(&c["sections"]);
    let required: Vec<&(String, String, bool)> = cl.iter().filter(|c| c.2).collect();
    assert_eq!(required.len(), 2);

    // Signing lists every required clause not yet acknowledged, with its text.
    let sign = format!("/api/v1/consents/{cid}/sign");
    let p = problem(
        send(&app, &sign, Some(1), Some(&patient_signs())).await,
        409,
        "consent-incomplete",
    )
    .await;
    let missing: Vec<(&str, &str)> = p["missing_clauses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["clause_id"].as_str().unwrap(),
                m["text"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        missing,
        required
            .iter()
            .map(|c| (c.0.as_str(), c.1.as_str()))
            .collect::<Vec<_>>()
    );

    // An acknowledgement snapshots the clause text and its SHA-256.
    let c = acknowledge(&app, &c, &required[0].0).await;
    let a = &c["acknowledgements"][0];
    assert_eq!(a["text"], required[0].1.as_str());
    assert_eq!(
        a["text_sha256"],
        Hash32::sha256(required[0].1.as_bytes()).to_hex()
    );
    assert_eq!(a["acknowledged_by"], "Ada Patient");
    assert!(a["acknowledged_at"].is_string() && a["recorded_by"].is_string());
    let again = acknowledge(&app, &c, &required[0].0).await;
    assert_eq!(
        again["version"], c["version"],
        "acknowledging twice changes nothing"
    );
    let p = problem(
        send(&app, &sign, c["version"].as_i64(), Some(&patient_signs())).await,
        409,
        "consent-incomplete",
    )
    .await;
    assert_eq!(p["missing_clauses"].as_array().unwrap().len(), 1);
    assert_eq!(p["missing_clauses"][0]["clause_id"], required[1].0.as_str());
    let p = problem(
        send(
            &app,
            &format!("/api/v1/consents/{cid}/acknowledge"),
            c["version"].as_i64(),
            Some(&json!({"clause_id": Uuid::now_v7()})),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(p["field"], "clause_id");
    problem(
        send(
            &app,
            &format!("/api/v1/consents/{cid}/acknowledge"),
            c["version"].as_i64(),
            Some(&json!({})),
        )
        .await,
        422,
        "validation",
    )
    .await;
    problem(
        send(
            &app,
            &format!("/api/v1/consents/{cid}/acknowledge"),
            Some(1),
            Some(&json!({"clause_id": required[1].0})),
        )
        .await,
        412,
        "precondition-failed",
    )
    .await;
    problem(
        send(
            &app,
            &format!("/api/v1/consents/{cid}/acknowledge"),
            None,
            Some(&json!({"clause_id": required[1].0})),
        )
        .await,
        428,
        "precondition-required",
    )
    .await;
    let c = acknowledge(&app, &c, &required[1].0).await;

    // Signatures are checked; the signing is idempotent under its key.
    let v = c["version"].as_i64();
    let p = problem(send(&app, &sign, v, Some(&json!({"signatures": [{"signer_name": "W. Itness", "role": "witness", "method": "wet_ink_scan"}]}))).await, 422, "validation").await;
    assert_eq!(p["field"], "signatures");
    problem(send(&app, &sign, v, Some(&json!({"signatures": [{"signer_name": "A", "role": "uncle", "method": "electronic"}]}))).await, 422, "validation").await;
    let two = json!({"signatures": [
        {"signer_name": "Ada Patient", "role": "patient", "method": "verbal_witnessed"},
        {"signer_name": "Nurse Witness", "role": "witness", "method": "verbal_witnessed"}]});
    let signed_req = || {
        app.client
            .post(app.url(&sign))
            .bearer_auth(&app.token)
            .header("if-match", format!("\"{}\"", v.unwrap()))
            .header("idempotency-key", "sign-once")
            .json(&two)
            .send()
    };
    let signed = ok(signed_req().await.unwrap(), 200).await;
    assert_eq!(signed["status"], "signed");
    assert!(signed["signed_at"].is_string());
    let sigs = signed["signatures"].as_array().unwrap();
    assert_eq!(
        (sigs[0]["role"].as_str(), sigs[0]["method"].as_str()),
        (Some("patient"), Some("verbal_witnessed"))
    );
    assert_eq!(sigs[1]["signer_name"], "Nurse Witness");
    assert!(sigs[0]["signed_at"].is_string());
    assert_eq!(signed["document"]["content_type"], "application/pdf");
    assert_eq!(signed["document"]["sha256"].as_str().unwrap().len(), 64);
    let replay = signed_req().await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(ok(replay, 200).await, signed);
    let sv = signed["version"].as_i64();
    problem(
        send(&app, &sign, sv, Some(&patient_signs())).await,
        422,
        "illegal-transition",
    )
    .await;
    problem(
        send(
            &app,
            &format!("/api/v1/consents/{cid}/acknowledge"),
            sv,
            Some(&json!({"clause_id": cl[1].0})),
        )
        .await,
        422,
        "illegal-transition",
    )
    .await;

    // The template moving on does not move the consent: it pins version 1.
    ok(
        send(
            &app,
            &format!("/api/v1/consent-templates/{tid}/new-version"),
            Some(2),
            None,
        )
        .await,
        200,
    )
    .await;
    ok(
        send(
            &app,
            &format!("/api/v1/consent-templates/{tid}/publish"),
            Some(3),
            None,
        )
        .await,
        200,
    )
    .await;
    let read = ok(
        app.get(&format!("/api/v1/consents/{cid}"), &app.token)
            .await,
        200,
    )
    .await;
    assert_eq!(read["template_version"], 1);
    assert_eq!(read["sections"], c["sections"]);

    // Revocation records who, why and when; a revoked consent is never signed again.
    let revoke = format!("/api/v1/consents/{cid}/revoke");
    problem(
        send(&app, &revoke, sv, Some(&json!({}))).await,
        422,
        "validation",
    )
    .await;
    problem(
        send(
            &app,
            &revoke,
            sv,
            Some(&json!({"reason": "x", "nonsense": 1})),
        )
        .await,
        422,
        "validation",
    )
    .await;
    let revoked = ok(
        send(
            &app,
            &revoke,
            sv,
            Some(&json!({"reason": "Patient withdrew by phone", "requested_by": "Ada Patient"})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(revoked["status"], "revoked");
    let r = &revoked["revocation"];
    assert_eq!(
        (r["reason"].as_str(), r["requested_by"].as_str()),
        (Some("Patient withdrew by phone"), Some("Ada Patient"))
    );
    assert!(r["revoked_at"].is_string() && r["revoked_by"].is_string());
    assert_eq!(
        revoked["document"], signed["document"],
        "the signed document stays as evidence"
    );
    let rv = revoked["version"].as_i64();
    let p = problem(
        send(&app, &sign, rv, Some(&patient_signs())).await,
        409,
        "conflict",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("new consent"), "{p}");
    problem(
        send(&app, &revoke, rv, Some(&json!({"reason": "again"}))).await,
        422,
        "illegal-transition",
    )
    .await;
    problem(
        send(
            &app,
            &format!("/api/v1/consents/{cid}/approve"),
            rv,
            Some(&json!({})),
        )
        .await,
        404,
        "not-found",
    )
    .await;
    // A pending consent that is withdrawn cannot be signed either.
    let pending = new_consent(&app, &pid, &tid).await;
    let pcid = pending["id"].as_str().unwrap();
    let withdrawn = ok(
        send(
            &app,
            &format!("/api/v1/consents/{pcid}/revoke"),
            Some(1),
            Some(&json!({"reason": "Declined"})),
        )
        .await,
        200,
    )
    .await;
    problem(
        send(
            &app,
            &format!("/api/v1/consents/{pcid}/sign"),
            withdrawn["version"].as_i64(),
            Some(&patient_signs()),
        )
        .await,
        409,
        "conflict",
    )
    .await;
    let history = ok(
        app.get(&format!("/api/v1/consents/{cid}/history"), &app.token)
            .await,
        200,
    )
    .await;
    let types: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "consent.created",
            "consent.clause_acknowledged",
            "consent.clause_acknowledged",
            "consent.signed",
            "consent.revoked"
        ]
    );
    app.stop().await;
}

async fn the_signed_consent_pdf_round_trips_its_text_and_is_verified_on_download(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let pid = app
        .create_patient(&patient("CN-2", "Document", "Ada"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = published_template(&app, "research").await;
    let pending = new_consent(&app, &pid, t["id"].as_str().unwrap()).await;
    problem(
        app.get(
            &format!(
                "/api/v1/consents/{}/document",
                pending["id"].as_str().unwrap()
            ),
            &app.token,
        )
        .await,
        404,
        "not-found",
    )
    .await;
    let cid = seed_signed_consent(&app, &pid).await;
    let c = ok(
        app.get(&format!("/api/v1/consents/{cid}"), &app.token)
            .await,
        200,
    )
    .await;
    let url = format!("/api/v1/consents/{cid}/document");
    let r = app.get(&url, &app.token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    let pdf = r.bytes().await.unwrap();
    let sha = c["document"]["sha256"].as_str().unwrap();
    assert_eq!(Hash32::sha256(&pdf).to_hex(), sha);
    assert_eq!(c["document"]["size"].as_u64(), Some(pdf.len() as u64));

    // Open it with a PDF parser and read the clause texts, the signature and hashes back.
    let doc = lopdf::Document::load_mem(&pdf).expect("a PDF");
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    let text = doc.extract_text(&pages).expect("text");
    let flat = text.replace('\n', " ");
    for (_, clause, _) in clauses(&c["sections"]) {
        assert!(
            flat.contains(&clause),
            "the PDF lacks clause '{clause}':\n{text}"
        );
    }
    for a in c["acknowledgements"].as_array().unwrap() {
        assert!(text.contains(a["text_sha256"].as_str().unwrap()), "{text}");
    }
    assert!(text.contains("Ada Patient (patient), electronic"), "{text}");
    assert!(text.contains(&cid) && text.contains(&pid), "{text}");
    assert!(
        text.contains("Patient: Document, Ada (born 1980-04-23)"),
        "{text}"
    );
    assert!(
        text.contains("Not acknowledged"),
        "the optional clause left out is marked: {text}"
    );

    // The download is logged as a download of the patient's data.
    let log = ok(
        app.get(
            &format!("/api/v1/audit/access?patient_id={pid}&limit=500"),
            &app.token,
        )
        .await,
        200,
    )
    .await;
    assert!(
        log["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "download"
                && e["resource_type"] == "consent"
                && e["resource_id"] == cid.as_str()),
        "{log}"
    );

    // Alter the stored bytes: the document is withheld.
    let path = app
        .settings
        .data_dir
        .join("blobs")
        .join(&sha[0..2])
        .join(&sha[2..4])
        .join(sha);
    let mut altered = pdf.to_vec();
    let at = altered.len() / 2;
    altered[at] ^= 0x20;
    std::fs::write(&path, &altered).unwrap();
    problem(app.get(&url, &app.token).await, 500, "integrity").await;
    std::fs::remove_file(&path).unwrap();
    problem(app.get(&url, &app.token).await, 500, "integrity").await;
    app.stop().await;
}

async fn an_active_consent_of_a_kind_is_answered_for_other_modules(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let pid = app.create_patient(&patient("CN-3", "Active", "Ada")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = app.create_patient(&patient("CN-4", "Other", "Bea")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cid = seed_signed_consent(&app, &pid).await;
    let treatment = published_template(&app, "treatment").await;
    new_consent(&app, &pid, treatment["id"].as_str().unwrap()).await;
    let revoked = seed_signed_consent(&app, &other).await;
    let rc = ok(
        app.get(&format!("/api/v1/consents/{revoked}"), &app.token)
            .await,
        200,
    )
    .await;
    ok(
        send(
            &app,
            &format!("/api/v1/consents/{revoked}/revoke"),
            rc["version"].as_i64(),
            Some(&json!({"reason": "withdrawn"})),
        )
        .await,
        200,
    )
    .await;

    // The domain query other modules call.
    let running = app.running.as_ref().unwrap();
    let ctx = TenantContext::new(app.tenant, ActorId(Uuid::nil()), Uuid::now_v7());
    let has = |p: &str, kind: &'static str| {
        let p = Uuid::parse_str(p).unwrap();
        let (services, ctx) = (&running.services, &ctx);
        async move {
            salus_domain::clinical::consent::has_active_consent(services, ctx, p, kind)
                .await
                .unwrap()
        }
    };
    assert!(has(&pid, "research").await);
    assert!(has(&pid, "RESEARCH").await);
    assert!(
        !has(&pid, "treatment").await,
        "a pending consent is not active"
    );
    assert!(!has(&pid, "data_sharing").await);
    assert!(
        !has(&other, "research").await,
        "a revoked consent is not active"
    );
    assert!(!has(&pid, "not a kind").await);
    let elsewhere = TenantContext::new(
        salus_kernel::TenantId(Uuid::now_v7()),
        ActorId(Uuid::nil()),
        Uuid::now_v7(),
    );
    assert!(
        !salus_domain::clinical::consent::has_active_consent(
            &running.services,
            &elsewhere,
            Uuid::parse_str(&pid).unwrap(),
            "research"
        )
        .await
        .unwrap()
    );

    // The same question over HTTP.
    let ids = |v: &Value| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let q = |p: &str, query: &str| format!("/api/v1/patients/{p}/consents{query}");
    assert_eq!(
        ids(&ok(
            app.get(&q(&pid, "?kind=research&active=true"), &app.token)
                .await,
            200
        )
        .await),
        [cid.as_str()]
    );
    assert!(
        ids(&ok(
            app.get(&q(&pid, "?kind=treatment&active=true"), &app.token)
                .await,
            200
        )
        .await)
        .is_empty()
    );
    assert_eq!(
        ids(&ok(app.get(&q(&pid, "?kind=treatment"), &app.token).await, 200).await).len(),
        1
    );
    assert_eq!(
        ids(&ok(app.get(&q(&pid, ""), &app.token).await, 200).await).len(),
        2
    );
    assert!(
        ids(&ok(
            app.get(&q(&other, "?kind=research&active=true"), &app.token)
                .await,
            200
        )
        .await)
        .is_empty()
    );
    problem(
        app.get(&q(&pid, "?active=yes"), &app.token).await,
        400,
        "bad-request",
    )
    .await;
    problem(
        app.get(&q(&pid, "?kind=no%20way"), &app.token).await,
        422,
        "validation",
    )
    .await;
    problem(
        app.get(&q("not-a-uuid", ""), &app.token).await,
        404,
        "not-found",
    )
    .await;
    // The tenant-wide list filters the same way.
    let listed = ok(
        app.get(
            &format!("/api/v1/consents?patient_id={pid}&status=signed"),
            &app.token,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(ids(&listed), [cid.as_str()]);
    let listed = ok(
        app.get("/api/v1/consents?kind=research&status=revoked", &app.token)
            .await,
        200,
    )
    .await;
    assert_eq!(ids(&listed), [revoked.as_str()]);
    problem(
        app.get("/api/v1/consents?status=void", &app.token).await,
        400,
        "bad-request",
    )
    .await;

    // Revoking the active one answers no from then on.
    let c = ok(
        app.get(&format!("/api/v1/consents/{cid}"), &app.token)
            .await,
        200,
    )
    .await;
    ok(
        send(
            &app,
            &format!("/api/v1/consents/{cid}/revoke"),
            c["version"].as_i64(),
            Some(&json!({"reason": "withdrawn"})),
        )
        .await,
        200,
    )
    .await;
    assert!(!has(&pid, "research").await);
    assert!(
        ids(&ok(
            app.get(&q(&pid, "?kind=research&active=true"), &app.token)
                .await,
            200
        )
        .await)
        .is_empty()
    );
    app.stop().await;
}

async fn consent_reads_are_logged_checked_and_confined(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let pid = app.create_patient(&patient("CN-5", "Logged", "Ada")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = app.create_patient(&patient("CN-6", "Else", "Bea")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cid = seed_signed_consent(&app, &pid).await;
    let viewer = app.token_for("viewer-l", &["viewer"]).await;
    let url = format!("/api/v1/consents/{cid}");
    ok(app.get(&url, &viewer).await, 200).await;
    let log = ok(
        app.get(
            &format!("/api/v1/audit/access?patient_id={pid}&limit=500"),
            &app.token,
        )
        .await,
        200,
    )
    .await;
    assert!(
        log["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "read"
                && e["resource_type"] == "consent"
                && e["resource_id"] == cid.as_str()),
        "{log}"
    );
    // Another tenant sees nothing.
    let stranger = app.other_tenant("elsewhere").await;
    problem(app.get(&url, &stranger).await, 404, "not-found").await;
    let listed = ok(app.get("/api/v1/consents", &stranger).await, 200).await;
    assert!(listed["items"].as_array().unwrap().is_empty());
    // A patient-context token sees its own consents only.
    let running = app.running.as_ref().unwrap();
    let uid = salus::server::create_user(
        &running.services,
        app.tenant,
        "portal",
        "portal",
        vec!["viewer".into()],
    )
    .await
    .unwrap();
    let own = running
        .auth
        .issue_limited(
            uid,
            app.tenant,
            std::time::Duration::from_secs(600),
            salus_api::auth::TokenLimits {
                scope: Some("patient/*.read".into()),
                patient: Some(Uuid::parse_str(&pid).unwrap()),
            },
        )
        .unwrap();
    ok(app.get(&url, &own).await, 200).await;
    let theirs = ok(app.get("/api/v1/consents", &own).await, 200).await;
    assert_eq!(theirs["items"].as_array().unwrap().len(), 1);
    problem(
        app.get(&format!("/api/v1/patients/{other}/consents"), &own)
            .await,
        404,
        "not-found",
    )
    .await;
    problem(
        app.post("/api/v1/consents", &own, &json!({})).await,
        403,
        "forbidden",
    )
    .await;

    // Tamper with a stored snapshot beneath the server: the consent is withheld, loudly.
    let clause = RESEARCH_CLAUSES[0].0;
    match &app.settings.database_url {
        None => {
            let c = rusqlite::Connection::open(app.settings.sqlite_path()).unwrap();
            let n = c
                .execute(
                    "UPDATE resources SET doc = replace(doc, ?1, 'My data may be sold.') WHERE resource_type = 'consent'",
                    [clause],
                )
                .unwrap();
            assert_eq!(n, 1);
        }
        Some(db) => {
            let (c, conn) = tokio_postgres::connect(db, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let n = c
                .execute(
                    "UPDATE resources SET doc = replace(doc::text, $1, 'My data may be sold.')::jsonb WHERE resource_type = 'consent'",
                    &[&clause],
                )
                .await
                .unwrap();
            assert_eq!(n, 1);
        }
    }
    let p = problem(app.get(&url, &app.token).await, 500, "integrity").await;
    assert!(!p.to_string().contains("sold"), "{p}");
    problem(
        app.get(&format!("/api/v1/consents?patient_id={pid}"), &app.token)
            .await,
        500,
        "integrity",
    )
    .await;
    app.stop().await;
}

//! Deny by default: every way a token can be wrong is a 401, a missing permission a 403,
//! another tenant's record a 404.

use crate::app::{TestApp, on_both_backends, patient, problem};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

on_both_backends!(tokens_are_checked_and_tenants_isolated);

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

async fn tokens_are_checked_and_tenants_isolated(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let created = app.create_patient(&patient("A1", "Okafor", "Ngozi")).await;
    let path = format!("/api/v1/patients/{}", created["id"].as_str().unwrap());

    // No token.
    let r = app.client.get(app.url(&path)).send().await.unwrap();
    assert!(r.headers().get("www-authenticate").is_some());
    problem(r, 401, "unauthorized").await;
    // Garbage.
    problem(app.get(&path, "not-a-jwt").await, 401, "unauthorized").await;

    let secret = std::fs::read_to_string(app.settings.data_dir.join("jwt-secret")).unwrap();
    let now = jsonwebtoken::get_current_timestamp();
    let claims = |aud: &str, exp: u64| json!({"sub": "00000000-0000-0000-0000-000000000000", "tid": app.tenant.0, "iss": "salus", "aud": aud, "iat": now, "exp": exp});
    // Find the admin's id from a valid token to build otherwise-valid claims.
    let payload = app.token.split('.').nth(1).unwrap();
    let real: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let with_sub = |mut c: serde_json::Value| {
        c["sub"] = real["sub"].clone();
        c
    };
    let sign = |c: &serde_json::Value, key: &[u8]| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            c,
            &EncodingKey::from_secret(key),
        )
        .unwrap()
    };
    // Control: a well-formed token signed with the secret works.
    let good = sign(
        &with_sub(claims("salus-api", now + 600)),
        secret.trim().as_bytes(),
    );
    assert_eq!(app.get(&path, &good).await.status(), 200);
    // alg: none.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&with_sub(claims("salus-api", now + 600)))
    );
    problem(app.get(&path, &none).await, 401, "unauthorized").await;
    // Expired (beyond the 30 s leeway).
    let expired = sign(
        &with_sub(claims("salus-api", now - 120)),
        secret.trim().as_bytes(),
    );
    let body = problem(app.get(&path, &expired).await, 401, "unauthorized").await;
    assert!(body["detail"].as_str().unwrap().contains("expired"));
    // Wrong audience.
    let aud = sign(
        &with_sub(claims("someone-else", now + 600)),
        secret.trim().as_bytes(),
    );
    let body = problem(app.get(&path, &aud).await, 401, "unauthorized").await;
    assert!(body["detail"].as_str().unwrap().contains("audience"));
    // Wrong signature.
    let forged = sign(
        &with_sub(claims("salus-api", now + 600)),
        b"an-attacker-secret-of-enough-length!!",
    );
    let body = problem(app.get(&path, &forged).await, 401, "unauthorized").await;
    assert!(body["detail"].as_str().unwrap().contains("signature"));
    // Signed correctly but naming no user.
    let ghost = sign(&claims("salus-api", now + 600), secret.trim().as_bytes());
    problem(app.get(&path, &ghost).await, 401, "unauthorized").await;

    // Permission: a viewer reads but cannot write.
    let viewer = app.token_for("vera", &["viewer"]).await;
    assert_eq!(app.get(&path, &viewer).await.status(), 200);
    let body = problem(
        app.post("/api/v1/patients", &viewer, &patient("A2", "X", "Y"))
            .await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(body["permission"], "patients:write");
    // An auditor cannot even read patients.
    let auditor = app.token_for("aud", &["auditor"]).await;
    problem(app.get(&path, &auditor).await, 403, "forbidden").await;

    // Another tenant's admin sees nothing of ours.
    let other = app.other_tenant("elsewhere").await;
    problem(app.get(&path, &other).await, 404, "not-found").await;
    let r = app
        .get("/api/v1/patients?identifier=urn:mrn|A1", &other)
        .await;
    let page: serde_json::Value = r.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    app.stop().await;
}

/// External OpenID Connect tokens (ES256) are verified against the issuer's JWKS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_es256_tokens_are_verified_against_the_jwks() {
    const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgC/XX7445TflVZbHs\nFDIOW0Kxec+d7i6oFDBnKX7KH9GhRANCAAQT0lWiPxdi3zmnI2F5RLUCwNUaMwY9\nRG4SkRxmNh8dIgsqWTFCpT/iXWKdZpTRIaliAqhZrTAyfELuVY9N/ZK3\n-----END PRIVATE KEY-----\n";
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
        "x": "E9JVoj8XYt85pyNheUS1AsDVGjMGPURuEpEcZjYfHSI", "y": "CypZMUKlP-JdYp1mlNEhqWICqFmtMDJ8Qu5Vj039krc"}]});
    let jwks_dir = tempfile::tempdir().unwrap();
    let jwks_path = jwks_dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();
    let app = TestApp::spawn_with("sqlite", |s| {
        s.oidc_issuer = Some("https://idp.example.org".into());
        s.oidc_jwks = Some(jwks_path.to_string_lossy().into_owned());
    })
    .await;
    let now = jsonwebtoken::get_current_timestamp();
    let key = EncodingKey::from_ec_pem(PRIVATE.as_bytes()).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let claims = |iss: &str| json!({"sub": "ext-123", "preferred_username": "admin", "tid": app.tenant.0, "iss": iss, "aud": "salus-api", "iat": now, "exp": now + 300});
    let token = jsonwebtoken::encode(&header, &claims("https://idp.example.org"), &key).unwrap();
    assert_eq!(app.get("/api/v1/patients", &token).await.status(), 200);
    let wrong_iss = jsonwebtoken::encode(&header, &claims("https://evil.example"), &key).unwrap();
    problem(
        app.get("/api/v1/patients", &wrong_iss).await,
        401,
        "unauthorized",
    )
    .await;
    let mut unknown_kid = header.clone();
    unknown_kid.kid = Some("nope".into());
    let t = jsonwebtoken::encode(&unknown_kid, &claims("https://idp.example.org"), &key).unwrap();
    problem(app.get("/api/v1/patients", &t).await, 401, "unauthorized").await;
    app.stop().await;
}

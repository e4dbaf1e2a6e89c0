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

on_both_backends!(
    eddsa_tokens_are_published_and_verifiable_offline,
    old_hs256_tokens_keep_working_when_eddsa_signs
);

fn header_of(token: &str) -> jsonwebtoken::Header {
    jsonwebtoken::decode_header(token).unwrap()
}

fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// An Ed25519 seed as PKCS#8 DER (RFC 8410 §7: a fixed prefix, then the seed).
fn ed25519_der(seed: [u8; 32]) -> Vec<u8> {
    let mut der = hex_bytes("302e020100300506032b657004220420");
    der.extend_from_slice(&seed);
    der
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

async fn eddsa_tokens_are_published_and_verifiable_offline(backend: &str) {
    let app = TestApp::spawn(backend).await;
    let path = "/api/v1/patients";
    // The first-login token is EdDSA (the default), naming its key.
    let header = header_of(&app.token);
    assert_eq!(header.alg, Algorithm::EdDSA);
    let kid = header.kid.clone().expect("an EdDSA token names its key");
    assert_eq!(app.get(path, &app.token).await.status(), 200);

    // The key is kept in the data directory, readable by its owner only.
    let key_file = app.settings.data_dir.join("token-ed25519.key");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The public key is published without authentication, as an OKP JWK (RFC 8037).
    let r = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let jwks: serde_json::Value = r.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let jwk = &keys[0];
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["alg"], "EdDSA");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["kid"], kid.as_str());
    assert!(jwk.get("d").is_none(), "the private key is never published");

    // Another service verifies a Salus token with nothing but the published set.
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(set.find(&kid).unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(Algorithm::EdDSA);
    v.set_audience(&["salus-api"]);
    v.set_issuer(&["salus"]);
    jsonwebtoken::decode::<serde_json::Value>(&app.token, &key, &v).expect("verifies offline");

    let now = jsonwebtoken::get_current_timestamp();
    let claims = |aud: &str| {
        let mut c = claims_of(&app.token);
        c["aud"] = json!(aud);
        c["iat"] = json!(now);
        c["exp"] = json!(now + 600);
        c
    };
    // Algorithm confusion: an HS256 token whose HMAC key is the public key (its bytes or
    // its base64url text) is a wrong signature, even naming the EdDSA key.
    let x = jwk["x"].as_str().unwrap();
    let public = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(x)
        .unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(kid.clone());
    for hmac_key in [public.as_slice(), x.as_bytes()] {
        let t = jsonwebtoken::encode(
            &hs,
            &claims("salus-api"),
            &EncodingKey::from_secret(hmac_key),
        )
        .unwrap();
        let body = problem(app.get(path, &t).await, 401, "unauthorized").await;
        assert!(
            body["detail"].as_str().unwrap().contains("signature"),
            "{body}"
        );
    }
    // alg: none naming the key.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
        b64(&claims("salus-api"))
    );
    problem(app.get(path, &none).await, 401, "unauthorized").await;
    // Another Ed25519 key, naming ours: wrong signature; naming itself: unknown key.
    let stranger = EncodingKey::from_ed_der(&ed25519_der([42; 32]));
    let mut ed = Header::new(Algorithm::EdDSA);
    ed.kid = Some(kid.clone());
    let t = jsonwebtoken::encode(&ed, &claims("salus-api"), &stranger).unwrap();
    let body = problem(app.get(path, &t).await, 401, "unauthorized").await;
    assert!(
        body["detail"].as_str().unwrap().contains("signature"),
        "{body}"
    );
    ed.kid = Some("another-key".into());
    let t = jsonwebtoken::encode(&ed, &claims("salus-api"), &stranger).unwrap();
    let body = problem(app.get(path, &t).await, 401, "unauthorized").await;
    assert!(body["detail"].as_str().unwrap().contains("key"), "{body}");
    // Our key, another audience.
    let seed = std::fs::read_to_string(&key_file).unwrap();
    let ours = EncodingKey::from_ed_der(&ed25519_der(hex_bytes(seed.trim()).try_into().unwrap()));
    ed.kid = Some(kid.clone());
    let t = jsonwebtoken::encode(&ed, &claims("someone-else"), &ours).unwrap();
    let body = problem(app.get(path, &t).await, 401, "unauthorized").await;
    assert!(
        body["detail"].as_str().unwrap().contains("audience"),
        "{body}"
    );
    // ...and the right audience: accepted (the control).
    let t = jsonwebtoken::encode(&ed, &claims("salus-api"), &ours).unwrap();
    assert_eq!(app.get(path, &t).await.status(), 200);
    // Tokens for new users are EdDSA too.
    let viewer = app.token_for("vic", &["viewer"]).await;
    assert_eq!(header_of(&viewer).alg, Algorithm::EdDSA);
    assert_eq!(app.get(path, &viewer).await.status(), 200);
    app.stop().await;
}

fn run_salus(args: &[String], cmd: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_salus"))
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

async fn old_hs256_tokens_keep_working_when_eddsa_signs(backend: &str) {
    // A token key given by configuration: no key file, and a kid that follows from it.
    let seed = "05".repeat(32);
    let expected_kid = salus_api::auth::TokenKey::from_hex(&seed)
        .unwrap()
        .kid()
        .to_owned();
    let app = TestApp::spawn_with(backend, |s| {
        s.token_algorithm = salus_api::auth::LocalAlgorithm::Hs256;
        s.token_key = Some(seed.clone());
    })
    .await;
    let old = app.token.clone();
    assert_eq!(header_of(&old).alg, Algorithm::HS256);
    assert_eq!(app.get("/api/v1/patients", &old).await.status(), 200);
    assert!(!app.settings.data_dir.join("token-ed25519.key").exists());
    let jwks: serde_json::Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], expected_kid.as_str());

    // The operator's command honours the setting too, and refuses an unknown algorithm.
    let mut args = vec![
        "--data-dir".to_string(),
        app.settings.data_dir.to_string_lossy().into_owned(),
        "--token-key".to_string(),
        seed.clone(),
    ];
    if let Some(url) = &app.settings.database_url {
        args.push("--database-url".into());
        args.push(url.clone());
    }
    let mut settings = app.settings.clone();
    let client = app.client.clone();
    let leftovers = app.stop().await;
    let issue = ["token", "issue", "--user", "admin"];
    let (code, out, err) = run_salus(&args, &issue);
    assert_eq!(code, 0, "{err}");
    let cli_eddsa = out.trim().to_owned();
    assert_eq!(header_of(&cli_eddsa).alg, Algorithm::EdDSA);
    assert_eq!(
        header_of(&cli_eddsa).kid.as_deref(),
        Some(expected_kid.as_str())
    );
    let mut hs_args = args.clone();
    hs_args.extend(["--token-algorithm".to_string(), "hs256".to_string()]);
    let (code, out, err) = run_salus(&hs_args, &issue);
    assert_eq!(code, 0, "{err}");
    let cli_hs256 = out.trim().to_owned();
    assert_eq!(header_of(&cli_hs256).alg, Algorithm::HS256);
    let mut bad = args.clone();
    bad.extend(["--token-algorithm".to_string(), "rs256".to_string()]);
    let (code, _, err) = run_salus(&bad, &issue);
    assert_eq!(code, 1);
    assert!(err.contains("neither hs256 nor eddsa"), "{err}");

    // The same deployment restarted with EdDSA (the default) signing: the HS256 tokens
    // issued before still work, and new tokens are EdDSA.
    settings.token_algorithm = salus_api::auth::LocalAlgorithm::EdDsa;
    let (running, boot) = salus::server::start(&settings).await.unwrap();
    assert!(boot.is_none());
    let base = format!("http://{}", running.addr);
    for token in [&old, &cli_hs256, &cli_eddsa] {
        let r = client
            .get(format!("{base}/api/v1/patients"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let user: uuid::Uuid = claims_of(&old)["sub"].as_str().unwrap().parse().unwrap();
    let tenant = salus_kernel::TenantId(claims_of(&old)["tid"].as_str().unwrap().parse().unwrap());
    let fresh = running
        .auth
        .issue(user, tenant, std::time::Duration::from_secs(60))
        .unwrap();
    assert_eq!(header_of(&fresh).alg, Algorithm::EdDSA);
    let r = client
        .get(format!("{base}/api/v1/patients"))
        .bearer_auth(&fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    running.stop().await.unwrap();
    drop(leftovers);

    // A token key that is not a 32-byte hex seed stops the start with a clear message.
    let mut broken = settings.clone();
    broken.token_key = Some("not-hex".into());
    let err = salus::server::token_key(&broken).unwrap_err();
    assert!(err.to_string().contains("not hex"), "{err}");
}

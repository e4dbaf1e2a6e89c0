//! An OpenID Connect issuer serving its JWKS over https, as Keycloak, Auth0 or Entra do:
//! a tiny TLS server started here, with a certificate from a CA made here and trusted
//! through `oidc_ca_file`. Its tokens are accepted; after it rotates its keys, a token with
//! the new kid is accepted without a restart; fetches for unknown kids are rate-limited;
//! an aged set is fetched again, so withdrawn keys stop verifying; a failing issuer gives
//! 401s and keeps the keys held, never a panic.

use crate::app::{TestApp, on_both_backends, problem, settings_for};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

const ISSUER: &str = "https://idp.example.org/realms/salus";

/// An ES256 signing key of the issuer, and its public JWK.
struct IssuerKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl IssuerKey {
    fn generate(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate().expect("P-256 key");
        // The uncompressed point: 0x04, then x and y, 32 bytes each.
        let point = pair.public_key_raw();
        let b64 = |b: &[u8]| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
        };
        Self {
            kid: kid.into(),
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
        }
    }

    fn token(&self, tenant: uuid::Uuid) -> String {
        // A fresh jti (see `signed`) makes each token new text, so none is answered from
        // the cache of checked tokens.
        self.token_with(json!({"sub": "ext-123", "preferred_username": "admin", "tid": tenant}))
    }
}

impl IssuerKey {
    /// A token of the issuer with these claims besides the registered ones.
    fn token_with(&self, extra: Value) -> String {
        self.signed(extra, None)
    }

    /// A token of the issuer with these claims, and without the registered claim `drop`.
    fn token_without(&self, drop: &str, extra: Value) -> String {
        self.signed(extra, Some(drop))
    }

    fn signed(&self, extra: Value, drop: Option<&str>) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let mut claims = json!({"iss": ISSUER, "aud": "salus-api", "iat": now, "exp": now + 300,
            "jti": uuid::Uuid::now_v7()});
        if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
            if let Some(d) = drop {
                c.remove(d);
            }
        }
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("sign")
    }
}

/// What the issuer serves, and how often it was asked.
struct Served {
    jwks: Mutex<String>,
    status: AtomicU16,
    fetches: AtomicUsize,
}

/// The issuer's https server.
struct JwksServer {
    url: String,
    ca_file: PathBuf,
    served: Arc<Served>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that does not trust the certificate hangs up in the handshake.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl JwksServer {
    async fn start(keys: &[&IssuerKey]) -> JwksServer {
        // A private CA, and a certificate it signs for 127.0.0.1.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Hospital test CA");
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "idp.test");
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("hospital-ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();

        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let served = Arc::new(Served {
            jwks: Mutex::new(String::new()),
            status: AtomicU16::new(200),
            fetches: AtomicUsize::new(0),
        });
        let state = served.clone();
        let app = axum::Router::new().route(
            "/protocol/openid-connect/certs",
            axum::routing::get(move || {
                let state = state.clone();
                async move {
                    state.fetches.fetch_add(1, Ordering::SeqCst);
                    let status =
                        axum::http::StatusCode::from_u16(state.status.load(Ordering::SeqCst))
                            .unwrap();
                    let body = state.jwks.lock().unwrap().clone();
                    (status, [("content-type", "application/json")], body)
                }
            }),
        );
        let listener = TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let server = JwksServer {
            url: format!("https://127.0.0.1:{port}/protocol/openid-connect/certs"),
            ca_file,
            served,
            task,
            _dir: dir,
        };
        server.serve(keys);
        server
    }

    fn serve(&self, keys: &[&IssuerKey]) {
        let set = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
        *self.served.jwks.lock().unwrap() = set.to_string();
    }

    fn fetches(&self) -> usize {
        self.served.fetches.load(Ordering::SeqCst)
    }
}

/// The rate limit of fetches for unknown kids in these tests.
const REFRESH: Duration = Duration::from_secs(1);

/// Wait until a fetch for an unknown kid is allowed again.
async fn past_the_refresh_interval() {
    tokio::time::sleep(REFRESH + Duration::from_millis(200)).await;
}

on_both_backends!(https_issuer_keys_rotate_without_a_restart);

async fn https_issuer_keys_rotate_without_a_restart(backend: &str) {
    let k1 = IssuerKey::generate("k1");
    let k2 = IssuerKey::generate("k2");
    let issuer = JwksServer::start(&[&k1]).await;
    let app = TestApp::spawn_with(backend, |s| {
        s.oidc_issuer = Some(ISSUER.into());
        s.oidc_jwks = Some(issuer.url.clone());
        s.oidc_ca_file = Some(issuer.ca_file.clone());
        s.oidc_jwks_refresh_secs = REFRESH.as_secs();
    })
    .await;
    let tenant = app.tenant.0;
    let path = "/api/v1/patients";
    assert_eq!(issuer.fetches(), 1, "the set is fetched once at start");
    // A token of the issuer, verified with the key fetched over https.
    assert_eq!(app.get(path, &k1.token(tenant)).await.status(), 200);

    // The issuer rotates to k2 and withdraws k1: a token with the new kid is accepted
    // without a restart, by fetching the set again.
    issuer.serve(&[&k2]);
    past_the_refresh_interval().await;
    assert_eq!(app.get(path, &k2.token(tenant)).await.status(), 200);
    assert_eq!(issuer.fetches(), 2);
    // A k1 token is now refused: its key is no longer held.
    let body = problem(app.get(path, &k1.token(tenant)).await, 401, "unauthorized").await;
    assert!(body["detail"].as_str().unwrap().contains("key"), "{body}");

    // A flood of made-up kids costs the issuer one fetch per interval, not one per token.
    past_the_refresh_interval().await;
    let before = issuer.fetches();
    let started = Instant::now();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..40 {
        let key = IssuerKey {
            kid: format!("made-up-{i}"),
            encoding: k2.encoding.clone(),
            jwk: Value::Null,
        };
        let (client, url, token) = (app.client.clone(), app.url(path), key.token(tenant));
        flood.spawn(async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    while let Some(status) = flood.join_next().await {
        assert_eq!(status.unwrap(), 401);
    }
    let intervals = started.elapsed().as_secs_f64() / REFRESH.as_secs_f64();
    let fetched = issuer.fetches() - before;
    assert!(
        fetched >= 1,
        "an unknown kid past the interval fetches the set"
    );
    assert!(
        fetched as f64 <= 1.0 + intervals.floor(),
        "{fetched} fetches in {intervals:.1} intervals"
    );

    // The issuer fails (500, then no listener): tokens naming new kids get a 401,
    // the keys held still verify, and the server goes on.
    issuer.served.status.store(500, Ordering::SeqCst);
    past_the_refresh_interval().await;
    let k3 = IssuerKey::generate("k3");
    let body = problem(app.get(path, &k3.token(tenant)).await, 401, "unauthorized").await;
    assert!(body["detail"].as_str().unwrap().contains("key"), "{body}");
    assert_eq!(app.get(path, &k2.token(tenant)).await.status(), 200);
    issuer.task.abort();
    let _ = issuer.task.await;
    past_the_refresh_interval().await;
    let body = problem(app.get(path, &k3.token(tenant)).await, 401, "unauthorized").await;
    assert!(body["detail"].as_str().unwrap().contains("key"), "{body}");
    assert_eq!(app.get(path, &k2.token(tenant)).await.status(), 200);
    // Local tokens are unaffected throughout.
    assert_eq!(app.get(path, &app.token).await.status(), 200);
    app.stop().await;
}

on_both_backends!(withdrawn_issuer_keys_stop_verifying_as_the_set_ages);

async fn withdrawn_issuer_keys_stop_verifying_as_the_set_ages(backend: &str) {
    let k1 = IssuerKey::generate("k1");
    let k2 = IssuerKey::generate("k2");
    let issuer = JwksServer::start(&[&k1]).await;
    let app = TestApp::spawn_with(backend, |s| {
        s.oidc_issuer = Some(ISSUER.into());
        s.oidc_jwks = Some(issuer.url.clone());
        s.oidc_ca_file = Some(issuer.ca_file.clone());
        // No fetch for unknown kids during the test: only the set's age fetches it.
        s.oidc_jwks_refresh_secs = 3600;
        s.oidc_jwks_max_age_secs = 1;
    })
    .await;
    let tenant = app.tenant.0;
    let path = "/api/v1/patients";
    assert_eq!(app.get(path, &k1.token(tenant)).await.status(), 200);
    // The issuer withdraws k1 (it was compromised, say) and publishes k2.
    issuer.serve(&[&k2]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while issuer.fetches() < 2 {
        assert!(Instant::now() < deadline, "the aged set is fetched again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = problem(app.get(path, &k1.token(tenant)).await, 401, "unauthorized").await;
    assert!(body["detail"].as_str().unwrap().contains("key"), "{body}");
    assert_eq!(app.get(path, &k2.token(tenant)).await.status(), 200);
    app.stop().await;
}

/// Without the CA file the issuer's certificate is not trusted (it is not under a system
/// root), and a CA file that holds no certificate is refused: both stop the start with a
/// message that says why, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_https_jwks_stops_the_start_with_a_clear_error() {
    let k1 = IssuerKey::generate("k1");
    let issuer = JwksServer::start(&[&k1]).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut settings, _db) = settings_for("sqlite", dir.path()).await;
    settings.oidc_issuer = Some(ISSUER.into());
    settings.oidc_jwks = Some(issuer.url.clone());

    let err = salus::server::start(&settings)
        .await
        .err()
        .expect("an untrusted certificate stops the start");
    let text = format!("{err:#}");
    assert!(
        text.contains("cannot fetch the JWKS from https://127.0.0.1"),
        "{text}"
    );
    assert!(text.to_lowercase().contains("certificate"), "{text}");

    let bogus = dir.path().join("not-a-ca.pem");
    std::fs::write(&bogus, "no certificate here\n").unwrap();
    settings.oidc_ca_file = Some(bogus);
    let err = salus::server::start(&settings)
        .await
        .err()
        .expect("a CA file without certificates stops the start");
    let text = format!("{err:#}");
    assert!(text.contains("CA file"), "{text}");

    // The CA file trusted: the same issuer is accepted.
    settings.oidc_ca_file = Some(issuer.ca_file.clone());
    let (running, _) = salus::server::start(&settings).await.unwrap();
    running.stop().await.unwrap();
    assert_eq!(
        issuer.fetches(),
        1,
        "only the start that trusted the CA fetched"
    );
}

on_both_backends!(issuer_claims_map_to_a_tenant_and_roles_by_configuration);

/// The issuer's groups and realm roles become Salus roles, and its `hospital` claim the
/// tenant, as configured; what is not mapped grants nothing.
async fn issuer_claims_map_to_a_tenant_and_roles_by_configuration(backend: &str) {
    let k1 = IssuerKey::generate("k1");
    let issuer = JwksServer::start(&[&k1]).await;
    let app = TestApp::spawn_with(backend, |s| {
        s.oidc_issuer = Some(ISSUER.into());
        s.oidc_jwks = Some(issuer.url.clone());
        s.oidc_ca_file = Some(issuer.ca_file.clone());
        s.oidc_role_claims = vec!["groups".into(), "realm_access.roles".into()];
        s.oidc_roles = [("clinicians", "provider"), ("records-office", "viewer")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s.oidc_tenant_claim = "hospital".into();
        s.oidc_tenants = [("st-marys".to_string(), "default".to_string())]
            .into_iter()
            .collect();
    })
    .await;
    // A Salus user with no role of its own: the issuer's claims give it its roles.
    app.token_for("ext-nurse", &[]).await;
    let who = json!({"sub": "f81d4fae-7dec", "preferred_username": "ext-nurse"});
    let token = |extra: Value| {
        let mut claims = who.clone();
        if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        k1.token_with(claims)
    };
    let body = crate::app::patient("OIDC-1", "Claims", "Mapped");
    let provider = token(json!({"hospital": "st-marys", "groups": ["clinicians", "unmapped"]}));
    assert_eq!(
        app.post("/api/v1/patients", &provider, &body)
            .await
            .status(),
        201
    );
    let viewer =
        token(json!({"hospital": "st-marys", "realm_access": {"roles": ["records-office"]}}));
    assert_eq!(app.get("/api/v1/patients", &viewer).await.status(), 200);
    problem(
        app.post("/api/v1/patients", &viewer, &body).await,
        403,
        "forbidden",
    )
    .await;
    // The issuer's SMART scopes narrow its tokens too, as `scope` or as `scp`.
    for scopes in [
        json!({"scope": "openid user/Patient.rs"}),
        json!({"scp": ["user/Patient.rs"]}),
    ] {
        let mut claims = json!({"hospital": "st-marys", "groups": ["clinicians"]});
        if let (Some(c), Some(e)) = (claims.as_object_mut(), scopes.as_object()) {
            c.extend(e.clone());
        }
        let narrowed = token(claims);
        assert_eq!(app.get("/api/v1/patients", &narrowed).await.status(), 200);
        problem(
            app.post("/api/v1/patients", &narrowed, &body).await,
            403,
            "forbidden",
        )
        .await;
    }
    // Unmapped groups, a claim not configured (roles): nothing.
    let none =
        token(json!({"hospital": "st-marys", "groups": ["unmapped"], "roles": ["clinicians"]}));
    problem(app.get("/api/v1/patients", &none).await, 403, "forbidden").await;
    // The tenant claim: a mapped value or a tenant id; anything else is no tenant (401).
    let by_id = token(json!({"hospital": app.tenant.0.to_string(), "groups": ["clinicians"]}));
    assert_eq!(app.get("/api/v1/patients", &by_id).await.status(), 200);
    for hospital in [json!("elsewhere"), Value::Null] {
        let t = token(json!({"hospital": hospital, "groups": ["clinicians"]}));
        let p = problem(app.get("/api/v1/patients", &t).await, 401, "unauthorized").await;
        assert!(p["detail"].as_str().unwrap().contains("tenant"), "{p}");
    }
    // An audience list (as Keycloak sends it) must hold ours; issued-at may be left out.
    let listed = token(json!({"hospital": "st-marys", "groups": ["clinicians"],
        "aud": ["account", "salus-api"]}));
    assert_eq!(app.get("/api/v1/patients", &listed).await.status(), 200);
    let others = token(json!({"hospital": "st-marys", "groups": ["clinicians"],
        "aud": ["account", "billing"]}));
    problem(
        app.get("/api/v1/patients", &others).await,
        401,
        "unauthorized",
    )
    .await;
    let mut no_iat = json!({"hospital": "st-marys", "groups": ["clinicians"]});
    if let (Some(c), Some(w)) = (no_iat.as_object_mut(), who.as_object()) {
        c.extend(w.clone());
    }
    let no_iat = k1.token_without("iat", no_iat);
    assert_eq!(app.get("/api/v1/patients", &no_iat).await.status(), 200);
    app.stop().await;
}

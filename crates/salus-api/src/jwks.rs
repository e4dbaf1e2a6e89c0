//! JSON Web Key Sets (RFC 7517): the deployment's own Ed25519 token key, published at
//! `GET /.well-known/jwks.json` so that other services can verify Salus tokens, and the
//! key set of an external OpenID Connect issuer, read from a file or fetched over http(s)
//! and fetched again when a token names a key it does not hold.
//!
//! This module never decides whether a token is valid (that is [`crate::auth`]); it only
//! holds keys. It never logs key material, token text or URL credentials.

use crate::AppState;
use axum::extract::State;
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The largest JWKS document accepted from an issuer.
const JWKS_MAX_BYTES: usize = 1024 * 1024;
/// How long one fetch of an issuer's JWKS may take in all.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Install ring as the process's TLS crypto provider. The HTTP client refuses to start
/// without one; calling this again is harmless.
pub fn install_crypto_provider() {
    // An error only says that a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

// ---------------------------------------------------------------------------------------
// The deployment's Ed25519 key for local tokens

/// The Ed25519 key that signs local `EdDSA` tokens (RFC 8037).
pub struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The public key, base64url (the JWK's `x`).
    x: String,
    /// The JWK thumbprint (RFC 7638) of the public key: the `kid` of every token it signs.
    kid: String,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey").field("kid", &self.kid).finish()
    }
}

impl TokenKey {
    /// From the 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, String> {
        let signing = ed25519_dalek::SigningKey::from_bytes(seed);
        let der = signing
            .to_pkcs8_der()
            .map_err(|e| format!("cannot encode the token key: {e}"))?;
        let public = signing.verifying_key().to_bytes();
        let x = URL_SAFE_NO_PAD.encode(public);
        // RFC 7638 §3.2: the required members of an OKP key, in lexicographic order,
        // without whitespace (RFC 8037 §2 names them).
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        Ok(Self {
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            decoding: DecodingKey::from_ed_der(&public),
            x,
            kid,
        })
    }

    /// From 64 hex digits (the seed), as given by configuration or kept in a file.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim()).map_err(|_| "the token key is not hex".to_owned())?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "the token key must be 32 bytes (64 hex digits)".to_owned())?;
        Self::from_seed(&seed)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The public key as a JWK (RFC 8037 §2).
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": self.x,
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        })
    }
}

/// The public keys that verify Salus tokens, as a JWK set (RFC 7517 §5).
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "operations",
    responses((status = 200, description = "The Ed25519 public key (OKP, RFC 8037) that verifies EdDSA tokens issued by this deployment; `kid` is its RFC 7638 thumbprint. No authentication.", content_type = "application/json"))
)]
pub async fn published(State(state): State<AppState>) -> impl IntoResponse {
    let keys = serde_json::json!({ "keys": [state.auth.token_key().public_jwk()] });
    (
        [
            (axum::http::header::CONTENT_TYPE, "application/json"),
            (axum::http::header::CACHE_CONTROL, "public, max-age=300"),
        ],
        keys.to_string(),
    )
}

// ---------------------------------------------------------------------------------------
// An external issuer's keys

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read JWKS file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read the CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("cannot build the HTTP client for the JWKS: {0}")]
    Client(String),
    #[error("cannot fetch the JWKS from {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("the JWKS at {url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("the JWKS at {url} is larger than {JWKS_MAX_BYTES} bytes")]
    TooLarge { url: String },
    #[error("the JWKS at {at} is not a JWK set: {reason}")]
    Parse { at: String, reason: String },
}

/// Where an issuer's JWKS comes from.
enum Source {
    File(PathBuf),
    Http {
        url: reqwest::Url,
        client: reqwest::Client,
    },
}

/// An `http(s)` URL without credentials or query, fit for messages and logs.
fn shown(url: &reqwest::Url) -> String {
    let mut s = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        s.push_str(&format!(":{port}"));
    }
    s.push_str(url.path());
    s
}

/// An error and its causes, one after another ("…: invalid peer certificate: UnknownIssuer").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = cause.source();
    }
    text
}

impl Source {
    fn new(location: &str, ca_file: Option<&Path>) -> Result<Self, JwksError> {
        let is_url = location.starts_with("http://") || location.starts_with("https://");
        if !is_url {
            return Ok(Source::File(PathBuf::from(location)));
        }
        let url = reqwest::Url::parse(location).map_err(|e| JwksError::Fetch {
            url: "the configured JWKS URL".into(),
            reason: e.to_string(),
        })?;
        if url.scheme() == "http" {
            tracing::warn!(
                jwks = %shown(&url),
                "the OIDC JWKS is fetched over plain http: anyone on the path can replace the issuer's keys"
            );
        }
        install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            // A set fetched over https is never handed over to plain http by a redirect.
            .https_only(url.scheme() == "https")
            .user_agent(concat!("salus/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let ca_error = |reason: String| JwksError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(chain(&e)))?;
            if certs.is_empty() {
                return Err(ca_error("it holds no PEM certificate".into()));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder.build().map_err(|e| JwksError::Client(chain(&e)))?;
        Ok(Source::Http { url, client })
    }

    fn shown(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Http { url, .. } => shown(url),
        }
    }

    async fn fetch(&self) -> Result<JwkSet, JwksError> {
        let text = match self {
            Source::File(path) => {
                tokio::fs::read(path)
                    .await
                    .map_err(|source| JwksError::File {
                        path: path.display().to_string(),
                        source,
                    })?
            }
            Source::Http { url, client } => fetch_http(client, url).await?,
        };
        parse_set(&text).map_err(|reason| JwksError::Parse {
            at: self.shown(),
            reason,
        })
    }
}

/// A JWK set, without the keys this library cannot read (an issuer may publish kinds it
/// does not know, e.g. post-quantum keys): one odd key must not hide all the others.
fn parse_set(text: &[u8]) -> Result<JwkSet, String> {
    #[derive(serde::Deserialize)]
    struct Loose {
        keys: Vec<serde_json::Value>,
    }
    let loose: Loose = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    let total = loose.keys.len();
    let keys: Vec<Jwk> = loose
        .keys
        .into_iter()
        .filter_map(|k| serde_json::from_value(k).ok())
        .collect();
    if keys.len() < total {
        tracing::warn!(
            skipped = total - keys.len(),
            "keys of the OIDC issuer's JWKS that cannot be read are left out"
        );
    }
    Ok(JwkSet { keys })
}

async fn fetch_http(client: &reqwest::Client, url: &reqwest::Url) -> Result<Vec<u8>, JwksError> {
    let failed = |e: reqwest::Error| {
        let mut reason = chain(&e.without_url());
        if reason.contains("UnknownIssuer") {
            reason.push_str(
                " (no trusted root signed the issuer's certificate: give its CA with --oidc-ca-file)",
            );
        }
        JwksError::Fetch {
            url: shown(url),
            reason,
        }
    };
    let mut resp = client
        .get(url.clone())
        .header(
            reqwest::header::ACCEPT,
            "application/json, application/jwk-set+json",
        )
        .send()
        .await
        .map_err(failed)?;
    if !resp.status().is_success() {
        return Err(JwksError::Status {
            url: shown(url),
            status: resp.status().as_u16(),
        });
    }
    let too_large = || JwksError::TooLarge { url: shown(url) };
    if resp
        .content_length()
        .is_some_and(|n| n > JWKS_MAX_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > JWKS_MAX_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// When an issuer's set is fetched again after the first fetch.
#[derive(Debug, Clone, Copy)]
pub struct Refresh {
    /// Least time between fetches for tokens naming an unknown `kid`.
    pub unknown_kid_every: Duration,
    /// Age after which the set is fetched again in the background ([`IssuerKeys::keep_fresh`]),
    /// so that keys the issuer withdrew stop being trusted.
    pub max_age: Duration,
}

/// The keys of an external issuer: the set last fetched, and how to fetch it again.
///
/// A token naming a `kid` the set does not hold makes the set be fetched again (the issuer
/// may have rotated its keys), but at most once per [`Refresh::unknown_kid_every`],
/// whatever the outcome, so a flood of tokens with made-up kids costs the issuer one
/// request per interval. A failed fetch keeps the set held (and is logged).
pub struct IssuerKeys {
    source: Source,
    set: RwLock<Arc<JwkSet>>,
    /// When the set was last fetched (held while a fetch runs, so that concurrent callers
    /// wait for it and then look again instead of fetching too).
    fetched_at: tokio::sync::Mutex<Instant>,
    refresh: Refresh,
}

impl IssuerKeys {
    /// Fetch the set from `location` (an http(s) URL or a file path) once.
    ///
    /// `ca_file`: PEM certificates trusted for https in addition to the system's roots.
    pub async fn load(
        location: &str,
        ca_file: Option<&Path>,
        refresh: Refresh,
    ) -> Result<Self, JwksError> {
        let source = Source::new(location, ca_file)?;
        let set = source.fetch().await?;
        tracing::info!(jwks = %source.shown(), keys = set.keys.len(), "OIDC issuer keys loaded");
        Ok(Self {
            source,
            set: RwLock::new(Arc::new(set)),
            fetched_at: tokio::sync::Mutex::new(Instant::now()),
            refresh,
        })
    }

    /// A set given as it is (tests); never fetched again.
    pub fn fixed(set: JwkSet) -> Self {
        Self {
            source: Source::File(PathBuf::new()),
            set: RwLock::new(Arc::new(set)),
            fetched_at: tokio::sync::Mutex::new(Instant::now()),
            refresh: Refresh {
                unknown_kid_every: Duration::MAX,
                max_age: Duration::MAX,
            },
        }
    }

    /// The key named `kid` in the set held now.
    pub fn find(&self, kid: &str) -> Option<Jwk> {
        let set = self.set.read().ok()?.clone();
        set.find(kid).cloned()
    }

    /// Fetch the set again because a token names `kid`, unless that was done less than
    /// [`Refresh::unknown_kid_every`] ago. Returns whether `kid` is known afterwards.
    pub async fn refresh_for(&self, kid: &str) -> bool {
        let mut fetched_at = self.fetched_at.lock().await;
        // Another request may have fetched it while this one waited.
        if self.find(kid).is_some() {
            return true;
        }
        if fetched_at.elapsed() < self.refresh.unknown_kid_every {
            return false;
        }
        *fetched_at = Instant::now();
        self.fetch_again("a token named an unknown key id").await;
        self.find(kid).is_some()
    }

    /// Fetch the set again whenever it is older than [`Refresh::max_age`]; runs until the
    /// task is dropped. For a set that is never fetched again, returns at once.
    pub async fn keep_fresh(&self) {
        if self.refresh.max_age == Duration::MAX {
            return;
        }
        // Looking four times per period keeps the set at most 1.25 periods old even when
        // an unknown kid had it fetched in between.
        let look_every = (self.refresh.max_age / 4).max(Duration::from_millis(250));
        loop {
            tokio::time::sleep(look_every).await;
            let mut fetched_at = self.fetched_at.lock().await;
            if fetched_at.elapsed() >= self.refresh.max_age {
                *fetched_at = Instant::now();
                self.fetch_again("the keys held reached their maximum age")
                    .await;
            }
        }
    }

    /// Fetch the set and hold it; on failure keep the set held and log why.
    async fn fetch_again(&self, why: &str) {
        match self.source.fetch().await {
            Ok(set) => {
                tracing::info!(
                    jwks = %self.source.shown(),
                    keys = set.keys.len(),
                    why,
                    "OIDC issuer keys fetched again"
                );
                if let Ok(mut held) = self.set.write() {
                    *held = Arc::new(set);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, why, "the OIDC issuer keys could not be fetched again; keeping the keys held");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kid_is_the_rfc_8037_thumbprint() {
        // RFC 8037 Appendix A.1 (the key) and A.3 (its thumbprint).
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        let key = TokenKey::from_seed(&seed).unwrap();
        assert_eq!(
            key.public_jwk()["x"],
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
        assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn unreadable_keys_are_left_out_of_a_set() {
        let text = br#"{"keys":[{"kty":"AKP","kid":"pq","alg":"ML-DSA-44","pub":"AAAA"},
            {"kty":"EC","crv":"P-256","kid":"k1","x":"E9JVoj8XYt85pyNheUS1AsDVGjMGPURuEpEcZjYfHSI","y":"CypZMUKlP-JdYp1mlNEhqWICqFmtMDJ8Qu5Vj039krc"},
            42, {"kty":"EC","kid":7}]}"#;
        let set = parse_set(text).unwrap();
        assert!(set.find("k1").is_some());
        assert_eq!(set.keys.len(), 2);
        assert!(parse_set(b"{}").is_err());
        assert!(parse_set(b"[1,2]").is_err());
    }

    #[test]
    fn a_bad_seed_is_refused() {
        assert!(TokenKey::from_hex("zz").is_err());
        assert!(TokenKey::from_hex("abcd").is_err());
    }

    #[test]
    fn shown_urls_carry_no_credentials_or_query() {
        let url = reqwest::Url::parse("https://user:pw@idp.example:8443/keys?token=x").unwrap();
        assert_eq!(shown(&url), "https://idp.example:8443/keys");
    }
}

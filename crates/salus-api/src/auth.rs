//! Authentication: bearer JWTs, deny by default.
//!
//! Locally issued tokens are HS256, signed with the deployment's secret (kept in the data
//! directory or given by configuration). Tokens of an external OpenID Connect issuer are
//! RS256/ES256, verified against its JWKS. `alg: none`, expired, not-yet-valid, wrong
//! audience, wrong issuer and wrong signature are all refused. Token text never reaches a
//! log.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use salus_domain::access::{self, User};
use salus_kernel::{ActorId, TenantContext, TenantId};
use serde::{Deserialize, Serialize};
// foldhash: these maps are hashed on every request (a token is ~300 bytes).
use foldhash::{HashMap, HashMapExt};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The claims of a Salus token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user: a Salus user id, or for external tokens the subject that names one.
    pub sub: String,
    /// The tenant id.
    pub tid: Uuid,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
}

/// An external OpenID Connect issuer whose tokens are accepted.
pub struct OidcIssuer {
    pub issuer: String,
    pub audience: String,
    pub jwks: RwLock<JwkSet>,
}

pub struct Authenticator {
    secret: Vec<u8>,
    pub issuer: String,
    pub audience: String,
    pub oidc: Option<OidcIssuer>,
    /// Tokens whose signature was checked, by their exact text (see [`Authenticator::verify`]).
    verified: Mutex<HashMap<Box<str>, Verified>>,
}

/// When a token's signature was checked, and its claims.
type Verified = (Instant, Arc<Claims>);

/// How long a checked signature is trusted for the same token text: a JWKS key withdrawn
/// by the issuer stops being accepted within this window. Expiry is checked on every use.
const VERIFIED_TTL: Duration = Duration::from_secs(60);
/// At most this many checked tokens are remembered (then all are forgotten at once).
const VERIFIED_MAX: usize = 10_000;
/// Seconds of clock skew allowed on `exp`.
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the bearer token is malformed")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token is expired")]
    Expired,
    #[error("the token is not for this service (audience)")]
    Audience,
    #[error("the token's issuer is not trusted")]
    Issuer,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token's signing key is unknown")]
    UnknownKey,
}

fn map_jwt(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature | K::ImmatureSignature => AuthError::Expired,
        K::InvalidAudience => AuthError::Audience,
        K::InvalidIssuer => AuthError::Issuer,
        K::InvalidSignature => AuthError::Signature,
        K::InvalidAlgorithm | K::InvalidAlgorithmName => AuthError::Algorithm,
        _ => AuthError::Malformed,
    }
}

impl Authenticator {
    pub fn new(
        secret: Vec<u8>,
        issuer: String,
        audience: String,
        oidc: Option<OidcIssuer>,
    ) -> Self {
        Self {
            secret,
            issuer,
            audience,
            oidc,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Issue a local token for `user` in `tenant`, valid for `ttl`.
    pub fn issue(&self, user: Uuid, tenant: TenantId, ttl: Duration) -> Result<String, ApiError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.to_string(),
            tid: tenant.0,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + ttl.as_secs(),
            preferred_username: None,
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.secret),
        )
        .map_err(ApiError::internal)
    }

    /// Verify a token and return its claims.
    ///
    /// A token whose signature, issuer and audience were checked in the last
    /// [`VERIFIED_TTL`] is recognised by its exact text and only its expiry is checked
    /// again: the text is what was signed, so the same text cannot carry other claims.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Ok(cache) = self.verified.lock()
            && let Some((at, claims)) = cache.get(token)
            && at.elapsed() < VERIFIED_TTL
        {
            if claims.exp.saturating_add(LEEWAY_SECS) < now {
                return Err(AuthError::Expired);
            }
            return Ok(claims.clone());
        }
        let claims = Arc::new(self.check(token)?);
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= VERIFIED_MAX {
                cache.clear();
            }
            cache.insert(token.into(), (Instant::now(), claims.clone()));
        }
        Ok(claims)
    }

    /// Check a token's signature and claims.
    fn check(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(map_jwt)?;
        match header.alg {
            Algorithm::HS256 => {
                let mut v = Validation::new(Algorithm::HS256);
                v.set_audience(&[&self.audience]);
                v.set_issuer(&[&self.issuer]);
                v.leeway = LEEWAY_SECS;
                v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
                jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&self.secret), &v)
                    .map(|d| d.claims)
                    .map_err(map_jwt)
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                let oidc = self.oidc.as_ref().ok_or(AuthError::Algorithm)?;
                let kid = header.kid.ok_or(AuthError::UnknownKey)?;
                let key = {
                    let set = oidc.jwks.read().map_err(|_| AuthError::UnknownKey)?;
                    let jwk = set.find(&kid).ok_or(AuthError::UnknownKey)?;
                    DecodingKey::from_jwk(jwk).map_err(|_| AuthError::UnknownKey)?
                };
                let mut v = Validation::new(header.alg);
                v.set_audience(&[&oidc.audience]);
                v.set_issuer(&[&oidc.issuer]);
                v.leeway = LEEWAY_SECS;
                v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
                jsonwebtoken::decode::<Claims>(token, &key, &v)
                    .map(|d| d.claims)
                    .map_err(map_jwt)
            }
            _ => Err(AuthError::Algorithm),
        }
    }
}

/// When a user was looked up, and what was found.
type CachedUser = (Instant, Option<Arc<User>>);

/// Users looked up by id, kept for a few seconds so that a busy client does not cost a
/// database read per request. A role change or disable takes effect within the TTL.
pub struct UserCache {
    ttl: Duration,
    entries: Mutex<HashMap<(TenantId, Uuid), CachedUser>>,
}

impl UserCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &(TenantId, Uuid)) -> Option<Option<Arc<User>>> {
        let map = self.entries.lock().ok()?;
        map.get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, u)| u.clone())
    }

    fn put(&self, key: (TenantId, Uuid), user: Option<Arc<User>>) {
        if let Ok(mut map) = self.entries.lock() {
            if map.len() > 100_000 {
                map.clear();
            }
            map.insert(key, (Instant::now(), user));
        }
    }
}

/// The authenticated caller of a request: tenant, user and roles.
#[derive(Debug, Clone)]
pub struct Actor {
    pub ctx: TenantContext,
    pub user: Arc<User>,
    pub request_id: String,
}

impl Actor {
    /// Refuse with 403 unless the actor's roles grant `permission`.
    pub fn require(&self, permission: &str) -> Result<(), ApiError> {
        if access::grants(&self.user.roles, permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(permission))
        }
    }
}

pub fn request_id(parts: &Parts) -> String {
    parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthorized("send a bearer token: Authorization: Bearer <token>")
            })?;
        let text = header
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be 'Bearer <token>'")
            })?;
        let claims = state
            .auth
            .verify(token)
            .map_err(|e| ApiError::unauthorized(e.to_string()))?;
        let tenant = TenantId(claims.tid);
        let request_id = request_id(parts);
        let correlation = Uuid::parse_str(&request_id).unwrap_or_else(|_| Uuid::now_v7());
        let user = resolve_user(state, tenant, &claims, correlation).await?;
        let user = user.ok_or_else(|| {
            ApiError::unauthorized("the token's user does not exist in its tenant")
        })?;
        if !user.active {
            return Err(ApiError::unauthorized("the token's user is disabled"));
        }
        if user.roles.is_empty() {
            return Err(ApiError::new("forbidden", "the user holds no role"));
        }
        Ok(Actor {
            ctx: TenantContext::new(tenant, ActorId(user.id), correlation),
            user,
            request_id,
        })
    }
}

async fn resolve_user(
    state: &AppState,
    tenant: TenantId,
    claims: &Claims,
    correlation: Uuid,
) -> Result<Option<Arc<User>>, ApiError> {
    let system = TenantContext::new(tenant, ActorId(Uuid::nil()), correlation);
    let id = match Uuid::parse_str(&claims.sub) {
        Ok(id) => id,
        Err(_) => {
            // External subject: find the user by its username claim.
            let name = claims.preferred_username.as_deref().unwrap_or(&claims.sub);
            match state
                .services
                .store
                .unique_owner(
                    &system,
                    access::user::USERNAME_SCOPE,
                    &name.to_ascii_lowercase(),
                )
                .await?
            {
                Some(id) => id,
                None => return Ok(None),
            }
        }
    };
    let key = (tenant, id);
    if let Some(hit) = state.users.get(&key) {
        return Ok(hit);
    }
    let user = state
        .services
        .load::<User>(&system, id)
        .await?
        .map(|c| Arc::new(c.state));
    state.users.put(key, user.clone());
    Ok(user)
}

/// Fetch a JWKS document (http URL or file path).
pub async fn load_jwks(source: &str) -> Result<JwkSet, String> {
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        fetch_http(source).await?
    } else {
        tokio::fs::read_to_string(source)
            .await
            .map_err(|e| format!("cannot read JWKS file {source}: {e}"))?
    };
    serde_json::from_str(&text).map_err(|e| format!("JWKS at {source} is not a JWK set: {e}"))
}

async fn fetch_http(url: &str) -> Result<String, String> {
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("cannot fetch JWKS from {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    resp.text().await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> Authenticator {
        Authenticator::new(
            b"a test secret".to_vec(),
            "salus".into(),
            "salus-api".into(),
            None,
        )
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let auth = authenticator();
        let token = auth
            .issue(
                Uuid::now_v7(),
                TenantId(Uuid::now_v7()),
                Duration::from_secs(60),
            )
            .unwrap();
        let claims = auth.verify(&token).unwrap();
        // The same text again is recognised; once its expiry (plus leeway) has passed,
        // it is refused although its signature was checked.
        let mut stale = (*claims).clone();
        stale.exp = jsonwebtoken::get_current_timestamp() - LEEWAY_SECS - 1;
        auth.verified
            .lock()
            .unwrap()
            .insert(token.as_str().into(), (Instant::now(), Arc::new(stale)));
        assert!(matches!(auth.verify(&token), Err(AuthError::Expired)));
    }

    #[test]
    fn other_text_is_checked_in_full() {
        let auth = authenticator();
        let token = auth
            .issue(
                Uuid::now_v7(),
                TenantId(Uuid::now_v7()),
                Duration::from_secs(60),
            )
            .unwrap();
        auth.verify(&token).unwrap();
        // One character inside the signature changed (not the last, whose low bits are
        // padding in base64url).
        let at = token.len() - 10;
        let swap = if &token[at..=at] == "A" { "B" } else { "A" };
        let forged = format!("{}{swap}{}", &token[..at], &token[at + 1..]);
        assert!(matches!(auth.verify(&forged), Err(AuthError::Signature)));
        let other = Authenticator::new(
            b"another".to_vec(),
            "salus".into(),
            "salus-api".into(),
            None,
        );
        assert!(matches!(other.verify(&token), Err(AuthError::Signature)));
    }
}

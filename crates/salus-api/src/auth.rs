//! Authentication: bearer JWTs, deny by default.
//!
//! Locally issued tokens are EdDSA (Ed25519, with the key's thumbprint as `kid`; the public
//! key is published by [`crate::jwks::published`]) or HS256 (the deployment's secret), as
//! configured; both kinds are accepted whichever signs new ones. Tokens of an external
//! OpenID Connect issuer are RS256/ES256, verified against its JWKS ([`IssuerKeys`]), which
//! is fetched again when a token names an unknown `kid`.
//!
//! Each algorithm is verified only with a key of its own family: HS256 with the secret,
//! EdDSA with the local Ed25519 key, RS256/ES256 with the issuer's key of that `kid`. A
//! token cannot choose another key by its header (an HS256 token "signed" with the public
//! key's bytes is just a wrong signature). `alg: none`, expired, not-yet-valid, wrong
//! audience, wrong issuer and wrong signature are all refused. Token text never reaches a
//! log.

use crate::AppState;
use crate::error::ApiError;
pub use crate::jwks::{IssuerKeys, Refresh, TokenKey};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::jwk::PublicKeyUse;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use salus_domain::access::user::Granter;
use salus_domain::access::{self, PermissionSet, User};
use salus_kernel::{ActorId, TenantContext, TenantId};
use serde::{Deserialize, Serialize};
// foldhash: these maps are hashed on every request (a token is ~300 bytes).
pub use foldhash::{HashMap, HashMapExt};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The claims of a Salus token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user: a Salus user id, or for external tokens the subject that names one.
    pub sub: String,
    /// The tenant id (always in local tokens; external ones name it as configured, see
    /// [`ClaimMapping`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<Uuid>,
    pub iss: String,
    pub aud: Audience,
    pub exp: u64,
    /// Issued-at; some issuers leave it out of access tokens.
    #[serde(default)]
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// SMART on FHIR scopes, space-separated: they narrow the token below its roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The patient in context (SMART launch): the token sees only this patient's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// Every other claim (an issuer's roles, groups, tenant).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// The `aud` claim: one audience, or several (RFC 7519 §4.1.3), as Keycloak and others
/// send it. Which one must be ours is checked when the token is verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// What narrows a local token below its user's roles.
#[derive(Debug, Clone, Default)]
pub struct TokenLimits {
    /// SMART scopes, space-separated.
    pub scope: Option<String>,
    /// A patient context.
    pub patient: Option<Uuid>,
}

/// An external OpenID Connect issuer whose tokens are accepted.
pub struct OidcIssuer {
    pub issuer: String,
    pub audience: String,
    pub keys: IssuerKeys,
    pub mapping: ClaimMapping,
}

/// How an issuer's claims become a Salus tenant and Salus roles (configured, see the
/// README's "External identity providers").
#[derive(Debug, Clone)]
pub struct ClaimMapping {
    /// Claims that hold role or group names: a JSON array of strings or one
    /// space-separated string; a dotted name looks inside objects (`realm_access.roles`).
    pub role_claims: Vec<String>,
    /// A claim value to the Salus role it grants; values not listed grant nothing.
    pub roles: HashMap<String, String>,
    /// The claim that names the tenant: a tenant id, or a value of `tenants`.
    pub tenant_claim: String,
    /// A tenant claim value to a tenant.
    pub tenants: HashMap<String, TenantId>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            role_claims: vec!["roles".into(), "groups".into()],
            roles: HashMap::new(),
            tenant_claim: "tid".into(),
            tenants: HashMap::new(),
        }
    }
}

/// The claim `name` of `claims`, dotted names looking inside objects.
fn claim<'a>(claims: &'a Claims, name: &str) -> Option<&'a serde_json::Value> {
    let mut parts = name.split('.');
    let first = parts.next()?;
    let mut v = claims.other.get(first)?;
    for p in parts {
        v = v.get(p)?;
    }
    Some(v)
}

impl ClaimMapping {
    /// The tenant an external token names, if it names one this deployment maps.
    pub fn tenant(&self, claims: &Claims) -> Option<TenantId> {
        let tid;
        let value = if self.tenant_claim == "tid" {
            tid = claims.tid?.to_string();
            tid.as_str()
        } else {
            claim(claims, &self.tenant_claim)?.as_str()?
        };
        if let Some(t) = self.tenants.get(value) {
            return Some(*t);
        }
        Uuid::parse_str(value).ok().map(TenantId)
    }

    /// The Salus roles an external token's claims map to.
    pub fn roles(&self, claims: &Claims) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for name in &self.role_claims {
            let values: Vec<&str> = match claim(claims, name) {
                Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
                Some(serde_json::Value::String(s)) => s.split_whitespace().collect(),
                _ => Vec::new(),
            };
            for v in values {
                if let Some(role) = self.roles.get(v)
                    && !out.contains(role)
                {
                    out.push(role.clone());
                }
            }
        }
        out
    }
}

/// The algorithm that signs new local tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalAlgorithm {
    /// HMAC-SHA256 with the deployment's secret: only holders of the secret can verify.
    Hs256,
    /// Ed25519 (RFC 8037): anyone can verify with the published public key.
    EdDsa,
}

impl std::str::FromStr for LocalAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hs256" => Ok(Self::Hs256),
            "eddsa" => Ok(Self::EdDsa),
            other => Err(format!(
                "token algorithm '{other}' is neither hs256 nor eddsa"
            )),
        }
    }
}

/// The deployment's keys for local tokens. Both verify; `sign_with` says which one signs.
pub struct LocalKeys {
    pub secret: Vec<u8>,
    pub ed25519: TokenKey,
    pub sign_with: LocalAlgorithm,
}

pub struct Authenticator {
    secret: Vec<u8>,
    ed25519: TokenKey,
    sign_with: LocalAlgorithm,
    pub issuer: String,
    pub audience: String,
    pub oidc: Option<OidcIssuer>,
    /// Tokens whose signature was checked, by their exact text (see [`Authenticator::verify`]).
    verified: RwLock<HashMap<Box<str>, Verified>>,
}

/// When a token's signature was checked, and its claims.
type Verified = (Instant, Arc<Claims>);

/// How long a checked signature is trusted for the same token text: a JWKS key withdrawn
/// by the issuer stops being accepted within this window once the held set drops it. Expiry is checked on every use.
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
        local: LocalKeys,
        issuer: String,
        audience: String,
        oidc: Option<OidcIssuer>,
    ) -> Self {
        Self {
            secret: local.secret,
            ed25519: local.ed25519,
            sign_with: local.sign_with,
            issuer,
            audience,
            oidc,
            verified: RwLock::new(HashMap::new()),
        }
    }

    /// Issue a local token for `user` in `tenant`, valid for `ttl`.
    pub fn issue(&self, user: Uuid, tenant: TenantId, ttl: Duration) -> Result<String, ApiError> {
        self.issue_limited(user, tenant, ttl, TokenLimits::default())
    }

    /// Issue a local token narrowed by SMART scopes and/or a patient context.
    pub fn issue_limited(
        &self,
        user: Uuid,
        tenant: TenantId,
        ttl: Duration,
        limits: TokenLimits,
    ) -> Result<String, ApiError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.to_string(),
            tid: Some(tenant.0),
            iss: self.issuer.clone(),
            aud: Audience::One(self.audience.clone()),
            iat: now,
            exp: now + ttl.as_secs(),
            preferred_username: None,
            scope: limits.scope,
            patient: limits.patient.map(|p| p.to_string()),
            other: serde_json::Map::new(),
        };
        let signed = match self.sign_with {
            LocalAlgorithm::Hs256 => jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(&self.secret),
            ),
            LocalAlgorithm::EdDsa => {
                let mut header = Header::new(Algorithm::EdDSA);
                header.kid = Some(self.ed25519.kid().to_owned());
                jsonwebtoken::encode(&header, &claims, self.ed25519.encoding())
            }
        };
        signed.map_err(ApiError::internal)
    }

    /// The Ed25519 key of local EdDSA tokens (its public half is published).
    pub fn token_key(&self) -> &TokenKey {
        &self.ed25519
    }

    /// Verify a token and return its claims.
    ///
    /// A token whose signature, issuer and audience were checked in the last
    /// [`VERIFIED_TTL`] is recognised by its exact text and only its expiry is checked
    /// again: the text is what was signed, so the same text cannot carry other claims.
    ///
    /// An OIDC token naming a `kid` that the issuer's set does not hold makes the set be
    /// fetched again (rate-limited, see [`IssuerKeys::refresh_for`]) before it is refused.
    pub async fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Ok(cache) = self.verified.read()
            && let Some((at, claims)) = cache.get(token)
            && at.elapsed() < VERIFIED_TTL
        {
            if claims.exp.saturating_add(LEEWAY_SECS) < now {
                return Err(AuthError::Expired);
            }
            return Ok(claims.clone());
        }
        let claims = match self.check(token) {
            Err(AuthError::UnknownKey) if self.refresh_keys_for(token).await => {
                self.check(token)?
            }
            checked => checked?,
        };
        let claims = Arc::new(claims);
        if let Ok(mut cache) = self.verified.write() {
            if cache.len() >= VERIFIED_MAX {
                cache.clear();
            }
            cache.insert(token.into(), (Instant::now(), claims.clone()));
        }
        Ok(claims)
    }

    /// Whether the issuer's keys, fetched again for the `kid` of an OIDC token, now hold it.
    async fn refresh_keys_for(&self, token: &str) -> bool {
        let Some(oidc) = &self.oidc else {
            return false;
        };
        match jsonwebtoken::decode_header(token) {
            Ok(Header {
                alg: Algorithm::RS256 | Algorithm::ES256,
                kid: Some(kid),
                ..
            }) => oidc.keys.refresh_for(&kid).await,
            _ => false,
        }
    }

    /// Check a token's signature and claims, each algorithm with its own key only.
    fn check(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(map_jwt)?;
        match header.alg {
            Algorithm::HS256 => decode(
                token,
                &DecodingKey::from_secret(&self.secret),
                header.alg,
                &self.issuer,
                &self.audience,
            ),
            Algorithm::EdDSA => {
                // One local Ed25519 key: a token naming another (or none) is not ours.
                if header.kid.as_deref() != Some(self.ed25519.kid()) {
                    return Err(AuthError::UnknownKey);
                }
                decode(
                    token,
                    self.ed25519.decoding(),
                    header.alg,
                    &self.issuer,
                    &self.audience,
                )
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                let oidc = self.oidc.as_ref().ok_or(AuthError::Algorithm)?;
                let kid = header.kid.ok_or(AuthError::UnknownKey)?;
                let jwk = oidc.keys.find(&kid).ok_or(AuthError::UnknownKey)?;
                let key = DecodingKey::from_jwk(&jwk).map_err(|_| AuthError::UnknownKey)?;
                // The issuer's key of that kid must be of the token's family (an RSA key
                // never checks an ES256 token), for signatures and of its algorithm when the JWK says.
                if key.family() != header.alg.family()
                    || jwk
                        .common
                        .public_key_use
                        .as_ref()
                        .is_some_and(|u| *u != PublicKeyUse::Signature)
                    || jwk
                        .common
                        .key_algorithm
                        .is_some_and(|a| a.to_string() != format!("{:?}", header.alg))
                {
                    return Err(AuthError::Algorithm);
                }
                decode(token, &key, header.alg, &oidc.issuer, &oidc.audience)
            }
            _ => Err(AuthError::Algorithm),
        }
    }
}

/// Verify `token` with `key` for exactly `alg`, and its issuer, audience and expiry.
fn decode(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    issuer: &str,
    audience: &str,
) -> Result<Claims, AuthError> {
    let mut v = Validation::new(alg);
    v.set_audience(&[audience]);
    v.set_issuer(&[issuer]);
    v.leeway = LEEWAY_SECS;
    v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    jsonwebtoken::decode::<Claims>(token, key, &v)
        .map(|d| d.claims)
        .map_err(map_jwt)
}

/// When a user or role was looked up, and what was found.
type Cached<T> = (Instant, T);
type UserEntries = HashMap<(TenantId, Uuid), Cached<Option<Arc<User>>>>;
type RoleEntries = HashMap<(TenantId, String), Cached<Option<PermissionSet>>>;

/// Users and tenant roles looked up by the request path, kept for a few seconds so that a
/// busy client does not cost database reads per request. Changes made through this server
/// clear it at once ([`UserCache::forget_all`]); others (the CLI, another server) take
/// effect within the TTL. Assignment windows are checked on every request, not cached.
pub struct UserCache {
    ttl: Duration,
    entries: RwLock<UserEntries>,
    roles: RwLock<RoleEntries>,
}

impl UserCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
            roles: RwLock::new(HashMap::new()),
        }
    }

    fn get(&self, key: &(TenantId, Uuid)) -> Option<Option<Arc<User>>> {
        let map = self.entries.read().ok()?;
        map.get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, u)| u.clone())
    }

    fn put(&self, key: (TenantId, Uuid), user: Option<Arc<User>>) {
        if let Ok(mut map) = self.entries.write() {
            if map.len() > 100_000 {
                map.clear();
            }
            map.insert(key, (Instant::now(), user));
        }
    }

    fn role(&self, tenant: TenantId, name: &str) -> Option<Option<PermissionSet>> {
        let map = self.roles.read().ok()?;
        map.get(&(tenant, name.to_owned()))
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, p)| *p)
    }

    fn put_role(&self, tenant: TenantId, name: &str, perms: Option<PermissionSet>) {
        if let Ok(mut map) = self.roles.write() {
            if map.len() > 100_000 {
                map.clear();
            }
            map.insert((tenant, name.to_owned()), (Instant::now(), perms));
        }
    }

    /// Forget everything (a user, role or assignment changed).
    pub fn forget_all(&self) {
        if let Ok(mut m) = self.entries.write() {
            m.clear();
        }
        if let Ok(mut m) = self.roles.write() {
            m.clear();
        }
    }
}

/// The authenticated caller of a request: tenant, user, and what it may do.
#[derive(Debug, Clone)]
pub struct Actor {
    pub ctx: TenantContext,
    pub user: Arc<User>,
    pub request_id: String,
    /// The permissions of the roles active now, narrowed by the token's SMART scopes.
    pub permissions: PermissionSet,
    /// Holds `admin` now, with nothing narrowed away.
    pub is_admin: bool,
    /// A patient-context token sees only this patient's data.
    pub patient: Option<Uuid>,
    /// The roles active now (assignments, and an external token's mapped roles).
    pub roles: Vec<String>,
    /// Why the request reads patient data, and whether its reads have been logged.
    pub access: crate::access_log::AccessContext,
}

impl Actor {
    /// The tenant's system actor, as the command line acts (`salus import`): every
    /// permission, no patient context; `ctx.actor` names it in the events it writes.
    pub fn system(ctx: TenantContext, client: &str) -> Actor {
        let access = crate::access_log::AccessContext {
            purpose: "HOPERAT",
            client: Some(client.to_owned()),
            ..Default::default()
        };
        Actor {
            user: Arc::new(User {
                id: ctx.actor.0,
                username: "system".into(),
                display_name: "system".into(),
                assignments: Vec::new(),
                active: true,
            }),
            request_id: ctx.correlation_id.to_string(),
            ctx,
            permissions: PermissionSet::all(),
            is_admin: true,
            patient: None,
            roles: vec![access::ADMIN.to_owned()],
            access,
        }
    }

    /// Refuse with 403 unless the actor may use `permission`. Routes declare theirs (see
    /// [`crate::guard`]); this is for permissions that depend on the request (an import's kind).
    pub fn require(&self, permission: &str) -> Result<(), ApiError> {
        if self.permissions.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(permission))
        }
    }

    /// The actor as a granter of roles.
    pub fn granter(&self) -> Granter {
        Granter {
            id: self.user.id,
            permissions: self.permissions,
            is_admin: self.is_admin,
        }
    }

    /// Whether a patient-context token may see a resource of `resource_type` with this
    /// stored document: its patient (the `id` of a patient, the `patient_id` of clinical
    /// data) must be the token's. Resources that are not patient data are visible.
    pub fn sees(&self, resource_type: &str, doc: &serde_json::Value) -> bool {
        let Some(patient) = self.patient else {
            return true;
        };
        let field = if resource_type == "patient" {
            "id"
        } else {
            "patient_id"
        };
        match doc.get(field) {
            Some(v) => v.as_str() == Some(patient.to_string().as_str()),
            None => resource_type != "patient" && !PATIENT_DATA.contains(&resource_type),
        }
    }
}

/// Resource types that are a patient's data (a patient-context token sees only its own).
pub const PATIENT_DATA: &[&str] = &[
    "patient",
    "interaction",
    "encounter",
    "observation",
    "procedure",
    "condition",
    "allergy",
    "medical_record",
    "note",
    // The stored resource type of notes (the handlers name them "note").
    "clinical_note",
    "attachment",
    "consent",
    "fhir_document",
];

pub fn request_id(parts: &Parts) -> String {
    parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The actor the guard authenticated for this request ([`crate::guard`] puts it there).
impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        parts
            .extensions
            .remove::<Actor>()
            .ok_or_else(|| ApiError::internal("a route that needs an actor is declared public"))
    }
}

/// The built-in roles' permission sets, computed once.
fn builtin_permissions(name: &str) -> Option<PermissionSet> {
    static SETS: std::sync::OnceLock<Vec<(&'static str, PermissionSet)>> =
        std::sync::OnceLock::new();
    SETS.get_or_init(|| {
        access::BUILTIN_ROLES
            .iter()
            .map(|r| (r.name, r.permissions()))
            .collect()
    })
    .iter()
    .find(|(n, _)| *n == name)
    .map(|(_, p)| *p)
}

/// Authenticate a request from its headers: verify the bearer token, find its tenant and
/// user, and work out what it may do now (active roles ∩ SMART scopes).
pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<Actor, ApiError> {
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
        .await
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    let external = match &state.auth.oidc {
        Some(oidc) if claims.iss == oidc.issuer && claims.iss != state.auth.issuer => Some(oidc),
        _ => None,
    };
    let tenant = match external {
        Some(oidc) => oidc.mapping.tenant(&claims),
        None => claims.tid.map(TenantId),
    }
    .ok_or_else(|| ApiError::unauthorized("the token names no tenant of this deployment"))?;
    let request_id = request_id(parts);
    let correlation = Uuid::parse_str(&request_id).unwrap_or_else(|_| Uuid::now_v7());
    let user = resolve_user(state, tenant, &claims, correlation).await?;
    let user = user
        .ok_or_else(|| ApiError::unauthorized("the token's user does not exist in its tenant"))?;
    if !user.active {
        return Err(ApiError::unauthorized("the token's user is disabled"));
    }
    let patient = match &claims.patient {
        Some(p) => Some(
            Uuid::parse_str(p)
                .map_err(|_| ApiError::unauthorized("the token's patient is not a patient id"))?,
        ),
        None => None,
    };
    let now = state.services.now();
    let mut roles: Vec<String> = user.active_roles(now).map(str::to_owned).collect();
    if let Some(oidc) = external {
        for r in oidc.mapping.roles(&claims) {
            if !roles.contains(&r) {
                roles.push(r);
            }
        }
    }
    let system = TenantContext::new(tenant, ActorId(Uuid::nil()), correlation);
    let mut permissions = PermissionSet::EMPTY;
    for role in &roles {
        permissions = permissions.union(role_permissions(state, &system, role).await?);
    }
    let mut is_admin = roles.iter().any(|r| r == access::ADMIN);
    if permissions.is_empty() {
        return Err(ApiError::new(
            "forbidden",
            "the user holds no active role (none granted, or every assignment expired or revoked)",
        ));
    }
    if patient.is_some() {
        // A patient context reaches clinical data only: never users, roles, bulk files or
        // the audit trail, whatever the roles.
        permissions = permissions.intersect(access::scopes::fhir_permissions());
        is_admin = false;
    }
    if let Some(allowed) = access::scopes::narrowing(scopes_of(&claims), patient.is_some()) {
        permissions = permissions.intersect(allowed);
        is_admin = is_admin && permissions == PermissionSet::all();
    }
    Ok(Actor {
        ctx: TenantContext::new(tenant, ActorId(user.id), correlation),
        user,
        request_id,
        permissions,
        is_admin,
        patient,
        roles,
        access: crate::access_log::AccessContext::default(),
    })
}

/// A token's scopes: `scope` (space-separated, RFC 8693 and SMART), else `scp` (a string or
/// an array, as Entra ID and Okta send them).
fn scopes_of(claims: &Claims) -> Vec<&str> {
    if let Some(s) = claims.scope.as_deref() {
        return s.split_whitespace().collect();
    }
    match claims.other.get("scp") {
        Some(serde_json::Value::String(s)) => s.split_whitespace().collect(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    }
}

/// A role's permissions (built-in, or the tenant's, cached); an unknown role grants none.
async fn role_permissions(
    state: &AppState,
    system: &TenantContext,
    name: &str,
) -> Result<PermissionSet, ApiError> {
    if let Some(p) = builtin_permissions(name) {
        return Ok(p);
    }
    if let Some(hit) = state.users.role(system.tenant, name) {
        return Ok(hit.unwrap_or_default());
    }
    let found = access::role_permissions(&state.services, system, name).await?;
    state.users.put_role(system.tenant, name, found);
    Ok(found.unwrap_or_default())
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::jwk::JwkSet;

    const ES256_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgC/XX7445TflVZbHs\nFDIOW0Kxec+d7i6oFDBnKX7KH9GhRANCAAQT0lWiPxdi3zmnI2F5RLUCwNUaMwY9\nRG4SkRxmNh8dIgsqWTFCpT/iXWKdZpTRIaliAqhZrTAyfELuVY9N/ZK3\n-----END PRIVATE KEY-----\n";
    const ES256_X: &str = "E9JVoj8XYt85pyNheUS1AsDVGjMGPURuEpEcZjYfHSI";
    const ES256_Y: &str = "CypZMUKlP-JdYp1mlNEhqWICqFmtMDJ8Qu5Vj039krc";

    fn keys(secret: &[u8], seed: u8, sign_with: LocalAlgorithm) -> LocalKeys {
        LocalKeys {
            secret: secret.to_vec(),
            ed25519: TokenKey::from_seed(&[seed; 32]).unwrap(),
            sign_with,
        }
    }

    fn authenticator_with(local: LocalKeys, oidc: Option<OidcIssuer>) -> Authenticator {
        Authenticator::new(local, "salus".into(), "salus-api".into(), oidc)
    }

    fn authenticator(alg: LocalAlgorithm) -> Authenticator {
        authenticator_with(keys(b"a test secret", 7, alg), None)
    }

    fn issue(auth: &Authenticator) -> String {
        auth.issue(
            Uuid::now_v7(),
            TenantId(Uuid::now_v7()),
            Duration::from_secs(60),
        )
        .unwrap()
    }

    fn header_of(token: &str) -> Header {
        jsonwebtoken::decode_header(token).unwrap()
    }

    fn claims_for(iss: &str) -> Claims {
        let now = jsonwebtoken::get_current_timestamp();
        Claims {
            sub: Uuid::now_v7().to_string(),
            tid: Some(Uuid::now_v7()),
            iss: iss.into(),
            aud: Audience::One("salus-api".into()),
            exp: now + 60,
            iat: now,
            preferred_username: None,
            scope: None,
            patient: None,
            other: serde_json::Map::new(),
        }
    }

    const BOTH: [LocalAlgorithm; 2] = [LocalAlgorithm::Hs256, LocalAlgorithm::EdDsa];

    #[tokio::test]
    async fn a_remembered_token_still_expires() {
        for alg in BOTH {
            let auth = authenticator(alg);
            let token = issue(&auth);
            let claims = auth.verify(&token).await.unwrap();
            // The same text again is recognised; once its expiry (plus leeway) has passed,
            // it is refused although its signature was checked.
            let mut stale = (*claims).clone();
            stale.exp = jsonwebtoken::get_current_timestamp() - LEEWAY_SECS - 1;
            auth.verified
                .write()
                .unwrap()
                .insert(token.as_str().into(), (Instant::now(), Arc::new(stale)));
            assert!(matches!(auth.verify(&token).await, Err(AuthError::Expired)));
        }
    }

    #[tokio::test]
    async fn other_text_is_checked_in_full() {
        for alg in BOTH {
            let auth = authenticator(alg);
            let token = issue(&auth);
            auth.verify(&token).await.unwrap();
            // One character inside the signature changed (not the last, whose low bits are
            // padding in base64url).
            let at = token.len() - 10;
            let swap = if &token[at..=at] == "A" { "B" } else { "A" };
            let forged = format!("{}{swap}{}", &token[..at], &token[at + 1..]);
            assert!(matches!(
                auth.verify(&forged).await,
                Err(AuthError::Signature)
            ));
        }
        // Another deployment (other secret, other Ed25519 key) refuses our tokens.
        let other = authenticator_with(keys(b"another", 8, LocalAlgorithm::Hs256), None);
        let hs = issue(&authenticator(LocalAlgorithm::Hs256));
        assert!(matches!(other.verify(&hs).await, Err(AuthError::Signature)));
        let ed = issue(&authenticator(LocalAlgorithm::EdDsa));
        assert!(matches!(
            other.verify(&ed).await,
            Err(AuthError::UnknownKey)
        ));
    }

    #[tokio::test]
    async fn both_local_algorithms_verify_whichever_signs() {
        let ed = authenticator(LocalAlgorithm::EdDsa);
        let hs = authenticator(LocalAlgorithm::Hs256);
        let ed_token = issue(&ed);
        let hs_token = issue(&hs);
        assert_eq!(header_of(&ed_token).alg, Algorithm::EdDSA);
        assert_eq!(
            header_of(&ed_token).kid.as_deref(),
            Some(ed.token_key().kid())
        );
        assert_eq!(header_of(&hs_token).alg, Algorithm::HS256);
        assert_eq!(header_of(&hs_token).kid, None);
        for auth in [&ed, &hs] {
            auth.verify(&ed_token).await.unwrap();
            auth.verify(&hs_token).await.unwrap();
        }
    }

    #[tokio::test]
    async fn an_eddsa_token_is_verified_with_the_local_key_only() {
        let auth = authenticator(LocalAlgorithm::EdDsa);
        let kid = auth.token_key().kid().to_owned();
        let stranger = TokenKey::from_seed(&[9; 32]).unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        // Signed by another key but naming ours: a wrong signature.
        header.kid = Some(kid.clone());
        let t = jsonwebtoken::encode(&header, &claims_for("salus"), stranger.encoding()).unwrap();
        assert!(matches!(auth.verify(&t).await, Err(AuthError::Signature)));
        // Naming another key, or none: not one of ours.
        header.kid = Some(stranger.kid().to_owned());
        let t = jsonwebtoken::encode(&header, &claims_for("salus"), stranger.encoding()).unwrap();
        assert!(matches!(auth.verify(&t).await, Err(AuthError::UnknownKey)));
        header.kid = None;
        let t = jsonwebtoken::encode(&header, &claims_for("salus"), auth.token_key().encoding())
            .unwrap();
        assert!(matches!(auth.verify(&t).await, Err(AuthError::UnknownKey)));
        // Our key, another issuer.
        header.kid = Some(kid);
        let t = jsonwebtoken::encode(
            &header,
            &claims_for("elsewhere"),
            auth.token_key().encoding(),
        )
        .unwrap();
        assert!(matches!(auth.verify(&t).await, Err(AuthError::Issuer)));
    }

    #[tokio::test]
    async fn an_hs256_token_keyed_with_the_public_key_is_refused() {
        let auth = authenticator(LocalAlgorithm::EdDsa);
        let jwk = auth.token_key().public_jwk();
        let x = jwk["x"].as_str().unwrap();
        let raw = URL_SAFE_NO_PAD.decode(x).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(auth.token_key().kid().to_owned());
        // The public key as the HMAC key: its bytes, its base64url text, its JWK text.
        for key in [raw, x.as_bytes().to_vec(), jwk.to_string().into_bytes()] {
            let t = jsonwebtoken::encode(
                &header,
                &claims_for("salus"),
                &EncodingKey::from_secret(&key),
            )
            .unwrap();
            assert!(matches!(auth.verify(&t).await, Err(AuthError::Signature)));
        }
    }

    #[tokio::test]
    async fn alg_none_and_other_algorithms_are_refused() {
        let auth = authenticator(LocalAlgorithm::EdDsa);
        let claims = serde_json::to_vec(&claims_for("salus")).unwrap();
        for alg in ["none", "None", "HS512", "RS256", "PS256", "ES384"] {
            let header =
                serde_json::json!({"alg": alg, "typ": "JWT", "kid": auth.token_key().kid()});
            let t = format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(&claims)
            );
            assert!(auth.verify(&t).await.is_err(), "{alg}");
        }
    }

    fn oidc_with(jwks: serde_json::Value) -> OidcIssuer {
        let set: JwkSet = serde_json::from_value(jwks).unwrap();
        OidcIssuer {
            issuer: "https://idp.example".into(),
            audience: "salus-api".into(),
            keys: IssuerKeys::fixed(set),
            mapping: ClaimMapping::default(),
        }
    }

    fn es256_token(kid: &str, alg: Algorithm) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        let mut c = claims_for("https://idp.example");
        c.sub = "ext-1".into();
        let key = EncodingKey::from_ec_pem(ES256_PRIVATE.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &c, &key).unwrap()
    }

    #[tokio::test]
    async fn an_issuer_key_checks_only_tokens_of_its_own_kind() {
        let oidc = oidc_with(serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "sig", "use": "sig", "alg": "ES256", "x": ES256_X, "y": ES256_Y},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc", "x": ES256_X, "y": ES256_Y},
            {"kty": "EC", "crv": "P-256", "kid": "other-alg", "alg": "ES384", "x": ES256_X, "y": ES256_Y},
        ]}));
        let auth = authenticator_with(keys(b"s", 1, LocalAlgorithm::EdDsa), Some(oidc));
        auth.verify(&es256_token("sig", Algorithm::ES256))
            .await
            .unwrap();
        for kid in ["enc", "other-alg"] {
            assert!(matches!(
                auth.verify(&es256_token(kid, Algorithm::ES256)).await,
                Err(AuthError::Algorithm)
            ));
        }
        assert!(matches!(
            auth.verify(&es256_token("unknown", Algorithm::ES256)).await,
            Err(AuthError::UnknownKey)
        ));
        // An RS256 header naming the EC key: refused before any signature check.
        let claims = serde_json::to_vec(&claims_for("https://idp.example")).unwrap();
        let header = serde_json::json!({"alg": "RS256", "kid": "sig"});
        let t = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(&claims),
            URL_SAFE_NO_PAD.encode([0u8; 64])
        );
        assert!(matches!(auth.verify(&t).await, Err(AuthError::Algorithm)));
    }

    #[test]
    fn claims_map_to_a_tenant_and_roles() {
        let salus_tenant = TenantId(Uuid::now_v7());
        let entra_tid = Uuid::now_v7();
        let mut mapping = ClaimMapping::default();
        mapping.tenants.insert(entra_tid.to_string(), salus_tenant);
        mapping.roles.insert("Clinician".into(), "provider".into());
        let mut c = claims_for("https://idp.example");
        // An issuer's own tenant id (Entra's tid) maps through the table first.
        c.tid = Some(entra_tid);
        assert_eq!(mapping.tenant(&c), Some(salus_tenant));
        c.tid = None;
        assert_eq!(mapping.tenant(&c), None);
        c.other
            .insert("roles".into(), serde_json::json!(["Clinician", "Other"]));
        c.other
            .insert("groups".into(), serde_json::json!("Clinician x"));
        assert_eq!(mapping.roles(&c), ["provider"]);
        mapping.tenant_claim = "org.id".into();
        let id = Uuid::now_v7();
        c.other
            .insert("org".into(), serde_json::json!({"id": id.to_string()}));
        assert_eq!(mapping.tenant(&c), Some(TenantId(id)));
    }

    #[test]
    fn the_algorithm_setting_parses() {
        assert_eq!("EdDSA".parse::<LocalAlgorithm>(), Ok(LocalAlgorithm::EdDsa));
        assert_eq!("hs256".parse::<LocalAlgorithm>(), Ok(LocalAlgorithm::Hs256));
        assert!("rs256".parse::<LocalAlgorithm>().is_err());
    }
}

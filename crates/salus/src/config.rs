//! Settings: built-in defaults, then an optional TOML file (`--config` / `SALUS_CONFIG`),
//! then environment variables (`SALUS_*`), then command-line flags; the later wins.

use clap::Args;
use salus_api::auth::LocalAlgorithm;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `key=value,key=value` (a flag or variable holding a map).
fn parse_pairs(what: &str, text: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("{what}: '{pair}' is not value=role"))?;
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

/// Every setting, as flags with `SALUS_*` environment fallbacks. A flag left out falls back
/// to the TOML file, then to the default shown.
#[derive(Debug, Clone, Default, Args)]
pub struct SettingsArgs {
    /// TOML file with any of the settings below (keys in snake_case).
    #[arg(long, env = "SALUS_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Directory for the SQLite database, keys and blobs [default: ./salus-data]
    #[arg(long, env = "SALUS_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://user@host:port/db). Without it Salus uses SQLite in the data directory.
    #[arg(
        long,
        env = "SALUS_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "SALUS_LISTEN", global = true)]
    pub listen: Option<String>,
    /// HS256 secret for local tokens (hex or text). [default: generated into the data directory]
    #[arg(long, env = "SALUS_JWT_SECRET", global = true, hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Ed25519 seed (64 hex digits) that signs ledger tree heads [default: generated into the data directory]
    #[arg(long, env = "SALUS_LEDGER_KEY", global = true, hide_env_values = true)]
    pub ledger_key: Option<String>,
    /// Ed25519 seed (64 hex digits) that signs EdDSA local tokens [default: generated into the data directory]
    #[arg(long, env = "SALUS_TOKEN_KEY", global = true, hide_env_values = true)]
    pub token_key: Option<String>,
    /// Algorithm of new local tokens: eddsa or hs256; both are always accepted [default: eddsa]
    #[arg(long, env = "SALUS_TOKEN_ALGORITHM", global = true)]
    pub token_algorithm: Option<String>,
    /// External OpenID Connect issuer whose RS256/ES256 tokens are accepted.
    #[arg(long, env = "SALUS_OIDC_ISSUER", global = true)]
    pub oidc_issuer: Option<String>,
    /// Audience those tokens must carry [default: salus-api]
    #[arg(long, env = "SALUS_OIDC_AUDIENCE", global = true)]
    pub oidc_audience: Option<String>,
    /// JWKS of the issuer: an https (or http) URL or a file path.
    #[arg(long, env = "SALUS_OIDC_JWKS", global = true)]
    pub oidc_jwks: Option<String>,
    /// PEM file of CA certificates trusted for an https JWKS, besides the system's roots.
    #[arg(long, env = "SALUS_OIDC_CA_FILE", global = true)]
    pub oidc_ca_file: Option<PathBuf>,
    /// Least seconds between fetches of the JWKS for tokens naming an unknown key id [default: 30]
    #[arg(long, env = "SALUS_OIDC_JWKS_REFRESH_SECS", global = true)]
    pub oidc_jwks_refresh_secs: Option<u64>,
    /// Seconds after which the JWKS held is fetched again in the background [default: 600]
    #[arg(long, env = "SALUS_OIDC_JWKS_MAX_AGE_SECS", global = true)]
    pub oidc_jwks_max_age_secs: Option<u64>,
    /// Claims of OIDC tokens that hold role or group names, comma-separated; dotted names
    /// look inside objects (realm_access.roles) [default: roles,groups]
    #[arg(long, env = "SALUS_OIDC_ROLE_CLAIMS", global = true)]
    pub oidc_role_claims: Option<String>,
    /// OIDC claim values to Salus roles: value=role,… (values not listed grant nothing) [default: none]
    #[arg(long, env = "SALUS_OIDC_ROLES", global = true)]
    pub oidc_roles: Option<String>,
    /// The OIDC claim naming the tenant: its value is a tenant id or a key of --oidc-tenants [default: tid]
    #[arg(long, env = "SALUS_OIDC_TENANT_CLAIM", global = true)]
    pub oidc_tenant_claim: Option<String>,
    /// OIDC tenant claim values to Salus tenants (name or id): value=tenant,… [default: none]
    #[arg(long, env = "SALUS_OIDC_TENANTS", global = true)]
    pub oidc_tenants: Option<String>,
    /// Seconds between ledger seals [default: 2]
    #[arg(long, env = "SALUS_SEAL_INTERVAL_SECS", global = true)]
    pub seal_interval_secs: Option<u64>,
    /// Hours an Idempotency-Key is remembered [default: 24]
    #[arg(long, env = "SALUS_IDEMPOTENCY_TTL_HOURS", global = true)]
    pub idempotency_ttl_hours: Option<i64>,
    /// Largest request body in bytes [default: 1048576]
    #[arg(long, env = "SALUS_BODY_LIMIT", global = true)]
    pub body_limit: Option<usize>,
    /// Largest attachment in bytes [default: 26214400]
    #[arg(long, env = "SALUS_ATTACHMENT_LIMIT_BYTES", global = true)]
    pub attachment_limit_bytes: Option<u64>,
    /// Largest import file in bytes [default: 1073741824]
    #[arg(long, env = "SALUS_IMPORT_LIMIT_BYTES", global = true)]
    pub import_limit_bytes: Option<u64>,
    /// Seconds before a request is abandoned with 408 [default: 30]
    #[arg(long, env = "SALUS_REQUEST_TIMEOUT_SECS", global = true)]
    pub request_timeout_secs: Option<u64>,
    /// Log format: json or text [default: json]
    #[arg(long, env = "SALUS_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
}

/// The TOML file's shape (same names as the flags).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub listen: Option<String>,
    pub jwt_secret: Option<String>,
    pub ledger_key: Option<String>,
    pub token_key: Option<String>,
    pub token_algorithm: Option<String>,
    pub oidc_issuer: Option<String>,
    pub oidc_audience: Option<String>,
    pub oidc_jwks: Option<String>,
    pub oidc_ca_file: Option<PathBuf>,
    pub oidc_jwks_refresh_secs: Option<u64>,
    pub oidc_jwks_max_age_secs: Option<u64>,
    pub oidc_role_claims: Option<Vec<String>>,
    pub oidc_roles: Option<HashMap<String, String>>,
    pub oidc_tenant_claim: Option<String>,
    pub oidc_tenants: Option<HashMap<String, String>>,
    pub seal_interval_secs: Option<u64>,
    pub idempotency_ttl_hours: Option<i64>,
    pub body_limit: Option<usize>,
    pub attachment_limit_bytes: Option<u64>,
    pub import_limit_bytes: Option<u64>,
    pub request_timeout_secs: Option<u64>,
    pub log_format: Option<String>,
}

/// Resolved settings. Their `Debug` form hides the secrets (see below).
#[derive(Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub listen: String,
    pub jwt_secret: Option<String>,
    pub ledger_key: Option<String>,
    pub token_key: Option<String>,
    /// What signs new local tokens. EdDSA by default: services that verify Salus tokens
    /// need only the published public key, never a secret that could also mint tokens.
    pub token_algorithm: LocalAlgorithm,
    pub oidc_issuer: Option<String>,
    pub oidc_audience: String,
    pub oidc_jwks: Option<String>,
    pub oidc_ca_file: Option<PathBuf>,
    pub oidc_jwks_refresh_secs: u64,
    pub oidc_jwks_max_age_secs: u64,
    /// Claims of external tokens holding role or group names.
    pub oidc_role_claims: Vec<String>,
    /// External claim values to Salus role names.
    pub oidc_roles: HashMap<String, String>,
    /// The external claim naming the tenant.
    pub oidc_tenant_claim: String,
    /// External tenant claim values to tenant names or ids.
    pub oidc_tenants: HashMap<String, String>,
    pub seal_interval_secs: u64,
    pub idempotency_ttl_hours: i64,
    pub body_limit: usize,
    pub attachment_limit_bytes: u64,
    pub import_limit_bytes: u64,
    pub request_timeout_secs: u64,
    pub log_format: String,
}

impl Settings {
    pub fn resolve(args: &SettingsArgs) -> anyhow::Result<Self> {
        let file: FileSettings = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read config file {}: {e}", path.display())
                })?;
                toml::from_str(&text).map_err(|e| {
                    anyhow::anyhow!("config file {} is not valid: {e}", path.display())
                })?
            }
            None => FileSettings::default(),
        };
        let a = args.clone();
        Ok(Settings {
            data_dir: a
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("salus-data")),
            database_url: a
                .database_url
                .or(file.database_url)
                .filter(|s| !s.is_empty()),
            listen: a
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:8080".into()),
            jwt_secret: a.jwt_secret.or(file.jwt_secret),
            ledger_key: a.ledger_key.or(file.ledger_key),
            token_key: a.token_key.or(file.token_key),
            token_algorithm: match a.token_algorithm.or(file.token_algorithm) {
                Some(text) => text.parse().map_err(|e: String| anyhow::anyhow!(e))?,
                None => LocalAlgorithm::EdDsa,
            },
            oidc_issuer: a.oidc_issuer.or(file.oidc_issuer),
            oidc_audience: a
                .oidc_audience
                .or(file.oidc_audience)
                .unwrap_or_else(|| "salus-api".into()),
            oidc_jwks: a.oidc_jwks.or(file.oidc_jwks),
            oidc_ca_file: a.oidc_ca_file.or(file.oidc_ca_file),
            oidc_jwks_refresh_secs: a
                .oidc_jwks_refresh_secs
                .or(file.oidc_jwks_refresh_secs)
                .unwrap_or(30)
                .max(1),
            oidc_jwks_max_age_secs: a
                .oidc_jwks_max_age_secs
                .or(file.oidc_jwks_max_age_secs)
                .unwrap_or(600)
                .max(1),
            oidc_role_claims: match a.oidc_role_claims {
                Some(list) => list
                    .split(',')
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty())
                    .collect(),
                None => file
                    .oidc_role_claims
                    .unwrap_or_else(|| vec!["roles".into(), "groups".into()]),
            },
            oidc_roles: match a.oidc_roles {
                Some(pairs) => parse_pairs("--oidc-roles", &pairs)?,
                None => file.oidc_roles.unwrap_or_default(),
            },
            oidc_tenant_claim: a
                .oidc_tenant_claim
                .or(file.oidc_tenant_claim)
                .unwrap_or_else(|| "tid".into()),
            oidc_tenants: match a.oidc_tenants {
                Some(pairs) => parse_pairs("--oidc-tenants", &pairs)?,
                None => file.oidc_tenants.unwrap_or_default(),
            },
            seal_interval_secs: a
                .seal_interval_secs
                .or(file.seal_interval_secs)
                .unwrap_or(2)
                .max(1),
            idempotency_ttl_hours: a
                .idempotency_ttl_hours
                .or(file.idempotency_ttl_hours)
                .unwrap_or(24)
                .max(1),
            body_limit: a.body_limit.or(file.body_limit).unwrap_or(1024 * 1024),
            attachment_limit_bytes: a
                .attachment_limit_bytes
                .or(file.attachment_limit_bytes)
                .unwrap_or(25 * 1024 * 1024),
            import_limit_bytes: a
                .import_limit_bytes
                .or(file.import_limit_bytes)
                .unwrap_or(1024 * 1024 * 1024),
            request_timeout_secs: a
                .request_timeout_secs
                .or(file.request_timeout_secs)
                .unwrap_or(30)
                .max(1),
            log_format: a
                .log_format
                .or(file.log_format)
                .unwrap_or_else(|| "json".into()),
        })
    }

    /// Default settings rooted at `data_dir` (tests, bench).
    pub fn for_data_dir(data_dir: &Path) -> Self {
        let args = SettingsArgs {
            data_dir: Some(data_dir.to_path_buf()),
            ..SettingsArgs::default()
        };
        // No file is read, so this cannot fail.
        Settings::resolve(&args).unwrap_or_else(|_| unreachable!("no config file to read"))
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("salus.db")
    }
}

/// Secrets (token and ledger keys, the HS256 secret, the password and user of the database
/// URL) never appear in a debug print or a log line that carries the settings.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<hidden>");
        f.debug_struct("Settings")
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(without_credentials),
            )
            .field("listen", &self.listen)
            .field("jwt_secret", &hidden(&self.jwt_secret))
            .field("ledger_key", &hidden(&self.ledger_key))
            .field("token_key", &hidden(&self.token_key))
            .field("token_algorithm", &self.token_algorithm)
            .field("oidc_issuer", &self.oidc_issuer)
            .field("oidc_audience", &self.oidc_audience)
            .field("oidc_jwks", &self.oidc_jwks)
            .field("oidc_ca_file", &self.oidc_ca_file)
            .field("oidc_role_claims", &self.oidc_role_claims)
            .field("oidc_roles", &self.oidc_roles)
            .field("oidc_tenant_claim", &self.oidc_tenant_claim)
            .field("oidc_tenants", &self.oidc_tenants)
            .field("seal_interval_secs", &self.seal_interval_secs)
            .field("idempotency_ttl_hours", &self.idempotency_ttl_hours)
            .field("body_limit", &self.body_limit)
            .field("log_format", &self.log_format)
            .finish_non_exhaustive()
    }
}

/// A connection URL with its user information (`user:password@`) and query (which can
/// carry `password=`) replaced.
fn without_credentials(url: &str) -> String {
    let (head, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let rest = match rest.rsplit_once('@') {
        Some((_, host)) => format!("<hidden>@{host}"),
        None => rest.to_owned(),
    };
    match rest.split_once('?') {
        Some((base, _)) => format!("{head}{base}?<hidden>"),
        None => format!("{head}{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_print_of_settings_hides_every_secret() {
        let mut s = Settings::for_data_dir(Path::new("/tmp/x"));
        s.jwt_secret = Some("hs-secret-value".into());
        s.ledger_key = Some("ledger-seed-value".into());
        s.token_key = Some("token-seed-value".into());
        s.database_url =
            Some("postgres://salus:pg-password@db.example:5432/salus?password=q-secret".into());
        let text = format!("{s:?}");
        for secret in [
            "hs-secret-value",
            "ledger-seed-value",
            "token-seed-value",
            "pg-password",
            "q-secret",
            "salus:",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("db.example:5432/salus"), "{text}");
        assert!(text.contains("/tmp/x"), "{text}");
    }

    #[test]
    fn urls_without_credentials_are_kept() {
        assert_eq!(
            without_credentials("postgres://127.0.0.1:5432/postgres"),
            "postgres://127.0.0.1:5432/postgres"
        );
        assert_eq!(without_credentials("u:p@h/db"), "<hidden>@h/db");
    }
}

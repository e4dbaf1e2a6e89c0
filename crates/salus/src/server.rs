//! Assembling and running the server: open the store, load or create the deployment's
//! secrets, bootstrap the first tenant and admin, serve HTTP, seal the ledger in the
//! background, and shut down gracefully.

use crate::config::Settings;
use anyhow::Context;
use salus_api::auth::{
    Authenticator, ClaimMapping, IssuerKeys, LocalKeys, OidcIssuer, Refresh, TokenKey,
};
use salus_api::metrics::{CommitMetrics, Metrics};
use salus_api::{ApiConfig, AppState};
use salus_domain::access::user::{Grant, Granter};
use salus_domain::access::{User, UserCommand};
use salus_domain::service::Services;
use salus_kernel::{ActorId, SystemClock, TenantContext, TenantId};
use salus_store::commit::CommitObserver;
use salus_store::ledger::{LedgerKey, Sealer};
use salus_store::{Store, Tenant};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub const LOCAL_ISSUER: &str = "salus";
pub const LOCAL_AUDIENCE: &str = "salus-api";

/// Open the configured store (PostgreSQL when a URL is set, else SQLite in the data dir).
pub async fn open_store(
    settings: &Settings,
    observer: Option<Arc<dyn CommitObserver>>,
) -> anyhow::Result<Arc<dyn Store>> {
    match &settings.database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = salus_store::postgres::PostgresStore::open(url, observer)
                .await
                .context("cannot open the PostgreSQL store")?;
            Ok(Arc::new(store))
        }
        Some(url) if url.starts_with("sqlite://") => {
            let path = std::path::PathBuf::from(url.trim_start_matches("sqlite://"));
            let store = salus_store::sqlite::SqliteStore::open(&path, observer)
                .await
                .context("cannot open the SQLite store")?;
            Ok(Arc::new(store))
        }
        Some(other) => anyhow::bail!(
            "database URL '{}' is neither postgres:// nor sqlite://",
            other.split('@').next_back().unwrap_or("")
        ),
        None => {
            std::fs::create_dir_all(&settings.data_dir).with_context(|| {
                format!(
                    "cannot create data directory {}",
                    settings.data_dir.display()
                )
            })?;
            let store = salus_store::sqlite::SqliteStore::open(&settings.sqlite_path(), observer)
                .await
                .context("cannot open the SQLite store")?;
            Ok(Arc::new(store))
        }
    }
}

/// Open the store of an existing deployment (operator commands): refuse to create an
/// empty SQLite database where none is, so that `audit verify` on a mistyped path fails
/// instead of reporting an empty, "valid" log.
pub async fn open_existing_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    if settings.database_url.is_none() && !settings.sqlite_path().exists() {
        anyhow::bail!(
            "no database at {} (is --data-dir right? `salus serve` creates it)",
            settings.sqlite_path().display()
        );
    }
    open_store(settings, None).await
}

/// The HS256 secret: from settings, or a random one kept in the data directory.
pub fn jwt_secret(settings: &Settings) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = &settings.jwt_secret {
        anyhow::ensure!(
            s.len() >= 32,
            "the JWT secret must be at least 32 characters"
        );
        return Ok(s.as_bytes().to_vec());
    }
    let path = settings.data_dir.join("jwt-secret");
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().as_bytes().to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&settings.data_dir)?;
            let mut bytes = [0u8; 32];
            rand_bytes(&mut bytes);
            let text = hex::encode(bytes);
            salus_store::ledger::write_private(&path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(text.into_bytes())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn rand_bytes(buf: &mut [u8]) {
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, buf);
}

pub fn ledger_key(settings: &Settings) -> anyhow::Result<LedgerKey> {
    match &settings.ledger_key {
        Some(hex) => LedgerKey::from_hex(hex).map_err(|e| anyhow::anyhow!(e)),
        None => LedgerKey::load_or_create(&settings.data_dir.join("ledger-ed25519.key"))
            .context("cannot load or create the ledger signing key"),
    }
}

/// The Ed25519 key of EdDSA local tokens: from settings, or a random seed kept in the data
/// directory (mode 0600), created on first use like the ledger key.
pub fn token_key(settings: &Settings) -> anyhow::Result<TokenKey> {
    if let Some(hex) = &settings.token_key {
        return TokenKey::from_hex(hex).map_err(|e| anyhow::anyhow!(e));
    }
    let path = settings.data_dir.join("token-ed25519.key");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&settings.data_dir)?;
            let mut seed = [0u8; 32];
            rand_bytes(&mut seed);
            let text = hex::encode(seed);
            salus_store::ledger::write_private(&path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            text
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    TokenKey::from_hex(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub async fn authenticator(settings: &Settings) -> anyhow::Result<Authenticator> {
    if settings.oidc_ca_file.is_some() && settings.oidc_jwks.is_none() {
        anyhow::bail!("--oidc-ca-file is for an https JWKS, and no --oidc-jwks is set");
    }
    let oidc = match (&settings.oidc_issuer, &settings.oidc_jwks) {
        (Some(issuer), Some(jwks)) => {
            let keys = IssuerKeys::load(
                jwks,
                settings.oidc_ca_file.as_deref(),
                Refresh {
                    unknown_kid_every: Duration::from_secs(settings.oidc_jwks_refresh_secs),
                    max_age: Duration::from_secs(settings.oidc_jwks_max_age_secs),
                },
            )
            .await?;
            Some(OidcIssuer {
                issuer: issuer.clone(),
                audience: settings.oidc_audience.clone(),
                keys,
                mapping: ClaimMapping {
                    role_claims: settings.oidc_role_claims.clone(),
                    roles: settings
                        .oidc_roles
                        .iter()
                        .map(|(k, v)| (k.clone(), v.trim().to_ascii_lowercase()))
                        .collect(),
                    tenant_claim: settings.oidc_tenant_claim.clone(),
                    tenants: Default::default(),
                },
            })
        }
        (Some(_), None) => anyhow::bail!("an OIDC issuer needs its JWKS (--oidc-jwks)"),
        (None, Some(_)) => anyhow::bail!("an OIDC JWKS needs its issuer (--oidc-issuer)"),
        (None, None) => None,
    };
    let local = LocalKeys {
        secret: jwt_secret(settings)?,
        ed25519: token_key(settings)?,
        sign_with: settings.token_algorithm,
    };
    Ok(Authenticator::new(
        local,
        LOCAL_ISSUER.into(),
        LOCAL_AUDIENCE.into(),
        oidc,
    ))
}

pub fn system_ctx(tenant: TenantId) -> TenantContext {
    TenantContext::new(tenant, ActorId(Uuid::nil()), Uuid::now_v7())
}

/// Create a tenant and its first admin user. Returns (tenant, admin user id).
pub async fn create_tenant_with_admin(
    services: &Services,
    tenant_name: &str,
    username: &str,
) -> anyhow::Result<(TenantId, Uuid)> {
    let tenant = Tenant {
        id: TenantId(Uuid::now_v7()),
        name: tenant_name.to_owned(),
        created_at: services.now(),
    };
    services.store.create_tenant(&tenant).await?;
    salus_domain::clinical::outcome::define_defaults(services, &system_ctx(tenant.id))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let user = create_user(
        services,
        tenant.id,
        username,
        "Administrator",
        vec!["admin".into()],
    )
    .await?;
    Ok((tenant.id, user))
}

pub async fn create_user(
    services: &Services,
    tenant: TenantId,
    username: &str,
    display_name: &str,
    roles: Vec<String>,
) -> anyhow::Result<Uuid> {
    let id = Uuid::now_v7();
    let ctx = system_ctx(tenant);
    let mut grants = Vec::with_capacity(roles.len());
    for role in roles {
        let role = role.trim().to_ascii_lowercase();
        let role_permissions = salus_domain::access::role_permissions(services, &ctx, &role)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        grants.push(Grant {
            assignment_id: Uuid::now_v7(),
            role,
            role_permissions,
            valid_from: None,
            valid_until: None,
            reason: None,
        });
    }
    let (username, display_name) = (username.to_owned(), display_name.to_owned());
    services
        .execute::<User, _>(
            &ctx,
            id,
            None,
            move |_, now| {
                Ok(UserCommand::Create {
                    id,
                    username,
                    display_name,
                    grants,
                    granter: Granter::system(),
                    now,
                })
            },
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(id)
}

/// The tenants named by `--oidc-tenants` (claim value → tenant name or id); an unknown
/// tenant stops the start.
async fn oidc_tenants(
    store: &dyn Store,
    map: &std::collections::HashMap<String, String>,
) -> anyhow::Result<salus_api::auth::HashMap<String, TenantId>> {
    let mut out = salus_api::auth::HashMap::default();
    for (value, tenant) in map {
        let t = find_tenant(store, tenant)
            .await
            .with_context(|| format!("--oidc-tenants maps '{value}' to an unknown tenant"))?;
        out.insert(value.clone(), t.id);
    }
    Ok(out)
}

/// Find a tenant by name or id.
pub async fn find_tenant(store: &dyn Store, name_or_id: &str) -> anyhow::Result<Tenant> {
    let tenants = store.tenants().await?;
    tenants
        .into_iter()
        .find(|t| t.name == name_or_id || t.id.0.to_string() == name_or_id)
        .ok_or_else(|| anyhow::anyhow!("no tenant named '{name_or_id}'"))
}

/// Find a user by username in a tenant.
pub async fn find_user(
    services: &Services,
    tenant: TenantId,
    username: &str,
) -> anyhow::Result<User> {
    let ctx = system_ctx(tenant);
    let id = services
        .store
        .unique_owner(
            &ctx,
            salus_domain::access::user::USERNAME_SCOPE,
            &username.to_ascii_lowercase(),
        )
        .await?
        .ok_or_else(|| anyhow::anyhow!("no user '{username}' in that tenant"))?;
    services
        .load::<User>(&ctx, id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .map(|c| c.state)
        .ok_or_else(|| anyhow::anyhow!("user '{username}' has no record"))
}

/// A running server.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub store: Arc<dyn Store>,
    pub auth: Arc<Authenticator>,
    pub services: Services,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stop taking requests, finish in-flight ones, drain the commit queue, seal.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        self.task.await.context("server task panicked")?
    }
}

/// What the first start printed (the first-login token), when it bootstrapped.
pub struct Bootstrap {
    pub tenant: TenantId,
    pub username: String,
    pub token: String,
}

/// Create the default tenant and admin when the store has no tenant at all.
pub async fn bootstrap(
    services: &Services,
    auth: &Authenticator,
) -> anyhow::Result<Option<Bootstrap>> {
    if !services.store.tenants().await?.is_empty() {
        return Ok(None);
    }
    let (tenant, admin) = create_tenant_with_admin(services, "default", "admin").await?;
    let token = auth
        .issue(admin, tenant, Duration::from_secs(24 * 3600))
        .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
    Ok(Some(Bootstrap {
        tenant,
        username: "admin".into(),
        token,
    }))
}

/// The API's settings from the server's (also what `salus import` of FHIR files runs with).
pub fn api_config(settings: &Settings) -> ApiConfig {
    ApiConfig {
        body_limit: settings.body_limit,
        header_limit: 32 * 1024,
        request_timeout: Duration::from_secs(settings.request_timeout_secs),
        idempotency_ttl: chrono::Duration::hours(settings.idempotency_ttl_hours),
        blob_dir: settings.data_dir.join("blobs"),
        attachment_limit: settings.attachment_limit_bytes,
        import_dir: settings.data_dir.join("imports"),
        import_limit: settings.import_limit_bytes,
    }
}

/// Give the pages freed since the last call back to the system. mimalloc otherwise purges
/// freed pages only from within later allocations on the same thread, so a server gone
/// idle kept what start-up or its last burst of requests had freed. `force` also returns
/// what is not yet due (start-up: nothing of it will be needed again soon).
fn release_freed_memory(force: bool) {
    // SAFETY: mi_collect takes no arguments that point anywhere; it walks the allocator's
    // own state under its own locks.
    unsafe { libmimalloc_sys::mi_collect(force) }
}

/// Start the server in the background on `settings.listen` (port 0 picks a free one).
pub async fn start(settings: &Settings) -> anyhow::Result<(Running, Option<Bootstrap>)> {
    salus_api::jwks::install_crypto_provider();
    let metrics = Metrics::new();
    let observer: Arc<dyn CommitObserver> = Arc::new(CommitMetrics(metrics.clone()));
    let store = open_store(settings, Some(observer)).await?;
    let services = Services::new(store.clone(), Arc::new(SystemClock));
    let mut auth = authenticator(settings).await?;
    let boot = bootstrap(&services, &auth).await?;
    if let Some(oidc) = auth.oidc.as_mut() {
        oidc.mapping.tenants = oidc_tenants(store.as_ref(), &settings.oidc_tenants).await?;
    }
    let auth = Arc::new(auth);
    let mut sealer = Sealer::new(ledger_key(settings)?);
    let config = api_config(settings);
    salus_api::imports::clean_import_dir(&config.import_dir);
    let state = AppState::new(services.clone(), auth.clone(), metrics.clone(), config);
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let seal_every = Duration::from_secs(settings.seal_interval_secs);
    // An OIDC issuer's keys are fetched again as they age, so withdrawn ones stop counting.
    let issuer_keys = {
        let auth = auth.clone();
        tokio::spawn(async move {
            if let Some(oidc) = &auth.oidc {
                oidc.keys.keep_fresh().await;
            }
        })
    };
    let store_bg = store.clone();
    // The routes and their OpenAPI document are built here, so what building them freed
    // goes back to the system before the server waits for its first request.
    let service = salus_api::service(state);
    release_freed_memory(true);
    let task = tokio::spawn(async move {
        let (stop_bg, mut stopped) = tokio::sync::watch::channel(false);
        let bg_store = store_bg.clone();
        let bg_metrics = metrics.clone();
        let background = tokio::spawn(async move {
            let mut tick = tokio::time::interval(seal_every);
            let mut purge = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        match sealer.seal_all(bg_store.as_ref()).await {
                            Ok(heads) => { bg_metrics.tree_heads_signed.inc_by(heads.len() as u64); }
                            Err(e) => tracing::error!(error = %e, "ledger seal failed"),
                        }
                        release_freed_memory(false);
                    }
                    _ = purge.tick() => {
                        if let Err(e) = bg_store.purge_idempotency(chrono::Utc::now()).await {
                            tracing::warn!(error = %e, "idempotency purge failed");
                        }
                    }
                    _ = stopped.changed() => break,
                }
            }
            sealer
        });
        let served = axum::serve(listener, service)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
        let _ = stop_bg.send(true);
        issuer_keys.abort();
        store_bg.shutdown().await;
        if let Ok(mut sealer) = background.await
            && let Err(e) = sealer.seal_all(store_bg.as_ref()).await
        {
            tracing::warn!(error = %e, "final seal failed");
        }
        served.context("HTTP server failed")
    });
    Ok((
        Running {
            addr,
            store,
            auth,
            services,
            shutdown: tx,
            task,
        },
        boot,
    ))
}

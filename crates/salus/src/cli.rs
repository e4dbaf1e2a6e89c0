//! Command-line interface. Exit codes: 0 success, 1 failure (including a failed audit),
//! 2 usage error (clap).

use crate::config::{Settings, SettingsArgs};
use crate::server;
use clap::{Parser, Subcommand};
use salus_domain::service::Services;
use salus_kernel::SystemClock;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "salus", version, about = "Salus clinical record platform")]
pub struct Cli {
    #[command(flatten)]
    pub settings: SettingsArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (creates ./salus-data and a first admin on an empty store).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Tokens for the API.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Users: create, list, disable.
    User {
        #[command(subcommand)]
        command: crate::access::UserCommandArgs,
    },
    /// Roles: list, create, grant, revoke, show a user's assignments.
    Role {
        #[command(subcommand)]
        command: crate::access::RoleCommandArgs,
    },
    /// Tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Verify and prove the integrity of the event log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Measure throughput and latency (see BENCHMARKS.md).
    Bench(crate::bench::BenchArgs),
    /// Import a bulk file (CSV, JSON, NDJSON) into a tenant, every row through the domain.
    Import(crate::bulk::ImportArgs),
    /// Export a kind's records (CSV, JSON, NDJSON) to a file or standard output.
    Export(crate::bulk::ExportArgs),
    /// Measure bulk import: generate a patient CSV, import it into SQLite and PostgreSQL
    /// (see BENCHMARKS.md).
    BenchImport(crate::bulk_bench::BenchImportArgs),
    /// Measure FHIR transaction-Bundle import (resources/s) and Observation search latency
    /// over a million Observations, on SQLite and PostgreSQL (see BENCHMARKS.md).
    BenchFhir(crate::bench::fhir::BenchFhirArgs),
    /// Write a synthetic patient population as FHIR transaction Bundles or Bulk Data NDJSON.
    Synth(crate::synth::SynthArgs),
    /// Derive projections (documents and search rows) again from the event log, at the
    /// same versions, after an upgrade changed how they are made. The log is untouched;
    /// the server may keep running.
    Reindex {
        /// Tenant name or id [default: every tenant]
        #[arg(long)]
        tenant: Option<String>,
        /// Only streams of this type (patient, encounter, …).
        #[arg(long)]
        stream_type: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a bearer token for a user.
    Issue {
        /// Username.
        #[arg(long)]
        user: String,
        /// Tenant name or id.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 24)]
        ttl_hours: u64,
        /// SMART on FHIR scopes, space-separated: they narrow the token below the user's roles.
        #[arg(long)]
        scope: Option<String>,
        /// A patient context: the token sees only this patient's data.
        #[arg(long)]
        patient: Option<uuid::Uuid>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant with its first admin user; prints the admin's token.
    Create {
        name: String,
        #[arg(long, default_value = "admin")]
        admin: String,
    },
    /// List tenants.
    List,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every event hash, stream chain, ledger order and signed tree head.
    Verify,
    /// Seal the ledger now (sign tree heads for new events).
    Seal,
    /// Print an inclusion proof for one event (JSON).
    Prove {
        event_id: uuid::Uuid,
        /// Write the proof here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print a consistency proof between two tree heads of a tenant (JSON).
    ProveConsistency {
        #[arg(long, default_value = "default")]
        tenant: String,
        first: i64,
        second: i64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a proof file offline (no database).
    CheckProof {
        file: PathBuf,
        /// The trusted tree-head key (hex). Defaults to the deployment's key.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Print the deployment's tree-head public key.
    PublicKey,
}

pub fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SALUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if settings.log_format == "text" {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    };
}

async fn services(settings: &Settings) -> anyhow::Result<Services> {
    let store = server::open_existing_store(settings).await?;
    Ok(Services::new(store, Arc::new(SystemClock)))
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::resolve(&cli.settings)?;
    match cli.command {
        Command::Serve => {
            init_logging(&settings);
            serve(&settings).await?;
        }
        Command::Migrate => {
            let applied = match &settings.database_url {
                Some(url) if !url.starts_with("sqlite://") => {
                    salus_store::postgres::migrate(url).await?
                }
                _ => {
                    std::fs::create_dir_all(&settings.data_dir)?;
                    salus_store::sqlite::migrate(&settings.sqlite_path())?
                }
            };
            if applied.is_empty() {
                println!("schema is up to date");
            } else {
                println!("applied migrations: {applied:?}");
            }
        }
        Command::Token {
            command:
                TokenCommand::Issue {
                    user,
                    tenant,
                    ttl_hours,
                    scope,
                    patient,
                },
        } => {
            let services = services(&settings).await?;
            let auth = server::authenticator(&settings).await?;
            let t = server::find_tenant(services.store.as_ref(), &tenant).await?;
            let u = server::find_user(&services, t.id, &user).await?;
            let limits = salus_api::auth::TokenLimits { scope, patient };
            let token = auth
                .issue_limited(u.id, t.id, Duration::from_secs(ttl_hours * 3600), limits)
                .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
            services.store.shutdown().await;
            println!("{token}");
        }
        Command::User { command } => {
            let services = services(&settings).await?;
            let done = crate::access::user(&services, command).await;
            services.store.shutdown().await;
            done?;
        }
        Command::Role { command } => {
            let services = services(&settings).await?;
            let done = crate::access::role(&services, command).await;
            services.store.shutdown().await;
            done?;
        }
        Command::Tenant { command } => {
            let services = services(&settings).await?;
            match command {
                TenantCommand::Create { name, admin } => {
                    let auth = server::authenticator(&settings).await?;
                    let (tenant, user) =
                        server::create_tenant_with_admin(&services, &name, &admin).await?;
                    let token = auth
                        .issue(user, tenant, Duration::from_secs(24 * 3600))
                        .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
                    println!("created tenant {name} ({tenant}) with admin {admin}\n{token}");
                }
                TenantCommand::List => {
                    for t in services.store.tenants().await? {
                        println!("{}\t{}", t.id, t.name);
                    }
                }
            }
            services.store.shutdown().await;
        }
        Command::Audit { command } => return crate::audit::run(&settings, command).await,
        Command::Bench(args) => return crate::bench::run(&settings, args).await,
        Command::Import(args) => return crate::bulk::import(&settings, args).await,
        Command::Export(args) => return crate::bulk::export(&settings, args).await,
        Command::BenchImport(args) => return crate::bulk_bench::run(&settings, args).await,
        Command::BenchFhir(args) => return crate::bench::fhir::run(&settings, args).await,
        Command::Synth(args) => return crate::synth::run(args),
        Command::Reindex {
            tenant,
            stream_type,
        } => {
            let services = services(&settings).await?;
            let done = reindex(&services, tenant.as_deref(), stream_type.as_deref()).await;
            services.store.shutdown().await;
            done?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn reindex(
    services: &Services,
    tenant: Option<&str>,
    stream_type: Option<&str>,
) -> anyhow::Result<()> {
    let tenants = match tenant {
        Some(t) => vec![server::find_tenant(services.store.as_ref(), t).await?],
        None => services.store.tenants().await?,
    };
    for t in tenants {
        let ctx = server::system_ctx(t.id);
        let r = salus_domain::aggregates::reindex_tenant(services, &ctx, stream_type, |_| {})
            .await
            .map_err(|e| anyhow::anyhow!("tenant {}: {e}", t.name))?;
        println!(
            "tenant {}: {} of {} streams rebuilt ({} of types this build does not know left as they were; {} rebuilt again after a concurrent write)",
            t.name, r.rebuilt, r.streams, r.unknown, r.retried
        );
    }
    Ok(())
}

async fn serve(settings: &Settings) -> anyhow::Result<()> {
    let (running, boot) = server::start(settings).await?;
    let backend = running.store.backend();
    if let Some(b) = boot {
        println!(
            "First start: created tenant 'default' and user '{}'.\nFirst-login token (valid 24 hours; shown once):\n\n{}\n\nGet another with: salus token issue --user {} --tenant default\n",
            b.username, b.token, b.username
        );
    }
    tracing::info!(addr = %running.addr, backend, "salus is listening");
    println!("Salus is listening on http://{} ({backend})", running.addr);
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests and writes");
    running.stop().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

//! Migrations and the application role.
//!
//! Migrations run as the connecting user (who then owns the tables), each once and in its
//! own transaction, under a transaction-scoped advisory lock so that two processes
//! migrating the same database at once apply each migration exactly once. The application
//! role `salus_app` (no login, no BYPASSRLS) is what every pooled and writer connection
//! switches to, so row-level security applies even when the URL names a superuser.

use super::{APP_ROLE, connect, db_err};
use crate::model::StoreError;
use tokio_postgres::Client;

/// Migrations in order; each runs once, in its own transaction.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("0001_init.sql")),
    (2, "text_index", include_str!("0002_text_index.sql")),
    (3, "search_keys", include_str!("0003_search_keys.sql")),
    (4, "c_collation", include_str!("0004_c_collation.sql")),
    (5, "access_log", include_str!("0005_access_log.sql")),
];

/// Key of the advisory lock that serialises migrations and role grants in one database
/// ("salusmig" in ASCII).
const MIGRATION_LOCK: i64 = 0x7361_6c75_736d_6967;

pub fn schema_version() -> i64 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

/// Apply pending migrations to the database at `url` and (re)grant the application role
/// its privileges. Returns the versions applied now.
pub async fn migrate(url: &str) -> Result<Vec<i64>, StoreError> {
    let (client, task) = connect(url).await?;
    let out = async {
        let applied = run_migrations(&client).await?;
        ensure_app_role(&client).await?;
        Ok(applied)
    }
    .await;
    drop(client);
    let _ = task.await;
    out
}

async fn in_locked_tx<F, Fut, T>(client: &Client, f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    client.batch_execute("BEGIN").await.map_err(db_err)?;
    let out = async {
        client
            .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db_err)?;
        f().await
    }
    .await;
    match out {
        Ok(v) => {
            client.batch_execute("COMMIT").await.map_err(db_err)?;
            Ok(v)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn run_migrations(client: &Client) -> Result<Vec<i64>, StoreError> {
    run_migrations_upto(client, i64::MAX).await
}

/// Apply the pending migrations up to version `upto`.
pub(super) async fn run_migrations_upto(
    client: &Client,
    upto: i64,
) -> Result<Vec<i64>, StoreError> {
    in_locked_tx(client, || async {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)",
            )
            .await
            .map_err(db_err)
    })
    .await?;
    let mut applied = Vec::new();
    for (version, name, sql_text) in MIGRATIONS.iter().filter(|m| m.0 <= upto) {
        let done = in_locked_tx(client, || async {
            let found = client
                .query_opt(
                    "SELECT version FROM schema_migrations WHERE version = $1",
                    &[version],
                )
                .await
                .map_err(db_err)?;
            if found.is_some() {
                return Ok(false);
            }
            client.batch_execute(sql_text).await.map_err(db_err)?;
            client
                .execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, now())",
                    &[version, name],
                )
                .await
                .map_err(db_err)?;
            Ok(true)
        })
        .await?;
        if done {
            applied.push(*version);
        }
    }
    Ok(applied)
}

/// Create the application role if missing (tolerating a concurrent creator, possibly in
/// another database of the same cluster), let the connecting user switch to it, and grant
/// it what the server needs on every table and function of the schema.
async fn ensure_app_role(client: &Client) -> Result<(), StoreError> {
    let role = APP_ROLE;
    let sql = format!(
        r#"
DO $salus$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
        BEGIN
            CREATE ROLE {role} NOLOGIN NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}' AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role {role} must not bypass row-level security';
    END IF;
    IF NOT pg_has_role(current_user, '{role}', 'MEMBER') THEN
        BEGIN
            EXECUTE format('GRANT {role} TO %I', current_user);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$salus$;
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {role};
"#
    );
    in_locked_tx(client, || async {
        client.batch_execute(&sql).await.map_err(db_err)
    })
    .await
}

//! The production backend: PostgreSQL with row-level security.
//!
//! Migrations run as the connecting user; every other connection switches to the
//! application role [`APP_ROLE`] (no BYPASSRLS) right after connecting, so the policies of
//! `0001_init.sql` apply even when the URL names a superuser. Each tenant-scoped statement
//! runs with `salus.tenants` set to the tenants it may see.
//!
//! One writer task owns a dedicated connection and runs the group-commit loop (`writer.rs`);
//! reads go through a small pool, each setting its tenants in the same pipelined round trip
//! as its query.

mod access;
mod audit;
mod schema;
mod writer;

#[cfg(test)]
mod tests;

pub use schema::{migrate, schema_version};

use crate::Store;
use crate::commit::{CommitObserver, CommitQueue};
use crate::model::*;
use crate::sql::{self, Arg, Dialect};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use salus_kernel::{ActorId, EventEnvelope, Hash32, TenantContext, TenantId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row};
use uuid::Uuid;

/// The role the server runs as: no login, no BYPASSRLS.
pub const APP_ROLE: &str = "salus_app";

/// Connections in the read pool.
const POOL_SIZE: usize = 16;

/// At most this many tenants are set at once by the calls that sweep every tenant.
const TENANT_CHUNK: usize = 256;

const SET_TENANTS: &str = "SELECT set_config('salus.tenants', $1, false)";

const EVENT_COLUMNS: &str = "tenant_id, seq, event_id, stream_type, stream_id, version, event_type, schema_version, payload, actor_id, correlation_id, causation_id, occurred_at, recorded_at, prev_hash, hash";

/// A driver error as the store reports it. (A server error's `Display` says only "db
/// error"; its code, message and detail are what help.)
fn db_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(describe(&e))
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => {
            let mut s = format!("{} ({}): {}", d.severity(), d.code().code(), d.message());
            if let Some(detail) = d.detail() {
                s.push_str(&format!("; {detail}"));
            }
            s
        }
        None => e.to_string(),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The value of `salus.tenants` for these tenants.
fn tenant_list(tenants: &[TenantId]) -> String {
    let mut s = String::with_capacity(tenants.len() * 37);
    for (i, t) in tenants.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&t.0.to_string());
    }
    s
}

fn parse_url(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    url.parse::<tokio_postgres::Config>()
        .map_err(|e| StoreError::Unavailable(format!("bad database url: {e}")))
}

/// A plain connection as the URL's user, its connection driven by a spawned task.
async fn connect(url: &str) -> Result<(Client, JoinHandle<()>), StoreError> {
    let (client, connection) = parse_url(url)?.connect(NoTls).await.map_err(db_err)?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "postgres connection ended");
        }
    });
    Ok((client, task))
}

/// A generated query's argument as PostgreSQL binds it.
fn pg_arg(a: &Arg) -> &(dyn ToSql + Sync) {
    match a {
        Arg::Uuid(u) => u,
        Arg::Text(s) => s,
        Arg::Int(i) => i,
    }
}

/// Quote an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Percent-encode a path segment of a URL.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The URL of database `name` on the server of `url` (a `postgres://` URL or a key=value
/// connection string).
fn database_url(url: &str, name: &str) -> String {
    let scheme = ["postgres://", "postgresql://"]
        .into_iter()
        .find(|s| url.starts_with(s));
    match scheme {
        Some(scheme) => {
            let rest = &url[scheme.len()..];
            let (before_query, query) = match rest.find('?') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            let authority = match before_query.find('/') {
                Some(i) => &before_query[..i],
                None => before_query,
            };
            format!("{scheme}{authority}/{}{query}", encode_segment(name))
        }
        None => {
            let kept: Vec<&str> = url
                .split_whitespace()
                .filter(|kv| !kv.starts_with("dbname="))
                .collect();
            let quoted = name.replace('\\', "\\\\").replace('\'', "\\'");
            format!("{} dbname='{quoted}'", kept.join(" "))
        }
    }
}

/// Test/ops helper: create database `name` on the server of `admin_url`, dropping it first
/// if it exists. Returns the URL of the new database.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String, StoreError> {
    let (client, task) = connect(admin_url).await?;
    let ident = quote_ident(name);
    let out = async {
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {ident} WITH (FORCE)"))
            .await
            .map_err(db_err)?;
        client
            .batch_execute(&format!("CREATE DATABASE {ident}"))
            .await
            .map_err(db_err)
    }
    .await;
    drop(client);
    let _ = task.await;
    out.map(|()| database_url(admin_url, name))
}

/// Drop database `name` on the server of `admin_url`, disconnecting its sessions.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    let (client, task) = connect(admin_url).await?;
    let out = client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(name)
        ))
        .await
        .map_err(db_err);
    drop(client);
    let _ = task.await;
    out
}

/// A database made for one test or benchmark run, dropped when this value is dropped.
pub struct ScratchDatabase {
    admin_url: String,
    name: String,
    /// The new database's URL.
    pub url: String,
}

impl ScratchDatabase {
    pub async fn create(admin_url: &str, name: &str) -> Result<Self, StoreError> {
        let url = create_database(admin_url, name).await?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name: name.to_owned(),
            url,
        })
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        // Drop can run inside an async runtime, which must not be blocked on: use a thread
        // with a runtime of its own and wait for it.
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        let worker = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                && let Err(e) = rt.block_on(drop_database(&admin, &name))
            {
                tracing::warn!(error = %e, database = %name, "could not drop scratch database");
            }
        });
        let _ = worker.join();
    }
}

fn event_from_row(r: &Row) -> Result<EventEnvelope, StoreError> {
    let get = || -> Result<EventEnvelope, tokio_postgres::Error> {
        let prev: &[u8] = r.try_get(14)?;
        let hash: &[u8] = r.try_get(15)?;
        Ok(EventEnvelope {
            tenant_id: TenantId(r.try_get(0)?),
            seq: r.try_get(1)?,
            event_id: r.try_get(2)?,
            stream_type: r.try_get(3)?,
            stream_id: r.try_get(4)?,
            version: r.try_get(5)?,
            event_type: r.try_get(6)?,
            schema_version: r.try_get(7)?,
            payload: r.try_get(8)?,
            actor_id: ActorId(r.try_get(9)?),
            correlation_id: r.try_get(10)?,
            causation_id: r.try_get(11)?,
            occurred_at: r.try_get(12)?,
            recorded_at: r.try_get(13)?,
            // A malformed hash is kept visible (as zero) so that verify flags it.
            prev_hash: Hash32::from_slice(prev).unwrap_or_default(),
            hash: Hash32::from_slice(hash).unwrap_or_default(),
        })
    };
    get().map_err(db_err)
}

fn resource_from_row(resource_type: &str, r: &Row) -> Result<ResourceRow, StoreError> {
    let get = || -> Result<ResourceRow, tokio_postgres::Error> {
        Ok(ResourceRow {
            resource_type: resource_type.to_owned(),
            id: r.try_get(0)?,
            version: r.try_get(1)?,
            doc: r.try_get(2)?,
            created_at: r.try_get(3)?,
            updated_at: r.try_get(4)?,
        })
    };
    get().map_err(db_err)
}

fn idempotency_from_row(r: &Row) -> Result<IdempotencyRecord, StoreError> {
    let status: i32 = r.try_get(2).map_err(db_err)?;
    let status = u16::try_from(status)
        .map_err(|_| StoreError::Corrupt(format!("idempotency status {status} out of range")))?;
    let get = || -> Result<IdempotencyRecord, tokio_postgres::Error> {
        Ok(IdempotencyRecord {
            key: r.try_get(0)?,
            request_hash: r.try_get(1)?,
            status,
            body: r.try_get(3)?,
            resource_version: r.try_get(4)?,
            created_at: r.try_get(5)?,
            expires_at: r.try_get(6)?,
        })
    };
    get().map_err(db_err)
}

pub struct PostgresStore {
    queue: Arc<CommitQueue>,
    /// The data-access log's own queue and writer connection.
    access: crate::access::AccessQueue,
    pool: Pool,
    /// The `salus.tenants` each pooled connection has set for its session, by connection
    /// (see [`connection_key`]): a read for the same tenants skips setting it again.
    tenants_set: Arc<Mutex<HashMap<usize, String>>>,
}

/// A pooled connection's identity while it lives: the address of its statement cache,
/// which is its own. An address freed and reused by a new connection is forgotten when
/// that connection is made (the pool's post-create hook), so an entry always describes
/// the connection now at that address.
fn connection_key(client: &deadpool_postgres::ClientWrapper) -> usize {
    Arc::as_ptr(&client.statement_cache) as usize
}

impl PostgresStore {
    /// Connect, run migrations (as the connecting user), ensure the application role
    /// exists, start the writer task. `url` like `postgres://postgres@127.0.0.1:5432/dbname`.
    pub async fn open(
        url: &str,
        observer: Option<Arc<dyn CommitObserver>>,
    ) -> Result<Self, StoreError> {
        migrate(url).await?;
        let manager = Manager::from_config(
            parse_url(url)?,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let tenants_set: Arc<Mutex<HashMap<usize, String>>> = Arc::default();
        let forget = tenants_set.clone();
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .post_create(Hook::async_fn(move |client, _| {
                if let Ok(mut set) = forget.lock() {
                    set.remove(&connection_key(client));
                }
                Box::pin(async move {
                    client
                        .batch_execute(&format!("SET ROLE {APP_ROLE}"))
                        .await
                        .map_err(HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        // Fail now, not at the first read, if the role cannot be taken.
        drop(pool.get().await.map_err(pool_err)?);
        // The writer gets a thread and a runtime of its own, so that its round trips never
        // wait in the run queue behind request handlers.
        let (queue, rx, done) = CommitQueue::new();
        let (opened_tx, opened) = tokio::sync::oneshot::channel();
        let writer_url = url.to_owned();
        std::thread::Builder::new()
            .name("salus-pg-writer".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = opened_tx.send(Err(StoreError::Unavailable(e.to_string())));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match writer::Writer::open(&writer_url, observer).await {
                        Ok(writer) => {
                            let _ = opened_tx.send(Ok(()));
                            writer.run(rx).await;
                            let _ = done.send(());
                        }
                        Err(e) => {
                            let _ = opened_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        opened
            .await
            .map_err(|_| StoreError::Unavailable("the writer thread stopped".into()))??;
        let access = access::start(url).await?;
        Ok(Self {
            queue,
            access,
            pool,
            tenants_set,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }

    /// Run `sql` with `salus.tenants` set to `tenants`: both statements go out in one
    /// pipelined round trip on the same connection, the setting first.
    async fn scoped(
        &self,
        tenants: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.scoped_on(tenants, sql, params).await?.map_err(db_err)
    }

    /// [`Self::scoped`], answering the database's own error (for callers that tell its
    /// codes apart). Every statement that sets `salus.tenants` on a pooled connection goes
    /// through here, so what [`Self::tenants_set`] remembers is what the session has.
    async fn scoped_on(
        &self,
        tenants: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Result<Vec<Row>, tokio_postgres::Error>, StoreError> {
        let client = self.client().await?;
        let key = connection_key(&client);
        let already = self
            .tenants_set
            .lock()
            .ok()
            .and_then(|set| set.get(&key).map(|t| t == tenants))
            .unwrap_or(false);
        if already {
            let stmt = match client.prepare_cached(sql).await {
                Ok(stmt) => stmt,
                Err(e) => return Ok(Err(e)),
            };
            return Ok(client.query(&stmt, params).await);
        }
        let result = scoped_query(&client, tenants, sql, params).await;
        if let Ok(mut set) = self.tenants_set.lock() {
            match &result {
                Ok(_) => {
                    set.insert(key, tenants.to_owned());
                }
                // Whether the setting took is unknown: set it again next time.
                Err(_) => {
                    set.remove(&key);
                }
            }
        }
        Ok(result)
    }

    async fn tenant_scoped(
        &self,
        tenant: TenantId,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.scoped(&tenant_list(&[tenant]), sql, params).await
    }

    /// Every known tenant, in chunks, as `salus.tenants` values.
    async fn tenant_chunks(&self) -> Result<Vec<String>, StoreError> {
        let ids: Vec<TenantId> = self.tenants().await?.into_iter().map(|t| t.id).collect();
        Ok(ids.chunks(TENANT_CHUNK).map(tenant_list).collect())
    }
}

async fn scoped_query(
    client: &deadpool_postgres::Client,
    tenants: &str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let (set, stmt) = tokio::try_join!(
        client.prepare_cached(SET_TENANTS),
        client.prepare_cached(sql)
    )?;
    let set_params: [&(dyn ToSql + Sync); 1] = [&tenants];
    let (_, rows) = tokio::try_join!(
        biased;
        client.execute(&set, &set_params),
        client.query(&stmt, params),
    )?;
    Ok(rows)
}

fn one<T>(
    rows: Vec<Row>,
    f: impl FnOnce(&Row) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    rows.first().map(f).transpose()
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn commit(&self, ctx: &TenantContext, write: Write) -> Result<Committed, StoreError> {
        self.queue.submit(ctx, write).await
    }

    async fn commit_all(
        &self,
        ctx: &TenantContext,
        writes: Vec<Write>,
    ) -> Result<Vec<Committed>, StoreError> {
        self.queue.submit_all(ctx, writes).await
    }

    async fn resource(
        &self,
        ctx: &TenantContext,
        resource_type: &str,
        id: Uuid,
    ) -> Result<Option<ResourceRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM resources r WHERE r.tenant_id = $1 AND r.resource_type = $2 AND r.id = $3",
            sql::RESOURCE_COLUMNS
        );
        let rows = self
            .tenant_scoped(ctx.tenant, &sql, &[&ctx.tenant.0, &resource_type, &id])
            .await?;
        one(rows, |r| resource_from_row(resource_type, r))
    }

    async fn resource_text(
        &self,
        ctx: &TenantContext,
        resource_type: &str,
        id: Uuid,
    ) -> Result<Option<ResourceText>, StoreError> {
        let rows = self
            .tenant_scoped(
                ctx.tenant,
                "SELECT version, doc::text, created_at, updated_at FROM resources WHERE tenant_id = $1 AND resource_type = $2 AND id = $3",
                &[&ctx.tenant.0, &resource_type, &id],
            )
            .await?;
        one(rows, |r| {
            let get = || -> Result<ResourceText, tokio_postgres::Error> {
                Ok(ResourceText {
                    id,
                    version: r.try_get(0)?,
                    doc: r.try_get(1)?,
                    created_at: r.try_get(2)?,
                    updated_at: r.try_get(3)?,
                })
            };
            get().map_err(db_err)
        })
    }

    async fn stream(
        &self,
        ctx: &TenantContext,
        stream_id: Uuid,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let rows = match until {
            Some(until) => {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND tenant_id = $2 AND recorded_at <= $3 ORDER BY version"
                );
                self.tenant_scoped(ctx.tenant, &sql, &[&stream_id, &ctx.tenant.0, &until])
                    .await?
            }
            None => {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND tenant_id = $2 ORDER BY version"
                );
                self.tenant_scoped(ctx.tenant, &sql, &[&stream_id, &ctx.tenant.0])
                    .await?
            }
        };
        rows.iter().map(event_from_row).collect()
    }

    async fn search(
        &self,
        ctx: &TenantContext,
        query: &SearchQuery,
    ) -> Result<Vec<ResourceRow>, StoreError> {
        let (text, args) = sql::search(Dialect::Postgres, ctx.tenant.0, query);
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(pg_arg).collect();
        let rows = self.tenant_scoped(ctx.tenant, &text, &params).await?;
        rows.iter()
            .map(|r| resource_from_row(&query.resource_type, r))
            .collect()
    }

    async fn count(&self, ctx: &TenantContext, query: &SearchQuery) -> Result<u64, StoreError> {
        let (text, args) = sql::count(Dialect::Postgres, ctx.tenant.0, query);
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(pg_arg).collect();
        let rows = self.tenant_scoped(ctx.tenant, &text, &params).await?;
        let n: i64 = rows.first().map(|r| r.get(0)).unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn search_text(
        &self,
        ctx: &TenantContext,
        resource_type: &str,
        query: &str,
        limit: u32,
    ) -> Result<Vec<TextHit>, StoreError> {
        let folded = salus_kernel::text::fold(query);
        if folded.split_whitespace().next().is_none() {
            return Ok(Vec::new());
        }
        let limit = i64::from(limit);
        let rows = self
            .tenant_scoped(
                ctx.tenant,
                &format!(
                    "SELECT {}, ts_rank(t.tsv, q)::float8 AS rank FROM text_index t
                     JOIN resources r ON r.id = t.resource_id AND r.tenant_id = t.tenant_id AND r.resource_type = t.resource_type,
                     plainto_tsquery('simple', $1) q
                     WHERE t.tsv @@ q AND t.tenant_id = $2 AND t.resource_type = $3
                     ORDER BY rank DESC, r.id LIMIT $4",
                    sql::RESOURCE_COLUMNS
                ),
                &[&folded, &ctx.tenant.0, &resource_type, &limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let rank: f64 = r.try_get(5).map_err(db_err)?;
                Ok(TextHit {
                    row: resource_from_row(resource_type, r)?,
                    rank,
                })
            })
            .collect()
    }

    async fn unique_owner(
        &self,
        ctx: &TenantContext,
        scope: &str,
        value: &str,
    ) -> Result<Option<Uuid>, StoreError> {
        let rows = self
            .tenant_scoped(
                ctx.tenant,
                "SELECT stream_id FROM unique_keys WHERE tenant_id = $1 AND scope = $2 AND value = $3",
                &[&ctx.tenant.0, &scope, &value],
            )
            .await?;
        one(rows, |r| r.try_get(0).map_err(db_err))
    }

    async fn idempotency(
        &self,
        ctx: &TenantContext,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let rows = self
            .tenant_scoped(
                ctx.tenant,
                "SELECT key, request_hash, status, body, resource_version, created_at, expires_at FROM idempotency WHERE tenant_id = $1 AND key = $2",
                &[&ctx.tenant.0, &key],
            )
            .await?;
        one(rows, idempotency_from_row)
    }

    async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut purged = 0;
        for tenants in self.tenant_chunks().await? {
            let rows = self
                .scoped(
                    &tenants,
                    "WITH gone AS (DELETE FROM idempotency WHERE expires_at < $1 RETURNING 1) SELECT count(*) FROM gone",
                    &[&now],
                )
                .await?;
            let n: i64 = match rows.first() {
                Some(r) => r.try_get(0).map_err(db_err)?,
                None => 0,
            };
            purged += u64::try_from(n).unwrap_or(0);
        }
        Ok(purged)
    }

    async fn create_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        // Through `scoped_on`, like every read: the connection's session now has the new
        // tenant set, and the pool must remember that, or the next read on this connection
        // for the tenant it had before would skip setting it and see nothing.
        self.scoped_on(
            &tenant_list(&[tenant.id]),
            "INSERT INTO tenants (tenant_id, name, created_at) VALUES ($1, $2, $3)",
            &[&tenant.id.0, &tenant.name, &tenant.created_at],
        )
        .await?
        .map(|_| ())
        .map_err(|e| match e.code() {
            Some(c) if *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => {
                StoreError::Duplicate {
                    scope: "tenant".into(),
                    value: tenant.name.clone(),
                    owner: tenant.id.0,
                }
            }
            _ => db_err(e),
        })
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(
                "SELECT tenant_id, name, created_at FROM tenants ORDER BY created_at, name",
            )
            .await
            .map_err(db_err)?;
        let rows = client.query(&st, &[]).await.map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(Tenant {
                    id: TenantId(r.try_get(0)?),
                    name: r.try_get(1)?,
                    created_at: r.try_get(2)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(db_err)
    }

    async fn audit_events(
        &self,
        ctx: &TenantContext,
        query: &crate::audit::EventQuery,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let (sql, args) = audit::statement(ctx.tenant, query);
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(audit::Param::as_sql).collect();
        let rows = self.tenant_scoped(ctx.tenant, &sql, &params).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn events_after(
        &self,
        tenant: TenantId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        );
        let rows = self
            .tenant_scoped(tenant, &sql, &[&tenant.0, &after, &limit])
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn event_hashes_after(
        &self,
        tenant: TenantId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Hash32)>, StoreError> {
        let rows = self
            .tenant_scoped(
                tenant,
                "SELECT seq, hash FROM events WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&tenant.0, &after, &limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let seq: i64 = r.try_get(0).map_err(db_err)?;
                let hash: &[u8] = r.try_get(1).map_err(db_err)?;
                let hash = Hash32::from_slice(hash).ok_or_else(|| {
                    StoreError::Corrupt(format!("event {seq} has a malformed hash"))
                })?;
                Ok((seq, hash))
            })
            .collect()
    }

    async fn event_by_id(&self, event_id: Uuid) -> Result<Option<EventEnvelope>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1");
        for tenants in self.tenant_chunks().await? {
            let rows = self.scoped(&tenants, &sql, &[&event_id]).await?;
            if let Some(e) = one(rows, event_from_row)? {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    async fn ledger_head(&self, tenant: TenantId) -> Result<i64, StoreError> {
        let rows = self
            .tenant_scoped(
                tenant,
                "SELECT seq FROM ledger_heads WHERE tenant_id = $1",
                &[&tenant.0],
            )
            .await?;
        Ok(one(rows, |r| r.try_get(0).map_err(db_err))?.unwrap_or(0))
    }

    async fn stream_heads(&self, tenant: TenantId) -> Result<Vec<StreamHead>, StoreError> {
        let rows = self
            .tenant_scoped(
                tenant,
                "SELECT stream_id, stream_type, version, hash FROM streams WHERE tenant_id = $1",
                &[&tenant.0],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let h: &[u8] = r.try_get(3)?;
                Ok(StreamHead {
                    stream_id: r.try_get(0)?,
                    stream_type: r.try_get(1)?,
                    version: r.try_get(2)?,
                    hash: Hash32::from_slice(h).unwrap_or_default(),
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(db_err)
    }

    async fn tree_heads(&self, tenant: TenantId) -> Result<Vec<TreeHead>, StoreError> {
        let rows = self
            .tenant_scoped(
                tenant,
                "SELECT tree_size, root_hash, signed_at, key_id, signature FROM tree_heads WHERE tenant_id = $1 ORDER BY tree_size",
                &[&tenant.0],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let root: &[u8] = r.try_get(1)?;
                Ok(TreeHead {
                    tenant_id: tenant,
                    tree_size: r.try_get(0)?,
                    root: Hash32::from_slice(root).unwrap_or_default(),
                    signed_at: r.try_get(2)?,
                    key_id: r.try_get(3)?,
                    signature: r.try_get(4)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(db_err)
    }

    async fn put_tree_head(&self, head: &TreeHead) -> Result<(), StoreError> {
        self.tenant_scoped(
            head.tenant_id,
            "INSERT INTO tree_heads (tenant_id, tree_size, root_hash, signed_at, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &head.tenant_id.0,
                &head.tree_size,
                &&head.root.0[..],
                &head.signed_at,
                &head.key_id,
                &head.signature,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn log_access(
        &self,
        ctx: &TenantContext,
        entries: Vec<crate::access::AccessEntry>,
    ) -> Result<(), StoreError> {
        self.access.log(ctx, entries).await
    }

    async fn access_log(
        &self,
        ctx: &TenantContext,
        q: &crate::access::AccessQuery,
    ) -> Result<Vec<crate::access::AccessRecord>, StoreError> {
        let mut sql = format!(
            "SELECT {} FROM access_log WHERE tenant_id = $1",
            access::COLUMNS
        );
        let action = q.action.map(|a| a.as_str());
        let actor = q.actor.map(|a| a.0);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ctx.tenant.0];
        // Each filter present takes the next parameter number.
        fn and<'a>(
            sql: &mut String,
            params: &mut Vec<&'a (dyn ToSql + Sync)>,
            text: &str,
            p: &'a (dyn ToSql + Sync),
        ) {
            params.push(p);
            sql.push_str(&format!(" AND {text} ${}", params.len()));
        }
        if let Some(p) = &q.patient {
            and(&mut sql, &mut params, "patient_id =", p);
        }
        if let Some(a) = &actor {
            and(&mut sql, &mut params, "actor_id =", a);
        }
        if let Some(t) = &q.from {
            and(&mut sql, &mut params, "recorded_at >=", t);
        }
        if let Some(t) = &q.to {
            and(&mut sql, &mut params, "recorded_at <", t);
        }
        if let Some(a) = &action {
            and(&mut sql, &mut params, "action =", a);
        }
        if let Some(b) = &q.break_glass {
            and(&mut sql, &mut params, "break_glass =", b);
        }
        if let Some(after) = &q.after {
            and(&mut sql, &mut params, "seq >", after);
        }
        sql.push_str(&format!(" ORDER BY seq LIMIT {}", q.limit));
        let rows = self.tenant_scoped(ctx.tenant, &sql, &params).await?;
        rows.iter().map(access::record_from_row).collect()
    }

    async fn access_entries_after(
        &self,
        tenant: TenantId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<crate::access::AccessRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM access_log WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT {limit}",
            access::COLUMNS
        );
        let rows = self
            .tenant_scoped(tenant, &sql, &[&tenant.0, &after])
            .await?;
        rows.iter().map(access::record_from_row).collect()
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let want = schema_version();
        let client = self.client().await?;
        let st = client
            .prepare_cached("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .await
            .map_err(db_err)?;
        let row = client.query_one(&st, &[]).await.map_err(db_err)?;
        let have: i64 = row.try_get(0).map_err(db_err)?;
        if have == want {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "schema is at version {have}, this build needs {want}"
            )))
        }
    }

    async fn shutdown(&self) {
        self.queue.close().await;
        self.access.shutdown().await;
    }
}

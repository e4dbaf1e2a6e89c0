//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! One writer thread owns the write connection and runs the group-commit loop
//! ([`writer`]); reads use a small pool of read-only connections on the blocking thread
//! pool.

mod access;
mod audit;
mod raw;
mod writer;

use crate::Store;
use crate::commit::{CommitObserver, CommitQueue};
use crate::model::*;
use crate::sql::{self, Arg, Dialect};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use salus_kernel::{ActorId, EventEnvelope, Hash32, TenantContext, TenantId};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Migrations in order; each runs once, in its own transaction.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("0001_init.sql")),
    (2, "text_index", include_str!("0002_text_index.sql")),
    (3, "search_rows", include_str!("0003_search_rows.sql")),
];

pub fn schema_version() -> i64 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn to_micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(v).unwrap_or_default()
}

fn open_conn(path: &Path, read_only: bool) -> Result<Connection, StoreError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(db_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(db_err)?;
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(db_err)?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
    }
    // FULL: a commit is on disk (WAL fsync) before it is acknowledged.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_err)?;
    conn.pragma_update(None, "cache_size", -16000)
        .map_err(db_err)?;
    // Temporary tables and journals in memory, never in files.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Apply pending migrations to the file at `path` (created if missing). Returns the
/// versions applied now.
pub fn migrate(path: &Path) -> Result<Vec<i64>, StoreError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    }
    let mut conn = open_conn(path, false)?;
    run_migrations(&mut conn, i64::MAX)
}

/// Apply the pending migrations up to version `upto`.
fn run_migrations(conn: &mut Connection, upto: i64) -> Result<Vec<i64>, StoreError> {
    apply_migrations(conn, MIGRATIONS, upto)
}

/// Apply the pending migrations of `list` up to version `upto`.
fn apply_migrations(
    conn: &mut Connection,
    list: &[(i64, &str, &str)],
    upto: i64,
) -> Result<Vec<i64>, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .map_err(db_err)?;
    let mut applied = Vec::new();
    for (version, name, sql_text) in list.iter().filter(|m| m.0 <= upto) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let done: Option<i64> = tx
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        if done.is_none() {
            tx.execute_batch(sql_text).map_err(db_err)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                params![version, name, Utc::now().timestamp_micros()],
            )
            .map_err(db_err)?;
            applied.push(*version);
        }
        tx.commit().map_err(db_err)?;
    }
    Ok(applied)
}

struct ReadPool {
    path: PathBuf,
    /// A database attached to every connection, as `(file, schema name)`.
    attach: Option<(PathBuf, &'static str)>,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn take(&self) -> Result<Connection, StoreError> {
        let conn = self.idle.lock().ok().and_then(|mut v| v.pop());
        match conn {
            Some(c) => Ok(c),
            None => {
                let conn = open_conn(&self.path, true)?;
                if let Some((file, name)) = &self.attach {
                    conn.execute(
                        &format!("ATTACH DATABASE ?1 AS {name}"),
                        [file.to_string_lossy()],
                    )
                    .map_err(db_err)?;
                }
                Ok(conn)
            }
        }
    }

    fn give(&self, conn: Connection) {
        if let Ok(mut v) = self.idle.lock()
            && v.len() < 32
        {
            v.push(conn);
        }
    }
}

pub struct SqliteStore {
    queue: Arc<CommitQueue>,
    /// The data-access log: its own file, queue and writer thread.
    access: access::AccessLog,
    reads: Arc<ReadPool>,
    /// Serialises system-scope writes (tenants, tree heads) with the writer via SQLite's
    /// own locking; they are rare.
    path: PathBuf,
    /// Tells the checkpointer thread to stop.
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// WAL frames after which the writer itself finishes a checkpoint (between batches, after
/// answering), so that the next transaction starts the WAL file over (~64 MiB; at 16 MiB a
/// FHIR Bundle's commit, thousands of frames, had the writer checkpoint every other commit).
const WAL_RESTART_FRAMES: i32 = 16384;
/// A WAL file left larger than this by a burst is cut back to it when the log restarts.
const WAL_SIZE_LIMIT: i64 = 96 * 1024 * 1024;

/// WAL frames the writer lets accumulate before it asks the checkpointer for a pass (~4 MiB).
const CHECKPOINT_STEP_FRAMES: i32 = 1024;

/// Copy committed WAL frames into the database file off the commit path, so that the
/// copying (and the fsync of the main file) never delays an acknowledgement; PASSIVE never
/// blocks the writer or readers.
///
/// The writer asks for a pass (`nudges`) every [`CHECKPOINT_STEP_FRAMES`] frames, and there
/// is one every 100 ms anyway; each pass copies what has been committed so far, on the
/// other core. Under sustained writes a log that is never started over would grow without
/// end, and every write would land on fresh file space, which costs the writer far more
/// than the write itself (the file system zeroes each new page). The writer therefore also
/// checkpoints when the log passes [`WAL_RESTART_FRAMES`] (see [`writer::run`]): with no
/// other writer that checkpoint completes (quickly, as this thread has copied nearly
/// everything already), and the next transaction rewrites the log from its start, in pages
/// the file already has.
fn checkpointer(
    path: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
    nudges: std::sync::mpsc::Receiver<()>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let conn = match open_conn(&path, false) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "checkpointer cannot open the database");
            return;
        }
    };
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        match nudges.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
    // A last full copy so that a clean stop leaves a small WAL.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

/// Start the checkpointer thread of the database at `path`; the sender nudges it.
fn start_checkpointer(
    path: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
    name: &str,
) -> Result<std::sync::mpsc::SyncSender<()>, StoreError> {
    let (nudge, nudges) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || checkpointer(path, stop, nudges))
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    Ok(nudge)
}

/// A writer's side of checkpointing: it turns SQLite's automatic checkpoints off on the
/// write connection, watches the WAL grow, nudges the checkpointer every
/// [`CHECKPOINT_STEP_FRAMES`] and restarts the log past [`WAL_RESTART_FRAMES`] (see
/// [`checkpointer`]).
pub(super) struct WalWatch {
    /// Frames in the WAL after the last commit, as SQLite reports them.
    frames: Arc<std::sync::atomic::AtomicI32>,
    /// Frames when the checkpointer was last nudged.
    nudged_at: i32,
    checkpointer: std::sync::mpsc::SyncSender<()>,
}

impl WalWatch {
    pub(super) fn install(
        conn: &mut Connection,
        checkpointer: std::sync::mpsc::SyncSender<()>,
    ) -> Result<Self, StoreError> {
        // Before the WAL hook below: the pragma installs a hook of its own.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(db_err)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(db_err)?;
        let frames = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let seen = frames.clone();
        if let Err(e) = conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, n| {
            seen.store(n, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        })) {
            tracing::warn!(error = %e, "cannot watch the WAL size; relying on the checkpointer");
        }
        Ok(Self {
            frames,
            nudged_at: 0,
            checkpointer,
        })
    }

    /// After a commit has been answered.
    pub(super) fn after_commit(&mut self, conn: &Connection) {
        use std::sync::atomic::Ordering;
        let frames = self.frames.load(Ordering::Relaxed);
        if frames < self.nudged_at {
            // The log started over.
            self.nudged_at = 0;
        }
        if frames - self.nudged_at >= CHECKPOINT_STEP_FRAMES {
            // Full: a pass is already due, which copies these frames too.
            let _ = self.checkpointer.try_send(());
            self.nudged_at = frames;
        }
        if frames >= WAL_RESTART_FRAMES {
            // Busy (the checkpointer is at it) or not: either way the next pass finishes it.
            match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            }) {
                Ok((log, done)) if log == done => self.frames.store(0, Ordering::Relaxed),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
            }
        }
    }
}

impl SqliteStore {
    /// Open (creating and migrating if needed) the database at `path` and start its writer.
    pub async fn open(
        path: &Path,
        observer: Option<Arc<dyn CommitObserver>>,
    ) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let p = path.clone();
        let mut conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            migrate(&p)?;
            open_conn(&p, false)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        let (queue, rx, done) = CommitQueue::new();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let nudge = start_checkpointer(path.clone(), stop.clone(), "salus-sqlite-checkpoint")?;
        let wal = WalWatch::install(&mut conn, nudge)?;
        std::thread::Builder::new()
            .name("salus-sqlite-writer".into())
            .spawn(move || {
                writer::run(conn, rx, observer, wal);
                let _ = done.send(());
            })
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let access = access::AccessLog::open(&path, stop.clone()).await?;
        Ok(Self {
            stop,
            access,
            queue,
            reads: Arc::new(ReadPool {
                path: path.clone(),
                attach: None,
                idle: Mutex::new(Vec::new()),
            }),
            path,
        })
    }

    /// A point read on the calling thread: a primary-key lookup takes microseconds, less
    /// than handing it to another thread would.
    fn read_now<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection) -> Result<R, StoreError>,
    {
        let conn = self.reads.take()?;
        let out = f(&conn);
        self.reads.give(conn);
        out
    }

    /// A read that may scan (search, streams, ledger pages), on the blocking pool.
    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let pool = self.reads.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let out = f(&conn);
            pool.give(conn);
            out
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    /// A short write outside the commit queue (system-scope rows only).
    async fn side_write<F>(&self, f: F) -> Result<(), StoreError>
    where
        F: FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
    {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = open_conn(&path, false)?;
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }
}

const EVENT_COLUMNS: &str = "tenant_id, seq, event_id, stream_type, stream_id, version, event_type, schema_version, payload, actor_id, correlation_id, causation_id, occurred_at, recorded_at, prev_hash, hash";

fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventEnvelope> {
    let payload: String = r.get(8)?;
    let prev: Vec<u8> = r.get(14)?;
    let hash: Vec<u8> = r.get(15)?;
    Ok(EventEnvelope {
        tenant_id: TenantId(r.get(0)?),
        seq: r.get(1)?,
        event_id: r.get(2)?,
        stream_type: r.get(3)?,
        stream_id: r.get(4)?,
        version: r.get(5)?,
        event_type: r.get(6)?,
        schema_version: r.get(7)?,
        // A payload that is not JSON is kept visible (as a string) so verify can flag it.
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        actor_id: ActorId(r.get(9)?),
        correlation_id: r.get(10)?,
        causation_id: r.get(11)?,
        occurred_at: from_micros(r.get(12)?),
        recorded_at: from_micros(r.get(13)?),
        prev_hash: Hash32::from_slice(&prev).unwrap_or_default(),
        hash: Hash32::from_slice(&hash).unwrap_or_default(),
    })
}

fn resource_from_row(resource_type: &str, r: &rusqlite::Row<'_>) -> rusqlite::Result<ResourceRow> {
    let doc: String = r.get(2)?;
    Ok(ResourceRow {
        resource_type: resource_type.to_owned(),
        id: r.get(0)?,
        version: r.get(1)?,
        doc: serde_json::from_str(&doc).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
        })?,
        created_at: from_micros(r.get(3)?),
        updated_at: from_micros(r.get(4)?),
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
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
        let t = ctx.tenant.0;
        let rt = resource_type.to_owned();
        self.read_now(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {} FROM resources r WHERE r.tenant_id = ?1 AND r.resource_type = ?2 AND r.id = ?3",
                    sql::RESOURCE_COLUMNS
                ))
                .map_err(db_err)?;
            st.query_row(params![t, rt, id], |r| resource_from_row(&rt, r))
                .optional()
                .map_err(db_err)
        })
    }

    async fn resource_text(
        &self,
        ctx: &TenantContext,
        resource_type: &str,
        id: Uuid,
    ) -> Result<Option<ResourceText>, StoreError> {
        let t = ctx.tenant.0;
        self.read_now(move |c| {
            c.prepare_cached(
                "SELECT version, doc, created_at, updated_at FROM resources WHERE tenant_id = ?1 AND resource_type = ?2 AND id = ?3",
            )
            .map_err(db_err)?
            .query_row(params![t, resource_type, id], |r| {
                Ok(ResourceText {
                    id,
                    version: r.get(0)?,
                    doc: r.get(1)?,
                    created_at: from_micros(r.get(2)?),
                    updated_at: from_micros(r.get(3)?),
                })
            })
            .optional()
            .map_err(db_err)
        })
    }

    async fn stream(
        &self,
        ctx: &TenantContext,
        stream_id: Uuid,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let t = ctx.tenant.0;
        let until = until.map(|u| to_micros(&u)).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ?1 AND tenant_id = ?2 AND recorded_at <= ?3 ORDER BY version"
                ))
                .map_err(db_err)?;
            let rows = st
                .query_map(params![stream_id, t, until], event_from_row)
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }

    async fn search(
        &self,
        ctx: &TenantContext,
        query: &SearchQuery,
    ) -> Result<Vec<ResourceRow>, StoreError> {
        let (text, args) = sql::search(Dialect::Sqlite, ctx.tenant.0, query);
        let rt = query.resource_type.clone();
        self.read(move |c| {
            let mut st = c.prepare_cached(&text).map_err(db_err)?;
            let bound: Vec<rusqlite::types::Value> = args.into_iter().map(sqlite_arg).collect();
            let rows = st
                .query_map(rusqlite::params_from_iter(bound), |r| {
                    resource_from_row(&rt, r)
                })
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }

    async fn count(&self, ctx: &TenantContext, query: &SearchQuery) -> Result<u64, StoreError> {
        let (text, args) = sql::count(Dialect::Sqlite, ctx.tenant.0, query);
        self.read(move |c| {
            let mut st = c.prepare_cached(&text).map_err(db_err)?;
            let bound: Vec<rusqlite::types::Value> = args.into_iter().map(sqlite_arg).collect();
            let n: i64 = st
                .query_row(rusqlite::params_from_iter(bound), |r| r.get(0))
                .map_err(db_err)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn search_text(
        &self,
        ctx: &TenantContext,
        resource_type: &str,
        query: &str,
        limit: u32,
    ) -> Result<Vec<TextHit>, StoreError> {
        // Every word as a quoted FTS5 string: an implicit AND, no query syntax from users.
        let words: Vec<String> = salus_kernel::text::fold(query)
            .split_whitespace()
            .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
            .collect();
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let fts = words.join(" ");
        let t = ctx.tenant.0;
        let rt = resource_type.to_owned();
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {}, bm25(text_index) AS rank FROM text_index JOIN resources r ON r.id = text_index.resource_id AND r.tenant_id = text_index.tenant_id AND r.resource_type = text_index.resource_type
                     WHERE text_index MATCH ?1 AND text_index.tenant_id = ?2 AND text_index.resource_type = ?3 ORDER BY rank, r.id LIMIT ?4",
                    sql::RESOURCE_COLUMNS
                ))
                .map_err(db_err)?;
            let rows = st
                .query_map(params![fts, t, rt, i64::from(limit)], |r| {
                    let rank: f64 = r.get(5)?;
                    Ok(TextHit { row: resource_from_row(&rt, r)?, rank: -rank })
                })
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }

    async fn unique_owner(
        &self,
        ctx: &TenantContext,
        scope: &str,
        value: &str,
    ) -> Result<Option<Uuid>, StoreError> {
        let t = ctx.tenant.0;
        let (scope, value) = (scope.to_owned(), value.to_owned());
        self.read_now(move |c| {
            c.prepare_cached("SELECT stream_id FROM unique_keys WHERE tenant_id = ?1 AND scope = ?2 AND value = ?3")
                .map_err(db_err)?
                .query_row(params![t, scope, value], |r| r.get(0))
                .optional()
                .map_err(db_err)
        })
    }

    async fn idempotency(
        &self,
        ctx: &TenantContext,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let t = ctx.tenant.0;
        let key = key.to_owned();
        self.read_now(move |c| {
            c.prepare_cached(
                "SELECT key, request_hash, status, body, resource_version, created_at, expires_at FROM idempotency WHERE tenant_id = ?1 AND key = ?2",
            )
            .map_err(db_err)?
            .query_row(params![t, key], |r| {
                let body: String = r.get(3)?;
                Ok(IdempotencyRecord {
                    key: r.get(0)?,
                    request_hash: r.get(1)?,
                    status: r.get(2)?,
                    body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
                    resource_version: r.get(4)?,
                    created_at: from_micros(r.get(5)?),
                    expires_at: from_micros(r.get(6)?),
                })
            })
            .optional()
            .map_err(db_err)
        })
    }

    async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let now = to_micros(&now);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = open_conn(&path, false)?;
            conn.execute("DELETE FROM idempotency WHERE expires_at < ?1", [now])
                .map(|n| n as u64)
                .map_err(db_err)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    async fn create_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        let t = tenant.clone();
        self.side_write(move |c| {
            c.execute(
                "INSERT INTO tenants (tenant_id, name, created_at) VALUES (?1, ?2, ?3)",
                params![t.id.0, t.name, to_micros(&t.created_at)],
            )
            .map(|_| ())
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    StoreError::Duplicate {
                        scope: "tenant".into(),
                        value: t.name.clone(),
                        owner: t.id.0,
                    }
                }
                other => db_err(other),
            })
        })
        .await
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT tenant_id, name, created_at FROM tenants ORDER BY created_at, name",
                )
                .map_err(db_err)?;
            let rows = st
                .query_map([], |r| {
                    Ok(Tenant {
                        id: TenantId(r.get(0)?),
                        name: r.get(1)?,
                        created_at: from_micros(r.get(2)?),
                    })
                })
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }

    async fn audit_events(
        &self,
        ctx: &TenantContext,
        query: &crate::audit::EventQuery,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let (tenant, query) = (ctx.tenant, query.clone());
        self.read(move |c| audit::audit_events(c, tenant, &query))
            .await
    }

    async fn events_after(
        &self,
        tenant: TenantId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                ))
                .map_err(db_err)?;
            let rows = st
                .query_map(params![tenant.0, after, limit], event_from_row)
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }

    async fn event_hashes_after(
        &self,
        tenant: TenantId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Hash32)>, StoreError> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT seq, hash FROM events WHERE tenant_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )
                .map_err(db_err)?;
            let rows = st
                .query_map(params![tenant.0, after, limit], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(db_err)?;
            rows.map(|row| {
                let (seq, hash) = row.map_err(db_err)?;
                let hash = Hash32::from_slice(&hash)
                    .ok_or_else(|| StoreError::Corrupt(format!("event {seq} has a malformed hash")))?;
                Ok((seq, hash))
            })
            .collect()
        })
        .await
    }

    async fn event_by_id(&self, event_id: Uuid) -> Result<Option<EventEnvelope>, StoreError> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?1"
            ))
            .map_err(db_err)?
            .query_row([event_id], event_from_row)
            .optional()
            .map_err(db_err)
        })
        .await
    }

    async fn ledger_head(&self, tenant: TenantId) -> Result<i64, StoreError> {
        self.read_now(move |c| {
            let seq: Option<i64> = c
                .prepare_cached("SELECT seq FROM ledger_heads WHERE tenant_id = ?1")
                .map_err(db_err)?
                .query_row([tenant.0], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            Ok(seq.unwrap_or(0))
        })
    }

    async fn stream_heads(&self, tenant: TenantId) -> Result<Vec<StreamHead>, StoreError> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached("SELECT stream_id, stream_type, version, hash FROM streams WHERE tenant_id = ?1")
                .map_err(db_err)?;
            let rows = st
                .query_map([tenant.0], |r| {
                    let h: Vec<u8> = r.get(3)?;
                    Ok(StreamHead {
                        stream_id: r.get(0)?,
                        stream_type: r.get(1)?,
                        version: r.get(2)?,
                        hash: Hash32::from_slice(&h).unwrap_or_default(),
                    })
                })
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }

    async fn tree_heads(&self, tenant: TenantId) -> Result<Vec<TreeHead>, StoreError> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached("SELECT tree_size, root_hash, signed_at, key_id, signature FROM tree_heads WHERE tenant_id = ?1 ORDER BY tree_size")
                .map_err(db_err)?;
            let rows = st
                .query_map([tenant.0], |r| {
                    let root: Vec<u8> = r.get(1)?;
                    Ok(TreeHead {
                        tenant_id: tenant,
                        tree_size: r.get(0)?,
                        root: Hash32::from_slice(&root).unwrap_or_default(),
                        signed_at: from_micros(r.get(2)?),
                        key_id: r.get(3)?,
                        signature: r.get(4)?,
                    })
                })
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }

    async fn put_tree_head(&self, head: &TreeHead) -> Result<(), StoreError> {
        let h = head.clone();
        self.side_write(move |c| {
            c.execute(
                "INSERT INTO tree_heads (tenant_id, tree_size, root_hash, signed_at, key_id, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                params![h.tenant_id.0, h.tree_size, &h.root.0[..], to_micros(&h.signed_at), h.key_id, h.signature],
            )
            .map(|_| ())
            .map_err(db_err)
        })
        .await
    }

    async fn log_access(
        &self,
        ctx: &TenantContext,
        entries: Vec<crate::access::AccessEntry>,
    ) -> Result<(), StoreError> {
        self.access.queue.log(ctx, entries).await
    }

    async fn access_log(
        &self,
        ctx: &TenantContext,
        query: &crate::access::AccessQuery,
    ) -> Result<Vec<crate::access::AccessRecord>, StoreError> {
        let (tenant, query) = (ctx.tenant, query.clone());
        self.access
            .read(move |c| access::query(c, tenant, &query))
            .await
    }

    async fn access_entries_after(
        &self,
        tenant: TenantId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<crate::access::AccessRecord>, StoreError> {
        let query = crate::access::AccessQuery {
            after: Some(after),
            limit,
            ..Default::default()
        };
        self.access
            .read(move |c| access::query(c, tenant, &query))
            .await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let want = schema_version();
        let have: i64 = self
            .read(|c| {
                c.query_row(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    [],
                    |r| r.get(0),
                )
                .map_err(db_err)
            })
            .await?;
        if have != want {
            return Err(StoreError::Unavailable(format!(
                "schema is at version {have}, this build needs {want}"
            )));
        }
        self.access.ready().await
    }

    async fn shutdown(&self) {
        self.queue.close().await;
        self.access.queue.shutdown().await;
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A generated query's argument as SQLite binds it.
fn sqlite_arg(a: Arg) -> rusqlite::types::Value {
    match a {
        Arg::Uuid(u) => rusqlite::types::Value::Blob(u.as_bytes().to_vec()),
        Arg::Text(s) => rusqlite::types::Value::Text(s),
        Arg::Int(i) => rusqlite::types::Value::Integer(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use salus_kernel::{ActorId, NewEvent};

    fn search(rows: &[(&str, &str)]) -> Vec<SearchRow> {
        rows.iter().map(|(p, v)| SearchRow::new(p, *v)).collect()
    }

    /// A database at schema 2 with one resource and its rows in the old `search_index`
    /// keeps finding it after migration 3, and its next update replaces exactly its rows.
    #[tokio::test]
    async fn migration_3_moves_search_rows_and_updates_replace_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let tenant = TenantId(Uuid::now_v7());
        let id = Uuid::now_v7();
        {
            let mut conn = open_conn(&path, false).unwrap();
            assert_eq!(run_migrations(&mut conn, 2).unwrap(), vec![1, 2]);
            conn.execute(
                "INSERT INTO resources (tenant_id, resource_type, id, version, doc, created_at, updated_at) VALUES (?1, 'patient', ?2, 1, '{}', 0, 0)",
                params![tenant.0, id],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO streams (stream_id, tenant_id, stream_type, version, hash) VALUES (?1, ?2, 'patient', 1, zeroblob(32))",
                params![id, tenant.0],
            )
            .unwrap();
            for (param, value) in [("name", "ada"), ("status", "active")] {
                conn.execute(
                    "INSERT INTO search_index (resource_id, param, value, system, tenant_id, resource_type) VALUES (?1, ?2, ?3, '', ?4, 'patient')",
                    params![id, param, value, tenant.0],
                )
                .unwrap();
            }
        }
        let store = SqliteStore::open(&path, None).await.unwrap();
        let ctx = TenantContext::new(tenant, ActorId(Uuid::now_v7()), Uuid::now_v7());
        let query = |param: &str, value: &str| SearchQuery {
            resource_type: "patient".into(),
            filters: vec![Filter {
                also: Vec::new(),
                param: param.into(),
                system: None,
                op: FilterOp::Eq,
                value: value.into(),
            }],
            after: None,
            limit: 10,
            newest_first: false,
            order_by: None,
        };
        assert_eq!(
            store
                .search(&ctx, &query("name", "ada"))
                .await
                .unwrap()
                .len(),
            1
        );
        let update = Write {
            stream_type: "patient".into(),
            stream_id: id,
            expected_version: 1,
            events: vec![NewEvent {
                event_type: "patient.updated".into(),
                schema_version: 1,
                payload: serde_json::json!({}),
            }],
            occurred_at: Utc::now(),
            projection: Some(Projection {
                resource_type: "patient".into(),
                doc: serde_json::json!({}),
                doc_json: None,
                search: search(&[("name", "ada"), ("status", "retired")]),
                full_text: None,
            }),
            claims: vec![],
            releases: vec![],
            idempotency: None,
        };
        store.commit(&ctx, update).await.unwrap();
        assert_eq!(
            store
                .search(&ctx, &query("name", "ada"))
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            store
                .search(&ctx, &query("status", "active"))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .search(&ctx, &query("status", "retired"))
                .await
                .unwrap()
                .len(),
            1
        );
        store.shutdown().await;
        let conn = open_conn(&path, true).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM search_rows", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            rows, 2,
            "the replaced row is gone, the kept one is not doubled"
        );
    }
}

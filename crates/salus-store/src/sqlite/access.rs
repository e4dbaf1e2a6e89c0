//! The data-access log on SQLite: a database file of its own beside the main one
//! (`salus.db` → `salus-access.db`), WAL with `synchronous=FULL`, its own migrations and its
//! own writer thread, so that its write lock is never the event writer's.
//!
//! The lookups by patient and by actor live in a third file (`salus-access-lookup.db`),
//! derived from the log and written by a thread of their own in bulk, at most
//! [`LOOKUP_DELAY`] after their entries, together with `access_indexed.upto` (each tenant's
//! last seq they cover), with `synchronous=NORMAL`: an entry is durable, chained and
//! answered when the log's commit is, and the lookups never hold up the log's writer. A
//! query by patient or actor reads the lookups up to `upto` and the log's tail after it,
//! so it misses nothing whatever the lookups lag (each file is read from one snapshot;
//! either order of the two snapshots gives every entry of the log's). A start first
//! rebuilds, from the log, the lookups a crash left unwritten (the tenants with entries
//! are listed in the log's file, `access_tenants`).

use super::{
    ReadPool, WalWatch, apply_migrations, db_err, from_micros, open_conn, start_checkpointer,
    to_micros,
};
use crate::access::{self, AccessQuery, AccessRecord, AccessRequest};
use crate::model::StoreError;
use rusqlite::{Connection, TransactionBehavior, params_from_iter, types::Value as SqlValue};
use salus_kernel::{ActorId, Hash32, TenantId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Migrations of the access-log file, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "access_log", include_str!("0001_access_log.sql")),
    (
        2,
        "access_log_lookups",
        include_str!("0002_access_log_lookups.sql"),
    ),
];

/// Migrations of the lookups' file, in order.
const LOOKUP_MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "access_lookups", include_str!("0001_access_lookups.sql"))];

/// Longest time an entry's lookup rows wait for their bulk write.
pub const LOOKUP_DELAY: Duration = Duration::from_millis(500);
/// Most lookup rows written in one transaction.
pub const LOOKUP_MAX: usize = 65_536;

/// One entry's lookup keys: `(tenant, patient, actor, seq)`.
type LookupRow = (TenantId, uuid::Uuid, ActorId, i64);

/// The access log's file for the main database at `main`.
pub fn access_path(main: &Path) -> PathBuf {
    sibling(main, "access")
}

/// The access log's lookups' file for the main database at `main`.
pub fn lookup_path(main: &Path) -> PathBuf {
    sibling(main, "access-lookup")
}

fn sibling(main: &Path, what: &str) -> PathBuf {
    let stem = main
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "salus".into());
    main.with_file_name(format!("{stem}-{what}.db"))
}

pub struct AccessLog {
    pub queue: access::AccessQueue,
    reads: Arc<ReadPool>,
}

impl AccessLog {
    /// Create or migrate the files beside `main`, rebuild what lookups a crash left
    /// unwritten, and start the writers.
    pub async fn open(
        main: &Path,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Self, StoreError> {
        let path = access_path(main);
        let lookups = lookup_path(main);
        let (p, l) = (path.clone(), lookups.clone());
        let (mut conn, lconn) =
            tokio::task::spawn_blocking(move || -> Result<(Connection, Connection), StoreError> {
                let mut conn = open_conn(&p, false)?;
                apply_migrations(&mut conn, MIGRATIONS, i64::MAX)?;
                let mut lconn = open_conn(&l, false)?;
                apply_migrations(&mut lconn, LOOKUP_MIGRATIONS, i64::MAX)?;
                // Derived data: a commit need not wait for the disk (a crash loses at
                // most the last ones, which the next start rebuilds from the log).
                lconn
                    .pragma_update(None, "synchronous", "NORMAL")
                    .map_err(db_err)?;
                catch_up(&conn, &mut lconn)?;
                Ok((conn, lconn))
            })
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        let nudge = start_checkpointer(path.clone(), stop, "salus-sqlite-access-checkpoint")?;
        let wal = WalWatch::install(&mut conn, nudge)?;
        let (rows_tx, rows_rx) = std::sync::mpsc::channel();
        let indexer = std::thread::Builder::new()
            .name("salus-sqlite-access-lookups".into())
            .spawn(move || index(lconn, rows_rx))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let (queue, rx, done) = access::AccessQueue::new();
        std::thread::Builder::new()
            .name("salus-sqlite-access".into())
            .spawn(move || {
                run(conn, rx, wal, rows_tx);
                // The sender is gone: the indexer writes what it holds and stops.
                let _ = indexer.join();
                let _ = done.send(());
            })
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            queue,
            reads: Arc::new(ReadPool {
                path,
                attach: Some((lookups, "lk")),
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Whether the access-log file is at the schema version this build expects.
    pub async fn ready(&self) -> Result<(), StoreError> {
        let want = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
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
        if have == want {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "the access log's schema is at version {have}, this build needs {want}"
            )))
        }
    }

    pub async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
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
}

/// The writer loop: wait for one request, take what else has queued, write it all in one
/// transaction, answer every request once it is durable, then hand the entries' lookup
/// keys to the indexer.
fn run(
    mut conn: Connection,
    mut rx: mpsc::UnboundedReceiver<AccessRequest>,
    mut wal: WalWatch,
    lookups: Sender<Vec<LookupRow>>,
) {
    while let Some(first) = rx.blocking_recv() {
        let batch = access::drain(first, &mut rx);
        match write_batch(&mut conn, &batch) {
            Ok(rows) => {
                access::answer(batch, &Ok(()));
                // A stopped indexer loses nothing: queries read the log's tail past
                // `upto`, and the next start rebuilds the lookups.
                let _ = lookups.send(rows);
            }
            Err(e) => {
                tracing::error!(error = %e, requests = batch.len(), "access-log batch failed");
                access::answer(batch, &Err(e));
            }
        }
        wal.after_commit(&conn);
    }
}

/// The indexer loop: take the first rows, gather more for up to [`LOOKUP_DELAY`] (or
/// [`LOOKUP_MAX`] rows), write them in one transaction. Rows that fail to be written are
/// kept and tried again with the next ones.
fn index(mut conn: Connection, rx: Receiver<Vec<LookupRow>>) {
    lower_priority();
    let mut pending: Vec<LookupRow> = Vec::new();
    let mut open = true;
    while open {
        if pending.is_empty() {
            match rx.recv() {
                Ok(rows) => pending.extend(rows),
                Err(_) => break,
            }
        }
        let deadline = Instant::now() + LOOKUP_DELAY;
        while pending.len() < LOOKUP_MAX {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(rows) => pending.extend(rows),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        match commit_lookups(&mut conn, &mut pending) {
            Ok(()) => pending.clear(),
            Err(e) => {
                tracing::error!(error = %e, entries = pending.len(), "access-log lookups not written; retrying");
                if open {
                    std::thread::sleep(LOOKUP_DELAY);
                }
            }
        }
    }
}

/// Give the calling thread (the indexer) a lower scheduling priority than the threads that
/// answer requests: its bulk writes are background work, and when the cores are busy they
/// should wait, not the reads (on Linux a thread's nice value is its own).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: `gettid` and `setpriority` on the calling thread's own id take and return
    // plain integers and touch no memory of this process.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, 10) != 0 {
            tracing::debug!("the access-log indexer keeps its priority");
        }
    }
}

/// Write, in the lookups' file, the lookup rows of every entry after its tenant's `upto`
/// (those a crash kept from being written).
fn catch_up(log: &Connection, lookups: &mut Connection) -> Result<(), StoreError> {
    let tenants: Vec<TenantId> = {
        let mut q = log
            .prepare("SELECT tenant_id FROM access_tenants")
            .map_err(db_err)?;
        q.query_map([], |r| Ok(TenantId(r.get(0)?)))
            .map_err(db_err)?
            .collect::<Result<_, _>>()
            .map_err(db_err)?
    };
    let mut rows: Vec<LookupRow> = Vec::new();
    {
        let mut upto = lookups
            .prepare("SELECT upto FROM access_indexed WHERE tenant_id = ?1")
            .map_err(db_err)?;
        let mut tail = log
            .prepare(
                "SELECT patient_id, actor_id, seq FROM access_log WHERE tenant_id = ?1 AND seq > ?2 ORDER BY seq",
            )
            .map_err(db_err)?;
        for tenant in tenants {
            let from: i64 = upto
                .query_row([tenant.0], |r| r.get(0))
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(0),
                    e => Err(e),
                })
                .map_err(db_err)?;
            let found = tail
                .query_map(rusqlite::params![tenant.0, from], |r| {
                    Ok((tenant, r.get(0)?, ActorId(r.get(1)?), r.get(2)?))
                })
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            rows.extend(found);
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    tracing::info!(
        entries = rows.len(),
        "rebuilding the access log's lookups left unwritten"
    );
    commit_lookups(lookups, &mut rows)
}

/// [`write_lookups`] in a transaction of its own.
fn commit_lookups(conn: &mut Connection, rows: &mut [LookupRow]) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    write_lookups(&tx, rows)?;
    tx.commit().map_err(db_err)
}

/// Write the lookup rows of `rows` and move each tenant's `upto` to its last seq.
fn write_lookups(tx: &rusqlite::Transaction<'_>, rows: &mut [LookupRow]) -> Result<(), StoreError> {
    // In key order, so that each page of the lookup tables is visited once.
    rows.sort_unstable_by_key(|r| (r.0.0, r.1, r.3));
    let mut by_patient = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO access_by_patient (tenant_id, patient_id, seq) VALUES (?1, ?2, ?3)",
        )
        .map_err(db_err)?;
    for r in rows.iter() {
        by_patient
            .execute(rusqlite::params![r.0.0, r.1, r.3])
            .map_err(db_err)?;
    }
    rows.sort_unstable_by_key(|r| (r.0.0, r.2.0, r.3));
    let mut by_actor = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO access_by_actor (tenant_id, actor_id, seq) VALUES (?1, ?2, ?3)",
        )
        .map_err(db_err)?;
    for r in rows.iter() {
        by_actor
            .execute(rusqlite::params![r.0.0, r.2.0, r.3])
            .map_err(db_err)?;
    }
    let mut upto: HashMap<TenantId, i64> = HashMap::new();
    for r in rows.iter() {
        let m = upto.entry(r.0).or_insert(r.3);
        *m = (*m).max(r.3);
    }
    let mut mark = tx
        .prepare_cached(
            "INSERT INTO access_indexed (tenant_id, upto) VALUES (?1, ?2) ON CONFLICT (tenant_id) DO UPDATE SET upto = MAX(upto, excluded.upto)",
        )
        .map_err(db_err)?;
    for (tenant, seq) in upto {
        mark.execute(rusqlite::params![tenant.0, seq])
            .map_err(db_err)?;
    }
    Ok(())
}

/// Write one batch; its entries' lookup keys on success.
fn write_batch(
    conn: &mut Connection,
    batch: &[AccessRequest],
) -> Result<Vec<LookupRow>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let mut heads = HashMap::new();
    {
        let mut head = tx
            .prepare_cached(
                "SELECT seq, hash FROM access_log WHERE tenant_id = ?1 ORDER BY seq DESC LIMIT 1",
            )
            .map_err(db_err)?;
        let mut first = tx
            .prepare_cached(
                "INSERT INTO access_tenants (tenant_id) VALUES (?1) ON CONFLICT (tenant_id) DO NOTHING",
            )
            .map_err(db_err)?;
        for tenant in access::batch_tenants(batch) {
            let mut rows = head.query([tenant.0]).map_err(db_err)?;
            if let Some(r) = rows.next().map_err(db_err)? {
                let seq: i64 = r.get(0).map_err(db_err)?;
                let hash: Vec<u8> = r.get(1).map_err(db_err)?;
                let hash = Hash32::from_slice(&hash)
                    .ok_or_else(|| StoreError::Corrupt("access-log head hash".into()))?;
                heads.insert(tenant, (seq, hash));
            } else {
                // The tenant's first entry: from now on a start's catch-up knows it.
                first.execute([tenant.0]).map_err(db_err)?;
            }
        }
    }
    let now = salus_kernel::clock::truncate_micros(chrono::Utc::now());
    let records = access::plan(&heads, batch, now);
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO access_log (tenant_id, seq, entry_id, actor_id, patient_id, resource_type, resource_id, action, purpose, justification, break_glass, client, request_id, recorded_at, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )
            .map_err(db_err)?;
        for r in &records {
            insert
                .execute(rusqlite::params![
                    r.tenant_id.0,
                    r.seq,
                    r.entry_id,
                    r.actor_id.0,
                    r.patient_id,
                    r.resource_type,
                    r.resource_id,
                    r.action.as_str(),
                    r.purpose,
                    r.justification,
                    r.break_glass,
                    r.client,
                    r.request_id,
                    to_micros(&r.recorded_at),
                    r.prev_hash.0.as_slice(),
                    r.hash.0.as_slice(),
                ])
                .map_err(db_err)?;
        }
    }
    tx.commit().map_err(db_err)?;
    Ok(records
        .iter()
        .map(|r| (r.tenant_id, r.patient_id, r.actor_id, r.seq))
        .collect())
}

/// The columns [`record_from_row`] reads, of the log aliased `l`, with `seq` taken from
/// `seq` (the column whose order the query follows).
fn columns(seq: &str) -> String {
    format!(
        "l.tenant_id, {seq}, l.entry_id, l.actor_id, l.patient_id, l.resource_type, l.resource_id, l.action, l.purpose, l.justification, l.break_glass, l.client, l.request_id, l.recorded_at, l.prev_hash, l.hash"
    )
}

fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AccessRecord> {
    let action: String = r.get(7)?;
    let prev: Vec<u8> = r.get(14)?;
    let hash: Vec<u8> = r.get(15)?;
    Ok(AccessRecord {
        tenant_id: TenantId(r.get(0)?),
        seq: r.get(1)?,
        entry_id: r.get(2)?,
        actor_id: ActorId(r.get(3)?),
        patient_id: r.get(4)?,
        resource_type: r.get(5)?,
        resource_id: r.get(6)?,
        action: access::stored_action(&action),
        purpose: r.get(8)?,
        justification: r.get(9)?,
        break_glass: r.get(10)?,
        client: r.get(11)?,
        request_id: r.get(12)?,
        recorded_at: from_micros(r.get(13)?),
        // A malformed hash is kept visible (as zero) so that verify flags it.
        prev_hash: Hash32::from_slice(&prev).unwrap_or_default(),
        hash: Hash32::from_slice(&hash).unwrap_or_default(),
    })
}

/// One tenant's entries matching `q`, in seq order. By patient or actor: the lookup
/// table's rows up to the tenant's `upto`, then the log's tail after it, merged in order.
pub fn query(
    conn: &Connection,
    tenant: TenantId,
    q: &AccessQuery,
) -> Result<Vec<AccessRecord>, StoreError> {
    let mut args: Vec<SqlValue> = vec![SqlValue::Blob(tenant.0.as_bytes().to_vec())];
    let mut filters = String::new();
    let mut push = |filters: &mut String, clause: &str, v: SqlValue| {
        args.push(v);
        filters.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    // The lookup that narrows the query: (table, column, value), the patient's first.
    let lookup = match (q.patient, q.actor) {
        (Some(p), _) => Some(("lk.access_by_patient", "patient_id", p)),
        (None, Some(a)) => Some(("lk.access_by_actor", "actor_id", a.0)),
        (None, None) => None,
    };
    if let (Some(_), Some(a)) = (q.patient, q.actor) {
        push(
            &mut filters,
            "l.actor_id =",
            SqlValue::Blob(a.0.as_bytes().to_vec()),
        );
    }
    if let Some(t) = q.from {
        push(
            &mut filters,
            "l.recorded_at >=",
            SqlValue::Integer(to_micros(&t)),
        );
    }
    if let Some(t) = q.to {
        push(
            &mut filters,
            "l.recorded_at <",
            SqlValue::Integer(to_micros(&t)),
        );
    }
    if let Some(a) = q.action {
        push(
            &mut filters,
            "l.action =",
            SqlValue::Text(a.as_str().into()),
        );
    }
    if let Some(b) = q.break_glass {
        push(
            &mut filters,
            "l.break_glass =",
            SqlValue::Integer(i64::from(b)),
        );
    }
    let sql = match lookup {
        None => {
            if let Some(after) = q.after {
                push(&mut filters, "l.seq >", SqlValue::Integer(after));
            }
            format!(
                "SELECT {} FROM access_log l WHERE l.tenant_id = ?1{filters} ORDER BY l.seq LIMIT {}",
                columns("l.seq"),
                q.limit
            )
        }
        Some((table, column, value)) => {
            args.push(SqlValue::Blob(value.as_bytes().to_vec()));
            let key = args.len();
            args.push(SqlValue::Integer(q.after.unwrap_or(0)));
            let after = args.len();
            format!(
                "SELECT {} FROM {table} k JOIN access_log l ON l.tenant_id = k.tenant_id AND l.seq = k.seq \
                 WHERE k.tenant_id = ?1 AND k.{column} = ?{key} AND k.seq > ?{after}{filters} \
                 UNION ALL \
                 SELECT {} FROM access_log l WHERE l.tenant_id = ?1 \
                 AND l.seq > MAX(?{after}, COALESCE((SELECT upto FROM lk.access_indexed WHERE tenant_id = ?1), 0)) \
                 AND l.{column} = ?{key}{filters} \
                 ORDER BY 2 LIMIT {}",
                columns("k.seq"),
                columns("l.seq"),
                q.limit
            )
        }
    };
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
    let rows = stmt
        .query_map(params_from_iter(args), record_from_row)
        .map_err(db_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
}

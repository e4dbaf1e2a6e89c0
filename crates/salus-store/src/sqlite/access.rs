//! The data-access log on SQLite: a database file of its own beside the main one
//! (`salus.db` → `salus-access.db`), WAL with `synchronous=FULL`, its own migrations and its
//! own writer thread, so that its write lock is never the event writer's.
//!
//! The lookups by patient and by actor are tables of their own (`access_by_patient`,
//! `access_by_actor`) that the writer fills in bulk, at most [`LOOKUP_DELAY`] or
//! [`LOOKUP_MAX`] entries after the entries themselves and in one of the access log's own
//! transactions, together with `access_indexed.upto` (the tenant's last seq they cover).
//! Entries are durable, chained and answered at once; only their lookup rows wait, and a
//! query by patient or actor reads the lookup table up to `upto` and the log's tail after
//! it, in one snapshot, so it misses nothing. After a crash the writer rebuilds the missing
//! lookup rows from the log before it takes new entries.

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

/// Longest time an entry's lookup rows wait for their bulk write.
pub const LOOKUP_DELAY: Duration = Duration::from_millis(500);
/// Most entries whose lookup rows wait; more are written with the next batch.
pub const LOOKUP_MAX: usize = 8192;

/// The access log's file for the main database at `main`.
pub fn access_path(main: &Path) -> PathBuf {
    let stem = main
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "salus".into());
    main.with_file_name(format!("{stem}-access.db"))
}

pub struct AccessLog {
    pub queue: access::AccessQueue,
    reads: Arc<ReadPool>,
}

impl AccessLog {
    /// Create or migrate the file beside `main` and start its writer.
    pub async fn open(
        main: &Path,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Self, StoreError> {
        let path = access_path(main);
        let p = path.clone();
        let mut conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            let mut conn = open_conn(&p, false)?;
            apply_migrations(&mut conn, MIGRATIONS, i64::MAX)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        let nudge = start_checkpointer(path.clone(), stop, "salus-sqlite-access-checkpoint")?;
        let wal = WalWatch::install(&mut conn, nudge)?;
        let (queue, rx, done) = access::AccessQueue::new();
        std::thread::Builder::new()
            .name("salus-sqlite-access".into())
            .spawn(move || {
                run(conn, rx, wal);
                let _ = done.send(());
            })
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            queue,
            reads: Arc::new(ReadPool {
                path,
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

/// Committed entries whose lookup rows are not written yet.
#[derive(Default)]
struct Pending {
    /// `(tenant, patient, actor, seq)`.
    rows: Vec<(TenantId, uuid::Uuid, ActorId, i64)>,
    /// When the oldest of them was committed.
    since: Option<Instant>,
}

impl Pending {
    /// How long until the lookup rows are due; `None` when nothing waits.
    fn due_in(&self) -> Option<Duration> {
        self.since
            .map(|t| LOOKUP_DELAY.saturating_sub(t.elapsed()))
            .map(|d| {
                if self.rows.len() >= LOOKUP_MAX {
                    Duration::ZERO
                } else {
                    d
                }
            })
    }

    fn add(&mut self, records: &[AccessRecord]) {
        if records.is_empty() {
            return;
        }
        self.since.get_or_insert_with(Instant::now);
        self.rows.extend(
            records
                .iter()
                .map(|r| (r.tenant_id, r.patient_id, r.actor_id, r.seq)),
        );
    }
}

/// The writer loop: wait for one request, take what else has queued, write it all in one
/// transaction, answer every request once it is durable. Lookup rows that are due ride
/// with the batch, or are written alone when no request comes in time.
fn run(mut conn: Connection, mut rx: mpsc::UnboundedReceiver<AccessRequest>, mut wal: WalWatch) {
    let timer = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "the access-log writer cannot start its timer");
            return;
        }
    };
    let mut pending = Pending::default();
    if let Err(e) = catch_up(&conn, &mut pending) {
        tracing::error!(error = %e, "the access-log lookups cannot be rebuilt; retrying later");
    }
    loop {
        let next = match pending.due_in() {
            None => rx.blocking_recv(),
            Some(wait) if wait.is_zero() => {
                flush_alone(&mut conn, &mut pending);
                continue;
            }
            Some(wait) => {
                match timer.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
                    Ok(next) => next,
                    Err(_) => {
                        flush_alone(&mut conn, &mut pending);
                        continue;
                    }
                }
            }
        };
        let Some(first) = next else { break };
        let batch = access::drain(first, &mut rx);
        let flush = pending.due_in().is_some_and(|d| d.is_zero());
        let outcome = write_batch(&mut conn, &batch, &mut pending, flush);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, requests = batch.len(), "access-log batch failed");
        }
        access::answer(batch, &outcome);
        wal.after_commit(&conn);
    }
    if pending.since.is_some() {
        flush_alone(&mut conn, &mut pending);
    }
}

/// Queue, for the next bulk write, the lookup rows of every entry after its tenant's
/// `upto` (those a crash kept from being written).
fn catch_up(conn: &Connection, pending: &mut Pending) -> Result<(), StoreError> {
    let mut tenants = conn
        .prepare("SELECT tenant_id, upto FROM access_indexed")
        .map_err(db_err)?;
    let marks = tenants
        .query_map([], |r| Ok((TenantId(r.get(0)?), r.get::<_, i64>(1)?)))
        .map_err(db_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)?;
    let mut tail = conn
        .prepare(
            "SELECT patient_id, actor_id, seq FROM access_log WHERE tenant_id = ?1 AND seq > ?2 ORDER BY seq",
        )
        .map_err(db_err)?;
    for (tenant, upto) in marks {
        let rows = tail
            .query_map(rusqlite::params![tenant.0, upto], |r| {
                Ok((tenant, r.get(0)?, ActorId(r.get(1)?), r.get(2)?))
            })
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)?;
        pending.rows.extend(rows);
    }
    if !pending.rows.is_empty() {
        // Due at once.
        pending.since = Some(Instant::now() - LOOKUP_DELAY);
    }
    Ok(())
}

/// Write the lookup rows of `rows` and move each tenant's `upto` to its last seq.
fn write_lookups(
    tx: &rusqlite::Transaction<'_>,
    rows: &mut [(TenantId, uuid::Uuid, ActorId, i64)],
) -> Result<(), StoreError> {
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

/// Write the waiting lookup rows in a transaction of their own. On failure they wait
/// another [`LOOKUP_DELAY`].
fn flush_alone(conn: &mut Connection, pending: &mut Pending) {
    let outcome = (|| {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        write_lookups(&tx, &mut pending.rows)?;
        tx.commit().map_err(db_err)
    })();
    match outcome {
        Ok(()) => *pending = Pending::default(),
        Err(e) => {
            tracing::error!(error = %e, entries = pending.rows.len(), "access-log lookups not written; retrying");
            pending.since = Some(Instant::now());
        }
    }
}

fn write_batch(
    conn: &mut Connection,
    batch: &[AccessRequest],
    pending: &mut Pending,
    flush: bool,
) -> Result<(), StoreError> {
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
                "INSERT INTO access_indexed (tenant_id, upto) VALUES (?1, 0) ON CONFLICT (tenant_id) DO NOTHING",
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
                // The tenant's first entry: from now on catch-up knows the tenant.
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
    if flush {
        let mut rows = pending.rows.clone();
        rows.extend(
            records
                .iter()
                .map(|r| (r.tenant_id, r.patient_id, r.actor_id, r.seq)),
        );
        // On failure nothing of this batch is stored and the waiting rows wait on.
        write_lookups(&tx, &mut rows)?;
        tx.commit().map_err(db_err)?;
        *pending = Pending::default();
        Ok(())
    } else {
        tx.commit().map_err(db_err)?;
        pending.add(&records);
        Ok(())
    }
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
        (Some(p), _) => Some(("access_by_patient", "patient_id", p)),
        (None, Some(a)) => Some(("access_by_actor", "actor_id", a.0)),
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
                 AND l.seq > MAX(?{after}, COALESCE((SELECT upto FROM access_indexed WHERE tenant_id = ?1), 0)) \
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

//! The data-access log on SQLite: a database file of its own beside the main one
//! (`salus.db` → `salus-access.db`), WAL with `synchronous=FULL`, its own migrations and its
//! own writer thread, so that its write lock is never the event writer's.

use super::{ReadPool, apply_migrations, db_err, from_micros, open_conn, to_micros};
use crate::access::{self, AccessQuery, AccessRecord, AccessRequest};
use crate::model::StoreError;
use rusqlite::{Connection, TransactionBehavior, params_from_iter, types::Value as SqlValue};
use salus_kernel::{ActorId, Hash32, TenantId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Migrations of the access-log file, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[(1, "access_log", include_str!("0001_access_log.sql"))];

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
    pub async fn open(main: &Path) -> Result<Self, StoreError> {
        let path = access_path(main);
        let p = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            let mut conn = open_conn(&p, false)?;
            apply_migrations(&mut conn, MIGRATIONS, i64::MAX)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        let (queue, rx, done) = access::AccessQueue::new();
        std::thread::Builder::new()
            .name("salus-sqlite-access".into())
            .spawn(move || {
                run(conn, rx);
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

/// The writer loop: wait for one request, take what else has queued, write it all in one
/// transaction, answer every request once it is durable.
fn run(mut conn: Connection, mut rx: mpsc::UnboundedReceiver<AccessRequest>) {
    while let Some(first) = rx.blocking_recv() {
        let batch = access::drain(first, &mut rx);
        let outcome = write_batch(&mut conn, &batch);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, requests = batch.len(), "access-log batch failed");
        }
        access::answer(batch, &outcome);
    }
}

fn write_batch(conn: &mut Connection, batch: &[AccessRequest]) -> Result<(), StoreError> {
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
        for tenant in access::batch_tenants(batch) {
            let mut rows = head.query([tenant.0]).map_err(db_err)?;
            if let Some(r) = rows.next().map_err(db_err)? {
                let seq: i64 = r.get(0).map_err(db_err)?;
                let hash: Vec<u8> = r.get(1).map_err(db_err)?;
                let hash = Hash32::from_slice(&hash)
                    .ok_or_else(|| StoreError::Corrupt("access-log head hash".into()))?;
                heads.insert(tenant, (seq, hash));
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
    tx.commit().map_err(db_err)
}

const COLUMNS: &str = "tenant_id, seq, entry_id, actor_id, patient_id, resource_type, resource_id, action, purpose, justification, break_glass, client, request_id, recorded_at, prev_hash, hash";

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

/// One tenant's entries matching `q`, in seq order.
pub fn query(
    conn: &Connection,
    tenant: TenantId,
    q: &AccessQuery,
) -> Result<Vec<AccessRecord>, StoreError> {
    let mut sql = format!("SELECT {COLUMNS} FROM access_log WHERE tenant_id = ?1");
    let mut args: Vec<SqlValue> = vec![SqlValue::Blob(tenant.0.as_bytes().to_vec())];
    let mut push = |sql: &mut String, clause: &str, v: SqlValue| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    if let Some(p) = q.patient {
        push(
            &mut sql,
            "patient_id =",
            SqlValue::Blob(p.as_bytes().to_vec()),
        );
    }
    if let Some(a) = q.actor {
        push(
            &mut sql,
            "actor_id =",
            SqlValue::Blob(a.0.as_bytes().to_vec()),
        );
    }
    if let Some(t) = q.from {
        push(&mut sql, "recorded_at >=", SqlValue::Integer(to_micros(&t)));
    }
    if let Some(t) = q.to {
        push(&mut sql, "recorded_at <", SqlValue::Integer(to_micros(&t)));
    }
    if let Some(a) = q.action {
        push(&mut sql, "action =", SqlValue::Text(a.as_str().into()));
    }
    if let Some(b) = q.break_glass {
        push(&mut sql, "break_glass =", SqlValue::Integer(i64::from(b)));
    }
    if let Some(after) = q.after {
        push(&mut sql, "seq >", SqlValue::Integer(after));
    }
    sql.push_str(&format!(" ORDER BY seq LIMIT {}", q.limit));
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
    let rows = stmt
        .query_map(params_from_iter(args), record_from_row)
        .map_err(db_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
}

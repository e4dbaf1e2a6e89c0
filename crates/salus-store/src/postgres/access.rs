//! The data-access log on PostgreSQL: table `access_log` (migration 5), written in batches
//! (`INSERT … SELECT FROM unnest(…)`) by a connection of its own on a thread of its own, so
//! that it never waits behind the event writer.

use super::{APP_ROLE, connect, db_err, tenant_list};
use crate::access::{self, AccessRecord, AccessRequest};
use crate::model::StoreError;
use salus_kernel::{ActorId, Hash32, TenantId};
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

/// The writer's connection, its statements (prepared once) and the chain heads it knows.
///
/// A batch is one round trip: `BEGIN`, the tenant setting, the insert and `COMMIT` go out
/// together (an error aborts the transaction and the `COMMIT` rolls it back). The chain
/// continues from the heads this writer last wrote or read; the primary key `(tenant_id,
/// seq)` makes that safe when another server process writes the same tenant's log: a seq it
/// took first makes the whole batch fail, and the batch is planned again from the heads as
/// stored. After any failure the heads are read again.
struct Conn {
    client: Client,
    set_tenants: Statement,
    heads: Statement,
    insert: Statement,
    /// Last `(seq, hash)` of each tenant, as committed.
    known: HashMap<TenantId, (i64, Hash32)>,
}

/// Times a batch is planned again after another writer took one of its seqs.
const CONFLICT_RETRIES: usize = 5;

pub const COLUMNS: &str = "tenant_id, seq, entry_id, actor_id, patient_id, resource_type, resource_id, action, purpose, justification, break_glass, client, request_id, recorded_at, prev_hash, hash";

/// Start the writer thread; returns the queue once its connection is open.
pub async fn start(url: &str) -> Result<access::AccessQueue, StoreError> {
    let (queue, rx, done) = access::AccessQueue::new();
    let (opened_tx, opened) = tokio::sync::oneshot::channel();
    let url = url.to_owned();
    std::thread::Builder::new()
        .name("salus-pg-access".into())
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
                match open(&url).await {
                    Ok(client) => {
                        let _ = opened_tx.send(Ok(()));
                        run(client, &url, rx).await;
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
        .map_err(|_| StoreError::Unavailable("the access-log writer thread stopped".into()))??;
    Ok(queue)
}

async fn open(url: &str) -> Result<Conn, StoreError> {
    let (client, _task) = connect(url).await?;
    client
        .batch_execute(&format!("SET ROLE {APP_ROLE}"))
        .await
        .map_err(db_err)?;
    let insert = format!(
        "INSERT INTO access_log ({COLUMNS}) SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::uuid[], $8::text[], $9::text[], $10::text[], $11::bool[], $12::text[], $13::uuid[], $14::timestamptz[], $15::bytea[], $16::bytea[])"
    );
    let (set_tenants, heads, insert) = tokio::try_join!(
        client.prepare("SELECT set_config('salus.tenants', $1, true)"),
        // One backward probe of the primary key per tenant (DISTINCT ON would read every
        // entry of the tenant: each batch slower than the last).
        client.prepare(
            "SELECT t.id, a.seq, a.hash FROM unnest($1::uuid[]) AS t(id)
             CROSS JOIN LATERAL (SELECT seq, hash FROM access_log WHERE tenant_id = t.id ORDER BY seq DESC LIMIT 1) a"
        ),
        client.prepare(&insert),
    )
    .map_err(db_err)?;
    Ok(Conn {
        client,
        set_tenants,
        heads,
        insert,
        known: HashMap::new(),
    })
}

async fn run(mut client: Conn, url: &str, mut rx: mpsc::UnboundedReceiver<AccessRequest>) {
    while let Some(first) = rx.recv().await {
        let batch = access::drain(first, &mut rx);
        let mut outcome = write_batch(&mut client, &batch).await;
        if let Err(e) = &outcome {
            tracing::error!(error = %e, requests = batch.len(), "access-log batch failed");
            // A lost connection is opened again for the next batch (and this one retried
            // once on it); a refused batch is answered with its error.
            if client.client.is_closed()
                && let Ok(c) = open(url).await
            {
                client = c;
                outcome = write_batch(&mut client, &batch).await;
            }
        }
        access::answer(batch, &outcome);
    }
}

async fn write_batch(conn: &mut Conn, batch: &[AccessRequest]) -> Result<(), StoreError> {
    let tenants = access::batch_tenants(batch);
    let mut tries = 0;
    loop {
        let outcome = try_batch(conn, batch, &tenants).await;
        if !matches!(outcome, Ok(true)) {
            for t in &tenants {
                conn.known.remove(t);
            }
        }
        match outcome {
            Ok(true) => return Ok(()),
            Ok(false) if tries < CONFLICT_RETRIES => tries += 1,
            Ok(false) => {
                return Err(StoreError::Unavailable(
                    "the access log is being written by other processes too fast to join".into(),
                ));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Read the chain heads of the tenants this writer does not know yet (one round trip).
async fn load_heads(conn: &mut Conn, tenants: &[TenantId]) -> Result<(), StoreError> {
    let missing: Vec<TenantId> = tenants
        .iter()
        .copied()
        .filter(|t| !conn.known.contains_key(t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = missing.iter().map(|t| t.0).collect();
    let list = tenant_list(&missing);
    let p_list: [&(dyn ToSql + Sync); 1] = [&list];
    let p_ids: [&(dyn ToSql + Sync); 1] = [&ids];
    let c = &conn.client;
    let (_, _, rows, _) = tokio::try_join!(
        c.batch_execute("BEGIN READ ONLY"),
        c.execute(&conn.set_tenants, &p_list),
        c.query(&conn.heads, &p_ids),
        c.batch_execute("COMMIT"),
    )
    .map_err(db_err)?;
    for t in missing {
        conn.known.insert(t, (0, Hash32::ZERO));
    }
    for r in &rows {
        let tenant: uuid::Uuid = r.try_get(0).map_err(db_err)?;
        let seq: i64 = r.try_get(1).map_err(db_err)?;
        let hash: &[u8] = r.try_get(2).map_err(db_err)?;
        let hash = Hash32::from_slice(hash)
            .ok_or_else(|| StoreError::Corrupt("access-log head hash".into()))?;
        conn.known.insert(TenantId(tenant), (seq, hash));
    }
    Ok(())
}

/// Write the batch; `Ok(false)` when another writer took one of its seqs first (nothing
/// of it is stored).
async fn try_batch(
    conn: &mut Conn,
    batch: &[AccessRequest],
    tenants: &[TenantId],
) -> Result<bool, StoreError> {
    load_heads(conn, tenants).await?;
    let heads = &conn.known;
    let list = tenant_list(tenants);
    let p_list: [&(dyn ToSql + Sync); 1] = [&list];
    let now = salus_kernel::clock::truncate_micros(chrono::Utc::now());
    let records = access::plan(heads, batch, now);
    let col = |f: fn(&AccessRecord) -> uuid::Uuid| records.iter().map(f).collect::<Vec<_>>();
    let tenant_col = col(|r| r.tenant_id.0);
    let entry_col = col(|r| r.entry_id);
    let actor_col = col(|r| r.actor_id.0);
    let patient_col = col(|r| r.patient_id);
    let request_col = col(|r| r.request_id);
    let seq_col: Vec<i64> = records.iter().map(|r| r.seq).collect();
    let type_col: Vec<&str> = records.iter().map(|r| r.resource_type.as_str()).collect();
    let resource_col: Vec<Option<uuid::Uuid>> = records.iter().map(|r| r.resource_id).collect();
    let action_col: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    let purpose_col: Vec<&str> = records.iter().map(|r| r.purpose.as_str()).collect();
    let just_col: Vec<Option<&str>> = records.iter().map(|r| r.justification.as_deref()).collect();
    let glass_col: Vec<bool> = records.iter().map(|r| r.break_glass).collect();
    let client_col: Vec<Option<&str>> = records.iter().map(|r| r.client.as_deref()).collect();
    let at_col: Vec<chrono::DateTime<chrono::Utc>> =
        records.iter().map(|r| r.recorded_at).collect();
    let prev_col: Vec<&[u8]> = records.iter().map(|r| r.prev_hash.0.as_slice()).collect();
    let hash_col: Vec<&[u8]> = records.iter().map(|r| r.hash.0.as_slice()).collect();
    let params: [&(dyn ToSql + Sync); 16] = [
        &tenant_col,
        &seq_col,
        &entry_col,
        &actor_col,
        &patient_col,
        &type_col,
        &resource_col,
        &action_col,
        &purpose_col,
        &just_col,
        &glass_col,
        &client_col,
        &request_col,
        &at_col,
        &prev_col,
        &hash_col,
    ];
    let c = &conn.client;
    let inserted = tokio::try_join!(
        c.batch_execute("BEGIN"),
        c.execute(&conn.set_tenants, &p_list),
        c.execute(&conn.insert, &params),
        c.batch_execute("COMMIT"),
    );
    match inserted {
        Ok(_) => {}
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            // Another writer took a seq first: the transaction is rolled back.
            let _ = c.batch_execute("ROLLBACK").await;
            return Ok(false);
        }
        Err(e) => {
            let _ = c.batch_execute("ROLLBACK").await;
            return Err(db_err(e));
        }
    }
    for r in &records {
        conn.known.insert(r.tenant_id, (r.seq, r.hash));
    }
    Ok(true)
}

pub fn record_from_row(r: &Row) -> Result<AccessRecord, StoreError> {
    let get = || -> Result<AccessRecord, tokio_postgres::Error> {
        let action: &str = r.try_get(7)?;
        let prev: &[u8] = r.try_get(14)?;
        let hash: &[u8] = r.try_get(15)?;
        Ok(AccessRecord {
            tenant_id: TenantId(r.try_get(0)?),
            seq: r.try_get(1)?,
            entry_id: r.try_get(2)?,
            actor_id: ActorId(r.try_get(3)?),
            patient_id: r.try_get(4)?,
            resource_type: r.try_get(5)?,
            resource_id: r.try_get(6)?,
            action: access::stored_action(action),
            purpose: r.try_get(8)?,
            justification: r.try_get(9)?,
            break_glass: r.try_get(10)?,
            client: r.try_get(11)?,
            request_id: r.try_get(12)?,
            recorded_at: r.try_get(13)?,
            // A malformed hash is kept visible (as zero) so that verify flags it.
            prev_hash: Hash32::from_slice(prev).unwrap_or_default(),
            hash: Hash32::from_slice(hash).unwrap_or_default(),
        })
    };
    get().map_err(db_err)
}

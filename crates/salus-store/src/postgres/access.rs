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

/// The writer's connection and its statements, prepared once: a batch is then four round
/// trips (`BEGIN`; the tenant setting, the locks and the chain heads, pipelined; the
/// insert; `COMMIT`), not one prepare and one execute per statement.
struct Conn {
    client: Client,
    set_tenants: Statement,
    lock: Statement,
    heads: Statement,
    insert: Statement,
}

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
    let (set_tenants, lock, heads, insert) = tokio::try_join!(
        client.prepare("SELECT set_config('salus.tenants', $1, true)"),
        // Another server process writing the same tenants' logs waits here (tenants in
        // one order, so two batches never deadlock) rather than failing on the seq it
        // also took.
        client.prepare(
            "SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest($1::bigint[]) AS k ORDER BY 1) s"
        ),
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
        lock,
        heads,
        insert,
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
    let tenant_ids: Vec<uuid::Uuid> = tenants.iter().map(|t| t.0).collect();
    let keys: Vec<i64> = tenants.iter().map(|t| lock_key(t.0)).collect();
    let list = tenant_list(&tenants);
    let p_list: [&(dyn ToSql + Sync); 1] = [&list];
    let p_keys: [&(dyn ToSql + Sync); 1] = [&keys];
    let p_ids: [&(dyn ToSql + Sync); 1] = [&tenant_ids];
    let tx = conn.client.transaction().await.map_err(db_err)?;
    let (_, _, rows) = tokio::try_join!(
        tx.execute(&conn.set_tenants, &p_list),
        tx.execute(&conn.lock, &p_keys),
        tx.query(&conn.heads, &p_ids),
    )
    .map_err(db_err)?;
    let mut heads = HashMap::new();
    for r in &rows {
        let tenant: uuid::Uuid = r.try_get(0).map_err(db_err)?;
        let seq: i64 = r.try_get(1).map_err(db_err)?;
        let hash: &[u8] = r.try_get(2).map_err(db_err)?;
        let hash = Hash32::from_slice(hash)
            .ok_or_else(|| StoreError::Corrupt("access-log head hash".into()))?;
        heads.insert(TenantId(tenant), (seq, hash));
    }
    let now = salus_kernel::clock::truncate_micros(chrono::Utc::now());
    let records = access::plan(&heads, batch, now);
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
    tx.execute(
        &conn.insert,
        &[
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
        ],
    )
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(db_err)
}

/// The advisory-lock key of a tenant's access log.
fn lock_key(tenant: uuid::Uuid) -> i64 {
    let b = tenant.as_bytes();
    // The low 8 bytes of a UUIDv7 are its random part; xor'ed with a tag for this log.
    i64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]])
        ^ 0x6163_6365_7373_6c67
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

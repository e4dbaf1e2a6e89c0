//! The SQLite group-commit writer: one thread owns the write connection, takes what has
//! queued up, and commits it as one `BEGIN IMMEDIATE … COMMIT` (WAL, `synchronous=FULL`).
//!
//! Rows go in with multi-row `INSERT … VALUES (…), (…)` statements whose sizes are powers
//! of two, so a handful of prepared statements serves every batch size. Search rows are
//! keyed by an interned parameter id (see `0003_search_rows.sql`); the writer keeps the
//! ids it has seen in memory and forgets them all when a transaction fails, so an id
//! from a rolled-back transaction is never reused.

use super::raw::{RawStatement, Val};
use super::{WalWatch, db_err, to_micros};
use crate::commit::{
    self, BatchState, CommitObserver, Needs, Outcome, Pending, Plan, PlannedResource,
};
use crate::model::*;
use chrono::Utc;
use foldhash::HashMap as FoldMap;
use rusqlite::{Connection, OptionalExtension, params};
use salus_kernel::clock::truncate_micros;
use salus_kernel::{Hash32, TenantId};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use uuid::Uuid;

type Outcomes = Vec<Outcome>;

/// The largest multi-row statement, in rows; smaller ones halve down to one row.
const MAX_ROWS_PER_STATEMENT: usize = 64;

/// Interned search parameters: tenant → resource type → parameter → pid.
#[derive(Default)]
struct Pids(FoldMap<TenantId, FoldMap<String, FoldMap<String, i64>>>);

impl Pids {
    fn get(
        &mut self,
        conn: &Connection,
        t: TenantId,
        rt: &str,
        param: &str,
    ) -> Result<i64, StoreError> {
        if let Some(pid) = self
            .0
            .get(&t)
            .and_then(|m| m.get(rt))
            .and_then(|m| m.get(param))
        {
            return Ok(*pid);
        }
        conn.prepare_cached(
            "INSERT INTO search_params (tenant_id, resource_type, param) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )
        .map_err(db_err)?
        .execute(params![t.0, rt, param])
        .map_err(db_err)?;
        let pid: i64 = conn
            .prepare_cached(
                "SELECT pid FROM search_params WHERE tenant_id = ?1 AND resource_type = ?2 AND param = ?3",
            )
            .map_err(db_err)?
            .query_row(params![t.0, rt, param], |r| r.get(0))
            .map_err(db_err)?;
        self.0
            .entry(t)
            .or_default()
            .entry(rt.to_owned())
            .or_default()
            .insert(param.to_owned(), pid);
        Ok(pid)
    }
}

/// The tables written with multi-row statements: head, tail and values per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Table {
    Events,
    Streams,
    Resources,
    SearchRows,
    Keys,
}

impl Table {
    fn sql(self) -> (&'static str, &'static str, usize) {
        match self {
            Table::Events => (INSERT_EVENTS, "", 16),
            Table::Streams => (UPSERT_STREAMS, UPSERT_STREAMS_TAIL, 5),
            Table::Resources => (INSERT_RESOURCES, "", 8),
            Table::SearchRows => (INSERT_SEARCH_ROWS, "", 4),
            Table::Keys => (INSERT_KEYS, "", 4),
        }
    }
}

/// Multi-row statements, prepared once per (table, row count) on the writer's connection
/// and kept for its lifetime (rusqlite's statement cache would hash their long text on
/// every use).
struct MultiRow<'c> {
    conn: &'c Connection,
    prepared: HashMap<(Table, usize), RawStatement<'c>>,
}

impl<'c> MultiRow<'c> {
    fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            prepared: HashMap::new(),
        }
    }

    /// Insert the rows of `args` (the table's width of values per row) in statements of
    /// power-of-two row counts.
    fn run(&mut self, table: Table, args: &[Val<'_>]) -> Result<(), StoreError> {
        let (head, tail, width) = table.sql();
        let mut rows = args.len() / width;
        let mut at = 0;
        while rows > 0 {
            let n = largest_power_of_two_at_most(rows.min(MAX_ROWS_PER_STATEMENT));
            let st = match self.prepared.entry((table, n)) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(RawStatement::prepare(
                    self.conn,
                    &multi_row_sql(head, tail, width, n),
                )?),
            };
            st.execute(&args[at..at + n * width])?;
            at += n * width;
            rows -= n;
        }
        Ok(())
    }
}

fn largest_power_of_two_at_most(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

fn multi_row_sql(head: &str, tail: &str, width: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * width * 6);
    sql.push_str(head);
    sql.push_str(" VALUES ");
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            n += 1;
            sql.push('?');
            sql.push_str(&n.to_string());
        }
        sql.push(')');
    }
    sql.push(' ');
    sql.push_str(tail);
    sql
}

struct Writer<'c> {
    conn: &'c Connection,
    pids: Pids,
    rows: MultiRow<'c>,
}

/// The writer thread's loop: until the queue closes, take a batch, commit it, answer it.
pub(super) fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Pending>,
    observer: Option<Arc<dyn CommitObserver>>,
    mut wal: WalWatch,
) {
    let mut w = Writer {
        conn: &conn,
        pids: Pids::default(),
        rows: MultiRow::new(&conn),
    };
    let mut last = 0;
    while let Some(first) = rx.blocking_recv() {
        commit::gather(&rx, last);
        let batch = commit::fill_batch(first, &mut rx);
        last = batch.len();
        let (reqs, replies) = commit::split(batch);
        let started = Instant::now();
        let observe = |n: usize, events: usize| {
            if let Some(o) = &observer {
                o.batch_committed(n, events, started.elapsed());
            }
        };
        // Optimistically first; then with every read (what the optimistic plan assumed
        // absent may exist: that batch fails as a whole); then request by request (a
        // group as one), so that one bad write cannot take its neighbours down.
        let outcomes = match commit_batch(&mut w, &reqs, Reads::Optimistic) {
            Ok((outcomes, events)) => {
                observe(reqs.len(), events);
                outcomes
            }
            Err(_) => match commit_batch(&mut w, &reqs, Reads::All) {
                Ok((outcomes, events)) => {
                    observe(reqs.len(), events);
                    outcomes
                }
                Err(e) => {
                    if reqs.len() > 1 {
                        tracing::warn!(error = %e, size = reqs.len(), "batch failed; retrying its writes one by one");
                    }
                    reqs.iter()
                        .map(
                            |r| match commit_batch(&mut w, std::slice::from_ref(r), Reads::All) {
                                Ok((mut o, _)) => {
                                    o.pop().unwrap_or_else(|| Outcome::failed(&r.1, e.clone()))
                                }
                                Err(e) => Outcome::failed(&r.1, e),
                            },
                        )
                        .collect()
                }
            },
        };
        commit::reply_all(replies, outcomes);
        wal.after_commit(&conn);
    }
}

/// Which stream heads a batch reads before planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// Not those of streams the batch starts (expected version 0; their ids were just
    /// minted), nor the owners of the unique keys only such streams claim: if a stream
    /// exists after all, the event insert breaks `(stream_id, version)`; if a key is
    /// held, its insert breaks the key's primary key. Either rolls the batch back, and it
    /// is planned again with [`Reads::All`] (a held key is then a `Duplicate` for its
    /// request alone).
    Optimistic,
    /// Every stream head.
    All,
}

fn commit_batch(
    w: &mut Writer<'_>,
    reqs: &[commit::Request],
    reads: Reads,
) -> Result<(Outcomes, usize), StoreError> {
    let conn = w.conn;
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
    let result = (|| {
        let now = truncate_micros(Utc::now());
        let mut needs = Needs::of(reqs);
        if reads == Reads::Optimistic {
            let started: HashSet<Uuid> = reqs
                .iter()
                .flat_map(|(_, job)| job.writes())
                .filter(|p| p.write.expected_version == 0)
                .map(|p| p.write.stream_id)
                .collect();
            // A stream the batch starts and then changes again still starts here.
            needs.streams.retain(|s| !started.contains(s));
            // Keys that some other write claims or that any write releases are read.
            let mut read_keys: HashSet<(TenantId, &UniqueKey)> = HashSet::new();
            for (ctx, job) in reqs {
                for p in job.writes() {
                    let w = &p.write;
                    if !started.contains(&w.stream_id) {
                        read_keys.extend(w.claims.iter().map(|k| (ctx.tenant, k)));
                    }
                    read_keys.extend(w.releases.iter().map(|k| (ctx.tenant, k)));
                }
            }
            needs.keys.retain(|(t, k)| read_keys.contains(&(*t, k)));
        }
        let state = read_state(conn, &needs, to_micros(&now))?;
        let plan = commit::plan_batch(reqs, state, now);
        let events = plan.events.len();
        if !plan.is_empty() {
            apply(conn, &plan, &mut w.pids, &mut w.rows)?;
        }
        conn.execute_batch("COMMIT").map_err(db_err)?;
        Ok((plan.outcomes, events))
    })();
    if result.is_err() {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        // Ids interned by the rolled-back transaction do not exist.
        w.pids.0.clear();
    }
    result
}

/// What a batch depends on; expired idempotency records count as absent (`now` in µs).
fn read_state(conn: &Connection, needs: &Needs, now: i64) -> Result<BatchState, StoreError> {
    let mut state = BatchState::default();
    let mut st = conn
        .prepare_cached("SELECT tenant_id, version, hash FROM streams WHERE stream_id = ?1")
        .map_err(db_err)?;
    for s in &needs.streams {
        let row: Option<(Uuid, i64, Vec<u8>)> = st
            .query_row([s], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
            .map_err(db_err)?;
        if let Some((t, v, h)) = row {
            let hash = Hash32::from_slice(&h)
                .ok_or_else(|| StoreError::Corrupt(format!("stream {s} has a malformed hash")))?;
            state.heads.insert(*s, (TenantId(t), v, hash));
        }
    }
    let mut st = conn
        .prepare_cached(
            "SELECT stream_id FROM unique_keys WHERE tenant_id = ?1 AND scope = ?2 AND value = ?3",
        )
        .map_err(db_err)?;
    for (t, k) in &needs.keys {
        let owner: Option<Uuid> = st
            .query_row(params![t.0, k.scope, k.value], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        if let Some(o) = owner {
            state.owners.insert((*t, k.clone()), o);
        }
    }
    let mut st = conn
        .prepare_cached(
            "SELECT 1 FROM idempotency WHERE tenant_id = ?1 AND key = ?2 AND expires_at >= ?3",
        )
        .map_err(db_err)?;
    for (t, k) in &needs.idempotency {
        let found: Option<i64> = st
            .query_row(params![t.0, k, now], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        if found.is_some() {
            state.idempotency.insert((*t, k.clone()));
        }
    }
    let mut st = conn
        .prepare_cached("SELECT seq FROM ledger_heads WHERE tenant_id = ?1")
        .map_err(db_err)?;
    for t in &needs.tenants {
        let seq: Option<i64> = st
            .query_row([t.0], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        state.ledger.insert(*t, seq.unwrap_or(0));
    }
    Ok(state)
}

// `OR ROLLBACK`: a failed row rolls back the whole transaction (which the writer does on
// any failure anyway), so SQLite need not keep a statement journal to undo just the
// statement: without it, each multi-row insert copied every page it touched first.
const INSERT_EVENTS: &str = "INSERT OR ROLLBACK INTO events (tenant_id, seq, event_id, stream_type, stream_id, version, event_type, schema_version, payload, actor_id, correlation_id, causation_id, occurred_at, recorded_at, prev_hash, hash)";
const UPSERT_STREAMS: &str =
    "INSERT OR ROLLBACK INTO streams (stream_id, tenant_id, stream_type, version, hash)";
const UPSERT_STREAMS_TAIL: &str =
    "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, hash = excluded.hash";
const INSERT_RESOURCES: &str = "INSERT OR ROLLBACK INTO resources (tenant_id, resource_type, id, version, doc, created_at, updated_at, search_keys)";
const INSERT_SEARCH_ROWS: &str =
    "INSERT OR ROLLBACK INTO search_rows (pid, value, resource_id, system)";
const INSERT_KEYS: &str =
    "INSERT OR ROLLBACK INTO unique_keys (tenant_id, scope, value, stream_id)";

/// One search row as stored: (pid, value, resource id, system).
type StoredRow<'a> = (i64, &'a str, &'a Uuid, &'a str);

fn apply(
    conn: &Connection,
    plan: &Plan,
    pids: &mut Pids,
    rows: &mut MultiRow<'_>,
) -> Result<(), StoreError> {
    // Events.
    let mut args: Vec<Val<'_>> = Vec::with_capacity(plan.events.len() * 16);
    for e in &plan.events {
        args.extend_from_slice(&[
            Val::from(&e.tenant_id.0),
            Val::Int(e.seq),
            Val::from(&e.event_id),
            Val::Text(e.stream_type),
            Val::from(&e.stream_id),
            Val::Int(e.version),
            Val::Text(e.event_type),
            Val::Int(i64::from(e.schema_version)),
            Val::Text(e.payload_json),
            Val::from(&e.actor_id.0),
            Val::from(&e.correlation_id),
            e.causation_id.as_ref().map_or(Val::Null, Val::from),
            Val::Int(to_micros(&e.occurred_at)),
            Val::Int(to_micros(&e.recorded_at)),
            Val::Blob(&e.prev_hash.0),
            Val::Blob(&e.hash.0),
        ]);
    }
    rows.run(Table::Events, &args)?;

    // Stream heads.
    let mut args: Vec<Val<'_>> = Vec::with_capacity(plan.heads.len() * 5);
    for h in &plan.heads {
        args.extend_from_slice(&[
            Val::from(&h.head.stream_id),
            Val::from(&h.tenant.0),
            Val::Text(&h.head.stream_type),
            Val::Int(h.head.version),
            Val::Blob(&h.head.hash.0),
        ]);
    }
    rows.run(Table::Streams, &args)?;

    // Projections and their search rows: new resources are inserted with all their rows;
    // changed ones are upserted, and only the rows that changed are deleted and added.
    let mut adds: Vec<StoredRow<'_>> = Vec::new();
    let mut created: Vec<&PlannedResource> = Vec::new();
    let mut old_rows: Vec<(&PlannedResource, Vec<SearchRow>)> = Vec::new();
    for r in &plan.resources {
        if r.created {
            created.push(r);
            for s in r.search {
                let pid = pids.get(conn, r.tenant, r.resource_type, &s.param)?;
                adds.push((pid, &s.value, &r.id, &s.system));
            }
        } else {
            let stored: Option<String> = conn
                .prepare_cached(
                    "SELECT search_keys FROM resources WHERE tenant_id = ?1 AND resource_type = ?2 AND id = ?3",
                )
                .map_err(db_err)?
                .query_row(params![r.tenant.0, r.resource_type, r.id], |row| row.get(0))
                .optional()
                .map_err(db_err)?;
            let old = match stored {
                Some(text) => commit::parse_search_keys(&text)?,
                None => Vec::new(),
            };
            old_rows.push((r, old));
        }
    }
    let mut args: Vec<Val<'_>> = Vec::with_capacity(created.len() * 8);
    for r in &created {
        let at = to_micros(&r.at);
        args.extend_from_slice(&[
            Val::from(&r.tenant.0),
            Val::Text(r.resource_type),
            Val::from(&r.id),
            Val::Int(r.version),
            Val::Text(r.doc_json),
            Val::Int(at),
            Val::Int(at),
            Val::Text(r.search_keys_json),
        ]);
    }
    rows.run(Table::Resources, &args)?;
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO resources (tenant_id, resource_type, id, version, doc, created_at, updated_at, search_keys) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)
             ON CONFLICT (tenant_id, resource_type, id) DO UPDATE SET version = excluded.version, doc = excluded.doc, updated_at = excluded.updated_at, search_keys = excluded.search_keys",
        )
        .map_err(db_err)?;
    let mut delete = conn
        .prepare_cached(
            "DELETE FROM search_rows WHERE pid = ?1 AND value = ?2 AND resource_id = ?3 AND system = ?4",
        )
        .map_err(db_err)?;
    for (r, old) in &old_rows {
        upsert
            .execute(params![
                r.tenant.0,
                r.resource_type,
                r.id,
                r.version,
                r.doc_json,
                to_micros(&r.at),
                r.search_keys_json
            ])
            .map_err(db_err)?;
        let new: HashSet<&SearchRow> = r.search.iter().collect();
        let before: HashSet<&SearchRow> = old.iter().collect();
        for s in old.iter().filter(|s| !new.contains(s)) {
            let pid = pids.get(conn, r.tenant, r.resource_type, &s.param)?;
            delete
                .execute(params![pid, s.value, r.id, s.system])
                .map_err(db_err)?;
        }
        for s in r.search.iter().filter(|s| !before.contains(s)) {
            let pid = pids.get(conn, r.tenant, r.resource_type, &s.param)?;
            adds.push((pid, &s.value, &r.id, &s.system));
        }
    }
    let mut args: Vec<Val<'_>> = Vec::with_capacity(adds.len() * 4);
    for (pid, value, id, system) in &adds {
        args.extend_from_slice(&[
            Val::Int(*pid),
            Val::Text(value),
            Val::from(*id),
            Val::Text(system),
        ]);
    }
    rows.run(Table::SearchRows, &args)?;

    // Full text of new resources.
    let mut text = conn
        .prepare_cached(
            "INSERT INTO text_index (body, tenant_id, resource_type, resource_id) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(db_err)?;
    for r in created.iter().filter(|r| r.full_text.is_some()) {
        text.execute(params![r.full_text, r.tenant.0, r.resource_type, r.id])
            .map_err(db_err)?;
    }

    // Unique keys.
    let mut st = conn
        .prepare_cached(
            "DELETE FROM unique_keys WHERE tenant_id = ?1 AND scope = ?2 AND value = ?3",
        )
        .map_err(db_err)?;
    for (t, k) in &plan.key_deletes {
        st.execute(params![t.0, k.scope, k.value]).map_err(db_err)?;
    }
    let mut args: Vec<Val<'_>> = Vec::with_capacity(plan.key_inserts.len() * 4);
    for (t, k, owner) in &plan.key_inserts {
        args.extend_from_slice(&[
            Val::from(&t.0),
            Val::Text(&k.scope),
            Val::Text(&k.value),
            Val::from(owner),
        ]);
    }
    rows.run(Table::Keys, &args)?;

    // Idempotency records.
    let mut st = conn
        .prepare_cached(
            "INSERT INTO idempotency (tenant_id, key, request_hash, status, body, resource_version, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (tenant_id, key) DO UPDATE SET request_hash = excluded.request_hash, status = excluded.status, body = excluded.body,
               resource_version = excluded.resource_version, created_at = excluded.created_at, expires_at = excluded.expires_at",
        )
        .map_err(db_err)?;
    for (t, r) in &plan.idempotency {
        st.execute(params![
            t.0,
            r.key,
            r.request_hash,
            r.status,
            r.body.to_string(),
            r.resource_version,
            to_micros(&r.created_at),
            to_micros(&r.expires_at)
        ])
        .map_err(db_err)?;
    }

    // Ledger heads.
    let mut st = conn
        .prepare_cached(
            "INSERT INTO ledger_heads (tenant_id, seq) VALUES (?1, ?2) ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq",
        )
        .map_err(db_err)?;
    for (t, seq) in &plan.ledger {
        st.execute(params![t.0, seq]).map_err(db_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_sizes_are_powers_of_two_that_cover_every_row() {
        for rows in 0..300usize {
            let mut left = rows;
            let mut sizes = Vec::new();
            while left > 0 {
                let n = largest_power_of_two_at_most(left.min(MAX_ROWS_PER_STATEMENT));
                assert!(n.is_power_of_two() && n <= left && n <= MAX_ROWS_PER_STATEMENT);
                sizes.push(n);
                left -= n;
            }
            assert_eq!(sizes.iter().sum::<usize>(), rows);
        }
    }

    #[test]
    fn multi_row_sql_numbers_every_placeholder() {
        let sql = multi_row_sql("INSERT INTO t (a, b)", "ON CONFLICT DO NOTHING", 2, 3);
        assert_eq!(
            sql,
            "INSERT INTO t (a, b) VALUES (?1, ?2), (?3, ?4), (?5, ?6) ON CONFLICT DO NOTHING"
        );
    }
}

//! The group-commit writer: one task, one dedicated connection.
//!
//! Each batch is one transaction of two round trips whatever its size: (1) `BEGIN`, the
//! batch's tenants (`set_config(.., true)`), the ledger-head locks and the set-based reads,
//! pipelined; (2) every bulk write (`INSERT ... SELECT FROM unnest(...)`, one statement
//! per table) and `COMMIT`, pipelined. The server runs pipelined statements in the order
//! they were sent, and a statement that fails aborts the transaction, so the `COMMIT`
//! behind it rolls back; see [`apply_and_commit`].
//!
//! Locking the batch tenants' ledger heads (in tenant order) before reading anything
//! serialises this writer with any other process writing the same tenants: the reads that
//! follow see what the other committed. What the locks cannot cover (two processes creating
//! a tenant's first ledger head at once) shows up as a unique violation; the request is
//! then retried on its own against fresh state.

use super::{APP_ROLE, connect, db_err, tenant_list};
use crate::commit::{
    self, BatchState, CommitObserver, Job, Needs, Outcome, Pending, Plan, PlannedHead,
    PlannedResource, Prepared, Request,
};
use crate::model::*;
use chrono::{DateTime, Utc};
use salus_kernel::clock::truncate_micros;
use salus_kernel::{Hash32, TenantContext, TenantId};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

/// How often one request is tried against fresh state after a unique violation,
/// serialization failure or deadlock caused by another process.
const ATTEMPTS: usize = 3;

/// The unique constraint on `events (stream_id, version)`: optimistic concurrency.
const STREAM_VERSION_KEY: &str = "events_stream_id_version_key";

type Outcomes = Vec<Outcome>;
type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

/// Why a batch transaction did not commit.
enum Fail {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Db(e)
    }
}

impl Fail {
    fn into_store(self) -> StoreError {
        match self {
            Fail::Db(e) => db_err(e),
            Fail::Store(e) => e,
        }
    }

    fn code(&self) -> Option<&SqlState> {
        match self {
            Fail::Db(e) => e.code(),
            Fail::Store(_) => None,
        }
    }

    fn constraint(&self) -> Option<&str> {
        match self {
            Fail::Db(e) => e.as_db_error().and_then(|d| d.constraint()),
            Fail::Store(_) => None,
        }
    }

    /// Another writer got there first; the same request may succeed (or fail cleanly)
    /// against fresh state.
    fn is_transient(&self) -> bool {
        matches!(
            self.code(),
            Some(c) if *c == SqlState::UNIQUE_VIOLATION
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
        )
    }
}

const SQL_BEGIN: &str = "BEGIN";
const SQL_COMMIT: &str = "COMMIT";
const SQL_SET_TENANTS: &str = "SELECT set_config('salus.tenants', $1, true)";
const SQL_LOCK_LEDGER: &str = "SELECT tenant_id, seq FROM ledger_heads WHERE tenant_id = ANY($1::uuid[]) ORDER BY tenant_id FOR UPDATE";
// Point reads are written as one index probe per key (LATERAL ... LIMIT 1) rather than as
// a join: on a young table, before autovacuum has analysed it, the planner otherwise
// takes the row-level-security predicate on tenant_id as its index condition and reads
// every row of the tenant for each batch.
const SQL_READ_STREAMS: &str = "SELECT s.stream_id, s.tenant_id, s.version, s.hash FROM unnest($1::uuid[]) AS u(id)
     CROSS JOIN LATERAL (SELECT stream_id, tenant_id, version, hash FROM streams WHERE stream_id = u.id LIMIT 1) s";
const SQL_READ_KEYS: &str = "SELECT u.t, u.s, u.v, k.stream_id FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(t, s, v)
     CROSS JOIN LATERAL (SELECT stream_id FROM unique_keys WHERE tenant_id = u.t AND scope = u.s AND value = u.v LIMIT 1) k";
const SQL_READ_IDEMPOTENCY: &str = "SELECT u.t, u.k FROM unnest($1::uuid[], $2::text[]) AS u(t, k)
     CROSS JOIN LATERAL (SELECT 1 FROM idempotency WHERE tenant_id = u.t AND key = u.k AND expires_at >= now() LIMIT 1) i";
const SQL_INSERT_EVENTS: &str = "INSERT INTO events (tenant_id, seq, event_id, stream_type, stream_id, version, event_type, schema_version, payload, actor_id, correlation_id, causation_id, occurred_at, recorded_at, prev_hash, hash)
     SELECT t, s, id, st, sid, v, et, sv, p::jsonb, a, c, ca, oc, rc, ph, h
     FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::text[], $5::uuid[], $6::bigint[], $7::text[], $8::int[], $9::text[], $10::uuid[], $11::uuid[], $12::uuid[], $13::timestamptz[], $14::timestamptz[], $15::bytea[], $16::bytea[])
       AS u(t, s, id, st, sid, v, et, sv, p, a, c, ca, oc, rc, ph, h)";
const SQL_INSERT_STREAMS: &str =
    "INSERT INTO streams (stream_id, tenant_id, stream_type, version, hash)
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::bytea[])";
const SQL_UPSERT_STREAMS: &str =
    "INSERT INTO streams (stream_id, tenant_id, stream_type, version, hash)
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::bytea[])
     ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, hash = excluded.hash";
const SQL_INSERT_RESOURCES: &str = "INSERT INTO resources (tenant_id, resource_type, id, version, doc, created_at, updated_at, search_keys)
     SELECT u.t, u.rt, u.id, u.v, u.d::jsonb, u.at, u.at, u.k::jsonb FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::bigint[], $5::text[], $6::timestamptz[], $7::text[]) AS u(t, rt, id, v, d, at, k)";
const SQL_UPSERT_RESOURCES: &str = "INSERT INTO resources (tenant_id, resource_type, id, version, doc, created_at, updated_at, search_keys)
     SELECT u.t, u.rt, u.id, u.v, u.d::jsonb, u.at, u.at, u.k::jsonb FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::bigint[], $5::text[], $6::timestamptz[], $7::text[]) AS u(t, rt, id, v, d, at, k)
     ON CONFLICT (tenant_id, resource_type, id) DO UPDATE SET version = excluded.version, doc = excluded.doc, updated_at = excluded.updated_at, search_keys = excluded.search_keys";
// The rows a resource had, found through the keys it kept (run before it is upserted).
const SQL_CLEAR_SEARCH: &str = "DELETE FROM search_index s
     USING unnest($1::uuid[], $2::uuid[], $3::text[]) AS u(id, t, rt)
     JOIN resources r ON r.tenant_id = u.t AND r.resource_type = u.rt AND r.id = u.id
     CROSS JOIN LATERAL jsonb_array_elements(r.search_keys) AS k(e)
     WHERE s.tenant_id = u.t AND s.resource_type = u.rt AND s.param = k.e->>0
       AND s.value = k.e->>1 AND s.system = k.e->>2 AND s.resource_id = u.id";
const SQL_INSERT_SEARCH: &str =
    "INSERT INTO search_index (tenant_id, resource_type, param, value, system, resource_id)
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[])";
const SQL_INSERT_TEXT: &str = "INSERT INTO text_index (tenant_id, resource_type, resource_id, tsv)
     SELECT u.t, u.rt, u.id, to_tsvector('simple', u.b) FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[]) AS u(t, rt, id, b)";
const SQL_DELETE_KEYS: &str =
    "DELETE FROM unique_keys k USING unnest($1::uuid[], $2::text[], $3::text[]) AS u(t, s, v)
     WHERE k.tenant_id = u.t AND k.scope = u.s AND k.value = u.v";
const SQL_INSERT_KEYS: &str = "INSERT INTO unique_keys (tenant_id, scope, value, stream_id)
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[])";
const SQL_INSERT_IDEMPOTENCY: &str = "INSERT INTO idempotency (tenant_id, key, request_hash, status, body, resource_version, created_at, expires_at)
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::jsonb[], $6::bigint[], $7::timestamptz[], $8::timestamptz[])
     ON CONFLICT (tenant_id, key) DO UPDATE SET request_hash = excluded.request_hash, status = excluded.status, body = excluded.body,
       resource_version = excluded.resource_version, created_at = excluded.created_at, expires_at = excluded.expires_at";
const SQL_UPSERT_LEDGER: &str =
    "INSERT INTO ledger_heads (tenant_id, seq) SELECT * FROM unnest($1::uuid[], $2::bigint[])
     ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq";
// Which of some stream ids are free, whoever holds the others (in a transaction that is
// rolled back): how a group finds the stream id another tenant holds.
const SQL_PROBE_STREAMS: &str =
    "INSERT INTO streams (stream_id, tenant_id, stream_type, version, hash)
     SELECT u.id, $2, '', 0, ''::bytea FROM unnest($1::uuid[]) AS u(id)
     ON CONFLICT (stream_id) DO NOTHING RETURNING stream_id";
const SQL_STREAM_VERSION: &str =
    "SELECT version FROM streams WHERE stream_id = $1 AND tenant_id = $2";

/// The writer's prepared statements.
struct Statements {
    begin: Statement,
    commit: Statement,
    set_tenants: Statement,
    lock_ledger: Statement,
    read_streams: Statement,
    read_keys: Statement,
    read_idempotency: Statement,
    insert_events: Statement,
    insert_streams: Statement,
    upsert_streams: Statement,
    insert_resources: Statement,
    upsert_resources: Statement,
    clear_search: Statement,
    insert_search: Statement,
    insert_text: Statement,
    delete_keys: Statement,
    insert_keys: Statement,
    insert_idempotency: Statement,
    upsert_ledger: Statement,
    stream_version: Statement,
}

impl Statements {
    async fn prepare(c: &Client) -> Result<Self, Fail> {
        let all = futures_util::future::try_join_all(
            [
                SQL_BEGIN,
                SQL_COMMIT,
                SQL_SET_TENANTS,
                SQL_LOCK_LEDGER,
                SQL_READ_STREAMS,
                SQL_READ_KEYS,
                SQL_READ_IDEMPOTENCY,
                SQL_INSERT_EVENTS,
                SQL_INSERT_STREAMS,
                SQL_UPSERT_STREAMS,
                SQL_INSERT_RESOURCES,
                SQL_UPSERT_RESOURCES,
                SQL_CLEAR_SEARCH,
                SQL_INSERT_SEARCH,
                SQL_DELETE_KEYS,
                SQL_INSERT_KEYS,
                SQL_INSERT_IDEMPOTENCY,
                SQL_UPSERT_LEDGER,
                SQL_STREAM_VERSION,
                SQL_INSERT_TEXT,
            ]
            .map(|s| c.prepare(s)),
        )
        .await?;
        let mut it = all.into_iter();
        let mut next = || {
            it.next().ok_or_else(|| {
                Fail::Store(StoreError::Unavailable(
                    "the server answered fewer prepares than were sent".into(),
                ))
            })
        };
        Ok(Self {
            begin: next()?,
            commit: next()?,
            set_tenants: next()?,
            lock_ledger: next()?,
            read_streams: next()?,
            read_keys: next()?,
            read_idempotency: next()?,
            insert_events: next()?,
            insert_streams: next()?,
            upsert_streams: next()?,
            insert_resources: next()?,
            upsert_resources: next()?,
            clear_search: next()?,
            insert_search: next()?,
            delete_keys: next()?,
            insert_keys: next()?,
            insert_idempotency: next()?,
            upsert_ledger: next()?,
            stream_version: next()?,
            insert_text: next()?,
        })
    }
}

/// The writer's connection, with its statements.
struct Conn {
    client: Client,
    st: Statements,
    _task: JoinHandle<()>,
}

/// The writer: owns its connection, reconnects when it was lost.
pub(super) struct Writer {
    url: String,
    conn: Option<Conn>,
    observer: Option<Arc<dyn CommitObserver>>,
    stats: Statistics,
}

/// Keeps the planner's statistics of the projection tables in step with their growth.
///
/// PostgreSQL plans a search from its statistics of `resources` and `search_index`; where
/// they are stale (autovacuum off, as on some managed and test servers, or not yet run
/// after a large import into a new database) the planner takes a table of thousands of
/// rows for an empty one and picks nested loops that scan it once per resource. So the
/// writer counts the rows it writes and, each time they have grown by a fifth (and by at
/// least [`Statistics::MIN_ROWS`]) since the last time, analyzes both tables on a
/// connection of its own, in the background: commits never wait for it.
struct Statistics {
    url: String,
    /// Rows written since the last ANALYZE was started.
    since: u64,
    /// Rows the tables held (as estimated) at the last ANALYZE.
    at_last: u64,
    running: Arc<AtomicBool>,
}

impl Statistics {
    const MIN_ROWS: u64 = 2_000;

    fn new(url: &str) -> Self {
        Statistics {
            url: url.to_owned(),
            since: 0,
            at_last: 0,
            running: Arc::default(),
        }
    }

    /// Note `rows` projection and search rows written; analyze when they are due.
    fn wrote(&mut self, rows: u64) {
        self.since += rows;
        if self.since < Self::MIN_ROWS.max(self.at_last / 5) || self.running.swap(true, SeqCst) {
            return;
        }
        self.at_last += self.since;
        self.since = 0;
        let (url, running) = (self.url.clone(), self.running.clone());
        tokio::spawn(async move {
            // As the connecting user (the tables' owner), not the application role.
            match connect(&url).await {
                Ok((client, _task)) => {
                    if let Err(e) = client
                        .batch_execute("ANALYZE resources, search_index")
                        .await
                    {
                        tracing::warn!(error = %e, "could not analyze the projection tables");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not connect to analyze"),
            }
            running.store(false, SeqCst);
        });
    }
}

impl Writer {
    /// Connect (as the application role) and prepare.
    pub(super) async fn open(
        url: &str,
        observer: Option<Arc<dyn CommitObserver>>,
    ) -> Result<Self, StoreError> {
        let mut w = Writer {
            url: url.to_owned(),
            conn: None,
            observer,
            stats: Statistics::new(url),
        };
        w.connected().await.map_err(Fail::into_store)?;
        Ok(w)
    }

    async fn connected(&mut self) -> Result<&Conn, Fail> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let (client, task) = connect(&self.url).await.map_err(Fail::Store)?;
            client
                .batch_execute(&format!("SET ROLE {APP_ROLE}"))
                .await?;
            let st = Statements::prepare(&client).await?;
            self.conn = Some(Conn {
                client,
                st,
                _task: task,
            });
        }
        self.conn
            .as_ref()
            .ok_or_else(|| Fail::Store(StoreError::Unavailable("no writer connection".into())))
    }

    /// The group-commit loop. Returns when the queue is closed and drained.
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Pending>) {
        let mut last = 0;
        while let Some(first) = rx.recv().await {
            if last > 1 {
                commit::gather(&rx, last);
            }
            let batch = commit::fill_batch(first, &mut rx);
            last = batch.len();
            let (reqs, replies) = commit::split(batch);
            let outcomes = self.commit_requests(&reqs).await;
            commit::reply_all(replies, outcomes);
        }
    }

    fn observe(&self, requests: usize, events: usize, started: Instant) {
        if let Some(o) = &self.observer {
            o.batch_committed(requests, events, started.elapsed());
        }
    }

    async fn commit_requests(&mut self, reqs: &[Request]) -> Outcomes {
        if reqs.len() == 1 {
            return vec![self.commit_one(&reqs[0]).await];
        }
        let started = Instant::now();
        match self.commit_batch(reqs).await {
            Ok((outcomes, events)) => {
                self.observe(reqs.len(), events, started);
                outcomes
            }
            Err(e) => {
                let e = e.into_store();
                tracing::warn!(error = %e, size = reqs.len(), "batch failed; retrying its writes one by one");
                let mut outcomes = Vec::with_capacity(reqs.len());
                for r in reqs {
                    outcomes.push(self.commit_one(r).await);
                }
                outcomes
            }
        }
    }

    /// One request (one write, or a group as one) in its own transaction, tried again
    /// against fresh state when another process won a race.
    async fn commit_one(&mut self, req: &Request) -> Outcome {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            match self.commit_batch(std::slice::from_ref(req)).await {
                Ok((mut outcomes, events)) => {
                    self.observe(1, events, started);
                    return outcomes.pop().unwrap_or_else(|| {
                        Outcome::failed(
                            &req.1,
                            StoreError::Unavailable("batch gave no outcome".into()),
                        )
                    });
                }
                Err(e) if e.constraint() == Some(STREAM_VERSION_KEY) => {
                    let writes = match &req.1 {
                        Job::One(p) => {
                            return Outcome::One(Err(self.stream_taken(&req.0, p).await));
                        }
                        Job::All(writes) => writes,
                    };
                    match self.group_stream_taken(&req.0, writes).await {
                        Ok(Some(error)) => return Outcome::All(Err(error)),
                        Ok(None) if attempt < ATTEMPTS => {
                            tracing::debug!(attempt, "group raced another writer; retrying");
                        }
                        Ok(None) => return Outcome::All(Err(e.into_store())),
                        Err(f) => return Outcome::All(Err(f.into_store())),
                    }
                }
                Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                    tracing::debug!(error = %e.into_store(), attempt, "write raced another writer; retrying");
                }
                Err(e) => return Outcome::failed(&req.1, e.into_store()),
            }
        }
    }

    /// [`Writer::stream_taken`] for a group, naming its write: going through the group
    /// in order against the stream versions the tenant sees, the first write that does
    /// not follow them (its stream moved on: another process wrote it) or that starts a
    /// stream of another tenant (whose rows are invisible here: its id is found taken by
    /// an insert that is rolled back). `None` when every write follows what is there now
    /// (the race is over: the group may be tried again).
    async fn group_stream_taken(
        &mut self,
        ctx: &TenantContext,
        writes: &[Prepared],
    ) -> Result<Option<StoreError>, Fail> {
        let mut ids: Vec<Uuid> = writes.iter().map(|p| p.write.stream_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let tenants = tenant_list(&[ctx.tenant]);
        let conn = self.connected().await?;
        let (c, st) = (&conn.client, &conn.st);
        let set: [&(dyn ToSql + Sync); 1] = [&tenants];
        let streams: [&(dyn ToSql + Sync); 1] = [&ids];
        let probe: [&(dyn ToSql + Sync); 2] = [&ids, &ctx.tenant.0];
        let read = tokio::try_join!(
            biased;
            c.execute(&st.begin, &[]),
            c.execute(&st.set_tenants, &set),
            c.query(&st.read_streams, &streams),
            c.query(SQL_PROBE_STREAMS, &probe),
        );
        // The probe's rows go, whatever came of it.
        self.rollback().await;
        let (_, _, seen, free) = read?;
        let mut versions: HashMap<Uuid, i64> = HashMap::with_capacity(seen.len());
        for r in &seen {
            versions.insert(r.try_get(0)?, r.try_get(2)?);
        }
        let mut taken: HashSet<Uuid> = ids.into_iter().collect();
        for r in &free {
            taken.remove(&r.try_get::<_, Uuid>(0)?);
        }
        for (index, p) in writes.iter().enumerate() {
            let w = &p.write;
            let actual = versions.get(&w.stream_id).copied();
            if actual.is_none() && taken.contains(&w.stream_id) {
                return Ok(Some(StoreError::in_group(index, StoreError::StreamTaken)));
            }
            let actual = actual.unwrap_or(0);
            if actual != w.expected_version {
                return Ok(Some(StoreError::in_group(
                    index,
                    StoreError::Conflict {
                        expected: w.expected_version,
                        actual,
                    },
                )));
            }
            versions.insert(w.stream_id, actual + w.events.len() as i64);
        }
        Ok(None)
    }

    /// The error for a write whose first event collided on `(stream_id, version)`: the
    /// stream moved on (another process wrote it), or it belongs to another tenant (its
    /// rows are invisible here).
    async fn stream_taken(&mut self, ctx: &TenantContext, w: &Prepared) -> StoreError {
        let tenants = tenant_list(&[ctx.tenant]);
        let conn = match self.connected().await {
            Ok(c) => c,
            Err(e) => return e.into_store(),
        };
        let (c, st) = (&conn.client, &conn.st);
        let set: [&(dyn ToSql + Sync); 1] = [&tenants];
        let key: [&(dyn ToSql + Sync); 2] = [&w.write.stream_id, &ctx.tenant.0];
        let read = async {
            let (_, _, row, _) = tokio::try_join!(
                biased;
                c.execute(&st.begin, &[]),
                c.execute(&st.set_tenants, &set),
                c.query_opt(&st.stream_version, &key),
                c.execute(&st.commit, &[]),
            )?;
            match row {
                Some(r) => r.try_get::<_, i64>(0),
                None => Ok(0),
            }
        };
        match read.await {
            Ok(actual) if actual != w.write.expected_version => StoreError::Conflict {
                expected: w.write.expected_version,
                actual,
            },
            Ok(_) => StoreError::StreamTaken,
            Err(e) => {
                self.rollback().await;
                db_err(e)
            }
        }
    }

    async fn rollback(&mut self) {
        let Some(conn) = &self.conn else { return };
        if conn.client.is_closed() {
            return;
        }
        if let Err(e) = conn.client.batch_execute("ROLLBACK").await {
            tracing::warn!(error = %e, "rollback failed; reconnecting");
            self.conn = None;
        }
    }

    /// One transaction for the whole batch. On error the transaction is rolled back.
    async fn commit_batch(&mut self, reqs: &[Request]) -> Result<(Outcomes, usize), Fail> {
        let out = self.try_commit_batch(reqs).await;
        if out.is_err() {
            self.rollback().await;
        }
        out
    }

    async fn try_commit_batch(&mut self, reqs: &[Request]) -> Result<(Outcomes, usize), Fail> {
        let conn = self.connected().await?;
        let (c, st) = (&conn.client, &conn.st);
        let needs = Needs::of(reqs);
        let state = read_state(c, st, &needs).await?;
        // Streams that exist already are updated; the others are inserted.
        let existing: HashSet<Uuid> = state.heads.keys().copied().collect();
        let now = truncate_micros(Utc::now());
        let plan = commit::plan_batch(reqs, state, now);
        let events = plan.events.len();
        if plan.is_empty() {
            c.execute(&st.commit, &[]).await?;
        } else {
            apply_and_commit(c, st, &plan, &existing).await?;
        }
        let rows: usize = plan.resources.iter().map(|r| 1 + r.search.len()).sum();
        self.stats.wrote(rows as u64);
        Ok((plan.outcomes, events))
    }
}

/// Run `f` only when `cond` holds. The future is created either way but tokio-postgres
/// sends nothing until it is polled.
async fn run_if<F>(cond: bool, f: F) -> Result<u64, tokio_postgres::Error>
where
    F: Future<Output = Result<u64, tokio_postgres::Error>>,
{
    if cond { f.await } else { Ok(0) }
}

/// Round trip 1: open the transaction, scope it to the batch's tenants, lock their ledger
/// heads, then read stream heads, key owners and idempotency keys.
async fn read_state(c: &Client, st: &Statements, needs: &Needs) -> Result<BatchState, Fail> {
    let tenants = tenant_list(&needs.tenants);
    let tenant_ids: Vec<Uuid> = needs.tenants.iter().map(|t| t.0).collect();
    let key_tenants: Vec<Uuid> = needs.keys.iter().map(|(t, _)| t.0).collect();
    let key_scopes: Vec<&str> = needs.keys.iter().map(|(_, k)| k.scope.as_str()).collect();
    let key_values: Vec<&str> = needs.keys.iter().map(|(_, k)| k.value.as_str()).collect();
    let idem_tenants: Vec<Uuid> = needs.idempotency.iter().map(|(t, _)| t.0).collect();
    let idem_keys: Vec<&str> = needs.idempotency.iter().map(|(_, k)| k.as_str()).collect();

    let no_rows = || async { Ok::<_, tokio_postgres::Error>(Vec::new()) };
    let keys = async {
        if needs.keys.is_empty() {
            no_rows().await
        } else {
            c.query(&st.read_keys, &[&key_tenants, &key_scopes, &key_values])
                .await
        }
    };
    let idem = async {
        if needs.idempotency.is_empty() {
            no_rows().await
        } else {
            c.query(&st.read_idempotency, &[&idem_tenants, &idem_keys])
                .await
        }
    };
    let set: [&(dyn ToSql + Sync); 1] = [&tenants];
    let lock: [&(dyn ToSql + Sync); 1] = [&tenant_ids];
    let streams: [&(dyn ToSql + Sync); 1] = [&needs.streams];
    let (_, _, ledger, streams, keys, idem) = tokio::try_join!(
        biased;
        c.execute(&st.begin, &[]),
        c.execute(&st.set_tenants, &set),
        c.query(&st.lock_ledger, &lock),
        c.query(&st.read_streams, &streams),
        keys,
        idem,
    )?;

    let mut state = BatchState::default();
    for t in &needs.tenants {
        state.ledger.insert(*t, 0);
    }
    for r in ledger {
        state
            .ledger
            .insert(TenantId(r.try_get(0)?), r.try_get::<_, i64>(1)?);
    }
    for r in streams {
        let s: Uuid = r.try_get(0)?;
        let h: &[u8] = r.try_get(3)?;
        let hash = Hash32::from_slice(h).ok_or_else(|| {
            Fail::Store(StoreError::Corrupt(format!(
                "stream {s} has a malformed hash"
            )))
        })?;
        state
            .heads
            .insert(s, (TenantId(r.try_get(1)?), r.try_get(2)?, hash));
    }
    for r in keys {
        let key = UniqueKey::new(r.try_get::<_, String>(1)?, r.try_get::<_, String>(2)?);
        state
            .owners
            .insert((TenantId(r.try_get(0)?), key), r.try_get(3)?);
    }
    for r in idem {
        state
            .idempotency
            .insert((TenantId(r.try_get(0)?), r.try_get(1)?));
    }
    Ok(state)
}

/// Column vectors of some stream heads.
struct HeadCols<'a> {
    stream: Vec<Uuid>,
    tenant: Vec<Uuid>,
    stream_type: Vec<&'a str>,
    version: Vec<i64>,
    hash: Vec<&'a [u8]>,
}

impl<'a> HeadCols<'a> {
    fn of(heads: impl Iterator<Item = &'a PlannedHead>) -> Self {
        let mut c = HeadCols {
            stream: Vec::new(),
            tenant: Vec::new(),
            stream_type: Vec::new(),
            version: Vec::new(),
            hash: Vec::new(),
        };
        for h in heads {
            c.stream.push(h.head.stream_id);
            c.tenant.push(h.tenant.0);
            c.stream_type.push(h.head.stream_type.as_str());
            c.version.push(h.head.version);
            c.hash.push(&h.head.hash.0[..]);
        }
        c
    }

    fn params(&self) -> Params<'_> {
        vec![
            &self.stream,
            &self.tenant,
            &self.stream_type,
            &self.version,
            &self.hash,
        ]
    }
}

/// Column vectors of some projections.
struct ResourceCols<'a> {
    tenant: Vec<Uuid>,
    resource_type: Vec<&'a str>,
    id: Vec<Uuid>,
    version: Vec<i64>,
    doc: Vec<&'a str>,
    /// When the write happened: `created_at` of a new resource, `updated_at` always.
    at: Vec<DateTime<Utc>>,
    /// The search rows as kept in `search_keys`.
    keys: Vec<&'a str>,
}

impl<'a> ResourceCols<'a> {
    fn of(resources: impl Iterator<Item = &'a PlannedResource<'a>>) -> Self {
        let mut c = ResourceCols {
            tenant: Vec::new(),
            resource_type: Vec::new(),
            id: Vec::new(),
            version: Vec::new(),
            doc: Vec::new(),
            at: Vec::new(),
            keys: Vec::new(),
        };
        for r in resources {
            c.tenant.push(r.tenant.0);
            c.resource_type.push(r.resource_type);
            c.id.push(r.id);
            c.version.push(r.version);
            c.doc.push(r.doc_json);
            c.at.push(r.at);
            c.keys.push(r.search_keys_json);
        }
        c
    }

    fn params(&self) -> Params<'_> {
        vec![
            &self.tenant,
            &self.resource_type,
            &self.id,
            &self.version,
            &self.doc,
            &self.at,
            &self.keys,
        ]
    }
}

/// Round trip 2: every write of the plan, one bulk statement per table (new rows are
/// inserted, existing ones upserted), pipelined in the order the server must run them
/// (search rows and keys are cleared before they are inserted again), then `COMMIT`.
///
/// The futures are polled in order (`biased`), and tokio-postgres sends a statement when
/// its future is first polled, so `COMMIT` is sent last; if a statement cannot even be
/// encoded, `try_join!` returns before polling the ones after it and `COMMIT` is never
/// sent. A statement the server refuses aborts the transaction, and the `COMMIT` after it
/// then rolls back.
async fn apply_and_commit(
    c: &Client,
    st: &Statements,
    plan: &Plan<'_>,
    existing: &HashSet<Uuid>,
) -> Result<(), Fail> {
    // events
    let ev = &plan.events;
    let e_tenant: Vec<Uuid> = ev.iter().map(|e| e.tenant_id.0).collect();
    let e_seq: Vec<i64> = ev.iter().map(|e| e.seq).collect();
    let e_id: Vec<Uuid> = ev.iter().map(|e| e.event_id).collect();
    let e_stype: Vec<&str> = ev.iter().map(|e| e.stream_type).collect();
    let e_stream: Vec<Uuid> = ev.iter().map(|e| e.stream_id).collect();
    let e_version: Vec<i64> = ev.iter().map(|e| e.version).collect();
    let e_type: Vec<&str> = ev.iter().map(|e| e.event_type).collect();
    let e_schema: Vec<i32> = ev.iter().map(|e| e.schema_version).collect();
    let e_payload: Vec<&str> = ev.iter().map(|e| e.payload_json).collect();
    let e_actor: Vec<Uuid> = ev.iter().map(|e| e.actor_id.0).collect();
    let e_corr: Vec<Uuid> = ev.iter().map(|e| e.correlation_id).collect();
    let e_cause: Vec<Option<Uuid>> = ev.iter().map(|e| e.causation_id).collect();
    let e_occurred: Vec<DateTime<Utc>> = ev.iter().map(|e| e.occurred_at).collect();
    let e_recorded: Vec<DateTime<Utc>> = ev.iter().map(|e| e.recorded_at).collect();
    let e_prev: Vec<&[u8]> = ev.iter().map(|e| &e.prev_hash.0[..]).collect();
    let e_hash: Vec<&[u8]> = ev.iter().map(|e| &e.hash.0[..]).collect();
    let events: Params = vec![
        &e_tenant,
        &e_seq,
        &e_id,
        &e_stype,
        &e_stream,
        &e_version,
        &e_type,
        &e_schema,
        &e_payload,
        &e_actor,
        &e_corr,
        &e_cause,
        &e_occurred,
        &e_recorded,
        &e_prev,
        &e_hash,
    ];

    // stream heads
    let is_new = |h: &&PlannedHead| !existing.contains(&h.head.stream_id);
    let new_heads = HeadCols::of(plan.heads.iter().filter(is_new));
    let old_heads = HeadCols::of(plan.heads.iter().filter(|h| !is_new(h)));
    let (new_heads_p, old_heads_p) = (new_heads.params(), old_heads.params());

    // projections
    let rs = &plan.resources;
    let created = ResourceCols::of(rs.iter().filter(|r| r.created));
    let updated = ResourceCols::of(rs.iter().filter(|r| !r.created));
    let (created_p, updated_p) = (created.params(), updated.params());

    // search rows: cleared for resources that existed before, then inserted
    let clear: Params = vec![&updated.id, &updated.tenant, &updated.resource_type];
    let rows: Vec<_> = rs
        .iter()
        .flat_map(|r| r.search.iter().map(move |s| (r, s)))
        .collect();
    let s_tenant: Vec<Uuid> = rows.iter().map(|(r, _)| r.tenant.0).collect();
    let s_type: Vec<&str> = rows.iter().map(|(r, _)| r.resource_type).collect();
    let s_param: Vec<&str> = rows.iter().map(|(_, s)| s.param.as_str()).collect();
    let s_value: Vec<&str> = rows.iter().map(|(_, s)| s.value.as_str()).collect();
    let s_system: Vec<&str> = rows.iter().map(|(_, s)| s.system.as_str()).collect();
    let s_id: Vec<Uuid> = rows.iter().map(|(r, _)| r.id).collect();
    let search: Params = vec![&s_tenant, &s_type, &s_param, &s_value, &s_system, &s_id];

    // full text of new resources
    let texts: Vec<_> = rs
        .iter()
        .filter(|r| r.created)
        .filter_map(|r| r.full_text.as_deref().map(|b| (r, b)))
        .collect();
    let x_tenant: Vec<Uuid> = texts.iter().map(|(r, _)| r.tenant.0).collect();
    let x_type: Vec<&str> = texts.iter().map(|(r, _)| r.resource_type).collect();
    let x_id: Vec<Uuid> = texts.iter().map(|(r, _)| r.id).collect();
    let x_body: Vec<&str> = texts.iter().map(|(_, b)| *b).collect();
    let text_rows: Params = vec![&x_tenant, &x_type, &x_id, &x_body];

    // unique keys
    let kd = &plan.key_deletes;
    let kd_tenant: Vec<Uuid> = kd.iter().map(|(t, _)| t.0).collect();
    let kd_scope: Vec<&str> = kd.iter().map(|(_, k)| k.scope.as_str()).collect();
    let kd_value: Vec<&str> = kd.iter().map(|(_, k)| k.value.as_str()).collect();
    let key_deletes: Params = vec![&kd_tenant, &kd_scope, &kd_value];
    let ki = &plan.key_inserts;
    let ki_tenant: Vec<Uuid> = ki.iter().map(|(t, _, _)| t.0).collect();
    let ki_scope: Vec<&str> = ki.iter().map(|(_, k, _)| k.scope.as_str()).collect();
    let ki_value: Vec<&str> = ki.iter().map(|(_, k, _)| k.value.as_str()).collect();
    let ki_owner: Vec<Uuid> = ki.iter().map(|(_, _, o)| *o).collect();
    let key_inserts: Params = vec![&ki_tenant, &ki_scope, &ki_value, &ki_owner];

    // idempotency records
    let id = &plan.idempotency;
    let i_tenant: Vec<Uuid> = id.iter().map(|(t, _)| t.0).collect();
    let i_key: Vec<&str> = id.iter().map(|(_, r)| r.key.as_str()).collect();
    let i_hash: Vec<&str> = id.iter().map(|(_, r)| r.request_hash.as_str()).collect();
    let i_status: Vec<i32> = id.iter().map(|(_, r)| i32::from(r.status)).collect();
    let i_body: Vec<&serde_json::Value> = id.iter().map(|(_, r)| &r.body).collect();
    let i_version: Vec<Option<i64>> = id.iter().map(|(_, r)| r.resource_version).collect();
    let i_created: Vec<DateTime<Utc>> = id.iter().map(|(_, r)| r.created_at).collect();
    let i_expires: Vec<DateTime<Utc>> = id.iter().map(|(_, r)| r.expires_at).collect();
    let idempotency: Params = vec![
        &i_tenant, &i_key, &i_hash, &i_status, &i_body, &i_version, &i_created, &i_expires,
    ];

    // ledger heads
    let l_tenant: Vec<Uuid> = plan.ledger.iter().map(|(t, _)| t.0).collect();
    let l_seq: Vec<i64> = plan.ledger.iter().map(|(_, s)| *s).collect();
    let ledger: Params = vec![&l_tenant, &l_seq];

    tokio::try_join!(
        biased;
        run_if(!ev.is_empty(), c.execute(&st.insert_events, &events)),
        run_if(!new_heads.stream.is_empty(), c.execute(&st.insert_streams, &new_heads_p)),
        run_if(!old_heads.stream.is_empty(), c.execute(&st.upsert_streams, &old_heads_p)),
        run_if(!created.id.is_empty(), c.execute(&st.insert_resources, &created_p)),
        // Before the upsert replaces the keys the old rows are found by.
        run_if(!updated.id.is_empty(), c.execute(&st.clear_search, &clear)),
        run_if(!updated.id.is_empty(), c.execute(&st.upsert_resources, &updated_p)),
        run_if(!rows.is_empty(), c.execute(&st.insert_search, &search)),
        run_if(!texts.is_empty(), c.execute(&st.insert_text, &text_rows)),
        run_if(!kd.is_empty(), c.execute(&st.delete_keys, &key_deletes)),
        run_if(!ki.is_empty(), c.execute(&st.insert_keys, &key_inserts)),
        run_if(!id.is_empty(), c.execute(&st.insert_idempotency, &idempotency)),
        run_if(!l_tenant.is_empty(), c.execute(&st.upsert_ledger, &ledger)),
        c.execute(&st.commit, &[]),
    )?;
    Ok(())
}

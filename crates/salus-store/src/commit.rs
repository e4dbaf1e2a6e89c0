//! Group commit: the write path shared by both backends.
//!
//! Requests queue on a channel; one writer drains what has queued up (up to
//! [`MAX_BATCH`]), reads the state the batch depends on (stream heads, unique-key owners,
//! idempotency keys, ledger heads), plans the batch in memory with [`plan_batch`], writes
//! the plan in one transaction and answers every request only after the commit is durable.
//! A request that conflicts or breaks a unique key fails alone; the rest of its batch
//! commits. If the transaction itself fails, the writer retries each request on its own so
//! that one bad write cannot take its neighbours down.
//!
//! A request is one write or a group of writes ([`Job`]) that commits all or nothing: the
//! planner decides the writes of a group in order, each against the effects of the ones
//! before it (a stream written twice, a key released by one and claimed by another), and
//! when one of them is refused it takes back what the others did to the plan, so that the
//! group fails alone with [`StoreError::InGroup`] and its neighbours in the batch commit.

use crate::model::*;
use chrono::{DateTime, Utc};
use salus_kernel::canonical::to_canonical_string;
use salus_kernel::event::{BodyRef, canonical_body, chain_hash};
use salus_kernel::{ActorId, Hash32, TenantContext, TenantId, new_id};
// foldhash: these maps are keyed by ids the server minted, hashed on the writer thread.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// The most requests one transaction carries.
pub const MAX_BATCH: usize = 1024;
/// How many writes may wait for the writer before callers are slowed down.
pub const QUEUE_DEPTH: usize = 16 * 1024;

/// Told about each committed batch (for metrics). Implemented above the store.
pub trait CommitObserver: Send + Sync + 'static {
    fn batch_committed(&self, requests: usize, events: usize, took: Duration);
}

/// One queued request and where its answer goes.
pub struct Pending {
    pub ctx: TenantContext,
    pub job: Job,
    pub reply: Reply,
}

/// What one request commits.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "a boxed single write would cost every ordinary commit an allocation"
)]
pub enum Job {
    /// One write ([`crate::Store::commit`]).
    One(Prepared),
    /// Writes that commit all or none ([`crate::Store::commit_all`]); never empty.
    All(Vec<Prepared>),
}

impl Job {
    /// The writes of the request, in order.
    pub fn writes(&self) -> &[Prepared] {
        match self {
            Job::One(p) => std::slice::from_ref(p),
            Job::All(ps) => ps,
        }
    }
}

/// The answer to one request, shaped as its [`Job`].
#[derive(Debug, Clone)]
pub enum Outcome {
    One(Result<Committed, StoreError>),
    All(Result<Vec<Committed>, StoreError>),
}

impl Outcome {
    /// `error` as the answer to `job`.
    pub fn failed(job: &Job, error: StoreError) -> Self {
        match job {
            Job::One(_) => Outcome::One(Err(error)),
            Job::All(_) => Outcome::All(Err(error)),
        }
    }

    pub fn is_ok(&self) -> bool {
        match self {
            Outcome::One(r) => r.is_ok(),
            Outcome::All(r) => r.is_ok(),
        }
    }
}

/// One event made ready before the queue: its id, its payload as canonical JSON text, and
/// the digest of its body (everything the chain hash covers but the link and the time).
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    pub event_id: Uuid,
    pub payload_json: String,
    pub body_digest: Hash32,
}

/// A write with the expensive, order-independent work done on the caller's thread, so
/// that the single committer only links hashes and writes rows. The JSON values of the
/// write (event payloads, projection document) are rendered to text here and dropped, so
/// the committer neither walks nor frees them.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The write, its event payloads and projection document taken out (`null`).
    pub write: Write,
    pub events: Vec<PreparedEvent>,
    /// The projection document as JSON text.
    pub doc_json: Option<String>,
    /// The projection's search rows (sorted, without duplicates) as a JSON array of
    /// `[param, value, system]`: what a backend keeps to find them again on the next change.
    pub search_keys_json: Option<String>,
}

impl Prepared {
    pub fn new(ctx: &TenantContext, mut write: Write) -> Self {
        write.occurred_at = salus_kernel::clock::truncate_micros(write.occurred_at);
        let mut values = Vec::with_capacity(write.events.len() + 1);
        let events = write
            .events
            .iter_mut()
            .enumerate()
            .map(|(i, ev)| {
                let event_id = new_id();
                let payload_json = to_canonical_string(&ev.payload);
                values.push(std::mem::take(&mut ev.payload));
                let body = BodyRef {
                    event_id,
                    tenant_id: ctx.tenant,
                    stream_type: &write.stream_type,
                    stream_id: write.stream_id,
                    version: write.expected_version + 1 + i as i64,
                    event_type: &ev.event_type,
                    schema_version: ev.schema_version,
                    actor_id: ctx.actor,
                    correlation_id: ctx.correlation_id,
                    causation_id: ctx.causation_id,
                    occurred_at: write.occurred_at,
                };
                let body_digest = Hash32::sha256(canonical_body(&body, &payload_json).as_bytes());
                PreparedEvent {
                    event_id,
                    payload_json,
                    body_digest,
                }
            })
            .collect();
        let mut doc_json = None;
        let mut search_keys_json = None;
        if let Some(p) = write.projection.as_mut() {
            p.search.sort_by(|a, b| {
                (&a.param, &a.value, &a.system).cmp(&(&b.param, &b.value, &b.system))
            });
            p.search.dedup();
            doc_json = Some(match p.doc_json.take() {
                Some(text) => text,
                None => p.doc.to_string(),
            });
            values.push(std::mem::take(&mut p.doc));
            search_keys_json = Some(search_keys_json_of(&p.search));
        }
        drop(values);
        Self {
            write,
            events,
            doc_json,
            search_keys_json,
        }
    }
}

/// `[[param, value, system], ...]`.
pub fn search_keys_json_of(rows: &[SearchRow]) -> String {
    let keys: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r.param.as_str(), r.value.as_str(), r.system.as_str()))
        .collect();
    serde_json::to_string(&keys).unwrap_or_else(|_| "[]".to_owned())
}

/// Parse what [`search_keys_json_of`] wrote.
pub fn parse_search_keys(text: &str) -> Result<Vec<SearchRow>, StoreError> {
    let keys: Vec<(String, String, String)> = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("stored search keys do not parse: {e}")))?;
    Ok(keys
        .into_iter()
        .map(|(param, value, system)| SearchRow {
            param,
            system,
            value,
        })
        .collect())
}

/// One request of a batch: who asks, and the prepared write or group.
pub type Request = (TenantContext, Job);

/// A writer answered a request with an outcome of another shape (a bug).
fn mismatched() -> StoreError {
    StoreError::Unavailable("the writer answered a request with an outcome of another shape".into())
}

/// The sending side of the queue. Cloning is cheap; [`CommitQueue::close`] stops new writes
/// and lets the writer finish what is queued.
pub struct CommitQueue {
    tx: Mutex<Option<mpsc::Sender<Pending>>>,
    done: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

impl CommitQueue {
    /// A queue and the receiving end for the writer; the writer must send on the returned
    /// `done` sender when it has drained the queue and stopped.
    pub fn new() -> (Arc<Self>, mpsc::Receiver<Pending>, oneshot::Sender<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (done_tx, done_rx) = oneshot::channel();
        (
            Arc::new(Self {
                tx: Mutex::new(Some(tx)),
                done: tokio::sync::Mutex::new(Some(done_rx)),
            }),
            rx,
            done_tx,
        )
    }

    pub async fn submit(&self, ctx: &TenantContext, write: Write) -> Result<Committed, StoreError> {
        match self.send(ctx, Job::One(Prepared::new(ctx, write))).await? {
            Outcome::One(r) => r,
            Outcome::All(_) => Err(mismatched()),
        }
    }

    /// Commit every write or none (see [`crate::Store::commit_all`]).
    pub async fn submit_all(
        &self,
        ctx: &TenantContext,
        writes: Vec<Write>,
    ) -> Result<Vec<Committed>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let writes = writes.into_iter().map(|w| Prepared::new(ctx, w)).collect();
        match self.send(ctx, Job::All(writes)).await? {
            Outcome::All(r) => r,
            Outcome::One(_) => Err(mismatched()),
        }
    }

    async fn send(&self, ctx: &TenantContext, job: Job) -> Result<Outcome, StoreError> {
        let sender = {
            let guard = self.tx.lock().map_err(|_| StoreError::ShuttingDown)?;
            guard.clone().ok_or(StoreError::ShuttingDown)?
        };
        let (reply, answer) = oneshot::channel();
        sender
            .send(Pending {
                ctx: ctx.clone(),
                job,
                reply,
            })
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        drop(sender);
        answer
            .await
            .map_err(|_| StoreError::Unavailable("writer stopped before answering".into()))
    }

    /// Refuse new writes and wait until every queued one has been answered.
    pub async fn close(&self) {
        if let Ok(mut guard) = self.tx.lock() {
            guard.take();
        }
        let done = self.done.lock().await.take();
        if let Some(done) = done {
            let _ = done.await;
        }
    }
}

/// At most this many short pauses are spent gathering a batch (see [`gather`]).
const GATHER_PAUSES: usize = 8;
/// How long each gathering pause lasts.
const GATHER_PAUSE: Duration = Duration::from_micros(50);

/// Under load, give the callers just answered a moment to queue their next write before
/// the batch is taken, so that they share this transaction rather than wait for the next:
/// a few short pauses while the queue is still growing and smaller than the last batch.
/// Without it, closed-loop callers settle into two cohorts that take turns, each batch
/// half as large and the fixed cost of a transaction paid twice as often. Called on the
/// writer's own thread (a timer would round the pause up to a millisecond).
pub fn gather(rx: &mpsc::Receiver<Pending>, last: usize) {
    if last <= 1 {
        return;
    }
    for _ in 0..GATHER_PAUSES {
        let before = rx.len();
        if before + 1 >= last {
            break;
        }
        std::thread::sleep(GATHER_PAUSE);
        if rx.len() == before {
            break;
        }
    }
}

/// Drain up to [`MAX_BATCH`] already-queued requests after `first`.
pub fn fill_batch(first: Pending, rx: &mut mpsc::Receiver<Pending>) -> Vec<Pending> {
    let mut batch = Vec::with_capacity(64);
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
    batch
}

/// What a batch needs to read before it can be planned.
#[derive(Debug, Default)]
pub struct Needs {
    pub streams: Vec<Uuid>,
    pub keys: Vec<(TenantId, UniqueKey)>,
    pub idempotency: Vec<(TenantId, String)>,
    pub tenants: Vec<TenantId>,
}

impl Needs {
    pub fn of(batch: &[Request]) -> Self {
        let mut n = Needs::default();
        let mut streams = HashSet::new();
        let mut keys = HashSet::new();
        let mut idem = HashSet::new();
        let mut tenants = HashSet::new();
        for (ctx, job) in batch {
            let t = ctx.tenant;
            for p in job.writes() {
                let w = &p.write;
                if streams.insert(w.stream_id) {
                    n.streams.push(w.stream_id);
                }
                for k in w.claims.iter().chain(w.releases.iter()) {
                    if keys.insert((t, k.clone())) {
                        n.keys.push((t, k.clone()));
                    }
                }
                if let Some(r) = &w.idempotency
                    && idem.insert((t, r.key.clone()))
                {
                    n.idempotency.push((t, r.key.clone()));
                }
            }
            if tenants.insert(t) {
                n.tenants.push(t);
            }
        }
        n
    }
}

/// The state read for a batch.
#[derive(Debug, Default)]
pub struct BatchState {
    /// stream id → (tenant, version, hash)
    pub heads: HashMap<Uuid, (TenantId, i64, Hash32)>,
    /// (tenant, key) → owning stream
    pub owners: HashMap<(TenantId, UniqueKey), Uuid>,
    /// idempotency keys already stored
    pub idempotency: HashSet<(TenantId, String)>,
    /// tenant → last ledger seq
    pub ledger: HashMap<TenantId, i64>,
}

/// An event as the committer writes it.
#[derive(Debug, Clone)]
pub struct PlannedEvent<'a> {
    pub tenant_id: TenantId,
    pub seq: i64,
    pub event_id: Uuid,
    pub stream_type: &'a str,
    pub stream_id: Uuid,
    pub version: i64,
    pub event_type: &'a str,
    pub schema_version: i32,
    /// Canonical JSON text.
    pub payload_json: &'a str,
    pub actor_id: ActorId,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: Hash32,
    pub hash: Hash32,
}

impl PlannedEvent<'_> {
    /// The envelope as it will read back from the store.
    pub fn to_envelope(&self) -> Result<salus_kernel::EventEnvelope, serde_json::Error> {
        Ok(salus_kernel::EventEnvelope {
            event_id: self.event_id,
            tenant_id: self.tenant_id,
            seq: self.seq,
            stream_type: self.stream_type.to_owned(),
            stream_id: self.stream_id,
            version: self.version,
            event_type: self.event_type.to_owned(),
            schema_version: self.schema_version,
            payload: serde_json::from_str(self.payload_json)?,
            actor_id: self.actor_id,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

#[derive(Debug, Clone)]
pub struct PlannedHead {
    pub tenant: TenantId,
    pub head: StreamHead,
}

#[derive(Debug, Clone)]
pub struct PlannedResource<'a> {
    pub tenant: TenantId,
    pub resource_type: &'a str,
    pub id: Uuid,
    pub version: i64,
    /// The projection document as JSON text.
    pub doc_json: &'a str,
    /// The resource did not exist before this batch.
    pub created: bool,
    /// Folded text for the full-text index (indexed when created).
    pub full_text: Option<String>,
    /// When the write that produced this version happened (its `occurred_at`): the
    /// resource's `created_at` when created, its `updated_at` always.
    pub at: DateTime<Utc>,
    pub search: &'a [SearchRow],
    /// `search` as [`search_keys_json_of`] renders it.
    pub search_keys_json: &'a str,
}

/// Everything one batch writes, and each request's answer.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    pub recorded_at: DateTime<Utc>,
    pub events: Vec<PlannedEvent<'a>>,
    pub heads: Vec<PlannedHead>,
    pub resources: Vec<PlannedResource<'a>>,
    pub key_deletes: Vec<(TenantId, UniqueKey)>,
    pub key_inserts: Vec<(TenantId, UniqueKey, Uuid)>,
    pub idempotency: Vec<(TenantId, IdempotencyRecord)>,
    pub ledger: Vec<(TenantId, i64)>,
    /// One per request, in queue order.
    pub outcomes: Vec<Outcome>,
}

impl Plan<'_> {
    /// Nothing to write: no event and no projection (a refresh writes only a projection).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.resources.is_empty()
    }
}

fn check_write(w: &Write) -> Result<(), StoreError> {
    if w.events.is_empty() && !w.is_refresh() {
        return Err(StoreError::InvalidWrite(
            "a write needs at least one event, or only refreshes the projection of an existing stream".into(),
        ));
    }
    if w.stream_type.is_empty() {
        return Err(StoreError::InvalidWrite("stream type is empty".into()));
    }
    if w.expected_version < 0 {
        return Err(StoreError::InvalidWrite(
            "expected version is negative".into(),
        ));
    }
    Ok(())
}

/// Plan a batch in memory: decide each request's outcome in queue order against the read
/// state and the effects of the requests before it. The writes of a group are decided in
/// order too; when one is refused, the effects of those before it are taken back and the
/// group fails as a whole.
pub fn plan_batch(batch: &[Request], state: BatchState, recorded_at: DateTime<Utc>) -> Plan<'_> {
    // Final owner of each touched key, next to what the database holds now.
    let original_owners = state.owners.clone();
    let mut p = Planner {
        plan: Plan {
            recorded_at,
            outcomes: Vec::with_capacity(batch.len()),
            ..Plan::default()
        },
        state,
        head_index: HashMap::new(),
        resource_index: HashMap::new(),
        ledger_touched: Vec::new(),
        journal: None,
    };
    for (ctx, job) in batch {
        let outcome = match job {
            Job::One(prepared) => Outcome::One(p.plan_write(ctx, prepared)),
            Job::All(writes) => Outcome::All(p.plan_group(ctx, writes)),
        };
        p.plan.outcomes.push(outcome);
    }
    let Planner {
        mut plan,
        state,
        ledger_touched,
        ..
    } = p;

    // Key changes: compare the final owners with what the database holds.
    let mut touched: Vec<&(TenantId, UniqueKey)> = original_owners.keys().collect();
    for k in state.owners.keys() {
        if !original_owners.contains_key(k) {
            touched.push(k);
        }
    }
    for slot in touched {
        let before = original_owners.get(slot);
        let after = state.owners.get(slot);
        if before != after {
            if before.is_some() {
                plan.key_deletes.push(slot.clone());
            }
            if let Some(owner) = after {
                plan.key_inserts.push((slot.0, slot.1.clone(), *owner));
            }
        }
    }
    for t in ledger_touched {
        if let Some(seq) = state.ledger.get(&t) {
            plan.ledger.push((t, *seq));
        }
    }
    plan
}

/// The planner's working state while it goes through a batch.
struct Planner<'a> {
    plan: Plan<'a>,
    state: BatchState,
    head_index: HashMap<Uuid, usize>,
    resource_index: HashMap<(TenantId, &'a str, Uuid), usize>,
    ledger_touched: Vec<TenantId>,
    /// While a group is planned: how to take back what its writes did so far. Ordinary
    /// writes keep none.
    journal: Option<Journal<'a>>,
}

/// What the writes of a group have done to the planner so far: the lengths of the plan's
/// lists before the group (what it appended is cut off), the tenant's ledger seq, and the
/// earlier value of everything it changed in place.
struct Journal<'a> {
    tenant: TenantId,
    ledger_seq: Option<i64>,
    events: usize,
    heads: usize,
    resources: usize,
    idempotency: usize,
    ledger_touched: usize,
    undo: Vec<Undo<'a>>,
}

/// One change to take back, with the value it replaced.
enum Undo<'a> {
    Head(Uuid, Option<(TenantId, i64, Hash32)>),
    Owner((TenantId, UniqueKey), Option<Uuid>),
    Idempotency((TenantId, String)),
    PlannedHead(usize, PlannedHead),
    PlannedResource(usize, PlannedResource<'a>),
}

impl<'a> Planner<'a> {
    /// Every write of a group, or none.
    fn plan_group(
        &mut self,
        ctx: &TenantContext,
        writes: &'a [Prepared],
    ) -> Result<Vec<Committed>, StoreError> {
        self.journal = Some(Journal {
            tenant: ctx.tenant,
            ledger_seq: self.state.ledger.get(&ctx.tenant).copied(),
            events: self.plan.events.len(),
            heads: self.plan.heads.len(),
            resources: self.plan.resources.len(),
            idempotency: self.plan.idempotency.len(),
            ledger_touched: self.ledger_touched.len(),
            undo: Vec::new(),
        });
        let mut done = Vec::with_capacity(writes.len());
        for (index, prepared) in writes.iter().enumerate() {
            match self.plan_write(ctx, prepared) {
                Ok(c) => done.push(c),
                Err(e) => {
                    self.roll_back_group();
                    return Err(StoreError::in_group(index, e));
                }
            }
        }
        self.journal = None;
        Ok(done)
    }

    /// Take back what the group being planned did.
    fn roll_back_group(&mut self) {
        let Some(j) = self.journal.take() else { return };
        for undo in j.undo.into_iter().rev() {
            match undo {
                Undo::Head(stream, Some(before)) => {
                    self.state.heads.insert(stream, before);
                }
                Undo::Head(stream, None) => {
                    self.state.heads.remove(&stream);
                }
                Undo::Owner(slot, Some(owner)) => {
                    self.state.owners.insert(slot, owner);
                }
                Undo::Owner(slot, None) => {
                    self.state.owners.remove(&slot);
                }
                Undo::Idempotency(key) => {
                    self.state.idempotency.remove(&key);
                }
                Undo::PlannedHead(i, before) => self.plan.heads[i] = before,
                Undo::PlannedResource(i, before) => self.plan.resources[i] = before,
            }
        }
        for h in self.plan.heads.drain(j.heads..) {
            self.head_index.remove(&h.head.stream_id);
        }
        for r in self.plan.resources.drain(j.resources..) {
            self.resource_index
                .remove(&(r.tenant, r.resource_type, r.id));
        }
        self.plan.events.truncate(j.events);
        self.plan.idempotency.truncate(j.idempotency);
        self.ledger_touched.truncate(j.ledger_touched);
        match j.ledger_seq {
            Some(seq) => self.state.ledger.insert(j.tenant, seq),
            None => self.state.ledger.remove(&j.tenant),
        };
    }

    /// Decide one write against the state so far and, when it is accepted, add its
    /// effects to the plan.
    fn plan_write(
        &mut self,
        ctx: &TenantContext,
        prepared: &'a Prepared,
    ) -> Result<Committed, StoreError> {
        let w = &prepared.write;
        let tenant = ctx.tenant;
        let recorded_at = self.plan.recorded_at;
        check_write(w)?;
        // Optimistic concurrency on the stream head.
        let (current, prev_hash) = match self.state.heads.get(&w.stream_id) {
            Some((t, v, h)) if *t == tenant => (*v, *h),
            Some(_) => return Err(StoreError::StreamTaken),
            None => (0, Hash32::ZERO),
        };
        if current != w.expected_version {
            return Err(StoreError::Conflict {
                expected: w.expected_version,
                actual: current,
            });
        }
        // Unique keys.
        for k in &w.claims {
            if let Some(owner) = self.state.owners.get(&(tenant, k.clone()))
                && *owner != w.stream_id
            {
                return Err(StoreError::Duplicate {
                    scope: k.scope.clone(),
                    value: k.value.clone(),
                    owner: *owner,
                });
            }
        }
        if let Some(r) = &w.idempotency
            && self.state.idempotency.contains(&(tenant, r.key.clone()))
        {
            return Err(StoreError::IdempotencyKeyTaken);
        }
        // Accepted: apply its effects to the in-memory state.
        for k in &w.releases {
            let slot = (tenant, k.clone());
            if self.state.owners.get(&slot) == Some(&w.stream_id) {
                self.state.owners.remove(&slot);
                if let Some(j) = &mut self.journal {
                    j.undo.push(Undo::Owner(slot, Some(w.stream_id)));
                }
            }
        }
        for k in &w.claims {
            let slot = (tenant, k.clone());
            match &mut self.journal {
                Some(j) => {
                    let before = self.state.owners.insert(slot.clone(), w.stream_id);
                    j.undo.push(Undo::Owner(slot, before));
                }
                None => {
                    self.state.owners.insert(slot, w.stream_id);
                }
            }
        }
        if let Some(r) = &w.idempotency {
            self.state.idempotency.insert((tenant, r.key.clone()));
            if let Some(j) = &mut self.journal {
                j.undo.push(Undo::Idempotency((tenant, r.key.clone())));
            }
            self.plan.idempotency.push((tenant, r.clone()));
        }
        let seq = self.state.ledger.entry(tenant).or_insert(0);
        if !self.ledger_touched.contains(&tenant) {
            self.ledger_touched.push(tenant);
        }
        let mut prev = prev_hash;
        let mut version = current;
        let events_before = self.plan.events.len();
        for (ev, pe) in w.events.iter().zip(&prepared.events) {
            version += 1;
            *seq += 1;
            let hash = chain_hash(&prev, &pe.body_digest, &recorded_at);
            self.plan.events.push(PlannedEvent {
                tenant_id: tenant,
                seq: *seq,
                event_id: pe.event_id,
                stream_type: &w.stream_type,
                stream_id: w.stream_id,
                version,
                event_type: &ev.event_type,
                schema_version: ev.schema_version,
                payload_json: &pe.payload_json,
                actor_id: ctx.actor,
                correlation_id: ctx.correlation_id,
                causation_id: ctx.causation_id,
                occurred_at: w.occurred_at,
                recorded_at,
                prev_hash: prev,
                hash,
            });
            prev = hash;
        }
        let before = self
            .state
            .heads
            .insert(w.stream_id, (tenant, version, prev));
        if let Some(j) = &mut self.journal {
            j.undo.push(Undo::Head(w.stream_id, before));
        }
        let head = PlannedHead {
            tenant,
            head: StreamHead {
                stream_id: w.stream_id,
                stream_type: w.stream_type.clone(),
                version,
                hash: prev,
            },
        };
        match self.head_index.get(&w.stream_id) {
            Some(&i) => {
                let before = std::mem::replace(&mut self.plan.heads[i], head);
                if let Some(j) = &mut self.journal {
                    j.undo.push(Undo::PlannedHead(i, before));
                }
            }
            None => {
                self.head_index.insert(w.stream_id, self.plan.heads.len());
                self.plan.heads.push(head);
            }
        }
        if let Some(p) = &w.projection {
            let key = (tenant, p.resource_type.as_str(), w.stream_id);
            match self.resource_index.get(&key) {
                Some(&i) => {
                    let r = &mut self.plan.resources[i];
                    if let Some(j) = &mut self.journal {
                        j.undo.push(Undo::PlannedResource(i, r.clone()));
                    }
                    r.version = version;
                    r.doc_json = prepared.doc_json.as_deref().unwrap_or_default();
                    r.search = &p.search;
                    r.search_keys_json = prepared.search_keys_json.as_deref().unwrap_or_default();
                    r.at = w.occurred_at;
                }
                None => {
                    self.resource_index.insert(key, self.plan.resources.len());
                    self.plan.resources.push(PlannedResource {
                        tenant,
                        resource_type: &p.resource_type,
                        id: w.stream_id,
                        version,
                        doc_json: prepared.doc_json.as_deref().unwrap_or_default(),
                        created: w.expected_version == 0,
                        full_text: p.full_text.as_deref().map(salus_kernel::text::fold),
                        at: w.occurred_at,
                        search: &p.search,
                        search_keys_json: prepared.search_keys_json.as_deref().unwrap_or_default(),
                    });
                }
            }
        }
        let committed = self.plan.events[events_before..]
            .iter()
            .map(|e| CommittedEvent {
                event_id: e.event_id,
                seq: e.seq,
                version: e.version,
                hash: e.hash,
            })
            .collect();
        Ok(Committed {
            version,
            events: committed,
            recorded_at,
        })
    }
}

/// Where one request's answer goes.
pub type Reply = oneshot::Sender<Outcome>;

/// Split a batch into the parts the planner needs and the reply channels.
pub fn split(batch: Vec<Pending>) -> (Vec<Request>, Vec<Reply>) {
    batch.into_iter().map(|p| ((p.ctx, p.job), p.reply)).unzip()
}

/// Answer every request of a batch.
pub fn reply_all(replies: Vec<Reply>, outcomes: Vec<Outcome>) {
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        let _ = reply.send(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use salus_kernel::{ActorId, NewEvent};
    use serde_json::json;

    fn prep(batch: Vec<(TenantContext, Write)>) -> Vec<Request> {
        batch
            .into_iter()
            .map(|(c, w)| {
                let p = Prepared::new(&c, w);
                (c, Job::One(p))
            })
            .collect()
    }

    fn ctx(t: u128) -> TenantContext {
        TenantContext::new(
            TenantId(Uuid::from_u128(t)),
            ActorId(Uuid::from_u128(9)),
            new_id(),
        )
    }

    fn write(stream: Uuid, expected: i64, claims: &[&str]) -> Write {
        Write {
            stream_type: "thing".into(),
            stream_id: stream,
            expected_version: expected,
            events: vec![NewEvent {
                event_type: "thing.happened".into(),
                schema_version: 1,
                payload: json!({}),
            }],
            occurred_at: Utc::now(),
            projection: None,
            claims: claims.iter().map(|c| UniqueKey::new("k", *c)).collect(),
            releases: vec![],
            idempotency: None,
        }
    }

    #[test]
    fn second_write_on_same_version_conflicts_and_first_wins() {
        let s = new_id();
        let batch = vec![(ctx(1), write(s, 0, &[])), (ctx(1), write(s, 0, &[]))];
        let reqs = prep(batch);
        let plan = plan_batch(&reqs, BatchState::default(), Utc::now());
        assert!(plan.outcomes[0].is_ok());
        assert!(matches!(
            plan.outcomes[1],
            Outcome::One(Err(StoreError::Conflict {
                expected: 0,
                actual: 1
            }))
        ));
        assert_eq!(plan.events.len(), 1);
    }

    #[test]
    fn chained_writes_in_one_batch_link_hashes_and_number_seq() {
        let s = new_id();
        let batch = vec![
            (ctx(1), write(s, 0, &[])),
            (ctx(1), write(s, 1, &[])),
            (ctx(2), write(new_id(), 0, &[])),
        ];
        let mut state = BatchState::default();
        state.ledger.insert(TenantId(Uuid::from_u128(1)), 41);
        let reqs = prep(batch);
        let plan = plan_batch(&reqs, state, Utc::now());
        assert!(plan.outcomes.iter().all(|o| o.is_ok()));
        assert_eq!(plan.events[0].seq, 42);
        assert_eq!(plan.events[1].seq, 43);
        assert_eq!(plan.events[2].seq, 1);
        assert_eq!(plan.events[1].prev_hash, plan.events[0].hash);
        assert!(
            plan.events
                .iter()
                .all(|e| e.to_envelope().unwrap().hash_is_valid())
        );
        assert_eq!(plan.heads.len(), 2);
        assert_eq!(plan.heads[0].head.version, 2);
    }

    #[test]
    fn duplicate_key_in_the_same_batch_fails_only_the_second() {
        let batch = vec![
            (ctx(1), write(new_id(), 0, &["a"])),
            (ctx(1), write(new_id(), 0, &["a"])),
            (ctx(2), write(new_id(), 0, &["a"])),
        ];
        let reqs = prep(batch);
        let plan = plan_batch(&reqs, BatchState::default(), Utc::now());
        assert!(plan.outcomes[0].is_ok());
        assert!(matches!(
            plan.outcomes[1],
            Outcome::One(Err(StoreError::Duplicate { .. }))
        ));
        assert!(plan.outcomes[2].is_ok(), "keys are per tenant");
        assert_eq!(plan.key_inserts.len(), 2);
    }

    #[test]
    fn released_key_can_be_claimed_by_another_stream_in_the_same_batch() {
        let a = new_id();
        let t = TenantId(Uuid::from_u128(1));
        let mut state = BatchState::default();
        state.heads.insert(a, (t, 1, Hash32::ZERO));
        state.owners.insert((t, UniqueKey::new("k", "x")), a);
        let mut release = write(a, 1, &[]);
        release.releases = vec![UniqueKey::new("k", "x")];
        let b = new_id();
        let batch = vec![(ctx(1), release), (ctx(1), write(b, 0, &["x"]))];
        let reqs = prep(batch);
        let plan = plan_batch(&reqs, state, Utc::now());
        assert!(plan.outcomes.iter().all(|o| o.is_ok()));
        assert_eq!(plan.key_deletes, vec![(t, UniqueKey::new("k", "x"))]);
        assert_eq!(plan.key_inserts, vec![(t, UniqueKey::new("k", "x"), b)]);
    }

    fn group(c: TenantContext, writes: Vec<Write>) -> Request {
        let writes = writes.into_iter().map(|w| Prepared::new(&c, w)).collect();
        (c, Job::All(writes))
    }

    fn one(c: TenantContext, w: Write) -> Request {
        let p = Prepared::new(&c, w);
        (c, Job::One(p))
    }

    #[test]
    fn a_failing_group_leaves_nothing_in_the_plan_and_its_neighbours_commit() {
        let t = TenantId(Uuid::from_u128(1));
        let (a, b, c) = (new_id(), new_id(), new_id());
        let reqs = vec![
            one(ctx(1), write(a, 0, &[])),
            // Claims "k", then fails on a stale version of `a` (at 1 by then).
            group(ctx(1), vec![write(b, 0, &["k"]), write(a, 0, &[])]),
            // "k" is free again: the group took nothing.
            one(ctx(1), write(c, 0, &["k"])),
        ];
        let plan = plan_batch(&reqs, BatchState::default(), Utc::now());
        assert!(plan.outcomes[0].is_ok());
        assert!(
            matches!(
                &plan.outcomes[1],
                Outcome::All(Err(StoreError::InGroup { index: 1, source }))
                    if **source == StoreError::Conflict { expected: 0, actual: 1 }
            ),
            "{:?}",
            plan.outcomes[1]
        );
        assert!(plan.outcomes[2].is_ok());
        let seqs: Vec<(Uuid, i64)> = plan.events.iter().map(|e| (e.stream_id, e.seq)).collect();
        assert_eq!(seqs, vec![(a, 1), (c, 2)], "dense seq, nothing of b");
        assert_eq!(plan.heads.len(), 2);
        assert_eq!(plan.key_inserts, vec![(t, UniqueKey::new("k", "k"), c)]);
        assert_eq!(plan.ledger, vec![(t, 2)]);
    }

    #[test]
    fn a_group_writes_one_stream_twice_in_order_and_links_its_chain() {
        let s = new_id();
        let mut first = write(s, 0, &[]);
        first.projection = Some(Projection {
            resource_type: "thing".into(),
            doc: json!({"n": 1}),
            doc_json: None,
            search: vec![SearchRow::new("n", "1")],
            full_text: Some("First".into()),
        });
        let mut second = write(s, 1, &[]);
        second.projection = Some(Projection {
            resource_type: "thing".into(),
            doc: json!({"n": 2}),
            doc_json: None,
            search: vec![SearchRow::new("n", "2")],
            full_text: None,
        });
        let reqs = vec![group(ctx(1), vec![first, second])];
        let plan = plan_batch(&reqs, BatchState::default(), Utc::now());
        let Outcome::All(Ok(done)) = &plan.outcomes[0] else {
            panic!("{:?}", plan.outcomes[0]);
        };
        assert_eq!(done.iter().map(|c| c.version).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(plan.events[1].prev_hash, plan.events[0].hash);
        assert_eq!(plan.heads.len(), 1);
        assert_eq!(plan.heads[0].head.version, 2);
        assert_eq!(plan.resources.len(), 1);
        let r = &plan.resources[0];
        assert!(r.created, "the stream starts in this group");
        assert_eq!((r.version, r.doc_json), (2, r#"{"n":2}"#));
        assert_eq!(r.full_text.as_deref(), Some("first"));
    }

    #[test]
    fn a_failing_group_restores_what_it_changed_of_earlier_requests() {
        let s = new_id();
        let t = TenantId(Uuid::from_u128(1));
        let mut state = BatchState::default();
        state.owners.insert((t, UniqueKey::new("k", "held")), s);
        let project = |w: &mut Write, n: u32| {
            w.projection = Some(Projection {
                resource_type: "thing".into(),
                doc: json!({ "n": n }),
                doc_json: None,
                search: vec![],
                full_text: None,
            });
        };
        let mut create = write(s, 0, &[]);
        project(&mut create, 1);
        let mut update = write(s, 1, &[]);
        update.releases = vec![UniqueKey::new("k", "held")];
        project(&mut update, 2);
        let reqs = vec![
            one(ctx(1), create),
            // Changes the head and the projection `create` planned and releases a key,
            // then fails on the version of a stream that does not exist.
            group(ctx(1), vec![update, write(new_id(), 3, &[])]),
        ];
        let plan = plan_batch(&reqs, state, Utc::now());
        assert!(plan.outcomes[0].is_ok());
        assert!(matches!(
            &plan.outcomes[1],
            Outcome::All(Err(StoreError::InGroup { index: 1, .. }))
        ));
        assert_eq!(plan.events.len(), 1);
        assert_eq!(plan.heads.len(), 1);
        assert_eq!(plan.heads[0].head.version, 1);
        assert_eq!(plan.heads[0].head.hash, plan.events[0].hash);
        assert_eq!(plan.resources.len(), 1);
        assert_eq!(
            (plan.resources[0].version, plan.resources[0].doc_json),
            (1, r#"{"n":1}"#)
        );
        assert!(plan.key_deletes.is_empty() && plan.key_inserts.is_empty());
    }

    mod groups_fail_without_trace {
        use super::*;
        use proptest::prelude::*;

        /// One write: which stream (0..3 exist at version 1, 3..6 are new), the version it
        /// expects, the keys (of 4) it claims and releases.
        #[derive(Debug, Clone)]
        struct Spec {
            stream: usize,
            expected: i64,
            claims: Vec<usize>,
            releases: Vec<usize>,
        }

        fn spec() -> impl Strategy<Value = Spec> {
            (
                0..6usize,
                0..3i64,
                proptest::collection::vec(0..4usize, 0..2),
                proptest::collection::vec(0..4usize, 0..2),
            )
                .prop_map(|(stream, expected, claims, releases)| Spec {
                    stream,
                    expected,
                    claims,
                    releases,
                })
        }

        /// Each job: a single write, or a group of one to four.
        fn jobs() -> impl Strategy<Value = Vec<(bool, Vec<Spec>)>> {
            proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(spec(), 1..5)),
                1..12,
            )
        }

        const KEYS: [&str; 4] = ["a", "b", "c", "d"];

        fn state(t: TenantId, streams: &[Uuid]) -> BatchState {
            let mut s = BatchState::default();
            for id in &streams[..3] {
                s.heads.insert(*id, (t, 1, Hash32::sha256(id.as_bytes())));
            }
            // "a" held by stream 0, "b" by stream 1.
            s.owners.insert((t, UniqueKey::new("k", "a")), streams[0]);
            s.owners.insert((t, UniqueKey::new("k", "b")), streams[1]);
            s.ledger.insert(t, 3);
            s
        }

        fn requests(streams: &[Uuid], jobs: &[(bool, Vec<Spec>)]) -> Vec<Request> {
            jobs.iter()
                .map(|(is_group, specs)| {
                    let c = ctx(1);
                    let writes: Vec<Write> = specs
                        .iter()
                        .enumerate()
                        .map(|(n, sp)| {
                            let mut w = write(streams[sp.stream], sp.expected, &[]);
                            w.projection = Some(Projection {
                                resource_type: "thing".into(),
                                doc: json!({ "n": n }),
                                doc_json: None,
                                search: vec![SearchRow::new("n", n.to_string())],
                                full_text: None,
                            });
                            w.claims = sp
                                .claims
                                .iter()
                                .map(|k| UniqueKey::new("k", KEYS[*k]))
                                .collect();
                            w.releases = sp
                                .releases
                                .iter()
                                .map(|k| UniqueKey::new("k", KEYS[*k]))
                                .collect();
                            w
                        })
                        .collect();
                    if *is_group {
                        group(c, writes)
                    } else {
                        one(
                            c,
                            writes
                                .into_iter()
                                .next()
                                .unwrap_or_else(|| write(new_id(), 0, &[])),
                        )
                    }
                })
                .collect()
        }

        type Summary = (
            Vec<(Uuid, i64, Uuid, i64, Hash32, Hash32)>,
            Vec<(Uuid, i64, Hash32)>,
            Vec<(Uuid, i64, String, bool, Vec<SearchRow>)>,
            Vec<(TenantId, UniqueKey)>,
            Vec<(TenantId, UniqueKey, Uuid)>,
            Vec<(TenantId, i64)>,
        );

        fn summary(plan: &Plan<'_>) -> Summary {
            let mut deletes = plan.key_deletes.clone();
            deletes.sort_by(|a, b| a.1.value.cmp(&b.1.value));
            let mut inserts = plan.key_inserts.clone();
            inserts.sort_by(|a, b| a.1.value.cmp(&b.1.value));
            (
                plan.events
                    .iter()
                    .map(|e| {
                        (
                            e.event_id,
                            e.seq,
                            e.stream_id,
                            e.version,
                            e.prev_hash,
                            e.hash,
                        )
                    })
                    .collect(),
                plan.heads
                    .iter()
                    .map(|h| (h.head.stream_id, h.head.version, h.head.hash))
                    .collect(),
                plan.resources
                    .iter()
                    .map(|r| {
                        (
                            r.id,
                            r.version,
                            r.doc_json.to_owned(),
                            r.created,
                            r.search.to_vec(),
                        )
                    })
                    .collect(),
                deletes,
                inserts,
                plan.ledger.clone(),
            )
        }

        proptest! {
            /// Planning a batch gives exactly the plan of its successful requests alone:
            /// a failed write or group leaves nothing behind and changes nothing for the
            /// requests after it.
            #[test]
            fn the_plan_is_that_of_the_requests_that_succeeded(jobs in jobs()) {
                let t = TenantId(Uuid::from_u128(1));
                let streams: Vec<Uuid> = (0..6).map(|_| new_id()).collect();
                let reqs = requests(&streams, &jobs);
                let at = Utc::now();
                let plan = plan_batch(&reqs, state(t, &streams), at);
                let kept: Vec<Request> = reqs
                    .iter()
                    .zip(&plan.outcomes)
                    .filter(|(_, o)| o.is_ok())
                    .map(|(r, _)| r.clone())
                    .collect();
                let alone = plan_batch(&kept, state(t, &streams), at);
                prop_assert!(alone.outcomes.iter().all(Outcome::is_ok));
                prop_assert_eq!(summary(&plan), summary(&alone));
                for (o, r) in plan.outcomes.iter().zip(&reqs) {
                    if let (Outcome::All(Err(e)), Job::All(ws)) = (o, &r.1) {
                        prop_assert!(
                            matches!(e, StoreError::InGroup { index, source }
                                if *index < ws.len() && !matches!(**source, StoreError::InGroup { .. })),
                            "{:?}", e
                        );
                    }
                }
            }
        }
    }
}

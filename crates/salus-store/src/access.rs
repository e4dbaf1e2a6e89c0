//! The data-access log: who read which patient's data, when, and why.
//!
//! Beside the event log and never mixed with it: an append-only, hash-chained log of reads,
//! one dense `seq` and one chain per tenant, `hash = SHA-256(prev_hash || canonical
//! entry)` where the canonical entry is the canonical JSON ([`salus_kernel::canonical`])
//! of every field but the hashes (the first entry of a tenant has `prev_hash` = 32 zero
//! bytes). Writes go through a queue of their own ([`AccessQueue`]), drained by a writer
//! of their own in each backend, so access logging never waits behind clinical writes nor
//! they behind it; `log_access` answers only once its entries are durable.
//!
//! What the backends share lives here: the values, the chain, batch planning and
//! verification. This module knows no HTTP and no rule about what must be logged.

use crate::Store;
use crate::ledger::Problem;
use crate::model::StoreError;
use chrono::{DateTime, Utc};
use salus_kernel::event::format_instant;
use salus_kernel::{ActorId, Hash32, TenantContext, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// What was done with the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessAction {
    /// One record by id, its history or a past state.
    Read,
    /// A list or search page.
    Search,
    /// A bulk export.
    Export,
    /// An attachment's content.
    Download,
}

impl AccessAction {
    pub const ALL: [AccessAction; 4] = [Self::Read, Self::Search, Self::Export, Self::Download];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Search => "search",
            Self::Export => "export",
            Self::Download => "download",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One access as the caller reports it; actor, tenant and request id come from the
/// [`TenantContext`], the time and the chain from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessEntry {
    pub patient_id: Uuid,
    pub resource_type: String,
    /// The record read; `None` when the access is not of one record (a search page).
    pub resource_id: Option<Uuid>,
    pub action: AccessAction,
    /// The purpose-of-use code (HL7 PurposeOfUse, e.g. `TREAT`).
    pub purpose: String,
    pub justification: Option<String>,
    pub break_glass: bool,
    /// The user agent or client id the request came from.
    pub client: Option<String>,
}

/// A stored, chained access entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessRecord {
    pub tenant_id: TenantId,
    pub seq: i64,
    pub entry_id: Uuid,
    pub actor_id: ActorId,
    pub patient_id: Uuid,
    pub resource_type: String,
    pub resource_id: Option<Uuid>,
    pub action: AccessAction,
    pub purpose: String,
    pub justification: Option<String>,
    pub break_glass: bool,
    pub client: Option<String>,
    pub request_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: Hash32,
    pub hash: Hash32,
}

impl AccessRecord {
    /// The canonical JSON of everything but the hashes: the bytes the chain covers.
    pub fn canonical(&self) -> String {
        let v = json!({
            "action": self.action.as_str(),
            "actor_id": self.actor_id.0,
            "break_glass": self.break_glass,
            "client": self.client,
            "entry_id": self.entry_id,
            "justification": self.justification,
            "patient_id": self.patient_id,
            "purpose": self.purpose,
            "recorded_at": format_instant(&self.recorded_at),
            "request_id": self.request_id,
            "resource_id": self.resource_id,
            "resource_type": self.resource_type,
            "seq": self.seq,
            "tenant_id": self.tenant_id.0,
        });
        salus_kernel::canonical::to_canonical_string(&v)
    }

    /// `SHA-256(prev_hash || canonical)`.
    pub fn compute_hash(&self) -> Hash32 {
        let mut h = Sha256::new();
        h.update(self.prev_hash.0);
        h.update(self.canonical().as_bytes());
        Hash32(h.finalize().into())
    }
}

/// Filters over one tenant's log; entries come in `seq` order after the cursor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccessQuery {
    pub patient: Option<Uuid>,
    pub actor: Option<ActorId>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
    pub action: Option<AccessAction>,
    /// Only break-glass entries when `Some(true)`.
    pub break_glass: Option<bool>,
    /// Continue after this seq.
    pub after: Option<i64>,
    pub limit: u32,
}

/// One caller's entries waiting for the access writer.
pub struct AccessRequest {
    pub ctx: TenantContext,
    pub entries: Vec<AccessEntry>,
    pub reply: oneshot::Sender<Result<(), StoreError>>,
}

/// Requests the writer takes into one transaction at most.
pub const MAX_BATCH: usize = 512;

/// The access log's own group-commit queue.
pub struct AccessQueue {
    tx: Mutex<Option<mpsc::UnboundedSender<AccessRequest>>>,
    done: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

impl AccessQueue {
    /// The queue, the writer's end, and the sender the writer signals when it has stopped.
    pub fn new() -> (
        Self,
        mpsc::UnboundedReceiver<AccessRequest>,
        oneshot::Sender<()>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel();
        (
            Self {
                tx: Mutex::new(Some(tx)),
                done: tokio::sync::Mutex::new(Some(done_rx)),
            },
            rx,
            done_tx,
        )
    }

    /// Queue the entries and wait until they are durable.
    pub async fn log(
        &self,
        ctx: &TenantContext,
        entries: Vec<AccessEntry>,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let sender = self
            .tx
            .lock()
            .map_err(|_| StoreError::Unavailable("access queue poisoned".into()))?
            .clone()
            .ok_or(StoreError::ShuttingDown)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(AccessRequest {
                ctx: ctx.clone(),
                entries,
                reply,
            })
            .map_err(|_| StoreError::Unavailable("the access-log writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the access-log writer stopped".into()))?
    }

    /// Take no more entries and wait until every queued one has been answered.
    pub async fn shutdown(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(done) = self.done.lock().await.take() {
            let _ = done.await;
        }
    }
}

/// After the first request, whatever else has queued, up to [`MAX_BATCH`].
pub fn drain(
    first: AccessRequest,
    rx: &mut mpsc::UnboundedReceiver<AccessRequest>,
) -> Vec<AccessRequest> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
    batch
}

/// The tenants a batch writes to.
pub fn batch_tenants(batch: &[AccessRequest]) -> Vec<TenantId> {
    let mut out: Vec<TenantId> = batch.iter().map(|r| r.ctx.tenant).collect();
    out.sort_by_key(|t| t.0);
    out.dedup();
    out
}

/// The records of a batch: each tenant's seq and chain continued from its head (`heads`
/// holds the last `(seq, hash)` of each tenant that has entries), all at `recorded_at`.
pub fn plan(
    heads: &HashMap<TenantId, (i64, Hash32)>,
    batch: &[AccessRequest],
    recorded_at: DateTime<Utc>,
) -> Vec<AccessRecord> {
    let mut heads = heads.clone();
    let mut out = Vec::new();
    for req in batch {
        for e in &req.entries {
            let (seq, prev) = heads
                .get(&req.ctx.tenant)
                .copied()
                .unwrap_or((0, Hash32::ZERO));
            let mut rec = AccessRecord {
                tenant_id: req.ctx.tenant,
                seq: seq + 1,
                entry_id: Uuid::now_v7(),
                actor_id: req.ctx.actor,
                patient_id: e.patient_id,
                resource_type: e.resource_type.clone(),
                resource_id: e.resource_id,
                action: e.action,
                purpose: e.purpose.clone(),
                justification: e.justification.clone(),
                break_glass: e.break_glass,
                client: e.client.clone(),
                request_id: req.ctx.correlation_id,
                recorded_at,
                prev_hash: prev,
                hash: Hash32::ZERO,
            };
            rec.hash = rec.compute_hash();
            heads.insert(req.ctx.tenant, (rec.seq, rec.hash));
            out.push(rec);
        }
    }
    out
}

/// Answer every request of a batch with the same outcome.
pub fn answer(batch: Vec<AccessRequest>, outcome: &Result<(), StoreError>) {
    for r in batch {
        let _ = r.reply.send(outcome.clone());
    }
}

/// A stored action; an unknown one reads as `read`, so that its hash no longer matches and
/// verify names the entry (a tampered row is never a panic nor an error of the read).
pub fn stored_action(s: &str) -> AccessAction {
    AccessAction::parse(s).unwrap_or(AccessAction::Read)
}

/// What verifying the access logs found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AccessVerifyReport {
    pub tenants: usize,
    pub entries: u64,
    pub problems: Vec<Problem>,
}

/// Page size of verification.
const VERIFY_PAGE: u32 = 1000;

/// Check every tenant's access log: dense seq from 1, each `prev_hash` the hash before,
/// each hash recomputed. The first problem of a tenant names its entry.
pub async fn verify(store: &dyn Store) -> Result<AccessVerifyReport, StoreError> {
    let mut report = AccessVerifyReport::default();
    for tenant in store.tenants().await? {
        report.tenants += 1;
        let mut expected_seq = 1;
        let mut prev = Hash32::ZERO;
        let mut after = 0;
        loop {
            let page = store
                .access_entries_after(tenant.id, after, VERIFY_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for rec in &page {
                report.entries += 1;
                let problem = |what: String| Problem {
                    tenant: tenant.id,
                    seq: Some(rec.seq),
                    event_id: Some(rec.entry_id),
                    record: "access entry",
                    what,
                };
                if rec.seq != expected_seq {
                    report.problems.push(problem(format!(
                        "access entry seq {} where {expected_seq} was expected (entries missing)",
                        rec.seq
                    )));
                } else if rec.prev_hash != prev {
                    report.problems.push(problem(
                        "access entry's prev_hash is not the hash before it".into(),
                    ));
                } else if rec.compute_hash() != rec.hash {
                    report.problems.push(problem(
                        "access entry's hash does not match its content".into(),
                    ));
                }
                expected_seq = rec.seq + 1;
                prev = rec.hash;
            }
        }
    }
    Ok(report)
}

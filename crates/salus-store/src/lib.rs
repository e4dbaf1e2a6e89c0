//! The persistence port and its two backends.
//!
//! [`Store`] is the one trait the services see. Under it: the event log with its per-stream
//! hash chain, projections and search rows written in the same transaction as their events,
//! unique keys, idempotency records, and the per-tenant ledger ([`ledger`]). Writes go
//! through a group-commit queue ([`commit`]): concurrent requests share one durable
//! transaction and each is answered only after that transaction is durable.
//!
//! What the backends share (batch planning, hashing, sealing, verification) lives here,
//! above the SQL; [`sqlite`] and [`postgres`] keep to their dialect. This crate knows no
//! HTTP and no domain rule.

pub mod access;
pub mod audit;
pub mod blobs;
pub mod commit;
pub mod ledger;
pub mod model;
pub mod postgres;
pub mod sql;
pub mod sqlite;

pub use model::*;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use salus_kernel::{EventEnvelope, Hash32, TenantContext, TenantId};
use uuid::Uuid;

/// The persistence port. Every tenant-scoped call takes the [`TenantContext`] first.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Append a write (events, projection, search rows, keys, idempotency record) atomically,
    /// through the group-commit queue.
    async fn commit(&self, ctx: &TenantContext, write: Write) -> Result<Committed, StoreError>;

    /// Commit every write of `writes` or none of them, in one durable transaction through
    /// the same group-commit queue (the group shares a batch with other requests; its
    /// failure is its own and theirs are theirs). The writes are decided in order, each
    /// against the effects of those before it: they may touch different streams, a stream
    /// written twice takes the first write's resulting version as the second's
    /// `expected_version`, and a key released by one may be claimed by a later one. When
    /// one is refused nothing of the group remains and the error is
    /// [`StoreError::InGroup`] with its index; an error that is no single write's (the
    /// database is unavailable, the store shuts down) comes as it is. An empty group
    /// commits nothing and answers `Ok(vec![])`.
    ///
    /// The default refuses any non-empty group, for stores that keep nothing.
    async fn commit_all(
        &self,
        ctx: &TenantContext,
        writes: Vec<Write>,
    ) -> Result<Vec<Committed>, StoreError> {
        let _ = ctx;
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        Err(StoreError::InvalidWrite(format!(
            "the {} store does not commit groups of writes",
            self.backend()
        )))
    }

    /// The current projection of one resource.
    async fn resource(
        &self,
        ctx: &TenantContext,
        resource_type: &str,
        id: Uuid,
    ) -> Result<Option<ResourceRow>, StoreError>;

    /// The current projection of one resource with its document as the stored JSON text,
    /// not parsed (the fast path for plain reads).
    async fn resource_text(
        &self,
        ctx: &TenantContext,
        resource_type: &str,
        id: Uuid,
    ) -> Result<Option<ResourceText>, StoreError>;

    /// The events of one stream in version order, those recorded at or before `until` when
    /// it is given.
    async fn stream(
        &self,
        ctx: &TenantContext,
        stream_id: Uuid,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<EventEnvelope>, StoreError>;

    /// Resources matching every filter, ordered by id (creation order), after the cursor.
    async fn search(
        &self,
        ctx: &TenantContext,
        query: &SearchQuery,
    ) -> Result<Vec<ResourceRow>, StoreError>;

    /// How many resources match every filter of `query` (its cursor and limit do not apply).
    async fn count(&self, ctx: &TenantContext, query: &SearchQuery) -> Result<u64, StoreError>;

    /// Full-text search over the resources of one type: every word of `query` must occur
    /// (case and accents ignored); best matches first.
    async fn search_text(
        &self,
        ctx: &TenantContext,
        resource_type: &str,
        query: &str,
        limit: u32,
    ) -> Result<Vec<TextHit>, StoreError>;

    /// Who holds a unique key, if anyone.
    async fn unique_owner(
        &self,
        ctx: &TenantContext,
        scope: &str,
        value: &str,
    ) -> Result<Option<Uuid>, StoreError>;

    /// A stored idempotency record.
    async fn idempotency(
        &self,
        ctx: &TenantContext,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Drop idempotency records that expired before `now`; returns how many.
    async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;

    // ---- tenants (system scope) ----

    async fn create_tenant(&self, tenant: &Tenant) -> Result<(), StoreError>;
    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError>;

    // ---- ledger (tenant scope, used by the sealer and by audit) ----

    /// Events with `seq > after`, in seq order, at most `limit`.
    async fn events_after(
        &self,
        tenant: TenantId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventEnvelope>, StoreError>;

    /// `(seq, hash)` of the events with `seq > after`, in seq order, at most `limit`: what
    /// the sealer needs, without reading the events' bodies.
    async fn event_hashes_after(
        &self,
        tenant: TenantId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Hash32)>, StoreError>;

    /// The tenant's events matching every filter of `query`, in seq order after its
    /// cursor, at most `query.limit` (the audit trail, see [`audit`]).
    async fn audit_events(
        &self,
        ctx: &TenantContext,
        query: &audit::EventQuery,
    ) -> Result<Vec<EventEnvelope>, StoreError>;

    /// One event by id, in any tenant (audit prove).
    async fn event_by_id(&self, event_id: Uuid) -> Result<Option<EventEnvelope>, StoreError>;

    /// The highest seq the ledger has assigned for the tenant (0 when none).
    async fn ledger_head(&self, tenant: TenantId) -> Result<i64, StoreError>;

    /// Every stream head of the tenant: (stream id, version, hash).
    async fn stream_heads(&self, tenant: TenantId) -> Result<Vec<StreamHead>, StoreError>;

    async fn tree_heads(&self, tenant: TenantId) -> Result<Vec<TreeHead>, StoreError>;
    async fn put_tree_head(&self, head: &TreeHead) -> Result<(), StoreError>;

    // ---- data-access log (see [`access`]) ----

    /// Append access entries to the tenant's access log through the access log's own
    /// queue; returns only when they are durable.
    async fn log_access(
        &self,
        ctx: &TenantContext,
        entries: Vec<access::AccessEntry>,
    ) -> Result<(), StoreError>;

    /// The tenant's access entries matching every filter, in seq order after the cursor.
    async fn access_log(
        &self,
        ctx: &TenantContext,
        query: &access::AccessQuery,
    ) -> Result<Vec<access::AccessRecord>, StoreError>;

    /// Access entries with `seq > after`, in seq order, at most `limit` (audit verify).
    async fn access_entries_after(
        &self,
        tenant: TenantId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<access::AccessRecord>, StoreError>;

    // ---- operations ----

    /// Whether the store answers and its schema is at the version this build expects.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Stop taking writes and wait until every queued write has been answered.
    async fn shutdown(&self);
}

//! Queries over the event log for the audit trail (the AuditEvent of requirements/000):
//! which events of a tenant's log an audit question selects.
//!
//! The store knows nothing of patients: a query for "everything about a patient" names
//! the patient's own stream ids and the search parameter (with the resource types that
//! carry it) under which other resources point at them, and each backend answers it from
//! its search index and the event log's `(stream_id, version)` index, never by reading the
//! tenant's whole log.

use chrono::{DateTime, Utc};
use salus_kernel::ActorId;
use uuid::Uuid;

/// Streams selected by their ids, or by the search rows of their resources.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamsOf {
    /// These streams themselves (a patient and the records merged into it).
    pub ids: Vec<Uuid>,
    /// And the streams of resources of `resource_types` that have a search row `param`
    /// whose value is one of `ids` (as text).
    pub param: String,
    pub resource_types: Vec<String>,
}

/// The events of one tenant's log matching every filter given, in ledger (seq) order after
/// the cursor.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventQuery {
    pub stream_type: Option<String>,
    pub stream_id: Option<Uuid>,
    pub streams: Option<StreamsOf>,
    pub actor: Option<ActorId>,
    pub event_type: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
    /// Continue after this seq.
    pub after: Option<i64>,
    /// Only events before this seq.
    pub before: Option<i64>,
    /// Newest (highest seq) first instead of oldest first.
    pub newest_first: bool,
    pub limit: u32,
}

//! The values that cross the store port.

use chrono::{DateTime, Utc};
use salus_kernel::{Hash32, NewEvent, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// One atomic write: the events of one stream plus everything derived from them.
#[derive(Debug, Clone)]
pub struct Write {
    pub stream_type: String,
    pub stream_id: Uuid,
    /// The stream version the decision was made on; 0 for a new stream.
    pub expected_version: i64,
    pub events: Vec<NewEvent>,
    pub occurred_at: DateTime<Utc>,
    /// The projection after these events, with its search rows (replacing the old ones).
    pub projection: Option<Projection>,
    /// Unique keys this write takes; a key held by another stream fails the write.
    pub claims: Vec<UniqueKey>,
    /// Unique keys this stream gives up.
    pub releases: Vec<UniqueKey>,
    /// The response to keep for an `Idempotency-Key` replay.
    pub idempotency: Option<IdempotencyRecord>,
}

impl Write {
    /// A write with no event that only replaces the projection (document and search rows)
    /// of an existing stream at its current version, as a rebuild after a change to how a
    /// projection is derived does: it takes and gives up no unique key and keeps no
    /// response; the log and its hash chain are untouched.
    pub fn is_refresh(&self) -> bool {
        self.events.is_empty()
            && self.projection.is_some()
            && self.expected_version > 0
            && self.claims.is_empty()
            && self.releases.is_empty()
            && self.idempotency.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    pub resource_type: String,
    pub doc: Value,
    /// The document already rendered as JSON text by the caller; when given, `doc` is not
    /// looked at (callers that have the text save the store a second rendering).
    #[serde(default)]
    pub doc_json: Option<String>,
    pub search: Vec<SearchRow>,
    /// Text for the full-text index, indexed (folded) when the resource is created.
    #[serde(default)]
    pub full_text: Option<String>,
}

/// A full-text hit with its relevance (higher is better).
#[derive(Debug, Clone, PartialEq)]
pub struct TextHit {
    pub row: ResourceRow,
    pub rank: f64,
}

/// A typed search row. `value` is already normalised by whoever extracts it (lower case,
/// accents folded for strings; `YYYY-MM-DD` for dates), so the store compares bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SearchRow {
    pub param: String,
    /// Token system, empty when none.
    pub system: String,
    pub value: String,
}

impl SearchRow {
    pub fn new(param: &str, value: impl Into<String>) -> Self {
        Self {
            param: param.to_owned(),
            system: String::new(),
            value: value.into(),
        }
    }

    pub fn token(param: &str, system: &str, value: impl Into<String>) -> Self {
        Self {
            param: param.to_owned(),
            system: system.to_owned(),
            value: value.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UniqueKey {
    pub scope: String,
    pub value: String,
}

impl UniqueKey {
    pub fn new(scope: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            scope: scope.into(),
            value: value.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub key: String,
    /// SHA-256 (hex) of method, path and body of the first request.
    pub request_hash: String,
    pub status: u16,
    pub body: Value,
    /// The resource the response names, when there is one (for its `Location`/`ETag`).
    pub resource_version: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The outcome of a committed write.
#[derive(Debug, Clone)]
pub struct Committed {
    pub version: i64,
    pub events: Vec<CommittedEvent>,
    pub recorded_at: DateTime<Utc>,
}

/// Where one committed event landed.
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedEvent {
    pub event_id: Uuid,
    pub seq: i64,
    pub version: i64,
    pub hash: Hash32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResourceRow {
    pub resource_type: String,
    pub id: Uuid,
    pub version: i64,
    pub doc: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A [`ResourceRow`] whose document is still the JSON text the store holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceText {
    pub id: Uuid,
    pub version: i64,
    /// A JSON object.
    pub doc: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterOp {
    Eq,
    Prefix,
    Ge,
    Le,
    Gt,
    Lt,
    /// Equal to any of these values (the filter's `value` is not looked at). An empty list
    /// matches nothing.
    In(Vec<String>),
    /// The value holds the filter's `value` as a substring (bytes compared).
    Contains,
    /// Some row of the parameter passes one of these tests (an OR over rows; a test with no
    /// comparison passes every row, so `AnyOf(vec![RowTest::default()])` asks that the
    /// parameter be present). The filter's `value` is not looked at; its `system`, when set,
    /// must hold as well. An empty list matches nothing.
    AnyOf(Vec<RowTest>),
    /// No row of the parameter passes any of these tests: a resource without the parameter
    /// matches (FHIR `:not`, and `:missing=true` with one empty test).
    NoneOf(Vec<RowTest>),
}

/// How a row's column compares with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
    Prefix,
    Contains,
}

impl Cmp {
    /// Whether `column` compares so with `value`, as the databases decide (byte order).
    pub fn holds(self, column: &str, value: &str) -> bool {
        match self {
            Cmp::Eq => column == value,
            Cmp::Lt => column < value,
            Cmp::Le => column <= value,
            Cmp::Gt => column > value,
            Cmp::Ge => column >= value,
            Cmp::Prefix => column.starts_with(value),
            Cmp::Contains => column.contains(value),
        }
    }
}

/// Comparisons one search row must pass together: on its value and on its system column
/// (which a parameter may use for a second value, such as the end of a period).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowTest {
    pub value: Vec<(Cmp, String)>,
    pub system: Vec<(Cmp, String)>,
}

impl RowTest {
    pub fn value(cmp: Cmp, v: impl Into<String>) -> Self {
        RowTest {
            value: vec![(cmp, v.into())],
            system: Vec::new(),
        }
    }

    pub fn passes(&self, row: &SearchRow) -> bool {
        self.value.iter().all(|(c, v)| c.holds(&row.value, v))
            && self.system.iter().all(|(c, v)| c.holds(&row.system, v))
    }
}

impl Filter {
    /// Whether a resource with these search rows passes the filter, as the store decides.
    pub fn matches(&self, rows: &[SearchRow]) -> bool {
        let mut own = rows
            .iter()
            .filter(|r| r.param == self.param || self.also.contains(&r.param))
            .filter(|r| self.system.as_ref().is_none_or(|s| &r.system == s));
        match &self.op {
            FilterOp::Eq => own.any(|r| r.value == self.value),
            FilterOp::Prefix => own.any(|r| r.value.starts_with(&self.value)),
            FilterOp::Ge => own.any(|r| r.value >= self.value),
            FilterOp::Le => own.any(|r| r.value <= self.value),
            FilterOp::Gt => own.any(|r| r.value > self.value),
            FilterOp::Lt => own.any(|r| r.value < self.value),
            FilterOp::In(vs) => own.any(|r| vs.contains(&r.value)),
            FilterOp::Contains => own.any(|r| r.value.contains(&self.value)),
            FilterOp::AnyOf(tests) => own.any(|r| tests.iter().any(|t| t.passes(r))),
            FilterOp::NoneOf(tests) => !own.any(|r| tests.iter().any(|t| t.passes(r))),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub param: String,
    /// Other parameters whose rows count as this one's: a parameter defined as the union
    /// of others (FHIR's `combo-code` is `code` and `component-code`) is searched on their
    /// rows and has none of its own. Empty for an ordinary parameter.
    pub also: Vec<String>,
    /// Token system to match; `None` matches any system.
    pub system: Option<String>,
    pub op: FilterOp,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    pub resource_type: String,
    pub filters: Vec<Filter>,
    /// Continue after this id (cursor): greater ids, or smaller ones when `newest_first`.
    pub after: Option<Uuid>,
    pub limit: u32,
    /// Order by id descending (newest first) instead of ascending.
    pub newest_first: bool,
    /// Order by this search parameter's value first (then by id, in the same direction).
    /// Every matching resource must have exactly one row of it.
    pub order_by: Option<OrderBy>,
}

/// Ordering by a search parameter's value, with the cursor's value part.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderBy {
    pub param: String,
    /// The ordering value of the row the cursor (`after`) points at.
    pub after_value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamHead {
    pub stream_id: Uuid,
    pub stream_type: String,
    pub version: i64,
    pub hash: Hash32,
}

/// A signed statement of the tenant's ledger: its first `tree_size` events have Merkle
/// root `root`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeHead {
    pub tenant_id: TenantId,
    pub tree_size: i64,
    pub root: Hash32,
    pub signed_at: DateTime<Utc>,
    /// Hex of the Ed25519 public key that signed.
    pub key_id: String,
    /// Hex of the Ed25519 signature over [`TreeHead::signing_input`].
    pub signature: String,
}

impl TreeHead {
    pub fn signing_input(
        tenant: TenantId,
        size: i64,
        root: &Hash32,
        signed_at: &DateTime<Utc>,
    ) -> String {
        format!(
            "salus-tree-head/v1\n{tenant}\n{size}\n{}\n{}",
            root.to_hex(),
            salus_kernel::event::format_instant(signed_at)
        )
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// Optimistic concurrency: the stream is not at the expected version.
    #[error("version conflict: expected {expected}, stream is at {actual}")]
    Conflict { expected: i64, actual: i64 },
    /// A unique key is held by another stream.
    #[error("{scope} {value} is already used by {owner}")]
    Duplicate {
        scope: String,
        value: String,
        owner: Uuid,
    },
    /// The idempotency key was stored by another request meanwhile.
    #[error("idempotency key already used")]
    IdempotencyKeyTaken,
    /// A new stream's id is another tenant's stream (stream ids are unique across
    /// tenants): possible only for ids a client chose.
    #[error("stream id belongs to another tenant")]
    StreamTaken,
    /// The write is malformed (a programming error upstream).
    #[error("invalid write: {0}")]
    InvalidWrite(String),
    /// Stored data failed an integrity check.
    #[error("integrity failure: {0}")]
    Corrupt(String),
    /// The database is unreachable or refused the operation.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store is shutting down and takes no more writes.
    #[error("store is shutting down")]
    ShuttingDown,
    /// One write of a group ([`crate::Store::commit_all`]) was refused, so none of the
    /// group committed: `index` is its place in the group, `source` why (a conflict, a
    /// duplicate key, a taken idempotency key, an invalid write). Never nested.
    #[error("write {index} of the group: {source}")]
    InGroup {
        index: usize,
        source: Box<StoreError>,
    },
}

impl StoreError {
    /// The error of the write at `index` of a group.
    pub fn in_group(index: usize, source: StoreError) -> Self {
        StoreError::InGroup {
            index,
            source: Box::new(source),
        }
    }

    /// The underlying error, out of its group if it is the error of one write of a group.
    pub fn kind(&self) -> &StoreError {
        match self {
            StoreError::InGroup { source, .. } => source,
            other => other,
        }
    }
}

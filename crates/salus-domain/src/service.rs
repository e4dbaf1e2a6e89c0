//! The command executor every aggregate goes through: load the current state from its
//! projection, check the caller's expected version (If-Match), `decide`, `evolve`, and
//! commit events + projection + search rows + unique keys + the idempotent response in one
//! write. Reads of past states (`as_of`) and history fold the event log.

use chrono::{DateTime, Utc};
use salus_kernel::aggregate::DomainEvent;
use salus_kernel::{Aggregate, Clock, DomainError, EventEnvelope, TenantContext};
use salus_store::{
    IdempotencyRecord, Projection, ResourceRow, SearchQuery, SearchRow, Store, StoreError,
    UniqueKey, Write,
};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

/// An aggregate kept as a projection with search rows.
pub trait Projected: Aggregate {
    const RESOURCE_TYPE: &'static str;
    fn search_rows(&self) -> Vec<SearchRow>;
    fn unique_keys(&self) -> Vec<UniqueKey> {
        Vec::new()
    }
    /// Text for the full-text index (indexed once, when the resource is created).
    fn full_text(&self) -> Option<String> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("{resource_type} {id} not found")]
    NotFound {
        resource_type: &'static str,
        id: Uuid,
    },
    #[error("version {expected} is stale; the current version is {current}")]
    Precondition { expected: i64, current: i64 },
    #[error("{scope} {value} is already used by {owner}")]
    Duplicate {
        scope: String,
        value: String,
        owner: Uuid,
    },
    #[error("the idempotency key was used by a concurrent request")]
    IdempotencyKeyTaken,
    #[error("stored data failed an integrity check: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { expected, actual } => ServiceError::Precondition {
                expected,
                current: actual,
            },
            StoreError::Duplicate {
                scope,
                value,
                owner,
            } => ServiceError::Duplicate {
                scope,
                value,
                owner,
            },
            StoreError::IdempotencyKeyTaken => ServiceError::IdempotencyKeyTaken,
            StoreError::Corrupt(m) => ServiceError::Corrupt(m),
            other => ServiceError::Store(other),
        }
    }
}

/// A typed view of a stored resource.
#[derive(Debug, Clone)]
pub struct Current<A> {
    pub state: A,
    pub row: ResourceRow,
}

/// How to remember the response of an idempotent request, in the same write.
pub struct Idempotency<'a> {
    pub key: String,
    pub request_hash: String,
    pub ttl: chrono::Duration,
    /// Renders the response (status, body) from the resource as it will be stored.
    pub render: &'a (dyn Fn(&ResourceRow) -> (u16, Value) + Sync),
}

#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
}

fn decode<A: Projected>(row: ResourceRow) -> Result<Current<A>, ServiceError> {
    let state: A = serde_json::from_value(row.doc.clone()).map_err(|e| {
        ServiceError::Corrupt(format!(
            "{} {} projection does not decode: {e}",
            A::RESOURCE_TYPE,
            row.id
        ))
    })?;
    Ok(Current { state, row })
}

/// The projection of `state` as the store keeps it, with its document already rendered.
fn projection_of<A: Projected>(state: &A, doc_json: String) -> Projection {
    Projection {
        resource_type: A::RESOURCE_TYPE.to_owned(),
        doc: Value::Null,
        doc_json: Some(doc_json),
        search: state.search_rows(),
        full_text: state.full_text(),
    }
}

fn fold_events<A: Projected>(events: &[EventEnvelope]) -> Result<Option<A>, ServiceError> {
    let mut state: Option<A> = A::initial();
    for e in events {
        let ev = A::decode_stored(&e.event_type, e.schema_version, &e.payload).map_err(|err| {
            ServiceError::Corrupt(format!("event {} does not decode: {err}", e.event_id))
        })?;
        state = A::evolve(state, &ev);
    }
    Ok(state)
}

impl Services {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The current state, or `None`.
    pub async fn load<A: Projected>(
        &self,
        ctx: &TenantContext,
        id: Uuid,
    ) -> Result<Option<Current<A>>, ServiceError> {
        match self.store.resource(ctx, A::RESOURCE_TYPE, id).await? {
            Some(row) => Ok(Some(decode(row)?)),
            None => Ok(None),
        }
    }

    /// The stored projection row of a resource, undecoded (the fast path for plain reads).
    pub async fn row<A: Projected>(
        &self,
        ctx: &TenantContext,
        id: Uuid,
    ) -> Result<Option<ResourceRow>, ServiceError> {
        Ok(self.store.resource(ctx, A::RESOURCE_TYPE, id).await?)
    }

    /// The state as it stood at `at` (from the event log).
    pub async fn as_of<A: Projected>(
        &self,
        ctx: &TenantContext,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<Current<A>>, ServiceError> {
        let events = self.store.stream(ctx, id, Some(at)).await?;
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(None);
        };
        if first.stream_type != A::STREAM_TYPE {
            return Ok(None);
        }
        let Some(state) = fold_events::<A>(&events)? else {
            return Ok(None);
        };
        let doc = serde_json::to_value(&state).map_err(|e| ServiceError::Corrupt(e.to_string()))?;
        Ok(Some(Current {
            state,
            row: ResourceRow {
                resource_type: A::RESOURCE_TYPE.to_owned(),
                id,
                version: last.version,
                doc,
                created_at: first.occurred_at,
                updated_at: last.occurred_at,
            },
        }))
    }

    /// The state as it stood at `version` (its first `version` events), with the instant
    /// that version was written; `None` when the stream is not of `A` or has no such version.
    pub async fn at_version<A: Projected>(
        &self,
        ctx: &TenantContext,
        id: Uuid,
        version: i64,
    ) -> Result<Option<Current<A>>, ServiceError> {
        let mut events = self.history::<A>(ctx, id).await?;
        events.retain(|e| e.version <= version);
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(None);
        };
        if last.version != version {
            return Ok(None);
        }
        let Some(state) = fold_events::<A>(&events)? else {
            return Ok(None);
        };
        let doc = serde_json::to_value(&state).map_err(|e| ServiceError::Corrupt(e.to_string()))?;
        Ok(Some(Current {
            state,
            row: ResourceRow {
                resource_type: A::RESOURCE_TYPE.to_owned(),
                id,
                version: last.version,
                doc,
                created_at: first.occurred_at,
                updated_at: last.occurred_at,
            },
        }))
    }

    /// The state after each version, oldest first, each with the instant it was written
    /// (the stream folded once); empty when the stream is not of `A`.
    pub async fn versions<A: Projected>(
        &self,
        ctx: &TenantContext,
        id: Uuid,
    ) -> Result<Vec<Current<A>>, ServiceError> {
        let events = self.history::<A>(ctx, id).await?;
        let Some(first) = events.first() else {
            return Ok(Vec::new());
        };
        let created_at = first.occurred_at;
        let mut state: Option<A> = A::initial();
        let mut out = Vec::with_capacity(events.len());
        for e in &events {
            let ev =
                A::decode_stored(&e.event_type, e.schema_version, &e.payload).map_err(|err| {
                    ServiceError::Corrupt(format!("event {} does not decode: {err}", e.event_id))
                })?;
            state = A::evolve(state, &ev);
            let Some(s) = &state else { continue };
            let doc = serde_json::to_value(s).map_err(|e| ServiceError::Corrupt(e.to_string()))?;
            out.push(Current {
                state: s.clone(),
                row: ResourceRow {
                    resource_type: A::RESOURCE_TYPE.to_owned(),
                    id,
                    version: e.version,
                    doc,
                    created_at,
                    updated_at: e.occurred_at,
                },
            });
        }
        Ok(out)
    }

    /// Every event of the resource's stream, oldest first.
    pub async fn history<A: Projected>(
        &self,
        ctx: &TenantContext,
        id: Uuid,
    ) -> Result<Vec<EventEnvelope>, ServiceError> {
        let events = self.store.stream(ctx, id, None).await?;
        if events
            .first()
            .is_some_and(|e| e.stream_type != A::STREAM_TYPE)
        {
            return Ok(Vec::new());
        }
        Ok(events)
    }

    pub async fn search<A: Projected>(
        &self,
        ctx: &TenantContext,
        query: &SearchQuery,
    ) -> Result<Vec<Current<A>>, ServiceError> {
        self.store
            .search(ctx, query)
            .await?
            .into_iter()
            .map(decode)
            .collect()
    }

    /// Run a command against aggregate `id`. `make` builds the command from the current
    /// state (None for a new stream) and the current instant. `if_match` is the version the
    /// caller saw; a different current version fails with [`ServiceError::Precondition`].
    pub async fn execute<A, F>(
        &self,
        ctx: &TenantContext,
        id: Uuid,
        if_match: Option<i64>,
        make: F,
        idempotency: Option<Idempotency<'_>>,
    ) -> Result<Current<A>, ServiceError>
    where
        A: Projected,
        F: FnOnce(Option<&A>, DateTime<Utc>) -> Result<A::Command, DomainError>,
    {
        let current: Option<Current<A>> = self.load(ctx, id).await?;
        self.apply(ctx, id, current, if_match, make, idempotency)
            .await
    }

    /// Derive the projection of stream `id` (document and search rows) again from its
    /// events, upcast as needed, and store it at the same version, keeping its
    /// `updated_at`: after a change to how an aggregate's document or search rows are
    /// made. The log is untouched. `false` when there is no such resource; a stream
    /// written meanwhile is a [`ServiceError::Precondition`] (run it again).
    pub async fn reindex<A: Projected>(
        &self,
        ctx: &TenantContext,
        id: Uuid,
    ) -> Result<bool, ServiceError> {
        let Some(row) = self.store.resource(ctx, A::RESOURCE_TYPE, id).await? else {
            return Ok(false);
        };
        let events = self.store.stream(ctx, id, None).await?;
        let version = events.last().map(|e| e.version).unwrap_or(0);
        if version != row.version {
            return Err(ServiceError::Precondition {
                expected: row.version,
                current: version,
            });
        }
        let Some(state) = fold_events::<A>(&events)? else {
            return Ok(false);
        };
        let doc = serde_json::to_value(&state).map_err(|e| ServiceError::Corrupt(e.to_string()))?;
        let write = Write {
            stream_type: A::STREAM_TYPE.to_owned(),
            stream_id: id,
            expected_version: version,
            events: Vec::new(),
            occurred_at: row.updated_at,
            projection: Some(projection_of(&state, doc.to_string())),
            claims: Vec::new(),
            releases: Vec::new(),
            idempotency: None,
        };
        self.store.commit(ctx, write).await?;
        Ok(true)
    }

    /// Run a command that starts a new stream under a freshly minted `id`: nothing is read
    /// first (the store still refuses the write if the stream exists).
    pub async fn create<A, F>(
        &self,
        ctx: &TenantContext,
        id: Uuid,
        make: F,
        idempotency: Option<Idempotency<'_>>,
    ) -> Result<Current<A>, ServiceError>
    where
        A: Projected,
        F: FnOnce(Option<&A>, DateTime<Utc>) -> Result<A::Command, DomainError>,
    {
        self.apply(ctx, id, None, None, make, idempotency).await
    }

    async fn apply<A, F>(
        &self,
        ctx: &TenantContext,
        id: Uuid,
        current: Option<Current<A>>,
        if_match: Option<i64>,
        make: F,
        idempotency: Option<Idempotency<'_>>,
    ) -> Result<Current<A>, ServiceError>
    where
        A: Projected,
        F: FnOnce(Option<&A>, DateTime<Utc>) -> Result<A::Command, DomainError>,
    {
        let version = current.as_ref().map(|c| c.row.version).unwrap_or(0);
        // A version asked of a resource that is not there (in this tenant) is a 404, as
        // for a read: never a 412 that tells "version 0".
        if current.is_none() && if_match.is_some_and(|v| v != 0) {
            return Err(ServiceError::NotFound {
                resource_type: A::RESOURCE_TYPE,
                id,
            });
        }
        if let Some(expected) = if_match
            && expected != version
        {
            return Err(ServiceError::Precondition {
                expected,
                current: version,
            });
        }
        let now = self.now();
        let state = current.as_ref().map(|c| &c.state);
        let command = make(state, now)?;
        let events = A::decide(state, &command)?;
        if events.is_empty() {
            return current.ok_or(ServiceError::NotFound {
                resource_type: A::RESOURCE_TYPE,
                id,
            });
        }
        let mut next: Option<A> = current.as_ref().map(|c| c.state.clone());
        for e in &events {
            next = A::evolve(next, e);
        }
        let next = next.ok_or(ServiceError::NotFound {
            resource_type: A::RESOURCE_TYPE,
            id,
        })?;
        let doc = serde_json::to_value(&next).map_err(|e| ServiceError::Corrupt(e.to_string()))?;
        let new_events = events
            .iter()
            .map(|e| e.to_new_event())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServiceError::Corrupt(e.to_string()))?;
        // Rendered once here for the store; the value itself goes to the caller.
        let doc_json = doc.to_string();
        let row = ResourceRow {
            resource_type: A::RESOURCE_TYPE.to_owned(),
            id,
            version: version + new_events.len() as i64,
            doc,
            created_at: current.as_ref().map(|c| c.row.created_at).unwrap_or(now),
            updated_at: now,
        };
        let old_keys: HashSet<UniqueKey> = current
            .as_ref()
            .map(|c| c.state.unique_keys().into_iter().collect())
            .unwrap_or_default();
        let new_keys: HashSet<UniqueKey> = next.unique_keys().into_iter().collect();
        let idempotency = idempotency.map(|i| {
            let (status, body) = (i.render)(&row);
            IdempotencyRecord {
                key: i.key,
                request_hash: i.request_hash,
                status,
                body,
                resource_version: Some(row.version),
                created_at: now,
                expires_at: now + i.ttl,
            }
        });
        let write = Write {
            stream_type: A::STREAM_TYPE.to_owned(),
            stream_id: id,
            expected_version: version,
            events: new_events,
            occurred_at: now,
            projection: Some(projection_of(&next, doc_json)),
            claims: new_keys.difference(&old_keys).cloned().collect(),
            releases: old_keys.difference(&new_keys).cloned().collect(),
            idempotency,
        };
        self.store.commit(ctx, write).await?;
        Ok(Current { state: next, row })
    }
}

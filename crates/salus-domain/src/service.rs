//! The command executor every aggregate goes through: load the current state from its
//! projection, check the caller's expected version (If-Match), `decide`, `evolve`, and
//! commit events + projection + search rows + unique keys + the idempotent response in one
//! write. Reads of past states (`as_of`) and history fold the event log.
//!
//! Several commands, on one aggregate type or many, can be decided first ([`Services::prepare`],
//! [`Services::prepare_new`]) and committed together, all or none
//! ([`Services::commit_prepared`]), as a FHIR `transaction` Bundle needs.

use chrono::{DateTime, Utc};
use salus_kernel::aggregate::DomainEvent;
use salus_kernel::{Aggregate, Clock, DomainError, EventEnvelope, TenantContext};
use salus_store::{
    IdempotencyRecord, Projection, ResourceRow, SearchQuery, SearchRow, Store, StoreError,
    UniqueKey, Write,
};
use serde_json::Value;
use std::any::Any;
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
    /// The id of a new resource is another tenant's (a client chose it).
    #[error("the id is taken")]
    IdTaken,
    #[error("stored data failed an integrity check: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(StoreError),
    /// One command of a group ([`Services::commit_prepared`]) failed, so none of the group
    /// committed: `index` is its place in the group, `source` why. Never nested.
    #[error("command {index} of the group: {source}")]
    InGroup {
        index: usize,
        source: Box<ServiceError>,
    },
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
            StoreError::StreamTaken => ServiceError::IdTaken,
            StoreError::Corrupt(m) => ServiceError::Corrupt(m),
            StoreError::InGroup { index, source } => ServiceError::InGroup {
                index,
                source: Box::new(ServiceError::from(*source)),
            },
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

/// A command decided on one aggregate and not yet committed, to be committed with others
/// by [`Services::commit_prepared`]: its write, and the resource it leaves.
pub struct Prepared {
    /// `None` when the command decided no event: nothing to commit, the result is the
    /// state it was decided on.
    write: Option<Write>,
    result: Done,
}

impl Prepared {
    /// What will be committed; `None` when the command changes nothing.
    pub fn write(&self) -> Option<&Write> {
        self.write.as_ref()
    }

    /// The resource as it will be stored.
    pub fn row(&self) -> &ResourceRow {
        &self.result.row
    }

    /// The state it leaves, when the command was on an `A`.
    pub fn state<A: 'static>(&self) -> Option<&A> {
        self.result.state.downcast_ref::<A>()
    }
}

/// The result of one command of a committed group: the stored resource, and its state
/// as the aggregate it is (see [`Done::into_current`]).
pub struct Done {
    row: ResourceRow,
    state: Box<dyn Any + Send + Sync>,
}

impl Done {
    fn of<A: Projected + Send + Sync + 'static>(current: Current<A>) -> Self {
        Done {
            row: current.row,
            state: Box::new(current.state),
        }
    }

    pub fn row(&self) -> &ResourceRow {
        &self.row
    }

    /// The typed result, when the command was on an `A`; otherwise `self` back.
    pub fn into_current<A: Projected + 'static>(self) -> Result<Current<A>, Self> {
        match self.state.downcast::<A>() {
            Ok(state) => Ok(Current {
                state: *state,
                row: self.row,
            }),
            Err(state) => Err(Done {
                row: self.row,
                state,
            }),
        }
    }
}

/// What a command decided: the write (`None` when it changes nothing) and the resource
/// it leaves.
struct Decision<A> {
    write: Option<Write>,
    result: Current<A>,
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
/// `updated`: when it last changed (FHIR's `_lastUpdated`, for the types with a FHIR view).
fn projection_of<A: Projected>(state: &A, doc_json: String, updated: DateTime<Utc>) -> Projection {
    let mut search = state.search_rows();
    search.extend(crate::clinical::fhir_view::meta_rows(
        A::RESOURCE_TYPE,
        updated,
    ));
    Projection {
        resource_type: A::RESOURCE_TYPE.to_owned(),
        doc: Value::Null,
        doc_json: Some(doc_json),
        search,
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

    /// How many resources match `query`'s filters.
    pub async fn count(
        &self,
        ctx: &TenantContext,
        query: &SearchQuery,
    ) -> Result<u64, ServiceError> {
        Ok(self.store.count(ctx, query).await?)
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
        let decision = self.decide(id, current, if_match, make, idempotency)?;
        self.commit_decision(ctx, decision).await
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
            projection: Some(projection_of(&state, doc.to_string(), row.updated_at)),
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
        let decision = self.decide(id, None, None, make, idempotency)?;
        self.commit_decision(ctx, decision).await
    }

    /// Decide a command against aggregate `id` as [`Services::execute`] does (reading its
    /// current state, checking `if_match`), without committing: the result goes with
    /// others to [`Services::commit_prepared`]. The commands of one group are each decided
    /// on the stored state, so two of them on the same aggregate conflict (the second is
    /// a [`ServiceError::Precondition`] in the group).
    pub async fn prepare<A, F>(
        &self,
        ctx: &TenantContext,
        id: Uuid,
        if_match: Option<i64>,
        make: F,
        idempotency: Option<Idempotency<'_>>,
    ) -> Result<Prepared, ServiceError>
    where
        A: Projected + Send + Sync + 'static,
        F: FnOnce(Option<&A>, DateTime<Utc>) -> Result<A::Command, DomainError>,
    {
        let current: Option<Current<A>> = self.load(ctx, id).await?;
        Ok(prepared(self.decide(
            id,
            current,
            if_match,
            make,
            idempotency,
        )?))
    }

    /// Decide a command that starts a new stream under a freshly minted `id`, as
    /// [`Services::create`] does (nothing is read), without committing.
    pub fn prepare_new<A, F>(
        &self,
        id: Uuid,
        make: F,
        idempotency: Option<Idempotency<'_>>,
    ) -> Result<Prepared, ServiceError>
    where
        A: Projected + Send + Sync + 'static,
        F: FnOnce(Option<&A>, DateTime<Utc>) -> Result<A::Command, DomainError>,
    {
        Ok(prepared(self.decide(id, None, None, make, idempotency)?))
    }

    /// Commit prepared commands all or none, in one store transaction; their results in
    /// the same order. When one fails, nothing is committed and the error is
    /// [`ServiceError::InGroup`] with its index in `prepared` (and what failed:
    /// [`ServiceError::Precondition`] when its aggregate moved on since it was decided,
    /// [`ServiceError::Duplicate`], ...). Commands that changed nothing commit nothing.
    pub async fn commit_prepared(
        &self,
        ctx: &TenantContext,
        prepared: Vec<Prepared>,
    ) -> Result<Vec<Done>, ServiceError> {
        let mut writes = Vec::with_capacity(prepared.len());
        // The index in `prepared` of each write.
        let mut of_write = Vec::with_capacity(prepared.len());
        let mut results = Vec::with_capacity(prepared.len());
        for (i, p) in prepared.into_iter().enumerate() {
            if let Some(w) = p.write {
                writes.push(w);
                of_write.push(i);
            }
            results.push(p.result);
        }
        match self.store.commit_all(ctx, writes).await {
            Ok(_) => Ok(results),
            Err(e) => Err(match ServiceError::from(e) {
                ServiceError::InGroup { index, source } => ServiceError::InGroup {
                    index: of_write.get(index).copied().unwrap_or(index),
                    source,
                },
                other => other,
            }),
        }
    }

    async fn commit_decision<A: Projected>(
        &self,
        ctx: &TenantContext,
        decision: Decision<A>,
    ) -> Result<Current<A>, ServiceError> {
        if let Some(write) = decision.write {
            self.store.commit(ctx, write).await?;
        }
        Ok(decision.result)
    }

    /// Check the expected version, build the command, `decide` and `evolve`, and make
    /// the write (events, projection, key changes, idempotent response) of the outcome.
    fn decide<A, F>(
        &self,
        id: Uuid,
        current: Option<Current<A>>,
        if_match: Option<i64>,
        make: F,
        idempotency: Option<Idempotency<'_>>,
    ) -> Result<Decision<A>, ServiceError>
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
            return current
                .map(|result| Decision {
                    write: None,
                    result,
                })
                .ok_or(ServiceError::NotFound {
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
            projection: Some(projection_of(&next, doc_json, now)),
            claims: new_keys.difference(&old_keys).cloned().collect(),
            releases: old_keys.difference(&new_keys).cloned().collect(),
            idempotency,
        };
        Ok(Decision {
            write: Some(write),
            result: Current { state: next, row },
        })
    }
}

fn prepared<A: Projected + Send + Sync + 'static>(decision: Decision<A>) -> Prepared {
    Prepared {
        write: decision.write,
        result: Done::of(decision.result),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use salus_kernel::{ActorId, SystemClock, TenantId};
    use salus_store::Tenant;
    use salus_store::sqlite::SqliteStore;
    use serde::{Deserialize, Serialize};

    /// A badge with a code no other badge of the tenant has.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Badge {
        code: String,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Coded {
        code: String,
    }

    salus_kernel::domain_events! {
        pub enum BadgeEvent {
            Issued(Coded) = "badge.issued",
            Recoded(Coded) = "badge.recoded",
        }
    }

    enum BadgeCommand {
        Issue(String),
        Recode(String),
    }

    impl Aggregate for Badge {
        const STREAM_TYPE: &'static str = "badge";
        type Command = BadgeCommand;
        type Event = BadgeEvent;

        fn decide(state: Option<&Self>, c: &BadgeCommand) -> Result<Vec<BadgeEvent>, DomainError> {
            match (state, c) {
                (None, BadgeCommand::Issue(code)) => {
                    Ok(vec![BadgeEvent::Issued(Coded { code: code.clone() })])
                }
                (Some(b), BadgeCommand::Recode(code)) if b.code == *code => Ok(vec![]),
                (Some(_), BadgeCommand::Recode(code)) => {
                    Ok(vec![BadgeEvent::Recoded(Coded { code: code.clone() })])
                }
                _ => Err(DomainError::Rule("not for this badge".into())),
            }
        }

        fn evolve(_: Option<Self>, e: &BadgeEvent) -> Option<Self> {
            match e {
                BadgeEvent::Issued(c) | BadgeEvent::Recoded(c) => Some(Badge {
                    code: c.code.clone(),
                }),
            }
        }

        fn decode_event(t: &str, payload: &Value) -> Result<BadgeEvent, serde_json::Error> {
            BadgeEvent::decode(t, payload)
        }
    }

    impl Projected for Badge {
        const RESOURCE_TYPE: &'static str = "badge";
        fn search_rows(&self) -> Vec<SearchRow> {
            vec![SearchRow::new("code", self.code.to_lowercase())]
        }
        fn unique_keys(&self) -> Vec<UniqueKey> {
            vec![UniqueKey::new("badge.code", self.code.clone())]
        }
    }

    async fn services() -> (Services, TenantContext, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("salus.db"), None)
            .await
            .unwrap();
        let tenant = Tenant {
            id: TenantId(Uuid::now_v7()),
            name: "t".into(),
            created_at: salus_kernel::clock::truncate_micros(Utc::now()),
        };
        store.create_tenant(&tenant).await.unwrap();
        let ctx = TenantContext::new(tenant.id, ActorId(Uuid::now_v7()), Uuid::now_v7());
        (
            Services::new(Arc::new(store), Arc::new(SystemClock)),
            ctx,
            dir,
        )
    }

    fn issue(
        code: &str,
    ) -> impl FnOnce(Option<&Badge>, DateTime<Utc>) -> Result<BadgeCommand, DomainError> {
        let code = code.to_owned();
        move |_, _| Ok(BadgeCommand::Issue(code))
    }

    fn recode(
        code: &str,
    ) -> impl FnOnce(Option<&Badge>, DateTime<Utc>) -> Result<BadgeCommand, DomainError> {
        let code = code.to_owned();
        move |_, _| Ok(BadgeCommand::Recode(code))
    }

    #[tokio::test]
    async fn prepared_commands_commit_together_and_give_typed_results() {
        let (s, ctx, _dir) = services().await;
        let old = Uuid::now_v7();
        let first = s
            .create::<Badge, _>(&ctx, old, issue("A"), None)
            .await
            .unwrap();
        assert_eq!(first.row.version, 1);
        // `old` gives up "A", a new badge takes it, another is issued, and one command
        // changes nothing.
        let (b, c) = (Uuid::now_v7(), Uuid::now_v7());
        let group = vec![
            s.prepare::<Badge, _>(&ctx, old, Some(1), recode("Z"), None)
                .await
                .unwrap(),
            s.prepare_new::<Badge, _>(b, issue("A"), None).unwrap(),
            s.prepare::<Badge, _>(&ctx, old, None, recode("A"), None)
                .await
                .unwrap(),
            s.prepare_new::<Badge, _>(c, issue("C"), None).unwrap(),
        ];
        assert!(
            group[2].write().is_none(),
            "recoding to the same code decides nothing"
        );
        assert_eq!(group[0].row().version, 2);
        let done = s.commit_prepared(&ctx, group).await.unwrap();
        let results: Vec<Current<Badge>> = done
            .into_iter()
            .map(|d| d.into_current::<Badge>().ok().unwrap())
            .collect();
        let got: Vec<(Uuid, i64, &str)> = results
            .iter()
            .map(|r| (r.row.id, r.row.version, r.state.code.as_str()))
            .collect();
        assert_eq!(
            got,
            [(old, 2, "Z"), (b, 1, "A"), (old, 1, "A"), (c, 1, "C")]
        );
        let stored = s.load::<Badge>(&ctx, old).await.unwrap().unwrap();
        assert_eq!((stored.row.version, stored.state.code.as_str()), (2, "Z"));
        assert_eq!(
            s.store.unique_owner(&ctx, "badge.code", "A").await.unwrap(),
            Some(b)
        );
        assert!(s.commit_prepared(&ctx, vec![]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_failing_command_commits_nothing_of_its_group_and_is_named_by_its_index() {
        let (s, ctx, _dir) = services().await;
        let old = Uuid::now_v7();
        s.create::<Badge, _>(&ctx, old, issue("A"), None)
            .await
            .unwrap();
        // Decided on version 1; the badge moves on before the group commits.
        let new = Uuid::now_v7();
        let group = vec![
            s.prepare_new::<Badge, _>(new, issue("N"), None).unwrap(),
            s.prepare::<Badge, _>(&ctx, old, None, recode("B"), None)
                .await
                .unwrap(),
        ];
        s.execute::<Badge, _>(&ctx, old, Some(1), recode("C"), None)
            .await
            .unwrap();
        let err = s.commit_prepared(&ctx, group).await.err();
        assert!(
            matches!(
                &err,
                Some(ServiceError::InGroup { index: 1, source })
                    if matches!(**source, ServiceError::Precondition { expected: 1, current: 2 })
            ),
            "{err:?}"
        );
        assert!(s.load::<Badge>(&ctx, new).await.unwrap().is_none());
        assert_eq!(
            s.store.unique_owner(&ctx, "badge.code", "N").await.unwrap(),
            None
        );
        // The index is the command's, counting those that changed nothing.
        let group = vec![
            s.prepare::<Badge, _>(&ctx, old, None, recode("C"), None)
                .await
                .unwrap(),
            s.prepare_new::<Badge, _>(Uuid::now_v7(), issue("C"), None)
                .unwrap(),
        ];
        let err = s.commit_prepared(&ctx, group).await.err();
        assert!(
            matches!(
                &err,
                Some(ServiceError::InGroup { index: 1, source })
                    if matches!(**source, ServiceError::Duplicate { owner, .. } if owner == old)
            ),
            "{err:?}"
        );
        // A result taken as another aggregate is handed back.
        let group = vec![
            s.prepare_new::<Badge, _>(Uuid::now_v7(), issue("D"), None)
                .unwrap(),
        ];
        let done = s.commit_prepared(&ctx, group).await.unwrap();
        assert!(
            done.into_iter()
                .next()
                .map(|d| d.into_current::<Other>().is_err())
                .unwrap_or(false)
        );
    }

    /// Another aggregate type, only to be told apart from [`Badge`].
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Other;

    impl Aggregate for Other {
        const STREAM_TYPE: &'static str = "other";
        type Command = ();
        type Event = BadgeEvent;
        fn decide(_: Option<&Self>, _: &()) -> Result<Vec<BadgeEvent>, DomainError> {
            Ok(vec![])
        }
        fn evolve(s: Option<Self>, _: &BadgeEvent) -> Option<Self> {
            s
        }
        fn decode_event(t: &str, payload: &Value) -> Result<BadgeEvent, serde_json::Error> {
            BadgeEvent::decode(t, payload)
        }
    }

    impl Projected for Other {
        const RESOURCE_TYPE: &'static str = "other";
        fn search_rows(&self) -> Vec<SearchRow> {
            vec![]
        }
    }
}

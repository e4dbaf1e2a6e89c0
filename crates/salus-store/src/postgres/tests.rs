//! Checks against the real server at [`ADMIN`]; each test works in its own database.

use super::*;
use crate::commit::CommitObserver;
use salus_kernel::{NewEvent, new_id};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    async fn new() -> Self {
        let name = format!("salus_t_{}", new_id().simple());
        let url = create_database(ADMIN, &name).await.unwrap();
        Self { name, url }
    }

    async fn drop(self) {
        let (client, task) = connect(ADMIN).await.unwrap();
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&self.name)
            ))
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
    }
}

#[derive(Default)]
struct Counter {
    batches: AtomicUsize,
    requests: AtomicUsize,
    events: AtomicUsize,
}

impl CommitObserver for Counter {
    fn batch_committed(&self, requests: usize, events: usize, _took: Duration) {
        self.batches.fetch_add(1, Ordering::SeqCst);
        self.requests.fetch_add(requests, Ordering::SeqCst);
        self.events.fetch_add(events, Ordering::SeqCst);
    }
}

fn ctx(tenant: TenantId) -> TenantContext {
    TenantContext::new(tenant, ActorId(new_id()), new_id())
}

fn patient(stream: Uuid, expected: i64, family: &str, mrn: &str) -> Write {
    Write {
        stream_type: "patient".into(),
        stream_id: stream,
        expected_version: expected,
        events: vec![NewEvent {
            event_type: if expected == 0 {
                "patient.registered".into()
            } else {
                "patient.renamed".into()
            },
            schema_version: 1,
            payload: json!({ "family": family, "mrn": mrn }),
        }],
        occurred_at: salus_kernel::clock::truncate_micros(Utc::now()),
        projection: Some(Projection {
            resource_type: "patient".into(),
            doc: json!({ "id": stream, "family": family, "mrn": mrn }),
            doc_json: None,
            search: vec![
                SearchRow::new("family", family.to_lowercase()),
                SearchRow::token("identifier", "urn:mrn", mrn),
            ],
            full_text: None,
        }),
        claims: vec![UniqueKey::new("mrn", mrn)],
        releases: vec![],
        idempotency: None,
    }
}

fn by(param: &str, op: FilterOp, value: &str) -> SearchQuery {
    SearchQuery {
        resource_type: "patient".into(),
        filters: vec![Filter {
            also: Vec::new(),
            param: param.into(),
            system: None,
            op,
            value: value.into(),
        }],
        after: None,
        limit: 50,
        newest_first: false,
        order_by: None,
    }
}

async fn new_tenant(store: &PostgresStore, name: &str) -> TenantId {
    let t = Tenant {
        id: TenantId(new_id()),
        name: name.into(),
        created_at: salus_kernel::clock::truncate_micros(Utc::now()),
    };
    store.create_tenant(&t).await.unwrap();
    t.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_then_read_back_resource_search_rows_and_ledger() {
    let db = TestDb::new().await;
    let store = PostgresStore::open(&db.url, None).await.unwrap();
    store.ready().await.unwrap();
    assert_eq!(migrate(&db.url).await.unwrap(), Vec::<i64>::new());

    let a = new_tenant(&store, "alpha").await;
    let b = new_tenant(&store, "beta").await;
    assert_eq!(
        store
            .tenants()
            .await
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect::<Vec<_>>(),
        vec![a, b]
    );
    let dup = Tenant {
        id: TenantId(new_id()),
        name: "alpha".into(),
        created_at: Utc::now(),
    };
    assert!(matches!(
        store.create_tenant(&dup).await,
        Err(StoreError::Duplicate { ref scope, .. }) if scope == "tenant"
    ));

    let p = new_id();
    let c = ctx(a);
    let w = patient(p, 0, "Smith", "123");
    let created_at = w.occurred_at;
    let first = store.commit(&c, w).await.unwrap();
    assert_eq!(first.version, 1);

    let row = store.resource(&c, "patient", p).await.unwrap().unwrap();
    assert_eq!(row.version, 1);
    assert_eq!(row.doc["family"], "Smith");
    // A projection's times are those of the writes that made it (their occurred_at).
    assert_eq!((row.created_at, row.updated_at), (created_at, created_at));

    let found = store
        .search(&c, &by("family", FilterOp::Prefix, "smi"))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0], row);
    let mut token = by("identifier", FilterOp::Eq, "123");
    token.filters[0].system = Some("urn:mrn".into());
    assert_eq!(store.search(&c, &token).await.unwrap().len(), 1);
    token.filters[0].system = Some("urn:other".into());
    assert!(store.search(&c, &token).await.unwrap().is_empty());
    assert_eq!(store.unique_owner(&c, "mrn", "123").await.unwrap(), Some(p));

    // An update replaces the search rows.
    let second = store
        .commit(&c, patient(p, 1, "Jones", "123"))
        .await
        .unwrap();
    assert_eq!(second.version, 2);
    assert!(
        store
            .search(&c, &by("family", FilterOp::Eq, "smith"))
            .await
            .unwrap()
            .is_empty()
    );
    let found = store
        .search(&c, &by("family", FilterOp::Eq, "jones"))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].version, 2);
    assert_eq!(found[0].created_at, created_at);
    assert!(found[0].updated_at >= created_at);

    // The stream reads back exactly what was committed, chained.
    let events = store.stream(&c, p, None).await.unwrap();
    let committed: Vec<_> = first.events.iter().chain(&second.events).cloned().collect();
    let read: Vec<_> = events
        .iter()
        .map(|e| CommittedEvent {
            event_id: e.event_id,
            seq: e.seq,
            version: e.version,
            hash: e.hash,
        })
        .collect();
    assert_eq!(read, committed);
    assert!(events.iter().all(|e| e.hash_is_valid()));
    assert_eq!(events[1].prev_hash, events[0].hash);
    let early = store.stream(&c, p, Some(first.recorded_at)).await.unwrap();
    assert_eq!(early.len(), 1);

    // Ledger reads.
    assert_eq!(store.ledger_head(a).await.unwrap(), 2);
    assert_eq!(
        store.events_after(a, 1, 10).await.unwrap(),
        vec![events[1].clone()]
    );
    assert_eq!(
        store.event_by_id(events[0].event_id).await.unwrap(),
        Some(events[0].clone())
    );
    let heads = store.stream_heads(a).await.unwrap();
    assert_eq!(heads.len(), 1);
    assert_eq!((heads[0].version, heads[0].hash), (2, events[1].hash));
    let th = TreeHead {
        tenant_id: a,
        tree_size: 2,
        root: events[1].hash,
        signed_at: salus_kernel::clock::truncate_micros(Utc::now()),
        key_id: "k".into(),
        signature: "s".into(),
    };
    store.put_tree_head(&th).await.unwrap();
    store.put_tree_head(&th).await.unwrap();
    assert_eq!(store.tree_heads(a).await.unwrap(), vec![th]);

    // Tenant b sees none of it.
    let cb = ctx(b);
    assert_eq!(store.resource(&cb, "patient", p).await.unwrap(), None);
    assert!(store.stream(&cb, p, None).await.unwrap().is_empty());
    assert!(
        store
            .search(&cb, &by("family", FilterOp::Eq, "jones"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.ledger_head(b).await.unwrap(), 0);

    // Pooled connections run as the application role.
    let client = store.client().await.unwrap();
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, APP_ROLE);
    drop(client);

    store.shutdown().await;
    assert_eq!(
        store
            .commit(&c, patient(new_id(), 0, "Late", "9"))
            .await
            .err(),
        Some(StoreError::ShuttingDown)
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_version_conflicts_and_keys_and_idempotency_hold() {
    let db = TestDb::new().await;
    let store = PostgresStore::open(&db.url, None).await.unwrap();
    let t = new_tenant(&store, "t").await;
    let c = ctx(t);
    let p = new_id();
    store.commit(&c, patient(p, 0, "Smith", "1")).await.unwrap();
    assert_eq!(
        store.commit(&c, patient(p, 0, "Smith", "1")).await.err(),
        Some(StoreError::Conflict {
            expected: 0,
            actual: 1
        })
    );
    // Another stream cannot take the same key.
    assert!(matches!(
        store.commit(&c, patient(new_id(), 0, "Other", "1")).await,
        Err(StoreError::Duplicate { owner, .. }) if owner == p
    ));
    // Releasing frees it for someone else.
    let mut release = patient(p, 1, "Smith", "2");
    release.releases = vec![UniqueKey::new("mrn", "1")];
    store.commit(&c, release).await.unwrap();
    let q = new_id();
    store.commit(&c, patient(q, 0, "Other", "1")).await.unwrap();
    assert_eq!(store.unique_owner(&c, "mrn", "1").await.unwrap(), Some(q));
    assert_eq!(store.unique_owner(&c, "mrn", "2").await.unwrap(), Some(p));

    // Idempotency records.
    let now = salus_kernel::clock::truncate_micros(Utc::now());
    let rec = IdempotencyRecord {
        key: "idem-1".into(),
        request_hash: "abc".into(),
        status: 201,
        body: json!({"ok": true}),
        resource_version: Some(1),
        created_at: now,
        expires_at: now + chrono::Duration::seconds(1),
    };
    let mut w = patient(new_id(), 0, "Idem", "3");
    w.idempotency = Some(rec.clone());
    store.commit(&c, w).await.unwrap();
    assert_eq!(
        store.idempotency(&c, "idem-1").await.unwrap(),
        Some(rec.clone())
    );
    let mut w = patient(new_id(), 0, "Idem", "4");
    w.idempotency = Some(rec.clone());
    assert_eq!(
        store.commit(&c, w).await.err(),
        Some(StoreError::IdempotencyKeyTaken)
    );
    assert_eq!(store.purge_idempotency(now).await.unwrap(), 0);
    assert_eq!(
        store
            .purge_idempotency(now + chrono::Duration::seconds(2))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.idempotency(&c, "idem-1").await.unwrap(), None);

    // A stream id of another tenant is invisible here (RLS) yet still taken.
    let other = new_tenant(&store, "other").await;
    assert_eq!(
        store
            .commit(&ctx(other), patient(p, 0, "Smith", "1"))
            .await
            .err(),
        Some(StoreError::StreamTaken)
    );

    store.shutdown().await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_database_refuses_fails_alone() {
    let db = TestDb::new().await;
    let counter = Arc::new(Counter::default());
    let store = Arc::new(
        PostgresStore::open(&db.url, Some(counter.clone()))
            .await
            .unwrap(),
    );
    let t = new_tenant(&store, "t").await;
    let tasks: Vec<_> = (0..41)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut w = patient(new_id(), 0, "Fine", &format!("f{i}"));
                if i == 20 {
                    // jsonb refuses \u0000 in strings: the statement, hence the batch,
                    // fails in the database, not in planning.
                    w.events[0].payload = json!({ "bad": "a\u{0}b" });
                }
                (i, store.commit(&ctx(t), w).await)
            })
        })
        .collect();
    for task in tasks {
        match task.await.unwrap() {
            (20, r) => assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}"),
            (_, r) => assert_eq!(r.unwrap().version, 1),
        }
    }
    assert_eq!(store.ledger_head(t).await.unwrap(), 40);
    assert_eq!(counter.requests.load(Ordering::SeqCst), 40);
    store.shutdown().await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_transactions() {
    let db = TestDb::new().await;
    let counter = Arc::new(Counter::default());
    let store = Arc::new(
        PostgresStore::open(&db.url, Some(counter.clone()))
            .await
            .unwrap(),
    );
    let tenants = [
        new_tenant(&store, "one").await,
        new_tenant(&store, "two").await,
    ];
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            let t = tenants[i % 2];
            tokio::spawn(async move {
                store
                    .commit(&ctx(t), patient(new_id(), 0, "Many", &format!("m{i}")))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let batches = counter.batches.load(Ordering::SeqCst);
    assert_eq!(counter.requests.load(Ordering::SeqCst), 200);
    assert_eq!(counter.events.load(Ordering::SeqCst), 200);
    assert!(batches < 200, "{batches} transactions for 200 requests");
    for t in tenants {
        assert_eq!(store.ledger_head(t).await.unwrap(), 100);
        let seqs: Vec<i64> = store
            .events_after(t, 0, 1000)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
        assert_eq!(store.stream_heads(t).await.unwrap().len(), 100);
    }
    eprintln!("200 commits in {batches} transactions");
    store.shutdown().await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_writing_one_stream_conflict_cleanly() {
    let db = TestDb::new().await;
    let one = Arc::new(PostgresStore::open(&db.url, None).await.unwrap());
    let two = Arc::new(PostgresStore::open(&db.url, None).await.unwrap());
    // No tenant row and no ledger head yet: both writers race to create them too.
    let t = TenantId(new_id());
    let mut tasks = Vec::new();
    let mut streams = Vec::new();
    for i in 0..50 {
        let s = new_id();
        streams.push(s);
        for store in [one.clone(), two.clone()] {
            tasks.push(tokio::spawn(async move {
                store
                    .commit(&ctx(t), patient(s, 0, "Race", &format!("r{i}")))
                    .await
            }));
        }
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict {
                expected: 0,
                actual: 1,
            }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 50);
    assert_eq!(one.ledger_head(t).await.unwrap(), 50);
    let seqs: Vec<i64> = one
        .events_after(t, 0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    one.shutdown().await;
    two.shutdown().await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_hides_rows_without_a_tenant() {
    let db = TestDb::new().await;
    let store = PostgresStore::open(&db.url, None).await.unwrap();
    let t = new_tenant(&store, "rls").await;
    for i in 0..3 {
        store
            .commit(&ctx(t), patient(new_id(), 0, "Hidden", &format!("h{i}")))
            .await
            .unwrap();
    }
    store.shutdown().await;

    let (client, task) = connect(&db.url).await.unwrap();
    let count = |table: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    // The superuser of the URL bypasses RLS: the rows exist.
    assert_eq!(count("events").await, 3);
    client
        .batch_execute(&format!("SET ROLE {APP_ROLE}"))
        .await
        .unwrap();
    // As the application role, without salus.tenants, nothing is visible.
    for table in [
        "events",
        "streams",
        "resources",
        "search_index",
        "unique_keys",
        "ledger_heads",
    ] {
        assert_eq!(count(table).await, 0, "{table}");
    }
    // Nor can a row be written for a tenant that is not set.
    let err = client
        .execute(
            "INSERT INTO tree_heads (tenant_id, tree_size, root_hash, signed_at, key_id, signature) VALUES ($1, 1, '\\x00', now(), 'k', 's')",
            &[&t.0],
        )
        .await
        .unwrap_err();
    let message = describe(&err);
    assert!(message.contains("row-level security"), "{message}");
    // With the tenant set, its rows appear.
    client
        .execute(SET_TENANTS, &[&t.0.to_string()])
        .await
        .unwrap();
    assert_eq!(count("events").await, 3);
    // The tenant directory stays readable.
    client.execute(SET_TENANTS, &[&""]).await.unwrap();
    assert_eq!(count("tenants").await, 1);
    drop(client);
    let _ = task.await;
    db.drop().await;
}

/// Throughput of single-event creates at 64 concurrent clients:
/// `cargo test -p salus-store --lib postgres::tests::throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    let db = TestDb::new().await;
    let counter = Arc::new(Counter::default());
    let store = Arc::new(
        PostgresStore::open(&db.url, Some(counter.clone()))
            .await
            .unwrap(),
    );
    let tenant = new_tenant(&store, "bench").await;
    let secs: u64 = std::env::var("SALUS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let c = counter.clone();
    let reporter = tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let now = c.requests.load(Ordering::SeqCst);
            eprintln!(
                "  {:>3.0}s: {}/s",
                started.elapsed().as_secs_f64(),
                (now - last) / 5
            );
            last = now;
        }
    });
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    store
                        .commit(
                            &ctx(tenant),
                            patient(new_id(), 0, "Bench", &format!("b{i}-{n}")),
                        )
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let took = started.elapsed().as_secs_f64();
    reporter.abort();
    let batches = counter.batches.load(Ordering::SeqCst);
    eprintln!(
        "{total} creates in {took:.2}s = {:.0}/s; {batches} transactions, {:.1} per transaction",
        total as f64 / took,
        total as f64 / batches as f64
    );
    store.shutdown().await;
    db.drop().await;
}

/// A database at schema 2 with a resource and its rows in `search_index` keeps finding it
/// after migration 3, and its next update replaces exactly its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_3_keeps_search_rows_and_updates_replace_them() {
    let db = TestDb::new().await;
    let tenant = TenantId(new_id());
    let id = new_id();
    {
        let (client, task) = connect(&db.url).await.unwrap();
        schema::run_migrations_upto(&client, 2).await.unwrap();
        // As the superuser the URL names, row-level security does not apply.
        client
            .execute(
                "INSERT INTO streams (stream_id, tenant_id, stream_type, version, hash) VALUES ($1, $2, 'patient', 1, $3)",
                &[&id, &tenant.0, &vec![0u8; 32]],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO resources (tenant_id, resource_type, id, version, doc, created_at, updated_at) VALUES ($1, 'patient', $2, 1, '{}', now(), now())",
                &[&tenant.0, &id],
            )
            .await
            .unwrap();
        for (param, value) in [("name", "ada"), ("status", "active")] {
            client
                .execute(
                    "INSERT INTO search_index (tenant_id, resource_type, param, value, system, resource_id) VALUES ($1, 'patient', $2, $3, '', $4)",
                    &[&tenant.0, &param, &value, &id],
                )
                .await
                .unwrap();
        }
        drop(client);
        let _ = task.await;
    }
    let store = PostgresStore::open(&db.url, None).await.unwrap();
    let c = ctx(tenant);
    let query = |param: &str, value: &str| SearchQuery {
        resource_type: "patient".into(),
        filters: vec![Filter {
            also: Vec::new(),
            param: param.into(),
            system: None,
            op: FilterOp::Eq,
            value: value.into(),
        }],
        after: None,
        limit: 10,
        newest_first: false,
        order_by: None,
    };
    assert_eq!(
        store
            .search(&c, &query("status", "active"))
            .await
            .unwrap()
            .len(),
        1
    );
    let mut update = patient(id, 1, "Ada", "m-1");
    if let Some(p) = update.projection.as_mut() {
        p.search = vec![
            SearchRow::new("name", "ada"),
            SearchRow::new("status", "retired"),
        ];
    }
    update.claims.clear();
    store.commit(&c, update).await.unwrap();
    assert_eq!(
        store.search(&c, &query("name", "ada")).await.unwrap().len(),
        1
    );
    assert!(
        store
            .search(&c, &query("status", "active"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .search(&c, &query("status", "retired"))
            .await
            .unwrap()
            .len(),
        1
    );
    store.shutdown().await;
    let (client, task) = connect(&db.url).await.unwrap();
    let rows: i64 = client
        .query_one("SELECT count(*) FROM search_index", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        rows, 2,
        "the replaced row is gone, the kept one is not doubled"
    );
    drop(client);
    let _ = task.await;
    db.drop().await;
}

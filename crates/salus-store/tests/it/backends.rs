//! Fresh stores for tests, one per backend.

use salus_kernel::{ActorId, TenantContext, TenantId};
use salus_store::commit::CommitObserver;
use salus_store::postgres::PostgresStore;
use salus_store::sqlite::SqliteStore;
use salus_store::{Store, Tenant};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use uuid::Uuid;

pub fn admin_url() -> String {
    std::env::var("SALUS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[derive(Default)]
pub struct Counts {
    pub batches: AtomicUsize,
    pub requests: AtomicUsize,
}

impl CommitObserver for Counts {
    fn batch_committed(&self, requests: usize, _events: usize, _took: Duration) {
        self.batches.fetch_add(1, Ordering::SeqCst);
        self.requests.fetch_add(requests, Ordering::SeqCst);
    }
}

/// A store under test, with what is needed to reach beneath it.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub counts: Arc<Counts>,
    pub kind: Kind,
    _dir: Option<tempfile::TempDir>,
    /// Dropped last: the PostgreSQL database goes with the fixture.
    _db: Option<salus_store::postgres::ScratchDatabase>,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Fixture {
    pub async fn new(backend: &str) -> Fixture {
        let counts = Arc::new(Counts::default());
        let observer: Arc<dyn CommitObserver> = counts.clone();
        match backend {
            "sqlite" => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("salus.db");
                let store = SqliteStore::open(&path, Some(observer))
                    .await
                    .expect("open sqlite");
                Fixture {
                    store: Arc::new(store),
                    counts,
                    kind: Kind::Sqlite(path),
                    _dir: Some(dir),
                    _db: None,
                }
            }
            _ => {
                let name = format!("salus_t_{}", Uuid::now_v7().simple());
                let db = salus_store::postgres::ScratchDatabase::create(&admin_url(), &name)
                    .await
                    .expect("PostgreSQL must be running for the store tests (see README)");
                let store = PostgresStore::open(&db.url, Some(observer))
                    .await
                    .expect("open postgres");
                Fixture {
                    store: Arc::new(store),
                    counts,
                    kind: Kind::Postgres(db.url.clone()),
                    _dir: None,
                    _db: Some(db),
                }
            }
        }
    }

    /// A new tenant and a context acting in it.
    pub async fn tenant(&self, name: &str) -> TenantContext {
        let t = Tenant {
            id: TenantId(Uuid::now_v7()),
            name: name.to_owned(),
            created_at: salus_kernel::clock::truncate_micros(chrono::Utc::now()),
        };
        self.store.create_tenant(&t).await.expect("create tenant");
        TenantContext::new(t.id, ActorId(Uuid::now_v7()), Uuid::now_v7())
    }

    /// Run raw SQL beneath the store, as an attacker with database access would.
    pub async fn tamper(&self, sql: &str) {
        match &self.kind {
            Kind::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("open raw sqlite");
                conn.execute_batch(sql).expect("tamper sqlite");
            }
            Kind::Postgres(url) => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .expect("raw pg");
                tokio::spawn(conn);
                client.batch_execute(sql).await.expect("tamper pg");
            }
        }
    }

    /// SQL that lets the events table be changed (dropping the append-only guard).
    pub fn unguard(&self) -> &'static str {
        match self.kind {
            Kind::Sqlite(_) => "DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;",
            Kind::Postgres(_) => "ALTER TABLE events DISABLE TRIGGER events_append_only;",
        }
    }

    /// Run raw SQL on the data-access log's database, returning the database's refusal.
    pub async fn try_tamper_access(&self, sql: &str) -> Result<(), String> {
        match &self.kind {
            Kind::Sqlite(path) => {
                let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
                let access = path.with_file_name(format!("{}-access.db", stem.unwrap_or_default()));
                let conn = rusqlite::Connection::open(access).map_err(|e| e.to_string())?;
                conn.execute_batch(sql).map_err(|e| e.to_string())
            }
            Kind::Postgres(url) => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                client
                    .batch_execute(sql)
                    .await
                    .map_err(|e| format!("{e:?}"))
            }
        }
    }

    /// SQL that lets the access log be changed (dropping its append-only guard).
    pub fn unguard_access(&self) -> &'static str {
        match self.kind {
            Kind::Sqlite(_) => {
                "DROP TRIGGER access_log_no_update; DROP TRIGGER access_log_no_delete;"
            }
            Kind::Postgres(_) => "ALTER TABLE access_log DISABLE TRIGGER access_log_append_only;",
        }
    }

    /// The same store opened again on the same database (after this one is shut down).
    pub async fn reopen(&self) -> Arc<dyn Store> {
        match &self.kind {
            Kind::Sqlite(path) => Arc::new(SqliteStore::open(path, None).await.expect("reopen")),
            Kind::Postgres(url) => Arc::new(PostgresStore::open(url, None).await.expect("reopen")),
        }
    }
}

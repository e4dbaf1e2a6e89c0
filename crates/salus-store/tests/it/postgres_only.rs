//! Guarantees only PostgreSQL gives: row-level security under the application role.

use crate::backends::Fixture;
use crate::conformance::patient_write;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_without_tenant_setting_sees_nothing() {
    let f = Fixture::new("postgres").await;
    let ctx = f.tenant("rls").await;
    f.store
        .commit(&ctx, patient_write(uuid::Uuid::now_v7(), 0, "Ada"))
        .await
        .unwrap();
    let crate::backends::Kind::Postgres(url) = &f.kind else {
        unreachable!()
    };
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // As the superuser the rows are there...
    let all: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(all, 1);
    // ...as the application role without a tenant set, nothing is.
    client.batch_execute("SET ROLE salus_app").await.unwrap();
    for table in [
        "events",
        "resources",
        "search_index",
        "streams",
        "unique_keys",
        "ledger_heads",
    ] {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table} leaked rows without a tenant");
    }
    // With another tenant set, still nothing; with the right one, the row.
    client
        .batch_execute(&format!(
            "SELECT set_config('salus.tenants', '{}', false)",
            uuid::Uuid::now_v7()
        ))
        .await
        .unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    client
        .batch_execute(&format!(
            "SELECT set_config('salus.tenants', '{}', false)",
            ctx.tenant
        ))
        .await
        .unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // And the application role cannot write into another tenant.
    let other = uuid::Uuid::now_v7();
    let denied = client
        .execute(
            "INSERT INTO unique_keys (tenant_id, scope, value, stream_id) VALUES ($1, 's', 'v', $1)",
            &[&other],
        )
        .await;
    assert!(
        denied.is_err(),
        "RLS WITH CHECK must refuse a foreign tenant's row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_role_cannot_bypass_rls() {
    let f = Fixture::new("postgres").await;
    let crate::backends::Kind::Postgres(url) = &f.kind else {
        unreachable!()
    };
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT rolbypassrls, rolsuper FROM pg_roles WHERE rolname = 'salus_app'",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert!(!row.get::<_, bool>(1));
}

/// Two server processes on one database log reads of the same tenant at once: each writer
/// continues the chain from the heads it knows, a seq the other took first sends its batch
/// round again, and the log ends dense, chained and complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_access_log_writers_share_one_chain() {
    use salus_store::access::{self, AccessAction, AccessEntry, AccessQuery};
    let f = Fixture::new("postgres").await;
    let ctx = f.tenant("two").await;
    let second = f.reopen().await;
    let entry = || AccessEntry {
        patient_id: uuid::Uuid::now_v7(),
        resource_type: "patient".into(),
        resource_id: None,
        action: AccessAction::Read,
        purpose: "TREAT".into(),
        justification: None,
        break_glass: false,
        client: None,
    };
    let mut tasks = Vec::new();
    for i in 0..80 {
        let store = if i % 2 == 0 {
            f.store.clone()
        } else {
            second.clone()
        };
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            store.log_access(&ctx, vec![entry(), entry()]).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let got = f
        .store
        .access_log(
            &ctx,
            &AccessQuery {
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=160).collect::<Vec<i64>>()
    );
    let report = access::verify(f.store.as_ref()).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.entries, 160);
    second.shutdown().await;
}

/// The writer keeps the planner's statistics of the projection tables up to date as they
/// grow, even where autovacuum does not (it is off on some servers): without them a
/// search over thousands of rows was planned as over an empty table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_analyzes_the_projection_tables_as_they_grow() {
    let f = Fixture::new("postgres").await;
    let ctx = f.tenant("stats").await;
    let crate::backends::Kind::Postgres(url) = &f.kind else {
        unreachable!()
    };
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("ALTER TABLE search_index SET (autovacuum_enabled = off); ALTER TABLE resources SET (autovacuum_enabled = off)")
        .await
        .unwrap();
    let analyzed = || async {
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('resources', 'search_index') AND analyze_count > 0",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(analyzed().await, 0, "analyzed before anything was written");
    let writes: Vec<_> = (0..1_500)
        .map(|i| patient_write(uuid::Uuid::now_v7(), 0, &format!("Name{i}")))
        .collect();
    for chunk in writes.chunks(100) {
        f.store.commit_all(&ctx, chunk.to_vec()).await.unwrap();
    }
    // 3,000 rows written (a projection and a search row each): the background ANALYZE
    // runs; wait for it (the statistics collector reports within a second or so).
    let mut seen = 0;
    for _ in 0..100 {
        seen = analyzed().await;
        if seen == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 2, "both tables analyzed");
    let tuples: f32 = client
        .query_one(
            "SELECT reltuples FROM pg_class WHERE relname = 'search_index'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        tuples >= 1_000.0,
        "the statistics count {tuples} search rows"
    );
}

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

//! Creating a tenant while another tenant's reads share the pool.

use crate::backends::Fixture;
use crate::conformance::patient_write;
use uuid::Uuid;

crate::on_both_backends!(reads_after_creating_a_tenant_still_see_the_first_tenant);

/// Reads here are one at a time, so on PostgreSQL they all take the same pooled
/// connection: the one `create_tenant` also ran on. Creating a tenant sets that tenant on
/// the connection's session; the next read of the first tenant must set its own again,
/// not trust what the pool remembered from before.
async fn reads_after_creating_a_tenant_still_see_the_first_tenant(backend: &str) {
    let f = Fixture::new(backend).await;
    let first = f.tenant("first").await;
    let id = Uuid::now_v7();
    f.store
        .commit(&first, patient_write(id, 0, "Kept"))
        .await
        .unwrap();
    for round in 0..3 {
        // The connection now remembers `first`.
        assert!(
            f.store
                .resource_text(&first, "patient", id)
                .await
                .unwrap()
                .is_some(),
            "round {round}: read before creating a tenant"
        );
        let other = f.tenant(&format!("other-{round}")).await;
        let read = f.store.resource(&first, "patient", id).await.unwrap();
        assert_eq!(
            read.map(|r| r.doc["family"].clone()),
            Some(serde_json::json!("Kept")),
            "round {round}: the first tenant's patient after creating {round}"
        );
        assert_eq!(
            f.store.stream(&first, id, None).await.unwrap().len(),
            1,
            "round {round}: the first tenant's events"
        );
        // And the new tenant still sees none of it.
        assert!(
            f.store
                .resource_text(&other, "patient", id)
                .await
                .unwrap()
                .is_none()
        );
    }
}

//! The data-access log on every backend: durable and in order, batched under concurrency,
//! chained and verified, confined to its tenant, append-only.

use crate::backends::Fixture;
use salus_kernel::{ActorId, TenantContext};
use salus_store::access::{self, AccessAction, AccessEntry, AccessQuery};
use std::sync::Arc;
use uuid::Uuid;

crate::on_both_backends!(
    logged_entries_are_durable_and_in_order,
    concurrent_logging_shares_batches_and_every_entry_lands,
    access_log_filters_and_pages,
    tenants_do_not_see_each_others_access_entries,
    access_log_refuses_updates_and_deletes,
    altered_access_entry_is_named_by_verify,
    removed_access_entry_is_detected,
    lookups_by_patient_and_actor_cover_old_and_new_entries,
);

fn entry(patient: Uuid, action: AccessAction) -> AccessEntry {
    AccessEntry {
        patient_id: patient,
        resource_type: "patient".into(),
        resource_id: Some(patient),
        action,
        purpose: "TREAT".into(),
        justification: None,
        break_glass: false,
        client: Some("test-agent/1.0".into()),
    }
}

fn all() -> AccessQuery {
    AccessQuery {
        limit: 1000,
        ..Default::default()
    }
}

async fn logged_entries_are_durable_and_in_order(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let (p1, p2) = (Uuid::now_v7(), Uuid::now_v7());
    let mut second = entry(p2, AccessAction::Download);
    second.justification = Some("discharge letter".into());
    second.break_glass = true;
    second.purpose = "ETREAT".into();
    second.resource_type = "attachment".into();
    second.client = None;
    f.store
        .log_access(&ctx, vec![entry(p1, AccessAction::Read), second.clone()])
        .await
        .unwrap();
    f.store
        .log_access(&ctx, vec![entry(p1, AccessAction::Search)])
        .await
        .unwrap();
    f.store.shutdown().await;
    // What was acknowledged is there for a new process.
    let store = f.reopen().await;
    let got = store.access_log(&ctx, &all()).await.unwrap();
    assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(
        got.iter().map(|r| r.action).collect::<Vec<_>>(),
        vec![
            AccessAction::Read,
            AccessAction::Download,
            AccessAction::Search
        ]
    );
    let r = &got[1];
    assert_eq!(r.patient_id, p2);
    assert_eq!(r.actor_id, ctx.actor);
    assert_eq!(r.tenant_id, ctx.tenant);
    assert_eq!(r.request_id, ctx.correlation_id);
    assert_eq!(r.resource_type, "attachment");
    assert_eq!(r.purpose, "ETREAT");
    assert_eq!(r.justification.as_deref(), Some("discharge letter"));
    assert!(r.break_glass);
    assert_eq!(r.client, None);
    assert_eq!(got[0].client.as_deref(), Some("test-agent/1.0"));
    assert_eq!(got[1].prev_hash, got[0].hash);
    assert_eq!(got[2].prev_hash, got[1].hash);
    assert_eq!(got[0].prev_hash, salus_kernel::Hash32::ZERO);
    let report = access::verify(store.as_ref()).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.entries, 3);
    store.shutdown().await;
}

async fn concurrent_logging_shares_batches_and_every_entry_lands(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = f.store.clone();
        let ctx = TenantContext::new(ctx.tenant, ActorId(Uuid::now_v7()), Uuid::now_v7());
        tasks.push(tokio::spawn(async move {
            let p = Uuid::now_v7();
            let action = if i % 2 == 0 {
                AccessAction::Read
            } else {
                AccessAction::Search
            };
            store
                .log_access(&ctx, vec![entry(p, action), entry(p, action)])
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let got = f.store.access_log(&ctx, &all()).await.unwrap();
    assert_eq!(got.len(), 128);
    assert!(got.iter().enumerate().all(|(i, r)| r.seq == i as i64 + 1));
    // A request's entries are consecutive: one batch plans them together.
    for pair in got.chunks(2) {
        assert_eq!(pair[0].request_id, pair[1].request_id);
    }
    let report = access::verify(f.store.as_ref()).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.entries, 128);
}

async fn access_log_filters_and_pages(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let other = TenantContext::new(ctx.tenant, ActorId(Uuid::now_v7()), Uuid::now_v7());
    let (p1, p2) = (Uuid::now_v7(), Uuid::now_v7());
    f.store
        .log_access(
            &ctx,
            vec![
                entry(p1, AccessAction::Read),
                entry(p2, AccessAction::Search),
            ],
        )
        .await
        .unwrap();
    let between = salus_kernel::clock::truncate_micros(chrono::Utc::now());
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut glass = entry(p1, AccessAction::Export);
    glass.break_glass = true;
    f.store.log_access(&other, vec![glass]).await.unwrap();
    let seqs = |q: AccessQuery| {
        let store = f.store.clone();
        let ctx = ctx.clone();
        async move {
            store
                .access_log(&ctx, &q)
                .await
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>()
        }
    };
    let q = all();
    assert_eq!(
        seqs(AccessQuery {
            patient: Some(p1),
            ..q.clone()
        })
        .await,
        vec![1, 3]
    );
    assert_eq!(
        seqs(AccessQuery {
            actor: Some(other.actor),
            ..q.clone()
        })
        .await,
        vec![3]
    );
    assert_eq!(
        seqs(AccessQuery {
            action: Some(AccessAction::Search),
            ..q.clone()
        })
        .await,
        vec![2]
    );
    assert_eq!(
        seqs(AccessQuery {
            break_glass: Some(true),
            ..q.clone()
        })
        .await,
        vec![3]
    );
    assert_eq!(
        seqs(AccessQuery {
            from: Some(between),
            ..q.clone()
        })
        .await,
        vec![3]
    );
    assert_eq!(
        seqs(AccessQuery {
            to: Some(between),
            ..q.clone()
        })
        .await,
        vec![1, 2]
    );
    assert_eq!(
        seqs(AccessQuery {
            limit: 2,
            ..q.clone()
        })
        .await,
        vec![1, 2]
    );
    assert_eq!(
        seqs(AccessQuery {
            after: Some(2),
            limit: 2,
            ..q.clone()
        })
        .await,
        vec![3]
    );
}

async fn tenants_do_not_see_each_others_access_entries(backend: &str) {
    let f = Fixture::new(backend).await;
    let a = f.tenant("a").await;
    let b = f.tenant("b").await;
    let p = Uuid::now_v7();
    f.store
        .log_access(&a, vec![entry(p, AccessAction::Read)])
        .await
        .unwrap();
    f.store
        .log_access(
            &b,
            vec![entry(p, AccessAction::Read), entry(p, AccessAction::Read)],
        )
        .await
        .unwrap();
    let seen_a = f.store.access_log(&a, &all()).await.unwrap();
    let seen_b = f.store.access_log(&b, &all()).await.unwrap();
    assert_eq!(seen_a.len(), 1);
    assert!(seen_a.iter().all(|r| r.tenant_id == a.tenant));
    // Each tenant's seq and chain start on their own.
    assert_eq!(seen_b.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert!(seen_b.iter().all(|r| r.tenant_id == b.tenant));
    assert_eq!(
        f.store
            .access_entries_after(a.tenant, 0, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn access_log_refuses_updates_and_deletes(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    f.store
        .log_access(&ctx, vec![entry(Uuid::now_v7(), AccessAction::Read)])
        .await
        .unwrap();
    let update = f
        .try_tamper_access("UPDATE access_log SET purpose = 'HPAYMT'")
        .await;
    assert!(
        update.as_ref().is_err_and(|e| e.contains("append-only")),
        "{update:?}"
    );
    let delete = f.try_tamper_access("DELETE FROM access_log").await;
    assert!(
        delete.as_ref().is_err_and(|e| e.contains("append-only")),
        "{delete:?}"
    );
    assert_eq!(f.store.access_log(&ctx, &all()).await.unwrap().len(), 1);
}

async fn altered_access_entry_is_named_by_verify(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let p = Uuid::now_v7();
    for _ in 0..4 {
        f.store
            .log_access(&ctx, vec![entry(p, AccessAction::Read)])
            .await
            .unwrap();
    }
    let sql = format!(
        "{} UPDATE access_log SET justification = 'nothing to see' WHERE seq = 3;",
        f.unguard_access()
    );
    f.try_tamper_access(&sql).await.unwrap();
    let report = access::verify(f.store.as_ref()).await.unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].seq, Some(3));
    assert!(report.problems[0].what.contains("hash"));
}

async fn removed_access_entry_is_detected(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let store: Arc<dyn salus_store::Store> = f.store.clone();
    for _ in 0..3 {
        store
            .log_access(&ctx, vec![entry(Uuid::now_v7(), AccessAction::Read)])
            .await
            .unwrap();
    }
    let sql = format!(
        "{} DELETE FROM access_log WHERE seq = 2;",
        f.unguard_access()
    );
    f.try_tamper_access(&sql).await.unwrap();
    let report = access::verify(store.as_ref()).await.unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].seq, Some(3));
    assert!(report.problems[0].what.contains("missing"));
}

/// Entries of several batches, some old enough for any deferred lookup to have been
/// written and some not, are all found by patient and by actor, in order and page by page.
async fn lookups_by_patient_and_actor_cover_old_and_new_entries(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let other = TenantContext::new(ctx.tenant, ActorId(Uuid::now_v7()), Uuid::now_v7());
    let (p1, p2) = (Uuid::now_v7(), Uuid::now_v7());
    let mut want_p1 = Vec::new();
    let mut want_other = Vec::new();
    let mut seq = 0;
    for round in 0..4 {
        for i in 0..10 {
            let (who, p) = if i % 3 == 0 { (&other, p1) } else { (&ctx, p2) };
            let p = if i % 2 == 0 { p1 } else { p };
            f.store
                .log_access(who, vec![entry(p, AccessAction::Read)])
                .await
                .unwrap();
            seq += 1;
            if p == p1 {
                want_p1.push(seq);
            }
            if who.actor == other.actor {
                want_other.push(seq);
            }
        }
        if round < 2 {
            // Past the longest delay of a deferred lookup.
            tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        }
    }
    let pages = |q: AccessQuery| {
        let store = f.store.clone();
        let ctx = ctx.clone();
        async move {
            let mut out = Vec::new();
            let mut q = q;
            loop {
                let page = store.access_log(&ctx, &q).await.unwrap();
                let Some(last) = page.last() else { break };
                q.after = Some(last.seq);
                out.extend(page.iter().map(|r| r.seq));
            }
            out
        }
    };
    let by = |patient, actor| AccessQuery {
        patient,
        actor,
        limit: 3,
        ..Default::default()
    };
    assert_eq!(pages(by(Some(p1), None)).await, want_p1);
    assert_eq!(pages(by(None, Some(other.actor))).await, want_other);
    let both: Vec<i64> = want_p1
        .iter()
        .copied()
        .filter(|s| want_other.contains(s))
        .collect();
    assert!(!both.is_empty());
    assert_eq!(pages(by(Some(p1), Some(other.actor))).await, both);
    // And the same after a restart.
    f.store.shutdown().await;
    let store = f.reopen().await;
    let got: Vec<i64> = store
        .access_log(
            &ctx,
            &AccessQuery {
                patient: Some(p1),
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(got, want_p1);
}

/// SQLite writes the lookup rows after their entries, in a file of their own; entries
/// whose lookup rows a crash kept from being written (or a lost lookups file) are found all
/// the same, and their rows are rebuilt on start.
#[tokio::test]
async fn sqlite_rebuilds_lookups_a_crash_left_unwritten() {
    let f = Fixture::new("sqlite").await;
    let ctx = f.tenant("t").await;
    let p = Uuid::now_v7();
    for _ in 0..5 {
        f.store
            .log_access(
                &ctx,
                vec![
                    entry(p, AccessAction::Read),
                    entry(Uuid::now_v7(), AccessAction::Read),
                ],
            )
            .await
            .unwrap();
    }
    f.store.shutdown().await;
    let crate::backends::Kind::Sqlite(path) = &f.kind else {
        unreachable!()
    };
    let lookups = path.with_file_name("salus-access-lookup.db");
    let lookup = |sql: &str| {
        let conn = rusqlite::Connection::open(&lookups).unwrap();
        conn.execute_batch(sql).unwrap();
    };
    let count = |sql: &str| {
        let conn = rusqlite::Connection::open(&lookups).unwrap();
        conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap()
    };
    // Shutdown wrote them.
    assert_eq!(count("SELECT COUNT(*) FROM access_by_patient"), 10);
    assert_eq!(count("SELECT upto FROM access_indexed"), 10);
    let seqs =
        |got: Vec<salus_store::access::AccessRecord>| got.iter().map(|r| r.seq).collect::<Vec<_>>();
    let by_patient = AccessQuery {
        patient: Some(p),
        limit: 100,
        ..Default::default()
    };
    let by_actor = AccessQuery {
        actor: Some(ctx.actor),
        limit: 100,
        ..Default::default()
    };
    // As a crash right after the entries' commit would leave it; then as a lost file.
    for damage in [
        "DELETE FROM access_by_patient WHERE seq > 3; DELETE FROM access_by_actor WHERE seq > 3; UPDATE access_indexed SET upto = 3;",
        "DELETE FROM access_by_patient; DELETE FROM access_by_actor; DELETE FROM access_indexed;",
    ] {
        lookup(damage);
        let store = f.reopen().await;
        assert_eq!(
            seqs(store.access_log(&ctx, &by_patient).await.unwrap()),
            vec![1, 3, 5, 7, 9]
        );
        assert_eq!(
            seqs(store.access_log(&ctx, &by_actor).await.unwrap()).len(),
            10
        );
        store.shutdown().await;
        assert_eq!(count("SELECT COUNT(*) FROM access_by_patient"), 10);
        assert_eq!(count("SELECT COUNT(*) FROM access_by_actor"), 10);
        assert_eq!(count("SELECT upto FROM access_indexed"), 10);
    }
}

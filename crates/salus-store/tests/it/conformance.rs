//! The behaviour every backend must have. Each test runs once per backend.

use crate::backends::Fixture;
use chrono::Utc;
use salus_kernel::{NewEvent, TenantContext};
use salus_store::ledger::{self, LedgerKey, Sealer};
use salus_store::*;
use serde_json::json;
use std::sync::atomic::Ordering;
use uuid::Uuid;

#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name("sqlite").await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name("postgres").await
                }
            }
        )*
    };
}

on_both_backends!(
    committed_write_is_read_back_with_its_search_rows,
    a_refresh_replaces_the_projection_and_leaves_the_log_alone,
    stale_expected_version_is_a_conflict,
    concurrent_writes_share_transactions_and_all_land,
    racing_writers_on_one_version_have_exactly_one_winner,
    unique_keys_are_per_tenant_and_released_keys_can_be_reclaimed,
    a_bad_write_fails_alone_in_its_batch,
    concurrent_new_streams_claiming_keys_keep_each_key_to_one_owner,
    idempotency_records_are_kept_and_purged,
    expired_idempotency_key_is_free_again,
    full_text_search_folds_case_and_accents_and_stays_in_the_tenant,
    tenants_do_not_see_each_other,
    stream_until_gives_the_past,
    search_pages_in_stable_order_with_prefix_and_range,
    every_filter_kind_selects_what_the_in_memory_matcher_selects,
    sealed_log_verifies_and_proofs_check_offline,
    events_with_awkward_numbers_verify_after_storage,
    altered_event_is_named_by_verify,
    removed_event_is_detected,
    altered_tree_head_is_detected,
    a_group_commits_all_its_writes,
    a_stale_version_in_the_last_write_leaves_nothing_of_the_group,
    a_unique_key_clash_in_a_group_leaves_nothing,
    a_group_writing_another_tenants_stream_fails_naming_that_write,
    a_failing_group_batched_with_ordinary_commits_fails_alone,
    groups_keep_every_chain_verifiable,
    random_groups_leave_exactly_what_the_successful_ones_wrote,
);

pub fn patient_write(id: Uuid, expected: i64, family: &str) -> Write {
    Write {
        stream_type: "patient".into(),
        stream_id: id,
        expected_version: expected,
        events: vec![NewEvent {
            event_type: if expected == 0 {
                "patient.registered"
            } else {
                "patient.updated"
            }
            .into(),
            schema_version: 1,
            payload: json!({ "family": family }),
        }],
        occurred_at: salus_kernel::clock::truncate_micros(Utc::now()),
        projection: Some(Projection {
            resource_type: "patient".into(),
            doc: json!({ "id": id, "family": family }),
            doc_json: None,
            search: vec![SearchRow::new("name", family.to_lowercase())],
            full_text: None,
        }),
        claims: vec![],
        releases: vec![],
        idempotency: None,
    }
}

fn name_query(prefix: &str) -> SearchQuery {
    SearchQuery {
        resource_type: "patient".into(),
        filters: vec![Filter {
            also: Vec::new(),
            param: "name".into(),
            system: None,
            op: FilterOp::Prefix,
            value: prefix.into(),
        }],
        after: None,
        limit: 100,
        newest_first: false,
        order_by: None,
    }
}

async fn committed_write_is_read_back_with_its_search_rows(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let id = Uuid::now_v7();
    let c = f
        .store
        .commit(&ctx, patient_write(id, 0, "Lovelace"))
        .await
        .unwrap();
    assert_eq!(c.version, 1);
    assert_eq!(c.events[0].seq, 1);
    let row = f
        .store
        .resource(&ctx, "patient", id)
        .await
        .unwrap()
        .expect("read your write");
    assert_eq!(row.version, 1);
    assert_eq!(row.doc["family"], "Lovelace");
    let text = f
        .store
        .resource_text(&ctx, "patient", id)
        .await
        .unwrap()
        .expect("read your write as text");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text.doc).unwrap(),
        row.doc
    );
    assert_eq!(
        (text.version, text.created_at, text.updated_at),
        (row.version, row.created_at, row.updated_at)
    );
    assert!(
        f.store
            .resource_text(&ctx, "patient", Uuid::now_v7())
            .await
            .unwrap()
            .is_none()
    );
    let found = f.store.search(&ctx, &name_query("love")).await.unwrap();
    assert_eq!(found.len(), 1);
    // Updating replaces the search rows.
    f.store
        .commit(&ctx, patient_write(id, 1, "Byron"))
        .await
        .unwrap();
    assert!(
        f.store
            .search(&ctx, &name_query("love"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        f.store
            .search(&ctx, &name_query("byr"))
            .await
            .unwrap()
            .len(),
        1
    );
    let events = f.store.stream(&ctx, id, None).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].prev_hash, events[0].hash);
    assert!(events.iter().all(|e| e.hash_is_valid()));
    f.store.shutdown().await;
}

async fn stale_expected_version_is_a_conflict(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let id = Uuid::now_v7();
    f.store
        .commit(&ctx, patient_write(id, 0, "A"))
        .await
        .unwrap();
    f.store
        .commit(&ctx, patient_write(id, 1, "B"))
        .await
        .unwrap();
    let err = f
        .store
        .commit(&ctx, patient_write(id, 1, "C"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::Conflict {
            expected: 1,
            actual: 2
        }
    );
    let err = f
        .store
        .commit(&ctx, patient_write(id, 0, "D"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::Conflict {
            expected: 0,
            actual: 2
        }
    );
    let row = f
        .store
        .resource(&ctx, "patient", id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.doc["family"], "B");
}

async fn concurrent_writes_share_transactions_and_all_land(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let n = 400;
    let mut tasks = Vec::new();
    for i in 0..n {
        let store = f.store.clone();
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            store
                .commit(&ctx, patient_write(Uuid::now_v7(), 0, &format!("P{i}")))
                .await
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap().events[0].seq);
    }
    seqs.sort();
    assert_eq!(
        seqs,
        (1..=n as i64).collect::<Vec<_>>(),
        "ledger seq is dense and unique"
    );
    let batches = f.counts.batches.load(Ordering::SeqCst);
    assert_eq!(f.counts.requests.load(Ordering::SeqCst), n);
    assert!(
        batches < n,
        "{batches} transactions for {n} writes: no group commit"
    );
    assert_eq!(f.store.ledger_head(ctx.tenant).await.unwrap(), n as i64);
}

async fn racing_writers_on_one_version_have_exactly_one_winner(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let id = Uuid::now_v7();
    f.store
        .commit(&ctx, patient_write(id, 0, "A"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = f.store.clone();
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            store
                .commit(&ctx, patient_write(id, 1, &format!("W{i}")))
                .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict {
                expected: 1,
                actual: 2,
            }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(f.store.stream(&ctx, id, None).await.unwrap().len(), 2);
}

async fn unique_keys_are_per_tenant_and_released_keys_can_be_reclaimed(backend: &str) {
    let f = Fixture::new(backend).await;
    let a = f.tenant("a").await;
    let b = f.tenant("b").await;
    let key = UniqueKey::new("patient.identifier", "urn:mrn|1");
    let p1 = Uuid::now_v7();
    let mut w = patient_write(p1, 0, "One");
    w.claims = vec![key.clone()];
    f.store.commit(&a, w).await.unwrap();
    let mut w = patient_write(Uuid::now_v7(), 0, "Two");
    w.claims = vec![key.clone()];
    let err = f.store.commit(&a, w).await.unwrap_err();
    assert!(matches!(err, StoreError::Duplicate { owner, .. } if owner == p1));
    let mut w = patient_write(Uuid::now_v7(), 0, "Other tenant");
    w.claims = vec![key.clone()];
    f.store.commit(&b, w).await.expect("keys are per tenant");
    assert_eq!(
        f.store
            .unique_owner(&a, &key.scope, &key.value)
            .await
            .unwrap(),
        Some(p1)
    );
    // Release, then another stream claims it.
    let mut w = patient_write(p1, 1, "One");
    w.releases = vec![key.clone()];
    f.store.commit(&a, w).await.unwrap();
    assert_eq!(
        f.store
            .unique_owner(&a, &key.scope, &key.value)
            .await
            .unwrap(),
        None
    );
    let p3 = Uuid::now_v7();
    let mut w = patient_write(p3, 0, "Three");
    w.claims = vec![key.clone()];
    f.store.commit(&a, w).await.unwrap();
    assert_eq!(
        f.store
            .unique_owner(&a, &key.scope, &key.value)
            .await
            .unwrap(),
        Some(p3)
    );
}

async fn a_bad_write_fails_alone_in_its_batch(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = f.store.clone();
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let mut w = patient_write(Uuid::now_v7(), 0, &format!("P{i}"));
            if i % 10 == 3 {
                w.events.clear();
            }
            (i, store.commit(&ctx, w).await)
        }));
    }
    for t in tasks {
        let (i, r) = t.await.unwrap();
        if i % 10 == 3 {
            assert!(
                matches!(r, Err(StoreError::InvalidWrite(_))),
                "write {i}: {r:?}"
            );
        } else {
            assert!(r.is_ok(), "write {i} failed with its neighbour: {r:?}");
        }
    }
    assert_eq!(f.store.ledger_head(ctx.tenant).await.unwrap(), 54);
}

async fn concurrent_new_streams_claiming_keys_keep_each_key_to_one_owner(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let held = UniqueKey::new("patient.identifier", "urn:mrn|held");
    let owner = Uuid::now_v7();
    let mut w = patient_write(owner, 0, "Owner");
    w.claims = vec![held.clone()];
    f.store.commit(&ctx, w).await.unwrap();
    // In one burst: some claim the held key, some race for one fresh key, the rest
    // claim keys of their own.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = f.store.clone();
        let ctx = ctx.clone();
        let key = match i % 3 {
            0 => held.clone(),
            1 => UniqueKey::new("patient.identifier", "urn:mrn|contested"),
            _ => UniqueKey::new("patient.identifier", format!("urn:mrn|own-{i}")),
        };
        tasks.push(tokio::spawn(async move {
            let id = Uuid::now_v7();
            let mut w = patient_write(id, 0, &format!("P{i}"));
            w.claims = vec![key];
            (i, id, store.commit(&ctx, w).await)
        }));
    }
    let mut contested_winners = Vec::new();
    for t in tasks {
        let (i, id, r) = t.await.unwrap();
        match i % 3 {
            0 => assert!(
                matches!(r, Err(StoreError::Duplicate { owner: o, .. }) if o == owner),
                "write {i} took a held key: {r:?}"
            ),
            1 => match r {
                Ok(_) => contested_winners.push(id),
                Err(StoreError::Duplicate { .. }) => {}
                Err(e) => panic!("write {i}: {e:?}"),
            },
            _ => assert!(r.is_ok(), "write {i} failed with its neighbours: {r:?}"),
        }
    }
    assert_eq!(contested_winners.len(), 1, "{contested_winners:?}");
    let owner_of = |v: &'static str| {
        let store = f.store.clone();
        let ctx = ctx.clone();
        async move {
            store
                .unique_owner(&ctx, "patient.identifier", v)
                .await
                .unwrap()
        }
    };
    assert_eq!(owner_of("urn:mrn|held").await, Some(owner));
    assert_eq!(
        owner_of("urn:mrn|contested").await,
        Some(contested_winners[0])
    );
    // One owner, 20 own keys, one contested winner.
    assert_eq!(f.store.ledger_head(ctx.tenant).await.unwrap(), 22);
}

async fn idempotency_records_are_kept_and_purged(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let now = salus_kernel::clock::truncate_micros(Utc::now());
    let record = IdempotencyRecord {
        key: "user:abc".into(),
        request_hash: "h1".into(),
        status: 201,
        body: json!({"id": 1, "name": "Ada"}),
        resource_version: Some(1),
        created_at: now,
        expires_at: now + chrono::Duration::seconds(1),
    };
    let mut w = patient_write(Uuid::now_v7(), 0, "A");
    w.idempotency = Some(record.clone());
    f.store.commit(&ctx, w).await.unwrap();
    assert_eq!(
        f.store.idempotency(&ctx, "user:abc").await.unwrap(),
        Some(record.clone())
    );
    let mut w = patient_write(Uuid::now_v7(), 0, "B");
    w.idempotency = Some(record.clone());
    assert_eq!(
        f.store.commit(&ctx, w).await.unwrap_err(),
        StoreError::IdempotencyKeyTaken
    );
    let other = f.tenant("u").await;
    assert_eq!(f.store.idempotency(&other, "user:abc").await.unwrap(), None);
    assert_eq!(f.store.purge_idempotency(now).await.unwrap(), 0);
    assert_eq!(
        f.store
            .purge_idempotency(now + chrono::Duration::seconds(2))
            .await
            .unwrap(),
        1
    );
    assert_eq!(f.store.idempotency(&ctx, "user:abc").await.unwrap(), None);
}

async fn tenants_do_not_see_each_other(backend: &str) {
    let f = Fixture::new(backend).await;
    let a = f.tenant("a").await;
    let b = f.tenant("b").await;
    let id = Uuid::now_v7();
    f.store
        .commit(&a, patient_write(id, 0, "Secret"))
        .await
        .unwrap();
    assert!(f.store.resource(&b, "patient", id).await.unwrap().is_none());
    // Reads that alternate between tenants (on whatever pooled connection they get) see
    // each time exactly their own tenant.
    for _ in 0..20 {
        assert!(
            f.store
                .resource_text(&a, "patient", id)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            f.store
                .resource_text(&b, "patient", id)
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(f.store.stream(&b, id, None).await.unwrap().is_empty());
    assert!(
        f.store
            .search(&b, &name_query("sec"))
            .await
            .unwrap()
            .is_empty()
    );
    // Writing to another tenant's stream id is refused.
    assert!(
        f.store
            .commit(&b, patient_write(id, 1, "Hijack"))
            .await
            .is_err()
    );
    assert_eq!(f.store.tenants().await.unwrap().len(), 2);
    let dup = Tenant {
        id: salus_kernel::TenantId(Uuid::now_v7()),
        name: "a".into(),
        created_at: Utc::now(),
    };
    assert!(matches!(
        f.store.create_tenant(&dup).await,
        Err(StoreError::Duplicate { .. })
    ));
}

async fn stream_until_gives_the_past(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let id = Uuid::now_v7();
    let first = f
        .store
        .commit(&ctx, patient_write(id, 0, "A"))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    f.store
        .commit(&ctx, patient_write(id, 1, "B"))
        .await
        .unwrap();
    let past = f
        .store
        .stream(&ctx, id, Some(first.recorded_at))
        .await
        .unwrap();
    assert_eq!(past.len(), 1);
    assert_eq!(past[0].payload["family"], "A");
    let before = f
        .store
        .stream(
            &ctx,
            id,
            Some(first.recorded_at - chrono::Duration::microseconds(1)),
        )
        .await
        .unwrap();
    assert!(before.is_empty());
}

/// Random search rows and random filters of every kind (substring, OR of row tests on
/// value and system, negation, presence): the store selects exactly the resources that
/// [`Filter::matches`] selects in memory (the FHIR search relies on the two agreeing).
async fn every_filter_kind_selects_what_the_in_memory_matcher_selects(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let mut seed: u64 = 0x5eed_1234_abcd_0001;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let words = [
        "a", "ab", "abc", "b", "ba", "bab", "c", "2020", "2021-06", "ä",
    ];
    let systems = ["", "s1", "s2"];
    let params = ["p", "q"];
    let mut all: Vec<(Uuid, Vec<SearchRow>)> = Vec::new();
    for _ in 0..40 {
        let id = Uuid::now_v7();
        let mut rows = Vec::new();
        for _ in 0..next(4) {
            rows.push(SearchRow::token(
                params[next(2) as usize],
                systems[next(3) as usize],
                words[next(words.len() as u64) as usize],
            ));
        }
        rows.sort_by(|a, b| (&a.param, &a.value, &a.system).cmp(&(&b.param, &b.value, &b.system)));
        rows.dedup();
        let mut w = patient_write(id, 0, "x");
        if let Some(p) = w.projection.as_mut() {
            p.resource_type = "thing".into();
            p.search = rows.clone();
        }
        f.store.commit(&ctx, w).await.unwrap();
        all.push((id, rows));
    }
    let cmps = [
        Cmp::Eq,
        Cmp::Lt,
        Cmp::Le,
        Cmp::Gt,
        Cmp::Ge,
        Cmp::Prefix,
        Cmp::Contains,
    ];
    for round in 0..250 {
        let test = |next: &mut dyn FnMut(u64) -> u64| {
            let mut t = RowTest::default();
            for _ in 0..next(3) {
                t.value.push((
                    cmps[next(cmps.len() as u64) as usize],
                    words[next(words.len() as u64) as usize].to_owned(),
                ));
            }
            if next(3) == 0 {
                t.system.push((
                    cmps[next(cmps.len() as u64) as usize],
                    systems[next(3) as usize].to_owned(),
                ));
            }
            t
        };
        let op = match next(8) {
            6 => FilterOp::Eq,
            7 => FilterOp::In(vec!["a".into(), "ba".into()]),
            0 => FilterOp::Contains,
            1 => FilterOp::Prefix,
            2 => FilterOp::AnyOf((0..next(3)).map(|_| test(&mut next)).collect()),
            3 => FilterOp::NoneOf((0..next(3)).map(|_| test(&mut next)).collect()),
            4 => FilterOp::AnyOf(vec![RowTest::default()]),
            _ => FilterOp::NoneOf(vec![RowTest::default()]),
        };
        // Now and then a union of parameters: its own (`u`, which has no rows) or both.
        let (param, also) = match next(4) {
            0 => ("u".into(), vec!["p".into(), "q".into()]),
            1 => ("p".into(), vec!["q".into()]),
            _ => (params[next(2) as usize].into(), Vec::new()),
        };
        let filter = Filter {
            also,
            param,
            system: (next(4) == 0).then(|| systems[next(3) as usize].to_owned()),
            op,
            value: words[next(words.len() as u64) as usize].into(),
        };
        let q = SearchQuery {
            resource_type: "thing".into(),
            filters: vec![filter.clone()],
            after: None,
            limit: 100,
            newest_first: false,
            order_by: None,
        };
        let found: Vec<Uuid> = f
            .store
            .search(&ctx, &q)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        let expected: Vec<Uuid> = all
            .iter()
            .filter(|(_, rows)| filter.matches(rows))
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(found, expected, "round {round}: {filter:?}");
    }
}

async fn search_pages_in_stable_order_with_prefix_and_range(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let mut ids = Vec::new();
    for (i, name) in ["ada", "adam", "adele", "bob", "adrian", "ad"]
        .iter()
        .enumerate()
    {
        let id = Uuid::now_v7();
        let mut w = patient_write(id, 0, name);
        if let Some(p) = w.projection.as_mut() {
            p.search
                .push(SearchRow::new("birth_date", format!("198{i}-01-01")));
        }
        f.store.commit(&ctx, w).await.unwrap();
        if name.starts_with("ad") {
            ids.push(id);
        }
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let mut q = name_query("ad");
        q.limit = 2;
        q.after = after;
        let page = f.store.search(&ctx, &q).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| r.id);
        seen.extend(page.into_iter().map(|r| r.id));
    }
    assert_eq!(seen, ids, "every match once, in creation order");
    // The count is of every match, whatever the cursor and limit.
    let mut q = name_query("ad");
    q.limit = 2;
    q.after = ids.first().copied();
    assert_eq!(f.store.count(&ctx, &q).await.unwrap(), 5);
    assert_eq!(f.store.count(&ctx, &name_query("bo")).await.unwrap(), 1);
    assert_eq!(f.store.count(&ctx, &name_query("zz")).await.unwrap(), 0);
    let other = f.tenant("other").await;
    assert_eq!(f.store.count(&other, &name_query("ad")).await.unwrap(), 0);
    // Newest first, paged the other way.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let mut q = name_query("ad");
        q.limit = 3;
        q.after = after;
        q.newest_first = true;
        let page = f.store.search(&ctx, &q).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| r.id);
        seen.extend(page.into_iter().map(|r| r.id));
    }
    let mut reversed = ids.clone();
    reversed.reverse();
    assert_eq!(seen, reversed, "every match once, newest first");
    // Ordered by a search value (the name, descending), paged with value cursors.
    let mut seen = Vec::new();
    let mut cursor: Option<(Uuid, String)> = None;
    loop {
        let mut q = name_query("ad");
        q.limit = 2;
        q.newest_first = true;
        q.after = cursor.as_ref().map(|c| c.0);
        q.order_by = Some(OrderBy {
            param: "name".into(),
            after_value: cursor.as_ref().map(|c| c.1.clone()),
        });
        let page = f.store.search(&ctx, &q).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some((last.id, last.doc["family"].as_str().unwrap().to_owned()));
        seen.extend(
            page.iter()
                .map(|r| r.doc["family"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(
        seen,
        ["adrian", "adele", "adam", "ada", "ad"],
        "by value, every match once"
    );
    let q = SearchQuery {
        resource_type: "patient".into(),
        filters: vec![
            Filter {
                also: Vec::new(),
                param: "birth_date".into(),
                system: None,
                op: FilterOp::Ge,
                value: "1982-01-01".into(),
            },
            Filter {
                also: Vec::new(),
                param: "birth_date".into(),
                system: None,
                op: FilterOp::Lt,
                value: "1985-01-01".into(),
            },
        ],
        after: None,
        limit: 10,
        newest_first: false,
        order_by: None,
    };
    let found: Vec<String> = f
        .store
        .search(&ctx, &q)
        .await
        .unwrap()
        .iter()
        .map(|r| r.doc["family"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(found, vec!["adele", "bob", "adrian"]);
    // Any of several values; an empty list matches nothing.
    let any_of = |values: &[&str]| SearchQuery {
        resource_type: "patient".into(),
        filters: vec![Filter {
            also: Vec::new(),
            param: "birth_date".into(),
            system: None,
            op: FilterOp::In(values.iter().map(|v| (*v).to_owned()).collect()),
            value: String::new(),
        }],
        after: None,
        limit: 10,
        newest_first: false,
        order_by: None,
    };
    let families = |rows: Vec<ResourceRow>| -> Vec<String> {
        rows.iter()
            .map(|r| r.doc["family"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let found = f
        .store
        .search(&ctx, &any_of(&["1982-01-01", "1984-01-01", "1999-09-09"]))
        .await
        .unwrap();
    let mut found = families(found);
    found.sort();
    assert_eq!(found, ["adele", "adrian"]);
    assert!(f.store.search(&ctx, &any_of(&[])).await.unwrap().is_empty());
}

async fn seal_everything(f: &Fixture) -> Sealer {
    let mut sealer = Sealer::new(LedgerKey::from_hex(SEED).unwrap());
    sealer.seal_all(f.store.as_ref()).await.unwrap();
    sealer
}

const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

async fn write_some(f: &Fixture, ctx: &TenantContext, n: usize) -> Vec<Committed> {
    let mut out = Vec::new();
    for i in 0..n {
        let id = Uuid::now_v7();
        out.push(
            f.store
                .commit(ctx, patient_write(id, 0, &format!("N{i}")))
                .await
                .unwrap(),
        );
        if i % 2 == 0 {
            out.push(
                f.store
                    .commit(ctx, patient_write(id, 1, &format!("M{i}")))
                    .await
                    .unwrap(),
            );
        }
    }
    out
}

async fn sealed_log_verifies_and_proofs_check_offline(backend: &str) {
    let f = Fixture::new(backend).await;
    let key = LedgerKey::from_hex(SEED).unwrap();
    let public = key.public_hex();
    let ctx = f.tenant("t").await;
    let other = f.tenant("u").await;
    let first = write_some(&f, &ctx, 5).await;
    write_some(&f, &other, 3).await;
    let mut sealer = seal_everything(&f).await;
    let more = write_some(&f, &ctx, 4).await;
    sealer.seal_all(f.store.as_ref()).await.unwrap();
    let report = ledger::verify(f.store.as_ref(), &public, |_| {})
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.tenants, 2);
    assert_eq!(report.tree_heads, 3);
    // Inclusion of an early and a late event against the newest head.
    for c in [&first[0], &first[3], more.last().unwrap()] {
        let proof = ledger::prove(f.store.as_ref(), c.events[0].event_id)
            .await
            .unwrap();
        ledger::check_inclusion(&proof, &public).unwrap();
        // Through JSON, as the CLI hands it over.
        let text = serde_json::to_string(&proof).unwrap();
        let back: ledger::InclusionProof = serde_json::from_str(&text).unwrap();
        ledger::check_inclusion(&back, &public).unwrap();
        let mut forged = back.clone();
        forged.event.payload = json!({"family": "Forged"});
        assert!(ledger::check_inclusion(&forged, &public).is_err());
        let wrong_key = LedgerKey::from_hex(&"11".repeat(32)).unwrap().public_hex();
        assert!(ledger::check_inclusion(&back, &wrong_key).is_err());
    }
    let heads = f.store.tree_heads(ctx.tenant).await.unwrap();
    let cp = ledger::prove_consistency(
        f.store.as_ref(),
        ctx.tenant,
        heads[0].tree_size,
        heads[1].tree_size,
    )
    .await
    .unwrap();
    ledger::check_consistency(&cp, &public).unwrap();
}

/// Numbers as clients send them (long decimals, exponents, big and tiny values) come back
/// from either database as the same canonical bytes that were hashed, so verify passes.
async fn events_with_awkward_numbers_verify_after_storage(backend: &str) {
    let f = Fixture::new(backend).await;
    let key = LedgerKey::from_hex(SEED).unwrap();
    let ctx = f.tenant("t").await;
    for text in [
        "555555555555555555555555555555555555555555",
        "0.30000000000000004",
        "1e300",
        "-2.2250738585072014e-308",
        "5e-324",
        "123456789012345678",
        "18446744073709551615",
        "-9223372036854775808",
        "1.0",
        "0.1",
        "98.60000000000001",
    ] {
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let mut w = patient_write(Uuid::now_v7(), 0, "Num");
        w.events[0].payload = json!({ "value": value, "list": [value, {"x": value}] });
        f.store.commit(&ctx, w).await.unwrap();
    }
    seal_everything(&f).await;
    let report = ledger::verify(f.store.as_ref(), &key.public_hex(), |_| {})
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

async fn altered_event_is_named_by_verify(backend: &str) {
    let f = Fixture::new(backend).await;
    let key = LedgerKey::from_hex(SEED).unwrap();
    let ctx = f.tenant("t").await;
    let written = write_some(&f, &ctx, 4).await;
    seal_everything(&f).await;
    let victim = &written[2].events[0];
    let sql = match backend {
        "sqlite" => format!(
            "{} UPDATE events SET payload = '{{\"family\":\"Mallory\"}}' WHERE hex(event_id) = upper('{}');",
            f.unguard(),
            victim.event_id.simple()
        ),
        _ => format!(
            "{} UPDATE events SET payload = '{{\"family\":\"Mallory\"}}' WHERE event_id = '{}';",
            f.unguard(),
            victim.event_id
        ),
    };
    f.tamper(&sql).await;
    let report = ledger::verify(f.store.as_ref(), &key.public_hex(), |_| {})
        .await
        .unwrap();
    assert!(!report.ok());
    let first = &report.problems[0];
    assert_eq!(first.event_id, Some(victim.event_id), "{first}");
    assert!(first.what.contains("altered"), "{first}");
}

async fn removed_event_is_detected(backend: &str) {
    let f = Fixture::new(backend).await;
    let key = LedgerKey::from_hex(SEED).unwrap();
    let ctx = f.tenant("t").await;
    let written = write_some(&f, &ctx, 3).await;
    seal_everything(&f).await;
    // Remove the newest event of the log (the hardest to notice: nothing after it).
    let last = written.last().unwrap().events[0].seq;
    f.tamper(&format!(
        "{} DELETE FROM events WHERE seq = {last};",
        f.unguard()
    ))
    .await;
    let report = ledger::verify(f.store.as_ref(), &key.public_hex(), |_| {})
        .await
        .unwrap();
    assert!(!report.ok());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.what.contains("missing") || p.what.contains("removed")),
        "{:?}",
        report.problems
    );
    // Remove one from the middle too.
    f.tamper("DELETE FROM events WHERE seq = 2;").await;
    let report = ledger::verify(f.store.as_ref(), &key.public_hex(), |_| {})
        .await
        .unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.seq == Some(3) && p.what.contains("seq jumps")),
        "{:?}",
        report.problems
    );
}

async fn altered_tree_head_is_detected(backend: &str) {
    let f = Fixture::new(backend).await;
    let key = LedgerKey::from_hex(SEED).unwrap();
    let ctx = f.tenant("t").await;
    write_some(&f, &ctx, 3).await;
    seal_everything(&f).await;
    let bad_root = match backend {
        "sqlite" => "UPDATE tree_heads SET root_hash = zeroblob(32);",
        _ => "UPDATE tree_heads SET root_hash = decode(repeat('00', 32), 'hex');",
    };
    f.tamper(bad_root).await;
    let report = ledger::verify(f.store.as_ref(), &key.public_hex(), |_| {})
        .await
        .unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.what.contains("does not match the log")),
        "{:?}",
        report.problems
    );
    assert!(
        report.problems.iter().any(|p| p.what.contains("signature")),
        "{:?}",
        report.problems
    );
}

async fn expired_idempotency_key_is_free_again(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let now = salus_kernel::clock::truncate_micros(Utc::now());
    let old = IdempotencyRecord {
        key: "user:k".into(),
        request_hash: "old".into(),
        status: 201,
        body: json!({"n": 1}),
        resource_version: Some(1),
        created_at: now - chrono::Duration::hours(2),
        expires_at: now - chrono::Duration::hours(1),
    };
    let mut w = patient_write(Uuid::now_v7(), 0, "A");
    w.idempotency = Some(old);
    f.store.commit(&ctx, w).await.unwrap();
    let fresh = IdempotencyRecord {
        request_hash: "new".into(),
        body: json!({"n": 2}),
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
        ..f.store.idempotency(&ctx, "user:k").await.unwrap().unwrap()
    };
    let mut w = patient_write(Uuid::now_v7(), 0, "B");
    w.idempotency = Some(fresh.clone());
    f.store
        .commit(&ctx, w)
        .await
        .expect("an expired key does not block");
    assert_eq!(
        f.store.idempotency(&ctx, "user:k").await.unwrap(),
        Some(fresh)
    );
}

async fn full_text_search_folds_case_and_accents_and_stays_in_the_tenant(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let other = f.tenant("u").await;
    for (c, text) in [
        (&ctx, "Patient reports chest pain since Monday"),
        (
            &ctx,
            "Chest X-ray normal; no pain on palpation. Chest clear.",
        ),
        (&ctx, "Knee swelling after a fall"),
        (&ctx, "Douleur thoracique légère"),
        (&other, "Chest pain in another tenant"),
    ] {
        let mut w = patient_write(Uuid::now_v7(), 0, "N");
        if let Some(p) = w.projection.as_mut() {
            p.full_text = Some(text.to_owned());
        }
        f.store.commit(c, w).await.unwrap();
    }
    let hits = f
        .store
        .search_text(&ctx, "patient", "CHEST pain", 10)
        .await
        .unwrap();
    assert_eq!(
        hits.len(),
        2,
        "both words must occur, case ignored, own tenant only"
    );
    assert!(
        hits.windows(2).all(|w| w[0].rank >= w[1].rank),
        "best first"
    );
    assert_eq!(
        f.store
            .search_text(&ctx, "patient", "legere", 10)
            .await
            .unwrap()
            .len(),
        1,
        "accents folded"
    );
    assert_eq!(
        f.store
            .search_text(&ctx, "patient", "knee \" OR 1=1", 10)
            .await
            .unwrap()
            .len(),
        0,
        "query syntax is not interpreted"
    );
    assert!(
        f.store
            .search_text(&ctx, "patient", "   ", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        f.store
            .search_text(&ctx, "encounter", "chest", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A write with no event refreshes an existing stream's projection (document and search
/// rows) at its current version; the log, the stream head and the chain stay as they were.
/// Without a projection, on a new stream, or with keys to claim it is refused.
async fn a_refresh_replaces_the_projection_and_leaves_the_log_alone(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let id = Uuid::now_v7();
    let first = f
        .store
        .commit(&ctx, patient_write(id, 0, "Ada"))
        .await
        .unwrap();
    let before = f
        .store
        .resource(&ctx, "patient", id)
        .await
        .unwrap()
        .unwrap();
    let refresh = |expected: i64, family: &str| {
        let mut w = patient_write(id, expected, family);
        w.events.clear();
        w.occurred_at = before.updated_at;
        w
    };
    let done = f.store.commit(&ctx, refresh(1, "Byron")).await.unwrap();
    assert_eq!(done.version, 1);
    assert!(done.events.is_empty());
    let after = f
        .store
        .resource(&ctx, "patient", id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.version, 1);
    assert_eq!(after.doc["family"], "Byron");
    assert_eq!(after.updated_at, before.updated_at);
    assert_eq!(after.created_at, before.created_at);
    let found = |prefix: &str| {
        let store = f.store.clone();
        let ctx = ctx.clone();
        let q = name_query(prefix);
        async move {
            store
                .search(&ctx, &q)
                .await
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(found("byr").await, vec![id]);
    assert!(found("ada").await.is_empty());
    let events = f.store.stream(&ctx, id, None).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_id, first.events[0].event_id);
    // A stale refresh is a conflict; one of a stream that does not exist, without a
    // projection, or claiming a key is refused.
    assert!(matches!(
        f.store.commit(&ctx, refresh(2, "Stale")).await,
        Err(StoreError::Conflict { .. })
    ));
    let mut new_stream = patient_write(Uuid::now_v7(), 0, "Nobody");
    new_stream.events.clear();
    let mut bare = refresh(1, "Bare");
    bare.projection = None;
    let mut claiming = refresh(1, "Claim");
    claiming.claims = vec![UniqueKey {
        scope: "patient.identifier".into(),
        value: "x|1".into(),
    }];
    for w in [new_stream, bare, claiming] {
        assert!(matches!(
            f.store.commit(&ctx, w).await,
            Err(StoreError::InvalidWrite(_))
        ));
    }
    // The log still verifies: the refresh added nothing to it.
    seal_everything(&f).await;
    let report = ledger::verify(
        f.store.as_ref(),
        &LedgerKey::from_hex(SEED).unwrap().public_hex(),
        |_| {},
    )
    .await
    .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.events, 1);
}

// ---- groups (commit_all) ----

fn mrn(value: &str) -> UniqueKey {
    UniqueKey::new("patient.identifier", format!("urn:mrn|{value}"))
}

fn claiming(mut w: Write, keys: &[UniqueKey]) -> Write {
    w.claims = keys.to_vec();
    w
}

/// The error of write `index` of a group, unwrapped.
fn in_group(result: Result<Vec<Committed>, StoreError>) -> (usize, StoreError) {
    match result {
        Err(StoreError::InGroup { index, source }) => (index, *source),
        other => panic!("expected a failed group, got {other:?}"),
    }
}

async fn family_of(f: &Fixture, ctx: &TenantContext, id: Uuid) -> Option<(i64, String)> {
    f.store
        .resource(ctx, "patient", id)
        .await
        .unwrap()
        .map(|r| (r.version, r.doc["family"].as_str().unwrap_or("").to_owned()))
}

async fn a_group_commits_all_its_writes(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    assert!(f.store.commit_all(&ctx, vec![]).await.unwrap().is_empty());
    let old = Uuid::now_v7();
    f.store
        .commit(&ctx, claiming(patient_write(old, 0, "Old"), &[mrn("1")]))
        .await
        .unwrap();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let mut release = patient_write(old, 1, "Older");
    release.releases = vec![mrn("1")];
    let done = f
        .store
        .commit_all(
            &ctx,
            vec![
                // A key given up by one write is free for a later one.
                release,
                claiming(patient_write(a, 0, "Ada"), &[mrn("1")]),
                // One stream twice, in order.
                patient_write(b, 0, "Babbage"),
                patient_write(b, 1, "Byron"),
            ],
        )
        .await
        .unwrap();
    let versions: Vec<i64> = done.iter().map(|c| c.version).collect();
    assert_eq!(versions, [2, 1, 1, 2]);
    let seqs: Vec<i64> = done.iter().map(|c| c.events[0].seq).collect();
    assert_eq!(seqs, [2, 3, 4, 5], "in order, dense");
    assert!(
        done.iter().all(|c| c.recorded_at == done[0].recorded_at),
        "one transaction"
    );
    assert_eq!(family_of(&f, &ctx, old).await, Some((2, "Older".into())));
    assert_eq!(family_of(&f, &ctx, a).await, Some((1, "Ada".into())));
    assert_eq!(family_of(&f, &ctx, b).await, Some((2, "Byron".into())));
    let owner = f
        .store
        .unique_owner(&ctx, "patient.identifier", "urn:mrn|1")
        .await
        .unwrap();
    assert_eq!(owner, Some(a));
    let found: Vec<Uuid> = f
        .store
        .search(&ctx, &name_query("b"))
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        found,
        vec![b],
        "the search rows of the last write of b only"
    );
    let events = f.store.stream(&ctx, b, None).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].prev_hash, events[0].hash);
    assert!(events.iter().all(|e| e.hash_is_valid()));
    assert_eq!(f.store.ledger_head(ctx.tenant).await.unwrap(), 5);
}

async fn a_stale_version_in_the_last_write_leaves_nothing_of_the_group(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let (e, g) = (Uuid::now_v7(), Uuid::now_v7());
    f.store
        .commit(&ctx, patient_write(e, 0, "Euler"))
        .await
        .unwrap();
    f.store
        .commit(&ctx, patient_write(g, 0, "Gauss"))
        .await
        .unwrap();
    let now = salus_kernel::clock::truncate_micros(Utc::now());
    let mut first = claiming(patient_write(Uuid::now_v7(), 0, "Ada"), &[mrn("a")]);
    if let Some(p) = first.projection.as_mut() {
        p.full_text = Some("Ada Lovelace".into());
    }
    first.idempotency = Some(IdempotencyRecord {
        key: "user:group".into(),
        request_hash: "h".into(),
        status: 200,
        body: json!({"ok": true}),
        resource_version: Some(1),
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
    });
    let a = first.stream_id;
    let result = f
        .store
        .commit_all(
            &ctx,
            vec![
                first,
                patient_write(e, 1, "Eulerian"),
                patient_write(g, 0, "Stale"),
            ],
        )
        .await;
    let (index, error) = in_group(result);
    assert_eq!(index, 2);
    assert_eq!(
        error,
        StoreError::Conflict {
            expected: 0,
            actual: 1
        }
    );
    assert_eq!(error, *StoreError::in_group(2, error.clone()).kind());
    // Nothing of the first two writes remains.
    assert_eq!(family_of(&f, &ctx, a).await, None);
    assert!(f.store.stream(&ctx, a, None).await.unwrap().is_empty());
    assert_eq!(family_of(&f, &ctx, e).await, Some((1, "Euler".into())));
    assert_eq!(f.store.stream(&ctx, e, None).await.unwrap().len(), 1);
    assert!(
        f.store
            .search(&ctx, &name_query("ada"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        f.store
            .search(&ctx, &name_query("eulerian"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        f.store
            .search_text(&ctx, "patient", "lovelace", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        f.store
            .unique_owner(&ctx, "patient.identifier", "urn:mrn|a")
            .await
            .unwrap(),
        None
    );
    assert_eq!(f.store.idempotency(&ctx, "user:group").await.unwrap(), None);
    assert_eq!(f.store.ledger_head(ctx.tenant).await.unwrap(), 2);
    // The same group with the right version commits, and seq goes on densely.
    let done = f
        .store
        .commit_all(
            &ctx,
            vec![
                patient_write(e, 1, "Eulerian"),
                patient_write(g, 1, "Fresh"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(done[1].events[0].seq, 4);
}

async fn a_unique_key_clash_in_a_group_leaves_nothing(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let holder = Uuid::now_v7();
    f.store
        .commit(
            &ctx,
            claiming(patient_write(holder, 0, "Holder"), &[mrn("held")]),
        )
        .await
        .unwrap();
    let owner_of = |v: &str| {
        let store = f.store.clone();
        let ctx = ctx.clone();
        let v = format!("urn:mrn|{v}");
        async move {
            store
                .unique_owner(&ctx, "patient.identifier", &v)
                .await
                .unwrap()
        }
    };
    // A key held outside the group.
    let a = Uuid::now_v7();
    let result = f
        .store
        .commit_all(
            &ctx,
            vec![
                claiming(patient_write(a, 0, "A"), &[mrn("free")]),
                claiming(patient_write(Uuid::now_v7(), 0, "B"), &[mrn("held")]),
            ],
        )
        .await;
    let (index, error) = in_group(result);
    assert_eq!(index, 1);
    assert!(
        matches!(error, StoreError::Duplicate { owner, .. } if owner == holder),
        "{error:?}"
    );
    assert_eq!(owner_of("free").await, None);
    assert_eq!(family_of(&f, &ctx, a).await, None);
    // A key claimed twice inside the group: the second write names the first's stream.
    let c = Uuid::now_v7();
    let result = f
        .store
        .commit_all(
            &ctx,
            vec![
                claiming(patient_write(c, 0, "C"), &[mrn("twice")]),
                patient_write(Uuid::now_v7(), 0, "D"),
                claiming(patient_write(Uuid::now_v7(), 0, "E"), &[mrn("twice")]),
            ],
        )
        .await;
    let (index, error) = in_group(result);
    assert_eq!(index, 2);
    assert!(
        matches!(error, StoreError::Duplicate { owner, .. } if owner == c),
        "{error:?}"
    );
    assert_eq!(owner_of("twice").await, None);
    assert_eq!(owner_of("held").await, Some(holder));
    assert_eq!(f.store.ledger_head(ctx.tenant).await.unwrap(), 1);
    // The free key is still free for an ordinary write.
    f.store
        .commit(
            &ctx,
            claiming(patient_write(Uuid::now_v7(), 0, "F"), &[mrn("free")]),
        )
        .await
        .unwrap();
}

async fn a_group_writing_another_tenants_stream_fails_naming_that_write(backend: &str) {
    let f = Fixture::new(backend).await;
    let a = f.tenant("a").await;
    let b = f.tenant("b").await;
    let theirs = Uuid::now_v7();
    f.store
        .commit(&a, patient_write(theirs, 0, "Theirs"))
        .await
        .unwrap();
    let mine = Uuid::now_v7();
    let result = f
        .store
        .commit_all(
            &b,
            vec![
                patient_write(mine, 0, "Mine"),
                patient_write(Uuid::now_v7(), 0, "Also mine"),
                patient_write(theirs, 0, "Hijack"),
            ],
        )
        .await;
    let (index, error) = in_group(result);
    assert_eq!(index, 2);
    assert!(matches!(error, StoreError::StreamTaken), "{error:?}");
    assert_eq!(family_of(&f, &b, mine).await, None);
    assert_eq!(family_of(&f, &a, theirs).await, Some((1, "Theirs".into())));
    assert_eq!(f.store.ledger_head(b.tenant).await.unwrap(), 0);
}

async fn a_failing_group_batched_with_ordinary_commits_fails_alone(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let existing = Uuid::now_v7();
    f.store
        .commit(&ctx, patient_write(existing, 0, "Existing"))
        .await
        .unwrap();
    enum Ask {
        One,
        GoodGroup,
        BadGroup,
    }
    let mut tasks = Vec::new();
    for i in 0..240usize {
        let store = f.store.clone();
        let ctx = ctx.clone();
        let ask = match i % 8 {
            3 => Ask::GoodGroup,
            5 => Ask::BadGroup,
            _ => Ask::One,
        };
        tasks.push(tokio::spawn(async move {
            let fresh = |n: &str| patient_write(Uuid::now_v7(), 0, &format!("{n}{i}"));
            let r = match ask {
                Ask::One => store.commit(&ctx, fresh("P")).await.map(|c| vec![c]),
                Ask::GoodGroup => store.commit_all(&ctx, vec![fresh("G"), fresh("H")]).await,
                // Stale on the existing stream (at 1), after two good writes.
                Ask::BadGroup => {
                    store
                        .commit_all(
                            &ctx,
                            vec![fresh("X"), fresh("Y"), patient_write(existing, 0, "Z")],
                        )
                        .await
                }
            };
            (i, r)
        }));
    }
    let mut events = 1;
    for t in tasks {
        let (i, r) = t.await.unwrap();
        match i % 8 {
            5 => {
                let (index, error) = in_group(r);
                assert_eq!(index, 2, "request {i}");
                assert!(
                    matches!(
                        error,
                        StoreError::Conflict {
                            expected: 0,
                            actual: 1
                        }
                    ),
                    "request {i}: {error:?}"
                );
            }
            3 => {
                let done =
                    r.unwrap_or_else(|e| panic!("group {i} failed with its neighbours: {e:?}"));
                assert_eq!(done.len(), 2);
                events += 2;
            }
            _ => {
                assert!(r.is_ok(), "write {i} failed with its neighbours: {r:?}");
                events += 1;
            }
        }
    }
    let requests = f.counts.requests.load(Ordering::SeqCst);
    let batches = f.counts.batches.load(Ordering::SeqCst);
    assert!(
        batches < requests,
        "{batches} transactions for {requests} requests: no group commit"
    );
    assert_eq!(f.store.ledger_head(ctx.tenant).await.unwrap(), events);
    assert!(
        f.store
            .search(&ctx, &name_query("x"))
            .await
            .unwrap()
            .is_empty()
    );
    let heads = f.store.stream_heads(ctx.tenant).await.unwrap();
    assert_eq!(
        heads.len() as i64,
        events,
        "every stream one event, none of a failed group"
    );
}

async fn groups_keep_every_chain_verifiable(backend: &str) {
    let f = Fixture::new(backend).await;
    let key = LedgerKey::from_hex(SEED).unwrap();
    let ctx = f.tenant("t").await;
    let other = f.tenant("u").await;
    write_some(&f, &ctx, 3).await;
    let mut sealer = seal_everything(&f).await;
    let mut tasks = Vec::new();
    for i in 0..30usize {
        let store = f.store.clone();
        let ctx = if i % 3 == 0 {
            other.clone()
        } else {
            ctx.clone()
        };
        tasks.push(tokio::spawn(async move {
            let s = Uuid::now_v7();
            let mut group = vec![
                patient_write(s, 0, &format!("S{i}")),
                patient_write(s, 1, &format!("T{i}")),
                patient_write(Uuid::now_v7(), 0, &format!("U{i}")),
                patient_write(s, 2, &format!("V{i}")),
            ];
            if i % 4 == 1 {
                // Fails in its last write: nothing of it may show in the chains.
                group.push(patient_write(s, 2, "Stale"));
            }
            let single = store
                .commit(&ctx, patient_write(Uuid::now_v7(), 0, "W"))
                .await;
            (i, store.commit_all(&ctx, group).await, single)
        }));
    }
    let mut committed = 5; // write_some(3): 3 streams, 2 of them updated
    for t in tasks {
        let (i, group, single) = t.await.unwrap();
        single.unwrap();
        committed += 1;
        if i % 4 == 1 {
            assert_eq!(in_group(group).0, 4);
        } else {
            assert_eq!(group.unwrap().len(), 4);
            committed += 4;
        }
    }
    sealer.seal_all(f.store.as_ref()).await.unwrap();
    let report = ledger::verify(f.store.as_ref(), &key.public_hex(), |_| {})
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.events, committed);
    assert_eq!(report.tenants, 2);
}

/// Random groups, each on streams and keys of its own, some with a write that must fail
/// (a stale version, a held key, a malformed write) at a random place, all sent at once:
/// what is stored is exactly what the successful groups wrote.
async fn random_groups_leave_exactly_what_the_successful_ones_wrote(backend: &str) {
    use rand::{Rng, SeedableRng};
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let existing = Uuid::now_v7();
    f.store
        .commit(
            &ctx,
            claiming(patient_write(existing, 0, "Existing"), &[mrn("held")]),
        )
        .await
        .unwrap();
    struct Planned {
        writes: Vec<Write>,
        /// Where the poisoned write is, if any.
        poison: Option<usize>,
    }
    let mut groups = Vec::new();
    for g in 0..60usize {
        let mut writes = Vec::new();
        let streams: Vec<Uuid> = (0..rng.gen_range(1..=3)).map(|_| Uuid::now_v7()).collect();
        for (j, s) in streams.iter().enumerate() {
            let key = mrn(&format!("g{g}-{j}"));
            writes.push(claiming(patient_write(*s, 0, &format!("G{g}")), &[key]));
            if rng.gen_bool(0.3) {
                writes.push(patient_write(*s, 1, &format!("G{g}")));
            }
        }
        let poison = rng.gen_bool(0.4).then(|| {
            let at = rng.gen_range(0..=writes.len());
            let bad = match rng.gen_range(0..3) {
                0 => patient_write(existing, 0, "Stale"),
                1 => claiming(patient_write(Uuid::now_v7(), 0, "Taker"), &[mrn("held")]),
                _ => {
                    let mut w = patient_write(Uuid::now_v7(), 0, "Empty");
                    w.events.clear();
                    w
                }
            };
            writes.insert(at, bad);
            at
        });
        groups.push(Planned { writes, poison });
    }
    let mut tasks = Vec::new();
    for (g, p) in groups.iter().enumerate() {
        let store = f.store.clone();
        let ctx = ctx.clone();
        let writes = p.writes.clone();
        tasks.push(tokio::spawn(async move {
            (g, store.commit_all(&ctx, writes).await)
        }));
    }
    let mut events = 1;
    for t in tasks {
        let (g, r) = t.await.unwrap();
        let p = &groups[g];
        match p.poison {
            Some(at) => {
                let (index, error) = in_group(r);
                assert_eq!(index, at, "seed {seed}, group {g}: {error:?}");
            }
            None => {
                let done = r.unwrap_or_else(|e| panic!("seed {seed}, group {g}: {e:?}"));
                assert_eq!(done.len(), p.writes.len());
                events += p.writes.len() as i64;
            }
        }
    }
    // Every stream and key of a successful group is there at its last version; none of a
    // failed group's are.
    for (g, p) in groups.iter().enumerate() {
        for (j, w) in p.writes.iter().enumerate() {
            if p.poison == Some(j) {
                continue;
            }
            let last = p
                .writes
                .iter()
                .enumerate()
                .filter(|(k, o)| o.stream_id == w.stream_id && p.poison != Some(*k))
                .map(|(_, o)| o.expected_version + 1)
                .max();
            let stored = f
                .store
                .resource(&ctx, "patient", w.stream_id)
                .await
                .unwrap()
                .map(|r| r.version);
            let want = if p.poison.is_none() { last } else { None };
            assert_eq!(stored, want, "seed {seed}, group {g}, write {j}");
            for k in &w.claims {
                let owner = f
                    .store
                    .unique_owner(&ctx, &k.scope, &k.value)
                    .await
                    .unwrap();
                assert_eq!(
                    owner,
                    want.map(|_| w.stream_id),
                    "seed {seed}, group {g}, key {k:?}"
                );
            }
        }
    }
    assert_eq!(
        f.store.ledger_head(ctx.tenant).await.unwrap(),
        events,
        "seed {seed}"
    );
    assert_eq!(
        family_of(&f, &ctx, existing).await,
        Some((1, "Existing".into()))
    );
    seal_everything(&f).await;
    let report = ledger::verify(
        f.store.as_ref(),
        &LedgerKey::from_hex(SEED).unwrap().public_hex(),
        |_| {},
    )
    .await
    .unwrap();
    assert!(report.ok(), "seed {seed}: {:?}", report.problems);
}

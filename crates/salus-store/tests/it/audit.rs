//! The audit trail's event queries on every backend: each filter, the patient's own
//! streams and those pointing at it, seq cursors, and the tenant boundary.

use crate::backends::Fixture;
use chrono::Utc;
use salus_kernel::{ActorId, NewEvent, TenantContext};
use salus_store::audit::{EventQuery, StreamsOf};
use salus_store::*;
use serde_json::json;
use uuid::Uuid;

crate::on_both_backends!(audit_queries_filter_page_and_follow_the_patient);

fn write(stream_type: &str, id: Uuid, expected: i64, event: &str, patient: Option<Uuid>) -> Write {
    Write {
        stream_type: stream_type.into(),
        stream_id: id,
        expected_version: expected,
        events: vec![NewEvent {
            event_type: event.into(),
            schema_version: 1,
            payload: json!({ "n": expected }),
        }],
        occurred_at: salus_kernel::clock::truncate_micros(Utc::now()),
        projection: Some(Projection {
            resource_type: stream_type.into(),
            doc: json!({ "id": id }),
            doc_json: None,
            search: patient
                .map(|p| vec![SearchRow::new("patient", p.to_string())])
                .unwrap_or_default(),
            full_text: None,
        }),
        claims: vec![],
        releases: vec![],
        idempotency: None,
    }
}

fn q() -> EventQuery {
    EventQuery {
        limit: 100,
        ..Default::default()
    }
}

fn ids(events: &[salus_kernel::EventEnvelope]) -> Vec<(Uuid, i64)> {
    events.iter().map(|e| (e.stream_id, e.version)).collect()
}

async fn audit_queries_filter_page_and_follow_the_patient(backend: &str) {
    let f = Fixture::new(backend).await;
    let ctx = f.tenant("t").await;
    let other_actor = TenantContext::new(ctx.tenant, ActorId(Uuid::now_v7()), Uuid::now_v7());
    let (p, q_patient, enc, obs) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let s = &f.store;
    s.commit(&ctx, write("patient", p, 0, "patient.registered", None))
        .await
        .unwrap();
    s.commit(
        &ctx,
        write("patient", q_patient, 0, "patient.registered", None),
    )
    .await
    .unwrap();
    s.commit(
        &ctx,
        write("encounter", enc, 0, "encounter.scheduled", Some(p)),
    )
    .await
    .unwrap();
    let middle = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    s.commit(
        &other_actor,
        write(
            "observation",
            obs,
            0,
            "observation.recorded",
            Some(q_patient),
        ),
    )
    .await
    .unwrap();
    s.commit(
        &other_actor,
        write("patient", p, 1, "patient.updated", None),
    )
    .await
    .unwrap();

    let all = s.audit_events(&ctx, &q()).await.unwrap();
    assert_eq!(
        ids(&all),
        [(p, 1), (q_patient, 1), (enc, 1), (obs, 1), (p, 2)]
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    // Newest first, paged backwards with `before`.
    let newest = EventQuery {
        newest_first: true,
        limit: 2,
        ..q()
    };
    let page = s.audit_events(&ctx, &newest).await.unwrap();
    assert_eq!(ids(&page), [(p, 2), (obs, 1)]);
    let rest = EventQuery {
        before: page.last().map(|e| e.seq),
        ..newest.clone()
    };
    assert_eq!(
        ids(&s.audit_events(&ctx, &rest).await.unwrap()),
        [(enc, 1), (q_patient, 1)]
    );

    // The patient's own stream and what points at it, in seq order.
    let of_p = EventQuery {
        streams: Some(StreamsOf {
            ids: vec![p],
            param: "patient".into(),
            resource_types: vec!["encounter".into(), "observation".into()],
        }),
        ..q()
    };
    assert_eq!(
        ids(&s.audit_events(&ctx, &of_p).await.unwrap()),
        [(p, 1), (enc, 1), (p, 2)]
    );
    // A type not listed is not followed.
    let only_obs = EventQuery {
        streams: Some(StreamsOf {
            ids: vec![p],
            param: "patient".into(),
            resource_types: vec!["observation".into()],
        }),
        ..q()
    };
    assert_eq!(
        ids(&s.audit_events(&ctx, &only_obs).await.unwrap()),
        [(p, 1), (p, 2)]
    );
    let by_type = EventQuery {
        stream_type: Some("patient".into()),
        ..q()
    };
    assert_eq!(s.audit_events(&ctx, &by_type).await.unwrap().len(), 3);
    let by_id = EventQuery {
        stream_type: Some("patient".into()),
        stream_id: Some(p),
        ..q()
    };
    assert_eq!(
        ids(&s.audit_events(&ctx, &by_id).await.unwrap()),
        [(p, 1), (p, 2)]
    );
    let by_actor = EventQuery {
        actor: Some(other_actor.actor),
        ..q()
    };
    assert_eq!(
        ids(&s.audit_events(&ctx, &by_actor).await.unwrap()),
        [(obs, 1), (p, 2)]
    );
    let by_event = EventQuery {
        event_type: Some("patient.updated".into()),
        ..q()
    };
    assert_eq!(
        ids(&s.audit_events(&ctx, &by_event).await.unwrap()),
        [(p, 2)]
    );
    let before = EventQuery {
        to: Some(middle),
        ..q()
    };
    assert_eq!(s.audit_events(&ctx, &before).await.unwrap().len(), 3);
    let after = EventQuery {
        from: Some(middle),
        ..q()
    };
    assert_eq!(
        ids(&s.audit_events(&ctx, &after).await.unwrap()),
        [(obs, 1), (p, 2)]
    );
    // Cursor pages: two at a time, nothing twice, nothing skipped.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .audit_events(
                &ctx,
                &EventQuery {
                    after: cursor,
                    limit: 2,
                    ..q()
                },
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        cursor = page.last().map(|e| e.seq);
        seen.extend(ids(&page));
    }
    assert_eq!(seen, ids(&all));
    // Another tenant sees none of it, whatever it asks.
    let stranger = f.tenant("other").await;
    assert!(s.audit_events(&stranger, &q()).await.unwrap().is_empty());
    assert!(s.audit_events(&stranger, &of_p).await.unwrap().is_empty());
}

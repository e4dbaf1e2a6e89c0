//! The audit trail: the AuditEvent of requirements/000. Each event of the log, with the
//! state of its aggregate just before it and just after it (folded from the stream, as
//! `as_of` reads are) and the change between the two as an RFC 6902 JSON Patch.
//!
//! Which aggregate a stream holds is read from its stream type ([`fold_states`]); a stream
//! type not listed there (written by a newer build, or an aggregate added without its
//! line) is shown with its event but without states (`states: false`), never refused.

use crate::service::{Projected, ServiceError, Services};
use futures_util::StreamExt;
use salus_kernel::{Aggregate, EventEnvelope, TenantContext};
use salus_store::audit::{EventQuery, StreamsOf};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;

/// Resource types of a patient's records: each has a `patient` search row naming it.
pub const PATIENT_RECORD_TYPES: &[&str] = &[
    "interaction",
    "encounter",
    "observation",
    "procedure",
    "condition",
    "allergy",
    "medical_record",
    "clinical_note",
    "attachment",
    "consent",
    crate::access::care::ASSIGNMENT_TYPE,
];

/// One event of the trail.
#[derive(Debug, Clone)]
pub struct AuditItem {
    pub event: EventEnvelope,
    /// The resource type of the stream's aggregate, when the stream type is known.
    pub resource_type: Option<&'static str>,
    /// The state before the event (`null` before the first one).
    pub before: Value,
    /// The state after it.
    pub after: Value,
    /// RFC 6902 JSON Patch from `before` to `after`.
    pub diff: Value,
    /// The patient the aggregate belongs to (a patient's own id, a record's `patient_id`).
    pub patient_id: Option<Uuid>,
}

/// The states of an aggregate `A` after each version of `wanted` (version 0 is `null`).
fn states_of<A: Projected>(
    events: &[EventEnvelope],
    wanted: &BTreeSet<i64>,
) -> Result<HashMap<i64, Value>, ServiceError> {
    let mut out = HashMap::new();
    if wanted.contains(&0) {
        out.insert(0, Value::Null);
    }
    let last = wanted.iter().next_back().copied().unwrap_or(0);
    let mut state: Option<A> = A::initial();
    for e in events.iter().take_while(|e| e.version <= last) {
        let ev = A::decode_stored(&e.event_type, e.schema_version, &e.payload).map_err(|err| {
            ServiceError::Corrupt(format!("event {} does not decode: {err}", e.event_id))
        })?;
        state = A::evolve(state, &ev);
        if wanted.contains(&e.version) {
            let doc = match &state {
                Some(s) => {
                    serde_json::to_value(s).map_err(|e| ServiceError::Corrupt(e.to_string()))?
                }
                None => Value::Null,
            };
            out.insert(e.version, doc);
        }
    }
    Ok(out)
}

/// A stream's resource type and its states by version.
pub type Folded = (&'static str, HashMap<i64, Value>);

/// The states of a stream after each wanted version, by its stream type.
pub fn fold_states(
    stream_type: &str,
    events: &[EventEnvelope],
    wanted: &BTreeSet<i64>,
) -> Option<Result<Folded, ServiceError>> {
    crate::aggregates::by_stream_type!(stream_type, A => {
        states_of::<A>(events, wanted).map(|m| (<A as Projected>::RESOURCE_TYPE, m))
    })
}

/// The RFC 6902 JSON Patch that turns `before` into `after`.
pub fn diff(before: &Value, after: &Value) -> Value {
    serde_json::to_value(json_patch::diff(before, after)).unwrap_or(Value::Array(Vec::new()))
}

/// The patient an aggregate's state belongs to.
fn patient_of(stream_type: &str, stream_id: Uuid, before: &Value, after: &Value) -> Option<Uuid> {
    if stream_type == crate::registry::Patient::STREAM_TYPE {
        return Some(stream_id);
    }
    [after, before]
        .iter()
        .find_map(|d| d.get("patient_id").and_then(Value::as_str))
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// What "everything about this patient" selects: the patient's merge group and every
/// record pointing at one of them.
pub async fn patient_streams(
    services: &Services,
    ctx: &TenantContext,
    patient: Uuid,
) -> Result<StreamsOf, ServiceError> {
    let ids = crate::registry::patient::merge_group(services, ctx, patient).await?;
    Ok(StreamsOf {
        ids,
        param: "patient".into(),
        resource_types: PATIENT_RECORD_TYPES
            .iter()
            .map(|t| (*t).to_owned())
            .collect(),
    })
}

/// Streams folded at once for one page.
const FOLDS_IN_FLIGHT: usize = 8;

/// One page of the trail: the events `query` selects, each with its states and diff.
pub async fn page(
    services: &Services,
    ctx: &TenantContext,
    query: &EventQuery,
) -> Result<Vec<AuditItem>, ServiceError> {
    let events = services.store.audit_events(ctx, query).await?;
    // Per stream: the versions whose state is needed (each event's and the one before).
    let mut wanted: HashMap<Uuid, (String, BTreeSet<i64>)> = HashMap::new();
    for e in &events {
        let w = wanted
            .entry(e.stream_id)
            .or_insert_with(|| (e.stream_type.clone(), BTreeSet::new()));
        w.1.insert(e.version - 1);
        w.1.insert(e.version);
    }
    let folded: Vec<(Uuid, Option<Folded>)> =
        futures_util::stream::iter(wanted.into_iter().map(|(id, (st, versions))| async move {
            let stream = services.store.stream(ctx, id, None).await?;
            let states = fold_states(&st, &stream, &versions).transpose()?;
            Ok::<_, ServiceError>((id, states))
        }))
        .buffer_unordered(FOLDS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let folded: HashMap<Uuid, Option<Folded>> = folded.into_iter().collect();
    Ok(events
        .into_iter()
        .map(|event| {
            let states = folded.get(&event.stream_id).and_then(Option::as_ref);
            let at = |v: i64| {
                states
                    .and_then(|(_, m)| m.get(&v).cloned())
                    .unwrap_or(Value::Null)
            };
            let (before, after) = (at(event.version - 1), at(event.version));
            AuditItem {
                resource_type: states.map(|(t, _)| *t),
                diff: diff(&before, &after),
                patient_id: patient_of(&event.stream_type, event.stream_id, &before, &after),
                before,
                after,
                event,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-5i64..5).prop_map(Value::from),
            "[a-c~/]{0,3}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c~/]{0,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Applying the diff to the state before gives the state after, for any two JSON
        /// documents (keys with `~` and `/` included: they are escaped in the pointers).
        #[test]
        fn the_diff_applied_to_before_gives_after(before in json_value(), after in json_value()) {
            let patch: json_patch::Patch = serde_json::from_value(diff(&before, &after)).unwrap();
            let mut doc = before.clone();
            json_patch::patch(&mut doc, &patch).unwrap();
            prop_assert_eq!(doc, after);
        }
    }

    #[test]
    fn a_changed_field_is_one_replace_and_a_new_document_is_added_whole() {
        let d = diff(
            &json!({"a": 1, "b": {"c": "x"}}),
            &json!({"a": 1, "b": {"c": "y"}}),
        );
        assert_eq!(d, json!([{"op": "replace", "path": "/b/c", "value": "y"}]));
        let d = diff(&Value::Null, &json!({"a": 1}));
        assert_eq!(d, json!([{"op": "replace", "path": "", "value": {"a": 1}}]));
    }
}

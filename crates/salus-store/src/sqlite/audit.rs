//! The audit trail's event queries on SQLite (see [`crate::audit`]).

use super::{EVENT_COLUMNS, db_err, event_from_row, to_micros};
use crate::audit::EventQuery;
use crate::model::StoreError;
use rusqlite::Connection;
use rusqlite::types::Value as Sql;
use salus_kernel::{EventEnvelope, TenantId};

/// The statement and its parameters for `q` in `tenant`.
fn statement(tenant: TenantId, q: &EventQuery) -> (String, Vec<Sql>) {
    let uuid = |u: uuid::Uuid| Sql::Blob(u.as_bytes().to_vec());
    // A query for some streams reads them through the (stream_id, version) index: the
    // unary `+` keeps the planner from walking the tenant's whole log in seq order instead.
    let by_stream = q.stream_id.is_some() || q.streams.is_some();
    let plus = if by_stream { "+" } else { "" };
    let mut sql =
        format!("SELECT {EVENT_COLUMNS} FROM events WHERE {plus}tenant_id = ? AND {plus}seq > ?");
    let mut args = vec![uuid(tenant.0), Sql::Integer(q.after.unwrap_or(0))];
    if let Some(t) = &q.stream_type {
        sql.push_str(" AND stream_type = ?");
        args.push(Sql::Text(t.clone()));
    }
    if let Some(id) = q.stream_id {
        sql.push_str(" AND stream_id = ?");
        args.push(uuid(id));
    }
    if let Some(a) = q.actor {
        sql.push_str(" AND actor_id = ?");
        args.push(uuid(a.0));
    }
    if let Some(t) = &q.event_type {
        sql.push_str(" AND event_type = ?");
        args.push(Sql::Text(t.clone()));
    }
    if let Some(t) = &q.from {
        sql.push_str(" AND recorded_at >= ?");
        args.push(Sql::Integer(to_micros(t)));
    }
    if let Some(t) = &q.to {
        sql.push_str(" AND recorded_at < ?");
        args.push(Sql::Integer(to_micros(t)));
    }
    if let Some(s) = &q.streams {
        // The streams' ids first, then the resources pointing at them through the search
        // rows (each (tenant, type, param) is one `pid`, and its rows are keyed by value):
        // an index lookup per id, then one per stream in the events' (stream_id, version)
        // index; the few events found are sorted by seq.
        let marks = |n: usize| vec!["?"; n].join(", ");
        let mut parts = Vec::new();
        if !s.ids.is_empty() {
            parts.push(format!(
                "SELECT column1 FROM (VALUES {})",
                vec!["(?)"; s.ids.len()].join(", ")
            ));
            args.extend(s.ids.iter().map(|i| uuid(*i)));
        }
        if !s.ids.is_empty() && !s.resource_types.is_empty() {
            parts.push(format!(
                "SELECT r.resource_id FROM search_rows r WHERE r.pid IN \
                 (SELECT pid FROM search_params WHERE tenant_id = ? AND param = ? AND resource_type IN ({})) \
                 AND r.value IN ({})",
                marks(s.resource_types.len()),
                marks(s.ids.len())
            ));
            args.push(uuid(tenant.0));
            args.push(Sql::Text(s.param.clone()));
            args.extend(s.resource_types.iter().map(|t| Sql::Text(t.clone())));
            args.extend(s.ids.iter().map(|i| Sql::Text(i.to_string())));
        }
        if parts.is_empty() {
            // Nothing to select: an impossible condition keeps the statement's shape.
            sql.push_str(" AND 0");
        } else {
            sql.push_str(&format!(" AND stream_id IN ({})", parts.join(" UNION ")));
        }
    }
    if let Some(b) = q.before {
        sql.push_str(" AND seq < ?");
        args.push(Sql::Integer(b));
    }
    sql.push_str(if q.newest_first {
        " ORDER BY seq DESC LIMIT ?"
    } else {
        " ORDER BY seq LIMIT ?"
    });
    args.push(Sql::Integer(i64::from(q.limit)));
    (sql, args)
}

pub(super) fn audit_events(
    conn: &Connection,
    tenant: TenantId,
    q: &EventQuery,
) -> Result<Vec<EventEnvelope>, StoreError> {
    let (sql, args) = statement(tenant, q);
    let mut st = conn.prepare_cached(&sql).map_err(db_err)?;
    let rows = st
        .query_map(rusqlite::params_from_iter(args.iter()), event_from_row)
        .map_err(db_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::StreamsOf;

    /// A patient's events are found through the stream index, never by walking the log.
    #[test]
    fn a_patient_query_uses_the_stream_index() {
        let conn = Connection::open_in_memory().unwrap();
        for (_, _, m) in super::super::MIGRATIONS {
            conn.execute_batch(m).unwrap();
        }
        let id = uuid::Uuid::now_v7();
        let q = EventQuery {
            streams: Some(StreamsOf {
                ids: vec![id],
                param: "patient".into(),
                resource_types: vec!["encounter".into(), "observation".into()],
            }),
            limit: 10,
            ..Default::default()
        };
        let (sql, args) = statement(TenantId(id), &q);
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = st
            .query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains("SEARCH events USING INDEX") && plan.contains("(stream_id=?)"),
            "{plan}"
        );
        assert!(!plan.contains("SCAN events"), "{plan}");
    }
}

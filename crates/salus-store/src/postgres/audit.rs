//! The audit trail's event queries on PostgreSQL (see [`crate::audit`]).

use super::EVENT_COLUMNS;
use crate::audit::EventQuery;
use chrono::{DateTime, Utc};
use salus_kernel::TenantId;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

/// A bound parameter.
#[derive(Debug)]
pub(super) enum Param {
    Uuid(Uuid),
    Int(i64),
    Text(String),
    Time(DateTime<Utc>),
    Uuids(Vec<Uuid>),
    Texts(Vec<String>),
}

impl Param {
    pub(super) fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::Uuid(v) => v,
            Param::Int(v) => v,
            Param::Text(v) => v,
            Param::Time(v) => v,
            Param::Uuids(v) => v,
            Param::Texts(v) => v,
        }
    }
}

/// The statement and its parameters for `q` in `tenant`. Each combination of filters is
/// its own statement text (prepared once per connection), so every plan sees which
/// filters are there.
pub(super) fn statement(tenant: TenantId, q: &EventQuery) -> (String, Vec<Param>) {
    let mut args = vec![Param::Uuid(tenant.0), Param::Int(q.after.unwrap_or(0))];
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND seq > $2");
    let mut push = |sql: &mut String, cond: &str, p: Param| {
        args.push(p);
        sql.push_str(&cond.replace('#', &format!("${}", args.len())));
    };
    if let Some(t) = &q.stream_type {
        push(&mut sql, " AND stream_type = #", Param::Text(t.clone()));
    }
    if let Some(id) = q.stream_id {
        push(&mut sql, " AND stream_id = #", Param::Uuid(id));
    }
    if let Some(a) = q.actor {
        push(&mut sql, " AND actor_id = #", Param::Uuid(a.0));
    }
    if let Some(t) = &q.event_type {
        push(&mut sql, " AND event_type = #", Param::Text(t.clone()));
    }
    if let Some(t) = q.from {
        push(&mut sql, " AND recorded_at >= #", Param::Time(t));
    }
    if let Some(t) = q.to {
        push(&mut sql, " AND recorded_at < #", Param::Time(t));
    }
    if let Some(s) = &q.streams {
        // The streams' ids, then the resources pointing at them through the search index
        // (tenant, type, param, value): index lookups, then the events' (stream_id,
        // version) index per stream.
        push(
            &mut sql,
            " AND stream_id IN (SELECT unnest(#::uuid[])",
            Param::Uuids(s.ids.clone()),
        );
        if !s.resource_types.is_empty() {
            push(
                &mut sql,
                " UNION SELECT s.resource_id FROM search_index s WHERE s.tenant_id = $1 AND s.resource_type = ANY(#::text[])",
                Param::Texts(s.resource_types.clone()),
            );
            push(&mut sql, " AND s.param = #", Param::Text(s.param.clone()));
            push(
                &mut sql,
                " AND s.value = ANY(#::text[])",
                Param::Texts(s.ids.iter().map(Uuid::to_string).collect()),
            );
        }
        sql.push(')');
    }
    if let Some(b) = q.before {
        push(&mut sql, " AND seq < #", Param::Int(b));
    }
    let dir = if q.newest_first { "DESC" } else { "ASC" };
    args.push(Param::Int(i64::from(q.limit)));
    sql.push_str(&format!(" ORDER BY seq {dir} LIMIT ${}", args.len()));
    (sql, args)
}

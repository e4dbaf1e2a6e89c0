//! SQL text shared by the backends where only the placeholder style differs.

use crate::model::{FilterOp, SearchQuery};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A bound argument of a generated query.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Uuid(Uuid),
    Text(String),
    Int(i64),
}

/// The greatest code point: `prefix || MAX_CHAR` bounds a prefix range in byte order.
const MAX_CHAR: char = '\u{10FFFF}';

/// Columns selected for a resource row, in the order backends decode them.
pub const RESOURCE_COLUMNS: &str = "r.id, r.version, r.doc, r.created_at, r.updated_at";

/// Build the search statement for `q` in tenant `tenant`.
pub fn search(dialect: Dialect, tenant: Uuid, q: &SearchQuery) -> (String, Vec<Arg>) {
    let mut args: Vec<Arg> = Vec::new();
    let ph = |args: &mut Vec<Arg>, a: Arg| -> String {
        args.push(a);
        match dialect {
            Dialect::Sqlite => format!("?{}", args.len()),
            Dialect::Postgres => format!("${}", args.len()),
        }
    };
    let t = ph(&mut args, Arg::Uuid(tenant));
    let rt = ph(&mut args, Arg::Text(q.resource_type.clone()));
    let mut sql = format!(
        "SELECT {RESOURCE_COLUMNS} FROM resources r WHERE r.tenant_id = {t} AND r.resource_type = {rt}"
    );
    let cmp = if q.newest_first { "<" } else { ">" };
    // The search rows of parameter `p` (a placeholder), as table alias `a`: on SQLite the
    // parameter is interned per tenant and resource type (search_params, search_rows), on
    // PostgreSQL every row names it (search_index).
    let rows_of = |a: &str, p: &str| match dialect {
        Dialect::Sqlite => format!(
            "search_rows {a} WHERE {a}.pid = (SELECT pid FROM search_params WHERE tenant_id = {t} AND resource_type = {rt} AND param = {p})"
        ),
        Dialect::Postgres => format!(
            "search_index {a} WHERE {a}.tenant_id = {t} AND {a}.resource_type = {rt} AND {a}.param = {p}"
        ),
    };
    // The id column of the ordering rows (the same value as r.id, named so that SQLite
    // sees the order of its index).
    let order_id = match dialect {
        Dialect::Sqlite => "o.resource_id",
        Dialect::Postgres => "r.id",
    };
    match (&q.order_by, q.after) {
        (Some(order), after) => {
            let p = ph(&mut args, Arg::Text(order.param.clone()));
            let join = match dialect {
                Dialect::Sqlite => format!(
                    "FROM resources r JOIN search_rows o ON o.resource_id = r.id AND o.pid = (SELECT pid FROM search_params WHERE tenant_id = {t} AND resource_type = {rt} AND param = {p}) WHERE"
                ),
                Dialect::Postgres => format!(
                    "FROM resources r JOIN search_index o ON o.resource_id = r.id AND o.tenant_id = r.tenant_id AND o.resource_type = r.resource_type AND o.param = {p} WHERE"
                ),
            };
            sql = sql.replacen("FROM resources r WHERE", &join, 1);
            if let (Some(after), Some(value)) = (after, &order.after_value) {
                let v = ph(&mut args, Arg::Text(value.clone()));
                let a = ph(&mut args, Arg::Uuid(after));
                sql.push_str(&format!(
                    " AND (o.value {cmp} {v} OR (o.value = {v} AND {order_id} {cmp} {a}))"
                ));
            }
        }
        (None, Some(after)) => {
            let a = ph(&mut args, Arg::Uuid(after));
            sql.push_str(&format!(" AND r.id {cmp} {a}"));
        }
        (None, None) => {}
    }
    for f in &q.filters {
        let p = ph(&mut args, Arg::Text(f.param.clone()));
        let mut cond = format!("SELECT s.resource_id FROM {}", rows_of("s", &p));
        if let Some(system) = &f.system {
            let s = ph(&mut args, Arg::Text(system.clone()));
            cond.push_str(&format!(" AND s.system = {s}"));
        }
        match &f.op {
            FilterOp::In(values) if values.is_empty() => cond.push_str(" AND 1 = 0"),
            FilterOp::In(values) => {
                let list: Vec<String> = values
                    .iter()
                    .map(|v| ph(&mut args, Arg::Text(v.clone())))
                    .collect();
                cond.push_str(&format!(" AND s.value IN ({})", list.join(", ")));
            }
            FilterOp::Prefix => {
                let lo = ph(&mut args, Arg::Text(f.value.clone()));
                let hi = ph(&mut args, Arg::Text(format!("{}{MAX_CHAR}", f.value)));
                cond.push_str(&format!(" AND s.value >= {lo} AND s.value < {hi}"));
            }
            op => {
                let v = ph(&mut args, Arg::Text(f.value.clone()));
                let sym = match op {
                    FilterOp::Eq | FilterOp::Prefix | FilterOp::In(_) => "=",
                    FilterOp::Ge => ">=",
                    FilterOp::Le => "<=",
                    FilterOp::Gt => ">",
                    FilterOp::Lt => "<",
                };
                cond.push_str(&format!(" AND s.value {sym} {v}"));
            }
        }
        sql.push_str(&format!(" AND r.id IN ({cond})"));
    }
    let l = ph(&mut args, Arg::Int(i64::from(q.limit)));
    let dir = if q.newest_first { "DESC" } else { "ASC" };
    if q.order_by.is_some() {
        sql.push_str(&format!(
            " ORDER BY o.value {dir}, {order_id} {dir} LIMIT {l}"
        ));
    } else {
        sql.push_str(&format!(" ORDER BY r.id {dir} LIMIT {l}"));
    }
    (sql, args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Filter;

    #[test]
    fn placeholders_follow_the_dialect_and_count_args() {
        let q = SearchQuery {
            resource_type: "patient".into(),
            filters: vec![Filter {
                param: "name".into(),
                system: None,
                op: FilterOp::Prefix,
                value: "jo".into(),
            }],
            after: None,
            limit: 10,
            newest_first: false,
            order_by: None,
        };
        let (pg, args) = search(Dialect::Postgres, Uuid::nil(), &q);
        assert!(pg.contains("$5") && !pg.contains('?'));
        assert_eq!(args.len(), 6);
        let (lite, _) = search(Dialect::Sqlite, Uuid::nil(), &q);
        assert!(lite.contains("?5") && !lite.contains('$'));
    }
}

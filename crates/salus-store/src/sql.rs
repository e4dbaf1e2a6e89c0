//! SQL text shared by the backends where only the placeholder style differs.

use crate::model::{Cmp, FilterOp, RowTest, SearchQuery};
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
    let (mut sql, mut args, driven) = select(dialect, tenant, q, RESOURCE_COLUMNS, true);
    let l = bind(dialect, &mut args, Arg::Int(i64::from(q.limit)));
    let dir = if q.newest_first { "DESC" } else { "ASC" };
    let order_id = match dialect {
        Dialect::Sqlite => "o.resource_id",
        Dialect::Postgres => "r.id",
    };
    if q.order_by.is_some() {
        sql.push_str(&format!(
            " ORDER BY o.value {dir}, {order_id} {dir} LIMIT {l}"
        ));
    } else if let Some(driven) = driven {
        sql.push_str(&format!("{driven} ORDER BY d.resource_id {dir} LIMIT {l}"));
    } else {
        sql.push_str(&format!(" ORDER BY r.id {dir} LIMIT {l}"));
    }
    (sql, args)
}

/// Build the statement counting every match of `q`'s filters in tenant `tenant` (its
/// cursor, order and limit do not apply).
pub fn count(dialect: Dialect, tenant: Uuid, q: &SearchQuery) -> (String, Vec<Arg>) {
    let q = SearchQuery {
        after: None,
        order_by: None,
        ..q.clone()
    };
    let (sql, args, _) = select(dialect, tenant, &q, "count(*)", false);
    (sql, args)
}

/// `SELECT columns` of the resources matching `q` (with its cursor), unordered. For a
/// `page` in id order on SQLite whose rows drive it (alias `d`), also what goes before its
/// `ORDER BY d.resource_id` (a `GROUP BY` when one resource may have several such rows).
fn select(
    dialect: Dialect,
    tenant: Uuid,
    q: &SearchQuery,
    columns: &str,
    page: bool,
) -> (String, Vec<Arg>, Option<String>) {
    let mut driven: Option<String> = None;
    let mut args: Vec<Arg> = Vec::new();
    let ph = |args: &mut Vec<Arg>, a: Arg| bind(dialect, args, a);
    let t = ph(&mut args, Arg::Uuid(tenant));
    let rt = ph(&mut args, Arg::Text(q.resource_type.clone()));
    let mut sql = format!(
        "SELECT {columns} FROM resources r WHERE r.tenant_id = {t} AND r.resource_type = {rt}"
    );
    let cmp = if q.newest_first { "<" } else { ">" };
    let mut after_ph: Option<String> = None;
    // The search rows of parameter `p` (a placeholder), as table alias `a`: on SQLite the
    // parameter is interned per tenant and resource type (search_params, search_rows), on
    // PostgreSQL every row names it (search_index).
    // Several placeholders (a filter's `also`) are the rows of any of those parameters.
    let rows_of = |a: &str, ps: &[String]| match (dialect, ps) {
        (Dialect::Sqlite, [p]) => format!(
            "search_rows {a} WHERE {a}.pid = (SELECT pid FROM search_params WHERE tenant_id = {t} AND resource_type = {rt} AND param = {p})"
        ),
        (Dialect::Sqlite, ps) => format!(
            "search_rows {a} WHERE {a}.pid IN (SELECT pid FROM search_params WHERE tenant_id = {t} AND resource_type = {rt} AND param IN ({}))",
            ps.join(", ")
        ),
        (Dialect::Postgres, [p]) => format!(
            "search_index {a} WHERE {a}.tenant_id = {t} AND {a}.resource_type = {rt} AND {a}.param = {p}"
        ),
        (Dialect::Postgres, ps) => format!(
            "search_index {a} WHERE {a}.tenant_id = {t} AND {a}.resource_type = {rt} AND {a}.param IN ({})",
            ps.join(", ")
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
            after_ph = Some(a);
        }
        (None, None) => {}
    }
    // On PostgreSQL a page in id order is driven by the rows of its first equality filter:
    // their index ends in the resource id, so they come in id order and the scan stops
    // after the page, where `r.id IN (…)` fetched every match before sorting (a code that
    // a tenth of the observations have: every one of them, for a page of 50).
    // On SQLite the same holds for the primary key of search_rows (pid, value, resource
    // id, system): the page's rows are the outer loop (`d`), read in id order, and the
    // scan stops after the page (a page, not a count).
    // (Rows of several parameters are not in id order, so such a filter never drives.)
    let drives = |f: &crate::model::Filter| matches!(f.op, FilterOp::Eq) && f.also.is_empty();
    let driver = match (dialect, &q.order_by) {
        (Dialect::Postgres, None) => q.filters.iter().position(drives),
        (Dialect::Sqlite, None) if page => q.filters.iter().position(drives),
        _ => None,
    };
    for (i, f) in q.filters.iter().enumerate() {
        let ps: Vec<String> = std::iter::once(&f.param)
            .chain(&f.also)
            .map(|p| ph(&mut args, Arg::Text(p.clone())))
            .collect();
        let mut cond = format!("SELECT s.resource_id FROM {}", rows_of("s", &ps));
        if let Some(system) = &f.system {
            let s = ph(&mut args, Arg::Text(system.clone()));
            cond.push_str(&format!(" AND s.system = {s}"));
        }
        let mut negate = false;
        let test = match &f.op {
            FilterOp::In(values) if values.is_empty() => "1 = 0".to_owned(),
            FilterOp::In(values) => {
                let list: Vec<String> = values
                    .iter()
                    .map(|v| ph(&mut args, Arg::Text(v.clone())))
                    .collect();
                format!("s.value IN ({})", list.join(", "))
            }
            FilterOp::AnyOf(tests) | FilterOp::NoneOf(tests) => {
                negate = matches!(f.op, FilterOp::NoneOf(_));
                row_tests(dialect, tests, &mut args)
            }
            op => {
                let cmp = match op {
                    FilterOp::Prefix => Cmp::Prefix,
                    FilterOp::Ge => Cmp::Ge,
                    FilterOp::Le => Cmp::Le,
                    FilterOp::Gt => Cmp::Gt,
                    FilterOp::Lt => Cmp::Lt,
                    FilterOp::Contains => Cmp::Contains,
                    _ => Cmp::Eq,
                };
                compare(dialect, "s.value", cmp, &f.value, &mut args)
            }
        };
        cond.push_str(&format!(" AND ({test})"));
        if driver == Some(i) && dialect == Dialect::Sqlite {
            let on = cond
                .replacen("SELECT s.resource_id FROM search_rows s WHERE ", "", 1)
                .replace("s.pid", "d.pid")
                .replace("s.value", "d.value")
                .replace("s.system", "d.system");
            let after = after_ph
                .as_ref()
                .map(|a| format!(" AND d.resource_id {cmp} {a}"))
                .unwrap_or_default();
            // The rows come first (CROSS JOIN keeps SQLite's join order), each resource
            // once: with the system given its rows are one per resource.
            let join = format!(
                "FROM search_rows d CROSS JOIN resources r ON r.tenant_id = {t} AND r.resource_type = {rt} AND r.id = d.resource_id WHERE {on}{after} AND"
            );
            sql = sql.replacen("FROM resources r WHERE", &join, 1);
            driven = Some(if f.system.is_some() {
                String::new()
            } else {
                " GROUP BY d.resource_id".to_owned()
            });
            continue;
        }
        if driver == Some(i) {
            let dir = if q.newest_first { "DESC" } else { "ASC" };
            let after = after_ph
                .as_ref()
                .map(|a| format!(" AND s.resource_id {cmp} {a}"))
                .unwrap_or_default();
            let cond = cond.replacen("SELECT s.resource_id", "SELECT DISTINCT s.resource_id", 1);
            let join = format!(
                "FROM resources r JOIN ({cond}{after} ORDER BY s.resource_id {dir}) d ON d.resource_id = r.id WHERE"
            );
            sql = sql.replacen("FROM resources r WHERE", &join, 1);
            continue;
        }
        let not = if negate { "NOT " } else { "" };
        sql.push_str(&format!(" AND r.id {not}IN ({cond})"));
    }
    (sql, args, driven)
}

/// A placeholder for `a`, pushed onto `args`.
fn bind(dialect: Dialect, args: &mut Vec<Arg>, a: Arg) -> String {
    args.push(a);
    match dialect {
        Dialect::Sqlite => format!("?{}", args.len()),
        Dialect::Postgres => format!("${}", args.len()),
    }
}

/// `column cmp value` in SQL.
fn compare(dialect: Dialect, column: &str, cmp: Cmp, value: &str, args: &mut Vec<Arg>) -> String {
    let v = bind(dialect, args, Arg::Text(value.to_owned()));
    match cmp {
        Cmp::Eq => format!("{column} = {v}"),
        Cmp::Lt => format!("{column} < {v}"),
        Cmp::Le => format!("{column} <= {v}"),
        Cmp::Gt => format!("{column} > {v}"),
        Cmp::Ge => format!("{column} >= {v}"),
        Cmp::Prefix => {
            let hi = bind(dialect, args, Arg::Text(format!("{value}{MAX_CHAR}")));
            format!("{column} >= {v} AND {column} < {hi}")
        }
        Cmp::Contains => match dialect {
            Dialect::Sqlite => format!("instr({column}, {v}) > 0"),
            Dialect::Postgres => format!("strpos({column}, {v}) > 0"),
        },
    }
}

/// An OR of row tests, each an AND of its comparisons (an empty test is true, an empty
/// list false).
fn row_tests(dialect: Dialect, tests: &[RowTest], args: &mut Vec<Arg>) -> String {
    if tests.is_empty() {
        return "1 = 0".to_owned();
    }
    let alts: Vec<String> = tests
        .iter()
        .map(|t| {
            let mut parts: Vec<String> = Vec::new();
            for (c, v) in &t.value {
                parts.push(format!("({})", compare(dialect, "s.value", *c, v, args)));
            }
            for (c, v) in &t.system {
                parts.push(format!("({})", compare(dialect, "s.system", *c, v, args)));
            }
            if parts.is_empty() {
                "1 = 1".to_owned()
            } else {
                parts.join(" AND ")
            }
        })
        .collect();
    alts.iter()
        .map(|a| format!("({a})"))
        .collect::<Vec<_>>()
        .join(" OR ")
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
                also: Vec::new(),
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

    #[test]
    fn an_equality_filter_drives_a_page_in_id_order() {
        let f = |op: FilterOp, v: &str| Filter {
            also: Vec::new(),
            param: "code".into(),
            system: None,
            op,
            value: v.into(),
        };
        let mut q = SearchQuery {
            resource_type: "observation".into(),
            filters: vec![f(FilterOp::Prefix, "a"), f(FilterOp::Eq, "x")],
            after: Some(Uuid::nil()),
            limit: 10,
            newest_first: false,
            order_by: None,
        };
        let (pg, args) = search(Dialect::Postgres, Uuid::nil(), &q);
        // The equality filter (not the first filter) drives, after the cursor, in order.
        assert!(
            pg.contains("FROM resources r JOIN (SELECT DISTINCT s.resource_id"),
            "{pg}"
        );
        assert!(
            pg.contains("AND s.resource_id > $3 ORDER BY s.resource_id ASC) d"),
            "{pg}"
        );
        assert_eq!(pg.matches(" IN (SELECT s.resource_id").count(), 1, "{pg}");
        assert_eq!(args.len(), 9);
        // On SQLite the equality rows are the outer loop, after the cursor, each resource
        // once (no system: several rows of one resource may match); a count is unordered.
        let (lite, _) = search(Dialect::Sqlite, Uuid::nil(), &q);
        assert!(
            lite.contains("FROM search_rows d CROSS JOIN resources r"),
            "{lite}"
        );
        assert!(lite.contains("AND d.resource_id > ?3"), "{lite}");
        assert!(
            lite.ends_with("GROUP BY d.resource_id ORDER BY d.resource_id ASC LIMIT ?9"),
            "{lite}"
        );
        assert_eq!(
            lite.matches(" IN (SELECT s.resource_id").count(),
            1,
            "{lite}"
        );
        let (counted, _) = count(Dialect::Sqlite, Uuid::nil(), &q);
        assert!(!counted.contains("CROSS JOIN"), "{counted}");
        q.filters[1].system = Some("http://loinc.org".into());
        let (lite, _) = search(Dialect::Sqlite, Uuid::nil(), &q);
        assert!(!lite.contains("GROUP BY"), "{lite}");
        q.filters[1].system = None;
        q.order_by = Some(crate::model::OrderBy {
            param: "date".into(),
            after_value: None,
        });
        let (pg, _) = search(Dialect::Postgres, Uuid::nil(), &q);
        assert!(!pg.contains("DISTINCT"), "{pg}");
    }
}

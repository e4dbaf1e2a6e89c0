//! FHIR search over the store's search rows (FHIR R4 §3.1.1 "Search").
//!
//! [`rows_of`] turns every index value of a resource into rows of `(param, system, value)`,
//! laid out so that each search the specification defines is a comparison the store can
//! make on one row:
//!
//! | type      | `value`                          | `system`                              |
//! |-----------|----------------------------------|---------------------------------------|
//! | string    | folded (case, accents)           | the text as written (for `:exact`)    |
//! | token     | the code                         | the code system, or empty             |
//! | reference | `Type/id` or the URL as written  | empty                                 |
//! | date      | start of the period it covers    | end of the period (exclusive)         |
//! | number    | [`sortable`] encoding            | empty                                 |
//! | quantity  | [`sortable`] encoding            | empty, `|code`, `|unit`, `system|code`|
//! | uri       | as written                       | empty                                 |
//!
//! A composite parameter's pair (a code and a value of one element) is rows of its second
//! component's layout with `key␟` leading both columns, `key` being the code as a query
//! names it (`code`, `system|code` or `|code`), so the second component's tests apply
//! after the key ([`push_pair_rows`]).
//!
//! [`parse`] turns one query parameter into the filters it means (all must hold); a chained
//! parameter is returned as such for the caller to resolve. Special parameters, the
//! composites [`index::composite_parts`] leaves out, and the modifiers not listed in
//! [`SUPPORTED_MODIFIERS`], are refused.

use crate::definitions::{ParamType, SearchParameter, search_parameters};
use crate::index::{self, IndexValue, date_range};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use salus_kernel::text::fold;
use salus_store::{Cmp, Filter, FilterOp, RowTest, SearchRow};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

/// The modifiers understood, per parameter type (`missing` on every type).
pub const SUPPORTED_MODIFIERS: &[(ParamType, &[&str])] = &[
    (ParamType::String, &["exact", "contains", "missing"]),
    (ParamType::Token, &["not", "text", "of-type", "missing"]),
    (ParamType::Reference, &["identifier", "missing"]),
    (ParamType::Date, &["missing"]),
    (ParamType::Number, &["missing"]),
    (ParamType::Quantity, &["missing"]),
    (ParamType::Uri, &["below", "above", "missing"]),
];

/// Whether this server indexes and searches on `p`: every parameter with an expression
/// but the special ones and the composites [`index::composite_parts`] leaves out.
pub fn is_searchable(p: &SearchParameter) -> bool {
    p.expression.is_some()
        && match p.kind {
            ParamType::Special => false,
            ParamType::Composite => index::composite_parts(p).is_some(),
            _ => true,
        }
}

/// Whether results can be ordered by `p` (`_sort`): a searchable parameter of one value
/// per node (not a composite pair).
pub fn is_sortable(p: &SearchParameter) -> bool {
    is_searchable(p)
        && p.kind != ParamType::Composite
        && !p.base.iter().any(|t| union_of(t, &p.code).is_some())
}

/// The parameters whose rows answer `code` of `resource_type` when the definitions make it
/// the union of others of the type: Observation's `combo-code` is `Observation.code |
/// Observation.component.code`, the expressions of `code` and `component-code`. Such a
/// parameter has no rows of its own (a quarter of an Observation's rows were such copies);
/// a query on it reads its members' rows.
pub fn union_of(resource_type: &str, code: &str) -> Option<&'static [String]> {
    UNIONS
        .get(&(resource_type.to_owned(), code.to_owned()))
        .map(Vec::as_slice)
}

/// (resource type, code) → member codes, derived from the definitions (see [`union_of`]).
static UNIONS: LazyLock<HashMap<(String, String), Vec<String>>> = LazyLock::new(|| {
    let defs = search_parameters();
    let mut found: HashMap<(String, String), Vec<String>> = HashMap::new();
    for p in &defs.all {
        for t in p.base.iter().filter(|t| !t.ends_with("Resource")) {
            if let Some(members) = members_of(t, p) {
                found.insert((t.clone(), p.code.clone()), members);
            }
        }
    }
    // A member that is itself a union stands for its own members.
    let expand = |t: &str, ms: &[String]| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in ms {
            match found.get(&(t.to_owned(), m.clone())) {
                Some(inner) => out.extend(inner.iter().cloned()),
                None => out.push(m.clone()),
            }
        }
        out.sort();
        out.dedup();
        out
    };
    found
        .iter()
        .map(|((t, c), ms)| ((t.clone(), c.clone()), expand(t, ms)))
        .collect()
});

/// The top-level elements of `t` that `p`'s expression can start from (`value` for
/// `(Observation.value as Quantity)`), when they can be told from its text: every
/// `T.name` in its terms about `t` (`Resource.name` for a parameter of every type). `None`
/// (evaluate it always) when a term is about the whole resource or starts elsewhere.
fn roots_of(t: &str, p: &SearchParameter) -> Option<Vec<String>> {
    // A parameter of every type is written about `Resource` or `DomainResource`.
    let names: &[&str] = if p.base.iter().any(|b| b == t) {
        &[t]
    } else {
        &["Resource", "DomainResource"]
    };
    if !p.expression.as_deref().is_some_and(empty_from_absence) {
        return None;
    }
    let mut roots = Vec::new();
    for name in names {
        for term in terms_about(p, name) {
            roots.extend(term_roots(&term, name)?);
        }
    }
    roots.sort();
    roots.dedup();
    (!roots.is_empty()).then_some(roots)
}

/// Whether `expr` gives nothing when the elements its paths start from are absent: no
/// function that answers for an empty collection (`exists()`, `empty()`, `not()`, …) and
/// nothing outside parentheses but paths, `|`, `as` and `is` (Patient's `deceased` is
/// `Patient.deceased.exists() and Patient.deceased != false`: `false` for a patient
/// without the element).
fn empty_from_absence(expr: &str) -> bool {
    const ANSWER_EMPTY: [&str; 16] = [
        "exists(",
        "empty(",
        "not(",
        "count(",
        "iif(",
        "all(",
        "allTrue(",
        "anyTrue(",
        "allFalse(",
        "anyFalse(",
        "hasValue(",
        "isDistinct(",
        "subsetOf(",
        "supersetOf(",
        "today(",
        "now(",
    ];
    if ANSWER_EMPTY.iter().any(|f| expr.contains(f)) {
        return false;
    }
    let mut depth = 0i32;
    let mut outside = String::new();
    for c in expr.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    const OPERATORS: [&str; 8] = [
        "and", "or", "xor", "implies", "in", "contains", "div", "mod",
    ];
    outside
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " ._|[]".contains(c))
        && !outside.split_whitespace().any(|w| OPERATORS.contains(&w))
}

/// Every `name` that follows `t.` in `term`; `None` when the term is `t` alone or names
/// none.
fn term_roots(term: &str, t: &str) -> Option<Vec<String>> {
    let lead = format!("{t}.");
    let mut out = Vec::new();
    let mut rest = term;
    while let Some(i) = rest.find(&lead) {
        // `t.` must start a path (not end another name: `DomainResource.` holds `Resource.`).
        let starts = rest[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '.');
        let after = &rest[i + lead.len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if starts && !name.is_empty() {
            out.push(name);
        }
        rest = after;
    }
    (!out.is_empty()).then_some(out)
}

/// The top-level `|` terms of `p`'s expression that are about resource type `t`.
fn terms_about(p: &SearchParameter, t: &str) -> BTreeSet<String> {
    let Some(expr) = &p.expression else {
        return BTreeSet::new();
    };
    let (mut depth, mut start, mut out) = (0i32, 0, BTreeSet::new());
    let about = |term: &str| {
        let bare = term.trim_start_matches('(');
        bare == t || bare.starts_with(&format!("{t}."))
    };
    let mut push = |term: &str| {
        let term = term.trim();
        if about(term) {
            out.insert(term.to_owned());
        }
    };
    for (i, ch) in expr.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            '|' if depth == 0 => {
                push(&expr[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    push(&expr[start..]);
    out
}

/// The other parameters of `t` whose terms together are exactly `p`'s on `t`, each a
/// part of it, of its type (composites: with the same component expressions and types),
/// when there are such; never for references (includes and chains read their rows) or
/// parameters this server does not search on.
fn members_of(t: &str, p: &SearchParameter) -> Option<Vec<String>> {
    if !is_searchable(p) || matches!(p.kind, ParamType::Reference | ParamType::Special) {
        return None;
    }
    let whole = terms_about(p, t);
    if whole.len() < 2 {
        return None;
    }
    fn parts_of(x: &SearchParameter) -> Option<(ParamType, ParamType, Vec<&str>)> {
        index::composite_parts(x).map(|(a, b)| {
            let exprs: Vec<&str> = x.component.iter().map(|c| c.expression.as_str()).collect();
            (a.kind, b.kind, exprs)
        })
    }
    let mut candidates: Vec<(&SearchParameter, BTreeSet<String>)> = search_parameters()
        .of(t)
        .into_iter()
        .filter(|q| q.code != p.code && q.kind == p.kind && is_searchable(q))
        .filter(|q| p.kind != ParamType::Composite || parts_of(q) == parts_of(p))
        .map(|q| (q, terms_about(q, t)))
        .filter(|(_, ts)| !ts.is_empty() && ts.len() < whole.len() && ts.is_subset(&whole))
        .collect();
    // The widest first, each kept only when it adds terms.
    candidates.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.code.cmp(&b.0.code)));
    let mut covered = BTreeSet::new();
    let mut members = Vec::new();
    for (q, ts) in candidates {
        if !ts.is_subset(&covered) {
            covered.extend(ts);
            members.push(q.code.clone());
        }
    }
    (covered == whole).then_some(members)
}

/// The modifiers of `kind` as the CapabilityStatement documents them.
pub fn modifiers_doc(kind: ParamType) -> String {
    match SUPPORTED_MODIFIERS.iter().find(|(k, _)| *k == kind) {
        Some((_, ms)) if !ms.is_empty() => format!("Modifiers :{}", ms.join(", :")),
        _ => "No modifiers".to_owned(),
    }
}

/// What separates a composite row's first component (its code) from the second's value,
/// in both columns: a character no code or value of a query holds.
const PAIR: char = '\u{1f}';

/// The keys a token is found by in a composite pair: `code` and `system|code` (or `|code`
/// when it has no system), as a query's first component names it.
fn pair_keys(v: &IndexValue, out: &mut Vec<String>) {
    if let IndexValue::Token { system, code } = v {
        out.push(code.clone());
        out.push(format!("{}|{code}", system.as_deref().unwrap_or("")));
    }
}

/// Every search row of `resource` (of type `resource_type`) over the R4 parameters of its
/// type that have an expression. Parameters whose expression fails on this resource are
/// left out (the definitions hold a few that only some resources satisfy).
pub fn rows_of(resource_type: &str, resource: &Value) -> Vec<SearchRow> {
    rows_skipping(resource_type, resource, true)
}

/// [`rows_of`], evaluating every parameter's expression when `skip` is false (the test
/// that skipping by [`roots_of`] changes nothing).
fn rows_skipping(resource_type: &str, resource: &Value, skip: bool) -> Vec<SearchRow> {
    let mut out = Vec::new();
    let present = |e: &String| {
        resource
            .as_object()
            .is_some_and(|o| crate::fhirpath::has_member(o, e))
    };
    for (p, roots) in plan(resource_type).iter() {
        // Nothing to find when the resource has none of the elements the expression starts
        // from (most of a type's parameters, for most resources).
        if skip
            && let Some(elements) = roots
            && !elements.iter().any(present)
        {
            continue;
        }
        push_param_rows(p, resource, &mut out);
    }
    sorted(out)
}

/// The rows of `resource` under the one parameter `p` (none when its expression fails on
/// this resource).
fn push_param_rows(p: &SearchParameter, resource: &Value, out: &mut Vec<SearchRow>) {
    if p.kind == ParamType::Composite {
        push_pair_rows(p, resource, out);
    } else if let Ok(values) = index::extract(p, resource) {
        for v in values {
            push_rows(&p.code, v, out);
        }
    }
}

/// Rows in (param, value, system) order, each once.
fn sorted(mut rows: Vec<SearchRow>) -> Vec<SearchRow> {
    rows.sort_by(|a, b| (&a.param, &a.value, &a.system).cmp(&(&b.param, &b.value, &b.system)));
    rows.dedup();
    rows
}

/// The parameters [`rows_of`] evaluates for a type (searchable, not a union), each with
/// what [`roots_of`] says of it.
type Plan = Vec<(&'static SearchParameter, Option<Vec<String>>)>;

/// The [`Plan`] of `resource_type`, worked out once per type.
fn plan(resource_type: &str) -> std::sync::Arc<Plan> {
    static PLANS: LazyLock<std::sync::RwLock<HashMap<String, std::sync::Arc<Plan>>>> =
        LazyLock::new(Default::default);
    if let Some(found) = PLANS
        .read()
        .ok()
        .and_then(|m| m.get(resource_type).cloned())
    {
        return found;
    }
    let made: Plan = search_parameters()
        .of(resource_type)
        .into_iter()
        .filter(|p| is_searchable(p) && union_of(resource_type, &p.code).is_none())
        .map(|p| (p, roots_of(resource_type, p)))
        .collect();
    let made = std::sync::Arc::new(made);
    // Only the definitions' types are kept (a name from a request is not a cache key).
    if crate::definitions::structures().is_resource(resource_type)
        && let Ok(mut m) = PLANS.write()
    {
        m.entry(resource_type.to_owned())
            .or_insert_with(|| made.clone());
    }
    made
}

/// A composite parameter's rows: for each pair, each key of its first component (see
/// [`pair_keys`]) before each row of the second, `key␟` leading both columns, so that the
/// second component's tests apply unchanged after the key.
fn push_pair_rows(p: &SearchParameter, resource: &Value, out: &mut Vec<SearchRow>) {
    let Ok(pairs) = index::extract_pairs(p, resource) else {
        return;
    };
    for (firsts, seconds) in pairs {
        let mut keys = Vec::new();
        for f in &firsts {
            pair_keys(f, &mut keys);
        }
        let mut rows = Vec::new();
        for v in seconds {
            push_rows(&p.code, v, &mut rows);
        }
        // The second component's own rows only (not those of its modifiers).
        rows.retain(|r| r.param == p.code);
        for k in &keys {
            for r in &rows {
                out.push(SearchRow::token(
                    &p.code,
                    &format!("{k}{PAIR}{}", r.system),
                    format!("{k}{PAIR}{}", r.value),
                ));
            }
        }
    }
}

/// The rows of `resource` under the one parameter `code` of its type.
pub fn rows_of_one(resource_type: &str, code: &str, resource: &Value) -> Vec<SearchRow> {
    let mut out = Vec::new();
    if let Some(p) = search_parameters().get(resource_type, code)
        && is_searchable(p)
        && p.kind != ParamType::Composite
        && let Ok(values) = index::extract(p, resource)
    {
        for v in values {
            push_rows(&p.code, v, &mut out);
        }
    }
    out
}

fn push_rows(code: &str, v: IndexValue, out: &mut Vec<SearchRow>) {
    match v {
        IndexValue::String(s) => {
            let folded = fold(&s);
            if !folded.is_empty() {
                out.push(SearchRow::token(code, &s, folded));
            }
        }
        IndexValue::Token { system, code: c } => {
            out.push(SearchRow::token(code, system.as_deref().unwrap_or(""), c));
        }
        IndexValue::Reference(r) => out.push(SearchRow::new(code, reference_key(&r))),
        IndexValue::Date { low, high } => {
            out.push(SearchRow::token(code, &instant_key(high), instant_key(low)));
        }
        IndexValue::Number(n) => {
            if let Some(k) = sortable(n) {
                out.push(SearchRow::new(code, k));
            }
        }
        IndexValue::Quantity {
            value,
            system,
            code: unit_code,
            unit,
        } => {
            let Some(k) = sortable(value) else { return };
            out.push(SearchRow::new(code, k.clone()));
            if let Some(c) = &unit_code {
                out.push(SearchRow::token(code, &format!("|{c}"), k.clone()));
                if let Some(s) = &system {
                    out.push(SearchRow::token(code, &format!("{s}|{c}"), k.clone()));
                }
            }
            if let Some(u) = unit.filter(|u| Some(u) != unit_code.as_ref()) {
                out.push(SearchRow::token(code, &format!("|{u}"), k));
            }
        }
        IndexValue::Uri(u) => out.push(SearchRow::new(code, u)),
        IndexValue::Text(t) => {
            let folded = fold(&t);
            if !folded.is_empty() {
                out.push(SearchRow::token(&modified(code, "text"), &t, folded));
            }
        }
        IndexValue::ReferenceIdentifier { system, value } => out.push(SearchRow::token(
            &modified(code, "identifier"),
            system.as_deref().unwrap_or(""),
            value,
        )),
        IndexValue::TypedIdentifier {
            type_system,
            type_code,
            value,
        } => out.push(SearchRow::token(
            &modified(code, "of-type"),
            &format!("{type_system}|{type_code}"),
            value,
        )),
    }
}

/// The modifiers whose values are rows of their own, named `code:modifier`: `:text` (the
/// folded text of a coded value), `:identifier` (a reference's identifier, as a token) and
/// `:of-type` (an identifier's value, its type `system|code` in the system column).
const OWN_ROWS: [&str; 3] = ["text", "identifier", "of-type"];

/// The row name of a parameter's values under one of [`OWN_ROWS`].
fn modified(code: &str, modifier: &str) -> String {
    format!("{code}:{modifier}")
}

/// A reference as rows hold it: without a version (`/_history/n`).
pub fn reference_key(r: &str) -> String {
    match r.find("/_history/") {
        Some(i) => r[..i].to_owned(),
        None => r.to_owned(),
    }
}

/// An instant as rows hold it: fixed width, so that text order is time order (clamped to
/// the years 0001–9999, which is all FHIR dates can say).
pub fn instant_key(t: DateTime<Utc>) -> String {
    let min = NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .unwrap_or(t);
    let max = NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_opt(23, 59, 59))
        .map(|d| d.and_utc())
        .unwrap_or(t);
    t.clamp(min, max)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// A number as text whose byte order is numeric order (IEEE 754 bits, sign-adjusted, in
/// hex). `None` for NaN; -0 is 0.
pub fn sortable(x: f64) -> Option<String> {
    if x.is_nan() {
        return None;
    }
    let x = if x == 0.0 { 0.0 } else { x };
    let b = x.to_bits();
    let k = if b >> 63 == 1 { !b } else { b | (1 << 63) };
    Some(format!("{k:016x}"))
}

/// Why a query parameter cannot be searched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// Not a parameter of the type (strict handling refuses it, lenient ignores it).
    #[error("'{name}' is not a search parameter of {resource_type}")]
    Unknown { resource_type: String, name: String },
    /// A parameter or modifier this server does not search on (always refused when it
    /// would change the meaning, i.e. a modifier; a bare parameter follows the handling).
    #[error("{0}")]
    NotSupported(String),
    /// The value is malformed.
    #[error("{0}")]
    Invalid(String),
}

/// A query parameter's name: `name[:modifier][.chain]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key<'a> {
    pub name: &'a str,
    pub modifier: Option<&'a str>,
    /// What follows the first `.` of a chained parameter (`name` or `subject.name`).
    pub chain: Option<&'a str>,
}

pub fn parse_key(key: &str) -> Key<'_> {
    let (head, chain) = match key.split_once('.') {
        Some((h, c)) => (h, Some(c)),
        None => (key, None),
    };
    let (name, modifier) = match head.split_once(':') {
        Some((n, m)) => (n, Some(m)),
        None => (head, None),
    };
    Key {
        name,
        modifier,
        chain,
    }
}

/// What one query parameter asks.
#[derive(Debug, Clone, PartialEq)]
pub enum Clause {
    /// Every filter must hold.
    Filters(Vec<Filter>),
    /// A chained parameter: the resources whose reference `param` points at a `target`
    /// (one of `targets`) matching `inner=value`.
    Chain {
        param: String,
        targets: Vec<String>,
        inner: String,
        value: String,
    },
}

/// The parameter `code` of `resource_type` if this server searches on it.
pub fn parameter(resource_type: &str, code: &str) -> Result<&'static SearchParameter, SearchError> {
    let p = search_parameters()
        .get(resource_type, code)
        .ok_or_else(|| SearchError::Unknown {
            resource_type: resource_type.to_owned(),
            name: code.to_owned(),
        })?;
    if !is_searchable(p) {
        return Err(SearchError::NotSupported(format!(
            "the {} parameter '{code}' is not supported",
            p.kind.as_str()
        )));
    }
    Ok(p)
}

/// What `key=value` asks of resources of `resource_type`.
pub fn parse(resource_type: &str, key: &str, value: &str) -> Result<Clause, SearchError> {
    let mut clause = parse_own(resource_type, key, value)?;
    let name = parse_key(key).name;
    if let (Clause::Filters(fs), Some(members)) = (&mut clause, union_of(resource_type, name)) {
        for f in fs {
            // `combo-code:text` reads `code:text` and `component-code:text`.
            let suffix = f.param.get(name.len()..).unwrap_or("").to_owned();
            f.also = members.iter().map(|m| format!("{m}{suffix}")).collect();
        }
    }
    Ok(clause)
}

fn parse_own(resource_type: &str, key: &str, value: &str) -> Result<Clause, SearchError> {
    let k = parse_key(key);
    let p = parameter(resource_type, k.name)?;
    if let Some(chain) = k.chain {
        if p.kind != ParamType::Reference {
            return Err(SearchError::Invalid(format!(
                "'{}' is not a reference parameter, so it cannot be chained",
                k.name
            )));
        }
        let targets = match k.modifier {
            Some(t) if p.target.iter().any(|x| x == t) => vec![t.to_owned()],
            Some(t) => {
                return Err(SearchError::Invalid(format!(
                    "'{}' does not point at {t}; its targets: {}",
                    k.name,
                    p.target.join(", ")
                )));
            }
            None => p.target.clone(),
        };
        return Ok(Clause::Chain {
            param: k.name.to_owned(),
            targets,
            inner: chain.to_owned(),
            value: value.to_owned(),
        });
    }
    if p.kind == ParamType::Composite {
        if let Some(m) = k.modifier {
            return Err(SearchError::NotSupported(format!(
                "the modifier ':{m}' is not supported on the composite parameter '{}'",
                k.name
            )));
        }
        if split_escaped(value, ',').iter().all(|a| a.is_empty()) {
            return Ok(Clause::Filters(Vec::new()));
        }
        return pair_filter(p, key, value).map(|f| Clause::Filters(vec![f]));
    }
    if let Some(m) = k.modifier {
        let known = SUPPORTED_MODIFIERS
            .iter()
            .find(|(t, _)| *t == p.kind)
            .is_some_and(|(_, ms)| ms.contains(&m));
        // `subject:Patient=123` names the target type.
        let is_type = p.kind == ParamType::Reference && p.target.iter().any(|t| t == m);
        if !known && !is_type {
            return Err(SearchError::NotSupported(format!(
                "the modifier ':{m}' is not supported on the {} parameter '{}'",
                p.kind.as_str(),
                k.name
            )));
        }
        if m == "missing" {
            let op = match value {
                "true" => FilterOp::NoneOf(vec![RowTest::default()]),
                "false" => FilterOp::AnyOf(vec![RowTest::default()]),
                _ => {
                    return Err(SearchError::Invalid(format!(
                        "{key} takes true or false, not '{value}'"
                    )));
                }
            };
            return Ok(Clause::Filters(vec![filter(&p.code, op)]));
        }
    }
    let alternatives = split_escaped(value, ',');
    if alternatives.iter().all(|a| a.is_empty()) {
        return Ok(Clause::Filters(Vec::new()));
    }
    let mut tests = Vec::new();
    for alt in alternatives.iter().filter(|a| !a.is_empty()) {
        tests.extend(tests_for(p, k.modifier, alt)?);
    }
    let param = match k.modifier {
        Some(m) if OWN_ROWS.contains(&m) => modified(&p.code, m),
        _ => p.code.clone(),
    };
    // Alternatives that are all one plain value are one `IN` list (which both databases
    // answer from the index in one pass).
    let plain: Option<Vec<String>> = tests
        .iter()
        .map(|t| match (t.value.as_slice(), t.system.is_empty()) {
            ([(Cmp::Eq, v)], true) => Some(v.clone()),
            _ => None,
        })
        .collect();
    // One plain value (with at most an exact system) is an equality: the form a store
    // can drive a page from, in id order.
    if k.modifier != Some("not")
        && let [t] = tests.as_slice()
        && let [(Cmp::Eq, v)] = t.value.as_slice()
    {
        let system = match t.system.as_slice() {
            [] => Some(None),
            [(Cmp::Eq, s)] => Some(Some(s.clone())),
            _ => None,
        };
        if let Some(system) = system {
            let mut f = filter(&param, FilterOp::Eq);
            f.value = v.clone();
            f.system = system;
            return Ok(Clause::Filters(vec![f]));
        }
    }
    let op = match (k.modifier == Some("not"), plain) {
        (true, _) => FilterOp::NoneOf(tests),
        (false, Some(values)) if values.len() > 1 => FilterOp::In(values),
        (false, _) => FilterOp::AnyOf(tests),
    };
    Ok(Clause::Filters(vec![filter(&param, op)]))
}

/// A composite parameter's value, `token$value` (alternatives separated by `,`): the
/// second component's tests behind the first's key (see [`push_pair_rows`]).
fn pair_filter(p: &SearchParameter, key: &str, value: &str) -> Result<Filter, SearchError> {
    let Some((_, second)) = index::composite_parts(p) else {
        return Err(SearchError::NotSupported(format!(
            "the composite parameter '{}' is not supported",
            p.code
        )));
    };
    let mut tests = Vec::new();
    for alt in split_escaped(value, ',').iter().filter(|a| !a.is_empty()) {
        let parts = split_escaped(alt, '$');
        let [first, rest] = parts.as_slice() else {
            return Err(SearchError::Invalid(format!(
                "{key}: '{alt}' is not a pair of values joined by $ (for example http://loinc.org|8480-6$gt140)"
            )));
        };
        let token = split_escaped(first, '|');
        let pair_key = match token.as_slice() {
            [code] if !code.is_empty() => unescape(code),
            [system, code] if !code.is_empty() => {
                format!("{}|{}", unescape(system), unescape(code))
            }
            _ => {
                return Err(SearchError::Invalid(format!(
                    "{key}: '{first}' is not a code (code, system|code or |code)"
                )));
            }
        };
        let lead = format!("{pair_key}{PAIR}");
        for t in tests_for(second, None, rest)? {
            let mut value: Vec<(Cmp, String)> = t
                .value
                .into_iter()
                .map(|(c, v)| (c, format!("{lead}{v}")))
                .collect();
            value.push((Cmp::Prefix, lead.clone()));
            let system = t
                .system
                .into_iter()
                .map(|(c, v)| (c, format!("{lead}{v}")))
                .collect();
            tests.push(RowTest { value, system });
        }
    }
    Ok(filter(&p.code, FilterOp::AnyOf(tests)))
}

fn filter(param: &str, op: FilterOp) -> Filter {
    Filter {
        also: Vec::new(),
        param: param.to_owned(),
        system: None,
        op,
        value: String::new(),
    }
}

/// Split on `sep` where it is not escaped by `\`, and undo the escapes (`\,` `\|` `\$` `\\`).
pub fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n @ (',' | '|' | '$' | '\\')) if n != sep => {
                    // An escaped character other than the separator stays escaped for the
                    // next split.
                    if let Some(l) = out.last_mut() {
                        l.push('\\');
                        l.push(n);
                    }
                }
                Some(n) => {
                    if let Some(l) = out.last_mut() {
                        l.push(n)
                    }
                }
                None => {
                    if let Some(l) = out.last_mut() {
                        l.push('\\')
                    }
                }
            },
            c if c == sep => out.push(String::new()),
            c => {
                if let Some(l) = out.last_mut() {
                    l.push(c)
                }
            }
        }
    }
    out
}

/// Undo the remaining escapes of a value part.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(n) = chars.next()
        {
            out.push(n);
            continue;
        }
        out.push(c);
    }
    out
}

/// The row tests one alternative of a parameter's value means (any may pass).
fn tests_for(
    p: &SearchParameter,
    modifier: Option<&str>,
    alt: &str,
) -> Result<Vec<RowTest>, SearchError> {
    match p.kind {
        ParamType::String => {
            let raw = unescape(alt);
            let folded = fold(&raw);
            Ok(vec![match modifier {
                Some("exact") => RowTest {
                    value: vec![(Cmp::Eq, folded)],
                    system: vec![(Cmp::Eq, raw)],
                },
                Some("contains") => RowTest::value(Cmp::Contains, folded),
                _ => RowTest::value(Cmp::Prefix, folded),
            }])
        }
        ParamType::Token if modifier == Some("text") => {
            Ok(vec![RowTest::value(Cmp::Prefix, fold(&unescape(alt)))])
        }
        ParamType::Token if modifier == Some("of-type") => {
            match split_escaped(alt, '|').as_slice() {
                [ts, tc, v] if !ts.is_empty() && !tc.is_empty() && !v.is_empty() => {
                    Ok(vec![RowTest {
                        value: vec![(Cmp::Eq, unescape(v))],
                        system: vec![(Cmp::Eq, format!("{}|{}", unescape(ts), unescape(tc)))],
                    }])
                }
                _ => Err(SearchError::Invalid(format!(
                    "'{alt}' is not an identifier of a type (type-system|type-code|value)"
                ))),
            }
        }
        ParamType::Token => token_tests(alt),
        ParamType::Reference if modifier == Some("identifier") => token_tests(alt),
        ParamType::Reference => {
            let r = reference_key(&unescape(alt));
            if let Some(t) = modifier {
                // `subject:Patient=123`
                return Ok(vec![RowTest::value(Cmp::Eq, format!("{t}/{r}"))]);
            }
            if r.contains('/') {
                return Ok(vec![RowTest::value(Cmp::Eq, r)]);
            }
            // A bare id: a reference to a resource of any target type with that id.
            let targets: Vec<&String> = if p.target.is_empty() {
                Vec::new()
            } else {
                p.target.iter().collect()
            };
            if targets.is_empty() {
                return Ok(vec![RowTest::value(Cmp::Eq, r)]);
            }
            Ok(targets
                .into_iter()
                .map(|t| RowTest::value(Cmp::Eq, format!("{t}/{r}")))
                .collect())
        }
        ParamType::Date => date_tests(alt),
        ParamType::Number => {
            let (prefix, num) = split_prefix(alt);
            number_tests(prefix, num).map(|t| t.into_iter().collect())
        }
        ParamType::Quantity => {
            let parts = split_escaped(alt, '|');
            let (number, unit) = match parts.as_slice() {
                [n] => (n.as_str(), None),
                [n, system, code] if system.is_empty() => {
                    (n.as_str(), Some(format!("|{}", unescape(code))))
                }
                [n, system, code] => (
                    n.as_str(),
                    Some(format!("{}|{}", unescape(system), unescape(code))),
                ),
                _ => {
                    return Err(SearchError::Invalid(format!(
                        "'{alt}' is not a quantity ([prefix]number, or [prefix]number|system|code)"
                    )));
                }
            };
            let (prefix, num) = split_prefix(number);
            let mut tests = number_tests(prefix, num)?;
            if let Some(u) = unit {
                for t in &mut tests {
                    t.system.push((Cmp::Eq, u.clone()));
                }
            }
            Ok(tests)
        }
        ParamType::Uri => {
            let u = unescape(alt);
            Ok(match modifier {
                Some("below") => vec![RowTest::value(Cmp::Prefix, u)],
                Some("above") => {
                    // Every URL the value is below: its prefixes at each `/`.
                    let mut out: Vec<RowTest> = u
                        .match_indices('/')
                        .map(|(i, _)| RowTest::value(Cmp::Eq, &u[..i]))
                        .collect();
                    out.push(RowTest::value(Cmp::Eq, u));
                    out
                }
                _ => vec![RowTest::value(Cmp::Eq, u)],
            })
        }
        ParamType::Composite | ParamType::Special => Err(SearchError::NotSupported(format!(
            "the {} parameter '{}' is not supported",
            p.kind.as_str(),
            p.code
        ))),
    }
}

/// The row test of a token value: `code`, `system|code`, `|code` or `system|`.
fn token_tests(alt: &str) -> Result<Vec<RowTest>, SearchError> {
    let parts = split_escaped(alt, '|');
    Ok(vec![match parts.as_slice() {
        [code] => RowTest::value(Cmp::Eq, unescape(code)),
        [system, code] if code.is_empty() => RowTest {
            value: Vec::new(),
            system: vec![(Cmp::Eq, unescape(system))],
        },
        [system, code] => RowTest {
            value: vec![(Cmp::Eq, unescape(code))],
            system: vec![(Cmp::Eq, unescape(system))],
        },
        _ => {
            return Err(SearchError::Invalid(format!(
                "'{alt}' is not a token (code, system|code, |code or system|)"
            )));
        }
    }])
}

const PREFIXES: [&str; 9] = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"];

/// The comparison prefix of an ordered value (`eq` when none).
fn split_prefix(v: &str) -> (&str, &str) {
    match v.get(..2) {
        Some(p) if PREFIXES.contains(&p) => (p, &v[2..]),
        _ => ("eq", v),
    }
}

fn date_tests(alt: &str) -> Result<Vec<RowTest>, SearchError> {
    let (prefix, date) = split_prefix(alt);
    let (lo, hi) = date_range(date).ok_or_else(|| {
        SearchError::Invalid(format!(
            "'{alt}' is not a date (YYYY, YYYY-MM, YYYY-MM-DD or a date-time) with an optional prefix eq, ne, gt, lt, ge, le, sa, eb, ap"
        ))
    })?;
    let (qlo, qhi) = (instant_key(lo), instant_key(hi));
    // A row is the period [value, system) it covers.
    let starts = |c: Cmp, v: &str| (c, v.to_owned());
    let inside = RowTest {
        value: vec![starts(Cmp::Ge, &qlo)],
        system: vec![starts(Cmp::Le, &qhi)],
    };
    Ok(match prefix {
        "eq" => vec![inside],
        "ne" => vec![
            RowTest::value(Cmp::Lt, qlo),
            RowTest {
                value: Vec::new(),
                system: vec![(Cmp::Gt, qhi)],
            },
        ],
        "gt" => vec![RowTest {
            value: Vec::new(),
            system: vec![(Cmp::Gt, qhi)],
        }],
        "lt" => vec![RowTest::value(Cmp::Lt, qlo)],
        // ge and le: the target has some part at or after (before) the search range's start
        // (end). That holds for whatever matches gt or eq (lt or eq), as R4 defines them,
        // and also for a period that only overlaps the search range, which a literal
        // "gt or eq" would miss (a stay ending on the searched day is "ge" that day).
        "ge" => vec![RowTest {
            value: Vec::new(),
            system: vec![(Cmp::Gt, qlo)],
        }],
        "le" => vec![RowTest::value(Cmp::Lt, qhi)],
        "sa" => vec![RowTest::value(Cmp::Ge, qhi)],
        "eb" => vec![RowTest {
            value: Vec::new(),
            system: vec![(Cmp::Le, qlo)],
        }],
        _ => {
            // ap: overlapping the period widened by a tenth of its length, at least a day.
            let widen = std::cmp::max((hi - lo) / 10, Duration::days(1));
            vec![RowTest {
                value: vec![(Cmp::Lt, instant_key(hi + widen))],
                system: vec![(Cmp::Gt, instant_key(lo - widen))],
            }]
        }
    })
}

/// Tests on a row's number for `prefix number`: `eq` is the range the number's precision
/// implies (`100` is [99.5, 100.5)), `ap` ±10 %.
fn number_tests(prefix: &str, num: &str) -> Result<Vec<RowTest>, SearchError> {
    let bad = || {
        SearchError::Invalid(format!(
            "'{num}' is not a number (with an optional prefix eq, ne, gt, lt, ge, le, sa, eb, ap)"
        ))
    };
    let x: f64 = num.trim().parse().map_err(|_| bad())?;
    if !x.is_finite() {
        return Err(bad());
    }
    let mantissa = num.split(['e', 'E']).next().unwrap_or(num);
    let decimals = mantissa.split_once('.').map(|(_, d)| d.len()).unwrap_or(0);
    let exp: i32 = num
        .split_once(['e', 'E'])
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    let half = 0.5 * 10f64.powi(exp - decimals as i32);
    // Beyond f64's own precision the range is the number itself.
    let lo = (x - half).min(x);
    let hi = if x + half > x { x + half } else { x.next_up() };
    let key = |v: f64| sortable(v).ok_or_else(bad);
    let range = |lo: f64, hi: f64| -> Result<RowTest, SearchError> {
        Ok(RowTest {
            value: vec![(Cmp::Ge, key(lo)?), (Cmp::Lt, key(hi)?)],
            system: Vec::new(),
        })
    };
    Ok(match prefix {
        "eq" => vec![range(lo, hi)?],
        "ne" => vec![
            RowTest::value(Cmp::Lt, key(lo)?),
            RowTest::value(Cmp::Ge, key(hi)?),
        ],
        "gt" | "sa" => vec![RowTest::value(Cmp::Gt, key(x)?)],
        "lt" | "eb" => vec![RowTest::value(Cmp::Lt, key(x)?)],
        "ge" => vec![RowTest::value(Cmp::Ge, key(x)?)],
        "le" => vec![RowTest::value(Cmp::Le, key(x)?)],
        _ => {
            let d = (x * 0.1).abs();
            vec![RowTest {
                value: vec![(Cmp::Ge, key(x - d)?), (Cmp::Le, key(x + d)?)],
                system: Vec::new(),
            }]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn rows(r: &Value) -> Vec<SearchRow> {
        rows_of(r["resourceType"].as_str().unwrap(), r)
    }

    fn hits(r: &Value, key: &str, value: &str) -> bool {
        let t = r["resourceType"].as_str().unwrap();
        match parse(t, key, value).unwrap() {
            Clause::Filters(fs) => fs.iter().all(|f| f.matches(&rows(r))),
            Clause::Chain { .. } => panic!("chain"),
        }
    }

    fn observation() -> Value {
        json!({
            "resourceType": "Observation",
            "id": "o1",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}], "text": "Heart rate"},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2024-03-05T10:30:00Z",
            "valueQuantity": {"value": 72, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"}
        })
    }

    fn blood_pressure() -> Value {
        let q = |v: f64| json!({"value": v, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"});
        json!({
            "resourceType": "Observation", "id": "bp", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2024-03-05T10:30:00Z",
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "valueQuantity": q(120.0)},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]}, "valueQuantity": q(80.0)}
            ]
        })
    }

    #[test]
    fn composite_pairs_hold_within_one_component() {
        let bp = blood_pressure();
        let k = "component-code-value-quantity";
        assert!(hits(&bp, k, "http://loinc.org|8480-6$gt110"));
        assert!(hits(&bp, k, "8480-6$120"));
        assert!(hits(&bp, k, "8480-6$120|http://unitsofmeasure.org|mm[Hg]"));
        assert!(hits(&bp, k, "8480-6$120||mmHg"));
        assert!(!hits(&bp, k, "8480-6$120|http://unitsofmeasure.org|kPa"));
        // The diastolic 80 is under 100, but the systolic is not: a pair is one component.
        assert!(!hits(&bp, k, "http://loinc.org|8480-6$lt100"));
        assert!(hits(&bp, k, "8462-4$lt100"));
        assert!(!hits(&bp, k, "|8480-6$120"), "|code means no system");
        assert!(!hits(&bp, k, "http://snomed.info/sct|8480-6$120"));
        assert!(hits(&bp, k, "8480-6$lt100,8462-4$lt100"), "comma is any of");
        assert!(hits(&bp, k, "8480-6$ne100"));
        // combo-: the Observation itself or a component; code-value-: the Observation only.
        assert!(hits(&bp, "combo-code-value-quantity", "8462-4$80"));
        assert!(!hits(&bp, "code-value-quantity", "8462-4$80"));
        // An empty value asks nothing.
        assert!(hits(&bp, k, ""));
    }

    #[test]
    fn composite_pairs_of_each_second_type() {
        let mut o = observation();
        assert!(hits(
            &o,
            "code-value-quantity",
            "http://loinc.org|8867-4$ge72"
        ));
        assert!(!hits(
            &o,
            "code-value-quantity",
            "http://loinc.org|8867-4$gt72"
        ));
        assert!(!hits(&o, "code-value-quantity", "8310-5$72"));
        o.as_object_mut().unwrap().remove("valueQuantity");
        o["valueCodeableConcept"] =
            json!({"coding": [{"system": "http://snomed.info/sct", "code": "260385009"}]});
        assert!(hits(
            &o,
            "code-value-concept",
            "8867-4$http://snomed.info/sct|260385009"
        ));
        assert!(hits(&o, "code-value-concept", "8867-4$260385009"));
        assert!(!hits(&o, "code-value-concept", "8867-4$10828004"));
        o.as_object_mut().unwrap().remove("valueCodeableConcept");
        o["valueDateTime"] = json!("2024-03-01");
        assert!(hits(&o, "code-value-date", "8867-4$2024-03"));
        assert!(hits(&o, "code-value-date", "8867-4$lt2024-03-02"));
        assert!(!hits(&o, "code-value-date", "8867-4$gt2024-03-02"));
        o.as_object_mut().unwrap().remove("valueDateTime");
        o["valueString"] = json!("Négatif");
        assert!(hits(&o, "code-value-string", "8867-4$negat"));
        assert!(!hits(&o, "code-value-string", "8867-4$posit"));
        // A query character cannot reach into the key of another code.
        assert!(!hits(&o, "code-value-string", "8867$negat"));
    }

    #[test]
    fn composites_refuse_what_they_cannot_mean() {
        for (k, v) in [
            ("component-code-value-quantity", "8480-6"),
            ("component-code-value-quantity", "$120"),
            ("component-code-value-quantity", "8480-6$120$3"),
            ("component-code-value-quantity", "8480-6$abc"),
        ] {
            assert!(
                matches!(parse("Observation", k, v), Err(SearchError::Invalid(_))),
                "{k}={v}"
            );
        }
        assert!(matches!(
            parse(
                "Observation",
                "component-code-value-quantity:missing",
                "true"
            ),
            Err(SearchError::NotSupported(_))
        ));
        // Three-part and crossed R4 composites are reported as not supported.
        assert!(matches!(
            parse(
                "MolecularSequence",
                "chromosome-window-coordinate",
                "1$ge1$le2"
            ),
            Err(SearchError::NotSupported(_))
        ));
        assert!(matches!(
            parse(
                "DocumentReference",
                "relationship",
                "replaces$DocumentReference/1"
            ),
            Err(SearchError::NotSupported(_))
        ));
        let supported = search_parameters()
            .all
            .iter()
            .filter(|p| p.kind == ParamType::Composite && is_searchable(p))
            .count();
        assert_eq!(
            supported, 41,
            "46 R4 composites less 4 coordinates and relationship"
        );
    }

    #[test]
    fn text_identifier_and_of_type_modifiers() {
        let o = observation();
        assert!(hits(&o, "code:text", "heart"));
        assert!(hits(&o, "code:text", "HEART RATE"));
        assert!(!hits(&o, "code:text", "rate"), "starts with, as a string");
        assert!(!hits(&o, "code", "heart"));
        let mut o = observation();
        o["subject"] =
            json!({"identifier": {"system": "urn:mrn", "value": "1001"}, "display": "Ada"});
        assert!(hits(&o, "subject:identifier", "urn:mrn|1001"));
        assert!(hits(&o, "subject:identifier", "1001"));
        assert!(!hits(&o, "subject:identifier", "urn:other|1001"));
        assert!(!hits(&o, "subject", "1001"));
        let p = json!({"resourceType": "Patient", "identifier": [
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}], "text": "Medical record number"},
             "system": "urn:mrn", "value": "1001"},
            {"system": "urn:ssn", "value": "999"}
        ]});
        let v2 = "http://terminology.hl7.org/CodeSystem/v2-0203";
        assert!(hits(&p, "identifier:of-type", &format!("{v2}|MR|1001")));
        assert!(!hits(&p, "identifier:of-type", &format!("{v2}|MR|999")));
        assert!(!hits(&p, "identifier:of-type", &format!("{v2}|SS|1001")));
        assert!(hits(&p, "identifier:text", "medical record"));
        assert!(matches!(
            parse("Patient", "identifier:of-type", "MR|1001"),
            Err(SearchError::Invalid(_))
        ));
        // The modifiers' rows are not the parameter's: a code search does not see texts.
        assert!(
            rows(&p)
                .iter()
                .all(|r| r.param != "identifier" || r.value != "medical record number")
        );
    }

    #[test]
    fn tokens_match_by_code_system_or_both() {
        let o = observation();
        assert!(hits(&o, "code", "8867-4"));
        assert!(hits(&o, "code", "http://loinc.org|8867-4"));
        assert!(hits(&o, "code", "http://loinc.org|"));
        assert!(!hits(&o, "code", "|8867-4"), "|code means no system");
        assert!(!hits(&o, "code", "http://snomed.info/sct|8867-4"));
        assert!(hits(&o, "code", "1-1,8867-4"), "comma is any of");
        assert!(hits(&o, "code:not", "1-1"));
        assert!(!hits(&o, "code:not", "8867-4"));
        assert!(hits(&o, "status", "final"));
        assert!(hits(&o, "_id", "o1"));
        // One plain value is an equality (with its exact system), the form a store can
        // drive a page from; alternatives and modifiers are not.
        let Ok(Clause::Filters(fs)) = parse("Observation", "code", "http://loinc.org|8867-4")
        else {
            panic!("a filter")
        };
        assert_eq!(fs[0].op, FilterOp::Eq);
        assert_eq!(
            (fs[0].value.as_str(), fs[0].system.as_deref()),
            ("8867-4", Some("http://loinc.org"))
        );
        let Ok(Clause::Filters(fs)) = parse("Observation", "code", "|8867-4") else {
            panic!("a filter")
        };
        assert_eq!(fs[0].system.as_deref(), Some(""));
        let Ok(Clause::Filters(fs)) = parse("Observation", "code:not", "8867-4") else {
            panic!("a filter")
        };
        assert!(matches!(fs[0].op, FilterOp::NoneOf(_)));
    }

    #[test]
    fn references_match_typed_bare_and_typed_by_modifier() {
        let o = observation();
        assert!(hits(&o, "subject", "Patient/p1"));
        assert!(hits(&o, "subject", "p1"));
        assert!(hits(&o, "subject:Patient", "p1"));
        assert!(hits(&o, "patient", "p1"));
        assert!(!hits(&o, "subject", "Patient/p2"));
        assert!(!hits(&o, "subject:Group", "p1"));
        assert!(hits(&o, "encounter:missing", "true"));
        assert!(!hits(&o, "subject:missing", "true"));
        assert!(matches!(
            parse("Observation", "subject:Patient.name", "x").unwrap(),
            Clause::Chain { ref targets, .. } if targets == &vec!["Patient".to_owned()]
        ));
    }

    #[test]
    fn skipping_parameters_whose_elements_are_absent_changes_no_row() {
        let roots = |t: &str, c: &str| roots_of(t, search_parameters().get(t, c).unwrap());
        assert_eq!(
            roots("Observation", "value-quantity"),
            Some(vec!["value".to_owned()])
        );
        assert_eq!(roots("Observation", "_id"), Some(vec!["id".to_owned()]));
        assert_eq!(roots("Observation", "code"), Some(vec!["code".to_owned()]));
        assert_eq!(
            roots("Observation", "code-value-quantity"),
            None,
            "the whole resource"
        );
        assert_eq!(
            roots("Patient", "deceased"),
            None,
            "false without the element"
        );
        assert!(!empty_from_absence(
            "Patient.deceased.exists() and Patient.deceased != false"
        ));
        assert!(empty_from_absence(
            "Patient.telecom.where(system='phone') | Person.telecom"
        ));
        assert!(empty_from_absence(
            "(Observation.value as Quantity) | (Observation.value as SampledData)"
        ));
        assert!(!empty_from_absence("Observation.a = 'b'"));
        let mut resources: Vec<Value> = Vec::new();
        for record in crate::synth::population(&crate::synth::Config::new(3, 12)) {
            resources.extend(record.bulk_resources().into_iter().map(|(_, r)| r));
        }
        resources.push(json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "x"}, "valueQuantity": {"value": 3, "unit": "g"},
            "_status": {"extension": [{"url": "u", "valueString": "s"}]},
            "meta": {"lastUpdated": "2024-01-01T00:00:00Z", "tag": [{"code": "t"}]}}));
        resources.push(
            json!({"resourceType": "Patient", "id": "p", "deceasedDateTime": "2020-01-01",
            "telecom": [{"system": "phone", "value": "1"}], "address": [{"city": "X"}]}),
        );
        let mut types = std::collections::BTreeSet::new();
        for r in &resources {
            let t = r["resourceType"].as_str().unwrap();
            types.insert(t.to_owned());
            assert_eq!(rows_skipping(t, r, true), rows_skipping(t, r, false), "{r}");
        }
        assert!(types.len() >= 8, "{types:?}");
    }

    /// The rows of `code` computed from its own expression, as they were stored before
    /// unions were read from their members.
    fn own_rows(t: &str, code: &str, r: &Value) -> Vec<SearchRow> {
        let mut out = Vec::new();
        push_param_rows(search_parameters().get(t, code).unwrap(), r, &mut out);
        sorted(out)
    }

    #[test]
    fn unions_come_from_the_definitions_and_read_their_members_rows() {
        let mut all: Vec<(String, String, Vec<String>)> = UNIONS
            .iter()
            .map(|((t, c), ms)| (t.clone(), c.clone(), ms.clone()))
            .collect();
        all.sort();
        let want = |c: &str, ms: &[&str]| {
            (
                "Observation".to_owned(),
                c.to_owned(),
                ms.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            all,
            vec![
                want("combo-code", &["code", "component-code"]),
                want(
                    "combo-code-value-concept",
                    &["code-value-concept", "component-code-value-concept"]
                ),
                want(
                    "combo-code-value-quantity",
                    &["code-value-quantity", "component-code-value-quantity"]
                ),
                want(
                    "combo-data-absent-reason",
                    &["component-data-absent-reason", "data-absent-reason"]
                ),
                want(
                    "combo-value-concept",
                    &["component-value-concept", "value-concept"]
                ),
                want(
                    "combo-value-quantity",
                    &["component-value-quantity", "value-quantity"]
                ),
            ]
        );
        let bp = json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}], "text": "Blood pressure"},
            "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
            "dataAbsentReason": {"coding": [{"code": "unknown"}]},
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                 "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}], "text": "Diastolic"},
                 "valueCodeableConcept": {"text": "low"}, "dataAbsentReason": {"text": "asked"}}
            ]
        });
        let rows = rows(&bp);
        for ((t, c), members) in UNIONS.iter() {
            assert!(
                !rows.iter().any(|r| r.param.starts_with(c.as_str())),
                "{c} has rows"
            );
            // What the union's own expression gives is what its members' rows hold.
            let member = |r: &SearchRow| {
                members
                    .iter()
                    .find(|m| r.param == **m || r.param.starts_with(&format!("{m}:")))
                    .cloned()
            };
            let via = sorted(
                rows.iter()
                    .filter_map(|r| {
                        let m = member(r)?;
                        Some(SearchRow {
                            param: r.param.replacen(&m, c, 1),
                            ..r.clone()
                        })
                    })
                    .collect(),
            );
            let own = own_rows(t, c, &bp);
            assert!(!own.is_empty(), "{c}");
            assert_eq!(via, own, "{c}");
        }
        for (key, q, want) in [
            ("combo-code", "8480-6", true),
            ("combo-code", "http://loinc.org|85354-9", true),
            ("combo-code", "9999-9", false),
            ("combo-code:text", "diastolic", true),
            (
                "combo-value-quantity",
                "gt119|http://unitsofmeasure.org|mm[Hg]",
                true,
            ),
            ("combo-value-quantity", "gt120", false),
            ("combo-code-value-quantity", "8480-6$120", true),
            ("combo-code-value-quantity", "8462-4$120", false),
            (
                "combo-value-concept",
                "http://snomed.info/sct|38341003",
                true,
            ),
            ("combo-code-value-concept", "85354-9$38341003", true),
            ("combo-data-absent-reason", "unknown", true),
            ("combo-data-absent-reason:missing", "true", false),
        ] {
            assert_eq!(hits(&bp, key, q), want, "{key}={q}");
        }
        assert!(!is_sortable(
            search_parameters()
                .get("Observation", "combo-code")
                .unwrap()
        ));
    }

    #[test]
    fn dates_follow_the_prefixes_over_periods() {
        let o = observation();
        for (q, want) in [
            ("2024", true),
            ("2024-03-05", true),
            ("2024-03-06", false),
            ("eq2024-03", true),
            ("ne2024-03-05", false),
            ("ne2024-03-06", true),
            ("gt2024-03-04", true),
            ("gt2024-03-05", false),
            ("lt2024-03-06", true),
            ("lt2024-03-05", false),
            ("ge2024-03-05", true),
            ("le2024-03-05", true),
            ("sa2024-03-04", true),
            ("eb2024-03-06", true),
            ("eb2024-03-05", false),
            ("ap2024-03-04", true),
        ] {
            assert_eq!(hits(&o, "date", q), want, "date={q}");
        }
        // A period from 03-01T08 to 03-02T08 is on and after 03-01 and on and before 03-02.
        let stay = json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "stay"},
            "effectivePeriod": {"start": "2023-03-01T08:00:00Z", "end": "2023-03-02T08:00:00Z"}});
        for (q, want) in [
            ("ge2023-03-02", true),
            ("ge2023-03-01", true),
            ("ge2023-03-03", false),
            ("le2023-03-03", true),
            ("le2023-03-01", true),
            ("le2023-02-28", false),
            ("gt2023-03-01", true),
            ("gt2023-03-02", false),
            ("lt2023-03-02", true),
            ("lt2023-03-01", false),
            ("eq2023-03", true),
            ("eq2023-03-01", false),
            ("ge2023-03-02T08:00:00Z", true),
            ("ge2023-03-02T08:00:01Z", false),
        ] {
            assert_eq!(hits(&stay, "date", q), want, "date={q} over a period");
        }
        assert!(matches!(
            parse("Observation", "date", "yesterday"),
            Err(SearchError::Invalid(_))
        ));
    }

    #[test]
    fn quantities_compare_numbers_with_or_without_units() {
        let o = observation();
        assert!(hits(&o, "value-quantity", "72"));
        assert!(hits(
            &o,
            "value-quantity",
            "72|http://unitsofmeasure.org|/min"
        ));
        assert!(hits(&o, "value-quantity", "72||/min"));
        assert!(hits(&o, "value-quantity", "72||beats/minute"));
        assert!(!hits(&o, "value-quantity", "72||mg"));
        assert!(hits(&o, "value-quantity", "gt71.5"));
        assert!(!hits(&o, "value-quantity", "gt72"));
        assert!(hits(&o, "value-quantity", "72.0"), "72.0 is [71.95, 72.05)");
        assert!(
            !hits(&o, "value-quantity", "72.4"),
            "72.4 is [72.35, 72.45)"
        );
    }

    #[test]
    fn strings_start_with_contain_or_equal_exactly() {
        let p =
            json!({"resourceType": "Patient", "name": [{"family": "Ångström", "given": ["Zoë"]}]});
        assert!(hits(&p, "family", "ang"));
        assert!(hits(&p, "name", "zo"));
        assert!(hits(&p, "family:contains", "STR"));
        assert!(hits(&p, "family:exact", "Ångström"));
        assert!(!hits(&p, "family:exact", "angstrom"));
        assert!(!hits(&p, "family", "str"));
        assert!(matches!(
            parse("Patient", "family:text", "x"),
            Err(SearchError::NotSupported(_))
        ));
        assert!(matches!(
            parse("Patient", "nonsense", "x"),
            Err(SearchError::Unknown { .. })
        ));
    }

    #[test]
    fn escaped_separators_stay_in_the_value() {
        assert_eq!(split_escaped(r"a\,b,c", ','), vec!["a,b", "c"]);
        assert_eq!(split_escaped(r"s\|x|c", '|'), vec!["s|x", "c"]);
        assert_eq!(split_escaped(r"a\|b,c", ','), vec![r"a\|b", "c"]);
    }

    proptest! {
        #[test]
        fn sortable_keeps_numeric_order(a in -1e12f64..1e12, b in -1e12f64..1e12) {
            let (ka, kb) = (sortable(a).unwrap(), sortable(b).unwrap());
            prop_assert_eq!(a.partial_cmp(&b), Some(ka.cmp(&kb)));
        }

        #[test]
        fn a_number_is_found_by_its_own_text(x in -1e6f64..1e6) {
            let text = format!("{x}");
            let r = json!({"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": x}]});
            prop_assert!(hits(&r, "probability", &text));
            let above = format!("gt{}", x + 1.0);
            prop_assert!(!hits(&r, "probability", &above));
        }

        #[test]
        fn a_date_is_found_by_its_own_day(y in 1900i32..2100, m in 1u32..13, d in 1u32..29) {
            let day = format!("{y:04}-{m:02}-{d:02}");
            let r = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "effectiveDateTime": day});
            prop_assert!(hits(&r, "date", &day));
            let year = format!("{y:04}");
            prop_assert!(hits(&r, "date", &year));
            let after = format!("sa{day}");
            prop_assert!(!hits(&r, "date", &after));
            let next = format!("gt{:04}", y + 1);
            prop_assert!(!hits(&r, "date", &next));
        }
    }
}

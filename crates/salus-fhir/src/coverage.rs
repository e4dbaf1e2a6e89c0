//! How much of the R4 search-parameter definitions this crate handles: each expression is
//! parsed; every path in it is resolved against the structure definitions from each of its
//! base types (so a misspelt or unknown element, or a choice the evaluator would miss, is
//! counted); and it is evaluated over a resource of each base type (a minimal one, and any
//! sample given).

use crate::definitions::{Structures, search_parameters, structures};
use crate::fhirpath::{self, Child, Expr, NodeType, child};
use crate::index;
use serde_json::{Value, json};

/// The tally over every R4 search parameter that has an expression.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Coverage {
    pub with_expression: usize,
    pub parsed: usize,
    /// Parsed, and every path resolves against the definitions from a base type that the
    /// expression is about.
    pub resolved: usize,
    /// Parsed, and evaluated without error over a resource of every base type.
    pub evaluated: usize,
    /// `(parameter id, what failed)`.
    pub failures: Vec<(String, String)>,
}

/// Measure [`Coverage`]; `sample` gives a fuller resource of a type when there is one.
pub fn measure(sample: impl Fn(&str) -> Option<Value>) -> Coverage {
    let mut c = Coverage::default();
    for p in &search_parameters().all {
        let Some(expr) = &p.expression else { continue };
        c.with_expression += 1;
        if let Err(e) = fhirpath::parse(expr) {
            c.failures.push((p.id.clone(), e.to_string()));
            continue;
        }
        c.parsed += 1;
        match fhirpath::parse(expr) {
            Ok(e) => match p
                .base
                .iter()
                .map(|b| resolve_paths(structures(), &e, b))
                .find(|r| r.is_err())
            {
                Some(Err(why)) => c.failures.push((p.id.clone(), why)),
                _ => c.resolved += 1,
            },
            Err(e) => c.failures.push((p.id.clone(), e.to_string())),
        }
        let mut ok = true;
        for base in &p.base {
            let minimal = json!({"resourceType": base});
            for r in [Some(minimal), sample(base)].into_iter().flatten() {
                if let Err(e) = index::extract(p, &r) {
                    ok = false;
                    c.failures.push((p.id.clone(), e.to_string()));
                    break;
                }
            }
        }
        if ok {
            c.evaluated += 1;
        }
    }
    c
}

/// Check that every member step of `e` names an element of the type it is taken on,
/// starting from a resource of type `base`. A union's branch about another resource type
/// (`Patient.birthDate | Person.birthDate`) yields nothing for `base` and is not an error;
/// a step on a known type that names no element is.
pub fn resolve_paths(st: &Structures, e: &Expr, base: &str) -> Result<(), String> {
    walk(st, e, &[NodeType::Named(base.to_owned())]).map(|_| ())
}

fn walk(st: &Structures, e: &Expr, focus: &[NodeType]) -> Result<Vec<NodeType>, String> {
    Ok(match e {
        Expr::Ident(name) if name.starts_with(|c: char| c.is_ascii_uppercase()) => focus
            .iter()
            .filter(|t| matches!(t, NodeType::Named(n) if st.derives(n, name)))
            .cloned()
            .collect(),
        Expr::Ident(name) => step(st, focus, name)?,
        Expr::Member(inner, name) => {
            let f = walk(st, inner, focus)?;
            step(st, &f, name)?
        }
        Expr::Indexer(inner, _) => walk(st, inner, focus)?,
        Expr::TypeTest {
            is: false,
            expr,
            ty,
        } => {
            let f = walk(st, expr, focus)?;
            narrow(st, &f, ty)
        }
        Expr::Func {
            focus: f,
            name,
            args,
        } => {
            let input = match f {
                Some(inner) => walk(st, inner, focus)?,
                None => focus.to_vec(),
            };
            match name.as_str() {
                "where" => {
                    for a in args {
                        for t in &input {
                            walk(st, a, std::slice::from_ref(t))?;
                        }
                    }
                    input
                }
                "first" | "last" | "tail" | "single" | "distinct" => input,
                "ofType" | "as" => match args.first() {
                    Some(Expr::Ident(t)) => narrow(st, &input, t),
                    _ => vec![],
                },
                "resolve" => vec![NodeType::Resolved(None)],
                "extension" => vec![NodeType::Named("Extension".into())],
                _ => vec![NodeType::System],
            }
        }
        Expr::Bin(fhirpath::BinOp::Union, a, b) => {
            let mut out = walk(st, a, focus)?;
            out.extend(walk(st, b, focus)?);
            out
        }
        Expr::Bin(_, a, b) => {
            walk(st, a, focus)?;
            walk(st, b, focus)?;
            vec![NodeType::System]
        }
        _ => vec![NodeType::System],
    })
}

fn narrow(st: &Structures, focus: &[NodeType], ty: &str) -> Vec<NodeType> {
    focus
        .iter()
        .filter(|t| match t {
            NodeType::Named(n) => st.derives(n, ty),
            _ => true,
        })
        .map(|_| NodeType::Named(ty.to_owned()))
        .collect()
}

fn step(st: &Structures, focus: &[NodeType], name: &str) -> Result<Vec<NodeType>, String> {
    let mut out = Vec::new();
    for t in focus {
        match child(st, t, name) {
            Some(Child::Choice(types)) => out.extend(types.into_iter().map(NodeType::Named)),
            Some(Child::Plain(ty)) => out.push(ty),
            None => match t {
                NodeType::Named(n) => return Err(format!("{n} has no element '{name}'")),
                NodeType::Backbone { root, path } => {
                    return Err(format!("{root}.{path} has no element '{name}'"));
                }
                _ => {}
            },
        }
    }
    Ok(out)
}

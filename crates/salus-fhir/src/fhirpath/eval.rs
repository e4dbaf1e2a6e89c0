//! Evaluating FHIRPath over a resource held as `serde_json::Value`, typed by the R4
//! structure definitions (so `Observation.value` finds `valueQuantity` and knows it is a
//! Quantity). The subset search parameters use, and the common functions around it.
//! `resolve()` does not fetch: it yields the reference itself, typed by the resource type it
//! names, so `where(resolve() is Patient)` keeps references to patients (as servers do).

use super::parse::{BinOp, Expr};
use crate::definitions::{Structures, structures};
use serde_json::Value;
use std::borrow::Cow;

/// What a node is, as far as the definitions tell.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeType {
    /// A resource or data type (`Patient`, `HumanName`, `string`).
    Named(String),
    /// A backbone element inside `root` at `path` (`Patient` / `contact`).
    Backbone { root: String, path: String },
    /// What `resolve()` gives: the resource type a reference names, if it names one.
    Resolved(Option<String>),
    /// A value computed by the expression (a literal, a function's result).
    System,
}

/// One item of a collection: a part of the resource evaluated (borrowed, never copied) or
/// a value the expression computed.
#[derive(Debug, Clone, PartialEq)]
pub struct Node<'r> {
    pub value: Cow<'r, Value>,
    pub ty: NodeType,
}

impl<'r> Node<'r> {
    pub fn system(value: Value) -> Self {
        Node {
            value: Cow::Owned(value),
            ty: NodeType::System,
        }
    }

    /// The FHIR type name of the node, when it has one.
    pub fn type_name(&self) -> Option<&str> {
        match &self.ty {
            NodeType::Named(n) => Some(n),
            _ => None,
        }
    }
}

/// Why an expression cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("unknown function '{0}'")]
    UnknownFunction(String),
    #[error("function '{0}' takes {1}")]
    Arity(String, &'static str),
    #[error("unknown environment variable '%{0}'")]
    UnknownVariable(String),
    #[error("{0} needs a single item, got {1}")]
    NotSingleton(&'static str, usize),
    #[error("{0}")]
    Type(String),
    #[error("the expression is too deep to evaluate")]
    TooDeep,
}

/// Evaluate `expr` with `resource` as the focus (and `%resource`, `%context`).
pub fn evaluate<'r>(expr: &Expr, resource: &'r Value) -> Result<Vec<Node<'r>>, EvalError> {
    let root = root_node(resource);
    let cx = Cx {
        st: structures(),
        root: root.clone(),
        depth: std::cell::Cell::new(0),
    };
    cx.eval(expr, &[root], None)
}

/// Evaluate `expr` with `focus` (a node found in `resource`) as the focus, `resource` being
/// `%resource`: the components of a composite search parameter.
pub fn evaluate_at<'r>(
    expr: &Expr,
    resource: &'r Value,
    focus: &Node<'r>,
) -> Result<Vec<Node<'r>>, EvalError> {
    let cx = Cx {
        st: structures(),
        root: root_node(resource),
        depth: std::cell::Cell::new(0),
    };
    cx.eval(expr, std::slice::from_ref(focus), None)
}

fn root_node(resource: &Value) -> Node<'_> {
    let ty = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .map(|t| NodeType::Named(t.to_owned()))
        .unwrap_or(NodeType::System);
    Node {
        value: Cow::Borrowed(resource),
        ty,
    }
}

struct Cx<'a, 'r> {
    st: &'a Structures,
    root: Node<'r>,
    depth: std::cell::Cell<usize>,
}

/// What member `name` of a node of type `ty` is, by the definitions.
#[derive(Debug, Clone, PartialEq)]
pub enum Child {
    /// A choice element (`value[x]`): the types it may take (`valueQuantity`, …).
    Choice(Vec<String>),
    Plain(NodeType),
}

/// The definition of member `name` of a node of type `ty`; `None` when the definitions do
/// not have it (or `ty` is not a FHIR type).
pub fn child(st: &Structures, ty: &NodeType, name: &str) -> Option<Child> {
    let (owner, prefix) = match ty {
        NodeType::Named(t) => (t.as_str(), String::new()),
        NodeType::Backbone { root, path } => (root.as_str(), format!("{path}.")),
        _ => return None,
    };
    let path = format!("{prefix}{name}");
    let plain = st.element(owner, &path).or_else(|| {
        // Backbone elements take `id`, `extension`, `modifierExtension`.
        (!prefix.is_empty())
            .then(|| st.element("BackboneElement", name))
            .flatten()
    });
    if let Some((def_owner, d)) = plain {
        if let Some(r) = &d.content_ref {
            return Some(Child::Plain(match r.split_once('.') {
                Some((root, p)) => NodeType::Backbone {
                    root: root.to_owned(),
                    path: p.to_owned(),
                },
                None => NodeType::Named(r.clone()),
            }));
        }
        return Some(Child::Plain(match d.types.first().map(String::as_str) {
            Some("BackboneElement") | Some("Element") if def_owner == owner => NodeType::Backbone {
                root: owner.to_owned(),
                path,
            },
            Some(t) => NodeType::Named(type_of_code(t)),
            None => NodeType::System,
        }));
    }
    st.element(owner, &format!("{path}[x]"))
        .map(|(_, d)| Child::Choice(d.types.clone()))
}

/// `$this` and `$index` inside a function argument.
#[derive(Clone, Copy)]
struct Iter<'n, 'r> {
    this: &'n Node<'r>,
    index: usize,
}

fn boolean<'r>(b: bool) -> Vec<Node<'r>> {
    vec![Node::system(Value::Bool(b))]
}

/// The singleton boolean of a collection (FHIRPath's singleton evaluation of collections).
fn as_bool(c: &[Node<'_>]) -> Result<Option<bool>, EvalError> {
    match c {
        [] => Ok(None),
        [n] => Ok(Some(match n.value.as_ref() {
            Value::Bool(b) => *b,
            _ => true,
        })),
        _ => Err(EvalError::NotSingleton("a boolean operator", c.len())),
    }
}

fn upper_first(s: &str) -> String {
    let mut cs = s.chars();
    match cs.next() {
        Some(c) => c.to_ascii_uppercase().to_string() + cs.as_str(),
        None => String::new(),
    }
}

fn type_of_code(code: &str) -> String {
    type_name_of_code(code).to_owned()
}

/// Whether the JSON object `o` holds element `name`: under `name` itself or, for a choice
/// element, under `name` and a type (`valueQuantity` for `value`).
pub fn has_member(o: &serde_json::Map<String, Value>, name: &str) -> bool {
    o.keys().any(|k| {
        k.strip_prefix(name).is_some_and(|after| {
            after.is_empty() || after.starts_with(|c: char| c.is_ascii_uppercase())
        })
    })
}

/// [`type_of_code`] without a copy.
fn type_name_of_code(code: &str) -> &str {
    match code.strip_prefix("System.") {
        Some("String") => "string",
        Some(other) => other,
        None => code,
    }
}

/// Whether `t` is `ty` with its first letter in lower case (`dateTime` for `DateTime`).
fn is_lower_first_of(t: &str, ty: &str) -> bool {
    let (mut a, mut b) = (t.chars(), ty.chars());
    match (a.next(), b.next()) {
        (Some(x), Some(y)) => y.to_lowercase().eq(std::iter::once(x)) && a.eq(b),
        (None, None) => true,
        _ => false,
    }
}

impl<'a, 'r> Cx<'a, 'r> {
    fn eval(
        &self,
        e: &Expr,
        focus: &[Node<'r>],
        it: Option<Iter<'_, 'r>>,
    ) -> Result<Vec<Node<'r>>, EvalError> {
        let d = self.depth.get() + 1;
        if d > 256 {
            return Err(EvalError::TooDeep);
        }
        self.depth.set(d);
        let r = self.eval_inner(e, focus, it);
        self.depth.set(d - 1);
        r
    }

    fn eval_inner(
        &self,
        e: &Expr,
        focus: &[Node<'r>],
        it: Option<Iter<'_, 'r>>,
    ) -> Result<Vec<Node<'r>>, EvalError> {
        Ok(match e {
            Expr::Empty => vec![],
            Expr::Bool(b) => boolean(*b),
            Expr::Str(s) => vec![Node::system(Value::String(s.clone()))],
            Expr::Num(n) => vec![Node::system(
                serde_json::from_str::<Value>(n).unwrap_or(Value::Null),
            )],
            Expr::DateTime(d) => vec![Node {
                value: Cow::Owned(Value::String(d.trim_start_matches('T').to_owned())),
                ty: NodeType::Named(if d.starts_with('T') {
                    "time".into()
                } else if d.contains('T') {
                    "dateTime".into()
                } else {
                    "date".into()
                }),
            }],
            Expr::This => match it {
                Some(i) => vec![i.this.clone()],
                None => focus.to_vec(),
            },
            Expr::Index => match it {
                Some(i) => vec![Node::system(Value::from(i.index))],
                None => vec![],
            },
            Expr::Total => vec![],
            Expr::Env(name) => match name.as_str() {
                "resource" | "context" | "rootResource" => vec![self.root.clone()],
                "ucum" => vec![Node::system(Value::from("http://unitsofmeasure.org"))],
                "sct" => vec![Node::system(Value::from("http://snomed.info/sct"))],
                "loinc" => vec![Node::system(Value::from("http://loinc.org"))],
                other => return Err(EvalError::UnknownVariable(other.to_owned())),
            },
            Expr::Ident(name) => {
                let base = match it {
                    Some(i) => std::slice::from_ref(i.this),
                    None => focus,
                };
                if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                    let typed: Vec<Node<'r>> = base
                        .iter()
                        .filter(|n| self.is_type(n, name))
                        .cloned()
                        .collect();
                    if !typed.is_empty() || self.st.get(name).is_some() {
                        return Ok(typed);
                    }
                }
                self.members(base, name)
            }
            Expr::Member(inner, name) => {
                let c = self.eval(inner, focus, it)?;
                self.members(&c, name)
            }
            Expr::Indexer(inner, index) => {
                let c = self.eval(inner, focus, it)?;
                let i = self.eval(index, focus, it)?;
                match i.as_slice() {
                    [] => vec![],
                    [n] => match n.value.as_u64() {
                        Some(k) => c.into_iter().nth(k as usize).into_iter().collect(),
                        None => return Err(EvalError::Type("an index must be an integer".into())),
                    },
                    _ => return Err(EvalError::NotSingleton("an index", i.len())),
                }
            }
            Expr::Neg(inner) => {
                let c = self.eval(inner, focus, it)?;
                match c.as_slice() {
                    [] => vec![],
                    [n] => match n.value.as_f64() {
                        Some(x) => vec![Node::system(number(-x))],
                        None => return Err(EvalError::Type("only numbers can be negated".into())),
                    },
                    _ => return Err(EvalError::NotSingleton("unary minus", c.len())),
                }
            }
            Expr::TypeTest { is, expr, ty } => {
                let c = self.eval(expr, focus, it)?;
                if *is {
                    match c.as_slice() {
                        [] => vec![],
                        [n] => boolean(self.is_type(n, ty)),
                        _ => return Err(EvalError::NotSingleton("'is'", c.len())),
                    }
                } else {
                    c.into_iter().filter(|n| self.is_type(n, ty)).collect()
                }
            }
            Expr::Func {
                focus: f,
                name,
                args,
            } => {
                let input = match f {
                    Some(inner) => self.eval(inner, focus, it)?,
                    None => match it {
                        Some(i) => vec![i.this.clone()],
                        None => focus.to_vec(),
                    },
                };
                self.call(name, input, args, focus, it)?
            }
            Expr::Bin(op, a, b) => self.binary(*op, a, b, focus, it)?,
        })
    }

    /// Whether `n` is of type `ty` (`Patient`, `FHIR.Quantity`, `System.String`).
    fn is_type(&self, n: &Node<'_>, ty: &str) -> bool {
        let ty = ty.strip_prefix("FHIR.").unwrap_or(ty);
        match &n.ty {
            NodeType::Named(t) => {
                self.st.derives(t, ty)
                    || self.st.derives(t, type_name_of_code(ty))
                    // A FHIR primitive named by its System type (`value.as(DateTime)`, as
                    // R4's composite components write it).
                    || (t.starts_with(char::is_lowercase) && is_lower_first_of(t, ty))
            }
            NodeType::Resolved(target) => target.as_deref().is_some_and(|t| self.st.derives(t, ty)),
            NodeType::Backbone { .. } => ty == "BackboneElement" || ty == "Element",
            NodeType::System => match ty {
                "System.String" | "String" | "string" => n.value.is_string(),
                "System.Boolean" | "Boolean" | "boolean" => n.value.is_boolean(),
                "System.Integer" | "Integer" | "integer" => n.value.is_i64() || n.value.is_u64(),
                "System.Decimal" | "Decimal" | "decimal" => n.value.is_number(),
                _ => false,
            },
        }
    }

    /// The children named `name` of every node, typed.
    fn members(&self, nodes: &[Node<'r>], name: &str) -> Vec<Node<'r>> {
        let mut out = Vec::new();
        for n in nodes {
            // Every member value below is under `name` or a choice's `nameType`: without
            // one there is nothing to type.
            let Some(o) = n.value.as_object() else {
                continue;
            };
            if !has_member(o, name) {
                continue;
            }
            match child(self.st, &n.ty, name) {
                Some(Child::Choice(types)) => {
                    for t in types {
                        let key = format!("{name}{}", upper_first(&t));
                        push_values(&mut out, n, &key, NodeType::Named(t));
                    }
                }
                Some(Child::Plain(ty)) => {
                    for v in member_values(n, name) {
                        // A contained or nested resource is typed by its own resourceType.
                        let ty = match (&ty, v.get("resourceType").and_then(Value::as_str)) {
                            (NodeType::Named(r), Some(rt)) if r == "Resource" => {
                                NodeType::Named(rt.to_owned())
                            }
                            _ => ty.clone(),
                        };
                        out.push(Node { value: v, ty });
                    }
                }
                None if matches!(n.ty, NodeType::System | NodeType::Resolved(_)) => {
                    push_values(&mut out, n, name, NodeType::System);
                }
                None => {}
            }
        }
        out
    }

    fn binary(
        &self,
        op: BinOp,
        a: &Expr,
        b: &Expr,
        focus: &[Node<'r>],
        it: Option<Iter<'_, 'r>>,
    ) -> Result<Vec<Node<'r>>, EvalError> {
        let l = self.eval(a, focus, it)?;
        // `and`/`or`/`implies` short-circuit where the left side decides.
        match op {
            BinOp::And if as_bool(&l)? == Some(false) => return Ok(boolean(false)),
            BinOp::Or if as_bool(&l)? == Some(true) => return Ok(boolean(true)),
            BinOp::Implies if as_bool(&l)? == Some(false) => return Ok(boolean(true)),
            _ => {}
        }
        let r = self.eval(b, focus, it)?;
        Ok(match op {
            BinOp::Union => {
                let mut out = l;
                for n in r {
                    if !out.iter().any(|x| x.value == n.value) {
                        out.push(n);
                    }
                }
                out
            }
            BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Implies => {
                let (x, y) = (as_bool(&l)?, as_bool(&r)?);
                let v = match op {
                    BinOp::And => match (x, y) {
                        (Some(true), Some(true)) => Some(true),
                        (_, Some(false)) | (Some(false), _) => Some(false),
                        _ => None,
                    },
                    BinOp::Or => match (x, y) {
                        (_, Some(true)) | (Some(true), _) => Some(true),
                        (Some(false), Some(false)) => Some(false),
                        _ => None,
                    },
                    BinOp::Xor => x.zip(y).map(|(x, y)| x != y),
                    _ => match (x, y) {
                        (Some(true), y) => y,
                        (None, Some(true)) => Some(true),
                        _ => None,
                    },
                };
                v.map(boolean).unwrap_or_default()
            }
            BinOp::Eq | BinOp::Ne | BinOp::Equiv | BinOp::NotEquiv => {
                let equiv = matches!(op, BinOp::Equiv | BinOp::NotEquiv);
                if l.is_empty() || r.is_empty() {
                    if equiv {
                        boolean((l.is_empty() && r.is_empty()) == (op == BinOp::Equiv))
                    } else {
                        vec![]
                    }
                } else {
                    let same = l.len() == r.len()
                        && l.iter().zip(&r).all(|(x, y)| {
                            if equiv {
                                equivalent(&x.value, &y.value)
                            } else {
                                equal(&x.value, &y.value)
                            }
                        });
                    boolean(same == matches!(op, BinOp::Eq | BinOp::Equiv))
                }
            }
            BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => match (l.as_slice(), r.as_slice()) {
                ([], _) | (_, []) => vec![],
                ([x], [y]) => match compare(&x.value, &y.value) {
                    Some(o) => boolean(match op {
                        BinOp::Lt => o.is_lt(),
                        BinOp::Gt => o.is_gt(),
                        BinOp::Le => o.is_le(),
                        _ => o.is_ge(),
                    }),
                    None => vec![],
                },
                _ => {
                    return Err(EvalError::NotSingleton(
                        "a comparison",
                        l.len().max(r.len()),
                    ));
                }
            },
            BinOp::In | BinOp::Contains => {
                let (item, coll) = if op == BinOp::In { (&l, &r) } else { (&r, &l) };
                match item.as_slice() {
                    [] => vec![],
                    [x] => boolean(coll.iter().any(|y| equal(&x.value, &y.value))),
                    _ => return Err(EvalError::NotSingleton("'in'/'contains'", item.len())),
                }
            }
            BinOp::Concat => {
                let s = |c: &[Node<'_>]| {
                    c.first()
                        .and_then(|n| n.value.as_str())
                        .unwrap_or("")
                        .to_owned()
                };
                vec![Node::system(Value::String(s(&l) + &s(&r)))]
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::IntDiv | BinOp::Mod => {
                match (l.as_slice(), r.as_slice()) {
                    ([], _) | (_, []) => vec![],
                    ([x], [y]) => {
                        if let (BinOp::Add, Some(a), Some(b)) =
                            (op, x.value.as_str(), y.value.as_str())
                        {
                            return Ok(vec![Node::system(Value::String(format!("{a}{b}")))]);
                        }
                        let (Some(a), Some(b)) = (x.value.as_f64(), y.value.as_f64()) else {
                            return Err(EvalError::Type("arithmetic needs numbers".into()));
                        };
                        let v = match op {
                            BinOp::Add => Some(a + b),
                            BinOp::Sub => Some(a - b),
                            BinOp::Mul => Some(a * b),
                            BinOp::Div => (b != 0.0).then(|| a / b),
                            BinOp::IntDiv => (b != 0.0).then(|| (a / b).trunc()),
                            _ => (b != 0.0).then(|| a % b),
                        };
                        v.map(|v| vec![Node::system(number(v))]).unwrap_or_default()
                    }
                    _ => return Err(EvalError::NotSingleton("arithmetic", l.len().max(r.len()))),
                }
            }
        })
    }

    fn call(
        &self,
        name: &str,
        input: Vec<Node<'r>>,
        args: &[Expr],
        focus: &[Node<'r>],
        it: Option<Iter<'_, 'r>>,
    ) -> Result<Vec<Node<'r>>, EvalError> {
        let arity = |n: usize, what: &'static str| {
            if args.len() == n {
                Ok(())
            } else {
                Err(EvalError::Arity(name.to_owned(), what))
            }
        };
        // An argument evaluated once against the outer focus (not per item).
        let arg_value = |i: usize| -> Result<Vec<Node<'r>>, EvalError> {
            match args.get(i) {
                Some(a) => self.eval(a, focus, it),
                None => Ok(vec![]),
            }
        };
        let type_arg = |i: usize| -> Result<String, EvalError> {
            match args.get(i) {
                Some(Expr::Ident(t)) => Ok(t.clone()),
                Some(Expr::Member(inner, t)) => match inner.as_ref() {
                    Expr::Ident(ns) => Ok(format!("{ns}.{t}")),
                    _ => Err(EvalError::Type(format!("{name}() takes a type name"))),
                },
                _ => Err(EvalError::Type(format!("{name}() takes a type name"))),
            }
        };
        Ok(match name {
            "where" | "select" | "all" | "exists" if !args.is_empty() => {
                arity(1, "one argument")?;
                let mut out = Vec::new();
                let mut all = true;
                for (index, n) in input.iter().enumerate() {
                    let r = self.eval(&args[0], focus, Some(Iter { this: n, index }))?;
                    match name {
                        "select" => out.extend(r),
                        _ => {
                            let keep = as_bool(&r)? == Some(true);
                            all &= keep;
                            if keep && name != "all" {
                                out.push(n.clone());
                            }
                        }
                    }
                }
                match name {
                    "all" => boolean(all),
                    "exists" => boolean(!out.is_empty()),
                    _ => out,
                }
            }
            "exists" => boolean(!input.is_empty()),
            "empty" => {
                arity(0, "no arguments")?;
                boolean(input.is_empty())
            }
            "count" => {
                arity(0, "no arguments")?;
                vec![Node::system(Value::from(input.len()))]
            }
            "first" => input.into_iter().take(1).collect(),
            "last" => input.into_iter().last().into_iter().collect(),
            "tail" => input.into_iter().skip(1).collect(),
            "single" => match input.len() {
                0 | 1 => input,
                n => return Err(EvalError::NotSingleton("single()", n)),
            },
            "distinct" => {
                let mut out: Vec<Node<'r>> = Vec::new();
                for n in input {
                    if !out.iter().any(|x| x.value == n.value) {
                        out.push(n);
                    }
                }
                out
            }
            "not" => match as_bool(&input)? {
                Some(b) => boolean(!b),
                None => vec![],
            },
            "hasValue" => boolean(
                input.len() == 1
                    && matches!(
                        *input[0].value,
                        Value::String(_) | Value::Bool(_) | Value::Number(_)
                    ),
            ),
            "ofType" | "as" => {
                arity(1, "a type name")?;
                let t = type_arg(0)?;
                input.into_iter().filter(|n| self.is_type(n, &t)).collect()
            }
            "is" => {
                arity(1, "a type name")?;
                let t = type_arg(0)?;
                match input.as_slice() {
                    [] => vec![],
                    [n] => boolean(self.is_type(n, &t)),
                    _ => return Err(EvalError::NotSingleton("is()", input.len())),
                }
            }
            "resolve" => input.into_iter().map(|n| resolved(&n)).collect(),
            "extension" => {
                arity(1, "the extension's url")?;
                let url = arg_value(0)?;
                let url = url
                    .first()
                    .and_then(|n| n.value.as_str())
                    .unwrap_or("")
                    .to_owned();
                let exts = self.members(&input, "extension");
                exts.into_iter()
                    .filter(|e| e.value.get("url").and_then(Value::as_str) == Some(url.as_str()))
                    .collect()
            }
            "children" => input
                .iter()
                .flat_map(|n| match n.value.as_ref() {
                    Value::Object(m) => m
                        .keys()
                        .filter(|k| !k.starts_with('_') && *k != "resourceType")
                        .cloned()
                        .collect::<Vec<_>>(),
                    _ => vec![],
                })
                .collect::<Vec<_>>()
                .into_iter()
                .fold(Vec::new(), |mut acc, k| {
                    acc.extend(self.members(&input, &k));
                    acc
                }),
            "iif" => {
                if args.len() < 2 || args.len() > 3 {
                    return Err(EvalError::Arity(name.to_owned(), "two or three arguments"));
                }
                let c = self.eval(&args[0], &input, it)?;
                if as_bool(&c)? == Some(true) {
                    self.eval(&args[1], &input, it)?
                } else if let Some(e) = args.get(2) {
                    self.eval(e, &input, it)?
                } else {
                    vec![]
                }
            }
            "startsWith" | "endsWith" | "contains" | "matches" => {
                arity(1, "one argument")?;
                let a = arg_value(0)?;
                let (Some(s), Some(p)) = (
                    input.first().and_then(|n| n.value.as_str()),
                    a.first().and_then(|n| n.value.as_str()),
                ) else {
                    return Ok(vec![]);
                };
                boolean(match name {
                    "startsWith" => s.starts_with(p),
                    "endsWith" => s.ends_with(p),
                    "contains" => s.contains(p),
                    // Regular expressions are not supported: a literal match only.
                    _ => s == p,
                })
            }
            "lower" | "upper" => input
                .into_iter()
                .filter_map(|n| n.value.as_str().map(str::to_owned))
                .map(|s| {
                    Node::system(Value::String(if name == "lower" {
                        s.to_lowercase()
                    } else {
                        s.to_uppercase()
                    }))
                })
                .collect(),
            "now" | "today" => {
                let now = chrono::Utc::now();
                vec![Node {
                    value: Cow::Owned(Value::String(if name == "now" {
                        now.to_rfc3339()
                    } else {
                        now.format("%Y-%m-%d").to_string()
                    })),
                    ty: NodeType::Named(if name == "now" { "dateTime" } else { "date" }.into()),
                }]
            }
            "toString" => input
                .into_iter()
                .map(|n| match n.value.into_owned() {
                    Value::String(s) => Node::system(Value::String(s)),
                    other => Node::system(Value::String(other.to_string())),
                })
                .collect(),
            other => return Err(EvalError::UnknownFunction(other.to_owned())),
        })
    }
}

/// The resource type a reference node names: `Patient/1`, `http://x/fhir/Patient/1`,
/// `Patient/1/_history/2`, or its `type`.
fn resolved<'r>(n: &Node<'r>) -> Node<'r> {
    let target = match n.value.as_ref() {
        Value::Object(m) => m
            .get("reference")
            .and_then(Value::as_str)
            .and_then(reference_type)
            .or_else(|| m.get("type").and_then(Value::as_str).map(str::to_owned)),
        Value::String(s) => reference_type(s),
        _ => None,
    };
    Node {
        value: n.value.clone(),
        ty: NodeType::Resolved(target),
    }
}

/// The resource type in a literal reference, if it has one.
pub fn reference_type(r: &str) -> Option<String> {
    let r = r.split('?').next().unwrap_or(r);
    let parts: Vec<&str> = r.split('/').collect();
    let parts = match parts.iter().position(|p| *p == "_history") {
        Some(i) => &parts[..i],
        None => &parts[..],
    };
    let n = parts.len();
    if n >= 2 && parts[n - 2].starts_with(|c: char| c.is_ascii_uppercase()) {
        Some(parts[n - 2].to_owned())
    } else {
        None
    }
}

fn values_of(v: Option<&Value>) -> Vec<&Value> {
    match v {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.iter().filter(|x| !x.is_null()).collect(),
        Some(x) => vec![x],
    }
}

/// The values of member `key` of `n`: borrowed from the resource when `n` is, copied only
/// out of a computed value.
fn member_values<'r>(n: &Node<'r>, key: &str) -> Vec<Cow<'r, Value>> {
    match &n.value {
        Cow::Borrowed(v) => values_of(v.get(key))
            .into_iter()
            .map(Cow::Borrowed)
            .collect(),
        Cow::Owned(v) => values_of(v.get(key))
            .into_iter()
            .map(|x| Cow::Owned(x.clone()))
            .collect(),
    }
}

fn push_values<'r>(out: &mut Vec<Node<'r>>, n: &Node<'r>, key: &str, ty: NodeType) {
    for value in member_values(n, key) {
        out.push(Node {
            value,
            ty: ty.clone(),
        });
    }
}

fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn equivalent(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => {
            let norm = |s: &str| {
                s.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase()
            };
            norm(x) == norm(y)
        }
        _ => equal(a, b),
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;
    use serde_json::json;

    fn eval(src: &str, r: &Value) -> Vec<Value> {
        evaluate(&parse(src).unwrap(), r)
            .unwrap()
            .into_iter()
            .map(|n| n.value.into_owned())
            .collect()
    }

    #[test]
    fn a_primitive_is_named_by_its_system_type() {
        assert!(is_lower_first_of("dateTime", "DateTime"));
        assert!(is_lower_first_of("string", "String"));
        assert!(!is_lower_first_of("date", "DateTime"));
        assert!(!is_lower_first_of("dateTime", "Date"));
        assert_eq!(type_name_of_code("System.String"), "string");
        assert_eq!(type_name_of_code("System.Integer"), "Integer");
        assert_eq!(type_name_of_code("Quantity"), "Quantity");
    }

    #[test]
    fn paths_choices_and_types() {
        let obs = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "valueQuantity": {"value": 72, "unit": "/min"},
            "subject": {"reference": "Patient/1"},
            "performer": [{"reference": "Practitioner/2"}, {"reference": "Patient/1"}]});
        assert_eq!(
            eval("Observation.code.coding.code", &obs),
            [json!("8867-4")]
        );
        assert_eq!(
            eval("Observation.value.as(Quantity).value", &obs),
            [json!(72)]
        );
        assert_eq!(
            eval("(Observation.value as Quantity).unit", &obs),
            [json!("/min")]
        );
        assert!(eval("Observation.value as CodeableConcept", &obs).is_empty());
        assert_eq!(
            eval("Observation.performer.where(resolve() is Patient)", &obs),
            [json!({"reference": "Patient/1"})]
        );
        assert!(
            eval("Patient.name", &obs).is_empty(),
            "a type filter at the root"
        );
        assert_eq!(
            eval("Observation.performer[1].reference", &obs),
            [json!("Patient/1")]
        );
        assert_eq!(
            eval("Observation.subject | Observation.performer", &obs).len(),
            2
        );
    }

    #[test]
    fn booleans_extensions_and_backbones() {
        let p = json!({"resourceType": "Patient", "deceasedBoolean": false,
            "extension": [{"url": "http://x/a", "valueString": "A"}],
            "contact": [{"name": {"family": "Kin"}, "telecom": [{"system": "phone", "value": "1"}]}]});
        assert_eq!(
            eval(
                "Patient.deceased.exists() and Patient.deceased != false",
                &p
            ),
            [json!(false)]
        );
        let p2 = json!({"resourceType": "Patient", "deceasedDateTime": "2020-01-01"});
        assert_eq!(
            eval(
                "Patient.deceased.exists() and Patient.deceased != false",
                &p2
            ),
            [json!(true)]
        );
        assert_eq!(
            eval("Patient.extension('http://x/a').value", &p),
            [json!("A")]
        );
        assert_eq!(eval("Patient.contact.name.family", &p), [json!("Kin")]);
        assert_eq!(
            eval("Patient.contact.telecom.where(system = 'phone').value", &p),
            [json!("1")]
        );
        assert_eq!(
            eval("Patient.contact.name.family.first().exists()", &p),
            [json!(true)]
        );
    }

    #[test]
    fn reference_types_are_read_from_literal_references() {
        assert_eq!(reference_type("Patient/1").as_deref(), Some("Patient"));
        assert_eq!(
            reference_type("http://h/fhir/Patient/1/_history/2").as_deref(),
            Some("Patient")
        );
        assert_eq!(reference_type("urn:uuid:1"), None);
    }
}

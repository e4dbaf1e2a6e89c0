//! A FHIRPath subset: enough for every expression of the R4 search parameters (paths, `|`,
//! `where`, `ofType`/`as`/`is`, `resolve()`, `exists()`, `first()`, indexers,
//! `extension(url)`, boolean logic, comparisons) and the common functions around them.
//! [`parse`] gives an [`Expr`] whose `Display` parses back to the same tree; [`evaluate`]
//! runs it over a resource held as JSON, typed by the bundled structure definitions.

mod eval;
mod parse;

pub use eval::{
    Child, EvalError, Node, NodeType, child, evaluate, evaluate_at, has_member, reference_type,
};
pub use parse::{BinOp, Expr, ParseError, parse};

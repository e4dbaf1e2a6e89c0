//! The FHIRPath grammar (N1, normative parts used by search parameters): lexer, a
//! precedence-climbing parser, and a printer whose output parses back to the same tree.

use std::fmt;

/// A parsed FHIRPath expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `{}`
    Empty,
    Bool(bool),
    Str(String),
    /// A number literal, as written (`1`, `0.5`).
    Num(String),
    /// A date, date-time or time literal, without the `@`.
    DateTime(String),
    This,
    Index,
    Total,
    /// `%name`
    Env(String),
    /// An identifier at the start of a path: a member of the focus, or a type name.
    Ident(String),
    /// `focus.name`
    Member(Box<Expr>, String),
    /// `focus.name(args)` or `name(args)` (focus `None`).
    Func {
        focus: Option<Box<Expr>>,
        name: String,
        args: Vec<Expr>,
    },
    /// `focus[index]`
    Indexer(Box<Expr>, Box<Expr>),
    /// Unary minus.
    Neg(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// `expr is Type` (`true`) or `expr as Type` (`false`).
    TypeTest {
        is: bool,
        expr: Box<Expr>,
        ty: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Mul,
    Div,
    IntDiv,
    Mod,
    Add,
    Sub,
    Concat,
    Union,
    Lt,
    Gt,
    Le,
    Ge,
    Eq,
    Equiv,
    Ne,
    NotEquiv,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::IntDiv => "div",
            BinOp::Mod => "mod",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Concat => "&",
            BinOp::Union => "|",
            BinOp::Lt => "<",
            BinOp::Gt => ">",
            BinOp::Le => "<=",
            BinOp::Ge => ">=",
            BinOp::Eq => "=",
            BinOp::Equiv => "~",
            BinOp::Ne => "!=",
            BinOp::NotEquiv => "!~",
            BinOp::In => "in",
            BinOp::Contains => "contains",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Xor => "xor",
            BinOp::Implies => "implies",
        }
    }

    /// Binding strength, higher binds tighter (FHIRPath §"Operator precedence").
    fn precedence(self) -> u8 {
        match self {
            BinOp::Mul | BinOp::Div | BinOp::IntDiv | BinOp::Mod => 9,
            BinOp::Add | BinOp::Sub | BinOp::Concat => 8,
            // 7: is / as
            BinOp::Union => 6,
            BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => 5,
            BinOp::Eq | BinOp::Equiv | BinOp::Ne | BinOp::NotEquiv => 4,
            BinOp::In | BinOp::Contains => 3,
            BinOp::And => 2,
            BinOp::Or | BinOp::Xor => 1,
            BinOp::Implies => 0,
        }
    }
}

const TYPE_PRECEDENCE: u8 = 7;

/// Why an expression does not parse, with the byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FHIRPath syntax error at {at}: {message}")]
pub struct ParseError {
    pub at: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// A back-quoted identifier (never a keyword).
    Quoted(String),
    Str(String),
    Num(String),
    DateTime(String),
    Env(String),
    Special(&'static str),
    Sym(&'static str),
}

const KEYWORDS: &[&str] = &[
    "and", "or", "xor", "implies", "is", "as", "in", "contains", "div", "mod", "true", "false",
];

const SYMS: &[&str] = &[
    "<=", ">=", "!=", "!~", ".", "(", ")", "[", "]", "{", "}", ",", "|", "=", "~", "<", ">", "+",
    "-", "*", "/", "&",
];

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let err = |at: usize, m: &str| ParseError {
        at,
        message: m.to_owned(),
    };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if src[i..].starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if src[i..].starts_with("/*") {
            let end = src[i + 2..]
                .find("*/")
                .ok_or_else(|| err(i, "unterminated comment"))?;
            i += end + 4;
            continue;
        }
        let start = i;
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((start, Tok::Ident(src[start..i].to_owned())));
        } else if c.is_ascii_digit() {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            out.push((start, Tok::Num(src[start..i].to_owned())));
        } else if c == b'\'' || c == b'`' {
            let (text, next) = quoted(src, i, c as char)?;
            i = next;
            out.push((
                start,
                if c == b'\'' {
                    Tok::Str(text)
                } else {
                    Tok::Quoted(text)
                },
            ));
        } else if c == b'@' {
            i += 1;
            while i < b.len()
                && (b[i].is_ascii_digit() || matches!(b[i], b'-' | b':' | b'T' | b'Z' | b'+'))
                || (i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit())
            {
                i += 1;
            }
            if i == start + 1 {
                return Err(err(start, "'@' must start a date or time"));
            }
            out.push((start, Tok::DateTime(src[start + 1..i].to_owned())));
        } else if c == b'%' {
            i += 1;
            if i < b.len() && (b[i] == b'\'' || b[i] == b'`') {
                let (text, next) = quoted(src, i, b[i] as char)?;
                i = next;
                out.push((start, Tok::Env(text)));
            } else {
                let s = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'-')
                {
                    i += 1;
                }
                if s == i {
                    return Err(err(start, "'%' must name an environment variable"));
                }
                out.push((start, Tok::Env(src[s..i].to_owned())));
            }
        } else if c == b'$' {
            let rest = &src[i..];
            let special = ["$this", "$index", "$total"]
                .into_iter()
                .find(|s| rest.starts_with(s))
                .ok_or_else(|| err(i, "unknown $ variable"))?;
            i += special.len();
            out.push((start, Tok::Special(special)));
        } else if let Some(sym) = SYMS.iter().find(|s| src[i..].starts_with(**s)) {
            i += sym.len();
            out.push((start, Tok::Sym(sym)));
        } else {
            let ch = src[i..].chars().next().unwrap_or('?');
            return Err(err(i, &format!("unexpected character '{ch}'")));
        }
    }
    Ok(out)
}

/// A quoted string or identifier starting at `i` (the quote), unescaped; and the offset after it.
fn quoted(src: &str, i: usize, q: char) -> Result<(String, usize), ParseError> {
    let mut out = String::new();
    let mut chars = src[i + 1..].char_indices();
    while let Some((k, c)) = chars.next() {
        if c == q {
            return Ok((out, i + 1 + k + 1));
        }
        if c == '\\' {
            let Some((_, e)) = chars.next() else { break };
            match e {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'f' => out.push('\u{c}'),
                'u' => {
                    let hex: String = (0..4).filter_map(|_| chars.next().map(|x| x.1)).collect();
                    let ch = u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or(ParseError {
                            at: i + 1 + k,
                            message: "bad \\u escape".into(),
                        })?;
                    out.push(ch);
                }
                other => out.push(other),
            }
        } else {
            out.push(c);
        }
    }
    Err(ParseError {
        at: i,
        message: "unterminated quoted text".into(),
    })
}

/// The deepest nesting accepted (keeps the recursive parser and evaluator off the stack's end).
const MAX_DEPTH: usize = 128;

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
    depth: usize,
}

/// Parse a FHIRPath expression.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        end: src.len(),
        depth: 0,
    };
    let e = p.expr(0)?;
    if p.pos < p.toks.len() {
        return Err(p.error("unexpected text after the expression"));
    }
    Ok(e)
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.1)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.pos + k).map(|t| &t.1)
    }

    fn error(&self, m: &str) -> ParseError {
        ParseError {
            at: self.toks.get(self.pos).map(|t| t.0).unwrap_or(self.end),
            message: m.to_owned(),
        }
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(x)) if *x == s) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), ParseError> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(self.error(&format!("expected '{s}'")))
        }
    }

    /// The binary operator at the cursor, if any.
    fn binop(&self) -> Option<BinOp> {
        Some(match self.peek()? {
            Tok::Sym(s) => match *s {
                "*" => BinOp::Mul,
                "/" => BinOp::Div,
                "+" => BinOp::Add,
                "-" => BinOp::Sub,
                "&" => BinOp::Concat,
                "|" => BinOp::Union,
                "<" => BinOp::Lt,
                ">" => BinOp::Gt,
                "<=" => BinOp::Le,
                ">=" => BinOp::Ge,
                "=" => BinOp::Eq,
                "~" => BinOp::Equiv,
                "!=" => BinOp::Ne,
                "!~" => BinOp::NotEquiv,
                _ => return None,
            },
            Tok::Ident(s) => match s.as_str() {
                "div" => BinOp::IntDiv,
                "mod" => BinOp::Mod,
                "in" => BinOp::In,
                "contains" => BinOp::Contains,
                "and" => BinOp::And,
                "or" => BinOp::Or,
                "xor" => BinOp::Xor,
                "implies" => BinOp::Implies,
                _ => return None,
            },
            _ => return None,
        })
    }

    fn expr(&mut self, min: u8) -> Result<Expr, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("the expression nests too deeply"));
        }
        let mut lhs = self.unary()?;
        loop {
            if let Some(Tok::Ident(k)) = self.peek()
                && (k == "is" || k == "as")
                && TYPE_PRECEDENCE >= min
            {
                let is = k == "is";
                self.pos += 1;
                let ty = self.type_name()?;
                lhs = Expr::TypeTest {
                    is,
                    expr: Box::new(lhs),
                    ty,
                };
                continue;
            }
            let Some(op) = self.binop() else { break };
            let prec = op.precedence();
            if prec < min {
                break;
            }
            self.pos += 1;
            let rhs = self.expr(prec + 1)?;
            lhs = Expr::Bin(op, Box::new(lhs), Box::new(rhs));
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn type_name(&mut self) -> Result<String, ParseError> {
        let mut name = self.identifier()?;
        while matches!(self.peek(), Some(Tok::Sym(".")))
            && matches!(self.peek_at(1), Some(Tok::Ident(_) | Tok::Quoted(_)))
        {
            self.pos += 1;
            name.push('.');
            name.push_str(&self.identifier()?);
        }
        Ok(name)
    }

    /// An identifier: plain (not a keyword) or back-quoted.
    fn identifier(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Some(Tok::Ident(s)) if !KEYWORDS.contains(&s.as_str()) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            Some(Tok::Quoted(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.error("expected an identifier")),
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat_sym("-") {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(self.error("the expression nests too deeply"));
            }
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Neg(Box::new(e)));
        }
        if self.eat_sym("+") {
            return self.unary();
        }
        let mut e = self.term()?;
        let outer = self.depth;
        loop {
            // Each step nests the tree one deeper (printing and dropping it recurse).
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(self.error("the expression nests too deeply"));
            }
            if self.eat_sym(".") {
                let name = match self.peek() {
                    Some(Tok::Ident(s)) => s.clone(),
                    Some(Tok::Quoted(s)) => s.clone(),
                    _ => return Err(self.error("expected a name after '.'")),
                };
                self.pos += 1;
                if self.eat_sym("(") {
                    let args = self.args()?;
                    e = Expr::Func {
                        focus: Some(Box::new(e)),
                        name,
                        args,
                    };
                } else {
                    e = Expr::Member(Box::new(e), name);
                }
            } else if self.eat_sym("[") {
                let index = self.expr(0)?;
                self.expect_sym("]")?;
                e = Expr::Indexer(Box::new(e), Box::new(index));
            } else {
                break;
            }
        }
        self.depth = outer;
        Ok(e)
    }

    fn args(&mut self) -> Result<Vec<Expr>, ParseError> {
        let mut args = Vec::new();
        if self.eat_sym(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expr(0)?);
            if self.eat_sym(")") {
                return Ok(args);
            }
            self.expect_sym(",")?;
        }
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let Some(tok) = self.peek().cloned() else {
            return Err(self.error("expected an expression"));
        };
        self.pos += 1;
        Ok(match tok {
            Tok::Str(s) => Expr::Str(s),
            Tok::Num(n) => Expr::Num(n),
            Tok::DateTime(d) => Expr::DateTime(d),
            Tok::Env(v) => Expr::Env(v),
            Tok::Special("$this") => Expr::This,
            Tok::Special("$index") => Expr::Index,
            Tok::Special(_) => Expr::Total,
            Tok::Sym("(") => {
                let e = self.expr(0)?;
                self.expect_sym(")")?;
                e
            }
            Tok::Sym("{") => {
                self.expect_sym("}")?;
                Expr::Empty
            }
            Tok::Quoted(name) => self.call_or_ident(name)?,
            Tok::Ident(name) => {
                if matches!(self.peek(), Some(Tok::Sym("("))) {
                    self.call_or_ident(name)?
                } else if name == "true" || name == "false" {
                    Expr::Bool(name == "true")
                } else if KEYWORDS.contains(&name.as_str()) {
                    self.pos -= 1;
                    return Err(self.error(&format!("'{name}' is a keyword here")));
                } else {
                    Expr::Ident(name)
                }
            }
            Tok::Sym(s) => {
                self.pos -= 1;
                return Err(self.error(&format!("unexpected '{s}'")));
            }
        })
    }

    fn call_or_ident(&mut self, name: String) -> Result<Expr, ParseError> {
        if self.eat_sym("(") {
            let args = self.args()?;
            Ok(Expr::Func {
                focus: None,
                name,
                args,
            })
        } else {
            Ok(Expr::Ident(name))
        }
    }
}

fn is_plain(name: &str) -> bool {
    let mut cs = name.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn write_name(f: &mut fmt::Formatter<'_>, name: &str, keyword_ok: bool) -> fmt::Result {
    if is_plain(name) && (keyword_ok || !KEYWORDS.contains(&name)) {
        f.write_str(name)
    } else {
        f.write_str("`")?;
        write_escaped(f, name, '`')?;
        f.write_str("`")
    }
}

fn write_escaped(f: &mut fmt::Formatter<'_>, s: &str, q: char) -> fmt::Result {
    for c in s.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c == q => write!(f, "\\{c}")?,
            c if c.is_control() => write!(f, "\\u{:04x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    Ok(())
}

/// Whether `e` can stand before `.name` or `[i]` without parentheses.
fn is_postfix_safe(e: &Expr) -> bool {
    matches!(
        e,
        Expr::Ident(_)
            | Expr::Member(..)
            | Expr::Func { .. }
            | Expr::Indexer(..)
            | Expr::This
            | Expr::Index
            | Expr::Total
            | Expr::Env(_)
            | Expr::Str(_)
            | Expr::Empty
            | Expr::Bool(_)
    )
}

fn write_focus(f: &mut fmt::Formatter<'_>, e: &Expr) -> fmt::Result {
    if is_postfix_safe(e) {
        write!(f, "{e}")
    } else {
        write!(f, "({e})")
    }
}

impl fmt::Display for Expr {
    /// The canonical text: every operator parenthesised, so it parses back to this tree.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Empty => f.write_str("{}"),
            Expr::Bool(b) => write!(f, "{b}"),
            Expr::Str(s) => {
                f.write_str("'")?;
                write_escaped(f, s, '\'')?;
                f.write_str("'")
            }
            Expr::Num(n) => f.write_str(n),
            Expr::DateTime(d) => write!(f, "@{d}"),
            Expr::This => f.write_str("$this"),
            Expr::Index => f.write_str("$index"),
            Expr::Total => f.write_str("$total"),
            Expr::Env(v) => {
                if is_plain(v) {
                    write!(f, "%{v}")
                } else {
                    f.write_str("%`")?;
                    write_escaped(f, v, '`')?;
                    f.write_str("`")
                }
            }
            Expr::Ident(n) => write_name(f, n, false),
            Expr::Member(e, n) => {
                write_focus(f, e)?;
                f.write_str(".")?;
                write_name(f, n, true)
            }
            Expr::Func { focus, name, args } => {
                if let Some(e) = focus {
                    write_focus(f, e)?;
                    f.write_str(".")?;
                }
                write_name(f, name, true)?;
                f.write_str("(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
            Expr::Indexer(e, i) => {
                write_focus(f, e)?;
                write!(f, "[{i}]")
            }
            Expr::Neg(e) => write!(f, "(-{e})"),
            Expr::Bin(op, a, b) => write!(f, "({a} {} {b})", op.symbol()),
            Expr::TypeTest { is, expr, ty } => {
                write!(f, "({expr} {} ", if *is { "is" } else { "as" })?;
                for (i, part) in ty.split('.').enumerate() {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    write_name(f, part, false)?;
                }
                f.write_str(")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_follows_the_specification() {
        let e = parse("Observation.value as Quantity | Observation.value as SampledData").unwrap();
        assert_eq!(
            e.to_string(),
            "((Observation.value as Quantity) | (Observation.value as SampledData))"
        );
        let e = parse("Patient.deceased.exists() and Patient.deceased != false").unwrap();
        assert_eq!(
            e.to_string(),
            "(Patient.deceased.exists() and (Patient.deceased != false))"
        );
        let e = parse("a | b = c").unwrap();
        assert_eq!(e.to_string(), "((a | b) = c)");
        let e = parse("1 + 2 * 3 - -4").unwrap();
        assert_eq!(e.to_string(), "((1 + (2 * 3)) - (-4))");
    }

    #[test]
    fn search_parameter_shapes_parse() {
        for src in [
            "Account.subject.where(resolve() is Patient)",
            "Bundle.entry[0].resource",
            "(ConceptMap.source as uri)",
            "Observation.value.as(Quantity)",
            "Patient.extension('http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName')",
            "QuestionnaireResponse.item.where(linkId = 'x').answer.value.ofType(string).first()",
            "%resource.`name`",
            "@2020-01-01T10:00:00.5+01:00 < now()",
        ] {
            let e = parse(src).unwrap_or_else(|err| panic!("{src}: {err}"));
            assert_eq!(parse(&e.to_string()).unwrap(), e, "{src}");
        }
    }

    #[test]
    fn errors_name_the_offset() {
        let err = parse("Patient.name.where(").unwrap_err();
        assert!(err.at > 0, "{err}");
        assert!(parse("Patient..name").is_err());
        assert!(parse("a and").is_err());
        assert!(parse("'open").is_err());
        assert!(parse(&"(".repeat(10_000)).is_err());
        assert!(parse(&format!("a{}", ".b".repeat(10_000))).is_err());
        assert!(parse(&"-".repeat(10_000)).is_err());
        assert!(parse(&format!("a{}", "[0]".repeat(10_000))).is_err());
    }
}

//! quiver's expression language: the transformations of native on-demand feature views,
//! declared in YAML and evaluated in Rust (no Python), the same code in serving and in
//! historical retrieval.
//!
//! ```text
//! expr    := or
//! or      := and ("or" and)*
//! and     := not ("and" not)*
//! not     := "not" not | cmp
//! cmp     := concat (("==" | "!=" | "<" | "<=" | ">" | ">=") concat)?    (no chaining)
//! concat  := add ("||" add)*
//! add     := mul (("+" | "-") mul)*
//! mul     := unary (("*" | "/") unary)*
//! unary   := "-" unary | primary
//! primary := number | 'string' | true | false | null | "(" expr ")"
//!          | name | view.feature | cast(expr, Type) | coalesce(expr, ...) | concat(expr, ...)
//! ```
//!
//! References: a bare `name` is a request field; `view.feature` is a feature of a source view.
//! A name that is not a plain identifier is written in double quotes (`"my-view".conv_rate`).
//! Keywords (`and`, `or`, `not`, `true`, `false`, `null`) are case-insensitive.
//!
//! Types are Feast's: Int32, Int64, Float32, Float64, Bool, String (other types cannot be
//! referenced). Integer literals are Int64, decimal ones Float64, `'text'` String (`''` inside
//! is a quote). Arithmetic promotes: Int32 with Int32 stays Int32, any other mix of integers is
//! Int64, Float32 with Float32 stays Float32, any other mix with a float is Float64; `/` is true
//! division (integers divide as Float64). Comparisons take two numbers (compared exactly as
//! Int64 when both are integers, else as Float64), two strings (byte order), or two bools.
//!
//! Semantics (the same everywhere, which is what lets serving and history agree):
//! - null in, null out, as in SQL: any operator, `||`, `concat` and `cast` of a null is null;
//!   `and`/`or` follow SQL's three-valued logic (`false and null` is false, `true or null` is
//!   true); `coalesce` returns its first non-null argument.
//! - integer overflow (`+ - *`, unary `-`) is null, not a wrapped number; a cast to an integer
//!   type that is out of range, NaN or infinite is null; a float cast to an integer truncates
//!   toward zero.
//! - division by zero (integer or float, including `0.0 / 0.0`) is null. Float arithmetic is
//!   otherwise IEEE (a float overflow gives an infinity).
//! - `cast(x, String)` prints integers in decimal, floats as Python's `repr` does (`1.0`,
//!   `0.1`, `1e-05`; `nan`, `inf`), bools as `true`/`false`; `cast('x', Int64)` of text that
//!   is not a number is null; `cast(s, Bool)` accepts `true`/`false` in any case.
//! - a stored value whose type is not its column's declared type is read as null.
//!
//! Limits: an expression is at most [`MAX_LEN`] bytes and nests at most [`MAX_DEPTH`] levels, so
//! parsing is linear in its length and evaluation recurses at most that deep; evaluation is
//! linear in rows × expression size. Errors carry the 1-based character column they are at.

use std::borrow::Cow;
use std::fmt;

use crate::{Value, ValueType};

/// The longest expression accepted, in bytes.
pub const MAX_LEN: usize = 8 * 1024;
/// The deepest nesting accepted (parentheses, operators, function calls).
pub const MAX_DEPTH: usize = 64;

/// A problem in an expression, at a 1-based character column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ExprError {
    pub column: usize,
    pub message: String,
}

fn err<T>(column: usize, message: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError {
        column,
        message: message.into(),
    })
}

/// A column an expression reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ref {
    /// A field of the request (a request source's field).
    Request(String),
    /// A feature of a source view: `view.feature`.
    Feature { view: String, feature: String },
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Request(name) => f.write_str(name),
            Ref::Feature { view, feature } => write!(f, "{view}.{feature}"),
        }
    }
}

// ---- lexer ---------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    Float(f64),
    Str(String),
    /// A name; `quoted` names are never keywords.
    Name {
        text: String,
        quoted: bool,
    },
    LParen,
    RParen,
    Comma,
    Dot,
    Plus,
    Minus,
    Star,
    Slash,
    Concat,
    Cmp(CmpOp),
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Int(i) => format!("number {i}"),
            Tok::Float(x) => format!("number {x}"),
            Tok::Str(_) => "a string".to_owned(),
            Tok::Name { text, .. } => format!("{text:?}"),
            Tok::LParen => "'('".to_owned(),
            Tok::RParen => "')'".to_owned(),
            Tok::Comma => "','".to_owned(),
            Tok::Dot => "'.'".to_owned(),
            Tok::Plus => "'+'".to_owned(),
            Tok::Minus => "'-'".to_owned(),
            Tok::Star => "'*'".to_owned(),
            Tok::Slash => "'/'".to_owned(),
            Tok::Concat => "'||'".to_owned(),
            Tok::Cmp(op) => format!("'{}'", op.symbol()),
            Tok::End => "the end of the expression".to_owned(),
        }
    }

    fn keyword(&self) -> Option<&'static str> {
        let Tok::Name {
            text,
            quoted: false,
        } = self
        else {
            return None;
        };
        ["and", "or", "not", "null", "true", "false"]
            .into_iter()
            .find(|k| text.eq_ignore_ascii_case(k))
    }
}

/// Tokens with their 1-based character columns.
fn lex(text: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two = chars.get(i + 1).copied();
        let (tok, len) = match (c, two) {
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            (',', _) => (Tok::Comma, 1),
            ('+', _) => (Tok::Plus, 1),
            ('-', _) => (Tok::Minus, 1),
            ('*', _) => (Tok::Star, 1),
            ('/', _) => (Tok::Slash, 1),
            ('|', Some('|')) => (Tok::Concat, 2),
            ('=', Some('=')) => (Tok::Cmp(CmpOp::Eq), 2),
            ('!', Some('=')) => (Tok::Cmp(CmpOp::Ne), 2),
            ('<', Some('=')) => (Tok::Cmp(CmpOp::Le), 2),
            ('>', Some('=')) => (Tok::Cmp(CmpOp::Ge), 2),
            ('<', _) => (Tok::Cmp(CmpOp::Lt), 1),
            ('>', _) => (Tok::Cmp(CmpOp::Gt), 1),
            ('=', _) => return err(col, "'=' is not an operator: compare with '=='"),
            ('.', Some(d)) if d.is_ascii_digit() => number(&chars, i)?,
            ('.', _) => (Tok::Dot, 1),
            (d, _) if d.is_ascii_digit() => number(&chars, i)?,
            ('\'', _) => quoted(&chars, i, '\'')?,
            ('"', _) => quoted(&chars, i, '"')?,
            (a, _) if a.is_alphabetic() || a == '_' => {
                let len = chars[i..]
                    .iter()
                    .take_while(|c| c.is_alphanumeric() || **c == '_')
                    .count();
                let text: String = chars[i..i + len].iter().collect();
                (
                    Tok::Name {
                        text,
                        quoted: false,
                    },
                    len,
                )
            }
            (other, _) => return err(col, format!("unexpected character {other:?}")),
        };
        out.push((tok, col));
        i += len;
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

fn number(chars: &[char], start: usize) -> Result<(Tok, usize), ExprError> {
    let mut i = start;
    let digits = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_ascii_digit() {
            *i += 1;
        }
    };
    digits(&mut i);
    let mut is_float = false;
    if i < chars.len() && chars[i] == '.' {
        is_float = true;
        i += 1;
        digits(&mut i);
    }
    if i < chars.len() && matches!(chars[i], 'e' | 'E') {
        let mut j = i + 1;
        if j < chars.len() && matches!(chars[j], '+' | '-') {
            j += 1;
        }
        if j < chars.len() && chars[j].is_ascii_digit() {
            is_float = true;
            i = j;
            digits(&mut i);
        }
    }
    if i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
        return err(i + 1, format!("unexpected {:?} after a number", chars[i]));
    }
    let text: String = chars[start..i].iter().collect();
    let tok = if is_float {
        match text.parse::<f64>() {
            Ok(x) => Tok::Float(x),
            Err(_) => return err(start + 1, format!("invalid number {text:?}")),
        }
    } else {
        match text.parse::<i64>() {
            Ok(n) => Tok::Int(n),
            Err(_) => {
                return err(
                    start + 1,
                    format!(
                        "integer {text} does not fit in Int64 (write it as a decimal for a Float64)"
                    ),
                );
            }
        }
    };
    Ok((tok, i - start))
}

/// A `'string'` or a `"quoted name"`; the quote doubled inside stands for itself.
fn quoted(chars: &[char], start: usize, q: char) -> Result<(Tok, usize), ExprError> {
    let mut text = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => {
                let what = if q == '\'' { "string" } else { "quoted name" };
                return err(start + 1, format!("unterminated {what}: close it with {q}"));
            }
            Some(&c) if c == q => {
                if chars.get(i + 1) == Some(&q) {
                    text.push(q);
                    i += 2;
                } else {
                    i += 1;
                    break;
                }
            }
            Some(&c) => {
                text.push(c);
                i += 1;
            }
        }
    }
    let tok = if q == '\'' {
        Tok::Str(text)
    } else {
        if text.is_empty() {
            return err(start + 1, "a quoted name must not be empty");
        }
        Tok::Name { text, quoted: true }
    };
    Ok((tok, i - start))
}

// ---- syntax tree ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => ord == Equal,
            CmpOp::Ne => ord != Equal,
            CmpOp::Lt => ord == Less,
            CmpOp::Le => ord != Greater,
            CmpOp::Gt => ord == Greater,
            CmpOp::Ge => ord != Less,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl ArithOp {
    fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum AstKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Ref(Ref),
    Neg(Box<Ast>),
    Not(Box<Ast>),
    Arith(ArithOp, Box<Ast>, Box<Ast>),
    Cmp(CmpOp, Box<Ast>, Box<Ast>),
    And(Box<Ast>, Box<Ast>),
    Or(Box<Ast>, Box<Ast>),
    Concat(Vec<Ast>),
    Coalesce(Vec<Ast>),
    Cast(Box<Ast>, Ty),
}

/// A parsed expression, not yet checked against any columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Ast {
    kind: AstKind,
    column: usize,
    height: usize,
}

impl Ast {
    /// Every column the expression reads, in order of first appearance.
    pub fn references(&self) -> Vec<&Ref> {
        let mut out = Vec::new();
        self.visit_refs(&mut out);
        out
    }

    fn visit_refs<'a>(&'a self, out: &mut Vec<&'a Ref>) {
        match &self.kind {
            AstKind::Ref(r) => {
                if !out.contains(&r) {
                    out.push(r);
                }
            }
            AstKind::Neg(a) | AstKind::Not(a) | AstKind::Cast(a, _) => a.visit_refs(out),
            AstKind::Arith(_, a, b)
            | AstKind::Cmp(_, a, b)
            | AstKind::And(a, b)
            | AstKind::Or(a, b) => {
                a.visit_refs(out);
                b.visit_refs(out);
            }
            AstKind::Concat(args) | AstKind::Coalesce(args) => {
                args.iter().for_each(|a| a.visit_refs(out))
            }
            AstKind::Null
            | AstKind::Bool(_)
            | AstKind::Int(_)
            | AstKind::Float(_)
            | AstKind::Str(_) => {}
        }
    }
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
}

fn node(kind: AstKind, column: usize, children: &[&Ast]) -> Result<Ast, ExprError> {
    let height = 1 + children.iter().map(|c| c.height).max().unwrap_or(0);
    if height > MAX_DEPTH {
        return err(
            column,
            format!("the expression nests deeper than {MAX_DEPTH} levels: split it"),
        );
    }
    Ok(Ast {
        kind,
        column,
        height,
    })
}

/// Parses an expression (see the module documentation for the grammar).
pub fn parse(text: &str) -> Result<Ast, ExprError> {
    if text.len() > MAX_LEN {
        return err(
            1,
            format!(
                "the expression is {} bytes long; at most {MAX_LEN} are accepted",
                text.len()
            ),
        );
    }
    let mut p = Parser {
        toks: lex(text)?,
        pos: 0,
        depth: 0,
    };
    if p.peek() == &Tok::End {
        return err(1, "the expression is empty");
    }
    let ast = p.expr()?;
    match p.peek() {
        Tok::End => Ok(ast),
        Tok::RParen => err(p.column(), "')' has no matching '('"),
        t => err(
            p.column(),
            format!(
                "expected an operator or the end of the expression, found {}",
                t.describe()
            ),
        ),
    }
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].0
    }

    fn column(&self) -> usize {
        self.toks[self.pos.min(self.toks.len() - 1)].1
    }

    fn bump(&mut self) -> (Tok, usize) {
        let t = self.toks[self.pos.min(self.toks.len() - 1)].clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn is_keyword(&self, k: &str) -> bool {
        self.peek().keyword() == Some(k)
    }

    /// Enters one level of recursion, refusing past the nesting limit.
    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(
                self.column(),
                format!("the expression nests deeper than {MAX_DEPTH} levels: split it"),
            );
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Ast, ExprError> {
        self.enter()?;
        let out = self.or();
        self.depth -= 1;
        out
    }

    fn or(&mut self) -> Result<Ast, ExprError> {
        let mut lhs = self.and()?;
        while self.is_keyword("or") {
            let (_, col) = self.bump();
            let rhs = self.and()?;
            lhs = node(
                AstKind::Or(Box::new(lhs.clone()), Box::new(rhs.clone())),
                col,
                &[&lhs, &rhs],
            )?;
        }
        Ok(lhs)
    }

    fn and(&mut self) -> Result<Ast, ExprError> {
        let mut lhs = self.not()?;
        while self.is_keyword("and") {
            let (_, col) = self.bump();
            let rhs = self.not()?;
            lhs = node(
                AstKind::And(Box::new(lhs.clone()), Box::new(rhs.clone())),
                col,
                &[&lhs, &rhs],
            )?;
        }
        Ok(lhs)
    }

    fn not(&mut self) -> Result<Ast, ExprError> {
        if self.is_keyword("not") {
            let (_, col) = self.bump();
            self.enter()?;
            let inner = self.not();
            self.depth -= 1;
            let inner = inner?;
            return node(AstKind::Not(Box::new(inner.clone())), col, &[&inner]);
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Ast, ExprError> {
        let lhs = self.concat()?;
        let Tok::Cmp(op) = *self.peek() else {
            return Ok(lhs);
        };
        let (_, col) = self.bump();
        let rhs = self.concat()?;
        if let Tok::Cmp(_) = self.peek() {
            return err(
                self.column(),
                "comparisons do not chain: write a < b and b < c",
            );
        }
        node(
            AstKind::Cmp(op, Box::new(lhs.clone()), Box::new(rhs.clone())),
            col,
            &[&lhs, &rhs],
        )
    }

    fn concat(&mut self) -> Result<Ast, ExprError> {
        let first = self.add()?;
        if self.peek() != &Tok::Concat {
            return Ok(first);
        }
        let col = self.column();
        let mut parts = vec![first];
        while self.peek() == &Tok::Concat {
            self.bump();
            parts.push(self.add()?);
        }
        let refs: Vec<&Ast> = parts.iter().collect();
        let kind_parts = parts.clone();
        node(AstKind::Concat(kind_parts), col, &refs)
    }

    fn add(&mut self) -> Result<Ast, ExprError> {
        let mut lhs = self.mul()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => ArithOp::Add,
                Tok::Minus => ArithOp::Sub,
                _ => return Ok(lhs),
            };
            let (_, col) = self.bump();
            let rhs = self.mul()?;
            lhs = node(
                AstKind::Arith(op, Box::new(lhs.clone()), Box::new(rhs.clone())),
                col,
                &[&lhs, &rhs],
            )?;
        }
    }

    fn mul(&mut self) -> Result<Ast, ExprError> {
        let mut lhs = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Star => ArithOp::Mul,
                Tok::Slash => ArithOp::Div,
                _ => return Ok(lhs),
            };
            let (_, col) = self.bump();
            let rhs = self.unary()?;
            lhs = node(
                AstKind::Arith(op, Box::new(lhs.clone()), Box::new(rhs.clone())),
                col,
                &[&lhs, &rhs],
            )?;
        }
    }

    fn unary(&mut self) -> Result<Ast, ExprError> {
        if self.peek() == &Tok::Minus {
            let (_, col) = self.bump();
            self.enter()?;
            let inner = self.unary();
            self.depth -= 1;
            let inner = inner?;
            return node(AstKind::Neg(Box::new(inner.clone())), col, &[&inner]);
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Ast, ExprError> {
        let (tok, col) = self.bump();
        let leaf = |kind| node(kind, col, &[]);
        if let Some(k) = tok.keyword() {
            return match k {
                "null" => leaf(AstKind::Null),
                "true" => leaf(AstKind::Bool(true)),
                "false" => leaf(AstKind::Bool(false)),
                _ => err(col, format!("expected a value, found the keyword {k:?}")),
            };
        }
        match tok {
            Tok::Int(i) => leaf(AstKind::Int(i)),
            Tok::Float(x) => leaf(AstKind::Float(x)),
            Tok::Str(s) => leaf(AstKind::Str(s)),
            Tok::LParen => {
                let inner = self.expr()?;
                if self.peek() != &Tok::RParen {
                    return err(
                        self.column(),
                        format!(
                            "expected ')' to close the '(' at column {col}, found {}",
                            self.peek().describe()
                        ),
                    );
                }
                self.bump();
                Ok(inner)
            }
            Tok::Name { text, quoted } => {
                if !quoted && self.peek() == &Tok::LParen {
                    return self.call(&text, col);
                }
                if self.peek() == &Tok::Dot {
                    self.bump();
                    let (next, fcol) = self.bump();
                    let Tok::Name { text: feature, .. } = next else {
                        return err(
                            fcol,
                            format!(
                                "expected a feature name after '{text}.', found {}",
                                next.describe()
                            ),
                        );
                    };
                    if self.peek() == &Tok::Dot {
                        return err(self.column(), "a reference is view.feature: one dot only");
                    }
                    return leaf(AstKind::Ref(Ref::Feature {
                        view: text,
                        feature,
                    }));
                }
                leaf(AstKind::Ref(Ref::Request(text)))
            }
            other => err(col, format!("expected a value, found {}", other.describe())),
        }
    }

    fn call(&mut self, name: &str, col: usize) -> Result<Ast, ExprError> {
        self.bump(); // (
        let func = name.to_ascii_lowercase();
        if !matches!(func.as_str(), "cast" | "coalesce" | "concat") {
            return err(
                col,
                format!("unknown function {name:?}: the functions are cast, coalesce and concat"),
            );
        }
        let mut args = Vec::new();
        let mut cast_to = None;
        if self.peek() != &Tok::RParen {
            loop {
                if func == "cast" && args.len() == 1 {
                    let (tok, tcol) = self.bump();
                    let Tok::Name { text, .. } = &tok else {
                        return err(
                            tcol,
                            format!("cast: expected a type name, found {}", tok.describe()),
                        );
                    };
                    match Ty::from_name(text) {
                        Some(t) => cast_to = Some(t),
                        None => {
                            return err(
                                tcol,
                                format!("cast: unknown type {text:?}: expected {}", Ty::NAMES),
                            );
                        }
                    }
                } else {
                    args.push(self.expr()?);
                }
                match self.peek() {
                    Tok::Comma => {
                        self.bump();
                    }
                    Tok::RParen => break,
                    t => {
                        return err(
                            self.column(),
                            format!("{func}: expected ',' or ')', found {}", t.describe()),
                        );
                    }
                }
            }
        }
        self.bump(); // )
        let refs: Vec<&Ast> = args.iter().collect();
        match func.as_str() {
            "cast" => match (args.len(), cast_to) {
                (1, Some(t)) => {
                    let inner = args[0].clone();
                    node(AstKind::Cast(Box::new(inner), t), col, &refs)
                }
                _ => err(col, "cast takes two arguments: cast(expression, Type)"),
            },
            "coalesce" if args.is_empty() => err(col, "coalesce takes at least one argument"),
            "coalesce" => node(AstKind::Coalesce(args.clone()), col, &refs),
            _ if args.is_empty() => err(col, "concat takes at least one argument"),
            _ => node(AstKind::Concat(args.clone()), col, &refs),
        }
    }
}

// ---- types ---------------------------------------------------------------------------------

/// The types an expression computes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    /// Only `null` (a literal null, or an operation on literal nulls).
    Null,
    Bool,
    Int32,
    Int64,
    Float32,
    Float64,
    String,
}

impl Ty {
    const NAMES: &'static str = "Int32, Int64, Float32, Float64, Bool or String";

    fn from_name(name: &str) -> Option<Ty> {
        Ty::from_value_type(ValueType::from_dtype_name(name)?)
    }

    fn from_value_type(t: ValueType) -> Option<Ty> {
        Some(match t {
            ValueType::Bool => Ty::Bool,
            ValueType::Int32 => Ty::Int32,
            ValueType::Int64 => Ty::Int64,
            ValueType::Float => Ty::Float32,
            ValueType::Double => Ty::Float64,
            ValueType::String => Ty::String,
            _ => return None,
        })
    }

    fn value_type(self) -> ValueType {
        match self {
            Ty::Null => ValueType::Null,
            Ty::Bool => ValueType::Bool,
            Ty::Int32 => ValueType::Int32,
            Ty::Int64 => ValueType::Int64,
            Ty::Float32 => ValueType::Float,
            Ty::Float64 => ValueType::Double,
            Ty::String => ValueType::String,
        }
    }

    fn is_numeric(self) -> bool {
        matches!(self, Ty::Int32 | Ty::Int64 | Ty::Float32 | Ty::Float64)
    }

    fn is_int(self) -> bool {
        matches!(self, Ty::Int32 | Ty::Int64)
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Null => f.write_str("null"),
            t => write!(f, "{}", t.value_type()),
        }
    }
}

/// The type two numbers compute in (see the module documentation).
fn promote(a: Ty, b: Ty) -> Ty {
    match (a, b) {
        (Ty::Null, t) | (t, Ty::Null) => t,
        (Ty::Int32, Ty::Int32) => Ty::Int32,
        (Ty::Float32, Ty::Float32) => Ty::Float32,
        (x, y) if x.is_int() && y.is_int() => Ty::Int64,
        _ => Ty::Float64,
    }
}

/// The common type of `coalesce`'s arguments: numbers promote, others must be equal.
fn unify(a: Ty, b: Ty) -> Option<Ty> {
    match (a, b) {
        (Ty::Null, t) | (t, Ty::Null) => Some(t),
        (x, y) if x == y => Some(x),
        (x, y) if x.is_numeric() && y.is_numeric() => Some(promote(x, y)),
        _ => None,
    }
}

/// Whether a value of type `from` may be stored in a column declared `to` without a cast.
fn widens(from: Ty, to: Ty) -> bool {
    from == to
        || from == Ty::Null
        || matches!(
            (from, to),
            (Ty::Int32, Ty::Int64) | (Ty::Float32, Ty::Float64)
        )
}

// ---- compiled form -------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Const(V<'static>),
    Col(usize),
    /// Negation computed in the given type.
    Neg(Ty, Box<Node>),
    /// Arithmetic computed in the given type.
    Arith(ArithOp, Ty, Box<Node>, Box<Node>),
    /// Comparison in the given class (Int64 for integers, Float64, String, Bool).
    Cmp(CmpOp, Ty, Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Concat(Vec<Node>),
    Coalesce(Ty, Vec<Node>),
    Cast(Ty, Box<Node>),
}

/// A checked expression, ready to evaluate: its columns resolved to input slots, its type
/// checked against the declared output type.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    node: Node,
    output: ValueType,
}

/// Maps a column reference to an input slot and its declared type, or says why it is wrong.
pub type Resolver<'a> = dyn FnMut(&Ref) -> Result<(usize, ValueType), String> + 'a;

/// Parses `text` and checks it: `resolve` maps each column reference to an input slot and its
/// declared type (or says why the reference is wrong); `output` is the declared type of the
/// result (a lossless widening, Int32 to Int64 or Float32 to Float64, is applied implicitly).
pub fn compile(
    text: &str,
    resolve: &mut Resolver<'_>,
    output: ValueType,
) -> Result<Expr, ExprError> {
    let ast = parse(text)?;
    Expr::check(&ast, resolve, output)
}

impl Expr {
    /// Checks a parsed expression (see [`compile`]).
    pub fn check(
        ast: &Ast,
        resolve: &mut Resolver<'_>,
        output: ValueType,
    ) -> Result<Expr, ExprError> {
        let Some(out_ty) = Ty::from_value_type(output) else {
            return err(
                1,
                format!(
                    "the declared type {output} cannot be computed by an expression: use {}",
                    Ty::NAMES
                ),
            );
        };
        let (node, ty) = typecheck(ast, resolve)?;
        let node = if widens(ty, out_ty) {
            if ty == out_ty || ty == Ty::Null {
                node
            } else {
                Node::Cast(out_ty, Box::new(node))
            }
        } else {
            return err(
                ast.column,
                format!(
                    "the expression is {ty} but the feature is declared {out_ty}: change the dtype or wrap it in cast(..., {out_ty})"
                ),
            );
        };
        Ok(Expr { node, output })
    }

    /// The declared type of the result.
    pub fn output_type(&self) -> ValueType {
        self.output
    }

    /// Evaluates one row; `input(slot)` is the row's value of that input.
    pub fn eval_row<'a>(&'a self, input: &dyn Fn(usize) -> &'a Value) -> Value {
        let out_ty = Ty::from_value_type(self.output).unwrap_or(Ty::Null);
        to_value(convert(eval(&self.node, input), out_ty))
    }

    /// Evaluates every row: `columns[slot][row]`. Columns shorter than `rows` read as null.
    pub fn eval(&self, columns: &[&[Value]], rows: usize) -> Vec<Value> {
        static NULL: Value = Value::Null;
        (0..rows)
            .map(|row| {
                self.eval_row(&|slot| columns.get(slot).and_then(|c| c.get(row)).unwrap_or(&NULL))
            })
            .collect()
    }
}

fn typecheck(ast: &Ast, resolve: &mut Resolver<'_>) -> Result<(Node, Ty), ExprError> {
    let col = ast.column;
    Ok(match &ast.kind {
        AstKind::Null => (Node::Const(V::Null), Ty::Null),
        AstKind::Bool(b) => (Node::Const(V::Bool(*b)), Ty::Bool),
        AstKind::Int(i) => (Node::Const(V::I64(*i)), Ty::Int64),
        AstKind::Float(x) => (Node::Const(V::F64(*x)), Ty::Float64),
        AstKind::Str(s) => (Node::Const(V::Str(Cow::Owned(s.clone()))), Ty::String),
        AstKind::Ref(r) => {
            let (slot, vt) = match resolve(r) {
                Ok(x) => x,
                Err(m) => return err(col, m),
            };
            let Some(ty) = Ty::from_value_type(vt) else {
                return err(
                    col,
                    format!("{r} is {vt}; expressions compute with {} only", Ty::NAMES),
                );
            };
            (Node::Col(slot), ty)
        }
        AstKind::Neg(a) => {
            let (n, t) = typecheck(a, resolve)?;
            if !(t.is_numeric() || t == Ty::Null) {
                return err(col, format!("unary '-' needs a number, not {t}"));
            }
            (Node::Neg(t, Box::new(n)), t)
        }
        AstKind::Not(a) => {
            let (n, t) = typecheck(a, resolve)?;
            if !matches!(t, Ty::Bool | Ty::Null) {
                return err(col, format!("not needs a Bool, not {t}"));
            }
            (Node::Not(Box::new(n)), Ty::Bool)
        }
        AstKind::Arith(op, a, b) => {
            let (na, ta) = typecheck(a, resolve)?;
            let (nb, tb) = typecheck(b, resolve)?;
            for (side, t) in [("left", ta), ("right", tb)] {
                if !(t.is_numeric() || t == Ty::Null) {
                    let hint = if *op == ArithOp::Add && t == Ty::String {
                        " (join strings with || or concat)"
                    } else {
                        ""
                    };
                    return err(
                        col,
                        format!(
                            "'{}' needs numbers, but its {side} side is {t}{hint}",
                            op.symbol()
                        ),
                    );
                }
            }
            let mut ty = promote(ta, tb);
            if *op == ArithOp::Div && ty.is_int() {
                ty = Ty::Float64;
            }
            (Node::Arith(*op, ty, Box::new(na), Box::new(nb)), ty)
        }
        AstKind::Cmp(op, a, b) => {
            let (na, ta) = typecheck(a, resolve)?;
            let (nb, tb) = typecheck(b, resolve)?;
            let class = match (ta, tb) {
                (Ty::Null, Ty::Null) => Ty::Null,
                (x, y)
                    if (x.is_numeric() || x == Ty::Null) && (y.is_numeric() || y == Ty::Null) =>
                {
                    if promote(x, y).is_int() {
                        Ty::Int64
                    } else {
                        Ty::Float64
                    }
                }
                (x, y) if unify(x, y).is_some() => unify(x, y).unwrap_or(Ty::Null),
                (x, y) => {
                    return err(
                        col,
                        format!(
                            "'{}' compares {x} with {y}: cast one side to the other's type",
                            op.symbol()
                        ),
                    );
                }
            };
            (Node::Cmp(*op, class, Box::new(na), Box::new(nb)), Ty::Bool)
        }
        AstKind::And(a, b) | AstKind::Or(a, b) => {
            let word = if matches!(ast.kind, AstKind::And(..)) {
                "and"
            } else {
                "or"
            };
            let (na, ta) = typecheck(a, resolve)?;
            let (nb, tb) = typecheck(b, resolve)?;
            for (side, t) in [("left", ta), ("right", tb)] {
                if !matches!(t, Ty::Bool | Ty::Null) {
                    return err(
                        col,
                        format!("{word} needs Bools, but its {side} side is {t}"),
                    );
                }
            }
            let n = if word == "and" {
                Node::And(Box::new(na), Box::new(nb))
            } else {
                Node::Or(Box::new(na), Box::new(nb))
            };
            (n, Ty::Bool)
        }
        AstKind::Concat(args) => {
            let mut nodes = Vec::with_capacity(args.len());
            for a in args {
                let (n, t) = typecheck(a, resolve)?;
                if !matches!(t, Ty::String | Ty::Null) {
                    return err(
                        a.column,
                        format!("concatenation needs strings, not {t}: use cast(..., String)"),
                    );
                }
                nodes.push(n);
            }
            (Node::Concat(nodes), Ty::String)
        }
        AstKind::Coalesce(args) => {
            let mut nodes = Vec::with_capacity(args.len());
            let mut ty = Ty::Null;
            for a in args {
                let (n, t) = typecheck(a, resolve)?;
                ty = match unify(ty, t) {
                    Some(u) => u,
                    None => {
                        return err(
                            a.column,
                            format!("coalesce: this argument is {t} but the ones before are {ty}"),
                        );
                    }
                };
                nodes.push(n);
            }
            (Node::Coalesce(ty, nodes), ty)
        }
        AstKind::Cast(a, to) => {
            let (n, _) = typecheck(a, resolve)?;
            (Node::Cast(*to, Box::new(n)), *to)
        }
    })
}

// ---- evaluation ----------------------------------------------------------------------------

/// A value during evaluation; strings borrow from the inputs where they can.
#[derive(Debug, Clone, PartialEq)]
enum V<'a> {
    Null,
    Bool(bool),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Str(Cow<'a, str>),
}

fn read(v: &Value) -> V<'_> {
    match v {
        Value::Bool(b) => V::Bool(*b),
        Value::Int32(i) => V::I32(*i),
        Value::Int64(i) => V::I64(*i),
        Value::Float(x) => V::F32(*x),
        Value::Double(x) => V::F64(*x),
        Value::String(s) => V::Str(Cow::Borrowed(s)),
        _ => V::Null,
    }
}

fn to_value(v: V<'_>) -> Value {
    match v {
        V::Null => Value::Null,
        V::Bool(b) => Value::Bool(b),
        V::I32(i) => Value::Int32(i),
        V::I64(i) => Value::Int64(i),
        V::F32(x) => Value::Float(x),
        V::F64(x) => Value::Double(x),
        V::Str(s) => Value::String(s.into_owned()),
    }
}

fn as_i64(v: &V) -> Option<i64> {
    match v {
        V::I32(i) => Some(i64::from(*i)),
        V::I64(i) => Some(*i),
        _ => None,
    }
}

fn as_f64(v: &V) -> Option<f64> {
    match v {
        V::I32(i) => Some(f64::from(*i)),
        V::I64(i) => Some(*i as f64),
        V::F32(x) => Some(f64::from(*x)),
        V::F64(x) => Some(*x),
        _ => None,
    }
}

/// A float truncated toward zero into an integer range; NaN, infinities and out-of-range
/// values are `None`.
fn float_to_int(x: f64, min: f64, max_exclusive: f64) -> Option<f64> {
    let t = x.trunc();
    (t.is_finite() && t >= min && t < max_exclusive).then_some(t)
}

/// Python's `str()` of a float.
fn float_text(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let mut out = String::new();
    crate::json::write_float(&mut out, x);
    out
}

/// Converts a value to a type, as `cast` does and as results are stored. The static types make
/// most of these identities; a stored value of another type than declared becomes null.
fn convert<'a>(v: V<'a>, to: Ty) -> V<'a> {
    if matches!(v, V::Null) {
        return V::Null;
    }
    match to {
        Ty::Null => V::Null,
        Ty::Int64 => match &v {
            V::I32(_) | V::I64(_) => as_i64(&v).map_or(V::Null, V::I64),
            V::F32(_) | V::F64(_) => as_f64(&v)
                .and_then(|x| {
                    float_to_int(x, -9_223_372_036_854_775_808.0, 9_223_372_036_854_775_808.0)
                })
                .map_or(V::Null, |t| V::I64(t as i64)),
            V::Bool(b) => V::I64(i64::from(*b)),
            V::Str(s) => s.trim().parse::<i64>().map_or(V::Null, V::I64),
            V::Null => V::Null,
        },
        Ty::Int32 => match convert(v, Ty::Int64) {
            V::I64(i) => i32::try_from(i).map_or(V::Null, V::I32),
            _ => V::Null,
        },
        Ty::Float64 => match &v {
            V::Bool(b) => V::F64(f64::from(u8::from(*b))),
            V::Str(s) => s.trim().parse::<f64>().map_or(V::Null, V::F64),
            _ => as_f64(&v).map_or(V::Null, V::F64),
        },
        Ty::Float32 => match &v {
            V::F32(x) => V::F32(*x),
            V::Str(s) => s.trim().parse::<f32>().map_or(V::Null, V::F32),
            _ => match convert(v, Ty::Float64) {
                V::F64(x) => V::F32(x as f32),
                _ => V::Null,
            },
        },
        Ty::Bool => match &v {
            V::Bool(b) => V::Bool(*b),
            V::Str(s) if s.trim().eq_ignore_ascii_case("true") => V::Bool(true),
            V::Str(s) if s.trim().eq_ignore_ascii_case("false") => V::Bool(false),
            V::Str(_) | V::Null => V::Null,
            _ => as_f64(&v).map_or(V::Null, |x| V::Bool(x != 0.0)),
        },
        Ty::String => match v {
            V::Str(s) => V::Str(s),
            V::Bool(b) => V::Str(Cow::Borrowed(if b { "true" } else { "false" })),
            V::I32(i) => V::Str(Cow::Owned(i.to_string())),
            V::I64(i) => V::Str(Cow::Owned(i.to_string())),
            // The shortest digits of the f32 itself, as numpy prints a float32.
            V::F32(x) => V::Str(Cow::Owned(float_text(
                x.to_string().parse::<f64>().unwrap_or(f64::from(x)),
            ))),
            V::F64(x) => V::Str(Cow::Owned(float_text(x))),
            V::Null => V::Null,
        },
    }
}

fn eval<'a>(node: &'a Node, input: &dyn Fn(usize) -> &'a Value) -> V<'a> {
    match node {
        Node::Const(v) => v.clone(),
        Node::Col(slot) => read(input(*slot)),
        Node::Neg(ty, a) => {
            let v = convert(eval(a, input), *ty);
            match v {
                V::I32(i) => i.checked_neg().map_or(V::Null, V::I32),
                V::I64(i) => i.checked_neg().map_or(V::Null, V::I64),
                V::F32(x) => V::F32(-x),
                V::F64(x) => V::F64(-x),
                _ => V::Null,
            }
        }
        Node::Arith(op, ty, a, b) => {
            let x = convert(eval(a, input), *ty);
            if matches!(x, V::Null) {
                return V::Null;
            }
            let y = convert(eval(b, input), *ty);
            arith(*op, x, y)
        }
        Node::Cmp(op, class, a, b) => {
            let x = convert(eval(a, input), *class);
            let y = convert(eval(b, input), *class);
            let ord = match (&x, &y) {
                (V::I64(p), V::I64(q)) => Some(p.cmp(q)),
                (V::F64(p), V::F64(q)) => p.partial_cmp(q),
                (V::Str(p), V::Str(q)) => Some(p.as_bytes().cmp(q.as_bytes())),
                (V::Bool(p), V::Bool(q)) => Some(p.cmp(q)),
                _ => return V::Null,
            };
            // NaN compares unequal to everything, as in IEEE.
            match ord {
                Some(o) => V::Bool(op.holds(o)),
                None => V::Bool(*op == CmpOp::Ne),
            }
        }
        Node::And(a, b) => match eval(a, input) {
            V::Bool(false) => V::Bool(false),
            x => match (x, eval(b, input)) {
                (_, V::Bool(false)) => V::Bool(false),
                (V::Bool(true), V::Bool(true)) => V::Bool(true),
                _ => V::Null,
            },
        },
        Node::Or(a, b) => match eval(a, input) {
            V::Bool(true) => V::Bool(true),
            x => match (x, eval(b, input)) {
                (_, V::Bool(true)) => V::Bool(true),
                (V::Bool(false), V::Bool(false)) => V::Bool(false),
                _ => V::Null,
            },
        },
        Node::Not(a) => match eval(a, input) {
            V::Bool(b) => V::Bool(!b),
            _ => V::Null,
        },
        Node::Concat(args) => {
            let mut out = String::new();
            for a in args {
                match eval(a, input) {
                    V::Str(s) => out.push_str(&s),
                    _ => return V::Null,
                }
            }
            V::Str(Cow::Owned(out))
        }
        Node::Coalesce(ty, args) => {
            for a in args {
                let v = eval(a, input);
                if !matches!(v, V::Null) {
                    return convert(v, *ty);
                }
            }
            V::Null
        }
        Node::Cast(to, a) => convert(eval(a, input), *to),
    }
}

fn arith<'a>(op: ArithOp, x: V<'a>, y: V<'a>) -> V<'a> {
    use ArithOp::*;
    match (x, y) {
        (V::I32(p), V::I32(q)) => match op {
            Add => p.checked_add(q),
            Sub => p.checked_sub(q),
            Mul => p.checked_mul(q),
            Div => None,
        }
        .map_or(V::Null, V::I32),
        (V::I64(p), V::I64(q)) => match op {
            Add => p.checked_add(q),
            Sub => p.checked_sub(q),
            Mul => p.checked_mul(q),
            Div => None,
        }
        .map_or(V::Null, V::I64),
        (V::F32(p), V::F32(q)) => match op {
            Add => V::F32(p + q),
            Sub => V::F32(p - q),
            Mul => V::F32(p * q),
            Div if q == 0.0 => V::Null,
            Div => V::F32(p / q),
        },
        (V::F64(p), V::F64(q)) => match op {
            Add => V::F64(p + q),
            Sub => V::F64(p - q),
            Mul => V::F64(p * q),
            Div if q == 0.0 => V::Null,
            Div => V::F64(p / q),
        },
        _ => V::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Columns for the tests: request fields `i32`, `i64`, `f32`, `f64`, `b`, `s`, `n` (an
    /// Int64 that is null), and the feature `stats.rate` (Float64).
    fn columns() -> Vec<(Ref, ValueType, Value)> {
        let r = |n: &str| Ref::Request(n.to_owned());
        vec![
            (r("i32"), ValueType::Int32, Value::Int32(7)),
            (r("i64"), ValueType::Int64, Value::Int64(10)),
            (r("f32"), ValueType::Float, Value::Float(0.5)),
            (r("f64"), ValueType::Double, Value::Double(2.5)),
            (r("b"), ValueType::Bool, Value::Bool(true)),
            (r("s"), ValueType::String, Value::String("ab".into())),
            (r("n"), ValueType::Int64, Value::Null),
            (r("list"), ValueType::Int64List, Value::Int64List(vec![1])),
            (
                Ref::Feature {
                    view: "stats".into(),
                    feature: "rate".into(),
                },
                ValueType::Double,
                Value::Double(0.25),
            ),
        ]
    }

    fn build(text: &str, out: ValueType) -> Result<Expr, ExprError> {
        let cols = columns();
        compile(
            text,
            &mut |r| {
                cols.iter()
                    .position(|(c, _, _)| c == r)
                    .map(|i| (i, cols[i].1))
                    .ok_or_else(|| format!("unknown column {r}"))
            },
            out,
        )
    }

    fn run(text: &str, out: ValueType) -> Value {
        let e = build(text, out).unwrap_or_else(|e| panic!("{text}: {e}"));
        let cols = columns();
        let values: Vec<Vec<Value>> = cols.iter().map(|(_, _, v)| vec![v.clone()]).collect();
        let slices: Vec<&[Value]> = values.iter().map(Vec::as_slice).collect();
        e.eval(&slices, 1).remove(0)
    }

    fn fails(text: &str, out: ValueType) -> ExprError {
        match build(text, out) {
            Ok(e) => panic!("{text} compiled: {e:?}"),
            Err(e) => e,
        }
    }

    use ValueType as T;

    #[test]
    fn arithmetic_and_promotion() {
        assert_eq!(run("i64 + 5", T::Int64), Value::Int64(15));
        assert_eq!(run("i64 - 15", T::Int64), Value::Int64(-5));
        assert_eq!(run("i64 * i32", T::Int64), Value::Int64(70));
        assert_eq!(run("i32 * i32", T::Int32), Value::Int32(49));
        assert_eq!(run("i64 / 4", T::Double), Value::Double(2.5));
        assert_eq!(run("f32 + f32", T::Float), Value::Float(1.0));
        assert_eq!(run("f32 + i32", T::Double), Value::Double(7.5));
        assert_eq!(run("stats.rate + f64", T::Double), Value::Double(2.75));
        assert_eq!(run("-i64", T::Int64), Value::Int64(-10));
        assert_eq!(run("--i64", T::Int64), Value::Int64(10));
        assert_eq!(run("-f64 * 2", T::Double), Value::Double(-5.0));
        assert_eq!(run("1 + 2 * 3 - 4 / 2", T::Double), Value::Double(5.0));
        assert_eq!(run("(1 + 2) * 3", T::Int64), Value::Int64(9));
        assert_eq!(run(".5 + 1e1 + 2.5E-1", T::Double), Value::Double(10.75));
        // Int32 results widen implicitly to a declared Int64, Float32 to Float64.
        assert_eq!(run("i32 + i32", T::Int64), Value::Int64(14));
        assert_eq!(run("f32", T::Double), Value::Double(0.5));
    }

    #[test]
    fn comparisons_and_logic() {
        assert_eq!(run("i64 == 10", T::Bool), Value::Bool(true));
        assert_eq!(run("i64 != 10", T::Bool), Value::Bool(false));
        assert_eq!(run("i32 < i64", T::Bool), Value::Bool(true));
        assert_eq!(run("i64 <= 10.0", T::Bool), Value::Bool(true));
        assert_eq!(run("f64 > 2.5", T::Bool), Value::Bool(false));
        assert_eq!(run("f64 >= 2.5", T::Bool), Value::Bool(true));
        assert_eq!(run("s < 'b'", T::Bool), Value::Bool(true));
        assert_eq!(run("b == true", T::Bool), Value::Bool(true));
        assert_eq!(run("i64 > 1 and not b", T::Bool), Value::Bool(false));
        assert_eq!(run("i64 > 100 OR b", T::Bool), Value::Bool(true));
        assert_eq!(run("NOT (i64 > 100)", T::Bool), Value::Bool(true));
        // Exact integer comparison beyond Float64's precision.
        assert_eq!(
            run("9007199254740993 > 9007199254740992", T::Bool),
            Value::Bool(true)
        );
        assert_eq!(
            run("cast('nan', Float64) == cast('nan', Float64)", T::Bool),
            Value::Bool(false)
        );
        assert_eq!(
            run("cast('nan', Float64) != 1.0", T::Bool),
            Value::Bool(true)
        );
    }

    #[test]
    fn nulls_follow_sql() {
        for text in ["n + 1", "-n", "n * 0", "cast(n, Int64)"] {
            assert_eq!(run(text, T::Int64), Value::Null, "{text}");
        }
        assert_eq!(run("n / 1", T::Double), Value::Null);
        assert_eq!(run("n == n", T::Bool), Value::Null);
        assert_eq!(run("not (n > 1)", T::Bool), Value::Null);
        assert_eq!(run("s || cast(n, String)", T::String), Value::Null);
        assert_eq!(run("concat(s, null)", T::String), Value::Null);
        assert_eq!(run("null", T::Int64), Value::Null);
        // Three-valued logic.
        assert_eq!(run("n > 1 and false", T::Bool), Value::Bool(false));
        assert_eq!(run("false and n > 1", T::Bool), Value::Bool(false));
        assert_eq!(run("n > 1 and true", T::Bool), Value::Null);
        assert_eq!(run("n > 1 or true", T::Bool), Value::Bool(true));
        assert_eq!(run("n > 1 or false", T::Bool), Value::Null);
        // coalesce: the first non-null, converted to the common type.
        assert_eq!(run("coalesce(n, i32, 3)", T::Int64), Value::Int64(7));
        assert_eq!(run("coalesce(n, null, f64)", T::Double), Value::Double(2.5));
        assert_eq!(run("coalesce(n, 1.5)", T::Double), Value::Double(1.5));
        assert_eq!(run("coalesce(n)", T::Int64), Value::Null);
    }

    #[test]
    fn overflow_and_division_by_zero_are_null() {
        assert_eq!(run("9223372036854775807 + 1", T::Int64), Value::Null);
        assert_eq!(run("-9223372036854775807 - 2", T::Int64), Value::Null);
        assert_eq!(run("4611686018427387904 * 2", T::Int64), Value::Null);
        assert_eq!(run("-(-9223372036854775807 - 1)", T::Int64), Value::Null);
        assert_eq!(
            run("cast(2147483647, Int32) + cast(1, Int32)", T::Int32),
            Value::Null
        );
        assert_eq!(run("i64 / 0", T::Double), Value::Null);
        assert_eq!(run("f64 / 0.0", T::Double), Value::Null);
        assert_eq!(run("0.0 / 0.0", T::Double), Value::Null);
        assert_eq!(run("f32 / cast(0, Float32)", T::Float), Value::Null);
        // Float overflow is IEEE.
        assert_eq!(run("1e308 * 10", T::Double), Value::Double(f64::INFINITY));
        // Out-of-range casts are null.
        assert_eq!(run("cast(3000000000, Int32)", T::Int32), Value::Null);
        assert_eq!(run("cast(1e300, Int64)", T::Int64), Value::Null);
        assert_eq!(
            run("cast(cast('nan', Float64), Int64)", T::Int64),
            Value::Null
        );
    }

    #[test]
    fn casts_and_strings() {
        assert_eq!(run("cast(f64, Int64)", T::Int64), Value::Int64(2));
        assert_eq!(run("cast(-f64, Int32)", T::Int32), Value::Int32(-2));
        assert_eq!(run("cast(i64, Float32)", T::Float), Value::Float(10.0));
        assert_eq!(
            run("cast(i64, String)", T::String),
            Value::String("10".into())
        );
        assert_eq!(
            run("cast(f64, String)", T::String),
            Value::String("2.5".into())
        );
        assert_eq!(
            run("cast(1.0, String)", T::String),
            Value::String("1.0".into())
        );
        assert_eq!(
            run("cast(cast(0.1, Float32), String)", T::String),
            Value::String("0.1".into())
        );
        assert_eq!(
            run("cast(b, String)", T::String),
            Value::String("true".into())
        );
        assert_eq!(run("cast(b, Int64)", T::Int64), Value::Int64(1));
        assert_eq!(run("cast(i64, Bool)", T::Bool), Value::Bool(true));
        assert_eq!(run("cast(' 42 ', Int64)", T::Int64), Value::Int64(42));
        assert_eq!(run("cast('4x', Int64)", T::Int64), Value::Null);
        assert_eq!(run("cast('2.5', Float64)", T::Double), Value::Double(2.5));
        assert_eq!(run("cast('TRUE', Bool)", T::Bool), Value::Bool(true));
        assert_eq!(run("cast('yes', Bool)", T::Bool), Value::Null);
        assert_eq!(
            run("s || '-' || cast(i32, String)", T::String),
            Value::String("ab-7".into())
        );
        assert_eq!(
            run("concat(s, 'c', s)", T::String),
            Value::String("abcab".into())
        );
        assert_eq!(run("'it''s'", T::String), Value::String("it's".into()));
        assert_eq!(run("'é' || s", T::String), Value::String("éab".into()));
    }

    #[test]
    fn references() {
        let ast = parse(r#"stats.rate + "stats".rate * val - "my-view"."f-1""#).unwrap();
        let refs: Vec<String> = ast.references().iter().map(ToString::to_string).collect();
        assert_eq!(refs, ["stats.rate", "val", "my-view.f-1"]);
    }

    #[test]
    fn parse_errors_are_located() {
        let cases = [
            ("", 1, "empty"),
            ("1 +", 4, "expected a value, found the end"),
            ("(1 + 2", 7, "expected ')' to close the '(' at column 1"),
            ("1 + 2)", 6, "no matching '('"),
            ("a = 1", 3, "compare with '=='"),
            ("a # b", 3, "unexpected character '#'"),
            ("'abc", 1, "unterminated string"),
            ("1 < 2 < 3", 7, "do not chain"),
            ("sqrt(a)", 1, "unknown function \"sqrt\""),
            ("cast(a, Decimal)", 9, "unknown type \"Decimal\""),
            ("cast(a)", 1, "two arguments"),
            ("coalesce()", 1, "at least one"),
            ("a.b.c", 4, "one dot only"),
            ("a. + 1", 4, "expected a feature name"),
            ("12abc", 3, "after a number"),
            ("99999999999999999999", 1, "does not fit in Int64"),
            ("a b", 3, "expected an operator"),
            ("and", 1, "keyword \"and\""),
            ("f(1, 2", 1, "unknown function"),
            ("concat(a b)", 10, "expected ',' or ')'"),
        ];
        for (text, column, words) in cases {
            let e = parse(text)
                .err()
                .unwrap_or_else(|| panic!("{text:?} parsed"));
            assert!(
                e.column == column && e.message.contains(words),
                "{text:?}: got {e}, want column {column} with {words:?}"
            );
        }
    }

    #[test]
    fn nesting_and_length_are_capped() {
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep).unwrap_err().message.contains("nests deeper"));
        let chain = vec!["a"; 200].join(" + ");
        assert!(parse(&chain).unwrap_err().message.contains("nests deeper"));
        let negs = format!("{}1", "-".repeat(100));
        assert!(parse(&negs).unwrap_err().message.contains("nests deeper"));
        let nots = format!("{}true", "not ".repeat(100));
        assert!(parse(&nots).unwrap_err().message.contains("nests deeper"));
        let ok = format!("{}1{}", "(".repeat(30), ")".repeat(30));
        assert!(parse(&ok).is_ok());
        let long = "1+".repeat(MAX_LEN) + "1";
        assert!(parse(&long).unwrap_err().message.contains("bytes long"));
    }

    #[test]
    fn type_errors_are_located() {
        let cases = [
            (
                "s + 1",
                T::Int64,
                3,
                "its left side is String (join strings with || or concat)",
            ),
            ("1 - b", T::Int64, 3, "its right side is Bool"),
            ("-s", T::Int64, 1, "needs a number"),
            ("not i64", T::Bool, 1, "needs a Bool"),
            ("i64 and b", T::Bool, 5, "and needs Bools"),
            ("s == 1", T::Bool, 3, "compares String with Int64"),
            ("s || i64", T::String, 6, "needs strings, not Int64"),
            ("coalesce(s, i64)", T::String, 13, "this argument is Int64"),
            ("i64 + 1", T::Int32, 5, "declared Int32"),
            ("f64", T::Float, 1, "wrap it in cast(..., Float32)"),
            ("nope + 1", T::Int64, 1, "unknown column nope"),
            ("list", T::Int64List, 1, "cannot be computed"),
            ("cast(list, Int64)", T::Int64, 6, "list is Array(Int64)"),
        ];
        for (text, out, column, words) in cases {
            let e = fails(text, out);
            assert!(
                e.column == column && e.message.contains(words),
                "{text:?}: got {e}, want column {column} with {words:?}"
            );
        }
    }

    #[test]
    fn mistyped_stored_values_read_as_null() {
        let e = build("i64 + 1", T::Int64).unwrap();
        let col = [Value::String("ten".into()), Value::Int64(1), Value::Null];
        let cols: Vec<&[Value]> = vec![&[], &col];
        assert_eq!(
            e.eval(&cols, 3),
            [Value::Null, Value::Int64(2), Value::Null]
        );
    }

    #[test]
    fn evaluates_every_row() {
        let e = build("coalesce(i64, 0) * 2 + stats.rate", T::Double).unwrap();
        let i64s: Vec<Value> = (0..1000)
            .map(|i| {
                if i % 3 == 0 {
                    Value::Null
                } else {
                    Value::Int64(i)
                }
            })
            .collect();
        let rates: Vec<Value> = (0..1000).map(|i| Value::Double(i as f64 / 4.0)).collect();
        let mut cols: Vec<&[Value]> = vec![&[]; 9];
        cols[1] = &i64s;
        cols[8] = &rates;
        let out = e.eval(&cols, 1000);
        for (i, v) in out.iter().enumerate() {
            let base = if i % 3 == 0 { 0 } else { i as i64 };
            assert_eq!(
                *v,
                Value::Double((base * 2) as f64 + i as f64 / 4.0),
                "row {i}"
            );
        }
    }
}

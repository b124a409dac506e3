//! YAML, read with `serde-saphyr` (a pure-Rust parser that keeps located errors and enforces
//! budgets while it parses), in place of the unmaintained `serde_yaml`, whose libyaml core takes
//! time quadratic in the nesting of flow collections (80k `[` took 17 s before its recursion
//! limit even applied).
//!
//! Every YAML quiver reads goes through [`from_str`] with [`Limits`]: nesting depth and node
//! count are checked while parsing, so a hostile document costs time linear in its size and
//! fails with an error naming the cap. [`Yaml`] is the untyped value (`feature_store.yaml`'s
//! open-ended sections, tags, durations), read with YAML 1.2's core schema as `serde_yaml` did
//! (`yes` is a string, `0755` and `1_000` too).

use std::fmt;

use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::budget::{Budget, BudgetBreach};

/// Caps on one document, checked while it is parsed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest nesting of mappings and sequences.
    pub max_depth: usize,
    /// Most nodes (scalars, sequences, mappings) in the document.
    pub max_nodes: usize,
}

/// The caps of `feature_store.yaml` and of definition files: far beyond any real repo (the
/// deepest definition is 6 levels), and small enough that the worst document is cheap.
pub const LIMITS: Limits = Limits {
    max_depth: 32,
    max_nodes: 1_000_000,
};

/// A document that does not parse, or breaks a cap: the message, and the 1-based line where the
/// parser stopped when it knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} (line {line})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for YamlError {}

fn options(limits: Limits) -> serde_saphyr::Options {
    let mut budget = Budget::default();
    budget.max_depth = limits.max_depth;
    budget.max_nodes = limits.max_nodes;
    // Every node is one or two events (start and end); the node cap is the one that speaks.
    budget.max_events = limits.max_nodes.saturating_mul(2).saturating_add(16);
    // A flow collection is nesting too; the parser checks it before the depth budget sees it.
    budget.flow_nesting_limit = limits.max_depth;
    let mut o = serde_saphyr::Options::default();
    o.budget = Some(budget);
    o.with_snippet = false;
    // YAML 1.2's core schema, as serde_yaml read it.
    o.strict_booleans = true;
    o.leading_zero_numbers_as_strings = true;
    o.underscored_numbers_as_strings = true;
    o
}

/// Parses one document into `T` within `limits`. An empty document is `T`'s reading of null.
pub fn from_str<T: DeserializeOwned>(text: &str, limits: Limits) -> Result<T, YamlError> {
    serde_saphyr::from_str_with_options(text, options(limits)).map_err(|e| error(&e, limits))
}

/// Parses a stream of `---`-separated documents (Kubernetes manifests), each within `limits`.
pub fn from_str_multi<T: DeserializeOwned>(
    text: &str,
    limits: Limits,
) -> Result<Vec<T>, YamlError> {
    serde_saphyr::from_multiple_with_options(text, options(limits)).map_err(|e| error(&e, limits))
}

fn error(e: &serde_saphyr::Error, limits: Limits) -> YamlError {
    let e = e.without_snippet();
    let line = e
        .location()
        .map(|l| l.line() as usize)
        .filter(|&line| line > 0);
    let message = match e {
        serde_saphyr::Error::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => format!(
                "nested deeper than {} levels of mappings and lists: flatten the document",
                limits.max_depth
            ),
            BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => format!(
                "more than {} YAML nodes: split the definitions or remove what is not needed",
                limits.max_nodes
            ),
            other => format!("the document exceeds a parser limit ({other:?})"),
        },
        other => strip_location(&other.to_string()),
    };
    // The flow-nesting guard reports itself as a recursion limit.
    let message = if message.contains("recursion limit exceeded") {
        format!(
            "nested deeper than {} levels of mappings and lists: flatten the document",
            limits.max_depth
        )
    } else {
        message
    };
    YamlError { line, message }
}

/// serde-saphyr's messages start with "line L column C: "; the line is reported apart.
fn strip_location(msg: &str) -> String {
    let msg = msg.trim();
    if let Some(rest) = msg.strip_prefix("line ")
        && let Some(i) = rest.find(": ")
        && rest[..i].contains("column")
    {
        return rest[i + 2..].to_owned();
    }
    msg.to_owned()
}

/// A YAML number as written: an integer (signed or not) or a float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    PosInt(u64),
    NegInt(i64),
    Float(f64),
}

impl Number {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Number::PosInt(n) => Some(n),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Number::PosInt(n) => i64::try_from(n).ok(),
            Number::NegInt(n) => Some(n),
            Number::Float(_) => None,
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::PosInt(n) => write!(f, "{n}"),
            Number::NegInt(n) => write!(f, "{n}"),
            Number::Float(x) if x.is_nan() => f.write_str(".nan"),
            Number::Float(x) if x.is_infinite() => {
                f.write_str(if *x > 0.0 { ".inf" } else { "-.inf" })
            }
            Number::Float(x) => write!(f, "{x:?}"),
        }
    }
}

/// An untyped YAML value. Mappings keep their order (and may hold non-string keys).
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Sequence(Vec<Yaml>),
    Mapping(Mapping),
}

/// A YAML mapping in document order. Lookups are linear: mappings quiver reads by key are a
/// handful of entries (a config section, an entry of a feature service).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping(Vec<(Yaml, Yaml)>);

impl Mapping {
    pub fn new() -> Mapping {
        Mapping::default()
    }

    /// The value of the string key `key`.
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        self.0
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Yaml, &Yaml)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The string keys, in order (other keys skipped).
    pub fn keys(&self) -> impl Iterator<Item = &Yaml> {
        self.0.iter().map(|(k, _)| k)
    }
}

impl<'a> IntoIterator for &'a Mapping {
    type Item = (&'a Yaml, &'a Yaml);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Yaml, Yaml)>,
        fn(&'a (Yaml, Yaml)) -> (&'a Yaml, &'a Yaml),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl Yaml {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Yaml::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Yaml::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Yaml::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Yaml::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    pub fn as_mapping(&self) -> Option<&Mapping> {
        match self {
            Yaml::Mapping(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_sequence(&self) -> Option<&[Yaml]> {
        match self {
            Yaml::Sequence(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Yaml::Null)
    }

    /// The value under the string key `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        self.as_mapping().and_then(|m| m.get(key))
    }
}

/// A compact one-line rendering (flow style) for messages.
impl fmt::Display for Yaml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Yaml::Null => f.write_str("null"),
            Yaml::Bool(b) => write!(f, "{b}"),
            Yaml::Number(n) => write!(f, "{n}"),
            Yaml::String(s) => {
                let plain = !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
                    && s.parse::<f64>().is_err()
                    && !matches!(
                        s.to_ascii_lowercase().as_str(),
                        "true" | "false" | "null" | "~"
                    );
                if plain {
                    f.write_str(s)
                } else {
                    write!(f, "{s:?}")
                }
            }
            Yaml::Sequence(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Yaml::Mapping(m) => {
                f.write_str("{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

impl<'de> Deserialize<'de> for Yaml {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Yaml, D::Error> {
        d.deserialize_any(YamlVisitor)
    }
}

struct YamlVisitor;

impl<'de> Visitor<'de> for YamlVisitor {
    type Value = Yaml;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Yaml, E> {
        Ok(Yaml::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Yaml, E> {
        Ok(Yaml::Number(if v >= 0 {
            Number::PosInt(v as u64)
        } else {
            Number::NegInt(v)
        }))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Yaml, E> {
        Ok(Yaml::Number(Number::PosInt(v)))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Yaml, E> {
        match (u64::try_from(v), i64::try_from(v)) {
            (Ok(u), _) => Ok(Yaml::Number(Number::PosInt(u))),
            (_, Ok(i)) => Ok(Yaml::Number(Number::NegInt(i))),
            _ => Ok(Yaml::String(v.to_string())),
        }
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Yaml, E> {
        match u64::try_from(v) {
            Ok(u) => Ok(Yaml::Number(Number::PosInt(u))),
            Err(_) => Ok(Yaml::String(v.to_string())),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Yaml, E> {
        Ok(Yaml::Number(Number::Float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Yaml, E> {
        Ok(Yaml::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Yaml, E> {
        Ok(Yaml::String(v))
    }

    fn visit_char<E: de::Error>(self, v: char) -> Result<Yaml, E> {
        Ok(Yaml::String(v.to_string()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Yaml, D::Error> {
        Yaml::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Yaml, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Yaml::Sequence(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Yaml, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
        while let Some((k, v)) = map.next_entry()? {
            out.push((k, v));
        }
        Ok(Yaml::Mapping(Mapping(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_yaml_1_2_core() {
        let v: Yaml = from_str(
            "a: yes\nb: true\nc: 0755\nd: 1_000\ne: -3\nf: 1.5\ng: ~\nh: [1, x]\ni: {k: v}\n",
            LIMITS,
        )
        .unwrap();
        assert_eq!(v.get("a"), Some(&Yaml::String("yes".into())));
        assert_eq!(v.get("b"), Some(&Yaml::Bool(true)));
        assert_eq!(v.get("c"), Some(&Yaml::String("0755".into())));
        assert_eq!(v.get("d"), Some(&Yaml::String("1_000".into())));
        assert_eq!(v.get("e").and_then(Yaml::as_i64), Some(-3));
        assert_eq!(v.get("f").map(ToString::to_string).as_deref(), Some("1.5"));
        assert!(v.get("g").is_some_and(Yaml::is_null));
        assert_eq!(
            v.get("h").map(ToString::to_string).as_deref(),
            Some("[1, x]")
        );
        assert_eq!(
            v.get("i").map(ToString::to_string).as_deref(),
            Some("{k: v}")
        );
        let empty: Option<Yaml> = from_str("", LIMITS).unwrap();
        assert!(empty.is_none_or(|v| v.is_null()));
    }

    #[test]
    fn errors_are_located_and_name_the_caps() {
        let e = from_str::<Yaml>("a: [1, 2\nb: c\n", LIMITS).unwrap_err();
        assert!(e.line.is_some(), "{e:?}");
        assert!(!e.message.starts_with("line "), "{e:?}");
        for deep in [
            format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000)),
            (0..200).map(|i| format!("{}a:\n", " ".repeat(i))).collect(),
            (0..200).map(|i| format!("{}- \n", " ".repeat(i))).collect(),
        ] {
            let t = std::time::Instant::now();
            let e = from_str::<Yaml>(&deep, LIMITS).unwrap_err();
            assert!(e.message.contains("deeper than 32 levels"), "{e:?}");
            // Linear: the old parser took 20 s on the 100k-deep flow list. Generous bound.
            assert!(
                t.elapsed() < std::time::Duration::from_secs(5),
                "{:?}",
                t.elapsed()
            );
        }
        let many = format!("a: [{}]", "1, ".repeat(1_000_001));
        let e = from_str::<Yaml>(&many, LIMITS).unwrap_err();
        assert!(e.message.contains("more than 1000000 YAML nodes"), "{e:?}");
    }
}

//! A write body parsed with its size bounds checked while parsing: `df`'s rows per column
//! (`max_rows`) and its JSON values, list elements included (`max_values`), are counted as the
//! parser meets them, so a body over either limit is refused (413) before it is materialized.
//! A parsed JSON value is about 80 bytes, so a 16 MiB body of small numbers would otherwise
//! become over 500 MB of `serde_json::Value`s before the row limit was looked at.
//!
//! The other fields of the body are small and parsed as plain JSON.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value as Json};

use crate::error::ApiError;
use crate::push::PushConfig;

/// The pushed table: columns in body order, and the row count (`None`: no columns).
#[derive(Debug, Default)]
pub struct Df {
    pub columns: Vec<(String, Vec<Json>)>,
    pub rows: Option<usize>,
}

/// Why parsing stopped early, kept beside serde's error (whose text alone cannot tell a limit
/// from a syntax error).
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Rows,
    Values,
}

struct Budget<'a> {
    max_rows: usize,
    max_values: usize,
    values: Cell<usize>,
    refused: &'a Cell<Option<Refusal>>,
}

impl Budget<'_> {
    fn take_value<E: serde::de::Error>(&self) -> Result<(), E> {
        let n = self.values.get() + 1;
        if n > self.max_values {
            self.refused.set(Some(Refusal::Values));
            return Err(E::custom(format!(
                "df holds more than {} values",
                self.max_values
            )));
        }
        self.values.set(n);
        Ok(())
    }
}

/// Parses a write body: every field but `df` as JSON, `df` within the limits.
pub fn parse_body(
    body: &[u8],
    config: &PushConfig,
) -> Result<(Map<String, Json>, Option<Df>), ApiError> {
    let refused = Cell::new(None);
    let budget = Budget {
        max_rows: config.max_rows,
        max_values: config.max_values,
        values: Cell::new(0),
        refused: &refused,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = BodySeed(&budget)
        .deserialize(&mut de)
        .and_then(|parsed| de.end().map(|()| parsed));
    match (parsed, refused.get()) {
        (Ok(p), _) => Ok(p),
        (Err(_), Some(Refusal::Rows)) => Err(ApiError::too_large(
            "TooManyRows",
            format!(
                "df has more than {} rows; at most {} per request",
                config.max_rows, config.max_rows
            ),
        )),
        (Err(_), Some(Refusal::Values)) => Err(ApiError::too_large(
            "TooManyValues",
            format!(
                "df holds more than {} values (cells and list elements); at most {} per request: push fewer rows at a time",
                config.max_values, config.max_values
            ),
        )),
        (Err(e), None) if e.is_syntax() || e.is_eof() || e.is_io() => Err(ApiError::bad_request(
            "BadJson",
            format!("request body is not JSON: {e}"),
        )),
        (Err(e), None) => Err(ApiError::unprocessable(
            "ValidationError",
            format!("request body: {e}"),
        )),
    }
}

struct BodySeed<'b, 'a>(&'b Budget<'a>);

impl<'de> DeserializeSeed<'de> for BodySeed<'_, '_> {
    type Value = (Map<String, Json>, Option<Df>);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_, '_> {
    type Value = (Map<String, Json>, Option<Df>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the body to be a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Map::new();
        let mut df = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "df" {
                if df.is_some() {
                    return Err(A::Error::custom("df is given twice"));
                }
                df = Some(map.next_value_seed(DfSeed(self.0))?);
            } else {
                fields.insert(key, map.next_value::<Json>()?);
            }
        }
        Ok((fields, df))
    }
}

struct DfSeed<'b, 'a>(&'b Budget<'a>);

impl<'de> DeserializeSeed<'de> for DfSeed<'_, '_> {
    type Value = Df;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Df, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DfSeed<'_, '_> {
    type Value = Df;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("df to be an object of columns, {\"column\": [values, ...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Df, A::Error> {
        let mut df = Df::default();
        let mut names: HashSet<String> = HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            if !names.insert(name.clone()) {
                return Err(A::Error::custom(format!(
                    "df column {name:?} is given twice"
                )));
            }
            let values = map.next_value_seed(ColumnSeed {
                budget: self.0,
                name: &name,
            })?;
            match df.rows {
                None => df.rows = Some(values.len()),
                Some(n) if n != values.len() => {
                    return Err(A::Error::custom(format!(
                        "df columns have different lengths: {name:?} has {} values, others {n}",
                        values.len()
                    )));
                }
                Some(_) => {}
            }
            df.columns.push((name, values));
        }
        Ok(df)
    }
}

struct ColumnSeed<'b, 'a, 'n> {
    budget: &'b Budget<'a>,
    name: &'n str,
}

impl<'de> DeserializeSeed<'de> for ColumnSeed<'_, '_, '_> {
    type Value = Vec<Json>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Json>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ColumnSeed<'_, '_, '_> {
    type Value = Vec<Json>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array (df column {:?} must be an array)", self.name)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Json>, A::Error> {
        let mut values = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed(self.budget))? {
            if values.len() == self.budget.max_rows {
                self.budget.refused.set(Some(Refusal::Rows));
                return Err(A::Error::custom(format!(
                    "df column {:?} has more than {} rows",
                    self.name, self.budget.max_rows
                )));
            }
            values.push(v);
        }
        Ok(values)
    }
}

/// One JSON value, every node of it counted against the budget.
struct ValueSeed<'b, 'a>(&'b Budget<'a>);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Json, E> {
        self.0.take_value()?;
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Json, E> {
        self.0.take_value()?;
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Json, E> {
        self.0.take_value()?;
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Json, E> {
        self.0.take_value()?;
        Ok(Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Json, E> {
        self.0.take_value()?;
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Json, E> {
        self.0.take_value()?;
        Ok(Json::String(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Json, E> {
        self.0.take_value()?;
        Ok(Json::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Json, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        self.0.take_value()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed(self.0))? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        self.0.take_value()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let v = map.next_value_seed(ValueSeed(self.0))?;
            object.insert(key, v);
        }
        Ok(Json::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_rows: usize, max_values: usize) -> PushConfig {
        PushConfig {
            max_rows,
            max_values,
            ..PushConfig::default()
        }
    }

    #[test]
    fn tables_within_limits_parse_in_order() {
        let (fields, df) = parse_body(
            br#"{"push_source_name": "s", "df": {"b": [1, [2, 3]], "a": ["x", null]}, "to": "online"}"#,
            &config(2, 6),
        )
        .unwrap();
        assert_eq!(fields["push_source_name"], "s");
        let df = df.unwrap();
        assert_eq!(df.rows, Some(2));
        let names: Vec<&str> = df.columns.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(df.columns[0].1[1], serde_json::json!([2, 3]));
    }

    #[test]
    fn limits_refuse_while_parsing() {
        // A row past the limit is refused even though the body is cut short after it: the
        // parser never reached the end.
        let e = parse_body(br#"{"df": {"a": [1, 2, 3, "#, &config(2, 100)).unwrap_err();
        assert_eq!((e.status(), e.class), (413, "TooManyRows"));
        let e = parse_body(br#"{"df": {"a": [[1, 2, 3, 4, 5, "#, &config(10, 4)).unwrap_err();
        assert_eq!((e.status(), e.class), (413, "TooManyValues"));
        let e = parse_body(br#"{"df": {"a": [1], "b": [1, 2]}}"#, &config(10, 100)).unwrap_err();
        assert_eq!(e.status(), 422);
        assert!(e.message.contains("different lengths"), "{e}");
        let e = parse_body(br#"{"df": {"a": [1], "a": [2]}}"#, &config(10, 100)).unwrap_err();
        assert!(e.message.contains("given twice"), "{e}");
        let e = parse_body(br#"{"df": {"a": 1}}"#, &config(10, 100)).unwrap_err();
        assert_eq!(e.status(), 422);
        assert!(e.message.contains("must be an array"), "{e}");
        let e = parse_body(br#"{"df": "#, &config(10, 100)).unwrap_err();
        assert_eq!((e.status(), e.class), (400, "BadJson"));
        let e = parse_body(br#"[1]"#, &config(10, 100)).unwrap_err();
        assert_eq!(e.status(), 422);
        let e = parse_body(br#"{} x"#, &config(10, 100)).unwrap_err();
        assert_eq!(e.status(), 400);
    }
}

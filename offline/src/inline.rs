//! `POST /v1/historical`'s body, parsed in bounded memory: the inline entity table goes straight
//! into Arrow arrays, never through `serde_json::Value` (about 80 bytes per cell: a 63 MiB body
//! of numbers became 1.7 GB).
//!
//! Two passes over the body bytes. The first counts: rows and string bytes per entity column,
//! and the JSON values of every other field (at most [`MAX_OTHER_VALUES`]); from the counts,
//! [`Counts::table_bytes`] is what the arrays will take, which the caller reserves from the
//! upload budget before the second pass builds them with exact capacities.
//!
//! Entity columns are typed as the values say: all integers → Int64, numbers → Float64,
//! booleans → Boolean, strings → Utf8 (`event_timestamp` strings parsed as RFC 3339; no offset:
//! UTC); a column of nulls only is Utf8.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanBuilder, Float64Builder, Int64Array, Int64Builder, RecordBatch,
    StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::{Map, Value as Json};

use crate::Error;
use crate::historical::{EVENT_TIMESTAMP, Entities};

/// Most JSON values in the fields other than `entities` (feature refs and the like).
pub const MAX_OTHER_VALUES: usize = 100_000;

/// What the first pass found.
#[derive(Debug, Default)]
pub struct Counts {
    /// Per entity column, in order: its name, values and bytes of string values.
    columns: Vec<(String, usize, usize)>,
}

impl Counts {
    /// The bytes the entity table's arrays will take (an upper bound: every column sized as
    /// the widest type its values could make, plus the parsed times).
    pub fn table_bytes(&self) -> usize {
        self.columns
            .iter()
            .map(|(name, rows, strings)| {
                let fixed = rows * 8 + rows / 8 + 128;
                let text = strings + (rows + 1) * 4;
                let times = if name == EVENT_TIMESTAMP { rows * 8 } else { 0 };
                fixed.max(text) + times
            })
            .sum()
    }
}

/// A parsed request: every field but `entities` as JSON, the entity table if given.
pub struct Parsed {
    pub fields: Map<String, Json>,
    pub entities: Option<Entities>,
}

fn not_json(e: serde_json::Error) -> Error {
    Error::bad_request(format!("request body is not JSON: {e}"))
}

/// The first pass: counts, and the JSON checked well-formed.
pub fn count(body: &[u8]) -> Result<Counts, Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut counts = Counts::default();
    let mut others = 0usize;
    CountBody {
        counts: &mut counts,
        others: &mut others,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(|e| {
        if others > MAX_OTHER_VALUES {
            Error::bad_request(format!(
                "the request's fields other than entities hold more than {MAX_OTHER_VALUES} values"
            ))
        } else {
            not_json(e)
        }
    })?;
    Ok(counts)
}

/// The second pass: the fields and the entity table, with the capacities `counts` found.
pub fn build(body: &[u8], counts: &Counts) -> Result<Parsed, Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut failure = None;
    let parsed = BuildBody {
        counts,
        failure: &mut failure,
    }
    .deserialize(&mut de)
    .and_then(|p| de.end().map(|()| p));
    match (parsed, failure) {
        (Ok(p), _) => Ok(p),
        (Err(_), Some(message)) => Err(Error::BadRequest(message)),
        (Err(e), None) => Err(not_json(e)),
    }
}

struct CountBody<'a> {
    counts: &'a mut Counts,
    others: &'a mut usize,
}

impl<'de> DeserializeSeed<'de> for CountBody<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CountBody<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "entities" {
                map.next_value_seed(CountColumns(self.counts))?;
            } else {
                map.next_value_seed(CountNodes(self.others))?;
            }
        }
        Ok(())
    }

    // Anything else is refused by the second pass, with its message.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(CountNodes(self.others))?.is_some() {}
        Ok(())
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Counts the values of any JSON, failing past [`MAX_OTHER_VALUES`].
struct CountNodes<'a>(&'a mut usize);

impl CountNodes<'_> {
    fn one<E: serde::de::Error>(&mut self) -> Result<(), E> {
        *self.0 += 1;
        if *self.0 > MAX_OTHER_VALUES {
            return Err(E::custom("too many values"));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for CountNodes<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CountNodes<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(mut self, _: bool) -> Result<(), E> {
        self.one()
    }
    fn visit_i64<E: serde::de::Error>(mut self, _: i64) -> Result<(), E> {
        self.one()
    }
    fn visit_u64<E: serde::de::Error>(mut self, _: u64) -> Result<(), E> {
        self.one()
    }
    fn visit_f64<E: serde::de::Error>(mut self, _: f64) -> Result<(), E> {
        self.one()
    }
    fn visit_str<E: serde::de::Error>(mut self, _: &str) -> Result<(), E> {
        self.one()
    }
    fn visit_unit<E: serde::de::Error>(mut self) -> Result<(), E> {
        self.one()
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.one()?;
        while seq.next_element_seed(CountNodes(self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.one()?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(CountNodes(self.0))?;
        }
        Ok(())
    }
}

/// `entities` in the first pass: per column, its values and string bytes.
struct CountColumns<'a>(&'a mut Counts);

impl<'de> DeserializeSeed<'de> for CountColumns<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CountColumns<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key::<String>()? {
            let (rows, strings) = map.next_value_seed(CountColumn)?;
            self.0.columns.push((name, rows, strings));
        }
        Ok(())
    }
    // Not an object: the second pass says so.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// One column in the first pass: (values, string bytes); anything but an array counts 0.
struct CountColumn;

impl<'de> DeserializeSeed<'de> for CountColumn {
    type Value = (usize, usize);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(usize, usize), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CountColumn {
    type Value = (usize, usize);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(usize, usize), A::Error> {
        let (mut rows, mut strings) = (0, 0);
        while let Some(len) = seq.next_element_seed(StrLen)? {
            rows += 1;
            strings += len;
        }
        Ok((rows, strings))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(usize, usize), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok((0, 0))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(usize, usize), E> {
        Ok((0, 0))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(usize, usize), E> {
        Ok((0, 0))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(usize, usize), E> {
        Ok((0, 0))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(usize, usize), E> {
        Ok((0, 0))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(usize, usize), E> {
        Ok((0, 0))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(usize, usize), E> {
        Ok((0, 0))
    }
}

/// A cell in the first pass: its string length (0 for other values, which the second pass
/// refuses when they are arrays or objects).
struct StrLen;

impl<'de> DeserializeSeed<'de> for StrLen {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrLen {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<usize, E> {
        Ok(v.len())
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<usize, E> {
        Ok(0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(0)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(0)
    }
}

struct BuildBody<'a> {
    counts: &'a Counts,
    failure: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for BuildBody<'_> {
    type Value = Parsed;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Parsed, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BuildBody<'_> {
    type Value = Parsed;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request to be a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        let mut fields = Map::new();
        let mut entities = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "entities" {
                let built = map.next_value_seed(BuildColumns {
                    counts: self.counts,
                    failure: self.failure,
                })?;
                entities = Some(built);
            } else {
                fields.insert(key, map.next_value::<Json>()?);
            }
        }
        let entities = match entities {
            None => None,
            Some(columns) => Some(table(columns).map_err(|m| {
                *self.failure = Some(m.clone());
                A::Error::custom(m)
            })?),
        };
        Ok(Parsed { fields, entities })
    }
}

/// A failure the caller reports as it is (the column at fault), not as a JSON syntax error.
fn fail<E: serde::de::Error>(failure: &mut Option<String>, message: String) -> E {
    *failure = Some(message.clone());
    E::custom(message)
}

struct BuildColumns<'a> {
    counts: &'a Counts,
    failure: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for BuildColumns<'_> {
    type Value = Vec<(String, ArrayRef)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BuildColumns<'_> {
    type Value = Vec<(String, ArrayRef)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("entities: {column: [values, ...], ...}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: Vec<(String, ArrayRef)> = Vec::new();
        let mut len = None;
        while let Some(name) = map.next_key::<String>()? {
            let (rows, strings) = self
                .counts
                .columns
                .get(out.len())
                .filter(|(n, _, _)| *n == name)
                .map_or((0, 0), |(_, r, s)| (*r, *s));
            let array = map.next_value_seed(BuildColumn {
                name: &name,
                rows,
                strings,
                failure: self.failure,
            })?;
            if *len.get_or_insert(array.len()) != array.len() {
                return Err(fail(
                    self.failure,
                    format!("entities.{name}: columns have different lengths"),
                ));
            }
            out.push((name, array));
        }
        Ok(out)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.not_columns())
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.not_columns())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(self.not_columns())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(self.not_columns())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(self.not_columns())
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(self.not_columns())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Err(self.not_columns())
    }
}

impl BuildColumns<'_> {
    fn not_columns<E: serde::de::Error>(self) -> E {
        fail(
            self.failure,
            "entities: expected {column: [values, ...], ...}".to_owned(),
        )
    }
}

struct BuildColumn<'a, 'n> {
    name: &'n str,
    rows: usize,
    strings: usize,
    failure: &'a mut Option<String>,
}

/// A column being built: untyped while only nulls came, then typed by its first value.
enum Column {
    Nulls(usize),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
}

impl<'de> DeserializeSeed<'de> for BuildColumn<'_, '_> {
    type Value = ArrayRef;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ArrayRef, D::Error> {
        d.deserialize_any(self)
    }
}

impl BuildColumn<'_, '_> {
    fn not_a_list<E: serde::de::Error>(self) -> E {
        let message = format!("entities.{}: expected a list of values", self.name);
        fail(self.failure, message)
    }
}

impl<'de> Visitor<'de> for BuildColumn<'_, '_> {
    type Value = ArrayRef;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entities.{}: a list of values", self.name)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ArrayRef, A::Error> {
        let mut column = Column::Nulls(0);
        let mismatch = |failure: &mut Option<String>| -> A::Error {
            fail(
                failure,
                format!(
                    "entities.{}: values must all be numbers, strings or booleans",
                    self.name
                ),
            )
        };
        while let Some(cell) = seq.next_element::<Cell>()? {
            column = match (column, cell) {
                (Column::Nulls(n), Cell::Null) => Column::Nulls(n + 1),
                (Column::Nulls(n), cell) => {
                    let mut typed = match &cell {
                        Cell::Int(_) => Column::Int(Int64Builder::with_capacity(self.rows)),
                        Cell::Float(_) => Column::Float(Float64Builder::with_capacity(self.rows)),
                        Cell::Bool(_) => Column::Bool(BooleanBuilder::with_capacity(self.rows)),
                        Cell::Str(_) => {
                            Column::Str(StringBuilder::with_capacity(self.rows, self.strings))
                        }
                        Cell::Null | Cell::Other => return Err(mismatch(self.failure)),
                    };
                    typed.nulls(n);
                    typed.push(cell).map_err(|()| mismatch(self.failure))?
                }
                (Column::Int(b), Cell::Float(f)) => {
                    let mut floats = Column::Float(to_floats(b, self.rows));
                    floats.nulls(0);
                    floats
                        .push(Cell::Float(f))
                        .map_err(|()| mismatch(self.failure))?
                }
                (typed, cell) => typed.push(cell).map_err(|()| mismatch(self.failure))?,
            };
        }
        let array: ArrayRef = match column {
            Column::Nulls(n) => {
                let mut b = StringBuilder::with_capacity(n, 0);
                b.append_nulls(n);
                Arc::new(b.finish())
            }
            Column::Int(mut b) => Arc::new(b.finish()),
            Column::Float(mut b) => Arc::new(b.finish()),
            Column::Bool(mut b) => Arc::new(b.finish()),
            Column::Str(mut b) => Arc::new(b.finish()),
        };
        if self.name == EVENT_TIMESTAMP && *array.data_type() == DataType::Utf8 {
            let parsed = cast(
                &array,
                &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            )
            .map_err(|e| fail(self.failure, format!("entities.{}: {e}", self.name)))?;
            if parsed.null_count() != array.null_count() {
                return Err(fail(
                    self.failure,
                    format!("entities.{}: values must be RFC 3339 timestamps", self.name),
                ));
            }
            return Ok(parsed);
        }
        Ok(array)
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<ArrayRef, A::Error> {
        Err(self.not_a_list())
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<ArrayRef, E> {
        Err(self.not_a_list())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<ArrayRef, E> {
        Err(self.not_a_list())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<ArrayRef, E> {
        Err(self.not_a_list())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<ArrayRef, E> {
        Err(self.not_a_list())
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<ArrayRef, E> {
        Err(self.not_a_list())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<ArrayRef, E> {
        Err(self.not_a_list())
    }
}

fn to_floats(mut ints: Int64Builder, capacity: usize) -> Float64Builder {
    let ints: Int64Array = ints.finish();
    let mut floats = Float64Builder::with_capacity(capacity);
    for v in ints.iter() {
        floats.append_option(v.map(|i| i as f64));
    }
    floats
}

impl Column {
    fn nulls(&mut self, n: usize) {
        match self {
            Column::Nulls(m) => *m += n,
            Column::Int(b) => b.append_nulls(n),
            Column::Float(b) => b.append_nulls(n),
            Column::Bool(b) => b.append_nulls(n),
            Column::Str(b) => {
                for _ in 0..n {
                    b.append_null();
                }
            }
        }
    }

    /// Appends `cell`; `Err` when it does not fit the column's type.
    fn push(mut self, cell: Cell) -> Result<Column, ()> {
        if let Cell::Null = cell {
            self.nulls(1);
            return Ok(self);
        }
        match (&mut self, cell) {
            (Column::Int(b), Cell::Int(i)) => b.append_value(i),
            (Column::Float(b), Cell::Int(i)) => b.append_value(i as f64),
            (Column::Float(b), Cell::Float(f)) => b.append_value(f),
            (Column::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Column::Str(b), Cell::Str(s)) => b.append_value(s),
            _ => return Err(()),
        }
        Ok(self)
    }
}

/// One cell, as read: no allocation but a string's.
enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// An array or object: never a valid cell.
    Other,
}

impl<'de> serde::Deserialize<'de> for Cell {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cell, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cell;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, string, boolean or null")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Cell, E> {
                Ok(Cell::Null)
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Cell, E> {
                Ok(Cell::Bool(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Cell, E> {
                Ok(Cell::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Cell, E> {
                Ok(i64::try_from(v).map_or(Cell::Float(v as f64), Cell::Int))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Cell, E> {
                Ok(Cell::Float(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Cell, E> {
                Ok(Cell::Str(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Cell, E> {
                Ok(Cell::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Cell, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Cell::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Cell, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Cell::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// The entity table from its columns.
fn table(columns: Vec<(String, ArrayRef)>) -> Result<Entities, String> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, a)| Field::new(name, a.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let arrays = columns.into_iter().map(|(_, a)| a).collect();
    let batch = RecordBatch::try_new(Arc::clone(&schema), arrays).map_err(|e| e.to_string())?;
    Ok(Entities {
        schema,
        batches: vec![batch],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Float64Type, Int64Type};

    fn parse(body: &str) -> Result<Parsed, Error> {
        let counts = count(body.as_bytes())?;
        build(body.as_bytes(), &counts)
    }

    #[test]
    fn columns_are_typed_by_their_values() {
        let p = parse(
            r#"{"features": ["v:f"], "entities": {"a": [null, 1, 2], "b": [1, 2.5, null],
                "c": [true, null, false], "d": ["x", null, "y"], "e": [null, null, null],
                "event_timestamp": ["2026-01-01T10:00:00Z", "2026-01-01T11:00:00", null]}}"#,
        )
        .unwrap();
        assert_eq!(p.fields["features"], serde_json::json!(["v:f"]));
        let batch = &p.entities.unwrap().batches[0];
        let types: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect();
        assert_eq!(
            types,
            [
                "Int64",
                "Float64",
                "Boolean",
                "Utf8",
                "Utf8",
                "Timestamp(µs, \"UTC\")"
            ]
        );
        let a = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(a.iter().collect::<Vec<_>>(), [None, Some(1), Some(2)]);
        let b = batch.column(1).as_primitive::<Float64Type>();
        assert_eq!(b.iter().collect::<Vec<_>>(), [Some(1.0), Some(2.5), None]);
    }

    #[test]
    fn bad_tables_name_the_column() {
        let e = parse(r#"{"entities": {"a": [1, "x"]}}"#).err().unwrap();
        assert_eq!(
            e.message(),
            "entities.a: values must all be numbers, strings or booleans"
        );
        let e = parse(r#"{"entities": {"a": [[1]]}}"#).err().unwrap();
        assert!(e.message().contains("entities.a: values must"), "{e}");
        let e = parse(r#"{"entities": {"a": [1], "b": [1, 2]}}"#)
            .err()
            .unwrap();
        assert_eq!(e.message(), "entities.b: columns have different lengths");
        let e = parse(r#"{"entities": {"a": 1}}"#).err().unwrap();
        assert_eq!(e.message(), "entities.a: expected a list of values");
        let e = parse(r#"{"entities": [1]}"#).err().unwrap();
        assert!(e.message().contains("expected {column"), "{e}");
        let e = parse(r#"{"entities": {"event_timestamp": ["yesterday"]}}"#)
            .err()
            .unwrap();
        assert!(e.message().contains("entities.event_timestamp"), "{e}");
        let e = parse(r#"{"entities": {"a": [1]"#).err().unwrap();
        assert!(e.message().starts_with("request body is not JSON"), "{e}");
        let many = format!(
            r#"{{"features": [{}]}}"#,
            vec!["1"; MAX_OTHER_VALUES + 1].join(",")
        );
        let e = parse(&many).err().unwrap();
        assert!(e.message().contains("more than 100000 values"), "{e}");
    }

    #[test]
    fn counts_bound_the_table() {
        let body = format!(
            r#"{{"entities": {{"driver_id": [{}], "event_timestamp": [{}]}}}}"#,
            vec!["1001"; 1000].join(","),
            vec!["\"2026-01-01T00:00:00Z\""; 1000].join(",")
        );
        let counts = count(body.as_bytes()).unwrap();
        let p = build(body.as_bytes(), &counts).unwrap();
        let actual = p.entities.unwrap().batches[0].get_array_memory_size();
        assert!(
            actual <= counts.table_bytes(),
            "{actual} > {}",
            counts.table_bytes()
        );
    }
}

//! Arrow columns → Feast values: serialized `Value` protos, entity keys and event times.
//!
//! The scalar cases are encoded straight from the Arrow buffers into protobuf bytes (what
//! materialization spends its time on); lists go through [`Value`] and prost. Both give exactly
//! the bytes Feast's Python SDK writes (tested against `Value::encode_to_vec`).

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};
use quiver_core::time::Timestamp;
use quiver_core::{Fields, Value, ValueType};

/// Nanoseconds since the epoch: a total order for event and created times, wide enough for any
/// date a source holds.
pub type Nanos = i128;

pub fn nanos_to_timestamp(n: Nanos) -> Timestamp {
    let seconds = n.div_euclid(1_000_000_000);
    Timestamp {
        seconds: seconds as i64,
        nanos: n.rem_euclid(1_000_000_000) as i32,
    }
}

pub fn timestamp_to_nanos(t: &Timestamp) -> Nanos {
    Nanos::from(t.seconds) * 1_000_000_000 + Nanos::from(t.nanos)
}

/// Whether a column of this type can be an event or created timestamp.
pub fn is_time_type(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
    )
}

/// The time at row `i` of a timestamp or date column (a naive timestamp is UTC); `None` for null.
pub fn time_at(array: &dyn Array, i: usize) -> Option<Nanos> {
    if array.is_null(i) {
        return None;
    }
    let v = match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            Nanos::from(array.as_primitive::<TimestampSecondType>().value(i)) * 1_000_000_000
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Nanos::from(array.as_primitive::<TimestampMillisecondType>().value(i)) * 1_000_000
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Nanos::from(array.as_primitive::<TimestampMicrosecondType>().value(i)) * 1_000
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            Nanos::from(array.as_primitive::<TimestampNanosecondType>().value(i))
        }
        DataType::Date32 => {
            Nanos::from(array.as_primitive::<Date32Type>().value(i)) * 86_400 * 1_000_000_000
        }
        DataType::Date64 => Nanos::from(array.as_primitive::<Date64Type>().value(i)) * 1_000_000,
        _ => return None,
    };
    Some(v)
}

/// Whether a column of Arrow type `from` can hold values of Feast type `to`.
pub fn compatible(from: &DataType, to: ValueType) -> bool {
    use DataType as D;
    let int = |t: &DataType| {
        matches!(
            t,
            D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32
        )
    };
    let float = |t: &DataType| matches!(t, D::Float32 | D::Float64);
    let string = |t: &DataType| matches!(t, D::Utf8 | D::LargeUtf8 | D::Utf8View);
    let bytes = |t: &DataType| {
        matches!(
            t,
            D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_)
        )
    };
    let scalar = |t: &DataType, to: ValueType| match to {
        // What pyarrow writes for a dict column (a struct) or a map; Feast's SDK also takes
        // a dict's JSON text.
        ValueType::Map | ValueType::Struct => matches!(t, D::Struct(_) | D::Map(..)) || string(t),
        ValueType::Int32 | ValueType::Int64 => int(t),
        ValueType::Double | ValueType::Float => float(t) || int(t),
        ValueType::Bool => matches!(t, D::Boolean),
        ValueType::String | ValueType::Json | ValueType::Uuid | ValueType::TimeUuid => string(t),
        ValueType::Bytes | ValueType::PdfBytes | ValueType::ImageBytes => bytes(t) || string(t),
        // pyarrow's decimal columns (Feast prints the Python Decimal), or its text.
        ValueType::Decimal => matches!(t, D::Decimal128(..) | D::Decimal256(..)) || string(t),
        ValueType::UnixTimestamp => is_time_type(t) || int(t),
        _ => false,
    };
    let list = |t: &DataType| matches!(t, D::List(_) | D::LargeList(_) | D::FixedSizeList(..));
    if matches!(to, ValueType::ValueList | ValueType::ValueSet) {
        // Lists of lists: the inner lists' values typed as Feast infers them.
        return match from {
            D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _) => list(f.data_type()),
            _ => false,
        };
    }
    match (from, to.element()) {
        (D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _), Some(element)) => {
            scalar(f.data_type(), element)
        }
        // A list of dicts given as its JSON text.
        (t, Some(ValueType::Map | ValueType::Struct)) => string(t),
        (_, Some(_)) => false,
        _ => scalar(from, to),
    }
}

fn int_at(array: &dyn Array, i: usize) -> Option<i64> {
    Some(match array.data_type() {
        DataType::Int8 => i64::from(array.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => i64::from(array.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => i64::from(array.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(i),
        DataType::UInt8 => i64::from(array.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => i64::from(array.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => i64::from(array.as_primitive::<UInt32Type>().value(i)),
        _ => return None,
    })
}

fn float_at(array: &dyn Array, i: usize) -> Option<f64> {
    match array.data_type() {
        DataType::Float64 => Some(array.as_primitive::<Float64Type>().value(i)),
        DataType::Float32 => Some(f64::from(array.as_primitive::<Float32Type>().value(i))),
        _ => int_at(array, i).map(|v| v as f64),
    }
}

fn str_at(array: &dyn Array, i: usize) -> Option<&str> {
    match array.data_type() {
        DataType::Utf8 => Some(array.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(i)),
        DataType::Utf8View => Some(array.as_string_view().value(i)),
        _ => None,
    }
}

fn bytes_at(array: &dyn Array, i: usize) -> Option<&[u8]> {
    match array.data_type() {
        DataType::Binary => Some(array.as_binary::<i32>().value(i)),
        DataType::LargeBinary => Some(array.as_binary::<i64>().value(i)),
        DataType::BinaryView => Some(array.as_binary_view().value(i)),
        DataType::FixedSizeBinary(_) => Some(array.as_fixed_size_binary().value(i)),
        _ => str_at(array, i).map(str::as_bytes),
    }
}

fn seconds_at(array: &dyn Array, i: usize) -> Option<i64> {
    if is_time_type(array.data_type()) {
        time_at(array, i).map(|n| n.div_euclid(1_000_000_000) as i64)
    } else {
        int_at(array, i)
    }
}

/// The value at row `i` as Feast type `to` (`Null` for a null cell).
pub fn value_at(array: &dyn Array, i: usize, to: ValueType) -> Result<Value, String> {
    if array.is_null(i) {
        return Ok(Value::Null);
    }
    let wrong = || {
        format!(
            "a column of Arrow type {} cannot hold {to} values",
            array.data_type()
        )
    };
    if matches!(to, ValueType::ValueList | ValueType::ValueSet) {
        let outer: ArrayRef = match array.data_type() {
            DataType::List(_) => array.as_list::<i32>().value(i),
            DataType::LargeList(_) => array.as_list::<i64>().value(i),
            DataType::FixedSizeList(..) => array.as_fixed_size_list().value(i),
            _ => return Err(wrong()),
        };
        // Each inner list as Feast's SDK writes a Python list of unknown type: typed by its
        // items (an empty one is an empty Value: its type cannot be inferred).
        let items = (0..outer.len())
            .map(|j| {
                if outer.is_null(j) {
                    return Ok(Value::Null);
                }
                let v = infer_at(outer.as_ref(), j).or_else(|e| {
                    if e.starts_with("the type of an empty list") {
                        Ok(Value::Null)
                    } else {
                        Err(e)
                    }
                })?;
                Ok(v)
            })
            .collect::<Result<Vec<Value>, String>>()?;
        return Ok(if to == ValueType::ValueList {
            Value::ValueList(items)
        } else {
            Value::ValueSet(items)
        });
    }
    if let Some(element) = to.element() {
        if matches!(element, ValueType::Map | ValueType::Struct)
            && let Some(text) = str_at(array, i)
        {
            return from_json_text(text, to);
        }
        let list: ArrayRef = match array.data_type() {
            DataType::List(_) => array.as_list::<i32>().value(i),
            DataType::LargeList(_) => array.as_list::<i64>().value(i),
            DataType::FixedSizeList(..) => array.as_fixed_size_list().value(i),
            _ => return Err(wrong()),
        };
        let items = (0..list.len())
            .map(|j| value_at(list.as_ref(), j, element))
            .collect::<Result<Vec<Value>, String>>()?;
        return list_value(to, items).ok_or_else(wrong);
    }
    let v = match to {
        ValueType::Int32 => {
            let v = int_at(array, i).ok_or_else(wrong)?;
            Value::Int32(
                i32::try_from(v).map_err(|_| format!("{v} does not fit an Int32 feature"))?,
            )
        }
        ValueType::Int64 => Value::Int64(int_at(array, i).ok_or_else(wrong)?),
        ValueType::Double => Value::Double(float_at(array, i).ok_or_else(wrong)?),
        ValueType::Float => Value::Float(
            quiver_core::range::to_f32(float_at(array, i).ok_or_else(wrong)?)
                .map_err(|e| e.to_string())?,
        ),
        ValueType::Bool => match array.data_type() {
            DataType::Boolean => Value::Bool(array.as_boolean().value(i)),
            _ => return Err(wrong()),
        },
        ValueType::String => Value::String(str_at(array, i).ok_or_else(wrong)?.to_owned()),
        ValueType::Json => {
            let text = str_at(array, i).ok_or_else(wrong)?;
            // Feast's SDK refuses a Json value that is not JSON; so does this.
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| format!("a Json value is not valid JSON ({e}): {text:?}"))?;
            Value::Json(text.to_owned())
        }
        ValueType::Map | ValueType::Struct => match str_at(array, i) {
            Some(text) => from_json_text(text, to)?,
            None => {
                let fields = fields_at(array, i)?;
                if to == ValueType::Map {
                    Value::Map(fields)
                } else {
                    Value::Struct(fields)
                }
            }
        },
        ValueType::Uuid => Value::Uuid(str_at(array, i).ok_or_else(wrong)?.to_owned()),
        ValueType::TimeUuid => Value::TimeUuid(str_at(array, i).ok_or_else(wrong)?.to_owned()),
        ValueType::Bytes | ValueType::PdfBytes | ValueType::ImageBytes => {
            Value::Bytes(bytes_at(array, i).ok_or_else(wrong)?.to_vec())
        }
        ValueType::Decimal => Value::Decimal(match array.data_type() {
            // Python's `str(Decimal)` of what pyarrow hands over: the scale's digits kept
            // (`3.140` for 3.14 at scale 3), as Arrow prints it.
            DataType::Decimal128(..) => array
                .as_primitive::<arrow_array::types::Decimal128Type>()
                .value_as_string(i),
            DataType::Decimal256(..) => array
                .as_primitive::<arrow_array::types::Decimal256Type>()
                .value_as_string(i),
            _ => str_at(array, i).ok_or_else(wrong)?.to_owned(),
        }),
        ValueType::UnixTimestamp => Value::UnixTimestamp(seconds_at(array, i).ok_or_else(wrong)?),
        _ => return Err(format!("{to} features cannot be read from files yet")),
    };
    Ok(v)
}

/// A dict given as JSON text (Feast's SDK `json.loads` a string for these types): the same
/// parser as a request's.
fn from_json_text(text: &str, to: ValueType) -> Result<Value, String> {
    quiver_core::json::parse_value(&serde_json::Value::String(text.to_owned()), to)
}

/// Row `i` of a struct column (its fields in schema order) or a map column (its entries in
/// order), each value typed as Feast's SDK infers it from the Python object pyarrow gives.
fn fields_at(array: &dyn Array, i: usize) -> Result<Fields, String> {
    match array.data_type() {
        DataType::Struct(fields) => {
            let s = array.as_struct();
            fields
                .iter()
                .zip(s.columns())
                .map(|(f, col)| Ok((f.name().clone(), infer_at(col.as_ref(), i)?)))
                .collect()
        }
        DataType::Map(..) => {
            let entries = array.as_map().value(i);
            let (keys, values) = (entries.column(0), entries.column(1));
            (0..entries.len())
                .map(|j| {
                    let key = str_at(keys.as_ref(), j).ok_or_else(|| {
                        format!("map keys must be strings, not {}", keys.data_type())
                    })?;
                    Ok((key.to_owned(), infer_at(values.as_ref(), j)?))
                })
                .collect()
        }
        other => Err(format!("a column of Arrow type {other} cannot hold a map")),
    }
}

/// A value inside a map, whose type nothing declares: Feast's SDK infers it from the Python
/// object (int → Int64, float → Float64, str, bytes, bool, datetime → UnixTimestamp, dict →
/// Map, a list of dicts → MapList, another list → the list of its items' type).
fn infer_at(array: &dyn Array, i: usize) -> Result<Value, String> {
    use DataType as D;
    if array.is_null(i) {
        return Ok(Value::Null);
    }
    let t = array.data_type();
    let ty = match t {
        D::Struct(_) | D::Map(..) => ValueType::Map,
        D::Boolean => ValueType::Bool,
        D::Float32 | D::Float64 => ValueType::Double,
        D::Utf8 | D::LargeUtf8 | D::Utf8View => ValueType::String,
        D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => ValueType::Bytes,
        t if is_time_type(t) => ValueType::UnixTimestamp,
        // Feast's SDK reads a struct column through numpy, which turns an integer child that
        // holds a null into float64: its integers are then written as doubles. (A struct that
        // is null itself makes its children null in Parquet.) Done the same here, per batch.
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32
            if array.null_count() > 0 =>
        {
            ValueType::Double
        }
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 => {
            ValueType::Int64
        }
        D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _) => {
            let list_type = match f.data_type() {
                D::Struct(_) | D::Map(..) => ValueType::MapList,
                D::Boolean => ValueType::BoolList,
                D::Float32 | D::Float64 => ValueType::DoubleList,
                D::Utf8 | D::LargeUtf8 | D::Utf8View => ValueType::StringList,
                D::Binary | D::LargeBinary | D::BinaryView => ValueType::BytesList,
                t if is_time_type(t) => ValueType::UnixTimestampList,
                D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 => {
                    ValueType::Int64List
                }
                other => return Err(format!("a list of {other} inside a map is not supported")),
            };
            let v = value_at(array, i, list_type)?;
            // Feast cannot infer the type of an empty list and refuses it.
            if value_len(&v) == Some(0) {
                return Err("the type of an empty list inside a map cannot be inferred".to_owned());
            }
            return Ok(v);
        }
        other => return Err(format!("a {other} value inside a map is not supported")),
    };
    value_at(array, i, ty)
}

fn value_len(v: &Value) -> Option<usize> {
    Some(match v {
        Value::MapList(l) => l.len(),
        Value::BoolList(l) => l.len(),
        Value::DoubleList(l) => l.len(),
        Value::StringList(l) => l.len(),
        Value::BytesList(l) => l.len(),
        Value::UnixTimestampList(l) | Value::Int64List(l) => l.len(),
        _ => return None,
    })
}

fn list_value(to: ValueType, items: Vec<Value>) -> Option<Value> {
    macro_rules! collect {
        ($variant:ident, $item:ident) => {
            items
                .into_iter()
                .map(|v| match v {
                    Value::$item(x) => Some(x),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(Value::$variant)
        };
    }
    match to {
        ValueType::BytesList => collect!(BytesList, Bytes),
        ValueType::StringList => collect!(StringList, String),
        ValueType::Int32List => collect!(Int32List, Int32),
        ValueType::Int64List => collect!(Int64List, Int64),
        ValueType::DoubleList => collect!(DoubleList, Double),
        ValueType::FloatList => collect!(FloatList, Float),
        ValueType::BoolList => collect!(BoolList, Bool),
        ValueType::UnixTimestampList => collect!(UnixTimestampList, UnixTimestamp),
        ValueType::JsonList => collect!(JsonList, Json),
        ValueType::UuidList => collect!(UuidList, Uuid),
        ValueType::TimeUuidList => collect!(TimeUuidList, TimeUuid),
        ValueType::MapList => collect!(MapList, Map),
        ValueType::DecimalList => collect!(DecimalList, Decimal),
        ValueType::DecimalSet => collect!(DecimalSet, Decimal).map(Value::without_repeats),
        ValueType::StructList => collect!(StructList, Struct),
        // Sets: Feast's SDK builds them through a Python `set`, whose order quiver cannot
        // reproduce (it depends on hashes); duplicates go, the first occurrence's place stays.
        ValueType::BytesSet => collect!(BytesSet, Bytes).map(Value::without_repeats),
        ValueType::StringSet => collect!(StringSet, String).map(Value::without_repeats),
        ValueType::Int32Set => collect!(Int32Set, Int32).map(Value::without_repeats),
        ValueType::Int64Set => collect!(Int64Set, Int64).map(Value::without_repeats),
        ValueType::DoubleSet => collect!(DoubleSet, Double).map(Value::without_repeats),
        ValueType::FloatSet => collect!(FloatSet, Float).map(Value::without_repeats),
        ValueType::BoolSet => collect!(BoolSet, Bool).map(Value::without_repeats),
        ValueType::UnixTimestampSet => {
            collect!(UnixTimestampSet, UnixTimestamp).map(Value::without_repeats)
        }
        ValueType::UuidSet => collect!(UuidSet, Uuid).map(Value::without_repeats),
        ValueType::TimeUuidSet => collect!(TimeUuidSet, TimeUuid).map(Value::without_repeats),
        _ => None,
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends the serialized Feast `Value` of row `i` as type `to` (nothing for a null: an empty
/// `Value`). Scalars are written directly; the rest through [`Value`].
pub fn encode_at(
    out: &mut Vec<u8>,
    array: &dyn Array,
    i: usize,
    to: ValueType,
) -> Result<(), String> {
    if array.is_null(i) {
        let missing = Value::missing(to);
        if !missing.is_null() {
            out.extend_from_slice(&missing.encode_to_vec());
        }
        return Ok(());
    }
    let direct = match (to, array.data_type()) {
        (ValueType::Int64, DataType::Int64) => {
            out.push(0x20);
            put_varint(out, array.as_primitive::<Int64Type>().value(i) as u64);
            true
        }
        (ValueType::Int32, DataType::Int32) => {
            out.push(0x18);
            put_varint(
                out,
                i64::from(array.as_primitive::<Int32Type>().value(i)) as u64,
            );
            true
        }
        (ValueType::Double, DataType::Float64) => {
            out.push(0x29);
            out.extend_from_slice(&array.as_primitive::<Float64Type>().value(i).to_le_bytes());
            true
        }
        (ValueType::Float, DataType::Float64 | DataType::Float32) => {
            let v = quiver_core::range::to_f32(float_at(array, i).unwrap_or_default())
                .map_err(|e| e.to_string())?;
            out.push(0x35);
            out.extend_from_slice(&v.to_le_bytes());
            true
        }
        (ValueType::Bool, DataType::Boolean) => {
            out.push(0x38);
            out.push(u8::from(array.as_boolean().value(i)));
            true
        }
        (ValueType::String, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
            let s = str_at(array, i).unwrap_or_default();
            out.push(0x12);
            put_varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
            true
        }
        _ => false,
    };
    if !direct {
        let value = value_at(array, i, to)?;
        quiver_core::range::check_value(&value).map_err(|e| e.to_string())?;
        out.extend_from_slice(&value.encode_to_vec());
    }
    Ok(())
}

/// The entity-key value at row `i` of a join-key column, typed by the entity's value type.
pub fn key_value_at(array: &dyn Array, i: usize, to: ValueType) -> Result<Value, String> {
    if array.is_null(i) {
        return Err("a join key is null".to_owned());
    }
    match to {
        ValueType::String
        | ValueType::Bytes
        | ValueType::Int32
        | ValueType::Int64
        | ValueType::UnixTimestamp => value_at(array, i, to),
        other => Err(format!(
            "entity keys of type {other} are not supported (String, Bytes, Int32, Int64, UnixTimestamp)"
        )),
    }
}

/// Writes entity keys (serialization v3) straight from join-key columns: the names part is
/// built once, each row appends only its values, with no intermediate [`Value`]s.
pub struct KeyEncoder {
    /// `count` and the sorted names, as every key of this view starts.
    prefix: Vec<u8>,
    /// Indices into the caller's key columns, in sorted join-key order, with their types.
    order: Vec<(usize, ValueType)>,
}

impl KeyEncoder {
    /// `keys`: join key names and their entity types, in the caller's column order.
    pub fn new(keys: &[(&str, ValueType)]) -> KeyEncoder {
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by(|&a, &b| keys[a].0.cmp(keys[b].0));
        let mut prefix = Vec::new();
        prefix.extend_from_slice(&(keys.len() as u32).to_le_bytes());
        for &i in &order {
            prefix.extend_from_slice(&(ValueType::String as u32).to_le_bytes());
            prefix.extend_from_slice(&(keys[i].0.len() as u32).to_le_bytes());
            prefix.extend_from_slice(keys[i].0.as_bytes());
        }
        KeyEncoder {
            prefix,
            order: order.into_iter().map(|i| (i, keys[i].1)).collect(),
        }
    }

    /// Appends row `i`'s key, reading `columns[j]` for the `j`-th join key.
    pub fn encode(
        &self,
        out: &mut Vec<u8>,
        columns: &[&dyn Array],
        i: usize,
    ) -> Result<(), String> {
        out.extend_from_slice(&self.prefix);
        for &(c, ty) in &self.order {
            let array = columns[c];
            if array.is_null(i) {
                return Err("a join key is null".to_owned());
            }
            let mut put = |payload: &[u8]| {
                out.extend_from_slice(&(ty as u32).to_le_bytes());
                out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                out.extend_from_slice(payload);
            };
            match ty {
                ValueType::Int64 => put(&int_at(array, i)
                    .ok_or("not an integer column")?
                    .to_le_bytes()),
                ValueType::Int32 => {
                    let v = int_at(array, i).ok_or("not an integer column")?;
                    let v =
                        i32::try_from(v).map_err(|_| format!("{v} does not fit an Int32 key"))?;
                    put(&v.to_le_bytes());
                }
                ValueType::UnixTimestamp => put(&seconds_at(array, i)
                    .ok_or("not a timestamp column")?
                    .to_le_bytes()),
                ValueType::String => put(str_at(array, i).ok_or("not a string column")?.as_bytes()),
                ValueType::Bytes => put(bytes_at(array, i).ok_or("not a binary column")?),
                other => {
                    return Err(format!(
                        "entity keys of type {other} are not supported (String, Bytes, Int32, Int64, UnixTimestamp)"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::{
        BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
        TimestampMicrosecondArray, TimestampSecondArray,
    };

    use super::*;

    fn same_as_prost(array: &dyn Array, to: ValueType) {
        for i in 0..array.len() {
            let mut direct = Vec::new();
            encode_at(&mut direct, array, i, to).unwrap();
            let via_value = value_at(array, i, to).unwrap().encode_to_vec();
            assert_eq!(
                direct,
                via_value,
                "row {i} of {} as {to}",
                array.data_type()
            );
        }
    }

    #[test]
    fn direct_scalar_encoding_is_prosts() {
        same_as_prost(
            &Int64Array::from(vec![Some(0), Some(-1), Some(1001), None, Some(i64::MAX)]),
            ValueType::Int64,
        );
        same_as_prost(
            &Int32Array::from(vec![Some(0), Some(-5), Some(i32::MAX), None]),
            ValueType::Int32,
        );
        same_as_prost(
            &Float64Array::from(vec![Some(0.0), Some(-2.5), Some(f64::NAN), None]),
            ValueType::Double,
        );
        same_as_prost(
            &Float64Array::from(vec![Some(0.8057101964950562), None]),
            ValueType::Float,
        );
        same_as_prost(
            &Float32Array::from(vec![Some(0.25f32), Some(-0.0)]),
            ValueType::Float,
        );
        same_as_prost(
            &BooleanArray::from(vec![Some(true), Some(false), None]),
            ValueType::Bool,
        );
        same_as_prost(
            &StringArray::from(vec![Some(""), Some("héllo"), None]),
            ValueType::String,
        );
    }

    #[test]
    fn lists_and_timestamps() {
        let mut b = ListBuilder::new(StringBuilder::new());
        b.values().append_value("a");
        b.values().append_value("b");
        b.append(true);
        b.append(true);
        b.append(false);
        let lists = b.finish();
        assert_eq!(
            value_at(&lists, 0, ValueType::StringList).unwrap(),
            Value::StringList(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            value_at(&lists, 1, ValueType::StringList).unwrap(),
            Value::StringList(vec![])
        );
        assert_eq!(
            value_at(&lists, 2, ValueType::StringList).unwrap(),
            Value::Null
        );
        assert!(value_at(&lists, 0, ValueType::Int64List).is_err());

        let micros =
            TimestampMicrosecondArray::from(vec![1_700_000_000_123_456]).with_timezone("UTC");
        assert_eq!(time_at(&micros, 0), Some(1_700_000_000_123_456_000));
        assert_eq!(
            value_at(&micros, 0, ValueType::UnixTimestamp).unwrap(),
            Value::UnixTimestamp(1_700_000_000)
        );
        let secs = TimestampSecondArray::from(vec![-1]);
        assert_eq!(
            nanos_to_timestamp(time_at(&secs, 0).unwrap()),
            Timestamp {
                seconds: -1,
                nanos: 0
            }
        );
        let arr: ArrayRef = Arc::new(Int64Array::from(vec![3_000_000_000i64]));
        assert!(
            value_at(arr.as_ref(), 0, ValueType::Int32)
                .unwrap_err()
                .contains("Int32")
        );
    }

    #[test]
    fn key_encoder_matches_entity_key_serialize() {
        let ids = Int64Array::from(vec![1001, -7]);
        let names = StringArray::from(vec!["c1", ""]);
        let small = Int32Array::from(vec![5, 6]);
        let enc = KeyEncoder::new(&[
            ("driver_id", ValueType::Int64),
            ("customer_id", ValueType::String),
            ("store", ValueType::Int32),
        ]);
        for i in 0..2 {
            let mut got = Vec::new();
            enc.encode(&mut got, &[&ids, &names, &small], i).unwrap();
            let expected = quiver_core::entity_key::serialize(&[
                ("driver_id", &Value::Int64(ids.value(i))),
                ("customer_id", &Value::String(names.value(i).to_owned())),
                ("store", &Value::Int32(small.value(i))),
            ])
            .unwrap();
            assert_eq!(got, expected);
        }
        let nulls = Int64Array::from(vec![None, Some(1)]);
        let one = KeyEncoder::new(&[("driver_id", ValueType::Int64)]);
        assert!(
            one.encode(&mut Vec::new(), &[&nulls], 0)
                .unwrap_err()
                .contains("null")
        );
    }

    #[test]
    fn maps_from_map_columns_keep_entry_order_and_infer_types() {
        use arrow_array::builder::{Int64Builder, MapBuilder};
        let mut b = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
        b.keys().append_value("z");
        b.values().append_value(1);
        b.keys().append_value("a");
        b.values().append_null();
        b.append(true).unwrap();
        b.append(false).unwrap();
        let maps = b.finish();
        assert!(compatible(maps.data_type(), ValueType::Map));
        // The value column holds a null in this batch: Feast's SDK sees it through numpy as
        // float64, so the integers are doubles.
        assert_eq!(
            value_at(&maps, 0, ValueType::Map).unwrap(),
            Value::Map(vec![
                ("z".to_owned(), Value::Double(1.0)),
                ("a".to_owned(), Value::Null),
            ])
        );
        assert_eq!(value_at(&maps, 1, ValueType::Map).unwrap(), Value::Null);
        // JSON text stands for the dict, as in Feast's SDK; a Json value must be JSON.
        let text = StringArray::from(vec![r#"{"b": 1, "a": "x"}"#, "{oops"]);
        assert_eq!(
            value_at(&text, 0, ValueType::Struct).unwrap(),
            Value::Struct(vec![
                ("b".to_owned(), Value::Int64(1)),
                ("a".to_owned(), Value::String("x".into())),
            ])
        );
        assert!(
            value_at(&text, 1, ValueType::Json)
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(!compatible(&DataType::Int64, ValueType::Map));
    }

    #[test]
    fn compatibility() {
        assert!(compatible(&DataType::Float64, ValueType::Float));
        assert!(compatible(&DataType::Int64, ValueType::Int32));
        assert!(!compatible(&DataType::Utf8, ValueType::Int64));
        let list = DataType::List(Arc::new(arrow_schema::Field::new(
            "item",
            DataType::Float64,
            true,
        )));
        assert!(compatible(&list, ValueType::DoubleList));
        assert!(!compatible(&list, ValueType::Double));
        assert!(!compatible(&DataType::Float64, ValueType::DoubleList));
    }
}

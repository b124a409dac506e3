//! Feature and entity values: quiver's `Value` and its lossless mapping to Feast's `Value` proto.

use prost::Message;

use crate::ValueType;
use crate::proto::types as pb;
use crate::proto::types::value::Val;

/// Feast's `NULL_TIMESTAMP_INT_VALUE`: the UnixTimestamp it writes for a missing one.
pub const NULL_TIMESTAMP: i64 = i64::MIN;

/// The entries of a Map or Struct value, in their order: a Struct's schema order, a Map's
/// insertion order, or the order they were stored in. Feast's Python SDK keeps no order of its own
/// (upb writes map entries in a per-process hash order), so quiver keeps the order it is given.
pub type Fields = Vec<(String, Value)>;

/// One feature or entity value. Mirrors the cases of Feast's `Value` oneof that quiver models;
/// `Null` is an unset value (zero bytes on the wire).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bytes(Vec<u8>),
    String(String),
    Int32(i32),
    Int64(i64),
    Double(f64),
    Float(f32),
    Bool(bool),
    /// Seconds since the epoch.
    UnixTimestamp(i64),
    BytesList(Vec<Vec<u8>>),
    StringList(Vec<String>),
    Int32List(Vec<i32>),
    Int64List(Vec<i64>),
    DoubleList(Vec<f64>),
    FloatList(Vec<f32>),
    BoolList(Vec<bool>),
    UnixTimestampList(Vec<i64>),
    Map(Fields),
    MapList(Vec<Fields>),
    BytesSet(Vec<Vec<u8>>),
    StringSet(Vec<String>),
    Int32Set(Vec<i32>),
    Int64Set(Vec<i64>),
    DoubleSet(Vec<f64>),
    FloatSet(Vec<f32>),
    BoolSet(Vec<bool>),
    UnixTimestampSet(Vec<i64>),
    /// JSON document text.
    Json(String),
    JsonList(Vec<String>),
    Struct(Fields),
    StructList(Vec<Fields>),
    Uuid(String),
    TimeUuid(String),
    UuidList(Vec<String>),
    TimeUuidList(Vec<String>),
    UuidSet(Vec<String>),
    TimeUuidSet(Vec<String>),
    /// Nested lists (`list_val`, `Array(Array(T))`): values of any type.
    ValueList(Vec<Value>),
    /// Sets of lists (`set_val`).
    ValueSet(Vec<Value>),
    /// A decimal number as Feast stores it: its text (`str(decimal.Decimal)`).
    Decimal(String),
    DecimalList(Vec<String>),
    DecimalSet(Vec<String>),
    /// A map with typed keys (`scalar_map_val`), entries in their wire order.
    ScalarMap(Vec<(MapKey, Value)>),
    /// An instant (seconds since the epoch) and the zone it was written in ("" = UTC).
    ZonedTimestamp {
        seconds: i64,
        zone: String,
    },
}

/// The key of a [`Value::ScalarMap`] entry (Feast's `MapKey` oneof); `Unset` for an entry
/// written without one.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum MapKey {
    #[default]
    Unset,
    Int32(i32),
    Int64(i64),
    Float(f32),
    Double(f64),
    Bool(bool),
    UnixTimestamp(i64),
    Bytes(Vec<u8>),
    Uuid(String),
    TimeUuid(String),
    Decimal(String),
}

impl From<pb::MapKey> for MapKey {
    fn from(k: pb::MapKey) -> MapKey {
        use pb::map_key::Key;
        match k.key {
            None => MapKey::Unset,
            Some(Key::Int32Key(v)) => MapKey::Int32(v),
            Some(Key::Int64Key(v)) => MapKey::Int64(v),
            Some(Key::FloatKey(v)) => MapKey::Float(v),
            Some(Key::DoubleKey(v)) => MapKey::Double(v),
            Some(Key::BoolKey(v)) => MapKey::Bool(v),
            Some(Key::UnixTimestampKey(v)) => MapKey::UnixTimestamp(v),
            Some(Key::BytesKey(v)) => MapKey::Bytes(v),
            Some(Key::UuidKey(v)) => MapKey::Uuid(v),
            Some(Key::TimeUuidKey(v)) => MapKey::TimeUuid(v),
            Some(Key::DecimalKey(v)) => MapKey::Decimal(v),
        }
    }
}

impl From<MapKey> for pb::MapKey {
    fn from(k: MapKey) -> pb::MapKey {
        use pb::map_key::Key;
        pb::MapKey {
            key: match k {
                MapKey::Unset => None,
                MapKey::Int32(v) => Some(Key::Int32Key(v)),
                MapKey::Int64(v) => Some(Key::Int64Key(v)),
                MapKey::Float(v) => Some(Key::FloatKey(v)),
                MapKey::Double(v) => Some(Key::DoubleKey(v)),
                MapKey::Bool(v) => Some(Key::BoolKey(v)),
                MapKey::UnixTimestamp(v) => Some(Key::UnixTimestampKey(v)),
                MapKey::Bytes(v) => Some(Key::BytesKey(v)),
                MapKey::Uuid(v) => Some(Key::UuidKey(v)),
                MapKey::TimeUuid(v) => Some(Key::TimeUuidKey(v)),
                MapKey::Decimal(v) => Some(Key::DecimalKey(v)),
            },
        }
    }
}

impl Value {
    /// The value's type; `Null` for an unset value.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Null => ValueType::Null,
            Value::Bytes(_) => ValueType::Bytes,
            Value::String(_) => ValueType::String,
            Value::Int32(_) => ValueType::Int32,
            Value::Int64(_) => ValueType::Int64,
            Value::Double(_) => ValueType::Double,
            Value::Float(_) => ValueType::Float,
            Value::Bool(_) => ValueType::Bool,
            Value::UnixTimestamp(_) => ValueType::UnixTimestamp,
            Value::BytesList(_) => ValueType::BytesList,
            Value::StringList(_) => ValueType::StringList,
            Value::Int32List(_) => ValueType::Int32List,
            Value::Int64List(_) => ValueType::Int64List,
            Value::DoubleList(_) => ValueType::DoubleList,
            Value::FloatList(_) => ValueType::FloatList,
            Value::BoolList(_) => ValueType::BoolList,
            Value::UnixTimestampList(_) => ValueType::UnixTimestampList,
            Value::Map(_) => ValueType::Map,
            Value::MapList(_) => ValueType::MapList,
            Value::BytesSet(_) => ValueType::BytesSet,
            Value::StringSet(_) => ValueType::StringSet,
            Value::Int32Set(_) => ValueType::Int32Set,
            Value::Int64Set(_) => ValueType::Int64Set,
            Value::DoubleSet(_) => ValueType::DoubleSet,
            Value::FloatSet(_) => ValueType::FloatSet,
            Value::BoolSet(_) => ValueType::BoolSet,
            Value::UnixTimestampSet(_) => ValueType::UnixTimestampSet,
            Value::Json(_) => ValueType::Json,
            Value::JsonList(_) => ValueType::JsonList,
            Value::Struct(_) => ValueType::Struct,
            Value::StructList(_) => ValueType::StructList,
            Value::Uuid(_) => ValueType::Uuid,
            Value::TimeUuid(_) => ValueType::TimeUuid,
            Value::UuidList(_) => ValueType::UuidList,
            Value::TimeUuidList(_) => ValueType::TimeUuidList,
            Value::UuidSet(_) => ValueType::UuidSet,
            Value::TimeUuidSet(_) => ValueType::TimeUuidSet,
            Value::ValueList(_) => ValueType::ValueList,
            Value::ValueSet(_) => ValueType::ValueSet,
            Value::Decimal(_) => ValueType::Decimal,
            Value::DecimalList(_) => ValueType::DecimalList,
            Value::DecimalSet(_) => ValueType::DecimalSet,
            Value::ScalarMap(_) => ValueType::ScalarMap,
            Value::ZonedTimestamp { .. } => ValueType::ZonedTimestamp,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A set value without repeated items: the first of equal items stays, in its place
    /// (Feast's SDK builds sets through a Python `set`, whose hash order quiver cannot
    /// reproduce). Other values are returned as they are.
    pub fn without_repeats(self) -> Value {
        fn keep_first<T: PartialEq>(l: Vec<T>) -> Vec<T> {
            let mut out: Vec<T> = Vec::with_capacity(l.len());
            for x in l {
                if !out.contains(&x) {
                    out.push(x);
                }
            }
            out
        }
        match self {
            Value::BytesSet(l) => Value::BytesSet(keep_first(l)),
            Value::StringSet(l) => Value::StringSet(keep_first(l)),
            Value::Int32Set(l) => Value::Int32Set(keep_first(l)),
            Value::Int64Set(l) => Value::Int64Set(keep_first(l)),
            Value::DoubleSet(l) => Value::DoubleSet(keep_first(l)),
            Value::FloatSet(l) => Value::FloatSet(keep_first(l)),
            Value::BoolSet(l) => Value::BoolSet(keep_first(l)),
            Value::UnixTimestampSet(l) => Value::UnixTimestampSet(keep_first(l)),
            Value::UuidSet(l) => Value::UuidSet(keep_first(l)),
            Value::TimeUuidSet(l) => Value::TimeUuidSet(keep_first(l)),
            Value::DecimalSet(l) => Value::DecimalSet(keep_first(l)),
            Value::ValueSet(l) => Value::ValueSet(keep_first(l)),
            other => other,
        }
    }

    /// What Feast's SDK stores for a missing value of type `ty` (a null cell materialized, a
    /// null pushed): an empty `Value`, except for UnixTimestamp, which it stores as
    /// [`NULL_TIMESTAMP`] (checked against Feast 0.67's materialize and write-to-online-store).
    pub fn missing(ty: ValueType) -> Value {
        match ty {
            ValueType::UnixTimestamp => Value::UnixTimestamp(NULL_TIMESTAMP),
            ValueType::ZonedTimestamp => Value::ZonedTimestamp {
                seconds: NULL_TIMESTAMP,
                zone: String::new(),
            },
            _ => Value::Null,
        }
    }

    /// Decodes a serialized Feast `Value` (as stored in Redis and SQLite). Empty bytes are null;
    /// unknown oneof cases (newer Feast types quiver does not model) decode as null too.
    pub fn decode(bytes: &[u8]) -> Result<Value, prost::DecodeError> {
        Ok(Value::from(pb::Value::decode(bytes)?))
    }

    /// Serializes as a Feast `Value`, byte for byte what Feast's Python SDK writes.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        pb::Value::from(self.clone()).encode_to_vec()
    }
}

/// Entries in their wire order. A key repeated on the wire is a map's later write winning (what
/// protobuf's map semantics say): the value replaces the earlier one, in the earlier one's place.
fn map_from_proto(m: pb::Map) -> Fields {
    let mut fields: Fields = Vec::with_capacity(m.val.len());
    for entry in m.val {
        let key = entry.key.unwrap_or_default();
        let value = entry.value.map(Value::from).unwrap_or_default();
        match fields.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => fields.push((key, value)),
        }
    }
    fields
}

fn map_to_proto(m: Fields) -> pb::Map {
    pb::Map {
        val: m
            .into_iter()
            .map(|(k, v)| pb::MapEntry {
                key: Some(k),
                value: Some(pb::Value::from(v)),
            })
            .collect(),
    }
}

impl From<pb::Value> for Value {
    fn from(v: pb::Value) -> Self {
        let Some(val) = v.val else {
            return Value::Null;
        };
        match val {
            Val::BytesVal(b) => Value::Bytes(b),
            Val::StringVal(s) => Value::String(s),
            Val::Int32Val(i) => Value::Int32(i),
            Val::Int64Val(i) => Value::Int64(i),
            Val::DoubleVal(d) => Value::Double(d),
            Val::FloatVal(f) => Value::Float(f),
            Val::BoolVal(b) => Value::Bool(b),
            Val::UnixTimestampVal(t) => Value::UnixTimestamp(t),
            Val::BytesListVal(l) => Value::BytesList(l.val),
            Val::StringListVal(l) => Value::StringList(l.val),
            Val::Int32ListVal(l) => Value::Int32List(l.val),
            Val::Int64ListVal(l) => Value::Int64List(l.val),
            Val::DoubleListVal(l) => Value::DoubleList(l.val),
            Val::FloatListVal(l) => Value::FloatList(l.val),
            Val::BoolListVal(l) => Value::BoolList(l.val),
            Val::UnixTimestampListVal(l) => Value::UnixTimestampList(l.val),
            Val::NullVal(_) => Value::Null,
            Val::MapVal(m) => Value::Map(map_from_proto(m)),
            Val::MapListVal(l) => Value::MapList(l.val.into_iter().map(map_from_proto).collect()),
            Val::BytesSetVal(l) => Value::BytesSet(l.val),
            Val::StringSetVal(l) => Value::StringSet(l.val),
            Val::Int32SetVal(l) => Value::Int32Set(l.val),
            Val::Int64SetVal(l) => Value::Int64Set(l.val),
            Val::DoubleSetVal(l) => Value::DoubleSet(l.val),
            Val::FloatSetVal(l) => Value::FloatSet(l.val),
            Val::BoolSetVal(l) => Value::BoolSet(l.val),
            Val::UnixTimestampSetVal(l) => Value::UnixTimestampSet(l.val),
            Val::JsonVal(s) => Value::Json(s),
            Val::JsonListVal(l) => Value::JsonList(l.val),
            Val::StructVal(m) => Value::Struct(map_from_proto(m)),
            Val::StructListVal(l) => {
                Value::StructList(l.val.into_iter().map(map_from_proto).collect())
            }
            Val::UuidVal(s) => Value::Uuid(s),
            Val::TimeUuidVal(s) => Value::TimeUuid(s),
            Val::UuidListVal(l) => Value::UuidList(l.val),
            Val::TimeUuidListVal(l) => Value::TimeUuidList(l.val),
            Val::UuidSetVal(l) => Value::UuidSet(l.val),
            Val::TimeUuidSetVal(l) => Value::TimeUuidSet(l.val),
            Val::ListVal(l) => Value::ValueList(l.val.into_iter().map(Value::from).collect()),
            Val::SetVal(l) => Value::ValueSet(l.val.into_iter().map(Value::from).collect()),
            Val::DecimalVal(s) => Value::Decimal(s),
            Val::DecimalListVal(l) => Value::DecimalList(l.val),
            Val::DecimalSetVal(l) => Value::DecimalSet(l.val),
            Val::ScalarMapVal(m) => Value::ScalarMap(
                m.val
                    .into_iter()
                    .map(|e| {
                        (
                            e.key.map(MapKey::from).unwrap_or_default(),
                            e.value.map(Value::from).unwrap_or_default(),
                        )
                    })
                    .collect(),
            ),
            Val::ZonedTimestampVal(z) => Value::ZonedTimestamp {
                seconds: z.unix_timestamp,
                zone: z.zone,
            },
        }
    }
}

impl From<Value> for pb::Value {
    fn from(v: Value) -> Self {
        let val = match v {
            Value::Null => None,
            Value::Bytes(b) => Some(Val::BytesVal(b)),
            Value::String(s) => Some(Val::StringVal(s)),
            Value::Int32(i) => Some(Val::Int32Val(i)),
            Value::Int64(i) => Some(Val::Int64Val(i)),
            Value::Double(d) => Some(Val::DoubleVal(d)),
            Value::Float(f) => Some(Val::FloatVal(f)),
            Value::Bool(b) => Some(Val::BoolVal(b)),
            Value::UnixTimestamp(t) => Some(Val::UnixTimestampVal(t)),
            Value::BytesList(val) => Some(Val::BytesListVal(pb::BytesList { val })),
            Value::StringList(val) => Some(Val::StringListVal(pb::StringList { val })),
            Value::Int32List(val) => Some(Val::Int32ListVal(pb::Int32List { val })),
            Value::Int64List(val) => Some(Val::Int64ListVal(pb::Int64List { val })),
            Value::DoubleList(val) => Some(Val::DoubleListVal(pb::DoubleList { val })),
            Value::FloatList(val) => Some(Val::FloatListVal(pb::FloatList { val })),
            Value::BoolList(val) => Some(Val::BoolListVal(pb::BoolList { val })),
            Value::UnixTimestampList(val) => Some(Val::UnixTimestampListVal(pb::Int64List { val })),
            Value::Map(m) => Some(Val::MapVal(map_to_proto(m))),
            Value::MapList(l) => Some(Val::MapListVal(pb::MapList {
                val: l.into_iter().map(map_to_proto).collect(),
            })),
            Value::BytesSet(val) => Some(Val::BytesSetVal(pb::BytesList { val })),
            Value::StringSet(val) => Some(Val::StringSetVal(pb::StringList { val })),
            Value::Int32Set(val) => Some(Val::Int32SetVal(pb::Int32List { val })),
            Value::Int64Set(val) => Some(Val::Int64SetVal(pb::Int64List { val })),
            Value::DoubleSet(val) => Some(Val::DoubleSetVal(pb::DoubleList { val })),
            Value::FloatSet(val) => Some(Val::FloatSetVal(pb::FloatList { val })),
            Value::BoolSet(val) => Some(Val::BoolSetVal(pb::BoolList { val })),
            Value::UnixTimestampSet(val) => Some(Val::UnixTimestampSetVal(pb::Int64List { val })),
            Value::Json(s) => Some(Val::JsonVal(s)),
            Value::JsonList(val) => Some(Val::JsonListVal(pb::StringList { val })),
            Value::Struct(m) => Some(Val::StructVal(map_to_proto(m))),
            Value::StructList(l) => Some(Val::StructListVal(pb::MapList {
                val: l.into_iter().map(map_to_proto).collect(),
            })),
            Value::Uuid(s) => Some(Val::UuidVal(s)),
            Value::TimeUuid(s) => Some(Val::TimeUuidVal(s)),
            Value::UuidList(val) => Some(Val::UuidListVal(pb::StringList { val })),
            Value::TimeUuidList(val) => Some(Val::TimeUuidListVal(pb::StringList { val })),
            Value::UuidSet(val) => Some(Val::UuidSetVal(pb::StringList { val })),
            Value::TimeUuidSet(val) => Some(Val::TimeUuidSetVal(pb::StringList { val })),
            Value::ValueList(l) => Some(Val::ListVal(pb::RepeatedValue {
                val: l.into_iter().map(pb::Value::from).collect(),
            })),
            Value::ValueSet(l) => Some(Val::SetVal(pb::RepeatedValue {
                val: l.into_iter().map(pb::Value::from).collect(),
            })),
            Value::Decimal(s) => Some(Val::DecimalVal(s)),
            Value::DecimalList(val) => Some(Val::DecimalListVal(pb::StringList { val })),
            Value::DecimalSet(val) => Some(Val::DecimalSetVal(pb::StringList { val })),
            // Feast writes the key and the value of every entry (an empty value for a null).
            Value::ScalarMap(m) => Some(Val::ScalarMapVal(pb::ScalarMap {
                val: m
                    .into_iter()
                    .map(|(k, v)| pb::ScalarMapEntry {
                        key: Some(k.into()),
                        value: Some(v.into()),
                    })
                    .collect(),
            })),
            Value::ZonedTimestamp { seconds, zone } => {
                Some(Val::ZonedTimestampVal(pb::ZonedTimestamp {
                    unix_timestamp: seconds,
                    zone,
                }))
            }
        };
        pb::Value { val }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_is_zero_bytes() {
        assert!(Value::Null.encode_to_vec().is_empty());
        assert_eq!(Value::decode(&[]).unwrap(), Value::Null);
    }

    #[test]
    fn proto_round_trip_every_kind() {
        let m: Fields = vec![
            ("b".to_owned(), Value::StringList(vec!["x".into()])),
            ("a".to_owned(), Value::Int64(1)),
            (String::new(), Value::Null),
        ];
        let values = vec![
            Value::Bytes(vec![0, 255]),
            Value::String("ü".into()),
            Value::Int32(-7),
            Value::Int64(i64::MIN),
            Value::Double(0.1),
            Value::Float(0.805_710_2),
            Value::Bool(false),
            Value::UnixTimestamp(1_795_658_400),
            Value::BytesList(vec![vec![], vec![1]]),
            Value::StringList(vec![]),
            Value::Int32List(vec![1, 2]),
            Value::Int64List(vec![-1]),
            Value::DoubleList(vec![f64::INFINITY]),
            Value::FloatList(vec![1.5]),
            Value::BoolList(vec![true, false]),
            Value::UnixTimestampList(vec![0]),
            Value::Map(m.clone()),
            Value::MapList(vec![m.clone(), Vec::new()]),
            Value::BytesSet(vec![vec![3]]),
            Value::StringSet(vec!["s".into()]),
            Value::Int32Set(vec![3]),
            Value::Int64Set(vec![4]),
            Value::DoubleSet(vec![5.0]),
            Value::FloatSet(vec![6.0]),
            Value::BoolSet(vec![true]),
            Value::UnixTimestampSet(vec![8]),
            Value::Json("{\"k\": 1}".into()),
            Value::JsonList(vec!["[]".into()]),
            Value::Struct(m.clone()),
            Value::StructList(vec![m]),
            Value::Uuid("u".into()),
            Value::TimeUuid("t".into()),
            Value::UuidList(vec!["u".into()]),
            Value::TimeUuidList(vec!["t".into()]),
            Value::UuidSet(vec!["u".into()]),
            Value::TimeUuidSet(vec!["t".into()]),
            Value::ValueList(vec![Value::Int64List(vec![1]), Value::Null]),
            Value::ValueSet(vec![Value::StringList(vec!["a".into()])]),
            Value::Decimal("3.14".into()),
            Value::DecimalList(vec!["1".into(), "-2.5".into()]),
            Value::DecimalSet(vec!["0.1".into()]),
            Value::ScalarMap(vec![
                (MapKey::Int64(2), Value::String("b".into())),
                (MapKey::Bool(true), Value::Null),
                (MapKey::Decimal("1.5".into()), Value::Double(1.0)),
            ]),
            Value::ZonedTimestamp {
                seconds: 1_795_658_400,
                zone: "America/New_York".into(),
            },
        ];
        for v in values {
            let bytes = v.encode_to_vec();
            let back = Value::decode(&bytes).unwrap();
            assert_eq!(back, v);
            // The first byte is the oneof field number's tag: the enum number equals it.
            let low = u64::from(bytes[0] & 0x7f) >> 3;
            let field = low
                | if bytes[0] & 0x80 != 0 {
                    u64::from(bytes[1]) << 4
                } else {
                    0
                };
            assert_eq!(field as i32, v.value_type() as i32, "{v:?}");
        }
    }

    #[test]
    fn map_entries_keep_their_order_and_carry_both_fields() {
        // What Python's protobuf (upb) writes for {"b": "", "": null}: an entry always has its
        // key and its value, even empty ones (bytes taken from Feast 0.67's venv).
        let v = Value::Map(vec![
            ("b".to_owned(), Value::String(String::new())),
            (String::new(), Value::Null),
        ]);
        let bytes = v.encode_to_vec();
        assert_eq!(
            bytes,
            [
                0xa2, 0x01, 0x0f, 0x0a, 0x07, 0x0a, 0x01, b'b', 0x12, 0x02, 0x12, 0x00, 0x0a, 0x04,
                0x0a, 0x00, 0x12, 0x00
            ]
        );
        assert_eq!(Value::decode(&bytes).unwrap(), v);
        // An entry without its fields is key "" and a null value; a repeated key keeps its
        // first place and its last value.
        let bytes = [
            0xa2, 0x01, 0x12, 0x0a, 0x00, 0x0a, 0x05, 0x0a, 0x01, b'k', 0x12, 0x00, 0x0a, 0x07,
            0x0a, 0x01, b'k', 0x12, 0x02, 0x20, 0x01,
        ];
        assert_eq!(
            Value::decode(&bytes).unwrap(),
            Value::Map(vec![
                (String::new(), Value::Null),
                ("k".to_owned(), Value::Int64(1)),
            ])
        );
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // field 49 (newer than Feast 0.67's Value) followed by nothing else.
        let bytes = [0x8a, 0x03, 0x00];
        assert_eq!(Value::decode(&bytes).unwrap(), Value::Null);
    }
}

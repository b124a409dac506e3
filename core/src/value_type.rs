//! Feast's `ValueType`, with the names it goes by: the protobuf enum (`INT64`), and the Python
//! dtype names of feature schemas (`Int64`, `Array(Int32)`).

use std::fmt;

use crate::proto::types::value_type::Enum as ProtoValueType;

/// The type of a feature or entity value. Discriminants are Feast's enum numbers, which are also
/// the field numbers of the matching `Value` oneof case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum ValueType {
    Invalid = 0,
    Bytes = 1,
    String = 2,
    Int32 = 3,
    Int64 = 4,
    Double = 5,
    Float = 6,
    Bool = 7,
    UnixTimestamp = 8,
    BytesList = 11,
    StringList = 12,
    Int32List = 13,
    Int64List = 14,
    DoubleList = 15,
    FloatList = 16,
    BoolList = 17,
    UnixTimestampList = 18,
    Null = 19,
    Map = 20,
    MapList = 21,
    BytesSet = 22,
    StringSet = 23,
    Int32Set = 24,
    Int64Set = 25,
    DoubleSet = 26,
    FloatSet = 27,
    BoolSet = 28,
    UnixTimestampSet = 29,
    /// A PDF document's bytes (stored as `bytes_val`).
    PdfBytes = 30,
    /// An image's bytes (stored as `bytes_val`).
    ImageBytes = 31,
    Json = 32,
    JsonList = 33,
    Struct = 34,
    StructList = 35,
    Uuid = 36,
    TimeUuid = 37,
    UuidList = 38,
    TimeUuidList = 39,
    UuidSet = 40,
    TimeUuidSet = 41,
    /// Nested lists (`Array(Array(T))`): values of any type in a `RepeatedValue`.
    ValueList = 42,
    /// Sets of lists (`Set(Array(T))`).
    ValueSet = 43,
    /// A decimal number as its text (`decimal_val`).
    Decimal = 44,
    DecimalList = 45,
    DecimalSet = 46,
    /// A map with typed, non-string keys.
    ScalarMap = 47,
    /// An instant and the zone it was written in.
    ZonedTimestamp = 48,
}

/// (type, proto enum name, Python dtype name). The dtype names are those `str()` gives for
/// Feast's `feast.types` objects; `Null` and `Invalid` have none.
const NAMES: &[(ValueType, &str, Option<&str>)] = &[
    (ValueType::Invalid, "INVALID", None),
    (ValueType::Bytes, "BYTES", Some("Bytes")),
    (ValueType::String, "STRING", Some("String")),
    (ValueType::Int32, "INT32", Some("Int32")),
    (ValueType::Int64, "INT64", Some("Int64")),
    (ValueType::Double, "DOUBLE", Some("Float64")),
    (ValueType::Float, "FLOAT", Some("Float32")),
    (ValueType::Bool, "BOOL", Some("Bool")),
    (
        ValueType::UnixTimestamp,
        "UNIX_TIMESTAMP",
        Some("UnixTimestamp"),
    ),
    (ValueType::BytesList, "BYTES_LIST", Some("Array(Bytes)")),
    (ValueType::StringList, "STRING_LIST", Some("Array(String)")),
    (ValueType::Int32List, "INT32_LIST", Some("Array(Int32)")),
    (ValueType::Int64List, "INT64_LIST", Some("Array(Int64)")),
    (ValueType::DoubleList, "DOUBLE_LIST", Some("Array(Float64)")),
    (ValueType::FloatList, "FLOAT_LIST", Some("Array(Float32)")),
    (ValueType::BoolList, "BOOL_LIST", Some("Array(Bool)")),
    (
        ValueType::UnixTimestampList,
        "UNIX_TIMESTAMP_LIST",
        Some("Array(UnixTimestamp)"),
    ),
    (ValueType::Null, "NULL", None),
    (ValueType::Map, "MAP", Some("Map")),
    (ValueType::MapList, "MAP_LIST", Some("Array(Map)")),
    (ValueType::BytesSet, "BYTES_SET", Some("Set(Bytes)")),
    (ValueType::StringSet, "STRING_SET", Some("Set(String)")),
    (ValueType::Int32Set, "INT32_SET", Some("Set(Int32)")),
    (ValueType::Int64Set, "INT64_SET", Some("Set(Int64)")),
    (ValueType::DoubleSet, "DOUBLE_SET", Some("Set(Float64)")),
    (ValueType::FloatSet, "FLOAT_SET", Some("Set(Float32)")),
    (ValueType::BoolSet, "BOOL_SET", Some("Set(Bool)")),
    (
        ValueType::UnixTimestampSet,
        "UNIX_TIMESTAMP_SET",
        Some("Set(UnixTimestamp)"),
    ),
    (ValueType::Json, "JSON", Some("Json")),
    (ValueType::JsonList, "JSON_LIST", Some("Array(Json)")),
    (ValueType::Struct, "STRUCT", Some("Struct")),
    (ValueType::StructList, "STRUCT_LIST", Some("Array(Struct)")),
    (ValueType::Uuid, "UUID", Some("Uuid")),
    (ValueType::TimeUuid, "TIME_UUID", Some("TimeUuid")),
    (ValueType::UuidList, "UUID_LIST", Some("Array(Uuid)")),
    (
        ValueType::TimeUuidList,
        "TIME_UUID_LIST",
        Some("Array(TimeUuid)"),
    ),
    (ValueType::UuidSet, "UUID_SET", Some("Set(Uuid)")),
    (
        ValueType::TimeUuidSet,
        "TIME_UUID_SET",
        Some("Set(TimeUuid)"),
    ),
    (ValueType::PdfBytes, "PDF_BYTES", Some("PdfBytes")),
    (ValueType::ImageBytes, "IMAGE_BYTES", Some("ImageBytes")),
    // Nested lists are named by their element (`Array(Array(Int64))`): read from a registry
    // Feast wrote, not declared in quiver's YAML.
    (ValueType::ValueList, "VALUE_LIST", None),
    (ValueType::ValueSet, "VALUE_SET", None),
    (ValueType::Decimal, "DECIMAL", Some("Decimal")),
    (
        ValueType::DecimalList,
        "DECIMAL_LIST",
        Some("Array(Decimal)"),
    ),
    (ValueType::DecimalSet, "DECIMAL_SET", Some("Set(Decimal)")),
    (ValueType::ScalarMap, "SCALAR_MAP", Some("ScalarMap")),
    (
        ValueType::ZonedTimestamp,
        "ZONED_TIMESTAMP",
        Some("ZonedTimestamp"),
    ),
];

/// Dtype spellings accepted on input besides the canonical ones above.
const DTYPE_ALIASES: &[(&str, ValueType)] = &[
    ("Float", ValueType::Float),
    ("Double", ValueType::Double),
    ("Array(Float)", ValueType::FloatList),
    ("Array(Double)", ValueType::DoubleList),
    ("List(Int32)", ValueType::Int32List),
];

impl ValueType {
    /// Every type with a Python dtype name, in enum order: what a definition may use.
    pub fn feature_types() -> impl Iterator<Item = ValueType> {
        NAMES
            .iter()
            .filter(|(_, _, d)| d.is_some())
            .map(|(t, _, _)| *t)
    }

    /// From Feast's enum number; unknown numbers are `None`.
    pub fn from_i32(n: i32) -> Option<ValueType> {
        NAMES.iter().map(|(t, _, _)| *t).find(|t| *t as i32 == n)
    }

    /// The protobuf enum name, e.g. `INT64`.
    pub fn proto_name(self) -> &'static str {
        self.entry().1
    }

    /// The name of Feast's Python `ValueType` enum member (`ValueType.UNKNOWN` for the unset
    /// type, which the proto calls `INVALID`; every other name is the proto's).
    pub fn sdk_enum_name(self) -> &'static str {
        match self {
            ValueType::Invalid => "UNKNOWN",
            other => other.proto_name(),
        }
    }

    /// The Python dtype name, e.g. `Float32`, `Array(Int32)`; `None` for `Invalid` and `Null`.
    pub fn dtype_name(self) -> Option<&'static str> {
        self.entry().2
    }

    fn entry(self) -> &'static (ValueType, &'static str, Option<&'static str>) {
        // Every variant has exactly one row in NAMES (checked by a test).
        NAMES
            .iter()
            .find(|(t, _, _)| *t == self)
            .unwrap_or(&NAMES[0])
    }

    /// From the protobuf enum name (`INT64`), case-insensitively.
    pub fn from_proto_name(name: &str) -> Option<ValueType> {
        NAMES
            .iter()
            .find(|(_, n, _)| n.eq_ignore_ascii_case(name.trim()))
            .map(|(t, _, _)| *t)
    }

    /// From a Python dtype name (`Float32`, `Array(Int32)`, `Struct({...})`), ignoring spaces.
    pub fn from_dtype_name(name: &str) -> Option<ValueType> {
        let compact: String = name.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.starts_with("Struct(") && compact.ends_with(')') {
            return Some(ValueType::Struct);
        }
        if compact.starts_with("Array(Struct(") && compact.ends_with("))") {
            return Some(ValueType::StructList);
        }
        NAMES
            .iter()
            .find(|(_, _, d)| *d == Some(compact.as_str()))
            .map(|(t, _, _)| *t)
            .or_else(|| {
                DTYPE_ALIASES
                    .iter()
                    .find(|(a, _)| *a == compact)
                    .map(|(_, t)| *t)
            })
    }

    /// Whether Feast can use this type for an entity key (serialization v3 allows these only).
    pub fn is_keyable(self) -> bool {
        matches!(
            self,
            ValueType::Bytes
                | ValueType::String
                | ValueType::Int32
                | ValueType::Int64
                | ValueType::UnixTimestamp
        )
    }

    /// The element type of a list or set type.
    pub fn element(self) -> Option<ValueType> {
        Some(match self {
            ValueType::BytesList | ValueType::BytesSet => ValueType::Bytes,
            ValueType::StringList | ValueType::StringSet => ValueType::String,
            ValueType::Int32List | ValueType::Int32Set => ValueType::Int32,
            ValueType::Int64List | ValueType::Int64Set => ValueType::Int64,
            ValueType::DoubleList | ValueType::DoubleSet => ValueType::Double,
            ValueType::FloatList | ValueType::FloatSet => ValueType::Float,
            ValueType::BoolList | ValueType::BoolSet => ValueType::Bool,
            ValueType::UnixTimestampList | ValueType::UnixTimestampSet => ValueType::UnixTimestamp,
            ValueType::MapList => ValueType::Map,
            ValueType::JsonList => ValueType::Json,
            ValueType::StructList => ValueType::Struct,
            ValueType::UuidList | ValueType::UuidSet => ValueType::Uuid,
            ValueType::TimeUuidList | ValueType::TimeUuidSet => ValueType::TimeUuid,
            ValueType::DecimalList | ValueType::DecimalSet => ValueType::Decimal,
            _ => return None,
        })
    }

    /// The protobuf enum value.
    pub fn to_proto(self) -> i32 {
        self as i32
    }

    /// From a protobuf enum value as prost hands it over (an `i32`).
    pub fn from_proto(value: i32) -> ValueType {
        ValueType::from_i32(value).unwrap_or(ValueType::Invalid)
    }
}

impl From<ProtoValueType> for ValueType {
    fn from(v: ProtoValueType) -> Self {
        ValueType::from_proto(v as i32)
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dtype_name().unwrap_or(self.proto_name()))
    }
}

/// The tag in which Feast keeps a Struct or Array(Struct) field's schema (`Field.to_proto`);
/// without it Feast reads the field as `Struct({_value: String})`.
pub const STRUCT_SCHEMA_TAG: &str = "feast:struct_schema";

/// For a `Struct({...})` or `Array(Struct({...}))` dtype, the [`STRUCT_SCHEMA_TAG`] value
/// Feast writes for it: Python's `json.dumps({name: type})` (ASCII only, `", "` and `": "`),
/// fields in their order, types as Feast names them (`STRING`, `FLOAT32`, `Array(INT64)`).
/// `None` for any other dtype; an error names a field that does not parse (nested structs are
/// not supported).
pub fn struct_schema_tag(dtype: &str) -> Option<Result<String, String>> {
    let compact: String = dtype.chars().filter(|c| !c.is_whitespace()).collect();
    let inner = compact
        .strip_prefix("Array(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(&compact);
    let body = inner.strip_prefix("Struct({")?.strip_suffix("})")?;
    let mut out = String::from("{");
    let mut depth = 0i32;
    let mut start = 0;
    let mut entries = Vec::new();
    for (i, c) in body.char_indices() {
        match c {
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => depth -= 1,
            ',' if depth == 0 => {
                entries.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !body[start..].is_empty() {
        entries.push(&body[start..]);
    }
    for (n, entry) in entries.iter().enumerate() {
        let Some((name, ty)) = entry.split_once(':') else {
            return Some(Err(format!("struct field {entry:?} is not name: Type")));
        };
        let name = name.trim_matches(|c| c == '\'' || c == '"');
        let Some(feast) = ValueType::from_dtype_name(ty).and_then(ValueType::feast_type_str) else {
            return Some(Err(format!(
                "struct field {name:?} has type {ty:?}; a struct field takes a scalar, Array(X) or Set(X) dtype"
            )));
        };
        if n > 0 {
            out.push_str(", ");
        }
        push_python_json_str(&mut out, name);
        out.push_str(": ");
        push_python_json_str(&mut out, &feast);
    }
    out.push('}');
    Some(Ok(out))
}

/// A string literal as Python's `json.dumps` writes it (`ensure_ascii`: non-ASCII as `\uXXXX`,
/// surrogate pairs beyond the BMP).
fn push_python_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl ValueType {
    /// How Feast's `_feast_type_to_str` names a struct field's type: the primitive's
    /// `PrimitiveFeastType` name, `Array(X)`, `Set(X)`. `None` for structs and the rest.
    fn feast_type_str(self) -> Option<String> {
        let primitive = |t: ValueType| -> Option<&'static str> {
            Some(match t {
                ValueType::Bytes => "BYTES",
                ValueType::String => "STRING",
                ValueType::Int32 => "INT32",
                ValueType::Int64 => "INT64",
                ValueType::Double => "FLOAT64",
                ValueType::Float => "FLOAT32",
                ValueType::Bool => "BOOL",
                ValueType::UnixTimestamp => "UNIX_TIMESTAMP",
                ValueType::Map => "MAP",
                ValueType::Json => "JSON",
                ValueType::Uuid => "UUID",
                ValueType::TimeUuid => "TIME_UUID",
                _ => return None,
            })
        };
        if let Some(p) = primitive(self) {
            return Some(p.to_owned());
        }
        let element = primitive(self.element()?)?;
        let is_set = self.proto_name().ends_with("_SET");
        Some(format!(
            "{}({element})",
            if is_set { "Set" } else { "Array" }
        ))
    }
}

/// The dtype names a definition may use, for error messages.
pub fn accepted_dtypes() -> &'static str {
    "Int32, Int64, Float32, Float64, Bool, String, Bytes, UnixTimestamp, Json, Map, Struct({...}), \
     Uuid, TimeUuid, or Array(X) / Set(X) of these"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_the_proto_enum() {
        for (t, name, _) in NAMES {
            let proto = ProtoValueType::from_str_name(name).expect(name);
            assert_eq!(proto as i32, *t as i32, "{name}");
            assert_eq!(ValueType::from(proto), *t);
            assert_eq!(ValueType::from_proto_name(name), Some(*t));
        }
    }

    #[test]
    fn dtype_names_round_trip() {
        for t in ValueType::feature_types() {
            let name = t.dtype_name().unwrap();
            assert_eq!(ValueType::from_dtype_name(name), Some(t), "{name}");
        }
        assert_eq!(
            ValueType::from_dtype_name("Array( Int32 )"),
            Some(ValueType::Int32List)
        );
        assert_eq!(
            ValueType::from_dtype_name("Struct({'a': Int32})"),
            Some(ValueType::Struct)
        );
        assert_eq!(ValueType::from_dtype_name("Int"), None);
        assert_eq!(ValueType::from_dtype_name("Array(Nope)"), None);
    }

    #[test]
    fn struct_schema_tags_are_what_feast_writes() {
        // Field(name="x", dtype=Struct({"a": Array(Float32), "b": Bool, "c": UnixTimestamp,
        // "é": String})).to_proto().tags in Feast 0.67.
        assert_eq!(
            struct_schema_tag("Struct({'a': Array(Float32), b: Bool, \"c\": UnixTimestamp, é: String})"),
            Some(Ok(
                r#"{"a": "Array(FLOAT32)", "b": "BOOL", "c": "UNIX_TIMESTAMP", "\u00e9": "STRING"}"#
                    .to_owned()
            ))
        );
        // The template's driver_profile, and an Array(Struct).
        assert_eq!(
            struct_schema_tag("Array(Struct({name: String, age: String}))"),
            Some(Ok(r#"{"name": "STRING", "age": "STRING"}"#.to_owned()))
        );
        assert_eq!(struct_schema_tag("Map"), None);
        assert!(
            struct_schema_tag("Struct({a: Struct({b: Int64})})")
                .unwrap()
                .is_err()
        );
        assert!(struct_schema_tag("Struct({a})").unwrap().is_err());
    }

    #[test]
    fn keyable_types() {
        let keyable: Vec<_> = ValueType::feature_types()
            .filter(|t| t.is_keyable())
            .collect();
        assert_eq!(
            keyable,
            [
                ValueType::Bytes,
                ValueType::String,
                ValueType::Int32,
                ValueType::Int64,
                ValueType::UnixTimestamp
            ]
        );
    }
}

//! The JSON of Feast's HTTP feature server: how values are printed in responses, and how request
//! values are read, typed by the declared `ValueType` rather than by what the JSON looks like.
//!
//! Printing: null for unset; integers as JSON numbers (int64 included); floats in Python's
//! shortest round-trip `repr` form, float32 widened to f64 first (so 0.8057102f32 prints as
//! `0.8057101964950562`); NaN and infinities as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`;
//! bytes as padded base64; unix timestamps as integer seconds; lists and sets as arrays;
//! maps and structs as objects; JSON values as their document text in a string (what Feast
//! 0.67's server returns, checked against it; not the parsed document).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value as Json;

use crate::value::Fields;
use crate::{Value, ValueType};

/// Appends the JSON text of `value` to `out`.
pub fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bytes(b) => write_str(out, &BASE64.encode(b)),
        Value::String(s)
        | Value::Uuid(s)
        | Value::TimeUuid(s)
        | Value::Json(s)
        | Value::Decimal(s) => write_str(out, s),
        Value::Int32(i) => write_int(out, i64::from(*i)),
        Value::Int64(i) | Value::UnixTimestamp(i) => write_int(out, *i),
        Value::Double(d) => write_float(out, *d),
        Value::Float(f) => write_float(out, f64::from(*f)),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::BytesList(l) | Value::BytesSet(l) => {
            write_array(out, l, |o, b| write_str(o, &BASE64.encode(b)))
        }
        Value::StringList(l)
        | Value::StringSet(l)
        | Value::UuidList(l)
        | Value::TimeUuidList(l)
        | Value::UuidSet(l)
        | Value::TimeUuidSet(l)
        | Value::DecimalList(l)
        | Value::DecimalSet(l)
        | Value::JsonList(l) => write_array(out, l, |o, s| write_str(o, s)),
        Value::Int32List(l) | Value::Int32Set(l) => {
            write_array(out, l, |o, i| write_int(o, i64::from(*i)))
        }
        Value::Int64List(l)
        | Value::Int64Set(l)
        | Value::UnixTimestampList(l)
        | Value::UnixTimestampSet(l) => write_array(out, l, |o, i| write_int(o, *i)),
        Value::DoubleList(l) | Value::DoubleSet(l) => {
            write_array(out, l, |o, d| write_float(o, *d))
        }
        Value::FloatList(l) | Value::FloatSet(l) => {
            write_array(out, l, |o, f| write_float(o, f64::from(*f)))
        }
        Value::BoolList(l) | Value::BoolSet(l) => {
            write_array(out, l, |o, b| o.push_str(if *b { "true" } else { "false" }))
        }
        Value::Map(m) | Value::Struct(m) => write_object(out, m),
        Value::MapList(l) | Value::StructList(l) => write_array(out, l, |o, m| write_object(o, m)),
        Value::ValueList(l) | Value::ValueSet(l) => write_array(out, l, write_value),
        // Feast 0.67's server answers null for these ("not yet supported").
        Value::ScalarMap(_) => out.push_str("null"),
        Value::ZonedTimestamp { seconds, zone } => match zoned_iso(*seconds, zone) {
            Some(text) => write_str(out, &text),
            None => out.push_str("null"),
        },
    }
}

/// A zoned timestamp as Feast's server prints it: Python's `datetime.fromtimestamp(seconds,
/// zone).isoformat()` (`2026-01-01T07:00:00-05:00`). The zone: "" is UTC, else an IANA name,
/// else a fixed offset (`UTC`, `GMT`, `+05:30`, `-0700`, `UTC-07:00`), else UTC, as Feast
/// resolves it. `None` for Feast's null instant or a year Python cannot print.
pub fn zoned_iso(seconds: i64, zone: &str) -> Option<String> {
    use chrono::{FixedOffset, Offset as _, TimeZone as _, Utc};
    if seconds == crate::value::NULL_TIMESTAMP {
        return None;
    }
    let instant = Utc.timestamp_opt(seconds, 0).single()?;
    let offset: FixedOffset = if zone.is_empty() {
        Utc.fix()
    } else if let Ok(tz) = zone.parse::<chrono_tz::Tz>() {
        instant.with_timezone(&tz).offset().fix()
    } else {
        fixed_offset(zone).unwrap_or(Utc.fix())
    };
    let local = instant.with_timezone(&offset);
    let year = chrono::Datelike::year(&local);
    if !(1..=9999).contains(&year) {
        return None;
    }
    let total = offset.local_minus_utc();
    let (sign, abs) = if total < 0 {
        ('-', -total)
    } else {
        ('+', total)
    };
    let mut text = local.format("%Y-%m-%dT%H:%M:%S").to_string();
    text.push(sign);
    text.push_str(&format!("{:02}:{:02}", abs / 3600, abs % 3600 / 60));
    if abs % 60 != 0 {
        text.push_str(&format!(":{:02}", abs % 60));
    }
    Some(text)
}

/// Feast's `_fixed_offset_from_name`: `UTC`/`GMT`, or `[UTC|GMT](+|-)HH[:]MM`.
fn fixed_offset(zone: &str) -> Option<chrono::FixedOffset> {
    let text = zone.trim();
    if text == "UTC" || text == "GMT" {
        return chrono::FixedOffset::east_opt(0);
    }
    let rest = text
        .strip_prefix("UTC")
        .or_else(|| text.strip_prefix("GMT"))
        .unwrap_or(text);
    let (sign, digits) = match rest.as_bytes().first()? {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        _ => return None,
    };
    let digits: String = match digits.len() {
        5 if digits.as_bytes()[2] == b':' => format!("{}{}", &digits[..2], &digits[3..]),
        4 => digits.to_owned(),
        _ => return None,
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().ok()?;
    chrono::FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// The JSON text of `value` (see [`write_value`]).
pub fn value_to_string(value: &Value) -> String {
    let mut s = String::new();
    write_value(&mut s, value);
    s
}

/// `value` as a parsed JSON tree.
pub fn value_to_json(value: &Value) -> Json {
    // The writer only emits valid JSON, so parsing it back cannot fail.
    serde_json::from_str(&value_to_string(value)).unwrap_or(Json::Null)
}

/// Appends an integer (itoa: no formatting machinery).
pub fn write_int(out: &mut String, i: i64) {
    out.push_str(itoa::Buffer::new().format(i));
}

/// A JSON string literal, escaped as serde_json does.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    // Most names and values need no escaping: copy them whole.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[(c as usize) >> 4]));
                out.push(char::from(HEX[(c as usize) & 0xf]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_array<T>(out: &mut String, items: &[T], mut each: impl FnMut(&mut String, &T)) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        each(out, item);
    }
    out.push(']');
}

fn write_object(out: &mut String, m: &[(String, Value)]) {
    out.push('{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, k);
        out.push(':');
        write_value(out, v);
    }
    out.push('}');
}

/// Appends a float as Python's `repr` prints it (what Feast's server emits): the shortest text
/// that round-trips, positional between 1e-4 and 1e16 (`0.0001`, `1.0`, `1234.5`), scientific
/// outside it (`1e-05`, `1.5e+16`). Non-finite values become the strings Feast uses.
pub fn write_float(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("\"NaN\"");
        return;
    }
    if x.is_infinite() {
        out.push_str(if x > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
        return;
    }
    if x == 0.0 {
        out.push_str(if x.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    // ryu gives the shortest round-trip digits; re-lay them out as Python does.
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(x);
    let (negative, text) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let (mantissa, exp_part) = text.split_once('e').unwrap_or((text, "0"));
    let exp_part: i32 = exp_part.parse().unwrap_or(0);
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits = [0u8; 40];
    let mut n = 0;
    for &c in int_part.as_bytes().iter().chain(frac_part.as_bytes()) {
        if n < digits.len() {
            digits[n] = c;
            n += 1;
        }
    }
    let mut point = int_part.len() as i32;
    let mut start = 0;
    while start < n && digits[start] == b'0' {
        start += 1;
        point -= 1;
    }
    let mut end = n;
    while end > start && digits[end - 1] == b'0' {
        end -= 1;
    }
    // Only ASCII digits were copied, so this cannot fail.
    let digits = std::str::from_utf8(&digits[start..end]).unwrap_or("0");
    let exp = point - 1 + exp_part;
    if negative {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-point) as usize));
            out.push_str(digits);
        } else if point as usize >= digits.len() {
            out.push_str(digits);
            out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
            out.push_str(".0");
        } else {
            let (int, frac) = digits.split_at(point as usize);
            out.push_str(int);
            out.push('.');
            out.push_str(frac);
        }
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        if exp.abs() < 10 {
            out.push('0');
        }
        write_int(out, i64::from(exp.abs()));
    }
}

/// Reads one request value of the declared type. The JSON decides nothing about the type: a
/// `1001` for an Int32 entity is an int32, and a `"1001"` for it is an error. The message says
/// what was expected.
pub fn parse_value(json: &Json, ty: ValueType) -> Result<Value, String> {
    if json.is_null() {
        return Ok(Value::Null);
    }
    let scalar = |j: &Json, t: ValueType| parse_scalar(j, t);
    let list = |t: ValueType| -> Result<Vec<Value>, String> {
        let items = json
            .as_array()
            .ok_or_else(|| format!("expected an array of {t} values, got {}", kind(json)))?;
        items.iter().map(|j| scalar(j, t)).collect()
    };
    macro_rules! collect {
        ($elem:expr, $variant:ident, $pat:pat => $out:expr) => {
            Value::$variant(
                list($elem)?
                    .into_iter()
                    .map(|v| match v {
                        $pat => Ok($out),
                        _ => Err(format!("null inside an array of {}", $elem)),
                    })
                    .collect::<Result<_, String>>()?,
            )
        };
    }
    let set = |v: Value| v.without_repeats();
    Ok(match ty {
        ValueType::BytesList => collect!(ValueType::Bytes, BytesList, Value::Bytes(b) => b),
        ValueType::BytesSet => set(collect!(ValueType::Bytes, BytesSet, Value::Bytes(b) => b)),
        ValueType::StringList => collect!(ValueType::String, StringList, Value::String(s) => s),
        ValueType::StringSet => set(collect!(ValueType::String, StringSet, Value::String(s) => s)),
        ValueType::Int32List => collect!(ValueType::Int32, Int32List, Value::Int32(i) => i),
        ValueType::Int32Set => set(collect!(ValueType::Int32, Int32Set, Value::Int32(i) => i)),
        ValueType::Int64List => collect!(ValueType::Int64, Int64List, Value::Int64(i) => i),
        ValueType::Int64Set => set(collect!(ValueType::Int64, Int64Set, Value::Int64(i) => i)),
        ValueType::DoubleList => collect!(ValueType::Double, DoubleList, Value::Double(d) => d),
        ValueType::DoubleSet => set(collect!(ValueType::Double, DoubleSet, Value::Double(d) => d)),
        ValueType::FloatList => collect!(ValueType::Float, FloatList, Value::Float(f) => f),
        ValueType::FloatSet => set(collect!(ValueType::Float, FloatSet, Value::Float(f) => f)),
        ValueType::BoolList => collect!(ValueType::Bool, BoolList, Value::Bool(b) => b),
        ValueType::BoolSet => set(collect!(ValueType::Bool, BoolSet, Value::Bool(b) => b)),
        ValueType::UnixTimestampList => {
            collect!(ValueType::UnixTimestamp, UnixTimestampList, Value::UnixTimestamp(t) => t)
        }
        ValueType::UnixTimestampSet => {
            set(collect!(ValueType::UnixTimestamp, UnixTimestampSet, Value::UnixTimestamp(t) => t))
        }
        ValueType::UuidList => collect!(ValueType::Uuid, UuidList, Value::Uuid(s) => s),
        ValueType::TimeUuidList => {
            collect!(ValueType::TimeUuid, TimeUuidList, Value::TimeUuid(s) => s)
        }
        ValueType::UuidSet => set(collect!(ValueType::Uuid, UuidSet, Value::Uuid(s) => s)),
        ValueType::TimeUuidSet => {
            set(collect!(ValueType::TimeUuid, TimeUuidSet, Value::TimeUuid(s) => s))
        }
        ValueType::JsonList => collect!(ValueType::Json, JsonList, Value::Json(s) => s),
        ValueType::DecimalList => collect!(ValueType::Decimal, DecimalList, Value::Decimal(s) => s),
        ValueType::DecimalSet => {
            set(collect!(ValueType::Decimal, DecimalSet, Value::Decimal(s) => s))
        }
        ValueType::Map => Value::Map(parse_object(json)?),
        ValueType::Struct => Value::Struct(parse_object(json)?),
        ValueType::MapList | ValueType::StructList => {
            let text;
            let json = match json {
                Json::String(s) => {
                    text = from_json_text(s)?;
                    &text
                }
                other => other,
            };
            let items = json
                .as_array()
                .ok_or_else(|| format!("expected an array of objects, got {}", kind(json)))?;
            let maps = items
                .iter()
                .map(parse_object)
                .collect::<Result<Vec<_>, _>>()?;
            if ty == ValueType::MapList {
                Value::MapList(maps)
            } else {
                Value::StructList(maps)
            }
        }
        other => scalar(json, other)?,
    })
}

fn parse_scalar(json: &Json, ty: ValueType) -> Result<Value, String> {
    if json.is_null() {
        return Ok(Value::Null);
    }
    let mismatch = || format!("expected {}, got {}", describe(ty), kind(json));
    Ok(match ty {
        ValueType::Int64 => Value::Int64(json.as_i64().ok_or_else(mismatch)?),
        ValueType::Int32 => {
            let i = json.as_i64().ok_or_else(mismatch)?;
            Value::Int32(i32::try_from(i).map_err(|_| format!("{i} is out of range for Int32"))?)
        }
        ValueType::UnixTimestamp => match json {
            Json::String(s) => Value::UnixTimestamp(
                crate::time::parse_datetime(s)
                    .ok_or_else(|| {
                        format!("expected epoch seconds or an RFC 3339 time, got {s:?}")
                    })?
                    .seconds,
            ),
            _ => Value::UnixTimestamp(json.as_i64().ok_or_else(mismatch)?),
        },
        ValueType::Double => Value::Double(parse_float(json).ok_or_else(mismatch)?),
        ValueType::Float => Value::Float(
            crate::range::to_f32(parse_float(json).ok_or_else(mismatch)?)
                .map_err(|e| e.to_string())?,
        ),
        ValueType::Bool => Value::Bool(json.as_bool().ok_or_else(mismatch)?),
        ValueType::String => Value::String(json.as_str().ok_or_else(mismatch)?.to_owned()),
        ValueType::Uuid => Value::Uuid(json.as_str().ok_or_else(mismatch)?.to_owned()),
        ValueType::TimeUuid => Value::TimeUuid(json.as_str().ok_or_else(mismatch)?.to_owned()),
        // Feast stores `str(decimal.Decimal(x))`: text as given; a JSON number as its text.
        ValueType::Decimal => Value::Decimal(match json {
            Json::String(s) => s.clone(),
            Json::Number(n) => n.to_string(),
            _ => return Err(mismatch()),
        }),
        ValueType::PdfBytes | ValueType::ImageBytes => Value::Bytes(
            BASE64
                .decode(json.as_str().ok_or_else(mismatch)?)
                .map_err(|e| format!("expected base64 bytes: {e}"))?,
        ),
        ValueType::Bytes => Value::Bytes(
            BASE64
                .decode(json.as_str().ok_or_else(mismatch)?)
                .map_err(|e| format!("expected base64 bytes: {e}"))?,
        ),
        ValueType::Json => Value::Json(match json {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        }),
        other => return Err(format!("values of type {other} cannot be given here")),
    })
}

fn parse_float(json: &Json) -> Option<f64> {
    match json {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// JSON text inside a string: how Feast's Python clients send Map and Struct values (its remote
/// online store `json.dumps` them; Feast's own `python_values_to_proto_values` `json.loads` a
/// string given for a Map, MapList, Struct or StructList).
fn from_json_text(s: &str) -> Result<Json, String> {
    serde_json::from_str(s).map_err(|e| format!("expected an object or JSON text holding one: {e}"))
}

/// An object's entries in the order the request gave them (serde_json keeps it: the workspace
/// turns on its `preserve_order` feature). Also accepts a string holding the object's JSON text.
fn parse_object(json: &Json) -> Result<Fields, String> {
    if let Json::String(s) = json {
        return parse_object(&from_json_text(s)?);
    }
    let obj = json
        .as_object()
        .ok_or_else(|| format!("expected an object, got {}", kind(json)))?;
    obj.iter()
        .map(|(k, v)| Ok((k.clone(), infer(v)?)))
        .collect()
}

/// Map values carry no declared type: take the one Feast's `python_values_to_proto_values` infers
/// for what `json.loads` gives (int → Int64, float → Float64, str → String, bool, object → Map,
/// array → the list of its items' one type, an array of objects → MapList). Feast refuses empty,
/// mixed and nested arrays and nulls inside arrays; so does this.
fn infer(json: &Json) -> Result<Value, String> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int64(i),
            None => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => infer_list(items)?,
        Json::Object(_) => Value::Map(parse_object(json)?),
    })
}

fn infer_list(items: &[Json]) -> Result<Value, String> {
    let Some(first) = items.first() else {
        return Err("the type of an empty array inside a map cannot be inferred".to_owned());
    };
    let mixed = || "an array inside a map must hold values of one type".to_owned();
    macro_rules! all {
        ($variant:ident, $get:expr) => {
            Value::$variant(
                items
                    .iter()
                    .map(|j| $get(j).ok_or_else(mixed))
                    .collect::<Result<_, _>>()?,
            )
        };
    }
    Ok(match first {
        Json::Bool(_) => all!(BoolList, Json::as_bool),
        Json::Number(n) if n.as_i64().is_some() => all!(Int64List, Json::as_i64),
        Json::Number(_) => all!(DoubleList, |j: &Json| match j {
            Json::Number(n) if n.as_i64().is_none() => n.as_f64(),
            _ => None,
        }),
        Json::String(_) => all!(StringList, |j: &Json| j.as_str().map(str::to_owned)),
        Json::Object(_) => Value::MapList(
            items
                .iter()
                .map(|j| {
                    if j.is_object() {
                        parse_object(j)
                    } else {
                        Err(mixed())
                    }
                })
                .collect::<Result<_, _>>()?,
        ),
        Json::Null => return Err("null inside an array inside a map".to_owned()),
        Json::Array(_) => {
            return Err(
                "nested arrays inside a map cannot be inferred (Feast refuses them too)".to_owned(),
            );
        }
    })
}

/// Reads an entity key value: only the types Feast can key on. A String key also takes a JSON
/// integer as its decimal text, as Feast does (it converts key values with `str(x)`): an entity
/// declared without a type gets String join keys in views, which clients still key with
/// numbers (the `feast init` template's label view keys `driver_id` 1001 as "1001").
pub fn parse_entity_value(json: &Json, ty: ValueType) -> Result<Value, String> {
    if !ty.is_keyable() {
        return Err(format!("entity type {ty} cannot be used as a key"));
    }
    if json.is_null() {
        return Err(format!("expected {}, got null", describe(ty)));
    }
    if ty == ValueType::String
        && let Json::Number(n) = json
        && (n.is_i64() || n.is_u64())
    {
        return Ok(Value::String(n.to_string()));
    }
    parse_scalar(json, ty)
}

fn describe(ty: ValueType) -> String {
    match ty {
        ValueType::Int32 => "an integer (Int32)".to_owned(),
        ValueType::Int64 => "an integer (Int64)".to_owned(),
        ValueType::UnixTimestamp => "epoch seconds (UnixTimestamp)".to_owned(),
        ValueType::Double => "a number (Float64)".to_owned(),
        ValueType::Float => "a number (Float32)".to_owned(),
        ValueType::Bool => "a boolean".to_owned(),
        ValueType::String => "a string".to_owned(),
        ValueType::Bytes => "a base64 string (Bytes)".to_owned(),
        other => format!("a {other} value"),
    }
}

fn kind(json: &Json) -> String {
    match json {
        Json::Null => "null".to_owned(),
        Json::Bool(b) => format!("the boolean {b}"),
        Json::Number(n) => format!("the number {n}"),
        Json::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        Json::String(_) => "a string".to_owned(),
        Json::Array(_) => "an array".to_owned(),
        Json::Object(_) => "an object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn float(x: f64) -> String {
        let mut s = String::new();
        write_float(&mut s, x);
        s
    }

    #[test]
    fn floats_print_like_python_repr() {
        assert_eq!(float(1.0), "1.0");
        assert_eq!(float(-0.0), "-0.0");
        assert_eq!(float(0.1), "0.1");
        assert_eq!(float(f64::from(0.805_710_2_f32)), "0.8057101964950562");
        assert_eq!(float(1234.5), "1234.5");
        assert_eq!(float(0.0001), "0.0001");
        assert_eq!(float(0.00001), "1e-05");
        assert_eq!(float(1e15), "1000000000000000.0");
        assert_eq!(float(1e16), "1e+16");
        assert_eq!(float(1.5e300), "1.5e+300");
        assert_eq!(float(-2.5e-7), "-2.5e-07");
        assert_eq!(float(f64::NAN), "\"NaN\"");
        assert_eq!(float(f64::NEG_INFINITY), "\"-Infinity\"");
        // Every printed float parses back to the same bits.
        for x in [
            0.1,
            1.0 / 3.0,
            123_456_789.123_456_78,
            5e-324,
            f64::MAX,
            2.0_f64.powi(60),
        ] {
            assert_eq!(float(x).parse::<f64>().unwrap(), x);
        }
    }

    #[test]
    fn values_print_as_feast_does() {
        let cases = [
            (Value::Null, "null"),
            (Value::Int64(9_007_199_254_740_993), "9007199254740993"),
            (Value::Bytes(vec![0, 1, 255]), "\"AAH/\""),
            (Value::String("a\"b\n".into()), "\"a\\\"b\\n\""),
            (Value::Int32List(vec![1, -2]), "[1,-2]"),
            (Value::FloatList(vec![0.5, f32::NAN]), "[0.5,\"NaN\"]"),
            (
                Value::Json("{\"a\": [1, 2]}".into()),
                "\"{\\\"a\\\": [1, 2]}\"",
            ),
            (Value::UnixTimestamp(1_795_658_400), "1795658400"),
        ];
        for (v, text) in cases {
            assert_eq!(value_to_string(&v), text, "{v:?}");
        }
        let m = vec![
            ("z".to_owned(), Value::Double(2.0)),
            ("a".to_owned(), Value::Null),
        ];
        assert_eq!(value_to_string(&Value::Map(m)), "{\"z\":2.0,\"a\":null}");
    }

    #[test]
    fn string_keys_take_integers_as_their_text() {
        let v = parse_entity_value(&serde_json::json!(1001), ValueType::String).unwrap();
        assert_eq!(v, Value::String("1001".into()));
        let v = parse_entity_value(&serde_json::json!(-7), ValueType::String).unwrap();
        assert_eq!(v, Value::String("-7".into()));
        assert!(parse_entity_value(&serde_json::json!(1.5), ValueType::String).is_err());
        assert!(parse_entity_value(&serde_json::json!(true), ValueType::String).is_err());
        // Feature values keep the strict rule.
        assert!(parse_value(&serde_json::json!(1001), ValueType::String).is_err());
    }

    #[test]
    fn request_values_take_the_declared_type() {
        assert_eq!(
            parse_entity_value(&json!(1001), ValueType::Int32),
            Ok(Value::Int32(1001))
        );
        assert_eq!(
            parse_entity_value(&json!(1001), ValueType::Int64),
            Ok(Value::Int64(1001))
        );
        assert!(parse_entity_value(&json!("1001"), ValueType::Int64).is_err());
        assert!(
            parse_entity_value(&json!(3_000_000_000_i64), ValueType::Int32)
                .unwrap_err()
                .contains("out of range")
        );
        assert!(parse_entity_value(&json!(1.5), ValueType::Int64).is_err());
        assert!(parse_entity_value(&json!(null), ValueType::String).is_err());
        assert!(parse_entity_value(&json!(1), ValueType::Float).is_err());
        assert_eq!(
            parse_value(&json!([1, 2]), ValueType::Int32List),
            Ok(Value::Int32List(vec![1, 2]))
        );
        assert_eq!(
            parse_value(&json!("NaN"), ValueType::Double).map(|v| v.value_type()),
            Ok(ValueType::Double)
        );
        assert!(parse_value(&json!([1, null]), ValueType::Int64List).is_err());
        // A set keeps one of each item, the first in its place.
        assert_eq!(
            parse_value(&json!([3, 1, 3, 2, 1]), ValueType::Int64Set),
            Ok(Value::Int64Set(vec![3, 1, 2]))
        );
        // Map and Struct: an object or its JSON text (what Feast's remote client sends), entries
        // in the order given, values typed as Feast infers them.
        let m = Value::Map(vec![
            ("z".to_owned(), Value::Int64(1)),
            ("a".to_owned(), Value::DoubleList(vec![1.5])),
            (
                "m".to_owned(),
                Value::Map(vec![("k".to_owned(), Value::Null)]),
            ),
        ]);
        assert_eq!(
            parse_value(
                &json!({"z": 1, "a": [1.5], "m": {"k": null}}),
                ValueType::Map
            ),
            Ok(m.clone())
        );
        assert_eq!(
            parse_value(
                &json!(r#"{"z": 1, "a": [1.5], "m": {"k": null}}"#),
                ValueType::Map
            ),
            Ok(m)
        );
        assert_eq!(
            parse_value(
                &json!([r#"{"b": "x"}"#, {"a": true}]),
                ValueType::StructList
            ),
            Ok(Value::StructList(vec![
                vec![("b".to_owned(), Value::String("x".into()))],
                vec![("a".to_owned(), Value::Bool(true))],
            ]))
        );
        assert!(parse_value(&json!("not json"), ValueType::Struct).is_err());
        assert!(parse_value(&json!({"a": []}), ValueType::Map).is_err());
        assert!(parse_value(&json!({"a": [1, "x"]}), ValueType::Map).is_err());
        assert_eq!(
            parse_value(&json!("AAH/"), ValueType::Bytes),
            Ok(Value::Bytes(vec![0, 1, 255]))
        );
    }

    #[test]
    fn newer_types_print_as_feasts_server_prints_them() {
        use crate::value::MapKey;
        let cases = [
            (Value::Decimal("3.140".into()), r#""3.140""#),
            (
                Value::DecimalList(vec!["1.5".into(), "2".into()]),
                r#"["1.5","2"]"#,
            ),
            (
                Value::ValueList(vec![Value::Int64List(vec![1, 2]), Value::Null]),
                "[[1,2],null]",
            ),
            (
                Value::ValueSet(vec![Value::StringList(vec!["a".into()])]),
                r#"[["a"]]"#,
            ),
            (
                Value::ScalarMap(vec![(MapKey::Int64(1), Value::String("a".into()))]),
                "null",
            ),
            // 2026-03-08 12:00 in New York is after the DST switch: -04:00.
            (
                Value::ZonedTimestamp {
                    seconds: 1_772_985_600,
                    zone: "America/New_York".into(),
                },
                r#""2026-03-08T12:00:00-04:00""#,
            ),
            (
                Value::ZonedTimestamp {
                    seconds: 0,
                    zone: String::new(),
                },
                r#""1970-01-01T00:00:00+00:00""#,
            ),
            (
                Value::ZonedTimestamp {
                    seconds: 0,
                    zone: "UTC+05:30".into(),
                },
                r#""1970-01-01T05:30:00+05:30""#,
            ),
            (
                Value::ZonedTimestamp {
                    seconds: 0,
                    zone: "-0700".into(),
                },
                r#""1969-12-31T17:00:00-07:00""#,
            ),
            // An unknown zone is UTC, as Feast resolves it.
            (
                Value::ZonedTimestamp {
                    seconds: 0,
                    zone: "Mars/Olympus".into(),
                },
                r#""1970-01-01T00:00:00+00:00""#,
            ),
            (Value::missing(ValueType::ZonedTimestamp), "null"),
        ];
        for (value, want) in cases {
            assert_eq!(value_to_string(&value), want, "{value:?}");
        }
        assert_eq!(
            parse_value(&json!("12.50"), ValueType::Decimal),
            Ok(Value::Decimal("12.50".into()))
        );
        assert_eq!(
            parse_value(&json!(["1", "1", "2"]), ValueType::DecimalSet),
            Ok(Value::DecimalSet(vec!["1".into(), "2".into()]))
        );
    }
}

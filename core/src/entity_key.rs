//! Feast's entity key serialization, version 3: the bytes that identify an entity in every online
//! store layout.
//!
//! Layout (all integers u32 little-endian): the number of join keys; for each join key in sorted
//! order, `2` (the STRING tag), its length and its UTF-8 name; then for each value in the same
//! order, its type tag, its length and its payload (UTF-8 for strings, raw bytes, `i32`/`i64`
//! little-endian for INT32, INT64 and UNIX_TIMESTAMP). No other value type can be part of a key.

use crate::{Error, Value, ValueType};

/// Writes the v3 serialization of `(join key, value)` pairs into `out`. The pairs may come in any
/// order; they are serialized sorted by join key, as Feast does.
pub fn serialize_into(out: &mut Vec<u8>, pairs: &[(&str, &Value)]) -> Result<(), Error> {
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    if pairs.len() > 1 {
        order.sort_by(|&a, &b| pairs[a].0.cmp(pairs[b].0));
    }
    put_u32(out, pairs.len());
    for &i in &order {
        let name = pairs[i].0.as_bytes();
        put_u32(out, ValueType::String as usize);
        put_u32(out, name.len());
        out.extend_from_slice(name);
    }
    for &i in &order {
        let (key, value) = pairs[i];
        match value {
            Value::String(s) => put_value(out, ValueType::String, s.as_bytes()),
            Value::Bytes(b) => put_value(out, ValueType::Bytes, b),
            Value::Int32(v) => put_value(out, ValueType::Int32, &v.to_le_bytes()),
            Value::Int64(v) => put_value(out, ValueType::Int64, &v.to_le_bytes()),
            Value::UnixTimestamp(v) => put_value(out, ValueType::UnixTimestamp, &v.to_le_bytes()),
            other => {
                return Err(Error::invalid(format!(
                    "entity key {key:?} has a value of type {}; entity keys must be String, Bytes, Int32, Int64 or UnixTimestamp",
                    other.value_type()
                )));
            }
        }
    }
    Ok(())
}

/// The v3 serialization of an entity key (see [`serialize_into`]).
pub fn serialize(pairs: &[(&str, &Value)]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(16 + pairs.len() * 32);
    serialize_into(&mut out, pairs)?;
    Ok(out)
}

/// The Redis key of an entity: its v3 serialization followed directly by the project name.
pub fn redis_key(pairs: &[(&str, &Value)], project: &str) -> Result<Vec<u8>, Error> {
    let mut out = serialize(pairs)?;
    out.extend_from_slice(project.as_bytes());
    Ok(out)
}

/// Parses v3 bytes back into `(join key, value)` pairs, in serialized (sorted) order. Trailing
/// bytes that do not form a value are an error, so a Redis key (with its project suffix) must be
/// stripped of the suffix first.
pub fn deserialize(bytes: &[u8]) -> Result<Vec<(String, Value)>, Error> {
    let mut r = Reader { bytes, pos: 0 };
    let count = r.u32()? as usize;
    if count > bytes.len() / 8 {
        return Err(Error::invalid(
            "serialized entity key: key count exceeds the data",
        ));
    }
    let mut names = Vec::with_capacity(count);
    for _ in 0..count {
        let tag = r.u32()?;
        if tag != ValueType::String as u32 {
            return Err(Error::invalid(format!(
                "serialized entity key: join key tag {tag}, expected 2 (STRING)"
            )));
        }
        let name = r.chunk()?;
        let name = std::str::from_utf8(name)
            .map_err(|_| Error::invalid("serialized entity key: join key is not UTF-8"))?;
        names.push(name.to_owned());
    }
    let mut pairs = Vec::with_capacity(count);
    for name in names {
        let tag = r.u32()?;
        let payload = r.chunk()?;
        let fixed = |n: usize| -> Result<[u8; 8], Error> {
            if payload.len() != n {
                return Err(Error::invalid(format!(
                    "serialized entity key: value of {name:?} has {} bytes, expected {n}",
                    payload.len()
                )));
            }
            let mut buf = [0u8; 8];
            buf[..n].copy_from_slice(payload);
            Ok(buf)
        };
        let value = match ValueType::from_i32(tag as i32) {
            Some(ValueType::String) => {
                Value::String(String::from_utf8(payload.to_vec()).map_err(|_| {
                    Error::invalid("serialized entity key: string value is not UTF-8")
                })?)
            }
            Some(ValueType::Bytes) => Value::Bytes(payload.to_vec()),
            Some(ValueType::Int32) => {
                let b = fixed(4)?;
                Value::Int32(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            Some(ValueType::Int64) => Value::Int64(i64::from_le_bytes(fixed(8)?)),
            Some(ValueType::UnixTimestamp) => Value::UnixTimestamp(i64::from_le_bytes(fixed(8)?)),
            _ => {
                return Err(Error::invalid(format!(
                    "serialized entity key: unsupported value tag {tag}"
                )));
            }
        };
        pairs.push((name, value));
    }
    if r.pos != bytes.len() {
        return Err(Error::invalid(
            "serialized entity key: trailing bytes after the last value",
        ));
    }
    Ok(pairs)
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_value(out: &mut Vec<u8>, tag: ValueType, payload: &[u8]) {
    put_u32(out, tag as usize);
    put_u32(out, payload.len());
    out.extend_from_slice(payload);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Result<u32, Error> {
        let end = self.pos + 4;
        let b = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| Error::invalid("serialized entity key: truncated"))?;
        self.pos = end;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn chunk(&mut self) -> Result<&'a [u8], Error> {
        let len = self.u32()? as usize;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| Error::invalid("serialized entity key: truncated"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn documented_example() {
        // feast-compat.md: driver_id=1001 (Int64), project demo.
        let key = redis_key(&[("driver_id", &Value::Int64(1001))], "demo").unwrap();
        assert_eq!(
            hex(&key),
            format!(
                "01000000020000000900000064726976 65725f69640400000008000000e903000000000000{}",
                hex(b"demo")
            )
            .replace(' ', "")
        );
    }

    #[test]
    fn composite_keys_sort_and_round_trip() {
        let a = Value::String("x".into());
        let b = Value::Int32(-1);
        let k1 = serialize(&[("zeta", &a), ("alpha", &b)]).unwrap();
        let k2 = serialize(&[("alpha", &b), ("zeta", &a)]).unwrap();
        assert_eq!(k1, k2);
        let back = deserialize(&k1).unwrap();
        assert_eq!(
            back,
            vec![("alpha".into(), b.clone()), ("zeta".into(), a.clone())]
        );
    }

    #[test]
    fn rejects_unkeyable_and_malformed() {
        assert!(serialize(&[("f", &Value::Float(1.0))]).is_err());
        assert!(serialize(&[("n", &Value::Null)]).is_err());
        let good = serialize(&[("id", &Value::Int64(5))]).unwrap();
        for cut in 0..good.len() {
            assert!(deserialize(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(deserialize(&long).is_err());
        assert!(deserialize(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }
}

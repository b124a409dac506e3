//! Feast's online-store layouts, as byte codecs (the stores themselves live in online-store/).
//!
//! Redis: one HASH per entity key (`entity key v3 ++ project`), holding every view on that key
//! set. A feature's field is the MurmurHash3 (x86, 32-bit, seed 0) of `"{view}:{feature}"` as 4
//! little-endian bytes; the value is a serialized `Value`. The field `_ts:{view}` holds the view's
//! event time as a serialized `google.protobuf.Timestamp`.
//!
//! SQLite: one table per view, `{project}_{view}`, one row per (entity, feature): the entity key
//! v3 bytes without the project suffix, the plain feature name, the serialized `Value`, and the
//! event and created times as integer epoch seconds.

use prost::Message;

use crate::Error;
use crate::time::Timestamp;

/// MurmurHash3, x86 32-bit variant.
pub fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, b) in tail.iter().enumerate() {
            k |= u32::from(*b) << (8 * i);
        }
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The Redis hash field of a feature: murmur3 of `"{view}:{feature}"`, little-endian.
pub fn redis_field(view: &str, feature: &str) -> [u8; 4] {
    let mut buf = Vec::with_capacity(view.len() + feature.len() + 1);
    buf.extend_from_slice(view.as_bytes());
    buf.push(b':');
    buf.extend_from_slice(feature.as_bytes());
    murmur3_x86_32(&buf, 0).to_le_bytes()
}

/// The Redis hash field holding a view's event time: `_ts:{view}`.
pub fn redis_ts_field(view: &str) -> String {
    format!("_ts:{view}")
}

/// Serializes an event time the way Feast writes `_ts:{view}`.
pub fn encode_timestamp(ts: &Timestamp) -> Vec<u8> {
    ts.encode_to_vec()
}

/// The longest `_ts:{view}` value: two fields, each a tag and a varint of up to ten bytes.
pub const TIMESTAMP_MAX_LEN: usize = 22;

/// [`encode_timestamp`] into a buffer of the caller's (no allocation per written row).
pub fn encode_timestamp_into<'a>(ts: &Timestamp, out: &'a mut [u8; TIMESTAMP_MAX_LEN]) -> &'a [u8] {
    let mut rest: &mut [u8] = &mut out[..];
    // `encode` refuses only a buffer too small, and any Timestamp fits in TIMESTAMP_MAX_LEN.
    if ts.encode(&mut rest).is_err() {
        return &[];
    }
    let n = TIMESTAMP_MAX_LEN - rest.len();
    &out[..n]
}

/// Parses a `_ts:{view}` value.
pub fn decode_timestamp(bytes: &[u8]) -> Result<Timestamp, Error> {
    Timestamp::decode(bytes).map_err(|e| Error::invalid(format!("stored event timestamp: {e}")))
}

/// The SQLite table of a view: `{project}_{view}`.
pub fn sqlite_table(project: &str, view: &str) -> String {
    format!("{project}_{view}")
}

/// The statements Feast's SQLite online store runs to create a view's table and its index.
pub fn sqlite_create_table(table: &str) -> [String; 2] {
    let quoted = quote_ident(table);
    let index = quote_ident(&format!("{table}_ek"));
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {quoted} (entity_key BLOB, feature_name TEXT, value BLOB, \
             value_text TEXT, vector_value BLOB, event_ts timestamp, created_ts timestamp, \
             PRIMARY KEY(entity_key, feature_name))"
        ),
        format!("CREATE INDEX IF NOT EXISTS {index} ON {quoted} (entity_key)"),
    ]
}

/// An SQLite identifier in double quotes, inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One row of Feast's SQLite layout.
#[derive(Debug, Clone, PartialEq)]
pub struct SqliteRow {
    /// Entity key v3 bytes, without the project suffix.
    pub entity_key: Vec<u8>,
    /// The plain feature name.
    pub feature_name: String,
    /// A serialized `Value`.
    pub value: Vec<u8>,
    /// Event time, integer epoch seconds.
    pub event_ts: i64,
    /// Created time, integer epoch seconds.
    pub created_ts: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_reference_vectors() {
        // Published MurmurHash3_x86_32 test vectors.
        assert_eq!(murmur3_x86_32(b"", 0), 0);
        assert_eq!(murmur3_x86_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_x86_32(b"", 0xffff_ffff), 0x81f1_6f39);
        assert_eq!(murmur3_x86_32(&[0xff, 0xff, 0xff, 0xff], 0), 0x7629_3b50);
        assert_eq!(murmur3_x86_32(&[0x21, 0x43, 0x65, 0x87], 0), 0xf55b_516b);
        assert_eq!(murmur3_x86_32(&[0x21, 0x43, 0x65], 0), 0x7e4a_8634);
        assert_eq!(murmur3_x86_32(&[0x21, 0x43], 0), 0xa0f7_b07a);
        assert_eq!(murmur3_x86_32(&[0x21], 0), 0x7266_1cf4);
        assert_eq!(murmur3_x86_32(b"Hello, world!", 1234), 0xfaf6_cdb3);
    }

    #[test]
    fn documented_field() {
        // feast-compat.md: driver_hourly_stats:conv_rate -> 61 60 e3 da.
        assert_eq!(
            redis_field("driver_hourly_stats", "conv_rate"),
            [0x61, 0x60, 0xe3, 0xda]
        );
    }

    #[test]
    fn timestamp_round_trip() {
        let ts = Timestamp {
            seconds: 1_795_658_400,
            nanos: 250_000_000,
        };
        assert_eq!(decode_timestamp(&encode_timestamp(&ts)).unwrap(), ts);
        assert!(decode_timestamp(&[0xff]).is_err());
    }

    #[test]
    fn timestamps_encode_in_place_as_in_a_vec() {
        for seconds in [0i64, 1, 127, 128, 1_767_225_600, -1, i64::MAX, i64::MIN] {
            for nanos in [0i32, 1, 127, 128, 999_999_999, -1] {
                let ts = Timestamp { seconds, nanos };
                let mut buf = [0u8; TIMESTAMP_MAX_LEN];
                let in_place = encode_timestamp_into(&ts, &mut buf);
                assert_eq!(in_place, &encode_timestamp(&ts)[..], "{ts:?}");
            }
        }
    }
}

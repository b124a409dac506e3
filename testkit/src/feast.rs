//! Rows in Feast's Redis layout, written the way Feast's Python writes them (one hash per entity
//! key, a field per feature, `_ts:<view>` per view), for tests that seed a store directly.

use std::time::{SystemTime, UNIX_EPOCH};

use quiver_core::time::Timestamp;
use quiver_core::{Value, entity_key, layout};

/// Now, as a protobuf timestamp.
pub fn now_ts() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Writes one view's row for one entity in Feast's Redis layout.
pub fn write_redis_row(
    conn: &mut impl redis::ConnectionLike,
    project: &str,
    keys: &[(&str, Value)],
    view: &str,
    features: &[(&str, Value)],
    event_ts: Timestamp,
) {
    let pairs: Vec<(&str, &Value)> = keys.iter().map(|(k, v)| (*k, v)).collect();
    let key = entity_key::redis_key(&pairs, project).expect("an entity key");
    let mut cmd = redis::cmd("HSET");
    cmd.arg(&key);
    for (f, v) in features {
        cmd.arg(&layout::redis_field(view, f)[..])
            .arg(v.encode_to_vec());
    }
    cmd.arg(layout::redis_ts_field(view))
        .arg(layout::encode_timestamp(&event_ts));
    cmd.query::<()>(conn).expect("HSET of a Feast row");
}

/// A serialized `Value` with its Map and Struct entries sorted by key, at every depth: Feast's
/// Python (upb) writes map entries in a per-process hash order, so two writes of one value
/// compare equal only this way. Everything else is kept byte for byte (re-encoding is exact;
/// `quiver-core`'s tests check it against Feast's bytes). Bytes that do not decode are kept.
pub fn sorted_map_entries(bytes: &[u8]) -> Vec<u8> {
    fn sort(v: Value) -> Value {
        let fields = |mut m: Vec<(String, Value)>| {
            m.sort_by(|a, b| a.0.cmp(&b.0));
            m.into_iter().map(|(k, v)| (k, sort(v))).collect()
        };
        match v {
            Value::Map(m) => Value::Map(fields(m)),
            Value::Struct(m) => Value::Struct(fields(m)),
            Value::MapList(l) => Value::MapList(l.into_iter().map(fields).collect()),
            Value::StructList(l) => Value::StructList(l.into_iter().map(fields).collect()),
            other => other,
        }
    }
    match Value::decode(bytes) {
        Ok(v) => sort(v).encode_to_vec(),
        Err(_) => bytes.to_vec(),
    }
}

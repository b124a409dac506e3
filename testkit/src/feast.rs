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

//! A stored value that does not decode is never served as PRESENT: against a real Redis holding
//! garbage bytes in Feast's layout, the feature is null with status INVALID (JSON and Arrow), its
//! neighbours are served, and `quiver_corrupt_values_total` counts it once per store read. A row
//! whose event time does not decode fails the read: 502 `OnlineStoreCorrupt`.

mod support;

use quiver_core::{Value, entity_key, layout};
use quiver_sidecar::SidecarConfig;
use serde_json::json;
use support::*;

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: src, path: data/src.parquet}
feature_views:
  - name: driver_stats
    entities: [driver]
    source: src
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: trips, dtype: Int64}
"#;

/// Not a protobuf message: field 31, wire type 7 (there is no wire type 7).
const GARBAGE: &[u8] = &[0xff, 0xff, 0xff, 0xff];

fn hset(conn: &mut redis::Connection, id: i64, field: Vec<u8>, bytes: &[u8]) {
    let key = entity_key::redis_key(&[("driver_id", &Value::Int64(id))], "demo").unwrap();
    redis::cmd("HSET")
        .arg(&key)
        .arg(field)
        .arg(bytes)
        .query::<()>(conn)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_does_not_decode_is_invalid_and_counted() {
    let redis = RedisServer::start();
    let repo = Repo::new("demo", DEFS);
    let mut conn = redis.client().get_connection().unwrap();
    write_redis_row(
        &mut conn,
        "demo",
        &[("driver_id", Value::Int64(1))],
        "driver_stats",
        &[
            ("conv_rate", Value::Float(0.5)),
            ("trips", Value::Int64(10)),
        ],
        now_ts(),
    );
    hset(
        &mut conn,
        1,
        layout::redis_field("driver_stats", "conv_rate").to_vec(),
        GARBAGE,
    );
    let store = redis_store(&redis, "demo").await;
    let sidecar = start_sidecar(
        SidecarConfig::default(),
        "demo",
        repo.registry_path(),
        store,
    )
    .await;
    let req = json!({"features": ["driver_stats:conv_rate", "driver_stats:trips"], "entities": {"driver_id": [1]}});

    // Twice: the store read, then the cached row.
    for _ in 0..2 {
        let (status, resp) = post(sidecar.addr, req.clone()).await;
        assert_eq!(status, 200, "{resp}");
        let (values, statuses, _) = column(&resp, "conv_rate");
        assert_eq!((values[0].clone(), statuses[0]), (json!(null), "INVALID"));
        let (values, statuses, _) = column(&resp, "trips");
        assert_eq!((values[0].clone(), statuses[0]), (json!(10), "PRESENT"));
    }
    assert_eq!(
        metric(sidecar.addr, "quiver_corrupt_values_total").await,
        1.0,
        "counted once per store read, not per request"
    );

    // The Arrow answer agrees.
    let (status, head, bytes) = http_raw(
        sidecar.addr,
        "/get-online-features",
        &[("Accept", "application/vnd.apache.arrow.stream")],
        req.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{head}");
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let batch = reader.into_iter().next().unwrap().unwrap();
    let status = |name: &str| {
        arrow_array::cast::AsArray::as_string::<i32>(batch.column_by_name(name).unwrap())
            .value(0)
            .to_owned()
    };
    assert_eq!(status("conv_rate__status"), "INVALID");
    assert_eq!(status("trips__status"), "PRESENT");
    assert!(arrow_array::Array::is_null(
        batch.column_by_name("conv_rate").unwrap(),
        0
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_time_that_does_not_decode_fails_the_read_as_upstream_corrupt() {
    let redis = RedisServer::start();
    let repo = Repo::new("demo", DEFS);
    let mut conn = redis.client().get_connection().unwrap();
    write_redis_row(
        &mut conn,
        "demo",
        &[("driver_id", Value::Int64(2))],
        "driver_stats",
        &[("trips", Value::Int64(20))],
        now_ts(),
    );
    hset(
        &mut conn,
        2,
        layout::redis_ts_field("driver_stats").into_bytes(),
        GARBAGE,
    );
    let store = redis_store(&redis, "demo").await;
    let sidecar = start_sidecar(
        SidecarConfig::default(),
        "demo",
        repo.registry_path(),
        store,
    )
    .await;
    let (status, resp) = post(
        sidecar.addr,
        json!({"features": ["driver_stats:trips"], "entities": {"driver_id": [2]}}),
    )
    .await;
    assert_eq!(status, 502, "{resp}");
    assert_eq!(resp["class"], "OnlineStoreCorrupt", "{resp}");
    assert!(
        resp["message"].as_str().unwrap().contains("Feast's layout"),
        "{resp}"
    );
}

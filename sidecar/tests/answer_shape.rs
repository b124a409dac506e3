//! The answer's columns are Feast's: the requested views' join keys, then the features. A request
//! column that is no join key of the requested views (an on-demand view's input such as
//! `val_to_add`) is not echoed, in JSON (from the store and from the cache) or in Arrow.

mod support;

use quiver_core::Value;
use quiver_sidecar::SidecarConfig;
use serde_json::json;
use support::*;

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
  - {name: customer, join_keys: [customer_id], value_type: STRING}
sources:
  - {name: src, path: data/src.parquet}
feature_views:
  - name: driver_stats
    entities: [driver]
    source: src
    schema:
      - {name: conv_rate, dtype: Float32}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_only_columns_are_not_echoed() {
    let redis = RedisServer::start();
    let repo = Repo::new("demo", DEFS);
    let mut conn = redis.client().get_connection().unwrap();
    write_redis_row(
        &mut conn,
        "demo",
        &[("driver_id", Value::Int64(1))],
        "driver_stats",
        &[("conv_rate", Value::Float(0.5))],
        now_ts(),
    );
    let store = redis_store(&redis, "demo").await;
    let sidecar = start_sidecar(
        SidecarConfig::default(),
        "demo",
        repo.registry_path(),
        store,
    )
    .await;
    let req = json!({
        "features": ["driver_stats:conv_rate"],
        "entities": {"val_to_add": [10, 20], "driver_id": [1, 2], "note": ["a", "b"]},
    });
    // Twice: from the store, then every row from the cache.
    for _ in 0..2 {
        let (status, resp) = post(sidecar.addr, req.clone()).await;
        assert_eq!(status, 200, "{resp}");
        assert_eq!(
            resp["metadata"]["feature_names"],
            json!(["driver_id", "conv_rate"]),
            "{resp}"
        );
        assert_eq!(resp["results"].as_array().unwrap().len(), 2, "{resp}");
        assert_eq!(column(&resp, "driver_id").0, &vec![json!(1), json!(2)]);
        assert_eq!(column(&resp, "conv_rate").0, &vec![json!(0.5), json!(null)]);
    }
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
    let names: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "driver_id",
            "conv_rate",
            "conv_rate__status",
            "conv_rate__event_timestamp"
        ]
    );
}

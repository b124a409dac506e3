//! Native on-demand views served over a real redis-server and real HTTP: computed after the
//! source reads (cold and cached), through a feature service with full names, in Arrow, with
//! the request fields typed, required and not echoed.

mod support;

use quiver_core::Value;
use quiver_sidecar::SidecarConfig;
use serde_json::json;
use support::*;

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: src, path: data/src.parquet}
  - name: req
    type: request
    schema: [{name: bonus, dtype: Float64}, {name: tag, dtype: String}]
feature_views:
  - name: driver_stats
    entities: [driver]
    source: src
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: trips, dtype: Int64}
on_demand_feature_views:
  - name: scored
    sources: [driver_stats]
    request_source: req
    features:
      - {name: score, dtype: Float64, expr: "driver_stats.conv_rate * 100 + bonus"}
      - {name: per_trip, dtype: Float64, expr: "bonus / driver_stats.trips"}
      - {name: label, dtype: String, expr: "tag || ':' || cast(coalesce(driver_stats.trips, -1), String)"}
feature_services:
  - name: svc
    features:
      - {view: driver_stats, features: [trips]}
      - {view: scored, features: [label, score]}
"#;

async fn fixture() -> (RedisServer, Repo, Sidecar) {
    let redis = RedisServer::start();
    let repo = Repo::new("demo", DEFS);
    let mut conn = redis.client().get_connection().unwrap();
    for (id, rate, trips) in [(1001, 0.5f32, 10), (1002, 0.25, 0)] {
        write_redis_row(
            &mut conn,
            "demo",
            &[("driver_id", Value::Int64(id))],
            "driver_stats",
            &[
                ("conv_rate", Value::Float(rate)),
                ("trips", Value::Int64(trips)),
            ],
            now_ts(),
        );
    }
    let store = redis_store(&redis, "demo").await;
    let sidecar = start_sidecar(
        SidecarConfig::default(),
        "demo",
        repo.registry_path(),
        store,
    )
    .await;
    (redis, repo, sidecar)
}

#[tokio::test]
async fn native_views_are_computed_from_the_sources_and_the_request() {
    let (_redis, _repo, sidecar) = fixture().await;
    let body = json!({
        "features": ["scored:score", "scored:per_trip", "scored:label", "driver_stats:conv_rate"],
        "entities": {"driver_id": [1001, 1002, 1003], "bonus": [1.5, 2, 3], "tag": ["a", "b", "c"]},
    });
    // Twice: the second answer comes from the cache's fast path.
    for _ in 0..2 {
        let (status, resp) = post(sidecar.addr, body.clone()).await;
        assert_eq!(status, 200, "{resp}");
        let names = resp["metadata"]["feature_names"].as_array().unwrap();
        assert_eq!(
            *names,
            ["driver_id", "conv_rate", "score", "per_trip", "label"],
            "request fields are not echoed; on-demand features come last"
        );
        let (score, statuses, ts) = column(&resp, "score");
        assert_eq!(*score, [json!(51.5), json!(27.0), json!(null)]);
        assert_eq!(statuses, ["PRESENT"; 3]);
        assert_eq!(ts, ["1970-01-01T00:00:00Z"; 3]);
        // 1002 has 0 trips: division by zero is null.
        assert_eq!(
            *column(&resp, "per_trip").0,
            [json!(0.15), json!(null), json!(null)]
        );
        assert_eq!(
            *column(&resp, "label").0,
            [json!("a:10"), json!("b:0"), json!("c:-1")]
        );
    }
}

#[tokio::test]
async fn feature_services_full_names_and_arrow() {
    let (_redis, _repo, sidecar) = fixture().await;
    let (status, resp) = post(
        sidecar.addr,
        json!({
            "feature_service": "svc",
            "full_feature_names": true,
            "entities": {"driver_id": [1001], "bonus": [0.0], "tag": ["x"]},
        }),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let names = resp["metadata"]["feature_names"].as_array().unwrap();
    assert_eq!(
        *names,
        [
            "driver_id",
            "driver_stats__trips",
            "scored__label",
            "scored__score"
        ]
    );
    assert_eq!(*column(&resp, "scored__label").0, [json!("x:10")]);

    // The same request as Arrow: the computed columns typed as declared.
    let (status, _, raw) = http_raw(
        sidecar.addr,
        "/get-online-features",
        &[("accept", "application/vnd.apache.arrow.stream")],
        json!({
            "features": ["scored:score", "scored:label"],
            "entities": {"driver_id": [1001, 1003], "bonus": [1, 1], "tag": ["t", "u"]},
        })
        .to_string()
        .as_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    let batches: Vec<_> = arrow_ipc::reader::StreamReader::try_new(raw.as_slice(), None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let batch = &batches[0];
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    let score = batch
        .column_by_name("score")
        .unwrap()
        .as_primitive::<arrow_array::types::Float64Type>();
    assert_eq!(score.value(0), 51.0);
    assert!(score.is_null(1));
    let label = batch.column_by_name("label").unwrap().as_string::<i32>();
    assert_eq!(label.value(1), "u:-1");
    assert!(batch.column_by_name("bonus").is_none());
}

#[tokio::test]
async fn request_fields_are_required_and_typed() {
    let (_redis, _repo, sidecar) = fixture().await;
    let cases = [
        (
            json!({"driver_id": [1001], "tag": ["a"]}),
            "request field bonus is missing from entities",
        ),
        (
            json!({"driver_id": [1001], "bonus": ["high"], "tag": ["a"]}),
            "entities.bonus[0]",
        ),
        (
            json!({"driver_id": [1001], "bonus": [1.0], "tag": [7]}),
            "entities.tag[0]",
        ),
    ];
    for (entities, words) in cases {
        let (status, resp) = post(
            sidecar.addr,
            json!({"features": ["scored:label"], "entities": entities}),
        )
        .await;
        assert_eq!(status, 400, "{resp}");
        assert!(resp.to_string().contains(words), "{words}: {resp}");
    }
    let (status, resp) = post(
        sidecar.addr,
        json!({"features": ["scored:nope"], "entities": {"driver_id": [1]}}),
    )
    .await;
    assert_eq!(status, 404, "{resp}");
    assert!(
        resp.to_string().contains("on-demand feature view scored"),
        "{resp}"
    );
}

//! Write-time on-demand views (`write_to_online_store: true`), native, over real HTTP into a
//! real redis-server and a real SQLite file: `POST /write-to-online-store` naming the view
//! computes its features and stores them in Feast's layout (the outputs and the join keys as
//! fields of `{view}`, stamped with the time of the write), and serving answers the stored
//! values without the request data the computation read.

mod support;

use std::sync::Arc;

use quiver_core::{Value, entity_key, layout};
use quiver_online_store::{OnlineStore, SqliteStore};
use quiver_sidecar::SidecarConfig;
use quiver_sidecar::push::PushConfig;
use serde_json::json;
use support::*;

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: stats, path: data/stats.parquet, timestamp_field: event_timestamp}
  - {name: stats_push, type: push, batch_source: stats}
  - name: req
    type: request
    schema: [{name: bonus, dtype: Float64}]
feature_views:
  - name: driver_fresh
    entities: [driver]
    ttl: 0
    source: stats_push
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: trips, dtype: Int64}
on_demand_feature_views:
  - name: stored_score
    sources: [driver_fresh]
    request_source: req
    write_to_online_store: true
    features:
      - {name: score, dtype: Float64, expr: "driver_fresh.conv_rate * 100 + bonus"}
      - {name: label, dtype: String, expr: "'t' || cast(driver_fresh.trips, String)"}
feature_services:
  - name: svc
    features:
      - {view: driver_fresh, features: [trips]}
      - stored_score
"#;

fn config() -> SidecarConfig {
    SidecarConfig {
        push: Some(PushConfig::default()),
        ..SidecarConfig::default()
    }
}

async fn write(sidecar: &Sidecar, body: serde_json::Value) -> (u16, serde_json::Value) {
    let (status, text) = http(
        sidecar.addr,
        "POST",
        "/write-to-online-store",
        body.to_string().as_bytes(),
    )
    .await;
    (status, answer(status, &text))
}

fn key(id: i64) -> Vec<u8> {
    entity_key::serialize(&[("driver_id", &Value::Int64(id))]).unwrap()
}

/// Writes, serves and checks errors; the same on both stores.
async fn write_then_serve(sidecar: &Sidecar, sqlite: bool) {
    // Driver 1 twice: Feast stamps one time on the whole write; its Redis store keeps the first
    // row, its SQLite store the last.
    let before = std::time::SystemTime::now();
    let (status, body) = write(
        sidecar,
        json!({
            "feature_view_name": "stored_score",
            "df": {
                "driver_id": [1, 2, 1],
                "conv_rate": [0.5, 0.25, 0.75],
                "trips": [3, 4, 5],
                "bonus": [1, 2.5, 3],
                "event_timestamp": ["2026-01-01T00:00:00", "2026-01-01T00:00:00", "2026-01-01T00:00:00"],
            },
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["written"], 2, "{body}");

    // Served as stored values: no request data needed, statuses from the store.
    let req = json!({
        "features": ["stored_score:score", "stored_score:label"],
        "entities": {"driver_id": [1, 2, 3]},
    });
    for _ in 0..2 {
        let (status, resp) = post(sidecar.addr, req.clone()).await;
        assert_eq!(status, 200, "{resp}");
        let names = resp["metadata"]["feature_names"].as_array().unwrap();
        assert_eq!(*names, ["driver_id", "score", "label"]);
        let (score, statuses, ts) = column(&resp, "score");
        let first = if sqlite { json!(78.0) } else { json!(51.0) };
        assert_eq!(*score, [first.clone(), json!(27.5), json!(null)]);
        assert_eq!(statuses, ["PRESENT", "PRESENT", "NOT_FOUND"]);
        // Stamped with the time of the write, as Feast does.
        let written = quiver_core::time::parse_datetime(ts[0]).unwrap();
        let since = before
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(written.seconds >= since - 1, "{ts:?}");
        let label = if sqlite { json!("t5") } else { json!("t3") };
        assert_eq!(*column(&resp, "label").0, [label, json!("t4"), json!(null)]);
    }
    // Through a feature service, full names: read like a view's features.
    let (status, resp) = post(
        sidecar.addr,
        json!({"feature_service": "svc", "full_feature_names": true, "entities": {"driver_id": [2]}}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(*column(&resp, "stored_score__score").0, [json!(27.5)]);
    assert_eq!(*column(&resp, "stored_score__label").0, [json!("t4")]);

    // transform_on_write: false writes the outputs the table carries; a second write at a
    // later time replaces the stored row (and the sidecar's cached copy).
    let (status, body) = write(
        sidecar,
        json!({
            "feature_view_name": "stored_score",
            "transform_on_write": false,
            "df": {"driver_id": [2], "score": [7.0], "label": ["given"]},
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, resp) = post(sidecar.addr, req.clone()).await;
    let (first, label) = if sqlite {
        (json!(78.0), json!("t5"))
    } else {
        (json!(51.0), json!("t3"))
    };
    assert_eq!(*column(&resp, "score").0, [first, json!(7.0), json!(null)]);
    assert_eq!(
        *column(&resp, "label").0,
        [label, json!("given"), json!(null)]
    );

    // Bad tables: 422 naming the column, nothing written.
    let cases = [
        (
            json!({"driver_id": [9], "conv_rate": [0.5], "trips": [1]}),
            true,
            "df has no column \"bonus\"",
        ),
        (
            json!({"driver_id": [9], "conv_rate": [0.5], "trips": [1], "bonus": [1], "other": [1]}),
            true,
            "df column \"other\" is not a join key or an input",
        ),
        (
            json!({"conv_rate": [0.5], "trips": [1], "bonus": [1]}),
            true,
            "df has no column \"driver_id\"",
        ),
        (
            json!({"driver_id": [9], "conv_rate": ["x"], "trips": [1], "bonus": [1]}),
            true,
            "df column \"conv_rate\", row 0",
        ),
        (
            json!({"driver_id": [9], "score": [1.0]}),
            false,
            "df has no column \"label\"",
        ),
    ];
    for (df, transform, message) in cases {
        let (status, body) = write(
            sidecar,
            json!({"feature_view_name": "stored_score", "df": df, "transform_on_write": transform}),
        )
        .await;
        assert_eq!(status, 422, "{body}");
        let text = body["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{message}: {body}");
    }
    let (_, resp) = post(
        sidecar.addr,
        json!({"features": ["stored_score:score"], "entities": {"driver_id": [9]}}),
    )
    .await;
    assert_eq!(column(&resp, "score").1, ["NOT_FOUND"]);
}

#[tokio::test]
async fn native_write_time_views_into_redis_are_stored_in_feasts_layout_and_served() {
    let redis = RedisServer::start();
    let repo = Repo::new("demo", DEFS);
    let store = redis_store(&redis, "demo").await;
    let sidecar = start_sidecar(config(), "demo", repo.registry_path(), store).await;
    write_then_serve(&sidecar, false).await;

    // Feast's layout: the outputs and the join key as fields of the view, and its `_ts`.
    let mut conn = redis.client().get_connection().unwrap();
    let mut redis_key = key(1);
    redis_key.extend_from_slice(b"demo");
    let hash: std::collections::HashMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL")
        .arg(&redis_key)
        .query(&mut conn)
        .unwrap();
    let field = |f: &str| {
        hash.get(&layout::redis_field("stored_score", f)[..])
            .cloned()
    };
    assert_eq!(field("score"), Some(Value::Double(51.0).encode_to_vec()));
    assert_eq!(
        field("label"),
        Some(Value::String("t3".into()).encode_to_vec())
    );
    assert_eq!(field("driver_id"), Some(Value::Int64(1).encode_to_vec()));
    assert!(hash.contains_key(&b"_ts:stored_score"[..]));
    assert_eq!(
        hash.len(),
        4,
        "no source feature or request field is stored"
    );
}

#[tokio::test]
async fn native_write_time_views_into_sqlite_are_stored_in_feasts_layout_and_served() {
    let repo = Repo::new("demo", DEFS);
    let db = repo.path().join("data/online.db");
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(&db)));
    let sidecar = start_sidecar(config(), "demo", repo.registry_path(), store).await;
    write_then_serve(&sidecar, true).await;

    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut stmt = conn
        .prepare("SELECT feature_name, value, event_ts = created_ts FROM demo_stored_score WHERE entity_key = ?1 ORDER BY feature_name")
        .unwrap();
    let rows: Vec<(String, Vec<u8>, bool)> = stmt
        .query_map([key(1)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        [
            (
                "driver_id".to_owned(),
                Value::Int64(1).encode_to_vec(),
                true
            ),
            (
                "label".to_owned(),
                Value::String("t5".into()).encode_to_vec(),
                true
            ),
            (
                "score".to_owned(),
                Value::Double(78.0).encode_to_vec(),
                true
            ),
        ]
    );
}

#[tokio::test]
async fn write_time_views_need_no_request_data_and_are_not_recomputed() {
    let redis = RedisServer::start();
    let repo = Repo::new("demo", DEFS);
    let store = redis_store(&redis, "demo").await;
    let sidecar = start_sidecar(config(), "demo", repo.registry_path(), store).await;
    // A push to the source view does not change the stored on-demand row: it is computed when
    // it is written, not per request.
    let (status, body) = write(
        &sidecar,
        json!({"feature_view_name": "stored_score", "df": {"driver_id": [1], "conv_rate": [0.5], "trips": [1], "bonus": [0]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, text) = http(
        sidecar.addr,
        "POST",
        "/push",
        json!({"push_source_name": "stats_push", "df": {"driver_id": [1], "conv_rate": [0.1], "trips": [9], "event_timestamp": ["2026-01-01T00:00:00"]}})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, resp) = post(
        sidecar.addr,
        json!({"features": ["stored_score:score", "driver_fresh:conv_rate"], "entities": {"driver_id": [1], "bonus": [100]}}),
    )
    .await;
    // An entity column no requested view reads (here the request field) is ignored.
    assert_eq!(status, 200, "{resp}");
    assert_eq!(*column(&resp, "score").0, [json!(50.0)]);
    let conv = column(&resp, "conv_rate").0[0].as_f64().unwrap();
    assert!((conv - 0.1).abs() < 1e-6, "{resp}");
}

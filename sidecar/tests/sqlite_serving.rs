//! The sidecar over Feast's SQLite layout (the embedded default): answers from a real SQLite
//! file, and change detection when another process writes it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use quiver_core::Value;
use quiver_online_store::{OnlineStore, SqliteStore};
use quiver_sidecar::{EngineConfig, SidecarConfig};
use serde_json::json;
use support::*;

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: src, path: data/src.parquet}
feature_views:
  - name: stats
    entities: [driver]
    source: src
    schema:
      - {name: rate, dtype: Float64}
      - {name: label, dtype: String}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_feasts_sqlite_layout_and_follows_changes() {
    let repo = Repo::new("demo", DEFS);
    let db = repo.path().join("data/online.db");
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(&db)));
    let config = SidecarConfig {
        engine: EngineConfig {
            max_staleness: Duration::from_secs(60),
            ..EngineConfig::default()
        },
        ..SidecarConfig::default()
    };
    let sidecar = start_sidecar(config, "demo", repo.registry_path(), store).await;
    let req = json!({"features": ["stats:rate", "stats:label"], "entities": {"driver_id": [1, 2]}});

    // Nothing materialized yet: not found, not an error.
    let (status, resp) = post(sidecar.addr, req.clone()).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(column(&resp, "rate").1, ["NOT_FOUND", "NOT_FOUND"]);

    write_sqlite(
        &db,
        "demo",
        "stats",
        1,
        &[
            ("rate", Value::Double(0.5)),
            ("label", Value::String("a".into())),
        ],
        1_714_564_800,
    );
    // Another process wrote: change detection drops the cached negatives well within the bound.
    let mut served = json!(null);
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, resp) = post(sidecar.addr, req.clone()).await;
        served = column(&resp, "rate").0[0].clone();
        if served == json!(0.5) {
            let (_, statuses, stamps) = column(&resp, "label");
            assert_eq!(statuses, ["PRESENT", "NOT_FOUND"]);
            assert_eq!(stamps[0], "2024-05-01T12:00:00Z");
            break;
        }
    }
    assert_eq!(served, json!(0.5));

    write_sqlite(
        &db,
        "demo",
        "stats",
        1,
        &[("rate", Value::Double(0.75))],
        1_714_564_900,
    );
    let mut updated = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, resp) = post(sidecar.addr, req.clone()).await;
        if column(&resp, "rate").0[0] == json!(0.75) {
            updated = true;
            break;
        }
    }
    assert!(updated, "an update to the SQLite file was not seen");
    assert_eq!(http(sidecar.addr, "GET", "/ready", b"").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_mode_over_sqlite() {
    let repo = Repo::new("demo", DEFS);
    let db = repo.path().join("data/online.db");
    for id in 1..=50 {
        write_sqlite(
            &db,
            "demo",
            "stats",
            id,
            &[("rate", Value::Double(id as f64 / 100.0))],
            1_714_564_800,
        );
    }
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(&db)));
    let config = SidecarConfig {
        replicate: vec!["stats".into()],
        ..SidecarConfig::default()
    };
    let sidecar = start_sidecar(config, "demo", repo.registry_path(), store).await;
    for _ in 0..200 {
        if http(sidecar.addr, "GET", "/ready", b"").await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (status, resp) = post(
        sidecar.addr,
        json!({"features": ["stats:rate"], "entities": {"driver_id": [1, 25, 50]}}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        column(&resp, "rate").0,
        &vec![json!(0.01), json!(0.25), json!(0.5)]
    );
    assert_eq!(metric(sidecar.addr, "quiver_cache_misses_total").await, 0.0);
}

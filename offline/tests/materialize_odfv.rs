//! Materializing write-time on-demand views (native, quiver's YAML) from a real Parquet source
//! into a real SQLite file and a real redis-server: the latest source row of each entity in
//! the window, the view computed over it, stored as Feast stores an on-demand view (outputs
//! and join keys as fields of `{view}`, stamped with the time of the write). Views that cannot
//! be materialized are left out of a whole run with their reason and refused when named.
//! (Feast's own pandas views, through its transformation service, are compared byte for byte
//! with Feast in compat/tests/test_materialize_odfv_compat.py.)

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use parquet::arrow::ArrowWriter;
use quiver_core::time::{Timestamp, parse_datetime};
use quiver_core::{Value, entity_key};
use quiver_offline::historical::EngineOptions;
use quiver_offline::materialize::{Window, WriteOptions};
use quiver_offline::materialize_odfv;
use quiver_online_store::{
    KeyRead, OnlineStore, RedisOptions, RedisStore, SqliteStore, ViewLayout,
};
use quiver_testkit::RedisServer;

const DEFINITIONS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: stats, path: data/stats.parquet, timestamp_field: event_timestamp}
  - name: req
    type: request
    schema: [{name: bonus, dtype: Float64}]
feature_views:
  - name: driver_stats
    entities: [driver]
    ttl: 1d
    source: stats
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: trips, dtype: Int64}
on_demand_feature_views:
  - name: scored
    sources: [driver_stats]
    write_to_online_store: true
    features:
      - {name: score, dtype: Float64, expr: "driver_stats.conv_rate * 100"}
      - {name: label, dtype: String, expr: "'t' || cast(driver_stats.trips, String)"}
  - name: with_bonus
    sources: [driver_stats]
    request_source: req
    write_to_online_store: true
    features:
      - {name: boosted, dtype: Float64, expr: "driver_stats.conv_rate + bonus"}
  - name: per_request
    sources: [driver_stats]
    features:
      - {name: half, dtype: Float64, expr: "driver_stats.conv_rate / 2"}
"#;

fn ts(text: &str) -> Timestamp {
    parse_datetime(text).unwrap()
}

fn micros(text: &str) -> i64 {
    let t = ts(text);
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1000
}

/// (driver, event time, conv_rate, trips)
const ROWS: [(i64, &str, f32, i64); 6] = [
    (1, "2026-01-01T08:00:00Z", 0.125, 1),
    (1, "2026-01-01T10:00:00Z", 0.25, 2),
    // After the window: not read.
    (1, "2026-01-01T13:00:00Z", 0.875, 9),
    (2, "2026-01-01T09:00:00Z", 0.5, 20),
    // Before the window: driver 3 is not written.
    (3, "2026-01-01T07:00:00Z", 0.75, 30),
    (4, "2026-01-01T12:00:00Z", 0.375, 40),
];

fn repo(online_store: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        format!("project: odm\nregistry: data/registry.db\nonline_store:\n{online_store}\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("features.yaml"), DEFINITIONS).unwrap();
    let desired = quiver_registry::definitions::load(dir.path(), "odm").unwrap();
    let path = dir.path().join("data/registry.db");
    let mut file = quiver_registry::store::read(&path).unwrap();
    quiver_registry::apply::apply(&mut file, &desired, ts("2026-01-01T00:00:00Z")).unwrap();
    quiver_registry::store::write_atomic(&path, &file.encode("v1", ts("2026-01-01T00:00:00Z")))
        .unwrap();
    write_parquet(&dir.path().join("data/stats.parquet"));
    dir
}

fn write_parquet(path: &Path) {
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "driver_id",
            Arc::new(Int64Array::from_iter_values(ROWS.iter().map(|r| r.0))),
        ),
        (
            "event_timestamp",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(ROWS.iter().map(|r| micros(r.1)))
                    .with_timezone("UTC"),
            ),
        ),
        (
            "conv_rate",
            Arc::new(Float32Array::from_iter_values(ROWS.iter().map(|r| r.2))),
        ),
        (
            "trips",
            Arc::new(Int64Array::from_iter_values(ROWS.iter().map(|r| r.3))),
        ),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn registry(dir: &Path) -> quiver_core::registry::ProjectRegistry {
    quiver_registry::store::read(&dir.join("data/registry.db"))
        .unwrap()
        .project("odm")
        .unwrap()
}

fn window() -> Window {
    Window::Range {
        start: ts("2026-01-01T08:30:00Z"),
        end: ts("2026-01-01T12:00:00Z"),
    }
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Materializes every write-time view of the repo into `store`; checks what was left out.
async fn run(dir: &Path, store: &OnlineStore) -> Vec<quiver_offline::materialize::ViewRun> {
    let registry = registry(dir);
    let selected =
        materialize_odfv::select(&registry, None, false, "--transformation-service").unwrap();
    assert_eq!(
        selected
            .views
            .iter()
            .map(|v| v.view.name.as_str())
            .collect::<Vec<_>>(),
        ["scored"]
    );
    // The view that reads request data is left out, with why; the per-request one is no
    // write-time view at all.
    assert_eq!(selected.skipped.len(), 1, "{:?}", selected.skipped);
    assert_eq!(selected.skipped[0].0, "with_bonus");
    assert!(selected.skipped[0].1.contains("request data (bonus)"));
    let job = materialize_odfv::Job {
        repo_dir: dir,
        registry: &registry,
        views: selected.views,
        window: window(),
        client: None,
        engine: EngineOptions::default(),
    };
    materialize_odfv::run(&job, store, &WriteOptions::default(), &|_| {})
        .await
        .unwrap()
}

fn key(driver: i64) -> Vec<u8> {
    entity_key::serialize(&[("driver_id", &Value::Int64(driver))]).unwrap()
}

/// The stored rows of `scored` for drivers 1 to 4: (event seconds, score, label, driver_id).
async fn read(store: &OnlineStore) -> Vec<Option<(i64, Value, Value, Value)>> {
    let layout = Arc::new(ViewLayout::new(
        "odm",
        "scored",
        ["score", "label", "driver_id"].map(String::from),
    ));
    let keys: Vec<Vec<u8>> = (1..=4).map(key).collect();
    let reads: Vec<KeyRead<'_>> = keys
        .iter()
        .map(|k| KeyRead {
            entity_key: k,
            views: &[0],
        })
        .collect();
    store
        .read(&[layout], &reads)
        .await
        .unwrap()
        .into_iter()
        .map(|mut r| {
            r.remove(0).map(|row| {
                let v =
                    |i: usize| Value::decode(row.values[i].as_deref().unwrap_or_default()).unwrap();
                (row.event_ts.seconds, v(0), v(1), v(2))
            })
        })
        .collect()
}

/// The latest row in the window of each driver, computed and stamped with the time of the
/// write; driver 3 (no row in the window) absent.
async fn check(store: &OnlineStore, dir: &Path) {
    let before = now_seconds();
    let runs = run(dir, store).await;
    let after = now_seconds();
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].view.as_str(), runs[0].entities), ("scored", 3));
    assert_eq!(runs[0].stats.written, 3, "{:?}", runs[0]);
    let got = read(store).await;
    let expect = |driver: i64, score: f64, label: &str| {
        (
            Value::Double(score),
            Value::String(label.to_owned()),
            Value::Int64(driver),
        )
    };
    for (driver, want) in [
        (1, Some(expect(1, 25.0, "t2"))),
        (2, Some(expect(2, 50.0, "t20"))),
        (3, None),
        (4, Some(expect(4, 37.5, "t40"))),
    ] {
        let row = got[driver as usize - 1].clone();
        match (row, want) {
            (None, None) => {}
            (Some((at, a, b, c)), Some(want)) => {
                assert_eq!((a, b, c), want, "driver {driver}");
                assert!(before <= at && at <= after, "driver {driver}: stamped {at}");
            }
            (row, want) => panic!("driver {driver}: {row:?}, expected {want:?}"),
        }
    }
}

#[tokio::test]
async fn sqlite_stores_the_computed_view() {
    let dir = repo("  type: sqlite\n  path: data/online.db");
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(
        &dir.path().join("data/online.db"),
    )));
    check(&store, dir.path()).await;
    // Feast's table and rows: one per (entity, output or join key).
    let conn = rusqlite::Connection::open(dir.path().join("data/online.db")).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM odm_scored", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 9);
}

#[tokio::test]
async fn redis_stores_the_computed_view_in_feasts_layout() {
    let redis = RedisServer::start();
    let dir = repo(&format!(
        "  type: redis\n  connection_string: 127.0.0.1:{}",
        redis.port
    ));
    let options = RedisOptions {
        host: "127.0.0.1".into(),
        port: redis.port,
        cluster_nodes: Vec::new(),
        db: 0,
        username: None,
        password: None,
        ssl: false,
        ssl_ca_certs: None,
        ssl_insecure: false,
        connect_timeout: Duration::from_secs(2),
        sentinel: None,
    };
    let store = OnlineStore::Redis(Arc::new(RedisStore::connect(options, "odm").await.unwrap()));
    check(&store, dir.path()).await;
    // One hash per driver: two outputs, the join key and `_ts:scored`.
    let mut conn = redis.conn();
    let mut redis_key = key(2);
    redis_key.extend_from_slice(b"odm");
    let fields: Vec<Vec<u8>> = redis::cmd("HKEYS")
        .arg(&redis_key)
        .query(&mut conn)
        .unwrap();
    assert_eq!(fields.len(), 4, "{fields:?}");
    assert!(fields.contains(&b"_ts:scored".to_vec()));
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert_eq!(keys.len(), 3);
}

#[tokio::test]
async fn an_incremental_run_starts_a_source_ttl_before_its_end() {
    let dir = repo("  type: sqlite\n  path: data/online.db");
    let registry = registry(dir.path());
    let selected = materialize_odfv::select(&registry, None, false, "--x").unwrap();
    let (start, end) = materialize_odfv::window(
        &selected.views[0],
        Window::Incremental {
            end: ts("2026-01-02T06:00:00Z"),
        },
    );
    assert_eq!(
        (start, end),
        (ts("2026-01-01T06:00:00Z"), ts("2026-01-02T06:00:00Z"))
    );
}

#[test]
fn views_that_cannot_be_materialized_are_refused_when_named() {
    let dir = repo("  type: sqlite\n  path: data/online.db");
    let registry = registry(dir.path());
    let named = |n: &str| {
        materialize_odfv::select(&registry, Some(&[n.to_owned()]), false, "--x")
            .map(|s| s.views.len())
            .map_err(|e| e.to_string())
    };
    assert_eq!(named("scored"), Ok(1));
    let e = named("with_bonus").unwrap_err();
    assert!(
        e.contains("with_bonus") && e.contains("request data (bonus)"),
        "{e}"
    );
    let e = named("per_request").unwrap_err();
    assert!(e.contains("write_to_online_store is false"), "{e}");
    let e = named("nope").unwrap_err();
    assert!(e.contains("unknown on-demand feature view \"nope\""), "{e}");
}

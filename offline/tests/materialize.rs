//! Materialization against real Parquet files, a real SQLite file and a real redis-server.
//!
//! Length: one file of scenarios over the same fixtures (files, SQLite, Redis).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::builder::{Int32Builder, ListBuilder};
use arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use quiver_core::time::{Timestamp, parse_datetime};
use quiver_core::{Value, entity_key};
use quiver_offline::materialize::{self, Window, WriteOptions};
use quiver_online_store::{
    KeyRead, OnlineStore, RedisOptions, RedisStore, SqliteStore, ViewLayout,
};
use quiver_testkit::RedisServer;

const DEFINITIONS: &str = r#"
entities:
  - name: driver
    join_keys: [driver_id]
    value_type: INT64
sources:
  - name: stats
    type: file
    path: data/stats.parquet
    timestamp_field: event_timestamp
    created_timestamp_column: created
    field_mapping: {conv: conv_rate}
feature_views:
  - name: driver_stats
    entities: [driver]
    ttl: 1d
    source: stats
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: trips, dtype: Int64}
      - {name: zones, dtype: Array(Int32)}
"#;

fn ts(text: &str) -> Timestamp {
    parse_datetime(text).unwrap()
}

fn micros(text: &str) -> i64 {
    let t = ts(text);
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1000
}

struct Row {
    driver: i64,
    event: &'static str,
    created: &'static str,
    conv: f64,
    trips: i64,
}

fn write_parquet(path: &Path, rows: &[Row], row_group: usize) {
    let mut zones = ListBuilder::new(Int32Builder::new());
    for r in rows {
        zones.values().append_value(r.driver as i32);
        zones.append(true);
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "driver_id",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.driver))),
        ),
        (
            "event_timestamp",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| micros(r.event)))
                    .with_timezone("UTC"),
            ),
        ),
        (
            "created",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| micros(r.created)),
            )),
        ),
        (
            "conv",
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.conv))),
        ),
        (
            "trips",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.trips))),
        ),
        ("zones", Arc::new(zones.finish())),
        (
            "note",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|_| "ignored"),
            )),
        ),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group))
        .build();
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// The rules in one file: ties on event time broken by created, both window bounds inclusive,
/// rows outside ignored. Sorted by time in row groups of 2, so pruning has something to skip.
fn rule_rows() -> Vec<Row> {
    vec![
        Row {
            driver: 2,
            event: "2026-01-01T08:00:00Z",
            created: "2026-01-01T08:00:00Z",
            conv: 0.5,
            trips: 20,
        },
        Row {
            driver: 4,
            event: "2026-01-01T08:30:00Z",
            created: "2026-01-01T08:30:00Z",
            conv: 0.5,
            trips: 40,
        },
        Row {
            driver: 3,
            event: "2026-01-01T09:00:00Z",
            created: "2026-01-01T09:00:00Z",
            conv: 0.25,
            trips: 30,
        },
        Row {
            driver: 1,
            event: "2026-01-01T10:00:00Z",
            created: "2026-01-01T10:00:00Z",
            conv: 0.125,
            trips: 1,
        },
        Row {
            driver: 1,
            event: "2026-01-01T11:00:00Z",
            created: "2026-01-01T11:30:00Z",
            conv: 0.375,
            trips: 3,
        },
        Row {
            driver: 1,
            event: "2026-01-01T11:00:00Z",
            created: "2026-01-01T11:00:00Z",
            conv: 0.25,
            trips: 2,
        },
        Row {
            driver: 3,
            event: "2026-01-01T12:00:00Z",
            created: "2026-01-01T12:00:00Z",
            conv: 0.75,
            trips: 31,
        },
        Row {
            driver: 1,
            event: "2026-01-01T13:00:00Z",
            created: "2026-01-01T13:00:00Z",
            conv: 0.875,
            trips: 9,
        },
    ]
}

struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new(online_store: &str) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("feature_store.yaml"),
            format!("project: mat\nregistry: data/registry.db\nonline_store:\n{online_store}\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("features.yaml"), DEFINITIONS).unwrap();
        let desired = quiver_registry::definitions::load(dir.path(), "mat").unwrap();
        let path = dir.path().join("data/registry.db");
        let mut file = quiver_registry::store::read(&path).unwrap();
        quiver_registry::apply::apply(&mut file, &desired, ts("2026-01-01T00:00:00Z")).unwrap();
        quiver_registry::store::write_atomic(&path, &file.encode("v1", ts("2026-01-01T00:00:00Z")))
            .unwrap();
        write_parquet(&dir.path().join("data/stats.parquet"), &rule_rows(), 2);
        Repo { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn registry_path(&self) -> PathBuf {
        self.path().join("data/registry.db")
    }

    fn registry(&self) -> quiver_core::registry::ProjectRegistry {
        quiver_registry::store::read(&self.registry_path())
            .unwrap()
            .project("mat")
            .unwrap()
    }
}

async fn materialize(
    repo: &Repo,
    store: &OnlineStore,
    window: Window,
    options: &WriteOptions,
    events: &(dyn Fn(materialize::Event<'_>) + Send + Sync),
) -> Result<Vec<materialize::ViewRun>, quiver_offline::Error> {
    let registry = repo.registry();
    let views = materialize::select_views(&registry, &[]).unwrap();
    let job = materialize::Job {
        repo_dir: repo.path(),
        registry: &registry,
        views,
        window,
        now: ts("2026-01-02T00:00:00Z"),
        shard: quiver_offline::shard::Shard::ALL,
    };
    materialize::run(&job, store, options, events).await
}

fn key(driver: i64) -> Vec<u8> {
    entity_key::serialize(&[("driver_id", &Value::Int64(driver))]).unwrap()
}

/// Reads drivers back: (event seconds, conv_rate, trips, zones) or None.
async fn read(store: &OnlineStore, drivers: &[i64]) -> Vec<Option<(i64, Value, Value, Value)>> {
    let layout = Arc::new(ViewLayout::new(
        "mat",
        "driver_stats",
        ["conv_rate", "trips", "zones"].map(String::from),
    ));
    let keys: Vec<Vec<u8>> = drivers.iter().map(|&d| key(d)).collect();
    let reads: Vec<KeyRead<'_>> = keys
        .iter()
        .map(|k| KeyRead {
            entity_key: k,
            views: &[0],
        })
        .collect();
    let rows = store.read(&[layout], &reads).await.unwrap();
    rows.into_iter()
        .map(|mut r| {
            r.remove(0).map(|row| {
                let v =
                    |i: usize| Value::decode(row.values[i].as_deref().unwrap_or_default()).unwrap();
                (row.event_ts.seconds, v(0), v(1), v(2))
            })
        })
        .collect()
}

fn rules_window() -> Window {
    Window::Range {
        start: ts("2026-01-01T09:00:00Z"),
        end: ts("2026-01-01T12:00:00Z"),
    }
}

async fn check_rules(store: &OnlineStore, repo: &Repo) {
    let runs = materialize(
        repo,
        store,
        rules_window(),
        &WriteOptions::default(),
        &|_| {},
    )
    .await
    .unwrap();
    let run = &runs[0];
    assert_eq!(run.view, "driver_stats");
    // Row groups of 2 sorted by time: the first (08:00, 08:30) and the last (13:00 alone
    // with 12:00) are pruned or partly outside.
    assert!(
        run.scanned < 8,
        "row groups wholly outside the window are skipped: {run:?}"
    );
    assert_eq!(run.in_window, 5, "{run:?}");
    assert_eq!(run.entities, 2);
    assert_eq!(run.stats.written, 2);
    let rows = read(store, &[1, 2, 3, 4]).await;
    // Driver 1: 11:00 twice, the larger created (11:30) wins; 13:00 is after END.
    assert_eq!(
        rows[0],
        Some((
            ts("2026-01-01T11:00:00Z").seconds,
            Value::Float(0.375),
            Value::Int64(3),
            Value::Int32List(vec![1])
        ))
    );
    // Drivers 2 and 4 only have rows before START.
    assert_eq!(rows[1], None);
    assert_eq!(rows[3], None);
    // Driver 3: both bounds are inclusive, the later (12:00 = END) wins.
    assert_eq!(
        rows[2].as_ref().map(|r| (r.0, r.1.clone())),
        Some((ts("2026-01-01T12:00:00Z").seconds, Value::Float(0.75)))
    );

    // A rerun changes nothing: every row is skipped as not newer.
    let again = materialize(
        repo,
        store,
        rules_window(),
        &WriteOptions::default(),
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(again[0].stats.written, 0);
    assert_eq!(again[0].stats.skipped, 2);

    // An older window does not overwrite newer stored rows.
    let older = Window::Range {
        start: ts("2026-01-01T09:00:00Z"),
        end: ts("2026-01-01T10:30:00Z"),
    };
    let runs = materialize(repo, store, older, &WriteOptions::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!((runs[0].stats.written, runs[0].stats.skipped), (0, 2));
    assert_eq!(
        read(store, &[1]).await[0].as_ref().unwrap().1,
        Value::Float(0.375)
    );

    // A later window writes the newer row.
    let later = Window::Range {
        start: ts("2026-01-01T12:00:01Z"),
        end: ts("2026-01-01T23:00:00Z"),
    };
    let runs = materialize(repo, store, later, &WriteOptions::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!((runs[0].stats.written, runs[0].stats.skipped), (1, 0));
    assert_eq!(
        read(store, &[1]).await[0].as_ref().unwrap().1,
        Value::Float(0.875)
    );
}

#[tokio::test]
async fn sqlite_latest_row_per_key_in_the_window() {
    let repo = Repo::new("  type: sqlite\n  path: data/online.db");
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(
        &repo.path().join("data/online.db"),
    )));
    check_rules(&store, &repo).await;
    // Feast's layout: one row per feature, event_ts as integer seconds.
    let conn = rusqlite::Connection::open(repo.path().join("data/online.db")).unwrap();
    let (n, ts_type): (i64, String) = conn
        .query_row(
            "SELECT count(*), typeof(max(event_ts)) FROM mat_driver_stats",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((n, ts_type.as_str()), (6, "integer"));
}

#[tokio::test]
async fn redis_latest_row_per_key_in_the_window_with_key_ttl() {
    let mut redis = RedisServer::start();
    let repo = Repo::new(&format!(
        "  type: redis\n  connection_string: 127.0.0.1:{}",
        redis.port
    ));
    let store = store_at(redis.port).await;
    check_rules(&store, &repo).await;
    let mut conn = redis.client().get_connection().unwrap();
    let mut redis_key = key(3);
    redis_key.extend_from_slice(b"mat");
    // `_ts` encoded as Feast 0.67 encodes it (a `Timestamp`, nanos included when nonzero).
    let stored: Vec<u8> = redis::cmd("HGET")
        .arg(&redis_key)
        .arg("_ts:driver_stats")
        .query(&mut conn)
        .unwrap();
    let expected = quiver_core::layout::encode_timestamp(&ts("2026-01-01T12:00:00Z"));
    assert_eq!(stored, expected);
    let ttl: i64 = redis::cmd("TTL").arg(&redis_key).query(&mut conn).unwrap();
    assert_eq!(ttl, -1, "no key_ttl_seconds, no expiry");

    // With key_ttl_seconds, every written key gets an EXPIRE.
    redis::cmd("FLUSHALL").exec(&mut conn).unwrap();
    let options = WriteOptions {
        key_ttl_seconds: Some(3600),
        ..WriteOptions::default()
    };
    materialize(&repo, &store, rules_window(), &options, &|_| {})
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(&redis_key).query(&mut conn).unwrap();
    assert!((3500..=3600).contains(&ttl), "ttl {ttl}");
    redis.kill();
}

#[tokio::test]
async fn a_killed_redis_fails_the_run_cleanly_and_a_rerun_completes() {
    let redis = RedisServer::start();
    let repo = Repo::new(&format!(
        "  type: redis\n  connection_string: 127.0.0.1:{}",
        redis.port
    ));
    let rows: Vec<Row> = (0..60_000)
        .map(|i| Row {
            driver: i,
            event: "2026-01-01T10:00:00Z",
            created: "2026-01-01T10:00:00Z",
            conv: 0.5,
            trips: i,
        })
        .collect();
    write_parquet(&repo.path().join("data/stats.parquet"), &rows, 10_000);
    let store = store_at(redis.port).await;
    let options = WriteOptions {
        batch_rows: 500,
        concurrency: 2,
        retries: 1,
        retry_backoff: Duration::from_millis(20),
        ..WriteOptions::default()
    };
    let server = Arc::new(Mutex::new(redis));
    let killed = AtomicBool::new(false);
    let killer = Arc::clone(&server);
    let err = materialize(&repo, &store, rules_window(), &options, &|e| {
        if let materialize::Event::Written { rows, .. } = e
            && rows >= 5000
            && !killed.swap(true, Ordering::SeqCst)
        {
            killer.lock().unwrap().kill();
        }
    })
    .await
    .unwrap_err();
    assert!(killed.load(Ordering::SeqCst));
    let message = err.to_string();
    assert!(
        message.contains("feature view driver_stats: online write failed after"),
        "{message}"
    );
    assert!(message.contains("of 60000 rows"), "{message}");

    server.lock().unwrap().restart();
    let port = server.lock().unwrap().port;
    let store = store_at(port).await;
    let runs = materialize(&repo, &store, rules_window(), &options, &|_| {})
        .await
        .unwrap();
    assert_eq!(runs[0].stats.written + runs[0].stats.skipped, 60_000);
    let rows = read(&store, &[0, 59_999]).await;
    assert_eq!(rows[1].as_ref().unwrap().2, Value::Int64(59_999));
}

#[tokio::test]
async fn bad_sources_are_reported_before_anything_is_written() {
    let repo = Repo::new("  type: sqlite\n  path: data/online.db");
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(
        &repo.path().join("data/online.db"),
    )));
    // A source file without the mapped feature column.
    let batch = RecordBatch::try_from_iter([
        ("driver_id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(vec![micros(
                "2026-01-01T10:00:00Z",
            )])),
        ),
        (
            "created",
            Arc::new(TimestampMicrosecondArray::from(vec![0])),
        ),
        ("trips", Arc::new(StringArray::from(vec!["many"]))),
    ])
    .unwrap();
    let path = repo.path().join("data/stats.parquet");
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let err = materialize(
        &repo,
        &store,
        rules_window(),
        &WriteOptions::default(),
        &|_| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("no column \"conv\""), "{err}");
    assert!(err.contains("stats.parquet"), "{err}");
    assert!(
        !repo.path().join("data/online.db").exists(),
        "nothing written"
    );

    // Unknown views and future ENDs.
    let registry = repo.registry();
    let unknown = materialize::select_views(&registry, &["nope".to_owned()])
        .err()
        .unwrap()
        .to_string();
    assert!(
        unknown.contains("unknown feature view \"nope\""),
        "{unknown}"
    );
    let now = ts("2026-01-01T00:00:00Z");
    let future =
        materialize::check_window(now, ts("2026-01-01T01:00:00Z"), now, false).unwrap_err();
    assert!(future.to_string().contains("in the future"), "{future}");
    materialize::check_window(now, ts("2026-01-01T01:00:00Z"), now, true).unwrap();
    materialize::check_window(now, ts("2026-01-01T00:04:00Z"), now, false).unwrap();
    assert!(materialize::check_window(ts("2026-01-02T00:00:00Z"), now, now, false).is_err());
}

#[tokio::test]
async fn intervals_are_recorded_and_incremental_runs_start_from_them() {
    let repo = Repo::new("  type: sqlite\n  path: data/online.db");
    let before = std::fs::read(repo.registry_path()).unwrap();
    quiver_registry::store::record_materialization(
        &repo.registry_path(),
        "mat",
        &[quiver_registry::store::MaterializedInterval {
            view: "driver_stats".into(),
            start: ts("2026-01-01T09:00:00Z"),
            end: ts("2026-01-01T11:00:00Z"),
        }],
        ts("2026-01-02T00:00:00Z"),
        "v2",
    )
    .unwrap();
    assert_ne!(before, std::fs::read(repo.registry_path()).unwrap());
    let registry = repo.registry();
    let view = registry.feature_view("driver_stats").unwrap();
    assert_eq!(
        view.materialization_intervals,
        vec![(ts("2026-01-01T09:00:00Z"), ts("2026-01-01T11:00:00Z"))]
    );
    let end = ts("2026-01-01T12:00:00Z");
    assert_eq!(
        materialize::view_window(
            view,
            Window::Incremental { end },
            ts("2026-01-02T00:00:00Z")
        ),
        (ts("2026-01-01T11:00:00Z"), end)
    );
    // Without a recorded run, an incremental run starts at now - ttl.
    let fresh = Repo::new("  type: sqlite\n  path: data/online.db");
    let registry = fresh.registry();
    let view = registry.feature_view("driver_stats").unwrap();
    assert_eq!(
        materialize::view_window(
            view,
            Window::Incremental { end },
            ts("2026-01-02T00:00:00Z")
        )
        .0,
        ts("2026-01-01T00:00:00Z")
    );
    let unknown = quiver_registry::store::record_materialization(
        &fresh.registry_path(),
        "mat",
        &[quiver_registry::store::MaterializedInterval {
            view: "nope".into(),
            start: end,
            end,
        }],
        end,
        "v3",
    );
    assert!(unknown.unwrap_err().contains("no feature view nope"));
}

async fn store_at(port: u16) -> OnlineStore {
    let options = RedisOptions {
        host: "127.0.0.1".into(),
        port,
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
    OnlineStore::Redis(Arc::new(RedisStore::connect(options, "mat").await.unwrap()))
}

#[tokio::test]
async fn a_small_memory_budget_scans_in_partitions_with_the_same_result() {
    let repo = Repo::new("  type: sqlite\n  path: data/online.db");
    let rows: Vec<Row> = (0..3000)
        .flat_map(|i| {
            [
                Row {
                    driver: i,
                    event: "2026-01-01T10:00:00Z",
                    created: "2026-01-01T10:00:00Z",
                    conv: 0.25,
                    trips: i,
                },
                Row {
                    driver: i,
                    event: "2026-01-01T11:00:00Z",
                    created: "2026-01-01T11:00:00Z",
                    conv: 0.5,
                    trips: i + 1,
                },
            ]
        })
        .collect();
    write_parquet(&repo.path().join("data/stats.parquet"), &rows, 1000);
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(
        &repo.path().join("data/online.db"),
    )));
    let options = WriteOptions {
        memory_budget: 64 << 10,
        ..WriteOptions::default()
    };
    let runs = materialize(&repo, &store, rules_window(), &options, &|_| {})
        .await
        .unwrap();
    let run = &runs[0];
    assert!(run.passes > 2, "{run:?}");
    assert_eq!(
        (run.entities, run.stats.written, run.in_window),
        (3000, 3000, 6000)
    );
    let got = read(&store, &[0, 1499, 2999]).await;
    for (row, driver) in got.iter().zip([0, 1499, 2999]) {
        let row = row.as_ref().unwrap();
        assert_eq!(
            (row.1.clone(), row.2.clone()),
            (Value::Float(0.5), Value::Int64(driver + 1))
        );
    }
}

/// Rows sorted by event time, as most event logs are: each driver's latest row at hour
/// `1 + d % 20`, an older row for every third driver, and for every seventh a second row at the
/// same time with a later `created` (which must win). Row groups of 300 may cut between equal
/// timestamps: such groups' time ranges touch, and they must be read as one segment.
fn sorted_rows(drivers: i64) -> (Vec<Row>, Vec<(i64, i64, f32)>) {
    // Minutes and seconds from the driver: no two drivers share a timestamp, as in real logs.
    let at = |hour: i64, d: i64| -> &'static str {
        let (minute, second) = ((d / 60) % 60, d % 60);
        Box::leak(format!("2026-01-01T{hour:02}:{minute:02}:{second:02}Z").into_boxed_str())
    };
    let mut rows = Vec::new();
    let mut expected = Vec::new();
    for d in 0..drivers {
        let hour = 1 + d % 20;
        rows.push(Row {
            driver: d,
            event: at(hour, d),
            created: at(hour, d),
            conv: 0.25,
            trips: d,
        });
        if d % 3 == 0 {
            rows.push(Row {
                driver: d,
                event: at(hour - 1, d),
                created: at(hour, d),
                conv: 0.125,
                trips: -1,
            });
        }
        if d % 7 == 0 {
            rows.push(Row {
                driver: d,
                event: at(hour, d),
                created: at(hour + 1, d),
                conv: 0.75,
                trips: d + 1000,
            });
            expected.push((d, d + 1000, 0.75));
        } else {
            expected.push((d, d, 0.25));
        }
    }
    rows.sort_by_key(|r| micros(r.event));
    (rows, expected)
}

#[tokio::test]
async fn a_source_sorted_by_time_is_written_segment_by_segment_as_it_is_read() {
    let repo = Repo::new("  type: sqlite\n  path: data/online.db");
    let (rows, expected) = sorted_rows(2000);
    write_parquet(&repo.path().join("data/stats.parquet"), &rows, 300);
    let window = Window::Range {
        start: ts("2026-01-01T00:00:00Z"),
        end: ts("2026-01-01T23:00:00Z"),
    };
    // The plan sees segments: newest first, disjoint, every kept row group in one of them.
    let registry = repo.registry();
    let view = registry
        .feature_views
        .iter()
        .find(|v| v.name == "driver_stats")
        .unwrap();
    let plan = materialize::plan_view(&registry, view, repo.path(), None)
        .await
        .unwrap();
    let segments = materialize::segments(&plan).expect("a sorted source has segments");
    assert!(segments.len() > 3, "{segments:?}");
    for pair in segments.windows(2) {
        assert!(pair[0].min > pair[1].max, "{segments:?}");
    }
    let groups: usize = segments.iter().map(|s| s.parts.len()).sum();
    assert_eq!(groups, rows.len().div_ceil(300));

    // Row groups whose ranges touch (a tie split across them) are one segment, and the tie is
    // still broken by `created`.
    let touching = tempfile::tempdir().unwrap();
    std::fs::copy(repo.registry_path(), touching.path().join("registry.db")).unwrap();
    let row = |driver, event, created, conv| Row {
        driver,
        event,
        created,
        conv,
        trips: driver,
    };
    let tie = "2026-01-01T10:00:00Z";
    write_parquet(
        &touching.path().join("data/stats.parquet"),
        &[
            row(7, "2026-01-01T09:00:00Z", "2026-01-01T09:00:00Z", 0.125),
            row(7, tie, "2026-01-01T10:30:00Z", 0.75),
            row(7, tie, "2026-01-01T10:00:00Z", 0.25),
            row(8, "2026-01-01T10:30:00Z", "2026-01-01T10:30:00Z", 0.5),
            row(9, "2026-01-01T12:00:00Z", "2026-01-01T12:00:00Z", 0.5),
            row(9, "2026-01-01T13:00:00Z", "2026-01-01T13:00:00Z", 0.625),
            row(10, "2026-01-01T14:00:00Z", "2026-01-01T14:00:00Z", 0.5),
            row(10, "2026-01-01T15:00:00Z", "2026-01-01T15:00:00Z", 0.375),
        ],
        2,
    );
    let plan = materialize::plan_view(&registry, view, touching.path(), None)
        .await
        .unwrap();
    let cut = materialize::segments(&plan).unwrap();
    assert_eq!(
        cut.iter().map(|s| s.parts.clone()).collect::<Vec<_>>(),
        [vec![(0, 3)], vec![(0, 2)], vec![(0, 0), (0, 1)]],
        "{cut:?}"
    );
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(
        &touching.path().join("online.db"),
    )));
    let job = materialize::Job {
        repo_dir: touching.path(),
        registry: &registry,
        views: vec![view],
        window,
        now: ts("2026-01-02T00:00:00Z"),
        shard: quiver_offline::shard::Shard::ALL,
    };
    let runs = materialize::run(&job, &store, &WriteOptions::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(
        (runs[0].segments, runs[0].entities),
        (3, 4),
        "{:?}",
        runs[0]
    );
    let got: Vec<Value> = read(&store, &[7, 8, 9, 10])
        .await
        .into_iter()
        .map(|r| r.unwrap().1)
        .collect();
    assert_eq!(
        got,
        [
            Value::Float(0.75),
            Value::Float(0.5),
            Value::Float(0.625),
            Value::Float(0.375)
        ]
    );

    let check = |store: OnlineStore| {
        let expected = expected.clone();
        async move {
            let drivers: Vec<i64> = expected.iter().map(|e| e.0).collect();
            let got = read(&store, &drivers).await;
            for (row, (driver, trips, conv)) in got.iter().zip(&expected) {
                let row = row
                    .as_ref()
                    .unwrap_or_else(|| panic!("driver {driver} missing"));
                assert_eq!(
                    (row.1.clone(), row.2.clone()),
                    (Value::Float(*conv), Value::Int64(*trips)),
                    "driver {driver}"
                );
            }
        }
    };
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(
        &repo.path().join("data/online.db"),
    )));
    let runs = materialize(&repo, &store, window, &WriteOptions::default(), &|_| {})
        .await
        .unwrap();
    let run = &runs[0];
    assert_eq!(run.segments, segments.len(), "{run:?}");
    assert_eq!(run.passes, 1, "{run:?}");
    assert_eq!(
        (run.scanned, run.in_window, run.entities, run.stats.written),
        (rows.len() as u64, rows.len() as u64, 2000, 2000),
        "{run:?}"
    );
    check(store.clone()).await;
    // A rerun writes nothing.
    let again = materialize(&repo, &store, window, &WriteOptions::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!((again[0].stats.written, again[0].stats.skipped), (0, 2000));

    // Over Redis too, with batches small enough that writes go out while segments are read.
    let redis = RedisServer::start();
    let store = store_at(redis.port).await;
    let options = WriteOptions {
        batch_rows: 64,
        ..WriteOptions::default()
    };
    let runs = materialize(&repo, &store, window, &options, &|_| {})
        .await
        .unwrap();
    assert_eq!(runs[0].stats.written, 2000, "{:?}", runs[0]);
    check(store).await;

    // When the keys outgrow the memory budget, the run falls back to partitioned whole-source
    // scans and ends the same.
    let fresh = tempfile::tempdir().unwrap();
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(&fresh.path().join("online.db"))));
    let options = WriteOptions {
        memory_budget: 64 << 10,
        ..WriteOptions::default()
    };
    let runs = materialize(&repo, &store, window, &options, &|_| {})
        .await
        .unwrap();
    let run = &runs[0];
    assert_eq!((run.segments, run.entities), (0, 2000), "{run:?}");
    assert!(run.passes > 2, "{run:?}");
    check(store).await;
}

/// Issue 19: a Float64 source value too large for a Float32 feature was written as Infinity,
/// and a window could end past what Feast can hold. Both are refused, naming the column and
/// row, before anything is written.
#[tokio::test]
async fn out_of_range_values_are_refused_before_anything_is_written() {
    let repo = Repo::new("  type: sqlite\n  path: data/online.db");
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(
        &repo.path().join("data/online.db"),
    )));
    let row = |driver, conv| Row {
        driver,
        event: "2026-01-01T10:00:00Z",
        created: "2026-01-01T10:00:00Z",
        conv,
        trips: 1,
    };
    write_parquet(
        &repo.path().join("data/stats.parquet"),
        &[row(1, 0.5), row(2, 1e39), row(3, 0.25)],
        10,
    );
    let err = materialize(
        &repo,
        &store,
        rules_window(),
        &WriteOptions::default(),
        &|_| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("row 1: 1e39 is out of range for Float32"),
        "{err}"
    );
    assert!(err.contains("stats.parquet"), "{err}");
    assert!(
        !repo.path().join("data/online.db").exists(),
        "nothing written"
    );

    // Year 9999 fits a protobuf Timestamp but not pandas, which Feast reads times into.
    let now = ts("2026-01-01T00:00:00Z");
    let end = Timestamp {
        seconds: 253_402_300_799,
        nanos: 0,
    };
    let e = materialize::check_window(now, end, now, true).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "END: time 9999-12-31T23:59:59Z (253402300799 seconds since the epoch) is out of range"
        ),
        "{e}"
    );
}

/// Issue 19: the segmented path validates a segment before writing it, so a bad row in an
/// older segment is found after newer segments went out. The contract: what was written is each
/// key's final row for the window, the bad segment's keys are not written, the error names the
/// row and says what was written, and a rerun on the fixed source completes (ARCHITECTURE.md).
#[tokio::test]
async fn a_bad_row_in_an_older_segment_leaves_only_final_rows_and_a_rerun_completes() {
    let repo = Repo::new("  type: sqlite\n  path: data/online.db");
    let (mut rows, expected) = sorted_rows(2000);
    // A driver's only row, in the oldest row group (read last), gets a value no Float32 holds.
    let bad = rows
        .iter()
        .position(|r| {
            r.event.starts_with("2026-01-01T01:") && r.driver % 3 != 0 && r.driver % 7 != 0
        })
        .unwrap();
    assert!(bad < 300, "{bad}");
    let good_conv = rows[bad].conv;
    rows[bad].conv = 1e39;
    let source = repo.path().join("data/stats.parquet");
    write_parquet(&source, &rows, 300);
    let window = Window::Range {
        start: ts("2026-01-01T00:00:00Z"),
        end: ts("2026-01-01T23:00:00Z"),
    };
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(
        &repo.path().join("data/online.db"),
    )));
    let err = materialize(&repo, &store, window, &WriteOptions::default(), &|_| {})
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("1e39 is out of range for Float32"), "{text}");
    assert!(
        text.contains("rows of newer segments were written first"),
        "{text}"
    );
    assert!(text.contains("no interval is recorded"), "{text}");

    // What went out is final: every written driver holds its expected latest row.
    let drivers: Vec<i64> = expected.iter().map(|e| e.0).collect();
    let got = read(&store, &drivers).await;
    let mut written = 0;
    for (row, (driver, trips, conv)) in got.iter().zip(&expected) {
        if let Some(row) = row {
            written += 1;
            assert_eq!(
                (row.1.clone(), row.2.clone()),
                (Value::Float(*conv), Value::Int64(*trips)),
                "driver {driver}"
            );
        }
    }
    assert!(written > 0 && written < 2000, "{written} written");
    assert!(
        text.contains(&format!("{written} rows of newer segments")),
        "{text}"
    );

    // Fixed, the rerun writes the rest and skips what was written.
    rows[bad].conv = good_conv;
    write_parquet(&source, &rows, 300);
    let runs = materialize(&repo, &store, window, &WriteOptions::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(
        (runs[0].stats.written, runs[0].stats.skipped),
        (2000 - written, written),
        "{:?}",
        runs[0]
    );
    let got = read(&store, &drivers).await;
    assert!(got.iter().all(Option::is_some));
}

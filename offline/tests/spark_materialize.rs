//! Materialization with Spark selecting (a real Spark Connect server) and quiver's writers
//! writing, against the local engine: the same window into two real redis-servers gives the
//! same keys and the same bytes. Shards of the keys together write the same as one run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::builder::{Int32Builder, ListBuilder};
use arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use parquet::arrow::ArrowWriter;
use quiver_core::registry::ProjectRegistry;
use quiver_core::time::{Timestamp, parse_datetime};
use quiver_offline::materialize::{self, Job, Window, WriteOptions};
use quiver_offline::shard::Shard;
use quiver_online_store::{OnlineStore, RedisOptions, RedisStore};
use quiver_registry::spark::{SparkConfig, SparkRemote};
use quiver_testkit::RedisServer;
use quiver_testkit::spark::spark_or_skip;

const DEFINITIONS: &str = r#"
entities:
  - name: driver
    join_keys: [driver_id]
    value_type: INT64
  - name: customer
    join_keys: [customer_id]
    value_type: STRING
sources:
  - name: stats
    type: file
    path: data/stats.parquet
    timestamp_field: event_timestamp
    created_timestamp_column: created
    field_mapping: {conv: conv_rate}
  - name: pairs
    type: spark
    path: data/pairs
    file_format: parquet
    timestamp_field: event_timestamp
feature_views:
  - name: driver_stats
    entities: [driver]
    ttl: 1d
    source: stats
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: trips, dtype: Int64}
      - {name: zones, dtype: Array(Int32)}
      - {name: note, dtype: String}
  - name: pair_stats
    entities: [driver, customer]
    ttl: 0
    source: pairs
    schema:
      - {name: rides, dtype: Int64}
"#;

fn ts(text: &str) -> Timestamp {
    parse_datetime(text).unwrap()
}

fn write_parquet(path: &Path, batch: RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// Random rows: coarse times (ties on the event time, broken by created), some out of the
/// window, nulls among the features, a list column.
fn fixtures(dir: &Path) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n) as i64
    };
    let base = ts("2026-01-01T00:00:00Z").seconds;
    let n = 6_000;
    let (mut ids, mut ev, mut cr, mut conv, mut trips, mut notes) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut zones = ListBuilder::new(Int32Builder::new());
    for i in 0..n {
        ids.push(next(700));
        // Two days of 30-minute steps: the window below keeps the middle day.
        ev.push((base + next(96) * 1800) * 1_000_000);
        cr.push((base + i) * 1_000_000 + next(1000));
        conv.push((next(10) != 0).then(|| i as f64 / 7.0));
        trips.push(i);
        notes.push((next(5) != 0).then(|| format!("n{i}")));
        for z in 0..next(3) {
            zones.values().append_value(z as i32 + i as i32);
        }
        zones.append(next(8) != 0);
    }
    let micros = |v: &[i64]| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(v.to_vec()).with_timezone("UTC"))
    };
    let batch = RecordBatch::try_from_iter(vec![
        (
            "driver_id",
            Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
        ),
        ("event_timestamp", micros(&ev)),
        ("created", micros(&cr)),
        ("conv", Arc::new(Float64Array::from(conv))),
        ("trips", Arc::new(Int64Array::from(trips))),
        ("zones", Arc::new(zones.finish())),
        ("note", Arc::new(StringArray::from(notes))),
    ])
    .unwrap();
    write_parquet(&dir.join("data/stats.parquet"), batch);
    // A folder of two parts with a composite key; unique (key, time) so the winner is one.
    for part in 0..2 {
        let (mut d, mut c, mut t, mut r) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..500 {
            d.push(next(20));
            c.push(format!("c{}", next(10)));
            t.push((base + 86_400 + (part * 500 + i) * 60) * 1_000_000);
            r.push(part * 500 + i);
        }
        let batch = RecordBatch::try_from_iter(vec![
            ("driver_id", Arc::new(Int64Array::from(d)) as ArrayRef),
            ("customer_id", Arc::new(StringArray::from(c))),
            ("event_timestamp", micros(&t)),
            ("rides", Arc::new(Int64Array::from(r))),
        ])
        .unwrap();
        write_parquet(&dir.join(format!("data/pairs/part-{part}.parquet")), batch);
    }
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
    OnlineStore::Redis(Arc::new(
        RedisStore::connect(options, "sparkmat").await.unwrap(),
    ))
}

/// Every key of a redis-server and its hash fields and values, as bytes.
fn dump(redis: &RedisServer) -> BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut conn = redis.conn();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    keys.into_iter()
        .map(|k| {
            let h: BTreeMap<Vec<u8>, Vec<u8>> =
                redis::cmd("HGETALL").arg(&k).query(&mut conn).unwrap();
            (k, h)
        })
        .collect()
}

fn job<'a>(
    dir: &'a Path,
    registry: &'a ProjectRegistry,
    views: Vec<&'a quiver_core::model::FeatureView>,
    shard: Shard,
) -> Job<'a> {
    Job {
        repo_dir: dir,
        registry,
        views,
        window: Window::Range {
            start: ts("2026-01-01T12:00:00Z"),
            end: ts("2026-01-02T12:00:00Z"),
        },
        now: ts("2026-01-03T00:00:00Z"),
        shard,
    }
}

#[test]
fn spark_selection_writes_the_same_bytes_as_the_local_engine() {
    let Some(server) = spark_or_skip("spark_selection_writes_the_same_bytes_as_the_local_engine")
    else {
        return;
    };
    let spark = SparkConfig {
        remote: SparkRemote::parse(&server.url()).unwrap(),
        conf: BTreeMap::new(),
    };
    let dir = tempfile::tempdir().unwrap();
    fixtures(dir.path());
    let registry =
        quiver_registry::definitions::parse(&[("features.yaml", DEFINITIONS)], "sparkmat").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (local, on_spark, sharded) = (
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    );
    let options = WriteOptions::default();
    let quiet = |_: materialize::Event<'_>| {};
    rt.block_on(async {
        // The local engine reads file sources only: it does the driver view, Spark does both.
        let file_views =
            materialize::select_views(&registry, &["driver_stats".to_owned()]).unwrap();
        let all = materialize::select_views(&registry, &[]).unwrap();
        let runs = materialize::run(
            &job(dir.path(), &registry, file_views.clone(), Shard::ALL),
            &store_at(local.port).await,
            &options,
            &quiet,
        )
        .await
        .unwrap();
        assert!(runs[0].entities > 600, "{runs:?}");
        let spark_store = store_at(on_spark.port).await;
        let runs = quiver_offline::spark::materialize::run(
            &spark,
            &job(dir.path(), &registry, file_views.clone(), Shard::ALL),
            &spark_store,
            &options,
            &quiet,
        )
        .await
        .unwrap();
        assert!(runs[0].entities > 600, "{runs:?}");
        let (a, b) = (dump(&local), dump(&on_spark));
        assert_eq!(a.len(), b.len(), "keys");
        assert!(a == b, "the online bytes differ between the engines");

        // Three shards together: the same as one run, each key written by one shard, and that
        // shard the one the local engine's shard writes it in (the same hash of the same key).
        let sharded_store = store_at(sharded.port).await;
        let mut seen = BTreeSet::new();
        let mut total = 0;
        let mut before = BTreeSet::new();
        for i in 0..3 {
            let shard = Shard::new(i, 3).unwrap();
            let runs = quiver_offline::spark::materialize::run(
                &spark,
                &job(dir.path(), &registry, all.clone(), shard),
                &sharded_store,
                &options,
                &quiet,
            )
            .await
            .unwrap();
            total += runs.iter().map(|r| r.entities).sum::<u64>();
            seen.extend(runs.iter().map(|r| r.view.clone()));
            let now: BTreeSet<Vec<u8>> = dump(&sharded).into_keys().collect();
            let written: Vec<&Vec<u8>> = now.difference(&before).collect();
            assert!(!written.is_empty(), "shard {shard} wrote nothing");
            for key in written {
                // Feast's Redis key: the serialized entity key, then the project's name.
                let entity_key = &key[..key.len() - registry.project.len()];
                assert!(
                    shard.contains(entity_key),
                    "Spark's shard {shard} wrote a key of another shard: {key:?}"
                );
            }
            before = now;
        }
        let whole = quiver_offline::spark::materialize::run(
            &spark,
            &job(dir.path(), &registry, all.clone(), Shard::ALL),
            &spark_store,
            &options,
            &quiet,
        )
        .await
        .unwrap();
        assert_eq!(total, whole.iter().map(|r| r.entities).sum::<u64>());
        assert!(whole[1].entities > 50, "{whole:?}");
        assert_eq!(seen.len(), 2);
        assert!(
            dump(&sharded) == dump(&on_spark),
            "shards differ from one run"
        );
    });
}

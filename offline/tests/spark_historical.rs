//! Historical retrieval on a real Spark Connect server (pyspark 4.3's, `local[2]`, started by
//! the testkit): every rule of feast-compat.md section 5 on hand-made tables, answered the same
//! by Spark, by quiver's DataFusion engine and by a brute-force reading of the rule; random data
//! against the brute force; and the errors, each naming its cause.
//!
//! One Spark server per test process (6 s, ~1.5 GB): the cases of a test run one after another.
//! Without Spark installed the tests skip with a message; with CI=1 they fail.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::DataType;
use futures::TryStreamExt;
use parquet::arrow::ArrowWriter;
use quiver_core::fault::{Classified, ErrorKind};
use quiver_core::registry::ProjectRegistry;
use quiver_offline::historical::{EngineOptions, Entities, Features, HistoricalEngine, select};
use quiver_offline::spark::historical::{InSpark, SparkEngine, SparkEntities};
use quiver_offline::spark::{SessionOptions, SparkSession, SparkTarget};
use quiver_registry::spark::{SparkConfig, SparkRemote};
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
  - name: driver_src
    type: file
    path: data/driver.parquet
    timestamp_field: event_timestamp
    created_timestamp_column: created
    field_mapping: {conv: conv_rate}
  - name: customer_src
    type: file
    path: data/customer
    timestamp_field: ts
  - name: pair_src
    type: spark
    path: data/pair.parquet
    file_format: parquet
    timestamp_field: event_timestamp
  - name: driver_query
    type: spark
    query: "SELECT driver_id, event_timestamp, created, conv * 10 AS conv10 FROM parquet.`DATA/driver.parquet`"
    timestamp_field: event_timestamp
    created_timestamp_column: created
feature_views:
  - name: driver_stats
    entities: [driver]
    ttl: 1h
    source: driver_src
    schema:
      - {name: conv_rate, dtype: Float64}
      - {name: trips, dtype: Int64}
  - name: customer_profile
    entities: [customer]
    ttl: 0
    source: customer_src
    schema:
      - {name: tier, dtype: String}
      - {name: trips, dtype: Int64}
  - name: pair
    entities: [driver, customer]
    ttl: 1d
    source: pair_src
    schema:
      - {name: rides, dtype: Int64}
  - name: driver_scaled
    entities: [driver]
    ttl: 2h
    source: driver_query
    schema:
      - {name: conv10, dtype: Float64}
feature_services:
  - name: both_drivers
    features:
      - driver_stats: [conv_rate]
      - view: driver_stats
        alias: other
        features: [trips]
        join_key_map: {driver_id: other_driver}
"#;

/// Seconds since 2026-01-01T00:00:00Z for hour h and minute m.
fn at(h: i64, m: i64) -> i64 {
    1_767_225_600 + h * 3600 + m * 60
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn micros_utc(secs: &[i64]) -> ArrayRef {
    Arc::new(
        TimestampMicrosecondArray::from_iter_values(secs.iter().map(|s| s * 1_000_000))
            .with_timezone("UTC"),
    )
}

struct Repo {
    dir: tempfile::TempDir,
    registry: ProjectRegistry,
}

fn repo() -> Repo {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let defs = DEFINITIONS.replace("DATA", &data.display().to_string());
    let registry =
        quiver_registry::definitions::parse(&[("features.yaml", &defs)], "hist").unwrap();
    // driver_stats (ttl 1h): driver 1 has a tie at 10:00 (created decides), rows at 09:00 and
    // 11:00; driver 2 one row at 08:00. Not sorted.
    write_parquet(
        &data.join("driver.parquet"),
        vec![
            ("driver_id", Arc::new(Int64Array::from(vec![1, 2, 1, 1, 1]))),
            (
                "event_timestamp",
                micros_utc(&[at(10, 0), at(8, 0), at(9, 0), at(10, 0), at(11, 0)]),
            ),
            (
                "created",
                micros_utc(&[at(10, 5), at(8, 0), at(9, 0), at(10, 1), at(11, 0)]),
            ),
            (
                "conv",
                Arc::new(Float64Array::from(vec![0.5, 0.2, 0.1, 0.4, 0.9])),
            ),
            (
                "trips",
                Arc::new(Int64Array::from(vec![50, 20, 10, 40, 90])),
            ),
        ],
    );
    // customer_profile (ttl 0): a folder with hive partitions, event time in milliseconds,
    // naive (UTC). (arrow-rs writes second timestamps as plain INT64 with an Arrow schema hint,
    // which only Arrow readers see: Spark reads them as numbers.)
    write_parquet(
        &data.join("customer/region=eu/part-0.parquet"),
        vec![
            ("customer_id", Arc::new(StringArray::from(vec!["a", "a"]))),
            (
                "ts",
                Arc::new(TimestampMillisecondArray::from(vec![
                    at(-48, 0) * 1000,
                    at(12, 0) * 1000,
                ])),
            ),
            ("tier", Arc::new(StringArray::from(vec!["old", "new"]))),
            ("trips", Arc::new(Int64Array::from(vec![1, 2]))),
        ],
    );
    write_parquet(
        &data.join("customer/region=us/part-0.parquet"),
        vec![
            ("customer_id", Arc::new(StringArray::from(vec!["b"]))),
            (
                "ts",
                Arc::new(TimestampMillisecondArray::from(vec![at(1, 0) * 1000])),
            ),
            ("tier", Arc::new(StringArray::from(vec!["b-tier"]))),
            ("trips", Arc::new(Int64Array::from(vec![7]))),
        ],
    );
    // pair (composite key, ttl 1d, an Int32 key column), a SparkSource path. (Spark 4.3 does not
    // read Parquet's nanosecond timestamps: spark_errors_name_their_cause.)
    write_parquet(
        &data.join("pair.parquet"),
        vec![
            ("driver_id", Arc::new(Int32Array::from(vec![1, 1, 2]))),
            (
                "customer_id",
                Arc::new(StringArray::from(vec!["a", "b", "a"])),
            ),
            (
                "event_timestamp",
                micros_utc(&[at(9, 0), at(9, 0), at(9, 30)]),
            ),
            ("rides", Arc::new(Int64Array::from(vec![3, 4, 5]))),
        ],
    );
    Repo { dir, registry }
}

fn entities(columns: Vec<(&str, ArrayRef)>) -> Entities {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    Entities {
        schema: batch.schema(),
        batches: vec![batch],
    }
}

fn spark_engine(url: &str) -> SparkEngine {
    SparkEngine::new(SparkConfig {
        remote: SparkRemote::parse(url).unwrap(),
        conf: BTreeMap::from([("spark.sql.shuffle.partitions".to_owned(), "3".to_owned())]),
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(16 << 20)
        .enable_all()
        .build()
        .unwrap()
}

/// Spark's and DataFusion's answers to one request: both as one batch.
async fn both(
    repo: &Repo,
    spark: &SparkEngine,
    features: Features,
    full: bool,
    columns: Vec<(&str, ArrayRef)>,
) -> (RecordBatch, RecordBatch) {
    let selection = select(&repo.registry, &features).unwrap();
    let got = spark
        .retrieve(
            &repo.registry,
            repo.dir.path(),
            &selection,
            full,
            entities(columns.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("Spark: {e}"));
    let schema = Arc::clone(&got.schema);
    let rows = got.rows;
    let batches: Vec<RecordBatch> = got.stream.try_collect().await.unwrap();
    let spark_out = concat_batches(&schema, &batches).unwrap();
    assert_eq!(spark_out.num_rows(), rows);
    // The local engine reads file sources only: it answers those views.
    let mut local = selection.clone();
    local.views.retain(|v| {
        matches!(
            v.view.batch_source.as_ref().map(|s| &s.kind),
            Some(quiver_core::model::SourceKind::File { .. })
        )
    });
    let engine = HistoricalEngine::new(&EngineOptions::default()).unwrap();
    let planned = engine
        .plan(
            &repo.registry,
            repo.dir.path(),
            &local,
            full,
            entities(columns),
        )
        .await
        .unwrap();
    let batches: Vec<RecordBatch> = engine
        .execute(&planned)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let df_out = concat_batches(&planned.schema, &batches).unwrap();
    (spark_out, df_out)
}

/// A column's cells as text (types may differ between engines only in width or unit).
fn cells(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let c = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", batch.schema()));
    // Times as nanoseconds since the epoch, whatever their unit and zone.
    let c = match c.data_type() {
        DataType::Timestamp(_, _) => {
            let ns = DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Nanosecond, None);
            cast(&cast(c, &ns).unwrap(), &DataType::Int64).unwrap()
        }
        _ => Arc::clone(c),
    };
    let s = cast(&c, &DataType::Utf8).unwrap();
    let s = s.as_any().downcast_ref::<StringArray>().unwrap();
    s.iter().map(|v| v.map(str::to_owned)).collect()
}

fn same_answers(spark: &RecordBatch, df: &RecordBatch, case: &str) {
    let names = |b: &RecordBatch| -> Vec<String> {
        b.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    };
    // Every column the local engine answered (all but spark sources' features), the same.
    let spark_names = names(spark);
    let df_names = names(df);
    assert!(
        df_names.iter().all(|n| spark_names.contains(n)),
        "{case}: columns {spark_names:?} vs {df_names:?}"
    );
    assert_eq!(
        spark_names
            .iter()
            .filter(|n| df_names.contains(n))
            .collect::<Vec<_>>(),
        df_names.iter().collect::<Vec<_>>(),
        "{case}: column order"
    );
    for name in names(df) {
        assert_eq!(
            cells(spark, &name),
            cells(df, &name),
            "{case}: column {name}"
        );
    }
}

fn i64s(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    let c = cast(batch.column_by_name(name).unwrap(), &DataType::Int64).unwrap();
    c.as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .iter()
        .collect()
}

fn f64s(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let c = cast(batch.column_by_name(name).unwrap(), &DataType::Float64).unwrap();
    c.as_any()
        .downcast_ref::<Float64Array>()
        .unwrap()
        .iter()
        .collect()
}

#[test]
fn spark_join_follows_every_rule_and_matches_datafusion() {
    let Some(server) = spark_or_skip("spark_join_follows_every_rule_and_matches_datafusion") else {
        return;
    };
    let spark = spark_engine(&server.url());
    let repo = repo();
    runtime().block_on(async {
        // Ties (created decides), inclusive bounds (T itself; T - ttl itself), the ttl, an
        // unknown key, duplicates, input order (not sorted), field mapping.
        let ids = vec![1, 1, 1, 2, 99, 1, 1, 2];
        let times = vec![
            at(10, 30), // the 10:00 tie: created 10:05 wins -> 0.5
            at(11, 0),  // T equals an event time: inclusive -> 0.9
            at(10, 59), // 10:00 still inside the hour
            at(9, 1),   // 08:00 is 61 min old: outside the ttl -> null
            at(10, 0),  // unknown key -> null
            at(10, 30), // a duplicate of row 0
            at(8, 59),  // before any row of driver 1 -> null
            at(9, 0),   // exactly T - ttl: inclusive -> 0.2
        ];
        let columns = vec![
            (
                "driver_id",
                Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
            ),
            ("event_timestamp", micros_utc(&times)),
        ];
        let (s, d) = both(
            &repo,
            &spark,
            Features::Refs(vec![
                "driver_stats:conv_rate".into(),
                "driver_stats:trips".into(),
            ]),
            false,
            columns,
        )
        .await;
        same_answers(&s, &d, "driver_stats");
        assert_eq!(
            f64s(&s, "conv_rate"),
            [
                Some(0.5),
                Some(0.9),
                Some(0.5),
                None,
                None,
                Some(0.5),
                None,
                Some(0.2)
            ]
        );
        assert_eq!(
            i64s(&s, "driver_id"),
            ids.iter().map(|i| Some(*i)).collect::<Vec<_>>()
        );

        // Several views at once, full names: a string key over a hive-partitioned folder with
        // naive second timestamps (no ttl), a composite key over a SparkSource path with an
        // Int32 key column, and a SparkSource query.
        let columns = vec![
            (
                "driver_id",
                Arc::new(Int64Array::from(vec![1, 1, 2, 3])) as ArrayRef,
            ),
            (
                "customer_id",
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("b"),
                    Some("a"),
                    None,
                ])),
            ),
            (
                "event_timestamp",
                micros_utc(&[at(13, 0), at(9, 0), at(10, 0), at(10, 0)]),
            ),
            ("label", Arc::new(Int64Array::from(vec![7, 8, 9, 10]))),
        ];
        let (s, d) = both(
            &repo,
            &spark,
            Features::Refs(vec![
                "customer_profile:tier".into(),
                "customer_profile:trips".into(),
                "pair:rides".into(),
                "driver_scaled:conv10".into(),
                "driver_stats:trips".into(),
            ]),
            true,
            columns,
        )
        .await;
        same_answers(&s, &d, "several views");
        let tiers = cells(&s, "customer_profile__tier");
        assert_eq!(
            tiers,
            [
                Some("new".to_owned()),
                Some("b-tier".to_owned()),
                Some("old".to_owned()),
                None
            ]
        );
        assert_eq!(i64s(&s, "pair__rides"), [Some(3), Some(4), Some(5), None]);
        // The query source (conv * 10, ttl 2h): 11:00's 0.9, 09:00's 0.1, 08:00's 0.2 exactly
        // 2h before, nothing for driver 3.
        let scaled: Vec<Option<i64>> = f64s(&s, "driver_scaled__conv10")
            .into_iter()
            .map(|v| v.map(|v| (v * 1000.0).round() as i64))
            .collect();
        assert_eq!(scaled, [Some(9000), Some(1000), Some(2000), None]);
        assert_eq!(i64s(&s, "label"), [Some(7), Some(8), Some(9), Some(10)]);

        // A feature service: an alias and a join-key map (the second driver column).
        let columns = vec![
            (
                "driver_id",
                Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
            ),
            ("other_driver", Arc::new(Int64Array::from(vec![2, 1]))),
            ("event_timestamp", micros_utc(&[at(8, 30), at(11, 30)])),
        ];
        let (s, d) = both(
            &repo,
            &spark,
            Features::Service("both_drivers".into()),
            true,
            columns,
        )
        .await;
        same_answers(&s, &d, "feature service");
        assert_eq!(i64s(&s, "other__trips"), [Some(20), Some(90)]);

        // The path both offline servers (Flight, HTTP) and `quiver historical` take: an engine
        // set to Spark runs the join there.
        let engine = HistoricalEngine::new(&EngineOptions::default())
            .unwrap()
            .with_spark(spark.clone());
        let selection = quiver_offline::on_demand::select_with_on_demand(
            &repo.registry,
            &Features::Refs(vec!["driver_stats:trips".into()]),
            false,
        )
        .unwrap();
        let columns = vec![
            (
                "driver_id",
                Arc::new(Int64Array::from(vec![2, 1])) as ArrayRef,
            ),
            ("event_timestamp", micros_utc(&[at(8, 30), at(11, 30)])),
        ];
        let (planned, schema, stream) = selection
            .execute(
                &engine,
                &repo.registry,
                repo.dir.path(),
                entities(columns),
                None,
            )
            .await
            .unwrap();
        assert_eq!(planned.rows, 2);
        let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
        let out = concat_batches(&schema, &batches).unwrap();
        assert_eq!(i64s(&out, "trips"), [Some(20), Some(90)]);

        // An empty entity table: no rows, the same columns.
        let columns = vec![
            (
                "driver_id",
                Arc::new(Int64Array::from(Vec::<i64>::new())) as ArrayRef,
            ),
            ("event_timestamp", micros_utc(&[])),
        ];
        let (s, d) = both(
            &repo,
            &spark,
            Features::Refs(vec!["driver_stats:trips".into()]),
            false,
            columns,
        )
        .await;
        same_answers(&s, &d, "no entity rows");
        assert_eq!(s.num_rows(), 0);
    });
}

/// A tiny deterministic generator (no dependency).
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n) as i64
    }
}

#[test]
fn spark_join_matches_brute_force_on_random_data() {
    let Some(server) = spark_or_skip("spark_join_matches_brute_force_on_random_data") else {
        return;
    };
    let spark = spark_engine(&server.url());
    let repo = repo();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (n, keys, m) = (20_000, 500, 5_000);
    let (mut ids, mut ev, mut cr, mut trips) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        ids.push(rng.next(keys));
        // Coarse times so ties on the event time are common; created breaks them (unique).
        ev.push(at(0, rng.next(24 * 4) * 15));
        cr.push(at(0, 0) + i);
        trips.push(i);
    }
    write_parquet(
        &repo.dir.path().join("data/driver.parquet"),
        vec![
            ("driver_id", Arc::new(Int64Array::from(ids.clone()))),
            ("event_timestamp", micros_utc(&ev)),
            ("created", micros_utc(&cr)),
            (
                "conv",
                Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))),
            ),
            ("trips", Arc::new(Int64Array::from(trips.clone()))),
        ],
    );
    let (mut eids, mut et) = (Vec::new(), Vec::new());
    for _ in 0..m {
        eids.push(rng.next(keys + 20));
        et.push(at(0, rng.next(24 * 60)));
    }
    let ttl = 3600;
    let mut by_key: std::collections::HashMap<i64, Vec<usize>> = Default::default();
    for (i, id) in ids.iter().enumerate() {
        by_key.entry(*id).or_default().push(i);
    }
    let expected: Vec<Option<i64>> = (0..m)
        .map(|j| {
            let mut best: Option<(i64, i64, i64)> = None;
            for &i in by_key.get(&eids[j]).map(Vec::as_slice).unwrap_or(&[]) {
                if ev[i] <= et[j] && ev[i] >= et[j] - ttl {
                    let cand = (ev[i], cr[i], trips[i]);
                    if best.is_none_or(|b| (cand.0, cand.1) > (b.0, b.1)) {
                        best = Some(cand);
                    }
                }
            }
            best.map(|b| b.2)
        })
        .collect();
    runtime().block_on(async {
        let columns = vec![
            (
                "driver_id",
                Arc::new(Int64Array::from(eids.clone())) as ArrayRef,
            ),
            ("event_timestamp", micros_utc(&et)),
        ];
        let (s, d) = both(
            &repo,
            &spark,
            Features::Refs(vec!["driver_stats:trips".into()]),
            false,
            columns,
        )
        .await;
        assert_eq!(
            i64s(&s, "driver_id"),
            eids.iter().map(|i| Some(*i)).collect::<Vec<_>>()
        );
        assert_eq!(i64s(&s, "trips"), expected, "Spark against the brute force");
        same_answers(&s, &d, "random data");
    });
}

#[test]
fn spark_errors_name_their_cause() {
    let rt = runtime();
    let repo = repo();
    let selection = |refs: &[&str]| {
        select(
            &repo.registry,
            &Features::Refs(refs.iter().map(|r| r.to_string()).collect()),
        )
        .unwrap()
    };
    let columns = || {
        entities(vec![
            ("driver_id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("event_timestamp", micros_utc(&[at(10, 0)])),
        ])
    };
    // Nothing listening: unavailable, naming where.
    let port = quiver_testkit::free_port();
    let nowhere = spark_engine(&format!("sc://127.0.0.1:{port}"));
    let e = rt
        .block_on(nowhere.retrieve(
            &repo.registry,
            repo.dir.path(),
            &selection(&["driver_stats:trips"]),
            false,
            columns(),
        ))
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");

    let Some(server) = spark_or_skip("spark_errors_name_their_cause") else {
        return;
    };
    let spark = spark_engine(&server.url());
    rt.block_on(async {
        // The source lost a column the view reads: the definitions' fault, named.
        std::fs::remove_file(repo.dir.path().join("data/pair.parquet")).unwrap();
        write_parquet(
            &repo.dir.path().join("data/pair.parquet"),
            vec![
                ("driver_id", Arc::new(Int32Array::from(vec![1])) as ArrayRef),
                ("customer_id", Arc::new(StringArray::from(vec!["a"]))),
                ("event_timestamp", micros_utc(&[at(9, 0)])),
            ],
        );
        let with_customer = || {
            entities(vec![
                ("driver_id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
                ("customer_id", Arc::new(StringArray::from(vec!["a"]))),
                ("event_timestamp", micros_utc(&[at(10, 0)])),
            ])
        };
        let e = spark
            .retrieve(
                &repo.registry,
                repo.dir.path(),
                &selection(&["pair:rides"]),
                false,
                with_customer(),
            )
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Unprocessable, "{e}");
        assert!(e.to_string().contains("\"rides\""), "{e}");

        // Nanosecond timestamps (pandas' default): Spark 4.3 refuses them, and says so.
        std::fs::remove_file(repo.dir.path().join("data/pair.parquet")).unwrap();
        write_parquet(
            &repo.dir.path().join("data/pair.parquet"),
            vec![
                ("driver_id", Arc::new(Int32Array::from(vec![1])) as ArrayRef),
                ("customer_id", Arc::new(StringArray::from(vec!["a"]))),
                (
                    "event_timestamp",
                    Arc::new(
                        TimestampNanosecondArray::from(vec![at(9, 0) * 1_000_000_000])
                            .with_timezone("+00:00"),
                    ),
                ),
                ("rides", Arc::new(Int64Array::from(vec![3]))),
            ],
        );
        let e = spark
            .retrieve(
                &repo.registry,
                repo.dir.path(),
                &selection(&["pair:rides"]),
                false,
                with_customer(),
            )
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Unprocessable, "{e}");
        assert!(e.to_string().contains("PARQUET_TYPE_ILLEGAL"), "{e}");

        // A missing path: Spark's own words, the caller's data.
        std::fs::remove_file(repo.dir.path().join("data/pair.parquet")).unwrap();
        let e = spark
            .retrieve(
                &repo.registry,
                repo.dir.path(),
                &selection(&["pair:rides"]),
                false,
                with_customer(),
            )
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::Unprocessable, "{e}");
        assert!(
            e.to_string().contains("PATH_NOT_FOUND") && e.to_string().contains("pair.parquet"),
            "{e}"
        );

        // The entity table lacks the join key: the caller's request, before Spark is asked.
        let e = spark
            .retrieve(
                &repo.registry,
                repo.dir.path(),
                &selection(&["pair:rides"]),
                false,
                columns(),
            )
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::BadRequest, "{e}");
        assert!(e.to_string().contains("customer_id"), "{e}");
    });
}

/// All parquet files of a folder Spark wrote, in part order, as one batch.
fn read_spark_folder(dir: &Path) -> RecordBatch {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    let mut batches = Vec::new();
    for f in files {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&f).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        batches.extend(reader.map(|b| b.unwrap()));
    }
    concat_batches(&batches[0].schema(), &batches).unwrap()
}

#[test]
fn spark_reads_entities_where_they_are_and_writes_the_output_itself() {
    let Some(server) =
        spark_or_skip("spark_reads_entities_where_they_are_and_writes_the_output_itself")
    else {
        return;
    };
    let spark = spark_engine(&server.url());
    let repo = repo();
    // The entity table as a file Spark reads: ties, the ttl, an unknown key, a duplicate; not
    // sorted. `rid` says the input order.
    let columns = vec![
        (
            "rid",
            Arc::new(Int64Array::from((0..7).collect::<Vec<i64>>())) as ArrayRef,
        ),
        (
            "driver_id",
            Arc::new(Int64Array::from(vec![1, 2, 1, 99, 1, 2, 1])),
        ),
        (
            "customer_id",
            Arc::new(StringArray::from(vec!["a", "b", "a", "a", "b", "zz", "a"])),
        ),
        (
            "event_timestamp",
            micros_utc(&[
                at(10, 30),
                at(9, 1),
                at(11, 0),
                at(10, 0),
                at(8, 59),
                at(9, 0),
                at(10, 30),
            ]),
        ),
    ];
    let entity_file = repo.dir.path().join("data/entities.parquet");
    write_parquet(&entity_file, columns.clone());
    let features = Features::Refs(vec![
        "driver_stats:conv_rate".into(),
        "driver_stats:trips".into(),
        "customer_profile:tier".into(),
    ]);
    let selection = select(&repo.registry, &features).unwrap();
    let query = format!("SELECT * FROM parquet.`{}`", entity_file.display());
    runtime().block_on(async {
        // The reference: DataFusion on the same rows.
        let engine = HistoricalEngine::new(&EngineOptions::default()).unwrap();
        let planned = engine
            .plan(
                &repo.registry,
                repo.dir.path(),
                &selection,
                false,
                entities(columns.clone()),
            )
            .await
            .unwrap();
        let batches: Vec<RecordBatch> = engine
            .execute(&planned)
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let reference = concat_batches(&planned.schema, &batches).unwrap();
        assert_eq!(
            f64s(&reference, "conv_rate"),
            [Some(0.5), None, Some(0.9), None, None, Some(0.2), Some(0.5)]
        );

        // 1. Entity rows read by Spark where they are, the answer streamed back.
        let got = spark
            .retrieve_in_spark(
                &repo.registry,
                repo.dir.path(),
                &selection,
                false,
                SparkEntities::Query(query.clone()),
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("entity query: {e}"));
        let InSpark::Streamed(got) = got else {
            panic!("no target, yet nothing streamed back");
        };
        assert_eq!(got.rows, 7);
        let schema = Arc::clone(&got.schema);
        let batches: Vec<RecordBatch> = got.stream.try_collect().await.unwrap();
        same_answers(
            &concat_batches(&schema, &batches).unwrap(),
            &reference,
            "entity query, streamed back",
        );

        // 2. Entity rows uploaded, the output written by Spark to a folder: the same rows in
        // input order across the part files.
        let folder = repo.dir.path().join("out/training");
        let target = SparkTarget::Path(folder.display().to_string());
        let done = spark
            .retrieve_in_spark(
                &repo.registry,
                repo.dir.path(),
                &selection,
                false,
                SparkEntities::Uploaded(entities(columns.clone())),
                Some(target.clone()),
            )
            .await
            .unwrap_or_else(|e| panic!("written to a folder: {e}"));
        assert!(matches!(done, InSpark::Written { rows: 7 }));
        same_answers(
            &read_spark_folder(&folder),
            &reference,
            "uploaded, written by Spark",
        );

        // 3. Both in Spark: the entity query's answer written to a table, read back there.
        let done = spark
            .retrieve_in_spark(
                &repo.registry,
                repo.dir.path(),
                &selection,
                false,
                SparkEntities::Query(query.clone()),
                Some(SparkTarget::Table("quiver_training".into())),
            )
            .await
            .unwrap_or_else(|e| panic!("written to a table: {e}"));
        assert!(matches!(done, InSpark::Written { rows: 7 }));
        let session = SparkSession::open(&spark.config, SessionOptions::default())
            .await
            .unwrap();
        let batches: Vec<RecordBatch> = session
            .sql("SELECT * FROM quiver_training ORDER BY rid")
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        session.release().await;
        same_answers(
            &concat_batches(&batches[0].schema(), &batches).unwrap(),
            &reference,
            "entity query, written to a table",
        );

        // 4. What exists is never overwritten: the error names it and Spark's cause.
        for target in [target, SparkTarget::Table("quiver_training".into())] {
            let e = spark
                .retrieve_in_spark(
                    &repo.registry,
                    repo.dir.path(),
                    &selection,
                    false,
                    SparkEntities::Query(query.clone()),
                    Some(target.clone()),
                )
                .await
                .err()
                .unwrap_or_else(|| panic!("{target:?} was overwritten"));
            let text = e.to_string();
            assert!(
                text.contains("already exists") && text.contains("writing"),
                "{target:?}: {text}"
            );
            assert_eq!(e.kind(), ErrorKind::Unprocessable, "{text}");
        }
        // A bad entity query names Spark's cause.
        let e = spark
            .retrieve_in_spark(
                &repo.registry,
                repo.dir.path(),
                &selection,
                false,
                SparkEntities::Query("SELECT * FROM no_such_table".into()),
                None,
            )
            .await
            .err()
            .expect("a missing table is an error");
        let text = e.to_string();
        assert!(
            text.contains("entity query") && text.contains("no_such_table"),
            "{text}"
        );
    });
}

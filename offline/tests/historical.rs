//! Historical retrieval on small hand-made tables: each rule of feast-compat.md section 5 as a
//! golden table, the errors, and a brute-force comparison on random data with and without a
//! memory limit (which makes the sorts spill).

use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, TimestampNanosecondArray, TimestampSecondArray,
};
use datafusion::arrow::util::pretty::pretty_format_batches;
use futures::TryStreamExt;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use quiver_core::registry::ProjectRegistry;
use quiver_offline::historical::{EngineOptions, Entities, Features, HistoricalEngine, select};

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
    type: file
    path: data/pair.parquet
    timestamp_field: event_timestamp
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
on_demand_feature_views:
  - name: derived
    sources: [driver_stats]
    request_schema: [{name: bonus, dtype: Int64}]
    features:
      - {name: conv_pct, dtype: Float64, expr: "driver_stats.conv_rate * 100 + bonus"}
      - {name: trips_per_bonus, dtype: Float64, expr: "driver_stats.trips / bonus"}
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
    write_parquet_groups(path, columns, 3);
}

/// Small row groups, so that pruning on statistics has something to skip.
fn write_parquet_groups(path: &Path, columns: Vec<(&str, ArrayRef)>, group_rows: usize) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group_rows))
        .build();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
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
    let registry =
        quiver_registry::definitions::parse(&[("features.yaml", DEFINITIONS)], "hist").unwrap();
    let data = dir.path().join("data");
    // driver_stats (ttl 1h): driver 1 has a tie at 10:00 (created decides), rows at 09:00 and
    // 11:00; driver 2 one row at 08:00. Not sorted, so the engine must sort.
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
    // customer_profile (ttl 0): a folder with hive partitions, event time in seconds, naive.
    write_parquet(
        &data.join("customer/region=eu/part-0.parquet"),
        vec![
            ("customer_id", Arc::new(StringArray::from(vec!["a", "a"]))),
            (
                "ts",
                Arc::new(TimestampSecondArray::from(vec![at(-48, 0), at(12, 0)])),
            ),
            ("tier", Arc::new(StringArray::from(vec!["old", "new"]))),
            ("trips", Arc::new(Int64Array::from(vec![1, 2]))),
        ],
    );
    write_parquet(
        &data.join("customer/region=us/part-0.parquet"),
        vec![
            ("customer_id", Arc::new(StringArray::from(vec!["b"]))),
            ("ts", Arc::new(TimestampSecondArray::from(vec![at(1, 0)]))),
            ("tier", Arc::new(StringArray::from(vec!["b-tier"]))),
            ("trips", Arc::new(Int64Array::from(vec![7]))),
        ],
    );
    // pair (composite key, ttl 1d), nanosecond times.
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
                Arc::new(
                    TimestampNanosecondArray::from(vec![
                        at(9, 0) * 1_000_000_000,
                        at(9, 0) * 1_000_000_000,
                        at(9, 30) * 1_000_000_000,
                    ])
                    .with_timezone("+00:00"),
                ),
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

async fn run_with(
    repo: &Repo,
    options: &EngineOptions,
    features: Features,
    full: bool,
    e: Entities,
) -> Result<String, String> {
    let engine = HistoricalEngine::new(options).map_err(|e| e.to_string())?;
    let views = select(&repo.registry, &features).map_err(|e| e.to_string())?;
    let planned = engine
        .plan(&repo.registry, repo.dir.path(), &views, full, e)
        .await
        .map_err(|e| e.to_string())?;
    let batches: Vec<RecordBatch> = engine
        .execute(&planned)
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(
        batches.iter().map(|b| b.num_rows()).sum::<usize>(),
        planned.rows
    );
    Ok(pretty_format_batches(&batches).unwrap().to_string())
}

async fn run(repo: &Repo, features: &[&str], full: bool, e: Entities) -> Result<String, String> {
    let mut out = None;
    // One and two partitions must agree.
    for partitions in [1, 2] {
        let options = EngineOptions {
            partitions,
            ..EngineOptions::default()
        };
        let refs = Features::Refs(features.iter().map(|s| s.to_string()).collect());
        let e = Entities {
            schema: Arc::clone(&e.schema),
            batches: e.batches.clone(),
        };
        let got = run_with(repo, &options, refs, full, e).await;
        if let Some(prev) = &out {
            assert_eq!(prev, &got, "1 and 2 partitions differ");
        }
        out = Some(got);
    }
    out.unwrap()
}

fn lines(s: &str) -> String {
    s.lines().map(|l| l.trim()).collect::<Vec<_>>().join("\n")
}

fn golden(got: Result<String, String>, expected: &str) {
    let got = got.unwrap();
    assert_eq!(lines(got.trim()), lines(expected.trim()), "got:\n{got}");
}

#[test]
fn one_view_rules() {
    block_on(async move {
        let repo = repo();
        // row: what it checks
        let rows: Vec<(i64, i64, &str)> = vec![
            (
                1,
                at(10, 0),
                "exact event time; tie on 10:00 goes to created 10:05",
            ),
            (1, at(10, 59), "latest <= T"),
            (1, at(11, 0), "upper bound inclusive"),
            (1, at(12, 0), "lower bound inclusive (11:00 = T - 1h)"),
            (1, at(12, 1), "just past the ttl: null"),
            (2, at(8, 30), "other key"),
            (3, at(10, 0), "unknown key: null"),
            (1, at(8, 59), "before any row: null"),
            (1, at(10, 0), "duplicate of the first row: kept"),
        ];
        let e = entities(vec![
            (
                "driver_id",
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            ),
            (
                "event_timestamp",
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        rows.iter().map(|r| r.1 * 1_000_000),
                    )
                    .with_timezone("UTC"),
                ),
            ),
            (
                "why",
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            ),
        ]);
        golden(
            run(
                &repo,
                &["driver_stats:conv_rate", "driver_stats:trips"],
                false,
                e,
            )
            .await,
            r#"
+-----------+----------------------+------------------------------------------------------+-----------+-------+
| driver_id | event_timestamp      | why                                                  | conv_rate | trips |
+-----------+----------------------+------------------------------------------------------+-----------+-------+
| 1         | 2026-01-01T10:00:00Z | exact event time; tie on 10:00 goes to created 10:05 | 0.5       | 50    |
| 1         | 2026-01-01T10:59:00Z | latest <= T                                          | 0.5       | 50    |
| 1         | 2026-01-01T11:00:00Z | upper bound inclusive                                | 0.9       | 90    |
| 1         | 2026-01-01T12:00:00Z | lower bound inclusive (11:00 = T - 1h)               | 0.9       | 90    |
| 1         | 2026-01-01T12:01:00Z | just past the ttl: null                              |           |       |
| 2         | 2026-01-01T08:30:00Z | other key                                            | 0.2       | 20    |
| 3         | 2026-01-01T10:00:00Z | unknown key: null                                    |           |       |
| 1         | 2026-01-01T08:59:00Z | before any row: null                                 |           |       |
| 1         | 2026-01-01T10:00:00Z | duplicate of the first row: kept                     | 0.5       | 50    |
+-----------+----------------------+------------------------------------------------------+-----------+-------+
"#,
        );
    });
}

#[test]
fn several_views_composite_keys_ttl_zero_and_naive_times() {
    block_on(async move {
        let repo = repo();
        // Entity times naive, in seconds (naive means UTC): answered as UTC nanoseconds, as
        // Feast answers them.
        let e = entities(vec![
            (
                "customer_id",
                Arc::new(StringArray::from(vec!["a", "b", "a", "c"])),
            ),
            ("driver_id", Arc::new(Int64Array::from(vec![1, 1, 2, 1]))),
            (
                "event_timestamp",
                Arc::new(TimestampSecondArray::from(vec![
                    at(10, 0),
                    at(10, 0),
                    at(9, 29),
                    at(10, 0),
                ])),
            ),
        ]);
        golden(
            run(
                &repo,
                &[
                    "customer_profile:tier",
                    "pair:rides",
                    "driver_stats:trips",
                    "customer_profile:trips",
                ],
                true,
                e,
            )
            .await,
            // Features come grouped by view, views in the order first requested.
            r#"
+-------------+-----------+----------------------+------------------------+-------------------------+-------------+---------------------+
| customer_id | driver_id | event_timestamp      | customer_profile__tier | customer_profile__trips | pair__rides | driver_stats__trips |
+-------------+-----------+----------------------+------------------------+-------------------------+-------------+---------------------+
| a           | 1         | 2026-01-01T10:00:00Z | old                    | 1                       | 3           | 50                  |
| b           | 1         | 2026-01-01T10:00:00Z | b-tier                 | 7                       | 4           | 50                  |
| a           | 2         | 2026-01-01T09:29:00Z | old                    | 1                       |             |                     |
| c           | 1         | 2026-01-01T10:00:00Z |                        |                         |             | 50                  |
+-------------+-----------+----------------------+------------------------+-------------------------+-------------+---------------------+
"#,
        );
    });
}

#[test]
fn name_clash_without_full_names() {
    block_on(async move {
        let repo = repo();
        let e = entities(vec![
            ("customer_id", Arc::new(StringArray::from(vec!["a"]))),
            ("driver_id", Arc::new(Int64Array::from(vec![1]))),
            ("event_timestamp", micros_utc(&[at(10, 0)])),
        ]);
        let err = run(
            &repo,
            &["driver_stats:trips", "customer_profile:trips"],
            false,
            e,
        )
        .await
        .unwrap_err();
        assert!(
            err.contains("\"trips\"") && err.contains("full feature names"),
            "{err}"
        );
    });
}

#[test]
fn feature_service_alias_and_join_key_map() {
    block_on(async move {
        let repo = repo();
        let e = entities(vec![
            ("driver_id", Arc::new(Int64Array::from(vec![1, 2]))),
            ("other_driver", Arc::new(Int64Array::from(vec![2, 1]))),
            ("event_timestamp", micros_utc(&[at(10, 30), at(10, 30)])),
        ]);
        let options = EngineOptions::default();
        let got = run_with(
            &repo,
            &options,
            Features::Service("both_drivers".into()),
            true,
            e,
        )
        .await;
        golden(
            got,
            r#"
+-----------+--------------+----------------------+-------------------------+--------------+
| driver_id | other_driver | event_timestamp      | driver_stats__conv_rate | other__trips |
+-----------+--------------+----------------------+-------------------------+--------------+
| 1         | 2            | 2026-01-01T10:30:00Z | 0.5                     |              |
| 2         | 1            | 2026-01-01T10:30:00Z |                         | 50           |
+-----------+--------------+----------------------+-------------------------+--------------+
"#,
        );
    });
}

#[test]
fn bad_input_is_refused_before_any_work() {
    block_on(async move {
        let repo = repo();
        let no_key = entities(vec![
            ("driver", Arc::new(Int64Array::from(vec![1]))),
            ("event_timestamp", micros_utc(&[at(10, 0)])),
        ]);
        let err = run(&repo, &["driver_stats:trips"], false, no_key)
            .await
            .unwrap_err();
        assert!(err.contains("no column \"driver_id\""), "{err}");

        let no_time = entities(vec![("driver_id", Arc::new(Int64Array::from(vec![1])))]);
        let err = run(&repo, &["driver_stats:trips"], false, no_time)
            .await
            .unwrap_err();
        assert!(err.contains("event_timestamp"), "{err}");

        let wrong_type = entities(vec![
            ("driver_id", Arc::new(StringArray::from(vec!["1"]))),
            ("event_timestamp", micros_utc(&[at(10, 0)])),
        ]);
        let err = run(&repo, &["driver_stats:trips"], false, wrong_type)
            .await
            .unwrap_err();
        assert!(
            err.contains("\"driver_id\"") && err.contains("Utf8"),
            "{err}"
        );

        let ok = || {
            entities(vec![
                ("driver_id", Arc::new(Int64Array::from(vec![1]))),
                ("event_timestamp", micros_utc(&[at(10, 0)])),
            ])
        };
        let err = run(&repo, &["driver_stats:nope"], false, ok())
            .await
            .unwrap_err();
        assert!(err.contains("no feature \"nope\""), "{err}");
        let err = run(&repo, &["nope:trips"], false, ok()).await.unwrap_err();
        assert!(err.contains("no feature view \"nope\""), "{err}");

        std::fs::write(repo.dir.path().join("data/driver.parquet"), b"not parquet").unwrap();
        let err = run(&repo, &["driver_stats:trips"], false, ok())
            .await
            .unwrap_err();
        assert!(err.contains("driver.parquet"), "{err}");
    });
}

/// Runs a test on a runtime with large thread stacks: DataFusion's futures are deep in debug
/// builds.
fn block_on(f: impl std::future::Future<Output = ()> + Send + 'static) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(16 << 20)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move { rt_spawn(f).await });
}

async fn rt_spawn(f: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Err(e) = tokio::spawn(f).await {
        std::panic::resume_unwind(e.into_panic());
    }
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
fn random_data_matches_brute_force_with_and_without_spilling() {
    block_on(async move {
        let repo = repo();
        let mut rng = Rng(0x9e3779b97f4a7c15);
        let n = 60_000;
        let keys = 2_000;
        let (mut ids, mut ev, mut cr, mut conv, mut trips) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            ids.push(rng.next(keys));
            // Coarse times so ties on the event time are common; created breaks them (unique).
            ev.push(at(0, rng.next(24 * 4) * 15));
            cr.push(at(0, 0) + i);
            conv.push(i as f64);
            trips.push(i);
        }
        write_parquet_groups(
            &repo.dir.path().join("data/driver.parquet"),
            vec![
                ("driver_id", Arc::new(Int64Array::from(ids.clone()))),
                ("event_timestamp", micros_utc(&ev)),
                ("created", micros_utc(&cr)),
                ("conv", Arc::new(Float64Array::from(conv))),
                ("trips", Arc::new(Int64Array::from(trips.clone()))),
            ],
            5_000,
        );
        let m = 20_000;
        let (mut eids, mut et) = (Vec::new(), Vec::new());
        for _ in 0..m {
            eids.push(rng.next(keys + 50));
            et.push(at(0, rng.next(24 * 60)));
        }
        // Brute force: the rule as written.
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
        for (limit, partitions) in [(None, 1), (None, 2), (Some(8 << 20), 2)]
            .into_iter()
            .filter(|c| std::env::var("ONLY").map_or(true, |o| o == format!("{c:?}")))
        {
            let e = entities(vec![
                ("driver_id", Arc::new(Int64Array::from(eids.clone()))),
                ("event_timestamp", micros_utc(&et)),
            ]);
            let options = EngineOptions {
                memory_limit: limit,
                partitions,
                batch_size: 1024,
                ..EngineOptions::default()
            };
            let engine = HistoricalEngine::new(&options).unwrap();
            let views = select(
                &repo.registry,
                &Features::Refs(vec!["driver_stats:trips".into()]),
            )
            .unwrap();
            let planned = engine
                .plan(&repo.registry, repo.dir.path(), &views, false, e)
                .await
                .unwrap();
            let batches: Vec<RecordBatch> = engine
                .execute(&planned)
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            let mut got: Vec<Option<i64>> = Vec::new();
            let mut got_ids: Vec<i64> = Vec::new();
            for b in &batches {
                let t = b
                    .column_by_name("trips")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                got.extend(t.iter());
                let d = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                got_ids.extend(d.values().iter().copied());
            }
            assert_eq!(got_ids, eids, "input order, limit {limit:?}");
            assert_eq!(got, expected, "limit {limit:?}, partitions {partitions}");
            let (files, bytes) = planned.spilled();
            if limit.is_some() {
                assert!(
                    files > 0 && bytes > 0,
                    "a limit of {limit:?} should make the sorts spill"
                );
            }
        }
    });
}

#[test]
fn csv_entity_times_come_back_as_utc_timestamps() {
    block_on(async move {
        let repo = repo();
        // Naive text, a zone, and a date with a space: read from a CSV, as people write them.
        let csv = repo.dir.path().join("entities.csv");
        std::fs::write(
            &csv,
            "driver_id,event_timestamp\n1,2026-01-01 10:00:00\n2,2026-01-01T09:00:00Z\n1,2026-01-01 09:30:00.5\n",
        )
        .unwrap();
        let engine = HistoricalEngine::new(&EngineOptions::default()).unwrap();
        let entities = engine.read_entities(&csv).await.unwrap();
        let views = select(
            &repo.registry,
            &Features::Refs(vec!["driver_stats:trips".to_owned()]),
        )
        .unwrap();
        let planned = engine
            .plan(&repo.registry, repo.dir.path(), &views, false, entities)
            .await
            .unwrap();
        // Feast's datetime64[ns, UTC], not the CSV's inferred type.
        assert_eq!(
            planned
                .schema
                .field_with_name("event_timestamp")
                .unwrap()
                .data_type(),
            &datafusion::arrow::datatypes::DataType::Timestamp(
                datafusion::arrow::datatypes::TimeUnit::Nanosecond,
                Some("UTC".into())
            )
        );
        let batches: Vec<RecordBatch> = engine
            .execute(&planned)
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        golden(
            Ok(pretty_format_batches(&batches).unwrap().to_string()),
            r#"
+-----------+--------------------------+-------+
| driver_id | event_timestamp          | trips |
+-----------+--------------------------+-------+
| 1         | 2026-01-01T10:00:00Z     | 50    |
| 2         | 2026-01-01T09:00:00Z     | 20    |
| 1         | 2026-01-01T09:30:00.500Z | 10    |
+-----------+--------------------------+-------+
"#,
        );
    });
}

/// Native on-demand views after the join: their source features joined (hidden unless asked
/// for), their request field read from the entity table, the same semantics as serving.
#[test]
fn native_on_demand_views_are_computed_after_the_join() {
    block_on(async move {
        use arrow_array::Array;
        use arrow_array::cast::AsArray;
        use arrow_array::types::{Float64Type, Int64Type};
        let repo = repo();
        let e = || {
            entities(vec![
                ("driver_id", Arc::new(Int64Array::from(vec![1, 1, 2, 3]))),
                (
                    "event_timestamp",
                    micros_utc(&[at(10, 0), at(12, 1), at(8, 30), at(10, 0)]),
                ),
                ("bonus", Arc::new(Int64Array::from(vec![1, 2, 0, 5]))),
            ])
        };
        let engine = HistoricalEngine::new(&EngineOptions::default()).unwrap();
        let features = Features::Refs(
            [
                "derived:conv_pct",
                "driver_stats:trips",
                "derived:trips_per_bonus",
            ]
            .map(String::from)
            .to_vec(),
        );
        let selection = select(&repo.registry, &features).unwrap();
        let planned = engine
            .plan(&repo.registry, repo.dir.path(), &selection, false, e())
            .await
            .unwrap();
        let names: Vec<&str> = planned
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(
            names,
            [
                "driver_id",
                "event_timestamp",
                "bonus",
                "trips",
                "conv_pct",
                "trips_per_bonus"
            ],
            "conv_rate is read for the on-demand view but not output"
        );
        let batches: Vec<RecordBatch> = engine
            .execute(&planned)
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let batch = datafusion::arrow::compute::concat_batches(&planned.schema, &batches).unwrap();
        let pct = batch.column(4).as_primitive::<Float64Type>();
        let per = batch.column(5).as_primitive::<Float64Type>();
        let trips = batch.column(3).as_primitive::<Int64Type>();
        // 1 at 10:00: conv 0.5 (the tie goes to created 10:05), trips 50, bonus 1.
        assert_eq!(
            (pct.value(0), per.value(0), trips.value(0)),
            (0.5 * 100.0 + 1.0, 50.0, 50)
        );
        // 1 at 12:01: past the ttl, nulls in, nulls out.
        assert!(pct.is_null(1) && per.is_null(1) && trips.is_null(1));
        // 2 at 8:30: bonus 0, so 20 trips / 0 is null.
        assert_eq!(pct.value(2), 0.2 * 100.0);
        assert!(per.is_null(2));
        // 3 is unknown.
        assert!(pct.is_null(3) && per.is_null(3));

        // The request field must be an entity column of the declared type, checked up front.
        let missing = entities(vec![
            ("driver_id", Arc::new(Int64Array::from(vec![1]))),
            ("event_timestamp", micros_utc(&[at(10, 0)])),
        ]);
        let err = engine
            .plan(&repo.registry, repo.dir.path(), &selection, false, missing)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("reads the request field bonus (Int64)"),
            "{err}"
        );
        let mistyped = entities(vec![
            ("driver_id", Arc::new(Int64Array::from(vec![1]))),
            ("event_timestamp", micros_utc(&[at(10, 0)])),
            ("bonus", Arc::new(StringArray::from(vec!["x"]))),
        ]);
        let err = engine
            .plan(&repo.registry, repo.dir.path(), &selection, false, mistyped)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("entity table column bonus is Utf8"), "{err}");

        // Full names prefix the on-demand view's name.
        let planned = engine
            .plan(&repo.registry, repo.dir.path(), &selection, true, e())
            .await
            .unwrap();
        assert!(planned.schema.field_with_name("derived__conv_pct").is_ok());
    });
}

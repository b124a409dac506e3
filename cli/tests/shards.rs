//! `quiver materialize --shard i/N` end to end, as an indexed Job runs it: N processes into one
//! real redis-server write exactly the bytes one unsharded run writes, and the registry's
//! interval appears once, when the last shard succeeds, never while a shard is missing or failed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use quiver_testkit::RedisServer;

const PROJECT: &str = "shardtest";
const START: &str = "2026-01-01T00:00:00";
const END: &str = "2026-01-02T00:00:00";
const DRIVERS: i64 = 3000;

fn quiver(repo: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiver"));
    cmd.args(args)
        .arg("--repo")
        .arg(repo)
        .env_remove("FEATURE_STORE_YAML_BASE64")
        .env_remove("QUIVER_SHARD")
        .env_remove("QUIVER_RUN_ID");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run quiver")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "quiver failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn config(redis_port: u16) -> String {
    format!(
        "project: {PROJECT}\nregistry: data/registry.db\nprovider: local\nonline_store:\n  type: redis\n  connection_string: \"127.0.0.1:{redis_port}\"\noffline_store:\n  type: file\nentity_key_serialization_version: 3\n"
    )
}

const DEFINITIONS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
  - {name: customer, join_keys: [customer_id], value_type: STRING}
sources:
  - {name: stats_source, type: file, path: data/stats.parquet, timestamp_field: event_timestamp, created_timestamp_column: created}
  - {name: pair_source, type: file, path: data/pairs.parquet, timestamp_field: event_timestamp}
feature_views:
  - name: driver_stats
    entities: [driver]
    ttl: 1d
    source: stats_source
    online: true
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: trips, dtype: Int64}
      - {name: city, dtype: String}
  - name: pair_stats
    entities: [driver, customer]
    ttl: 7d
    source: pair_source
    online: true
    schema:
      - {name: rides, dtype: Int64}
"#;

fn micros(hours: i64) -> i64 {
    // 2026-01-01T00:00:00Z plus `hours`.
    (1_767_225_600 + hours * 3600) * 1_000_000
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// A repo with two views over generated data (several rows per key, ties on event time broken
/// by the created time), applied, its online store the redis-server on `redis_port`.
fn repo(dir: &Path, redis_port: u16) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("data")).unwrap();
    std::fs::write(repo.join("feature_store.yaml"), config(redis_port)).unwrap();
    std::fs::write(repo.join("features.yaml"), DEFINITIONS).unwrap();
    let (mut ids, mut ts, mut created, mut conv, mut trips, mut city) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for d in 0..DRIVERS {
        for v in 0..4i64 {
            ids.push(1000 + d);
            // Rows 2 and 3 share an event time: the created time decides.
            ts.push(micros(1 + v.min(2) + d % 7));
            created.push(micros(30 + v));
            conv.push((d * 7 + v) as f32 / 100.0);
            trips.push(d * 10 + v);
            city.push(format!("city-{}-{v}", d % 13));
        }
    }
    write_parquet(
        &repo.join("data/stats.parquet"),
        vec![
            ("driver_id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            (
                "event_timestamp",
                Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            ),
            (
                "created",
                Arc::new(TimestampMicrosecondArray::from(created).with_timezone("UTC")),
            ),
            ("conv_rate", Arc::new(Float32Array::from(conv))),
            ("trips", Arc::new(Int64Array::from(trips))),
            ("city", Arc::new(StringArray::from(city))),
        ],
    );
    let (mut d_ids, mut c_ids, mut p_ts, mut rides) = (vec![], vec![], vec![], vec![]);
    for p in 0..1500i64 {
        for v in 0..2i64 {
            d_ids.push(1000 + p % 500);
            c_ids.push(format!("c{}", p / 500 * 1000 + p));
            p_ts.push(micros(2 + v + p % 5));
            rides.push(p * 3 + v);
        }
    }
    write_parquet(
        &repo.join("data/pairs.parquet"),
        vec![
            ("driver_id", Arc::new(Int64Array::from(d_ids)) as ArrayRef),
            ("customer_id", Arc::new(StringArray::from(c_ids))),
            (
                "event_timestamp",
                Arc::new(TimestampMicrosecondArray::from(p_ts).with_timezone("UTC")),
            ),
            ("rides", Arc::new(Int64Array::from(rides))),
        ],
    );
    ok(&quiver(&repo, &["apply"], &[]));
    repo
}

/// Every key of the server (but the shard markers) with every field and value, sorted.
fn dump(port: u16) -> BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_connection().unwrap();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    let mut out = BTreeMap::new();
    for key in keys {
        if key.starts_with(b"quiver:materialize-shards:") {
            continue;
        }
        let fields: BTreeMap<Vec<u8>, Vec<u8>> =
            redis::cmd("HGETALL").arg(&key).query(&mut conn).unwrap();
        out.insert(key, fields);
    }
    out
}

/// The shard markers on the server: key → fields.
fn markers(port: u16) -> BTreeMap<String, BTreeMap<String, String>> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("quiver:materialize-shards:*")
        .query(&mut conn)
        .unwrap();
    keys.into_iter()
        .map(|k| {
            let fields = redis::cmd("HGETALL").arg(&k).query(&mut conn).unwrap();
            (k, fields)
        })
        .collect()
}

/// Each view's recorded intervals, as (start, end) seconds.
fn intervals(repo: &Path) -> BTreeMap<String, Vec<(i64, i64)>> {
    let bytes = std::fs::read(repo.join("data/registry.db")).unwrap();
    let file = quiver_core::registry::RegistryFile::decode(&bytes).unwrap();
    file.project(PROJECT)
        .unwrap()
        .feature_views
        .iter()
        .map(|v| {
            (
                v.name.clone(),
                v.materialization_intervals
                    .iter()
                    .map(|(s, e)| (s.seconds, e.seconds))
                    .collect(),
            )
        })
        .collect()
}

/// `view: ... N written, ...` lines of a run's summary: rows written per view.
fn written_per_view(stdout: &str) -> Vec<(String, u64)> {
    stdout
        .lines()
        .filter_map(|line| {
            let (view, rest) = line.split_once(": ")?;
            let before = rest.split(" written,").next()?;
            let n = before.rsplit(' ').next()?.parse().ok()?;
            Some((view.to_owned(), n))
        })
        .collect()
}

fn no_intervals(repo: &Path) -> bool {
    intervals(repo).values().all(Vec::is_empty)
}

fn recorded_once(repo: &Path) {
    let window = (1_767_225_600, 1_767_312_000);
    let got = intervals(repo);
    assert_eq!(got.len(), 2, "{got:?}");
    for (view, list) in got {
        assert_eq!(list, vec![window], "view {view}");
    }
}

#[test]
fn shards_as_concurrent_processes_write_the_bytes_of_one_unsharded_run() {
    let (one, sharded) = (RedisServer::start(), RedisServer::start());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let repo_a = repo(dir_a.path(), one.port);
    let repo_b = repo(dir_b.path(), sharded.port);

    let out = ok(&quiver(&repo_a, &["materialize", START, END], &[]));
    assert!(out.contains("Recorded in"), "{out}");
    let expected = dump(one.port);
    // Every driver, and every (driver, customer) pair.
    assert_eq!(
        expected.len(),
        DRIVERS as usize + 1500,
        "keys of the unsharded run"
    );

    let shards = 4;
    let children: Vec<_> = (0..shards)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_quiver"))
                .args(["materialize", START, END, "--shard"])
                .arg(format!("{i}/{shards}"))
                .arg("--repo")
                .arg(&repo_b)
                .env_remove("FEATURE_STORE_YAML_BASE64")
                .output()
        })
        .collect();
    let mut last = 0;
    let mut written: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for out in children {
        let stdout = ok(&out.unwrap());
        for (view, n) in written_per_view(&stdout) {
            written.entry(view).or_default().push(n);
        }
        if stdout.contains("the last of the run: recorded in") {
            last += 1;
        } else {
            assert!(stdout.contains("not recorded yet"), "{stdout}");
        }
    }
    assert_eq!(last, 1, "exactly one shard records the run");
    // Each key was written by exactly one shard, and every shard had a share.
    assert_eq!(
        written["driver_stats"].iter().sum::<u64>(),
        DRIVERS as u64,
        "{written:?}"
    );
    assert_eq!(
        written["pair_stats"].iter().sum::<u64>(),
        1500,
        "{written:?}"
    );
    for counts in written.values() {
        assert_eq!(counts.len(), shards);
        assert!(counts.iter().all(|&n| n > 0), "{written:?}");
    }
    let got = dump(sharded.port);
    assert_eq!(got.len(), expected.len(), "same keys");
    assert!(
        got == expected,
        "the sharded run's bytes differ from the unsharded run's"
    );
    recorded_once(&repo_b);
    recorded_once(&repo_a);
    let marks = markers(sharded.port);
    assert_eq!(marks.len(), 1, "{marks:?}");
    let fields = marks.values().next().unwrap();
    assert_eq!(
        fields.keys().map(String::as_str).collect::<Vec<_>>(),
        ["0", "1", "2", "3"]
    );
}

#[test]
fn the_interval_is_recorded_once_when_the_last_shard_succeeds_and_never_after_a_failure() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), redis.port);
    let shard = |i: u32, envs: &[(&str, &str)]| {
        quiver(
            &repo,
            &["materialize", START, END, "--shard", &format!("{i}/3")],
            envs,
        )
    };

    let out = ok(&shard(0, &[]));
    assert!(out.contains("shards 1, 2 of 3 still to finish"), "{out}");
    assert!(no_intervals(&repo));

    // Shard 1 fails: its online store is unreachable.
    let closed = quiver_testkit::free_port();
    let broken = config(closed).replace(
        "registry: data/registry.db",
        &format!("registry: {}", repo.join("data/registry.db").display()),
    );
    let b64 = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        broken.as_bytes(),
    );
    let failed = shard(1, &[("FEATURE_STORE_YAML_BASE64", &b64)]);
    assert!(!failed.status.success(), "shard 1 should fail");
    assert!(no_intervals(&repo), "a failed shard recorded an interval");

    let out = ok(&shard(2, &[]));
    assert!(out.contains("shard 1 of 3 still to finish"), "{out}");
    assert!(no_intervals(&repo), "recorded while shard 1 had failed");

    // The retried shard completes the set and records the run, once.
    let out = ok(&shard(1, &[]));
    assert!(out.contains("the last of the run: recorded in"), "{out}");
    recorded_once(&repo);

    // A shard run again (a retried pod whose first attempt had succeeded) records nothing more.
    let out = ok(&shard(2, &[]));
    assert!(out.contains("already recorded"), "{out}");
    recorded_once(&repo);

    // Another --run-id is another run: its shards count afresh.
    let out = ok(&quiver(
        &repo,
        &[
            "materialize",
            START,
            END,
            "--shard",
            "0/3",
            "--run-id",
            "job-2",
        ],
        &[],
    ));
    assert!(out.contains("shards 1, 2 of 3 still to finish"), "{out}");
    assert_eq!(markers(redis.port).len(), 2);
}

#[test]
fn incremental_shards_agree_on_their_window() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), redis.port);
    // A first run records END; the incremental shards all start there.
    ok(&quiver(&repo, &["materialize", START, END], &[]));
    let later = "2026-01-03T00:00:00";
    for i in 0..2 {
        let out = ok(&quiver(
            &repo,
            &[
                "materialize-incremental",
                later,
                "--shard",
                &format!("{i}/2"),
            ],
            &[],
        ));
        if i == 0 {
            assert!(out.contains("shard 1 of 2 still to finish"), "{out}");
        } else {
            assert!(out.contains("the last of the run"), "{out}");
        }
    }
    for (view, list) in intervals(&repo) {
        assert_eq!(
            list,
            vec![
                (1_767_225_600, 1_767_312_000),
                (1_767_312_000, 1_767_398_400)
            ],
            "view {view}"
        );
    }
}

#[test]
fn bad_shards_are_refused_before_anything_is_written() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), redis.port);
    for (arg, needle) in [
        ("3/3", "the shard index must be between 0 and 2"),
        ("0/0", "the shard count must be between 1 and 65536"),
        ("1-4", "expected INDEX/COUNT"),
        ("x/4", "expected INDEX/COUNT"),
    ] {
        let out = quiver(&repo, &["materialize", START, END, "--shard", arg], &[]);
        assert!(!out.status.success(), "--shard {arg} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "--shard {arg}: {err}");
    }
    let out = quiver(&repo, &["materialize", START, END, "--run-id", "x"], &[]);
    assert!(!out.status.success(), "--run-id without --shard accepted");
    assert!(dump(redis.port).is_empty());

    // SQLite: one writer on one machine; refused with the reason.
    std::fs::write(
        repo.join("feature_store.yaml"),
        config(redis.port).replace(
            &format!(
                "  type: redis\n  connection_string: \"127.0.0.1:{}\"\n",
                redis.port
            ),
            "  type: sqlite\n  path: data/online.db\n",
        ),
    )
    .unwrap();
    let out = quiver(&repo, &["materialize", START, END, "--shard", "0/2"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sqlite online store has one writer"), "{err}");
    assert!(!repo.join("data/online.db").exists());
    assert!(no_intervals(&repo));
}

/// The registry service's server, killed when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn shards_record_through_the_registry_service_once() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), redis.port);
    let store = dir.path().join("service-registry.db");
    std::fs::copy(repo.join("data/registry.db"), &store).unwrap();
    let port = quiver_testkit::free_port();
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_quiver"))
            .args(["registry", "serve", "--store"])
            .arg(&store)
            .args(["--port", &port.to_string()])
            .env_remove("QUIVER_REGISTRY_TOKEN")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let began = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            began.elapsed().as_secs() < 60,
            "the registry service did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}");
    let service_intervals = || {
        let file =
            quiver_core::registry::RegistryFile::decode(&std::fs::read(&store).unwrap()).unwrap();
        file.project(PROJECT)
            .unwrap()
            .feature_views
            .iter()
            .map(|v| v.materialization_intervals.len())
            .collect::<Vec<_>>()
    };
    for i in 0..3 {
        let out = ok(&quiver(
            &repo,
            &[
                "materialize",
                START,
                END,
                "--shard",
                &format!("{i}/3"),
                "--registry-url",
                &url,
            ],
            &[],
        ));
        if i < 2 {
            assert!(out.contains("not recorded yet"), "{out}");
            assert_eq!(
                service_intervals(),
                [0, 0],
                "recorded before the last shard"
            );
        } else {
            assert!(
                out.contains("the last of the run: recorded in the registry service"),
                "{out}"
            );
        }
    }
    assert_eq!(service_intervals(), [1, 1]);
    // A shard run again finds the run recorded and records nothing more.
    let out = ok(&quiver(
        &repo,
        &[
            "materialize",
            START,
            END,
            "--shard",
            "1/3",
            "--registry-url",
            &url,
        ],
        &[],
    ));
    assert!(out.contains("already recorded"), "{out}");
    assert_eq!(service_intervals(), [1, 1]);
    // The repo's own registry file was never written: the service holds the record.
    assert!(no_intervals(&repo));
    drop(server);
}

//! `quiver demo`: quiver's main job end to end on the embedded default, with nothing else
//! installed or running. A feature repo (examples/quickstart's definitions, deterministic data
//! anchored to the current hour) in a temp folder → apply → a point-in-time training dataset →
//! materialize into SQLite → the sidecar on a free localhost port → features fetched as a model
//! server would → a short load.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use arrow_array::builder::{Int32Builder, ListBuilder};
use arrow_array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use quiver_core::time::Timestamp;
use quiver_offline::materialize::{self, Window, WriteOptions};
use quiver_online_store::{OnlineStore, SqliteStore};
use quiver_registry::config::RepoConfig;
use quiver_registry::{apply, definitions, store};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const DEFINITIONS: &str = include_str!("../../examples/quickstart/features.yaml");
const FEATURE_STORE_YAML: &str = include_str!("../../examples/quickstart/feature_store.yaml");
const DRIVERS: i64 = 500;
const CUSTOMERS: i64 = 200;
const HOURS: i64 = 48;

/// How much data a generated repo holds.
#[derive(Debug, Clone, Copy)]
struct Scale {
    /// Drivers 1001, 1002, ...; one stats row each per hour.
    drivers: i64,
    /// Customers c1, c2, ...; one profile each.
    customers: i64,
    /// Hourly driver-stats rows per driver, the newest at the anchor hour.
    hours: i64,
}

/// The demo's data: enough entities for its load phase.
const DEMO: Scale = Scale {
    drivers: DRIVERS,
    customers: CUSTOMERS,
    hours: HOURS,
};

/// examples/quickstart/data (written by the test below): small enough to commit and read, anchored to a fixed hour so the
/// README's commands (which name dates) find rows.
#[cfg(test)]
const QUICKSTART: Scale = Scale {
    drivers: 10,
    customers: 20,
    hours: 48,
};

/// The newest hour of examples/quickstart/data: 2026-01-02T00:00:00Z.
#[cfg(test)]
const QUICKSTART_ANCHOR: i64 = 1_767_312_000;
const TRAINING_ROWS: usize = 1000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to create the demo repo (default: a new temporary folder, removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds of load against the sidecar.
    #[arg(long, default_value_t = 2.0)]
    load_seconds: f64,
    /// Leave the sidecar running (and the repo in place) for you to curl; Ctrl-C stops it.
    #[arg(long)]
    keep_serving: bool,
}

/// A small deterministic generator (xorshift), so every run shows the same values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() % 1_000_000) as f64 / 1_000_000.0
    }
}

fn step(n: u32, text: &str) {
    println!("\n\x1b[1m{n}. {text}\x1b[0m");
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let temp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("quiver-demo-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let started = Instant::now();
    let now_hour = {
        let now = crate::apply::now();
        now.seconds - now.seconds.rem_euclid(3600)
    };

    step(
        1,
        "A feature repo: drivers, customers and the rides between them",
    );
    write_repo(&dir)?;
    write_data(&dir.join("data"), DEMO, now_hour)?;
    println!("   {}", dir.display());
    println!(
        "   feature_store.yaml (SQLite online store), features.yaml (examples/quickstart), data/*.parquet:"
    );
    println!(
        "   {DRIVERS} drivers x {HOURS} hourly rows, {CUSTOMERS} customer profiles, driver-customer pairs"
    );

    step(2, "quiver apply");
    let config = RepoConfig::load(&dir)?;
    let desired = definitions::load(&dir, &config.project).map_err(|e| anyhow!("{e}"))?;
    let registry_path = config.local_registry_path().map_err(|e| anyhow!(e))?;
    let mut file = store::read(&registry_path).map_err(|e| anyhow!(e))?;
    let plan = apply::apply(&mut file, &desired, crate::apply::now())?;
    store::write_atomic(&registry_path, &file.encode("demo", crate::apply::now()))
        .map_err(|e| anyhow!(e))?;
    for change in &plan.changes {
        println!("   {change}");
    }
    let registry = file.project(&config.project)?;

    step(
        3,
        "quiver historical: a point-in-time-correct training dataset",
    );
    let entities_path = dir.join("data/training_entities.parquet");
    write_entities(&entities_path, now_hour)?;
    let training_path = dir.join("data/training.parquet");
    let (rows, preview) = training_dataset(&dir, &registry, &entities_path, &training_path)?;
    println!(
        "   {rows} labelled rows (driver, customer, time) joined with driver_hourly_stats and customer_profile as of each row's time"
    );
    println!("   -> {}", training_path.display());
    for line in preview {
        println!("   {line}");
    }

    step(4, "quiver materialize (the last 2 days, into SQLite)");
    let online_path = dir.join("data/online_store.db");
    let online = OnlineStore::Sqlite(Arc::new(SqliteStore::open(&online_path)));
    let runtime = quiver_cmd::common::runtime(None)?;
    let end = Timestamp {
        seconds: now_hour,
        nanos: 0,
    };
    let start = Timestamp {
        seconds: now_hour - 2 * 86_400,
        nanos: 0,
    };
    let views = materialize::select_views(&registry, &[])?;
    let job = materialize::Job {
        repo_dir: &dir,
        registry: &registry,
        views,
        window: Window::Range { start, end },
        now: crate::apply::now(),
        shard: quiver_offline::shard::Shard::ALL,
    };
    let bars = crate::materialize::Bars::quiet();
    let runs = runtime.block_on(materialize::run(
        &job,
        &online,
        &WriteOptions::default(),
        &|e| bars.event(e),
    ))?;
    bars.finish();
    crate::materialize::record(
        &quiver_cmd::registry_io::RepoRegistry::File(registry_path.clone()),
        &config.project,
        &runs,
    )?;
    for r in &runs {
        println!(
            "   {:<26} {:>6} rows read, {:>5} entities written in {:.0} ms",
            r.view,
            r.scanned,
            r.stats.written,
            r.elapsed.as_secs_f64() * 1000.0
        );
    }

    step(5, "quiver serve: the sidecar, on a free localhost port");
    runtime.block_on(serve_and_query(
        &registry_path,
        &config.project,
        online,
        &args,
        started,
    ))
}

async fn serve_and_query(
    registry_path: &Path,
    project: &str,
    online: OnlineStore,
    args: &Args,
    started: Instant,
) -> anyhow::Result<()> {
    // The serving default gives the online store 50 ms per request (a sidecar answers late
    // rather than never); the demo's embedded SQLite on a busy laptop or CI machine can take
    // longer, and a demo should show answers, not deadlines.
    let mut config = quiver_sidecar::SidecarConfig::default();
    config.engine.store_timeout = Duration::from_secs(2);
    let (state, _background) =
        quiver_sidecar::start(config, project, registry_path.to_path_buf(), online)
            .await
            .map_err(|e| anyhow!(e))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(quiver_sidecar::serve(
        listener,
        Arc::clone(&state),
        async move {
            let _ = stopped.await;
        },
    ));
    println!("   listening on http://{addr}");

    println!("   A model server asks for its features:");
    let body = r#"{"features":["driver_hourly_stats:conv_rate","driver_hourly_stats:acc_rate","driver_hourly_stats:avg_daily_trips","customer_profile:tier","driver_customer_affinity:rides_together"],"entities":{"driver_id":[1001,1002,1003],"customer_id":["c1","c2","c3"]}}"#;
    println!("   POST /get-online-features {body}");
    let mut conn = Client::connect(addr).await?;
    let (status, answer) = conn.post(body).await?;
    if status != 200 {
        bail!("the sidecar answered {status}: {answer}");
    }
    print_table(&answer)?;

    step(
        6,
        &format!(
            "{:.0} s of load: 8 connections, 1 driver x 3 features per request",
            args.load_seconds
        ),
    );
    let report = load(addr, Duration::from_secs_f64(args.load_seconds.max(0.1))).await?;
    let hits = state.metrics.cache_hits.get() as f64;
    let misses = state.metrics.cache_misses.get() as f64;
    println!(
        "   {} requests, {:.0} requests/s, p50 {} µs, p99 {} µs, cache hit ratio {:.1}%",
        report.requests,
        report.requests as f64 / report.elapsed.as_secs_f64(),
        report.p50_us,
        report.p99_us,
        100.0 * hits / (hits + misses).max(1.0)
    );
    println!(
        "   (client and sidecar share this machine's cores: benches/RESULTS.md has the careful numbers)"
    );

    step(7, "Next steps");
    println!("   - your own Feast repo: quiver list --repo PATH; quiver serve --repo PATH");
    println!(
        "   - Redis: online_store: {{type: redis, connection_string: \"localhost:6379\"}} in feature_store.yaml"
    );
    println!(
        "   - Kubernetes: annotate an InferenceService with quiver.dev/inject: \"true\" (k8s/README.md)"
    );
    println!("   - every flag: quiver serve --help; the tour: README.md");
    println!("\ndone in {:.1} s", started.elapsed().as_secs_f64());

    if args.keep_serving {
        println!("\nThe sidecar keeps serving; try:\n");
        println!(
            "  curl -s http://{addr}/get-online-features -d '{{\"features\":[\"driver_hourly_stats:conv_rate\"],\"entities\":{{\"driver_id\":[1001]}}}}'\n"
        );
        println!("Ctrl-C to stop.");
        let _ = std::io::stdout().flush();
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}

fn print_table(answer: &str) -> anyhow::Result<()> {
    let v: serde_json::Value = serde_json::from_str(answer)?;
    let names: Vec<&str> = v["metadata"]["feature_names"]
        .as_array()
        .ok_or_else(|| anyhow!("no feature_names in {answer}"))?
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    let results = v["results"]
        .as_array()
        .ok_or_else(|| anyhow!("no results in {answer}"))?;
    let rows = results
        .first()
        .and_then(|r| r["values"].as_array())
        .map_or(0, Vec::len);
    let cell = |j: usize, i: usize| -> String {
        let value = &results[j]["values"][i];
        let status = results[j]["statuses"][i].as_str().unwrap_or("");
        let text = match value {
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(f) if !n.is_i64() => format!("{f:.4}"),
                _ => n.to_string(),
            },
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if status == "PRESENT" {
            text
        } else {
            format!("{text} ({status})")
        }
    };
    let widths: Vec<usize> = (0..names.len())
        .map(|j| {
            (0..rows)
                .map(|i| cell(j, i).len())
                .chain([names[j].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        println!("   {}", padded.join("  "));
    };
    line(names.iter().map(|n| n.to_string()).collect());
    for i in 0..rows {
        line((0..names.len()).map(|j| cell(j, i)).collect());
    }
    Ok(())
}

/// A minimal keep-alive HTTP/1.1 client for the demo's requests and load.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(stream),
        })
    }

    async fn post(&mut self, body: &str) -> anyhow::Result<(u16, String)> {
        let head = format!(
            "POST /get-online-features HTTP/1.1\r\nHost: quiver\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).await?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse()?;
            }
        }
        let mut buf = vec![0; length];
        self.reader.read_exact(&mut buf).await?;
        Ok((status, String::from_utf8(buf)?))
    }
}

struct LoadReport {
    requests: u64,
    elapsed: Duration,
    p50_us: u64,
    p99_us: u64,
}

async fn load(addr: SocketAddr, duration: Duration) -> anyhow::Result<LoadReport> {
    let began = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..8u64 {
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await?;
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c + 1));
            let mut latencies = Vec::new();
            while began.elapsed() < duration {
                let driver = 1001 + (rng.next() % DRIVERS as u64) as i64;
                let body = format!(
                    "{{\"features\":[\"driver_hourly_stats:conv_rate\",\"driver_hourly_stats:acc_rate\",\"driver_hourly_stats:avg_daily_trips\"],\"entities\":{{\"driver_id\":[{driver}]}}}}"
                );
                let sent = Instant::now();
                let (status, answer) = client.post(&body).await?;
                if status != 200 {
                    bail!("the sidecar answered {status}: {answer}");
                }
                latencies.push(sent.elapsed().as_micros() as u64);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = began.elapsed();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Ok(LoadReport {
        requests: all.len() as u64,
        elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}

/// The training labels: drivers and customers at times within the last two days.
fn write_entities(path: &Path, now_hour: i64) -> anyhow::Result<()> {
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let n = TRAINING_ROWS;
    let drivers: Vec<i64> = (0..n)
        .map(|_| 1001 + (rng.next() % DRIVERS as u64) as i64)
        .collect();
    let customers: Vec<String> = (0..n)
        .map(|_| format!("c{}", 1 + rng.next() % CUSTOMERS as u64))
        .collect();
    let times: Vec<i64> = (0..n)
        .map(|_| (now_hour - (rng.next() % (2 * 86_400) as u64) as i64) * 1_000_000)
        .collect();
    write_parquet(
        path,
        vec![
            ("driver_id", Arc::new(Int64Array::from(drivers)) as ArrayRef),
            ("customer_id", Arc::new(StringArray::from(customers))),
            (
                "event_timestamp",
                Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
            ),
        ],
    )
}

/// Runs the point-in-time join into `out`; returns the row count and the first rows, formatted.
fn training_dataset(
    dir: &Path,
    registry: &quiver_core::registry::ProjectRegistry,
    entities: &Path,
    out: &Path,
) -> anyhow::Result<(usize, Vec<String>)> {
    use quiver_offline::historical::{EngineOptions, Features, HistoricalEngine, select};
    use quiver_offline::output::{Output, write_stream};

    let features = Features::Refs(
        [
            "driver_hourly_stats:conv_rate",
            "driver_hourly_stats:avg_daily_trips",
            "customer_profile:tier",
        ]
        .map(String::from)
        .to_vec(),
    );
    let views = select(registry, &features)?;
    let engine = HistoricalEngine::new(&EngineOptions::default())?;
    let rows = crate::historical::runtime()?.block_on(async {
        let entities = engine.read_entities(entities).await?;
        let planned = engine.plan(registry, dir, &views, false, entities).await?;
        let mut output = Output::create(out, &planned.schema)?;
        let rows = write_stream(engine.execute(&planned)?, &mut output, &mut |_| {}).await?;
        output.finish().await?;
        anyhow::Ok(rows)
    })?;
    // The first rows, read back from the file as a pipeline would.
    let file = std::fs::File::open(out)?;
    let mut reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(5)
        .build()?;
    let mut preview = Vec::new();
    if let Some(batch) = reader.next().transpose()? {
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let cells: Vec<Vec<String>> = (0..batch.num_rows())
            .map(|i| {
                batch
                    .columns()
                    .iter()
                    .map(|c| arrow_cast_display(c.as_ref(), i))
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = (0..names.len())
            .map(|j| {
                cells
                    .iter()
                    .map(|r| r[j].len())
                    .chain([names[j].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let fmt = |row: Vec<String>| {
            row.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        preview.push(fmt(names.iter().map(|n| n.to_string()).collect()));
        preview.extend(cells.into_iter().map(fmt));
    }
    Ok((rows as usize, preview))
}

/// One cell as text, for the preview.
fn arrow_cast_display(array: &dyn arrow_array::Array, i: usize) -> String {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Int64Type, TimestampMicrosecondType};
    use arrow_schema::DataType;

    if array.is_null(i) {
        return "null".to_owned();
    }
    match array.data_type() {
        DataType::Int64 => array.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::Float32 => format!("{:.4}", array.as_primitive::<Float32Type>().value(i)),
        DataType::Utf8 => array.as_string::<i32>().value(i).to_owned(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(i).to_owned(),
        DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, _) => {
            let micros = array.as_primitive::<TimestampMicrosecondType>().value(i);
            quiver_core::time::format_rfc3339(&Timestamp {
                seconds: micros.div_euclid(1_000_000),
                nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
            })
        }
        other => format!("<{other}>"),
    }
}

/// Writes feature_store.yaml and the definitions (examples/quickstart's).
fn write_repo(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("data"))?;
    std::fs::write(dir.join("feature_store.yaml"), FEATURE_STORE_YAML)?;
    std::fs::write(dir.join("features.yaml"), DEFINITIONS)?;
    Ok(())
}

/// Writes the quickstart's three Parquet sources into `data`, deterministic for a given scale and
/// anchor hour (the newest driver-stats row's time, in epoch seconds).
fn write_data(data: &Path, scale: Scale, now_hour: i64) -> anyhow::Result<()> {
    let Scale {
        drivers,
        customers,
        hours,
    } = scale;
    std::fs::create_dir_all(data)?;
    let micros = |seconds: i64| seconds * 1_000_000;
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);

    // Driver stats: one row per driver and hour, the newest at the current hour.
    let mut ids = Vec::new();
    let mut ts = Vec::new();
    let (mut conv, mut acc, mut trips) = (Vec::new(), Vec::new(), Vec::new());
    let mut zones = ListBuilder::new(Int32Builder::new());
    for hour in 0..hours {
        let t = now_hour - (hours - 1 - hour) * 3600;
        for d in 0..drivers {
            ids.push(1001 + d);
            ts.push(micros(t));
            conv.push(rng.unit() as f32);
            acc.push(rng.unit() as f32);
            trips.push((rng.next() % 40) as i64);
            for _ in 0..(rng.next() % 3) {
                zones.values().append_value((rng.next() % 20) as i32);
            }
            zones.append(true);
        }
    }
    let ts_array =
        || Arc::new(TimestampMicrosecondArray::from(ts.clone()).with_timezone("UTC")) as ArrayRef;
    write_parquet(
        &data.join("driver_stats.parquet"),
        vec![
            ("driver_id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("event_timestamp", ts_array()),
            ("created", ts_array()),
            ("conv_rate", Arc::new(Float32Array::from(conv))),
            ("acc_rate", Arc::new(Float32Array::from(acc))),
            ("avg_daily_trips", Arc::new(Int64Array::from(trips))),
            ("recent_zones", Arc::new(zones.finish())),
        ],
    )?;

    // Customer profiles (the source calls lifetime value `ltv`: a field mapping).
    let tiers = ["bronze", "silver", "gold"];
    let customers: Vec<String> = (1..=customers).map(|c| format!("c{c}")).collect();
    let when = vec![micros(now_hour - 86_400); customers.len()];
    write_parquet(
        &data.join("customer_profile.parquet"),
        vec![
            (
                "customer_id",
                Arc::new(StringArray::from(customers.clone())) as ArrayRef,
            ),
            (
                "event_timestamp",
                Arc::new(TimestampMicrosecondArray::from(when.clone()).with_timezone("UTC")),
            ),
            (
                "tier",
                Arc::new(StringArray::from_iter_values(
                    (0..customers.len()).map(|_| tiers[(rng.next() % 3) as usize]),
                )),
            ),
            (
                "ltv",
                Arc::new(Float64Array::from_iter_values(
                    (0..customers.len()).map(|_| (rng.unit() * 5000.0).round() / 10.0),
                )),
            ),
            (
                "is_vip",
                Arc::new(BooleanArray::from_iter(
                    (0..customers.len()).map(|_| Some(rng.next().is_multiple_of(5))),
                )),
            ),
            (
                "signup_ts",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        micros(now_hour - 400 * 86_400);
                        customers.len()
                    ])
                    .with_timezone("UTC"),
                ),
            ),
        ],
    )?;

    // Driver-customer pairs: each customer rode with a few drivers.
    let (mut pd, mut pc, mut rides, mut rating) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, c) in customers.iter().enumerate() {
        for k in 0..3i64 {
            pd.push(1001 + ((i as i64) + k) % drivers);
            pc.push(c.clone());
            rides.push(1 + (rng.next() % 12) as i64);
            rating.push(3.0 + (rng.unit() * 20.0).round() / 10.0);
        }
    }
    let n = pd.len();
    write_parquet(
        &data.join("driver_customer.parquet"),
        vec![
            ("driver_id", Arc::new(Int64Array::from(pd)) as ArrayRef),
            ("customer_id", Arc::new(StringArray::from(pc))),
            (
                "event_timestamp",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![micros(now_hour - 3600); n])
                        .with_timezone("UTC"),
                ),
            ),
            ("rides_together", Arc::new(Int64Array::from(rides))),
            ("avg_rating", Arc::new(Float64Array::from(rating))),
        ],
    )?;
    Ok(())
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) -> anyhow::Result<()> {
    let batch = RecordBatch::try_from_iter(columns)?;
    let file = std::fs::File::create(path)?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_parquet(path: &Path) -> Vec<RecordBatch> {
        let file = std::fs::File::open(path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        reader.map(|b| b.unwrap()).collect()
    }

    /// examples/quickstart/data is committed (the README's tour reads it); it must be exactly what
    /// the generator writes. `QUIVER_WRITE_QUICKSTART_DATA=1` rewrites it.
    #[test]
    fn the_committed_quickstart_data_is_what_the_generator_writes() {
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart/data");
        if std::env::var_os("QUIVER_WRITE_QUICKSTART_DATA").is_some() {
            write_data(&committed, QUICKSTART, QUICKSTART_ANCHOR).unwrap();
        }
        let fresh = tempfile::tempdir().unwrap();
        write_data(fresh.path(), QUICKSTART, QUICKSTART_ANCHOR).unwrap();
        for name in [
            "driver_stats.parquet",
            "customer_profile.parquet",
            "driver_customer.parquet",
        ] {
            assert_eq!(
                read_parquet(&committed.join(name)),
                read_parquet(&fresh.path().join(name)),
                "examples/quickstart/data/{name} differs from the generator's output; \
                 rerun with QUIVER_WRITE_QUICKSTART_DATA=1"
            );
        }
    }
}

//! The lean sidecar's footprint, measured from outside the process (see benches/sidecar/run.sh,
//! which builds the binaries and repos and calls this):
//!
//! - `apply REPO`: applies REPO/features.yaml to the repo's file registry with the library calls
//!   `quiver apply` makes (so a repo can be made before the full binary is built).
//! - `fill REPO N`: writes drivers 1..=N into the online store the repo's feature_store.yaml
//!   names (SQLite or Redis), view `bench` of benches/sidecar/features.yaml, through quiver's own
//!   writer (`OnlineStore::write`, Feast's layout).
//! - `start BIN REPO RUNS`: RUNS times, spawns `BIN serve --repo REPO --port P` and times it from
//!   the spawn until `GET /ready` answers 200 (a new connection tried every ~1 ms), then reads
//!   VmRSS from /proc/PID/status one second later, and kills it. One JSON line per run, then one
//!   with median and p90.
//! - `cache BIN REPO BYTES N BATCH`: starts `BIN serve --cache-bytes BYTES` (staleness 1h, so
//!   nothing expires during the run; store deadline 10s), records idle RSS a second after ready,
//!   asks for every driver 1..=N once through `POST /get-online-features`, BATCH per request,
//!   then records RSS (VmRSS and peak VmHWM) and the sidecar's `quiver_cache_size_bytes` /
//!   `quiver_cache_entries`. One JSON line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_cmd::common::{Connect, connect_store};
use quiver_core::time::Timestamp;
use quiver_core::{Value, entity_key};
use quiver_online_store::{ViewLayout, WriteRow};
use quiver_registry::config::RepoConfig;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The view written and read: benches/sidecar/features.yaml.
const VIEW: &str = "bench";
const FEATURES: [&str; 3] = ["f0", "f1", "f2"];
/// Longest answer read (a 500-entity answer is ~60 KB).
const MAX_RESPONSE: u64 = 64 << 20;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, name: &str| -> Result<String> {
        args.get(i)
            .cloned()
            .ok_or_else(|| format!("missing argument {name}").into())
    };
    match args.first().map(String::as_str) {
        Some("apply") => apply(Path::new(&arg(1, "REPO")?)),
        Some("fill") => fill(Path::new(&arg(1, "REPO")?), arg(2, "N")?.parse()?),
        Some("start") => start(
            Path::new(&arg(1, "BIN")?),
            Path::new(&arg(2, "REPO")?),
            arg(3, "RUNS")?.parse()?,
        ),
        Some("cache") => cache(
            Path::new(&arg(1, "BIN")?),
            Path::new(&arg(2, "REPO")?),
            &arg(3, "BYTES")?,
            arg(4, "N")?.parse()?,
            arg(5, "BATCH")?.parse()?,
        ),
        _ => Err("usage: sidecar_footprint apply REPO | fill REPO N | start BIN REPO RUNS | cache BIN REPO BYTES N BATCH".into()),
    }
}

fn now() -> Result<Timestamp> {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    Ok(Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    })
}

fn apply(repo: &Path) -> Result<()> {
    use quiver_registry::{apply, definitions, store};
    let config = RepoConfig::load(repo).map_err(|e| e.to_string())?;
    let desired = definitions::load(repo, &config.project).map_err(|e| e.to_string())?;
    let path = repo.join("data/registry.db");
    let mut file = store::read(&path)?;
    apply::apply(&mut file, &desired, now()?)?;
    store::write_atomic(&path, &file.encode("bench", now()?))?;
    Ok(())
}

fn fill(repo: &Path, n: i64) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = RepoConfig::load(repo).map_err(|e| e.to_string())?;
        let store = connect_store(&config, Connect::Now)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let layout = Arc::new(ViewLayout::new(
            &config.project,
            VIEW,
            FEATURES.iter().map(|f| (*f).to_owned()),
        ));
        let started = Instant::now();
        let ts = Timestamp {
            seconds: now()?.seconds,
            nanos: 0,
        };
        let mut written = 0;
        let mut id = 1;
        while id <= n {
            let end = (id + 50_000).min(n + 1);
            let mut rows = Vec::with_capacity((end - id) as usize);
            for i in id..end {
                let key = entity_key::serialize(&[("driver_id", &Value::Int64(i))])?;
                let values = [
                    Value::Float(i as f32 / 7.0).encode_to_vec(),
                    Value::Int64(i * 3).encode_to_vec(),
                    Value::String(format!("zone-{}", i % 1000)).encode_to_vec(),
                ];
                rows.push(WriteRow::new(key, ts, Some(ts), &values));
            }
            let stats = store.write(&layout, rows.into(), None).await?;
            written += stats.written;
            id = end;
        }
        println!(
            "{{\"fill\": {written}, \"seconds\": {:.1}}}",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })
}

/// A sidecar process, killed when dropped.
struct Sidecar {
    child: Child,
    addr: SocketAddr,
}

impl Sidecar {
    fn spawn(bin: &Path, repo: &Path, extra: &[&str]) -> Result<(Sidecar, Instant)> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(std::env::temp_dir().join("sidecar_footprint.log"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--repo")
            .arg(repo)
            .arg("--port")
            .arg(port.to_string())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log);
        let t0 = Instant::now();
        let child = cmd.spawn()?;
        Ok((
            Sidecar {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            },
            t0,
        ))
    }

    /// Polls `GET /ready` until 200; a refused connection is retried after ~1 ms.
    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Ok((200, _)) = request(self.addr, "GET", "/ready", "") {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("sidecar exited with {status} before ready").into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(format!("not ready within {limit:?}").into())
    }

    /// (VmRSS, VmHWM) in KiB.
    fn rss_kib(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .ok_or_else(|| format!("no {name} in /proc status").into())
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a new connection: (status, body).
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.set_nodelay(true)?;
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    conn.take(MAX_RESPONSE).read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in answer to {method} {path}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn start(bin: &Path, repo: &Path, runs: usize) -> Result<()> {
    let name = bin_name(bin);
    let mut ready_ms = Vec::with_capacity(runs);
    let mut rss = Vec::with_capacity(runs);
    for run in 0..runs {
        let (mut sidecar, t0) = Sidecar::spawn(bin, repo, &[])?;
        sidecar.wait_ready(Duration::from_secs(10))?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        std::thread::sleep(Duration::from_secs(1));
        let (kib, _) = sidecar.rss_kib()?;
        println!(
            "{{\"bin\": \"{name}\", \"run\": {run}, \"ready_ms\": {ms:.2}, \"idle_rss_kib\": {kib}}}"
        );
        ready_ms.push(ms);
        rss.push(kib as f64);
    }
    ready_ms.sort_by(f64::total_cmp);
    rss.sort_by(f64::total_cmp);
    println!(
        "{{\"bin\": \"{name}\", \"summary\": true, \"runs\": {runs}, \"ready_ms_p50\": {:.2}, \"ready_ms_p90\": {:.2}, \"ready_ms_min\": {:.2}, \"ready_ms_max\": {:.2}, \"idle_rss_kib_p50\": {}, \"idle_rss_kib_max\": {}}}",
        percentile(&ready_ms, 50.0),
        percentile(&ready_ms, 90.0),
        ready_ms[0],
        ready_ms[runs - 1],
        percentile(&rss, 50.0),
        rss[runs - 1],
    );
    Ok(())
}

fn cache(bin: &Path, repo: &Path, bytes: &str, n: i64, batch: i64) -> Result<()> {
    // Memory is measured here, not latency: the store deadline is raised so that 500-entity
    // SQLite reads on a busy machine do not fail the run (the default 50ms answers 503).
    let extra = [
        "--cache-bytes",
        bytes,
        "--store-timeout",
        "10s",
        "--max-staleness",
        "1h",
        "--watched-staleness",
        "1h",
    ];
    let (mut sidecar, _) = Sidecar::spawn(bin, repo, &extra)?;
    sidecar.wait_ready(Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(1));
    let (idle, _) = sidecar.rss_kib()?;
    let features: Vec<String> = FEATURES.iter().map(|f| format!("\"{VIEW}:{f}\"")).collect();
    let features = features.join(",");
    let started = Instant::now();
    let mut present = 0u64;
    let mut id = 1;
    while id <= n {
        let end = (id + batch).min(n + 1);
        let ids: Vec<String> = (id..end).map(|i| i.to_string()).collect();
        let body = format!(
            "{{\"features\":[{features}],\"entities\":{{\"driver_id\":[{}]}}}}",
            ids.join(",")
        );
        let (status, answer) = request(sidecar.addr, "POST", "/get-online-features", &body)?;
        if status != 200 {
            return Err(format!("driver_id {id}..{end}: status {status}: {answer}").into());
        }
        present += answer.matches("\"PRESENT\"").count() as u64;
        id = end;
    }
    let seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let (rss, hwm) = sidecar.rss_kib()?;
    let (_, metrics) = request(sidecar.addr, "GET", "/metrics", "")?;
    let gauge = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).filter(|v| v.starts_with(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    println!(
        "{{\"bin\": \"{}\", \"cache_bytes_flag\": \"{bytes}\", \"entities\": {n}, \"batch\": {batch}, \"present_values\": {present}, \"seconds\": {seconds:.1}, \"idle_rss_kib\": {idle}, \"rss_kib\": {rss}, \"hwm_kib\": {hwm}, \"quiver_cache_size_bytes\": {}, \"quiver_cache_entries\": {}}}",
        bin_name(bin),
        gauge("quiver_cache_size_bytes"),
        gauge("quiver_cache_entries"),
    );
    Ok(())
}

fn bin_name(bin: &Path) -> String {
    bin.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| PathBuf::from(bin).display().to_string())
}

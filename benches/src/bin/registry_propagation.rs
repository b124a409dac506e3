//! Propagation latency of the registry service: from the moment an apply is sent to the moment
//! every follower serves the change.
//!
//! Followers are of two kinds:
//! - `sidecars`: real in-process sidecars (`quiver_sidecar::start_from` with the registry
//!   service as source, SQLite online store); "serving it" = the new feature view is in the
//!   registry the next request will use (its `ArcSwap`).
//! - `clients`: bare long-poll connections doing what a sidecar's sync task does with each
//!   answer (verify the flatbuffer, checksum, decode the protos, build the `ServingRegistry`),
//!   for counts where full sidecars would crowd the machine.
//!
//! Each round applies a change through the service's HTTP API (adding or removing one feature
//! view, alternately) and waits until every follower has it. Prints one JSON line per
//! (kind, followers) with p50, p95 and max of the all-followers latency over the rounds.
//!
//! Usage: registry_propagation [ROUNDS=30] [VIEWS=20]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bytes::Bytes;
use quiver_registry::client::{Client, Endpoint, Fetched, SnapshotFetcher, SyncConfig};
use quiver_registry_service::{ServiceConfig, Standalone};
use quiver_sidecar::registry::ServingRegistry;
use quiver_sidecar::{RegistrySource, SidecarConfig};

fn defs(views: usize, extra: bool) -> String {
    let mut s = String::from(
        "entities:\n  - {name: driver, join_keys: [driver_id], value_type: INT64}\nsources:\n  - {name: src, path: data/src.parquet}\nfeature_views:\n",
    );
    let n = views + usize::from(extra);
    for i in 0..n {
        s.push_str(&format!(
            "  - name: view_{i}\n    entities: [driver]\n    source: src\n    schema: [{{name: a, dtype: Int64}}, {{name: b, dtype: Float32}}, {{name: c, dtype: String}}]\n"
        ));
    }
    s
}

async fn apply(client: &mut Client, base: u64, defs: &str) -> u64 {
    let body = serde_json::json!({"base_version": base, "files": [{"path": "features.yaml", "content": defs}]});
    let r = client
        .request(
            hyper::Method::POST,
            "/v1/projects/bench/apply",
            &[],
            Some((Bytes::from(body.to_string()), "application/json")),
            Duration::from_secs(30),
        )
        .await
        .expect("apply");
    assert_eq!(r.status, 200, "{}", r.message());
    serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["version"]
        .as_u64()
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sync_config(url: &str, state: Option<&std::path::Path>) -> SyncConfig {
    let mut sync = SyncConfig::new(Endpoint::parse(url, None).unwrap(), "bench");
    sync.state_dir = state.map(|p| p.to_path_buf());
    sync.backoff_min = Duration::from_millis(20);
    sync.backoff_max = Duration::from_millis(500);
    sync
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let views: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("registry.db");
    let service =
        Standalone::start(store.to_str().unwrap(), 0, ServiceConfig::default(), None).unwrap();
    let url = service.url();
    let mut admin = Client::new(Endpoint::parse(&url, None).unwrap(), None);
    let mut version = apply(&mut admin, 0, &defs(views, false)).await;
    let new_view = format!("view_{views}");

    for (kind, counts) in [
        ("sidecars", &[1usize, 10][..]),
        ("clients", &[1usize, 10, 50][..]),
    ] {
        for &n in counts {
            // Each follower publishes the service version it is serving.
            let seen: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
            let mut keep = Vec::new();
            let mut tasks = Vec::new();
            for i in 0..n {
                if kind == "sidecars" {
                    let state_dir = tempfile::tempdir().unwrap();
                    let online = dir.path().join(format!("online_{n}_{i}.db"));
                    let store = quiver_online_store::OnlineStore::Sqlite(Arc::new(
                        quiver_online_store::SqliteStore::open(&online),
                    ));
                    let (state, background) = quiver_sidecar::start_from(
                        SidecarConfig::default(),
                        "bench",
                        RegistrySource::Service(Box::new(sync_config(
                            &url,
                            Some(state_dir.path()),
                        ))),
                        store,
                    )
                    .await
                    .unwrap();
                    let (seen, new_view) = (Arc::clone(&seen), new_view.clone());
                    tasks.push(tokio::spawn(async move {
                        // "Serving it": the registry the next request loads has the view (or,
                        // on a removal round, no longer has it). Checked every 100 µs.
                        loop {
                            let reg = state.registry.load();
                            let has = reg.view(&new_view).is_some();
                            let v = state.metrics.registry_service_version.load(Relaxed);
                            seen[i].store(v * 2 + u64::from(has), Relaxed);
                            tokio::time::sleep(Duration::from_micros(100)).await;
                        }
                    }));
                    keep.push((background, state_dir));
                } else {
                    let seen = Arc::clone(&seen);
                    let mut fetcher = SnapshotFetcher::new(sync_config(&url, None));
                    let new_view = new_view.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut local = 0;
                        loop {
                            match fetcher.fetch(Some(Duration::from_secs(30))).await {
                                Ok(Fetched::Changed {
                                    snapshot, project, ..
                                }) => {
                                    local += 1;
                                    let reg = ServingRegistry::build(&project, local, "bench");
                                    let has = reg.view(&new_view).is_some();
                                    seen[i].store(snapshot.version * 2 + u64::from(has), Relaxed);
                                }
                                Ok(Fetched::NotModified) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }));
                }
            }
            // Everyone at the current version first.
            let settle = Instant::now();
            while seen.iter().any(|s| s.load(Relaxed) / 2 != version) {
                assert!(
                    settle.elapsed() < Duration::from_secs(30),
                    "followers did not settle"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut latencies = Vec::with_capacity(rounds);
            let mut applies = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let extra = seen[0].load(Relaxed).is_multiple_of(2);
                let started = Instant::now();
                version = apply(&mut admin, version, &defs(views, extra)).await;
                applies.push(started.elapsed());
                let target = version * 2 + u64::from(extra);
                while seen.iter().any(|s| s.load(Relaxed) != target) {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "a follower missed version {version}"
                    );
                    tokio::time::sleep(Duration::from_micros(100)).await;
                }
                latencies.push(started.elapsed());
                // Let the long polls re-arm before the next change.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for t in &tasks {
                t.abort();
            }
            drop(keep);
            latencies.sort();
            applies.sort();
            println!(
                "{}",
                serde_json::json!({
                    "followers": kind,
                    "n": n,
                    "views": views + 1,
                    "rounds": rounds,
                    "p50_ms": percentile(&latencies, 0.5).as_secs_f64() * 1e3,
                    "p95_ms": percentile(&latencies, 0.95).as_secs_f64() * 1e3,
                    "max_ms": latencies.last().unwrap().as_secs_f64() * 1e3,
                    "apply_p50_ms": percentile(&applies, 0.5).as_secs_f64() * 1e3,
                })
            );
        }
    }
}

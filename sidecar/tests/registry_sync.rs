//! Sidecars following the real registry service (over a registry file) and a real Redis:
//! an apply is served by every sidecar within a second; the service killed and restarted
//! under load costs no request; a corrupt or truncated snapshot is refused and the last good
//! one kept; a sidecar started while the service is down serves from its state dir.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_core::Value;
use quiver_registry::client::{Client, Endpoint, SyncConfig};
use quiver_registry_service::{ServiceConfig, Standalone};
use quiver_sidecar::{RegistrySource, SidecarConfig};
use serde_json::json;
use support::*;

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: src, path: data/src.parquet}
feature_views:
  - name: driver_stats
    entities: [driver]
    source: src
    schema: [{name: trips, dtype: Int64}]
feature_services:
  - {name: svc, features: [driver_stats]}
"#;

fn with_fresh_view() -> String {
    DEFS.replace(
        "feature_services:",
        "  - name: driver_fresh\n    entities: [driver]\n    source: src\n    schema: [{name: score, dtype: Int64}]\nfeature_services:",
    )
}

struct World {
    redis: RedisServer,
    _dir: tempfile::TempDir,
    service: Standalone,
}

impl World {
    fn new() -> World {
        let redis = RedisServer::start();
        let mut conn = redis.client().get_connection().unwrap();
        let now = now_ts();
        for id in [1001i64, 1002] {
            let key = [("driver_id", Value::Int64(id))];
            write_redis_row(
                &mut conn,
                "demo",
                &key,
                "driver_stats",
                &[("trips", Value::Int64(id * 10))],
                now,
            );
            write_redis_row(
                &mut conn,
                "demo",
                &key,
                "driver_fresh",
                &[("score", Value::Int64(id + 1))],
                now,
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("registry.db");
        let service = Standalone::start(
            store.to_str().unwrap(),
            0,
            ServiceConfig {
                poll_interval: Duration::from_millis(100),
                ..ServiceConfig::default()
            },
            None,
        )
        .unwrap();
        World {
            redis,
            _dir: dir,
            service,
        }
    }

    async fn apply(&self, defs: &str) -> u64 {
        apply_at(&self.service.url(), defs).await
    }

    fn sync(&self, url: &str, state_dir: &std::path::Path) -> SyncConfig {
        let mut sync = SyncConfig::new(Endpoint::parse(url, None).unwrap(), "demo");
        sync.state_dir = Some(state_dir.to_path_buf());
        sync.backoff_min = Duration::from_millis(20);
        sync.backoff_max = Duration::from_millis(300);
        sync.connect_timeout = Duration::from_millis(500);
        sync
    }

    async fn sidecar(&self, url: &str, state_dir: &std::path::Path) -> Result<Sidecar, String> {
        let store = redis_store(&self.redis, "demo").await;
        start_sidecar_from(
            SidecarConfig::default(),
            "demo",
            RegistrySource::Service(Box::new(self.sync(url, state_dir))),
            store,
        )
        .await
    }
}

/// Applies through the service's HTTP API, based on the version it reports.
async fn apply_at(url: &str, defs: &str) -> u64 {
    let mut c = Client::new(Endpoint::parse(url, None).unwrap(), None);
    let r = c
        .request(
            hyper::Method::GET,
            "/v1/projects/demo",
            &[],
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let base = if r.status == 404 {
        0
    } else {
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["version"]
            .as_u64()
            .unwrap()
    };
    let body = json!({"base_version": base, "files": [{"path": "features.yaml", "content": defs}]});
    let r = c
        .request(
            hyper::Method::POST,
            "/v1/projects/demo/apply",
            &[],
            Some((Bytes::from(body.to_string()), "application/json")),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.message());
    serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["version"]
        .as_u64()
        .unwrap()
}

async fn fresh_score(addr: SocketAddr) -> Option<i64> {
    let (status, body) = post(
        addr,
        json!({"features": ["driver_fresh:score"], "entities": {"driver_id": [1001]}}),
    )
    .await;
    if status != 200 {
        return None;
    }
    let (values, statuses, _) = column(&body, "score");
    (statuses[0] == "PRESENT").then(|| values[0].as_i64().unwrap())
}

async fn trips(addr: SocketAddr) -> (u16, Option<i64>) {
    let (status, body) = post(
        addr,
        json!({"features": ["driver_stats:trips"], "entities": {"driver_id": [1002]}}),
    )
    .await;
    let value = (status == 200).then(|| column(&body, "trips").0[0].as_i64().unwrap());
    (status, value)
}

#[tokio::test]
async fn an_apply_is_served_by_every_sidecar_within_a_second() {
    let world = World::new();
    world.apply(DEFS).await;
    let states: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut sidecars = Vec::new();
    for s in &states {
        sidecars.push(world.sidecar(&world.service.url(), s.path()).await.unwrap());
    }
    for sc in &sidecars {
        assert_eq!(trips(sc.addr).await, (200, Some(10020)));
        assert_eq!(fresh_score(sc.addr).await, None, "not defined yet");
    }
    // Let every sidecar settle into its long poll.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let applied = Instant::now();
    assert_eq!(world.apply(&with_fresh_view()).await, 2);
    for sc in &sidecars {
        loop {
            if fresh_score(sc.addr).await == Some(1002) {
                break;
            }
            assert!(
                applied.elapsed() < Duration::from_secs(1),
                "sidecar {} did not serve the new view within 1s",
                sc.addr
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let took = applied.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    for sc in &sidecars {
        assert_eq!(
            metric(sc.addr, "quiver_registry_service_version").await,
            2.0
        );
        assert_eq!(
            metric(sc.addr, "quiver_registry_service_connected").await,
            1.0
        );
    }
    // Each keeps the new snapshot in its state dir (written just after the swap).
    let deadline = Instant::now() + Duration::from_secs(2);
    for s in &states {
        while quiver_registry::client::load_state(s.path(), "demo")
            .unwrap()
            .unwrap()
            .version
            != 2
        {
            assert!(
                Instant::now() < deadline,
                "the state dir never got version 2"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test]
async fn the_service_killed_and_restarted_under_load_costs_no_request() {
    let mut world = World::new();
    world.apply(DEFS).await;
    let states: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut sidecars = Vec::new();
    for s in &states {
        sidecars.push(world.sidecar(&world.service.url(), s.path()).await.unwrap());
    }
    let stop = Arc::new(AtomicU8::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for sc in &sidecars {
        for _ in 0..2 {
            let (addr, stop, ok, failed) = (
                sc.addr,
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&failed),
            );
            load.push(tokio::spawn(async move {
                while stop.load(Relaxed) == 0 {
                    match trips(addr).await {
                        (200, Some(10020)) => ok.fetch_add(1, Relaxed),
                        other => {
                            eprintln!("failed request: {other:?}");
                            failed.fetch_add(1, Relaxed)
                        }
                    };
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    world.service.kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for sc in &sidecars {
        assert_eq!(
            metric(sc.addr, "quiver_registry_service_connected").await,
            0.0
        );
        assert!(metric(sc.addr, "quiver_registry_sync_errors_total").await >= 1.0);
    }
    world.service.restart().unwrap();
    // Back: an apply after the restart reaches every sidecar (backoff is capped at 300ms).
    world.apply(&with_fresh_view()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    for sc in &sidecars {
        while fresh_score(sc.addr).await != Some(1002) {
            assert!(
                Instant::now() < deadline,
                "sidecar {} never heard of the apply after the restart",
                sc.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(1, Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Relaxed), failed.load(Relaxed));
    assert_eq!(failed, 0, "{failed} failed requests ({ok} ok)");
    assert!(ok > 100, "the load ran: {ok} requests");
}

/// A fault-injecting proxy in front of the real service: forwards every request, and in a
/// bad mode truncates or alters the snapshot bodies it passes back.
struct Proxy {
    url: String,
    mode: Arc<AtomicU8>,
    _task: tokio::task::JoinHandle<()>,
}

const PASS: u8 = 0;
const TRUNCATE: u8 = 1;
const FLIP: u8 = 2;

async fn proxy(upstream: String) -> Proxy {
    use http_body_util::{BodyExt, Full};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mode = Arc::new(AtomicU8::new(PASS));
    let m = Arc::clone(&mode);
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (upstream, mode) = (upstream.clone(), Arc::clone(&m));
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (upstream, mode) = (upstream.clone(), Arc::clone(&mode));
                        async move {
                            let path = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let headers: Vec<_> = req
                                .headers()
                                .get(hyper::header::IF_NONE_MATCH)
                                .and_then(|v| v.to_str().ok())
                                .map(|v| (hyper::header::IF_NONE_MATCH, v.to_owned()))
                                .into_iter()
                                .collect();
                            let method = req.method().clone();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let mut c =
                                Client::new(Endpoint::parse(&upstream, None).unwrap(), None);
                            let body = (!body.is_empty()).then_some((body, "application/json"));
                            let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                            match c
                                .request(method, &path, &headers, body, Duration::from_secs(60))
                                .await
                            {
                                Ok(r) => {
                                    let mut bytes = r.body.to_vec();
                                    if r.status == 200 && path.contains("/snapshot") {
                                        match mode.load(Relaxed) {
                                            TRUNCATE => bytes.truncate(bytes.len() * 2 / 3),
                                            FLIP => {
                                                // One bit of an object's name: the checksum's.
                                                let i = bytes
                                                    .windows(12)
                                                    .position(|w| w == b"driver_stats")
                                                    .unwrap();
                                                bytes[i] ^= 0x01;
                                            }
                                            _ => {}
                                        }
                                    }
                                    *resp.status_mut() =
                                        hyper::StatusCode::from_u16(r.status).unwrap();
                                    if let Some(e) = r.etag {
                                        resp.headers_mut()
                                            .insert(hyper::header::ETAG, e.parse().unwrap());
                                    }
                                    *resp.body_mut() = Full::new(Bytes::from(bytes));
                                }
                                Err(_) => *resp.status_mut() = hyper::StatusCode::BAD_GATEWAY,
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Proxy {
        url,
        mode,
        _task: task,
    }
}

#[tokio::test]
async fn a_corrupt_or_truncated_snapshot_is_refused_and_the_last_good_one_kept() {
    let world = World::new();
    world.apply(DEFS).await;
    let proxy = proxy(world.service.url()).await;
    let state = tempfile::tempdir().unwrap();
    let sc = world.sidecar(&proxy.url, state.path()).await.unwrap();
    assert_eq!(trips(sc.addr).await, (200, Some(10020)));
    let good = std::fs::read(quiver_registry::client::state_file(state.path(), "demo")).unwrap();

    let mut rejected = 0.0;
    for (mode, defs) in [
        (TRUNCATE, with_fresh_view()),
        (
            FLIP,
            DEFS.replace(
                "trips, dtype: Int64}]",
                "trips, dtype: Int64}, {name: other, dtype: Int64}]",
            ),
        ),
    ] {
        proxy.mode.store(mode, Relaxed);
        world.apply(&defs).await;
        // The bad snapshot arrives and is refused (then again after each backoff).
        let deadline = Instant::now() + Duration::from_secs(5);
        while metric(sc.addr, "quiver_registry_snapshots_rejected_total").await <= rejected {
            assert!(
                Instant::now() < deadline,
                "mode {mode}: no snapshot was refused"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rejected = metric(sc.addr, "quiver_registry_snapshots_rejected_total").await;
        // The sidecar still serves version 1's definitions, and keeps version 1 on disk.
        assert_eq!(trips(sc.addr).await, (200, Some(10020)));
        assert_eq!(fresh_score(sc.addr).await, None);
        assert_eq!(
            metric(sc.addr, "quiver_registry_service_version").await,
            1.0
        );
        assert_eq!(
            std::fs::read(quiver_registry::client::state_file(state.path(), "demo")).unwrap(),
            good
        );
    }
    // The proxy heals: the current version (the flip round's definitions) arrives.
    proxy.mode.store(PASS, Relaxed);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(sc.addr, "quiver_registry_service_version").await != 3.0 {
        assert!(Instant::now() < deadline, "the good snapshot never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = post(
        sc.addr,
        json!({"features": ["driver_stats:other"], "entities": {"driver_id": [1001]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_sidecar_started_while_the_service_is_down_serves_from_its_state_dir() {
    let mut world = World::new();
    world.apply(DEFS).await;
    let state = tempfile::tempdir().unwrap();
    let url = world.service.url();
    drop(world.sidecar(&url, state.path()).await.unwrap());
    world.service.kill();

    // No state dir to fall back on: the start fails, saying why.
    let empty = tempfile::tempdir().unwrap();
    let err = world.sidecar(&url, empty.path()).await.err().unwrap();
    assert!(
        err.contains("unreachable") && err.contains("holds no snapshot"),
        "{err}"
    );

    let sc = world.sidecar(&url, state.path()).await.unwrap();
    assert_eq!(trips(sc.addr).await, (200, Some(10020)));
    assert_eq!(metric(sc.addr, "quiver_registry_from_state_dir").await, 1.0);
    assert_eq!(
        metric(sc.addr, "quiver_registry_service_version").await,
        1.0
    );

    // A corrupt state dir is not served from.
    let bad = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(quiver_registry::client::state_file(state.path(), "demo")).unwrap();
    std::fs::write(
        quiver_registry::client::state_file(bad.path(), "demo"),
        &bytes[..bytes.len() - 1],
    )
    .unwrap();
    let err = world.sidecar(&url, bad.path()).await.err().unwrap();
    assert!(err.contains("unusable"), "{err}");

    // The service comes back: the sidecar says so and follows it again.
    world.service.restart().unwrap();
    world.apply(&with_fresh_view()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while fresh_score(sc.addr).await != Some(1002) {
        assert!(
            Instant::now() < deadline,
            "the sidecar never caught up with the service"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(sc.addr, "quiver_registry_from_state_dir").await, 0.0);
    assert_eq!(
        metric(sc.addr, "quiver_registry_service_version").await,
        2.0
    );
}

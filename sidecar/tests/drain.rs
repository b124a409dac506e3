//! The sidecar on the shared server core: at shutdown `/ready` turns 503 before new connections
//! are refused, and the connection counters reach `/metrics`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use quiver_online_store::{OnlineStore, SqliteStore};
use quiver_sidecar::SidecarConfig;
use support::*;

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: src, path: data/src.parquet}
feature_views:
  - name: stats
    entities: [driver]
    source: src
    schema:
      - {name: rate, dtype: Float64}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_turns_503_when_draining_then_connections_are_refused() {
    let repo = Repo::new("demo", DEFS);
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(
        &repo.path().join("data/online.db"),
    )));
    let (state, _background) = quiver_sidecar::start(
        SidecarConfig::default(),
        "demo",
        repo.registry_path(),
        store,
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = quiver_http::Server::new(quiver_http::Limits {
        drain_delay: Duration::from_millis(400),
        ..quiver_http::Limits::default()
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(quiver_sidecar::server::serve_with(
        server,
        listener,
        state,
        async move {
            let _ = stopped.await;
        },
    ));
    assert_eq!(http(addr, "GET", "/ready", b"").await.0, 200);
    let (status, metrics) = http(addr, "GET", "/metrics", b"").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("quiver_http_connections_accepted_total "),
        "{metrics}"
    );

    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = http(addr, "GET", "/ready", b"").await;
    assert_eq!(status, 503);
    assert!(body.contains("shutting down"), "{body}");

    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("the server stops after the drain")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

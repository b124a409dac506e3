//! On-demand views without a working transformation service: every way it can go wrong answers
//! a clear status naming the cause. (The working path, against Feast's own transformation
//! service and `feast serve`, is compat/tests/test_on_demand_compat.py.)
//!
//! The registry is the one Feast 0.67 wrote for compat/feast_repo: on-demand view
//! `ride_features` reads `driver_hourly_stats` and the request source `ride_request`
//! (`distance_km`, Double).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use quiver_online_store::{OnlineStore, SqliteStore};
use quiver_sidecar::{SidecarConfig, TransformConfig};
use serde_json::json;
use support::*;

fn feast_registry(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("registry.db");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../registry-sync/tests/fixtures/feast_quickstart_registry.db"
        ),
        &path,
    )
    .unwrap();
    path
}

async fn sidecar(transformation: Option<TransformConfig>) -> (Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let registry = feast_registry(dir.path());
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(&dir.path().join("online.db"))));
    let config = SidecarConfig {
        transformation,
        ..SidecarConfig::default()
    };
    (
        start_sidecar(config, "quickstart", registry, store).await,
        dir,
    )
}

fn ride(distance: serde_json::Value) -> serde_json::Value {
    json!({
        "features": ["driver_hourly_stats:conv_rate", "ride_features:conv_per_km"],
        "entities": {"driver_id": [1001], "distance_km": [distance]},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_transformation_service_the_view_and_the_flag_are_named() {
    let (sc, _dir) = sidecar(None).await;
    let (status, body) = post(sc.addr, ride(json!(2.5))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["class"], "OnDemandFeatureViewNotSupported");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("ride_features"), "{message}");
    assert!(message.contains("--transformation-service"), "{message}");
    // Other views are served as before.
    let (status, body) = post(
        sc.addr,
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_data_is_checked_before_the_service_is_called() {
    // Nothing listens there: a request that got as far as the call would be a 502.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let config = TransformConfig::new(&closed.to_string(), Duration::from_secs(2));
    let (sc, _dir) = sidecar(Some(config)).await;

    let missing = json!({
        "features": ["ride_features:conv_per_km"],
        "entities": {"driver_id": [1001]},
    });
    let (status, body) = post(sc.addr, missing).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["class"], "RequestDataNotFoundInEntityRowsException");
    assert!(
        body["message"].as_str().unwrap().contains("distance_km"),
        "{body}"
    );

    let (status, body) = post(sc.addr, ride(json!("far"))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["class"], "InvalidRequestData");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("entities.distance_km[0]") && message.contains("Float64"),
        "{message}"
    );

    let unknown = json!({
        "features": ["ride_features:nope"],
        "entities": {"driver_id": [1001], "distance_km": [1.0]},
    });
    let (status, body) = post(sc.addr, unknown).await;
    assert_eq!(status, 404, "{body}");

    // Valid: the call is made, and the closed port is a 502 naming the service.
    let (status, body) = post(sc.addr, ride(json!(2.5))).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["class"], "TransformationServiceUnavailable");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&closed.to_string()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_service_is_a_504_within_the_deadline() {
    // Accepts connections and reads, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let config = TransformConfig::new(&addr.to_string(), Duration::from_millis(300));
    let (sc, _dir) = sidecar(Some(config)).await;
    let started = Instant::now();
    let (status, body) = post(sc.addr, ride(json!(2.5))).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["class"], "TransformationServiceTimeout");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// An HTTP/2 server answering every call with a gRPC error, as Feast's service does when the
/// function raises (status 2, UNKNOWN, with the exception in `grpc-message`).
async fn failing_service() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    let resp = hyper::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", "2")
                        .header(
                            "grpc-message",
                            "Exception calling application: %27distance_km%27",
                        )
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_transformation_is_a_502_with_its_message() {
    let addr = failing_service().await;
    let config = TransformConfig::new(&addr.to_string(), Duration::from_secs(2));
    let (sc, _dir) = sidecar(Some(config)).await;
    for _ in 0..2 {
        // Twice: the second call reuses the connection.
        let (status, body) = post(sc.addr, ride(json!(2.5))).await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["class"], "TransformationServiceFailed");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("ride_features") && message.contains("'distance_km'"),
            "{message}"
        );
    }
}

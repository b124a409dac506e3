//! An object store that cannot be reached is an upstream's failure: the offline HTTP server
//! answers 503 (not the 400 of a bad request), naming the source and its endpoint.
//!
//! Alone in its file because it sets the process's AWS credentials (object_store reads them
//! from the environment only): with one test per binary, no other thread reads the
//! environment meanwhile.

mod support;

use quiver_offline::historical::EngineOptions;
use support::{post, repo, request, start_http};

#[tokio::test]
#[allow(clippy::disallowed_methods)] // see the module's documentation
async fn an_unreachable_object_store_is_a_503() {
    // SAFETY: the only test in this binary, set before any thread that reads the environment.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_REGION", "us-east-1");
    }
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    // SAFETY: as above. The operator allows the bucket and the endpoint.
    unsafe {
        std::env::set_var("QUIVER_ALLOW_LOCATIONS", "s3://bkt");
        std::env::set_var("QUIVER_ALLOW_ENDPOINTS", &endpoint);
    }
    let definitions = format!(
        r#"
entities:
  - name: driver
    join_keys: [driver_id]
    value_type: INT64
sources:
  - name: remote_src
    type: file
    path: s3://bkt/driver.parquet
    s3_endpoint_override: {endpoint}
    timestamp_field: event_timestamp
feature_views:
  - name: remote_stats
    entities: [driver]
    ttl: 1d
    source: remote_src
    schema:
      - {{name: trips, dtype: Int64}}
"#
    );
    let dir = repo(&definitions, 2);
    let addr = start_http(dir.path(), &EngineOptions::default()).await;
    let started = std::time::Instant::now();
    let (status, body) = post(addr, "/v1/historical", &request(&["remote_stats:trips"])).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "Unavailable");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("s3://bkt/driver.parquet") && message.contains(&endpoint),
        "{message}"
    );
    // object_store's retries are bounded (registry-sync's bucket_client).
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

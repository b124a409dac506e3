//! Test support: definitions, a real client against a real service, and a fresh PostgreSQL
//! database per test (quiver-testkit's `TestDb`).

#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use hyper::header::{HeaderName, IF_NONE_MATCH};
use quiver_registry::client::{Client, Endpoint, Response};
use serde_json::{Value as Json, json};

pub const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
  - {name: customer, join_keys: [customer_id], value_type: STRING}
sources:
  - {name: stats, path: data/stats.parquet}
  - {name: cust, path: data/cust.parquet}
feature_views:
  - name: hourly
    entities: [driver]
    ttl: 1d
    source: stats
    schema: [{name: conv_rate, dtype: Float32}, {name: trips, dtype: Int64}]
  - name: profile
    entities: [customer]
    source: cust
    schema: [{name: age, dtype: Int64}]
feature_services:
  - {name: drivers, features: [hourly]}
  - {name: customers, features: [profile]}
"#;

/// DEFS with one more feature view (on the driver entity) named `name`.
pub fn defs_with_view(name: &str) -> String {
    DEFS.replace(
        "feature_services:",
        &format!(
            "  - name: {name}\n    entities: [driver]\n    source: stats\n    schema: [{{name: extra, dtype: Int64}}]\nfeature_services:"
        ),
    )
}

pub fn client(url: &str, token: Option<&str>) -> Client {
    Client::new(
        Endpoint::parse(url, None).unwrap(),
        token.map(str::to_owned),
    )
}

pub async fn get(client: &mut Client, path: &str, headers: &[(HeaderName, String)]) -> Response {
    client
        .request(Method::GET, path, headers, None, Duration::from_secs(70))
        .await
        .unwrap()
}

pub async fn get_json(client: &mut Client, path: &str) -> (u16, Json) {
    let r = get(client, path, &[]).await;
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Json::Null),
    )
}

pub async fn snapshot_if_none_match(client: &mut Client, path: &str, etag: &str) -> Response {
    get(client, path, &[(IF_NONE_MATCH, etag.to_owned())]).await
}

pub async fn post_raw(client: &mut Client, path: &str, body: &str) -> (u16, Json) {
    let r = client
        .request(
            Method::POST,
            path,
            &[],
            Some((Bytes::from(body.to_owned()), "application/json")),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Json::Null),
    )
}

pub async fn apply(client: &mut Client, project: &str, base: u64, defs: &str) -> (u16, Json) {
    let body = json!({"base_version": base, "files": [{"path": "features.yaml", "content": defs}]});
    post_raw(
        client,
        &format!("/v1/projects/{project}/apply"),
        &body.to_string(),
    )
    .await
}

pub async fn version(client: &mut Client, project: &str) -> u64 {
    let (status, body) = get_json(client, &format!("/v1/projects/{project}")).await;
    assert_eq!(status, 200, "{body}");
    body["version"].as_u64().unwrap()
}

#[allow(unused_imports)] // service.rs runs without PostgreSQL
pub use quiver_testkit::postgres::{TestDb, admin_url};

/// Records materialization intervals through the service and checks what every client sees:
/// the intervals on the views (appended, in order, the registry download carrying them), the
/// version bump, and the refusals (unknown view, bad bodies) that record nothing. Returns the
/// project's version afterwards. Shared by the file and Postgres stores.
pub async fn materializations_scenario(client: &mut Client) -> u64 {
    let (status, body) = apply(client, "demo", 0, DEFS).await;
    assert_eq!(status, 200, "{body}");
    let path = "/v1/projects/demo/materializations";
    let one = r#"{"intervals": [
        {"feature_view": "hourly", "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}
    ]}"#;
    let (status, body) = post_raw(client, path, one).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["version"].as_u64(), body["recorded"].as_u64()),
        (Some(2), Some(1))
    );
    let two = r#"{"intervals": [
        {"feature_view": "hourly", "start": "2026-01-02T00:00:00Z", "end": "2026-01-03T00:00:00+00:00"},
        {"feature_view": "profile", "start": "2026-01-01T00:00:00Z", "end": "2026-01-03T00:00:00Z"}
    ]}"#;
    let (status, body) = post_raw(client, path, two).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"].as_u64(), Some(3));

    // Refusals name what is wrong and record nothing.
    for (bad, code, needle) in [
        (
            r#"{"intervals": [{"feature_view": "hourly", "start": "2026-01-03T00:00:00Z", "end": "2026-01-04T00:00:00Z"}, {"feature_view": "nope", "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}]}"#,
            404,
            "no feature view nope",
        ),
        (r#"{"intervals": []}"#, 400, "intervals: empty"),
        (
            r#"{"intervals": [{"feature_view": "hourly", "start": "yesterday", "end": "2026-01-02T00:00:00Z"}]}"#,
            400,
            "intervals[0].start",
        ),
        (
            r#"{"intervals": [{"feature_view": "hourly", "start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}]}"#,
            400,
            "intervals[0].end: 2026-01-01T00:00:00Z is not after intervals[0].start",
        ),
        (
            r#"{"intervals": [{"feature_view": "hourly", "start": "2026-01-02T00:00:00Z", "end": "2026-01-02T00:00:00Z"}]}"#,
            400,
            "is not after",
        ),
        // Feast issue 4222: an end in the future would make every later incremental run skip
        // the rows written until then.
        (
            r#"{"intervals": [{"feature_view": "profile", "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}, {"feature_view": "hourly", "start": "2026-01-03T00:00:00Z", "end": "9999-12-31T00:00:00Z"}]}"#,
            400,
            "intervals[1].end: 9999-12-31T00:00:00Z is in the future",
        ),
        (r#"{"views": []}"#, 400, "unknown field"),
        ("not json", 400, "expected {\"intervals\""),
    ] {
        let (status, body) = post_raw(client, path, bad).await;
        assert_eq!(status, code, "{bad}: {body}");
        assert!(
            body["message"].as_str().unwrap_or("").contains(needle),
            "{bad}: {body}"
        );
    }
    let (status, _) = post_raw(client, "/v1/projects/nope/materializations", one).await;
    assert_eq!(status, 404);

    // The registry download is a Feast registry of the project, with the intervals.
    let r = get(client, "/v1/projects/demo/registry", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("application/x-protobuf"));
    let file = quiver_core::registry::RegistryFile::decode(&r.body).unwrap();
    assert_eq!(file.project_names().unwrap(), ["demo"]);
    let registry = file.project("demo").unwrap();
    assert_eq!(registry.feature_views.len(), 2);
    let intervals = |name: &str| -> Vec<(i64, i64)> {
        registry
            .feature_view(name)
            .unwrap()
            .materialization_intervals
            .iter()
            .map(|(start, end)| (start.seconds, end.seconds))
            .collect()
    };
    let (jan1, jan2, jan3) = (1_767_225_600, 1_767_312_000, 1_767_398_400);
    assert_eq!(intervals("hourly"), [(jan1, jan2), (jan2, jan3)]);
    assert_eq!(intervals("profile"), [(jan1, jan3)]);
    assert_eq!(version(client, "demo").await, 3);
    let r = get(client, "/v1/projects/nope/registry", &[]).await;
    assert_eq!(r.status, 404);
    3
}

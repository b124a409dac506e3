//! The offline servers answer each failure with the status its kind has in
//! `quiver_core::fault`: the HTTP server's 4xx for the request's mistakes and 507 for the
//! engine's memory limit; the Flight server's gRPC codes, in Feast's message format.

mod support;

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_flight::FlightDescriptor;
use arrow_flight::client::FlightClient;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use futures::TryStreamExt as _;
use quiver_offline::flight::OfflineServer;
use quiver_offline::historical::{EngineOptions, HistoricalEngine};
use support::{post, repo, request, start_http};

const DEFINITIONS: &str = r#"
entities:
  - name: driver
    join_keys: [driver_id]
    value_type: INT64
sources:
  - name: driver_src
    type: file
    path: data/driver.parquet
    timestamp_field: event_timestamp
feature_views:
  - name: driver_stats
    entities: [driver]
    ttl: 1d
    source: driver_src
    schema:
      - {name: trips, dtype: Int64}
"#;

#[tokio::test]
async fn http_answers_the_callers_mistakes_with_4xx() {
    let dir = repo(DEFINITIONS, 10);
    let addr = start_http(dir.path(), &EngineOptions::default()).await;

    let (status, body) = post(addr, "/v1/historical", "{not json").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "BadRequest");

    let (status, body) = post(addr, "/v1/historical", &request(&["driver_stats"])).await;
    assert_eq!(status, 400, "a reference without a feature: {body}");

    let (status, body) = post(addr, "/v1/historical", &request(&["nope:trips"])).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "NotFound");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no feature view \"nope\""),
        "{body}"
    );

    let (status, body) = post(addr, "/v1/historical", &request(&["driver_stats:nope"])).await;
    assert_eq!(status, 404, "{body}");

    // An entity table without the join key.
    let missing_key = serde_json::json!({
        "features": ["driver_stats:trips"],
        "entities": {"event_timestamp": ["2026-01-01T05:00:00Z"]},
    });
    let (status, body) = post(addr, "/v1/historical", &missing_key.to_string()).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("driver_id"),
        "{body}"
    );

    // A file the request names that is not there.
    let absent = serde_json::json!({
        "features": ["driver_stats:trips"],
        "entity_path": "data/absent.parquet",
    });
    let (status, body) = post(addr, "/v1/historical", &absent.to_string()).await;
    assert_eq!(status, 404, "{body}");

    // And the happy path still streams Arrow.
    let (status, _) = post(addr, "/v1/historical", &request(&["driver_stats:trips"])).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn http_answers_the_engines_memory_limit_with_507() {
    let dir = repo(DEFINITIONS, 20_000);
    // Far less than one batch of the sort needs, and less than its merge reservation.
    let options = EngineOptions {
        memory_limit: Some(4 << 10),
        partitions: 1,
        ..EngineOptions::default()
    };
    let addr = start_http(dir.path(), &options).await;
    let rows = 20_000;
    let body = serde_json::json!({
        "features": ["driver_stats:trips"],
        "entities": {
            "driver_id": (1..=rows).collect::<Vec<i64>>(),
            "event_timestamp": vec!["2026-01-01T05:00:00Z"; rows as usize],
        },
    });
    let (status, body) = post(addr, "/v1/historical", &body.to_string()).await;
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"], "OutOfResources");
}

/// Starts the Flight server on a free port and connects a client to it.
async fn flight(dir: &std::path::Path) -> FlightClient {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = OfflineServer::new(
        HistoricalEngine::new(&EngineOptions::default()).unwrap(),
        support::registry(dir),
        None,
    );
    tokio::spawn(quiver_offline::flight::serve(
        listener,
        server,
        std::future::pending(),
    ));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightClient::new(channel)
}

/// Feast's `get_historical_features` exchange for `views`; the status it fails with.
async fn exchange(client: &mut FlightClient, command: serde_json::Value) -> tonic::Status {
    let batch = RecordBatch::try_from_iter([
        (
            "driver_id",
            Arc::new(Int64Array::from(vec![1, 2])) as arrow_array::ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(
                TimestampMicrosecondArray::from(vec![support::at(5) * 1_000_000; 2])
                    .with_timezone("UTC"),
            ),
        ),
    ])
    .unwrap();
    let descriptor = FlightDescriptor::new_cmd(command.to_string());
    let input = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor))
        .build(futures::stream::iter([Ok(batch)]));
    let result = match client.do_exchange(input).await {
        Ok(stream) => stream.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Err(FlightError::Tonic(status)) => *status,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

fn command(views: &[&str], refs: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "command_id": "1",
        "api": "get_historical_features",
        "feature_view_names": views,
        "name_aliases": vec![serde_json::Value::Null; views.len()],
        "feature_refs": refs,
        "project": support::PROJECT,
        "full_feature_names": false,
    })
}

/// The JSON after `Flight error: `, which Feast's SDK turns into its exception classes.
fn feast_error(status: &tonic::Status) -> serde_json::Value {
    let json = status
        .message()
        .strip_prefix("Flight error: ")
        .unwrap_or_else(|| panic!("not Feast's format: {}", status.message()));
    serde_json::from_str(json).unwrap()
}

#[tokio::test]
async fn flight_codes_come_from_the_kind_and_keep_feasts_format() {
    let dir = repo(DEFINITIONS, 10);
    let mut client = flight(dir.path()).await;

    let status = exchange(&mut client, command(&["nope"], &["nope:trips"])).await;
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let e = feast_error(&status);
    assert_eq!(e["module"], "feast.errors");
    assert_eq!(e["class"], "FeatureViewNotFoundException");
    assert!(e["message"].as_str().unwrap().contains("nope"), "{e}");

    let mut malformed = command(&["driver_stats"], &["driver_stats:trips"]);
    malformed["feature_refs"] = serde_json::json!("driver_stats:trips");
    let status = exchange(&mut client, malformed).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(feast_error(&status)["class"], "FeastError");

    let mut other_api = command(&["driver_stats"], &["driver_stats:trips"]);
    other_api["api"] = serde_json::json!("persist");
    let status = exchange(&mut client, other_api).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // A source column of the wrong type for the view: the definitions' fault, not the request's.
    let wrong_type = DEFINITIONS.replace(
        "{name: trips, dtype: Int64}",
        "{name: trips, dtype: String}",
    );
    let dir = repo(&wrong_type, 10);
    let mut client = flight(dir.path()).await;
    let status = exchange(
        &mut client,
        command(&["driver_stats"], &["driver_stats:trips"]),
    )
    .await;
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert_eq!(feast_error(&status)["class"], "FeastError");
}

#[tokio::test]
async fn flight_refuses_an_entity_query_without_spark_saying_so() {
    // Feast's remote client with `entity_df="SELECT ..."`: the query in `entity_df_sql`, a
    // one-row placeholder uploaded. A repo on local files cannot run it.
    let dir = repo(DEFINITIONS, 10);
    let mut client = flight(dir.path()).await;
    let mut sql = command(&["driver_stats"], &["driver_stats:trips"]);
    sql["entity_df_sql"] = serde_json::json!("SELECT * FROM entities");
    let placeholder = RecordBatch::try_from_iter([(
        "key",
        Arc::new(arrow_array::StringArray::from(vec!["mock_key"])) as arrow_array::ArrayRef,
    )])
    .unwrap();
    let input = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(sql.to_string())))
        .build(futures::stream::iter([Ok(placeholder)]));
    let status = match client.do_exchange(input).await {
        Ok(stream) => match stream.try_collect::<Vec<_>>().await {
            Err(FlightError::Tonic(status)) => *status,
            other => panic!("expected a gRPC status, got {other:?}"),
        },
        Err(FlightError::Tonic(status)) => *status,
        Err(e) => panic!("expected a gRPC status, got {e:?}"),
    };
    assert_ne!(status.code(), tonic::Code::Ok);
    let e = feast_error(&status);
    assert_eq!(e["class"], "FeastError");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("entity_df as SQL runs on Spark") && message.contains("type: spark"),
        "{message}"
    );
}

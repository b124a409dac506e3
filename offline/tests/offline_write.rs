//! Feast's remote offline store pushing to `quiver offline serve`, over a real Flight client on
//! loopback: `get_table_column_names_and_types_from_data_source` (DoExchange, and the older
//! DoPut → GetFlightInfo → DoGet), `offline_write_batch` (DoPut) appending to the view's batch
//! source, the rows read back with `get_historical_features`, and bad writes refused with the
//! column named and nothing written. Sources are found by name: a request's path is never read.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, TimestampNanosecondArray,
};
use arrow_flight::FlightDescriptor;
use arrow_flight::client::FlightClient;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use futures::TryStreamExt as _;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use quiver_offline::flight::OfflineServer;
use quiver_offline::historical::{EngineOptions, HistoricalEngine};
use serde_json::{Value, json};
use support::{PROJECT, at, repo};

/// A file source, a push source on it, a batch view and a push view.
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
  - name: driver_push
    type: push
    batch_source: driver_src
feature_views:
  - name: driver_stats
    entities: [driver]
    ttl: 1d
    source: driver_src
    schema:
      - {name: trips, dtype: Int64}
  - name: driver_fresh
    entities: [driver]
    ttl: 1d
    source: driver_push
    schema:
      - {name: trips, dtype: Int64}
"#;

/// Starts the Flight server for `dir` (token and row limit as given); its address.
async fn start(dir: &Path, token: Option<&str>, max_rows: Option<usize>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut server = OfflineServer::new(
        HistoricalEngine::new(&EngineOptions::default()).unwrap(),
        support::registry(dir),
        token.map(str::to_owned),
    );
    if let Some(rows) = max_rows {
        server = server.with_max_write_rows(rows);
    }
    tokio::spawn(quiver_offline::flight::serve(
        listener,
        server,
        std::future::pending(),
    ));
    addr
}

/// A Flight client of `addr`, sending `token` as Feast's client does.
async fn connect(addr: SocketAddr, token: Option<&str>) -> FlightClient {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightClient::new(channel);
    if let Some(t) = token {
        client
            .add_header("authorization", &format!("Bearer {t}"))
            .unwrap();
    }
    client
}

async fn flight(dir: &Path, max_rows: Option<usize>) -> FlightClient {
    connect(start(dir, None, max_rows).await, None).await
}

/// Feast's placeholder table for calls that upload none (`_create_empty_table`).
fn placeholder() -> RecordBatch {
    RecordBatch::try_from_iter([(
        "key",
        Arc::new(StringArray::from(vec!["mock_key"])) as ArrayRef,
    )])
    .unwrap()
}

/// A DoExchange of `command`; the answer's batches.
async fn exchange(
    client: &mut FlightClient,
    command: &Value,
    batch: RecordBatch,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let descriptor = FlightDescriptor::new_cmd(command.to_string());
    let input = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor))
        .build(futures::stream::iter([Ok(batch)]));
    let result = match client.do_exchange(input).await {
        Ok(stream) => stream.try_collect::<Vec<_>>().await,
        Err(e) => Err(e),
    };
    result.map_err(status)
}

/// A DoPut of `batch` under `command`, as Feast's `_call_put` does it.
async fn put(
    client: &mut FlightClient,
    command: &Value,
    batch: RecordBatch,
) -> Result<(), tonic::Status> {
    let descriptor = FlightDescriptor::new_cmd(command.to_string());
    let input = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor))
        .build(futures::stream::iter([Ok(batch)]));
    let result = match client.do_put(input).await {
        Ok(stream) => stream.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(e) => Err(e),
    };
    result.map_err(status)
}

fn status(e: FlightError) -> tonic::Status {
    match e {
        FlightError::Tonic(s) => *s,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// The JSON after `Flight error: `, which Feast's SDK turns into its exception classes.
fn feast_error(status: &tonic::Status) -> Value {
    let text = status
        .message()
        .strip_prefix("Flight error: ")
        .unwrap_or_else(|| panic!("not Feast's format: {}", status.message()));
    serde_json::from_str(text).unwrap()
}

fn columns_command(proto: Value) -> Value {
    json!({
        "command_id": "c1",
        "api": "get_table_column_names_and_types_from_data_source",
        "data_source_proto": proto.to_string(),
    })
}

fn write_command(view: &str) -> Value {
    json!({
        "command_id": "w1",
        "api": "offline_write_batch",
        "feature_view_names": [view],
        "progress": null,
        "name_aliases": [null],
    })
}

/// Rows as pandas sends them: naive nanosecond times, the source's columns.
fn rows(drivers: &[i64], hour: i64, trips: &[i64]) -> RecordBatch {
    RecordBatch::try_from_iter([
        (
            "event_timestamp",
            Arc::new(TimestampNanosecondArray::from(vec![
                at(hour) * 1_000_000_000;
                drivers.len()
            ])) as ArrayRef,
        ),
        ("driver_id", Arc::new(Int64Array::from(drivers.to_vec()))),
        ("trips", Arc::new(Int64Array::from(trips.to_vec()))),
    ])
    .unwrap()
}

fn file_rows(dir: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(dir.join("data/driver.parquet")).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn row_count(dir: &Path) -> usize {
    file_rows(dir).iter().map(RecordBatch::num_rows).sum()
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<String> {
    batch
        .column_by_name(column)
        .unwrap()
        .as_string::<i32>()
        .iter()
        .map(|s| s.unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_sources_columns_come_from_the_registry_by_name() {
    let dir = repo(DEFINITIONS, 10);
    let mut client = flight(dir.path(), None).await;
    // The client's proto says where the file is; only its name counts.
    let elsewhere = tempfile::tempdir().unwrap();
    // A Parquet file outside the repo, which no request may read.
    let outside = elsewhere.path().join("secret.parquet");
    let secret = RecordBatch::try_from_iter([(
        "secret_column",
        Arc::new(Int64Array::from(vec![42])) as ArrayRef,
    )])
    .unwrap();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(&outside).unwrap(),
        secret.schema(),
        None,
    )
    .unwrap();
    w.write(&secret).unwrap();
    w.close().unwrap();
    let proto = json!({
        "type": "BATCH_FILE",
        "name": "driver_src",
        "project": PROJECT,
        "fileOptions": {"uri": outside},
        "timestampField": "event_timestamp",
    });
    let answer = exchange(&mut client, &columns_command(proto), placeholder())
        .await
        .unwrap();
    assert_eq!(answer.len(), 1);
    assert_eq!(
        strings(&answer[0], "name"),
        ["driver_id", "event_timestamp", "trips"]
    );
    assert_eq!(
        strings(&answer[0], "type"),
        ["int64", "timestamp[us, tz=UTC]", "int64"]
    );

    // A push source stands for its batch source (the view's batch_source in Feast).
    let proto = json!({"type": "PUSH_SOURCE", "name": "driver_push"});
    let answer = exchange(&mut client, &columns_command(proto), placeholder())
        .await
        .unwrap();
    assert_eq!(strings(&answer[0], "name").len(), 3);

    // An unknown name with the path of a real Parquet file: not found, the file unread.
    let proto = json!({
        "type": "BATCH_FILE",
        "name": "stolen",
        "fileOptions": {"uri": outside},
    });
    let e = exchange(&mut client, &columns_command(proto), placeholder())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let detail = feast_error(&e);
    assert_eq!(detail["class"], "DataSourceObjectNotFoundException");
    assert!(
        detail["message"].as_str().unwrap().contains("stolen"),
        "{detail}"
    );
    assert!(!e.message().contains("secret_column"), "{e:?}");

    // Another project's source of that name is not this server's.
    let proto = json!({"name": "driver_src", "project": "someone_else"});
    let e = exchange(&mut client, &columns_command(proto), placeholder())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    // A malformed proto is the caller's mistake, named.
    let mut bad = columns_command(json!({}));
    bad["data_source_proto"] = json!("{not json");
    let e = exchange(&mut client, &bad, placeholder())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("data_source_proto"), "{e:?}");

    // `feast apply`'s validate_data_source: known or not (a new source), it succeeds, reading
    // no path of the request; a malformed one is refused.
    for name in ["driver_src", "brand_new"] {
        let mut command = columns_command(json!({"name": name, "fileOptions": {"uri": outside}}));
        command["api"] = json!("validate_data_source");
        put(&mut client, &command, placeholder()).await.unwrap();
    }
    let mut command = columns_command(json!({"fileOptions": {"uri": outside}}));
    command["api"] = json!("validate_data_source");
    let e = put(&mut client, &command, placeholder()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // The older protocol: DoPut, GetFlightInfo, DoGet.
    let command = columns_command(json!({"name": "driver_src"}));
    put(&mut client, &command, placeholder()).await.unwrap();
    let info = client
        .get_flight_info(FlightDescriptor::new_cmd(command.to_string()))
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let got: Vec<RecordBatch> = client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        strings(&got[0], "name"),
        ["driver_id", "event_timestamp", "trips"]
    );
}

fn historical(drivers: &[i64], hour: i64) -> (Value, RecordBatch) {
    let command = json!({
        "command_id": "h1",
        "api": "get_historical_features",
        "feature_view_names": ["driver_stats"],
        "name_aliases": [null],
        "feature_refs": ["driver_stats:trips"],
        "project": PROJECT,
        "full_feature_names": false,
    });
    let entities = RecordBatch::try_from_iter([
        (
            "driver_id",
            Arc::new(Int64Array::from(drivers.to_vec())) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(
                TimestampMicrosecondArray::from(vec![at(hour) * 1_000_000; drivers.len()])
                    .with_timezone("UTC"),
            ),
        ),
    ])
    .unwrap();
    (command, entities)
}

fn trips_of(batches: &[RecordBatch]) -> Vec<Option<i64>> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("trips")
                .unwrap()
                .as_primitive::<Int64Type>()
                .iter()
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn offline_write_batch_appends_to_the_views_source_and_reads_back() {
    let dir = repo(DEFINITIONS, 10);
    let mut client = flight(dir.path(), None).await;
    assert_eq!(row_count(dir.path()), 10);

    // Through the push view (its batch source is the push source's), then the batch view;
    // columns in another order than the file's, times naive nanoseconds (pandas').
    put(
        &mut client,
        &write_command("driver_fresh"),
        rows(&[3, 11], 2, &[300, 1100]),
    )
    .await
    .unwrap();
    put(
        &mut client,
        &write_command("driver_stats"),
        rows(&[12], 3, &[1200]),
    )
    .await
    .unwrap();
    assert_eq!(row_count(dir.path()), 13);
    // Written in the file's own schema: a reader of the source sees one table.
    let batches = file_rows(dir.path());
    let schema = batches[0].schema();
    assert!(batches.iter().all(|b| b.schema() == schema));
    assert_eq!(
        schema
            .field_with_name("event_timestamp")
            .unwrap()
            .data_type(),
        &arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("UTC".into()))
    );

    // get_historical_features sees them: driver 3 before and after its pushed row.
    let (command, entities) = historical(&[3, 11, 12, 5], 4);
    let got = exchange(&mut client, &command, entities).await.unwrap();
    assert_eq!(trips_of(&got), [Some(300), Some(1100), Some(1200), Some(4)]);
    let (command, entities) = historical(&[3, 11], 1);
    let got = exchange(&mut client, &command, entities).await.unwrap();
    assert_eq!(trips_of(&got), [Some(2), None]);

    // A narrower integer column is widened to the source's type; an empty table writes nothing.
    let narrow = RecordBatch::try_from_iter([
        (
            "driver_id",
            Arc::new(Int32Array::from(vec![13])) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampNanosecondArray::from(vec![at(3) * 1_000_000_000])),
        ),
        ("trips", Arc::new(Int32Array::from(vec![1300]))),
    ])
    .unwrap();
    put(&mut client, &write_command("driver_stats"), narrow.clone())
        .await
        .unwrap();
    put(
        &mut client,
        &write_command("driver_stats"),
        narrow.slice(0, 0),
    )
    .await
    .unwrap();
    assert_eq!(row_count(dir.path()), 14);
}

#[tokio::test]
async fn bad_writes_name_the_column_and_write_nothing() {
    let dir = repo(DEFINITIONS, 10);
    let before = std::fs::read(dir.path().join("data/driver.parquet")).unwrap();
    let mut client = flight(dir.path(), Some(3)).await;
    let good = rows(&[11], 2, &[1]);

    let mut cases: Vec<(&str, Value, RecordBatch, tonic::Code, &str)> = vec![
        (
            "unknown view",
            write_command("nope"),
            good.clone(),
            tonic::Code::NotFound,
            "nope",
        ),
        (
            "two views",
            json!({"api": "offline_write_batch", "feature_view_names": ["driver_stats", "driver_fresh"], "name_aliases": [null, null]}),
            good.clone(),
            tonic::Code::InvalidArgument,
            "feature_view_names",
        ),
        (
            "too many rows",
            write_command("driver_stats"),
            rows(&[1, 2, 3, 4], 2, &[1, 2, 3, 4]),
            tonic::Code::ResourceExhausted,
            "at most 3",
        ),
    ];
    let with = |name: &str, array: ArrayRef| {
        let mut columns: Vec<(String, ArrayRef)> = good
            .schema()
            .fields()
            .iter()
            .zip(good.columns())
            .filter(|(f, _)| f.name() != name)
            .map(|(f, a)| (f.name().clone(), Arc::clone(a)))
            .collect();
        columns.push((name.to_owned(), array));
        RecordBatch::try_from_iter(columns).unwrap()
    };
    cases.push((
        "a string feature",
        write_command("driver_stats"),
        with("trips", Arc::new(StringArray::from(vec!["many"]))),
        tonic::Code::InvalidArgument,
        "\"trips\"",
    ));
    cases.push((
        "a float for an integer",
        write_command("driver_stats"),
        with("trips", Arc::new(Float64Array::from(vec![1.5]))),
        tonic::Code::InvalidArgument,
        "\"trips\"",
    ));
    cases.push((
        "event times as strings",
        write_command("driver_stats"),
        with(
            "event_timestamp",
            Arc::new(StringArray::from(vec!["2026-01-01T02:00:00"])),
        ),
        tonic::Code::InvalidArgument,
        "\"event_timestamp\"",
    ));
    cases.push((
        "a column the source lacks",
        write_command("driver_stats"),
        with("colour", Arc::new(StringArray::from(vec!["red"]))),
        tonic::Code::InvalidArgument,
        "\"colour\" is not a column",
    ));
    let mut missing = good.clone();
    missing.remove_column(0);
    cases.push((
        "no event time",
        write_command("driver_stats"),
        missing,
        tonic::Code::InvalidArgument,
        "no column \"event_timestamp\"",
    ));
    for (what, command, batch, code, needle) in cases {
        let e = put(&mut client, &command, batch).await.expect_err(what);
        assert_eq!(e.code(), code, "{what}: {e:?}");
        let detail = feast_error(&e);
        let message = detail["message"].as_str().unwrap();
        assert!(message.contains(needle), "{what}: {message}");
        if code == tonic::Code::NotFound {
            assert_eq!(detail["class"], "FeatureViewNotFoundException", "{what}");
        }
    }
    assert_eq!(
        std::fs::read(dir.path().join("data/driver.parquet")).unwrap(),
        before,
        "a refused write changed the source"
    );
    // No temp or part file is left; the append's cross-process lock file (`.driver.parquet.lock`,
    // taken to read the file's schema) stays, as flock's lock files do.
    let mut leftovers: Vec<_> = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    leftovers.sort();
    assert!(
        leftovers == ["driver.parquet"] || leftovers == [".driver.parquet.lock", "driver.parquet"],
        "{leftovers:?}"
    );
}

#[tokio::test]
async fn writes_need_the_token_when_one_is_set() {
    let dir = repo(DEFINITIONS, 10);
    let addr = start(dir.path(), Some("s3cret"), None).await;
    let mut client = connect(addr, Some("s3cret")).await;
    put(
        &mut client,
        &write_command("driver_stats"),
        rows(&[11], 2, &[1]),
    )
    .await
    .unwrap();
    assert_eq!(row_count(dir.path()), 11);

    for token in [None, Some("guess")] {
        let mut other = connect(addr, token).await;
        for command in [
            write_command("driver_stats"),
            columns_command(json!({"name": "driver_src"})),
        ] {
            let e = put(&mut other, &command, rows(&[12], 2, &[1]))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        }
        let e = exchange(
            &mut other,
            &columns_command(json!({"name": "driver_src"})),
            placeholder(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    }
    assert_eq!(row_count(dir.path()), 11);
}

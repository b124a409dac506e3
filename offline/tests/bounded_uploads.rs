//! Issue 19, bounded memory in the offline servers: uploads reserve their memory from one budget
//! shared by every request (excess waits, then 503 / RESOURCE_EXHAUSTED; larger than all of it,
//! 413), and `DoPut` tables expire and make room, so abandoned puts cannot lock the
//! DoPut → GetFlightInfo → DoGet path out (before: after 64 of them, RESOURCE_EXHAUSTED until a
//! restart; tables were kept forever).

mod support;

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_flight::client::FlightClient;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightDescriptor, Ticket};
use futures::TryStreamExt as _;
use quiver_offline::budget::MemoryBudget;
use quiver_offline::flight::OfflineServer;
use quiver_offline::historical::{EngineOptions, HistoricalEngine};
use support::{post, repo, start_http_with};

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

async fn flight(server: OfflineServer) -> FlightClient {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
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

fn server(dir: &std::path::Path) -> OfflineServer {
    OfflineServer::new(
        HistoricalEngine::new(&EngineOptions::default()).unwrap(),
        support::registry(dir),
        None,
    )
}

fn command(id: usize) -> Vec<u8> {
    serde_json::json!({
        "command_id": id.to_string(),
        "api": "get_historical_features",
        "feature_view_names": ["driver_stats"],
        "name_aliases": [null],
        "feature_refs": ["driver_stats:trips"],
        "project": support::PROJECT,
        "full_feature_names": false,
    })
    .to_string()
    .into_bytes()
}

/// An entity table of `rows` rows (16 bytes each): drivers 1, 2, ... at hour 5.
fn entities(rows: usize) -> RecordBatch {
    RecordBatch::try_from_iter([
        (
            "driver_id",
            Arc::new(Int64Array::from_iter_values(
                (1..=rows as i64).map(|i| i % 10 + 1),
            )) as arrow_array::ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(
                TimestampMicrosecondArray::from(vec![support::at(5) * 1_000_000; rows])
                    .with_timezone("UTC"),
            ),
        ),
    ])
    .unwrap()
}

fn upload(
    cmd: &[u8],
    batch: RecordBatch,
) -> impl futures::Stream<Item = arrow_flight::error::Result<arrow_flight::FlightData>> + Send + 'static
{
    FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(cmd.to_vec())))
        .build(futures::stream::iter([Ok(batch)]))
}

async fn put(client: &mut FlightClient, cmd: &[u8], rows: usize) -> Result<(), tonic::Status> {
    match client.do_put(upload(cmd, entities(rows))).await {
        Ok(results) => results.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(e) => Err(e),
    }
    .map_err(status)
}

/// GetFlightInfo then DoGet for `cmd`: the rows answered.
async fn get(client: &mut FlightClient, cmd: &[u8]) -> Result<usize, tonic::Status> {
    let info = client
        .get_flight_info(FlightDescriptor::new_cmd(cmd.to_vec()))
        .await
        .map_err(status)?;
    let ticket: Ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<RecordBatch> = client
        .do_get(ticket)
        .await
        .map_err(status)?
        .try_collect()
        .await
        .map_err(status)?;
    Ok(batches.iter().map(RecordBatch::num_rows).sum())
}

async fn exchange(
    client: &mut FlightClient,
    cmd: &[u8],
    rows: usize,
) -> Result<usize, tonic::Status> {
    let batches: Vec<RecordBatch> = client
        .do_exchange(upload(cmd, entities(rows)))
        .await
        .map_err(status)?
        .try_collect()
        .await
        .map_err(status)?;
    Ok(batches.iter().map(RecordBatch::num_rows).sum())
}

/// Waits until every reservation is given back (an answer's last bytes reach the client just
/// before its stream, which holds the reservation, is dropped).
async fn settled(budget: &MemoryBudget) -> bool {
    for _ in 0..100 {
        if budget.available() == budget.bytes() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn status(e: FlightError) -> tonic::Status {
    match e {
        FlightError::Tonic(s) => *s,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

#[tokio::test]
async fn abandoned_doputs_never_lock_out_the_doget_path() {
    let dir = repo(DEFINITIONS, 10);
    let mut client = flight(server(dir.path())).await;
    // More abandoned puts than may wait: before, the 65th and every later put failed with
    // RESOURCE_EXHAUSTED until a restart.
    for i in 0..70 {
        put(&mut client, &command(i), 4).await.unwrap();
    }
    put(&mut client, &command(1000), 4).await.unwrap();
    assert_eq!(get(&mut client, &command(1000)).await.unwrap(), 4);
    // The oldest made room.
    let gone = get(&mut client, &command(0)).await.unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");
    // A recent one is still there.
    assert_eq!(get(&mut client, &command(69)).await.unwrap(), 4);
}

#[tokio::test]
async fn doput_tables_expire_and_give_their_memory_back() {
    let dir = repo(DEFINITIONS, 10);
    let budget = MemoryBudget::new(64 << 20, Duration::from_millis(100));
    let mut client = flight(
        server(dir.path())
            .with_budget(budget.clone())
            .with_pending_limits(Duration::from_millis(300), 32 << 20),
    )
    .await;
    put(&mut client, &command(1), 10_000).await.unwrap();
    assert!(
        budget.available() < budget.bytes() - 160_000,
        "the parked table holds its memory"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gone = get(&mut client, &command(1)).await.unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");
    assert!(gone.message().contains("expired"), "{gone:?}");
    assert!(settled(&budget).await);
}

#[tokio::test]
async fn flight_uploads_share_the_budget_wait_then_are_refused() {
    let dir = repo(DEFINITIONS, 10);
    // 1 MiB: a 40k-row table (640 kB) parked by DoPut leaves too little for a 30k-row one.
    let budget = MemoryBudget::new(1 << 20, Duration::from_millis(200));
    let mut client = flight(
        server(dir.path())
            .with_budget(budget.clone())
            .with_pending_limits(Duration::from_secs(60), 1 << 20),
    )
    .await;
    let too_big = exchange(&mut client, &command(1), 100_000)
        .await
        .unwrap_err();
    assert_eq!(
        too_big.code(),
        tonic::Code::ResourceExhausted,
        "{too_big:?}"
    );
    assert!(too_big.message().contains("--upload-memory"), "{too_big:?}");

    put(&mut client, &command(2), 40_000).await.unwrap();
    let busy = exchange(&mut client, &command(3), 30_000)
        .await
        .unwrap_err();
    assert_eq!(busy.code(), tonic::Code::ResourceExhausted, "{busy:?}");
    assert!(busy.message().contains("retry later"), "{busy:?}");
    // Once the parked table is read, its memory is free again.
    assert_eq!(get(&mut client, &command(2)).await.unwrap(), 40_000);
    assert_eq!(
        exchange(&mut client, &command(3), 30_000).await.unwrap(),
        30_000
    );
    assert!(settled(&budget).await);
}

#[tokio::test]
async fn http_bodies_share_the_budget_wait_then_get_503() {
    let dir = repo(DEFINITIONS, 10);
    let budget = MemoryBudget::new(256 << 10, Duration::from_millis(200));
    let addr = start_http_with(dir.path(), &EngineOptions::default(), budget.clone()).await;
    let body = |rows: usize| {
        serde_json::json!({
            "features": ["driver_stats:trips"],
            "entities": {
                "driver_id": vec![1; rows],
                "event_timestamp": vec!["2026-01-01T05:00:00Z"; rows],
            },
        })
        .to_string()
    };
    let (status, answer) = post(addr, "/v1/historical", &body(100)).await;
    assert_eq!(status, 200, "{answer}");
    // Larger than the whole budget.
    let (status, answer) = post(addr, "/v1/historical", &body(20_000)).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("--upload-memory"),
        "{answer}"
    );
    // Other requests hold the budget: the request waits, then is told to retry.
    let held = budget.reserve(200 << 10, "another request").await.unwrap();
    let (status, answer) = post(addr, "/v1/historical", &body(1000)).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("Overloaded")),
        "{answer}"
    );
    drop(held);
    let (status, answer) = post(addr, "/v1/historical", &body(1000)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(settled(&budget).await);
}

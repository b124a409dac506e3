//! Support for online-store's tests: options for the servers quiver-testkit starts, one view's
//! layout, rows to write and a read that decodes them.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_core::time::Timestamp;
use quiver_core::{Value, entity_key};
use quiver_online_store::redis_store::SentinelOptions;
use quiver_online_store::{KeyRead, OnlineStore, RedisOptions, ViewLayout, WriteRow};
use quiver_testkit::RedisServer;

pub const PROJECT: &str = "demo";

/// A standalone server's options.
pub fn options(port: u16) -> RedisOptions {
    RedisOptions {
        host: "127.0.0.1".into(),
        port,
        cluster_nodes: Vec::new(),
        db: 0,
        username: None,
        password: None,
        ssl: false,
        ssl_ca_certs: None,
        ssl_insecure: false,
        connect_timeout: Duration::from_secs(2),
        sentinel: None,
    }
}

/// A cluster's options, every node a seed.
pub fn cluster_options(nodes: &[RedisServer]) -> RedisOptions {
    RedisOptions {
        cluster_nodes: nodes
            .iter()
            .map(|n| ("127.0.0.1".to_owned(), n.port))
            .collect(),
        ..options(nodes[0].port)
    }
}

/// A TLS server's options, trusting the CA in `ca` (or none: the system's).
pub fn tls_options(port: u16, ca: Option<&Path>) -> RedisOptions {
    RedisOptions {
        ssl: true,
        ssl_ca_certs: ca.map(Path::to_path_buf),
        ..options(port)
    }
}

/// Feast's `redis_sentinel`: the master `mymaster` named by the sentinel on `sentinel_port`.
pub fn sentinel_options(sentinel_port: u16) -> RedisOptions {
    RedisOptions {
        sentinel: Some(SentinelOptions {
            sentinels: vec![("127.0.0.1".into(), sentinel_port)],
            master_name: "mymaster".into(),
        }),
        connect_timeout: Duration::from_secs(1),
        ..options(sentinel_port)
    }
}

/// The view `stats` (features `trips`, `name`) of project `demo`.
pub fn layout() -> Arc<ViewLayout> {
    Arc::new(ViewLayout::new(
        PROJECT,
        "stats",
        ["trips", "name"].map(String::from),
    ))
}

pub fn ts(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

/// Entity key v3 of a driver, without the project.
pub fn key(driver: i64) -> Vec<u8> {
    entity_key::serialize(&[("driver_id", &Value::Int64(driver))]).unwrap()
}

/// A row of `stats` for a driver at `seconds`: `trips` and `name` = `d<driver>`.
pub fn row(driver: i64, seconds: i64, trips: i64) -> WriteRow {
    WriteRow::new(
        key(driver),
        ts(seconds),
        None,
        &[
            Value::Int64(trips).encode_to_vec(),
            Value::String(format!("d{driver}")).encode_to_vec(),
        ],
    )
}

/// Reads `stats` of drivers back: (event seconds, trips, name) or None.
pub async fn read(store: &OnlineStore, drivers: &[i64]) -> Vec<Option<(i64, Value, Value)>> {
    let keys: Vec<Vec<u8>> = drivers.iter().map(|&d| key(d)).collect();
    let reads: Vec<KeyRead<'_>> = keys
        .iter()
        .map(|k| KeyRead {
            entity_key: k,
            views: &[0],
        })
        .collect();
    let rows = store.read(&[layout()], &reads).await.unwrap();
    rows.into_iter()
        .map(|mut r| {
            r.remove(0).map(|row| {
                let v =
                    |i: usize| Value::decode(row.values[i].as_deref().unwrap_or_default()).unwrap();
                (row.event_ts.seconds, v(0), v(1))
            })
        })
        .collect()
}

/// `(seconds, trips, name)` as [`read`] returns a row written by [`row`].
pub fn expected(driver: i64, seconds: i64, trips: i64) -> Option<(i64, Value, Value)> {
    Some((
        seconds,
        Value::Int64(trips),
        Value::String(format!("d{driver}")),
    ))
}

/// Polls `ok` every 50 ms until it holds, or panics after `secs` naming `what`.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    secs: u64,
    mut ok: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok().await {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next invalidation of a feed, within 10 s.
pub async fn next(
    inv: &mut quiver_online_store::redis_store::Invalidations,
) -> quiver_online_store::redis_store::Invalidation {
    tokio::time::timeout(Duration::from_secs(10), inv.rx.recv())
        .await
        .expect("an invalidation within 10 s")
        .expect("the feed is open")
}

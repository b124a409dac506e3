//! The sidecar over Redis Sentinel (Feast's `redis_type: redis_sentinel`): a real master, a
//! real replica and a real `redis-server --sentinel`. The store finds the master through the
//! sentinel, serves and writes, and follows two failovers by itself: a `SENTINEL failover`
//! (the old master becomes a replica) and a killed master. Keyspace notifications follow the
//! master too (turned on by the sidecar on the promoted replica, which had them off).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_core::Value;
use quiver_online_store::redis_store::SentinelOptions;
use quiver_online_store::{OnlineStore, RedisOptions, RedisStore};
use quiver_sidecar::push::PushConfig;
use quiver_sidecar::{EngineConfig, SidecarConfig};
use serde_json::json;
use support::*;

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: src, path: data/src.parquet, timestamp_field: event_timestamp}
  - {name: src_push, type: push, batch_source: src}
feature_views:
  - name: stats
    entities: [driver]
    source: src_push
    schema: [{name: trips, dtype: Int64}]
"#;

fn info_replication(port: u16) -> String {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    match client.get_connection() {
        Ok(mut c) => redis::cmd("INFO")
            .arg("replication")
            .query(&mut c)
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until the server on `port` is a replica of `master` with its link up.
fn wait_replicating(port: u16, master: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = info_replication(port);
        if info.contains(&format!("master_port:{master}")) && info.contains("master_link_status:up")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{port} never replicated {master}: {info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until_async<F: std::future::Future<Output = bool>>(
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

fn write_trips(port: u16, driver: i64, trips: i64) {
    write_trips_to(&format!("redis://127.0.0.1:{port}/"), driver, trips)
}

fn write_trips_to(url: &str, driver: i64, trips: i64) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    write_redis_row(
        &mut conn,
        "demo",
        &[("driver_id", Value::Int64(driver))],
        "stats",
        &[("trips", Value::Int64(trips))],
        now_ts(),
    );
}

async fn trips(sidecar: &Sidecar, drivers: &[i64]) -> (u16, Vec<serde_json::Value>) {
    let (status, resp) = post(
        sidecar.addr,
        json!({"features": ["stats:trips"], "entities": {"driver_id": drivers}}),
    )
    .await;
    if status != 200 {
        return (status, Vec::new());
    }
    (status, column(&resp, "trips").0.clone())
}

async fn push(sidecar: &Sidecar, driver: i64, ts: &str, trips: i64) -> (u16, serde_json::Value) {
    let body = json!({"push_source_name": "src_push", "df": {
        "driver_id": [driver], "event_timestamp": [ts], "trips": [trips]}});
    let (status, text) = http(sidecar.addr, "POST", "/push", body.to_string().as_bytes()).await;
    (status, serde_json::from_str(&text).unwrap_or(json!(text)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_sentinels_master_through_failovers() {
    let mut a = RedisServer::start();
    let b = RedisServer::start_with(&["--replicaof", "127.0.0.1", &a.port.to_string()]);
    wait_replicating(b.port, a.port);
    let sentinel = Sentinel::start(a.port);
    write_trips(a.port, 1, 10);
    write_trips(a.port, 2, 20);

    let repo = Repo::new("demo", DEFS);
    let options = RedisOptions {
        host: "127.0.0.1".into(),
        port: sentinel.port,
        cluster_nodes: Vec::new(),
        db: 0,
        username: None,
        password: None,
        ssl: false,
        ssl_ca_certs: None,
        ssl_insecure: false,
        connect_timeout: Duration::from_secs(1),
        sentinel: Some(SentinelOptions {
            // A sentinel that is down comes first: the next one is asked.
            sentinels: vec![
                ("127.0.0.1".into(), free_port()),
                ("127.0.0.1".into(), sentinel.port),
            ],
            master_name: "mymaster".into(),
        }),
    };
    let store = Arc::new(RedisStore::connect(options, "demo").await.unwrap());
    assert_eq!(store.sentinel_master(), Some(("127.0.0.1".into(), a.port)));
    let config = SidecarConfig {
        // The replica has notifications off: the sidecar turns them on on each master.
        enable_keyspace_notifications: true,
        push: Some(PushConfig::default()),
        engine: EngineConfig {
            max_staleness: Duration::from_secs(60),
            watched_staleness: Duration::from_secs(600),
            ..EngineConfig::default()
        },
        ..SidecarConfig::default()
    };
    let sidecar = start_sidecar(
        config,
        "demo",
        repo.registry_path(),
        OnlineStore::Redis(Arc::clone(&store)),
    )
    .await;
    let live = || async { metric(sidecar.addr, "quiver_change_feed_live").await == 1.0 };
    wait_until_async("the change feed is live", 10, live).await;
    assert_eq!(
        trips(&sidecar, &[1, 2]).await,
        (200, vec![json!(10), json!(20)])
    );
    let (status, body) = push(&sidecar, 3, "2026-01-01T10:00:00Z", 30).await;
    assert_eq!((status, body["written"].clone()), (200, json!(1)), "{body}");

    // 1. A planned failover: the replica is promoted, the old master becomes its replica.
    wait_until("the sentinel is ready to fail over", 20, || {
        redis::cmd("SENTINEL")
            .arg("failover")
            .arg("mymaster")
            .query::<()>(&mut sentinel.conn())
            .is_ok()
    })
    .await;
    wait_until("the sentinel names the replica", 20, || {
        sentinel.master_port() == Some(b.port)
    })
    .await;
    let moved = || async { store.sentinel_master() == Some(("127.0.0.1".into(), b.port)) };
    wait_until_async("the store follows the new master", 5, moved).await;
    // The feed moves too: lost while it resubscribes, then live on the new master.
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_until_async("the change feed is live on the new master", 10, live).await;
    assert!(
        info_replication(b.port).contains("role:master"),
        "the store follows a node that is a master"
    );
    // A change on the new master reaches the cache at once (the bound is 60 s).
    write_trips(b.port, 1, 11);
    let changed = || async { trips(&sidecar, &[1]).await == (200, vec![json!(11)]) };
    wait_until_async("the change is served", 3, changed).await;
    // Writes go to the new master: the old one is a read-only replica now.
    let (status, body) = push(&sidecar, 3, "2026-01-01T11:00:00Z", 31).await;
    assert_eq!((status, body["written"].clone()), (200, json!(1)), "{body}");
    assert_eq!(trips(&sidecar, &[3]).await, (200, vec![json!(31)]));

    // 2. The master dies: the sentinel promotes the old master back, the store follows.
    wait_replicating(a.port, b.port);
    drop(b);
    wait_until("the sentinel promotes the other node", 30, || {
        sentinel.master_port() == Some(a.port)
    })
    .await;
    let back = || async { store.sentinel_master() == Some(("127.0.0.1".into(), a.port)) };
    wait_until_async("the store follows it", 5, back).await;
    let (status, body) = push(&sidecar, 3, "2026-01-01T12:00:00Z", 32).await;
    assert_eq!((status, body["written"].clone()), (200, json!(1)), "{body}");
    // Everything written before the failovers was replicated and is served from the new
    // master; the push just made too.
    wait_until_async("the change feed is live again", 10, live).await;
    let all = || async {
        trips(&sidecar, &[1, 2, 3]).await == (200, vec![json!(11), json!(20), json!(32)])
    };
    wait_until_async("every row is served from the new master", 5, all).await;
    let status = http(sidecar.addr, "GET", "/ready", b"").await.0;
    assert_eq!(status, 200);
    a.kill();
}

/// The master does not answer when the sidecar starts (hung: SIGSTOP): it serves 503s (not
/// ready) while the sentinel watcher keeps asking, connects once the master answers, and
/// replicate mode then loads every row of the view from it. The master wants a password and the
/// sentinel does not: as with Feast, `password` goes to the master only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_when_the_master_answers_and_replicates_it() {
    let master = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let master_port = master.port;
    for id in 0..300 {
        write_trips_to(
            &format!("redis://:s3cret@127.0.0.1:{master_port}/"),
            id,
            id * 2,
        );
    }
    let sentinel = Sentinel::start_with(master_port, "sentinel auth-pass mymaster s3cret\n");
    master.pause();
    let repo = Repo::new("demo", DEFS);
    let options = RedisOptions {
        host: "127.0.0.1".into(),
        port: sentinel.port,
        cluster_nodes: Vec::new(),
        db: 0,
        username: None,
        password: Some("s3cret".into()),
        ssl: false,
        ssl_ca_certs: None,
        ssl_insecure: false,
        connect_timeout: Duration::from_millis(500),
        sentinel: Some(SentinelOptions {
            sentinels: vec![("127.0.0.1".into(), sentinel.port)],
            master_name: "mymaster".into(),
        }),
    };
    let store = RedisStore::connect_in_background(options, "demo")
        .await
        .unwrap();
    assert_eq!(store.sentinel_master(), None);
    let config = SidecarConfig {
        replicate: vec!["stats".into()],
        ..SidecarConfig::default()
    };
    let sidecar = start_sidecar(
        config,
        "demo",
        repo.registry_path(),
        OnlineStore::Redis(Arc::clone(&store)),
    )
    .await;
    let (status, body) = http(sidecar.addr, "GET", "/ready", b"").await;
    assert_eq!(status, 503, "{body}");

    master.resume();
    let ready = || async { http(sidecar.addr, "GET", "/ready", b"").await.0 == 200 };
    wait_until_async("ready once the master answers and is loaded", 15, ready).await;
    assert_eq!(
        store.sentinel_master(),
        Some(("127.0.0.1".into(), master_port))
    );
    let ids: Vec<i64> = (0..300).collect();
    let (status, values) = trips(&sidecar, &ids).await;
    assert_eq!(status, 200);
    assert_eq!(values, ids.iter().map(|i| json!(i * 2)).collect::<Vec<_>>());
    assert_eq!(
        metric(sidecar.addr, "quiver_cache_misses_total").await,
        0.0,
        "every read of the replicated view is a hit"
    );
}

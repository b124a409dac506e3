//! The Redis store through Redis Sentinel (Feast's `redis_sentinel`): a real master, a real
//! replica and a real `redis-server --sentinel`. The store finds the master through the
//! sentinel, reads and writes it, and follows a planned failover to the replica.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_online_store::{OnlineStore, RedisStore};
use quiver_testkit::{RedisServer, Sentinel};
use support::*;

fn info_replication(port: u16) -> String {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection())
        .and_then(|mut c| redis::cmd("INFO").arg("replication").query(&mut c))
        .unwrap_or_default()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_the_master_and_follows_a_failover() {
    let a = RedisServer::start();
    let b = RedisServer::start_with(&["--replicaof", "127.0.0.1", &a.port.to_string()]);
    wait_replicating(b.port, a.port);
    let sentinel = Sentinel::start(a.port);

    let raw = Arc::new(
        RedisStore::connect(sentinel_options(sentinel.port), PROJECT)
            .await
            .unwrap(),
    );
    assert!(raw.is_sentinel());
    assert_eq!(raw.sentinel_master(), Some(("127.0.0.1".into(), a.port)));
    let store = OnlineStore::Redis(Arc::clone(&raw));
    store
        .write(
            &layout(),
            vec![row(1, 100, 10), row(2, 100, 20)].into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        read(&store, &[1, 2]).await,
        [expected(1, 100, 10), expected(2, 100, 20)]
    );

    // A planned failover: the replica is promoted; the store follows and writes there.
    wait_replicating(b.port, a.port);
    eventually("the sentinel is ready to fail over", 20, || async {
        redis::cmd("SENTINEL")
            .arg("failover")
            .arg("mymaster")
            .query::<()>(&mut sentinel.conn())
            .is_ok()
    })
    .await;
    eventually("the store follows the new master", 20, || async {
        raw.sentinel_master() == Some(("127.0.0.1".into(), b.port))
    })
    .await;
    eventually("a write lands on the new master", 10, || async {
        store
            .write(&layout(), vec![row(3, 100, 30)].into(), None)
            .await
            .is_ok()
    })
    .await;
    assert!(info_replication(b.port).contains("role:master"));
    assert_eq!(
        read(&store, &[1, 2, 3]).await,
        [
            expected(1, 100, 10),
            expected(2, 100, 20),
            expected(3, 100, 30)
        ]
    );
}

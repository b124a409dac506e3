//! quiver-testkit: the real servers quiver's tests run against, started by the test itself on
//! free loopback ports and stopped when dropped.
//!
//! - [`RedisServer`]: one `redis-server` (plain or TLS-only, any extra arguments: keyspace
//!   notifications, `--requirepass`, `--replicaof`, cluster mode), killed on drop; it can be
//!   killed, restarted on the same port, paused (SIGSTOP) and resumed.
//! - [`start_cluster`], [`start_cluster_of`]: a Redis Cluster built with `redis-cli --cluster
//!   create`, optionally with replicas and TLS everywhere.
//! - [`Sentinel`]: a `redis-server --sentinel` watching `mymaster`.
//! - [`certificates`], [`tls_args`]: a CA, a server certificate for 127.0.0.1 and an untrusted
//!   CA made with `openssl`, and the server flags that use them.
//! - [`postgres::TestDb`] (feature `postgres`): a fresh database on `QUIVER_TEST_POSTGRES`.
//! - [`spark`]: a real Spark Connect server (pyspark's, `local[2]`), one per test process,
//!   killed with the process; tests skip without Spark, and fail under `CI=1`.
//! - [`feast`]: rows written in Feast's Redis layout, as Feast's Python writes them.
//! - [`replay_corpus`]: a fuzz target's committed corpus replayed as a regular test.
//!
//! Test code: it panics with a message saying what is missing (redis-server, openssl,
//! PostgreSQL) instead of returning errors.

mod cluster;
mod corpus;
pub mod feast;
#[cfg(feature = "postgres")]
pub mod postgres;
mod redis_server;
mod sentinel;
pub mod spark;
mod tls;

pub use cluster::{start_cluster, start_cluster_of};
pub use corpus::replay_corpus;
pub use redis_server::{RedisServer, redis_cli};
pub use sentinel::Sentinel;
pub use tls::{certificates, openssl, tls_args};

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until something accepts connections on `port` of 127.0.0.1, or panics naming `what`.
pub(crate) fn wait_listening(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not start on port {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

//! Feast's Redis layout over a multiplexed, self-reconnecting connection.
//!
//! Length: the connection (standalone, sentinel's master or cluster, plain or TLS, swapped whole
//! by the background task) and the reads and writes that share it; what is per node and per
//! sentinel already lives in `redis_store/nodes.rs` and `redis_store/sentinel.rs`.

use std::sync::Arc;
use std::time::Duration;

use quiver_core::backoff::Backoff;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;

mod nodes;
mod sentinel;

use crate::{
    KeyRead, ReadResult, StoreError, StoredRow, ViewLayout, WriteRow, WriteStats, decode_ts,
    newer_than_stored,
};

/// Where and how to connect (from Feast's `connection_string`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    pub host: String,
    pub port: u16,
    /// Redis Cluster: the seed nodes (`host:port` entries of the connection string). Empty for a
    /// standalone server.
    pub cluster_nodes: Vec<(String, u16)>,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ssl: bool,
    /// With `ssl`: a PEM file of the CA(s) to trust instead of the system's (redis-py's
    /// `ssl_ca_certs`).
    pub ssl_ca_certs: Option<std::path::PathBuf>,
    /// With `ssl`: skip certificate verification (redis-py's `ssl_cert_reqs=none`).
    pub ssl_insecure: bool,
    /// How long to wait for a connection to open.
    pub connect_timeout: Duration,
    /// Redis Sentinel: the sentinels that name the master. `None` for a standalone server or a
    /// cluster.
    pub sentinel: Option<SentinelOptions>,
}

/// Feast's `redis_type: redis_sentinel`: the sentinels of the connection string and
/// `sentinel_master`. As redis-py's `Sentinel` does with Feast's options, the sentinels are
/// asked over plain TCP without credentials; `db`, `password`, `username` and `ssl` apply to
/// the master they name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelOptions {
    pub sentinels: Vec<(String, u16)>,
    pub master_name: String,
}

impl RedisOptions {
    /// The connection of one node (`host:port`) with these options' credentials, db and TLS.
    fn node_info(&self, host: &str, port: u16) -> Result<redis::ConnectionInfo, StoreError> {
        let addr = if self.ssl {
            redis::ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: self.ssl_insecure,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host.to_owned(), port)
        };
        let mut redis_info = redis::RedisConnectionInfo::default().set_db(self.db);
        if let Some(u) = &self.username {
            redis_info = redis_info.set_username(u.clone());
        }
        if let Some(p) = &self.password {
            redis_info = redis_info.set_password(p.clone());
        }
        use redis::IntoConnectionInfo as _;
        Ok(addr
            .into_connection_info()
            .map_err(unavailable)?
            .set_redis_settings(redis_info))
    }

    /// The PEM of `ssl_ca_certs` (with `ssl`), read once per store so that a node discovered
    /// later (a cluster's masters, a sentinel's new master) trusts the same CA.
    fn tls_root(&self) -> Result<Option<Arc<[u8]>>, StoreError> {
        match (&self.ssl_ca_certs, self.ssl) {
            (Some(path), true) => std::fs::read(path)
                .map(|pem| Some(pem.into()))
                .map_err(|e| {
                    StoreError::Unavailable(format!("ssl_ca_certs {}: {e}", path.display()))
                }),
            _ => Ok(None),
        }
    }

    /// A client for one node (TLS with the configured CA when asked).
    fn node_client(
        &self,
        host: &str,
        port: u16,
        root: Option<&Arc<[u8]>>,
    ) -> Result<redis::Client, StoreError> {
        let info = self.node_info(host, port)?;
        match root {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            )
            .map_err(unavailable),
            None => redis::Client::open(info).map_err(unavailable),
        }
    }

    /// Where the store lives, for messages: `host:port`, the cluster's seeds, or the sentinel
    /// master's name and its sentinels.
    pub fn describe(&self) -> String {
        let list = |nodes: &[(String, u16)]| {
            nodes
                .iter()
                .map(|(h, p)| format!("{h}:{p}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        match &self.sentinel {
            Some(s) => format!(
                "sentinel master {:?} (sentinels {})",
                s.master_name,
                list(&s.sentinels)
            ),
            None if !self.cluster_nodes.is_empty() => {
                format!("cluster {}", list(&self.cluster_nodes))
            }
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

pub struct RedisStore {
    project: Vec<u8>,
    options: RedisOptions,
    /// `ssl_ca_certs`, read once.
    tls_root: Option<Arc<[u8]>>,
    shared: Arc<Shared>,
    /// Tasks that live as long as the store (the first connection made in the background, the
    /// sentinel watcher); aborted when it is dropped.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What the store's background tasks change under it. Locks here are held only to clone or
/// swap a value, never across an `.await`.
struct Shared {
    /// `None` until the first connection succeeds (see [`RedisStore::connect_in_background`]).
    conn: std::sync::RwLock<Option<Conn>>,
    /// Sentinel: the master `conn` is connected to.
    master: std::sync::RwLock<Option<(String, u16)>>,
    /// Bumped whenever `master` changes, so that subscriptions move to the new master.
    master_changed: tokio::sync::watch::Sender<u64>,
    /// Wakes the sentinel watcher before its next poll: a command failed, a failover may be
    /// under way.
    recheck: tokio::sync::Notify,
    /// Cluster: when the connection was last rebuilt after failed commands (see
    /// [`RedisStore::command_failed`]), and whether a rebuild is under way.
    rebuilt: std::sync::Mutex<Option<std::time::Instant>>,
    rebuilding: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn new(conn: Option<Conn>, master: Option<(String, u16)>) -> Arc<Shared> {
        Arc::new(Shared {
            conn: std::sync::RwLock::new(conn),
            master: std::sync::RwLock::new(master),
            master_changed: tokio::sync::watch::channel(0).0,
            recheck: tokio::sync::Notify::new(),
            rebuilt: std::sync::Mutex::new(None),
            rebuilding: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Swaps in a connection (and, with a sentinel, the master it talks to).
    fn install(&self, conn: Conn, master: Option<(String, u16)>) {
        if let Ok(mut slot) = self.conn.write() {
            *slot = Some(conn);
        }
        if master.is_some() {
            let changed = match self.master.write() {
                Ok(mut slot) if *slot != master => {
                    *slot = master;
                    true
                }
                _ => false,
            };
            if changed {
                self.master_changed.send_modify(|n| *n += 1);
            }
        }
    }

    fn master(&self) -> Option<(String, u16)> {
        self.master.read().ok().and_then(|m| m.clone())
    }
}

/// A standalone server's multiplexed connection, or a cluster's (which routes per slot).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The Redis Cluster hash slot of a key, computed by redis-rs (`Slot::for_key`: CRC16-XMODEM mod
/// 16384, with hash tags: when the key has a `{` followed by a non-empty `...}`, only what is
/// between them is hashed). Feast's keys carry no deliberate tags, but a `{` inside a string
/// entity value makes one, and Redis honours it.
pub use redis::cluster_routing::Slot;

/// How often, at most, a cluster connection is rebuilt after failed commands.
pub const CLUSTER_REBUILD_INTERVAL: Duration = Duration::from_secs(3);

/// A self-reconnecting multiplexed connection to one server.
async fn open_single(
    options: &RedisOptions,
    client: redis::Client,
) -> Result<ConnectionManager, StoreError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let wait = options.connect_timeout + Duration::from_millis(100);
    tokio::time::timeout(wait, ConnectionManager::new_with_config(client, config))
        .await
        .map_err(|_| StoreError::Timeout)?
        .map_err(unavailable)
}

fn unavailable(e: redis::RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout
    } else {
        StoreError::Unavailable(e.to_string())
    }
}

impl RedisStore {
    /// Connects (waiting at most `connect_timeout`). The connection reconnects by itself, with
    /// exponential backoff, whenever it breaks; with a sentinel, it also moves to the new master
    /// when the sentinels promote one.
    pub async fn connect(options: RedisOptions, project: &str) -> Result<RedisStore, StoreError> {
        // rustls needs a process-wide crypto provider; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls_root = options.tls_root()?;
        let (conn, master) = Self::open(&options, tls_root.as_ref()).await?;
        let shared = Shared::new(Some(conn), master);
        let tasks = Self::watch_sentinel(&options, &tls_root, &shared)
            .into_iter()
            .collect();
        Ok(RedisStore {
            project: project.as_bytes().to_vec(),
            options,
            tls_root,
            shared,
            tasks,
        })
    }

    /// Like [`RedisStore::connect`], but a server that is not reachable yet is not an error: the
    /// store is returned at once, reads fail fast with "not connected" until a background task
    /// (retrying with jittered backoff) has connected. Bad options are still errors.
    pub async fn connect_in_background(
        options: RedisOptions,
        project: &str,
    ) -> Result<Arc<RedisStore>, StoreError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls_root = options.tls_root()?;
        let first = Self::open(&options, tls_root.as_ref()).await;
        let shared = match first {
            Ok((conn, master)) => Shared::new(Some(conn), master),
            Err(e) => {
                tracing::debug!(error = %e, "online store not reachable yet");
                Shared::new(None, None)
            }
        };
        let mut tasks = Vec::new();
        if let Some(watcher) = Self::watch_sentinel(&options, &tls_root, &shared) {
            // The watcher connects to the master as soon as the sentinels name one.
            tasks.push(watcher);
        } else if shared.conn.read().map(|c| c.is_none()).unwrap_or(true) {
            let (options, root, shared) = (options.clone(), tls_root.clone(), Arc::clone(&shared));
            tasks.push(tokio::spawn(async move {
                let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
                loop {
                    tokio::time::sleep(backoff.next_delay()).await;
                    match Self::open(&options, root.as_ref()).await {
                        Ok((conn, master)) => {
                            tracing::info!(store = %options.describe(), "connected to the online store");
                            shared.install(conn, master);
                            return;
                        }
                        Err(e) => tracing::debug!(error = %e, "online store still unreachable"),
                    }
                }
            }));
        }
        Ok(Arc::new(RedisStore {
            project: project.as_bytes().to_vec(),
            options,
            tls_root,
            shared,
            tasks,
        }))
    }

    /// With a sentinel: the task that follows the master (see [`sentinel::watch`]).
    fn watch_sentinel(
        options: &RedisOptions,
        tls_root: &Option<Arc<[u8]>>,
        shared: &Arc<Shared>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        options.sentinel.as_ref()?;
        Some(tokio::spawn(sentinel::watch(
            options.clone(),
            tls_root.clone(),
            Arc::clone(shared),
        )))
    }

    /// Opens the connection the options describe; with a sentinel, to the master it names (also
    /// returned).
    async fn open(
        options: &RedisOptions,
        root: Option<&Arc<[u8]>>,
    ) -> Result<(Conn, Option<(String, u16)>), StoreError> {
        if let Some(sentinel) = &options.sentinel {
            let mut sentinels = sentinel::Sentinels::new(sentinel, options.connect_timeout);
            let (master, conn) = sentinels.connect_master(options, root).await?;
            return Ok((conn, Some(master)));
        }
        if options.cluster_nodes.is_empty() {
            let client = options.node_client(&options.host, options.port, root)?;
            return Ok((Conn::Single(open_single(options, client).await?), None));
        }
        // A cluster has only database 0: `db` is not sent to its nodes.
        let nodes = options
            .cluster_nodes
            .iter()
            .map(|(h, p)| {
                options.node_info(h, *p).map(|info| {
                    let settings = info.redis_settings().clone().set_db(0);
                    info.set_redis_settings(settings)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder = redis::cluster::ClusterClient::builder(nodes)
            .connection_timeout(options.connect_timeout)
            .response_timeout(Duration::from_secs(2))
            .retries(2);
        if let Some(u) = &options.username {
            builder = builder.username(u);
        }
        if let Some(p) = &options.password {
            builder = builder.password(p);
        }
        if options.ssl {
            // Every node the cluster reports is reached like the seeds: rediss://, with the
            // same verification (or none, with `ssl_cert_reqs=none`) and the same CA.
            builder = builder.tls(if options.ssl_insecure {
                redis::TlsMode::Insecure
            } else {
                redis::TlsMode::Secure
            });
            if let Some(pem) = root {
                builder = builder.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                });
            }
        }
        let cluster = builder.build().map_err(unavailable)?;
        let wait = options.connect_timeout + Duration::from_millis(100);
        let conn = tokio::time::timeout(wait, cluster.get_async_connection())
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(unavailable)?;
        Ok((Conn::Cluster(conn), None))
    }

    /// The connection, or "not connected" while the first connection is still being made.
    fn conn(&self) -> Result<Conn, StoreError> {
        self.shared
            .conn
            .read()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| {
                StoreError::Unavailable(format!("not connected yet to {}", self.options.describe()))
            })
    }

    /// Tells the store a command failed. With a sentinel this asks the sentinels for the
    /// master at once (a failover may be under way) rather than at the next poll. On a cluster
    /// it builds a fresh connection in the background (at most every
    /// [`CLUSTER_REBUILD_INTERVAL`]) and swaps it in once it works: after a reshard under load,
    /// redis-rs's cluster connection was seen to time out every command for many seconds, and a
    /// new one, which reads the slot map afresh, does not.
    pub fn command_failed(&self) {
        if self.options.sentinel.is_some() {
            self.shared.recheck.notify_one();
            return;
        }
        if !self.is_cluster() {
            return;
        }
        let due = match self.shared.rebuilt.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|t| t.elapsed() >= CLUSTER_REBUILD_INTERVAL);
                if due {
                    *last = Some(std::time::Instant::now());
                }
                due
            }
            Err(_) => false,
        };
        if !due
            || self
                .shared
                .rebuilding
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.shared
                .rebuilding
                .store(false, std::sync::atomic::Ordering::Release);
            return;
        };
        let (options, root, shared) = (
            self.options.clone(),
            self.tls_root.clone(),
            Arc::clone(&self.shared),
        );
        runtime.spawn(async move {
            match Self::open(&options, root.as_ref()).await {
                Ok((conn, master)) => {
                    tracing::info!(store = %options.describe(), "commands failed: a new cluster connection is in use");
                    shared.install(conn, master);
                }
                Err(e) => tracing::debug!(error = %e, "a new cluster connection failed too"),
            }
            shared
                .rebuilding
                .store(false, std::sync::atomic::Ordering::Release);
        });
    }

    /// Whether this is a Redis Sentinel master.
    pub fn is_sentinel(&self) -> bool {
        self.options.sentinel.is_some()
    }

    /// With a sentinel: the master currently connected to.
    pub fn sentinel_master(&self) -> Option<(String, u16)> {
        self.shared.master()
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        !self.options.cluster_nodes.is_empty()
    }

    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// The Redis key of an entity: its v3 bytes followed by the project.
    pub fn key(&self, entity_key: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(entity_key.len() + self.project.len());
        key.extend_from_slice(entity_key);
        key.extend_from_slice(&self.project);
        key
    }

    /// One pipelined round trip: `HMGET key <fields of every requested view> <_ts of each>` per
    /// entity.
    pub async fn read(
        &self,
        layouts: &[Arc<ViewLayout>],
        reads: &[KeyRead<'_>],
    ) -> Result<ReadResult, StoreError> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        let mut commands = Vec::with_capacity(reads.len());
        for r in reads {
            let key = self.key(r.entity_key);
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(&key[..]);
            for &v in r.views {
                let layout = layouts
                    .get(v)
                    .ok_or_else(|| StoreError::Corrupt(format!("no layout {v}")))?;
                for f in &layout.fields {
                    cmd.arg(&f[..]);
                }
                cmd.arg(&layout.ts_field[..]);
            }
            commands.push((key, cmd));
        }
        let conn = self.conn()?;
        let replies = match &conn {
            Conn::Single(_) => {
                let mut pipe = redis::pipe();
                for (_, cmd) in commands {
                    pipe.add_command(cmd);
                }
                let mut conn = self.conn()?;
                pipe.query_async::<Vec<Vec<Option<Vec<u8>>>>>(&mut conn)
                    .await
                    .map_err(unavailable)?
            }
            // A cluster pipeline must stay within one slot: one pipeline per slot, all at once.
            Conn::Cluster(_) => {
                let mut by_slot: std::collections::HashMap<Slot, Vec<usize>> =
                    std::collections::HashMap::new();
                for (i, (key, _)) in commands.iter().enumerate() {
                    by_slot.entry(Slot::for_key(key)).or_default().push(i);
                }
                let mut requests = Vec::with_capacity(by_slot.len());
                for members in by_slot.values() {
                    let mut pipe = redis::pipe();
                    for &i in members {
                        pipe.add_command(commands[i].1.clone());
                    }
                    let mut conn = self.conn()?;
                    requests.push(async move {
                        pipe.query_async::<Vec<Vec<Option<Vec<u8>>>>>(&mut conn)
                            .await
                    });
                }
                let results = futures_util::future::try_join_all(requests)
                    .await
                    .map_err(unavailable)?;
                let mut replies: Vec<Vec<Option<Vec<u8>>>> = vec![Vec::new(); commands.len()];
                for (members, result) in by_slot.values().zip(results) {
                    for (&i, reply) in members.iter().zip(result) {
                        replies[i] = reply;
                    }
                }
                replies
            }
        };
        if replies.len() != reads.len() {
            return Err(StoreError::Corrupt(format!(
                "{} replies for {} commands",
                replies.len(),
                reads.len()
            )));
        }
        let mut out = Vec::with_capacity(reads.len());
        for (r, mut fields) in reads.iter().zip(replies) {
            let mut rows = Vec::with_capacity(r.views.len());
            let mut at = 0;
            for &v in r.views {
                let n = layouts[v].fields.len();
                if fields.len() < at + n + 1 {
                    return Err(StoreError::Corrupt("short HMGET reply".to_owned()));
                }
                let ts = fields[at + n].take();
                let row = match ts {
                    // Feast writes `_ts:{view}` with every row: no timestamp, no row.
                    None => None,
                    Some(ts) => Some(StoredRow {
                        event_ts: decode_ts(&ts)?,
                        values: fields[at..at + n].iter_mut().map(Option::take).collect(),
                    }),
                };
                rows.push(row);
                at += n + 1;
            }
            out.push(rows);
        }
        Ok(out)
    }

    /// Runs one command per key (`add` appends key `i`'s command, whose reply is the one kept;
    /// extra commands must be `.ignore()`d) as pipelines: one for a standalone server, one per
    /// slot, all at once, for a cluster. Replies come back in key order.
    async fn pipelined<T: redis::FromRedisValue + Send + 'static>(
        &self,
        keys: &[&[u8]],
        add: impl Fn(&mut redis::Pipeline, usize),
    ) -> Result<Vec<T>, StoreError> {
        let conn = self.conn()?;
        let groups: Vec<Vec<usize>> = match &conn {
            Conn::Single(_) => vec![(0..keys.len()).collect()],
            Conn::Cluster(_) => {
                let mut by_slot: std::collections::HashMap<Slot, Vec<usize>> =
                    std::collections::HashMap::new();
                for (i, key) in keys.iter().enumerate() {
                    by_slot.entry(Slot::for_key(key)).or_default().push(i);
                }
                by_slot.into_values().collect()
            }
        };
        let mut requests = Vec::with_capacity(groups.len());
        for members in &groups {
            let mut pipe = redis::pipe();
            for &i in members {
                add(&mut pipe, i);
            }
            let mut conn = conn.clone();
            requests.push(async move { pipe.query_async::<Vec<T>>(&mut conn).await });
        }
        let results = futures_util::future::try_join_all(requests)
            .await
            .map_err(unavailable)?;
        let mut slots: Vec<Option<T>> = (0..keys.len()).map(|_| None).collect();
        for (members, replies) in groups.iter().zip(results) {
            if replies.len() != members.len() {
                return Err(StoreError::Corrupt(format!(
                    "{} replies for {} commands",
                    replies.len(),
                    members.len()
                )));
            }
            for (&i, reply) in members.iter().zip(replies) {
                slots[i] = Some(reply);
            }
        }
        slots
            .into_iter()
            .map(|r| r.ok_or_else(|| StoreError::Corrupt("missing pipeline reply".to_owned())))
            .collect()
    }

    /// Feast's write: read every row's `_ts:{view}` in one pipeline (or, when none of the keys
    /// exists yet, a single `EXISTS`), then `HSET` the fields and `_ts` (and `EXPIRE`) of the
    /// rows that are strictly newer, to the nanosecond, in a second round trip.
    pub async fn write(
        &self,
        layout: &ViewLayout,
        rows: &[WriteRow],
        key_ttl_seconds: Option<u64>,
    ) -> Result<WriteStats, StoreError> {
        if rows.is_empty() {
            return Ok(WriteStats::default());
        }
        let owned: Vec<Vec<u8>> = rows.iter().map(|r| self.key(&r.entity_key)).collect();
        let keys: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        // A first load writes keys that do not exist yet: one `EXISTS k1 k2 ...` answering 0
        // spares the server a `HGET` per row. (A cluster spreads keys over slots: no shortcut.)
        let none_stored = !self.is_cluster() && {
            let mut exists = redis::cmd("EXISTS");
            for k in &keys {
                exists.arg(*k);
            }
            let mut conn = self.conn()?;
            exists
                .query_async::<u64>(&mut conn)
                .await
                .map_err(unavailable)?
                == 0
        };
        let winners: Vec<usize> = if none_stored {
            (0..rows.len()).collect()
        } else {
            let stored: Vec<Option<Vec<u8>>> = self
                .pipelined(&keys, |pipe, i| {
                    pipe.cmd("HGET").arg(keys[i]).arg(&layout.ts_field[..]);
                })
                .await?;
            let mut winners = Vec::with_capacity(rows.len());
            for (i, (row, prev)) in rows.iter().zip(&stored).enumerate() {
                let prev = match prev {
                    Some(bytes) => Some(decode_ts(bytes)?),
                    None => None,
                };
                if newer_than_stored(&row.event_ts, prev.as_ref()) {
                    winners.push(i);
                }
            }
            winners
        };
        let stats = WriteStats {
            written: winners.len() as u64,
            skipped: (rows.len() - winners.len()) as u64,
        };
        if winners.is_empty() {
            return Ok(stats);
        }
        let winner_keys: Vec<&[u8]> = winners.iter().map(|&i| keys[i]).collect();
        let _: Vec<redis::Value> = self
            .pipelined(&winner_keys, |pipe, j| {
                let row = &rows[winners[j]];
                let cmd = pipe.cmd("HSET").arg(winner_keys[j]);
                for (field, value) in layout.fields.iter().zip(row.values()) {
                    cmd.arg(&field[..]).arg(value);
                }
                // Feast's `_ts`: a Timestamp proto, seconds and nanos.
                let mut ts = [0u8; quiver_core::layout::TIMESTAMP_MAX_LEN];
                cmd.arg(&layout.ts_field[..])
                    .arg(quiver_core::layout::encode_timestamp_into(
                        &row.event_ts,
                        &mut ts,
                    ));
                if let Some(ttl) = key_ttl_seconds {
                    pipe.cmd("EXPIRE").arg(winner_keys[j]).arg(ttl).ignore();
                }
            })
            .await?;
        Ok(stats)
    }

    /// Every entity key of this project: `SCAN` for keys ending in the project name, the suffix
    /// stripped; on a cluster, on every master (each holds its own slots). (A key of another
    /// project whose name ends the same way fails to parse as an entity key later and is skipped
    /// by the caller.)
    pub async fn scan_entity_keys(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = if self.is_cluster() {
            let mut out = Vec::new();
            for (host, port) in self.cluster_masters().await? {
                let client = self
                    .options
                    .node_client(&host, port, self.tls_root.as_ref())?;
                let mut conn = nodes::node_connection(&self.options, &client).await?;
                out.extend(self.scan_node(&mut conn).await?);
            }
            out
        } else {
            let mut conn = self.conn()?;
            self.scan_node(&mut conn).await?
        };
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// `SCAN` one server (a standalone server, the sentinel's master, or one cluster master).
    async fn scan_node(
        &self,
        conn: &mut impl redis::aio::ConnectionLike,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut pattern = b"*".to_vec();
        pattern.extend_from_slice(&self.project);
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern[..])
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await
                .map_err(unavailable)?;
            for k in keys {
                if let Some(e) = k.strip_suffix(&self.project[..]) {
                    out.push(e.to_vec());
                }
            }
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// Sets `field = value` in the hash `marker`, (re)sets its expiry to `ttl`, and returns every
    /// field and value now in it, in one script: of several callers at once, exactly one is the
    /// first to see the hash complete. Used for the shard markers of a sharded materialization
    /// (a marker key never collides with an entity key, whose first four bytes are a small
    /// little-endian count).
    pub async fn mark(
        &self,
        marker: &[u8],
        field: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Vec<(String, String)>, StoreError> {
        const SCRIPT: &str = "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) \
            redis.call('EXPIRE', KEYS[1], ARGV[3]) \
            return redis.call('HGETALL', KEYS[1])";
        let mut conn = self.conn()?;
        let flat: Vec<String> = redis::cmd("EVAL")
            .arg(SCRIPT)
            .arg(1)
            .arg(marker)
            .arg(field)
            .arg(value)
            .arg(ttl.as_secs().max(1))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(pairs(flat))
    }

    /// The fields and values of the hash `marker` (empty when it does not exist).
    pub async fn marks(&self, marker: &[u8]) -> Result<Vec<(String, String)>, StoreError> {
        let mut conn = self.conn()?;
        let flat: Vec<String> = redis::cmd("HGETALL")
            .arg(marker)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(pairs(flat))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(unavailable)
    }
}

/// `[f1, v1, f2, v2, ...]` (HGETALL's reply) as pairs.
fn pairs(flat: Vec<String>) -> Vec<(String, String)> {
    let mut it = flat.into_iter();
    let mut out = Vec::new();
    while let (Some(f), Some(v)) = (it.next(), it.next()) {
        out.push((f, v));
    }
    out
}

/// Whether a `notify-keyspace-events` value includes keyspace events for hash commands.
pub fn keyspace_events_sufficient(config: &str) -> bool {
    config.contains('K') && (config.contains('A') || (config.contains('h') && config.contains('g')))
}

/// A change seen through keyspace notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// Every node that holds keys is subscribed: from now on every change is reported.
    Live,
    /// A subscription dropped (or a node joined and is not subscribed yet): changes may go
    /// unseen until the next `Live`.
    Lost,
    /// The entity with this key (v3 bytes, no project) changed.
    Key(Vec<u8>),
    /// Keyspace notifications are off on this node (`notify-keyspace-events` lacks `K` and
    /// hash events), or its setting cannot be read: the feed cannot be live until they are on.
    /// Checked again every 5 s.
    Off { node: String, config: String },
}

/// The stream of [`Invalidation`]s of one project; stops following when dropped.
pub struct Invalidations {
    pub rx: mpsc::Receiver<Invalidation>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Invalidations {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// redis-rs's slot function gives the slots `redis-cli cluster keyslot` gives (Redis 7),
    /// the spec's hash-tag cases included.
    #[test]
    fn slots_are_the_servers() {
        for (key, slot) in [
            ("123456789", 12739),
            ("foo", 12182),
            ("bar", 5061),
            ("somekey", 11058),
            ("hello", 866),
            ("{user1000}.following", 3443),
            ("{user1000}.followers", 3443),
            // An empty tag hashes the whole key; only the first `{...}` counts.
            ("foo{}{bar}", 8363),
            ("foo{{bar}}zap", 4015),
            ("foo{bar}{zap}", 5061),
            ("{}", 15257),
            ("a{tag}b", 8338),
            ("tag", 8338),
            ("", 0),
        ] {
            assert_eq!(Slot::for_key(key), Slot::new(slot).unwrap(), "{key:?}");
        }
    }

    #[test]
    fn the_write_rule_compares_to_the_nanosecond() {
        let t = |seconds, nanos| quiver_core::time::Timestamp { seconds, nanos };
        assert!(newer_than_stored(&t(10, 5), Some(&t(10, 4))));
        assert!(!newer_than_stored(&t(10, 4), Some(&t(10, 4))));
        assert!(!newer_than_stored(&t(10, 3), Some(&t(10, 4))));
        assert!(!newer_than_stored(&t(9, 999_999_999), Some(&t(10, 0))));
        assert!(newer_than_stored(&t(1, 0), Some(&t(0, 0))));
        assert!(newer_than_stored(&t(1, 0), None));
    }
}

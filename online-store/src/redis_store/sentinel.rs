//! Redis Sentinel: which server is the master, and following it through a failover.
//!
//! The master is asked of the sentinels in turn (`SENTINEL get-master-addr-by-name`, the
//! Sentinel clients spec's step 2) and confirmed by the node itself (`ROLE` says `master`,
//! step 3) before any command goes to it. A watcher then keeps asking: every second, at once
//! when a sentinel publishes `+switch-master`, and at once when a command failed; when the
//! sentinels name another master, a new connection is opened, confirmed, and swapped in whole
//! (the old one is dropped when its last in-flight command finishes).
//!
//! redis-rs has a `sentinel` module, but it resolves once and hands back a `Client` bound to
//! that address; following a failover needs this loop anyway, and the resolution it would save
//! is one command.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;

use super::{Conn, RedisOptions, SentinelOptions, Shared, open_single, unavailable};
use crate::StoreError;

/// How often the watcher asks the sentinels when nothing told it to.
const POLL: Duration = Duration::from_secs(1);
/// The least time between two asks, however many commands fail meanwhile.
const MIN_GAP: Duration = Duration::from_millis(100);

/// The sentinels of one master name, with a cached connection to each.
pub(super) struct Sentinels {
    addrs: Vec<(String, u16)>,
    name: String,
    timeout: Duration,
    conns: Vec<Option<redis::aio::MultiplexedConnection>>,
}

impl Sentinels {
    pub(super) fn new(options: &SentinelOptions, timeout: Duration) -> Sentinels {
        Sentinels {
            addrs: options.sentinels.clone(),
            name: options.master_name.clone(),
            timeout,
            conns: options.sentinels.iter().map(|_| None).collect(),
        }
    }

    /// A sentinel is reached over plain TCP without credentials, as redis-py's `Sentinel`
    /// reaches it with the options Feast passes (they go to the master only).
    fn client(&self, i: usize) -> Result<redis::Client, StoreError> {
        let (host, port) = &self.addrs[i];
        redis::Client::open(redis::ConnectionAddr::Tcp(host.clone(), *port)).map_err(unavailable)
    }

    async fn connection(
        &mut self,
        i: usize,
    ) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        if let Some(c) = &self.conns[i] {
            return Ok(c.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = self
            .client(i)?
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(unavailable)?;
        self.conns[i] = Some(conn.clone());
        Ok(conn)
    }

    /// The master's address as each sentinel in turn names it; the first that names one wins.
    async fn named_masters(&mut self) -> (Vec<(String, u16)>, Vec<String>) {
        let mut named = Vec::new();
        let mut errors = Vec::new();
        for i in 0..self.addrs.len() {
            let (host, port) = self.addrs[i].clone();
            let asked = match self.connection(i).await {
                Ok(mut conn) => redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.name)
                    .query_async::<Option<(String, u16)>>(&mut conn)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match asked {
                Ok(Some(addr)) => {
                    if !named.contains(&addr) {
                        named.push(addr);
                    }
                }
                Ok(None) => errors.push(format!(
                    "sentinel {host}:{port} knows no master named {:?}",
                    self.name
                )),
                Err(e) => {
                    self.conns[i] = None;
                    errors.push(format!("sentinel {host}:{port}: {e}"));
                }
            }
        }
        (named, errors)
    }

    /// The master the sentinels name, connected and confirmed by `ROLE`. Sentinels that
    /// disagree (one has not seen the failover yet) are tried in order until a named node says
    /// it is the master.
    pub(super) async fn connect_master(
        &mut self,
        options: &RedisOptions,
        root: Option<&Arc<[u8]>>,
    ) -> Result<((String, u16), Conn), StoreError> {
        let (named, mut errors) = self.named_masters().await;
        for (host, port) in named {
            match connect_confirmed(options, root, &host, port).await {
                Ok(conn) => return Ok(((host, port), conn)),
                Err(e) => errors.push(format!("master {host}:{port}: {e}")),
            }
        }
        Err(StoreError::Unavailable(format!(
            "no master {:?} from the sentinels: {}",
            self.name,
            errors.join("; ")
        )))
    }

    /// A subscription to `+switch-master` on the first sentinel that takes one.
    async fn switch_events(&self) -> Option<redis::aio::PubSubStream> {
        for i in 0..self.addrs.len() {
            let Ok(client) = self.client(i) else { continue };
            let Ok(Ok(mut pubsub)) =
                tokio::time::timeout(self.timeout, client.get_async_pubsub()).await
            else {
                continue;
            };
            if pubsub.subscribe("+switch-master").await.is_ok() {
                return Some(pubsub.into_on_message());
            }
        }
        None
    }
}

/// Opens a connection to `host:port` and checks that the node is a master.
async fn connect_confirmed(
    options: &RedisOptions,
    root: Option<&Arc<[u8]>>,
    host: &str,
    port: u16,
) -> Result<Conn, StoreError> {
    let client = options.node_client(host, port, root)?;
    let mut manager = open_single(options, client).await?;
    let role: Vec<redis::Value> = tokio::time::timeout(
        options.connect_timeout,
        redis::cmd("ROLE").query_async(&mut manager),
    )
    .await
    .map_err(|_| StoreError::Timeout)?
    .map_err(unavailable)?;
    let role: String = role
        .first()
        .and_then(|r| redis::from_redis_value_ref(r).ok())
        .unwrap_or_default();
    if role != "master" {
        return Err(StoreError::Unavailable(format!(
            "the sentinels name {host}:{port} but it says it is a {role:?}"
        )));
    }
    Ok(Conn::Single(manager))
}

/// Follows the master for as long as the store lives (the store aborts this task when
/// dropped). Also makes the first connection when the store started without one.
pub(super) async fn watch(options: RedisOptions, root: Option<Arc<[u8]>>, shared: Arc<Shared>) {
    let Some(sentinel) = &options.sentinel else {
        return;
    };
    let mut sentinels = Sentinels::new(sentinel, options.connect_timeout);
    let mut events: Option<redis::aio::PubSubStream> = None;
    loop {
        if events.is_none() {
            events = sentinels.switch_events().await;
        }
        let next_event = async {
            match events.as_mut() {
                Some(stream) => stream.next().await.is_some(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            alive = next_event => if !alive { events = None },
            () = tokio::time::sleep(POLL) => {}
            () = shared.recheck.notified() => {}
        }
        let connected = shared.conn.read().map(|c| c.is_some()).unwrap_or(false);
        let current = shared.master();
        let (named, errors) = sentinels.named_masters().await;
        // Every sentinel that answered names the master we are connected to: nothing to do.
        if connected && !named.is_empty() && named.iter().all(|a| Some(a) == current.as_ref()) {
            tokio::time::sleep(MIN_GAP).await;
            continue;
        }
        if named.is_empty() {
            tracing::debug!(errors = ?errors, "no sentinel names a master");
        }
        // A new master, or sentinels that disagree (one has not seen a failover yet): the first
        // named node that says it is the master wins.
        for (host, port) in named {
            match connect_confirmed(&options, root.as_ref(), &host, port).await {
                Ok(conn) => {
                    let addr = (host, port);
                    if !connected || current.as_ref() != Some(&addr) {
                        tracing::info!(
                            master = %format!("{}:{}", addr.0, addr.1),
                            before = ?current,
                            "following the master the sentinels name"
                        );
                        shared.install(conn, Some(addr));
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(master = %format!("{host}:{port}"), error = %e, "a master the sentinels name cannot be used")
                }
            }
        }
        tokio::time::sleep(MIN_GAP).await;
    }
}

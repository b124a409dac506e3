//! What is per node in Redis: keyspace notifications (a node publishes the events of the keys
//! it holds, to its own subscribers only) and `SCAN`. A standalone server is one node, a
//! sentinel's master is one node that changes on failover, a cluster is every master, found
//! with `CLUSTER SLOTS` and found again when the topology changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use quiver_core::backoff::Backoff;
use tokio::sync::mpsc;

use super::{
    Invalidation, Invalidations, RedisOptions, RedisStore, keyspace_events_sufficient, unavailable,
};
use crate::StoreError;

/// How often a live subscription proves it is still live: a `PING` on the subscribed
/// connection (a hung or partitioned node ends no stream) and the node's
/// `notify-keyspace-events` read again (someone may have turned them off).
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a heartbeat may take before the node counts as lost.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a cluster's masters are listed again while every subscription is fine (a lost
/// subscription asks at once).
const TOPOLOGY_POLL: Duration = Duration::from_secs(5);
/// How long a node with notifications off waits before it is checked again.
const OFF_RECHECK: Duration = Duration::from_secs(5);

/// A multiplexed connection to one node, for a few commands (`CONFIG`, `SCAN`), with the
/// store's connect timeout and a response timeout.
pub(super) async fn node_connection(
    options: &RedisOptions,
    client: &redis::Client,
) -> Result<redis::aio::MultiplexedConnection, StoreError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(Duration::from_secs(10)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(unavailable)
}

/// The node's `notify-keyspace-events`, turned on first (`K`, `h`, `g` added to what is set)
/// when `enable` and they are not sufficient.
async fn keyspace_events(
    conn: &mut redis::aio::MultiplexedConnection,
    enable: bool,
) -> Result<String, Ended> {
    let pair: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(conn)
        .await
        .map_err(config_failed)?;
    let current = pair.get(1).cloned().unwrap_or_default();
    if !enable || keyspace_events_sufficient(&current) {
        return Ok(current);
    }
    let mut wanted = current;
    for c in ['K', 'h', 'g'] {
        if !wanted.contains(c) {
            wanted.push(c);
        }
    }
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(&wanted)
        .query_async::<()>(conn)
        .await
        .map_err(config_failed)?;
    Ok(wanted)
}

/// A refused `CONFIG` (renamed or forbidden, as on managed Redis services) means the feed
/// cannot be checked there: off, until it can. Anything else is a lost connection.
fn config_failed(e: redis::RedisError) -> Ended {
    match e.code() {
        Some("ERR" | "NOPERM") => {
            Ended::Off(format!("cannot read or set notify-keyspace-events: {e}"))
        }
        _ => Ended::Down(e.to_string()),
    }
}

/// Parses `CLUSTER SLOTS`: the first node of each slot range is its master. Masters come back
/// sorted and once each.
pub(super) fn masters_of_cluster_slots(
    reply: &redis::Value,
) -> Result<Vec<(String, u16)>, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("CLUSTER SLOTS reply: {what}"));
    let redis::Value::Array(ranges) = reply else {
        return Err(bad("not an array"));
    };
    let mut masters = Vec::new();
    for range in ranges {
        let redis::Value::Array(parts) = range else {
            return Err(bad("a range is not an array"));
        };
        let Some(redis::Value::Array(node)) = parts.get(2) else {
            return Err(bad("a range without a master"));
        };
        let host: String = node
            .first()
            .and_then(|h| redis::from_redis_value_ref(h).ok())
            .ok_or_else(|| bad("a master without a host"))?;
        let port: u16 = node
            .get(1)
            .and_then(|p| redis::from_redis_value_ref(p).ok())
            .ok_or_else(|| bad("a master without a port"))?;
        // "" or "?": the node does not know the endpoint it is reached at.
        if host.is_empty() || host == "?" {
            return Err(bad(
                "a master whose endpoint is unknown (set cluster-announce-ip)",
            ));
        }
        masters.push((host, port));
    }
    masters.sort_unstable();
    masters.dedup();
    Ok(masters)
}

/// What one node's subscriber (by its id) reports to the feed.
enum NodeEvent {
    Live(u64),
    Down(u64),
    Off(u64, String),
    Key(Vec<u8>),
}

/// One node's subscription, as the feed tracks it.
struct Sub {
    /// Unique per subscriber, so that events of a dropped one are told apart.
    id: u64,
    up: bool,
    /// Topology answers in a row that did not list the node.
    missed: u32,
    _task: AbortOnDrop,
}

/// How a node's subscription ended.
enum Ended {
    /// The connection failed or a heartbeat went unanswered.
    Down(String),
    /// Notifications are off on the node (its setting, or why it cannot be read).
    Off(String),
    /// The feed is gone.
    Closed,
}

impl RedisStore {
    /// The masters of the cluster, by `CLUSTER SLOTS` (asked of whichever node the cluster
    /// connection picks).
    pub async fn cluster_masters(&self) -> Result<Vec<(String, u16)>, StoreError> {
        let mut conn = self.conn()?;
        let reply: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        masters_of_cluster_slots(&reply)
    }

    /// The nodes whose notifications together cover every key: the server itself, the
    /// sentinel's current master, or every master of the cluster.
    async fn notification_nodes(&self) -> Result<Vec<(String, u16)>, StoreError> {
        if self.is_cluster() {
            return self.cluster_masters().await;
        }
        if self.options.sentinel.is_some() {
            return self
                .shared
                .master()
                .map(|m| vec![m])
                .ok_or_else(|| StoreError::Unavailable("no sentinel master yet".to_owned()));
        }
        Ok(vec![(self.options.host.clone(), self.options.port)])
    }

    /// Starts following keyspace notifications for this project's keys on every node that
    /// holds them (see [`Invalidations`]). With `enable`, each node's `notify-keyspace-events`
    /// is turned on when it lacks what is needed (a new master after a failover included).
    pub fn follow_invalidations(self: &Arc<Self>, enable: bool) -> Invalidations {
        let (tx, rx) = mpsc::channel(4096);
        let store = Arc::clone(self);
        let task = tokio::spawn(async move { store.feed(tx, enable).await });
        Invalidations { rx, task }
    }

    /// The feed: one subscriber per node; live while every one of them is. The node list is
    /// taken again when the sentinel's master changes, and for a cluster every few seconds and
    /// at once when a subscription is lost. A new node gets a subscriber (and the feed is not
    /// live until it is subscribed: changes there may have gone unseen); a node that is gone
    /// loses its subscriber; the other subscriptions carry on untouched.
    async fn feed(self: Arc<Self>, tx: mpsc::Sender<Invalidation>, enable: bool) {
        let cluster = self.is_cluster();
        let (node_tx, mut node_rx) = mpsc::channel(4096);
        let mut subs: BTreeMap<(String, u16), Sub> = BTreeMap::new();
        let mut next_id = 0u64;
        let mut live = false;
        let mut master_changed = self.shared.master_changed.subscribe();
        let mut poll = tokio::time::interval(TOPOLOGY_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        let mut refresh = true;
        loop {
            if refresh {
                refresh = false;
                // On failure the current subscriptions stay; each reports its own state.
                if let Ok(nodes) = self.notification_nodes().await {
                    for node in &nodes {
                        if let Some(sub) = subs.get_mut(node) {
                            sub.missed = 0;
                            continue;
                        }
                        next_id += 1;
                        let (store, tx) = (Arc::clone(&self), node_tx.clone());
                        let (host, port, id) = (node.0.clone(), node.1, next_id);
                        let task = tokio::spawn(async move {
                            store.subscribe_node(id, host, port, enable, tx).await
                        });
                        tracing::debug!(node = %format!("{}:{}", node.0, node.1), "subscribing to keyspace notifications");
                        subs.insert(
                            node.clone(),
                            Sub {
                                id: next_id,
                                up: false,
                                missed: 0,
                                _task: AbortOnDrop(task),
                            },
                        );
                    }
                    // A cluster node missing from one answer may be missing from one node's
                    // stale view only: it goes when missing twice in a row, or when it is down
                    // too. A sentinel's former master goes at once.
                    subs.retain(|node, sub| {
                        if nodes.contains(node) {
                            return true;
                        }
                        sub.missed += 1;
                        let keep = cluster && sub.up && sub.missed < 2;
                        if !keep {
                            tracing::info!(node = %format!("{}:{}", node.0, node.1), "no longer a master; unsubscribed");
                        }
                        keep
                    });
                }
            }
            let all_up = !subs.is_empty() && subs.values().all(|s| s.up);
            if all_up != live {
                live = all_up;
                let event = if live {
                    Invalidation::Live
                } else {
                    Invalidation::Lost
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                event = node_rx.recv() => {
                    let Some(event) = event else { return };
                    let (id, up) = match event {
                        NodeEvent::Key(key) => {
                            if tx.send(Invalidation::Key(key)).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        NodeEvent::Live(id) => (id, true),
                        NodeEvent::Down(id) => {
                            // A lost master may be a failed-over one: look again now.
                            refresh = cluster;
                            (id, false)
                        }
                        NodeEvent::Off(id, config) => {
                            if let Some((node, _)) = subs.iter().find(|(_, s)| s.id == id) {
                                let node = format!("{}:{}", node.0, node.1);
                                // Not live from here on: say so before saying why.
                                if std::mem::take(&mut live)
                                    && tx.send(Invalidation::Lost).await.is_err()
                                {
                                    return;
                                }
                                if tx.send(Invalidation::Off { node, config }).await.is_err() {
                                    return;
                                }
                            }
                            (id, false)
                        }
                    };
                    // Events of a subscriber already dropped find no node and change nothing.
                    if let Some(sub) = subs.values_mut().find(|s| s.id == id) {
                        sub.up = up;
                    }
                }
                _ = poll.tick(), if cluster => refresh = true,
                changed = master_changed.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tracing::info!("the sentinel master changed; subscribing to the new one");
                    refresh = true;
                }
            }
        }
    }

    /// One node's subscriber: subscribe, report, and start over (with backoff) whenever the
    /// subscription ends, until the feed is dropped.
    async fn subscribe_node(
        self: Arc<Self>,
        i: u64,
        host: String,
        port: u16,
        enable: bool,
        tx: mpsc::Sender<NodeEvent>,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let (event, wait) = match self.node_session(i, &host, port, enable, &tx).await {
                Ended::Closed => return,
                Ended::Down(why) => {
                    tracing::warn!(node = %format!("{host}:{port}"), error = %why, "keyspace notifications lost");
                    (NodeEvent::Down(i), backoff.next_delay())
                }
                Ended::Off(config) => (NodeEvent::Off(i, config), OFF_RECHECK),
            };
            if tx.send(event).await.is_err() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One subscription to one node, from connecting to its end.
    async fn node_session(
        &self,
        i: u64,
        host: &str,
        port: u16,
        enable: bool,
        tx: &mpsc::Sender<NodeEvent>,
    ) -> Ended {
        let db = if self.is_cluster() {
            0
        } else {
            self.options.db
        };
        let pattern = format!("__keyspace@{db}__:*");
        let prefix_len = pattern.len() - 1;
        let client = match self.options.node_client(host, port, self.tls_root.as_ref()) {
            Ok(c) => c,
            Err(e) => return Ended::Down(e.to_string()),
        };
        let mut conn = match node_connection(&self.options, &client).await {
            Ok(c) => c,
            Err(e) => return Ended::Down(e.to_string()),
        };
        // Off: said, and asked again on the same connection (a fleet of sidecars over a Redis
        // without notifications costs it one CONFIG GET each per recheck, not a connection).
        loop {
            let off = match keyspace_events(&mut conn, enable).await {
                Ok(config) if keyspace_events_sufficient(&config) => break,
                Ok(config) => config,
                Err(Ended::Off(why)) => why,
                Err(ended) => return ended,
            };
            if tx.send(NodeEvent::Off(i, off)).await.is_err() {
                return Ended::Closed;
            }
            tokio::time::sleep(OFF_RECHECK).await;
        }
        let pubsub = match tokio::time::timeout(
            self.options.connect_timeout + Duration::from_millis(100),
            client.get_async_pubsub(),
        )
        .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Ended::Down(e.to_string()),
            Err(_) => return Ended::Down("pub/sub connection timed out".to_owned()),
        };
        let (mut sink, mut messages) = pubsub.split();
        if let Err(e) = sink.psubscribe(&pattern).await {
            return Ended::Down(e.to_string());
        }
        if tx.send(NodeEvent::Live(i)).await.is_err() {
            return Ended::Closed;
        }
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else {
                        return Ended::Down("the subscription ended".to_owned());
                    };
                    // Keys are binary (entity key bytes): never go through &str.
                    let Ok(channel) = msg.get_channel::<Vec<u8>>() else {
                        continue;
                    };
                    let Some(key) = channel.get(prefix_len..) else {
                        continue;
                    };
                    let Some(entity_key) = key.strip_suffix(&self.project[..]) else {
                        continue;
                    };
                    if tx.send(NodeEvent::Key(entity_key.to_vec())).await.is_err() {
                        return Ended::Closed;
                    }
                }
                _ = heartbeat.tick() => {
                    match tokio::time::timeout(HEARTBEAT_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Ended::Down(e.to_string()),
                        Err(_) => return Ended::Down("no answer to PING".to_owned()),
                    }
                    match tokio::time::timeout(HEARTBEAT_TIMEOUT, keyspace_events(&mut conn, enable)).await {
                        Ok(Ok(config)) if keyspace_events_sufficient(&config) => {}
                        Ok(Ok(config)) => return Ended::Off(config),
                        Ok(Err(ended)) => return ended,
                        Err(_) => return Ended::Down("no answer to CONFIG GET".to_owned()),
                    }
                }
            }
        }
    }
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn cluster_slots_masters_are_the_first_node_of_each_range() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.2", 7001),
                node("10.0.0.9", 7009),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("10.0.0.1", 7000),
            ]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(12000),
                node("10.0.0.1", 7000),
            ]),
        ]);
        assert_eq!(
            masters_of_cluster_slots(&reply).unwrap(),
            vec![("10.0.0.1".to_owned(), 7000), ("10.0.0.2".to_owned(), 7001)]
        );
        let unknown = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(1),
            node("", 7000),
        ])]);
        assert!(masters_of_cluster_slots(&unknown).is_err());
        assert!(masters_of_cluster_slots(&Value::Nil).is_err());
    }

    #[test]
    fn keyspace_settings() {
        assert!(keyspace_events_sufficient("KA"));
        assert!(keyspace_events_sufficient("Khg"));
        assert!(keyspace_events_sufficient("gxKhE"));
        assert!(!keyspace_events_sufficient("Eh"));
        assert!(!keyspace_events_sufficient(""));
    }
}

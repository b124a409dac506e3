//! The sidecar over a real three-node Redis Cluster: keys are routed by hash slot (hash tags
//! included), one pipeline per slot, all at once.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_core::{Value, entity_key, layout};
use quiver_online_store::redis_store::Slot;
use quiver_online_store::{OnlineStore, RedisOptions, RedisStore};
use quiver_sidecar::{EngineConfig, SidecarConfig};
use serde_json::json;
use support::*;

const DEFS: &str = r#"
entities:
  - {name: customer, join_keys: [customer_id], value_type: STRING}
sources:
  - {name: src, path: data/src.parquet}
feature_views:
  - name: profile
    entities: [customer]
    source: src
    schema: [{name: score, dtype: Int64}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_from_a_redis_cluster_routing_by_slot() {
    let nodes = start_cluster(None);
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("redis://127.0.0.1:{}/", n.port))
        .collect();
    let client = redis::cluster::ClusterClient::new(urls).unwrap();
    let mut conn = client.get_connection().unwrap();

    // Customers spread over slots; one id holds a `{...}` that Redis treats as a hash tag.
    let ids: Vec<String> = (0..40)
        .map(|i| format!("cust-{i}"))
        .chain(["c{tag}x".to_owned()])
        .collect();
    let now = now_ts();
    for (i, id) in ids.iter().enumerate() {
        let value = Value::String(id.clone());
        let key = entity_key::redis_key(&[("customer_id", &value)], "demo").unwrap();
        // Our slot function agrees with the server's.
        let server_slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&key)
            .query(&mut conn)
            .unwrap();
        assert_eq!(Slot::for_key(&key), Slot::new(server_slot).unwrap(), "{id}");
        redis::cmd("HSET")
            .arg(&key)
            .arg(&layout::redis_field("profile", "score")[..])
            .arg(Value::Int64(i as i64).encode_to_vec())
            .arg(layout::redis_ts_field("profile"))
            .arg(layout::encode_timestamp(&now))
            .query::<()>(&mut conn)
            .unwrap();
    }

    let repo = Repo::new("demo", DEFS);
    let options = RedisOptions {
        host: "127.0.0.1".into(),
        port: nodes[0].port,
        cluster_nodes: nodes
            .iter()
            .map(|n| ("127.0.0.1".to_owned(), n.port))
            .collect(),
        db: 0,
        username: None,
        password: None,
        ssl: false,
        ssl_ca_certs: None,
        ssl_insecure: false,
        connect_timeout: Duration::from_secs(2),
        sentinel: None,
    };
    let store = OnlineStore::Redis(Arc::new(
        RedisStore::connect(options, "demo").await.unwrap(),
    ));
    let sidecar = start_sidecar(
        SidecarConfig::default(),
        "demo",
        repo.registry_path(),
        store,
    )
    .await;
    let mut wanted: Vec<String> = ids.clone();
    wanted.push("nobody".into());
    let (status, resp) = post(
        sidecar.addr,
        json!({"features": ["profile:score"], "entities": {"customer_id": wanted}}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let (values, statuses, _) = column(&resp, "score");
    for (i, _) in ids.iter().enumerate() {
        assert_eq!(values[i], json!(i), "customer {i}");
        assert_eq!(statuses[i], "PRESENT");
    }
    assert_eq!(statuses[ids.len()], "NOT_FOUND");
}

/// Writes (materialization and push share `OnlineStore::write`) on a cluster: one pipeline per
/// slot for the `_ts` reads and for the `HSET`s, Feast's rule applied per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_into_a_redis_cluster_by_slot_with_feasts_rule() {
    let nodes = start_cluster(None);
    let defs = r#"
entities:
  - {name: customer, join_keys: [customer_id], value_type: STRING}
sources:
  - {name: src, path: data/src.parquet, timestamp_field: event_timestamp}
  - {name: src_push, type: push, batch_source: src}
feature_views:
  - name: profile
    entities: [customer]
    source: src_push
    schema: [{name: score, dtype: Int64}]
"#;
    let repo = Repo::new("demo", defs);
    let options = RedisOptions {
        host: "127.0.0.1".into(),
        port: nodes[0].port,
        cluster_nodes: nodes
            .iter()
            .map(|n| ("127.0.0.1".to_owned(), n.port))
            .collect(),
        db: 0,
        username: None,
        password: None,
        ssl: false,
        ssl_ca_certs: None,
        ssl_insecure: false,
        connect_timeout: Duration::from_secs(2),
        sentinel: None,
    };
    let store = OnlineStore::Redis(Arc::new(
        RedisStore::connect(options, "demo").await.unwrap(),
    ));
    let config = SidecarConfig {
        push: Some(quiver_sidecar::push::PushConfig::default()),
        ..SidecarConfig::default()
    };
    let sidecar = start_sidecar(config, "demo", repo.registry_path(), store).await;
    let ids: Vec<String> = (0..40)
        .map(|i| format!("cust-{i}"))
        .chain(["c{tag}x".to_owned()])
        .collect();
    let push = |ts: &str, base: i64| {
        json!({"push_source_name": "src_push", "df": {
            "customer_id": ids,
            "event_timestamp": vec![ts; ids.len()],
            "score": (0..ids.len() as i64).map(|i| i + base).collect::<Vec<_>>()}})
    };
    let send = |body: serde_json::Value| async move {
        let (status, text) = http(sidecar.addr, "POST", "/push", body.to_string().as_bytes()).await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    let first = send(push("2026-01-01T10:00:00Z", 0)).await;
    assert_eq!(first["written"], 41);
    // Older: skipped everywhere; newer: written everywhere.
    let older = send(push("2026-01-01T09:00:00Z", 100)).await;
    assert_eq!(
        (older["written"].clone(), older["skipped"].clone()),
        (json!(0), json!(41))
    );
    let newer = send(push("2026-01-01T11:00:00Z", 1000)).await;
    assert_eq!(newer["written"], 41);
    let (status, resp) = post(
        sidecar.addr,
        json!({"features": ["profile:score"], "entities": {"customer_id": ids}}),
    )
    .await;
    assert_eq!(status, 200);
    let expected: Vec<serde_json::Value> = (0..41).map(|i| json!(i + 1000)).collect();
    assert_eq!(column(&resp, "score").0, &expected);
}

fn cluster_conn(nodes: &[RedisServer]) -> redis::cluster::ClusterConnection {
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("redis://127.0.0.1:{}/", n.port))
        .collect();
    redis::cluster::ClusterClient::new(urls)
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Sets `profile:score` of a customer, as Feast writes it.
fn set_score(conn: &mut redis::cluster::ClusterConnection, id: &str, score: i64) {
    let key = entity_key::redis_key(&[("customer_id", &Value::String(id.into()))], "demo").unwrap();
    redis::cmd("HSET")
        .arg(&key)
        .arg(&layout::redis_field("profile", "score")[..])
        .arg(Value::Int64(score).encode_to_vec())
        .arg(layout::redis_ts_field("profile"))
        .arg(layout::encode_timestamp(&now_ts()))
        .query::<()>(conn)
        .unwrap();
}

fn cluster_options(nodes: &[RedisServer]) -> RedisOptions {
    RedisOptions {
        host: "127.0.0.1".into(),
        port: nodes[0].port,
        cluster_nodes: nodes
            .iter()
            .map(|n| ("127.0.0.1".to_owned(), n.port))
            .collect(),
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

fn node_conn(node: &RedisServer) -> redis::Connection {
    node.client().get_connection().unwrap()
}

fn dbsize(node: &RedisServer) -> u64 {
    redis::cmd("DBSIZE").query(&mut node_conn(node)).unwrap()
}

fn set_events(node: &RedisServer, value: &str) {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(value)
        .query::<()>(&mut node_conn(node))
        .unwrap();
}

async fn feed_live(sidecar: &Sidecar) -> bool {
    metric(sidecar.addr, "quiver_change_feed_live").await == 1.0
}

/// Polls `ok` every 50 ms for up to `secs`.
async fn eventually<F: std::future::Future<Output = bool>>(
    secs: u64,
    mut ok: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if ok().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keyspace notifications are per node: the sidecar subscribes to every master, so a change on
/// any of them drops the cached row at once; and the feed is live only while every master's
/// subscription is (one master with notifications off keeps the short bound for all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspace_notifications_from_every_master_invalidate_at_once() {
    let nodes = start_cluster(None);
    let mut conn = cluster_conn(&nodes);
    let ids: Vec<String> = (0..30).map(|i| format!("cust-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        set_score(&mut conn, id, i as i64);
    }
    assert!(
        nodes.iter().all(|n| dbsize(n) > 0),
        "the customers span every master"
    );
    // Two masters notify, the third does not (yet).
    set_events(&nodes[0], "KEA");
    set_events(&nodes[1], "Khg");
    let repo = Repo::new("demo", DEFS);
    let store = OnlineStore::Redis(Arc::new(
        RedisStore::connect(cluster_options(&nodes), "demo")
            .await
            .unwrap(),
    ));
    let config = SidecarConfig {
        engine: EngineConfig {
            max_staleness: Duration::from_secs(60),
            watched_staleness: Duration::from_secs(600),
            ..EngineConfig::default()
        },
        ..SidecarConfig::default()
    };
    let sidecar = start_sidecar(config, "demo", repo.registry_path(), store).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !feed_live(&sidecar).await,
        "one master without notifications: the feed is not live"
    );
    set_events(&nodes[2], "Kgh");
    assert!(
        eventually(10, || feed_live(&sidecar)).await,
        "live once every master notifies"
    );

    let req = json!({"features": ["profile:score"], "entities": {"customer_id": ids}});
    let (status, resp) = post(sidecar.addr, req.clone()).await;
    assert_eq!(status, 200);
    let expected: Vec<serde_json::Value> = (0..30).map(|i| json!(i)).collect();
    assert_eq!(column(&resp, "score").0, &expected);
    // Every customer changes, on every master; the cache's bound is 60 s.
    for (i, id) in ids.iter().enumerate() {
        set_score(&mut conn, id, 100 + i as i64);
    }
    let changed: Vec<serde_json::Value> = (0..30).map(|i| json!(100 + i)).collect();
    let seen = eventually(3, || async {
        let (_, resp) = post(sidecar.addr, req.clone()).await;
        column(&resp, "score").0 == &changed
    })
    .await;
    assert!(seen, "changes on every master reach the cache at once");
    assert!(metric(sidecar.addr, "quiver_cache_invalidations_total").await >= 30.0);

    // A master that stops notifying takes the feed down (the heartbeat re-reads the setting).
    set_events(&nodes[1], "");
    assert!(
        eventually(10, || async { !feed_live(&sidecar).await }).await,
        "the feed is not live while a master does not notify"
    );
}

/// Replicate mode loads every key of a view from every master (SCAN is per node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_mode_scans_every_master() {
    let nodes = start_cluster(None);
    let mut conn = cluster_conn(&nodes);
    let ids: Vec<String> = (0..600).map(|i| format!("cust-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        set_score(&mut conn, id, i as i64 * 3);
    }
    assert!(nodes.iter().all(|n| dbsize(n) > 0));
    let repo = Repo::new("demo", DEFS);
    let store = OnlineStore::Redis(Arc::new(
        RedisStore::connect(cluster_options(&nodes), "demo")
            .await
            .unwrap(),
    ));
    let config = SidecarConfig {
        replicate: vec!["profile".into()],
        engine: EngineConfig {
            max_staleness: Duration::from_secs(60),
            ..EngineConfig::default()
        },
        ..SidecarConfig::default()
    };
    let sidecar = start_sidecar(config, "demo", repo.registry_path(), store).await;
    let ready = eventually(10, || async {
        http(sidecar.addr, "GET", "/ready", b"").await.0 == 200
    })
    .await;
    assert!(ready, "never ready");
    let trips_before = metric(sidecar.addr, "quiver_online_store_round_trips_total").await;
    let (status, resp) = post(
        sidecar.addr,
        json!({"features": ["profile:score"], "entities": {"customer_id": ids}}),
    )
    .await;
    assert_eq!(status, 200);
    let (values, statuses, _) = column(&resp, "score");
    let expected: Vec<serde_json::Value> = (0..600).map(|i| json!(i * 3)).collect();
    assert_eq!(values, &expected);
    assert!(statuses.iter().all(|s| *s == "PRESENT"));
    assert_eq!(
        metric(sidecar.addr, "quiver_cache_misses_total").await,
        0.0,
        "every key of every master was loaded"
    );
    assert_eq!(
        metric(sidecar.addr, "quiver_online_store_round_trips_total").await,
        trips_before
    );
}

/// The cluster grows a fourth master and slots (with their keys) move to it: the feed finds the
/// new master (`CLUSTER SLOTS`, polled) and subscribes to it, so a change to a moved key still
/// reaches the cache at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_follow_slots_to_a_new_master() {
    let mut nodes = start_cluster(None);
    let mut conn = cluster_conn(&nodes);
    let ids: Vec<String> = (0..60).map(|i| format!("cust-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        set_score(&mut conn, id, i as i64);
    }
    let repo = Repo::new("demo", DEFS);
    let store = OnlineStore::Redis(Arc::new(
        RedisStore::connect(cluster_options(&nodes), "demo")
            .await
            .unwrap(),
    ));
    let config = SidecarConfig {
        enable_keyspace_notifications: true,
        engine: EngineConfig {
            max_staleness: Duration::from_secs(60),
            watched_staleness: Duration::from_secs(600),
            // The first reads after slots move follow MOVED redirections and refresh the slot
            // map: slower than the default 50 ms, and not what this test is about.
            store_timeout: Duration::from_secs(2),
            ..EngineConfig::default()
        },
        ..SidecarConfig::default()
    };
    let sidecar = start_sidecar(config, "demo", repo.registry_path(), store).await;
    assert!(eventually(10, || feed_live(&sidecar)).await);
    let req = json!({"features": ["profile:score"], "entities": {"customer_id": ids}});
    let (status, _) = post(sidecar.addr, req.clone()).await;
    assert_eq!(status, 200);

    // A fourth master joins and takes 4000 slots (and their keys) from the first.
    let bus = free_port().to_string();
    let new = RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "2000",
        "--cluster-port",
        &bus,
    ]);
    let first = format!("127.0.0.1:{}", nodes[0].port);
    let out = redis_cli(
        None,
        &[
            "--cluster",
            "add-node",
            &format!("127.0.0.1:{}", new.port),
            &first,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let id = |n: &RedisServer| -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut node_conn(n))
            .unwrap()
    };
    let (from, to) = (id(&nodes[0]), id(&new));
    // Slots move only once every node has heard of the new one (gossip) and it has heard of
    // every slot.
    let known = eventually(20, || async {
        nodes.iter().all(|n| {
            redis::cmd("CLUSTER")
                .arg("NODES")
                .query::<String>(&mut node_conn(n))
                .unwrap()
                .contains(&to)
        }) && redis::cmd("CLUSTER")
            .arg("INFO")
            .query::<String>(&mut node_conn(&new))
            .unwrap()
            .contains("cluster_state:ok")
    })
    .await;
    assert!(known, "the new node never joined");
    let out = redis_cli(
        None,
        &[
            "--cluster",
            "reshard",
            &first,
            "--cluster-from",
            &from,
            "--cluster-to",
            &to,
            "--cluster-slots",
            "4000",
            "--cluster-yes",
        ],
    );
    let moved = out.status.success() && dbsize(&new) > 0;
    assert!(
        moved,
        "the reshard did not move any key: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A customer whose key now lives on the new master.
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut node_conn(&new))
        .unwrap();
    let entity = &keys[0][..keys[0].len() - "demo".len()];
    let pairs = entity_key::deserialize(entity).unwrap();
    let Value::String(moved_id) = &pairs[0].1 else {
        panic!("{pairs:?}")
    };
    let i = ids.iter().position(|x| x == moved_id).unwrap();
    nodes.push(new);

    // The feed picks the new master up within its topology poll (5 s) and subscribes to it.
    let new = nodes.last().unwrap();
    let subscribed = eventually(15, || async {
        redis::cmd("PUBSUB")
            .arg("NUMPAT")
            .query::<u64>(&mut node_conn(new))
            .unwrap()
            > 0
    })
    .await;
    assert!(subscribed, "the feed never subscribed to the new master");
    assert!(eventually(10, || feed_live(&sidecar)).await);
    let invalidations = metric(sidecar.addr, "quiver_cache_invalidations_total").await;
    let mut conn = cluster_conn(&nodes);
    set_score(&mut conn, moved_id, 999);
    let last = std::sync::Mutex::new(String::new());
    // Well within the 60 s bound, with room for reads that fail while the cluster settles.
    let seen = eventually(15, || async {
        let (status, resp) = post(sidecar.addr, req.clone()).await;
        *last.lock().unwrap() = format!(
            "{status} {}",
            if status == 200 {
                resp["results"][1]["values"][i].clone()
            } else {
                resp.clone()
            }
        );
        status == 200 && column(&resp, "score").0[i] == json!(999)
    })
    .await;
    let numpat: Vec<u64> = nodes
        .iter()
        .map(|n| {
            redis::cmd("PUBSUB")
                .arg("NUMPAT")
                .query(&mut node_conn(n))
                .unwrap()
        })
        .collect();
    let last = last.into_inner().unwrap();
    let live = feed_live(&sidecar).await;
    let invalidations_now = metric(sidecar.addr, "quiver_cache_invalidations_total").await;
    assert!(
        seen,
        "a change on the new master reaches the cache at once (the bound is 60 s): last answer \
         {}, feed live {}, invalidations {invalidations} then {}, subscriptions per node {numpat:?}",
        last, live, invalidations_now,
    );
}

/// A master dies and the cluster promotes its replica: the feed is not live while the dead
/// master's keys are unwatched, finds the promoted master (a lost subscription asks for the
/// topology at once) and subscribes to it, turning its notifications on; a change there reaches
/// the cache at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_follow_a_promoted_replica() {
    let mut nodes = start_cluster_of(None, 1);
    let mut conn = cluster_conn(&nodes[..3]);
    let ids: Vec<String> = (0..30).map(|i| format!("cust-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        set_score(&mut conn, id, i as i64);
    }
    let repo = Repo::new("demo", DEFS);
    let store = OnlineStore::Redis(Arc::new(
        RedisStore::connect(cluster_options(&nodes[..3]), "demo")
            .await
            .unwrap(),
    ));
    let config = SidecarConfig {
        enable_keyspace_notifications: true,
        engine: EngineConfig {
            max_staleness: Duration::from_secs(60),
            watched_staleness: Duration::from_secs(600),
            // Reads right after the failover wait for the cluster to settle.
            store_timeout: Duration::from_secs(2),
            ..EngineConfig::default()
        },
        ..SidecarConfig::default()
    };
    let sidecar = start_sidecar(config, "demo", repo.registry_path(), store).await;
    assert!(eventually(10, || feed_live(&sidecar)).await);
    let req = json!({"features": ["profile:score"], "entities": {"customer_id": ids}});
    assert_eq!(post(sidecar.addr, req.clone()).await.0, 200);
    // Which node replicates the first master.
    let replica = (3..6)
        .find(|&r| {
            redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut node_conn(&nodes[r]))
                .unwrap()
                .contains(&format!("master_port:{}", nodes[0].port))
        })
        .unwrap();
    // Replication is asynchronous (and a replica's first sync may still be waiting out the
    // master's diskless-sync delay): kill the master only once its replica holds every key it
    // does, or the promoted replica starts empty.
    let dbsize = |n: usize| {
        redis::cmd("DBSIZE")
            .query::<u64>(&mut node_conn(&nodes[n]))
            .unwrap()
    };
    let in_sync = eventually(30, || async {
        dbsize(0) > 0 && dbsize(replica) == dbsize(0)
    })
    .await;
    assert!(in_sync, "the replica never caught up with its master");

    nodes[0].kill();
    assert!(
        eventually(10, || async { !feed_live(&sidecar).await }).await,
        "the feed is not live while a master is gone"
    );
    let promoted = eventually(30, || async {
        redis::cmd("INFO")
            .arg("replication")
            .query::<String>(&mut node_conn(&nodes[replica]))
            .unwrap()
            .contains("role:master")
    })
    .await;
    assert!(promoted, "the replica was never promoted");
    let subscribed = eventually(15, || async {
        redis::cmd("PUBSUB")
            .arg("NUMPAT")
            .query::<u64>(&mut node_conn(&nodes[replica]))
            .unwrap()
            > 0
    })
    .await;
    assert!(
        subscribed,
        "the feed never subscribed to the promoted master"
    );
    assert!(eventually(10, || feed_live(&sidecar)).await);

    // A customer whose key lives on the promoted master changes.
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut node_conn(&nodes[replica]))
        .unwrap();
    let entity = &keys[0][..keys[0].len() - "demo".len()];
    let pairs = entity_key::deserialize(entity).unwrap();
    let Value::String(moved_id) = &pairs[0].1 else {
        panic!("{pairs:?}")
    };
    let i = ids.iter().position(|x| x == moved_id).unwrap();
    let urls: Vec<String> = [1, 2, replica]
        .iter()
        .map(|&n| format!("redis://127.0.0.1:{}/", nodes[n].port))
        .collect();
    let mut conn = redis::cluster::ClusterClient::new(urls)
        .unwrap()
        .get_connection()
        .unwrap();
    set_score(&mut conn, moved_id, 999);
    // Well within the 60 s bound, with room for reads that fail while the cluster settles.
    let seen = eventually(15, || async {
        let (status, resp) = post(sidecar.addr, req.clone()).await;
        status == 200 && column(&resp, "score").0[i] == json!(999)
    })
    .await;
    assert!(
        seen,
        "a change on the promoted master reaches the cache at once (the bound is 60 s)"
    );
}

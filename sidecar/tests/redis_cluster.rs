//! The sidecar over a real three-node Redis Cluster: keys are routed by hash slot (hash tags
//! included), one pipeline per slot, all at once.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_core::{Value, entity_key, layout};
use quiver_online_store::redis_store::cluster_slot;
use quiver_online_store::{OnlineStore, RedisOptions, RedisStore};
use quiver_sidecar::SidecarConfig;
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

fn start_cluster() -> Vec<RedisServer> {
    let nodes: Vec<RedisServer> = (0..3)
        .map(|_| {
            RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ])
        })
        .collect();
    let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
    args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
    args.extend([
        "--cluster-replicas".into(),
        "0".into(),
        "--cluster-yes".into(),
    ]);
    let out = Command::new("redis-cli")
        .args(&args)
        .output()
        .expect("redis-cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = nodes.iter().all(|n| {
            let info = Command::new("redis-cli")
                .args(["-p", &n.port.to_string(), "cluster", "info"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok")
        });
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster never became ok");
        std::thread::sleep(Duration::from_millis(100));
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_from_a_redis_cluster_routing_by_slot() {
    let nodes = start_cluster();
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
        assert_eq!(cluster_slot(&key), server_slot, "{id}");
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
    let nodes = start_cluster();
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

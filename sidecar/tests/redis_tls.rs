//! The sidecar over Redis with TLS (`ssl=true` in Feast's connection string): a TLS-only
//! redis-server with a certificate from a CA the test makes (openssl), trusted through
//! `ssl_ca_certs`; and a refusal when the CA is not trusted.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use quiver_core::Value;
use quiver_online_store::{OnlineStore, RedisOptions, RedisStore};
use quiver_sidecar::SidecarConfig;
use serde_json::json;
use support::*;

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: src, path: data/src.parquet}
feature_views:
  - name: stats
    entities: [driver]
    source: src
    schema: [{name: trips, dtype: Int64}]
"#;

fn options(port: u16, ca: Option<&Path>) -> RedisOptions {
    RedisOptions {
        host: "127.0.0.1".into(),
        port,
        cluster_nodes: Vec::new(),
        db: 0,
        username: None,
        password: None,
        ssl: true,
        ssl_ca_certs: ca.map(Path::to_path_buf),
        ssl_insecure: false,
        connect_timeout: Duration::from_secs(2),
        sentinel: None,
    }
}

/// Writes `stats:trips` of a driver over TLS with redis-cli (trusting `certs/ca.crt`).
fn seed_over_tls(certs: &Path, port: u16, driver: i64, trips: i64) {
    let key_hex: String =
        quiver_core::entity_key::redis_key(&[("driver_id", &Value::Int64(driver))], "demo")
            .unwrap()
            .iter()
            .map(|b| format!("\\x{b:02x}"))
            .collect();
    let field: String = quiver_core::layout::redis_field("stats", "trips")
        .iter()
        .map(|b| format!("\\x{b:02x}"))
        .collect();
    let value: String = Value::Int64(trips)
        .encode_to_vec()
        .iter()
        .map(|b| format!("\\x{b:02x}"))
        .collect();
    let ts: String = quiver_core::layout::encode_timestamp(&now_ts())
        .iter()
        .map(|b| format!("\\x{b:02x}"))
        .collect();
    let script = format!("HSET \"{key_hex}\" \"{field}\" \"{value}\" _ts:stats \"{ts}\"\n");
    let mut cli = Command::new("redis-cli")
        .args(["--tls", "--cacert", "ca.crt", "-p", &port.to_string()])
        .current_dir(certs)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    cli.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(cli.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tls_and_refuses_an_untrusted_server() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let redis = RedisServer::start_tls(certs.path());

    seed_over_tls(certs.path(), redis.port, 7, 42);

    let repo = Repo::new("demo", DEFS);
    let store = RedisStore::connect(
        options(redis.port, Some(&certs.path().join("ca.crt"))),
        "demo",
    )
    .await
    .unwrap();
    let sidecar = start_sidecar(
        SidecarConfig::default(),
        "demo",
        repo.registry_path(),
        OnlineStore::Redis(Arc::new(store)),
    )
    .await;
    let (status, resp) = post(
        sidecar.addr,
        json!({"features": ["stats:trips"], "entities": {"driver_id": [7]}}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(column(&resp, "trips").0, &vec![json!(42)]);

    // A server whose certificate no trusted CA signed is refused.
    let refused = RedisStore::connect(
        options(redis.port, Some(&certs.path().join("other.crt"))),
        "demo",
    )
    .await;
    assert!(refused.is_err(), "an untrusted server was accepted");
}

/// Feast's `redis_type: redis_cluster` with `ssl=true`: a three-master cluster listening on TLS
/// ports only (its bus and replication on TLS too). Pushes are written slot by slot and read
/// back over TLS; the nodes the cluster reports are reached with the same CA, or with no
/// verification at all (`ssl_cert_reqs=none`); an untrusted CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_and_writes_a_tls_only_cluster() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let nodes = start_cluster(Some(certs.path()));
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
    let cluster = |ca: Option<&Path>, insecure: bool| RedisOptions {
        cluster_nodes: nodes
            .iter()
            .map(|n| ("127.0.0.1".to_owned(), n.port))
            .collect(),
        ssl_insecure: insecure,
        ..options(nodes[0].port, ca)
    };
    let store = RedisStore::connect(cluster(Some(&certs.path().join("ca.crt")), false), "demo")
        .await
        .unwrap();
    let config = SidecarConfig {
        push: Some(quiver_sidecar::push::PushConfig::default()),
        enable_keyspace_notifications: true,
        ..SidecarConfig::default()
    };
    let store = Arc::new(store);
    let sidecar = start_sidecar(
        config,
        "demo",
        repo.registry_path(),
        OnlineStore::Redis(Arc::clone(&store)),
    )
    .await;
    let ids: Vec<String> = (0..40).map(|i| format!("cust-{i}")).collect();
    let body = json!({"push_source_name": "src_push", "df": {
        "customer_id": ids,
        "event_timestamp": vec!["2026-01-01T10:00:00Z"; ids.len()],
        "score": (0..ids.len() as i64).collect::<Vec<_>>()}});
    let (status, text) = http(sidecar.addr, "POST", "/push", body.to_string().as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    for n in &nodes {
        let out = redis_cli(Some(certs.path()), &["-p", &n.port.to_string(), "DBSIZE"]);
        let keys: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(keys > 0, "every master holds some of the pushed keys");
    }
    let req = json!({"features": ["profile:score"], "entities": {"customer_id": ids}});
    let (status, resp) = post(sidecar.addr, req.clone()).await;
    assert_eq!(status, 200, "{resp}");
    let expected: Vec<serde_json::Value> = (0..40).map(|i| json!(i)).collect();
    assert_eq!(column(&resp, "score").0, &expected);
    // Keyspace notifications come over TLS from every master too.
    let mut live = false;
    for _ in 0..200 {
        if metric(sidecar.addr, "quiver_change_feed_live").await == 1.0 {
            live = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(live, "the change feed over TLS never went live");
    // Replicate mode's SCAN of every master goes over TLS as well.
    let mut scanned = store.scan_entity_keys().await.unwrap();
    scanned.sort();
    assert_eq!(scanned.len(), 40);

    // No verification (`ssl_cert_reqs=none`) reaches the same data; an untrusted CA is refused.
    let insecure = RedisStore::connect(cluster(None, true), "demo")
        .await
        .unwrap();
    let layout = Arc::new(quiver_online_store::ViewLayout::new(
        "demo",
        "profile",
        ["score".to_owned()],
    ));
    let key =
        quiver_core::entity_key::serialize(&[("customer_id", &Value::String("cust-7".into()))])
            .unwrap();
    let rows = insecure
        .read(
            &[layout],
            &[quiver_online_store::KeyRead {
                entity_key: &key,
                views: &[0],
            }],
        )
        .await
        .unwrap();
    assert_eq!(
        rows[0][0].as_ref().unwrap().values[0],
        Some(Value::Int64(7).encode_to_vec())
    );
    let refused = RedisStore::connect(
        cluster(Some(&certs.path().join("other.crt")), false),
        "demo",
    )
    .await;
    assert!(
        refused.is_err(),
        "a cluster no trusted CA signed was accepted"
    );
}

/// Feast's `redis_type: redis_sentinel` with `ssl=true`: the master listens on TLS only and is
/// reached with the CA; the sentinel (which itself reaches the master over TLS) is asked over
/// plain TCP, as redis-py asks it with Feast's options.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinels_master_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let redis = RedisServer::start_tls(certs.path());
    seed_over_tls(certs.path(), redis.port, 8, 64);
    let dir = certs.path();
    // Sentinel reaches the master over TLS; it answers on a plain port.
    let sentinel = Sentinel::start_with(
        redis.port,
        &format!(
            "tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\ntls-replication yes\n",
            cert = dir.join("server.crt").display(),
            key = dir.join("server.key").display(),
            ca = dir.join("ca.crt").display(),
        ),
    );
    let sentinel_port = sentinel.port;
    let sentinel_options = || quiver_online_store::redis_store::SentinelOptions {
        sentinels: vec![("127.0.0.1".into(), sentinel_port)],
        master_name: "mymaster".into(),
    };
    let store = RedisStore::connect(
        RedisOptions {
            sentinel: Some(sentinel_options()),
            ..options(sentinel_port, Some(&dir.join("ca.crt")))
        },
        "demo",
    )
    .await;
    let untrusted = RedisStore::connect(
        RedisOptions {
            sentinel: Some(sentinel_options()),
            ..options(sentinel_port, Some(&dir.join("other.crt")))
        },
        "demo",
    )
    .await;
    // Serving needs the master only: the sentinel may go.
    drop(sentinel);
    let store = store.unwrap();
    assert_eq!(
        store.sentinel_master(),
        Some(("127.0.0.1".into(), redis.port))
    );
    let repo = Repo::new("demo", DEFS);
    let sidecar = start_sidecar(
        SidecarConfig::default(),
        "demo",
        repo.registry_path(),
        OnlineStore::Redis(Arc::new(store)),
    )
    .await;
    let (status, resp) = post(
        sidecar.addr,
        json!({"features": ["stats:trips"], "entities": {"driver_id": [8]}}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(column(&resp, "trips").0, &vec![json!(64)]);
    let err = untrusted
        .err()
        .expect("a master no trusted CA signed was accepted");
    assert!(err.to_string().contains("no master \"mymaster\""), "{err}");
}

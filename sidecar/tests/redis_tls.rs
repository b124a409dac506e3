//! The sidecar over Redis with TLS (`ssl=true` in Feast's connection string): a TLS-only
//! redis-server with a certificate from a CA the test makes (openssl), trusted through
//! `ssl_ca_certs`; and a refusal when the CA is not trusted.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(ok.success(), "openssl {args:?}");
}

/// A CA, a server certificate for 127.0.0.1 signed by it, and a second, untrusted CA.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=quiver-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.crt",
            "-days",
            "2",
            "-subj",
            "/CN=someone-else",
        ],
    );
}

struct TlsRedis {
    port: u16,
    child: std::process::Child,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_redis(dir: &Path) -> TlsRedis {
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args([
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.crt",
            "--tls-auth-clients",
            "no",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "TLS redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    TlsRedis { port, child }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tls_and_refuses_an_untrusted_server() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let redis = tls_redis(certs.path());

    // Seed a row over TLS with redis-cli.
    let key_hex: String =
        quiver_core::entity_key::redis_key(&[("driver_id", &Value::Int64(7))], "demo")
            .unwrap()
            .iter()
            .map(|b| format!("\\x{b:02x}"))
            .collect();
    let field: String = quiver_core::layout::redis_field("stats", "trips")
        .iter()
        .map(|b| format!("\\x{b:02x}"))
        .collect();
    let value: String = Value::Int64(42)
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
        .args(["--tls", "--cacert", "ca.crt", "-p", &redis.port.to_string()])
        .current_dir(certs.path())
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

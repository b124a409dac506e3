//! Test support: a feature repo applied from YAML, a sidecar on 127.0.0.1:0, and a minimal
//! HTTP/1.1 client over loopback. The servers (redis-server, clusters, sentinels) come from
//! quiver-testkit, re-exported here.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quiver_core::{Value, entity_key, layout};
use quiver_online_store::{OnlineStore, RedisOptions, RedisStore};
use quiver_sidecar::{Background, SidecarConfig, State};
#[allow(unused_imports)] // each test file uses some of them
pub use quiver_testkit::feast::{now_ts, write_redis_row};
#[allow(unused_imports)]
pub use quiver_testkit::{
    RedisServer, Sentinel, certificates, free_port, openssl, redis_cli, start_cluster,
    start_cluster_of, tls_args,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The repo the enrichment tests (enrich.rs, enrich_grpc.rs) serve: one view of two features
/// keyed by `driver_id`, and the service `svc` over it.
pub const ENRICH_DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: src, path: data/src.parquet}
feature_views:
  - name: stats
    entities: [driver]
    source: src
    schema:
      - {name: rate, dtype: Float64}
      - {name: trips, dtype: Int64}
feature_services:
  - name: svc
    features: [stats]
"#;

/// Writes rows the way Feast's SQLite store does (its table statements, integer epoch seconds).
pub fn write_sqlite(
    path: &Path,
    project: &str,
    view: &str,
    id: i64,
    features: &[(&str, Value)],
    event_ts: i64,
) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let table = layout::sqlite_table(project, view);
    for stmt in layout::sqlite_create_table(&table) {
        conn.execute(&stmt, []).unwrap();
    }
    let key = entity_key::serialize(&[("driver_id", &Value::Int64(id))]).unwrap();
    for (name, value) in features {
        conn.execute(
            &format!("INSERT OR REPLACE INTO {} (entity_key, feature_name, value, event_ts, created_ts) VALUES (?1, ?2, ?3, ?4, ?4)", layout::quote_ident(&table)),
            rusqlite::params![key, name, value.encode_to_vec(), event_ts],
        )
        .unwrap();
    }
}

/// A feature repo in a temp folder, applied from YAML definitions with the real `apply` code.
pub struct Repo {
    pub dir: tempfile::TempDir,
    pub project: String,
}

impl Repo {
    pub fn new(project: &str, definitions: &str) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("feature_store.yaml"),
            format!("project: {project}\nregistry: data/registry.db\n"),
        )
        .unwrap();
        let repo = Repo {
            dir,
            project: project.to_owned(),
        };
        repo.apply(definitions);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn registry_path(&self) -> PathBuf {
        self.dir.path().join("data/registry.db")
    }

    pub fn apply(&self, definitions: &str) {
        std::fs::write(self.dir.path().join("features.yaml"), definitions).unwrap();
        let desired = quiver_registry::definitions::load(self.dir.path(), &self.project).unwrap();
        let path = self.registry_path();
        let mut file = quiver_registry::store::read(&path).unwrap();
        quiver_registry::apply::apply(&mut file, &desired, now_ts()).unwrap();
        let bytes = file.encode(&format!("v{}", now_ts().nanos), now_ts());
        quiver_registry::store::write_atomic(&path, &bytes).unwrap();
    }
}

/// A running sidecar: state, background tasks and its address. Stops when dropped.
pub struct Sidecar {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    _background: Background,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn redis_store(redis: &RedisServer, project: &str) -> OnlineStore {
    let options = RedisOptions {
        host: "127.0.0.1".into(),
        port: redis.port,
        cluster_nodes: Vec::new(),
        db: 0,
        username: None,
        password: None,
        ssl: false,
        ssl_ca_certs: None,
        ssl_insecure: false,
        connect_timeout: Duration::from_secs(2),
        sentinel: None,
    };
    OnlineStore::Redis(Arc::new(
        RedisStore::connect(options, project).await.unwrap(),
    ))
}

pub async fn start_sidecar(
    config: SidecarConfig,
    project: &str,
    registry: PathBuf,
    store: OnlineStore,
) -> Sidecar {
    let (state, background) = quiver_sidecar::start(config, project, registry, store)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(quiver_sidecar::serve(
        listener,
        Arc::clone(&state),
        async move {
            let _ = rx.await;
        },
    ));
    Sidecar {
        addr,
        state,
        _background: background,
        shutdown: Some(tx),
    }
}

/// One HTTP/1.1 exchange over a fresh loopback connection: (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: quiver\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

pub async fn post(addr: SocketAddr, body: serde_json::Value) -> (u16, serde_json::Value) {
    let (status, text) = http(
        addr,
        "POST",
        "/get-online-features",
        body.to_string().as_bytes(),
    )
    .await;
    (status, answer(status, &text))
}

/// A body as JSON; an error's is Feast's error detail (a JSON string holding
/// `{module?, class, message}`), returned as that inner object.
pub fn answer(status: u16, text: &str) -> serde_json::Value {
    let json: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{status} {text:?}: {e}"));
    match json {
        serde_json::Value::String(detail) if status >= 400 => serde_json::from_str(&detail)
            .unwrap_or_else(|e| panic!("{status} {text:?}: the detail is not JSON: {e}")),
        other => other,
    }
}

/// The column of a response by feature name: (values, statuses, event_timestamps).
pub fn column<'a>(
    resp: &'a serde_json::Value,
    name: &str,
) -> (&'a Vec<serde_json::Value>, Vec<&'a str>, Vec<&'a str>) {
    let names = resp["metadata"]["feature_names"].as_array().unwrap();
    let i = names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no column {name} in {names:?}"));
    let r = &resp["results"][i];
    (
        r["values"].as_array().unwrap(),
        r["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect(),
        r["event_timestamps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect(),
    )
}

pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (_, text) = http(addr, "GET", "/metrics", b"").await;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

/// One HTTP/1.1 exchange with extra headers, the body kept as bytes: (status, head, body).
pub async fn http_raw(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: quiver\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, raw[split + 4..].to_vec())
}

/// A sidecar whose definitions come from `source` (a file or the registry service).
pub async fn start_sidecar_from(
    config: SidecarConfig,
    project: &str,
    source: quiver_sidecar::RegistrySource,
    store: OnlineStore,
) -> Result<Sidecar, String> {
    let (state, background) = quiver_sidecar::start_from(config, project, source, store).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(quiver_sidecar::serve(
        listener,
        Arc::clone(&state),
        async move {
            let _ = rx.await;
        },
    ));
    Ok(Sidecar {
        addr,
        state,
        _background: background,
        shutdown: Some(tx),
    })
}

//! Test support: a real redis-server per test on a free port, a feature repo applied from YAML,
//! a sidecar on 127.0.0.1:0, and a minimal HTTP/1.1 client over loopback.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quiver_core::time::Timestamp;
use quiver_core::{Value, entity_key, layout};
use quiver_online_store::{OnlineStore, RedisOptions, RedisStore};
use quiver_sidecar::{Background, SidecarConfig, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of the test's own, killed when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    /// `port` is a TLS port (and the plain one is off).
    tls: bool,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A server with extra arguments (e.g. `--cluster-enabled yes`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        RedisServer::start_inner(extra, false)
    }

    /// A TLS-only server: `port` is its TLS port; `extra` names the certificates.
    pub fn start_tls_with(extra: &[&str]) -> RedisServer {
        RedisServer::start_inner(extra, true)
    }

    /// A TLS-only server with the certificates [`certificates`] put in `certs`, not asking
    /// clients for theirs.
    pub fn start_tls(certs: &Path) -> RedisServer {
        let mut args = tls_args(certs);
        args.extend(["--tls-auth-clients".to_owned(), "no".to_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        RedisServer::start_tls_with(&args)
    }

    fn start_inner(extra: &[&str], tls: bool) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let ports: &[&str] = if self.tls {
            &["--port", "0", "--tls-port", &port]
        } else {
            &["--port", &port]
        };
        let child = Command::new("redis-server")
            .args(ports)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (empty: it keeps nothing on disk).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGSTOP / SIGCONT: a hung server.
    pub fn pause(&self) {
        Command::new("kill")
            .args(["-STOP", &self.pid().to_string()])
            .status()
            .unwrap();
    }

    pub fn resume(&self) {
        Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}

pub fn now_ts() -> Timestamp {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Writes one view's row for one entity in Feast's Redis layout.
pub fn write_redis_row(
    conn: &mut redis::Connection,
    project: &str,
    keys: &[(&str, Value)],
    view: &str,
    features: &[(&str, Value)],
    event_ts: Timestamp,
) {
    let pairs: Vec<(&str, &Value)> = keys.iter().map(|(k, v)| (*k, v)).collect();
    let key = entity_key::redis_key(&pairs, project).unwrap();
    let mut cmd = redis::cmd("HSET");
    cmd.arg(&key);
    for (f, v) in features {
        cmd.arg(&layout::redis_field(view, f)[..])
            .arg(v.encode_to_vec());
    }
    cmd.arg(layout::redis_ts_field(view))
        .arg(layout::encode_timestamp(&event_ts));
    cmd.query::<()>(conn).unwrap();
}

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
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text:?}: {e}"));
    (status, json)
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

pub fn openssl(dir: &Path, args: &[&str]) {
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
pub fn certificates(dir: &Path) {
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

/// `redis-cli`, over TLS trusting `certs/ca.crt` when `certs` is given.
pub fn redis_cli(certs: Option<&Path>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("redis-cli");
    if let Some(dir) = certs {
        cmd.arg("--tls").arg("--cacert").arg(dir.join("ca.crt"));
    }
    cmd.args(args).output().expect("redis-cli")
}

/// A server's certificate arguments, for the files [`certificates`] put in `certs`.
pub fn tls_args(certs: &Path) -> Vec<String> {
    [
        ("--tls-cert-file", "server.crt"),
        ("--tls-key-file", "server.key"),
        ("--tls-ca-cert-file", "ca.crt"),
    ]
    .into_iter()
    .flat_map(|(flag, file)| [flag.to_owned(), certs.join(file).display().to_string()])
    .collect()
}

/// A three-master Redis Cluster (no replicas). With `certs` (a folder [`certificates`] filled),
/// every node listens on a TLS port only, and the cluster bus and replication use TLS too.
pub fn start_cluster(certs: Option<&Path>) -> Vec<RedisServer> {
    start_cluster_of(certs, 0)
}

/// Three masters with `replicas` replicas each (`redis-cli --cluster create` makes the first
/// three nodes the masters); with replicas, returns once every replica is in sync.
pub fn start_cluster_of(certs: Option<&Path>, replicas: usize) -> Vec<RedisServer> {
    let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
        .map(|_| {
            // The bus port is chosen too: port + 10000 may not exist.
            let bus = free_port().to_string();
            let mut args = vec![
                "--cluster-enabled".to_owned(),
                "yes".into(),
                "--cluster-config-file".into(),
                "nodes.conf".into(),
                "--cluster-node-timeout".into(),
                "2000".into(),
                "--cluster-port".into(),
                bus,
                // A replica's first sync starts at once instead of after the 5 s default wait
                // for more replicas.
                "--repl-diskless-sync-delay".into(),
                "0".into(),
            ];
            if let Some(dir) = certs {
                args.extend(tls_args(dir));
                for flag in ["--tls-cluster", "--tls-replication"] {
                    args.push(flag.into());
                    args.push("yes".into());
                }
                args.push("--tls-auth-clients".into());
                args.push("no".into());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if certs.is_some() {
                RedisServer::start_tls_with(&args)
            } else {
                RedisServer::start_with(&args)
            }
        })
        .collect();
    let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
    args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
    args.extend([
        "--cluster-replicas".into(),
        replicas.to_string(),
        "--cluster-yes".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = redis_cli(certs, &args);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = nodes.iter().all(|n| {
            let port = n.port.to_string();
            let info = redis_cli(certs, &["-p", &port, "cluster", "info"]);
            let repl = redis_cli(certs, &["-p", &port, "info", "replication"]);
            let repl = String::from_utf8_lossy(&repl.stdout);
            String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok")
                && (repl.contains("role:master") || repl.contains("master_link_status:up"))
        });
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster never became ok");
        std::thread::sleep(Duration::from_millis(100));
    }
    nodes
}

/// A `redis-server --sentinel` of the test's own, watching `mymaster`; killed when dropped.
pub struct Sentinel {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    pub fn start(master_port: u16) -> Sentinel {
        Sentinel::start_with(master_port, "")
    }

    /// A sentinel with extra configuration lines (e.g. `mymaster`'s `auth-pass`, or TLS settings).
    pub fn start_with(master_port: u16, extra: &str) -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // Quorum 1 and short timeouts: one sentinel decides, within a few seconds of a master's
        // death, and may fail over again 4 s (twice the failover timeout) after the last
        // failover. (Much shorter than 3 s, a busy machine's slow answer starts failovers no test
        // asked for.)
        std::fs::write(
            dir.path().join("sentinel.conf"),
            format!(
                "port {port}\nbind 127.0.0.1\n\
                 sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds mymaster 3000\n\
                 sentinel failover-timeout mymaster 2000\n\
                 sentinel parallel-syncs mymaster 1\n{extra}"
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .args(["sentinel.conf", "--sentinel"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the sentinel did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sentinel {
            port,
            child,
            _dir: dir,
        }
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn master_port(&self) -> Option<u16> {
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("mymaster")
            .query::<Option<(String, u16)>>(&mut self.conn())
            .unwrap()
            .map(|(_, port)| port)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

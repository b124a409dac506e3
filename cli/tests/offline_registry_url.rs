//! `quiver offline serve --registry-url`: in k8s the repo's feature_store.yaml says
//! `registry_type: remote`, which the offline server could not load; it now reads the registry
//! from a real `quiver registry serve` (snapshots, with the registry token from a file), sees
//! applies without a restart, and keeps serving the last registry when the service goes away.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};

const TOKEN: &str = "registry-token-for-tests";

fn quiver() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quiver"));
    for k in [
        "FEATURE_STORE_YAML_BASE64",
        "QUIVER_REGISTRY_URL",
        "QUIVER_REGISTRY_TOKEN",
        "QUIVER_REGISTRY_TOKEN_FILE",
    ] {
        c.env_remove(k);
    }
    c
}

fn run(args: &[&str]) -> Output {
    quiver().args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `quiver ARGS`, once it listens on `port`.
fn spawn(args: &[&str], port: u16) -> Server {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut server = Server(
        quiver()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("quiver {args:?} exited: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// A repo whose feature_store.yaml names a remote registry (as k8s/base's does), with one
/// view over a local Parquet file of drivers 1 and 2.
fn repo(dir: &Path, registry_port: u16) -> std::path::PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("data")).unwrap();
    std::fs::write(
        repo.join("feature_store.yaml"),
        format!(
            "project: remote\nprovider: local\nregistry:\n  registry_type: remote\n  path: 127.0.0.1:{registry_port}\nonline_store:\n  type: sqlite\n  path: data/online.db\nentity_key_serialization_version: 3\n"
        ),
    )
    .unwrap();
    std::fs::write(repo.join("features.yaml"), definitions("conv_rate")).unwrap();
    let micros = (1_767_225_600 + 3600) * 1_000_000_i64;
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("driver_id", Arc::new(Int64Array::from(vec![1, 2]))),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(vec![micros, micros]).with_timezone("UTC")),
        ),
        ("conv_rate", Arc::new(Float32Array::from(vec![0.5, 0.25]))),
        ("trips", Arc::new(Int64Array::from(vec![7, 9]))),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(repo.join("data/stats.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    repo
}

fn definitions(feature: &str) -> String {
    format!(
        r#"
entities:
  - {{name: driver, join_keys: [driver_id], value_type: INT64}}
sources:
  - {{name: stats_file, type: file, path: data/stats.parquet, timestamp_field: event_timestamp}}
feature_views:
  - name: stats
    entities: [driver]
    ttl: 1d
    source: stats_file
    schema: [{{name: {feature}, dtype: {}}}]
"#,
        if feature == "trips" {
            "Int64"
        } else {
            "Float32"
        }
    )
}

/// `POST /v1/historical` over HTTP/1.0 (no chunking): the status and the body's bytes.
fn historical(addr: SocketAddr, feature: &str) -> (u16, Vec<u8>) {
    let body = serde_json::json!({
        "features": [format!("stats:{feature}")],
        "entities": {"driver_id": [1, 2], "event_timestamp": ["2026-01-01T05:00:00Z", "2026-01-01T05:00:00Z"]},
    })
    .to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let req = format!(
        "POST /v1/historical HTTP/1.0\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    std::io::copy(&mut s.take(64 << 20), &mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = text(&raw[9..12]).parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

/// The feature column of an Arrow IPC stream, as text.
fn column(ipc: &[u8], name: &str) -> Vec<String> {
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let col = batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no {name}: {batch:?}"));
        for i in 0..col.len() {
            out.push(
                arrow_array::cast::AsArray::as_primitive_opt::<arrow_array::types::Float32Type>(
                    col,
                )
                .map(|a| a.value(i).to_string())
                .or_else(|| {
                    arrow_array::cast::AsArray::as_primitive_opt::<arrow_array::types::Int64Type>(
                        col,
                    )
                    .map(|a| a.value(i).to_string())
                })
                .unwrap(),
            );
        }
    }
    out
}

fn apply(repo: &Path, url: &str, token_file: &Path) {
    let out = run(&[
        "apply",
        "--repo",
        repo.to_str().unwrap(),
        "--registry-url",
        url,
        "--registry-token-file",
        token_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn offline_serve_reads_a_remote_registry_from_the_registry_service() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let registry_port = free_port();
    let repo = repo(dir.path(), registry_port);
    let store = dir.path().join("registry.db");
    let url = format!("http://127.0.0.1:{registry_port}");
    // Reads need the token too.
    let registry = spawn(
        &[
            "registry",
            "serve",
            "--store",
            store.to_str().unwrap(),
            "--port",
            &registry_port.to_string(),
            "--token-file",
            token_file.to_str().unwrap(),
            "--auth-reads",
        ],
        registry_port,
    );
    apply(&repo, &url, &token_file);

    // Without --registry-url the remote registry cannot be read, as before.
    let out = run(&[
        "offline",
        "serve",
        "--repo",
        repo.to_str().unwrap(),
        "--port",
        &free_port().to_string(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("only a registry file"),
        "{}",
        text(&out.stderr)
    );

    // Without the token, the service refuses and the server does not start.
    let out = run(&[
        "offline",
        "serve",
        "--repo",
        repo.to_str().unwrap(),
        "--port",
        &free_port().to_string(),
        "--registry-url",
        &url,
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("the token was refused") && !err.contains(TOKEN),
        "{err}"
    );

    let (flight, http_port) = (free_port(), free_port());
    let _offline = spawn(
        &[
            "offline",
            "serve",
            "--repo",
            repo.to_str().unwrap(),
            "--port",
            &flight.to_string(),
            "--http-port",
            &http_port.to_string(),
            "--registry-url",
            &url,
            "--registry-token-file",
            token_file.to_str().unwrap(),
        ],
        http_port,
    );
    let addr: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let (status, body) = historical(addr, "conv_rate");
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(column(&body, "conv_rate"), ["0.5", "0.25"]);

    // An apply shows up without a restart (within the refresh interval).
    std::fs::write(repo.join("features.yaml"), definitions("trips")).unwrap();
    apply(&repo, &url, &token_file);
    let started = Instant::now();
    loop {
        let (status, body) = historical(addr, "trips");
        if status == 200 {
            assert_eq!(column(&body, "trips"), ["7", "9"]);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{status} {}",
            text(&body)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The service goes away: the last registry it sent keeps serving.
    drop(registry);
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = historical(addr, "trips");
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(column(&body, "trips"), ["7", "9"]);
}

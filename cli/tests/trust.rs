//! Trusted locations and integrity, end to end through the real binary: sources and push
//! targets outside the repo and the operator's allowed locations are refused at apply and again
//! at use (a registry applied under a looser policy, served under a stricter one); S3 clients
//! never reach an endpoint or the instance metadata service the operator did not allow, and an
//! upstream's words are not echoed; two processes appending to one file lose no rows; the
//! quickstart's push source takes offline pushes; a registry that stops loading is reported.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};

fn quiver() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quiver"));
    // Nothing from the machine's environment decides what is trusted or which S3 is used.
    for k in [
        "FEATURE_STORE_YAML_BASE64",
        "QUIVER_ALLOW_LOCATIONS",
        "QUIVER_ALLOW_ENDPOINTS",
        "QUIVER_ALLOW_INSTANCE_METADATA",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "FEAST_S3_ENDPOINT_URL",
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

/// 2026-01-01T00:00:00Z plus `hours`, in microseconds.
fn at(hours: i64) -> i64 {
    (1_767_225_600 + hours * 3600) * 1_000_000
}

/// A driver stats Parquet file with `not null` columns (as pandas writes them), one row.
fn write_stats(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let columns: Vec<(&str, ArrayRef, bool)> = vec![
        ("driver_id", Arc::new(Int64Array::from(vec![1])), false),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(vec![at(1)]).with_timezone("UTC")),
            false,
        ),
        ("conv_rate", Arc::new(Float32Array::from(vec![0.5])), false),
        ("trips", Arc::new(Int64Array::from(vec![7])), false),
    ];
    let batch = RecordBatch::try_from_iter_with_nullable(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn parquet_rows(path: &Path) -> usize {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    reader.map(|b| b.unwrap().num_rows()).sum()
}

/// A repo whose push source `stats_push` feeds view `stats` (conv_rate) from a file source at
/// `path` (with `endpoint` as its s3_endpoint_override when given); SQLite online store.
fn repo(dir: &Path, path: &str, endpoint: Option<&str>) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("data")).unwrap();
    std::fs::write(
        repo.join("feature_store.yaml"),
        "project: trust\nregistry: data/registry.db\nprovider: local\nonline_store:\n  type: sqlite\n  path: data/online.db\nentity_key_serialization_version: 3\n",
    )
    .unwrap();
    let endpoint = endpoint.map_or(String::new(), |e| {
        format!("\n    s3_endpoint_override: {e}")
    });
    std::fs::write(
        repo.join("features.yaml"),
        format!(
            r#"
entities:
  - {{name: driver, join_keys: [driver_id], value_type: INT64}}
sources:
  - name: stats_file
    type: file
    path: {path}{endpoint}
    timestamp_field: event_timestamp
  - {{name: stats_push, type: push, batch_source: stats_file}}
feature_views:
  - name: stats
    entities: [driver]
    ttl: 1d
    source: stats_push
    schema: [{{name: conv_rate, dtype: Float32}}]
"#
        ),
    )
    .unwrap();
    repo
}

fn apply(repo: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["apply", "--repo", repo.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args)
}

fn assert_applied(out: &Output) {
    assert!(out.status.success(), "{}", text(&out.stderr));
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

/// `quiver ARGS`, once it listens on `port`; `envs` added to its environment.
fn spawn(args: &[&str], envs: &[(&str, &str)], port: u16) -> Server {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = quiver();
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut server = Server(cmd.spawn().unwrap());
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("quiver {args:?} exited: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// `quiver serve --enable-push` on the repo; returns the server and its address.
fn serve(repo: &Path, extra: &[&str], envs: &[(&str, &str)]) -> (Server, SocketAddr) {
    let port = free_port();
    let p = port.to_string();
    let mut args = vec![
        "serve",
        "--repo",
        repo.to_str().unwrap(),
        "--port",
        &p,
        "--enable-push",
    ];
    args.extend_from_slice(extra);
    let server = spawn(&args, envs, port);
    (server, format!("127.0.0.1:{port}").parse().unwrap())
}

/// One HTTP/1.1 exchange on a fresh connection: (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head[9..12].parse().unwrap(), body.to_owned())
}

fn push_body(to: &str, driver: i64) -> String {
    serde_json::json!({
        "push_source_name": "stats_push",
        "to": to,
        "df": {
            "driver_id": [driver],
            "event_timestamp": ["2026-01-01T02:00:00Z"],
            "conv_rate": [0.25],
        }
    })
    .to_string()
}

/// A TCP listener standing in for a server (S3, the instance metadata service): counts the
/// connections it gets and answers each with `response`.
struct Listener {
    url: String,
    connections: Arc<AtomicUsize>,
}

fn listener(response: &'static str) -> Listener {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 65536];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    Listener { url, connections }
}

const S3_ERROR: &str = "HTTP/1.1 403 Forbidden\r\ncontent-type: application/xml\r\ncontent-length: 102\r\nconnection: close\r\n\r\n<Error><Code>AccessDenied</Code><Message>UPSTREAM-SECRET-TEXT internal-host-10.0.0.7</Message></Error>";

#[test]
fn apply_refuses_sources_outside_the_repo_and_the_allowed_locations() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("stolen.parquet");
    let registry = dir.path().join("repo/data/registry.db");

    // An absolute path elsewhere on disk.
    let r = repo(dir.path(), target.to_str().unwrap(), None);
    let out = apply(&r, &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("source \"stats_file\": path:") && err.contains("outside the repo"),
        "{err}"
    );
    assert!(!registry.exists(), "nothing is written");

    // A relative path that climbs out.
    let r = repo(dir.path(), "../../escape.parquet", None);
    assert!(!apply(&r, &[]).status.success());

    // A symlink inside the repo that leads out of it.
    std::os::unix::fs::symlink(outside.path(), r.join("data/link")).unwrap();
    let r = repo(dir.path(), "data/link/stolen.parquet", None);
    let out = apply(&r, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("resolves to"),
        "{}",
        text(&out.stderr)
    );

    // Buckets and endpoints the operator did not name.
    let r = repo(dir.path(), "s3://bkt/stats.parquet", None);
    let out = apply(&r, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("s3://bkt"),
        "{}",
        text(&out.stderr)
    );
    let r = repo(
        dir.path(),
        "s3://bkt/stats.parquet",
        Some("http://169.254.169.254"),
    );
    let out = apply(&r, &["--allow-location", "s3://bkt"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("s3_endpoint_override"), "{err}");
    assert!(!registry.exists(), "nothing is written");

    // What the operator allows is applied.
    let out = apply(
        &r,
        &[
            "--allow-location",
            "s3://bkt",
            "--allow-endpoint",
            "http://169.254.169.254",
        ],
    );
    assert_applied(&out);
    let r = repo(dir.path(), "data/link/stolen.parquet", None);
    assert_applied(&apply(
        &r,
        &["--allow-location", outside.path().to_str().unwrap()],
    ));
    // The environment works as the flag does.
    let out = quiver()
        .args(["apply", "--repo", r.to_str().unwrap()])
        .env("QUIVER_ALLOW_LOCATIONS", outside.path())
        .output()
        .unwrap();
    assert_applied(&out);
    // A malformed policy is refused before anything runs.
    let out = apply(&r, &["--allow-location", "relative/dir"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("absolute"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_sidecar_refuses_offline_pushes_outside_the_repo_even_when_the_registry_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("made/by/push/stats.parquet");
    let r = repo(dir.path(), target.to_str().unwrap(), None);
    // Applied under a looser policy (or by Feast): the registry names the outside path.
    assert_applied(&apply(
        &r,
        &["--allow-location", outside.path().to_str().unwrap()],
    ));

    let (server, addr) = serve(&r, &[], &[]);
    let (status, body) = http(addr, "POST", "/push", &push_body("offline", 1));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("outside the repo"), "{body}");
    assert!(
        !outside.path().join("made").exists(),
        "no directory or file is created outside the repo"
    );
    drop(server);

    // The operator's allowance makes the same push work: the refusal was the policy's.
    let (_server, addr) = serve(
        &r,
        &["--allow-location", outside.path().to_str().unwrap()],
        &[],
    );
    let (status, body) = http(addr, "POST", "/push", &push_body("offline", 1));
    assert_eq!(status, 200, "{body}");
    assert_eq!(parquet_rows(&target), 1);
}

#[test]
fn an_endpoint_the_operator_did_not_allow_gets_no_request_and_upstream_words_are_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = listener(S3_ERROR);
    let r = repo(dir.path(), "s3://bkt/stats.parquet", Some(&s3.url));
    assert_applied(&apply(
        &r,
        &["--allow-location", "s3://bkt", "--allow-endpoint", &s3.url],
    ));
    let creds = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];

    // Served without the endpoint allowed: refused, and nothing is sent to it.
    let (server, addr) = serve(&r, &["--allow-location", "s3://bkt"], &creds);
    let (status, body) = http(addr, "POST", "/push", &push_body("offline", 1));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("s3_endpoint_override"), "{body}");
    assert_eq!(s3.connections.load(Ordering::SeqCst), 0);
    drop(server);

    // Allowed: the request goes out, and the store's answer stays in the log.
    let (_server, addr) = serve(
        &r,
        &["--allow-location", "s3://bkt", "--allow-endpoint", &s3.url],
        &creds,
    );
    let (status, body) = http(addr, "POST", "/push", &push_body("offline", 1));
    assert!(s3.connections.load(Ordering::SeqCst) > 0);
    assert!((500..600).contains(&status), "{status} {body}");
    assert!(
        !body.contains("UPSTREAM-SECRET-TEXT") && !body.contains("10.0.0.7"),
        "{body}"
    );
    assert!(body.contains("server's log"), "{body}");
}

#[test]
fn without_credentials_s3_clients_never_ask_the_instance_metadata_service() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let s3 = listener(S3_ERROR);
    let metadata =
        listener("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let r = repo(dir.path(), "s3://bkt/stats.parquet", None);
    assert_applied(&apply(&r, &["--allow-location", "s3://bkt"]));
    let envs = [
        ("AWS_ENDPOINT_URL", s3.url.as_str()),
        ("AWS_METADATA_ENDPOINT", metadata.url.as_str()),
        ("AWS_REGION", "us-east-1"),
        // No ~/.aws either.
        ("HOME", home.path().to_str().unwrap()),
    ];

    let (server, addr) = serve(&r, &["--allow-location", "s3://bkt"], &envs);
    let (status, body) = http(addr, "POST", "/push", &push_body("offline", 1));
    assert!(status >= 400, "{status} {body}");
    assert_eq!(
        metadata.connections.load(Ordering::SeqCst),
        0,
        "the metadata service was asked: {body}"
    );
    assert_eq!(
        s3.connections.load(Ordering::SeqCst),
        0,
        "an unsigned request went out"
    );
    drop(server);

    // The operator's switch lets it ask (which shows the listener stands where the client
    // would go).
    let (_server, addr) = serve(
        &r,
        &["--allow-location", "s3://bkt", "--allow-instance-metadata"],
        &envs,
    );
    let (status, body) = http(addr, "POST", "/push", &push_body("offline", 1));
    assert!(status >= 400, "{status} {body}");
    assert!(metadata.connections.load(Ordering::SeqCst) > 0);
}

#[test]
fn offline_serve_reads_no_file_outside_the_repo() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.csv");
    std::fs::write(
        &secret,
        "driver_id,event_timestamp,conv_rate\n1,2026-01-01T00:00:00Z,0.123456789\n",
    )
    .unwrap();
    let r = repo(dir.path(), secret.to_str().unwrap(), None);
    assert_applied(&apply(
        &r,
        &["--allow-location", outside.path().to_str().unwrap()],
    ));
    // An entity file reached through a symlink inside the repo.
    std::fs::write(
        outside.path().join("entities.csv"),
        "driver_id,event_timestamp\n1,2026-01-01T05:00:00Z\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), r.join("data/out")).unwrap();

    let (flight, http_port) = (free_port(), free_port());
    let _server = spawn(
        &[
            "offline",
            "serve",
            "--repo",
            r.to_str().unwrap(),
            "--port",
            &flight.to_string(),
            "--http-port",
            &http_port.to_string(),
        ],
        &[],
        http_port,
    );
    let addr: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let request = serde_json::json!({
        "features": ["stats:conv_rate"],
        "entities": {"driver_id": [1], "event_timestamp": ["2026-01-01T05:00:00Z"]},
    });
    let (status, body) = http(addr, "POST", "/v1/historical", &request.to_string());
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("outside the repo"), "{body}");
    assert!(!body.contains("0.123456789"), "{body}");

    let request = serde_json::json!({
        "features": ["stats:conv_rate"],
        "entity_path": "data/out/entities.csv",
    });
    let (status, body) = http(addr, "POST", "/v1/historical", &request.to_string());
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("entity_path") && body.contains("outside the repo"),
        "{body}"
    );
}

#[test]
fn two_processes_appending_to_one_file_lose_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo(dir.path(), "data/stats.parquet", None);
    let file = r.join("data/stats.parquet");
    write_stats(&file);
    assert_applied(&apply(&r, &[]));
    let (_a, a) = serve(&r, &[], &[]);
    let (_b, b) = serve(&r, &[], &[]);
    const PUSHES: i64 = 25;
    let pushers: Vec<_> = [(a, 0), (b, 1000)]
        .into_iter()
        .map(|(addr, base)| {
            std::thread::spawn(move || {
                for i in 0..PUSHES {
                    let (status, body) =
                        http(addr, "POST", "/push", &push_body("offline", base + i));
                    assert_eq!(status, 200, "{body}");
                }
            })
        })
        .collect();
    for p in pushers {
        p.join().unwrap();
    }
    assert_eq!(parquet_rows(&file), 1 + 2 * PUSHES as usize);
}

#[test]
fn the_quickstarts_push_source_takes_offline_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("repo");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart"),
        &r,
    );
    let _ = std::fs::remove_file(r.join("data/registry.db"));
    assert_applied(&apply(&r, &[]));
    let file = r.join("data/driver_stats.parquet");
    let before = parquet_rows(&file);
    let (_server, addr) = serve(&r, &[], &[]);

    // The view's columns only: the source's others (avg_daily_trips, recent_zones, created)
    // are null in the new rows.
    let body = serde_json::json!({
        "push_source_name": "driver_stats_push",
        "to": "offline",
        "df": {
            "driver_id": [1001, 1002],
            "event_timestamp": ["2026-01-02T00:00:00Z", "2026-01-02T00:00:00Z"],
            "conv_rate": [0.5, 0.6],
            "acc_rate": [0.9, 0.8],
        }
    });
    let (status, text) = http(addr, "POST", "/push", &body.to_string());
    assert_eq!(status, 200, "{text}");
    assert_eq!(parquet_rows(&file), before + 2);

    // With a source column the view does not use, online and offline.
    let mut with_trips = body.clone();
    with_trips["to"] = "online_and_offline".into();
    with_trips["df"]["avg_daily_trips"] = serde_json::json!([10, 20]);
    let (status, text) = http(addr, "POST", "/push", &with_trips.to_string());
    assert_eq!(status, 200, "{text}");
    assert_eq!(parquet_rows(&file), before + 4);

    // A column the source does not have is still refused, by name, and nothing is written.
    let mut bogus = body.clone();
    bogus["df"]["bogus"] = serde_json::json!([1, 2]);
    let (status, text) = http(addr, "POST", "/push", &bogus.to_string());
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("bogus"), "{text}");
    assert_eq!(parquet_rows(&file), before + 4);
    // Online-only pushes keep refusing columns no view uses.
    let mut online = with_trips.clone();
    online["to"] = "online".into();
    let (status, text) = http(addr, "POST", "/push", &online.to_string());
    assert_eq!(status, 422, "{text}");
}

#[test]
fn a_registry_that_stops_loading_is_reported_while_the_last_good_one_serves() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo(dir.path(), "data/stats.parquet", None);
    assert_applied(&apply(&r, &[]));
    let (_server, addr) = serve(&r, &["--registry-refresh", "100ms"], &[]);
    let metric = |addr| {
        let (_, metrics) = http(addr, "GET", "/metrics", "");
        metrics
            .lines()
            .find(|l| l.starts_with("quiver_registry_load_failing "))
            .map(str::to_owned)
            .unwrap()
    };
    assert_eq!(metric(addr), "quiver_registry_load_failing 0");
    let (status, ready) = http(addr, "GET", "/ready", "");
    assert_eq!(status, 200, "{ready}");
    assert!(!ready.contains("registry"), "{ready}");

    // Truncated, as a half-copied file would be.
    let registry = r.join("data/registry.db");
    let good = std::fs::read(&registry).unwrap();
    std::fs::write(&registry, &good[..good.len() / 2]).unwrap();
    let started = Instant::now();
    while metric(addr) != "quiver_registry_load_failing 1" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never reported"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, ready) = http(addr, "GET", "/ready", "");
    assert_eq!(status, 200, "still serving: {ready}");
    assert!(ready.contains("failed to load"), "{ready}");
    let request = r#"{"features": ["stats:conv_rate"], "entities": {"driver_id": [1]}}"#;
    let (status, body) = http(addr, "POST", "/get-online-features", request);
    assert_eq!(status, 200, "the last good registry serves: {body}");

    // Repaired: the report goes away.
    std::fs::write(&registry, &good).unwrap();
    let started = Instant::now();
    while metric(addr) != "quiver_registry_load_failing 0" {
        assert!(started.elapsed() < Duration::from_secs(20), "never cleared");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, ready) = http(addr, "GET", "/ready", "");
    assert!(!ready.contains("failed to load"), "{ready}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

//! `quiver serve --role ingest` as Feast's clients call it: `POST /materialize` and
//! `/materialize-incremental` over real HTTP on a real repo (a Parquet source written here, the
//! SQLite online store), behind the write endpoints' token on a non-loopback bind; bad bodies are
//! 4xx naming the field, in Feast's error detail.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray};
use arrow_array::{TimestampMicrosecondArray, TimestampSecondArray};

const TOKEN: &str = "s3cret-token";

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

/// 2026-01-01T00:00:00Z plus `hours`, in microseconds.
fn at(hours: i64) -> i64 {
    (1_767_225_600 + hours * 3600) * 1_000_000
}

/// The customer_profile source: c1 twice (10:00 silver, 11:00 gold), c2 at 13:00.
fn write_profiles(path: &Path) {
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "customer_id",
            Arc::new(StringArray::from(vec!["c1", "c1", "c2"])),
        ),
        (
            "event_timestamp",
            Arc::new(
                TimestampMicrosecondArray::from(vec![at(10), at(11), at(13)]).with_timezone("UTC"),
            ),
        ),
        (
            "tier",
            Arc::new(StringArray::from(vec!["silver", "gold", "bronze"])),
        ),
        ("ltv", Arc::new(Float64Array::from(vec![10.0, 100.5, 0.25]))),
        (
            "is_vip",
            Arc::new(BooleanArray::from(vec![false, true, false])),
        ),
        (
            "signup_ts",
            Arc::new(
                TimestampSecondArray::from(vec![1_700_000_000, 1_700_000_000, 1_700_000_001])
                    .with_timezone("UTC"),
            ),
        ),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// One HTTP/1.1 exchange on a fresh connection: (status, head, body).
fn http(addr: SocketAddr, path: &str, auth: Option<&str>, body: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = auth.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (
        head[9..12].parse().unwrap(),
        head.to_owned(),
        body.to_owned(),
    )
}

/// Feast's error detail inside an error body (a JSON string holding the object).
fn detail(body: &str) -> serde_json::Value {
    let outer: serde_json::Value = serde_json::from_str(body).unwrap();
    serde_json::from_str(
        outer
            .as_str()
            .unwrap_or_else(|| panic!("not a detail string: {body}")),
    )
    .unwrap()
}

/// The quickstart repo under `dir`, applied by `quiver apply`.
fn applied_quickstart(dir: &Path) -> std::path::PathBuf {
    let repo = dir.join("repo");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart"),
        &repo,
    );
    let _ = std::fs::remove_file(repo.join("data/registry.db"));
    std::fs::create_dir_all(repo.join("data")).unwrap();
    let applied = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["apply", "--repo"])
        .arg(&repo)
        .env_remove("FEATURE_STORE_YAML_BASE64")
        .output()
        .unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    repo
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(repo: &Path, extra: &[&str]) -> (Server, SocketAddr) {
    let port = free_port();
    spawn(
        &[
            "serve",
            "--repo",
            repo.to_str().unwrap(),
            "--port",
            &port.to_string(),
        ],
        extra,
        port,
    )
}

/// `quiver ARGS EXTRA` with the push and registry tokens set, once it listens on `port`.
fn spawn(args: &[&str], extra: &[&str], port: u16) -> (Server, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_quiver"))
            .args(args)
            .args(extra)
            .env("QUIVER_PUSH_TOKEN", TOKEN)
            .env("QUIVER_REGISTRY_TOKEN", "registry-token")
            .env_remove("FEATURE_STORE_YAML_BASE64")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, addr)
}

#[test]
fn ingest_materializes_through_feasts_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let repo = applied_quickstart(dir.path());
    write_profiles(&repo.join("data/customer_profile.parquet"));
    let (_server, addr) = serve(&repo, &["--role", "ingest", "--host", "0.0.0.0"]);
    let range = r#"{"start_ts": "2026-01-01T09:00:00", "end_ts": "2026-01-01T12:00:00+00:00", "feature_views": ["customer_profile"], "disable_event_timestamp": false, "full_feature_names": false}"#;

    // The token guards it, as it guards push.
    let (status, head, body) = http(addr, "/materialize", None, range);
    assert_eq!(status, 401, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    let (status, _, _) = http(addr, "/materialize", Some("wrong"), range);
    assert_eq!(status, 401);

    // Bad bodies: 4xx naming the field, nothing written.
    let auth = Some(TOKEN);
    for (path, body, want_status, want) in [
        ("/materialize", "{", 400, "request body"),
        (
            "/materialize",
            r#"{"end_ts": "2026-01-01"}"#,
            422,
            "start_ts is required",
        ),
        (
            "/materialize",
            r#"{"start_ts": "2026-01-02", "end_ts": "2026-01-01"}"#,
            400,
            "start_ts 2026-01-02T00:00:00Z is after end_ts",
        ),
        (
            "/materialize",
            r#"{"start_ts": "2026-01-01", "end_ts": "2999-01-01"}"#,
            400,
            "is in the future",
        ),
        ("/materialize-incremental", "{}", 422, "end_ts is required"),
        (
            "/materialize-incremental",
            r#"{"end_ts": "noon"}"#,
            400,
            "end_ts: \"noon\"",
        ),
        (
            "/materialize-incremental",
            r#"{"end_ts": "2026-01-01", "feature_views": [1]}"#,
            422,
            "feature_views",
        ),
        (
            "/materialize-incremental",
            r#"{"end_ts": "2026-01-01", "version": "v2"}"#,
            422,
            "version",
        ),
        (
            "/materialize?async=true",
            range,
            501,
            "async=true is not supported",
        ),
    ] {
        let (status, _, text) = http(addr, path, auth, body);
        assert_eq!(status, want_status, "{path} {body} -> {text}");
        let d = detail(&text);
        assert!(
            d["message"].as_str().unwrap().contains(want),
            "{path} {body} -> {d}"
        );
    }
    // An unknown view is Feast's FeatureViewNotFoundException, which its SDK re-raises.
    let (status, _, text) = http(
        addr,
        "/materialize",
        auth,
        r#"{"start_ts": "2026-01-01", "end_ts": "2026-01-02", "feature_views": ["nope"]}"#,
    );
    assert_eq!(status, 404, "{text}");
    let d = detail(&text);
    assert_eq!(
        (d["module"].as_str(), d["class"].as_str()),
        (Some("feast.errors"), Some("FeatureViewNotFoundException")),
        "{d}"
    );
    assert!(d["message"].as_str().unwrap().contains("\"nope\""), "{d}");
    let read = r#"{"features": ["customer_profile:tier", "customer_profile:lifetime_value"], "entities": {"customer_id": ["c1", "c2"]}}"#;
    let (_, _, answer) = http(addr, "/get-online-features", None, read);
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        answer["results"][1]["statuses"],
        serde_json::json!(["NOT_FOUND", "NOT_FOUND"])
    );

    // 09:00 to 12:00: c1's latest (gold); c2's row is after the window.
    let (status, _, text) = http(addr, "/materialize", auth, range);
    assert_eq!(status, 200, "{text}");
    let done: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(done["status"], "ok");
    assert_eq!(done["feature_views"][0]["name"], "customer_profile");
    assert_eq!(done["feature_views"][0]["written"], 1, "{done}");
    let (_, _, answer) = http(addr, "/get-online-features", None, read);
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        answer["results"][1]["values"],
        serde_json::json!(["gold", null]),
        "{answer}"
    );

    // Incremental: from the recorded end (12:00) to 14:00 brings c2 in.
    let (status, _, text) = http(
        addr,
        "/materialize-incremental",
        auth,
        r#"{"end_ts": "2026-01-01T14:00:00", "feature_views": ["customer_profile"]}"#,
    );
    assert_eq!(status, 200, "{text}");
    let done: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        done["feature_views"][0]["start"], "2026-01-01T12:00:00Z",
        "{done}"
    );
    assert_eq!(done["feature_views"][0]["written"], 1, "{done}");
    let (_, _, answer) = http(addr, "/get-online-features", None, read);
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        answer["results"][1]["values"],
        serde_json::json!(["gold", "bronze"]),
        "{answer}"
    );
    assert_eq!(
        answer["results"][2]["values"],
        serde_json::json!([100.5, 0.25]),
        "{answer}"
    );

    // Both runs are in the registry, where `quiver materialize-incremental` (and Feast) start.
    let registry = quiver_registry::store::read(&repo.join("data/registry.db"))
        .unwrap()
        .project("quickstart")
        .unwrap();
    let view = registry.feature_view("customer_profile").unwrap();
    let ends: Vec<String> = view
        .materialization_intervals
        .iter()
        .map(|(_, end)| quiver_core::time::format_rfc3339(end))
        .collect();
    assert_eq!(ends, ["2026-01-01T12:00:00Z", "2026-01-01T14:00:00Z"]);
}

#[test]
fn materialize_is_the_ingest_roles() {
    let dir = tempfile::tempdir().unwrap();
    let repo = applied_quickstart(dir.path());
    let (_server, addr) = serve(&repo, &["--enable-push"]);
    let (status, _, text) = http(addr, "/materialize", Some(TOKEN), "{}");
    assert_eq!(status, 404, "{text}");
    assert!(
        detail(&text)["message"]
            .as_str()
            .unwrap()
            .contains("--role ingest"),
        "{text}"
    );
}

/// With `--registry-url`, a run reads its definitions from the registry service and records its
/// interval there (the repo has no registry file of its own).
#[test]
fn ingest_materializes_through_the_registry_service() {
    let dir = tempfile::tempdir().unwrap();
    let repo = applied_quickstart(dir.path());
    write_profiles(&repo.join("data/customer_profile.parquet"));
    let store = dir.path().join("registry.db");
    std::fs::rename(repo.join("data/registry.db"), &store).unwrap();
    let registry_port = free_port();
    let (_registry, _) = spawn(
        &[
            "registry",
            "serve",
            "--store",
            store.to_str().unwrap(),
            "--host",
            "127.0.0.1",
        ],
        &["--port", &registry_port.to_string()],
        registry_port,
    );
    let url = format!("http://127.0.0.1:{registry_port}");
    let (_server, addr) = serve(&repo, &["--role", "ingest", "--registry-url", &url]);
    let (status, _, text) = http(
        addr,
        "/materialize-incremental",
        Some(TOKEN),
        r#"{"end_ts": "2026-01-01T14:00:00", "feature_views": ["customer_profile"]}"#,
    );
    assert_eq!(status, 200, "{text}");
    let done: serde_json::Value = serde_json::from_str(&text).unwrap();
    // No run recorded yet and ttl 0: from 52 weeks back, so all three rows are in the window.
    assert_eq!(done["feature_views"][0]["written"], 2, "{done}");
    let read =
        r#"{"features": ["customer_profile:tier"], "entities": {"customer_id": ["c1", "c2"]}}"#;
    let (_, _, answer) = http(addr, "/get-online-features", None, read);
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        answer["results"][1]["values"],
        serde_json::json!(["gold", "bronze"]),
        "{answer}"
    );
    let registry = quiver_registry::store::read(&store)
        .unwrap()
        .project("quickstart")
        .unwrap();
    let view = registry.feature_view("customer_profile").unwrap();
    let ends: Vec<String> = view
        .materialization_intervals
        .iter()
        .map(|(_, end)| quiver_core::time::format_rfc3339(end))
        .collect();
    assert_eq!(ends, ["2026-01-01T14:00:00Z"]);
    assert!(!repo.join("data/registry.db").exists());
}

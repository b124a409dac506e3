//! The lean `quiver-sidecar` binary as the injector runs it: `serve` on the quickstart repo
//! (SQLite, the embedded default), a push and a read over HTTP, the server core's counters in
//! `/metrics`, and SIGTERM: `/ready` answers 503 during the drain delay, then the process exits 0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// The quickstart repo, applied with the real `apply` code.
fn quickstart(dir: &Path) {
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart"),
        dir,
    );
    let _ = std::fs::remove_file(dir.join("data/registry.db"));
    let desired = quiver_registry::definitions::load(dir, "quickstart").unwrap();
    let path = dir.join("data/registry.db");
    let mut file = quiver_registry::store::read(&path).unwrap();
    let now = quiver_core::time::Timestamp {
        seconds: 1_800_000_000,
        nanos: 0,
    };
    quiver_registry::apply::apply(&mut file, &desired, now).unwrap();
    quiver_registry::store::write_atomic(&path, &file.encode("v1", now)).unwrap();
}

/// One HTTP/1.1 exchange on a fresh connection: (status, body); `None` if nothing listens.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.get(9..12)?.parse().ok()?, body.to_owned()))
}

struct Sidecar(Child);

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_lean_binary_serves_writes_and_drains_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    quickstart(&repo);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut sidecar = Sidecar(
        Command::new(env!("CARGO_BIN_EXE_quiver-sidecar"))
            .args(["serve", "--repo"])
            .arg(&repo)
            .args(["--port", &port.to_string(), "--enable-push"])
            .args(["--drain-delay", "1s", "--drain-timeout", "5s"])
            .env_remove("QUIVER_PUSH_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    loop {
        if http(addr, "GET", "/ready", "").is_some_and(|(s, _)| s == 200) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let ts = quiver_core::time::format_rfc3339(&quiver_core::time::Timestamp {
        seconds: now.as_secs() as i64,
        nanos: 0,
    });
    let push = format!(
        r#"{{"push_source_name":"driver_stats_push","to":"online","df":{{"driver_id":[1001],"event_timestamp":["{ts}"],"conv_rate":[0.5],"acc_rate":[0.25]}}}}"#
    );
    let (status, body) = http(addr, "POST", "/push", &push).unwrap();
    assert_eq!(status, 200, "{body}");
    let read =
        r#"{"features":["driver_hourly_stats_fresh:conv_rate"],"entities":{"driver_id":[1001]}}"#;
    let (status, body) = http(addr, "POST", "/get-online-features", read).unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["results"][1]["values"][0], 0.5, "{body}");
    assert_eq!(answer["results"][1]["statuses"][0], "PRESENT", "{body}");
    let (status, metrics) = http(addr, "GET", "/metrics", "").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("quiver_http_connections_open "),
        "{metrics}"
    );

    let pid = sidecar.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_millis(200));
    let (status, body) = http(addr, "GET", "/ready", "").expect("still accepting in the delay");
    assert_eq!(status, 503, "{body}");
    let stopping = Instant::now();
    let exit = loop {
        if let Some(status) = sidecar.0.try_wait().unwrap() {
            break status;
        }
        assert!(stopping.elapsed() < Duration::from_secs(10), "did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    assert!(TcpStream::connect(addr).is_err());
}

/// The lean binary has no offline engine: its ingest role checks the token, then answers
/// `POST /materialize` with 501 saying which binary does it (in Feast's error detail).
#[test]
fn the_lean_binarys_ingest_role_refuses_materialize_with_501() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    quickstart(&repo);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _sidecar = Sidecar(
        Command::new(env!("CARGO_BIN_EXE_quiver-sidecar"))
            .args(["serve", "--repo"])
            .arg(&repo)
            .args([
                "--port",
                &port.to_string(),
                "--role",
                "ingest",
                "--host",
                "0.0.0.0",
            ])
            .env("QUIVER_PUSH_TOKEN", "t0ken")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while http(addr, "GET", "/ready", "").is_none_or(|(s, _)| s != 200) {
        assert!(started.elapsed() < Duration::from_secs(20), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let body = r#"{"end_ts": "2026-01-01T00:00:00"}"#;
    let (status, text) = http(addr, "POST", "/materialize-incremental", body).unwrap();
    assert_eq!(status, 401, "{text}");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /materialize HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t0ken\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, text) = raw.split_once("\r\n\r\n").unwrap();
    assert_eq!(&head[9..12], "501", "{raw}");
    let outer: serde_json::Value = serde_json::from_str(text).unwrap();
    let detail: serde_json::Value = serde_json::from_str(outer.as_str().unwrap()).unwrap();
    assert_eq!(detail["class"], "NotImplemented", "{detail}");
    assert!(
        detail["message"]
            .as_str()
            .unwrap()
            .contains("quiver serve --role ingest"),
        "{detail}"
    );
}

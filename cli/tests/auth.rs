//! Secure defaults (issue 19): every server that takes writes (the registry service, `serve
//! --enable-push`, `serve --role ingest`, and `offline serve`, which reads any source) refuses to
//! start on a non-loopback address without a token, naming how to give one, unless
//! `--insecure-no-auth` says otherwise (then it warns and says so on /metrics or /ready). With a
//! token, a write without it or with a wrong one is 401 and one with a lowercase `bearer` scheme
//! is served. Real binaries, real HTTP on 0.0.0.0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every variable that could hand a server a token or the opt-out, removed so that only what a
/// test sets counts.
const AUTH_ENV: [&str; 8] = [
    "QUIVER_PUSH_TOKEN",
    "QUIVER_PUSH_TOKEN_FILE",
    "QUIVER_REGISTRY_TOKEN",
    "QUIVER_REGISTRY_TOKEN_FILE",
    "QUIVER_OFFLINE_TOKEN",
    "QUIVER_OFFLINE_TOKEN_FILE",
    "QUIVER_INSECURE_NO_AUTH",
    "FEATURE_STORE_YAML_BASE64",
];

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

/// The quickstart (with its committed data) under `dir`, applied by `quiver apply`.
fn applied_quickstart(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart"),
        &repo,
    );
    let _ = std::fs::remove_file(repo.join("data/registry.db"));
    let out = quiver(&["apply", "--repo", repo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    repo
}

fn quiver(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiver"));
    cmd.args(args);
    for var in AUTH_ENV {
        cmd.env_remove(var);
    }
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A started server, killed on drop; its stderr in a file.
struct Server {
    child: Child,
    stderr: PathBuf,
}

impl Server {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` and waits until every port in `ports` accepts on loopback, or until it exits
/// (`Err(stderr)`).
fn start(mut cmd: Command, ports: &[u16], dir: &Path) -> Result<Server, String> {
    let stderr = dir.join(format!("stderr-{}", ports[0]));
    let mut server = Server {
        child: cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap(),
        stderr,
    };
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(!status.success(), "a server exited with success");
            return Err(server.stderr());
        }
        if ports
            .iter()
            .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
        {
            return Ok(server);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "neither listened nor exited: {}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 exchange on a fresh connection: (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> (u16, String) {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = authorization.map_or(String::new(), |a| format!("authorization: {a}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    std::io::copy(&mut s.take(16 << 20), &mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head[9..12].parse().unwrap(), body.to_owned())
}

/// What each server needs on its command line: (name, args before the address, how the
/// refusal names its token).
fn servers(repo: &Path, store: &Path) -> Vec<(&'static str, Vec<String>, [&'static str; 2])> {
    let repo = repo.to_str().unwrap().to_owned();
    vec![
        (
            "registry serve",
            vec![
                "registry".into(),
                "serve".into(),
                "--store".into(),
                store.to_str().unwrap().into(),
            ],
            ["--token-file", "QUIVER_REGISTRY_TOKEN"],
        ),
        (
            "serve --enable-push",
            vec![
                "serve".into(),
                "--repo".into(),
                repo.clone(),
                "--enable-push".into(),
            ],
            ["--push-token-file", "QUIVER_PUSH_TOKEN"],
        ),
        (
            "serve --role ingest",
            vec![
                "serve".into(),
                "--repo".into(),
                repo.clone(),
                "--role".into(),
                "ingest".into(),
            ],
            ["--push-token-file", "QUIVER_PUSH_TOKEN"],
        ),
        (
            "offline serve",
            vec!["offline".into(), "serve".into(), "--repo".into(), repo],
            ["--token-file", "QUIVER_OFFLINE_TOKEN"],
        ),
    ]
}

#[test]
fn servers_refuse_a_reachable_address_without_a_token_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let repo = applied_quickstart(dir.path());
    let store = dir.path().join("registry.db");
    std::fs::copy(repo.join("data/registry.db"), &store).unwrap();
    for (name, args, how) in servers(&repo, &store) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Refused, with the way to give a token and the opt-out named.
        let port = free_port();
        let refused = start(
            {
                let mut c = quiver(&args);
                c.args(["--host", "0.0.0.0", "--port", &port.to_string()]);
                c
            },
            &[port],
            dir.path(),
        );
        let stderr = match refused {
            Ok(server) => panic!("{name} started open on 0.0.0.0: {}", server.stderr()),
            Err(stderr) => stderr,
        };
        for needle in [how[0], how[1], "--insecure-no-auth", "0.0.0.0", "127.0.0.1"] {
            assert!(stderr.contains(needle), "{name}: {needle}: {stderr}");
        }
        // Loopback needs no token.
        let port = free_port();
        let mut c = quiver(&args);
        c.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        let server =
            start(c, &[port], dir.path()).unwrap_or_else(|e| panic!("{name} on loopback: {e}"));
        drop(server);
        // The opt-out starts it, loudly.
        let port = free_port();
        let mut c = quiver(&args);
        c.args(["--host", "0.0.0.0", "--port", &port.to_string()])
            .arg("--insecure-no-auth");
        let server =
            start(c, &[port], dir.path()).unwrap_or_else(|e| panic!("{name} --insecure: {e}"));
        let started = Instant::now();
        while !server.stderr().contains("INSECURE") {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{name}: no warning: {}",
                server.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        match name {
            "registry serve" => {
                let (status, body) = http(port, "GET", "/ready", None, "");
                assert_eq!(status, 200, "{body}");
                assert!(body.contains(r#""auth":"off""#), "{body}");
                let (_, metrics) = http(port, "GET", "/metrics", None, "");
                assert!(
                    metrics.contains("quiver_registry_writes_unauthenticated 1"),
                    "{metrics}"
                );
            }
            "serve --enable-push" | "serve --role ingest" => {
                let (_, metrics) = http(port, "GET", "/metrics", None, "");
                assert!(
                    metrics.contains("quiver_writes_unauthenticated 1"),
                    "{name}: {metrics}"
                );
            }
            _ => {}
        }
    }
}

const PUSH: &str = r#"{"push_source_name": "driver_stats_push", "to": "online",
  "df": {"driver_id": [1001], "event_timestamp": ["2026-01-01T10:00:00Z"],
         "conv_rate": [0.5], "acc_rate": [0.75]}}"#;

const HISTORICAL: &str = r#"{"features": ["driver_hourly_stats:conv_rate"], "full_feature_names": true,
  "entities": {"driver_id": [1001, 1002], "event_timestamp": ["2026-01-01T13:00:00Z", "2026-01-01T12:00:00Z"]}}"#;

const INTERVAL: &str = r#"{"intervals": [{"feature_view": "driver_hourly_stats", "start": "2025-01-01T00:00:00Z", "end": "2025-01-02T00:00:00Z"}]}"#;

/// Without a token, with a wrong one: 401 and nothing done; with the scheme in lowercase (or
/// any case): served.
fn check_tokens(name: &str, port: u16, path: &str, body: &str, token: &str) {
    let (status, text) = http(port, "POST", path, None, body);
    assert_eq!(status, 401, "{name} without a token: {text}");
    let (status, text) = http(port, "POST", path, Some("Bearer wrong-token"), body);
    assert_eq!(status, 401, "{name} with a wrong token: {text}");
    let (status, text) = http(port, "POST", path, Some(&format!("Bearer {token}x")), body);
    assert_eq!(status, 401, "{name} with a longer token: {text}");
    let (status, text) = http(port, "POST", path, Some(&format!("bearer {token}")), body);
    assert_eq!(status, 200, "{name} with a lowercase scheme: {text}");
    let (status, text) = http(port, "POST", path, Some(&format!("BEARER {token}")), body);
    assert_eq!(status, 200, "{name} with an uppercase scheme: {text}");
}

#[test]
fn tokens_from_files_or_env_guard_every_server_on_a_reachable_address() {
    let dir = tempfile::tempdir().unwrap();
    let repo = applied_quickstart(dir.path());
    let store = dir.path().join("registry.db");
    std::fs::copy(repo.join("data/registry.db"), &store).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "file-token\n").unwrap();
    let token_file = token_file.to_str().unwrap();
    let repo_s = repo.to_str().unwrap();

    // The registry service: the token from its variable.
    let port = free_port();
    let mut c = quiver(&["registry", "serve", "--store", store.to_str().unwrap()]);
    c.args(["--host", "0.0.0.0", "--port", &port.to_string()])
        .env("QUIVER_REGISTRY_TOKEN", "env-token");
    let registry = start(c, &[port], dir.path()).unwrap();
    let path = "/v1/projects/quickstart/materializations";
    check_tokens("registry serve", port, path, INTERVAL, "env-token");
    let (_, metrics) = http(port, "GET", "/metrics", None, "");
    assert!(
        metrics.contains("quiver_registry_writes_unauthenticated 0"),
        "{metrics}"
    );
    drop(registry);

    // The sidecar's write endpoints and the ingest role: the token from a file.
    for role in [&["--enable-push"][..], &["--role", "ingest"][..]] {
        let port = free_port();
        let mut c = quiver(&["serve", "--repo", repo_s]);
        c.args(role)
            .args(["--host", "0.0.0.0", "--port", &port.to_string()])
            .args(["--push-token-file", token_file]);
        let server = start(c, &[port], dir.path()).unwrap();
        check_tokens(
            &format!("serve {role:?}"),
            port,
            "/push",
            PUSH,
            "file-token",
        );
        let (_, metrics) = http(port, "GET", "/metrics", None, "");
        assert!(
            metrics.contains("quiver_writes_unauthenticated 0"),
            "{metrics}"
        );
        drop(server);
    }

    // The offline server: Flight and HTTP from one token file.
    let (port, http_port) = (free_port(), free_port());
    let mut c = quiver(&["offline", "serve", "--repo", repo_s]);
    c.args(["--host", "0.0.0.0", "--port", &port.to_string()])
        .args(["--http-port", &http_port.to_string()])
        .args(["--token-file", token_file]);
    let offline = start(c, &[port, http_port], dir.path()).unwrap();
    check_tokens(
        "offline serve",
        http_port,
        "/v1/historical",
        HISTORICAL,
        "file-token",
    );
    drop(offline);

    // The token is never a plain flag (it would show in `ps`).
    let out = quiver(&["offline", "serve", "--repo", repo_s, "--token", "s3cret"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `quiver registry clear-intervals`: the operator's repair of a bad record, with the
/// service's token (refused without it, nothing cleared).
#[test]
fn clear_intervals_removes_a_views_record_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let repo = applied_quickstart(dir.path());
    let store = dir.path().join("registry.db");
    std::fs::copy(repo.join("data/registry.db"), &store).unwrap();
    let port = free_port();
    let mut c = quiver(&["registry", "serve", "--store", store.to_str().unwrap()]);
    c.args(["--port", &port.to_string()])
        .env("QUIVER_REGISTRY_TOKEN", "env-token");
    let _registry = start(c, &[port], dir.path()).unwrap();
    let path = "/v1/projects/quickstart/materializations";
    let (status, text) = http(port, "POST", path, Some("Bearer env-token"), INTERVAL);
    assert_eq!(status, 200, "{text}");
    let intervals = || {
        quiver_registry::store::read(&store)
            .unwrap()
            .project("quickstart")
            .unwrap()
            .feature_view("driver_hourly_stats")
            .unwrap()
            .materialization_intervals
            .len()
    };
    assert_eq!(intervals(), 1);
    let url = format!("http://127.0.0.1:{port}");
    let args = [
        "registry",
        "clear-intervals",
        "--registry-url",
        &url,
        "--project",
        "quickstart",
        "driver_hourly_stats",
    ];
    let out = quiver(&args).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert_eq!(intervals(), 1, "nothing cleared without the token");
    let out = quiver(&args)
        .env("QUIVER_REGISTRY_TOKEN", "env-token")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("Cleared the materialization intervals of driver_hourly_stats"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(intervals(), 0);
}

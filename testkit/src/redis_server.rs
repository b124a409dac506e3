//! One `redis-server` of the test's own.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::{free_port, tls_args, wait_listening};

/// A redis-server of the test's own, killed when dropped. It keeps nothing on disk (`--save ""`,
/// no AOF) and runs in a temp dir of its own (where a cluster node writes `nodes.conf`).
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

    /// A server with extra arguments (e.g. `--cluster-enabled yes`,
    /// `--notify-keyspace-events KEA`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        RedisServer::start_inner(free_port(), extra, false)
    }

    /// A server on a port chosen beforehand (e.g. one a client was already told to use).
    pub fn start_on(port: u16, extra: &[&str]) -> RedisServer {
        RedisServer::start_inner(port, extra, false)
    }

    /// A TLS-only server: `port` is its TLS port; `extra` names the certificates.
    pub fn start_tls_with(extra: &[&str]) -> RedisServer {
        RedisServer::start_inner(free_port(), extra, true)
    }

    /// A TLS-only server with the certificates [`crate::certificates`] put in `certs`, not
    /// asking clients for theirs.
    pub fn start_tls(certs: &Path) -> RedisServer {
        let mut args = tls_args(certs);
        args.extend(["--tls-auth-clients".to_owned(), "no".to_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        RedisServer::start_tls_with(&args)
    }

    fn start_inner(port: u16, extra: &[&str], tls: bool) -> RedisServer {
        let dir = tempfile::tempdir().expect("a temp dir for redis-server");
        let mut server = RedisServer {
            port,
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
        wait_listening(self.port, "redis-server");
    }

    /// `redis://127.0.0.1:<port>/` (plain servers only).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a redis URL")
    }

    /// A blocking connection (plain servers only).
    pub fn conn(&self) -> redis::Connection {
        self.client()
            .get_connection()
            .expect("a connection to the test's redis-server")
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
        self.child.as_ref().expect("a running redis-server").id()
    }

    /// SIGSTOP / SIGCONT: a hung server.
    pub fn pause(&self) {
        signal("-STOP", self.pid());
    }

    pub fn resume(&self) {
        signal("-CONT", self.pid());
    }
}

fn signal(which: &str, pid: u32) {
    Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill(1)");
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A paused (SIGSTOPped) server is continued first, as the original support code did.
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// `redis-cli`, over TLS trusting `certs/ca.crt` when `certs` is given.
pub fn redis_cli(certs: Option<&Path>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("redis-cli");
    if let Some(dir) = certs {
        cmd.arg("--tls").arg("--cacert").arg(dir.join("ca.crt"));
    }
    cmd.args(args).output().expect("redis-cli")
}

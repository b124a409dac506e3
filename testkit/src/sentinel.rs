//! A `redis-server --sentinel` of the test's own.

use std::process::{Child, Command, Stdio};

use crate::{free_port, wait_listening};

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
        let dir = tempfile::tempdir().expect("a temp dir for the sentinel");
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
        .expect("sentinel.conf");
        let child = Command::new("redis-server")
            .args(["sentinel.conf", "--sentinel"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        wait_listening(port, "the sentinel");
        Sentinel {
            port,
            child,
            _dir: dir,
        }
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .and_then(|c| c.get_connection())
            .expect("a connection to the sentinel")
    }

    /// The port of the master the sentinel names now.
    pub fn master_port(&self) -> Option<u16> {
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("mymaster")
            .query::<Option<(String, u16)>>(&mut self.conn())
            .expect("SENTINEL get-master-addr-by-name")
            .map(|(_, port)| port)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

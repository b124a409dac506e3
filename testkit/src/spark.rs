//! A real Spark Connect server (pyspark's own, `local[2]`) on a free loopback port.
//!
//! pyspark 4.3.0's wheel carries the Spark Connect server (`sbin/start-connect-server.sh` and
//! its jar), so a venv made by `compat/setup-spark.sh` plus a Java 17 runtime is all it needs.
//! Starting one takes ~6 s and 1–1.6 GB, so a test process shares one ([`SparkServer::shared`]).
//!
//! The server runs under a small bash watchdog in a process group of its own: the watchdog
//! kills the group when the test process goes away (a static is never dropped, and a test may
//! abort), and [`Drop`] kills it too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::free_port;

/// How long a server may take to answer (a loaded CI machine compiling beside it).
const START_TIMEOUT: Duration = Duration::from_secs(120);

pub struct SparkServer {
    pub port: u16,
    child: Option<Child>,
    /// The server's log (its stdout and stderr), kept for failure messages.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Where pyspark is: `$QUIVER_SPARK_HOME`, else the pyspark package of the venv at
/// `$QUIVER_SPARK_VENV` (default `~/.cache/quiver-ci/spark-venv`, what compat/setup-spark.sh
/// makes). `None` when neither has the connect server script or `java` is missing.
pub fn spark_home() -> Option<PathBuf> {
    let has_server = |p: &Path| p.join("sbin/start-connect-server.sh").is_file();
    Command::new("java")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()
        .filter(|s| s.success())?;
    if let Some(home) = std::env::var_os("QUIVER_SPARK_HOME") {
        let home = PathBuf::from(home);
        return has_server(&home).then_some(home);
    }
    let venv = std::env::var_os("QUIVER_SPARK_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/quiver-ci/spark-venv"))
        })?;
    let lib = venv.join("lib");
    std::fs::read_dir(&lib)
        .ok()?
        .flatten()
        .map(|e| e.path().join("site-packages/pyspark"))
        .find(|p| has_server(p))
}

/// Whether a Spark test should run: `Some(server)` when Spark is installed; otherwise a test
/// skips with a message, or fails under `CI=1` (CI installs it with compat/setup-spark.sh).
pub fn spark_or_skip(test: &str) -> Option<&'static SparkServer> {
    if spark_home().is_none() {
        let why =
            "Spark is not installed: run compat/setup-spark.sh (Java 17 and a pyspark 4.3.0 venv)";
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0") {
            panic!("{test}: {why}");
        }
        eprintln!("skipping {test}: {why}");
        return None;
    }
    Some(SparkServer::shared())
}

impl SparkServer {
    /// The test process's server, started on first use.
    pub fn shared() -> &'static SparkServer {
        static SHARED: OnceLock<SparkServer> = OnceLock::new();
        SHARED.get_or_init(SparkServer::start)
    }

    /// A server of the caller's own, killed when dropped. Panics saying what is missing.
    pub fn start() -> SparkServer {
        let home = spark_home()
            .expect("Spark: java and a pyspark venv (compat/setup-spark.sh) must be installed");
        let dir = tempfile::tempdir().expect("a temp dir for Spark");
        let port = free_port();
        let log = dir.path().join("spark-connect.log");
        let confs = [
            "spark.connect.grpc.binding.address=127.0.0.1".to_owned(),
            format!("spark.connect.grpc.binding.port={port}"),
            "spark.driver.host=127.0.0.1".to_owned(),
            "spark.driver.bindAddress=127.0.0.1".to_owned(),
            "spark.ui.enabled=false".to_owned(),
            "spark.sql.shuffle.partitions=4".to_owned(),
            format!("spark.local.dir={}", dir.path().join("local").display()),
            format!(
                "spark.sql.warehouse.dir={}",
                dir.path().join("warehouse").display()
            ),
        ];
        let mut server = vec![
            home.join("sbin/start-connect-server.sh")
                .display()
                .to_string(),
            "--wait".to_owned(),
            "--master".to_owned(),
            "local[2]".to_owned(),
        ];
        for c in confs {
            server.push("--conf".to_owned());
            server.push(c);
        }
        // The watchdog: run the server, and kill the whole group once the test process ($1) is
        // gone or the server exits.
        let script = r#"
            parent="$1"; shift
            "$@" &
            server=$!
            while kill -0 "$parent" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 1; done
            kill -TERM -- -$$ 2>/dev/null
        "#;
        let out = std::fs::File::create(&log).expect("the Spark log file");
        let err = out.try_clone().expect("the Spark log file");
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(script)
            .arg("spark-watchdog")
            .arg(std::process::id().to_string())
            .args(&server)
            .env("SPARK_HOME", &home)
            .env("SPARK_LOCAL_IP", "127.0.0.1")
            .env("SPARK_LOG_DIR", dir.path())
            .env("SPARK_PID_DIR", dir.path())
            .env("SPARK_NO_DAEMONIZE", "1")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .expect("bash, to start the Spark Connect server");
        let mut spark = SparkServer {
            port,
            child: Some(child),
            log,
            _dir: dir,
        };
        spark.wait_ready();
        spark
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                self.kill();
                panic!(
                    "the Spark Connect server did not start on port {} ({}); its log ends:\n{}",
                    self.port,
                    if exited.is_some() {
                        "it exited"
                    } else {
                        "timed out"
                    },
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `sc://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("sc://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The group: bash, the launcher scripts and the JVM.
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", c.id())])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for SparkServer {
    fn drop(&mut self) {
        self.kill();
    }
}

//! A Redis Cluster of the test's own: `redis-server --cluster-enabled yes` nodes joined with
//! `redis-cli --cluster create`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{RedisServer, free_port, redis_cli, tls_args};

/// A three-master Redis Cluster (no replicas). With `certs` (a folder [`crate::certificates`]
/// filled), every node listens on a TLS port only, and the cluster bus and replication use TLS
/// too.
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

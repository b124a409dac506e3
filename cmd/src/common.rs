//! What every subcommand of both binaries does the same way: logging, the runtime, the address to
//! bind, tokens, the server core's limits, shutdown on SIGTERM, the online store from
//! `feature_store.yaml`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use quiver_online_store::{OnlineStore, RedisOptions, RedisStore, SqliteStore};
use quiver_registry::config::{OnlineStoreConfig, RedisType, RepoConfig};

/// Log format on stderr.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The logging flags every binary takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Logging {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "QUIVER_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

/// Where sources and push targets may be besides the repo, and whether object-store clients
/// may ask the instance metadata service: the operator's policy, the same flags (or
/// environment variables) for every binary (`quiver_registry::trust`).
#[derive(Debug, Clone, clap::Args)]
pub struct TrustArgs {
    /// A location sources and push targets may be in besides the repo: an absolute path prefix,
    /// s3://BUCKET[/PREFIX] or gs://BUCKET[/PREFIX] (repeat, or comma-separated).
    #[arg(
        long = "allow-location",
        global = true,
        value_name = "PATH|URI",
        value_delimiter = ',',
        env = "QUIVER_ALLOW_LOCATIONS"
    )]
    pub locations: Vec<String>,
    /// An endpoint a source's s3_endpoint_override may name, e.g. http://minio:9000 (repeat,
    /// or comma-separated). The environment's own endpoint needs no entry.
    #[arg(
        long = "allow-endpoint",
        global = true,
        value_name = "URL",
        value_delimiter = ',',
        env = "QUIVER_ALLOW_ENDPOINTS"
    )]
    pub endpoints: Vec<String>,
    /// Let S3 and GCS clients without credentials ask the cloud's instance metadata service
    /// (169.254.169.254) for them. Off: such a client fails at once instead.
    #[arg(long, global = true, env = "QUIVER_ALLOW_INSTANCE_METADATA")]
    pub allow_instance_metadata: bool,
}

impl TrustArgs {
    /// Checks the policy and makes it the process's, before anything reads it.
    pub fn install(&self) -> anyhow::Result<()> {
        let trust = quiver_registry::trust::Trust::new(
            &self.locations,
            &self.endpoints,
            self.allow_instance_metadata,
        )
        .map_err(|e| anyhow::anyhow!("--allow-location / --allow-endpoint: {e}"))?;
        quiver_registry::trust::install(trust)
            .map_err(|_| anyhow::anyhow!("the trusted locations were set twice"))
    }
}

impl Logging {
    /// Structured logs on stderr in the chosen format, filtered by `QUIVER_LOG` (default `info`).
    pub fn init(&self) {
        let filter = tracing_subscriber::EnvFilter::try_from_env("QUIVER_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder.json().init(),
        }
    }
}

/// The multi-threaded runtime every long-running subcommand runs on (`workers`: default one
/// per core).
pub fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    runtime_builder(workers)
        .build()
        .context("starting the async runtime")
}

/// [`runtime`]'s builder, for a command that needs more (DataFusion's deep futures want larger
/// worker stacks).
pub fn runtime_builder(workers: Option<usize>) -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = workers {
        builder.worker_threads(n.max(1));
    }
    builder
}

/// A single-threaded runtime for short commands that make a few requests.
pub fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `--host` and `--port` as an address to bind, checked before anything starts.
pub fn listen_addr(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    format!("{host}:{port}")
        .parse()
        .with_context(|| format!("--host {host:?} --port {port}: not an address to bind"))
}

/// The token from a file flag, or from the variable `env` (an empty one is an error): the one
/// way every server and client reads a token. There is no flag that takes the token itself: a
/// value on the command line shows in `ps`.
pub fn read_token(file: Option<&PathBuf>, env: &str, flag: &str) -> anyhow::Result<Option<String>> {
    let token = match (file, std::env::var(env)) {
        (Some(path), _) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("{flag} {}", path.display()))?
                .trim_end()
                .to_owned(),
        ),
        (None, Ok(token)) => Some(token.trim_end().to_owned()),
        (None, Err(_)) => None,
    };
    if token.as_deref() == Some("") {
        bail!("the token ({flag} or {env}) is empty: give a non-empty token or none");
    }
    Ok(token)
}

/// How a server that takes writes is protected, decided once before it binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAuth {
    /// Writes need the bearer token.
    Token,
    /// No token, on a loopback address only: open to processes on this host (or pod).
    Loopback,
    /// No token on a reachable address, because the operator said `--insecure-no-auth`.
    Insecure,
}

/// Refuses a server that takes writes (or, for the offline server, reads any source's data) on
/// a non-loopback address without a token, unless the operator passed `--insecure-no-auth`
/// (then warns loudly). `server` names it in messages,
/// `how` says how to give it a token (its flag, variable and file).
pub fn check_write_auth(
    server: &str,
    addrs: &[SocketAddr],
    has_token: bool,
    insecure_no_auth: bool,
    how: &str,
) -> anyhow::Result<WriteAuth> {
    if has_token {
        return Ok(WriteAuth::Token);
    }
    let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback()) else {
        tracing::info!(
            "{server}: no token; open to processes on this host only (bound to loopback)"
        );
        return Ok(WriteAuth::Loopback);
    };
    if !insecure_no_auth {
        bail!(
            "{server} would be open to anyone who reaches {open}: no token is set. Give it one \
             ({how}), or bind --host 127.0.0.1, or pass --insecure-no-auth to run it open on \
             purpose"
        );
    }
    tracing::warn!(
        "INSECURE: {server} runs WITHOUT A TOKEN, open to anyone who reaches {open} \
         (--insecure-no-auth); give it a token ({how})"
    );
    Ok(WriteAuth::Insecure)
}

/// Resolves on SIGTERM or Ctrl-C: the start of a graceful drain.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The server core's limits as flags, shared by every server (`quiver serve`, `registry serve`,
/// `offline serve`, `inject serve`). Unset flags keep the server's own default, given in each
/// flag's help.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// Most connections open at once; more wait in the kernel's backlog. [default: 1024; the
    /// registry service 10000, the webhook 512]
    #[arg(long, env = "QUIVER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Longest wait for a whole request head, and for the next one on a kept-alive connection.
    /// [default: 30s; the webhook 10s]
    #[arg(long, env = "QUIVER_HEADER_READ_TIMEOUT", value_parser = parse_duration)]
    pub header_read_timeout: Option<Duration>,
    /// Longest a connection waiting on its client (idle, or not reading its answer) may move no
    /// byte. [default: 120s]
    #[arg(long, env = "QUIVER_IDLE_TIMEOUT", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Longest wait for a whole request body (408 beyond). [default: 30s; the webhook 10s]
    #[arg(long, env = "QUIVER_BODY_READ_TIMEOUT", value_parser = parse_duration)]
    pub body_read_timeout: Option<Duration>,
    /// Longest a TLS handshake may take. [default: 10s]
    #[arg(long, env = "QUIVER_TLS_HANDSHAKE_TIMEOUT", value_parser = parse_duration)]
    pub tls_handshake_timeout: Option<Duration>,
    /// On SIGTERM: how long to keep accepting with /ready already 503, so that endpoints are
    /// updated before connections are refused. [default: 0s]
    #[arg(long, env = "QUIVER_DRAIN_DELAY", value_parser = parse_duration)]
    pub drain_delay: Option<Duration>,
    /// On SIGTERM: how long open connections get to finish before they are dropped.
    /// [default: 10s]
    #[arg(long, env = "QUIVER_DRAIN_TIMEOUT", value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,
}

impl ServerArgs {
    /// `defaults` (the server's own) with every flag that was given applied.
    pub fn limits(&self, defaults: quiver_http::Limits) -> quiver_http::Limits {
        quiver_http::Limits {
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            header_read_timeout: self
                .header_read_timeout
                .unwrap_or(defaults.header_read_timeout),
            idle_timeout: self.idle_timeout.unwrap_or(defaults.idle_timeout),
            body_read_timeout: self.body_read_timeout.unwrap_or(defaults.body_read_timeout),
            tls_handshake_timeout: self
                .tls_handshake_timeout
                .unwrap_or(defaults.tls_handshake_timeout),
            drain_delay: self.drain_delay.unwrap_or(defaults.drain_delay),
            drain_timeout: self.drain_timeout.unwrap_or(defaults.drain_timeout),
            max_concurrent_streams: defaults.max_concurrent_streams,
        }
    }
}

// Sizes and durations on every flag go through core's one grammar for each.
pub use quiver_core::size::parse_bytes;
pub use quiver_core::time::parse_duration;

/// How [`connect_store`] treats a Redis that does not answer yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    /// Return at once and connect in the background (the sidecar serves 503s meanwhile).
    Background,
    /// Fail now (batch jobs such as materialize).
    Now,
}

/// The online store `feature_store.yaml` names.
pub async fn connect_store(config: &RepoConfig, mode: Connect) -> anyhow::Result<OnlineStore> {
    Ok(match &config.online_store {
        OnlineStoreConfig::Sqlite { path } => {
            let path = config.repo_dir.join(path);
            if !path.exists() {
                tracing::warn!(path = %path.display(), "the SQLite online store does not exist yet: every entity reads as NOT_FOUND until it is materialized");
            }
            OnlineStore::Sqlite(Arc::new(SqliteStore::open(&path)))
        }
        OnlineStoreConfig::Redis {
            redis_type,
            connection,
            sentinel_master,
            ..
        } => {
            let (host, port) = connection
                .hosts
                .first()
                .cloned()
                .ok_or_else(|| anyhow!("online_store.connection_string names no host"))?;
            let options = RedisOptions {
                host: host.clone(),
                port,
                cluster_nodes: if *redis_type == RedisType::RedisCluster {
                    connection.hosts.clone()
                } else {
                    Vec::new()
                },
                db: connection.db,
                username: connection.username.clone(),
                password: connection.password.clone(),
                ssl: connection.ssl,
                ssl_ca_certs: connection
                    .ssl_ca_certs
                    .as_ref()
                    .map(|p| config.repo_dir.join(p)),
                ssl_insecure: connection.ssl_insecure,
                connect_timeout: Duration::from_secs(5),
                // Feast's sentinel connection string lists the sentinels; the master is the
                // one they name for `sentinel_master`.
                sentinel: (*redis_type == RedisType::RedisSentinel).then(|| {
                    quiver_online_store::redis_store::SentinelOptions {
                        sentinels: connection.hosts.clone(),
                        master_name: sentinel_master.clone(),
                    }
                }),
            };
            let shown = options.describe();
            if mode == Connect::Now {
                let store = RedisStore::connect(options, &config.project)
                    .await
                    .with_context(|| format!("online store at {shown}"))?;
                return Ok(OnlineStore::Redis(Arc::new(store)));
            }
            // An unreachable Redis does not stop the sidecar: it serves 503s (and /ready says
            // why) while a background task connects; bad options are still errors.
            let store = RedisStore::connect_in_background(options, &config.project)
                .await
                .with_context(|| format!("online store at {shown}"))?;
            if store.ping().await.is_err() {
                tracing::warn!(store = %shown, "the online store is not reachable yet; answering 503 until it is");
            }
            OnlineStore::Redis(store)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_without_a_token_only_on_loopback_or_on_purpose() {
        let lo: SocketAddr = "127.0.0.1:6566".parse().unwrap();
        let lo6: SocketAddr = "[::1]:6566".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:6566".parse().unwrap();
        let how = "--token-file or QUIVER_X_TOKEN";
        assert_eq!(
            check_write_auth("s", &[any], true, false, how).unwrap(),
            WriteAuth::Token
        );
        assert_eq!(
            check_write_auth("s", &[lo, lo6], false, false, how).unwrap(),
            WriteAuth::Loopback
        );
        let err = check_write_auth("the x server", &[lo, any], false, false, how)
            .unwrap_err()
            .to_string();
        for needle in ["the x server", "0.0.0.0:6566", how, "--insecure-no-auth"] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        assert_eq!(
            check_write_auth("s", &[any], false, true, how).unwrap(),
            WriteAuth::Insecure
        );
    }

    #[test]
    fn server_flags_override_only_what_they_name() {
        let defaults = quiver_http::Limits {
            max_connections: 512,
            ..quiver_http::Limits::default()
        };
        let args = ServerArgs {
            idle_timeout: Some(Duration::from_secs(5)),
            ..ServerArgs::default()
        };
        let limits = args.limits(defaults.clone());
        assert_eq!(limits.max_connections, 512);
        assert_eq!(limits.idle_timeout, Duration::from_secs(5));
        assert_eq!(limits.header_read_timeout, defaults.header_read_timeout);
    }
}

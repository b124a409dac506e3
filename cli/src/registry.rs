//! `quiver registry serve --store URI`: the central registry service. Validates its flags,
//! opens the store (creating Feast's tables in a new Postgres database) and loads it before
//! binding; serves until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use quiver_registry_service::{Service, ServiceConfig, Store};

use quiver_cmd::common::{ServerArgs, listen_addr, read_token, shutdown_signal};
use quiver_core::time::parse_duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serve the registry to sidecars (versioned snapshots, long polls) and to people (JSON),
    /// and take applies (`quiver apply --registry-url`).
    Serve(ServeArgs),
    /// Remove every recorded materialization interval of feature views at the registry
    /// service (a bad record, e.g. an end in the future, stops materialize-incremental); the
    /// next incremental run of each starts from its ttl again. Needs the service's token.
    ClearIntervals(ClearArgs),
}

#[derive(Debug, clap::Args)]
pub struct ClearArgs {
    /// The project the views belong to.
    #[arg(long, env = "QUIVER_PROJECT")]
    project: String,
    /// The feature views whose intervals to remove.
    #[arg(required = true)]
    views: Vec<String>,
    #[command(flatten)]
    service: ServiceArgs,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Where the registry lives: a registry file path (`/data/registry.db`; missing = empty)
    /// or a PostgreSQL URL in Feast's SQL-registry layout (`postgresql://user@host:5432/db`,
    /// or Feast's `postgresql+psycopg://...`).
    #[arg(long, env = "QUIVER_REGISTRY_STORE")]
    store: String,
    /// Address to bind. Anything but a loopback address needs a token (or --insecure-no-auth).
    #[arg(long, default_value = "127.0.0.1", env = "QUIVER_REGISTRY_HOST")]
    host: String,
    #[arg(long, default_value_t = 6570, env = "QUIVER_REGISTRY_PORT")]
    port: u16,
    /// A file holding the bearer token writes need (trailing whitespace ignored).
    /// QUIVER_REGISTRY_TOKEN gives the token itself. Required on a non-loopback --host,
    /// unless --insecure-no-auth.
    #[arg(long, env = "QUIVER_REGISTRY_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Take writes without a token on a non-loopback --host (refused otherwise). Logged as a
    /// warning at start; /ready says "auth": "off" and /metrics
    /// quiver_registry_writes_unauthenticated 1.
    #[arg(long, env = "QUIVER_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// Require the token for reads too (snapshots and the JSON API).
    #[arg(long, env = "QUIVER_REGISTRY_AUTH_READS")]
    auth_reads: bool,
    /// TLS certificate chain (PEM); with --tls-key, the service speaks HTTPS only.
    #[arg(long, env = "QUIVER_REGISTRY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "QUIVER_REGISTRY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How often the store is checked for changes made elsewhere (feast apply, other replicas).
    #[arg(long, default_value = "500ms", env = "QUIVER_REGISTRY_POLL_INTERVAL", value_parser = parse_duration)]
    poll_interval: Duration,
    /// The longest long poll (`?wait=`) a client may ask for.
    #[arg(long, default_value = "60s", env = "QUIVER_REGISTRY_MAX_WAIT", value_parser = parse_duration)]
    max_wait: Duration,
    /// Connection limits and deadlines (each sidecar's long poll holds a connection).
    #[command(flatten)]
    server: ServerArgs,
    /// Worker threads (default: one per core).
    #[arg(long, env = "QUIVER_WORKERS")]
    workers: Option<usize>,
}

/// Where a command finds the central registry service, when it uses one instead of the
/// registry file named in feature_store.yaml.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// Use the registry service at this URL instead of the registry file named in
    /// feature_store.yaml (e.g. http://quiver-registry:6570).
    #[arg(long, env = "QUIVER_REGISTRY_URL")]
    pub registry_url: Option<String>,
    /// With --registry-url: a file holding the service's bearer token (QUIVER_REGISTRY_TOKEN
    /// gives the token itself).
    #[arg(long, env = "QUIVER_REGISTRY_TOKEN_FILE")]
    pub registry_token_file: Option<PathBuf>,
    /// With an https --registry-url: trust this CA (PEM) instead of the system's.
    #[arg(long, env = "QUIVER_REGISTRY_CA_FILE")]
    pub registry_ca_file: Option<PathBuf>,
}

impl ServiceArgs {
    /// A client for the service, when a URL is given.
    pub fn client(&self) -> anyhow::Result<Option<quiver_registry::client::Client>> {
        use quiver_registry::client::{Client, Endpoint};
        let Some(url) = &self.registry_url else {
            return Ok(None);
        };
        let endpoint =
            Endpoint::parse(url, self.registry_ca_file.as_deref()).map_err(|e| anyhow!(e))?;
        let token = read_token(
            self.registry_token_file.as_ref(),
            "QUIVER_REGISTRY_TOKEN",
            "--registry-token-file",
        )?;
        Ok(Some(Client::new(endpoint, token)))
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Serve(args) => quiver_cmd::common::runtime(args.workers)?.block_on(serve(args)),
        Command::ClearIntervals(args) => {
            quiver_cmd::common::small_runtime()?.block_on(clear_intervals(args))
        }
    }
}

/// `DELETE /v1/projects/{p}/materializations/{view}` for each view, in order.
async fn clear_intervals(args: ClearArgs) -> anyhow::Result<()> {
    use quiver_registry::client::encode_path;
    let Some(mut client) = args.service.client()? else {
        bail!("--registry-url is required: the registry service whose intervals to clear");
    };
    let url = client.endpoint().url.clone();
    for view in &args.views {
        let path = format!(
            "/v1/projects/{}/materializations/{}",
            encode_path(&args.project),
            encode_path(view)
        );
        let resp = client
            .request(
                hyper::Method::DELETE,
                &path,
                &[],
                None,
                Duration::from_secs(60),
            )
            .await
            .map_err(|e| anyhow!("registry service {url}: {e}"))?;
        if resp.status != 200 {
            bail!(
                "registry service {url}: clearing the intervals of {view}: {}: {}",
                resp.status,
                resp.message()
            );
        }
        let version = serde_json::from_slice::<serde_json::Value>(&resp.body)
            .ok()
            .and_then(|v| v["version"].as_u64())
            .unwrap_or_default();
        println!(
            "Cleared the materialization intervals of {view} (project {}, version {version})",
            args.project
        );
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let addr = listen_addr(&args.host, args.port)?;
    let token = read_token(
        args.token_file.as_ref(),
        "QUIVER_REGISTRY_TOKEN",
        "--token-file",
    )?;
    if args.auth_reads && token.is_none() {
        bail!("--auth-reads needs a token: give --token-file or QUIVER_REGISTRY_TOKEN");
    }
    quiver_cmd::common::check_write_auth(
        "the registry service",
        &[addr],
        token.is_some(),
        args.insecure_no_auth,
        "--token-file FILE or QUIVER_REGISTRY_TOKEN",
    )?;
    if args.poll_interval < Duration::from_millis(50) {
        bail!("--poll-interval {:?}: at least 50ms", args.poll_interval);
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(quiver_registry_service::tls::load(cert, key).map_err(|e| anyhow!(e))?)
        }
        _ => None,
    };
    let store = Store::open(&args.store).await.map_err(|e| anyhow!(e))?;
    let describe = store.describe();
    let config = ServiceConfig {
        token,
        auth_reads: args.auth_reads,
        poll_interval: args.poll_interval,
        max_wait: args.max_wait,
        http: args.server.limits(ServiceConfig::default().http),
        ..ServiceConfig::default()
    };
    let service = Service::open(store, config)
        .await
        .with_context(|| format!("registry store {describe}"))?;
    let _poller = service.spawn_poller();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind {addr}"))?;
    let catalog = service.catalog();
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, store = %describe, projects = catalog.projects.len(), "registry service up");
    println!(
        "quiver registry serving {describe} on {scheme}://{} ({} projects)",
        listener.local_addr()?,
        catalog.projects.len()
    );
    quiver_registry_service::serve(listener, service, tls, shutdown_signal()).await;
    Ok(())
}

/// One project of the registry service's registry (`GET /v1/projects/{p}/registry`, Feast's
/// protobuf), read as a registry file is.
pub async fn fetch_project(
    client: &mut quiver_registry::client::Client,
    project: &str,
) -> anyhow::Result<quiver_core::registry::ProjectRegistry> {
    let url = client.endpoint().url.clone();
    let resp = client
        .request(
            hyper::Method::GET,
            &format!(
                "/v1/projects/{}/registry",
                quiver_registry::client::encode_path(project)
            ),
            &[],
            None,
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| anyhow!("registry service {url}: {e}"))?;
    if resp.status != 200 {
        return Err(anyhow!(
            "registry service {url}: {}: {}",
            resp.status,
            resp.message()
        ));
    }
    quiver_core::registry::RegistryFile::decode(&resp.body)
        .and_then(|file| file.project(project))
        .map_err(|e| anyhow!("registry service {url}: project {project}: {e}"))
}

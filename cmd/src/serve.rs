//! `quiver serve --repo DIR` (and `quiver-sidecar serve`): the sidecar. Validates everything
//! (config, registry, online store) before binding its port, then serves until SIGTERM or
//! Ctrl-C, and drains.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use quiver_registry::config::{OnlineStoreConfig, RepoConfig};
use quiver_sidecar::materialize::{MaterializeSupport, Materializer};
use quiver_sidecar::push::OfflineWriter;
use quiver_sidecar::{EngineConfig, OnStoreError, SidecarConfig};

use crate::common::{
    Connect, ServerArgs, connect_store, listen_addr, parse_bytes, parse_duration, read_token,
    shutdown_signal,
};
use crate::registry_io::RepoRegistry;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The feature repo: its feature_store.yaml names the registry and the online store.
    #[arg(long, default_value = ".", env = "QUIVER_REPO")]
    repo: PathBuf,
    /// Address to bind. The default keeps the sidecar private to its pod.
    #[arg(long, default_value = "127.0.0.1", env = "QUIVER_HOST")]
    host: String,
    /// Port to listen on (Feast's default).
    #[arg(long, default_value_t = 6566, env = "QUIVER_PORT")]
    port: u16,
    /// Cache budget, e.g. 256MiB, 1GiB, or bytes.
    #[arg(long, default_value = "256MiB", env = "QUIVER_CACHE_BYTES", value_parser = parse_bytes)]
    cache_bytes: usize,
    /// Longest a cached row is served without re-reading it, when no change feed covers it.
    #[arg(long, default_value = "5s", env = "QUIVER_MAX_STALENESS", value_parser = parse_duration)]
    max_staleness: Duration,
    /// Longest a cached row is served while the store's change feed (Redis keyspace
    /// notifications, SQLite change detection) is live.
    #[arg(long, default_value = "5m", env = "QUIVER_WATCHED_STALENESS", value_parser = parse_duration)]
    watched_staleness: Duration,
    /// How long "never written" is remembered.
    #[arg(long, default_value = "1s", env = "QUIVER_NEGATIVE_TTL", value_parser = parse_duration)]
    negative_ttl: Duration,
    /// Deadline for the online-store part of a request.
    #[arg(long, default_value = "50ms", env = "QUIVER_STORE_TIMEOUT", value_parser = parse_duration)]
    store_timeout: Duration,
    /// Most entity rows in one request (413 beyond).
    #[arg(long, default_value_t = 10_000, env = "QUIVER_MAX_ENTITY_ROWS")]
    max_entity_rows: usize,
    /// Largest request body (413 beyond), e.g. 1MiB.
    #[arg(long, default_value = "1MiB", env = "QUIVER_MAX_BODY_BYTES", value_parser = parse_bytes)]
    max_body_bytes: usize,
    /// How often the registry is checked for changes. Default: 1s for a registry file; for an
    /// s3:// or gs:// registry, the registry's `cache_ttl_seconds` (Feast's default 600; 0: read
    /// once), each check being one HEAD request.
    #[arg(long, env = "QUIVER_REGISTRY_REFRESH", value_parser = parse_duration)]
    registry_refresh: Option<Duration>,
    /// When the online store cannot be read in time: fail (503 naming the cause) or degrade
    /// (200, those features null with status INVALID).
    #[arg(
        long,
        value_enum,
        default_value = "fail",
        env = "QUIVER_ON_STORE_ERROR"
    )]
    on_store_error: StoreErrorMode,
    /// Turn on Redis keyspace notifications (notify-keyspace-events Khg) if they are off.
    #[arg(long, env = "QUIVER_ENABLE_KEYSPACE_NOTIFICATIONS")]
    enable_keyspace_notifications: bool,
    /// Replicate mode: feature views or services (comma-separated) whose every stored row is
    /// loaded at start and kept loaded, so every read is a hit; /ready waits for the first load.
    #[arg(long, value_delimiter = ',', env = "QUIVER_REPLICATE")]
    replicate: Vec<String>,
    /// What this server is for: a `sidecar` beside a model (reads; writes only with
    /// --enable-push) or a central `ingest` deployment (Feast's write endpoints on; bind it with
    /// --host 0.0.0.0 and protect it with a token).
    #[arg(long, value_enum, default_value = "sidecar", env = "QUIVER_ROLE")]
    role: Role,
    /// Serve Feast's write endpoints, POST /push and POST /write-to-online-store.
    #[arg(long, env = "QUIVER_ENABLE_PUSH")]
    enable_push: bool,
    /// A file holding the bearer token the write endpoints require (trailing whitespace is
    /// ignored). QUIVER_PUSH_TOKEN gives the token itself. Required with the write endpoints
    /// on a non-loopback --host, unless --insecure-no-auth.
    #[arg(long, env = "QUIVER_PUSH_TOKEN_FILE")]
    push_token_file: Option<PathBuf>,
    /// Serve the write endpoints without a token on a non-loopback --host (refused otherwise).
    /// Logged as a warning at start; /metrics shows quiver_writes_unauthenticated 1.
    #[arg(long, env = "QUIVER_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// Most rows in one push body (413 beyond).
    #[arg(long, default_value_t = 100_000, env = "QUIVER_PUSH_MAX_ROWS")]
    push_max_rows: usize,
    /// Largest push body (413 beyond).
    #[arg(long, default_value = "16MiB", env = "QUIVER_PUSH_MAX_BODY_BYTES", value_parser = parse_bytes)]
    push_max_body_bytes: usize,
    /// Worker threads (default: one per core).
    #[arg(long, env = "QUIVER_WORKERS")]
    workers: Option<usize>,
    /// Follow the registry service at this URL (http:// or https://) instead of reading the
    /// registry file; the online store still comes from the repo's feature_store.yaml.
    #[arg(long, env = "QUIVER_REGISTRY_URL")]
    registry_url: Option<String>,
    /// The project to serve (default: the repo's).
    #[arg(long, env = "QUIVER_PROJECT")]
    project: Option<String>,
    /// With --registry-url: sync only these feature services (comma-separated) and what they
    /// read.
    #[arg(long, value_delimiter = ',', env = "QUIVER_FEATURE_SERVICES")]
    feature_services: Vec<String>,
    /// With --registry-url: where the last good snapshot is kept, to start from when the
    /// service is down (an emptyDir in Kubernetes).
    #[arg(long, env = "QUIVER_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// With --registry-url: a file holding the registry service's bearer token
    /// (QUIVER_REGISTRY_TOKEN gives the token itself), for a service that protects reads.
    #[arg(long, env = "QUIVER_REGISTRY_TOKEN_FILE")]
    registry_token_file: Option<PathBuf>,
    /// With an https --registry-url: trust this CA (PEM) instead of the system's.
    #[arg(long, env = "QUIVER_REGISTRY_CA_FILE")]
    registry_ca_file: Option<PathBuf>,
    /// With --registry-url: the longest wait between retries when the service is away.
    #[arg(long, default_value = "30s", env = "QUIVER_REGISTRY_MAX_BACKOFF", value_parser = parse_duration)]
    registry_max_backoff: Duration,
    /// Feast's transformation service (`feast serve_transformations --port P`, run in the
    /// feature repo), HOST:PORT: computes on-demand feature views. Without it, requests that
    /// read an on-demand view are refused (400 naming the view).
    #[arg(long, env = "QUIVER_TRANSFORMATION_SERVICE")]
    transformation_service: Option<String>,
    /// Deadline for one call to the transformation service (504 past it).
    #[arg(long, default_value = "5s", env = "QUIVER_TRANSFORMATION_TIMEOUT", value_parser = parse_duration)]
    transformation_timeout: Duration,
    /// KServe enrichment (boxed: the flags would make every subcommand's enum larger).
    #[command(flatten)]
    enrich: Box<EnrichArgs>,
    #[command(flatten)]
    server: ServerArgs,
}

/// `serve`'s KServe enrichment flags.
#[derive(Debug, clap::Args)]
pub struct EnrichArgs {
    /// KServe enrichment: the enrich config (YAML: model → feature service, entity inputs,
    /// layout, missing/stale policy). The sidecar then also answers KServe's V1 and V2 paths,
    /// adding each request's features and forwarding it to --upstream.
    #[arg(long, env = "QUIVER_ENRICH", requires = "upstream")]
    enrich: Option<PathBuf>,
    /// With --enrich: the model server, an http:// URL (its port on the pod's loopback, e.g.
    /// http://127.0.0.1:8081).
    #[arg(long, env = "QUIVER_UPSTREAM", requires = "enrich")]
    upstream: Option<String>,
    /// With --enrich: deadline for one call to the model server (504 past it).
    #[arg(long, default_value = "60s", env = "QUIVER_UPSTREAM_TIMEOUT", value_parser = parse_duration)]
    upstream_timeout: Duration,
    /// With --enrich: largest answer read from the model server (502 beyond).
    #[arg(long, default_value = "64MiB", env = "QUIVER_UPSTREAM_MAX_BODY", value_parser = parse_bytes)]
    upstream_max_body: usize,
    /// With --enrich: also serve KServe V2 over gRPC (inference.GRPCInferenceService, HTTP/2
    /// without TLS) on this port of --host (KServe's gRPC port is 8081), forwarding to
    /// --upstream-grpc. Messages are limited by --max-body-bytes.
    #[arg(long, env = "QUIVER_GRPC_PORT", requires_all = ["enrich", "upstream_grpc"])]
    grpc_port: Option<u16>,
    /// With --grpc-port: the model server's gRPC port, an http:// URL (e.g.
    /// http://127.0.0.1:8091); --upstream-timeout and --upstream-max-body apply to it too.
    #[arg(long, env = "QUIVER_UPSTREAM_GRPC", requires = "grpc_port")]
    upstream_grpc: Option<String>,
    /// With --enrich: serve Feast's API (/get-online-features; push and materialize when
    /// enabled) on this port of 127.0.0.1, for code in the pod. In enrichment mode the serving
    /// port (--port) answers only KServe's paths, /health, /ready and /metrics: whoever may call
    /// the model must not read features directly. Without it, Feast's API is not served.
    #[arg(long, env = "QUIVER_API_PORT", requires = "enrich")]
    api_port: Option<u16>,
    /// With --grpc-port: most calls one gRPC connection may have in flight (HTTP/2 streams).
    #[arg(
        long,
        default_value_t = 256,
        env = "QUIVER_GRPC_MAX_STREAMS",
        requires = "grpc_port"
    )]
    grpc_max_streams: u32,
}

/// `--enrich FILE --upstream URL`: the config read and checked (syntax and shape here; against
/// the registry once it is loaded), the upstream URL checked.
fn enrich(args: &EnrichArgs) -> anyhow::Result<Option<Arc<quiver_sidecar::enrich::Enricher>>> {
    let (Some(file), Some(url)) = (&args.enrich, &args.upstream) else {
        return Ok(None);
    };
    let config = quiver_sidecar::enrich::EnrichConfig::load(file)
        .map_err(|e| anyhow!("--enrich: the enrich config has problems:\n{e}"))?;
    let mut upstream = quiver_sidecar::enrich::UpstreamConfig::parse(url)
        .map_err(|e| anyhow!("--upstream: {e}"))?;
    if !upstream.is_loopback() {
        tracing::warn!(upstream = %upstream.base, "--upstream is not a loopback address: the model server is expected beside the sidecar, in its pod");
    }
    upstream.timeout = args.upstream_timeout;
    upstream.max_response_bytes = args.upstream_max_body;
    let mut enricher = quiver_sidecar::enrich::Enricher::new(config, upstream);
    if let Some(url) = &args.upstream_grpc {
        let mut grpc = quiver_sidecar::enrich::UpstreamConfig::parse(url)
            .map_err(|e| anyhow!("--upstream-grpc: {e}"))?;
        grpc.timeout = args.upstream_timeout;
        grpc.max_response_bytes = args.upstream_max_body;
        enricher = enricher.with_grpc(grpc);
    }
    Ok(Some(Arc::new(enricher)))
}

/// `--transformation-service`: HOST:PORT (an http:// prefix is accepted), checked before the
/// port is bound.
fn transformation(args: &Args) -> anyhow::Result<Option<quiver_sidecar::TransformConfig>> {
    let Some(endpoint) = &args.transformation_service else {
        return Ok(None);
    };
    let config = quiver_sidecar::TransformConfig::new(endpoint, args.transformation_timeout);
    let port = config
        .endpoint
        .rsplit_once(':')
        .map(|(h, p)| (h, p.parse::<u16>()));
    match port {
        Some((host, Ok(p))) if !host.is_empty() && p > 0 => Ok(Some(config)),
        _ => bail!(
            "--transformation-service {endpoint:?}: expected HOST:PORT of `feast serve_transformations`, e.g. 127.0.0.1:6569"
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Role {
    Sidecar,
    Ingest,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StoreErrorMode {
    Fail,
    Degrade,
}

/// Makes the writer of `to: offline` pushes for a repo directory.
pub type OfflineWriterFactory = fn(&std::path::Path) -> Arc<dyn OfflineWriter>;

/// Where the ingest role's materializations read their definitions and record their runs: the
/// registry the server reads.
#[derive(Clone)]
pub enum MaterializeRegistry {
    /// The registry feature_store.yaml names (a file or an s3:// / gs:// object).
    Repo(RepoRegistry),
    /// The registry service (`--registry-url`) and its token.
    Service {
        endpoint: quiver_registry::client::Endpoint,
        token: Option<String>,
    },
}

/// Makes the ingest role's materializer for a repo (its config, the project served), its
/// registry and the server's transformation service (write-time on-demand views).
pub type MaterializerFactory = fn(
    RepoConfig,
    MaterializeRegistry,
    Option<quiver_sidecar::TransformConfig>,
) -> anyhow::Result<Arc<dyn Materializer>>;

/// What the full binary plugs into `serve`: the parts that need quiver's offline engine
/// (DataFusion, Parquet), which the lean `quiver-sidecar` does not link.
#[derive(Clone, Copy)]
pub struct OfflineParts {
    /// Appends `to: offline` pushes to the push source's batch source.
    pub writer: OfflineWriterFactory,
    /// Runs `POST /materialize` and `/materialize-incremental` (ingest role).
    pub materializer: MaterializerFactory,
}

/// Runs the sidecar until SIGTERM. `offline` supplies `to: offline` pushes and the ingest
/// role's materializations; without it (the lean `quiver-sidecar` binary) both are refused with
/// 501 and belong to the full binary's ingest role.
pub fn run(args: Args, offline: Option<OfflineParts>) -> anyhow::Result<()> {
    crate::common::runtime(args.workers)?.block_on(run_async(args, offline))
}

/// Where the definitions come from: the registry service (with --registry-url) or the file.
fn registry_source(
    args: &Args,
    config: &RepoConfig,
    project: &str,
) -> anyhow::Result<(quiver_sidecar::RegistrySource, String)> {
    let Some(url) = &args.registry_url else {
        if !args.feature_services.is_empty() || args.state_dir.is_some() {
            // Not an error: the injector may set QUIVER_FEATURE_SERVICES for a pod that reads
            // a registry file.
            tracing::warn!(
                "--feature-services and --state-dir apply only with --registry-url; ignored"
            );
        }
        let registry = RepoRegistry::open(config)?;
        let shown = registry.describe();
        let source = match registry {
            RepoRegistry::File(path) => quiver_sidecar::RegistrySource::File(path),
            RepoRegistry::Object(registry) => {
                let refresh = match args.registry_refresh {
                    Some(d) => Some(d.max(Duration::from_millis(100))),
                    None => match config.registry.cache_ttl_seconds {
                        0 => None,
                        s => Some(Duration::from_secs(s)),
                    },
                };
                quiver_sidecar::RegistrySource::Object { registry, refresh }
            }
        };
        return Ok((source, shown));
    };
    let endpoint = quiver_registry::client::Endpoint::parse(url, args.registry_ca_file.as_deref())
        .map_err(|e| anyhow!("--registry-url: {e}"))?;
    for s in &args.feature_services {
        if s.trim().is_empty() {
            bail!("--feature-services: an empty name in the list");
        }
    }
    if let Some(dir) = &args.state_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--state-dir {}: cannot create it", dir.display()))?;
    }
    let mut sync = quiver_registry::client::SyncConfig::new(endpoint, project);
    sync.feature_services = args.feature_services.clone();
    sync.state_dir = args.state_dir.clone();
    sync.token = read_token(
        args.registry_token_file.as_ref(),
        "QUIVER_REGISTRY_TOKEN",
        "--registry-token-file",
    )?;
    sync.backoff_max = args.registry_max_backoff.max(sync.backoff_min);
    Ok((
        quiver_sidecar::RegistrySource::Service(Box::new(sync)),
        url.clone(),
    ))
}

/// The registry materializations use: the one the server reads.
fn materialize_registry(args: &Args, config: &RepoConfig) -> anyhow::Result<MaterializeRegistry> {
    let Some(url) = &args.registry_url else {
        return Ok(MaterializeRegistry::Repo(RepoRegistry::open(config)?));
    };
    let endpoint = quiver_registry::client::Endpoint::parse(url, args.registry_ca_file.as_deref())
        .map_err(|e| anyhow!("--registry-url: {e}"))?;
    let token = read_token(
        args.registry_token_file.as_ref(),
        "QUIVER_REGISTRY_TOKEN",
        "--registry-token-file",
    )?;
    Ok(MaterializeRegistry::Service { endpoint, token })
}

async fn run_async(args: Args, offline: Option<OfflineParts>) -> anyhow::Result<()> {
    let config = RepoConfig::load(&args.repo)?;
    let project = args
        .project
        .clone()
        .unwrap_or_else(|| config.project.clone());
    if !quiver_registry::config::is_valid_project_name(&project) {
        bail!("--project {project:?}: not a valid project name");
    }
    let (source, registry_shown) = registry_source(&args, &config, &project)?;
    // The online store's keys carry the project served.
    let config = RepoConfig {
        project: project.clone(),
        ..config
    };
    let addr = listen_addr(&args.host, args.port)?;
    let push = if args.enable_push || args.role == Role::Ingest {
        let token = read_token(
            args.push_token_file.as_ref(),
            "QUIVER_PUSH_TOKEN",
            "--push-token-file",
        )?;
        crate::common::check_write_auth(
            "quiver serve's write endpoints (--enable-push, --role ingest)",
            &[addr],
            token.is_some(),
            args.insecure_no_auth,
            "--push-token-file FILE or QUIVER_PUSH_TOKEN",
        )?;
        Some(quiver_sidecar::push::PushConfig {
            token,
            max_rows: args.push_max_rows,
            max_body_bytes: args.push_max_body_bytes,
            max_values: quiver_sidecar::push::PushConfig::default().max_values,
            key_ttl_seconds: match &config.online_store {
                OnlineStoreConfig::Redis {
                    key_ttl_seconds, ..
                } => *key_ttl_seconds,
                OnlineStoreConfig::Sqlite { .. } => None,
            },
            offline: offline.map(|parts| (parts.writer)(&config.repo_dir)),
            materialize: match (args.role, offline) {
                (Role::Sidecar, _) => MaterializeSupport::Off,
                (Role::Ingest, None) => MaterializeSupport::Unlinked,
                (Role::Ingest, Some(parts)) => MaterializeSupport::On((parts.materializer)(
                    config.clone(),
                    materialize_registry(&args, &config)?,
                    transformation(&args)?,
                )?),
            },
        })
    } else {
        None
    };
    let sidecar = SidecarConfig {
        engine: EngineConfig {
            cache_bytes: args.cache_bytes,
            max_staleness: args.max_staleness,
            watched_staleness: args.watched_staleness,
            negative_ttl: args.negative_ttl,
            store_timeout: args.store_timeout,
            max_entity_rows: args.max_entity_rows,
            on_store_error: match args.on_store_error {
                StoreErrorMode::Fail => OnStoreError::Fail,
                StoreErrorMode::Degrade => OnStoreError::Degrade,
            },
            ..EngineConfig::default()
        },
        max_body_bytes: args.max_body_bytes,
        registry_refresh: args
            .registry_refresh
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(10)),
        enable_keyspace_notifications: args.enable_keyspace_notifications,
        replicate: args.replicate.clone(),
        push,
        transformation: transformation(&args)?,
        enrich: enrich(&args.enrich)?,
    };
    let store = connect_store(&config, Connect::Background).await?;
    let (state, _background) = quiver_sidecar::start_from(sidecar, &project, source, store)
        .await
        .map_err(|e| anyhow!(e))?;
    if let Some(enricher) = &state.config.enrich {
        enricher
            .config
            .check(&state.registry.load())
            .map_err(|e| anyhow!("--enrich: the enrich config does not fit the registry:\n{e}"))?;
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind {addr}"))?;
    let grpc_listener = match args.enrich.grpc_port {
        Some(port) => {
            let grpc_addr = std::net::SocketAddr::new(addr.ip(), port);
            Some(
                tokio::net::TcpListener::bind(grpc_addr)
                    .await
                    .with_context(|| format!("--grpc-port: cannot bind {grpc_addr}"))?,
            )
        }
        None => None,
    };
    // Enrichment: Feast's API moves off the serving port to a loopback one (or nowhere).
    let api_listener = match args.enrich.api_port {
        Some(port) => {
            let api_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            Some(
                tokio::net::TcpListener::bind(api_addr)
                    .await
                    .with_context(|| format!("--api-port: cannot bind {api_addr}"))?,
            )
        }
        None => None,
    };
    let surface = if state.config.enrich.is_some() {
        quiver_sidecar::server::Surface::Kserve
    } else {
        quiver_sidecar::server::Surface::All
    };
    let registry = state.registry.load();
    tracing::info!(%addr, project = %project, registry = %registry_shown, views = registry.views.len(), "serving");
    println!(
        "quiver serving project {} on http://{} ({} feature views)",
        project,
        listener.local_addr()?,
        registry.views.len()
    );
    let limits = args.server.limits(quiver_http::Limits::default());
    let grpc = async {
        if let Some(grpc_listener) = grpc_listener {
            println!(
                "quiver serving KServe V2 over gRPC on {}",
                grpc_listener.local_addr()?
            );
            let server = quiver_http::Server::new(quiver_http::Limits {
                max_concurrent_streams: args.enrich.grpc_max_streams.max(1),
                ..limits.clone()
            })
            .http2();
            quiver_sidecar::enrich::grpc::serve(
                server,
                grpc_listener,
                Arc::clone(&state),
                shutdown_signal(),
            )
            .await;
        }
        anyhow::Ok(())
    };
    let api = async {
        if let Some(api_listener) = api_listener {
            println!(
                "quiver serving Feast's API on http://{} (loopback only)",
                api_listener.local_addr()?
            );
            let server = quiver_http::Server::new(limits.clone());
            quiver_sidecar::server::serve_with(
                server,
                api_listener,
                Arc::clone(&state),
                shutdown_signal(),
            )
            .await;
        }
        anyhow::Ok(())
    };
    let server = quiver_http::Server::new(limits.clone());
    let http = quiver_sidecar::server::serve_surface(
        server,
        listener,
        Arc::clone(&state),
        surface,
        shutdown_signal(),
    );
    let (grpc, api, ()) = tokio::join!(grpc, api, http);
    grpc.and(api)
}

//! `quiver offline serve`: historical features for Feast clients (Arrow Flight, the protocol of
//! `feast serve_offline`) and for other pipelines (`POST /v1/historical`, an Arrow IPC stream).
//! The registry is the one feature_store.yaml names, or the registry service's
//! (`--registry-url`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use quiver_offline::flight::{OfflineServer, RegistryPlace, RegistrySource};
use quiver_offline::historical::{EngineOptions, HistoricalEngine};
use quiver_offline::on_demand::{TransformClient, TransformConfig};
use quiver_offline::remote_registry::RemoteRegistry;

use crate::historical::{load_registry, runtime};
use quiver_cmd::common::{ServerArgs, check_write_auth, listen_addr, read_token, shutdown_signal};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serve historical features: Arrow Flight for Feast clients (`offline_store: {type:
    /// remote, host, port}`), and optionally POST /v1/historical over HTTP.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The feature repo (its feature_store.yaml names the registry).
    #[arg(long, default_value = ".", env = "QUIVER_REPO")]
    repo: PathBuf,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Arrow Flight port (Feast's offline server default).
    #[arg(long, default_value_t = 8815)]
    port: u16,
    /// Also serve POST /v1/historical on this port.
    #[arg(long)]
    http_port: Option<u16>,
    /// A file holding the bearer token every call must carry (authorization: Bearer <token>;
    /// trailing whitespace ignored). QUIVER_OFFLINE_TOKEN gives the token itself. Required on a
    /// non-loopback --host, unless --insecure-no-auth.
    #[arg(long, env = "QUIVER_OFFLINE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Serve without a token on a non-loopback --host (refused otherwise): anyone who reaches
    /// it can read every source and push to offline sources. Logged as a warning at start.
    #[arg(long, env = "QUIVER_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// Memory for sorts and joins, shared by all requests (e.g. 2GiB); past it they spill.
    #[arg(long, value_parser = quiver_core::size::parse_nonzero_bytes)]
    memory_limit: Option<usize>,
    /// Directory for spill files (default: the system temp dir).
    #[arg(long)]
    spill_dir: Option<PathBuf>,
    /// Feast's transformation service (`feast serve_transformations --port P` in the repo),
    /// HOST:PORT: computes the on-demand feature views Feast clients ask for.
    #[arg(long, env = "QUIVER_TRANSFORMATION_SERVICE")]
    transformation_service: Option<String>,
    /// Deadline for one call to the transformation service (one batch of at most 10,000 rows).
    #[arg(long, default_value = "60s", value_parser = quiver_core::time::parse_duration)]
    transformation_timeout: std::time::Duration,
    /// Most rows one `offline_write_batch` may carry (Feast's push to the offline store through
    /// its remote offline store client); more is refused with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = quiver_offline::offline_write::DEFAULT_MAX_ROWS, env = "QUIVER_OFFLINE_WRITE_MAX_ROWS")]
    write_max_rows: usize,
    /// Memory for uploaded entity tables (Flight uploads, inline HTTP entities), shared by
    /// every request of both servers; a request waits for room (--upload-wait), then gets
    /// 503 / RESOURCE_EXHAUSTED. One larger than all of it is refused (413).
    #[arg(long, default_value = "1GiB", value_parser = quiver_core::size::parse_nonzero_bytes)]
    upload_memory: usize,
    /// How long a request waits for upload memory other requests hold.
    #[arg(long, default_value = "5s", value_parser = quiver_core::time::parse_duration)]
    upload_wait: std::time::Duration,
    /// How long an entity table put by DoPut waits for its DoGet before it is dropped.
    #[arg(long, default_value = "5m", value_parser = quiver_core::time::parse_duration)]
    doput_ttl: std::time::Duration,
    /// Most bytes all DoPut tables waiting for their DoGet may hold (default: half of
    /// --upload-memory); past it the oldest are dropped.
    #[arg(long, value_parser = quiver_core::size::parse_nonzero_bytes)]
    doput_max_bytes: Option<usize>,
    /// The HTTP server's limits (Arrow Flight runs on tonic's own server).
    #[command(flatten)]
    server: ServerArgs,
    /// Read the registry from the registry service (for a feature_store.yaml with
    /// `registry_type: remote`, as in k8s) instead of the registry it names.
    #[command(flatten)]
    service: crate::registry::ServiceArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Everything is checked before binding: the repo, the registry, the addresses.
    let (config, place, loaded) = match &args.service.registry_url {
        Some(url) => {
            use quiver_registry::client::{Endpoint, SyncConfig};
            let config = quiver_registry::config::RepoConfig::load(&args.repo)?;
            let endpoint = Endpoint::parse(url, args.service.registry_ca_file.as_deref())
                .map_err(|e| anyhow!("--registry-url: {e}"))?;
            let mut sync = SyncConfig::new(endpoint, &config.project);
            sync.token = read_token(
                args.service.registry_token_file.as_ref(),
                "QUIVER_REGISTRY_TOKEN",
                "--registry-token-file",
            )?;
            let remote =
                RemoteRegistry::new(sync, quiver_offline::remote_registry::DEFAULT_REFRESH);
            (config, RegistryPlace::Service(Arc::new(remote)), None)
        }
        None => {
            let (config, registry) = load_registry(&args.repo)?;
            let place = match quiver_cmd::registry_io::RepoRegistry::open(&config)? {
                quiver_cmd::registry_io::RepoRegistry::File(p) => RegistryPlace::File(p),
                quiver_cmd::registry_io::RepoRegistry::Object(o) => RegistryPlace::Object(o),
            };
            (config, place, Some(registry))
        }
    };
    let source = RegistrySource {
        registry: place,
        project: config.project.clone(),
        repo_dir: config.repo_dir.clone(),
    };
    let mut engine = HistoricalEngine::new(&EngineOptions {
        memory_limit: args.memory_limit,
        spill_dir: args.spill_dir.clone(),
        ..EngineOptions::default()
    })?;
    if let quiver_registry::config::OfflineStoreConfig::Spark(spark) = &config.offline_store {
        // Joins (Flight and HTTP) run on Spark.
        engine = engine.with_spark(quiver_offline::spark::historical::SparkEngine::new(
            spark.clone(),
        ));
    }
    let flight_addr = listen_addr(&args.host, args.port)?;
    let http_addr = args
        .http_port
        .map(|p| listen_addr(&args.host, p))
        .transpose()?;
    let token = read_token(
        args.token_file.as_ref(),
        "QUIVER_OFFLINE_TOKEN",
        "--token-file",
    )?;
    let addrs: Vec<std::net::SocketAddr> = std::iter::once(flight_addr).chain(http_addr).collect();
    check_write_auth(
        "quiver offline serve",
        &addrs,
        token.is_some(),
        args.insecure_no_auth,
        "--token-file FILE or QUIVER_OFFLINE_TOKEN",
    )?;
    let limits = args.server.limits(quiver_http::Limits::default());
    let transform = args.transformation_service.as_ref().map(|endpoint| {
        Arc::new(TransformClient::new(TransformConfig::new(
            endpoint,
            args.transformation_timeout,
        )))
    });
    let budget = quiver_offline::budget::MemoryBudget::new(args.upload_memory, args.upload_wait);
    let rt = runtime()?;
    rt.block_on(async move {
        // From the registry service: its first answer, before binding.
        let registry = match loaded {
            Some(r) => r,
            None => source
                .load()
                .await
                .map_err(|e| anyhow!("registry {}: {}", source.registry, e.message))?,
        };
        let listener = tokio::net::TcpListener::bind(flight_addr)
            .await
            .with_context(|| format!("binding {flight_addr}"))?;
        let http = match http_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr}"))?,
            ),
            None => None,
        };
        println!(
            "Serving historical features of project {} ({} feature views) over Arrow Flight on {}{}{}",
            config.project,
            registry.feature_views.len(),
            listener.local_addr()?,
            match &http {
                Some(l) => format!(", POST /v1/historical on http://{}", l.local_addr()?),
                None => String::new(),
            },
            if token.is_some() {
                " (bearer token required)"
            } else {
                " (NO AUTH)"
            }
        );
        if let Some(l) = http {
            let state = Arc::new(quiver_offline::http::HttpState {
                engine: engine.clone(),
                registry: source.clone(),
                token: token.clone(),
                transform: transform.clone(),
                budget: budget.clone(),
            });
            tokio::spawn(async move {
                if let Err(e) =
                    quiver_offline::http::serve(l, state, limits, shutdown_signal()).await
                {
                    tracing::error!("offline HTTP server: {e}");
                }
            });
        }
        let mut server = OfflineServer::new(engine, source, token)
            .with_max_write_rows(args.write_max_rows)
            .with_pending_limits(
                args.doput_ttl,
                args.doput_max_bytes.unwrap_or(args.upload_memory / 2),
            )
            .with_budget(budget);
        if let Some(client) = transform {
            server = server.with_transformation_service(client);
        }
        quiver_offline::flight::serve(listener, server, shutdown_signal()).await?;
        anyhow::Ok(())
    })
}

//! `quiver materialize` and `quiver materialize-incremental`: the latest source row per entity
//! key in a window, into the online store, then the interval recorded in the registry; then the
//! write-time on-demand views, computed from their sources' latest rows
//! (`quiver_offline::materialize_odfv`).

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use quiver_core::time::{self, Timestamp};
use quiver_offline::materialize::{self, Event, Window, WriteOptions};
use quiver_offline::materialize_odfv;
use quiver_offline::on_demand::{TransformClient, TransformConfig};
use quiver_offline::shard::Shard;
use quiver_registry::client::{Client, encode_path};
use quiver_registry::config::{OnlineStoreConfig, RepoConfig};
use quiver_registry::store;

use crate::apply::now;
use quiver_cmd::common::{Connect, connect_store};
use quiver_cmd::registry_io::RepoRegistry;
use quiver_cmd::serve::MaterializeRegistry;
use quiver_core::fault::{Classified as _, ErrorKind};
use quiver_online_store::OnlineStore;
use quiver_sidecar::api::ApiError;
use quiver_sidecar::materialize::{
    MaterializeRequest, Materializer, ViewMaterialized, Window as HttpWindow,
};

#[derive(Debug, clap::Args)]
pub struct RangeArgs {
    /// Start of the window (ISO 8601, e.g. 2026-01-01T00:00:00; no offset means UTC).
    #[arg(value_parser = parse_time)]
    start: Timestamp,
    /// End of the window, inclusive.
    #[arg(value_parser = parse_time)]
    end: Timestamp,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, clap::Args)]
pub struct IncrementalArgs {
    /// End of the window; each view starts where its last run ended.
    #[arg(value_parser = parse_time)]
    end: Timestamp,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// The feature repo (its feature_store.yaml names the registry and the online store).
    #[arg(long, default_value = ".", env = "QUIVER_REPO")]
    repo: PathBuf,
    /// Only these feature views (comma-separated); default: every online view.
    #[arg(long, value_delimiter = ',')]
    views: Vec<String>,
    /// Accept an END more than 5 minutes in the future.
    #[arg(long)]
    force: bool,
    /// Rows per online-store write.
    #[arg(long, default_value_t = 2000)]
    batch_rows: usize,
    /// Writes in flight at once (Redis).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Memory for the latest row of each entity in the window; beyond it the entities are
    /// split by hash and the sources scanned once per share.
    #[arg(long, default_value = "256MiB", env = "QUIVER_MEMORY_LIMIT", value_parser = quiver_core::size::parse_nonzero_bytes)]
    memory_limit: usize,
    /// Write only shard INDEX of COUNT of the entity keys (e.g. `--shard
    /// $(JOB_COMPLETION_INDEX)/4` in a Kubernetes indexed Job): a key's shard is
    /// pmod(xxhash64(serialized entity key), COUNT). Each shard marks itself done in the online
    /// store (Redis only); the one that completes the set records the interval in the registry.
    #[arg(long, value_name = "INDEX/COUNT", env = "QUIVER_SHARD", value_parser = parse_shard)]
    shard: Option<Shard>,
    /// Names the sharded run, e.g. the Kubernetes Job's uid, so that a second Job over the same
    /// window counts its own shards (default: the run is named by its views and windows).
    #[arg(long, requires = "shard", env = "QUIVER_RUN_ID")]
    run_id: Option<String>,
    /// With --registry-url, the definitions (sources, and for an incremental run where each
    /// view's last run ended) come from the registry service, and the run is recorded there.
    #[command(flatten)]
    service: crate::registry::ServiceArgs,
    /// Feast's transformation service (`feast serve_transformations --port P` in the repo),
    /// HOST:PORT: computes the write-time on-demand views (write_to_online_store=True) whose
    /// transformation is a pandas function.
    #[arg(long, env = "QUIVER_TRANSFORMATION_SERVICE")]
    transformation_service: Option<String>,
    /// Deadline for one call to the transformation service (one batch of at most 10,000 rows).
    #[arg(long, default_value = "60s", value_parser = quiver_core::time::parse_duration)]
    transformation_timeout: Duration,
}

/// Where the definitions come from and the run is recorded.
pub(crate) enum Registry {
    /// The registry feature_store.yaml names: a file, or an s3:// / gs:// object.
    Repo(RepoRegistry),
    /// The registry service (`--registry-url`); its URL is the client's endpoint.
    Service(Box<Client>),
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    Shard::parse(s).map_err(|e| e.message())
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    time::parse_datetime(s).ok_or_else(|| {
        format!("{s:?}: expected an ISO 8601 date-time like 2026-01-01T00:00:00 (optionally with Z or +HH:MM)")
    })
}

pub fn run_range(args: RangeArgs) -> anyhow::Result<()> {
    let window = Window::Range {
        start: args.start,
        end: args.end,
    };
    run(args.common, window)
}

pub fn run_incremental(args: IncrementalArgs) -> anyhow::Result<()> {
    run(args.common, Window::Incremental { end: args.end })
}

fn run(args: Common, window: Window) -> anyhow::Result<()> {
    let config = RepoConfig::load(&args.repo)?;
    let runtime = quiver_cmd::common::runtime(None)?;
    let mut source = match args.service.client()? {
        Some(client) => Registry::Service(Box::new(client)),
        None => Registry::Repo(RepoRegistry::open(&config)?),
    };
    let options = Options {
        views: args.views,
        force: args.force,
        shard: args.shard.unwrap_or(Shard::ALL),
        run_id: args.run_id,
        transform: args
            .transformation_service
            .as_deref()
            .map(|e| TransformConfig::new(e, args.transformation_timeout)),
        write: WriteOptions {
            batch_rows: args.batch_rows.max(1),
            concurrency: args.concurrency.max(1),
            key_ttl_seconds: key_ttl_seconds(&config),
            memory_budget: args.memory_limit,
            ..WriteOptions::default()
        },
    };
    let connect = || runtime.block_on(connect_store(&config, Connect::Now));
    let bars = Bars::new();
    let starting = |views: usize| {
        println!(
            "Materializing {} feature view{} of project {} into the {} online store",
            views,
            if views == 1 { "" } else { "s" },
            config.project,
            match config.online_store {
                OnlineStoreConfig::Redis { .. } => "redis",
                OnlineStoreConfig::Sqlite { .. } => "sqlite",
            }
        );
    };
    let outcome = execute(
        runtime.handle(),
        &config,
        &mut source,
        &connect,
        window,
        &options,
        &starting,
        &|e| bars.event(e),
    )
    .map_err(|f| anyhow!(f.message))?;
    bars.finish();
    let Some(Outcome {
        runs,
        recorded,
        on_demand,
        skipped,
    }) = outcome
    else {
        println!(
            "No online feature views in project {}: nothing to materialize",
            config.project
        );
        return Ok(());
    };
    for (view, why) in &skipped {
        println!("{view}: left out: {why}");
    }
    for r in runs.iter().chain(&on_demand) {
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        println!(
            "{}: {} to {}: {} rows read, {} in the window, {} entities: {} written, {} skipped (not newer) in {:.2}s (scan {:.2}s in {} pass{}{}; {:.0} rows/s)",
            r.view,
            time::format_rfc3339(&r.start),
            time::format_rfc3339(&r.end),
            r.scanned,
            r.in_window,
            r.entities,
            r.stats.written,
            r.stats.skipped,
            secs,
            r.scan_elapsed.as_secs_f64(),
            r.passes,
            if r.passes == 1 { "" } else { "es" },
            if r.segments > 0 {
                format!(", {} time segments written as read", r.segments)
            } else {
                String::new()
            },
            r.entities as f64 / secs
        );
    }
    println!("{recorded}");
    if !on_demand.is_empty() {
        println!(
            "On-demand views are not recorded (Feast records no interval for them): {}",
            on_demand
                .iter()
                .map(|r| r.view.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn key_ttl_seconds(config: &RepoConfig) -> Option<u64> {
    match &config.online_store {
        OnlineStoreConfig::Redis {
            key_ttl_seconds, ..
        } => *key_ttl_seconds,
        OnlineStoreConfig::Sqlite { .. } => None,
    }
}

/// What a run does besides its window: which views, whether a future END is accepted, how it
/// writes.
pub(crate) struct Options {
    /// Feature view names; empty: every online view.
    pub views: Vec<String>,
    pub force: bool,
    /// The share of the entity keys to write ([`Shard::ALL`]: all of them).
    pub shard: Shard,
    /// The operator's name for a sharded run (see [`crate::shards`]).
    pub run_id: Option<String>,
    pub write: WriteOptions,
    /// Feast's transformation service, for write-time on-demand views in pandas mode.
    pub transform: Option<TransformConfig>,
}

/// What a run did: each view's run, and where the intervals were recorded (a sentence; for a
/// shard that was not the last, which shards are still to finish).
pub(crate) struct Outcome {
    pub runs: Vec<materialize::ViewRun>,
    pub recorded: String,
    /// The write-time on-demand views' runs (not recorded in the registry, as in Feast).
    pub on_demand: Vec<materialize::ViewRun>,
    /// Write-time on-demand views left out of a run over every view: name and why.
    pub skipped: Vec<(String, String)>,
}

/// Why a run failed: its kind (whose fault; the HTTP status), a class name for the HTTP body
/// (Feast's `FeatureViewNotFoundException` for an unknown view) and the message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub kind: ErrorKind,
    pub class: &'static str,
    pub message: String,
}

impl Failure {
    fn offline(e: quiver_offline::error::Error) -> Failure {
        Failure {
            kind: e.kind(),
            class: "MaterializationFailed",
            message: e.message(),
        }
    }

    fn registry(e: anyhow::Error) -> Failure {
        Failure {
            kind: ErrorKind::UpstreamFailed,
            class: "RegistryUnavailable",
            message: format!("{e:#}"),
        }
    }
}

/// One whole run, shared by `quiver materialize` and the ingest role's `POST /materialize`:
/// the definitions read, the views selected and every window checked (nothing is written when
/// one is wrong), the views scanned and written into `store`, then the intervals recorded.
/// `None` when the project has no online view. Runs on a plain (or blocking-pool) thread:
/// `handle` runs the async parts. `connect` gives the online store once everything is checked;
/// `starting` is told the number of views before any is read.
#[allow(clippy::too_many_arguments)]
pub(crate) fn execute(
    handle: &tokio::runtime::Handle,
    config: &RepoConfig,
    source: &mut Registry,
    connect: &dyn Fn() -> anyhow::Result<OnlineStore>,
    window: Window,
    options: &Options,
    starting: &dyn Fn(usize),
    events: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<Option<Outcome>, Failure> {
    let registry = match source {
        Registry::Repo(repo) => repo
            .read_or_empty()
            .and_then(|file| {
                file.project(&config.project)
                    .map_err(|e| anyhow!("registry {}: {e}", repo.describe()))
            })
            .map_err(Failure::registry)?,
        Registry::Service(client) => handle
            .block_on(crate::registry::fetch_project(client, &config.project))
            .map_err(Failure::registry)?,
    };
    // Names of on-demand views go to their own run; the rest are feature views.
    let (on_demand_names, view_names): (Vec<String>, Vec<String>) =
        options.views.iter().cloned().partition(|n| {
            registry.feature_view(n).is_none() && registry.on_demand_view(n).is_some()
        });
    let not_found = |e: quiver_offline::error::Error| {
        let not_found = e.kind() == ErrorKind::NotFound;
        let mut f = Failure::offline(e);
        if not_found {
            f.class = "FeatureViewNotFoundException";
        }
        f
    };
    let views = if !options.views.is_empty() && view_names.is_empty() {
        Vec::new()
    } else {
        materialize::select_views(&registry, &view_names).map_err(not_found)?
    };
    let on_demand = materialize_odfv::select(
        &registry,
        (!options.views.is_empty()).then_some(on_demand_names.as_slice()),
        options.transform.is_some(),
        "--transformation-service",
    )
    .map_err(not_found)?;
    for (view, why) in &on_demand.skipped {
        tracing::warn!(%view, %why, "write-time on-demand view left out of the run");
    }
    if views.is_empty() && on_demand.views.is_empty() {
        return Ok(None);
    }
    let sharded = !options.shard.is_all();
    if sharded && matches!(config.online_store, OnlineStoreConfig::Sqlite { .. }) {
        return Err(Failure {
            kind: ErrorKind::BadRequest,
            class: "MaterializationFailed",
            message: format!(
                "--shard {}: the sqlite online store has one writer on one machine, so shards would only queue behind each other's writes; shard a run into the redis online store, or run it unsharded",
                options.shard
            ),
        });
    }
    let marker = sharded.then(|| {
        crate::shards::marker_key(
            &config.project,
            options.shard,
            options.run_id.as_deref(),
            &views,
            window,
        )
    });
    let started = now();
    // The registry service refuses to record an end in the future whatever the client says,
    // so --force cannot let such a run write the online store and then fail to record.
    let remote = matches!(source, Registry::Service(_));
    for view in &views {
        let (start, end) = materialize::view_window(view, window, started);
        materialize::check_window(start, end, started, options.force && !remote).map_err(|e| {
            Failure {
                message: format!(
                    "feature view {}: {}{}",
                    view.name,
                    e.message(),
                    if options.force && remote {
                        " (--force does not apply with --registry-url: the registry service refuses intervals that end in the future)"
                    } else {
                        ""
                    }
                ),
                ..Failure::offline(e)
            }
        })?;
    }
    for job in &on_demand.views {
        let (start, end) = materialize_odfv::window(job, window);
        materialize::check_window(start, end, started, options.force).map_err(|e| Failure {
            message: format!("on-demand feature view {}: {}", job.view.name, e.message()),
            ..Failure::offline(e)
        })?;
    }
    let store = connect().map_err(|e| Failure {
        kind: ErrorKind::Unavailable,
        class: "OnlineStoreUnavailable",
        message: format!("{e:#}"),
    })?;
    starting(views.len() + on_demand.views.len());
    let job = materialize::Job {
        repo_dir: &config.repo_dir,
        registry: &registry,
        views,
        window,
        now: started,
        shard: options.shard,
    };
    let skipped = on_demand.skipped;
    // Write-time on-demand views are not sharded (each reads its sources' latest rows whole):
    // in a sharded run shard 0 computes them, before it marks itself done, so a failure there
    // is retried with the shard.
    let on_demand_views = if sharded && options.shard.index != 0 {
        Vec::new()
    } else {
        on_demand.views
    };
    let run_on_demand = |views: Vec<_>| -> Result<Vec<materialize::ViewRun>, Failure> {
        if views.is_empty() {
            return Ok(Vec::new());
        }
        let odfv_job = materialize_odfv::Job {
            repo_dir: &config.repo_dir,
            registry: &registry,
            views,
            window,
            client: options
                .transform
                .clone()
                .map(|c| Arc::new(TransformClient::new(c))),
            engine: quiver_offline::historical::EngineOptions::default(),
        };
        handle
            .block_on(materialize_odfv::run(
                &odfv_job,
                &store,
                &options.write,
                events,
            ))
            .map_err(Failure::offline)
    };
    let runs = match &config.offline_store {
        // Spark selects the winners (of this shard); quiver's writers write them.
        quiver_registry::config::OfflineStoreConfig::Spark(spark) => handle.block_on(
            quiver_offline::spark::materialize::run(spark, &job, &store, &options.write, events),
        ),
        _ => handle.block_on(materialize::run(&job, &store, &options.write, events)),
    }
    .map_err(Failure::offline)?;
    // A sharded run records only what the registry does not hold yet.
    let mut not_recorded: Option<Vec<materialize::ViewRun>> = None;
    // Sharded, shard 0 computes the on-demand views now, before it marks itself done.
    let (mut on_demand_runs, on_demand_later) = if sharded {
        (run_on_demand(on_demand_views)?, Vec::new())
    } else {
        (Vec::new(), on_demand_views)
    };
    if let Some(marker) = &marker {
        match mark_shard(handle, &store, marker, options.shard, &runs)? {
            Some(waiting) => {
                return Ok(Some(Outcome {
                    runs,
                    recorded: waiting,
                    on_demand: on_demand_runs,
                    skipped,
                }));
            }
            None => {
                // Every shard is done: record what the registry does not hold yet.
                let now_registry =
                    read_project(handle, config, source).map_err(Failure::registry)?;
                let pending: Vec<materialize::ViewRun> =
                    crate::shards::not_yet_recorded(&runs, &now_registry.feature_views)
                        .into_iter()
                        .cloned()
                        .collect();
                if pending.is_empty() {
                    return Ok(Some(Outcome {
                        runs,
                        recorded: format!(
                            "Shard {} done; every shard of the run is done and its interval was already recorded",
                            options.shard
                        ),
                        on_demand: on_demand_runs,
                        skipped,
                    }));
                }
                not_recorded = Some(pending);
            }
        }
    }
    let runs_recorded: &[materialize::ViewRun] = not_recorded.as_deref().unwrap_or(&runs);
    let recorded = match source {
        Registry::Repo(handle) => format!(
            "registry {} (version {})",
            handle.describe(),
            record(handle, &config.project, runs_recorded).map_err(Failure::registry)?
        ),
        Registry::Service(client) => {
            let version = handle
                .block_on(record_remote(client, &config.project, runs_recorded))
                .map_err(Failure::registry)?;
            let url = &client.endpoint().url;
            format!("the registry service at {url} (project version {version})")
        }
    };
    let recorded = if sharded {
        format!(
            "Shard {} done, the last of the run: recorded in {recorded}",
            options.shard
        )
    } else {
        format!("Recorded in {recorded}")
    };
    // Unsharded, the write-time on-demand views run after the feature views are recorded, as
    // Feast's `materialize` does.
    on_demand_runs.extend(run_on_demand(on_demand_later)?);
    Ok(Some(Outcome {
        runs,
        recorded,
        on_demand: on_demand_runs,
        skipped,
    }))
}

/// The project as the registry holds it now.
fn read_project(
    handle: &tokio::runtime::Handle,
    config: &RepoConfig,
    source: &mut Registry,
) -> anyhow::Result<quiver_core::registry::ProjectRegistry> {
    match source {
        Registry::Repo(repo) => repo.read_or_empty().and_then(|file| {
            file.project(&config.project)
                .map_err(|e| anyhow!("registry {}: {e}", repo.describe()))
        }),
        Registry::Service(client) => {
            handle.block_on(crate::registry::fetch_project(client, &config.project))
        }
    }
}

/// Marks `shard` of the run done in the online store. `None` when every shard of the run is now
/// done (this one records); otherwise the sentence saying which shards are still to finish.
fn mark_shard(
    handle: &tokio::runtime::Handle,
    store: &OnlineStore,
    marker: &[u8],
    shard: Shard,
    runs: &[materialize::ViewRun],
) -> Result<Option<String>, Failure> {
    let OnlineStore::Redis(redis) = store else {
        return Err(Failure {
            kind: ErrorKind::BadRequest,
            class: "MaterializationFailed",
            message: "--shard needs the redis online store".to_owned(),
        });
    };
    let value = crate::shards::marker_value(now(), runs);
    let marks = handle
        .block_on(redis.mark(
            marker,
            &shard.index.to_string(),
            &value,
            crate::shards::MARKER_TTL,
        ))
        .map_err(|e| Failure {
            kind: ErrorKind::UpstreamFailed,
            class: "MaterializationFailed",
            message: format!(
                "shard {shard}: the online store is written, but marking the shard done failed (rerun this shard): {e}"
            ),
        })?;
    let missing = crate::shards::missing(shard.count, &marks);
    if missing.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "Shard {shard} done; not recorded yet: shard{} {} of {} still to finish (the last one records the interval; marker {})",
        if missing.len() == 1 { "" } else { "s" },
        crate::shards::list(&missing),
        shard.count,
        String::from_utf8_lossy(marker)
    )))
}

/// The ingest role's `POST /materialize` and `/materialize-incremental`: [`execute`] on the
/// server's online store and the registry the server reads, one run at a time (each holds up
/// to its memory budget).
pub(crate) struct ServeMaterializer {
    config: RepoConfig,
    registry: MaterializeRegistry,
    /// The server's `--transformation-service`, for write-time on-demand views.
    transform: Option<TransformConfig>,
    one_at_a_time: Mutex<()>,
}

impl ServeMaterializer {
    pub(crate) fn for_serve(
        config: RepoConfig,
        registry: MaterializeRegistry,
        transform: Option<TransformConfig>,
    ) -> anyhow::Result<Arc<dyn Materializer>> {
        // A call computes up to 10,000 rows: at least a minute, whatever a request may take.
        let transform = transform.map(|mut t| {
            t.timeout = t.timeout.max(Duration::from_secs(60));
            t
        });
        Ok(Arc::new(ServeMaterializer {
            config,
            registry,
            transform,
            one_at_a_time: Mutex::new(()),
        }))
    }
}

impl Materializer for ServeMaterializer {
    fn materialize(
        &self,
        store: &OnlineStore,
        request: &MaterializeRequest,
    ) -> Result<Vec<ViewMaterialized>, ApiError> {
        let _one = self
            .one_at_a_time
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let handle = tokio::runtime::Handle::current();
        let mut source = match &self.registry {
            MaterializeRegistry::Repo(repo) => Registry::Repo(repo.clone()),
            MaterializeRegistry::Service { endpoint, token } => {
                Registry::Service(Box::new(Client::new(endpoint.clone(), token.clone())))
            }
        };
        let window = match request.window {
            HttpWindow::Range { start, end } => Window::Range { start, end },
            HttpWindow::Incremental { end } => Window::Incremental { end },
        };
        let options = Options {
            views: request.views.clone(),
            force: false,
            shard: Shard::ALL,
            run_id: None,
            transform: self.transform.clone(),
            write: WriteOptions {
                key_ttl_seconds: key_ttl_seconds(&self.config),
                ..WriteOptions::default()
            },
        };
        let outcome = execute(
            &handle,
            &self.config,
            &mut source,
            &|| Ok(store.clone()),
            window,
            &options,
            &|_| {},
            &|_| {},
        )
        .map_err(|f| ApiError::new(f.kind, f.class, f.message))?;
        let Some(Outcome {
            mut runs,
            recorded,
            on_demand,
            ..
        }) = outcome
        else {
            return Ok(Vec::new());
        };
        runs.extend(on_demand);
        for r in &runs {
            tracing::info!(view = %r.view, start = %time::format_rfc3339(&r.start), end = %time::format_rfc3339(&r.end), written = r.stats.written, skipped = r.stats.skipped, elapsed = ?r.elapsed, "materialized");
        }
        tracing::info!(%recorded, "materialization recorded");
        Ok(runs
            .into_iter()
            .map(|r| ViewMaterialized {
                view: r.view,
                start: r.start,
                end: r.end,
                written: r.stats.written,
                skipped: r.stats.skipped,
            })
            .collect())
    }
}

/// Records the runs' intervals through the registry service. Transient failures (no
/// connection, 5xx) are retried a few times: the online store is already written, and a lost
/// record only makes the next incremental run redo this window.
async fn record_remote(
    client: &mut Client,
    project: &str,
    runs: &[materialize::ViewRun],
) -> anyhow::Result<u64> {
    let url = client.endpoint().url.clone();
    // An empty window (START = END, e.g. an incremental run to the end already recorded) covers
    // nothing new, and the service refuses intervals that do not end after they start.
    let intervals: Vec<serde_json::Value> = runs
        .iter()
        .filter(|r| (r.end.seconds, r.end.nanos) > (r.start.seconds, r.start.nanos))
        .map(|r| {
            serde_json::json!({
                "feature_view": r.view,
                "start": time::format_rfc3339(&r.start),
                "end": time::format_rfc3339(&r.end),
            })
        })
        .collect();
    if intervals.is_empty() {
        return version_of(client, project).await;
    }
    let body = bytes::Bytes::from(serde_json::json!({ "intervals": intervals }).to_string());
    let path = format!("/v1/projects/{}/materializations", encode_path(project));
    let mut delay = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        let failure = match client
            .request(
                hyper::Method::POST,
                &path,
                &[],
                Some((body.clone(), "application/json")),
                Duration::from_secs(60),
            )
            .await
        {
            Ok(resp) if resp.status == 200 => {
                return serde_json::from_slice::<serde_json::Value>(&resp.body)
                    .ok()
                    .and_then(|v| v["version"].as_u64())
                    .ok_or_else(|| anyhow!("registry service {url}: no version in its answer"));
            }
            Ok(resp) if resp.status < 500 => {
                return Err(anyhow!(
                    "the online store is written, but the registry service at {url} refused the record: {}: {}",
                    resp.status,
                    resp.message()
                ));
            }
            Ok(resp) => format!("{}: {}", resp.status, resp.message()),
            Err(e) => e.to_string(),
        };
        if attempt == 4 {
            return Err(anyhow!(
                "the online store is written, but recording the run at the registry service {url} failed: {failure}"
            ));
        }
        tracing::warn!(attempt, error = %failure, "recording the run failed; retrying");
        tokio::time::sleep(delay).await;
        delay *= 2;
        attempt += 1;
    }
}

/// The project's version at the registry service (`GET /v1/projects/{p}`), when a run had
/// nothing to record.
async fn version_of(client: &mut Client, project: &str) -> anyhow::Result<u64> {
    let url = client.endpoint().url.clone();
    let resp = client
        .request(
            hyper::Method::GET,
            &format!("/v1/projects/{}", encode_path(project)),
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
    serde_json::from_slice::<serde_json::Value>(&resp.body)
        .ok()
        .and_then(|v| v["version"].as_u64())
        .ok_or_else(|| anyhow!("registry service {url}: no version in its answer"))
}

/// Appends the runs' intervals to their views in the registry; returns its new version.
pub(crate) fn record(
    registry: &RepoRegistry,
    project: &str,
    runs: &[materialize::ViewRun],
) -> anyhow::Result<String> {
    let intervals: Vec<store::MaterializedInterval> = runs
        .iter()
        .map(|r| store::MaterializedInterval {
            view: r.view.clone(),
            start: r.start,
            end: r.end,
        })
        .collect();
    let version = uuid::Uuid::new_v4().to_string();
    registry
        .record_materialization(project, &intervals, now(), &version)
        .map_err(|e| anyhow!("the online store is written, but recording the run failed: {e:#}"))?;
    Ok(version)
}

/// One progress bar per view (scan, then write) on a terminal; log lines otherwise.
pub(crate) struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    terminal: bool,
    /// Log lines when stderr is not a terminal (off when the caller prints its own summary).
    log: bool,
}

impl Bars {
    pub(crate) fn new() -> Bars {
        let terminal = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Bars {
            multi,
            bars: Mutex::new(HashMap::new()),
            terminal,
            log: true,
        }
    }

    /// Progress bars on a terminal, nothing otherwise.
    pub(crate) fn quiet() -> Bars {
        Bars {
            log: false,
            ..Bars::new()
        }
    }

    fn bar(&self, view: &str, total: u64, verb: &str) -> ProgressBar {
        let style = ProgressStyle::with_template(
            "{prefix:>24} {msg:8} [{bar:30}] {human_pos}/{human_len} rows {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(style);
        bar.set_prefix(view.to_owned());
        bar.set_message(verb.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    pub(crate) fn event(&self, e: Event<'_>) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        match e {
            Event::Scanning { view, rows } => {
                bars.insert(view.to_owned(), self.bar(view, rows, "scan"));
                if self.log && !self.terminal {
                    tracing::info!(view, rows, "scanning");
                }
            }
            Event::Scanned { view, rows } => {
                if let Some(b) = bars.get(view) {
                    b.set_position(rows);
                }
            }
            Event::Writing { view, rows } => {
                if let Some(b) = bars.get(view) {
                    b.finish_and_clear();
                }
                bars.insert(view.to_owned(), self.bar(view, rows, "write"));
                if self.log && !self.terminal {
                    tracing::info!(view, rows, "writing");
                }
            }
            Event::Written { view, rows } => {
                if let Some(b) = bars.get(view) {
                    b.set_position(rows);
                }
            }
            Event::Done { view, run } => {
                if let Some(b) = bars.get(view) {
                    b.finish();
                }
                if self.log && !self.terminal {
                    tracing::info!(view, written = run.stats.written, skipped = run.stats.skipped, elapsed = ?run.elapsed, "done");
                }
            }
        }
    }

    pub(crate) fn finish(&self) {
        if let Ok(bars) = self.bars.lock() {
            for b in bars.values() {
                b.finish();
            }
        }
    }
}

//! quiver-sidecar: Feast's online-serving HTTP API from an in-process cache over the online
//! store. See ARCHITECTURE.md for the request path and its invariants.
//!
//! ```text
//! start(config, registry path, store) ──▶ State { registry (ArcSwap), engine (cache + store) }
//!        └─ background: registry watch (file stat, S3/GCS HEAD, or the registry service's long
//!           polls) · store health · change feed (invalidations)
//! serve(listener, state, shutdown) ──▶ POST /get-online-features · /health · /ready · /metrics
//! ```

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod api;
pub mod arrow;
pub mod cache;
pub mod engine;
pub mod metrics;
pub mod push;
pub mod registry;
pub mod server;
pub mod sync;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use quiver_core::registry::RegistryFile;
use quiver_online_store::OnlineStore;
use quiver_online_store::redis_store::Invalidation;
use quiver_registry::object::{ObjectRegistry, ObjectVersion};
use tokio::task::JoinHandle;

pub use engine::{EngineConfig, Format, OnStoreError};
pub use server::serve;

use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::registry::ServingRegistry;

#[derive(Debug, Clone)]
pub struct SidecarConfig {
    pub engine: EngineConfig,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// How often the registry file is checked for changes.
    pub registry_refresh: Duration,
    /// Turn on Redis keyspace notifications (`CONFIG SET notify-keyspace-events`) when they are
    /// off, instead of only using them when they are on.
    pub enable_keyspace_notifications: bool,
    /// Replicate mode: feature views (or feature services, for all their views) whose every
    /// stored row is loaded at start and kept loaded, so that every read of them is a hit.
    pub replicate: Vec<String>,
    /// Serve `POST /push` and `POST /write-to-online-store` (off: 404).
    pub push: Option<push::PushConfig>,
}

impl Default for SidecarConfig {
    fn default() -> SidecarConfig {
        SidecarConfig {
            engine: EngineConfig::default(),
            max_body_bytes: 1 << 20,
            registry_refresh: Duration::from_secs(1),
            enable_keyspace_notifications: false,
            replicate: Vec::new(),
            push: None,
        }
    }
}

/// Everything a request needs, shared by all of them.
pub struct State {
    pub config: SidecarConfig,
    pub project: String,
    pub registry: ArcSwap<ServingRegistry>,
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    store_ok: AtomicBool,
    ready: AtomicBool,
    /// False until replicate mode's first load finished (true when nothing is replicated).
    replicated: AtomicBool,
}

impl State {
    /// Whether the sidecar can answer: the registry is loaded (always, once started) and the
    /// online store answered a ping or read recently. Reasons say what is missing.
    pub async fn readiness(&self) -> (bool, Vec<String>) {
        let mut reasons = Vec::new();
        let store_ok = match tokio::time::timeout(
            Duration::from_millis(200),
            self.engine.store.ping(),
        )
        .await
        {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                reasons.push(format!("online store: {e}"));
                false
            }
            Err(_) => {
                reasons.push("online store: ping timed out".to_owned());
                false
            }
        };
        self.store_ok.store(store_ok, Relaxed);
        let replicated = self.replicated.load(Relaxed);
        if !replicated {
            reasons.push(
                "replicate mode: the first load of the replicated views has not finished"
                    .to_owned(),
            );
        }
        let ok = store_ok && replicated;
        self.ready.store(ok, Relaxed);
        (ok, reasons)
    }

    /// The readiness last computed (for metrics).
    pub fn ready_cached(&self) -> bool {
        self.ready.load(Relaxed)
    }
}

/// The background tasks of a running sidecar; dropping this stops them.
pub struct Background {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Reads a registry file and builds the serving view of `project`.
pub fn load_registry(path: &Path, project: &str, version: u64) -> Result<ServingRegistry, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read registry {}: {e}", path.display()))?;
    build_registry(&bytes, &path.display().to_string(), project, version)
}

/// Builds the serving view of `project` from a registry's bytes; `label` names it in errors.
fn build_registry(
    bytes: &[u8],
    label: &str,
    project: &str,
    version: u64,
) -> Result<ServingRegistry, String> {
    let file = RegistryFile::decode(bytes).map_err(|e| format!("{label}: {e}"))?;
    let reg = file.project(project).map_err(|e| format!("{label}: {e}"))?;
    if reg.feature_views.is_empty() && reg.entities.is_empty() {
        tracing::warn!(project, registry = %label, "the registry has no objects for this project");
    }
    Ok(ServingRegistry::build(&reg, version, file.version_id()))
}

/// Reads a registry object (S3, GCS) and builds the serving view of `project`; also returns
/// the object's version, to tell later whether it changed.
pub async fn load_object_registry(
    object: &ObjectRegistry,
    project: &str,
    version: u64,
) -> Result<(ServingRegistry, ObjectVersion), String> {
    let uri = object.uri().to_string();
    let (bytes, stamp) = object.get().await?.ok_or_else(|| {
        format!("registry {uri} does not exist: run `feast apply` or `quiver apply` first")
    })?;
    let reg = build_registry(&bytes, &uri, project, version)?;
    Ok((reg, stamp))
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Where the sidecar's definitions come from.
#[derive(Debug, Clone)]
pub enum RegistrySource {
    /// A registry file, re-read when it changes.
    File(PathBuf),
    /// The registry service, followed by long polls (the last good snapshot kept in the
    /// state dir).
    Service(Box<quiver_registry::client::SyncConfig>),
    /// A registry object in S3 or GCS, whose version (ETag) is asked for every `refresh`
    /// (a HEAD request) and which is re-read when it changed; `None`: read once (Feast's
    /// `cache_ttl_seconds: 0`, a registry cache that never expires).
    Object {
        registry: ObjectRegistry,
        refresh: Option<Duration>,
    },
}

/// Loads the registry file, builds the state, and starts the background tasks. Fails (before
/// any port is bound) when the registry cannot be loaded.
pub async fn start(
    config: SidecarConfig,
    project: &str,
    registry_path: PathBuf,
    store: OnlineStore,
) -> Result<(Arc<State>, Background), String> {
    start_from(config, project, RegistrySource::File(registry_path), store).await
}

/// Loads the registry from `source`, builds the state, and starts the background tasks.
/// Fails (before any port is bound) when no registry can be had: for the registry service,
/// when it cannot be reached and the state dir holds no good snapshot either.
pub async fn start_from(
    config: SidecarConfig,
    project: &str,
    source: RegistrySource,
    store: OnlineStore,
) -> Result<(Arc<State>, Background), String> {
    let metrics = Arc::new(Metrics::default());
    let mut object_stamp = None;
    let (registry, follow) = match &source {
        RegistrySource::File(path) => (load_registry(path, project, 1)?, None),
        RegistrySource::Service(sync) => {
            let (registry, fetcher) = sync::initial(sync, project, &metrics).await?;
            (registry, Some(fetcher))
        }
        RegistrySource::Object { registry, .. } => {
            let (registry, stamp) = load_object_registry(registry, project, 1).await?;
            object_stamp = Some(stamp);
            (registry, None)
        }
    };
    replicated_views(&registry, &config.replicate)?;
    let engine = Arc::new(Engine::new(
        config.engine.clone(),
        store.clone(),
        Arc::clone(&metrics),
    ));
    let state = Arc::new(State {
        config: config.clone(),
        project: project.to_owned(),
        registry: ArcSwap::from_pointee(registry),
        engine,
        metrics,
        store_ok: AtomicBool::new(false),
        ready: AtomicBool::new(false),
        replicated: AtomicBool::new(config.replicate.is_empty()),
    });
    let mut tasks = vec![match (source, follow) {
        (_, Some(fetcher)) => tokio::spawn(sync::follow(Arc::clone(&state), fetcher)),
        (RegistrySource::File(path), None) => {
            tokio::spawn(watch_registry(Arc::clone(&state), path))
        }
        (RegistrySource::Object { registry, refresh }, None) => tokio::spawn(watch_object(
            Arc::clone(&state),
            registry,
            refresh,
            object_stamp,
        )),
        (RegistrySource::Service(_), None) => {
            return Err("internal: registry service source without a fetcher".to_owned());
        }
    }];
    match &store {
        OnlineStore::Redis(redis) => {
            let redis = Arc::clone(redis);
            let state = Arc::clone(&state);
            tasks.push(tokio::spawn(
                async move { follow_redis(state, redis).await },
            ));
        }
        OnlineStore::Sqlite(sqlite) => {
            let sqlite = Arc::clone(sqlite);
            let state = Arc::clone(&state);
            tasks.push(tokio::spawn(
                async move { follow_sqlite(state, sqlite).await },
            ));
        }
    }
    if !config.replicate.is_empty() {
        tasks.push(tokio::spawn(replicate(Arc::clone(&state))));
    }
    Ok((state, Background { tasks }))
}

/// The views named for replicate mode (feature views, or feature services standing for their
/// views), as indices; an unknown name is an error naming it.
fn replicated_views(reg: &ServingRegistry, names: &[String]) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for name in names {
        let views: Vec<String> = match (reg.view(name), reg.service_views(name)) {
            (Some(_), _) => vec![name.clone()],
            (None, Some(views)) => views,
            (None, None) => {
                return Err(format!(
                    "--replicate {name}: no feature view or feature service of that name in project {}",
                    reg.project
                ));
            }
        };
        for v in views {
            if let Some(i) = reg.views.iter().position(|x| x.name == v)
                && !out.contains(&i)
            {
                out.push(i);
            }
        }
    }
    Ok(out)
}

/// Replicate mode: load every stored row of the replicated views, then reload before the
/// staleness bound would expire them (invalidations keep them fresh in between).
async fn replicate(state: Arc<State>) {
    loop {
        let reg = state.registry.load_full();
        let started = std::time::Instant::now();
        match replicated_views(&reg, &state.config.replicate) {
            Ok(views) => match state.engine.preload(&reg, &views).await {
                Ok(rows) => {
                    tracing::info!(
                        rows,
                        views = views.len(),
                        took_ms = started.elapsed().as_millis() as u64,
                        "replicated views loaded"
                    );
                    state.replicated.store(true, Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "replicate mode: load failed; retrying"),
            },
            Err(e) => tracing::warn!(error = %e, "replicate mode: the registry changed"),
        }
        let bound = if state.engine.feed.is_live() {
            state.config.engine.watched_staleness
        } else {
            state.config.engine.max_staleness
        };
        let retry = if state.replicated.load(Relaxed) {
            bound / 2
        } else {
            Duration::from_secs(1)
        };
        tokio::time::sleep(retry.max(Duration::from_millis(500))).await;
    }
}

/// Reloads the registry when its file changes, and swaps it in whole.
async fn watch_registry(state: Arc<State>, path: PathBuf) {
    let mut stamp = file_stamp(&path);
    let mut interval = tokio::time::interval(state.config.registry_refresh);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = file_stamp(&path);
        if now.is_none() || now == stamp {
            continue;
        }
        let version = state.registry.load().version + 1;
        let (path2, project) = (path.clone(), state.project.clone());
        let loaded =
            tokio::task::spawn_blocking(move || load_registry(&path2, &project, version)).await;
        match loaded {
            Ok(Ok(reg)) => {
                tracing::info!(version, version_id = %reg.version_id, "registry reloaded");
                state.registry.store(Arc::new(reg));
                state.metrics.registry_reloads.inc();
                stamp = now;
            }
            Ok(Err(e)) => {
                state.metrics.registry_reload_errors.inc();
                tracing::error!(error = %e, "registry reload failed; serving the last good version");
                stamp = now;
            }
            Err(e) => tracing::error!(error = %e, "registry reload task failed"),
        }
    }
}

/// Asks for the registry object's version every `refresh` (one HEAD request) and, when it
/// changed, reads it and swaps it in whole. A failure keeps the registry in use.
async fn watch_object(
    state: Arc<State>,
    object: ObjectRegistry,
    refresh: Option<Duration>,
    mut stamp: Option<ObjectVersion>,
) {
    let Some(refresh) = refresh else {
        tracing::info!(registry = %object.uri(), "registry cache_ttl_seconds is 0: the registry is read once and not reloaded");
        return;
    };
    let mut interval = tokio::time::interval(refresh);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    let mut failing = false;
    loop {
        interval.tick().await;
        let now = match object.head().await {
            Ok(Some(v)) => v,
            Ok(None) => {
                if !failing {
                    tracing::warn!(registry = %object.uri(), "the registry object is gone; serving the last good version");
                }
                failing = true;
                continue;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot check the registry for changes; serving the last good version");
                }
                failing = true;
                continue;
            }
        };
        if failing {
            tracing::info!(registry = %object.uri(), "the registry object is reachable again");
            failing = false;
        }
        if stamp.as_ref().is_some_and(|s| same_object_version(s, &now)) {
            continue;
        }
        let version = state.registry.load().version + 1;
        match load_object_registry(&object, &state.project, version).await {
            Ok((reg, read)) => {
                tracing::info!(version, version_id = %reg.version_id, "registry reloaded");
                state.registry.store(Arc::new(reg));
                state.metrics.registry_reloads.inc();
                stamp = Some(read);
            }
            Err(e) => {
                state.metrics.registry_reload_errors.inc();
                tracing::error!(error = %e, "registry reload failed; serving the last good version, retrying at the next check");
                // The stamp stays: a failed read may be transient (a timeout, a throttled GET),
                // so the next check reads again rather than waiting for another change.
            }
        }
    }
}

/// Whether two versions of an object are the same one: by ETag (or generation) when the store
/// gives one, else by time and size.
fn same_object_version(a: &ObjectVersion, b: &ObjectVersion) -> bool {
    match (&a.e_tag, &b.e_tag, &a.version, &b.version) {
        (Some(x), Some(y), va, vb) => x == y && (va.is_none() || vb.is_none() || va == vb),
        (_, _, Some(x), Some(y)) => x == y,
        _ => a.last_modified_ms == b.last_modified_ms && a.size == b.size,
    }
}

/// Follows Redis keyspace notifications: invalidates changed entities, and tells the engine when
/// the feed is live (long staleness bound) or lost (short bound). The store subscribes to every
/// node that holds keys (each master of a cluster, the sentinel's current master) and reports
/// live only while all of them are subscribed with notifications on.
async fn follow_redis(state: Arc<State>, redis: Arc<quiver_online_store::RedisStore>) {
    let mut feed = redis.follow_invalidations(state.config.enable_keyspace_notifications);
    // "Off" is reported again at every re-check: said once until the feed has been live.
    let mut off_said = false;
    while let Some(event) = feed.rx.recv().await {
        match event {
            Invalidation::Live => {
                off_said = false;
                tracing::info!("following Redis keyspace notifications");
                state.engine.feed.set_live(true);
            }
            Invalidation::Lost => {
                if state.engine.feed.is_live() {
                    tracing::warn!(
                        "lost Redis keyspace notifications; short staleness bound until they are back"
                    );
                }
                state.engine.feed.set_live(false);
            }
            Invalidation::Off { node, config } if !std::mem::replace(&mut off_said, true) => {
                tracing::warn!(
                    %node,
                    notify_keyspace_events = %config,
                    "Redis keyspace notifications are off: cached entries live at most max_staleness; \
                     set notify-keyspace-events to include Khg (or pass --enable-keyspace-notifications)"
                );
                state.engine.feed.set_live(false);
            }
            Invalidation::Off { node, config } => {
                tracing::debug!(%node, notify_keyspace_events = %config, "Redis keyspace notifications still off");
                state.engine.feed.set_live(false);
            }
            Invalidation::Key(entity) => {
                let reg = state.registry.load();
                state.engine.invalidate(&reg, &entity);
            }
        }
    }
}

/// SQLite has no per-key notifications: `PRAGMA data_version` tells that another connection
/// committed, and then every cached row is dropped.
async fn follow_sqlite(state: Arc<State>, sqlite: Arc<quiver_online_store::SqliteStore>) {
    let conn = Arc::new(std::sync::Mutex::new(None));
    let mut last: Option<i64> = None;
    let mut interval = tokio::time::interval(Duration::from_millis(200));
    loop {
        interval.tick().await;
        let (s, c) = (Arc::clone(&sqlite), Arc::clone(&conn));
        let version = tokio::task::spawn_blocking(move || {
            let mut guard = c.lock().map_err(|_| "poisoned".to_owned())?;
            s.data_version(&mut guard).map_err(|e| e.to_string())
        })
        .await;
        match version {
            Ok(Ok(Some(v))) => {
                if !state.engine.feed.is_live() {
                    state.engine.feed.set_live(true);
                }
                if last.is_some_and(|l| l != v) {
                    state.engine.invalidate_all();
                }
                last = Some(v);
            }
            Ok(Ok(None)) => {}
            failed => {
                if state.engine.feed.is_live() {
                    let reason = match failed {
                        Ok(Err(e)) => e,
                        Err(e) => e.to_string(),
                        Ok(Ok(_)) => String::new(),
                    };
                    tracing::warn!(error = %reason, "sqlite change detection failed; short staleness bound");
                    state.engine.feed.set_live(false);
                }
                if let Ok(mut c) = conn.lock() {
                    *c = None;
                }
            }
        }
    }
}

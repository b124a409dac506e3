//! quiver-registry-service: the central registry service (`quiver registry serve`).
//!
//! ```text
//! Store (registry file | Feast's SQL tables in PostgreSQL) ──load/poll──▶ Catalog (immutable,
//!   swapped whole; per-project versions; snapshots built once per version and narrowing)
//!        ▲                                                    │
//!   apply (version-checked, one writer at a time)             ▼
//!   POST /v1/projects/{p}/apply            GET /v1/projects/{p}/snapshot (ETag, 304, long poll)
//!                                          GET /v1/projects[/{p}/feature-views|entities|...]
//! ```
//!
//! The service keeps no state of its own: the objects and the version records live in the
//! store, so replicas over one Postgres agree, and a restarted service carries on.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod metrics;
pub mod object;
pub mod postgres;
pub mod server;
pub mod store;
pub mod tls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quiver_core::fault::{Classified, ErrorKind};
use quiver_core::registry::{ProjectRegistry, RegistryFile};
use quiver_core::time::Timestamp;
use quiver_registry::snapshot::{self, SelectError};
use quiver_registry::store::{IntervalEdit, MaterializedInterval};
use tokio::sync::watch;

pub use server::serve;
pub use store::{Applied, ApplyError, RecordError, Recorded, RegistryStoreError, Store};

use crate::metrics::ServiceMetrics;
use crate::store::{Loaded, Versions};

/// How the service behaves.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The bearer token writes need (and reads too, with `auth_reads`). `None`: writes are
    /// open (the CLI warns).
    pub token: Option<String>,
    pub auth_reads: bool,
    /// How often the store is asked whether something changed behind the service's back.
    pub poll_interval: Duration,
    /// The longest `?wait=` honoured.
    pub max_wait: Duration,
    /// Largest apply body.
    pub max_body_bytes: usize,
    /// Applies parsed and checked at once, on blocking threads (never the async ones, so
    /// `/health` and long polls stay responsive), and how many more may wait; past that an
    /// apply is answered 503 with `Retry-After`.
    pub apply_workers: usize,
    pub apply_queue: usize,
    /// The server's connection limits and deadlines (long polls hold a connection; a long poll
    /// in progress is not idle).
    pub http: quiver_http::Limits,
}

impl Default for ServiceConfig {
    fn default() -> ServiceConfig {
        ServiceConfig {
            token: None,
            auth_reads: false,
            poll_interval: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
            max_body_bytes: 16 << 20,
            apply_workers: quiver_http::BlockingPool::default_workers(),
            apply_queue: 4,
            http: quiver_http::Limits {
                max_connections: 10_000,
                ..quiver_http::Limits::default()
            },
        }
    }
}

/// A built snapshot, shared by every request that asks for the same thing at one version.
#[derive(Debug)]
pub struct BuiltSnapshot {
    pub bytes: Bytes,
    pub etag: String,
    pub version: u64,
}

/// What a snapshot request may fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotRequestError {
    #[error("no project {0}")]
    UnknownProject(String),
    #[error("no feature service {0}")]
    UnknownService(String),
    #[error("{0}")]
    Registry(String),
}

impl Classified for SnapshotRequestError {
    fn kind(&self) -> ErrorKind {
        match self {
            SnapshotRequestError::UnknownProject(_) | SnapshotRequestError::UnknownService(_) => {
                ErrorKind::NotFound
            }
            // A stored object that does not decode.
            SnapshotRequestError::Registry(_) => ErrorKind::UpstreamFailed,
        }
    }
}

/// Built snapshots by (project, narrowing).
type SnapshotCache = HashMap<(String, Vec<String>), Arc<BuiltSnapshot>>;

/// Most (project, narrowing) snapshots kept per catalog.
const MAX_CACHED_SNAPSHOTS: usize = 1024;

/// The registry as the service has it: immutable, replaced whole on every change.
pub struct Catalog {
    /// Increments with every replacement.
    pub generation: u64,
    pub file: RegistryFile,
    pub versions: Versions,
    /// Projects with objects, sorted.
    pub projects: Vec<String>,
    snapshots: Mutex<SnapshotCache>,
    typed: Mutex<HashMap<String, Arc<ProjectRegistry>>>,
}

impl Catalog {
    fn new(generation: u64, loaded: Loaded) -> Result<Catalog, RegistryStoreError> {
        let projects = loaded
            .file
            .project_names()
            .map_err(|e| RegistryStoreError::Corrupt(e.to_string()))?;
        Ok(Catalog {
            generation,
            file: loaded.file,
            versions: loaded.versions,
            projects,
            snapshots: Mutex::new(HashMap::new()),
            typed: Mutex::new(HashMap::new()),
        })
    }

    pub fn has_project(&self, project: &str) -> bool {
        self.projects
            .binary_search_by(|p| p.as_str().cmp(project))
            .is_ok()
    }

    /// The project's version (0: never seen).
    pub fn version(&self, project: &str) -> u64 {
        self.versions.get(project).map_or(0, |r| r.version)
    }

    /// The typed objects of a project (decoded once per catalog).
    pub fn project(&self, project: &str) -> Result<Arc<ProjectRegistry>, SnapshotRequestError> {
        if !self.has_project(project) {
            return Err(SnapshotRequestError::UnknownProject(project.to_owned()));
        }
        if let Ok(cache) = self.typed.lock()
            && let Some(p) = cache.get(project)
        {
            return Ok(Arc::clone(p));
        }
        let typed = Arc::new(
            self.file
                .project(project)
                .map_err(|e| SnapshotRequestError::Registry(e.to_string()))?,
        );
        if let Ok(mut cache) = self.typed.lock() {
            cache.insert(project.to_owned(), Arc::clone(&typed));
        }
        Ok(typed)
    }

    /// The snapshot of a project narrowed to `services` (sorted, deduplicated by the caller),
    /// built once per catalog.
    pub fn snapshot(
        &self,
        project: &str,
        services: &[String],
    ) -> Result<Arc<BuiltSnapshot>, SnapshotRequestError> {
        if !self.has_project(project) {
            return Err(SnapshotRequestError::UnknownProject(project.to_owned()));
        }
        let key = (project.to_owned(), services.to_vec());
        if let Ok(cache) = self.snapshots.lock()
            && let Some(s) = cache.get(&key)
        {
            return Ok(Arc::clone(s));
        }
        let objects = snapshot::select(&self.file, project, services).map_err(|e| match e {
            SelectError::UnknownService(s) => SnapshotRequestError::UnknownService(s),
            SelectError::Registry(m) => SnapshotRequestError::Registry(m),
        })?;
        let refs: Vec<_> = objects
            .iter()
            .map(|(k, n, b)| (*k, n.as_str(), *b))
            .collect();
        let version = self.version(project);
        let (bytes, hash) = snapshot::encode(project, version, services, &refs);
        let built = Arc::new(BuiltSnapshot {
            bytes: Bytes::from(bytes),
            etag: snapshot::etag(hash),
            version,
        });
        if let Ok(mut cache) = self.snapshots.lock() {
            if cache.len() >= MAX_CACHED_SNAPSHOTS {
                cache.clear();
            }
            cache.insert(key, Arc::clone(&built));
        }
        Ok(built)
    }
}

/// The running service: the store, the catalog, and who waits for it to change.
pub struct Service {
    pub config: ServiceConfig,
    store: Store,
    catalog: watch::Sender<Arc<Catalog>>,
    /// One apply at a time in this process (the store serializes across processes).
    write_lock: tokio::sync::Mutex<()>,
    /// The change token last seen, to skip loads when nothing moved.
    last_token: Mutex<Option<u64>>,
    store_ok: AtomicBool,
    pub metrics: ServiceMetrics,
    /// Where applies are parsed and checked (bounded; see `ServiceConfig::apply_workers`).
    pub(crate) apply_pool: quiver_http::BlockingPool,
}

impl Service {
    /// Loads the store once; fails when it cannot be read.
    pub async fn open(
        store: Store,
        config: ServiceConfig,
    ) -> Result<Arc<Service>, RegistryStoreError> {
        let token = store.change_token().await?;
        let loaded = store.load().await?;
        let catalog = Arc::new(Catalog::new(1, loaded)?);
        let (tx, _) = watch::channel(catalog);
        Ok(Arc::new(Service {
            apply_pool: quiver_http::BlockingPool::new(config.apply_workers, config.apply_queue),
            config,
            store,
            catalog: tx,
            write_lock: tokio::sync::Mutex::new(()),
            last_token: Mutex::new(Some(token)),
            store_ok: AtomicBool::new(true),
            metrics: ServiceMetrics::default(),
        }))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The catalog now.
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&self.catalog.borrow())
    }

    /// A receiver that wakes on every catalog change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Catalog>> {
        self.catalog.subscribe()
    }

    /// Whether the store answered the last poll.
    pub fn store_ok(&self) -> bool {
        self.store_ok.load(Relaxed)
    }

    /// Swaps in a new catalog when the versions moved (or the set of projects did).
    fn publish(&self, loaded: Loaded) -> Result<bool, RegistryStoreError> {
        let current = self.catalog();
        let next = Catalog::new(current.generation + 1, loaded)?;
        if next.versions == current.versions && next.projects == current.projects {
            return Ok(false);
        }
        for (project, rec) in &next.versions {
            if current.versions.get(project) != Some(rec) {
                tracing::info!(project, version = rec.version, "registry changed");
            }
        }
        self.catalog.send_replace(Arc::new(next));
        self.metrics.catalog_swaps.inc();
        Ok(true)
    }

    /// Asks the store whether anything changed, and loads it if so. Returns whether the
    /// catalog changed.
    pub async fn refresh(&self) -> Result<bool, RegistryStoreError> {
        let result = async {
            let token = self.store.change_token().await?;
            let seen = self.last_token.lock().ok().and_then(|t| *t);
            if seen == Some(token) {
                return Ok(false);
            }
            // Loads and applies do not interleave in this process.
            let _write = self.write_lock.lock().await;
            let loaded = self.store.load().await?;
            if let Ok(mut t) = self.last_token.lock() {
                *t = Some(token);
            }
            self.metrics.store_loads.inc();
            self.publish(loaded)
        }
        .await;
        match &result {
            Ok(_) => {
                if !self.store_ok.swap(true, Relaxed) {
                    tracing::info!(store = %self.store.describe(), "registry store reachable again");
                }
            }
            Err(e) => {
                self.metrics.store_errors.inc();
                if self.store_ok.swap(false, Relaxed) {
                    tracing::warn!(error = %e, "registry store poll failed; serving the last loaded registry");
                }
            }
        }
        result
    }

    /// Applies definitions to a project, if it is still at `base_version`.
    pub async fn apply(
        &self,
        base_version: Option<u64>,
        desired: ProjectRegistry,
        now: Timestamp,
        dry_run: bool,
    ) -> Result<Applied, ApplyError> {
        let _write = self.write_lock.lock().await;
        let result = self.store.apply(base_version, desired, now, dry_run).await;
        match &result {
            Ok(applied) if !dry_run => {
                self.metrics.applies.inc();
                // Publish now rather than at the next poll: sidecars hear of it at once. (The
                // next poll sees a new change token and loads once more, finding no change.)
                let _ = self.publish(applied.loaded.clone());
            }
            Ok(_) => {}
            Err(ApplyError::Conflict { .. }) => self.metrics.apply_conflicts.inc(),
            Err(ApplyError::Store(_)) => self.metrics.store_errors.inc(),
        }
        result
    }

    /// Records materialization intervals (`quiver materialize --registry-url`).
    pub async fn record_materialization(
        &self,
        project: &str,
        runs: Vec<MaterializedInterval>,
        now: Timestamp,
    ) -> Result<Recorded, RecordError> {
        self.edit_intervals(project, IntervalEdit::Append(runs), now)
            .await
    }

    /// Removes every materialization interval of `views` (an operator's repair of a bad
    /// record; `quiver registry clear-intervals`).
    pub async fn clear_materializations(
        &self,
        project: &str,
        views: Vec<String>,
        now: Timestamp,
    ) -> Result<Recorded, RecordError> {
        self.edit_intervals(project, IntervalEdit::Clear(views), now)
            .await
    }

    async fn edit_intervals(
        &self,
        project: &str,
        edit: IntervalEdit,
        now: Timestamp,
    ) -> Result<Recorded, RecordError> {
        let _write = self.write_lock.lock().await;
        let result = self.store.record_materialization(project, edit, now).await;
        match &result {
            Ok(recorded) => {
                self.metrics.materializations.inc();
                let _ = self.publish(recorded.loaded.clone());
            }
            Err(RecordError::Store(_)) => self.metrics.store_errors.inc(),
            Err(RecordError::UnknownView(_)) => {}
        }
        result
    }

    /// Polls the store every `poll_interval` until the service is dropped.
    pub fn spawn_poller(self: &Arc<Service>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let every = self.config.poll_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(service) = weak.upgrade() else {
                    return;
                };
                let _ = service.refresh().await;
            }
        })
    }
}

/// A service on a runtime (and thread pool) of its own, stopped abruptly by [`kill`]: every
/// task and connection dies at once, as when the process is killed. For tests and benchmarks
/// that need a real service to go away and come back on the same port.
///
/// [`kill`]: Standalone::kill
pub struct Standalone {
    pub port: u16,
    store_uri: String,
    config: ServiceConfig,
    tls: Option<Arc<crate::tls::CertReloader>>,
    runtime: Option<tokio::runtime::Runtime>,
    service: Option<Arc<Service>>,
}

impl Standalone {
    /// Starts a service over `store_uri` on 127.0.0.1:`port` (0: any free port).
    pub fn start(
        store_uri: &str,
        port: u16,
        config: ServiceConfig,
        tls: Option<Arc<crate::tls::CertReloader>>,
    ) -> Result<Standalone, String> {
        let mut s = Standalone {
            port,
            store_uri: store_uri.to_owned(),
            config,
            tls,
            runtime: None,
            service: None,
        };
        s.launch()?;
        Ok(s)
    }

    fn launch(&mut self) -> Result<(), String> {
        let (uri, config, tls, port) = (
            self.store_uri.clone(),
            self.config.clone(),
            self.tls.clone(),
            self.port,
        );
        // Built on a plain thread: a runtime cannot be started from inside another's task.
        let started = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let (service, port) = runtime.block_on(async move {
                let store = Store::open(&uri).await?;
                let service = Service::open(store, config)
                    .await
                    .map_err(|e| e.to_string())?;
                // A killed predecessor's listener may take a moment to close.
                let mut tries = 0;
                let listener = loop {
                    match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(l) => break l,
                        Err(e) if port != 0 && tries < 100 => {
                            tries += 1;
                            tracing::debug!(error = %e, "port still taken; retrying");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => return Err(format!("bind 127.0.0.1:{port}: {e}")),
                    }
                };
                let port = listener.local_addr().map_err(|e| e.to_string())?.port();
                // Detached: it stops when the service is dropped or the runtime shut down.
                drop(service.spawn_poller());
                tokio::spawn(serve(
                    listener,
                    Arc::clone(&service),
                    tls,
                    std::future::pending(),
                ));
                Ok::<_, String>((service, port))
            })?;
            Ok::<_, String>((runtime, service, port))
        })
        .join()
        .map_err(|_| "the service thread panicked".to_owned())??;
        self.runtime = Some(started.0);
        self.service = Some(started.1);
        self.port = started.2;
        Ok(())
    }

    pub fn service(&self) -> Option<&Arc<Service>> {
        self.service.as_ref()
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Stops everything at once: the listener, every connection, the poller.
    pub fn kill(&mut self) {
        self.service = None;
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Starts again on the same port and store.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.launch()
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        self.kill();
    }
}

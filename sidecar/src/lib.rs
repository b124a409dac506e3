//! quiver-sidecar: Feast's online-serving HTTP API from an in-process cache over the online
//! store. See ARCHITECTURE.md for the request path and its invariants.
//!
//! ```text
//! start(config, registry path, store) ──▶ State { registry (ArcSwap), engine (cache + store) }
//!        └─ background: registry watch (file stat, S3/GCS HEAD, or the registry service's long
//!           polls) · store health · change feed (invalidations) · replicate mode's reloads
//! serve(listener, state, shutdown) ──▶ POST /get-online-features · /health · /ready · /metrics
//! ```
//!
//! Where things are: `server` (HTTP) → `api` (request body, statuses) → `engine` (the pipeline:
//! `engine::request`, `engine::read_through`) → `render` (`json`, `arrow`); `cache` (the CLOCK
//! cache), `feed` (change feed and its tasks), `registry` (serving registry, plan cache),
//! `source` and `sync` (where the registry comes from), `replicate`, `push` (writes), `write_time` (write-time on-demand views), `materialize` (the ingest role's runs), `error`,
//! `metrics`, `config`, `state`, `clock`; `enrich` (KServe requests enriched and forwarded to
//! the model server).

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod api;
pub mod cache;
pub mod clock;
pub mod config;
pub mod engine;
pub mod enrich;
pub mod error;
pub mod feed;
pub mod materialize;
pub mod metrics;
mod on_demand;
pub mod push;
mod push_body;
pub mod registry;
pub mod render;
mod replicate;
pub mod server;
pub mod source;
pub mod state;
pub mod sync;
mod write_time;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arc_swap::ArcSwap;
use quiver_online_store::OnlineStore;

pub use clock::Clock;
pub use config::{EngineConfig, OnStoreError, SidecarConfig};
pub use engine::ServingEngine;
pub use error::ApiError;
pub use quiver_transform::TransformConfig;
pub use render::{Format, arrow};
pub use server::serve;
pub use source::{RegistrySource, load_object_registry, load_registry};
pub use state::{Background, State};

use crate::metrics::Metrics;
use crate::replicate::{replicate, replicated_views};

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
    if config.transformation.is_none() {
        on_demand::warn_unserved(&registry);
    }
    let engine = Arc::new(ServingEngine::new(
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
        transform: config
            .transformation
            .clone()
            .map(|c| Arc::new(quiver_transform::TransformClient::new(c))),
        store_ok: AtomicBool::new(false),
        ready: AtomicBool::new(false),
        replicated: AtomicBool::new(config.replicate.is_empty()),
        registry_problem: std::sync::Mutex::new(None),
    });
    let mut tasks =
        vec![match (source, follow) {
            (_, Some(fetcher)) => tokio::spawn(sync::follow(Arc::clone(&state), fetcher)),
            (RegistrySource::File(path), None) => {
                tokio::spawn(source::watch_registry(Arc::clone(&state), path))
            }
            (RegistrySource::Object { registry, refresh }, None) => tokio::spawn(
                source::watch_object(Arc::clone(&state), registry, refresh, object_stamp),
            ),
            (RegistrySource::Service(_), None) => {
                return Err("internal: registry service source without a fetcher".to_owned());
            }
        }];
    match &store {
        OnlineStore::Redis(redis) => {
            let redis = Arc::clone(redis);
            let state = Arc::clone(&state);
            tasks.push(tokio::spawn(async move {
                feed::follow_redis(state, redis).await
            }));
        }
        OnlineStore::Sqlite(sqlite) => {
            let sqlite = Arc::clone(sqlite);
            let state = Arc::clone(&state);
            tasks.push(tokio::spawn(async move {
                feed::follow_sqlite(state, sqlite).await
            }));
        }
    }
    if !config.replicate.is_empty() {
        tasks.push(tokio::spawn(replicate(Arc::clone(&state))));
    }
    Ok((state, Background { tasks }))
}

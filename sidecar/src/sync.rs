//! Following the registry service: the first snapshot at start (or the state dir's when the
//! service is away), then long polls; each new snapshot is checked, built into a
//! `ServingRegistry` and swapped in whole, and written to the state dir as the last good one.
//!
//! Requests hold the `Arc` of the registry they started with, so a swap never changes the
//! definitions under a request in flight. A failure of any kind (unreachable, error status,
//! a snapshot that does not check out) keeps the registry in use and retries after a jittered,
//! exponentially growing wait.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use quiver_core::registry::ProjectRegistry;
use quiver_registry::client::{self, Backoff, Fetched, SnapshotFetcher, SyncConfig, SyncError};
use quiver_registry::snapshot::Snapshot;

use crate::State;
use crate::metrics::Metrics;
use crate::registry::ServingRegistry;

fn build(project: &ProjectRegistry, snap: &Snapshot, local_version: u64) -> ServingRegistry {
    ServingRegistry::build(
        project,
        local_version,
        &format!("service-v{}", snap.version),
    )
}

/// Writes the last good snapshot to the state dir (off the async workers: it fsyncs).
async fn save(config: &SyncConfig, bytes: bytes::Bytes) {
    let Some(dir) = config.state_dir.clone() else {
        return;
    };
    let project = config.project.clone();
    let saved =
        tokio::task::spawn_blocking(move || client::save_state(&dir, &project, &bytes)).await;
    match saved {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot keep the registry snapshot in the state dir")
        }
        Err(e) => tracing::warn!(error = %e, "state dir write task failed"),
    }
}

/// The registry to start with: the service's snapshot, else the state dir's last good one
/// (said in the logs and the `quiver_registry_from_state_dir` metric). Fails when neither.
pub(crate) async fn initial(
    config: &SyncConfig,
    project: &str,
    metrics: &Metrics,
) -> Result<(ServingRegistry, SnapshotFetcher), String> {
    let mut config = config.clone();
    config.project = project.to_owned();
    let mut fetcher = SnapshotFetcher::new(config.clone());
    let url = &config.endpoint.url;
    match fetcher.fetch(None).await {
        Ok(Fetched::Changed {
            snapshot,
            project: typed,
            bytes,
        }) => {
            metrics.registry_service_connected.store(true, Relaxed);
            metrics
                .registry_service_version
                .store(snapshot.version, Relaxed);
            tracing::info!(registry = %url, project, version = snapshot.version, objects = snapshot.objects.len(), "registry snapshot loaded from the registry service");
            save(&config, bytes).await;
            Ok((build(&typed, &snapshot, 1), fetcher))
        }
        Ok(Fetched::NotModified) => Err(format!(
            "registry service {url}: answered 304 to a request without an ETag"
        )),
        Err(e) => {
            if let SyncError::Invalid(_) = e {
                metrics.registry_snapshots_rejected.inc();
            } else {
                metrics.registry_sync_errors.inc();
            }
            let Some(dir) = &config.state_dir else {
                return Err(format!(
                    "{e} (registry service {url}); give --state-dir to start from the last good snapshot when the service is away"
                ));
            };
            let saved = client::load_state(dir, project).map_err(|s| {
                format!(
                    "{e} (registry service {url}); and the state dir's snapshot is unusable: {s}"
                )
            })?;
            let Some(snap) = saved else {
                return Err(format!(
                    "{e} (registry service {url}); and the state dir {} holds no snapshot of project {project} yet",
                    dir.display()
                ));
            };
            if snap.feature_services != config.feature_services_sorted() {
                return Err(format!(
                    "{e} (registry service {url}); and the state dir's snapshot is narrowed to feature services {:?}, not {:?}",
                    snap.feature_services,
                    config.feature_services_sorted()
                ));
            }
            let typed = snap
                .project_registry(project)
                .map_err(|s| format!("state dir snapshot: {s}"))?;
            tracing::warn!(
                registry = %url,
                error = %e,
                state_dir = %dir.display(),
                version = snap.version,
                "registry service unreachable: serving the last good snapshot from the state dir until it is back"
            );
            metrics.registry_from_state_dir.store(true, Relaxed);
            metrics
                .registry_service_version
                .store(snap.version, Relaxed);
            fetcher.set_etag(Some(snap.etag()));
            Ok((build(&typed, &snap, 1), fetcher))
        }
    }
}

/// Long-polls the service for the life of the sidecar.
pub(crate) async fn follow(state: Arc<State>, mut fetcher: SnapshotFetcher) {
    let config = fetcher.config().clone();
    let metrics = &state.metrics;
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
    let mut failing = false;
    loop {
        match fetcher.fetch(Some(config.wait)).await {
            Ok(fetched) => {
                metrics.registry_service_connected.store(true, Relaxed);
                if metrics.registry_from_state_dir.swap(false, Relaxed) || failing {
                    tracing::info!(registry = %config.endpoint.url, "registry service reachable again");
                }
                failing = false;
                backoff.reset();
                if let Fetched::Changed {
                    snapshot,
                    project,
                    bytes,
                } = fetched
                {
                    let version = state.registry.load().version + 1;
                    let registry = build(&project, &snapshot, version);
                    match state.install_registry(registry) {
                        Ok(()) => {
                            metrics.registry_reloads.inc();
                            metrics
                                .registry_service_version
                                .store(snapshot.version, Relaxed);
                            tracing::info!(
                                version = snapshot.version,
                                objects = snapshot.objects.len(),
                                "registry snapshot swapped in"
                            );
                            save(&config, bytes).await;
                        }
                        Err(why) => {
                            // Not saved either: a restart must not come up on it.
                            metrics.registry_snapshots_rejected.inc();
                            tracing::error!(
                                version = snapshot.version,
                                error = %why,
                                "registry snapshot refused; serving the last good one"
                            );
                        }
                    }
                }
            }
            Err(e) => {
                match &e {
                    SyncError::Invalid(_) => {
                        metrics.registry_snapshots_rejected.inc();
                        tracing::error!(error = %e, "registry snapshot refused; serving the last good one");
                    }
                    _ => {
                        metrics.registry_sync_errors.inc();
                        metrics.registry_service_connected.store(false, Relaxed);
                        if !failing {
                            tracing::warn!(error = %e, "registry sync failed; serving the last good snapshot and retrying with backoff");
                        } else {
                            tracing::debug!(error = %e, "registry sync still failing");
                        }
                    }
                }
                failing = true;
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

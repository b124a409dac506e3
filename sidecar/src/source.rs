//! Where the sidecar's definitions come from ([`RegistrySource`]): a registry file, re-read when
//! it changes; a registry object in S3 or GCS, checked by HEAD; or the registry service (see
//! [`crate::sync`]). Each new version is built into a [`ServingRegistry`] and swapped in whole;
//! a version that fails to load leaves the last good one serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use quiver_core::registry::RegistryFile;
use quiver_registry::object::{ObjectRegistry, ObjectVersion};

use crate::State;
use crate::registry::ServingRegistry;

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

pub(crate) fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// `/ready`'s words for a registry that failed to load.
fn last_good(state: &State, e: &impl std::fmt::Display) -> String {
    format!(
        "registry: the latest version failed to load ({e}); serving the last good one (version_id {})",
        state.registry.load().version_id
    )
}

/// Reloads the registry when its file changes, and swaps it in whole.
pub(crate) async fn watch_registry(state: Arc<State>, path: PathBuf) {
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
                let version_id = reg.version_id.clone();
                match state.install_registry(reg) {
                    Ok(()) => {
                        tracing::info!(version, %version_id, "registry reloaded");
                        state.metrics.registry_reloads.inc();
                    }
                    Err(why) => {
                        state.metrics.registry_reload_errors.inc();
                        tracing::error!(error = %why, "registry reload refused; serving the last good version");
                    }
                }
                stamp = now;
            }
            Ok(Err(e)) => {
                state.metrics.registry_reload_errors.inc();
                tracing::error!(error = %e, "registry reload failed; serving the last good version");
                state.set_registry_problem(Some(last_good(&state, &e)));
                stamp = now;
            }
            Err(e) => tracing::error!(error = %e, "registry reload task failed"),
        }
    }
}

/// Asks for the registry object's version every `refresh` (one HEAD request) and, when it
/// changed, reads it and swaps it in whole. A failure keeps the registry in use.
pub(crate) async fn watch_object(
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
                let version_id = reg.version_id.clone();
                match state.install_registry(reg) {
                    Ok(()) => {
                        tracing::info!(version, %version_id, "registry reloaded");
                        state.metrics.registry_reloads.inc();
                    }
                    Err(why) => {
                        state.metrics.registry_reload_errors.inc();
                        tracing::error!(error = %why, "registry reload refused; serving the last good version");
                    }
                }
                // Refused or not, this version was read: the next check waits for a change.
                stamp = Some(read);
            }
            Err(e) => {
                state.metrics.registry_reload_errors.inc();
                state.set_registry_problem(Some(last_good(&state, &e)));
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

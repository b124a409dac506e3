//! The registry read from the registry service (`quiver offline serve --registry-url`, for a
//! repo whose feature_store.yaml says `registry_type: remote`, as in k8s): the sidecar's
//! snapshot client, asked again at most once per `refresh` (an unchanged registry is a 304).
//! When the service cannot be reached, the last good registry keeps serving (logged); before
//! the first one, requests fail as Unavailable. The service's own words stay in the log.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use quiver_core::fault::{Classified as _, ErrorKind};
use quiver_core::registry::ProjectRegistry;
use quiver_registry::client::{Fetched, SnapshotFetcher, SyncConfig, SyncError};

use crate::historical::FeastError;

/// How long a fetched registry is used before the service is asked again, by default.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(1);

struct Last {
    registry: ProjectRegistry,
    checked: Instant,
}

/// A project's registry from the registry service.
pub struct RemoteRegistry {
    url: String,
    refresh: Duration,
    /// One fetch at a time: concurrent requests wait for it and share its answer.
    fetcher: tokio::sync::Mutex<SnapshotFetcher>,
    last: Mutex<Option<Last>>,
}

impl std::fmt::Debug for RemoteRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRegistry")
            .field("url", &self.url)
            .field("refresh", &self.refresh)
            .finish()
    }
}

impl RemoteRegistry {
    /// `config` names the service, the project and the token.
    pub fn new(config: SyncConfig, refresh: Duration) -> RemoteRegistry {
        RemoteRegistry {
            url: config.endpoint.url.to_string(),
            refresh,
            fetcher: tokio::sync::Mutex::new(SnapshotFetcher::new(config)),
            last: Mutex::new(None),
        }
    }

    /// The service's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn cached(&self, fresh_within: Option<Duration>) -> Option<ProjectRegistry> {
        let last = self.last.lock().ok()?;
        let last = last.as_ref()?;
        match fresh_within {
            Some(d) if last.checked.elapsed() >= d => None,
            _ => Some(last.registry.clone()),
        }
    }

    /// The project's registry: the last one fetched within `refresh`, else the service's
    /// current one (the last good one when the service fails).
    pub async fn load(&self) -> Result<ProjectRegistry, FeastError> {
        if let Some(r) = self.cached(Some(self.refresh)) {
            return Ok(r);
        }
        let mut fetcher = self.fetcher.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(r) = self.cached(Some(self.refresh)) {
            return Ok(r);
        }
        let fetched = fetcher.fetch(None).await;
        let mut last = self
            .last
            .lock()
            .map_err(|_| FeastError::new(ErrorKind::Internal, "FeastError", "registry lock"))?;
        match (fetched, last.as_mut()) {
            (Ok(Fetched::Changed { project, .. }), _) => {
                let registry = *project;
                *last = Some(Last {
                    registry: registry.clone(),
                    checked: Instant::now(),
                });
                Ok(registry)
            }
            (Ok(Fetched::NotModified), Some(l)) => {
                l.checked = Instant::now();
                Ok(l.registry.clone())
            }
            (Ok(Fetched::NotModified), None) => {
                // A 304 before any snapshot: forget the ETag so the next fetch gets one.
                fetcher.set_etag(None);
                Err(FeastError::new(
                    ErrorKind::Unavailable,
                    "FeastError",
                    format!("registry service {}: no registry yet, retry", self.url),
                ))
            }
            (Err(e), Some(l)) => {
                tracing::warn!(registry = %self.url, error = %e, "the registry service failed: serving the last registry it sent");
                // Asked again after `refresh`, not on every request.
                l.checked = Instant::now();
                Ok(l.registry.clone())
            }
            (Err(e), None) => {
                crate::error::log(
                    e.kind(),
                    "reading the registry service failed",
                    &e.to_string(),
                );
                Err(FeastError::new(
                    e.kind(),
                    "FeastError",
                    format!(
                        "registry service {}: no registry yet ({}; details in the server's log)",
                        self.url,
                        match &e {
                            SyncError::Status {
                                status: 401 | 403, ..
                            } => "the token was refused",
                            SyncError::Status { status: 404, .. } => "no such project",
                            _ => "unreachable or failed",
                        }
                    ),
                ))
            }
        }
    }
}

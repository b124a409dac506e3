//! What a running sidecar shares: [`State`] (configuration, the registry in use, the engine,
//! metrics, readiness) and [`Background`], its tasks, stopped when dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use crate::config::SidecarConfig;
use crate::engine::ServingEngine;
use crate::metrics::Metrics;
use crate::registry::ServingRegistry;

/// Everything a request needs, shared by all of them.
pub struct State {
    pub config: SidecarConfig,
    pub project: String,
    pub registry: ArcSwap<ServingRegistry>,
    pub engine: Arc<ServingEngine>,
    pub metrics: Arc<Metrics>,
    /// The transformation service's client, when one is configured.
    pub transform: Option<Arc<quiver_transform::TransformClient>>,
    pub(crate) store_ok: AtomicBool,
    pub(crate) ready: AtomicBool,
    /// False until replicate mode's first load finished (true when nothing is replicated).
    pub(crate) replicated: AtomicBool,
    /// Why the latest registry (file or object) did not load, while it does not: the sidecar
    /// serves the last good version meanwhile, and `/ready` says so.
    pub(crate) registry_problem: std::sync::Mutex<Option<String>>,
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
        if let Some(problem) = self.registry_problem.lock().ok().and_then(|p| p.clone()) {
            // Reported, but still ready: the last good registry is served, and marking every
            // pod unready over one bad registry file would take the models down with it.
            reasons.push(problem);
        }
        let ok = store_ok && replicated;
        self.ready.store(ok, Relaxed);
        (ok, reasons)
    }

    /// Swaps a newly loaded registry in, unless the enrich config does not fit it: a registry
    /// that drops a feature service, a feature or a join key a model is enriched with would
    /// make every one of that model's requests fail, so the last good registry stays in use,
    /// `/ready` says why (as for a registry that does not load) and the error is returned for
    /// the caller to log and count.
    pub(crate) fn install_registry(&self, reg: ServingRegistry) -> Result<(), String> {
        if let Some(enricher) = &self.config.enrich
            && let Err(e) = enricher.config.check(&reg)
        {
            let why = format!(
                "registry version_id {} does not fit the enrich config, so it is not used: {e}",
                reg.version_id
            );
            self.set_registry_problem(Some(format!(
                "{why}; serving the last good one (version_id {})",
                self.registry.load().version_id
            )));
            return Err(why);
        }
        self.registry.store(Arc::new(reg));
        self.set_registry_problem(None);
        Ok(())
    }

    /// Records that the latest registry failed to load (`Some(why)`) or loaded (`None`):
    /// `/ready` lists the reason and `quiver_registry_load_failing` is 1 meanwhile.
    pub(crate) fn set_registry_problem(&self, problem: Option<String>) {
        self.metrics
            .registry_load_failing
            .store(problem.is_some(), Relaxed);
        if let Ok(mut p) = self.registry_problem.lock() {
            *p = problem;
        }
    }

    /// The readiness last computed (for metrics).
    pub fn ready_cached(&self) -> bool {
        self.ready.load(Relaxed)
    }
}

/// The background tasks of a running sidecar; dropping this stops them.
pub struct Background {
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

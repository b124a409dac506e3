//! Replicate mode: every stored row of the named views (or of the views of the named feature
//! services) is loaded at start and reloaded before the staleness bound would expire it, so
//! every read of them is a hit. Invalidations from the change feed keep them fresh in between.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::State;
use crate::registry::ServingRegistry;

/// The views named for replicate mode (feature views, or feature services standing for their
/// views), as indices; an unknown name is an error naming it.
pub(crate) fn replicated_views(
    reg: &ServingRegistry,
    names: &[String],
) -> Result<Vec<usize>, String> {
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
pub(crate) async fn replicate(state: Arc<State>) {
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

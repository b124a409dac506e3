//! The online store's change feed: whether it is live (so cached rows it covers may be served
//! longer), and the tasks that follow it, invalidating the cache as the store reports changes.
//!
//! Redis: keyspace notifications, per entity key ([`follow_redis`]). SQLite: `PRAGMA
//! data_version`, which only says that something changed, so everything is dropped
//! ([`follow_sqlite`]). A feed that was lost and came back no longer covers rows read before the
//! loss: a change may have gone unseen meanwhile.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use quiver_online_store::redis_store::Invalidation;

use crate::State;
use crate::clock::Clock;

/// The state of the online store's change feed.
pub struct ChangeFeed {
    live: AtomicBool,
    /// When the feed last became live, as nanoseconds after `base`. A row read before then may
    /// have changed while the feed was down (a reconnect, a failover), unseen: it no longer gets
    /// the long bound, although it was watched when read.
    live_since: AtomicU64,
    base: Instant,
    /// Incremented on every invalidation and every loss of the feed: a read that saw it change
    /// may have raced a write, so its entry gets the short bound.
    epoch: AtomicU64,
    /// Unix nanos of the newest invalidation.
    last_invalidation: AtomicU64,
    clock: Clock,
}

impl Default for ChangeFeed {
    fn default() -> ChangeFeed {
        ChangeFeed::new(Clock::System)
    }
}

impl ChangeFeed {
    pub fn new(clock: Clock) -> ChangeFeed {
        ChangeFeed {
            live: AtomicBool::new(false),
            live_since: AtomicU64::new(0),
            base: clock.now(),
            epoch: AtomicU64::new(0),
            last_invalidation: AtomicU64::new(0),
            clock,
        }
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Relaxed)
    }

    pub fn set_live(&self, live: bool) {
        if live && !self.is_live() {
            // Before `live` turns true: a read that sees the feed live started after this.
            let since = self
                .clock
                .now()
                .saturating_duration_since(self.base)
                .as_nanos() as u64;
            self.live_since.store(since, Relaxed);
        }
        // Release: whoever sees `live` (Acquire, in `covers`) sees the `live_since` stored above.
        self.live.store(live, Release);
        self.epoch.fetch_add(1, Relaxed);
    }

    /// Whether the feed has been live without a break since `fetched` (a watched row read then
    /// has had every change to it reported).
    pub fn covers(&self, fetched: Instant) -> bool {
        self.live.load(Acquire)
            && fetched >= self.base + Duration::from_nanos(self.live_since.load(Relaxed))
    }

    /// Changes on every invalidation and every change of liveness: a read that began and ended
    /// at the same epoch raced neither.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Relaxed)
    }

    pub fn saw_invalidation(&self) {
        self.epoch.fetch_add(1, Relaxed);
        let now = self.clock.unix_now().as_nanos() as u64;
        self.last_invalidation.store(now, Relaxed);
    }

    /// Seconds since the newest invalidation, if one was seen.
    pub fn invalidation_age(&self) -> Option<f64> {
        let at = self.last_invalidation.load(Relaxed);
        if at == 0 {
            return None;
        }
        let now = self.clock.unix_now().as_nanos() as u64;
        Some(now.saturating_sub(at) as f64 / 1e9)
    }
}

/// Follows Redis keyspace notifications: invalidates changed entities, and tells the engine when
/// the feed is live (long staleness bound) or lost (short bound). The store subscribes to every
/// node that holds keys (each master of a cluster, the sentinel's current master) and reports
/// live only while all of them are subscribed with notifications on.
pub(crate) async fn follow_redis(state: Arc<State>, redis: Arc<quiver_online_store::RedisStore>) {
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
pub(crate) async fn follow_sqlite(
    state: Arc<State>,
    sqlite: Arc<quiver_online_store::SqliteStore>,
) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_feed_that_was_lost_no_longer_covers_rows_read_before() {
        let clock = Clock::tokio();
        let feed = ChangeFeed::new(clock);
        let before = clock.now();
        assert!(!feed.covers(before));
        feed.set_live(true);
        let read = clock.now();
        assert!(feed.covers(read));
        // Live again (a repeated Live) changes nothing.
        feed.set_live(true);
        assert!(feed.covers(read));
        feed.set_live(false);
        assert!(!feed.covers(read));
        tokio::time::advance(Duration::from_millis(1)).await;
        feed.set_live(true);
        assert!(
            !feed.covers(read),
            "read before the loss: changes may have gone unseen"
        );
        assert!(feed.covers(clock.now()));
    }

    #[tokio::test(start_paused = true)]
    async fn invalidation_age_follows_the_clock() {
        let feed = ChangeFeed::new(Clock::tokio());
        assert_eq!(feed.invalidation_age(), None);
        feed.saw_invalidation();
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(feed.invalidation_age(), Some(7.0));
    }
}

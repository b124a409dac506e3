//! The read-through cache, in the shape of pingora's `pingora-memory-cache` `read_through`: a
//! key fresh in the cache is a hit; concurrent misses of the same key become one store read (the
//! first request to miss leads it, later ones wait for it: a "lock hit"); a request's misses go
//! to the store as one batch (one pipelined round trip). Each lookup has a [`CacheStatus`],
//! counted in the metrics once per request.
//!
//! The batched read runs in its own task, so a request that gives up (deadline, disconnect)
//! never strands the others waiting on it; when too many batches are in flight, new misses fail
//! at once instead of queueing.
//!
//! Freshness ([`ServingEngine::fresh`]): "never written" is remembered for `negative_ttl`; a row
//! for `watched_staleness` when the change feed was live throughout its read and has been since;
//! otherwise for `max_staleness`.
//!
//! A stored value that does not decode is not an error of the whole read: the row is cached with
//! that feature marked corrupt (null, status INVALID when rendered) and
//! `quiver_corrupt_values_total` counts it, once per read from the store.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use dashmap::mapref::entry::Entry as MapEntry;
use quiver_core::Value;
use quiver_online_store::{KeyRead, StoreError, StoredRow};
use tokio::sync::Notify;

use super::ServingEngine;
use super::request::Slot;
use crate::cache::{CacheKey, EntityBytes, Entry, Row};
use crate::metrics::Metrics;
use crate::registry::{ServingRegistry, ServingView};

/// How one lookup was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// In the cache and fresh.
    Hit,
    /// Not in the cache: this request leads its read.
    Miss,
    /// In the cache but past its staleness bound: re-read, led by this request.
    Expired,
    /// Missed (or expired), and another request's read of it was already in flight: waited for.
    LockHit { expired: bool },
}

/// A request's lookups by status, added to the shared counters once per request.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    hits: u64,
    misses: u64,
    expired: u64,
    coalesced: u64,
}

impl Tally {
    pub fn count(&mut self, status: CacheStatus) {
        match status {
            CacheStatus::Hit => self.hits += 1,
            CacheStatus::Miss => self.misses += 1,
            CacheStatus::Expired => {
                self.misses += 1;
                self.expired += 1;
            }
            CacheStatus::LockHit { expired } => {
                self.misses += 1;
                self.coalesced += 1;
                self.expired += u64::from(expired);
            }
        }
    }

    pub fn record(&self, metrics: &Metrics) {
        for (counter, n) in [
            (&metrics.cache_hits, self.hits),
            (&metrics.cache_misses, self.misses),
            (&metrics.cache_expired, self.expired),
            (&metrics.coalesced, self.coalesced),
        ] {
            if n > 0 {
                counter.add(n);
            }
        }
    }
}

/// One in-flight read of one key, shared by every request that missed it.
pub(crate) struct Flight {
    result: OnceLock<Result<Arc<Entry>, StoreError>>,
    done: Notify,
}

impl Flight {
    fn new() -> Flight {
        Flight {
            result: OnceLock::new(),
            done: Notify::new(),
        }
    }

    fn finish(&self, r: Result<Arc<Entry>, StoreError>) {
        let _ = self.result.set(r);
        self.done.notify_waiters();
    }

    async fn wait(&self) -> Result<Arc<Entry>, StoreError> {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.result.get() {
                return r.clone();
            }
            notified.await;
        }
    }
}

/// A key to read in a batch: its cache key, its view (index), and the flight to finish (none for
/// replicate mode's preload, which nobody waits on).
type Wanted = (CacheKey, usize, Option<Arc<Flight>>);

impl ServingEngine {
    /// Whether a cached entry may still be served at `now` (see the module doc).
    #[inline]
    pub(crate) fn fresh(&self, e: &Entry, now: Instant) -> bool {
        let bound = if e.row.is_none() {
            self.config.negative_ttl
        } else if e.watched && self.feed.covers(e.fetched) {
            self.config.watched_staleness
        } else {
            self.config.max_staleness
        };
        e.age(now) <= bound
    }

    /// Looks up every slot: cache hits at once, misses through one coalesced store read.
    pub(crate) async fn read_through(
        self: &Arc<Self>,
        reg: &Arc<ServingRegistry>,
        slots: &[Slot],
    ) -> Vec<Result<Arc<Entry>, StoreError>> {
        let now = self.config.clock.now();
        let mut out: Vec<Option<Result<Arc<Entry>, StoreError>>> = Vec::with_capacity(slots.len());
        let mut waits: Vec<(usize, Arc<Flight>)> = Vec::new();
        let mut lead: Vec<(usize, Arc<Flight>)> = Vec::new();
        let mut tally = Tally::default();
        for (i, slot) in slots.iter().enumerate() {
            let mut expired = false;
            if let Some(e) = self.cache.get(&slot.key) {
                if self.fresh(&e, now) {
                    tally.count(CacheStatus::Hit);
                    out.push(Some(Ok(e)));
                    continue;
                }
                expired = true;
            }
            out.push(None);
            match self.inflight.entry(slot.key.clone()) {
                MapEntry::Occupied(f) => {
                    tally.count(CacheStatus::LockHit { expired });
                    waits.push((i, Arc::clone(f.get())));
                }
                MapEntry::Vacant(v) => {
                    tally.count(if expired {
                        CacheStatus::Expired
                    } else {
                        CacheStatus::Miss
                    });
                    let f = Arc::new(Flight::new());
                    v.insert(Arc::clone(&f));
                    lead.push((i, f));
                }
            }
        }
        // One shared-counter update per request, not per lookup.
        tally.record(&self.metrics);
        if !lead.is_empty() {
            let batch: Vec<Wanted> = lead
                .iter()
                .map(|(i, f)| (slots[*i].key.clone(), slots[*i].view, Some(Arc::clone(f))))
                .collect();
            self.spawn_read(reg, batch);
            waits.extend(lead);
        }
        if !waits.is_empty() {
            let deadline = tokio::time::Instant::now() + self.config.store_timeout;
            for (i, f) in waits {
                let r = match tokio::time::timeout_at(deadline, f.wait()).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.metrics.store_timeouts.inc();
                        Err(StoreError::Timeout)
                    }
                };
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or(Err(StoreError::Timeout)))
            .collect()
    }

    /// Starts the batched read of the keys this request leads, in its own task; past
    /// `max_store_reads` batches in flight, fails them at once.
    fn spawn_read(self: &Arc<Self>, reg: &Arc<ServingRegistry>, batch: Vec<Wanted>) {
        match Arc::clone(&self.reads).try_acquire_owned() {
            Ok(permit) => {
                let engine = Arc::clone(self);
                let reg = Arc::clone(reg);
                tokio::spawn(async move {
                    let _ = engine.read_batch(&reg, batch).await;
                    drop(permit);
                });
            }
            Err(_) => {
                for (key, _, f) in batch.into_iter().filter_map(|(k, v, f)| Some((k, v, f?))) {
                    self.inflight.remove(&key);
                    f.finish(Err(StoreError::Unavailable(
                        "too many online store reads in flight".to_owned(),
                    )));
                }
            }
        }
    }

    /// One round trip for a batch of missed keys; fills the cache and wakes every waiter.
    pub(crate) async fn read_batch(
        &self,
        reg: &ServingRegistry,
        batch: Vec<Wanted>,
    ) -> Result<usize, StoreError> {
        // One read per entity key, covering every view the batch wants on it.
        let mut by_entity: Vec<(&[u8], Vec<usize>, Vec<usize>)> = Vec::new();
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        for (b, (key, view, _)) in batch.iter().enumerate() {
            let at = *index.entry(&key.entity).or_insert_with(|| {
                by_entity.push((&key.entity, Vec::new(), Vec::new()));
                by_entity.len() - 1
            });
            by_entity[at].1.push(reg.views[*view].layout);
            by_entity[at].2.push(b);
        }
        let reads: Vec<KeyRead<'_>> = by_entity
            .iter()
            .map(|(ek, views, _)| KeyRead {
                entity_key: ek,
                views,
            })
            .collect();
        let epoch = self.feed.epoch();
        let watched_at_start = self.feed.is_live();
        let started = self.config.clock.now();
        self.metrics.store_round_trips.inc();
        let result = self.store.read(&reg.layouts, &reads).await;
        self.metrics
            .store_latency
            .observe(self.config.clock.now().saturating_duration_since(started));
        // Covered by the feed only if it was live throughout and saw no change meanwhile.
        let watched = watched_at_start && self.feed.is_live() && self.feed.epoch() == epoch;
        match result {
            Ok(rows) => {
                if let Ok(mut ok) = self.last_store_ok.lock() {
                    *ok = Some(self.config.clock.now());
                }
                for ((ek, _, members), mut per_view) in by_entity.iter().zip(rows) {
                    for (slot, stored) in members.iter().zip(per_view.iter_mut()) {
                        let (key, view, flight) = &batch[*slot];
                        let row = stored
                            .take()
                            .map(|s| decode_row(&reg.views[*view], s, &self.metrics));
                        let entry = Arc::new(Entry::new(row, started, watched, ek.len()));
                        let evicted = self.cache.insert(key.clone(), Arc::clone(&entry));
                        self.metrics.cache_evictions.add(evicted.entries);
                        self.inflight.remove(key);
                        if let Some(flight) = flight {
                            flight.finish(Ok(entry));
                        }
                    }
                }
            }
            Err(e) => {
                self.metrics.store_errors.inc();
                tracing::warn!(error = %e, keys = batch.len(), "online store read failed");
                for (key, _, flight) in &batch {
                    self.inflight.remove(key);
                    if let Some(flight) = flight {
                        flight.finish(Err(e.clone()));
                    }
                }
                return Err(e);
            }
        }
        Ok(batch.len())
    }

    /// Replicate mode: reads every stored entity of `views` into the cache, in batches of one
    /// pipelined round trip each. Returns how many (view, entity) rows were loaded.
    pub async fn preload(
        &self,
        reg: &ServingRegistry,
        views: &[usize],
    ) -> Result<usize, StoreError> {
        const BATCH: usize = 512;
        let layouts: Vec<Arc<quiver_online_store::ViewLayout>> = views
            .iter()
            .map(|&v| Arc::clone(&reg.layouts[reg.views[v].layout]))
            .collect();
        let keys = self.store.scan_entity_keys(&layouts).await?;
        // A key belongs to the views keyed on exactly its join keys.
        let mut sorted_keys: Vec<Vec<&str>> = Vec::with_capacity(views.len());
        for &v in views {
            let mut names: Vec<&str> = reg.views[v]
                .join_keys
                .iter()
                .map(|(k, _)| k.as_str())
                .collect();
            names.sort_unstable();
            sorted_keys.push(names);
        }
        let mut batch = Vec::with_capacity(BATCH);
        let mut loaded = 0;
        for key in keys {
            let Ok(pairs) = quiver_core::entity_key::deserialize(&key) else {
                continue;
            };
            let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
            for (i, &v) in views.iter().enumerate() {
                if sorted_keys[i] == names {
                    let cache_key = CacheKey {
                        view: reg.views[v].id,
                        entity: EntityBytes::from_slice(&key),
                    };
                    batch.push((cache_key, v, None));
                }
            }
            if batch.len() >= BATCH {
                loaded += self.read_batch(reg, std::mem::take(&mut batch)).await?;
            }
        }
        if !batch.is_empty() {
            loaded += self.read_batch(reg, batch).await?;
        }
        Ok(loaded)
    }
}

/// Decodes a stored row; a value that does not decode is kept as null, marked corrupt and
/// counted (see the module doc).
fn decode_row(view: &ServingView, stored: StoredRow, metrics: &Metrics) -> Row {
    let mut corrupt: Vec<u32> = Vec::new();
    let values = stored
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_deref() {
            None => Value::Null,
            Some(bytes) => Value::decode(bytes).unwrap_or_else(|e| {
                corrupt.push(i as u32);
                tracing::warn!(
                    view = %view.name,
                    feature = view.features.get(i).map_or("?", |(n, _)| n.as_str()),
                    error = %e,
                    "a stored value does not decode as a Feast Value; answered as INVALID"
                );
                Value::Null
            }),
        })
        .collect();
    if !corrupt.is_empty() {
        metrics.corrupt_values.add(corrupt.len() as u64);
    }
    Row::with_corrupt(stored.event_ts, values, corrupt)
}

//! Answering `get-online-features`: plan → typed entity keys → cache → one batched read for the
//! misses → Feast's response JSON.
//!
//! Read-through with coalescing: the first request to miss a key leads its read, later requests
//! missing the same key wait for that read instead of issuing their own. The read runs in its own
//! task, so a request that gives up (deadline, disconnect) never strands the others waiting on it.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;
use quiver_core::time::Timestamp;
use quiver_core::{Value, entity_key, json};
use quiver_online_store::{KeyRead, OnlineStore, StoreError};
use serde_json::Value as Json;
use tokio::sync::{Notify, Semaphore};

use crate::api::{ApiError, OnlineRequest, Status};
use crate::cache::{Cache, CacheKey, EntityBytes, Entry, Row};
use crate::metrics::Metrics;
use crate::registry::{PlanKey, ServingRegistry};

/// The response encoding a caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Feast's JSON.
    Json,
    /// One Arrow IPC stream record batch (`Accept: application/vnd.apache.arrow.stream`).
    Arrow,
}

/// What to answer when the online store cannot be read in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// 503 naming the cause.
    Fail,
    /// 200 with the features that could not be read as null with status INVALID.
    Degrade,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Cache budget in bytes.
    pub cache_bytes: usize,
    /// How long an entry is served without re-reading when no change feed covers it.
    pub max_staleness: Duration,
    /// How long an entry is served while the change feed (keyspace notifications, SQLite change
    /// detection) is live and has covered it since its read.
    pub watched_staleness: Duration,
    /// How long "never written" is remembered.
    pub negative_ttl: Duration,
    /// Deadline for the online-store part of a request.
    pub store_timeout: Duration,
    /// Most entity rows in one request.
    pub max_entity_rows: usize,
    /// Most batched store reads in flight at once; beyond it requests fail fast.
    pub max_store_reads: usize,
    pub on_store_error: OnStoreError,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            cache_bytes: 256 << 20,
            max_staleness: Duration::from_secs(5),
            watched_staleness: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(1),
            store_timeout: Duration::from_millis(50),
            max_entity_rows: 10_000,
            max_store_reads: 256,
            on_store_error: OnStoreError::Fail,
        }
    }
}

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
}

impl Default for ChangeFeed {
    fn default() -> ChangeFeed {
        ChangeFeed {
            live: AtomicBool::new(false),
            live_since: AtomicU64::new(0),
            base: Instant::now(),
            epoch: AtomicU64::new(0),
            last_invalidation: AtomicU64::new(0),
        }
    }
}

impl ChangeFeed {
    pub fn is_live(&self) -> bool {
        self.live.load(Relaxed)
    }

    pub fn set_live(&self, live: bool) {
        if live && !self.is_live() {
            // Before `live` turns true: a read that sees the feed live started after this.
            let since = self.base.elapsed().as_nanos() as u64;
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

    pub fn saw_invalidation(&self) {
        self.epoch.fetch_add(1, Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        self.last_invalidation.store(now, Relaxed);
    }

    /// Seconds since the newest invalidation, if one was seen.
    pub fn invalidation_age(&self) -> Option<f64> {
        let at = self.last_invalidation.load(Relaxed);
        if at == 0 {
            return None;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(at);
        Some(now.saturating_sub(at) as f64 / 1e9)
    }
}

/// One in-flight read of one key, shared by every request that missed it.
struct Flight {
    result: OnceLock<Result<Arc<Entry>, StoreError>>,
    done: Notify,
}

impl Flight {
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

pub struct Engine {
    pub config: EngineConfig,
    pub cache: Cache,
    pub store: OnlineStore,
    pub metrics: Arc<Metrics>,
    pub feed: ChangeFeed,
    inflight: DashMap<CacheKey, Arc<Flight>>,
    reads: Arc<Semaphore>,
    /// When the last store read succeeded (for readiness).
    pub last_store_ok: Mutex<Option<Instant>>,
}

/// What [`Engine::prepare`] leaves to do.
pub enum Prepared {
    /// Every row was cached and fresh: the answer.
    Answered(Vec<u8>),
    /// Some rows must be read: finish with [`Engine::finish`].
    Pending(Box<Pending>),
}

/// Everything an answer is rendered from, JSON or Arrow.
#[derive(Clone, Copy)]
struct Table<'a> {
    plan: &'a crate::registry::Plan,
    /// The request's entity columns, echoed first.
    columns: &'a [(String, Vec<Json>)],
    /// The plan's entity columns, typed.
    typed: &'a [Vec<Value>],
    /// For each plan group, the slot of each row.
    row_slots: &'a [Vec<usize>],
    /// The lookup of each slot.
    entries: &'a [Result<&'a Entry, &'a StoreError>],
    rows: usize,
}

/// A request between its synchronous part and its store read.
pub struct Pending {
    plan: Arc<crate::registry::Plan>,
    columns: Vec<(String, Vec<Json>)>,
    typed: Vec<Vec<Value>>,
    slots: Vec<Slot>,
    row_slots: Vec<Vec<usize>>,
    rows: usize,
    format: Format,
}

/// Per request: one lookup per distinct (view, entity key).
struct Slot {
    key: CacheKey,
    view: usize,
}

impl Engine {
    pub fn new(config: EngineConfig, store: OnlineStore, metrics: Arc<Metrics>) -> Engine {
        Engine {
            cache: Cache::new(config.cache_bytes),
            reads: Arc::new(Semaphore::new(config.max_store_reads)),
            config,
            store,
            metrics,
            feed: ChangeFeed::default(),
            inflight: DashMap::new(),
            last_store_ok: Mutex::new(None),
        }
    }

    /// Drops the cached rows of an entity (every view), after the store said it changed.
    pub fn invalidate(&self, reg: &ServingRegistry, entity: &[u8]) {
        self.feed.saw_invalidation();
        let mut key = CacheKey {
            view: 0,
            entity: EntityBytes::from_slice(entity),
        };
        for v in &reg.views {
            key.view = v.id;
            if self.cache.remove(&key) {
                self.metrics.cache_invalidations.inc();
            }
        }
    }

    /// Drops every cached row (a change somewhere, with no per-key detail).
    pub fn invalidate_all(&self) {
        self.feed.saw_invalidation();
        let n = self.cache.clear();
        self.metrics.cache_invalidations.add(n);
    }

    fn fresh(&self, e: &Entry, now: Instant) -> bool {
        let bound = if e.row.is_none() {
            self.config.negative_ttl
        } else if e.watched && self.feed.covers(e.fetched) {
            self.config.watched_staleness
        } else {
            self.config.max_staleness
        };
        e.age(now) <= bound
    }

    /// Answers one request: Feast's response JSON, or the same table as Arrow IPC.
    pub async fn get_online_features(
        self: &Arc<Self>,
        reg: &Arc<ServingRegistry>,
        req: OnlineRequest,
        format: Format,
    ) -> Result<Vec<u8>, ApiError> {
        match self.prepare(reg, req, format)? {
            Prepared::Answered(answer) => Ok(answer),
            Prepared::Pending(pending) => self.finish(reg, *pending).await,
        }
    }

    /// The synchronous part of a request: plan, typed entity keys, and, when every row is cached
    /// and fresh, the whole answer. It needs only a borrowed registry (the server lends it
    /// through an `ArcSwap` guard, without touching the registry's reference count).
    pub fn prepare(
        &self,
        reg: &ServingRegistry,
        req: OnlineRequest,
        format: Format,
    ) -> Result<Prepared, ApiError> {
        let OnlineRequest {
            features,
            feature_service,
            entities,
            full_feature_names,
        } = req;
        let key = match (feature_service, features) {
            (Some(name), _) => PlanKey::Service {
                name,
                full_names: full_feature_names,
            },
            (None, Some(refs)) => PlanKey::Features {
                refs,
                full_names: full_feature_names,
            },
            (None, None) => {
                return Err(ApiError::bad_request(
                    "MissingFeatures",
                    "the request names no features: give features: [\"view:feature\", ...] or feature_service",
                ));
            }
        };
        let plan = reg.plan(key)?;
        let columns_owned = entities.0;
        let columns = &columns_owned;

        // Entity columns: present, equally long, within the limit, typed by the registry.
        let rows = columns.first().map_or(0, |(_, v)| v.len());
        for (name, values) in columns {
            if values.len() != rows {
                return Err(ApiError::bad_request(
                    "RaggedEntityColumns",
                    format!(
                        "entity columns have different lengths: {} has {rows} values, {name} has {}",
                        columns[0].0,
                        values.len()
                    ),
                ));
            }
        }
        if rows > self.config.max_entity_rows {
            return Err(ApiError::too_large(
                "TooManyEntityRows",
                format!(
                    "{rows} entity rows; at most {} per request",
                    self.config.max_entity_rows
                ),
            ));
        }
        let mut typed: Vec<Vec<Value>> = Vec::with_capacity(plan.entity_columns.len());
        for (name, ty) in &plan.entity_columns {
            let (_, values) = columns.iter().find(|(n, _)| n == name).ok_or_else(|| {
                ApiError::bad_request("MissingEntityColumn", format!("entity column {name} is missing from entities: the requested features are keyed on it"))
            })?;
            let parsed = values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    json::parse_entity_value(v, *ty).map_err(|e| {
                        ApiError::bad_request(
                            "InvalidEntityValue",
                            format!("entities.{name}[{i}]: {e}"),
                        )
                    })
                })
                .collect::<Result<Vec<Value>, ApiError>>()?;
            typed.push(parsed);
        }

        // One slot per distinct (view, entity key); rows fan out from it.
        let mut slots: Vec<Slot> = Vec::new();
        let mut slot_of: HashMap<(usize, EntityBytes), usize> = HashMap::new();
        let mut row_slots: Vec<Vec<usize>> = Vec::with_capacity(plan.groups.len());
        let mut key_buf = Vec::with_capacity(64);
        for group in &plan.groups {
            let view = &reg.views[group.view];
            let mut per_row = Vec::with_capacity(rows);
            // Row r of every key column of the group.
            #[allow(clippy::needless_range_loop)]
            for r in 0..rows {
                let pairs: smallvec::SmallVec<[(&str, &Value); 4]> = group
                    .keys
                    .iter()
                    .map(|(k, col)| (k.as_str(), &typed[*col][r]))
                    .collect();
                key_buf.clear();
                entity_key::serialize_into(&mut key_buf, &pairs)
                    .map_err(|e| ApiError::bad_request("InvalidEntityValue", e.to_string()))?;
                // Small requests find duplicates by a linear scan; large ones through a map.
                let existing = if rows <= 32 {
                    slots.iter().position(|s| {
                        s.view == group.view && s.key.entity.as_slice() == key_buf.as_slice()
                    })
                } else {
                    slot_of
                        .get(&(group.view, EntityBytes::from_slice(&key_buf)))
                        .copied()
                };
                let slot = match existing {
                    Some(slot) => slot,
                    None => {
                        let ek = EntityBytes::from_slice(&key_buf);
                        if rows > 32 {
                            slot_of.insert((group.view, ek.clone()), slots.len());
                        }
                        slots.push(Slot {
                            key: CacheKey {
                                view: view.id,
                                entity: ek,
                            },
                            view: group.view,
                        });
                        slots.len() - 1
                    }
                };
                per_row.push(slot);
            }
            row_slots.push(per_row);
        }

        // Fast path: every row fresh in the cache. The shards' read locks are held while the
        // answer is rendered from the entries in place: no reference counting, and the memory
        // reads of different entries can overlap.
        let now = Instant::now();
        let keys: smallvec::SmallVec<[&CacheKey; 16]> = slots.iter().map(|s| &s.key).collect();
        let fast = self.cache.with_entries(&keys, |found| {
            if !found.iter().all(|e| e.is_some_and(|e| self.fresh(e, now))) {
                return None;
            }
            let entries: smallvec::SmallVec<[Result<&Entry, &StoreError>; 16]> = found
                .iter()
                .map(|e| e.ok_or(&StoreError::Timeout))
                .collect();
            let table = Table {
                plan: &plan,
                columns,
                typed: &typed,
                row_slots: &row_slots,
                entries: &entries,
                rows,
            };
            Some(self.render(reg, &table, format))
        });
        drop(keys);
        if let Some(answer) = fast {
            self.metrics.cache_hits.add(slots.len() as u64);
            return answer.map(Prepared::Answered);
        }
        Ok(Prepared::Pending(Box::new(Pending {
            plan,
            columns: columns_owned,
            typed,
            slots,
            row_slots,
            rows,
            format,
        })))
    }

    /// The rest of a request that missed the cache: one coalesced read, then the answer.
    pub async fn finish(
        self: &Arc<Self>,
        reg: &Arc<ServingRegistry>,
        p: Pending,
    ) -> Result<Vec<u8>, ApiError> {
        let entries = self.lookup(reg, &p.slots).await;
        if self.config.on_store_error == OnStoreError::Fail
            && let Some(Err(e)) = entries.iter().find(|e| e.is_err())
        {
            return Err(ApiError::unavailable(format!(
                "{e}; features of this request could not be read"
            )));
        }
        let entries: Vec<Result<&Entry, &StoreError>> =
            entries.iter().map(|e| e.as_deref()).collect();
        let table = Table {
            plan: &p.plan,
            columns: &p.columns,
            typed: &p.typed,
            row_slots: &p.row_slots,
            entries: &entries,
            rows: p.rows,
        };
        self.render(reg, &table, p.format)
    }

    fn render(
        &self,
        reg: &ServingRegistry,
        table: &Table<'_>,
        format: Format,
    ) -> Result<Vec<u8>, ApiError> {
        Ok(match format {
            Format::Json => self.respond(reg, table).into_bytes(),
            Format::Arrow => self.respond_arrow(reg, table)?,
        })
    }

    fn respond_arrow(&self, reg: &ServingRegistry, table: &Table<'_>) -> Result<Vec<u8>, ApiError> {
        let Table {
            plan,
            columns,
            typed,
            row_slots,
            entries,
            rows,
        } = *table;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(columns.len() + plan.columns.len() * 3);
        for (name, values) in columns {
            let array = match plan.entity_columns.iter().position(|(n, _)| n == name) {
                Some(i) => {
                    crate::arrow::values_array(plan.entity_columns[i].1, typed[i].iter().map(Some))
                }
                None => crate::arrow::json_text_array(values),
            };
            out.push((name.clone(), array));
        }
        for col in &plan.columns {
            let view = &reg.views[plan.groups[col.group].view];
            let cells: Vec<(Option<&Value>, Status, Option<i64>)> = (0..rows)
                .map(
                    |r| match cell(view, &entries[row_slots[col.group][r]], now) {
                        (status, Some(row)) => {
                            let ts = row
                                .event_ts
                                .seconds
                                .saturating_mul(1_000_000_000)
                                .saturating_add(i64::from(row.event_ts.nanos));
                            (
                                row.values.get(col.feature).filter(|v| !v.is_null()),
                                status,
                                Some(ts),
                            )
                        }
                        (status, None) => (None, status, None),
                    },
                )
                .collect();
            let dtype = view.features[col.feature].1;
            out.push((
                col.name.clone(),
                crate::arrow::values_array(dtype, cells.iter().map(|c| c.0)),
            ));
            out.push((
                format!("{}__status", col.name),
                crate::arrow::status_array(cells.iter().map(|c| c.1)),
            ));
            out.push((
                format!("{}__event_timestamp", col.name),
                crate::arrow::timestamp_array(cells.iter().map(|c| c.2)),
            ));
        }
        crate::arrow::encode(out)
    }

    /// Looks up every slot: cache hits at once, misses through one coalesced store read.
    async fn lookup(
        self: &Arc<Self>,
        reg: &Arc<ServingRegistry>,
        slots: &[Slot],
    ) -> Vec<Result<Arc<Entry>, StoreError>> {
        let now = Instant::now();
        let mut out: Vec<Option<Result<Arc<Entry>, StoreError>>> = Vec::with_capacity(slots.len());
        let mut waits: Vec<(usize, Arc<Flight>)> = Vec::new();
        let mut lead: Vec<(usize, Arc<Flight>)> = Vec::new();
        let mut hits = 0;
        for (i, slot) in slots.iter().enumerate() {
            if let Some(e) = self.cache.get(&slot.key) {
                if self.fresh(&e, now) {
                    hits += 1;
                    out.push(Some(Ok(e)));
                    continue;
                }
                self.metrics.cache_expired.inc();
            }
            self.metrics.cache_misses.inc();
            out.push(None);
            match self.inflight.entry(slot.key.clone()) {
                MapEntry::Occupied(f) => {
                    self.metrics.coalesced.inc();
                    waits.push((i, Arc::clone(f.get())));
                }
                MapEntry::Vacant(v) => {
                    let f = Arc::new(Flight {
                        result: OnceLock::new(),
                        done: Notify::new(),
                    });
                    v.insert(Arc::clone(&f));
                    lead.push((i, f));
                }
            }
        }
        // One shared-counter update per request, not per lookup.
        self.metrics.cache_hits.add(hits);
        if !lead.is_empty() {
            let batch: Vec<(CacheKey, usize, Option<Arc<Flight>>)> = lead
                .iter()
                .map(|(i, f)| (slots[*i].key.clone(), slots[*i].view, Some(Arc::clone(f))))
                .collect();
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

    /// One round trip for a batch of missed keys; fills the cache and wakes every waiter.
    async fn read_batch(
        &self,
        reg: &ServingRegistry,
        batch: Vec<(CacheKey, usize, Option<Arc<Flight>>)>,
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
        let epoch = self.feed.epoch.load(Relaxed);
        let watched_at_start = self.feed.is_live();
        let started = Instant::now();
        self.metrics.store_round_trips.inc();
        let result = self.store.read(&reg.layouts, &reads).await;
        self.metrics.store_latency.observe(started.elapsed());
        // Covered by the feed only if it was live throughout and saw no change meanwhile.
        let watched =
            watched_at_start && self.feed.is_live() && self.feed.epoch.load(Relaxed) == epoch;
        match result {
            Ok(rows) => {
                if let Ok(mut ok) = self.last_store_ok.lock() {
                    *ok = Some(Instant::now());
                }
                for ((ek, _, members), mut per_view) in by_entity.iter().zip(rows) {
                    for (slot, stored) in members.iter().zip(per_view.iter_mut()) {
                        let (key, _, flight) = &batch[*slot];
                        let row = stored.take().map(|s| {
                            let values = s
                                .values
                                .iter()
                                .map(|v| {
                                    v.as_deref()
                                        .map(|b| Value::decode(b).unwrap_or(Value::Null))
                                        .unwrap_or(Value::Null)
                                })
                                .collect();
                            Row::new(s.event_ts, values)
                        });
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

    fn respond(&self, reg: &ServingRegistry, table: &Table<'_>) -> String {
        let Table {
            plan,
            columns,
            row_slots,
            entries,
            rows,
            ..
        } = *table;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut out =
            String::with_capacity(512 + rows * (plan.columns.len() * 64 + columns.len() * 64));
        out.push_str("{\"metadata\":{\"feature_names\":[");
        for (i, (name, _)) in columns.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json::write_str(&mut out, name);
        }
        if !columns.is_empty() && !plan.names_json.is_empty() {
            out.push(',');
        }
        out.push_str(&plan.names_json);
        out.push_str("]},\"results\":[");
        let epoch_ts = "\"1970-01-01T00:00:00Z\"";
        // Entity columns echo the request.
        for (c, (_, values)) in columns.iter().enumerate() {
            if c > 0 {
                out.push(',');
            }
            out.push_str("{\"values\":[");
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(&mut out, v);
            }
            out.push_str("],\"statuses\":[");
            push_repeated(&mut out, Status::Present.as_json(), rows);
            out.push_str("],\"event_timestamps\":[");
            push_repeated(&mut out, epoch_ts, rows);
            out.push_str("]}");
        }
        // Status and event time depend on the (view, entity) only: render each group's
        // `statuses` and `event_timestamps` arrays once and copy them into every column.
        let mut tails: Vec<String> = Vec::with_capacity(plan.groups.len());
        for (g, group) in plan.groups.iter().enumerate() {
            let view = &reg.views[group.view];
            let cells: smallvec::SmallVec<[(Status, &str); 16]> = (0..rows)
                .map(|r| match cell(view, &entries[row_slots[g][r]], now) {
                    (status, Some(row)) => (status, row.ts_json()),
                    (status, None) => (status, epoch_ts),
                })
                .collect();
            let mut tail = String::with_capacity(64 + rows * 48);
            tail.push_str("],\"statuses\":[");
            for (r, (status, _)) in cells.iter().enumerate() {
                if r > 0 {
                    tail.push(',');
                }
                tail.push_str(status.as_json());
            }
            tail.push_str("],\"event_timestamps\":[");
            for (r, (_, ts)) in cells.iter().enumerate() {
                if r > 0 {
                    tail.push(',');
                }
                tail.push_str(ts);
            }
            tail.push_str("]}");
            tails.push(tail);
        }
        for (c, col) in plan.columns.iter().enumerate() {
            if c > 0 || !columns.is_empty() {
                out.push(',');
            }
            out.push_str("{\"values\":[");
            for r in 0..rows {
                if r > 0 {
                    out.push(',');
                }
                let value = match &entries[row_slots[col.group][r]] {
                    Ok(entry) => entry
                        .row
                        .as_ref()
                        .and_then(|row| row.value_json(col.feature))
                        .map_or("null", |j| j),
                    Err(_) => "null",
                };
                out.push_str(value);
            }
            out.push_str(&tails[col.group]);
        }
        out.push_str("]}");
        out
    }
}

/// The status of one (view, entity) read, and its row when there is one.
fn cell<'a>(
    view: &crate::registry::ServingView,
    entry: &Result<&'a Entry, &StoreError>,
    now: Duration,
) -> (Status, Option<&'a Row>) {
    match entry {
        Ok(entry) => match &entry.row {
            Some(row) if expired(view.ttl, row.event_ts, now) => (Status::OutsideMaxAge, Some(row)),
            Some(row) => (Status::Present, Some(row)),
            None => (Status::NotFound, None),
        },
        Err(_) => (Status::Invalid, None),
    }
}

/// Echoes a request value: integers without the formatting machinery, the rest via serde_json.
fn write_json(out: &mut String, v: &Json) {
    match v {
        Json::Number(n) if n.is_i64() => json::write_int(out, n.as_i64().unwrap_or_default()),
        Json::String(s) => json::write_str(out, s),
        other => out.push_str(&other.to_string()),
    }
}

fn push_repeated(out: &mut String, item: &str, n: usize) {
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
}

/// Whether a value with this event time is older than the view's ttl (zero: never).
fn expired(ttl: Duration, event_ts: Timestamp, now: Duration) -> bool {
    if ttl.is_zero() {
        return false;
    }
    let event = Duration::new(
        event_ts.seconds.max(0) as u64,
        event_ts.nanos.clamp(0, 999_999_999) as u32,
    );
    now.saturating_sub(event) > ttl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_that_was_lost_no_longer_covers_rows_read_before() {
        let feed = ChangeFeed::default();
        let before = Instant::now();
        assert!(!feed.covers(before));
        feed.set_live(true);
        let read = Instant::now();
        assert!(feed.covers(read));
        // Live again (a repeated Live) changes nothing.
        feed.set_live(true);
        assert!(feed.covers(read));
        feed.set_live(false);
        assert!(!feed.covers(read));
        std::thread::sleep(Duration::from_millis(1));
        feed.set_live(true);
        assert!(
            !feed.covers(read),
            "read before the loss: changes may have gone unseen"
        );
        assert!(feed.covers(Instant::now()));
    }

    #[test]
    fn ttl_expiry_is_strictly_older_than_ttl() {
        let ttl = Duration::from_secs(3600);
        let now = Duration::from_secs(10_000);
        let at = |s| Timestamp {
            seconds: s,
            nanos: 0,
        };
        assert!(!expired(ttl, at(10_000 - 3600), now));
        assert!(expired(ttl, at(10_000 - 3601), now));
        assert!(!expired(Duration::ZERO, at(0), now));
    }
}

//! The serving pipeline: [`ServingEngine`] answers `get-online-features`, as a sequence of named
//! steps, each in its own module:
//!
//! ```text
//! prepare (synchronous, borrows the registry)
//!   1. plan            request::plan_key + ServingRegistry::plan   which views, which columns
//!   2. type entities   request::entity_rows + typed_columns        caller mistakes fail here
//!   3. slots           request::slots                              one lookup per (view, key)
//!   4. fast path       Cache::with_entries + render                every slot fresh: answered
//! finish (only when something missed)
//!   5. read through    read_through::read_through                  coalesced, batched store read
//!   6. on store error  fail (503/502) or degrade (INVALID cells)
//!   7. render          render::json / render::arrow                side by side
//!                      (native on-demand views computed first: render::computed)
//! ```
//!
//! Hot-path properties (ARCHITECTURE.md's invariants): no lock is held across an `.await`; a
//! hit renders under the cache shards' read locks by copying pre-rendered JSON; per-request
//! shared-counter updates are batched.

pub mod read_through;
pub(crate) mod request;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use dashmap::DashMap;
use quiver_online_store::{OnlineStore, StoreError};
use serde_json::Value as Json;
use tokio::sync::Semaphore;

use crate::api::OnlineRequest;
use crate::cache::{Cache, CacheKey, EntityBytes, Entry};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::registry::{Plan, ServingRegistry};
use crate::render::{self, Table};
use read_through::Flight;
use request::Slot;

pub use read_through::CacheStatus;
// Where these lived before the engine was split (`quiver_sidecar::engine::EngineConfig`, ...).
pub use crate::config::{EngineConfig, OnStoreError};
pub use crate::feed::ChangeFeed;
pub use crate::render::Format;

pub struct ServingEngine {
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

/// What [`ServingEngine::prepare`] leaves to do.
pub enum Prepared<F: Output = Format> {
    /// Every row was cached and fresh: the answer.
    Answered(F::Out),
    /// Some rows must be read: finish with [`ServingEngine::finish`].
    Pending(Box<Pending<F>>),
}

/// What an answer is rendered into: bytes in a [`Format`] (the HTTP API), or typed feature
/// columns ([`render::typed::Typed`], what the KServe enrichment builds model inputs from).
pub trait Output: Copy {
    type Out;
    #[doc(hidden)]
    fn render_table(
        self,
        reg: &ServingRegistry,
        table: &render::Table<'_>,
    ) -> Result<Self::Out, ApiError>;
}

impl Output for Format {
    type Out = Vec<u8>;
    fn render_table(
        self,
        reg: &ServingRegistry,
        table: &render::Table<'_>,
    ) -> Result<Vec<u8>, ApiError> {
        render::render(reg, table, self)
    }
}

/// A request between its synchronous part and its store read.
pub struct Pending<F: Output = Format> {
    plan: Arc<Plan>,
    columns: Vec<(String, Vec<Json>)>,
    typed: Vec<Vec<quiver_core::Value>>,
    /// The request fields of the plan's on-demand views, typed.
    request: Vec<Vec<quiver_core::Value>>,
    slots: Vec<Slot>,
    row_slots: Vec<Vec<usize>>,
    rows: usize,
    format: F,
}

impl ServingEngine {
    pub fn new(config: EngineConfig, store: OnlineStore, metrics: Arc<Metrics>) -> ServingEngine {
        ServingEngine {
            cache: Cache::new(config.cache_bytes),
            reads: Arc::new(Semaphore::new(config.max_store_reads)),
            feed: ChangeFeed::new(config.clock),
            config,
            store,
            metrics,
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
    pub fn prepare<F: Output>(
        &self,
        reg: &ServingRegistry,
        req: OnlineRequest,
        format: F,
    ) -> Result<Prepared<F>, ApiError> {
        let OnlineRequest {
            features,
            feature_service,
            entities,
            full_feature_names,
        } = req;
        // 1. Which views and output columns: one plan per request shape, cached per registry.
        let plan = reg.plan(request::plan_key(
            features,
            feature_service,
            full_feature_names,
        )?)?;
        // 2. The entity columns, checked and typed by the plan, before any lookup.
        let mut columns = entities.0;
        let rows = request::entity_rows(&columns, self.config.max_entity_rows)?;
        let typed = request::typed_columns(&plan, &columns)?;
        let request = request::request_fields(&plan, &mut columns)?;
        // 3. One lookup per distinct (view, entity key): duplicate rows cost nothing more.
        let request::Slots { slots, row_slots } = request::slots(reg, &plan, &typed, rows)?;
        // 4. Every slot fresh in the cache: the answer now, without an await.
        if let Some(answer) = self.answer_from_cache(
            reg, &plan, &columns, &typed, &request, &slots, &row_slots, rows, format,
        ) {
            self.metrics.cache_hits.add(slots.len() as u64);
            return answer.map(Prepared::Answered);
        }
        // 5. Otherwise the rest waits on the store: `finish`.
        Ok(Prepared::Pending(Box::new(Pending {
            plan,
            columns,
            typed,
            request,
            slots,
            row_slots,
            rows,
            format,
        })))
    }

    /// The fast path: when every slot is cached and fresh, the answer, rendered while the shards'
    /// read locks are held, from the entries in place: no reference counting, and the memory
    /// reads of different entries can overlap. `None` when any slot missed or is stale.
    #[allow(clippy::too_many_arguments)]
    fn answer_from_cache<F: Output>(
        &self,
        reg: &ServingRegistry,
        plan: &Plan,
        columns: &[(String, Vec<Json>)],
        typed: &[Vec<quiver_core::Value>],
        request: &[Vec<quiver_core::Value>],
        slots: &[Slot],
        row_slots: &[Vec<usize>],
        rows: usize,
        format: F,
    ) -> Option<Result<F::Out, ApiError>> {
        let now = self.config.clock.now();
        let keys: smallvec::SmallVec<[&CacheKey; 16]> = slots.iter().map(|s| &s.key).collect();
        self.cache.with_entries(&keys, |found| {
            if !found.iter().all(|e| e.is_some_and(|e| self.fresh(e, now))) {
                return None;
            }
            let entries: smallvec::SmallVec<[Result<&Entry, &StoreError>; 16]> = found
                .iter()
                .map(|e| e.ok_or(&StoreError::Timeout))
                .collect();
            let table = Table {
                plan,
                columns,
                typed,
                request,
                row_slots,
                entries: &entries,
                rows,
                now: self.config.clock.unix_now(),
            };
            Some(format.render_table(reg, &table))
        })
    }

    /// The rest of a request that missed the cache: one coalesced read, then the answer.
    pub async fn finish<F: Output>(
        self: &Arc<Self>,
        reg: &Arc<ServingRegistry>,
        p: Pending<F>,
    ) -> Result<F::Out, ApiError> {
        // 5. Hits at once, misses through one coalesced, batched store read.
        let entries = self.read_through(reg, &p.slots).await;
        // 6. A failed read fails the request, unless configured to degrade to INVALID cells.
        if self.config.on_store_error == OnStoreError::Fail
            && let Some(Err(e)) = entries.iter().find(|e| e.is_err())
        {
            return Err(ApiError::from_store(
                e,
                format!("{e}; features of this request could not be read"),
            ));
        }
        // 7. The answer, in the format asked for.
        let entries: Vec<Result<&Entry, &StoreError>> =
            entries.iter().map(|e| e.as_deref()).collect();
        let table = Table {
            plan: &p.plan,
            columns: &p.columns,
            typed: &p.typed,
            request: &p.request,
            row_slots: &p.row_slots,
            entries: &entries,
            rows: p.rows,
            now: self.config.clock.unix_now(),
        };
        p.format.render_table(reg, &table)
    }
}

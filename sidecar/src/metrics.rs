//! Prometheus metrics, hand-rolled on atomics: every series is created once at startup (fixed
//! label sets), so recording is an atomic add and nothing is formatted per request.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets: 25 µs to 2.5 s.
const BUCKETS: [f64; 16] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5,
];

/// Cells per series: each thread writes its own cell (its own cache line), so two workers never
/// bounce a line between cores to count a request; readers add the cells up.
const CELLS: usize = 8;

/// A cache-line-sized atomic.
#[derive(Default)]
#[repr(align(64))]
struct Cell(AtomicU64);

thread_local! {
    static THREAD_CELL: usize = {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        (NEXT.fetch_add(1, Relaxed) as usize) % CELLS
    };
}

fn my_cell() -> usize {
    THREAD_CELL.with(|c| *c)
}

#[derive(Default)]
pub struct Counter([Cell; CELLS]);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0[my_cell()].0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.iter().map(|c| c.0.load(Relaxed)).sum()
    }
}

#[derive(Default)]
#[repr(align(64))]
struct HistogramCell {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

#[derive(Default)]
pub struct Histogram([HistogramCell; CELLS]);

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let cell = &self.0[my_cell()];
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            cell.buckets[i].fetch_add(1, Relaxed);
        }
        cell.count.fetch_add(1, Relaxed);
        cell.sum_nanos.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    /// Writes the series `name` with `labels` (`k="v",...`, rendered once by the caller).
    pub fn render_to(&self, out: &mut String, name: &str, labels: &str) {
        self.render(out, name, labels);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sum = |f: &dyn Fn(&HistogramCell) -> u64| -> u64 { self.0.iter().map(f).sum() };
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += sum(&|c| c.buckets[i].load(Relaxed));
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = sum(&|c| c.count.load(Relaxed));
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            sum(&|c| c.sum_nanos.load(Relaxed)) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// The HTTP endpoints, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    GetOnlineFeatures = 0,
    Health = 1,
    Ready = 2,
    Metrics = 3,
    Push = 4,
    WriteToOnlineStore = 5,
    Materialize = 6,
    MaterializeIncremental = 7,
    /// KServe's paths (`--enrich`): enriched predictions and what is passed through.
    Kserve = 8,
    Other = 9,
}

const ENDPOINTS: [&str; 10] = [
    "get-online-features",
    "health",
    "ready",
    "metrics",
    "push",
    "write-to-online-store",
    "materialize",
    "materialize-incremental",
    "kserve",
    "other",
];
/// Status classes: 2xx, 4xx, 5xx.
const CLASSES: [&str; 3] = ["2xx", "4xx", "5xx"];

/// Why Feast's transformation service was called: a request's on-demand view, or a write to a
/// write-time view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransformPhase {
    Serve = 0,
    Write = 1,
}

const TRANSFORM_PHASES: [&str; 2] = ["serve", "write"];

/// How a call to the transformation service ended (`quiver_transform::TransformError`'s cases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransformOutcome {
    Ok = 0,
    Timeout = 1,
    Unreachable = 2,
    Failed = 3,
    BadAnswer = 4,
    Input = 5,
}

const TRANSFORM_OUTCOMES: [&str; 6] = [
    "ok",
    "timeout",
    "unreachable",
    "failed",
    "bad_answer",
    "input",
];

impl TransformOutcome {
    pub fn of(result: &Result<impl Sized, quiver_transform::TransformError>) -> TransformOutcome {
        use quiver_transform::TransformError as E;
        match result {
            Ok(_) => TransformOutcome::Ok,
            Err(E::Timeout { .. }) => TransformOutcome::Timeout,
            Err(E::Unreachable { .. }) => TransformOutcome::Unreachable,
            Err(E::Failed { .. }) => TransformOutcome::Failed,
            Err(E::BadAnswer { .. }) => TransformOutcome::BadAnswer,
            Err(E::Input { .. }) => TransformOutcome::Input,
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    requests: [[Counter; 3]; 10],
    latency: [Histogram; 10],
    /// Calls to Feast's transformation service by phase and outcome, and their latency.
    transform_calls: [[Counter; 6]; 2],
    transform_latency: [Histogram; 2],
    /// Rows stored and skipped (not newer) by the write endpoints.
    pub rows_written: Counter,
    pub rows_skipped: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    /// Entries found but past their staleness bound.
    pub cache_expired: Counter,
    pub cache_evictions: Counter,
    pub cache_invalidations: Counter,
    /// Misses that waited for another request's read of the same key.
    pub coalesced: Counter,
    pub store_round_trips: Counter,
    pub store_errors: Counter,
    pub store_timeouts: Counter,
    /// Stored values that did not decode as Feast `Value`s (answered INVALID, never PRESENT).
    pub corrupt_values: Counter,
    pub store_latency: Histogram,
    pub registry_reloads: Counter,
    pub registry_reload_errors: Counter,
    /// Registry service sync: exchanges that failed (unreachable, error status).
    pub registry_sync_errors: Counter,
    /// Registry service sync: snapshots refused (checksum, schema version, decode).
    pub registry_snapshots_rejected: Counter,
    /// The registry service's version of the snapshot in use (0: not syncing).
    pub registry_service_version: AtomicU64,
    /// True while the registry service answered the last exchange.
    pub registry_service_connected: AtomicBool,
    /// True while serving a snapshot from the state dir that the service has not confirmed.
    pub registry_from_state_dir: AtomicBool,
    /// True while the latest registry file or object fails to load (the last good one is
    /// served).
    pub registry_load_failing: AtomicBool,
}

/// Values read at render time from the state that owns them.
pub struct Snapshot<'a> {
    pub cache_bytes: u64,
    pub cache_entries: u64,
    pub registry_version: u64,
    pub registry_id: &'a str,
    pub change_feed_live: bool,
    /// Seconds since the newest invalidation, if any was seen.
    pub invalidation_age: Option<f64>,
    pub ready: bool,
    /// The write endpoints are on and take no token (a loopback bind, or --insecure-no-auth).
    pub writes_open: bool,
}

impl Metrics {
    pub fn record_request(&self, endpoint: Endpoint, status: u16, elapsed: Duration) {
        let class = match status {
            200..=399 => 0,
            400..=499 => 1,
            _ => 2,
        };
        self.requests[endpoint as usize][class].inc();
        self.latency[endpoint as usize].observe(elapsed);
    }

    /// One call to the transformation service (its latency whatever the outcome).
    pub fn record_transform(
        &self,
        phase: TransformPhase,
        outcome: TransformOutcome,
        elapsed: Duration,
    ) {
        self.transform_calls[phase as usize][outcome as usize].inc();
        self.transform_latency[phase as usize].observe(elapsed);
    }

    pub fn render(&self, s: &Snapshot<'_>) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str("# HELP quiver_http_requests_total HTTP requests by endpoint and status class.\n# TYPE quiver_http_requests_total counter\n");
        for (e, name) in ENDPOINTS.iter().enumerate() {
            for (c, class) in CLASSES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "quiver_http_requests_total{{endpoint=\"{name}\",status=\"{class}\"}} {}",
                    self.requests[e][c].get()
                );
            }
        }
        out.push_str("# HELP quiver_http_request_duration_seconds Request latency by endpoint.\n# TYPE quiver_http_request_duration_seconds histogram\n");
        for (e, name) in ENDPOINTS.iter().enumerate() {
            self.latency[e].render(
                &mut out,
                "quiver_http_request_duration_seconds",
                &format!("endpoint=\"{name}\""),
            );
        }
        out.push_str("# HELP quiver_transformation_calls_total Calls to Feast's transformation service by phase (serve: a request's on-demand view; write: a write-time view) and outcome.\n# TYPE quiver_transformation_calls_total counter\n");
        for (p, phase) in TRANSFORM_PHASES.iter().enumerate() {
            for (o, outcome) in TRANSFORM_OUTCOMES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "quiver_transformation_calls_total{{phase=\"{phase}\",outcome=\"{outcome}\"}} {}",
                    self.transform_calls[p][o].get()
                );
            }
        }
        out.push_str("# HELP quiver_transformation_duration_seconds Latency of calls to Feast's transformation service, by phase.\n# TYPE quiver_transformation_duration_seconds histogram\n");
        for (p, phase) in TRANSFORM_PHASES.iter().enumerate() {
            self.transform_latency[p].render(
                &mut out,
                "quiver_transformation_duration_seconds",
                &format!("phase=\"{phase}\""),
            );
        }
        let counters: [(&str, &str, &Counter); 16] = [
            (
                "quiver_cache_hits_total",
                "Cache lookups answered from memory.",
                &self.cache_hits,
            ),
            (
                "quiver_cache_misses_total",
                "Cache lookups that went to the online store.",
                &self.cache_misses,
            ),
            (
                "quiver_cache_expired_total",
                "Entries found past their staleness bound (counted as misses too).",
                &self.cache_expired,
            ),
            (
                "quiver_cache_evictions_total",
                "Entries evicted to stay within the byte bound.",
                &self.cache_evictions,
            ),
            (
                "quiver_cache_invalidations_total",
                "Entries dropped because the online store changed.",
                &self.cache_invalidations,
            ),
            (
                "quiver_cache_coalesced_total",
                "Misses served by another request's read of the same key.",
                &self.coalesced,
            ),
            (
                "quiver_online_store_round_trips_total",
                "Batched reads sent to the online store.",
                &self.store_round_trips,
            ),
            (
                "quiver_online_store_errors_total",
                "Online store reads that failed.",
                &self.store_errors,
            ),
            (
                "quiver_online_store_timeouts_total",
                "Online store reads that missed the deadline.",
                &self.store_timeouts,
            ),
            (
                "quiver_corrupt_values_total",
                "Stored values read from the online store that did not decode (answered as INVALID).",
                &self.corrupt_values,
            ),
            (
                "quiver_rows_written_total",
                "Rows stored by /push and /write-to-online-store.",
                &self.rows_written,
            ),
            (
                "quiver_rows_skipped_total",
                "Pushed rows skipped because the store held a row at least as new.",
                &self.rows_skipped,
            ),
            (
                "quiver_registry_reloads_total",
                "Registry versions swapped in.",
                &self.registry_reloads,
            ),
            (
                "quiver_registry_reload_errors_total",
                "Registry reloads that failed (the last good one stays).",
                &self.registry_reload_errors,
            ),
            (
                "quiver_registry_sync_errors_total",
                "Registry service exchanges that failed (retried with backoff).",
                &self.registry_sync_errors,
            ),
            (
                "quiver_registry_snapshots_rejected_total",
                "Registry snapshots refused (checksum, schema version, decode); the last good one stays.",
                &self.registry_snapshots_rejected,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.get()
            );
        }
        out.push_str("# HELP quiver_online_store_read_duration_seconds Latency of batched online store reads.\n# TYPE quiver_online_store_read_duration_seconds histogram\n");
        self.store_latency
            .render(&mut out, "quiver_online_store_read_duration_seconds", "");
        let gauges: [(&str, &str, f64); 10] = [
            (
                "quiver_cache_size_bytes",
                "Bytes held by the cache (estimated).",
                s.cache_bytes as f64,
            ),
            (
                "quiver_cache_entries",
                "Entries held by the cache.",
                s.cache_entries as f64,
            ),
            (
                "quiver_registry_version",
                "Local version of the registry in use (increments on each swap).",
                s.registry_version as f64,
            ),
            (
                "quiver_change_feed_live",
                "1 while the online store's change feed (keyspace notifications) is live.",
                f64::from(u8::from(s.change_feed_live)),
            ),
            (
                "quiver_ready",
                "1 when /ready answers 200.",
                f64::from(u8::from(s.ready)),
            ),
            (
                "quiver_writes_unauthenticated",
                "1 when the write endpoints are on and need no token (loopback, or --insecure-no-auth).",
                f64::from(u8::from(s.writes_open)),
            ),
            (
                "quiver_registry_service_version",
                "The registry service's version of the snapshot in use (0: not syncing).",
                self.registry_service_version.load(Relaxed) as f64,
            ),
            (
                "quiver_registry_service_connected",
                "1 while the registry service answered the last exchange.",
                f64::from(u8::from(self.registry_service_connected.load(Relaxed))),
            ),
            (
                "quiver_registry_load_failing",
                "1 while the latest registry file or object fails to load (the last good version is served).",
                f64::from(u8::from(self.registry_load_failing.load(Relaxed))),
            ),
            (
                "quiver_registry_from_state_dir",
                "1 while serving the state dir's snapshot, not yet confirmed by the registry service.",
                f64::from(u8::from(self.registry_from_state_dir.load(Relaxed))),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP quiver_registry_info The registry in use.\n# TYPE quiver_registry_info gauge\nquiver_registry_info{{version_id=\"{}\"}} 1",
            s.registry_id.replace(['"', '\\', '\n'], "_")
        );
        if let Some(age) = s.invalidation_age {
            let _ = writeln!(
                out,
                "# HELP quiver_invalidation_age_seconds Seconds since the newest invalidation seen.\n# TYPE quiver_invalidation_age_seconds gauge\nquiver_invalidation_age_seconds {age}"
            );
        }
        out
    }
}

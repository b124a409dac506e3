//! The service's Prometheus metrics: fixed series on atomics, rendered on request.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// The endpoints, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Snapshot = 0,
    Read = 1,
    Apply = 2,
    Health = 3,
    Ready = 4,
    Metrics = 5,
    Other = 6,
    Materializations = 7,
}

const ENDPOINTS: [&str; 8] = [
    "snapshot",
    "read",
    "apply",
    "health",
    "ready",
    "metrics",
    "other",
    "materializations",
];
const CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

#[derive(Default)]
pub struct ServiceMetrics {
    requests: [[Counter; 4]; 8],
    pub snapshot_bytes: Counter,
    pub not_modified: Counter,
    pub long_polls: AtomicI64,
    pub applies: Counter,
    pub apply_conflicts: Counter,
    pub materializations: Counter,
    pub unauthorized: Counter,
    pub store_loads: Counter,
    pub store_errors: Counter,
    pub catalog_swaps: Counter,
}

/// What the render reads from the service.
pub struct Gauges<'a> {
    pub ready: bool,
    /// No token is set: anyone who reaches the service can write.
    pub writes_open: bool,
    pub versions: Vec<(&'a str, u64)>,
}

impl ServiceMetrics {
    pub fn record(&self, endpoint: Endpoint, status: u16) {
        let class = match status {
            200..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            _ => 3,
        };
        self.requests[endpoint as usize][class].inc();
    }

    pub fn requests(&self, endpoint: Endpoint, class: &str) -> u64 {
        CLASSES
            .iter()
            .position(|c| *c == class)
            .map_or(0, |i| self.requests[endpoint as usize][i].get())
    }

    pub fn render(&self, g: &Gauges<'_>) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP quiver_registry_http_requests_total HTTP requests by endpoint and status class.\n# TYPE quiver_registry_http_requests_total counter\n");
        for (e, name) in ENDPOINTS.iter().enumerate() {
            for (c, class) in CLASSES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "quiver_registry_http_requests_total{{endpoint=\"{name}\",status=\"{class}\"}} {}",
                    self.requests[e][c].get()
                );
            }
        }
        let counters: [(&str, &str, &Counter); 9] = [
            (
                "quiver_registry_snapshot_bytes_total",
                "Snapshot bytes sent.",
                &self.snapshot_bytes,
            ),
            (
                "quiver_registry_not_modified_total",
                "Snapshot requests answered 304 (nothing changed).",
                &self.not_modified,
            ),
            (
                "quiver_registry_applies_total",
                "Applies committed (empty plans included).",
                &self.applies,
            ),
            (
                "quiver_registry_apply_conflicts_total",
                "Applies refused with 409: based on a stale version.",
                &self.apply_conflicts,
            ),
            (
                "quiver_registry_materializations_total",
                "Materialization runs recorded (POST .../materializations).",
                &self.materializations,
            ),
            (
                "quiver_registry_unauthorized_total",
                "Requests refused for a missing or wrong token.",
                &self.unauthorized,
            ),
            (
                "quiver_registry_store_loads_total",
                "Loads of the whole registry from the store.",
                &self.store_loads,
            ),
            (
                "quiver_registry_store_errors_total",
                "Store reads or writes that failed.",
                &self.store_errors,
            ),
            (
                "quiver_registry_catalog_swaps_total",
                "Registry changes published to readers.",
                &self.catalog_swaps,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP quiver_registry_long_polls Snapshot long polls waiting now.\n# TYPE quiver_registry_long_polls gauge\nquiver_registry_long_polls {}",
            self.long_polls.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP quiver_registry_ready 1 when the store answered the last poll.\n# TYPE quiver_registry_ready gauge\nquiver_registry_ready {}",
            u8::from(g.ready)
        );
        let _ = writeln!(
            out,
            "# HELP quiver_registry_writes_unauthenticated 1 when writes need no token (no token set: a loopback bind, or --insecure-no-auth).\n# TYPE quiver_registry_writes_unauthenticated gauge\nquiver_registry_writes_unauthenticated {}",
            u8::from(g.writes_open)
        );
        let _ = writeln!(
            out,
            "# HELP quiver_registry_projects Projects in the registry.\n# TYPE quiver_registry_projects gauge\nquiver_registry_projects {}",
            g.versions.len()
        );
        out.push_str("# HELP quiver_registry_project_version The version of each project.\n# TYPE quiver_registry_project_version gauge\n");
        for (project, version) in &g.versions {
            let project = project.replace(['"', '\\', '\n'], "_");
            let _ = writeln!(
                out,
                "quiver_registry_project_version{{project=\"{project}\"}} {version}"
            );
        }
        out
    }
}

//! The sidecar's configuration: [`SidecarConfig`] (server and background tasks) and
//! [`EngineConfig`] (the serving pipeline's bounds), each with the defaults `quiver serve` uses.

use std::time::Duration;

use crate::clock::Clock;
use crate::push;

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
    /// The clock behind cache ages, the change feed and ttl (tests: tokio's paused clock).
    pub clock: Clock,
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
            clock: Clock::System,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SidecarConfig {
    pub engine: EngineConfig,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// How often the registry file is checked for changes.
    pub registry_refresh: Duration,
    /// Turn on Redis keyspace notifications (`CONFIG SET notify-keyspace-events`) when they are
    /// off, instead of only using them when they are on.
    pub enable_keyspace_notifications: bool,
    /// Replicate mode: feature views (or feature services, for all their views) whose every
    /// stored row is loaded at start and kept loaded, so that every read of them is a hit.
    pub replicate: Vec<String>,
    /// Serve `POST /push` and `POST /write-to-online-store` (off: 404).
    pub push: Option<push::PushConfig>,
    /// Feast's transformation service, for on-demand views (off: such requests are refused).
    pub transformation: Option<quiver_transform::TransformConfig>,
    /// KServe enrichment (`--enrich`, `--upstream`): KServe's paths answered by enriching and
    /// forwarding to the model server (off: they are 404).
    pub enrich: Option<std::sync::Arc<crate::enrich::Enricher>>,
}

impl Default for SidecarConfig {
    fn default() -> SidecarConfig {
        SidecarConfig {
            engine: EngineConfig::default(),
            max_body_bytes: 1 << 20,
            registry_refresh: Duration::from_secs(1),
            enable_keyspace_notifications: false,
            replicate: Vec::new(),
            push: None,
            transformation: None,
            enrich: None,
        }
    }
}

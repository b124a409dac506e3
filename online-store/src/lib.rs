//! quiver-online-store: reading Feast's online stores, in Feast's layouts.
//!
//! - Redis (`type: redis`): one HASH per entity key; a read for many entities and views is ONE
//!   pipelined round trip of `HMGET key <feature fields...> _ts:<view>...`, one command per
//!   entity. Keyspace notifications report changed keys (see [`redis_store::Invalidations`]).
//! - SQLite (`type: sqlite`, Feast's embedded default): one table per view, one row per
//!   (entity, feature); reads are batched `IN (...)` queries on a small connection pool, run off
//!   the async threads. `PRAGMA data_version` tells when another process wrote.
//!
//! Values come back as the serialized `Value` bytes Feast stored; decoding is the caller's (the
//! sidecar decodes once, when it caches).

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::sync::Arc;

use quiver_core::fault::{Classified, ErrorKind};
use quiver_core::layout;
use quiver_core::time::Timestamp;

pub mod redis_store;
pub mod sqlite_store;

pub use redis_store::{RedisOptions, RedisStore};
pub use sqlite_store::SqliteStore;

/// How one view is laid out in the online store, resolved once per registry version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewLayout {
    pub name: String,
    /// Feature names, in the order rows are returned.
    pub features: Vec<String>,
    /// Redis field of each feature: murmur3 of `"{view}:{feature}"`.
    pub fields: Vec<[u8; 4]>,
    /// `_ts:{view}`.
    pub ts_field: Vec<u8>,
    /// `{project}_{view}`, quoted for SQL.
    pub sqlite_table: String,
    /// Feast's statements creating the view's SQLite table and index.
    pub sqlite_create: [String; 2],
}

impl ViewLayout {
    pub fn new(
        project: &str,
        view: &str,
        features: impl IntoIterator<Item = String>,
    ) -> ViewLayout {
        let features: Vec<String> = features.into_iter().collect();
        ViewLayout {
            name: view.to_owned(),
            fields: features
                .iter()
                .map(|f| layout::redis_field(view, f))
                .collect(),
            features,
            ts_field: layout::redis_ts_field(view).into_bytes(),
            sqlite_table: layout::quote_ident(&layout::sqlite_table(project, view)),
            sqlite_create: layout::sqlite_create_table(&layout::sqlite_table(project, view)),
        }
    }
}

/// One view's row for one entity, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub event_ts: Timestamp,
    /// The serialized `Value` of each feature of the layout, in its order; `None` where the
    /// store has no value for the feature.
    pub values: Vec<Option<Vec<u8>>>,
}

/// One entity to read: its key (v3 bytes, without the project) and the views wanted, as
/// indices into the layouts passed along.
#[derive(Debug, Clone, Copy)]
pub struct KeyRead<'a> {
    pub entity_key: &'a [u8],
    pub views: &'a [usize],
}

/// One view's row for one entity, to write with Feast's rule (see [`OnlineStore::write`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRow {
    /// Entity key v3 bytes, without the project.
    pub entity_key: Vec<u8>,
    pub event_ts: Timestamp,
    pub created_ts: Option<Timestamp>,
    /// The serialized `Value` of each feature of the layout, in its order (empty: null), each
    /// prefixed by its length as a u32 LE: one allocation per row however many features.
    packed: Box<[u8]>,
}

impl WriteRow {
    pub fn new<V: AsRef<[u8]>>(
        entity_key: Vec<u8>,
        event_ts: Timestamp,
        created_ts: Option<Timestamp>,
        values: &[V],
    ) -> WriteRow {
        let mut packed = Vec::with_capacity(values.iter().map(|v| v.as_ref().len() + 4).sum());
        for v in values {
            pack_value(&mut packed, v.as_ref());
        }
        WriteRow {
            entity_key,
            event_ts,
            created_ts,
            packed: packed.into_boxed_slice(),
        }
    }

    /// A row from values already packed by [`pack_value`].
    pub fn from_packed(
        entity_key: Vec<u8>,
        event_ts: Timestamp,
        created_ts: Option<Timestamp>,
        packed: Box<[u8]>,
    ) -> WriteRow {
        WriteRow {
            entity_key,
            event_ts,
            created_ts,
            packed,
        }
    }

    /// The serialized values, in the layout's order.
    pub fn values(&self) -> PackedValues<'_> {
        PackedValues { rest: &self.packed }
    }
}

/// Appends one serialized value, length-prefixed, as [`WriteRow`] stores them.
pub fn pack_value(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// The values of a [`WriteRow`].
pub struct PackedValues<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for PackedValues<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.rest.split_first_chunk::<4>()?;
        let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        Some(value)
    }
}

/// What a write did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Rows stored.
    pub written: u64,
    /// Rows skipped because the store already held a row at least as new.
    pub skipped: u64,
}

impl std::ops::AddAssign for WriteStats {
    fn add_assign(&mut self, other: WriteStats) {
        self.written += other.written;
        self.skipped += other.skipped;
    }
}

/// Feast's online write rule (0.67, Redis): a row replaces the stored one only when its event
/// time is strictly newer, to the nanosecond; a stored time of zero counts as none.
pub fn newer_than_stored(event_ts: &Timestamp, stored: Option<&Timestamp>) -> bool {
    let total = |t: &Timestamp| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    match stored {
        Some(prev) if total(prev) != 0 => total(event_ts) > total(prev),
        _ => true,
    }
}

/// What went wrong talking to the store. Expected failures, cheap to make and match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer in time.
    #[error("online store timed out")]
    Timeout,
    /// The store cannot be reached or refused the command.
    #[error("online store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with something that is not Feast's layout.
    #[error("online store data is not in Feast's layout: {0}")]
    Corrupt(String),
}

impl Classified for StoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Timeout => ErrorKind::Timeout,
            StoreError::Unavailable(_) => ErrorKind::Unavailable,
            // The store answered, with bytes that do not decode: the upstream's fault.
            StoreError::Corrupt(_) => ErrorKind::UpstreamFailed,
        }
    }
}

/// Which kind of store, for logs and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Redis,
    Sqlite,
}

/// An online store quiver reads from.
#[derive(Clone)]
pub enum OnlineStore {
    Redis(Arc<RedisStore>),
    Sqlite(Arc<SqliteStore>),
}

/// The rows read: `result[i][j]` is key `i`'s row for its `j`-th requested view, `None` when the
/// entity has never been written for that view.
pub type ReadResult = Vec<Vec<Option<StoredRow>>>;

impl OnlineStore {
    pub fn kind(&self) -> StoreKind {
        match self {
            OnlineStore::Redis(_) => StoreKind::Redis,
            OnlineStore::Sqlite(_) => StoreKind::Sqlite,
        }
    }

    /// Reads the rows of many entities and views. For Redis this is one round trip.
    pub async fn read(
        &self,
        layouts: &[Arc<ViewLayout>],
        reads: &[KeyRead<'_>],
    ) -> Result<ReadResult, StoreError> {
        match self {
            OnlineStore::Redis(r) => r.read(layouts, reads).await.inspect_err(|_| {
                r.command_failed();
            }),
            OnlineStore::Sqlite(s) => s.read(layouts, reads).await,
        }
    }

    /// Every entity key stored for any of these views (v3 bytes, no project suffix), for replicate
    /// mode. Redis: a `SCAN` of the project's keys; SQLite: the tables' distinct keys.
    pub async fn scan_entity_keys(
        &self,
        layouts: &[Arc<ViewLayout>],
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        match self {
            OnlineStore::Redis(r) => r.scan_entity_keys().await,
            OnlineStore::Sqlite(s) => s.scan_entity_keys(layouts).await,
        }
    }

    /// Writes rows of one view with Feast's rule: a row is stored only when its event time is
    /// strictly newer than the stored one; older or equal rows are skipped. Redis compares to the
    /// nanosecond; SQLite stores whole seconds and, within one, lets a different value win (see
    /// [`SqliteStore::write`]).
    /// Redis: one pipelined round trip reading `_ts:{view}`, one writing `HSET` (+ `EXPIRE key_ttl`)
    /// for the rows that win. SQLite: one transaction, tables created when missing.
    pub async fn write(
        &self,
        layout: &Arc<ViewLayout>,
        rows: Arc<[WriteRow]>,
        key_ttl_seconds: Option<u64>,
    ) -> Result<WriteStats, StoreError> {
        for r in rows.iter() {
            let n = r.values().count();
            if n != layout.features.len() {
                return Err(StoreError::Corrupt(format!(
                    "row of {n} values for view {} of {} features",
                    layout.name,
                    layout.features.len()
                )));
            }
        }
        match self {
            OnlineStore::Redis(r) => r
                .write(layout, &rows, key_ttl_seconds)
                .await
                .inspect_err(|_| r.command_failed()),
            OnlineStore::Sqlite(s) => s.write(layout, rows).await,
        }
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            OnlineStore::Redis(r) => r.ping().await,
            OnlineStore::Sqlite(s) => s.ping().await,
        }
    }
}

/// Reads a stored `_ts` / event time.
fn decode_ts(bytes: &[u8]) -> Result<Timestamp, StoreError> {
    layout::decode_timestamp(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_are_upstream_faults() {
        assert_eq!(StoreError::Timeout.kind(), ErrorKind::Timeout);
        assert_eq!(
            StoreError::Unavailable("x".into()).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            StoreError::Corrupt("x".into()).kind(),
            ErrorKind::UpstreamFailed
        );
        assert_eq!(StoreError::Corrupt("x".into()).kind().http_status(), 502);
    }
}

//! Materialization: for each online view, the latest source row per entity key with
//! `start <= event_ts <= end` (ties broken by the created timestamp), written to the online store
//! with Feast's write rule.
//!
//! Memory is bounded by the number of distinct entity keys in the window, not by its rows: a scan
//! keeps one compact winner per key (its key bytes, times and already-serialized values), so a
//! window of a billion rows over a million entities holds a million winners. Writes go out in
//! batches with a bounded number in flight; a failed batch is retried with backoff (the write rule
//! makes a retry, or a rerun, idempotent).
//!
//! A source ordered by event time (most event logs; Parquet row groups whose time statistics do
//! not overlap) is read in [`Segment`]s, newest first, and each segment's rows are written while
//! the next is read, so reading no longer delays every write. Otherwise the whole window is read
//! first. Either way a run that fails records nothing in the registry; what it wrote is valid
//! and a rerun skips it.
//!
//! Bad source rows (a value out of its feature's range, a time Feast cannot hold): the whole-
//! window path finds them before anything is written. The segmented path validates each segment
//! before writing it, so a bad row in an older segment may be found after newer segments were
//! written; that is safe by construction, and the contract (tested): every row written is its
//! key's final row for the window (no older row of the key can win, the segments are newest
//! first), keys of the bad segment and older are not written, no interval is recorded, the
//! error names the column and row and says how many rows went out, and a rerun on the fixed
//! source writes the rest and skips what was written. Validating the whole window before the
//! first write would read the source twice, which segments exist to avoid.
//!
//! Length: planning, the two scan strategies (hash-partitioned passes, time segments) and the
//! writer share one compact winner format; splitting them would put that format in a fourth
//! file every piece depends on.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use hashbrown::hash_map::EntryRef;
use quiver_core::ValueType;
use quiver_core::backoff::Backoff;
use quiver_core::model::{FeatureView, SourceKind};
use quiver_core::registry::ProjectRegistry;
use quiver_core::time::Timestamp;
use quiver_online_store::{OnlineStore, StoreError, ViewLayout, WriteRow, WriteStats};

use crate::Error;
use crate::convert::{self, Nanos};
pub use crate::shard::Shard;
use crate::source::{self, OpenFile};

/// Feast's join key for views without entities.
pub const DUMMY_ENTITY_ID: &str = "__dummy_id";

/// One join key of a view: where it comes from and how it is typed.
#[derive(Debug, Clone)]
pub struct KeyColumn {
    pub join_key: String,
    pub column: String,
    pub value_type: ValueType,
}

/// What materializing one view reads and writes, resolved and checked before any work.
pub struct ViewPlan {
    pub view: String,
    pub ttl: Duration,
    /// Empty for an entityless view (its rows share the dummy key).
    pub keys: Vec<KeyColumn>,
    pub ts_column: String,
    pub created_column: Option<String>,
    /// Source column and Feast type of each feature, in the view's order.
    pub features: Vec<(String, ValueType)>,
    pub layout: Arc<ViewLayout>,
    pub files: Vec<OpenFile>,
    /// The share of the entity keys this run writes ([`Shard::ALL`] unless `--shard`).
    pub shard: Shard,
}

impl ViewPlan {
    /// The columns a scan reads, in the order [`scan_latest`] expects: keys, event time,
    /// created time (when there is one), features.
    fn columns(&self) -> Vec<String> {
        let mut out: Vec<String> = self.keys.iter().map(|k| k.column.clone()).collect();
        out.push(self.ts_column.clone());
        out.extend(self.created_column.clone());
        out.extend(self.features.iter().map(|(c, _)| c.clone()));
        out
    }

    /// Rows the scan will read (after row-group pruning).
    pub fn rows_to_scan(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }
}

/// Resolves a view's source, columns and types and opens its files (reading only their
/// metadata), so that a missing column, a wrong type or an unreadable file is reported before
/// anything is written.
pub async fn plan_view(
    project: &ProjectRegistry,
    view: &FeatureView,
    repo_dir: &Path,
    window: Option<(Nanos, Nanos)>,
) -> Result<ViewPlan, Error> {
    let name = &view.name;
    let mut source = view.batch_source.as_ref().ok_or_else(|| {
        Error::unprocessable(format!(
            "feature view {name} has no batch source to materialize from"
        ))
    })?;
    if let SourceKind::Push { batch_source } = &source.kind {
        source = batch_source;
    }
    let (uri, s3_endpoint_override) = match &source.kind {
        SourceKind::File {
            uri,
            s3_endpoint_override,
            ..
        } => (uri, s3_endpoint_override),
        _ => {
            return Err(Error::unprocessable(format!(
                "feature view {name}: its source {} is a {} source; quiver materializes from file sources",
                source.name,
                source.kind_name()
            )));
        }
    };
    // field_mapping maps source columns to feature names: invert it to find the source column.
    let column_of = |name: &str| -> String {
        source
            .field_mapping
            .iter()
            .find(|(_, to)| to.as_str() == name)
            .map(|(from, _)| from.clone())
            .unwrap_or_else(|| name.to_owned())
    };
    let keys = crate::join_keys(project, view)?
        .into_iter()
        .map(|(join_key, value_type)| KeyColumn {
            column: column_of(&join_key),
            join_key,
            value_type,
        })
        .collect::<Vec<_>>();
    if source.timestamp_field.is_empty() {
        return Err(Error::unprocessable(format!(
            "feature view {name}: source {} has no timestamp_field",
            source.name
        )));
    }
    let ts_column = column_of(&source.timestamp_field);
    let created_column = (!source.created_timestamp_column.is_empty())
        .then(|| column_of(&source.created_timestamp_column));
    let features: Vec<(String, ValueType)> = view
        .features
        .iter()
        .map(|f| (column_of(&f.name), f.dtype))
        .collect();
    let layout = Arc::new(ViewLayout::new(
        &project.project,
        name,
        view.features.iter().map(|f| f.name.clone()),
    ));
    let in_view = |e: Error| e.context(format_args!("feature view {name}"));
    let located = source::locate(uri, s3_endpoint_override, repo_dir)
        .await
        .map_err(in_view)?;
    let files = source::open_all(&located, &ts_column, window)
        .await
        .map_err(in_view)?;
    for file in &files {
        check_columns(
            name,
            file,
            &keys,
            &ts_column,
            created_column.as_deref(),
            &features,
        )?;
    }
    Ok(ViewPlan {
        view: name.clone(),
        ttl: view.ttl,
        keys,
        ts_column,
        created_column,
        features,
        layout,
        files,
        shard: Shard::ALL,
    })
}

fn check_columns(
    view: &str,
    file: &OpenFile,
    keys: &[KeyColumn],
    ts_column: &str,
    created_column: Option<&str>,
    features: &[(String, ValueType)],
) -> Result<(), Error> {
    let path = &file.shown;
    let field = |column: &str, role: &str| {
        file.schema.field_with_name(column).map_err(|_| {
            Error::unprocessable(format!(
                "feature view {view}: {path} has no column {column:?} ({role}); its columns: {}",
                source::column_list(&file.schema)
            ))
        })
    };
    for k in keys {
        let f = field(&k.column, "join key")?;
        if !convert::compatible(f.data_type(), k.value_type) {
            return Err(Error::unprocessable(format!(
                "feature view {view}: {path} column {:?} (join key {}) is {}, expected values for a {} entity",
                k.column,
                k.join_key,
                f.data_type(),
                k.value_type
            )));
        }
    }
    for (column, role) in std::iter::once((ts_column, "event timestamp"))
        .chain(created_column.map(|c| (c, "created timestamp")))
    {
        let f = field(column, role)?;
        if !convert::is_time_type(f.data_type()) {
            return Err(Error::unprocessable(format!(
                "feature view {view}: {path} column {column:?} ({role}) is {}, expected a timestamp",
                f.data_type()
            )));
        }
    }
    for (column, value_type) in features {
        let f = field(column, "feature")?;
        if !convert::compatible(f.data_type(), *value_type) {
            return Err(Error::unprocessable(format!(
                "feature view {view}: {path} column {column:?} is {}, which cannot hold the feature's type {value_type}",
                f.data_type()
            )));
        }
    }
    Ok(())
}

/// The winning row of one entity key so far.
struct Winner {
    ts: Nanos,
    created: Nanos,
    /// The serialized values, each prefixed by its length as a u32 LE.
    values: Box<[u8]>,
}

/// The latest row per entity key in the window.
pub struct Latest {
    rows: hashbrown::HashMap<Box<[u8]>, Winner>,
    /// Rows read from the files.
    pub scanned: u64,
    /// Rows inside the window (of the scanned partition).
    pub in_window: u64,
}

impl Latest {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Each entity key with the event time of its latest row.
    pub(crate) fn key_times(&self) -> impl Iterator<Item = (&[u8], Nanos)> {
        self.rows.iter().map(|(k, w)| (&k[..], w.ts))
    }
}

/// A share of the entity keys: those whose hash is `index` modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub index: u64,
    pub count: u64,
}

impl Partition {
    pub const ALL: Partition = Partition { index: 0, count: 1 };

    fn contains(&self, key: &[u8]) -> bool {
        use std::hash::BuildHasher as _;
        self.count <= 1
            || foldhash::fast::FixedState::with_seed(0x5157_4956_4552).hash_one(key) % self.count
                == self.index
    }

    /// The two halves of this share.
    fn split(self) -> [Partition; 2] {
        let count = self.count * 2;
        [
            Partition {
                index: self.index,
                count,
            },
            Partition {
                index: self.index + self.count,
                count,
            },
        ]
    }
}

/// Estimated bytes one winner holds: its key and values plus the map's and allocator's overhead.
fn winner_bytes(key: usize, values: usize) -> usize {
    key + values + 112
}

/// A stretch of a view's source in event time: row groups (of any of its files) whose time
/// ranges overlap one another's but no other segment's. Read newest segment first, the latest
/// row of a key within a segment is final unless a newer segment had the key: it can be written
/// at once, while older segments are still being read.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// (file index, row group), in file order: on a tie the row read last wins, as in a
    /// whole-source scan.
    pub parts: Vec<(usize, usize)>,
    pub min: Nanos,
    pub max: Nanos,
}

/// The plan's files cut into [`Segment`]s, newest first: row groups sorted by their newest event
/// time, those whose ranges overlap or touch merged. `None` when reading by segments would not
/// pay: a file without row-group time statistics (not Parquet, or written without them), fewer
/// than [`MIN_SEGMENTS`] segments, or one segment holding most of the rows (data not ordered in
/// time, or timestamps so coarse that row groups share them). Then the source is read whole,
/// then written.
pub fn segments(plan: &ViewPlan) -> Option<Vec<Segment>> {
    let mut parts = Vec::new();
    for (f, file) in plan.files.iter().enumerate() {
        for (g, min, max, rows) in file.row_group_times()? {
            parts.push((f, g, min.min(max), max, rows));
        }
    }
    parts.sort_by_key(|p| std::cmp::Reverse(p.3));
    let total: u64 = parts.iter().map(|p| p.4).sum();
    let mut out: Vec<(Segment, u64)> = Vec::new();
    for (f, g, min, max, rows) in parts {
        match out.last_mut() {
            // Parts come newest first, so only the last segment can reach down to this one.
            Some((last, n)) if max >= last.min => {
                last.parts.push((f, g));
                last.min = last.min.min(min);
                *n += rows;
            }
            _ => out.push((
                Segment {
                    parts: vec![(f, g)],
                    min,
                    max,
                },
                rows,
            )),
        }
    }
    let largest = out.iter().map(|(_, n)| *n).max().unwrap_or(0);
    if out.len() < MIN_SEGMENTS || largest > total / 2 {
        return None;
    }
    Some(
        out.into_iter()
            .map(|(mut segment, _)| {
                segment.parts.sort_unstable();
                segment
            })
            .collect(),
    )
}

/// Fewest segments worth reading a source by: with fewer, little of the reading overlaps the
/// writes, and the keys seen are held on top of a segment's winners.
pub const MIN_SEGMENTS: usize = 3;

/// Rows handed to the writer at a time from a finished segment.
const EMIT_ROWS: usize = 8192;

/// What a scan reads, in order, and how many keys its map should have room for up front
/// (growing a large map re-hashes and copies it).
struct Reading {
    units: Vec<Unit>,
    expected_keys: usize,
}

/// What a scan reads next: one file's row groups (`None`: all of the file's kept ones), and
/// whether a segment ends after it.
struct Unit {
    file: usize,
    groups: Option<Vec<usize>>,
    ends_segment: bool,
}

/// The units of a whole-source scan: every file in order, one segment.
fn whole_source(plan: &ViewPlan) -> Vec<Unit> {
    let n = plan.files.len();
    (0..n)
        .map(|file| Unit {
            file,
            groups: None,
            ends_segment: file + 1 == n,
        })
        .collect()
}

/// The units of a segmented scan: per segment, its row groups run together by file.
fn segmented(segments: &[Segment]) -> Vec<Unit> {
    let mut units = Vec::new();
    for segment in segments {
        let first = units.len();
        for &(file, group) in &segment.parts {
            let this_segment = units.len() > first;
            match units.last_mut() {
                Some(Unit {
                    file: f,
                    groups: Some(groups),
                    ..
                }) if this_segment && *f == file => groups.push(group),
                _ => units.push(Unit {
                    file,
                    groups: Some(vec![group]),
                    ends_segment: false,
                }),
            }
        }
        if let Some(last) = units.last_mut() {
            last.ends_segment = true;
        }
    }
    units
}

/// Scans the plan's files and keeps the latest row per entity key of `partition` with
/// `start <= event_ts <= end` (ties: the larger created timestamp; then the row read last).
/// `progress` gets the rows read so far, once per batch. Returns `None` as soon as the winners
/// would hold more than `budget` bytes: the caller splits the partition and scans again.
pub fn scan_latest(
    plan: &ViewPlan,
    window: (Nanos, Nanos),
    partition: Partition,
    budget: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<Option<Latest>, Error> {
    // Sized for the expected winners up front: growing a large map re-hashes and copies it.
    let expected = (plan.rows_to_scan() as usize / partition.count as usize).min(budget / 160);
    let reading = Reading {
        units: whole_source(plan),
        expected_keys: expected,
    };
    scan_units(
        plan,
        window,
        partition,
        budget,
        reading,
        progress,
        &mut |_, _| Ok(true),
    )
}

/// What a segmented scan found.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SegmentedScan {
    pub scanned: u64,
    pub in_window: u64,
    /// Distinct entity keys, each handed to `emit` once.
    pub entities: u64,
}

/// Scans `segments` newest first and hands `emit` each key's final row as soon as its segment
/// is read: the writes of one segment overlap the reading of the next. Holds the keys seen so
/// far and one segment's winners. Returns `None` when they outgrow `budget` (what was emitted
/// stays valid; the caller falls back to whole-source scans by partition).
pub fn scan_segmented(
    plan: &ViewPlan,
    window: (Nanos, Nanos),
    segments: &[Segment],
    budget: usize,
    progress: &mut dyn FnMut(u64),
    emit: &mut dyn FnMut(Vec<WriteRow>) -> Result<(), Error>,
) -> Result<Option<SegmentedScan>, Error> {
    let rows = plan.rows_to_scan() as usize;
    let mut seen: hashbrown::HashSet<Box<[u8]>> =
        hashbrown::HashSet::with_capacity(rows.min(budget / 160));
    let mut seen_bytes = 0usize;
    // One segment's winners at a time: the map is emptied after each.
    let expected = (2 * rows / segments.len().max(1)).min(budget / 160);
    let reading = Reading {
        units: segmented(segments),
        expected_keys: expected,
    };
    let latest = scan_units(
        plan,
        window,
        Partition::ALL,
        budget,
        reading,
        progress,
        &mut |latest, held| {
            let mut rows = Vec::with_capacity(EMIT_ROWS.min(latest.rows.len()));
            for (key, winner) in latest.rows.drain() {
                // One probe into the (large) set; a newer segment's key is the rarer case.
                if !seen.insert(key.clone()) {
                    continue;
                }
                seen_bytes += winner_bytes(key.len(), 0);
                rows.push(into_write_row(key, winner));
                if rows.len() == EMIT_ROWS {
                    emit(std::mem::replace(&mut rows, Vec::with_capacity(EMIT_ROWS)))?;
                }
            }
            *held = seen_bytes;
            if !rows.is_empty() {
                emit(rows)?;
            }
            Ok(seen_bytes <= budget)
        },
    )?;
    Ok(latest.map(|l| SegmentedScan {
        scanned: l.scanned,
        in_window: l.in_window,
        entities: seen.len() as u64,
    }))
}

/// The scan itself: the units in order, the latest row per key of `partition` kept in a map;
/// after each unit that ends a segment, `segment_end` may take the map's rows (and sets the
/// bytes still held); it returns false to stop the scan. `None` when the scan stopped or the
/// held bytes passed `budget`.
fn scan_units(
    plan: &ViewPlan,
    (start, end): (Nanos, Nanos),
    partition: Partition,
    budget: usize,
    Reading {
        units,
        expected_keys,
    }: Reading,
    progress: &mut dyn FnMut(u64),
    segment_end: &mut dyn FnMut(&mut Latest, &mut usize) -> Result<bool, Error>,
) -> Result<Option<Latest>, Error> {
    let mut held = 0usize;
    let columns = plan.columns();
    let n_keys = plan.keys.len();
    let ts_at = n_keys;
    let created_at = plan.created_column.as_ref().map(|_| n_keys + 1);
    let features_at = n_keys + 1 + usize::from(created_at.is_some());
    let mut latest = Latest {
        rows: hashbrown::HashMap::with_capacity(expected_keys),
        scanned: 0,
        in_window: 0,
    };
    let mut key = Vec::with_capacity(64);
    let mut values = Vec::with_capacity(256);
    let dummy = [(DUMMY_ENTITY_ID, ValueType::String)];
    let key_types: Vec<(&str, ValueType)> = plan
        .keys
        .iter()
        .map(|k| (k.join_key.as_str(), k.value_type))
        .collect();
    let keys = convert::KeyEncoder::new(if n_keys == 0 { &dummy } else { &key_types });
    let empty = arrow_array::StringArray::from(vec![""]);
    // Decoding runs on its own thread, a few batches ahead of the hashing here.
    let complete = std::thread::scope(|scope| -> Result<bool, Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Item, Error>>(4);
        let reader = scope.spawn(move || {
            for unit in &units {
                let file = &plan.files[unit.file];
                let path = file.shown.clone();
                let send = |batch: &RecordBatch| {
                    tx.send(Ok(Item::Batch(path.clone(), batch.clone())))
                        .map_err(|_| Error::internal("scan stopped"))
                };
                let sent = match &unit.groups {
                    None => file.scan(&columns, send),
                    Some(groups) => file.scan_row_groups(&columns, Some(groups), send),
                };
                if let Err(e) = sent {
                    let _ = tx.send(Err(e));
                    return;
                }
                if unit.ends_segment && tx.send(Ok(Item::SegmentEnd)).is_err() {
                    return;
                }
            }
        });
        for item in rx {
            let (path, batch) = match item? {
                Item::Batch(path, batch) => (path, batch),
                Item::SegmentEnd => {
                    if !segment_end(&mut latest, &mut held)? {
                        return Ok(false);
                    }
                    continue;
                }
            };
            let ts = batch.column(ts_at);
            let created = created_at.map(|c| batch.column(c));
            let key_columns: Vec<&dyn arrow_array::Array> = if n_keys == 0 {
                vec![&empty]
            } else {
                (0..n_keys).map(|j| batch.column(j).as_ref()).collect()
            };
            for i in 0..batch.num_rows() {
                let Some(t) = convert::time_at(ts.as_ref(), i) else {
                    continue;
                };
                if t < start || t > end {
                    continue;
                }
                let c = created
                    .and_then(|c| convert::time_at(c.as_ref(), i))
                    .unwrap_or(Nanos::MIN);
                // Event times are inside the window, which is inside the range (check_window).
                if c != Nanos::MIN {
                    quiver_core::range::check_nanos(c).map_err(|e| {
                        Error::unprocessable(format!(
                            "feature view {}: {path}: created time column, row {}: {e}",
                            plan.view,
                            latest.scanned + i as u64
                        ))
                    })?;
                }
                key.clear();
                let row = if n_keys == 0 { 0 } else { i };
                keys.encode(&mut key, &key_columns, row).map_err(|e| {
                    Error::unprocessable(format!(
                        "feature view {}: {path}: row {}: join keys: {e}",
                        plan.view,
                        latest.scanned + i as u64
                    ))
                })?;
                if !plan.shard.contains(&key) || !partition.contains(&key) {
                    continue;
                }
                latest.in_window += 1;
                // One hash and one probe per row: the map is large (a slot per entity), so
                // each probe is a cache miss.
                let entry = latest.rows.entry_ref(&key[..]);
                if let EntryRef::Occupied(w) = &entry
                    && (t, c) < (w.get().ts, w.get().created)
                {
                    continue;
                }
                values.clear();
                for (j, (column, value_type)) in plan.features.iter().enumerate() {
                    let at = values.len();
                    values.extend_from_slice(&[0; 4]);
                    convert::encode_at(
                        &mut values,
                        batch.column(features_at + j).as_ref(),
                        i,
                        *value_type,
                    )
                    .map_err(|e| {
                        Error::unprocessable(format!(
                            "feature view {}: {path}: column {column:?}, row {}: {e}",
                            plan.view,
                            latest.scanned + i as u64
                        ))
                    })?;
                    let len = (values.len() - at - 4) as u32;
                    values[at..at + 4].copy_from_slice(&len.to_le_bytes());
                }
                let winner = Winner {
                    ts: t,
                    created: c,
                    values: values.as_slice().into(),
                };
                match entry {
                    EntryRef::Occupied(mut w) => {
                        held = held + winner.values.len() - w.get().values.len();
                        *w.get_mut() = winner;
                    }
                    EntryRef::Vacant(v) => {
                        held += winner_bytes(key.len(), winner.values.len());
                        v.insert_with_key(key.as_slice().into(), winner);
                    }
                }
            }
            latest.scanned += batch.num_rows() as u64;
            progress(latest.scanned);
            if held > budget {
                return Ok(false);
            }
        }
        reader.join().map_err(|_| {
            Error::internal(format!(
                "feature view {}: the reader thread failed",
                plan.view
            ))
        })?;
        Ok(true)
    })?;
    Ok(complete.then_some(latest))
}

/// What the reader thread of a scan sends.
enum Item {
    /// A batch of a file (its path or URI, for messages).
    Batch(String, RecordBatch),
    /// The end of a segment: every row of it has been sent.
    SegmentEnd,
}

/// How writes go out.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Rows per write (one Redis pipeline pair, one SQLite transaction).
    pub batch_rows: usize,
    /// Writes in flight at once (Redis; SQLite has one writer).
    pub concurrency: usize,
    /// Redis `EXPIRE` after each write (Feast's `key_ttl_seconds`).
    pub key_ttl_seconds: Option<u64>,
    /// Retries of a failed batch, with the one backoff (exponential, full jitter) from
    /// `retry_backoff`, its cap doubling up to 1024 times it.
    pub retries: u32,
    pub retry_backoff: Duration,
    /// Most bytes the winners of one scan may hold; beyond, the keys are split by hash and
    /// scanned in several passes, so memory stays bounded whatever the window.
    pub memory_budget: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            batch_rows: 2000,
            concurrency: 8,
            key_ttl_seconds: None,
            retries: 4,
            retry_backoff: Duration::from_millis(200),
            memory_budget: 256 << 20,
        }
    }
}

fn into_write_row(key: Box<[u8]>, w: Winner) -> WriteRow {
    WriteRow::from_packed(
        key.into_vec(),
        convert::nanos_to_timestamp(w.ts),
        (w.created != Nanos::MIN).then(|| convert::nanos_to_timestamp(w.created)),
        w.values,
    )
}

async fn write_with_retries(
    store: &OnlineStore,
    layout: &Arc<ViewLayout>,
    rows: Arc<[WriteRow]>,
    options: &WriteOptions,
) -> Result<WriteStats, StoreError> {
    let mut attempt = 0;
    let mut backoff = Backoff::new(
        options.retry_backoff,
        options.retry_backoff.saturating_mul(1 << 10),
    );
    loop {
        match store
            .write(layout, Arc::clone(&rows), options.key_ttl_seconds)
            .await
        {
            Ok(stats) => return Ok(stats),
            Err(e @ StoreError::Corrupt(_)) => return Err(e),
            Err(e) if attempt >= options.retries => return Err(e),
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(view = %layout.name, error = %e, attempt = attempt + 1, ?wait, "online write failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

/// Writes the winners to the online store, `options.concurrency` batches at a time.
/// `progress` gets the rows handled so far. On a failure that outlives its retries, the error
/// says how far the view got (what was written stays written; a rerun skips it).
pub async fn write_latest(
    store: &OnlineStore,
    plan: &ViewPlan,
    latest: Latest,
    options: &WriteOptions,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<WriteStats, Error> {
    let total = latest.rows.len() as u64;
    let mut writer = Writer::new(store, plan, options);
    for (key, winner) in latest.rows {
        writer
            .push(into_write_row(key, winner), progress)
            .await
            .map_err(|e| writer.failed(Some(total), e))?;
    }
    writer.finish(Some(total), progress).await
}

/// Why a batch write failed: the store (after its retries), or the task running it.
#[derive(Debug)]
pub enum WriteFailure {
    Store(StoreError),
    /// The write's task panicked or was cancelled.
    Task(String),
}

/// Rows going out to the online store in batches, a bounded number in flight.
pub struct Writer<'a> {
    store: &'a OnlineStore,
    view: String,
    layout: Arc<ViewLayout>,
    options: &'a WriteOptions,
    batch_rows: usize,
    concurrency: usize,
    batch: Vec<WriteRow>,
    in_flight: tokio::task::JoinSet<(u64, Result<WriteStats, StoreError>)>,
    stats: WriteStats,
    /// Rows whose batch has been written.
    done: u64,
}

impl<'a> Writer<'a> {
    pub fn new(store: &'a OnlineStore, plan: &ViewPlan, options: &'a WriteOptions) -> Writer<'a> {
        Writer::with_layout(store, &plan.view, Arc::clone(&plan.layout), options)
    }

    /// A writer of `view`'s rows laid out as `layout`.
    pub fn with_layout(
        store: &'a OnlineStore,
        view: &str,
        layout: Arc<ViewLayout>,
        options: &'a WriteOptions,
    ) -> Writer<'a> {
        let (batch_rows, concurrency) = match store {
            // One transaction per batch: SQLite prefers them large, and has one writer.
            OnlineStore::Sqlite(_) => (options.batch_rows.max(20_000), 1),
            OnlineStore::Redis(_) => (options.batch_rows.max(1), options.concurrency.max(1)),
        };
        Writer {
            store,
            view: view.to_owned(),
            layout,
            options,
            batch_rows,
            concurrency,
            batch: Vec::with_capacity(batch_rows),
            in_flight: tokio::task::JoinSet::new(),
            stats: WriteStats::default(),
            done: 0,
        }
    }

    /// Adds a row; a full batch goes out, after waiting for room among those in flight.
    pub async fn push(
        &mut self,
        row: WriteRow,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), WriteFailure> {
        self.batch.push(row);
        if self.batch.len() >= self.batch_rows {
            self.send(progress).await?;
        }
        Ok(())
    }

    async fn send(&mut self, progress: &mut (dyn FnMut(u64) + Send)) -> Result<(), WriteFailure> {
        while self.in_flight.len() >= self.concurrency {
            let Some(joined) = self.in_flight.join_next().await else {
                break;
            };
            self.settle(joined, progress)?;
        }
        let rows = std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_rows));
        let store = self.store.clone();
        let layout = Arc::clone(&self.layout);
        let options = self.options.clone();
        self.in_flight.spawn(async move {
            let n = rows.len() as u64;
            (
                n,
                write_with_retries(&store, &layout, rows.into(), &options).await,
            )
        });
        Ok(())
    }

    /// Counts a finished batch write (rows, stats, progress), or gives its error.
    fn settle(
        &mut self,
        joined: Result<(u64, Result<WriteStats, StoreError>), tokio::task::JoinError>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), WriteFailure> {
        let (n, written) = joined.map_err(|e| WriteFailure::Task(e.to_string()))?;
        self.stats += written.map_err(WriteFailure::Store)?;
        self.done += n;
        progress(self.done);
        Ok(())
    }

    /// The error of a failed write, saying how far the view got (of `total` rows, when known).
    pub fn failed(&self, total: Option<u64>, e: WriteFailure) -> Error {
        let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
        let context = format!(
            "feature view {}: online write failed after {}{of} rows",
            self.view, self.done
        );
        match e {
            WriteFailure::Store(e) => Error::wrap(context, e),
            WriteFailure::Task(e) => Error::internal(format!("{context}: {e}")),
        }
    }

    /// Sends the last batch and waits for every write.
    pub async fn finish(
        mut self,
        total: Option<u64>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<WriteStats, Error> {
        if !self.batch.is_empty() {
            self.send(progress)
                .await
                .map_err(|e| self.failed(total, e))?;
        }
        while let Some(joined) = self.in_flight.join_next().await {
            self.settle(joined, progress)
                .map_err(|e| self.failed(total, e))?;
        }
        Ok(self.stats)
    }
}

/// Materializes a view whose source falls into segments: [`scan_segmented`] on a blocking
/// thread, its rows written as they come. `None` when the keys outgrew the memory budget (the
/// rows written so far stay written: a whole-source rerun skips them as not newer).
async fn write_segmented(
    store: &OnlineStore,
    plan: &Arc<ViewPlan>,
    window: (Nanos, Nanos),
    segments: Vec<Segment>,
    options: &WriteOptions,
    view: &str,
    events: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<Option<(SegmentedScan, WriteStats, Duration)>, Error> {
    enum Msg {
        Scanned(u64),
        Rows(Vec<WriteRow>),
    }
    // Bounded: a scan far ahead of the writes waits instead of filling memory.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(4);
    let scan = {
        let plan = Arc::clone(plan);
        let budget = options.memory_budget;
        tokio::task::spawn_blocking(move || {
            let began = std::time::Instant::now();
            let progress = tx.clone();
            let found = scan_segmented(
                &plan,
                window,
                &segments,
                budget,
                // Progress is best effort: it never holds the scan up.
                &mut |rows| {
                    let _ = progress.try_send(Msg::Scanned(rows));
                },
                &mut |rows| {
                    tx.blocking_send(Msg::Rows(rows))
                        .map_err(|_| Error::internal("the online writes stopped"))
                },
            );
            (found, began.elapsed())
        })
    };
    let mut writer = Writer::new(store, plan, options);
    // Writes are counted once the scan is done and their total known.
    let mut quiet = |_: u64| {};
    let mut failed = None;
    'receive: while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Scanned(rows) => events(Event::Scanned { view, rows }),
            Msg::Rows(rows) => {
                for row in rows {
                    if let Err(e) = writer.push(row, &mut quiet).await {
                        failed = Some(e);
                        break 'receive;
                    }
                }
            }
        }
    }
    // A failed write stops the scan (its sends fail once the receiver is gone).
    drop(rx);
    let joined = scan.await;
    if let Some(e) = failed {
        return Err(writer.failed(None, e));
    }
    let (found, scan_elapsed) =
        joined.map_err(|e| Error::internal(format!("feature view {view}: scan stopped: {e}")))?;
    let found = match found {
        Ok(found) => found,
        Err(e) => {
            // A bad row in an older segment, found after newer segments went out: let those
            // writes settle, and say what was written.
            let stats = writer.finish(None, &mut quiet).await?;
            return Err(after_writes(e, stats.written));
        }
    };
    let Some(found) = found else {
        writer.finish(None, &mut quiet).await?;
        return Ok(None);
    };
    events(Event::Writing {
        view,
        rows: found.entities,
    });
    let stats = writer
        .finish(Some(found.entities), &mut |rows| {
            events(Event::Written { view, rows })
        })
        .await?;
    Ok(Some((found, stats, scan_elapsed)))
}

/// `e`, a refusal of a source row found after `written` rows of newer segments were written:
/// the message says what was written and why it is safe.
fn after_writes(e: Error, written: u64) -> Error {
    if written == 0 {
        return e;
    }
    let note = format!(
        " ({written} rows of newer segments were written first, each its key's latest row in \
         the window; no interval is recorded: fix the source and rerun, and the rows already \
         written are skipped)"
    );
    match e {
        Error::BadRequest(m) => Error::BadRequest(m + &note),
        Error::Unprocessable(m) => Error::Unprocessable(m + &note),
        other => other,
    }
}

/// Which time window to materialize.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Window {
    /// `materialize START END`.
    Range { start: Timestamp, end: Timestamp },
    /// `materialize-incremental END`: from each view's latest recorded end; with none, from
    /// `now - ttl` (or `now - 52 weeks` when the view has no ttl), as Feast does.
    Incremental { end: Timestamp },
}

/// How far in the future an END may be before it is refused (clock skew between machines): the
/// registry service refuses to record such an end with the same bound.
pub use quiver_registry::store::FUTURE_END_TOLERANCE;

/// Progress of a run, for progress bars and logs.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// About to scan `rows` rows (after row-group pruning) for `view`.
    Scanning {
        view: &'a str,
        rows: u64,
    },
    Scanned {
        view: &'a str,
        rows: u64,
    },
    /// About to write `rows` entity rows.
    Writing {
        view: &'a str,
        rows: u64,
    },
    Written {
        view: &'a str,
        rows: u64,
    },
    Done {
        view: &'a str,
        run: &'a ViewRun,
    },
}

/// What one view's materialization did.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewRun {
    pub view: String,
    pub start: Timestamp,
    pub end: Timestamp,
    /// Rows read from the source files.
    pub scanned: u64,
    /// Rows inside the window.
    pub in_window: u64,
    /// Distinct entity keys in the window (rows offered to the store).
    pub entities: u64,
    pub stats: WriteStats,
    /// Scans of the sources: 1, or more when the entities outgrew the memory budget.
    pub passes: u32,
    /// Time segments the source was read in, newest first, each written while the next was
    /// read ([`segments`]); 0 when it was read whole, then written.
    pub segments: usize,
    /// Time spent reading the sources (with segments, the writes overlap it; without, the
    /// rest of `elapsed` is writing).
    pub scan_elapsed: Duration,
    pub elapsed: Duration,
}

/// Picks the views to materialize: the named ones (an unknown or offline-only name is an error)
/// or every online view.
pub fn select_views<'a>(
    registry: &'a ProjectRegistry,
    names: &[String],
) -> Result<Vec<&'a FeatureView>, Error> {
    // Label views take labels by push only: Feast's materialize leaves them out, and refuses
    // one named.
    if names.is_empty() {
        return Ok(registry
            .feature_views
            .iter()
            .filter(|v| v.online && v.label_options().is_none())
            .collect());
    }
    names
        .iter()
        .map(|n| {
            let view = registry.feature_view(n).ok_or_else(|| {
                let known: Vec<&str> = registry
                    .feature_views
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect();
                Error::not_found(format!(
                    "unknown feature view {n:?} in project {} (known: {})",
                    registry.project,
                    known.join(", ")
                ))
            })?;
            if view.label_options().is_some() {
                return Err(Error::unprocessable(format!(
                    "LabelView {n} cannot be materialized via materialize(). Use push to write labels \
                     (POST /push to its push source)."
                )));
            }
            if !view.online {
                return Err(Error::unprocessable(format!(
                    "feature view {n} has online: false; there is nothing to materialize"
                )));
            }
            Ok(view)
        })
        .collect()
}

/// The window of one view for a run started at `now`.
pub fn view_window(view: &FeatureView, window: Window, now: Timestamp) -> (Timestamp, Timestamp) {
    match window {
        Window::Range { start, end } => (start, end),
        Window::Incremental { end } => {
            let start = view
                .materialization_intervals
                .iter()
                .map(|(_, e)| *e)
                .max_by_key(|e| (e.seconds, e.nanos))
                .unwrap_or_else(|| {
                    let back = if view.ttl.is_zero() {
                        Duration::from_secs(52 * 7 * 86_400)
                    } else {
                        view.ttl
                    };
                    convert::nanos_to_timestamp(
                        convert::timestamp_to_nanos(&now) - back.as_nanos() as Nanos,
                    )
                });
            (start, end)
        }
    }
}

/// Checks a window: START before END, END not in the future beyond the tolerance unless forced.
pub fn check_window(
    start: Timestamp,
    end: Timestamp,
    now: Timestamp,
    allow_future_end: bool,
) -> Result<(), Error> {
    let (s, e) = (
        convert::timestamp_to_nanos(&start),
        convert::timestamp_to_nanos(&end),
    );
    if s > e {
        return Err(Error::bad_request(format!(
            "START {} is after END {}",
            quiver_core::time::format_rfc3339(&start),
            quiver_core::time::format_rfc3339(&end)
        )));
    }
    let limit = convert::timestamp_to_nanos(&now) + FUTURE_END_TOLERANCE.as_nanos() as Nanos;
    if e > limit && !allow_future_end {
        return Err(Error::bad_request(format!(
            "END {} is in the future: a later materialize-incremental would start there and skip \
             every row written until then (Feast issue 4222). Use an END up to now, or --force",
            quiver_core::time::format_rfc3339(&end)
        )));
    }
    for (name, t) in [("START", s), ("END", e)] {
        quiver_core::range::check_nanos(t)
            .map_err(|err| Error::bad_request(format!("{name}: {err}")))?;
    }
    Ok(())
}

/// What to materialize: which views of which registry, over which window, as of when.
pub struct Job<'a> {
    /// The repo folder that relative source paths are resolved against.
    pub repo_dir: &'a Path,
    pub registry: &'a ProjectRegistry,
    pub views: Vec<&'a FeatureView>,
    pub window: Window,
    /// When the run started (incremental windows without a recorded run count back from it).
    pub now: Timestamp,
    /// The share of the entity keys to write ([`Shard::ALL`]: every key).
    pub shard: Shard,
}

/// Materializes the job's views into `store`: every view is planned and checked first (nothing
/// is written when one of them is wrong), then scanned and written one after another.
/// Recording the intervals in the registry is the caller's, once every view succeeded.
pub async fn run(
    job: &Job<'_>,
    store: &OnlineStore,
    options: &WriteOptions,
    events: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<Vec<ViewRun>, Error> {
    let Job {
        repo_dir,
        registry,
        window,
        now,
        ..
    } = *job;
    let views = &job.views;
    let mut plans = Vec::with_capacity(views.len());
    for view in views {
        let (start, end) = view_window(view, window, now);
        let nanos = (
            convert::timestamp_to_nanos(&start),
            convert::timestamp_to_nanos(&end),
        );
        let mut plan = plan_view(registry, view, repo_dir, Some(nanos)).await?;
        plan.shard = job.shard;
        plans.push((plan, start, end, nanos));
    }
    let mut runs = Vec::with_capacity(plans.len());
    for (plan, start, end, nanos) in plans {
        let began = std::time::Instant::now();
        let view = plan.view.clone();
        events(Event::Scanning {
            view: &view,
            rows: plan.rows_to_scan(),
        });
        let plan = Arc::new(plan);
        // Usually one pass. When the winners of a pass outgrow the memory budget, its keys are
        // split in two by hash and each half is scanned (and written) on its own.
        let mut pending = vec![Partition::ALL];
        let (mut scanned, mut in_window, mut entities, mut passes) = (0, 0, 0, 0);
        let mut stats = WriteStats::default();
        let mut scan_elapsed = Duration::ZERO;
        let mut read_in_segments = 0;
        // A source sorted by time (most event logs) falls into segments: writes start after
        // the newest one is read, while the older ones are still being read.
        if let Some(segments) = segments(&plan) {
            passes += 1;
            let count = segments.len();
            match write_segmented(store, &plan, nanos, segments, options, &view, events).await? {
                Some((scan, written, elapsed)) => {
                    scanned = scan.scanned;
                    in_window = scan.in_window;
                    entities = scan.entities;
                    stats = written;
                    scan_elapsed = elapsed;
                    read_in_segments = count;
                    pending.clear();
                }
                None => {
                    tracing::info!(view = %view, budget = options.memory_budget, "the window's entities outgrow the memory budget: scanning in partitions");
                    // Its keys alone passed the budget: the whole source's winners would too.
                    let [first, second] = Partition::ALL.split();
                    pending = vec![second, first];
                    events(Event::Scanning {
                        view: &view,
                        rows: plan.rows_to_scan(),
                    });
                }
            }
        }
        while let Some(partition) = pending.pop() {
            passes += 1;
            let scan_began = std::time::Instant::now();
            let latest = {
                let plan = Arc::clone(&plan);
                let budget = options.memory_budget;
                // The scan is CPU work: off the async threads. Progress goes through a channel.
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let scan = tokio::task::spawn_blocking(move || {
                    scan_latest(&plan, nanos, partition, budget, &mut |rows| {
                        let _ = tx.send(rows);
                    })
                });
                while let Some(rows) = rx.recv().await {
                    events(Event::Scanned { view: &view, rows });
                }
                scan.await.map_err(|e| {
                    Error::internal(format!("feature view {view}: scan stopped: {e}"))
                })??
            };
            scan_elapsed += scan_began.elapsed();
            let Some(latest) = latest else {
                if partition.count >= 1 << 16 {
                    return Err(Error::OutOfResources(format!(
                        "feature view {view}: even 1/{} of its entities do not fit the memory budget of {} bytes",
                        partition.count, options.memory_budget
                    )));
                }
                let [first, second] = partition.split();
                tracing::info!(view = %view, partitions = first.count, budget = options.memory_budget, "the window's entities outgrow the memory budget: scanning in partitions");
                pending.push(second);
                pending.push(first);
                events(Event::Scanning {
                    view: &view,
                    rows: plan.rows_to_scan(),
                });
                continue;
            };
            scanned += latest.scanned;
            in_window += latest.in_window;
            entities += latest.len() as u64;
            events(Event::Writing {
                view: &view,
                rows: latest.len() as u64,
            });
            stats += write_latest(store, &plan, latest, options, &mut |rows| {
                events(Event::Written { view: &view, rows })
            })
            .await?;
            if !pending.is_empty() {
                events(Event::Scanning {
                    view: &view,
                    rows: plan.rows_to_scan(),
                });
            }
        }
        let run = ViewRun {
            view: view.clone(),
            start,
            end,
            scanned,
            in_window,
            entities,
            stats,
            passes,
            segments: read_in_segments,
            scan_elapsed,
            elapsed: began.elapsed(),
        };
        events(Event::Done {
            view: &view,
            run: &run,
        });
        runs.push(run);
    }
    Ok(runs)
}

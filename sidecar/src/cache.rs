//! The sidecar's feature cache: (view, entity key) → the decoded row and its event time.
//!
//! Bounded by bytes and kept hot by CLOCK (second chance), an LRU approximation whose hits do
//! not write shared structures: the map is split into shards, each a hash map behind a
//! read-write lock plus a FIFO ring of its keys. A hit takes the shard's read lock for one hash
//! probe and sets the entry's `referenced` bit (only if it was clear). Inserting past the shard's
//! byte budget walks the ring: a referenced entry gets a second chance (bit cleared, back of the
//! ring), an unreferenced one is evicted. A true LRU list would splice on every hit, a handful of
//! cache misses per lookup that the serving benchmark measured as the top cost (see
//! benches/RESULTS.md). No lock is ever held across an `.await`.
//!
//! Freshness is decided by the reader ([`Entry::age`] against the bound in force), because the
//! bound depends on whether the online store's change feed is live.

use std::hash::{BuildHasher, Hash};

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use quiver_core::Value;
use quiver_core::time::Timestamp;

const SHARDS: usize = 64;

/// A view's identity in the cache: a hash of its name and schema, so that a registry change to a
/// view's features makes its old entries unreachable (they age out through the CLOCK ring).
pub type ViewId = u64;

/// Entity key bytes, held inline up to 48 bytes (a single Int64 or short String key): one
/// pointer chase less per lookup than a boxed slice.
pub type EntityBytes = smallvec::SmallVec<[u8; INLINE_KEY]>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub view: ViewId,
    /// Entity key, serialization v3 (no project suffix).
    pub entity: EntityBytes,
}

/// A row as the online store had it, with its response JSON rendered once, when it is cached,
/// so that a hit only copies bytes. The JSON of every value and of the event time sit in one
/// buffer (one allocation to touch per row, not one per value).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub event_ts: Timestamp,
    /// Every feature of the view, in the view's order.
    pub values: Vec<Value>,
    /// The JSON of each value, then of the event time (a quoted RFC 3339 string).
    text: Box<str>,
    /// Where each piece of `text` ends; inline (in the entry's own allocation) for views of up
    /// to 15 features, so a hit touches one allocation less.
    ends: smallvec::SmallVec<[u32; 16]>,
    /// The features whose stored value did not decode (their value is null, their status
    /// INVALID); empty (no allocation) for every healthy row.
    corrupt: Box<[u32]>,
}

impl Row {
    pub fn new(event_ts: Timestamp, values: Vec<Value>) -> Row {
        Row::with_corrupt(event_ts, values, Vec::new())
    }

    /// A row some of whose stored values did not decode: `corrupt` lists those features (their
    /// `values` are null).
    pub fn with_corrupt(event_ts: Timestamp, values: Vec<Value>, corrupt: Vec<u32>) -> Row {
        let mut text = String::with_capacity(values.len() * 12 + 32);
        let mut ends = smallvec::SmallVec::with_capacity(values.len() + 1);
        for v in &values {
            quiver_core::json::write_value(&mut text, v);
            ends.push(text.len() as u32);
        }
        text.push('"');
        quiver_core::time::write_rfc3339(
            &mut text,
            event_ts.seconds,
            event_ts.nanos.clamp(0, 999_999_999) as u32,
        );
        text.push('"');
        ends.push(text.len() as u32);
        Row {
            event_ts,
            values,
            text: text.into_boxed_str(),
            ends,
            corrupt: corrupt.into_boxed_slice(),
        }
    }

    /// Whether any stored value of the row failed to decode.
    #[inline]
    pub fn has_corrupt(&self) -> bool {
        !self.corrupt.is_empty()
    }

    /// Whether feature `i`'s stored value failed to decode.
    #[inline]
    pub fn is_corrupt(&self, i: usize) -> bool {
        self.corrupt.iter().any(|&c| c as usize == i)
    }

    fn piece(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..end)
    }

    /// The JSON of value `i`.
    pub fn value_json(&self, i: usize) -> Option<&str> {
        if i >= self.values.len() {
            return None;
        }
        self.piece(i)
    }

    /// The event time as a JSON string.
    pub fn ts_json(&self) -> &str {
        self.piece(self.values.len())
            .unwrap_or("\"1970-01-01T00:00:00Z\"")
    }

    fn text_bytes(&self) -> usize {
        self.text.len() + self.ends.len() * 4 + self.corrupt.len() * 4 + 32
    }
}

/// A cached read: the row, or `None` when the entity was never written (a negative entry).
#[derive(Debug)]
pub struct Entry {
    pub row: Option<Row>,
    pub fetched: Instant,
    /// Whether a live change feed covered this entry from its read on, so that the longer
    /// staleness bound may apply.
    pub watched: bool,
    pub bytes: usize,
    /// CLOCK's reference bit: set by hits, cleared when the ring passes over the entry.
    referenced: AtomicBool,
}

/// What an entry costs beyond its payload: the `Entry` behind its `Arc` header (two counters),
/// its key and pointer in the shard's map and again in the CLOCK ring, each table charged 1.5×
/// for the spare capacity it grows by doubling. Without these the cache held its budget by its
/// own count while the process held twice that (benches/RESULTS.md, "The lean sidecar").
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>()
    + 2 * std::mem::size_of::<usize>()
    + (std::mem::size_of::<(CacheKey, Arc<Entry>)>()
        + std::mem::size_of::<(CacheKey, Weak<Entry>)>())
        * 3
        / 2;

/// Entity keys up to this long sit inside the `CacheKey`; longer ones are allocated, once for the
/// map's key and once for the ring's.
const INLINE_KEY: usize = 48;

impl Entry {
    pub fn new(row: Option<Row>, fetched: Instant, watched: bool, key_len: usize) -> Entry {
        let key_heap = if key_len > INLINE_KEY { 2 * key_len } else { 0 };
        let bytes = ENTRY_OVERHEAD
            + key_heap
            + row.as_ref().map_or(0, |r| {
                r.values.iter().map(value_bytes).sum::<usize>() + r.text_bytes()
            });
        Entry {
            row,
            fetched,
            watched,
            bytes,
            referenced: AtomicBool::new(false),
        }
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.fetched)
    }
}

/// An estimate of the heap a value holds, for the byte bound.
pub fn value_bytes(v: &Value) -> usize {
    let base = std::mem::size_of::<Value>();
    base + match v {
        Value::Bytes(b) => b.len(),
        Value::String(s)
        | Value::Json(s)
        | Value::Uuid(s)
        | Value::TimeUuid(s)
        | Value::Decimal(s) => s.len(),
        Value::ZonedTimestamp { zone, .. } => zone.len(),
        Value::BytesList(l) | Value::BytesSet(l) => l.iter().map(|b| b.len() + 24).sum(),
        Value::StringList(l)
        | Value::StringSet(l)
        | Value::JsonList(l)
        | Value::UuidList(l)
        | Value::TimeUuidList(l)
        | Value::UuidSet(l)
        | Value::TimeUuidSet(l)
        | Value::DecimalList(l)
        | Value::DecimalSet(l) => l.iter().map(|s| s.len() + 24).sum(),
        Value::ValueList(l) | Value::ValueSet(l) => l.iter().map(value_bytes).sum(),
        Value::ScalarMap(m) => m.iter().map(|(_, v)| 48 + value_bytes(v)).sum(),
        Value::Int32List(l) | Value::Int32Set(l) => l.len() * 4,
        Value::FloatList(l) | Value::FloatSet(l) => l.len() * 4,
        Value::Int64List(l)
        | Value::Int64Set(l)
        | Value::UnixTimestampList(l)
        | Value::UnixTimestampSet(l) => l.len() * 8,
        Value::DoubleList(l) | Value::DoubleSet(l) => l.len() * 8,
        Value::BoolList(l) | Value::BoolSet(l) => l.len(),
        Value::Map(m) | Value::Struct(m) => {
            m.iter().map(|(k, v)| k.len() + 48 + value_bytes(v)).sum()
        }
        Value::MapList(l) | Value::StructList(l) => l
            .iter()
            .flat_map(|m| m.iter())
            .map(|(k, v)| k.len() + 48 + value_bytes(v))
            .sum(),
        _ => 0,
    }
}

type Hasher = foldhash::fast::RandomState;

struct Shard {
    map: HashMap<CacheKey, Arc<Entry>, Hasher>,
    /// Keys in insertion order, with the entry each was queued for (a key removed and inserted
    /// again is queued again; its stale place in the ring is skipped).
    ring: VecDeque<(CacheKey, Weak<Entry>)>,
    bytes: usize,
}

/// What one cache operation evicted, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    pub entries: u64,
}

pub struct Cache {
    shards: Box<[RwLock<Shard>]>,
    shard_budget: usize,
    /// `--cache-bytes 0`: nothing is stored; inserts and removals take no lock.
    disabled: bool,
    hasher: Hasher,
}

impl Cache {
    /// A cache holding at most about `max_bytes` (estimated) of entries.
    pub fn new(max_bytes: usize) -> Cache {
        let shards = (0..SHARDS)
            .map(|_| {
                RwLock::new(Shard {
                    map: HashMap::with_hasher(Hasher::default()),
                    ring: VecDeque::new(),
                    bytes: 0,
                })
            })
            .collect();
        Cache {
            shards,
            shard_budget: (max_bytes / SHARDS).max(1),
            disabled: max_bytes == 0,
            hasher: Default::default(),
        }
    }

    fn shard(&self, key: &CacheKey) -> &RwLock<Shard> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// The entry for `key`, marked as recently used.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        let shard = self.shard(key).read().ok()?;
        let entry = shard.map.get(key)?;
        if !entry.referenced.load(Relaxed) {
            entry.referenced.store(true, Relaxed);
        }
        Some(Arc::clone(entry))
    }

    /// Looks up several keys at once and hands `f` the entries in place (`None` for a miss),
    /// under the read locks of their shards: no reference counts change, and the lookups do not
    /// wait for each other's memory reads. `f` must be short: writers to those shards wait.
    pub fn with_entries<R>(&self, keys: &[&CacheKey], f: impl FnOnce(&[Option<&Entry>]) -> R) -> R {
        let shard_of: smallvec::SmallVec<[usize; 16]> = keys
            .iter()
            .map(|k| (self.hasher.hash_one(k) as usize) % SHARDS)
            .collect();
        let mut wanted: smallvec::SmallVec<[usize; 16]> = shard_of.clone();
        wanted.sort_unstable();
        wanted.dedup();
        let guards: smallvec::SmallVec<[(usize, std::sync::RwLockReadGuard<'_, Shard>); 16]> =
            wanted
                .iter()
                .filter_map(|&i| self.shards[i].read().ok().map(|g| (i, g)))
                .collect();
        let found: smallvec::SmallVec<[Option<&Entry>; 16]> = keys
            .iter()
            .zip(&shard_of)
            .map(|(k, shard)| {
                let (_, guard) = guards.iter().find(|(i, _)| i == shard)?;
                let entry = guard.map.get(*k)?;
                if !entry.referenced.load(Relaxed) {
                    entry.referenced.store(true, Relaxed);
                }
                Some(entry.as_ref())
            })
            .collect();
        f(&found)
    }

    /// Stores an entry, evicting entries of its shard (CLOCK order) to stay within the budget.
    /// An entry larger than a whole shard's budget is not kept.
    pub fn insert(&self, key: CacheKey, entry: Arc<Entry>) -> Evicted {
        let mut evicted = Evicted::default();
        if self.disabled {
            return evicted;
        }
        let Ok(mut guard) = self.shard(&key).write() else {
            return evicted;
        };
        let shard = &mut *guard;
        if entry.bytes > self.shard_budget {
            if let Some(old) = shard.map.remove(&key) {
                shard.bytes -= old.bytes;
            }
            return evicted;
        }
        shard.bytes += entry.bytes;
        shard.ring.push_back((key.clone(), Arc::downgrade(&entry)));
        if let Some(old) = shard.map.insert(key, entry) {
            shard.bytes -= old.bytes;
        }
        // Each entry gets at most one second chance per pass: two laps bound the walk.
        let mut budget = shard.ring.len() * 2;
        while shard.bytes > self.shard_budget && budget > 0 {
            budget -= 1;
            let Some((k, queued)) = shard.ring.pop_front() else {
                break;
            };
            let Some(current) = shard.map.get(&k) else {
                continue;
            };
            if !std::ptr::eq(current.as_ref(), queued.as_ptr()) {
                continue; // a stale place: the key was replaced since
            }
            if current.referenced.swap(false, Relaxed) {
                shard.ring.push_back((k, queued));
                continue;
            }
            if let Some(old) = shard.map.remove(&k) {
                shard.bytes -= old.bytes;
                evicted.entries += 1;
            }
        }
        // Keep the ring from growing without bound with stale places.
        if shard.ring.len() > shard.map.len() * 2 + 64 {
            let map = &shard.map;
            shard.ring.retain(|(k, q)| {
                map.get(k)
                    .is_some_and(|e| std::ptr::eq(e.as_ref(), q.as_ptr()))
            });
        }
        evicted
    }

    /// Drops the entry for `key`; whether there was one.
    pub fn remove(&self, key: &CacheKey) -> bool {
        if self.disabled {
            return false;
        }
        let Ok(mut shard) = self.shard(key).write() else {
            return false;
        };
        match shard.map.remove(key) {
            Some(old) => {
                shard.bytes -= old.bytes;
                true
            }
            None => false,
        }
    }

    /// Drops everything (e.g. when a store without per-key notifications reports a change).
    pub fn clear(&self) -> u64 {
        let mut n = 0;
        for s in self.shards.iter() {
            if let Ok(mut shard) = s.write() {
                n += shard.map.len() as u64;
                shard.map.clear();
                shard.ring.clear();
                shard.bytes = 0;
            }
        }
        n
    }

    /// (bytes, entries) held.
    pub fn size(&self) -> (u64, u64) {
        let mut bytes = 0;
        let mut entries = 0;
        for s in self.shards.iter() {
            if let Ok(shard) = s.read() {
                bytes += shard.bytes as u64;
                entries += shard.map.len() as u64;
            }
        }
        (bytes, entries)
    }
}

impl Default for Cache {
    fn default() -> Cache {
        Cache::new(256 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(values: usize) -> Arc<Entry> {
        let row = Row::new(Timestamp::default(), vec![Value::Int64(1); values]);
        Arc::new(Entry::new(Some(row), Instant::now(), false, 16))
    }

    fn key(view: u64, id: u32) -> CacheKey {
        CacheKey {
            view,
            entity: EntityBytes::from_slice(&id.to_le_bytes()),
        }
    }

    #[test]
    fn stays_within_the_byte_bound_and_keeps_the_hot_set() {
        let one = entry(4).bytes;
        // Room for about 20 entries per shard.
        let cache = Cache::new(one * 20 * SHARDS);
        for id in 0..100 {
            cache.insert(key(1, id), entry(4));
        }
        // Touch the first 10 keys often while many others stream through.
        let mut evicted = 0;
        for round in 0..50u32 {
            for id in 0..10 {
                assert!(
                    cache.get(&key(1, id)).is_some(),
                    "hot key {id} evicted in round {round}"
                );
            }
            for id in 0..200 {
                evicted += cache.insert(key(2, round * 1000 + id), entry(4)).entries;
            }
        }
        assert!(evicted > 0);
        let (bytes, entries) = cache.size();
        assert!(bytes as usize <= one * 20 * SHARDS, "{bytes} bytes held");
        assert!(entries > 0);
    }

    #[test]
    fn remove_and_clear_account_for_bytes() {
        let cache = Cache::new(1 << 20);
        cache.insert(key(1, 1), entry(2));
        cache.insert(key(1, 2), entry(2));
        assert!(cache.remove(&key(1, 1)));
        assert!(!cache.remove(&key(1, 1)));
        assert_eq!(cache.size().1, 1);
        assert_eq!(cache.clear(), 1);
        assert_eq!(cache.size(), (0, 0));
    }

    #[test]
    fn a_cache_of_zero_bytes_keeps_nothing() {
        let cache = Cache::new(0);
        assert_eq!(cache.insert(key(1, 1), entry(1)), Evicted::default());
        assert!(cache.get(&key(1, 1)).is_none());
        assert!(!cache.remove(&key(1, 1)));
        assert_eq!(cache.size(), (0, 0));
    }

    #[test]
    fn the_estimate_charges_the_tables_and_long_keys() {
        let empty = Entry::new(None, Instant::now(), false, 8).bytes;
        let held = std::mem::size_of::<Entry>()
            + std::mem::size_of::<(CacheKey, Arc<Entry>)>()
            + std::mem::size_of::<(CacheKey, Weak<Entry>)>();
        assert!(empty >= held, "{empty} < {held}");
        // A key past the inline size is allocated for the map and again for the ring.
        let long = Entry::new(None, Instant::now(), false, 100).bytes;
        assert_eq!(long - empty, 200);
        // A row adds its values and its rendered text.
        assert!(entry(4).bytes > Entry::new(None, Instant::now(), false, 16).bytes + 4 * 8);
    }

    #[test]
    fn oversized_entries_are_not_kept() {
        let cache = Cache::new(SHARDS * 10);
        cache.insert(key(1, 1), entry(100));
        assert!(cache.get(&key(1, 1)).is_none());
    }
}

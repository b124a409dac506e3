//! Feast's SQLite layout: a table `{project}_{view}` per view, a row per (entity, feature).
//!
//! rusqlite is synchronous, so reads run on tokio's blocking pool over a small pool of read-only
//! connections. A missing database file or table means nothing was materialized yet: every
//! entity reads as never written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use quiver_core::time::{self, Timestamp};
use rusqlite::{Connection, OpenFlags, types::ValueRef};

use crate::{KeyRead, ReadResult, StoreError, StoredRow, ViewLayout, WriteRow, WriteStats};

/// At most this many keys in one `IN (...)` list (SQLite's default limit is 32766 variables).
const CHUNK: usize = 500;
const POOL_SIZE: usize = 4;

pub struct SqliteStore {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
    /// The one read-write connection, opened on the first write.
    writer: Mutex<Option<Connection>>,
}

fn sql_error(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {e}"))
}

impl SqliteStore {
    pub fn open(path: &Path) -> SqliteStore {
        SqliteStore {
            path: path.to_path_buf(),
            pool: Mutex::new(Vec::new()),
            writer: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn connection(&self) -> Result<Option<Connection>, StoreError> {
        if let Some(conn) = self.pool.lock().ok().and_then(|mut p| p.pop()) {
            return Ok(Some(conn));
        }
        if !self.path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(sql_error)?;
        conn.busy_timeout(std::time::Duration::from_millis(50))
            .map_err(sql_error)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Some(conn))
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < POOL_SIZE
        {
            pool.push(conn);
        }
    }

    pub async fn read(
        self: &Arc<Self>,
        layouts: &[Arc<ViewLayout>],
        reads: &[KeyRead<'_>],
    ) -> Result<ReadResult, StoreError> {
        // Owned copies for the blocking thread.
        let layouts: Vec<Arc<ViewLayout>> = layouts.to_vec();
        let reads: Vec<(Vec<u8>, Vec<usize>)> = reads
            .iter()
            .map(|r| (r.entity_key.to_vec(), r.views.to_vec()))
            .collect();
        let store = Arc::clone(self);
        tokio::task::spawn_blocking(move || store.read_blocking(&layouts, &reads))
            .await
            .map_err(|e| StoreError::Unavailable(format!("sqlite reader stopped: {e}")))?
    }

    fn read_blocking(
        &self,
        layouts: &[Arc<ViewLayout>],
        reads: &[(Vec<u8>, Vec<usize>)],
    ) -> Result<ReadResult, StoreError> {
        let mut out: ReadResult = reads
            .iter()
            .map(|(_, views)| vec![None; views.len()])
            .collect();
        let Some(conn) = self.connection()? else {
            return Ok(out);
        };
        // view index -> the (read index, slot) pairs that want it, and their keys.
        let mut by_view: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
        for (i, (_, views)) in reads.iter().enumerate() {
            for (slot, &v) in views.iter().enumerate() {
                by_view.entry(v).or_default().push((i, slot));
            }
        }
        let result = (|| {
            for (v, wanted) in &by_view {
                let layout = layouts
                    .get(*v)
                    .ok_or_else(|| StoreError::Corrupt(format!("no layout {v}")))?;
                let keys: Vec<&[u8]> = wanted.iter().map(|(i, _)| reads[*i].0.as_slice()).collect();
                let rows = read_view(&conn, layout, &keys)?;
                for (i, slot) in wanted {
                    out[*i][*slot] = rows.get(reads[*i].0.as_slice()).cloned();
                }
            }
            Ok(())
        })();
        self.give_back(conn);
        result.map(|()| out)
    }

    /// The distinct entity keys of these views' tables.
    pub async fn scan_entity_keys(
        self: &Arc<Self>,
        layouts: &[Arc<ViewLayout>],
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let store = Arc::clone(self);
        let tables: Vec<String> = layouts.iter().map(|l| l.sqlite_table.clone()).collect();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            if let Some(conn) = store.connection()? {
                for table in &tables {
                    let mut stmt =
                        match conn.prepare(&format!("SELECT DISTINCT entity_key FROM {table}")) {
                            Ok(s) => s,
                            Err(e) if e.to_string().contains("no such table") => continue,
                            Err(e) => return Err(sql_error(e)),
                        };
                    let keys = stmt
                        .query_map([], |r| r.get::<_, Vec<u8>>(0))
                        .map_err(sql_error)?;
                    for k in keys {
                        out.push(k.map_err(sql_error)?);
                    }
                }
                store.give_back(conn);
            }
            out.sort_unstable();
            out.dedup();
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    pub async fn ping(self: &Arc<Self>) -> Result<(), StoreError> {
        let store = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            if let Some(conn) = store.connection()? {
                conn.query_row("SELECT 1", [], |_| Ok(()))
                    .map_err(sql_error)?;
                store.give_back(conn);
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    /// Writes rows of one view in one transaction, creating the database and the view's table
    /// (Feast's DDL) when missing.
    ///
    /// Feast 0.67 stores `event_ts` as integer epoch seconds (its reader parses nothing else) and
    /// overwrites unconditionally. quiver keeps the integer seconds and skips what is older:
    /// a stored feature is replaced by a later second, or, within the same second (where the
    /// stored time cannot tell which is newer), by a different value, so that two pushes for one
    /// key in one second end with the second one, as in Feast. An identical rewrite (a rerun)
    /// changes nothing and counts as skipped. A stored time that is not an integer (text, from
    /// older Feast versions) cannot be compared and is replaced.
    pub async fn write(
        self: &Arc<Self>,
        layout: &Arc<ViewLayout>,
        rows: Arc<[WriteRow]>,
    ) -> Result<WriteStats, StoreError> {
        let store = Arc::clone(self);
        let layout = Arc::clone(layout);
        tokio::task::spawn_blocking(move || store.write_blocking(&layout, &rows))
            .await
            .map_err(|e| StoreError::Unavailable(format!("sqlite writer stopped: {e}")))?
    }

    fn write_blocking(
        &self,
        layout: &ViewLayout,
        rows: &[WriteRow],
    ) -> Result<WriteStats, StoreError> {
        let mut guard = self
            .writer
            .lock()
            .map_err(|_| StoreError::Unavailable("sqlite writer poisoned".to_owned()))?;
        if guard.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            let conn = Connection::open(&self.path).map_err(sql_error)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(sql_error)?;
            *guard = Some(conn);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(StoreError::Unavailable("sqlite writer not open".to_owned()));
        };
        let table = &layout.sqlite_table;
        for ddl in &layout.sqlite_create {
            conn.execute(ddl, []).map_err(sql_error)?;
        }
        let tx = conn.transaction().map_err(sql_error)?;
        let mut stats = WriteStats::default();
        {
            let mut upsert = tx
                .prepare_cached(&format!(
                    "INSERT INTO {table} (entity_key, feature_name, value, event_ts, created_ts) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(entity_key, feature_name) DO UPDATE \
                     SET value = excluded.value, event_ts = excluded.event_ts, \
                     created_ts = excluded.created_ts \
                     WHERE excluded.event_ts > {table}.event_ts \
                     OR (excluded.event_ts = {table}.event_ts AND excluded.value IS NOT {table}.value) \
                     OR typeof({table}.event_ts) <> 'integer'"
                ))
                .map_err(sql_error)?;
            for row in rows {
                let created = row.created_ts.map(|c| c.seconds);
                let mut changed = 0;
                for (feature, value) in layout.features.iter().zip(row.values()) {
                    changed += upsert
                        .execute(rusqlite::params![
                            row.entity_key,
                            feature,
                            value,
                            row.event_ts.seconds,
                            created
                        ])
                        .map_err(sql_error)?;
                }
                if changed > 0 || layout.features.is_empty() {
                    stats.written += 1;
                } else {
                    stats.skipped += 1;
                }
            }
        }
        tx.commit().map_err(sql_error)?;
        Ok(stats)
    }

    /// SQLite's `PRAGMA data_version` on a dedicated connection: it changes whenever another
    /// connection commits, which is how a reader notices materialization. `None` while the
    /// database does not exist.
    pub fn data_version(&self, conn: &mut Option<Connection>) -> Result<Option<i64>, StoreError> {
        if conn.is_none() {
            if !self.path.exists() {
                return Ok(None);
            }
            *conn = Some(
                Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .map_err(sql_error)?,
            );
        }
        match conn {
            Some(c) => c
                .query_row("PRAGMA data_version", [], |r| r.get(0))
                .map(Some)
                .map_err(sql_error),
            None => Ok(None),
        }
    }
}

/// Reads one view's rows for `keys`: entity key -> row.
fn read_view(
    conn: &Connection,
    layout: &ViewLayout,
    keys: &[&[u8]],
) -> Result<HashMap<Vec<u8>, StoredRow>, StoreError> {
    let index: HashMap<&str, usize> = layout
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| (f.as_str(), i))
        .collect();
    let mut rows: HashMap<Vec<u8>, StoredRow> = HashMap::new();
    let mut unique: Vec<&[u8]> = keys.to_vec();
    unique.sort_unstable();
    unique.dedup();
    for chunk in unique.chunks(CHUNK) {
        let placeholders = vec!["?"; chunk.len()].join(",");
        let sql = format!(
            "SELECT entity_key, feature_name, value, event_ts FROM {} WHERE entity_key IN ({placeholders})",
            layout.sqlite_table
        );
        let mut stmt = match conn.prepare_cached(&sql) {
            Ok(s) => s,
            // Not materialized yet.
            Err(e) if e.to_string().contains("no such table") => return Ok(rows),
            Err(e) => return Err(sql_error(e)),
        };
        let mut q = stmt
            .query(rusqlite::params_from_iter(chunk.iter()))
            .map_err(sql_error)?;
        while let Some(r) = q.next().map_err(sql_error)? {
            let key: Vec<u8> = r.get(0).map_err(sql_error)?;
            let feature: String = r.get(1).map_err(sql_error)?;
            let value: Option<Vec<u8>> = r.get(2).map_err(sql_error)?;
            let event_ts = event_time(r.get_ref(3).map_err(sql_error)?)?;
            let Some(&slot) = index.get(feature.as_str()) else {
                continue;
            };
            let row = rows.entry(key).or_insert_with(|| StoredRow {
                event_ts,
                values: vec![None; layout.features.len()],
            });
            if (event_ts.seconds, event_ts.nanos) > (row.event_ts.seconds, row.event_ts.nanos) {
                row.event_ts = event_ts;
            }
            row.values[slot] = value;
        }
    }
    Ok(rows)
}

/// Feast 0.67 stores integer epoch seconds; older versions stored `YYYY-MM-DD HH:MM:SS[.f]` text.
fn event_time(v: ValueRef<'_>) -> Result<Timestamp, StoreError> {
    match v {
        ValueRef::Integer(s) => Ok(Timestamp {
            seconds: s,
            nanos: 0,
        }),
        ValueRef::Real(f) => Ok(Timestamp {
            seconds: f.floor() as i64,
            nanos: ((f - f.floor()) * 1e9) as i32,
        }),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .ok()
            .and_then(time::parse_datetime)
            .ok_or_else(|| {
                StoreError::Corrupt(format!("event_ts {:?}", String::from_utf8_lossy(t)))
            }),
        other => Err(StoreError::Corrupt(format!(
            "event_ts of type {:?}",
            other.data_type()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64, nanos: i32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    async fn write(
        store: &Arc<SqliteStore>,
        layout: &Arc<ViewLayout>,
        rows: &[(u8, Timestamp, &str)],
    ) -> WriteStats {
        let rows: Vec<WriteRow> = rows
            .iter()
            .map(|(key, ts, value)| WriteRow::new(vec![*key], *ts, None, &[value.as_bytes()]))
            .collect();
        store.write(layout, rows.into()).await.unwrap()
    }

    async fn read(
        store: &Arc<SqliteStore>,
        layout: &Arc<ViewLayout>,
        key: u8,
    ) -> Option<(i64, Vec<u8>)> {
        let keys = [key];
        let reads = [KeyRead {
            entity_key: &keys,
            views: &[0],
        }];
        let mut out = store
            .read(std::slice::from_ref(layout), &reads)
            .await
            .unwrap();
        let row = out.pop()?.pop()??;
        Some((row.event_ts.seconds, row.values[0].clone()?))
    }

    #[tokio::test]
    async fn the_write_rule_keeps_integer_seconds_and_the_last_value_of_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("online.db")));
        let layout = Arc::new(ViewLayout::new("p", "v", ["f".to_owned()]));

        // Two writes of one key within one second: the second one is kept, as Feast keeps it.
        let stats = write(&store, &layout, &[(1, at(100, 200_000_000), "a")]).await;
        assert_eq!((stats.written, stats.skipped), (1, 0));
        let stats = write(&store, &layout, &[(1, at(100, 700_000_000), "b")]).await;
        assert_eq!((stats.written, stats.skipped), (1, 0));
        assert_eq!(read(&store, &layout, 1).await, Some((100, b"b".to_vec())));

        // The same value again (a rerun) changes nothing and counts as skipped.
        let stats = write(&store, &layout, &[(1, at(100, 700_000_000), "b")]).await;
        assert_eq!((stats.written, stats.skipped), (0, 1));

        // An older second is skipped; a later one wins.
        let stats = write(&store, &layout, &[(1, at(99, 999_999_999), "old")]).await;
        assert_eq!((stats.written, stats.skipped), (0, 1));
        assert_eq!(read(&store, &layout, 1).await, Some((100, b"b".to_vec())));
        write(&store, &layout, &[(1, at(101, 0), "c")]).await;
        assert_eq!(read(&store, &layout, 1).await, Some((101, b"c".to_vec())));

        // Stored as Feast 0.67 stores it: integer seconds, the fraction dropped.
        let conn = Connection::open(dir.path().join("online.db")).unwrap();
        let (ts, kind): (i64, String) = conn
            .query_row("SELECT event_ts, typeof(event_ts) FROM p_v", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((ts, kind.as_str()), (101, "integer"));

        // A time stored as text by an older Feast cannot be compared: it is replaced.
        conn.execute("UPDATE p_v SET event_ts = '2026-01-01 00:00:00'", [])
            .unwrap();
        drop(conn);
        let stats = write(&store, &layout, &[(1, at(50, 0), "d")]).await;
        assert_eq!((stats.written, stats.skipped), (1, 0));
        assert_eq!(read(&store, &layout, 1).await, Some((50, b"d".to_vec())));
    }
}

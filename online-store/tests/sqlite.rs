//! The SQLite store (Feast's embedded default) on a real file: Feast's tables, reads, Feast's
//! write rule, the replicate scan, and a file another process wrote.

mod support;

use std::sync::Arc;

use quiver_online_store::{OnlineStore, SqliteStore, WriteStats};
use support::*;

#[tokio::test]
async fn reads_and_writes_feasts_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("online.db");
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(&path)));
    // No table yet: nothing stored, not an error.
    assert_eq!(read(&store, &[1]).await, [None]);

    let stats = store
        .write(
            &layout(),
            vec![row(1, 100, 10), row(2, 100, 20)].into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        stats,
        WriteStats {
            written: 2,
            skipped: 0
        }
    );
    assert_eq!(
        read(&store, &[1, 2, 3]).await,
        [expected(1, 100, 10), expected(2, 100, 20), None]
    );
    // Feast's table: `<project>_<view>`, a row per (entity, feature).
    let conn = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM demo_stats", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 4);

    // Older rows are skipped, newer ones replace.
    let stats = store
        .write(
            &layout(),
            vec![row(1, 50, 11), row(2, 200, 21)].into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        stats,
        WriteStats {
            written: 1,
            skipped: 1
        }
    );
    assert_eq!(
        read(&store, &[1, 2]).await,
        [expected(1, 100, 10), expected(2, 200, 21)]
    );

    let mut keys = store.scan_entity_keys(&[layout()]).await.unwrap();
    keys.sort();
    let mut want = vec![key(1), key(2)];
    want.sort();
    assert_eq!(keys, want);

    // A second store on the same file (another process, as far as SQLite knows) sees it all.
    let again = OnlineStore::Sqlite(Arc::new(SqliteStore::open(&path)));
    assert_eq!(
        read(&again, &[1, 2]).await,
        [expected(1, 100, 10), expected(2, 200, 21)]
    );
    again.ping().await.unwrap();
}

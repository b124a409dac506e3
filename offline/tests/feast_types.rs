//! The value-type matrix against what the real Feast 0.67 wrote (fixtures from
//! `compat/generate_types_fixtures.py`): quiver materializes Feast's own registry and Parquet
//! source (every scalar, list and set type, Map, Array(Map), Json, Array(Json), Struct,
//! Array(Struct), UnixTimestamp, UUIDs, and a driver null in every feature) into a real SQLite
//! file and a real redis-server, and must leave exactly the rows and hashes Feast's
//! `feast materialize` left. Map entries are compared as sets (Feast's order is a per-process
//! hash order); every other byte exactly. Feast's stored bytes, read back, print as the JSON
//! `feast serve` answered for them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quiver_core::time::parse_datetime;
use quiver_core::{Value, ValueType, json};
use quiver_offline::materialize::{self, Window, WriteOptions};
use quiver_online_store::{OnlineStore, RedisOptions, RedisStore, SqliteStore};
use quiver_testkit::RedisServer;
use quiver_testkit::feast::sorted_map_entries;
use serde_json::Value as Json;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feast_types")
}

fn expected() -> Json {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Feast's repo as `feast apply` left it: its registry and its Parquet source.
fn repo(online_store: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::copy(
        fixtures().join("registry.db"),
        dir.path().join("data/registry.db"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("data/types.parquet"),
        dir.path().join("data/types.parquet"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        format!("project: types_demo\nregistry: data/registry.db\nonline_store:\n{online_store}\n"),
    )
    .unwrap();
    dir
}

async fn materialize_types(dir: &Path, store: &OnlineStore) {
    let doc = expected();
    let window = &doc["window"];
    let registry = quiver_registry::store::read(&dir.join("data/registry.db"))
        .unwrap()
        .project("types_demo")
        .unwrap();
    // Both views, as `feast materialize` did: `types` and `sendable` (a subset of its features).
    let views = materialize::select_views(&registry, &[]).unwrap();
    let job = materialize::Job {
        repo_dir: dir,
        registry: &registry,
        views,
        window: Window::Range {
            start: parse_datetime(window[0].as_str().unwrap()).unwrap(),
            end: parse_datetime(window[1].as_str().unwrap()).unwrap(),
        },
        now: parse_datetime("2026-01-03T00:00:00Z").unwrap(),
        shard: quiver_offline::shard::Shard::ALL,
    };
    let runs = materialize::run(&job, store, &WriteOptions::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(runs.len(), 2);
}

/// Compares one stored value: exactly, or with map entries as a set where Feast's order is
/// its hash order.
fn assert_same_value(ours: &[u8], feast: &[u8], what: &str) {
    if ours != feast {
        assert_eq!(
            hex(&sorted_map_entries(ours)),
            hex(&sorted_map_entries(feast)),
            "{what}: quiver {} / Feast {}",
            hex(ours),
            hex(feast)
        );
        let v = Value::decode(feast).unwrap();
        assert!(
            matches!(
                v.value_type(),
                ValueType::Map | ValueType::Struct | ValueType::MapList | ValueType::StructList
            ),
            "{what}: only map entries may differ in order"
        );
    }
}

#[tokio::test]
async fn sqlite_materialize_writes_the_rows_feast_wrote_for_every_type() {
    let dir = repo("  type: sqlite\n  path: data/online.db");
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(
        &dir.path().join("data/online.db"),
    )));
    materialize_types(dir.path(), &store).await;

    let conn = rusqlite::Connection::open(dir.path().join("data/online.db")).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT entity_key, feature_name, value, event_ts FROM types_demo_types \
             ORDER BY entity_key, feature_name",
        )
        .unwrap();
    let ours: Vec<(Vec<u8>, String, Vec<u8>, String)> = stmt
        .query_map([], |r| {
            let ts: rusqlite::types::Value = r.get(3)?;
            let ts = match ts {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, ts))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let doc = expected();
    let feast = doc["materialized_sqlite"].as_array().unwrap();
    assert_eq!(ours.len(), feast.len());
    let mut types = std::collections::HashSet::new();
    for ((key, feature, value, ts), f) in ours.iter().zip(feast) {
        assert_eq!(hex(key), f["entity_key_hex"].as_str().unwrap());
        assert_eq!(feature, f["feature"].as_str().unwrap());
        assert_eq!(ts, f["event_ts"].as_str().unwrap(), "{feature}");
        let feast_value = unhex(f["value_hex"].as_str().unwrap());
        assert_same_value(value, &feast_value, feature);
        types.insert(Value::decode(value).unwrap().value_type());
    }
    // Every type Feast can materialize from a file, and null.
    assert!(types.len() >= 37, "{} types: {types:?}", types.len());
}

#[tokio::test]
async fn redis_materialize_writes_the_hashes_feast_wrote_for_every_type() {
    let redis = RedisServer::start();
    let dir = repo(&format!(
        "  type: redis\n  connection_string: 127.0.0.1:{}",
        redis.port
    ));
    let options = RedisOptions {
        host: "127.0.0.1".into(),
        port: redis.port,
        cluster_nodes: Vec::new(),
        db: 0,
        username: None,
        password: None,
        ssl: false,
        ssl_ca_certs: None,
        ssl_insecure: false,
        connect_timeout: Duration::from_secs(2),
        sentinel: None,
    };
    let store = OnlineStore::Redis(Arc::new(
        RedisStore::connect(options, "types_demo").await.unwrap(),
    ));
    materialize_types(dir.path(), &store).await;

    let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port)).unwrap();
    let mut conn = client.get_connection().unwrap();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    let doc = expected();
    let feast = doc["materialized_redis"].as_object().unwrap();
    assert_eq!(keys.len(), feast.len());
    for key in keys {
        let hash: BTreeMap<Vec<u8>, Vec<u8>> =
            redis::cmd("HGETALL").arg(&key).query(&mut conn).unwrap();
        let theirs = feast[&hex(&key)].as_object().unwrap();
        assert_eq!(hash.len(), theirs.len(), "fields of {}", hex(&key));
        for (field, value) in &hash {
            let theirs = unhex(theirs[&hex(field)].as_str().unwrap());
            if field.starts_with(b"_ts:") {
                assert_eq!(value, &theirs, "_ts of {}", hex(&key));
            } else {
                assert_same_value(value, &theirs, &hex(field));
            }
        }
    }
}

/// Feast's bytes, decoded by quiver, print as `feast serve` printed them.
#[test]
fn feast_bytes_read_back_as_feast_serve_answers() {
    let doc = expected();
    let serve = doc["serve"].as_object().unwrap();
    let rows = doc["materialized_sqlite"].as_array().unwrap();
    // Rows are ordered by entity key: drivers 1, 2, 3 (little-endian ids sort that way here).
    let mut checked = 0;
    for (feature, answer) in serve {
        let values = answer["values"].as_array().unwrap();
        let stored: Vec<&Json> = rows.iter().filter(|r| r["feature"] == **feature).collect();
        assert_eq!(stored.len(), 3, "{feature}");
        for (row, want) in stored.iter().zip(values) {
            let value = Value::decode(&unhex(row["value_hex"].as_str().unwrap())).unwrap();
            assert_eq!(json::value_to_json(&value), *want, "{feature}");
            checked += 1;
        }
    }
    assert!(checked >= 100, "{checked}");
}

/// Order: a Map or Struct from a struct column keeps the column's field order, whatever order
/// Feast's hash table gave its own bytes.
#[tokio::test]
async fn map_and_struct_entries_keep_the_source_order() {
    let dir = repo("  type: sqlite\n  path: data/online.db");
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(
        &dir.path().join("data/online.db"),
    )));
    materialize_types(dir.path(), &store).await;
    let conn = rusqlite::Connection::open(dir.path().join("data/online.db")).unwrap();
    let value = |feature: &str| -> Value {
        let bytes: Vec<u8> = conn
            .query_row(
                "SELECT value FROM types_demo_types WHERE feature_name = ?1 ORDER BY entity_key LIMIT 1",
                [feature],
                |r| r.get(0),
            )
            .unwrap();
        Value::decode(&bytes).unwrap()
    };
    assert_eq!(
        json::value_to_string(&value("f_map")),
        r#"{"vehicle_type":"truck","rating":4.5,"active":true,"trips":12.0,"home":{"lat":52.5,"lon":13.25}}"#
    );
    assert_eq!(
        json::value_to_string(&value("f_struct")),
        r#"{"name":"driver_1","age":37.0}"#
    );
    assert_eq!(
        json::value_to_string(&value("f_map_list")),
        r#"[{"k":"b","v":2},{"k":"a","v":1}]"#
    );
}

//! Feast's write endpoints, POST /push and POST /write-to-online-store, over real HTTP into a real
//! redis-server and a real SQLite file; what they write is served at once.

mod support;

use std::sync::Arc;

use quiver_online_store::{OnlineStore, SqliteStore};
use quiver_sidecar::SidecarConfig;
use quiver_sidecar::push::PushConfig;
use serde_json::json;
use support::*;

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
  - {name: customer, join_keys: [customer_id], value_type: STRING}
sources:
  - name: stats
    path: data/stats.parquet
    timestamp_field: event_timestamp
    created_timestamp_column: created
  - {name: stats_push, type: push, batch_source: stats}
  - {name: pairs, path: data/pairs.parquet, timestamp_field: event_timestamp}
feature_views:
  - name: driver_fresh
    entities: [driver]
    ttl: 0
    source: stats_push
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: zones, dtype: Array(Int32)}
  - name: driver_fresh_too
    entities: [driver]
    ttl: 0
    source: stats_push
    schema:
      - {name: conv_rate, dtype: Float32}
  - name: pair
    entities: [driver, customer]
    ttl: 0
    source: pairs
    schema: [{name: rides, dtype: Int64}]
"#;

fn config(token: Option<&str>) -> SidecarConfig {
    SidecarConfig {
        push: Some(PushConfig {
            token: token.map(str::to_owned),
            max_rows: 100,
            ..PushConfig::default()
        }),
        ..SidecarConfig::default()
    }
}

async fn write(sidecar: &Sidecar, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let (status, text) = http(sidecar.addr, "POST", path, body.to_string().as_bytes()).await;
    (status, answer(status, &text))
}

async fn conv_rates(sidecar: &Sidecar, view: &str, drivers: &[i64]) -> Vec<serde_json::Value> {
    let (status, resp) = post(
        sidecar.addr,
        json!({"features": [format!("{view}:conv_rate")], "entities": {"driver_id": drivers}}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    column(&resp, "conv_rate").0.clone()
}

async fn push_rules(sidecar: &Sidecar) {
    // Nothing stored yet; reading caches "never written" for a moment.
    assert_eq!(
        conv_rates(sidecar, "driver_fresh", &[1]).await,
        vec![json!(null)]
    );
    // One push feeds both views of the push source; the later of two rows for driver 1 wins.
    let (status, body) = write(
        sidecar,
        "/push",
        json!({
            "push_source_name": "stats_push",
            "df": {
                "driver_id": [1, 2, 1],
                "event_timestamp": ["2026-01-01T10:00:00Z", "2026-01-01T10:00:00", 1767268800],
                "created": [null, null, null],
                "conv_rate": [0.25, 0.5, 0.75],
                "zones": [[1], [], [2, 3]]
            },
            "to": "online"
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["written"], 4, "2 entities x 2 views: {body}");
    // Served at once: the push dropped the cached "never written".
    assert_eq!(
        conv_rates(sidecar, "driver_fresh", &[1, 2]).await,
        vec![json!(0.75), json!(0.5)]
    );
    assert_eq!(
        conv_rates(sidecar, "driver_fresh_too", &[1]).await,
        vec![json!(0.75)]
    );

    // Feast's rule: an older or equal event time does not overwrite.
    let (status, body) = write(
        sidecar,
        "/push",
        json!({"push_source_name": "stats_push", "df": {
            "driver_id": [1], "event_timestamp": ["2026-01-01T11:00:00Z"],
            "conv_rate": [0.125], "zones": [null]}}),
    )
    .await;
    assert_eq!(
        (status, body["written"].clone(), body["skipped"].clone()),
        (200, json!(0), json!(2))
    );
    assert_eq!(
        conv_rates(sidecar, "driver_fresh", &[1]).await,
        vec![json!(0.75)]
    );

    // /write-to-online-store writes one view; composite keys.
    let (status, body) = write(
        sidecar,
        "/write-to-online-store",
        json!({"feature_view_name": "pair", "df": {
            "driver_id": [1, 2], "customer_id": ["a", "b"],
            "event_timestamp": ["2026-01-02T00:00:00Z", "2026-01-02T00:00:00Z"],
            "rides": [3, 4]}}),
    )
    .await;
    assert_eq!((status, body["written"].clone()), (200, json!(2)), "{body}");
    let (_, resp) = post(
        sidecar.addr,
        json!({"features": ["pair:rides"], "entities": {"driver_id": [2, 1], "customer_id": ["b", "a"]}}),
    )
    .await;
    assert_eq!(column(&resp, "rides").0, &vec![json!(4), json!(3)]);
    assert!(metric(sidecar.addr, "quiver_rows_written_total").await >= 6.0);
}

#[tokio::test]
async fn pushes_into_redis_are_served_at_once() {
    let redis = RedisServer::start();
    let repo = Repo::new("demo", DEFS);
    let store = redis_store(&redis, "demo").await;
    let sidecar = start_sidecar(config(None), "demo", repo.registry_path(), store).await;
    push_rules(&sidecar).await;
}

#[tokio::test]
async fn pushes_into_sqlite_are_served_at_once() {
    let repo = Repo::new("demo", DEFS);
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(
        &repo.path().join("data/online.db"),
    )));
    let sidecar = start_sidecar(config(None), "demo", repo.registry_path(), store).await;
    push_rules(&sidecar).await;
}

#[tokio::test]
async fn bad_write_bodies_are_4xx_naming_the_problem_and_write_nothing() {
    let redis = RedisServer::start();
    let repo = Repo::new("demo", DEFS);
    let store = redis_store(&redis, "demo").await;
    let sidecar = start_sidecar(config(None), "demo", repo.registry_path(), store).await;
    let ok_df = || json!({"driver_id": [1], "event_timestamp": ["2026-01-01T10:00:00Z"], "conv_rate": [0.5], "zones": [[1]]});
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut df = ok_df();
        f(&mut df);
        json!({"push_source_name": "stats_push", "df": df})
    };
    let cases: Vec<(&str, serde_json::Value, u16, &str)> = vec![
        (
            "/push",
            json!({"push_source_name": "nope", "df": ok_df()}),
            404,
            "push source \"nope\"",
        ),
        (
            "/push",
            json!({"df": ok_df()}),
            422,
            "push_source_name is required",
        ),
        (
            "/push",
            json!({"push_source_name": "stats_push"}),
            422,
            "df is required",
        ),
        (
            "/push",
            json!({"push_source_name": "stats_push", "df": ok_df(), "to": "cloud"}),
            422,
            "to must be",
        ),
        (
            "/push",
            with(&|df| {
                df.as_object_mut().unwrap().remove("conv_rate");
            }),
            422,
            "no column \"conv_rate\"",
        ),
        (
            "/push",
            with(&|df| df["colour"] = json!(["red"])),
            422,
            "df column \"colour\" is not",
        ),
        (
            "/push",
            with(&|df| df["driver_id"] = json!(["one"])),
            422,
            "df column \"driver_id\", row 0",
        ),
        (
            "/push",
            with(&|df| df["conv_rate"] = json!(["fast"])),
            422,
            "df column \"conv_rate\", row 0",
        ),
        (
            "/push",
            with(&|df| df["zones"] = json!([["x"]])),
            422,
            "df column \"zones\", row 0",
        ),
        (
            "/push",
            with(&|df| df["event_timestamp"] = json!(["yesterday"])),
            422,
            "df column \"event_timestamp\", row 0",
        ),
        (
            "/push",
            with(&|df| df["conv_rate"] = json!([0.5, 0.6])),
            422,
            "different lengths",
        ),
        (
            "/push",
            with(&|df| df["driver_id"] = json!(5)),
            422,
            "must be an array",
        ),
        (
            "/push",
            json!({"push_source_name": "stats_push", "df": {
                "driver_id": vec![1; 101], "event_timestamp": vec!["2026-01-01"; 101],
                "conv_rate": vec![0.5; 101], "zones": vec![json!([]); 101]}}),
            413,
            "at most 100",
        ),
        // Issue 19: values Feast could not read back are refused, naming column and row.
        (
            "/push",
            json!({"push_source_name": "stats_push", "df": {
                "driver_id": [1, 2], "event_timestamp": ["2026-01-01T10:00:00Z", i64::MAX],
                "conv_rate": [0.5, 0.5], "zones": [[1], [1]]}}),
            422,
            "df column \"event_timestamp\", row 1: time ",
        ),
        (
            "/push",
            with(&|df| df["event_timestamp"] = json!(["9999-12-31T23:59:59Z"])),
            422,
            "df column \"event_timestamp\", row 0: time 9999-12-31T23:59:59Z",
        ),
        (
            "/push",
            with(&|df| df["event_timestamp"] = json!([-1e300])),
            422,
            "out of range",
        ),
        (
            "/push",
            with(&|df| df["conv_rate"] = json!([1e39])),
            422,
            "df column \"conv_rate\", row 0: 1e39 is out of range for Float32",
        ),
        (
            "/push",
            with(&|df| df["zones"] = json!([[1, 3_000_000_000_i64]])),
            422,
            "df column \"zones\", row 0: 3000000000 is out of range for Int32",
        ),
        (
            "/write-to-online-store",
            json!({"feature_view_name": "driver_fresh", "df": {
                "driver_id": [1], "event_timestamp": [i64::MAX], "conv_rate": [0.5],
                "zones": [[1]]}}),
            422,
            "df column \"event_timestamp\", row 0",
        ),
        (
            "/write-to-online-store",
            json!({"feature_view_name": "nope", "df": {}}),
            404,
            "feature view nope",
        ),
        (
            "/push",
            json!({"push_source_name": "stats_push", "df": ok_df(), "to": "offline"}),
            501,
            "to: offline",
        ),
    ];
    for (path, body, status, needle) in cases {
        let (got, answer) = write(&sidecar, path, body.clone()).await;
        assert_eq!(got, status, "{body} -> {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{body} -> {message:?} lacks {needle:?}"
        );
    }
    let (status, _) = http(sidecar.addr, "POST", "/push", b"{not json").await;
    assert_eq!(status, 400);
    // Nothing was written by any of them.
    let mut conn = redis.client().get_connection().unwrap();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert!(keys.is_empty(), "{} keys written", keys.len());
}

#[tokio::test]
async fn writes_need_the_token_when_one_is_set_and_are_off_by_default() {
    let redis = RedisServer::start();
    let repo = Repo::new("demo", DEFS);
    let body = json!({"push_source_name": "stats_push", "df": {
        "driver_id": [1], "event_timestamp": ["2026-01-01T10:00:00Z"], "conv_rate": [0.5], "zones": [[1]]}})
    .to_string();
    let store = redis_store(&redis, "demo").await;
    let sidecar = start_sidecar(config(Some("s3cret")), "demo", repo.registry_path(), store).await;
    let (status, head, _) = http_raw(sidecar.addr, "/push", &[], body.as_bytes()).await;
    assert_eq!(status, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    let (status, _, _) = http_raw(
        sidecar.addr,
        "/push",
        &[("Authorization", "Bearer wrong")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = http_raw(
        sidecar.addr,
        "/push",
        &[("Authorization", "Bearer s3cret")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 200);

    let store = redis_store(&redis, "demo").await;
    let off = start_sidecar(
        SidecarConfig::default(),
        "demo",
        repo.registry_path(),
        store,
    )
    .await;
    let (status, text) = http(off.addr, "POST", "/push", body.as_bytes()).await;
    assert_eq!(status, 404);
    assert!(text.contains("--enable-push"), "{text}");
}

/// A push through one sidecar (or an ingest deployment) reaches another sidecar's cache at once,
/// through Redis keyspace notifications: no staleness bound to wait out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_reaches_other_sidecars_through_keyspace_notifications() {
    use quiver_sidecar::EngineConfig;
    use std::time::{Duration, Instant};

    let redis = RedisServer::start();
    let repo = Repo::new("demo", DEFS);
    let ingest = start_sidecar(
        config(None),
        "demo",
        repo.registry_path(),
        redis_store(&redis, "demo").await,
    )
    .await;
    let reader_config = SidecarConfig {
        enable_keyspace_notifications: true,
        engine: EngineConfig {
            max_staleness: Duration::from_secs(60),
            watched_staleness: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(60),
            ..EngineConfig::default()
        },
        ..SidecarConfig::default()
    };
    let reader = start_sidecar(
        reader_config,
        "demo",
        repo.registry_path(),
        redis_store(&redis, "demo").await,
    )
    .await;
    for _ in 0..100 {
        if metric(reader.addr, "quiver_change_feed_live").await == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = |ts: &str, rate: f64| {
        json!({"push_source_name": "stats_push", "df": {
            "driver_id": [7], "event_timestamp": [ts], "conv_rate": [rate], "zones": [[]]}})
    };
    // The reader caches "never written" (for a minute), then the value (for ten).
    assert_eq!(
        conv_rates(&reader, "driver_fresh", &[7]).await,
        vec![json!(null)]
    );
    assert_eq!(
        write(&ingest, "/push", body("2026-01-01T10:00:00Z", 0.25))
            .await
            .0,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while conv_rates(&reader, "driver_fresh", &[7]).await != vec![json!(0.25)] {
        assert!(
            Instant::now() < deadline,
            "the reader never saw the first push"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        write(&ingest, "/push", body("2026-01-01T11:00:00Z", 0.5))
            .await
            .0,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while conv_rates(&reader, "driver_fresh", &[7]).await != vec![json!(0.5)] {
        assert!(
            Instant::now() < deadline,
            "the reader never saw the second push"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value-type matrix (`compat/generate_types_fixtures.py`): the body Feast 0.67's remote
/// online store client sends to `/write-to-online-store` (Map and Struct values as JSON text,
/// a `created` column of nulls), posted to quiver over Feast's own registry, leaves the SQLite
/// rows `feast serve` left for the same body: every byte, map entries compared as a set (Feast
/// writes them in a hash order). Array(Map) and Array(Struct), which `feast serve` refuses
/// from its own client (each map comes as JSON text), are read as Feast's SDK reads the dicts
/// and give the bytes Feast materialized for them.
#[tokio::test]
async fn the_feast_clients_write_body_writes_what_feast_serve_wrote_for_every_type() {
    use quiver_core::{Value, ValueType, json};
    use quiver_testkit::feast::sorted_map_entries;

    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../offline/tests/fixtures/feast_types");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("expected.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let registry = dir.path().join("data/registry.db");
    std::fs::copy(fixtures.join("registry.db"), &registry).unwrap();
    let db = dir.path().join("data/online.db");
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(&db)));
    let sidecar = start_sidecar(config(None), "types_demo", registry, store).await;

    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let unhex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let refused: Vec<&str> = expected["refused_by_feast_serve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut body = expected["write_to_online_store_body"].clone();
    let df = body["df"].as_object_mut().unwrap();
    let refused_columns: Vec<(String, serde_json::Value)> = refused
        .iter()
        .map(|f| ((*f).to_owned(), df.remove(*f).unwrap()))
        .collect();
    assert!(
        df["f_map"][0].is_string(),
        "the client sends maps as JSON text"
    );
    let (status, resp) = write(&sidecar, "/write-to-online-store", body).await;
    assert_eq!(status, 200, "{resp}");

    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT entity_key, feature_name, value, event_ts FROM types_demo_sendable \
             ORDER BY entity_key, feature_name",
        )
        .unwrap();
    let ours: Vec<(Vec<u8>, String, Vec<u8>, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let feast = expected["written_sqlite"].as_array().unwrap();
    assert_eq!(ours.len(), feast.len());
    assert!(ours.len() >= 70);
    for ((key, feature, value, ts), f) in ours.iter().zip(feast) {
        assert_eq!(hex(key), f["entity_key_hex"].as_str().unwrap());
        assert_eq!(feature, f["feature"].as_str().unwrap());
        assert_eq!(ts.to_string(), f["event_ts"].as_str().unwrap(), "{feature}");
        let theirs = unhex(f["value_hex"].as_str().unwrap());
        assert_eq!(
            hex(&sorted_map_entries(value)),
            hex(&sorted_map_entries(&theirs)),
            "{feature}: quiver {} / Feast {}",
            hex(value),
            hex(&theirs)
        );
    }

    for (feature, column) in refused_columns {
        let ty = expected["features"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == *feature)
            .and_then(|f| ValueType::from_proto_name(f["value_type"].as_str().unwrap()))
            .unwrap();
        let materialized: Vec<Vec<u8>> = expected["materialized_sqlite"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["feature"] == *feature)
            .map(|r| unhex(r["value_hex"].as_str().unwrap()))
            .collect();
        for (cell, theirs) in column.as_array().unwrap().iter().zip(&materialized) {
            let ours = json::parse_value(cell, ty).unwrap_or_else(|e| panic!("{feature}: {e}"));
            let ours = if ours.is_null() {
                Value::missing(ty)
            } else {
                ours
            };
            assert_eq!(
                hex(&sorted_map_entries(&ours.encode_to_vec())),
                hex(&sorted_map_entries(theirs)),
                "{feature} from {cell}"
            );
        }
    }
}

//! The sidecar over a real redis-server: answers, statuses, the cache, invalidation, and the
//! failure modes, through real HTTP on loopback.
//!
//! Length: one file of scenarios over the same Redis fixtures and repo.

mod support;

use std::time::Duration;

use quiver_core::Value;
use quiver_sidecar::{EngineConfig, SidecarConfig};
use serde_json::json;
use support::*;

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
  - {name: customer, join_keys: [customer_id], value_type: STRING}
  - {name: store, join_keys: [store_id], value_type: INT32}
sources:
  - {name: src, path: data/src.parquet}
feature_views:
  - name: driver_stats
    entities: [driver]
    ttl: 1h
    source: src
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: trips, dtype: Int64}
      - {name: zones, dtype: Array(Int32)}
      - {name: name, dtype: String}
  - name: pair
    entities: [driver, customer]
    ttl: 0
    source: src
    schema: [{name: rides, dtype: Int64}]
  - name: store_stats
    entities: [store]
    source: src
    schema: [{name: footfall, dtype: Int64}]
feature_services:
  - name: svc
    features:
      - {view: driver_stats, alias: ds, features: [conv_rate]}
      - pair
"#;

struct Fixture {
    redis: RedisServer,
    repo: Repo,
    sidecar: Sidecar,
}

async fn fixture(config: SidecarConfig) -> Fixture {
    let redis = RedisServer::start();
    let repo = Repo::new("demo", DEFS);
    let mut conn = redis.client().get_connection().unwrap();
    let now = now_ts();
    for (id, rate, trips) in [(1001, 0.5f32, 10), (1002, 0.25, 20)] {
        write_redis_row(
            &mut conn,
            "demo",
            &[("driver_id", Value::Int64(id))],
            "driver_stats",
            &[
                ("conv_rate", Value::Float(rate)),
                ("trips", Value::Int64(trips)),
                ("zones", Value::Int32List(vec![1, 2])),
                ("name", Value::String(format!("d{id}"))),
            ],
            now,
        );
    }
    // Two hours old: past driver_stats' 1h ttl.
    write_redis_row(
        &mut conn,
        "demo",
        &[("driver_id", Value::Int64(1003))],
        "driver_stats",
        &[
            ("conv_rate", Value::Float(0.75)),
            ("trips", Value::Int64(30)),
        ],
        quiver_core::time::Timestamp {
            seconds: now.seconds - 7200,
            nanos: 0,
        },
    );
    write_redis_row(
        &mut conn,
        "demo",
        &[
            ("customer_id", Value::String("c1".into())),
            ("driver_id", Value::Int64(1001)),
        ],
        "pair",
        &[("rides", Value::Int64(3))],
        quiver_core::time::Timestamp {
            seconds: 1_714_564_800,
            nanos: 123_456_000,
        },
    );
    write_redis_row(
        &mut conn,
        "demo",
        &[("store_id", Value::Int32(7))],
        "store_stats",
        &[("footfall", Value::Int64(99))],
        now,
    );
    let store = redis_store(&redis, "demo").await;
    let sidecar = start_sidecar(config, "demo", repo.registry_path(), store).await;
    Fixture {
        redis,
        repo,
        sidecar,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_like_feast_with_quivers_statuses() {
    let f = fixture(SidecarConfig::default()).await;
    let (status, resp) = post(
        f.sidecar.addr,
        json!({
            "features": ["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:zones", "driver_stats:name"],
            "entities": {"driver_id": [1001, 1002, 1003, 9999, 1001]}
        }),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        resp["metadata"]["feature_names"],
        json!(["driver_id", "conv_rate", "trips", "zones", "name"])
    );
    let (ids, s, _) = column(&resp, "driver_id");
    assert_eq!(
        ids,
        &vec![
            json!(1001),
            json!(1002),
            json!(1003),
            json!(9999),
            json!(1001)
        ]
    );
    assert_eq!(s, ["PRESENT"; 5]);
    let (values, statuses, stamps) = column(&resp, "conv_rate");
    assert_eq!(
        values,
        &vec![
            json!(0.5),
            json!(0.25),
            json!(0.75),
            json!(null),
            json!(0.5)
        ]
    );
    assert_eq!(
        statuses,
        [
            "PRESENT",
            "PRESENT",
            "OUTSIDE_MAX_AGE",
            "NOT_FOUND",
            "PRESENT"
        ]
    );
    assert_eq!(stamps[3], "1970-01-01T00:00:00Z");
    let (zones, _, _) = column(&resp, "zones");
    assert_eq!(zones[0], json!([1, 2]));
    assert_eq!(zones[2], json!(null), "a feature the row lacks is null");
    // Duplicate rows were read once: 4 distinct entities, one round trip.
    assert_eq!(
        metric(f.sidecar.addr, "quiver_online_store_round_trips_total").await,
        1.0
    );
    assert_eq!(
        metric(f.sidecar.addr, "quiver_cache_misses_total").await,
        4.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_aliases_full_names_composite_and_typed_keys() {
    let f = fixture(SidecarConfig::default()).await;
    let (status, resp) = post(
        f.sidecar.addr,
        json!({"feature_service": "svc", "full_feature_names": true,
               "entities": {"driver_id": [1001, 1002], "customer_id": ["c1", "c1"]}}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    // Entity columns come first, in the order the request gave them.
    assert_eq!(
        resp["metadata"]["feature_names"],
        json!(["driver_id", "customer_id", "ds__conv_rate", "pair__rides"])
    );
    let (rides, statuses, stamps) = column(&resp, "pair__rides");
    assert_eq!(rides, &vec![json!(3), json!(null)]);
    assert_eq!(statuses, ["PRESENT", "NOT_FOUND"]);
    assert_eq!(stamps[0], "2024-05-01T12:00:00.123456Z");

    // An Int32 entity: the JSON number is typed by the registry, so the key matches.
    let (status, resp) = post(
        f.sidecar.addr,
        json!({"features": ["store_stats:footfall"], "entities": {"store_id": [7]}}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(column(&resp, "footfall").0, &vec![json!(99)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_4xx() {
    let config = SidecarConfig {
        max_body_bytes: 4096,
        engine: EngineConfig {
            max_entity_rows: 10,
            ..EngineConfig::default()
        },
        ..SidecarConfig::default()
    };
    let f = fixture(config).await;
    let addr = f.sidecar.addr;
    let cases: Vec<(serde_json::Value, u16, &str)> = vec![
        (
            json!({"features": ["nope:x"], "entities": {"driver_id": [1]}}),
            404,
            "Feature view nope does not exist",
        ),
        (
            json!({"features": ["driver_stats:nope"], "entities": {"driver_id": [1]}}),
            404,
            "Feature nope does not exist in feature view driver_stats",
        ),
        (
            json!({"feature_service": "ghost", "entities": {"driver_id": [1]}}),
            404,
            "Feature service ghost does not exist",
        ),
        (
            json!({"features": ["driver_stats:trips"], "entities": {"customer_id": ["c"]}}),
            400,
            "entity column driver_id is missing",
        ),
        (
            json!({"features": ["driver_stats:trips"], "entities": {"driver_id": ["abc"]}}),
            400,
            "entities.driver_id[0]: expected an integer (Int64)",
        ),
        (
            json!({"features": ["store_stats:footfall"], "entities": {"store_id": [3_000_000_000_i64]}}),
            400,
            "out of range for Int32",
        ),
        (
            json!({"features": ["pair:rides"], "entities": {"driver_id": [1, 2], "customer_id": ["a"]}}),
            400,
            "different lengths",
        ),
        (
            json!({"features": [], "entities": {"driver_id": [1]}}),
            400,
            "features is empty",
        ),
        (
            json!({"features": ["driver_stats"], "entities": {"driver_id": [1]}}),
            400,
            "expected \"view:feature\"",
        ),
        (
            json!({"entities": {"driver_id": [1]}}),
            400,
            "names no features",
        ),
        (
            json!({"features": ["driver_stats:trips", "pair:rides"], "entities": {"driver_id": [1], "customer_id": ["a"]}}),
            200,
            "",
        ),
        (
            json!({"features": ["driver_stats:trips"], "entities": {"driver_id": (0..11).collect::<Vec<_>>()}}),
            413,
            "at most 10",
        ),
        (
            json!({"features": "driver_stats:trips", "entities": {"driver_id": [1]}}),
            422,
            "expected a sequence",
        ),
    ];
    for (body, want_status, want_text) in cases {
        let (status, text) = http(
            addr,
            "POST",
            "/get-online-features",
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(status, want_status, "{body} -> {text}");
        if status >= 400 {
            let err = answer(status, &text);
            assert!(err["class"].is_string(), "{text}");
            assert!(
                err["message"].as_str().unwrap().contains(want_text),
                "{body} -> {text} (wanted {want_text:?})"
            );
        }
    }
    let (status, text) = http(addr, "POST", "/get-online-features", b"{\"features\": [").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("MalformedJson"));
    let big = vec![b' '; 5000];
    let (status, _) = http(addr, "POST", "/get-online-features", &big).await;
    assert_eq!(status, 413);
    let (status, _) = http(addr, "GET", "/get-online-features", b"").await;
    assert_eq!(status, 405);
    let (status, _) = http(addr, "GET", "/nowhere", b"").await;
    assert_eq!(status, 404);
    // Nothing above was a server error.
    assert_eq!(
        metric(
            addr,
            "quiver_http_requests_total{endpoint=\"get-online-features\",status=\"5xx\"}"
        )
        .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics() {
    let f = fixture(SidecarConfig::default()).await;
    let (status, body) = http(f.sidecar.addr, "GET", "/health", b"").await;
    assert_eq!((status, body.as_str()), (200, "{\"status\":\"ok\"}"));
    let (status, body) = http(f.sidecar.addr, "GET", "/ready", b"").await;
    assert_eq!(status, 200, "{body}");
    let (_, text) = http(f.sidecar.addr, "GET", "/metrics", b"").await;
    for name in [
        "quiver_http_requests_total",
        "quiver_http_request_duration_seconds_bucket",
        "quiver_cache_hits_total",
        "quiver_cache_evictions_total",
        "quiver_cache_size_bytes",
        "quiver_online_store_round_trips_total",
        "quiver_online_store_errors_total",
        "quiver_registry_version",
        "quiver_registry_info",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_rows_are_served_within_the_staleness_bound_then_reread() {
    let config = SidecarConfig {
        engine: EngineConfig {
            max_staleness: Duration::from_secs(1),
            ..EngineConfig::default()
        },
        ..SidecarConfig::default()
    };
    let f = fixture(config).await;
    let req = json!({"features": ["driver_stats:trips"], "entities": {"driver_id": [1001]}});
    let (_, resp) = post(f.sidecar.addr, req.clone()).await;
    assert_eq!(column(&resp, "trips").0[0], json!(10));
    let mut conn = f.redis.client().get_connection().unwrap();
    write_redis_row(
        &mut conn,
        "demo",
        &[("driver_id", Value::Int64(1001))],
        "driver_stats",
        &[("trips", Value::Int64(11))],
        now_ts(),
    );
    // Keyspace notifications are off on this server: the bound alone decides.
    let (_, resp) = post(f.sidecar.addr, req.clone()).await;
    assert_eq!(
        column(&resp, "trips").0[0],
        json!(10),
        "served from the cache within the bound"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, resp) = post(f.sidecar.addr, req).await;
    assert_eq!(
        column(&resp, "trips").0[0],
        json!(11),
        "re-read after the bound"
    );
    assert!(metric(f.sidecar.addr, "quiver_cache_hits_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspace_notifications_invalidate_at_once() {
    let config = SidecarConfig {
        enable_keyspace_notifications: true,
        engine: EngineConfig {
            max_staleness: Duration::from_secs(60),
            watched_staleness: Duration::from_secs(600),
            ..EngineConfig::default()
        },
        ..SidecarConfig::default()
    };
    let f = fixture(config).await;
    // Wait for the subscription.
    for _ in 0..100 {
        if metric(f.sidecar.addr, "quiver_change_feed_live").await == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(f.sidecar.addr, "quiver_change_feed_live").await, 1.0);
    let req = json!({"features": ["driver_stats:trips"], "entities": {"driver_id": [1002]}});
    let (_, resp) = post(f.sidecar.addr, req.clone()).await;
    assert_eq!(column(&resp, "trips").0[0], json!(20));
    let mut conn = f.redis.client().get_connection().unwrap();
    write_redis_row(
        &mut conn,
        "demo",
        &[("driver_id", Value::Int64(1002))],
        "driver_stats",
        &[("trips", Value::Int64(21))],
        now_ts(),
    );
    let mut served = json!(null);
    for _ in 0..300 {
        let (_, resp) = post(f.sidecar.addr, req.clone()).await;
        served = column(&resp, "trips").0[0].clone();
        if served == json!(21) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        served,
        json!(21),
        "the change was not seen within 3 s although the bound is 60 s"
    );
    assert!(metric(f.sidecar.addr, "quiver_cache_invalidations_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_for_one_key_share_one_read() {
    let f = fixture(SidecarConfig::default()).await;
    let req = json!({"features": ["driver_stats:trips"], "entities": {"driver_id": [1001]}});
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let addr = f.sidecar.addr;
        let body = req.clone();
        tasks.push(tokio::spawn(async move { post(addr, body).await }));
    }
    for t in tasks {
        let (status, resp) = t.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(column(&resp, "trips").0[0], json!(10));
    }
    let trips = metric(f.sidecar.addr, "quiver_online_store_round_trips_total").await;
    let coalesced = metric(f.sidecar.addr, "quiver_cache_coalesced_total").await;
    let hits = metric(f.sidecar.addr, "quiver_cache_hits_total").await;
    assert_eq!(
        trips + coalesced + hits,
        32.0,
        "every request was a read, a wait on one, or a hit"
    );
    assert!(trips <= 2.0, "{trips} round trips for one key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_within_its_byte_bound() {
    let config = SidecarConfig {
        engine: EngineConfig {
            cache_bytes: 64 * 1024,
            ..EngineConfig::default()
        },
        ..SidecarConfig::default()
    };
    let f = fixture(config).await;
    let mut conn = f.redis.client().get_connection().unwrap();
    let now = now_ts();
    for id in 0..2000 {
        write_redis_row(
            &mut conn,
            "demo",
            &[("driver_id", Value::Int64(id))],
            "driver_stats",
            &[("name", Value::String("x".repeat(100)))],
            now,
        );
    }
    for chunk in (0..2000).collect::<Vec<i64>>().chunks(200) {
        let (status, _) = post(
            f.sidecar.addr,
            json!({"features": ["driver_stats:name"], "entities": {"driver_id": chunk}}),
        )
        .await;
        assert_eq!(status, 200);
    }
    let bytes = metric(f.sidecar.addr, "quiver_cache_size_bytes").await;
    assert!(bytes <= 64.0 * 1024.0, "{bytes} bytes cached");
    assert!(metric(f.sidecar.addr, "quiver_cache_evictions_total").await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_swaps_under_load_without_a_failed_request() {
    let mut config = SidecarConfig {
        registry_refresh: Duration::from_millis(50),
        ..SidecarConfig::default()
    };
    // What is tested is the swap, not the store deadline: on a CI machine running a Spark JVM
    // beside this test, the 50 ms serving default made cold reads answer 503.
    config.engine.store_timeout = Duration::from_secs(5);
    let f = fixture(config).await;
    let addr = f.sidecar.addr;
    let load = tokio::spawn(async move {
        let mut failures = 0;
        for _ in 0..300 {
            let (status, _) = post(
                addr,
                json!({"features": ["driver_stats:trips"], "entities": {"driver_id": [1001]}}),
            )
            .await;
            if status != 200 {
                failures += 1;
            }
        }
        failures
    });
    // A new view appears in the registry while requests run.
    let extended = DEFS.replace(
        "feature_services:",
        "  - name: extra\n    entities: [driver]\n    source: src\n    schema: [{name: bonus, dtype: Int64}]\nfeature_services:",
    );
    f.repo.apply(&extended);
    let mut swapped = false;
    let mut last = (0, String::new());
    for _ in 0..500 {
        let (status, body) = post(
            addr,
            json!({"features": ["extra:bonus"], "entities": {"driver_id": [1001]}}),
        )
        .await;
        if status == 200 {
            swapped = true;
            break;
        }
        last = (status, body.to_string());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        swapped,
        "the new view was never served; last answer {}: {}",
        last.0, last.1
    );
    assert_eq!(load.await.unwrap(), 0, "requests failed during the swap");
    assert!(metric(addr, "quiver_registry_version").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_fails_misses_fast_serves_cached_rows_and_recovers() {
    let config = SidecarConfig {
        engine: EngineConfig {
            store_timeout: Duration::from_millis(100),
            max_staleness: Duration::from_secs(30),
            ..EngineConfig::default()
        },
        ..SidecarConfig::default()
    };
    let mut f = fixture(config).await;
    let addr = f.sidecar.addr;
    let cached = json!({"features": ["driver_stats:trips"], "entities": {"driver_id": [1001]}});
    let cold = json!({"features": ["driver_stats:trips"], "entities": {"driver_id": [1002]}});
    assert_eq!(post(addr, cached.clone()).await.0, 200);

    f.redis.kill();
    let started = std::time::Instant::now();
    let (status, resp) = post(addr, cold.clone()).await;
    assert_eq!(status, 503, "{resp}");
    assert!(
        resp["message"].as_str().unwrap().contains("online store"),
        "{resp}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a dead store must not hang requests"
    );
    let (status, resp) = post(addr, cached.clone()).await;
    assert_eq!(status, 200, "cached rows are still served: {resp}");
    let (status, _) = http(addr, "GET", "/ready", b"").await;
    assert_eq!(status, 503);

    f.redis.restart();
    let mut conn = f.redis.client().get_connection().unwrap();
    write_redis_row(
        &mut conn,
        "demo",
        &[("driver_id", Value::Int64(1002))],
        "driver_stats",
        &[("trips", Value::Int64(22))],
        now_ts(),
    );
    let mut recovered = false;
    for _ in 0..100 {
        let (status, resp) = post(addr, cold.clone()).await;
        if status == 200 && column(&resp, "trips").0[0] == json!(22) {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "the sidecar did not reconnect");
    assert_eq!(http(addr, "GET", "/ready", b"").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_never_hangs_a_request() {
    let config = SidecarConfig {
        engine: EngineConfig {
            store_timeout: Duration::from_millis(100),
            ..EngineConfig::default()
        },
        ..SidecarConfig::default()
    };
    let f = fixture(config).await;
    let addr = f.sidecar.addr;
    f.redis.pause();
    let mut tasks = Vec::new();
    for id in 0..20 {
        tasks.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let (status, _) = post(
                addr,
                json!({"features": ["driver_stats:trips"], "entities": {"driver_id": [5000 + id]}}),
            )
            .await;
            (status, started.elapsed())
        }));
    }
    for t in tasks {
        let (status, took) = t.await.unwrap();
        assert_eq!(status, 503);
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }
    assert!(metric(addr, "quiver_online_store_timeouts_total").await >= 1.0);
    f.redis.resume();
    let mut ok = false;
    for _ in 0..100 {
        if post(
            addr,
            json!({"features": ["driver_stats:trips"], "entities": {"driver_id": [1001]}}),
        )
        .await
        .0 == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "no recovery after SIGCONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrow_ipc_answers_the_same_table() {
    use arrow_array::Array as _;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Int32Type, Int64Type, TimestampNanosecondType};

    let f = fixture(SidecarConfig::default()).await;
    let body = json!({"features": ["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:zones", "driver_stats:name"],
                      "entities": {"driver_id": [1001, 1003, 9999]}});
    let (status, head, bytes) = http_raw(
        f.sidecar.addr,
        "/get-online-features",
        &[
            ("Accept", "application/vnd.apache.arrow.stream"),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/vnd.apache.arrow.stream"),
        "{head}"
    );
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.len(), 1);
    let batch = &batches[0];
    assert_eq!(batch.num_rows(), 3);
    let names: Vec<&str> = batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        &names[..4],
        [
            "driver_id",
            "conv_rate",
            "conv_rate__status",
            "conv_rate__event_timestamp"
        ]
    );

    let ids = batch
        .column_by_name("driver_id")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!(ids.values().to_vec(), [1001, 1003, 9999]);
    let rate = batch
        .column_by_name("conv_rate")
        .unwrap()
        .as_primitive::<Float32Type>();
    assert_eq!(
        (rate.value(0), rate.value(1), rate.is_null(2)),
        (0.5, 0.75, true)
    );
    let status = batch
        .column_by_name("conv_rate__status")
        .unwrap()
        .as_string::<i32>();
    assert_eq!(
        (status.value(0), status.value(1), status.value(2)),
        ("PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND")
    );
    let trips = batch
        .column_by_name("trips")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!(trips.value(0), 10);
    let zones = batch.column_by_name("zones").unwrap().as_list::<i32>();
    assert_eq!(
        zones.value(0).as_primitive::<Int32Type>().values().to_vec(),
        [1, 2]
    );
    assert!(zones.is_null(1), "1003 has no zones");
    let names = batch.column_by_name("name").unwrap().as_string::<i32>();
    assert_eq!(names.value(0), "d1001");
    let ts = batch
        .column_by_name("trips__event_timestamp")
        .unwrap()
        .as_primitive::<TimestampNanosecondType>();
    assert!(ts.value(0) > 1_700_000_000_000_000_000 && ts.is_null(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_mode_loads_everything_then_every_read_is_a_hit() {
    let redis = RedisServer::start();
    let repo = Repo::new("demo", DEFS);
    let mut conn = redis.client().get_connection().unwrap();
    let now = now_ts();
    for id in 0..1500 {
        write_redis_row(
            &mut conn,
            "demo",
            &[("driver_id", Value::Int64(id))],
            "driver_stats",
            &[("trips", Value::Int64(id * 2))],
            now,
        );
    }
    // A composite-key row shares nothing with driver_stats: it must not be loaded for it.
    write_redis_row(
        &mut conn,
        "demo",
        &[
            ("customer_id", Value::String("c1".into())),
            ("driver_id", Value::Int64(1)),
        ],
        "pair",
        &[("rides", Value::Int64(3))],
        now,
    );
    let config = SidecarConfig {
        replicate: vec!["driver_stats".into()],
        engine: EngineConfig {
            max_staleness: Duration::from_secs(60),
            ..EngineConfig::default()
        },
        ..SidecarConfig::default()
    };
    let store = redis_store(&redis, "demo").await;
    let sidecar = start_sidecar(config, "demo", repo.registry_path(), store).await;
    let mut ready = false;
    for _ in 0..200 {
        if http(sidecar.addr, "GET", "/ready", b"").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "never ready");
    let trips_before = metric(sidecar.addr, "quiver_online_store_round_trips_total").await;
    assert!(
        trips_before >= 3.0,
        "1500 keys load in batches of 512: {trips_before}"
    );
    let ids: Vec<i64> = (0..1500).step_by(7).collect();
    let (status, resp) = post(
        sidecar.addr,
        json!({"features": ["driver_stats:trips"], "entities": {"driver_id": ids}}),
    )
    .await;
    assert_eq!(status, 200);
    let (values, statuses, _) = column(&resp, "trips");
    assert_eq!(values[1], json!(14));
    assert!(statuses.iter().all(|s| *s == "PRESENT"));
    assert_eq!(
        metric(sidecar.addr, "quiver_cache_misses_total").await,
        0.0,
        "every read of a replicated view is a hit"
    );
    assert_eq!(
        metric(sidecar.addr, "quiver_online_store_round_trips_total").await,
        trips_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicating_an_unknown_view_is_refused_before_serving() {
    let redis = RedisServer::start();
    let repo = Repo::new("demo", DEFS);
    let store = redis_store(&redis, "demo").await;
    let config = SidecarConfig {
        replicate: vec!["nope".into()],
        ..SidecarConfig::default()
    };
    let err = quiver_sidecar::start(config, "demo", repo.registry_path(), store)
        .await
        .err()
        .unwrap();
    assert!(err.contains("--replicate nope"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_redis_is_down_and_serves_once_it_is_up() {
    let repo = Repo::new("demo", DEFS);
    // A port with nothing listening yet.
    let port = free_port();
    let options = quiver_online_store::RedisOptions {
        host: "127.0.0.1".into(),
        port,
        cluster_nodes: Vec::new(),
        db: 0,
        username: None,
        password: None,
        ssl: false,
        ssl_ca_certs: None,
        ssl_insecure: false,
        connect_timeout: Duration::from_millis(300),
        sentinel: None,
    };
    let store = quiver_online_store::RedisStore::connect_in_background(options, "demo")
        .await
        .unwrap();
    let sidecar = start_sidecar(
        SidecarConfig::default(),
        "demo",
        repo.registry_path(),
        quiver_online_store::OnlineStore::Redis(store),
    )
    .await;
    let req = json!({"features": ["driver_stats:trips"], "entities": {"driver_id": [1001]}});
    let (status, resp) = post(sidecar.addr, req.clone()).await;
    assert_eq!(status, 503, "{resp}");
    assert!(
        resp["message"]
            .as_str()
            .unwrap()
            .contains("not connected yet"),
        "{resp}"
    );
    assert_eq!(http(sidecar.addr, "GET", "/ready", b"").await.0, 503);

    // Redis comes up on that port.
    let _redis = RedisServer::start_on(port, &[]);
    let mut conn = loop {
        if let Ok(c) = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    write_redis_row(
        &mut conn,
        "demo",
        &[("driver_id", Value::Int64(1001))],
        "driver_stats",
        &[("trips", Value::Int64(5))],
        now_ts(),
    );
    let mut served = false;
    for _ in 0..200 {
        let (status, resp) = post(sidecar.addr, req.clone()).await;
        if status == 200 && column(&resp, "trips").0[0] == json!(5) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "never served after Redis came up");
    assert_eq!(http(sidecar.addr, "GET", "/ready", b"").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrade_mode_answers_what_it_can_and_marks_the_rest_invalid() {
    let config = SidecarConfig {
        engine: EngineConfig {
            on_store_error: quiver_sidecar::OnStoreError::Degrade,
            store_timeout: Duration::from_millis(100),
            max_staleness: Duration::from_secs(30),
            ..EngineConfig::default()
        },
        ..SidecarConfig::default()
    };
    let mut f = fixture(config).await;
    let addr = f.sidecar.addr;
    // 1001 is cached; 1002 is not, and Redis dies.
    assert_eq!(
        post(
            addr,
            json!({"features": ["driver_stats:trips"], "entities": {"driver_id": [1001]}})
        )
        .await
        .0,
        200
    );
    f.redis.kill();
    let (status, resp) = post(
        addr,
        json!({"features": ["driver_stats:trips"], "entities": {"driver_id": [1001, 1002]}}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let (values, statuses, _) = column(&resp, "trips");
    assert_eq!(values, &vec![json!(10), json!(null)]);
    assert_eq!(statuses, ["PRESENT", "INVALID"]);
}

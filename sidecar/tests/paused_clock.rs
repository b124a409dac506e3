//! Staleness and ttl on tokio's paused clock: the engine reads a real SQLite file, and time
//! moves only by `tokio::time::advance`, so the bounds are tested to the millisecond without a
//! single sleep.

mod support;

use std::sync::Arc;
use std::time::Duration;

use quiver_core::Value;
use quiver_online_store::{OnlineStore, SqliteStore};
use quiver_sidecar::engine::Prepared;
use quiver_sidecar::metrics::Metrics;
use quiver_sidecar::registry::ServingRegistry;
use quiver_sidecar::{Clock, EngineConfig, Format, ServingEngine, api, load_registry};
use serde_json::json;
use support::*;

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: src, path: data/src.parquet}
feature_views:
  - name: stats
    entities: [driver]
    ttl: 1h
    source: src
    schema:
      - {name: rate, dtype: Float64}
"#;

/// Wall-clock time the paused clock starts at (2023-11-14T22:13:20Z).
const T0: i64 = 1_700_000_000;

struct Fixture {
    repo: Repo,
    engine: Arc<ServingEngine>,
    reg: Arc<ServingRegistry>,
}

impl Fixture {
    /// An engine over a SQLite file holding driver 1's row (rate 0.5) written at `event_ts`, its
    /// clock tokio's (paused), reading `T0` on the wall.
    fn new(config: EngineConfig, event_ts: i64) -> Fixture {
        let repo = Repo::new("demo", DEFS);
        let db = repo.path().join("data/online.db");
        write_sqlite(
            &db,
            "demo",
            "stats",
            1,
            &[("rate", Value::Double(0.5))],
            event_ts,
        );
        let config = EngineConfig {
            clock: Clock::tokio_at(Duration::from_secs(T0 as u64)),
            // A generous store deadline: time moves only when the test says so.
            store_timeout: Duration::from_secs(3600),
            ..config
        };
        let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(&db)));
        let engine = Arc::new(ServingEngine::new(
            config,
            store,
            Arc::new(Metrics::default()),
        ));
        let reg = Arc::new(load_registry(&repo.registry_path(), "demo", 1).unwrap());
        Fixture { repo, engine, reg }
    }

    fn request() -> api::OnlineRequest {
        api::parse_request(
            json!({"features": ["stats:rate"], "entities": {"driver_id": [1]}})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    }

    /// Whether the request is answered from the cache alone (no store read).
    fn cached(&self) -> bool {
        matches!(
            self.engine
                .prepare(&self.reg, Self::request(), Format::Json)
                .unwrap(),
            Prepared::Answered(_)
        )
    }

    /// (rate, status) of driver 1.
    async fn ask(&self) -> (serde_json::Value, String) {
        let body = self
            .engine
            .get_online_features(&self.reg, Self::request(), Format::Json)
            .await
            .unwrap();
        let resp: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let (values, statuses, _) = column(&resp, "rate");
        (values[0].clone(), statuses[0].to_owned())
    }

    fn write(&self, rate: f64, event_ts: i64) {
        let db = self.repo.path().join("data/online.db");
        write_sqlite(
            &db,
            "demo",
            "stats",
            1,
            &[("rate", Value::Double(rate))],
            event_ts,
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_cached_row_is_served_up_to_the_staleness_bound_then_reread() {
    let f = Fixture::new(
        EngineConfig {
            max_staleness: Duration::from_secs(5),
            ..EngineConfig::default()
        },
        T0,
    );
    assert!(!f.cached(), "nothing read yet");
    assert_eq!(f.ask().await, (json!(0.5), "PRESENT".to_owned()));
    f.write(0.75, T0 + 1);

    tokio::time::advance(Duration::from_millis(4_999)).await;
    assert!(f.cached(), "within the bound: a hit");
    assert_eq!(
        f.ask().await.0,
        json!(0.5),
        "the cached value, not the store's"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(f.cached(), "exactly at the bound: still fresh");

    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(!f.cached(), "past the bound: must be re-read");
    assert_eq!(f.ask().await.0, json!(0.75));
    assert!(f.cached(), "the re-read starts a new bound");
    assert_eq!(f.engine.metrics.cache_expired.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_watched_row_gets_the_long_bound_only_while_the_feed_covers_it() {
    let f = Fixture::new(
        EngineConfig {
            max_staleness: Duration::from_secs(5),
            watched_staleness: Duration::from_secs(300),
            ..EngineConfig::default()
        },
        T0,
    );
    f.engine.feed.set_live(true);
    f.ask().await;
    tokio::time::advance(Duration::from_secs(299)).await;
    assert!(f.cached(), "watched: the long bound");
    // The feed is lost and comes back: changes may have gone unseen, the short bound applies.
    f.engine.feed.set_live(false);
    f.engine.feed.set_live(true);
    assert!(!f.cached(), "read before the loss: past the short bound");
}

#[tokio::test(start_paused = true)]
async fn never_written_is_remembered_for_the_negative_ttl() {
    let f = Fixture::new(
        EngineConfig {
            negative_ttl: Duration::from_secs(1),
            ..EngineConfig::default()
        },
        T0,
    );
    let req = || {
        api::parse_request(br#"{"features": ["stats:rate"], "entities": {"driver_id": [2]}}"#)
            .unwrap()
    };
    f.engine
        .get_online_features(&f.reg, req(), Format::Json)
        .await
        .unwrap();
    let cached = |f: &Fixture| {
        matches!(
            f.engine.prepare(&f.reg, req(), Format::Json).unwrap(),
            Prepared::Answered(_)
        )
    };
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(cached(&f));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(!cached(&f));
}

#[tokio::test(start_paused = true)]
async fn a_row_older_than_the_views_ttl_is_outside_max_age() {
    // Written 1 h - 10 s before T0: inside the 1 h ttl for 10 more seconds.
    let f = Fixture::new(
        EngineConfig {
            max_staleness: Duration::from_secs(3600),
            ..EngineConfig::default()
        },
        T0 - 3600 + 10,
    );
    assert_eq!(f.ask().await, (json!(0.5), "PRESENT".to_owned()));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        f.ask().await,
        (json!(0.5), "PRESENT".to_owned()),
        "exactly the ttl old: still inside"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(f.cached(), "the same cached row, judged against the clock");
    assert_eq!(f.ask().await, (json!(0.5), "OUTSIDE_MAX_AGE".to_owned()));

    // The Arrow answer agrees.
    let body = f
        .engine
        .get_online_features(&f.reg, Fixture::request(), Format::Arrow)
        .await
        .unwrap();
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None).unwrap();
    let batch = reader.into_iter().next().unwrap().unwrap();
    let status =
        arrow_array::cast::AsArray::as_string::<i32>(batch.column_by_name("rate__status").unwrap())
            .value(0)
            .to_owned();
    assert_eq!(status, "OUTSIDE_MAX_AGE");
}

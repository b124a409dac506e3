//! The Redis store against a real standalone redis-server: reads and writes in Feast's layout
//! (rows Feast's Python wrote are read; rows quiver writes are laid out as Feast lays them out),
//! Feast's write rule, key TTLs, the replicate scan, keyspace notifications turned into
//! invalidations, and a server that dies and comes back.

mod support;

use std::sync::Arc;
use std::time::Duration;

use quiver_core::{Value, layout};
use quiver_online_store::redis_store::Invalidation;
use quiver_online_store::{OnlineStore, RedisStore, StoreError, WriteStats};
use quiver_testkit::RedisServer;
use quiver_testkit::feast::write_redis_row;
use support::*;

async fn connect(redis: &RedisServer) -> (Arc<RedisStore>, OnlineStore) {
    let store = Arc::new(
        RedisStore::connect(options(redis.port), PROJECT)
            .await
            .unwrap(),
    );
    (Arc::clone(&store), OnlineStore::Redis(store))
}

#[tokio::test]
async fn reads_and_writes_feasts_layout_with_feasts_write_rule() {
    let redis = RedisServer::start();
    let (raw, store) = connect(&redis).await;
    assert!(!raw.is_cluster() && !raw.is_sentinel());
    store.ping().await.unwrap();

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
    // A row as Feast's Python writes it is read too.
    let mut conn = redis.conn();
    write_redis_row(
        &mut conn,
        PROJECT,
        &[("driver_id", Value::Int64(3))],
        "stats",
        &[
            ("trips", Value::Int64(30)),
            ("name", Value::String("d3".into())),
        ],
        ts(100),
    );
    assert_eq!(
        read(&store, &[1, 2, 3, 4]).await,
        [
            expected(1, 100, 10),
            expected(2, 100, 20),
            expected(3, 100, 30),
            None
        ]
    );

    // What quiver wrote is Feast's layout: one hash per entity key + project, a murmur3 field
    // per feature and `_ts:<view>`.
    let hash_key = raw.key(&key(1));
    let fields: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
        .arg(&hash_key)
        .arg(&layout::redis_field("stats", "trips")[..])
        .arg(layout::redis_ts_field("stats"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        fields[0].as_deref(),
        Some(&Value::Int64(10).encode_to_vec()[..])
    );
    assert_eq!(
        fields[1].as_deref(),
        Some(&layout::encode_timestamp(&ts(100))[..])
    );

    // Feast's rule: only a strictly newer event time replaces the stored row.
    let stats = store
        .write(
            &layout(),
            vec![row(1, 50, 11), row(2, 100, 21), row(3, 101, 31)].into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        stats,
        WriteStats {
            written: 1,
            skipped: 2
        }
    );
    assert_eq!(
        read(&store, &[1, 2, 3]).await,
        [
            expected(1, 100, 10),
            expected(2, 100, 20),
            expected(3, 101, 31)
        ]
    );
    let ttl: i64 = redis::cmd("TTL").arg(&hash_key).query(&mut conn).unwrap();
    assert_eq!(ttl, -1, "no key_ttl_seconds, no expiry");

    // With a key TTL every written key expires.
    store
        .write(&layout(), vec![row(5, 100, 50)].into(), Some(60))
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(raw.key(&key(5)))
        .query(&mut conn)
        .unwrap();
    assert!((1..=60).contains(&ttl), "ttl {ttl}");

    // Replicate mode's scan finds every entity of the project, and only of the project.
    let other = RedisStore::connect(options(redis.port), "other")
        .await
        .unwrap();
    other.write(&layout(), &[row(9, 1, 9)], None).await.unwrap();
    let mut keys = store.scan_entity_keys(&[layout()]).await.unwrap();
    keys.sort();
    let mut want: Vec<Vec<u8>> = [1, 2, 3, 5].map(key).to_vec();
    want.sort();
    assert_eq!(keys, want);
}

#[tokio::test]
async fn a_row_that_is_not_feasts_layout_is_corrupt() {
    let redis = RedisServer::start();
    let (raw, store) = connect(&redis).await;
    redis::cmd("HSET")
        .arg(raw.key(&key(1)))
        .arg(layout::redis_ts_field("stats"))
        .arg("not a timestamp")
        .query::<()>(&mut redis.conn())
        .unwrap();
    let reads = [quiver_online_store::KeyRead {
        entity_key: &key(1),
        views: &[0],
    }];
    match store.read(&[layout()], &reads).await {
        Err(StoreError::Corrupt(_)) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn keyspace_notifications_become_invalidations() {
    // Notifications off and not to be turned on: the feed says so and is never live.
    let off = RedisServer::start();
    let (raw, _) = connect(&off).await;
    let mut inv = raw.follow_invalidations(false);
    match next(&mut inv).await {
        Invalidation::Off { node, .. } => assert!(node.contains(&off.port.to_string()), "{node}"),
        other => panic!("expected Off, got {other:?}"),
    }

    // Turned on by the store: live, then every change to one of the project's keys is
    // reported with its entity key, by whoever made it.
    let redis = RedisServer::start();
    let (raw, store) = connect(&redis).await;
    let mut inv = raw.follow_invalidations(true);
    assert_eq!(next(&mut inv).await, Invalidation::Live);
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query(&mut redis.conn())
        .unwrap();
    assert!(
        quiver_online_store::redis_store::keyspace_events_sufficient(&config[1]),
        "{config:?}"
    );
    write_redis_row(
        &mut redis.conn(),
        PROJECT,
        &[("driver_id", Value::Int64(7))],
        "stats",
        &[("trips", Value::Int64(1))],
        ts(1),
    );
    assert_eq!(next(&mut inv).await, Invalidation::Key(key(7)));
    store
        .write(&layout(), vec![row(8, 1, 8)].into(), None)
        .await
        .unwrap();
    assert_eq!(next(&mut inv).await, Invalidation::Key(key(8)));
    // Another project's keys are not ours.
    let other = RedisStore::connect(options(redis.port), "other")
        .await
        .unwrap();
    other.write(&layout(), &[row(9, 1, 9)], None).await.unwrap();
    store
        .write(&layout(), vec![row(10, 1, 10)].into(), None)
        .await
        .unwrap();
    assert_eq!(next(&mut inv).await, Invalidation::Key(key(10)));

    // The server dies: the feed is lost, and live again once it is back.
    let mut redis = redis;
    redis.kill();
    assert_eq!(next(&mut inv).await, Invalidation::Lost);
    redis.restart();
    loop {
        match next(&mut inv).await {
            Invalidation::Live => break,
            Invalidation::Lost => continue,
            other => panic!("expected Live, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_dead_server_fails_fast_and_a_restarted_one_is_used_again() {
    let mut redis = RedisServer::start();
    let (_, store) = connect(&redis).await;
    store
        .write(&layout(), vec![row(1, 100, 10)].into(), None)
        .await
        .unwrap();
    redis.kill();
    let started = std::time::Instant::now();
    assert!(store.ping().await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    redis.restart();
    eventually("the store reconnects", 10, || async {
        store.ping().await.is_ok()
    })
    .await;
    // The restarted server is empty (it keeps nothing on disk).
    assert_eq!(read(&store, &[1]).await, [None]);
}

#[tokio::test]
async fn connects_in_the_background_when_the_server_comes_up_later() {
    let port = quiver_testkit::free_port();
    let store = RedisStore::connect_in_background(options(port), PROJECT)
        .await
        .unwrap();
    let store = OnlineStore::Redis(store);
    assert!(store.ping().await.is_err());
    let _redis = RedisServer::start_on(port, &[]);
    eventually("connected once the server is up", 15, || async {
        store.ping().await.is_ok()
    })
    .await;
    store
        .write(&layout(), vec![row(1, 100, 10)].into(), None)
        .await
        .unwrap();
    assert_eq!(read(&store, &[1]).await, [expected(1, 100, 10)]);
}

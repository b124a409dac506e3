//! The Redis store against a real three-master Redis Cluster: reads and writes routed by slot
//! (one pipeline per slot), a batch that spans every master written and read back in one call,
//! the replicate scan over every master, and keyspace notifications from every master.

mod support;

use std::sync::Arc;

use quiver_core::Value;
use quiver_online_store::redis_store::Invalidation;
use quiver_online_store::{OnlineStore, RedisStore, WriteStats};
use quiver_testkit::{RedisServer, start_cluster};
use support::*;

fn dbsize(node: &RedisServer) -> u64 {
    redis::cmd("DBSIZE").query(&mut node.conn()).unwrap()
}

fn keyslot(node: &RedisServer, key: &[u8]) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut node.conn())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_across_slots_and_masters() {
    let nodes = start_cluster(None);
    let raw = Arc::new(
        RedisStore::connect(cluster_options(&nodes), PROJECT)
            .await
            .unwrap(),
    );
    assert!(raw.is_cluster());
    let store = OnlineStore::Redis(Arc::clone(&raw));
    let mut masters = raw.cluster_masters().await.unwrap();
    masters.sort();
    let mut ports: Vec<(String, u16)> = nodes
        .iter()
        .map(|n| ("127.0.0.1".to_owned(), n.port))
        .collect();
    ports.sort();
    assert_eq!(masters, ports);

    // 300 entities land on many slots of all three masters; one write and one read each.
    let drivers: Vec<i64> = (0..300).collect();
    let slots: std::collections::BTreeSet<u16> = drivers
        .iter()
        .map(|&d| keyslot(&nodes[0], &raw.key(&key(d))))
        .collect();
    assert!(slots.len() > 250, "{} slots", slots.len());
    let rows: Vec<_> = drivers.iter().map(|&d| row(d, 100, d * 2)).collect();
    let stats = store.write(&layout(), rows.into(), None).await.unwrap();
    assert_eq!(
        stats,
        WriteStats {
            written: 300,
            skipped: 0
        }
    );
    for node in &nodes {
        assert!(dbsize(node) > 50, "every master holds a share");
    }
    let want: Vec<_> = drivers.iter().map(|&d| expected(d, 100, d * 2)).collect();
    assert_eq!(read(&store, &drivers).await, want);

    // Feast's rule holds slot by slot: older rows skipped, newer ones written.
    let rows: Vec<_> = drivers
        .iter()
        .map(|&d| row(d, if d % 2 == 0 { 50 } else { 150 }, -d))
        .collect();
    let stats = store.write(&layout(), rows.into(), None).await.unwrap();
    assert_eq!(
        stats,
        WriteStats {
            written: 150,
            skipped: 150
        }
    );
    let want: Vec<_> = drivers
        .iter()
        .map(|&d| {
            if d % 2 == 0 {
                expected(d, 100, d * 2)
            } else {
                expected(d, 150, -d)
            }
        })
        .collect();
    assert_eq!(read(&store, &drivers).await, want);

    // A string key with a `{...}` in it is a hash tag; it is routed as Redis routes it.
    let tagged =
        quiver_core::entity_key::serialize(&[("driver_id", &Value::String("a{tag}b".into()))])
            .unwrap();
    let row = quiver_online_store::WriteRow::new(
        tagged.clone(),
        ts(1),
        None,
        &[Value::Int64(1).encode_to_vec(), Value::Null.encode_to_vec()],
    );
    store
        .write(&layout(), vec![row].into(), None)
        .await
        .unwrap();
    let reads = [quiver_online_store::KeyRead {
        entity_key: &tagged,
        views: &[0],
    }];
    let got = store.read(&[layout()], &reads).await.unwrap();
    assert!(got[0][0].is_some());

    // The replicate scan visits every master.
    let mut keys = store.scan_entity_keys(&[layout()]).await.unwrap();
    keys.sort();
    let mut want: Vec<Vec<u8>> = drivers.iter().map(|&d| key(d)).collect();
    want.push(tagged);
    want.sort();
    assert_eq!(keys, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspace_notifications_from_every_master() {
    let nodes = start_cluster(None);
    let raw = Arc::new(
        RedisStore::connect(cluster_options(&nodes), PROJECT)
            .await
            .unwrap(),
    );
    let store = OnlineStore::Redis(Arc::clone(&raw));
    let mut inv = raw.follow_invalidations(true);
    loop {
        match next(&mut inv).await {
            Invalidation::Live => break,
            Invalidation::Lost => continue,
            other => panic!("expected Live, got {other:?}"),
        }
    }
    // One driver per master: each change is reported by the master that holds it.
    let mut per_master = std::collections::BTreeMap::new();
    for d in 0..100 {
        // Only the master that owns the slot answers a GET (the others answer MOVED).
        let owner = nodes
            .iter()
            .position(|n| {
                redis::cmd("GET")
                    .arg(raw.key(&key(d)))
                    .query::<Option<String>>(&mut n.conn())
                    .is_ok()
            })
            .unwrap();
        per_master.entry(owner).or_insert(d);
    }
    assert_eq!(per_master.len(), 3, "{per_master:?}");
    for &d in per_master.values() {
        store
            .write(&layout(), vec![row(d, 1, d)].into(), None)
            .await
            .unwrap();
        assert_eq!(next(&mut inv).await, Invalidation::Key(key(d)));
    }
}

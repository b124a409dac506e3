//! The registry service over the real PostgreSQL (a fresh database per test), in Feast's
//! SQL-registry layout: rows as Feast writes them, versions across two replicas, concurrent
//! appliers, and a change made directly in the tables (as `feast apply` makes it).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use quiver_core::proto::core as pb;
use quiver_registry::snapshot;
use quiver_registry_service::{ServiceConfig, Standalone};
use support::*;

fn fast() -> ServiceConfig {
    ServiceConfig {
        poll_interval: Duration::from_millis(100),
        ..ServiceConfig::default()
    }
}

#[tokio::test]
async fn applies_land_in_feasts_tables_with_versions() {
    let db = TestDb::create().await;
    let svc = Standalone::start(&db.url(), 0, fast(), None).unwrap();
    let mut c = client(&svc.url(), None);
    let (status, body) = apply(&mut c, "demo", 0, DEFS).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1);

    let pg = db.client().await;
    // One row per object, keyed by name and project, the proto as Feast stores it.
    let rows = pg
        .query("SELECT feature_view_name, project_id, feature_view_proto, last_updated_timestamp FROM feature_views ORDER BY 1", &[])
        .await
        .unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["hourly", "profile"]);
    for r in &rows {
        assert_eq!(r.get::<_, String>(1), "demo");
        let view = pb::FeatureView::decode(r.get::<_, Vec<u8>>(2).as_slice()).unwrap();
        let spec = view.spec.unwrap();
        assert_eq!(
            (spec.project.as_str(), spec.name),
            ("demo", r.get::<_, String>(0))
        );
        assert!(r.get::<_, i64>(3) > 1_700_000_000);
    }
    let count = |table: &'static str| {
        let pg = &pg;
        async move {
            pg.query_one(
                &format!("SELECT count(*) FROM {table} WHERE project_id = 'demo'"),
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    assert_eq!(count("entities").await, 2);
    assert_eq!(count("data_sources").await, 2);
    assert_eq!(count("feature_services").await, 2);
    assert_eq!(count("projects").await, 1);
    let project_row = pg
        .query_one(
            "SELECT project_name, project_proto FROM projects WHERE project_id = 'demo'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(project_row.get::<_, String>(0), "demo");
    let meta: Vec<String> = pg
        .query(
            "SELECT metadata_key FROM feast_metadata WHERE project_id = 'demo' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(meta, ["last_updated_timestamp", "project_uuid"]);
    let v: i64 = pg
        .query_one(
            "SELECT version FROM quiver_registry_versions WHERE project_id = 'demo'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 1);

    // A removed view's row goes; a stale base is refused and changes no row.
    let fewer = DEFS.replace("  - {name: customers, features: [profile]}\n", "");
    assert_eq!(apply(&mut c, "demo", 1, &fewer).await.0, 200);
    assert_eq!(count("feature_services").await, 1);
    let (status, body) = apply(&mut c, "demo", 1, DEFS).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(count("feature_services").await, 1);

    // The snapshot holds what the tables hold.
    let r = get(&mut c, "/v1/projects/demo/snapshot", &[]).await;
    let snap = snapshot::decode(&r.body).unwrap();
    assert_eq!(snap.version, 2);
    assert_eq!(
        snap.project_registry("demo")
            .unwrap()
            .feature_services
            .len(),
        1
    );
}

#[tokio::test]
async fn replicas_agree_and_concurrent_appliers_serialize_on_the_database() {
    let db = TestDb::create().await;
    let a = Standalone::start(&db.url(), 0, fast(), None).unwrap();
    let b = Standalone::start(&db.url(), 0, fast(), None).unwrap();
    let urls = [a.url(), b.url()];
    let mut ca = client(&urls[0], None);
    assert_eq!(apply(&mut ca, "demo", 0, DEFS).await.0, 200);
    let mut cb = client(&urls[1], None);
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_json(&mut cb, "/v1/projects/demo").await.1["version"] != 1 {
        assert!(Instant::now() < deadline, "replica b never saw version 1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    const N: usize = 6;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for i in 0..N {
        let url = urls[i % 2].clone();
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let mut c = client(&url, None);
            barrier.wait().await;
            apply(&mut c, "demo", 1, &defs_with_view(&format!("v{i}"))).await
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let (status, body) = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("an applier hung")
            .unwrap();
        assert!(status == 200 || status == 409, "{status} {body}");
        statuses.push(status);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 409, 409, 409, 409, 409]);
    let pg = db.client().await;
    let views: i64 = pg
        .query_one(
            "SELECT count(*) FROM feature_views WHERE project_id = 'demo'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(views, 3, "the winner's view and the two it kept");
    let deadline = Instant::now() + Duration::from_secs(5);
    while version(&mut ca, "demo").await != 2 || version(&mut cb, "demo").await != 2 {
        assert!(
            Instant::now() < deadline,
            "the replicas never agreed on version 2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_row_changed_behind_the_service_bumps_the_version_and_wakes_pollers() {
    let db = TestDb::create().await;
    let svc = Standalone::start(&db.url(), 0, fast(), None).unwrap();
    let mut c = client(&svc.url(), None);
    apply(&mut c, "demo", 0, DEFS).await;
    let etag = get(&mut c, "/v1/projects/demo/snapshot", &[])
        .await
        .etag
        .unwrap();
    let poll = tokio::spawn({
        let url = svc.url();
        async move {
            let mut c = client(&url, None);
            snapshot_if_none_match(&mut c, "/v1/projects/demo/snapshot?wait=10s", &etag).await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // What Feast's SqlRegistry.apply_entity does: update the row's proto.
    let pg = db.client().await;
    let row = pg
        .query_one("SELECT entity_proto FROM entities WHERE entity_name = 'driver' AND project_id = 'demo'", &[])
        .await
        .unwrap();
    let mut entity = pb::Entity::decode(row.get::<_, Vec<u8>>(0).as_slice()).unwrap();
    entity.spec.as_mut().unwrap().description = "changed by feast".into();
    pg.execute(
        "UPDATE entities SET entity_proto = $1, last_updated_timestamp = 1 WHERE entity_name = 'driver' AND project_id = 'demo'",
        &[&entity.encode_to_vec()],
    )
    .await
    .unwrap();
    let r = poll.await.unwrap();
    assert_eq!(r.status, 200);
    let snap = snapshot::decode(&r.body).unwrap();
    assert_eq!(snap.version, 2);
    let reg = snap.project_registry("demo").unwrap();
    assert_eq!(
        reg.entity("driver").unwrap().description,
        "changed by feast"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_naming_the_store() {
    let err = quiver_registry_service::Store::open("postgresql://postgres@127.0.0.1:1/nothing")
        .await
        .err()
        .unwrap();
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

#[tokio::test]
async fn materialization_intervals_are_recorded_in_feasts_rows() {
    let db = TestDb::create().await;
    let svc = Standalone::start(&db.url(), 0, fast(), None).unwrap();
    let mut c = client(&svc.url(), None);
    let version = materializations_scenario(&mut c).await;
    let pg = db.client().await;
    let row = pg
        .query_one(
            "SELECT feature_view_proto FROM feature_views WHERE feature_view_name = 'hourly' AND project_id = 'demo'",
            &[],
        )
        .await
        .unwrap();
    let view = pb::FeatureView::decode(row.get::<_, Vec<u8>>(0).as_slice()).unwrap();
    assert_eq!(view.meta.unwrap().materialization_intervals.len(), 2);
    let row = pg
        .query_one(
            "SELECT version FROM quiver_registry_versions WHERE project_id = 'demo'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0) as u64, version);
}

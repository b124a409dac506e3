//! The registry service over a registry file, through real HTTP: applies and versions, 409 on
//! stale writes (concurrent appliers, two replicas on one file), snapshots with ETag, 304 and
//! long polls, narrowing, the JSON API, auth, TLS, bad input, external changes and restarts.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_registry::client::{Client, Endpoint};
use quiver_registry::snapshot;
use quiver_registry_service::{ServiceConfig, Standalone};
use support::*;

fn file_service(dir: &tempfile::TempDir, config: ServiceConfig) -> Standalone {
    let store = dir.path().join("registry.db");
    Standalone::start(store.to_str().unwrap(), 0, config, None).unwrap()
}

fn fast() -> ServiceConfig {
    ServiceConfig {
        poll_interval: Duration::from_millis(100),
        ..ServiceConfig::default()
    }
}

#[tokio::test]
async fn applies_versions_snapshots_and_the_json_api() {
    let dir = tempfile::tempdir().unwrap();
    let svc = file_service(&dir, fast());
    let mut c = client(&svc.url(), None);

    assert_eq!(
        get_json(&mut c, "/v1/projects").await.1,
        serde_json::json!({"projects": []})
    );
    let (status, body) = get_json(&mut c, "/v1/projects/demo/snapshot").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("UnknownProject"))
    );

    let (status, body) = apply(&mut c, "demo", 0, DEFS).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["previous_version"].as_u64(), body["version"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(body["changes"].as_array().unwrap().len(), 9, "{body}");
    // The file on disk is a Feast registry holding what was applied.
    let file = quiver_registry::store::read(&dir.path().join("registry.db")).unwrap();
    assert_eq!(file.project("demo").unwrap().feature_views.len(), 2);

    let (_, projects) = get_json(&mut c, "/v1/projects").await;
    assert_eq!(
        projects,
        serde_json::json!({"projects": [{"name": "demo", "version": 1}]})
    );
    let (status, views) = get_json(&mut c, "/v1/projects/demo/feature-views").await;
    assert_eq!(status, 200);
    assert_eq!(views["version"], 1);
    let names: Vec<&str> = views["feature_views"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hourly", "profile"]);
    // The summary is registry-sync's (the shape `quiver list --json` prints).
    let (_, whole) = get_json(&mut c, "/v1/projects/demo").await;
    let mut expected = quiver_registry::summary::summarize(&file.project("demo").unwrap());
    expected["version"] = 1.into();
    assert_eq!(whole, expected);
    for (path, key, n) in [
        ("entities", "entities", 2),
        ("data-sources", "data_sources", 2),
        ("feature-services", "feature_services", 2),
    ] {
        let (status, body) = get_json(&mut c, &format!("/v1/projects/demo/{path}")).await;
        assert_eq!(status, 200);
        assert_eq!(body[key].as_array().unwrap().len(), n, "{path}: {body}");
    }

    // The snapshot: checked, and the same project the file holds.
    let r = get(&mut c, "/v1/projects/demo/snapshot", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some(snapshot::CONTENT_TYPE));
    let snap = snapshot::decode(&r.body).unwrap();
    assert_eq!(r.etag.as_deref(), Some(snap.etag().as_str()));
    assert_eq!(snap.version, 1);
    assert_eq!(
        snap.project_registry("demo").unwrap(),
        file.project("demo").unwrap()
    );
    // Same ETag: 304, no body.
    let etag = r.etag.unwrap();
    let r = snapshot_if_none_match(&mut c, "/v1/projects/demo/snapshot", &etag).await;
    assert_eq!((r.status, r.body.len()), (304, 0));

    // Narrowed to one feature service: only what it reads.
    let r = get(
        &mut c,
        "/v1/projects/demo/snapshot?feature_services=drivers",
        &[],
    )
    .await;
    let narrow = snapshot::decode(&r.body).unwrap();
    let reg = narrow.project_registry("demo").unwrap();
    assert_eq!(reg.feature_views.len(), 1);
    assert!(reg.feature_view("hourly").is_some());
    assert_eq!(reg.entities.len(), 1);
    let (status, body) = get_json(
        &mut c,
        "/v1/projects/demo/snapshot?feature_services=drivers,nope",
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        body["message"].as_str().unwrap().contains("\"nope\""),
        "{body}"
    );
}

#[tokio::test]
async fn concurrent_appliers_one_wins_each_version_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    // Two replicas over one registry file: the version check holds across them.
    let a = file_service(&dir, fast());
    let b = file_service(&dir, fast());
    let urls = [a.url(), b.url()];
    let mut c = client(&urls[0], None);
    assert_eq!(apply(&mut c, "demo", 0, DEFS).await.0, 200);
    // Replica b learns of it through its poll of the store.
    let mut cb = client(&urls[1], None);
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_json(&mut cb, "/v1/projects/demo").await.1["version"] != 1 {
        assert!(Instant::now() < deadline, "replica b never saw version 1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Round one: eight appliers read version 1, then all send at once.
    const N: usize = 8;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for i in 0..N {
        let url = urls[i % 2].clone();
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let mut c = client(&url, None);
            let base = version(&mut c, "demo").await;
            barrier.wait().await;
            let (status, body) =
                apply(&mut c, "demo", base, &defs_with_view(&format!("v{i}"))).await;
            (i, base, status, body)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, base, status, body) = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("an applier hung")
            .unwrap();
        assert_eq!(base, 1);
        match status {
            200 => winners.push((i, body["version"].as_u64().unwrap())),
            409 => {
                assert_eq!(body["error"], "Conflict");
                assert_eq!(body["current_version"], 2, "{body}");
                let msg = body["message"].as_str().unwrap();
                assert!(
                    msg.contains("version 2") && msg.contains("based on version 1"),
                    "{msg}"
                );
            }
            other => panic!("applier {i}: {other} {body}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one apply based on version 1 wins: {winners:?}"
    );
    assert_eq!(winners[0].1, 2);
    // The registry holds the winner's view: the others changed nothing.
    let winner = format!("v{}", winners[0].0);
    let file = quiver_registry::store::read(&dir.path().join("registry.db")).unwrap();
    let views: Vec<String> = file
        .project("demo")
        .unwrap()
        .feature_views
        .iter()
        .map(|v| v.name.clone())
        .collect();
    assert_eq!(views, ["hourly", "profile", winner.as_str()]);

    // Appliers that retry on 409 (re-read, re-diff): every apply lands exactly once, each on
    // its own version, in sequence, with no version skipped or repeated.
    let mut tasks = Vec::new();
    for i in 0..N {
        let url = urls[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut c = client(&url, None);
            let mut conflicts = 0;
            loop {
                let base = version(&mut c, "demo").await;
                let (status, body) =
                    apply(&mut c, "demo", base, &defs_with_view(&format!("w{i}"))).await;
                match status {
                    200 => {
                        return (
                            body["previous_version"].as_u64().unwrap(),
                            body["version"].as_u64().unwrap(),
                            conflicts,
                        );
                    }
                    409 => conflicts += 1,
                    other => panic!("{other} {body}"),
                }
            }
        }));
    }
    let mut landed = Vec::new();
    for t in tasks {
        landed.push(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("an applier hung")
                .unwrap(),
        );
    }
    landed.sort();
    for (k, (prev, version, _)) in landed.iter().enumerate() {
        assert_eq!(
            (*prev, *version),
            (2 + k as u64, 3 + k as u64),
            "{landed:?}"
        );
    }
    // Both replicas come to agree (each hears of the other's applies through its poll).
    let deadline = Instant::now() + Duration::from_secs(5);
    while version(&mut c, "demo").await != 2 + N as u64
        || version(&mut cb, "demo").await != 2 + N as u64
    {
        assert!(Instant::now() < deadline, "the replicas never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn long_polls_wake_on_a_change_and_time_out_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let svc = file_service(&dir, fast());
    let mut c = client(&svc.url(), None);
    apply(&mut c, "demo", 0, DEFS).await;
    let etag = get(&mut c, "/v1/projects/demo/snapshot", &[])
        .await
        .etag
        .unwrap();
    let narrow_etag = get(
        &mut c,
        "/v1/projects/demo/snapshot?feature_services=customers",
        &[],
    )
    .await
    .etag
    .unwrap();

    // No change: 304 once the wait is over, not before.
    let started = Instant::now();
    let r = snapshot_if_none_match(&mut c, "/v1/projects/demo/snapshot?wait=400ms", &etag).await;
    assert_eq!(r.status, 304);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    // A change while waiting: the whole-project poll answers with it at once; the poll
    // narrowed to a service the change does not touch keeps waiting.
    let url = svc.url();
    let whole = tokio::spawn({
        let (url, etag) = (url.clone(), etag.clone());
        async move {
            let mut c = client(&url, None);
            let r =
                snapshot_if_none_match(&mut c, "/v1/projects/demo/snapshot?wait=20s", &etag).await;
            (r, Instant::now())
        }
    });
    let narrow = tokio::spawn({
        let (url, etag) = (url.clone(), narrow_etag.clone());
        async move {
            let mut c = client(&url, None);
            let r = snapshot_if_none_match(
                &mut c,
                "/v1/projects/demo/snapshot?feature_services=customers&wait=1500ms",
                &etag,
            )
            .await;
            (r, Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let applied_at = Instant::now();
    assert_eq!(
        apply(&mut c, "demo", 1, &defs_with_view("fresh")).await.0,
        200
    );
    let (r, at) = whole.await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        at - applied_at < Duration::from_millis(500),
        "{:?}",
        at - applied_at
    );
    let snap = snapshot::decode(&r.body).unwrap();
    assert_eq!(snap.version, 2);
    assert!(
        snap.project_registry("demo")
            .unwrap()
            .feature_view("fresh")
            .is_some()
    );
    let (r, _) = narrow.await.unwrap();
    assert_eq!(r.status, 304, "the customers snapshot did not change");
    assert_eq!(r.etag.as_deref(), Some(narrow_etag.as_str()));
}

#[tokio::test]
async fn changes_behind_the_services_back_get_a_version_and_wake_pollers() {
    let dir = tempfile::tempdir().unwrap();
    let svc = file_service(&dir, fast());
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
    // What `quiver apply` (or `feast apply`) does to the file, without the service.
    let path = dir.path().join("registry.db");
    {
        let _lock = quiver_registry::store::RegistryLock::acquire(&path).unwrap();
        let mut file = quiver_registry::store::read(&path).unwrap();
        let desired =
            quiver_registry::definitions::parse(&[("f.yaml", &defs_with_view("ext"))], "demo")
                .unwrap();
        quiver_registry::apply::apply(
            &mut file,
            &desired,
            quiver_core::time::Timestamp {
                seconds: 5,
                nanos: 0,
            },
        )
        .unwrap();
        quiver_registry::store::write_atomic(
            &path,
            &file.encode(
                "external",
                quiver_core::time::Timestamp {
                    seconds: 5,
                    nanos: 0,
                },
            ),
        )
        .unwrap();
    }
    let r = poll.await.unwrap();
    assert_eq!(r.status, 200);
    let snap = snapshot::decode(&r.body).unwrap();
    assert_eq!(snap.version, 2);
    assert!(
        snap.project_registry("demo")
            .unwrap()
            .feature_view("ext")
            .is_some()
    );
    // A write based on the version before the external change is stale.
    assert_eq!(apply(&mut c, "demo", 1, DEFS).await.0, 409);
}

#[tokio::test]
async fn a_restarted_service_carries_on_with_its_versions() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = file_service(&dir, fast());
    let mut c = client(&svc.url(), None);
    apply(&mut c, "demo", 0, DEFS).await;
    apply(&mut c, "demo", 1, &defs_with_view("x")).await;
    let etag = get(&mut c, "/v1/projects/demo/snapshot", &[])
        .await
        .etag
        .unwrap();
    svc.restart().unwrap();
    let mut c = client(&svc.url(), None);
    assert_eq!(version(&mut c, "demo").await, 2);
    let r = snapshot_if_none_match(&mut c, "/v1/projects/demo/snapshot", &etag).await;
    assert_eq!(
        r.status, 304,
        "the same content keeps its ETag across restarts"
    );
    assert_eq!(apply(&mut c, "demo", 2, DEFS).await.1["version"], 3);
}

#[tokio::test]
async fn tokens_guard_writes_and_optionally_reads() {
    let dir = tempfile::tempdir().unwrap();
    let svc = file_service(
        &dir,
        ServiceConfig {
            token: Some("s3cret".into()),
            ..fast()
        },
    );
    let mut anon = client(&svc.url(), None);
    let mut wrong = client(&svc.url(), Some("nope"));
    let mut good = client(&svc.url(), Some("s3cret"));
    let (status, body) = apply(&mut anon, "demo", 0, DEFS).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["message"].as_str().unwrap().contains("Bearer"));
    let (status, body) = apply(&mut wrong, "demo", 0, DEFS).await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("wrong"),
        "{body}"
    );
    assert_eq!(
        get_json(&mut anon, "/v1/projects").await.1["projects"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "nothing written"
    );
    assert_eq!(apply(&mut good, "demo", 0, DEFS).await.0, 200);
    // Reads are open by default.
    assert_eq!(
        get(&mut anon, "/v1/projects/demo/snapshot", &[])
            .await
            .status,
        200
    );

    let dir2 = tempfile::tempdir().unwrap();
    let locked = file_service(
        &dir2,
        ServiceConfig {
            token: Some("s3cret".into()),
            auth_reads: true,
            ..fast()
        },
    );
    let mut anon = client(&locked.url(), None);
    let mut good = client(&locked.url(), Some("s3cret"));
    assert_eq!(apply(&mut good, "demo", 0, DEFS).await.0, 200);
    assert_eq!(
        get(&mut anon, "/v1/projects/demo/snapshot", &[])
            .await
            .status,
        401
    );
    assert_eq!(
        get(&mut anon, "/v1/projects/demo/feature-views", &[])
            .await
            .status,
        401
    );
    assert_eq!(
        get(&mut good, "/v1/projects/demo/snapshot", &[])
            .await
            .status,
        200
    );
    // Probes and metrics stay open.
    for path in ["/health", "/ready", "/metrics"] {
        assert_eq!(get(&mut anon, path, &[]).await.status, 200, "{path}");
    }
    let metrics = String::from_utf8(get(&mut anon, "/metrics", &[]).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("quiver_registry_unauthorized_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("quiver_registry_project_version{project=\"demo\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_requests_are_4xx_naming_the_field_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let svc = file_service(
        &dir,
        ServiceConfig {
            max_body_bytes: 64 << 10,
            ..fast()
        },
    );
    let mut c = client(&svc.url(), None);
    assert_eq!(apply(&mut c, "demo", 0, DEFS).await.0, 200);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/projects/demo/apply", "not json".into(), 400, "body:"),
        ("/v1/projects/demo/apply", r#"{"base_version": 1, "files": [], "extra": 1}"#.into(), 400, "extra"),
        ("/v1/projects/demo/apply", r#"{"files": [{"path": "f.yaml", "content": "x: 1"}]}"#.into(), 400, "base_version"),
        ("/v1/projects/demo/apply", r#"{"base_version": 1, "files": []}"#.into(), 400, "files"),
        ("/v1/projects/demo/apply", r#"{"base_version": -1, "files": []}"#.into(), 400, "body:"),
        ("/v1/projects/demo/apply", r#"{"base_version": 1, "files": [{"path": "f.yaml", "content": "feature_views: [{name: v, entities: [nobody], source: s, schema: []}]"}]}"#.into(), 422, "f.yaml"),
        ("/v1/projects/_bad/apply", r#"{"base_version": 0, "files": []}"#.into(), 400, "project:"),
        ("/v1/projects/demo/apply?x=1", r#"{"base_version": 1, "files": []}"#.into(), 400, "x: unknown"),
        ("/v1/projects/demo/apply", format!(r#"{{"base_version": 1, "files": [{{"path": "f", "content": "{}"}}]}}"#, "a".repeat(70 << 10)), 413, "over"),
    ];
    for (path, body, status, needle) in cases {
        let (got, answer) = post_raw(&mut c, path, &body).await;
        assert_eq!(
            got,
            status,
            "{path} {}: {answer}",
            &body[..body.len().min(80)]
        );
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{path}: {message:?} should name {needle:?}"
        );
    }
    for (path, status, needle) in [
        ("/v1/projects/demo/snapshot?wait=forever", 400, "wait:"),
        ("/v1/projects/demo/snapshot?wait=2h", 400, "wait:"),
        ("/v1/projects/demo/snapshot?nope=1", 400, "nope"),
        ("/v1/projects/demo/feature-views?wait=1s", 400, "wait"),
        ("/v1/projects/-x/snapshot", 400, "project:"),
        ("/v1/projects/demo/tables", 404, "no endpoint"),
        ("/v2/anything", 404, "no endpoint"),
    ] {
        let r = get(&mut c, path, &[]).await;
        assert_eq!(r.status, status, "{path}");
        assert!(r.message().contains(needle), "{path}: {}", r.message());
    }
    let r = c
        .request(
            hyper::Method::DELETE,
            "/v1/projects/demo/snapshot",
            &[],
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 405);
    // After all that, still version 1 with the same objects.
    assert_eq!(version(&mut c, "demo").await, 1);
    let file = quiver_registry::store::read(&dir.path().join("registry.db")).unwrap();
    assert_eq!(file.project("demo").unwrap().feature_views.len(), 2);
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A private CA and a server certificate for localhost and 127.0.0.1.
    quiver_testkit::certificates(d);
    let acceptor =
        quiver_registry_service::tls::load(&d.join("server.crt"), &d.join("server.key")).unwrap();
    let store = d.join("registry.db");
    let svc = Standalone::start(store.to_str().unwrap(), 0, fast(), Some(acceptor)).unwrap();
    assert!(svc.url().starts_with("https://"));
    let endpoint = Endpoint::parse(&svc.url(), Some(&d.join("ca.crt"))).unwrap();
    let mut c = Client::new(endpoint, None);
    assert_eq!(apply(&mut c, "demo", 0, DEFS).await.0, 200);
    assert_eq!(
        get(&mut c, "/v1/projects/demo/snapshot", &[]).await.status,
        200
    );
    // Plain HTTP to the TLS port gets no answer; a client that does not trust the CA fails.
    let mut plain = client(&format!("http://127.0.0.1:{}", svc.port), None);
    assert!(
        plain
            .request(
                hyper::Method::GET,
                "/health",
                &[],
                None,
                Duration::from_secs(3)
            )
            .await
            .is_err()
    );
    let mut untrusting = Client::new(
        Endpoint::parse(&svc.url(), Some(&d.join("server.crt"))).unwrap(),
        None,
    );
    let err = untrusting
        .request(
            hyper::Method::GET,
            "/health",
            &[],
            None,
            Duration::from_secs(3),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
    // Mismatched files are refused with the flag named.
    let err = quiver_registry_service::tls::load(&d.join("ca.crt"), &d.join("server.key"))
        .err()
        .unwrap();
    assert!(err.contains("--tls-cert"), "{err}");
}

#[tokio::test]
async fn materialization_intervals_are_recorded_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let svc = file_service(&dir, fast());
    let mut c = client(&svc.url(), None);
    materializations_scenario(&mut c).await;
    // In the file as Feast's apply_materialization leaves it.
    let file = quiver_registry::store::read(&dir.path().join("registry.db")).unwrap();
    let hourly = file
        .project("demo")
        .unwrap()
        .feature_view("hourly")
        .unwrap()
        .clone();
    assert_eq!(hourly.materialization_intervals.len(), 2);

    // Writes need the token when one is set.
    let dir = tempfile::tempdir().unwrap();
    let config = ServiceConfig {
        token: Some("s3cret".into()),
        ..fast()
    };
    let svc = file_service(&dir, config);
    let mut c = client(&svc.url(), None);
    let (status, _) = post_raw(
        &mut c,
        "/v1/projects/demo/materializations",
        r#"{"intervals": [{"feature_view": "hourly", "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}]}"#,
    )
    .await;
    assert_eq!(status, 401);
}

/// `DELETE` with `authorization` as given (`None`: no header).
async fn delete(
    client: &mut Client,
    path: &str,
    authorization: Option<&str>,
) -> (u16, serde_json::Value) {
    let headers: Vec<(hyper::header::HeaderName, String)> = authorization
        .map(|a| (hyper::header::AUTHORIZATION, a.to_owned()))
        .into_iter()
        .collect();
    let r = client
        .request(
            hyper::Method::DELETE,
            path,
            &headers,
            None,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null),
    )
}

/// Issue 19: an interval ending in year 9999 (recorded before the service refused them, e.g.
/// by `quiver materialize --force` on the file) poisoned every later incremental run, and
/// nothing could remove it. The operator's token now clears a view's intervals; the scheme is
/// case-insensitive; without the token nothing changes.
#[tokio::test]
async fn a_poisoned_interval_is_cleared_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let svc = file_service(
        &dir,
        ServiceConfig {
            token: Some("s3cret".into()),
            ..fast()
        },
    );
    let mut good = client(&svc.url(), Some("s3cret"));
    let (status, body) = apply(&mut good, "demo", 0, DEFS).await;
    assert_eq!(status, 200, "{body}");
    let at = |s: &str| quiver_core::time::parse_datetime(s).unwrap();
    quiver_registry::store::record_materialization(
        &dir.path().join("registry.db"),
        "demo",
        &[quiver_registry::store::MaterializedInterval {
            view: "hourly".into(),
            start: at("2026-01-01T00:00:00Z"),
            end: at("9999-12-31T00:00:00Z"),
        }],
        at("2026-01-01T00:00:00Z"),
        "behind-its-back",
    )
    .unwrap();
    let started = Instant::now();
    while version(&mut good, "demo").await < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let intervals = |dir: &tempfile::TempDir| {
        quiver_registry::store::read(&dir.path().join("registry.db"))
            .unwrap()
            .project("demo")
            .unwrap()
            .feature_view("hourly")
            .unwrap()
            .materialization_intervals
            .len()
    };
    assert_eq!(intervals(&dir), 1);

    let path = "/v1/projects/demo/materializations/hourly";
    let mut anon = client(&svc.url(), None);
    let (status, body) = delete(&mut anon, path, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = delete(&mut anon, path, Some("Bearer nope")).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("wrong"),
        "{body}"
    );
    assert_eq!(intervals(&dir), 1, "nothing cleared without the token");

    let (status, body) = delete(&mut anon, path, Some("bearer s3cret")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cleared"], "hourly");
    assert_eq!(body["version"], 3);
    assert_eq!(intervals(&dir), 0);

    let (status, body) = delete(
        &mut anon,
        "/v1/projects/demo/materializations/nope",
        Some("BEARER s3cret"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["message"].as_str().unwrap().contains("nope"), "{body}");
    let (status, _) = delete(
        &mut anon,
        "/v1/projects/demo/materializations",
        Some("Bearer s3cret"),
    )
    .await;
    assert_eq!(status, 405);
    assert_eq!(version(&mut good, "demo").await, 3);

    // A lowercase scheme is accepted for every write; an end in the future is refused even
    // with the token.
    let future = r#"{"intervals": [{"feature_view": "hourly", "start": "2026-01-01T00:00:00Z", "end": "9999-12-31T00:00:00Z"}]}"#;
    let (status, body) = post_raw(&mut good, "/v1/projects/demo/materializations", future).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("intervals[0].end"),
        "{body}"
    );
    let r = anon
        .request(
            hyper::Method::POST,
            "/v1/projects/demo/materializations",
            &[(hyper::header::AUTHORIZATION, "bearer s3cret".to_owned())],
            Some((
                bytes::Bytes::from_static(br#"{"intervals": [{"feature_view": "hourly", "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}]}"#),
                "application/json",
            )),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(intervals(&dir), 1);

    // /ready and /metrics say that writes need a token.
    let (_, ready) = get_json(&mut anon, "/ready").await;
    assert_eq!(ready["auth"], "token", "{ready}");
    let metrics = String::from_utf8(get(&mut anon, "/metrics", &[]).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("quiver_registry_writes_unauthenticated 0"),
        "{metrics}"
    );
    let open_dir = tempfile::tempdir().unwrap();
    let open = file_service(&open_dir, fast());
    let mut c = client(&open.url(), None);
    assert_eq!(get_json(&mut c, "/ready").await.1["auth"], "off");
    let metrics = String::from_utf8(get(&mut c, "/metrics", &[]).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("quiver_registry_writes_unauthenticated 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sources_outside_the_repo_and_the_allowed_locations_are_refused_at_apply() {
    let dir = tempfile::tempdir().unwrap();
    let svc = file_service(&dir, fast());
    let mut c = client(&svc.url(), None);
    assert_eq!(apply(&mut c, "demo", 0, DEFS).await.0, 200);
    for (path, extra, field, needle) in [
        ("/etc/passwd", "", "path", "outside the repo"),
        ("../../elsewhere/stats.parquet", "", "path", "climbs out"),
        (
            "s3://attacker-bucket/stats.parquet",
            "",
            "path",
            "s3://attacker-bucket",
        ),
        (
            "data/stats.parquet",
            ", s3_endpoint_override: 'http://169.254.169.254'",
            "s3_endpoint_override",
            "not an allowed endpoint",
        ),
    ] {
        let defs = DEFS.replace(
            "{name: stats, path: data/stats.parquet}",
            &format!("{{name: stats, path: '{path}'{extra}}}"),
        );
        let (status, body) = apply(&mut c, "demo", 1, &defs).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"], "UntrustedLocation", "{body}");
        let problem = &body["problems"][0];
        assert_eq!(problem["object"], "source \"stats\"", "{body}");
        assert_eq!(problem["field"], field, "{body}");
        assert!(
            problem["message"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
        assert_eq!(version(&mut c, "demo").await, 1, "nothing was written");
    }
}

#[tokio::test]
async fn temp_files_of_a_killed_writer_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // A process that is gone.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let stale = [
        dir.path().join(format!(".registry.db.tmp-{pid}")),
        dir.path()
            .join(format!("..registry.db.versions.json.tmp-{pid}")),
    ];
    // A live process's (PID 1's) fresh write in progress, and an unrelated file, are left
    // alone.
    let live = dir.path().join(".registry.db.tmp-1");
    let unrelated = dir.path().join(format!(".other.db.tmp-{pid}"));
    for f in stale.iter().chain([&live, &unrelated]) {
        std::fs::write(f, b"half a registry").unwrap();
    }
    let svc = file_service(&dir, fast());
    for f in &stale {
        assert!(!f.exists(), "{} is still there", f.display());
    }
    assert!(live.exists() && unrelated.exists());
    // The service works on the same folder.
    let mut c = client(&svc.url(), None);
    assert_eq!(apply(&mut c, "demo", 0, DEFS).await.0, 200);
}

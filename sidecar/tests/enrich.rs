//! KServe enrichment against a real hyper upstream on loopback: the body the model server
//! receives, its answer passed back unchanged (status, content type, body), and the upstream's
//! failures as 502 (unreachable, answer over the limit) and 504 (deadline).

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use quiver_core::Value;
use quiver_online_store::{OnlineStore, SqliteStore};
use quiver_sidecar::SidecarConfig;
use quiver_sidecar::enrich::{EnrichConfig, Enricher, UpstreamConfig};
use serde_json::{Value as Json, json};
use support::*;

const ENRICH: &str = "
models:
  m:
    feature_service: svc
    entities: [driver_id]
    missing: {fill: -1}
  teapot: {feature_service: svc, entities: [driver_id], missing: {fill: 0}}
  slow: {feature_service: svc, entities: [driver_id], missing: {fill: 0}}
  big: {feature_service: svc, entities: [driver_id], missing: {fill: 0}}
  each: {feature_service: svc, entities: [driver_id], missing: {fill: {rate: 0.25}}}
";

/// What the upstream saw: (method, path, content type, x-request-id, body).
type Seen = Arc<Mutex<Vec<(String, String, String, String, Vec<u8>)>>>;

/// A model server: echoes what it got on `m`, answers 418 text on `teapot`, waits 2 s on
/// `slow`, sends 2 MiB on `big`, and answers the V2 health read.
async fn upstream() -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::clone(&record);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let seen = Arc::clone(&seen);
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_owned();
                            let header = |n: &str| {
                                req.headers()
                                    .get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_owned()
                            };
                            let (ct, rid) = (header("content-type"), header("x-request-id"));
                            let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                            seen.lock().unwrap().push((
                                method,
                                path.clone(),
                                ct,
                                rid,
                                body.clone(),
                            ));
                            let resp = match path.as_str() {
                                "/v1/models/teapot:predict" => Response::builder()
                                    .status(418)
                                    .header("content-type", "text/plain")
                                    .body(Full::new(Bytes::from_static(b"short and stout"))),
                                "/v1/models/slow:predict" => {
                                    tokio::time::sleep(Duration::from_secs(2)).await;
                                    Response::builder().body(Full::new(Bytes::new()))
                                }
                                "/v1/models/big:predict" => Response::builder()
                                    .body(Full::new(Bytes::from(vec![b' '; 2 << 20]))),
                                "/v2/health/ready" => Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from_static(b"{\"ready\":true}"))),
                                _ => Response::builder()
                                    .header("content-type", "application/json; charset=utf-8")
                                    .header("x-model", "echo")
                                    .body(Full::new(Bytes::from(body))),
                            };
                            Ok::<_, Infallible>(resp.unwrap())
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn enricher(upstream: SocketAddr) -> Arc<Enricher> {
    let config = EnrichConfig::parse(ENRICH, "enrich.yaml").unwrap();
    let mut up = UpstreamConfig::parse(&format!("http://{upstream}")).unwrap();
    up.timeout = Duration::from_millis(300);
    up.max_response_bytes = 1 << 20;
    Arc::new(Enricher::new(config, up))
}

async fn sidecar(repo: &Repo, upstream: SocketAddr) -> Sidecar {
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(
        &repo.path().join("data/online.db"),
    )));
    let config = SidecarConfig {
        enrich: Some(enricher(upstream)),
        ..SidecarConfig::default()
    };
    let sidecar = start_sidecar(config, "demo", repo.registry_path(), store).await;
    let enrich = sidecar.state.config.enrich.as_ref().unwrap();
    enrich.config.check(&sidecar.state.registry.load()).unwrap();
    sidecar
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_enriched_instances_and_returns_the_answer_unchanged() {
    let repo = Repo::new("demo", ENRICH_DEFS);
    let db = repo.path().join("data/online.db");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    write_sqlite(
        &db,
        "demo",
        "stats",
        1,
        &[("rate", Value::Double(0.5)), ("trips", Value::Int64(7))],
        now,
    );
    write_sqlite(
        &db,
        "demo",
        "stats",
        2,
        &[("rate", Value::Double(1.25)), ("trips", Value::Int64(3))],
        now,
    );
    let (up, seen) = upstream().await;
    let sidecar = sidecar(&repo, up).await;

    // V1: the instances as feature rows in the service's order; 3 is not stored: filled.
    let (status, head, body) = http_raw(
        sidecar.addr,
        "/v1/models/m:predict?trace=1",
        &[("content-type", "application/json"), ("x-request-id", "abc")],
        br#"{"instances": [{"driver_id": 1}, {"driver_id": 2}, {"driver_id": 3}], "parameters": {"k": 1}}"#,
    )
    .await;
    assert_eq!(status, 200, "{head}");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-type: application/json; charset=utf-8"),
        "{head}"
    );
    assert!(head.contains("x-model: echo"), "{head}");
    let forwarded: Json = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        forwarded,
        json!({"instances": [[0.5, 7], [1.25, 3], [-1.0, -1]], "parameters": {"k": 1}})
    );
    {
        let seen = seen.lock().unwrap();
        let (method, path, ct, rid, _) = &seen[0];
        assert_eq!(
            (method.as_str(), path.as_str(), ct.as_str(), rid.as_str()),
            ("POST", "/v1/models/m:predict", "application/json", "abc")
        );
    }

    // V2: the entity tensor replaced by one typed tensor per feature.
    let (status, _, body) = http_raw(
        sidecar.addr,
        "/v2/models/m/infer",
        &[],
        br#"{"inputs": [{"name": "driver_id", "shape": [2, 1], "datatype": "INT64", "data": [2, 1]}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    let forwarded: Json = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        forwarded["inputs"],
        json!([
            {"name": "rate", "shape": [2], "datatype": "FP64", "data": [1.25, 0.5]},
            {"name": "trips", "shape": [2], "datatype": "INT64", "data": [3, 7]},
        ])
    );

    // The model's own errors come back as the model gave them.
    let (status, head, body) = http_raw(
        sidecar.addr,
        "/v1/models/teapot:predict",
        &[],
        br#"{"instances": [{"driver_id": 1}]}"#,
    )
    .await;
    assert_eq!(status, 418);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    assert_eq!(body, b"short and stout");

    // Past the deadline: 504; an answer over the limit: 502 naming it, never buffered whole.
    let (status, _, body) = http_raw(
        sidecar.addr,
        "/v1/models/slow:predict",
        &[],
        br#"{"instances": [{"driver_id": 1}]}"#,
    )
    .await;
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("did not answer within"));
    let (status, _, body) = http_raw(
        sidecar.addr,
        "/v1/models/big:predict",
        &[],
        br#"{"instances": [{"driver_id": 1}]}"#,
    )
    .await;
    assert_eq!(status, 502);
    assert!(String::from_utf8_lossy(&body).contains("larger than 1048576 bytes"));

    // Reads pass through; a body over the sidecar's limit is refused before any lookup.
    let (status, body) = http(sidecar.addr, "GET", "/v2/health/ready", b"").await;
    assert_eq!((status, body.as_str()), (200, "{\"ready\":true}"));
    let huge = format!(
        "{{\"instances\": [{}]}}",
        vec!["{\"driver_id\": 1}"; 80_000].join(",")
    );
    let (status, _) = http(
        sidecar.addr,
        "POST",
        "/v1/models/m:predict",
        huge.as_bytes(),
    )
    .await;
    assert_eq!(status, 413);
    // Triton's binary tensors are refused (422 naming the header), as is an unknown model (404).
    let (status, _, body) = http_raw(
        sidecar.addr,
        "/v2/models/m/infer",
        &[("inference-header-content-length", "10")],
        b"{\"inputs\":[]}xxxxxxx",
    )
    .await;
    assert_eq!(status, 422);
    assert!(String::from_utf8_lossy(&body).contains("Inference-Header-Content-Length"));
    let (status, body) = http(sidecar.addr, "POST", "/v1/models/nope:predict", b"{}").await;
    assert_eq!(status, 404);
    assert!(body.contains("nope"), "{body}");
    let calls = seen.lock().unwrap().len();
    assert_eq!(calls, 6, "a refused request reached the model");

    // Per-model metrics: fixed series for the configured models.
    assert_eq!(
        metric(
            sidecar.addr,
            "quiver_enrich_requests_total{model=\"m\",protocol=\"v1\",status=\"2xx\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            sidecar.addr,
            "quiver_enrich_requests_total{model=\"m\",protocol=\"v2\",status=\"2xx\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            sidecar.addr,
            "quiver_enrich_requests_total{model=\"slow\",protocol=\"v1\",status=\"5xx\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            sidecar.addr,
            "quiver_enrich_missing_features_total{model=\"m\"}"
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(sidecar.addr, "quiver_enrich_rows_total{model=\"m\"}").await,
        5.0
    );
    assert!(
        metric(
            sidecar.addr,
            "quiver_enrich_added_seconds_count{model=\"m\"}"
        )
        .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_model_server_is_a_502_naming_it() {
    let repo = Repo::new("demo", ENRICH_DEFS);
    // A port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let sidecar = sidecar(&repo, dead).await;
    let (status, body) = http(
        sidecar.addr,
        "POST",
        "/v1/models/m:predict",
        br#"{"instances": [{"driver_id": 1}]}"#,
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains(&format!("model server http://{dead}")),
        "{body}"
    );
    let (status, _) = http(sidecar.addr, "GET", "/v2/health/live", b"").await;
    assert_eq!(status, 502);
    // Feast's API on the same port is unaffected.
    let (status, _) = post(
        sidecar.addr,
        json!({"feature_service": "svc", "entities": {"driver_id": [1]}}),
    )
    .await;
    assert_eq!(status, 200);
}

const NATIVE_DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: src, path: data/src.parquet}
  - name: trip
    type: request
    schema: [{name: km, dtype: Float64}]
feature_views:
  - name: stats
    entities: [driver]
    source: src
    schema:
      - {name: rate, dtype: Float64}
on_demand_feature_views:
  - name: adj
    sources: [stats]
    request_source: trip
    features:
      - {name: cost, dtype: Float64, expr: "stats.rate * km"}
feature_services:
  - name: svc
    features: [stats, adj]
"#;

/// Request inputs feed a native on-demand view, and `order` mixes inputs and features.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_inputs_feed_native_on_demand_views_in_the_configured_order() {
    let repo = Repo::new("demo", NATIVE_DEFS);
    let db = repo.path().join("data/online.db");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    write_sqlite(
        &db,
        "demo",
        "stats",
        1,
        &[("rate", Value::Double(0.5))],
        now,
    );
    let (up, _seen) = upstream().await;
    let config = EnrichConfig::parse(
        "models:\n  m:\n    feature_service: svc\n    entities: [driver_id]\n    request_inputs: [km]\n    order: [km, rate, cost]\n    v2: {layout: stacked, name: x}\n",
        "enrich.yaml",
    )
    .unwrap();
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(&db)));
    let sidecar = start_sidecar(
        SidecarConfig {
            enrich: Some(Arc::new(Enricher::new(
                config,
                UpstreamConfig::parse(&format!("http://{up}")).unwrap(),
            ))),
            ..SidecarConfig::default()
        },
        "demo",
        repo.registry_path(),
        store,
    )
    .await;
    let registry = sidecar.state.registry.load();
    let enrich = sidecar.state.config.enrich.as_ref().unwrap();
    enrich.config.check(&registry).unwrap();

    let (status, body) = http(
        sidecar.addr,
        "POST",
        "/v1/models/m:predict",
        br#"{"instances": [{"driver_id": 1, "km": 3.0}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let forwarded: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(forwarded, json!({"instances": [[3.0, 0.5, 1.5]]}));

    let (status, body) = http(
        sidecar.addr,
        "POST",
        "/v2/models/m/infer",
        br#"{"inputs": [{"name": "km", "shape": [1], "datatype": "FP64", "data": [4.0]}, {"name": "driver_id", "shape": [1], "datatype": "INT64", "data": [1]}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let forwarded: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        forwarded["inputs"],
        json!([{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [4.0, 0.5, 2.0]}])
    );

    // A config that leaves the view's request field out is refused against the registry.
    let bad = EnrichConfig::parse(
        "models:\n  m:\n    feature_service: svc\n    entities: [driver_id]\n    order: [nope]\n",
        "enrich.yaml",
    )
    .unwrap();
    let e = bad.check(&registry).unwrap_err().to_string();
    assert!(
        e.contains(
            "models.m.request_inputs: the service's on-demand views read request field \"km\""
        ),
        "{e}"
    );
    assert!(
        e.contains("models.m.order: \"nope\" is neither a feature"),
        "{e}"
    );
}

/// `missing: {fill: {rate: 0.25}}`: a missing rate is filled, a missing trips (not named) is
/// refused with a 422 naming the instance and the feature; a fill naming something that is not
/// a feature of the service is refused against the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_per_feature_fills_the_features_it_names_and_refuses_the_others() {
    let repo = Repo::new("demo", ENRICH_DEFS);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Driver 1 has trips but no rate; driver 2 has nothing.
    write_sqlite(
        &repo.path().join("data/online.db"),
        "demo",
        "stats",
        1,
        &[("trips", Value::Int64(7))],
        now,
    );
    let (up, _) = upstream().await;
    let sidecar = sidecar(&repo, up).await;
    let (status, _, body) = http_raw(
        sidecar.addr,
        "/v1/models/each:predict",
        &[],
        br#"{"instances": [{"driver_id": 1}]}"#,
    )
    .await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(
        (status, body.as_ref()),
        (200, r#"{"instances":[[0.25,7]]}"#)
    );
    let (status, _, body) = http_raw(
        sidecar.addr,
        "/v1/models/each:predict",
        &[],
        br#"{"instances": [{"driver_id": 1}, {"driver_id": 2}]}"#,
    )
    .await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("instances[1] (driver_id=2): feature trips has no value"),
        "{body}"
    );

    let bad = EnrichConfig::parse(
        "models:\n  m:\n    feature_service: svc\n    entities: [driver_id]\n    missing: {fill: {rate: 0.5, trip: 0, trips: x}}\n",
        "enrich.yaml",
    )
    .unwrap();
    let e = bad
        .check(&sidecar.state.registry.load())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("models.m.missing: fill names \"trip\", which is not one of the model's features (rate, trips)"),
        "{e}"
    );
    assert!(
        e.contains("models.m.missing: the fill \"x\" does not fit trips"),
        "{e}"
    );
}

/// A registry that no longer fits the enrich config (the service loses a feature a model is
/// enriched with) is not swapped in: the model keeps its features from the last good registry,
/// `/ready` names the reason and the reload is counted as failed; a fitting registry after it
/// is swapped in as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_breaks_the_enrich_config_is_not_swapped_in() {
    let repo = Repo::new("demo", ENRICH_DEFS);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    write_sqlite(
        &repo.path().join("data/online.db"),
        "demo",
        "stats",
        1,
        &[("rate", Value::Double(0.5)), ("trips", Value::Int64(7))],
        now,
    );
    let (up, _) = upstream().await;
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(
        &repo.path().join("data/online.db"),
    )));
    let config = SidecarConfig {
        enrich: Some(enricher(up)),
        registry_refresh: Duration::from_millis(20),
        ..SidecarConfig::default()
    };
    let sidecar = start_sidecar(config, "demo", repo.registry_path(), store).await;
    let predict = || async {
        let (status, _, body) = http_raw(
            sidecar.addr,
            "/v1/models/m:predict",
            &[],
            br#"{"instances": [{"driver_id": 1}]}"#,
        )
        .await;
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    assert_eq!(
        predict().await,
        (200, r#"{"instances":[[0.5,7]]}"#.to_owned())
    );

    // The view's join key changes (driver_id → vehicle_id): the model's entity inputs no longer
    // match it, so no request of this model could be answered under that registry.
    let rekeyed = ENRICH_DEFS
        .replace("join_keys: [driver_id]", "join_keys: [vehicle_id]")
        .replace("name: driver,", "name: vehicle,")
        .replace("entities: [driver]", "entities: [vehicle]");
    assert_ne!(rekeyed, ENRICH_DEFS);
    repo.apply(&rekeyed);
    let mut reasons = String::new();
    for _ in 0..250 {
        let (_, body) = http(sidecar.addr, "GET", "/ready", b"").await;
        if body.contains("does not fit the enrich config") {
            reasons = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        reasons.contains("models.m.entities") && reasons.contains("serving the last good one"),
        "/ready: {reasons}"
    );
    assert!(metric(sidecar.addr, "quiver_registry_reload_errors_total").await >= 1.0);
    assert_eq!(
        predict().await,
        (200, r#"{"instances":[[0.5,7]]}"#.to_owned())
    );

    // A registry that fits again (a new feature the service now also serves) is swapped in.
    let extended = ENRICH_DEFS.replace(
        "      - {name: trips, dtype: Int64}",
        "      - {name: trips, dtype: Int64}\n      - {name: score, dtype: Float64}",
    );
    repo.apply(&extended);
    let mut last = (0, String::new());
    for _ in 0..250 {
        last = predict().await;
        if last.1 != r#"{"instances":[[0.5,7]]}"# {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // score is not stored for driver 1: filled.
    assert_eq!(last, (200, r#"{"instances":[[0.5,7,-1.0]]}"#.to_owned()));
    let (_, body) = http(sidecar.addr, "GET", "/ready", b"").await;
    assert!(!body.contains("enrich config"), "/ready: {body}");
}

/// The serving port in enrichment mode (`Surface::Kserve`) answers KServe's paths, the probes
/// and `/metrics`, and nothing of Feast's API: whoever may call the model cannot read or write
/// features through it. The full API stays on the other listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kserve_serving_port_answers_kserve_probes_and_metrics_only() {
    let repo = Repo::new("demo", ENRICH_DEFS);
    let (up, _) = upstream().await;
    let sidecar = sidecar(&repo, up).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let serving = listener.local_addr().unwrap();
    tokio::spawn(quiver_sidecar::server::serve_surface(
        quiver_http::Server::new(quiver_http::Limits::default()),
        listener,
        Arc::clone(&sidecar.state),
        quiver_sidecar::server::Surface::Kserve,
        std::future::pending(),
    ));
    let read = br#"{"feature_service": "svc", "entities": {"driver_id": [1]}}"#;
    let (status, body) = http(serving, "POST", "/get-online-features", read).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("NotOnServingPort") && body.contains("--api-port"),
        "{body}"
    );
    for path in ["/push", "/write-to-online-store", "/materialize", "/nope"] {
        let (status, _) = http(serving, "POST", path, b"{}").await;
        assert_eq!(status, 404, "{path}");
    }
    for path in ["/health", "/ready", "/metrics"] {
        let (status, body) = http(serving, "GET", path, b"").await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _, body) = http_raw(
        serving,
        "/v1/models/m:predict",
        &[],
        br#"{"instances": [{"driver_id": 1}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // The other listener still serves the whole API.
    let (status, body) = http(sidecar.addr, "POST", "/get-online-features", read).await;
    assert_eq!(status, 200, "{body}");
}

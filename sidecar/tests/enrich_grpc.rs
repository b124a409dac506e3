//! KServe V2 over gRPC against a real HTTP/2 upstream on loopback: the ModelInferRequest the
//! model server receives (entity tensors out, feature tensors in, typed or raw as the request
//! came), its answer passed back unchanged (message, headers, trailers), and the statuses for
//! bad requests and for an upstream that is slow or gone.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use quiver_core::Value;
use quiver_http::grpc::{self, GrpcBody};
use quiver_online_store::{OnlineStore, SqliteStore};
use quiver_sidecar::SidecarConfig;
use quiver_sidecar::enrich::grpc::pb;
use quiver_sidecar::enrich::{EnrichConfig, Enricher, UpstreamConfig};
use support::*;

const ENRICH: &str = "
models:
  m: {feature_service: svc, entities: [driver_id], missing: {fill: -1}}
  stacked:
    feature_service: svc
    entities: [driver_id]
    missing: {fill: 0}
    v2: {layout: stacked, name: x, datatype: FP32}
  slow: {feature_service: svc, entities: [driver_id], missing: {fill: 0}}
";

/// A model's gRPC port: echoes the message it got as its answer (with `x-model: echo` and a
/// status trailer), and waits 2 s for the model `slow`.
async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let message = grpc::unframe(body.clone()).unwrap();
                        let request = pb::ModelInferRequest::decode(message).unwrap();
                        if request.model_name == "slow" {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", HeaderValue::from_static("0"));
                        let mut resp = Response::new(GrpcBody::new(body, Some(trailers)));
                        resp.headers_mut()
                            .insert("content-type", HeaderValue::from_static("application/grpc"));
                        resp.headers_mut()
                            .insert("x-model", HeaderValue::from_static("echo"));
                        Ok::<_, Infallible>(resp)
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The sidecar (HTTP) and its gRPC port in front of `upstream`.
async fn sidecar(repo: &Repo, upstream: SocketAddr) -> (Sidecar, SocketAddr) {
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
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(&db)));
    let config = EnrichConfig::parse(ENRICH, "enrich.yaml").unwrap();
    let rest = UpstreamConfig::parse("http://127.0.0.1:1").unwrap();
    let mut up = UpstreamConfig::parse(&format!("http://{upstream}")).unwrap();
    up.timeout = Duration::from_millis(300);
    let enricher = Enricher::new(config, rest).with_grpc(up);
    let config = SidecarConfig {
        enrich: Some(Arc::new(enricher)),
        ..SidecarConfig::default()
    };
    let sidecar = start_sidecar(config, "demo", repo.registry_path(), store).await;
    let enrich = sidecar.state.config.enrich.as_ref().unwrap();
    enrich.config.check(&sidecar.state.registry.load()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = quiver_http::Server::new(quiver_http::Limits::default()).http2();
    tokio::spawn(quiver_sidecar::enrich::grpc::serve(
        server,
        listener,
        Arc::clone(&sidecar.state),
        std::future::pending(),
    ));
    (sidecar, addr)
}

/// One unary call: the answer's headers, then Ok(message) or Err((code, message)).
async fn call(
    addr: SocketAddr,
    method: &str,
    message: Vec<u8>,
) -> (HeaderMap, Result<Bytes, (i32, String)>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!(
        "http://{addr}/inference.GRPCInferenceService/{method}"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(Full::new(grpc::frame(&message)))
    .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let headers = resp.headers().clone();
    if let Some((code, m)) = grpc::status(&headers) {
        return (headers, Err((code, m)));
    }
    let collected = resp.into_body().collect().await.unwrap();
    let (code, m) = grpc::status(collected.trailers().unwrap()).unwrap();
    if code != 0 {
        return (headers, Err((code, m)));
    }
    (headers, Ok(grpc::unframe(collected.to_bytes()).unwrap()))
}

fn tensor(
    name: &str,
    datatype: &str,
    shape: &[i64],
    contents: Option<pb::InferTensorContents>,
) -> pb::model_infer_request::InferInputTensor {
    pb::model_infer_request::InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        parameters: Default::default(),
        contents,
    }
}

fn request(
    model: &str,
    inputs: Vec<pb::model_infer_request::InferInputTensor>,
) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.into(),
        id: "r1".into(),
        inputs,
        ..Default::default()
    }
}

/// What the echoing model server received.
fn forwarded(answer: Result<Bytes, (i32, String)>) -> pb::ModelInferRequest {
    pb::ModelInferRequest::decode(answer.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_infer_gets_feature_tensors_typed_or_raw_as_the_request_came() {
    let repo = Repo::new("demo", ENRICH_DEFS);
    let (_sidecar, addr) = sidecar(&repo, upstream().await).await;

    // Typed contents: driver 1 is stored, driver 2 is not (filled with -1).
    let ids = pb::InferTensorContents {
        int64_contents: vec![1, 2],
        ..Default::default()
    };
    let other = pb::InferTensorContents {
        fp32_contents: vec![9.5],
        ..Default::default()
    };
    let req = request(
        "m",
        vec![
            tensor("driver_id", "INT64", &[2], Some(ids)),
            tensor("other", "FP32", &[1], Some(other.clone())),
        ],
    );
    let (headers, answer) = call(addr, "ModelInfer", req.encode_to_vec()).await;
    assert_eq!(
        headers.get("x-model").unwrap(),
        "echo",
        "the model's headers pass"
    );
    let got = forwarded(answer);
    assert_eq!((got.model_name.as_str(), got.id.as_str()), ("m", "r1"));
    let names: Vec<&str> = got.inputs.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["other", "rate", "trips"],
        "entity tensor out, features in"
    );
    assert_eq!(got.inputs[0].contents.as_ref(), Some(&other));
    let rate = &got.inputs[1];
    assert_eq!(
        (rate.datatype.as_str(), rate.shape.as_slice()),
        ("FP64", &[2][..])
    );
    assert_eq!(rate.contents.as_ref().unwrap().fp64_contents, [0.5, -1.0]);
    assert_eq!(
        got.inputs[2].contents.as_ref().unwrap().int64_contents,
        [7, -1]
    );
    assert!(got.raw_input_contents.is_empty());

    // Raw: every input raw, the feature tensors added raw (little-endian) in the same order.
    let mut req = request(
        "m",
        vec![
            tensor("other", "FP32", &[1], None),
            tensor("driver_id", "INT64", &[2, 1], None),
        ],
    );
    req.raw_input_contents = vec![
        Bytes::copy_from_slice(&9.5f32.to_le_bytes()),
        Bytes::from([1i64.to_le_bytes(), 2i64.to_le_bytes()].concat()),
    ];
    let got = forwarded(call(addr, "ModelInfer", req.encode_to_vec()).await.1);
    let names: Vec<&str> = got.inputs.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["other", "rate", "trips"]);
    assert!(got.inputs.iter().all(|t| t.contents.is_none()));
    assert_eq!(got.raw_input_contents.len(), 3);
    assert_eq!(&got.raw_input_contents[0][..], &9.5f32.to_le_bytes());
    assert_eq!(
        &got.raw_input_contents[1][..],
        &[0.5f64.to_le_bytes(), (-1f64).to_le_bytes()].concat()[..]
    );
    assert_eq!(
        &got.raw_input_contents[2][..],
        &[7i64.to_le_bytes(), (-1i64).to_le_bytes()].concat()[..]
    );

    // Stacked: one [n, k] FP32 tensor, row-major.
    let ids = pb::InferTensorContents {
        int64_contents: vec![1, 2],
        ..Default::default()
    };
    let req = request(
        "stacked",
        vec![tensor("driver_id", "INT64", &[2], Some(ids))],
    );
    let got = forwarded(call(addr, "ModelInfer", req.encode_to_vec()).await.1);
    assert_eq!(got.inputs.len(), 1);
    assert_eq!(
        (got.inputs[0].name.as_str(), got.inputs[0].shape.as_slice()),
        ("x", &[2, 2][..])
    );
    assert_eq!(
        got.inputs[0].contents.as_ref().unwrap().fp32_contents,
        [0.5, 7.0, 0.0, 0.0]
    );

    // Other calls pass through as bytes (the echo answers the message sent).
    let (_, answer) = call(addr, "ModelReady", request("m", vec![]).encode_to_vec()).await;
    assert_eq!(forwarded(answer).model_name, "m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_upstream_failures_are_grpc_statuses_naming_the_cause() {
    let repo = Repo::new("demo", ENRICH_DEFS);
    let (sidecar, addr) = sidecar(&repo, upstream().await).await;
    let status = |r: (HeaderMap, Result<Bytes, (i32, String)>)| r.1.unwrap_err();
    let ids = |v: Vec<i64>| {
        Some(pb::InferTensorContents {
            int64_contents: v,
            ..Default::default()
        })
    };

    let (code, m) = status(call(addr, "ModelInfer", request("nope", vec![]).encode_to_vec()).await);
    assert_eq!(code, 5, "NOT_FOUND: {m}");
    assert!(
        m.contains("\"nope\"") && m.contains("m, slow, stacked"),
        "{m}"
    );

    let (code, m) = status(call(addr, "ModelInfer", request("m", vec![]).encode_to_vec()).await);
    assert_eq!(code, 3, "{m}");
    assert!(m.contains("no tensor named driver_id"), "{m}");

    let req = request(
        "m",
        vec![tensor("driver_id", "INT64", &[3], ids(vec![1, 2]))],
    );
    let (code, m) = status(call(addr, "ModelInfer", req.encode_to_vec()).await);
    assert_eq!(code, 3, "{m}");
    assert!(
        m.contains("inputs[name=driver_id].contents.int64_contents: 2 values for shape [3]"),
        "{m}"
    );

    let req = request("m", vec![tensor("driver_id", "FP64", &[1], None)]);
    let (code, m) = status(call(addr, "ModelInfer", req.encode_to_vec()).await);
    assert_eq!(code, 3, "{m}");
    assert!(m.contains("inputs[name=driver_id].datatype: FP64"), "{m}");

    let mut req = request("m", vec![tensor("driver_id", "INT64", &[1], None)]);
    req.raw_input_contents = vec![Bytes::from_static(&[1, 2, 3])];
    let (code, m) = status(call(addr, "ModelInfer", req.encode_to_vec()).await);
    assert_eq!(code, 3, "{m}");
    assert!(
        m.contains("inputs[name=driver_id].raw_input_contents: 3 bytes"),
        "{m}"
    );

    let (code, m) = status(call(addr, "ModelInfer", b"\xff\xff".to_vec()).await);
    assert_eq!(code, 3, "{m}");
    assert!(m.contains("not a ModelInferRequest"), "{m}");

    // Past the message limit (the sidecar's max_body_bytes, 1 MiB by default).
    let big = request(
        "m",
        vec![tensor(
            "driver_id",
            "INT64",
            &[1 << 18],
            ids(vec![i64::MAX; 1 << 18]),
        )],
    );
    let (code, m) = status(call(addr, "ModelInfer", big.encode_to_vec()).await);
    assert_eq!(code, 8, "RESOURCE_EXHAUSTED: {m}");
    assert!(m.contains("--max-body-bytes"), "{m}");

    // The model server past the deadline: DEADLINE_EXCEEDED.
    let req = request(
        "slow",
        vec![tensor("driver_id", "INT64", &[1], ids(vec![1]))],
    );
    let (code, m) = status(call(addr, "ModelInfer", req.encode_to_vec()).await);
    assert_eq!(code, 4, "{m}");
    assert!(m.contains("did not answer within 300ms"), "{m}");

    // Metrics count the gRPC requests by model and status class (the undecodable and the
    // oversized message name no model: they count under the kserve endpoint only).
    let (_, text) = http(sidecar.addr, "GET", "/metrics", b"").await;
    assert!(
        text.contains(
            "quiver_enrich_requests_total{model=\"m\",protocol=\"grpc\",status=\"4xx\"} 4"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "quiver_enrich_requests_total{model=\"slow\",protocol=\"grpc\",status=\"5xx\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_server_that_is_down_is_unavailable_with_the_cause() {
    let repo = Repo::new("demo", ENRICH_DEFS);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_sidecar, addr) = sidecar(&repo, dead).await;
    let (_, answer) = call(addr, "ServerLive", Vec::new()).await;
    let (code, m) = answer.unwrap_err();
    assert_eq!(code, 14, "{m}");
    assert!(
        m.contains(&format!("model server gRPC http://{dead}")),
        "{m}"
    );
    assert!(m.to_lowercase().contains("refused"), "{m}");
}

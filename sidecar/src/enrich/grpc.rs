//! Open Inference Protocol (KServe V2) over gRPC: the sidecar's gRPC port (`--grpc-port`,
//! KServe's 8081) serves `inference.GRPCInferenceService` in front of the model server's gRPC
//! port (`--upstream-grpc`).
//!
//! ```text
//! ModelInfer ─▶ message (limit: --max-body-bytes) ─▶ model config (unknown: NOT_FOUND)
//!   ─▶ entity tensors, from `contents` or `raw_input_contents` ─▶ v2's core (checks, features,
//!      policies, layout) ─▶ feature tensors added the way the request carries its tensors
//!      (typed contents, or raw little-endian) ─▶ the model server ─▶ its answer unchanged
//! ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, repository calls
//!   ─▶ passed through as bytes (the sidecar decodes no message it does not change)
//! ```
//!
//! Errors are gRPC statuses from the error's kind (`ErrorKind::grpc_code`): INVALID_ARGUMENT
//! naming the tensor or field, NOT_FOUND for a model the config does not name,
//! FAILED_PRECONDITION for a missing or stale feature under `reject`, RESOURCE_EXHAUSTED past
//! the message limit, UNAVAILABLE (cannot connect, with the cause) and DEADLINE_EXCEEDED (no
//! answer within --upstream-timeout) for the model server. A status the model server sends is
//! the caller's as it came.
//!
//! Why not tonic: the sidecar needs unary calls only, and forwards most of them as bytes. The
//! server core (`quiver-http`, HTTP/2 with prior knowledge on this port) keeps its limits,
//! drain and connection counters, `quiver_http::grpc` frames the messages (the same code the
//! transformation client uses), and hyper's HTTP/2 client calls the model server. tonic would
//! add tower, axum and a codegen step to the lean sidecar for six methods it mostly passes on.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue, TE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use quiver_core::fault::{Classified, ErrorKind};
use quiver_http::grpc::{self, GrpcBody};
use serde_json::Value as Json;
use tokio::net::{TcpListener, TcpStream};

use super::config::{Float, ModelConfig};
use super::upstream::{UpstreamConfig, error_chain, hop_by_hop};
use super::v2::{self, Element, EntityInputs, Kind, OutTensor};
use super::{Enricher, InputColumn, Protocol, features};
use crate::State;
use crate::error::ApiError;
use crate::metrics::Endpoint;

/// The ModelInfer messages (proto/grpc_predict_v2.proto).
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/inference.rs"));
}

use pb::InferTensorContents;
use pb::model_infer_request::InferInputTensor;

const SERVICE: &str = "/inference.GRPCInferenceService/";

/// Serves the gRPC port on `server` (made with [`quiver_http::Server::http2`]) until
/// `shutdown` resolves, then drains. `state` must enrich with a gRPC upstream
/// ([`Enricher::with_grpc`]); without one every call is UNAVAILABLE.
pub async fn serve(
    server: quiver_http::Server,
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) {
    let routes = GrpcRoutes {
        body_timeout: server.limits().body_read_timeout,
        state,
    };
    server.serve(listener, routes, shutdown).await;
}

#[derive(Clone)]
struct GrpcRoutes {
    state: Arc<State>,
    body_timeout: Duration,
}

impl quiver_http::Handler for GrpcRoutes {
    type Body = GrpcBody;
    type BodyError = Infallible;

    async fn call(
        &self,
        req: Request<Incoming>,
        _peer: std::net::SocketAddr,
    ) -> Response<GrpcBody> {
        let started = Instant::now();
        let resp = handle(self, req).await;
        let status = http_equivalent(&resp);
        self.state
            .metrics
            .record_request(Endpoint::Kserve, status, started.elapsed());
        resp
    }
}

async fn handle(routes: &GrpcRoutes, req: Request<Incoming>) -> Response<GrpcBody> {
    let is_grpc = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(grpc::CONTENT_TYPE_GRPC));
    if req.method() != Method::POST || !is_grpc {
        // gRPC's HTTP/2 spec: a request that is not gRPC gets 415.
        quiver_http::discard_body(req, routes.body_timeout);
        let mut resp = Response::new(GrpcBody::default());
        *resp.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return resp;
    }
    let Some(enricher) = routes.state.config.enrich.as_deref() else {
        return status(&unavailable("the sidecar does not enrich (no --enrich)"));
    };
    let Some(upstream) = enricher.grpc.as_ref() else {
        return status(&unavailable("the sidecar has no --upstream-grpc"));
    };
    let path = req.uri().path().to_owned();
    let Some(method) = path.strip_prefix(SERVICE) else {
        quiver_http::discard_body(req, routes.body_timeout);
        return grpc::error(
            grpc::code::UNIMPLEMENTED,
            &format!("{path}: the sidecar serves inference.GRPCInferenceService only"),
        );
    };
    let headers = req.headers().clone();
    let message = match read_message(&routes.state, req, routes.body_timeout).await {
        Ok(m) => m,
        Err(e) => return status(&e),
    };
    if method != "ModelInfer" {
        return match upstream.call(&path, &headers, grpc::frame(&message)).await {
            Ok(answer) => answer.respond(),
            Err(e) => status(&e),
        };
    }
    model_infer(&routes.state, enricher, upstream, &path, &headers, message).await
}

fn unavailable(why: &str) -> ApiError {
    ApiError::new(ErrorKind::Unavailable, "NoGrpcUpstream", why)
}

/// The request's one message, within the body limit (RESOURCE_EXHAUSTED past it).
async fn read_message(
    state: &State,
    req: Request<Incoming>,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let limit = state.config.max_body_bytes;
    let body = quiver_http::read_body(req, limit, timeout)
        .await
        .map_err(|e| {
            let message = match &e {
                quiver_http::BodyError::TooLarge { limit } => format!(
                    "the request message is over {limit} bytes (the sidecar's --max-body-bytes)"
                ),
                e => e.to_string(),
            };
            ApiError::new(e.kind(), "BadMessage", message)
        })?;
    grpc::unframe(body).map_err(|e| ApiError::bad_request("BadMessage", format!("request: {e}")))
}

/// The error as a trailers-only gRPC answer.
fn status(e: &ApiError) -> Response<GrpcBody> {
    match e.kind.severity() {
        quiver_core::fault::Severity::Debug => tracing::debug!(error = %e, "gRPC call failed"),
        quiver_core::fault::Severity::Warn => tracing::warn!(error = %e, "gRPC call failed"),
        quiver_core::fault::Severity::Error => tracing::error!(error = %e, "gRPC call failed"),
    }
    grpc::error(e.kind.grpc_code(), &e.message)
}

/// The HTTP status a gRPC answer stands for, for the request metrics: OK 200, the codes that
/// are the caller's 400, the rest 500.
fn http_equivalent(resp: &Response<GrpcBody>) -> u16 {
    if resp.status() != StatusCode::OK {
        return resp.status().as_u16();
    }
    match grpc::status(resp.headers()).map(|s| s.0) {
        // No status in the headers: a message follows, then the status in trailers, which
        // are the model server's; it answered.
        None | Some(0) => 200,
        // CANCELLED, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED,
        // FAILED_PRECONDITION, OUT_OF_RANGE, UNAUTHENTICATED.
        Some(1 | 3 | 5 | 6 | 7 | 9 | 11 | 16) => 400,
        Some(_) => 500,
    }
}

async fn model_infer(
    state: &Arc<State>,
    enricher: &Enricher,
    upstream: &GrpcUpstream,
    path: &str,
    headers: &HeaderMap,
    message: Bytes,
) -> Response<GrpcBody> {
    let started = Instant::now();
    let request = match pb::ModelInferRequest::decode(message) {
        Ok(r) => r,
        Err(e) => {
            return status(&ApiError::bad_request(
                "BadMessage",
                format!("request: not a ModelInferRequest: {e}"),
            ));
        }
    };
    let (config, metrics) = match enricher.model(&request.model_name) {
        Ok(m) => m,
        Err(e) => return status(&e),
    };
    let mut upstream_time = Duration::ZERO;
    let resp = match enrich(state, config, metrics, request).await {
        Ok(forward) => {
            let sent = Instant::now();
            let answer = upstream
                .call(path, headers, grpc::frame(&forward.encode_to_vec()))
                .await;
            upstream_time = sent.elapsed();
            match answer {
                Ok(answer) => answer.respond(),
                Err(e) => status(&e),
            }
        }
        Err(e) => status(&e),
    };
    metrics.record(
        Protocol::Grpc,
        http_equivalent(&resp),
        started,
        upstream_time,
    );
    resp
}

/// The request to forward: the entity tensors taken out, the feature tensors added.
async fn enrich(
    state: &Arc<State>,
    config: &ModelConfig,
    metrics: &super::ModelMetrics,
    mut request: pb::ModelInferRequest,
) -> Result<pb::ModelInferRequest, ApiError> {
    let raw = !request.raw_input_contents.is_empty();
    if raw && request.raw_input_contents.len() != request.inputs.len() {
        return Err(ApiError::bad_request(
            "InvalidTensor",
            format!(
                "raw_input_contents: {} entries for {} inputs; with raw contents every input has one",
                request.raw_input_contents.len(),
                request.inputs.len()
            ),
        ));
    }
    let mut entities = EntityInputs::new(config);
    let inputs = std::mem::take(&mut request.inputs);
    let mut raws = std::mem::take(&mut request.raw_input_contents).into_iter();
    for tensor in inputs {
        let raw_data = raws.next();
        let Some(slot) = entities.slot(&tensor.name) else {
            request.inputs.push(tensor);
            request.raw_input_contents.extend(raw_data);
            continue;
        };
        let values = entity_tensor(&entities, slot, &tensor, raw_data)?;
        entities.put(slot, values)?;
    }
    let (columns, rows) = entities.finish()?;
    let inputs: Vec<InputColumn<'_>> = columns
        .iter()
        .map(|(name, values)| InputColumn { name, values })
        .collect();
    let out = features(
        state,
        config,
        metrics,
        Protocol::Grpc,
        columns.clone(),
        &inputs,
        rows,
    )
    .await?;
    for tensor in v2::out_tensors(config, &out)? {
        let (tensor, data) = feature_tensor(config, &tensor, rows, raw)?;
        request.inputs.push(tensor);
        request.raw_input_contents.extend(data);
    }
    Ok(request)
}

/// One entity or request tensor's values, from its typed contents or its raw bytes.
fn entity_tensor(
    entities: &EntityInputs<'_>,
    slot: usize,
    tensor: &InferInputTensor,
    raw: Option<Bytes>,
) -> Result<Vec<Json>, ApiError> {
    let name = tensor.name.as_str();
    let n = EntityInputs::rows_of(name, &tensor.shape)?;
    let datatype = tensor.datatype.as_str();
    let kind = entities.kind(slot, name, datatype)?;
    let at = |m: String| ApiError::bad_request("InvalidTensor", format!("inputs[name={name}].{m}"));
    let values = match raw {
        Some(raw) => {
            from_raw(datatype, &raw).map_err(|e| at(format!("raw_input_contents: {e}")))?
        }
        None => {
            let empty = InferTensorContents::default();
            let c = tensor.contents.as_ref().unwrap_or(&empty);
            let (field, values): (&str, Vec<Json>) = match (kind, datatype) {
                (Kind::Integer, "INT64") => ("int64_contents", ints(&c.int64_contents)),
                (Kind::Integer, "UINT64") => ("uint64_contents", ints(&c.uint64_contents)),
                (Kind::Integer, "UINT8" | "UINT16" | "UINT32") => {
                    ("uint_contents", ints(&c.uint_contents))
                }
                (Kind::Integer, _) => ("int_contents", ints(&c.int_contents)),
                (Kind::Bytes, _) => (
                    "bytes_contents",
                    c.bytes_contents
                        .iter()
                        .enumerate()
                        .map(|(i, b)| {
                            text(b).map_err(|e| at(format!("contents.bytes_contents[{i}]: {e}")))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                (Kind::Float, "FP32") => (
                    "fp32_contents",
                    c.fp32_contents
                        .iter()
                        .map(|x| Json::from(f64::from(*x)))
                        .collect(),
                ),
                (Kind::Float, "FP64") => (
                    "fp64_contents",
                    c.fp64_contents.iter().map(|x| Json::from(*x)).collect(),
                ),
                (Kind::Float, _) => {
                    return Err(at(format!(
                        "datatype: {datatype} has no typed contents; send it in raw_input_contents, or as FP32"
                    )));
                }
                (Kind::Bool, _) => (
                    "bool_contents",
                    c.bool_contents.iter().map(|b| Json::Bool(*b)).collect(),
                ),
            };
            if values.len() != n {
                return Err(at(format!(
                    "contents.{field}: {} values for shape {:?} ({n} expected)",
                    values.len(),
                    tensor.shape
                )));
            }
            values
        }
    };
    if values.len() != n {
        return Err(at(format!(
            "raw_input_contents: {} {datatype} values for shape {:?} ({n} expected)",
            values.len(),
            tensor.shape
        )));
    }
    Ok(values)
}

fn ints<T: Copy + Into<Json>>(v: &[T]) -> Vec<Json> {
    v.iter().map(|x| (*x).into()).collect()
}

fn text(b: &[u8]) -> Result<Json, String> {
    std::str::from_utf8(b)
        .map(|s| Json::String(s.to_owned()))
        .map_err(|_| "not UTF-8; entity ids in BYTES tensors are text".to_owned())
}

/// The elements of a raw tensor: little-endian, BYTES each after a little-endian u32 length.
fn from_raw(datatype: &str, raw: &[u8]) -> Result<Vec<Json>, String> {
    fn fixed<const N: usize>(raw: &[u8], f: impl Fn([u8; N]) -> Json) -> Result<Vec<Json>, String> {
        if !raw.len().is_multiple_of(N) {
            return Err(format!(
                "{} bytes is not a whole number of {N}-byte elements",
                raw.len()
            ));
        }
        Ok(raw
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect())
    }
    match datatype {
        "INT8" => fixed(raw, |b: [u8; 1]| i8::from_le_bytes(b).into()),
        "INT16" => fixed(raw, |b: [u8; 2]| i16::from_le_bytes(b).into()),
        "INT32" => fixed(raw, |b: [u8; 4]| i32::from_le_bytes(b).into()),
        "INT64" => fixed(raw, |b: [u8; 8]| i64::from_le_bytes(b).into()),
        "UINT8" => fixed(raw, |b: [u8; 1]| u8::from_le_bytes(b).into()),
        "UINT16" => fixed(raw, |b: [u8; 2]| u16::from_le_bytes(b).into()),
        "UINT32" => fixed(raw, |b: [u8; 4]| u32::from_le_bytes(b).into()),
        "UINT64" => fixed(raw, |b: [u8; 8]| u64::from_le_bytes(b).into()),
        "FP32" => fixed(raw, |b: [u8; 4]| f64::from(f32::from_le_bytes(b)).into()),
        "FP64" => fixed(raw, |b: [u8; 8]| f64::from_le_bytes(b).into()),
        "BOOL" => fixed(raw, |b: [u8; 1]| Json::Bool(b[0] != 0)),
        "BYTES" => {
            let mut out = Vec::new();
            let mut rest = raw;
            while !rest.is_empty() {
                let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                    return Err(format!("{} bytes left, too few for a length", rest.len()));
                };
                let len = u32::from_le_bytes(*len) as usize;
                if tail.len() < len {
                    return Err(format!(
                        "element {} claims {len} bytes, {} are left",
                        out.len(),
                        tail.len()
                    ));
                }
                let (element, tail) = tail.split_at(len);
                out.push(text(element).map_err(|e| format!("element {}: {e}", out.len()))?);
                rest = tail;
            }
            Ok(out)
        }
        other => Err(format!("{other} is not read raw by the sidecar")),
    }
}

/// A feature tensor in the request's encoding: typed contents, or (when the request is raw)
/// its raw bytes beside it.
fn feature_tensor(
    config: &ModelConfig,
    tensor: &OutTensor<'_, '_>,
    rows: usize,
    raw: bool,
) -> Result<(InferInputTensor, Option<Bytes>), ApiError> {
    let mut contents = InferTensorContents::default();
    let mut bytes = Vec::new();
    let (name, datatype, shape) = match tensor {
        OutTensor::Column { col, datatype } => {
            for r in 0..rows {
                let e = v2::element(col, r).map_err(|e| v2::cell_error(config, col, r, e))?;
                if raw {
                    push_raw(&mut bytes, e);
                } else {
                    push_contents(&mut contents, e);
                }
            }
            (col.name(), *datatype, vec![rows as i64])
        }
        OutTensor::Stacked {
            name,
            datatype,
            columns,
        } => {
            for r in 0..rows {
                for col in columns.iter() {
                    let x = v2::number(col, r).map_err(|e| v2::cell_error(config, col, r, e))?;
                    let e = match datatype {
                        Float::Fp32 => Element::F32(x as f32),
                        Float::Fp64 => Element::F64(x),
                    };
                    if raw {
                        push_raw(&mut bytes, e);
                    } else {
                        push_contents(&mut contents, e);
                    }
                }
            }
            (
                *name,
                datatype.as_str(),
                vec![rows as i64, columns.len() as i64],
            )
        }
    };
    let tensor = InferInputTensor {
        name: name.to_owned(),
        datatype: datatype.to_owned(),
        shape,
        parameters: Default::default(),
        contents: (!raw).then_some(contents),
    };
    Ok((tensor, raw.then(|| Bytes::from(bytes))))
}

fn push_contents(c: &mut InferTensorContents, e: Element<'_>) {
    match e {
        Element::F32(x) => c.fp32_contents.push(x),
        Element::F64(x) => c.fp64_contents.push(x),
        Element::I32(x) => c.int_contents.push(x),
        Element::I64(x) => c.int64_contents.push(x),
        Element::Bool(b) => c.bool_contents.push(b),
        Element::Str(s) => c.bytes_contents.push(Bytes::copy_from_slice(s.as_bytes())),
        Element::Bytes(b) => c.bytes_contents.push(Bytes::copy_from_slice(b)),
    }
}

fn push_raw(out: &mut Vec<u8>, e: Element<'_>) {
    match e {
        Element::F32(x) => out.put_f32_le(x),
        Element::F64(x) => out.put_f64_le(x),
        Element::I32(x) => out.put_i32_le(x),
        Element::I64(x) => out.put_i64_le(x),
        Element::Bool(b) => out.put_u8(u8::from(b)),
        Element::Str(s) => {
            out.put_u32_le(s.len() as u32);
            out.put_slice(s.as_bytes());
        }
        Element::Bytes(b) => {
            out.put_u32_le(b.len() as u32);
            out.put_slice(b);
        }
    }
}

/// The model server's gRPC port: one HTTP/2 connection (made on first use, made again after it
/// breaks; HTTP/2 multiplexes the calls), a connect timeout, a deadline per call, an answer
/// size bound.
pub struct GrpcUpstream {
    pub config: UpstreamConfig,
    /// `host:port` of `config.base`.
    authority: String,
    /// The open connection's sender (cloned out; the lock is never held across an await).
    conn: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

/// The model server's answer, passed back as it came.
pub struct GrpcAnswer {
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl GrpcAnswer {
    fn respond(self) -> Response<GrpcBody> {
        let mut resp = Response::new(GrpcBody::new(self.body, self.trailers));
        for (name, value) in &self.headers {
            if !hop_by_hop(name) {
                resp.headers_mut().append(name.clone(), value.clone());
            }
        }
        resp
    }
}

impl GrpcUpstream {
    pub fn new(config: UpstreamConfig) -> GrpcUpstream {
        let authority = config.base.trim_start_matches("http://").to_owned();
        GrpcUpstream {
            config,
            authority,
            conn: Mutex::new(None),
        }
    }

    fn unreachable(&self, why: String) -> ApiError {
        ApiError::new(
            ErrorKind::UpstreamFailed,
            "UpstreamUnreachable",
            format!("model server gRPC {}: {why}", self.config.base),
        )
    }

    fn drop_connection(&self) {
        if let Ok(mut c) = self.conn.lock() {
            *c = None;
        }
    }

    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, ApiError> {
        let existing = self.conn.lock().ok().and_then(|c| c.clone());
        if let Some(mut s) = existing {
            if s.ready().await.is_ok() {
                return Ok(s);
            }
            self.drop_connection();
        }
        let stream = tokio::time::timeout(
            self.config.connect_timeout,
            TcpStream::connect(&self.authority),
        )
        .await
        .map_err(|_| {
            self.unreachable(format!(
                "no connection within {:?}",
                self.config.connect_timeout
            ))
        })?
        .map_err(|e| self.unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| self.unreachable(error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "model server gRPC connection closed");
            }
        });
        if let Ok(mut c) = self.conn.lock() {
            *c = Some(sender.clone());
        }
        Ok(sender)
    }

    /// Calls `path` with `body` (one framed message) and the caller's metadata; the answer
    /// whole, within the size bound and the deadline.
    pub async fn call(
        &self,
        path: &str,
        metadata: &HeaderMap,
        body: Bytes,
    ) -> Result<GrpcAnswer, ApiError> {
        let exchange = async {
            let mut sender = self.sender().await?;
            let mut req = Request::new(Full::new(body));
            *req.method_mut() = Method::POST;
            *req.uri_mut() = format!("{}{path}", self.config.base).parse().map_err(|_| {
                ApiError::bad_request("BadPath", format!("{path:?} is not a valid path"))
            })?;
            for (name, value) in metadata {
                if !hop_by_hop(name) {
                    req.headers_mut().append(name.clone(), value.clone());
                }
            }
            req.headers_mut()
                .insert(TE, HeaderValue::from_static("trailers"));
            let resp = sender.send_request(req).await.map_err(|e| {
                self.drop_connection();
                self.unreachable(error_chain(&e))
            })?;
            let (parts, body) = resp.into_parts();
            let limit = self.config.max_response_bytes;
            let collected = Limited::new(body, limit).collect().await.map_err(|e| {
                let why = if e.is::<http_body_util::LengthLimitError>() {
                    format!("its answer is larger than {limit} bytes (--upstream-max-body)")
                } else {
                    format!("reading its answer: {e}")
                };
                ApiError::new(
                    ErrorKind::UpstreamFailed,
                    "UpstreamFailed",
                    format!("model server gRPC {}: {why}", self.config.base),
                )
            })?;
            let trailers = collected.trailers().cloned();
            Ok(GrpcAnswer {
                headers: parts.headers,
                body: collected.to_bytes(),
                trailers,
            })
        };
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => {
                // The connection may be stuck; the next call makes a new one.
                self.drop_connection();
                Err(ApiError::new(
                    ErrorKind::Timeout,
                    "UpstreamTimeout",
                    format!(
                        "model server gRPC {} did not answer within {:?}",
                        self.config.base, self.config.timeout
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_tensors_decode_little_endian() {
        let mut b = Vec::new();
        b.put_i64_le(1001);
        b.put_i64_le(-2);
        assert_eq!(
            from_raw("INT64", &b).unwrap(),
            vec![Json::from(1001), Json::from(-2)]
        );
        assert!(from_raw("INT64", &b[..9]).unwrap_err().contains("9 bytes"));
        let mut s = Vec::new();
        push_raw(&mut s, Element::Str("c9"));
        push_raw(&mut s, Element::Str(""));
        assert_eq!(
            from_raw("BYTES", &s).unwrap(),
            vec![Json::from("c9"), Json::from("")]
        );
        assert!(
            from_raw("BYTES", &s[..5])
                .unwrap_err()
                .contains("claims 2 bytes")
        );
        assert!(
            from_raw("BYTES", &[1, 0, 0, 0, 0xff])
                .unwrap_err()
                .contains("UTF-8")
        );
        let mut f = Vec::new();
        push_raw(&mut f, Element::F32(0.5));
        assert_eq!(from_raw("FP32", &f).unwrap(), vec![Json::from(0.5)]);
        assert!(from_raw("FP16", &[0, 0]).is_err());
    }
}

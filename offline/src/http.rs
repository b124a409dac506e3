//! `POST /v1/historical`: historical features over HTTP for pipelines that do not use Feast.
//!
//! The request is JSON:
//!
//! ```json
//! {"features": ["driver_hourly_stats:conv_rate"],      // or "feature_service": "name"
//!  "full_feature_names": false,
//!  "entities": {"driver_id": [1001, 1002],              // columns inline, or
//!               "event_timestamp": ["2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z"]},
//!  "entity_path": "data/entities.parquet"}             // a file under the repo
//! ```
//!
//! The answer is an Arrow IPC stream (`application/vnd.apache.arrow.stream`), written batch by
//! batch as the join produces them. Errors found before the first batch is ready are answered
//! with `{"error": kind, "message": ...}` and the status of their kind (`quiver_core::fault`):
//! 4xx for the request's mistakes, 502/503/504 for an object store's failures, 507 for the
//! engine's memory limit, 500 for bugs. A failure mid-stream ends the stream early (the IPC
//! end-of-stream marker is then missing, which readers report).

use std::future::Future;
use std::path::{Component, Path};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response};
use quiver_core::fault::{Classified as _, ErrorKind};
use serde_json::Value as Json;
use tokio::net::TcpListener;

use crate::Error;
use crate::budget::{MemoryBudget, Reservation};
use crate::flight::RegistrySource;
use crate::historical::{Features, HistoricalEngine};
use crate::inline::Parsed;
use crate::on_demand::{TransformClient, select_with_on_demand};

/// Request bodies larger than this are refused (inline entity tables belong in a file).
const BODY_LIMIT: usize = 64 << 20;

type Body = BoxBody<Bytes, std::io::Error>;

pub struct HttpState {
    pub engine: HistoricalEngine,
    pub registry: RegistrySource,
    pub token: Option<String>,
    /// Feast's transformation service, for on-demand views (`--transformation-service`).
    pub transform: Option<Arc<TransformClient>>,
    /// The upload memory shared with the Flight server: a body and its entity table are
    /// reserved from it before they are read or built, and held until the answer is sent.
    pub budget: MemoryBudget,
}

/// Serves on the server core (`quiver-http`, with `limits`) until `shutdown` resolves, then
/// drains.
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    limits: quiver_http::Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), crate::Error> {
    let server = quiver_http::Server::new(limits);
    let routes = Routes {
        body_timeout: server.limits().body_read_timeout,
        state,
    };
    server.serve(listener, routes, shutdown).await;
    Ok(())
}

#[derive(Clone)]
struct Routes {
    state: Arc<HttpState>,
    body_timeout: std::time::Duration,
}

impl quiver_http::Handler for Routes {
    type Body = Body;
    type BodyError = std::io::Error;

    async fn call(&self, req: Request<Incoming>, _peer: std::net::SocketAddr) -> Response<Body> {
        handle(&self.state, self.body_timeout, req).await
    }
}

/// The answer for a failure of `kind`: its status and name from the one table in
/// `quiver_core::fault`, logged as loudly as the kind says.
fn error(kind: ErrorKind, message: impl Into<String>) -> Response<Body> {
    let message = message.into();
    crate::error::log(kind, "offline http request failed", &message);
    json_response(kind.http_status(), kind.name(), message)
}

fn json_response(status: u16, kind: &str, message: String) -> Response<Body> {
    let body = serde_json::json!({"error": kind, "message": message}).to_string();
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn handle(
    state: &HttpState,
    body_timeout: std::time::Duration,
    req: Request<Incoming>,
) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/historical") => {}
        (_, "/v1/historical") => return error(ErrorKind::MethodNotAllowed, "use POST"),
        (&Method::GET, "/health") => return json_response(200, "ok", "ok".to_owned()),
        _ => {
            return error(
                ErrorKind::NotFound,
                format!("no route {}", req.uri().path()),
            );
        }
    }
    if let Some(token) = state.token.as_deref().filter(|t| !t.is_empty())
        && quiver_http::bearer_matches(req.headers(), token) != quiver_http::Bearer::Valid
    {
        return error(ErrorKind::Unauthorized, "missing or wrong bearer token");
    }
    // The body is reserved before it is read: at most BODY_LIMIT, or what it declares.
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut reservation = match state
        .budget
        .reserve(
            declared.unwrap_or(BODY_LIMIT).min(BODY_LIMIT),
            "request body",
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            quiver_http::discard_body(req, body_timeout);
            return error(e.kind(), e.to_string());
        }
    };
    let body = match quiver_http::read_body(req, BODY_LIMIT, body_timeout).await {
        Ok(b) => b,
        Err(e) => return error(e.kind(), e.to_string()),
    };
    reservation.shrink_to(body.len());
    match parse_and_run(state, body, reservation).await {
        Ok(resp) => resp,
        Err(e) => {
            if e.public_message() != e.message() {
                crate::error::log(e.kind(), "offline http request failed", &e.message());
            }
            error(e.kind(), e.public_message())
        }
    }
}

/// Parses the body off the async threads (counting first, then reserving the entity table's
/// arrays, then building them), then answers.
async fn parse_and_run(
    state: &HttpState,
    body: Bytes,
    mut reservation: Reservation,
) -> Result<Response<Body>, Error> {
    let counted = body.clone();
    let counts = tokio::task::spawn_blocking(move || crate::inline::count(&counted))
        .await
        .map_err(|e| Error::internal(format!("parsing the request: {e}")))??;
    reservation
        .grow(counts.table_bytes(), "inline entity table")
        .await?;
    let parsed = tokio::task::spawn_blocking(move || crate::inline::build(&body, &counts))
        .await
        .map_err(|e| Error::internal(format!("parsing the request: {e}")))??;
    // The body is gone; what stays is the table.
    reservation.shrink_to(parsed.entities.as_ref().map_or(0, |e| {
        e.batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum()
    }));
    historical(state, parsed, reservation).await
}

async fn historical(
    state: &HttpState,
    parsed: Parsed,
    reservation: Reservation,
) -> Result<Response<Body>, Error> {
    let Parsed {
        fields: request,
        entities: inline,
    } = parsed;
    let bad = |m: &str| Error::bad_request(m);
    let features = match (request.get("features"), request.get("feature_service")) {
        (Some(f), None) => Features::Refs(
            f.as_array()
                .ok_or_else(|| bad("features: expected a list of \"view:feature\""))?
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("features: expected a list of \"view:feature\""))?,
        ),
        (None, Some(s)) => Features::Service(
            s.as_str()
                .ok_or_else(|| bad("feature_service: expected a name"))?
                .to_owned(),
        ),
        _ => {
            return Err(bad(
                "give exactly one of \"features\" and \"feature_service\"",
            ));
        }
    };
    let full = request
        .get("full_feature_names")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let entities = match (inline, request.get("entity_path")) {
        (Some(entities), None) => entities,
        (None, Some(path)) => {
            let path = path
                .as_str()
                .ok_or_else(|| bad("entity_path: expected a path"))?;
            let relative = Path::new(path);
            if relative.is_absolute()
                || relative
                    .components()
                    .any(|c| matches!(c, Component::ParentDir))
            {
                return Err(Error::bad_request(format!(
                    "entity_path {path:?}: must be a relative path inside the repo"
                )));
            }
            // Symlinks followed: the real file must be inside the repo (or an allowed location).
            let real = quiver_registry::trust::policy()
                .local_path(&state.registry.repo_dir, path)
                .map_err(|e| Error::bad_request(format!("entity_path {path:?}: {e}")))?;
            state.engine.read_entities(&real).await?
        }
        _ => return Err(bad("give exactly one of \"entities\" and \"entity_path\"")),
    };
    let registry = state.registry.load().await.map_err(|e| Error::Registry {
        kind: e.kind,
        message: e.message,
    })?;
    let selection = select_with_on_demand(&registry, &features, full)?;
    if let (Some(plan), None) = (&selection.on_demand, &state.transform) {
        return Err(Error::unprocessable(crate::flight::missing_service(plan)));
    }
    let (_, schema, mut stream) = selection
        .execute(
            &state.engine,
            &registry,
            &state.registry.repo_dir,
            entities,
            state.transform.clone(),
        )
        .await?;
    // The first batch comes after the final sort: most failures (the memory limit, an
    // unreachable object store) are known before the status line is sent.
    let first = match stream.next().await {
        Some(Err(e)) => return Err(Error::query("historical retrieval", e)),
        first => first,
    };
    let mut stream = futures::stream::iter(first).chain(stream);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tokio::spawn(async move {
        // The entity table's memory stays reserved until the answer is sent.
        let _reservation = reservation;
        let mut writer =
            match arrow_ipc::writer::StreamWriter::try_new(Vec::with_capacity(1 << 16), &schema) {
                Ok(w) => w,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
        // Each batch goes out as soon as it is encoded.
        let flush = |w: &mut arrow_ipc::writer::StreamWriter<Vec<u8>>| {
            Bytes::from(std::mem::take(w.get_mut()))
        };
        let first = flush(&mut writer);
        if tx.send(Ok(Frame::data(first))).await.is_err() {
            return;
        }
        while let Some(batch) = stream.next().await {
            let sent = match batch {
                Ok(b) => match writer.write(&b) {
                    Ok(()) => Ok(Frame::data(flush(&mut writer))),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                },
                Err(e) => {
                    // The status line is gone: the log is where its kind still shows.
                    let e = Error::query("historical retrieval", e);
                    crate::error::log(e.kind(), "offline http answer cut short", &e.message());
                    Err(std::io::Error::other(e.to_string()))
                }
            };
            let failed = sent.is_err();
            if tx.send(sent).await.is_err() || failed {
                return;
            }
        }
        let end = match writer.finish() {
            Ok(()) => Ok(Frame::data(flush(&mut writer))),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        let _ = tx.send(end).await;
    });
    let body = BodyExt::boxed(StreamBody::new(tokio_stream_from(rx)));
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/vnd.apache.arrow.stream"),
    );
    Ok(resp)
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

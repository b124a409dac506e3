//! The HTTP server: `serve(listener, state, shutdown)`, routes, and the per-request pipeline.
//!
//! The pipeline, in order: route → body size limit (413 before reading past it) → JSON parse →
//! the engine (its own deadline for the online store) → JSON response. Every response is built
//! here, errors included, so status codes are decided in one place.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use quiver_core::fault::{Classified, ErrorKind, Severity};
use tokio::net::TcpListener;

use crate::State;
use crate::api::parse_request;
use crate::engine::Prepared;
use crate::error::ApiError;
use crate::materialize::MaterializeSupport;
use crate::metrics::{Endpoint, Snapshot};
use crate::push::PushConfig;
use crate::render::Format;

type Body = Full<Bytes>;

fn json_response(status: u16, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The one place an error becomes a response: status from its kind, body `{error, message}`.
fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.status(), e.to_body())
}

/// Serves on the default server limits until `shutdown` resolves, then drains.
pub async fn serve(listener: TcpListener, state: Arc<State>, shutdown: impl Future<Output = ()>) {
    serve_with(
        quiver_http::Server::new(quiver_http::Limits::default()),
        listener,
        state,
        shutdown,
    )
    .await;
}

/// What one listener answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Everything: Feast's API (reads, and writes when enabled), the probes, `/metrics`, and
    /// KServe's paths when enriching.
    All,
    /// KServe's paths, the probes and `/metrics` only: the port KServe's traffic reaches in
    /// enrichment mode, where whoever may call the model must not read (or write) features
    /// directly. Feast's API is then on a loopback port of its own (`quiver serve --api-port`).
    Kserve,
}

/// Serves on `server` (its limits, drain and connection counters; see `quiver-http`) until
/// `shutdown` resolves, then drains: `/ready` answers 503 from the start of the drain.
pub async fn serve_with(
    server: quiver_http::Server,
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) {
    serve_surface(server, listener, state, Surface::All, shutdown).await;
}

/// [`serve_with`], answering only what `surface` allows.
pub async fn serve_surface(
    server: quiver_http::Server,
    listener: TcpListener,
    state: Arc<State>,
    surface: Surface,
    shutdown: impl Future<Output = ()>,
) {
    let routes = Routes {
        surface,
        state,
        draining: server.draining(),
        connections: server.stats(),
        body_timeout: server.limits().body_read_timeout,
    };
    server.serve(listener, routes, shutdown).await;
}

/// The sidecar's routes, as the server core calls them.
#[derive(Clone)]
struct Routes {
    surface: Surface,
    state: Arc<State>,
    draining: quiver_http::Draining,
    connections: Arc<quiver_http::Stats>,
    body_timeout: std::time::Duration,
}

impl quiver_http::Handler for Routes {
    type Body = Body;
    type BodyError = Infallible;

    async fn call(&self, req: Request<Incoming>, _peer: std::net::SocketAddr) -> Response<Body> {
        handle(self, req).await
    }
}

async fn handle(routes: &Routes, req: Request<Incoming>) -> Response<Body> {
    let state = &routes.state;
    let started = Instant::now();
    if let Some(enricher) = &state.config.enrich
        && let Some(route) = crate::enrich::route(req.method(), req.uri().path())
    {
        let resp = match route {
            Ok(route) => {
                crate::enrich::serve(state, enricher, route, req, routes.body_timeout).await
            }
            Err(e) => error_response(&e),
        };
        state
            .metrics
            .record_request(Endpoint::Kserve, resp.status().as_u16(), started.elapsed());
        return resp;
    }
    if routes.surface == Surface::Kserve
        && !matches!(req.uri().path(), "/health" | "/ready" | "/metrics")
    {
        quiver_http::discard_body(req, routes.body_timeout);
        let resp = error_response(&ApiError::not_found(
            "NotOnServingPort",
            "the KServe serving port answers KServe's paths (/v1/models/..., /v2/...), /health, /ready and /metrics; Feast's API is on the sidecar's loopback port (quiver serve --api-port)",
        ));
        state
            .metrics
            .record_request(Endpoint::Other, resp.status().as_u16(), started.elapsed());
        return resp;
    }
    let (endpoint, resp) = match (req.method(), req.uri().path()) {
        (&Method::POST, "/get-online-features") => (
            Endpoint::GetOnlineFeatures,
            get_online_features(routes, req).await,
        ),
        (&Method::GET, "/health") => (
            Endpoint::Health,
            json_response(200, "{\"status\":\"ok\"}".to_owned()),
        ),
        (&Method::GET, "/ready") => (Endpoint::Ready, ready(routes).await),
        (&Method::POST, "/push") if state.config.push.is_some() => {
            (Endpoint::Push, write(routes, req, true).await)
        }
        (&Method::POST, "/write-to-online-store") if state.config.push.is_some() => (
            Endpoint::WriteToOnlineStore,
            write(routes, req, false).await,
        ),
        (&Method::POST, "/materialize") => {
            (Endpoint::Materialize, materialize(routes, req, false).await)
        }
        (&Method::POST, "/materialize-incremental") => (
            Endpoint::MaterializeIncremental,
            materialize(routes, req, true).await,
        ),
        (&Method::GET, "/metrics") => (Endpoint::Metrics, metrics(routes)),

        (_, "/get-online-features" | "/health" | "/ready" | "/metrics") => (
            Endpoint::Other,
            error_response(&ApiError::method_not_allowed(
                req.method(),
                req.uri().path(),
            )),
        ),
        (_, path @ ("/push" | "/write-to-online-store")) if state.config.push.is_none() => (
            Endpoint::Other,
            error_response(&ApiError::not_found(
                "NotFound",
                format!("{path} is off: start quiver serve with --enable-push (or --role ingest)"),
            )),
        ),
        (_, "/push" | "/write-to-online-store" | "/materialize" | "/materialize-incremental") => (
            Endpoint::Other,
            error_response(&ApiError::method_not_allowed(
                req.method(),
                req.uri().path(),
            )),
        ),
        (_, path) => (
            Endpoint::Other,
            error_response(&ApiError::not_found(
                "NotFound",
                format!("no endpoint {path}: try POST /get-online-features"),
            )),
        ),
    };
    state
        .metrics
        .record_request(endpoint, resp.status().as_u16(), started.elapsed());
    resp
}

/// Reads a body of at most `limit` bytes (413 beyond, before reading past it) within the
/// server's body deadline (408).
async fn read_body(
    routes: &Routes,
    req: Request<Incoming>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    quiver_http::read_body(req, limit, routes.body_timeout)
        .await
        .map_err(|e| {
            // The status comes from the body error's kind; the class is the sidecar's name for it.
            let class = match e {
                quiver_http::BodyError::TooLarge { .. } => "RequestTooLarge",
                quiver_http::BodyError::Timeout(_) => "RequestTimeout",
                quiver_http::BodyError::Read(_) => "BadBody",
            };
            ApiError::new(e.kind(), class, e.to_string())
        })
}

/// The 401 of a write endpoint called without its token (`None`: authorized).
fn unauthorized(config: &PushConfig, req: &Request<Incoming>) -> Option<Response<Body>> {
    let token = config.token.as_ref()?;
    if quiver_http::bearer_matches(req.headers(), token) == quiver_http::Bearer::Valid {
        return None;
    }
    let mut resp = error_response(&ApiError::new(
        ErrorKind::Unauthorized,
        "Unauthorized",
        "this endpoint needs Authorization: Bearer <token>",
    ));
    resp.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer"),
    );
    Some(resp)
}

/// `POST /materialize` and (`incremental`) `POST /materialize-incremental`: the ingest role's,
/// behind the write endpoints' token; the run itself on a blocking thread.
async fn materialize(routes: &Routes, req: Request<Incoming>, incremental: bool) -> Response<Body> {
    let state = &routes.state;
    let path = req.uri().path().to_owned();
    let config = match &state.config.push {
        Some(c) if !matches!(c.materialize, MaterializeSupport::Off) => c,
        _ => {
            return error_response(&ApiError::not_found(
                "NotFound",
                format!("{path} is served by the ingest role: start quiver serve --role ingest"),
            ));
        }
    };
    if let Some(resp) = unauthorized(config, &req) {
        return resp;
    }
    let materializer = match &config.materialize {
        MaterializeSupport::On(m) => Arc::clone(m),
        _ => return error_response(&crate::materialize::unlinked()),
    };
    if req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "async=true" || p == "async=1"))
    {
        return error_response(&ApiError::new(
            ErrorKind::NotImplemented,
            "NotImplemented",
            format!(
                "{path}?async=true is not supported: call {path} without it, it answers when the run is done"
            ),
        ));
    }
    let body = match read_body(routes, req, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let now = state.engine.config.clock.unix_now();
    let now = quiver_core::time::Timestamp {
        seconds: now.as_secs() as i64,
        nanos: now.subsec_nanos() as i32,
    };
    let request = match crate::materialize::parse(&body, incremental, now) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let store = state.engine.store.clone();
    let ran = tokio::task::spawn_blocking(move || materializer.materialize(&store, &request))
        .await
        .unwrap_or_else(|e| Err(ApiError::internal("MaterializeFailed", e.to_string())));
    match ran {
        Ok(done) => {
            // This process wrote the store: its own cache must not outlive that.
            state.engine.invalidate_all();
            for v in &done {
                state.metrics.rows_written.add(v.written);
                state.metrics.rows_skipped.add(v.skipped);
            }
            json_response(200, crate::materialize::answer(&done))
        }
        Err(e) => {
            log_error(&e);
            error_response(&e)
        }
    }
}

/// `POST /push` (`by_source`) and `POST /write-to-online-store`.
async fn write(routes: &Routes, req: Request<Incoming>, by_source: bool) -> Response<Body> {
    let state = &routes.state;
    let Some(config) = &state.config.push else {
        return error_response(&ApiError::not_found("NotFound", "writes are off"));
    };
    if let Some(resp) = unauthorized(config, &req) {
        return resp;
    }
    let body = match read_body(routes, req, config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let registry = state.registry.load_full();
    let request = match crate::push::parse(&registry, &body, by_source, config) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    match crate::push::write(
        &state.engine.store,
        &registry,
        request,
        config,
        state.transform.as_deref(),
        &state.metrics,
    )
    .await
    {
        Ok(written) => {
            for key in &written.keys {
                state.engine.invalidate(&registry, key);
            }
            state.metrics.rows_written.add(written.online.written);
            state.metrics.rows_skipped.add(written.online.skipped);
            let mut body = format!(
                "{{\"status\":\"ok\",\"written\":{},\"skipped\":{}",
                written.online.written, written.online.skipped
            );
            if let Some(path) = &written.offline {
                body.push_str(",\"offline\":");
                quiver_core::json::write_str(&mut body, path);
            }
            body.push('}');
            json_response(200, body)
        }
        Err(e) => {
            log_error(&e);
            error_response(&e)
        }
    }
}

async fn get_online_features(routes: &Routes, req: Request<Incoming>) -> Response<Body> {
    let state = &routes.state;
    let format = match req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()) {
        Some(accept) if accept.contains(crate::render::arrow::CONTENT_TYPE) => Format::Arrow,
        _ => Format::Json,
    };
    let body = match read_body(routes, req, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let request = match parse_request(&body) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    // The registry version this request sees, start to end: borrowed through a guard for the
    // synchronous part (no reference count traffic), an `Arc` only if the request must wait.
    let guard = state.registry.load();
    let on_demand = guard.needs_on_demand(
        request.features.as_deref(),
        request.feature_service.as_deref(),
    );
    let answer = if on_demand {
        // Computed through the transformation service (crate::on_demand).
        let registry = arc_swap::Guard::into_inner(guard);
        crate::on_demand::serve(state, &registry, request, format).await
    } else {
        match state.engine.prepare(&guard, request, format) {
            Ok(Prepared::Answered(answer)) => Ok(answer),
            Ok(Prepared::Pending(pending)) => {
                let registry = arc_swap::Guard::into_inner(guard);
                state.engine.finish(&registry, *pending).await
            }
            Err(e) => Err(e),
        }
    };
    match answer {
        Ok(body) => {
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            let content_type = match format {
                Format::Json => "application/json",
                Format::Arrow => crate::render::arrow::CONTENT_TYPE,
            };
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            resp
        }
        Err(e) => {
            log_error(&e);
            error_response(&e)
        }
    }
}

/// Logs a failed request at the level its kind calls for: the caller's mistakes quietly, an
/// upstream's failure as a warning, a bug as an error.
fn log_error(e: &ApiError) {
    match e.kind.severity() {
        Severity::Debug => tracing::debug!(error = %e, "request failed"),
        Severity::Warn => tracing::warn!(error = %e, "request failed"),
        Severity::Error => tracing::error!(error = %e, "request failed"),
    }
}

async fn ready(routes: &Routes) -> Response<Body> {
    if routes.draining.is_on() {
        return json_response(
            503,
            "{\"ready\":false,\"reasons\":[\"shutting down\"]}".to_owned(),
        );
    }
    let (ok, reasons) = routes.state.readiness().await;
    let mut body = String::from("{\"ready\":");
    body.push_str(if ok { "true" } else { "false" });
    body.push_str(",\"reasons\":[");
    for (i, r) in reasons.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        quiver_core::json::write_str(&mut body, r);
    }
    body.push_str("]}");
    json_response(if ok { 200 } else { 503 }, body)
}

fn metrics(routes: &Routes) -> Response<Body> {
    let state = &routes.state;
    let registry = state.registry.load();
    let (cache_bytes, cache_entries) = state.engine.cache.size();
    let snapshot = Snapshot {
        cache_bytes,
        cache_entries,
        registry_version: registry.version,
        registry_id: &registry.version_id,
        change_feed_live: state.engine.feed.is_live(),
        invalidation_age: state.engine.feed.invalidation_age(),
        ready: state.ready_cached(),
        writes_open: state
            .config
            .push
            .as_ref()
            .is_some_and(|p| p.token.is_none()),
    };
    let mut text = state.metrics.render(&snapshot);
    if let Some(enricher) = &state.config.enrich {
        enricher.render_metrics(&mut text);
    }
    routes.connections.render("quiver_http", &mut text);
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

//! The webhook's HTTPS server: `serve(listener, certs, config, limits, shutdown)`.
//!
//! Per connection (the `quiver-http` server core): a permit (at most `max_connections` at once)
//! → TLS handshake with a deadline, on the certificate in service (reloaded when its files
//! change) → HTTP/1 with header, idle and body deadlines. Per request: route → body limit (413 before reading past it)
//! → AdmissionReview parse (400 naming the problem) → `inject::admit` → JSON. Every response is
//! built in this file.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use quiver_core::fault::{Classified as _, ErrorKind, Severity};
use tokio::net::TcpListener;

use crate::admission::{API_VERSION, AdmissionReview, KIND};
use crate::inject::{self, InjectorConfig, Outcome};
use crate::tls::CertReloader;

type Body = Full<Bytes>;

/// Bounds on what one client can hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest AdmissionReview accepted. The API server caps an object at 3 MiB; a review
    /// carries one object (two on UPDATE) and some envelope.
    pub max_body_bytes: usize,
    /// Connections, handshake, header, idle and body deadlines, drain (`quiver-http`).
    pub http: quiver_http::Limits,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 8 << 20,
            http: quiver_http::Limits {
                max_connections: 512,
                header_read_timeout: Duration::from_secs(10),
                // The API server calls with a deadline of at most 30 s.
                body_read_timeout: Duration::from_secs(10),
                ..quiver_http::Limits::default()
            },
        }
    }
}

/// Serves until `shutdown` resolves on the server core (`quiver-http`), then drains.
pub async fn serve(
    listener: TcpListener,
    certs: Arc<CertReloader>,
    config: Arc<InjectorConfig>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let server = quiver_http::Server::new(limits.http.clone()).with_tls(certs);
    let routes = Routes {
        config,
        limits: Arc::new(limits),
    };
    server.serve(listener, routes, shutdown).await;
}

#[derive(Clone)]
struct Routes {
    config: Arc<InjectorConfig>,
    limits: Arc<Limits>,
}

impl quiver_http::Handler for Routes {
    type Body = Body;
    type BodyError = Infallible;

    async fn call(&self, req: Request<Incoming>, _peer: std::net::SocketAddr) -> Response<Body> {
        handle(&self.config, &self.limits, req).await
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A failure of `kind`: the status from the one table in `quiver_core::fault`, the body
/// `{"error": class, "message": ...}`; logged as loudly as the kind says.
fn error_response(kind: ErrorKind, class: &str, message: &str) -> Response<Body> {
    match kind.severity() {
        Severity::Debug => tracing::debug!(class, error = message, "webhook request refused"),
        Severity::Warn => tracing::warn!(class, error = message, "webhook request failed"),
        Severity::Error => tracing::error!(class, error = message, "webhook request failed"),
    }
    let status =
        StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({ "error": class, "message": message });
    json_response(status, body.to_string().into_bytes())
}

async fn handle(
    config: &InjectorConfig,
    limits: &Limits,
    req: Request<Incoming>,
) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/mutate") => mutate(config, limits, req).await,
        (&Method::GET, "/health") => json_response(StatusCode::OK, b"{\"status\":\"ok\"}".to_vec()),
        (_, "/mutate" | "/health") => error_response(
            ErrorKind::MethodNotAllowed,
            "MethodNotAllowed",
            &format!("{} is not allowed on {}", req.method(), req.uri().path()),
        ),
        (_, path) => error_response(
            ErrorKind::NotFound,
            "NotFound",
            &format!("no endpoint {path}: the webhook is POST /mutate"),
        ),
    }
}

async fn mutate(
    config: &InjectorConfig,
    limits: &Limits,
    req: Request<Incoming>,
) -> Response<Body> {
    let body =
        match quiver_http::read_body(req, limits.max_body_bytes, limits.http.body_read_timeout)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                let class = match e {
                    quiver_http::BodyError::TooLarge { .. } => "RequestTooLarge",
                    quiver_http::BodyError::Timeout(_) => "RequestTimeout",
                    quiver_http::BodyError::Read(_) => "BadRequest",
                };
                return error_response(e.kind(), class, &e.to_string());
            }
        };
    let review: AdmissionReview = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                ErrorKind::BadRequest,
                "BadRequest",
                &format!("not an AdmissionReview: {e}"),
            );
        }
    };
    if review.api_version != API_VERSION || review.kind != KIND {
        return error_response(
            ErrorKind::BadRequest,
            "BadRequest",
            &format!(
                "apiVersion {:?}, kind {:?}: expected apiVersion {API_VERSION}, kind {KIND} (set admissionReviewVersions: [v1])",
                review.api_version, review.kind
            ),
        );
    }
    let Some(request) = review.request else {
        return error_response(
            ErrorKind::BadRequest,
            "BadRequest",
            "the AdmissionReview has no request",
        );
    };
    let started = Instant::now();
    let (response, outcome) = inject::admit(&request, config);
    let pod = request
        .object
        .as_ref()
        .and_then(|o| {
            o.pointer("/metadata/name")
                .or_else(|| o.pointer("/metadata/generateName"))
        })
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match outcome {
        Outcome::Invalid { .. } => {
            let message = response
                .status
                .as_ref()
                .and_then(|s| s.message.as_deref())
                .or_else(|| response.warnings.first().map(String::as_str))
                .unwrap_or_default();
            tracing::warn!(uid = %request.uid, namespace = %request.namespace, pod, outcome = outcome.as_str(), dry_run = request.dry_run, elapsed_us, message, "admission");
        }
        _ => {
            tracing::info!(uid = %request.uid, namespace = %request.namespace, pod, outcome = outcome.as_str(), dry_run = request.dry_run, elapsed_us, "admission");
        }
    }
    match serde_json::to_vec(&response.into_review()) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => error_response(
            ErrorKind::Internal,
            "Internal",
            &format!("encoding the response: {e}"),
        ),
    }
}

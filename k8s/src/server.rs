//! The webhook's HTTPS server: `serve(listener, certs, config, limits, shutdown)`.
//!
//! Per connection: a permit (at most `max_connections` at once) → TLS handshake with a
//! deadline, on the certificate in service (reloaded when its files change) → HTTP/1 with a
//! deadline for the request head. Per request: route → body limit (413 before reading past it)
//! → AdmissionReview parse (400 naming the problem) → `inject::admit` → JSON. Every response is
//! built in this file.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 8 << 20,
            max_connections: 512,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves until `shutdown` resolves, then stops accepting; connections in progress finish.
pub async fn serve(
    listener: TcpListener,
    certs: Arc<CertReloader>,
    config: Arc<InjectorConfig>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let limits = Arc::new(limits);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => p,
            () = &mut shutdown => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = certs.acceptor();
        let config = Arc::clone(&config);
        let limits = Arc::clone(&limits);
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let header_timeout = limits.header_timeout;
            let service = service_fn(move |req| {
                let config = Arc::clone(&config);
                let limits = Arc::clone(&limits);
                async move { Ok::<_, Infallible>(handle(&config, &limits, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
        });
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error_response(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": kind, "message": message });
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
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{} is not allowed on {}", req.method(), req.uri().path()),
        ),
        (_, path) => error_response(
            StatusCode::NOT_FOUND,
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
    let limit = limits.max_body_bytes;
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLarge",
            &format!("request body over {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large();
        }
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("reading the body: {e}"),
            );
        }
    };
    let review: AdmissionReview = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("not an AdmissionReview: {e}"),
            );
        }
    };
    if review.api_version != API_VERSION || review.kind != KIND {
        return error_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "apiVersion {:?}, kind {:?}: expected apiVersion {API_VERSION}, kind {KIND} (set admissionReviewVersions: [v1])",
                review.api_version, review.kind
            ),
        );
    }
    let Some(request) = review.request else {
        return error_response(
            StatusCode::BAD_REQUEST,
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
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal",
            &format!("encoding the response: {e}"),
        ),
    }
}

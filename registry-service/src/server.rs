//! The HTTP API: `serve(listener, service, tls, shutdown)`, routing, auth, and every response.
//!
//! Per connection: a permit (at most `max_connections` at once; long polls hold one), the TLS
//! handshake with a deadline when TLS is on, HTTP/1.1 with a header deadline. Per request:
//! route → token (writes always when a token is set; reads with `auth_reads`) → body limit →
//! the handler. Errors are JSON `{"error": kind, "message": ...}` naming the field at fault.
//!
//! Length: every route and every response of the service's API is here, so that statuses and
//! error bodies are decided in one file; splitting the routes apart would scatter that.

// Handlers return a finished response as their error: built once per request, never on a hot
// loop, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use quiver_registry::apply::Action;
use quiver_registry::{config::is_valid_project_name, definitions, snapshot, summary};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;

use crate::metrics::{Endpoint, Gauges};
use crate::{ApplyError, RecordError, RegistryStoreError, Service, SnapshotRequestError};
use quiver_core::fault::{Classified as _, ErrorKind, Severity};
use quiver_core::registry::RegistryFile;
use quiver_registry::store::{FUTURE_END_TOLERANCE, MaterializedInterval};

type Body = Full<Bytes>;

/// Serves until `shutdown` resolves on the server core (`quiver-http`, with the limits in the
/// service's config), then drains: `/ready` answers 503, new connections are refused, requests
/// in progress finish (long polls at their deadline or the drain timeout).
pub async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    tls: Option<Arc<crate::tls::CertReloader>>,
    shutdown: impl Future<Output = ()>,
) {
    let mut server = quiver_http::Server::new(service.config.http.clone());
    if let Some(certs) = tls {
        server = server.with_tls(certs);
    }
    let routes = Routes {
        service,
        draining: server.draining(),
        connections: server.stats(),
    };
    server.serve(listener, routes, shutdown).await;
}

/// What every request needs: the service, and the server's drain flag and counters.
#[derive(Clone)]
struct Routes {
    service: Arc<Service>,
    draining: quiver_http::Draining,
    connections: Arc<quiver_http::Stats>,
}

impl quiver_http::Handler for Routes {
    type Body = Body;
    type BodyError = Infallible;

    async fn call(&self, req: Request<Incoming>, _peer: std::net::SocketAddr) -> Response<Body> {
        let (endpoint, resp) = handle(self, req).await;
        self.service
            .metrics
            .record(endpoint, resp.status().as_u16());
        resp
    }
}

fn json_response(status: StatusCode, body: &Json) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The HTTP status of `kind`, from the one table in `quiver_core::fault`.
fn status_of(kind: ErrorKind) -> StatusCode {
    StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A failure of `kind`: its status, `{"error": class, "message": ...}` (the classes are the
/// service's stable names), logged as loudly as the kind says.
fn error(kind: ErrorKind, class: &str, message: impl Into<String>) -> Response<Body> {
    let message = message.into();
    match kind.severity() {
        Severity::Debug => tracing::debug!(class, error = %message, "request refused"),
        Severity::Warn => tracing::warn!(class, error = %message, "request failed"),
        Severity::Error => tracing::error!(class, error = %message, "request failed"),
    }
    json_response(
        status_of(kind),
        &json!({"error": class, "message": message}),
    )
}

fn store_error(e: &RegistryStoreError) -> Response<Body> {
    error(e.kind(), e.class(), e.to_string())
}

/// `None` when the request may go on, else the 401.
fn check_token(service: &Service, req: &Request<Incoming>, write: bool) -> Option<Response<Body>> {
    let token = service.config.token.as_deref()?;
    if !write && !service.config.auth_reads {
        return None;
    }
    let given = quiver_http::bearer_matches(req.headers(), token);
    if given == quiver_http::Bearer::Valid {
        return None;
    }
    service.metrics.unauthorized.inc();
    let what = if write { "writes" } else { "reads" };
    let mut resp = error(
        ErrorKind::Unauthorized,
        "Unauthorized",
        format!(
            "{} need Authorization: Bearer <token>{}",
            what,
            if given == quiver_http::Bearer::Wrong {
                " (the token given is wrong)"
            } else {
                ""
            }
        ),
    );
    resp.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(resp)
}

/// Decodes `%XX` escapes and `+` (as a space) in a query value, with the `percent-encoding`
/// crate. A `%` not followed by two hex digits is an error (the crate would keep it as is).
fn percent_decode(s: &str) -> Result<String, String> {
    let hex2 = |rest: &str| {
        rest.get(..2)
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    if !s.split('%').skip(1).all(hex2) {
        return Err(format!("{s:?} has a bad %-escape"));
    }
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8()
        .map(|v| v.into_owned())
        .map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// The query's parameters; any name not in `allowed` is an error naming it.
fn query_params(
    query: Option<&str>,
    allowed: &[&str],
) -> Result<Vec<(String, String)>, Response<Body>> {
    let mut out = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k)
            .map_err(|e| error(ErrorKind::BadRequest, "BadQuery", format!("query: {e}")))?;
        if !allowed.contains(&k.as_str()) {
            return Err(error(
                ErrorKind::BadRequest,
                "BadQuery",
                format!(
                    "{k}: unknown query parameter{}",
                    if allowed.is_empty() {
                        " (this endpoint takes none)".to_owned()
                    } else {
                        format!(": expected {}", allowed.join(" or "))
                    }
                ),
            ));
        }
        let v = percent_decode(v)
            .map_err(|e| error(ErrorKind::BadRequest, "BadQuery", format!("{k}: {e}")))?;
        out.push((k, v));
    }
    Ok(out)
}

/// `30s`, `500ms`, `2m`, or whole seconds.
fn parse_wait(s: &str) -> Result<Duration, String> {
    quiver_core::time::parse_duration(s)
        .map_err(|_| format!("wait: {s:?} is not a duration: expected e.g. 30s, 500ms"))
}

async fn handle(routes: &Routes, req: Request<Incoming>) -> (Endpoint, Response<Body>) {
    let service = &routes.service;
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["health"]) => (
            Endpoint::Health,
            json_response(StatusCode::OK, &json!({"status": "ok"})),
        ),
        (&Method::GET, ["ready"]) => (Endpoint::Ready, ready(routes)),
        (&Method::GET, ["metrics"]) => (Endpoint::Metrics, metrics(routes)),
        (&Method::GET, ["v1", "projects"]) => (Endpoint::Read, read(service, &req, None, None)),
        (&Method::GET, ["v1", "projects", project]) => {
            (Endpoint::Read, read(service, &req, Some(project), None))
        }
        (&Method::GET, ["v1", "projects", project, "snapshot"]) => {
            (Endpoint::Snapshot, snapshot(service, &req, project).await)
        }
        (&Method::GET, ["v1", "projects", project, collection])
            if collection_key(collection).is_some() =>
        {
            (
                Endpoint::Read,
                read(service, &req, Some(project), collection_key(collection)),
            )
        }
        (&Method::GET, ["v1", "projects", project, "registry"]) => {
            (Endpoint::Read, registry_proto(service, &req, project))
        }
        (&Method::POST, ["v1", "projects", project, "apply"]) => {
            let project = (*project).to_owned();
            (Endpoint::Apply, apply(service, req, &project).await)
        }
        (&Method::POST, ["v1", "projects", project, "materializations"]) => {
            let project = (*project).to_owned();
            (
                Endpoint::Materializations,
                materializations(service, req, &project).await,
            )
        }
        (&Method::DELETE, ["v1", "projects", project, "materializations", view]) => {
            let (project, view) = ((*project).to_owned(), (*view).to_owned());
            (
                Endpoint::Materializations,
                clear_materializations(service, &req, &project, &view).await,
            )
        }
        (_, ["health" | "ready" | "metrics"])
        | (_, ["v1", "projects"])
        | (_, ["v1", "projects", _])
        | (
            _,
            [
                "v1",
                "projects",
                _,
                "snapshot" | "apply" | "registry" | "materializations",
            ],
        )
        | (_, ["v1", "projects", _, "materializations", _]) => (
            Endpoint::Other,
            error(
                ErrorKind::MethodNotAllowed,
                "MethodNotAllowed",
                format!("{method} is not allowed on {path}"),
            ),
        ),
        _ => (
            Endpoint::Other,
            error(
                ErrorKind::NotFound,
                "NotFound",
                format!(
                    "no endpoint {path}: try GET /v1/projects, /v1/projects/{{project}}/snapshot, \
                     /v1/projects/{{project}}/feature-views|label-views|entities|data-sources|feature-services|registry, \
                     POST /v1/projects/{{project}}/apply|materializations, \
                     or DELETE /v1/projects/{{project}}/materializations/{{view}}"
                ),
            ),
        ),
    }
}

/// The summary key a collection path reads.
fn collection_key(collection: &str) -> Option<&'static str> {
    Some(match collection {
        "feature-views" => "feature_views",
        "stream-feature-views" => "stream_feature_views",
        "on-demand-feature-views" => "on_demand_feature_views",
        "label-views" => "label_views",
        "entities" => "entities",
        "data-sources" => "data_sources",
        "feature-services" => "feature_services",
        _ => return None,
    })
}

fn check_project(project: &str) -> Result<(), Response<Body>> {
    if is_valid_project_name(project) {
        Ok(())
    } else {
        Err(error(
            ErrorKind::BadRequest,
            "BadProject",
            format!(
                "project: {project:?} is not a valid project name (letters, digits, _ and -, not starting with _ or -)"
            ),
        ))
    }
}

fn unknown_project(project: &str) -> Response<Body> {
    error(
        ErrorKind::NotFound,
        "UnknownProject",
        format!("project {project:?} has no objects in the registry: apply its definitions first"),
    )
}

/// What `/ready` says of auth: `token` when writes need one, `off` when they do not.
fn auth_mode(service: &Service) -> &'static str {
    if service.config.token.is_some() {
        "token"
    } else {
        "off"
    }
}

fn ready(routes: &Routes) -> Response<Body> {
    let service = &routes.service;
    if routes.draining.is_on() {
        json_response(
            status_of(ErrorKind::Unavailable),
            &json!({"ready": false, "reasons": ["shutting down"]}),
        )
    } else if service.store_ok() {
        json_response(
            StatusCode::OK,
            &json!({"ready": true, "reasons": [], "auth": auth_mode(service)}),
        )
    } else {
        json_response(
            status_of(ErrorKind::Unavailable),
            &json!({"ready": false, "reasons": [format!(
                "the registry store ({}) did not answer the last poll; serving the last loaded registry",
                service.store().describe()
            )]}),
        )
    }
}

fn metrics(routes: &Routes) -> Response<Body> {
    let service = &routes.service;
    let catalog = service.catalog();
    let gauges = Gauges {
        ready: service.store_ok(),
        writes_open: service.config.token.is_none(),
        versions: catalog
            .projects
            .iter()
            .map(|p| (p.as_str(), catalog.version(p)))
            .collect(),
    };
    let mut text = service.metrics.render(&gauges);
    routes.connections.render("quiver_registry_http", &mut text);
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

/// The JSON read API: the project list, one project's summary, or one of its collections.
fn read(
    service: &Service,
    req: &Request<Incoming>,
    project: Option<&str>,
    collection: Option<&str>,
) -> Response<Body> {
    if let Some(resp) = check_token(service, req, false) {
        return resp;
    }
    if let Err(resp) = query_params(req.uri().query(), &[]) {
        return resp;
    }
    let catalog = service.catalog();
    let Some(project) = project else {
        let projects: Vec<Json> = catalog
            .projects
            .iter()
            .map(|p| json!({"name": p, "version": catalog.version(p)}))
            .collect();
        return json_response(StatusCode::OK, &json!({"projects": projects}));
    };
    if let Err(resp) = check_project(project) {
        return resp;
    }
    let typed = match catalog.project(project) {
        Ok(t) => t,
        Err(SnapshotRequestError::UnknownProject(_)) => return unknown_project(project),
        Err(e) => return error(e.kind(), "StoreCorrupt", format!("{e:?}")),
    };
    let mut body = summary::summarize(&typed);
    let version = catalog.version(project);
    match collection {
        None => {
            if let Some(map) = body.as_object_mut() {
                map.insert("version".to_owned(), json!(version));
            }
            json_response(StatusCode::OK, &body)
        }
        Some(key) => json_response(
            StatusCode::OK,
            &json!({"project": project, "version": version, key: body[key].take()}),
        ),
    }
}

/// Decrements the waiting long-poll gauge when the request ends, however it ends.
struct Waiting<'a>(&'a Service);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.metrics.long_polls.fetch_sub(1, Relaxed);
    }
}

/// `GET /v1/projects/{p}/snapshot[?feature_services=a,b][&wait=30s]`.
async fn snapshot(
    service: &Arc<Service>,
    req: &Request<Incoming>,
    project: &str,
) -> Response<Body> {
    if let Some(resp) = check_token(service, req, false) {
        return resp;
    }
    if let Err(resp) = check_project(project) {
        return resp;
    }
    let params = match query_params(req.uri().query(), &["wait", "feature_services"]) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let mut wait = None;
    let mut services: Vec<String> = Vec::new();
    for (k, v) in params {
        if k == "wait" {
            match parse_wait(&v) {
                Ok(w) if w <= service.config.max_wait => wait = Some(w),
                Ok(_) => {
                    return error(
                        ErrorKind::BadRequest,
                        "BadQuery",
                        format!(
                            "wait: {v:?} is longer than the longest wait, {:?}",
                            service.config.max_wait
                        ),
                    );
                }
                Err(e) => return error(ErrorKind::BadRequest, "BadQuery", e),
            }
        } else {
            services.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    services.sort();
    services.dedup();
    let if_none_match: Vec<String> = req
        .headers()
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    let matches = |etag: &str| if_none_match.iter().any(|t| t == etag || t == "*");
    let deadline = wait.map(|w| Instant::now() + w);
    let mut rx = service.subscribe();
    let mut waiting = None;
    loop {
        let catalog = Arc::clone(&rx.borrow_and_update());
        let built = match catalog.snapshot(project, &services) {
            Ok(b) => b,
            Err(SnapshotRequestError::UnknownProject(_)) => return unknown_project(project),
            Err(SnapshotRequestError::UnknownService(s)) => {
                return error(
                    ErrorKind::NotFound,
                    "UnknownFeatureService",
                    format!("feature_services: project {project:?} has no feature service {s:?}"),
                );
            }
            Err(e @ SnapshotRequestError::Registry(_)) => {
                return error(e.kind(), "StoreCorrupt", e.to_string());
            }
        };
        if !matches(&built.etag) {
            service.metrics.snapshot_bytes.add(built.bytes.len() as u64);
            let mut resp = Response::new(Full::new(built.bytes.clone()));
            let h = resp.headers_mut();
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static(snapshot::CONTENT_TYPE),
            );
            if let Ok(v) = HeaderValue::from_str(&built.etag) {
                h.insert(ETAG, v);
            }
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert(
                "x-quiver-registry-version",
                HeaderValue::from(built.version),
            );
            return resp;
        }
        let expired = deadline.is_none_or(|d| Instant::now() >= d);
        if expired {
            service.metrics.not_modified.inc();
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            if let Ok(v) = HeaderValue::from_str(&built.etag) {
                resp.headers_mut().insert(ETAG, v);
            }
            resp.headers_mut().insert(
                "x-quiver-registry-version",
                HeaderValue::from(built.version),
            );
            return resp;
        }
        if waiting.is_none() {
            service.metrics.long_polls.fetch_add(1, Relaxed);
            waiting = Some(Waiting(service));
        }
        let Some(deadline) = deadline else { continue };
        match tokio::time::timeout_at(deadline.into(), rx.changed()).await {
            // Something changed: look again (the narrowed snapshot may be the same).
            Ok(Ok(())) => {}
            // The service is going away: nothing will change; answer 304 at the deadline.
            Ok(Err(_)) => tokio::time::sleep_until(deadline.into()).await,
            // The time is up: the loop answers 304.
            Err(_) => {}
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyBody {
    /// The project version the definitions were diffed against (0: a new project).
    base_version: Option<u64>,
    files: Vec<DefinitionFile>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionFile {
    path: String,
    content: String,
}

/// The body within the configured size (413) and time (408); the error is the response.
async fn read_body(
    service: &Service,
    req: Request<Incoming>,
    limit: usize,
) -> Result<Bytes, Response<Body>> {
    quiver_http::read_body(req, limit, service.config.http.body_read_timeout)
        .await
        .map_err(|e| {
            let class = match e {
                quiver_http::BodyError::TooLarge { .. } => "RequestTooLarge",
                quiver_http::BodyError::Timeout(_) => "RequestTimeout",
                quiver_http::BodyError::Read(_) => "BadBody",
            };
            error(e.kind(), class, e.to_string())
        })
}

fn now() -> quiver_core::time::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    quiver_core::time::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The checks every write endpoint makes before its own: the write token, the project name, no
/// query parameters, the body within the limit, and the body's JSON shape (`expected` tells it
/// in the 400).
async fn write_request<T: serde::de::DeserializeOwned>(
    service: &Service,
    req: Request<Incoming>,
    project: &str,
    expected: &str,
) -> Result<T, Response<Body>> {
    let body = write_body(service, req, project).await?;
    decode_body(&body, expected)
}

/// [`write_request`]'s checks up to the body, which is returned undecoded.
async fn write_body(
    service: &Service,
    req: Request<Incoming>,
    project: &str,
) -> Result<Bytes, Response<Body>> {
    if let Some(resp) = check_token(service, &req, true) {
        return Err(resp);
    }
    check_project(project)?;
    query_params(req.uri().query(), &[])?;
    read_body(service, req, service.config.max_body_bytes).await
}

fn decode_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    expected: &str,
) -> Result<T, Response<Body>> {
    serde_json::from_slice(body).map_err(|e| {
        error(
            ErrorKind::BadRequest,
            "BadBody",
            format!("body: {e}: {expected}"),
        )
    })
}

/// A 503 for a full pool, with `Retry-After`; a failed job is a 500.
fn pool_error(e: &quiver_http::PoolError) -> Response<Body> {
    let mut resp = error(e.kind(), "Busy", e.to_string());
    if let quiver_http::PoolError::Busy {
        retry_after_secs, ..
    } = e
    {
        resp.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            HeaderValue::from(*retry_after_secs),
        );
    }
    resp
}

/// An apply's body decoded and its definitions checked (on the apply pool): the body's
/// `base_version` and `dry_run`, and the project the definitions describe; else the 4xx.
fn parse_apply(
    body: &[u8],
    project: &str,
) -> Result<(ApplyBody, quiver_core::registry::ProjectRegistry), Response<Body>> {
    const EXPECTED: &str = "expected {\"base_version\": N, \"files\": [{\"path\": ..., \"content\": ...}], \"dry_run\": false}";
    let mut body: ApplyBody = decode_body(body, EXPECTED)?;
    if body.base_version.is_none() && !body.dry_run {
        return Err(error(
            ErrorKind::BadRequest,
            "BadBody",
            format!(
                "base_version: required: the version of project {project} the definitions were diffed against \
                 (GET /v1/projects/{project} tells it; 0 for a new project)"
            ),
        ));
    }
    if body.files.is_empty() {
        return Err(error(
            ErrorKind::BadRequest,
            "BadBody",
            "files: no definition files: send features.yaml (and features/*.yaml)",
        ));
    }
    let files: Vec<(&str, &str)> = body
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.content.as_str()))
        .collect();
    let desired = definitions::parse(&files, project).map_err(|errors| {
        let problems: Vec<Json> = errors
            .0
            .iter()
            .map(|e| json!({"file": e.file, "line": e.line, "object": e.object, "message": e.message}))
            .collect();
        json_response(
            status_of(errors.kind()),
            &json!({"error": "InvalidDefinitions", "message": errors.to_string().trim_end(), "problems": problems}),
        )
    })?;
    // The files' text is no longer needed; only the small fields travel on.
    body.files = Vec::new();
    Ok((body, desired))
}

/// `POST /v1/projects/{p}/apply` with `{"base_version": N, "files": [{"path", "content"}],
/// "dry_run": false}`.
async fn apply(service: &Arc<Service>, req: Request<Incoming>, project: &str) -> Response<Body> {
    let body = match write_body(service, req, project).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    // Decoding and checking the definitions is linear in the body but still the costliest
    // step (up to about a second for the largest body): on the bounded pool, never here.
    let owned_project = project.to_owned();
    let parsed = service
        .apply_pool
        .run(move || parse_apply(&body, &owned_project))
        .await;
    let (body, desired) = match parsed {
        Ok(Ok(parsed)) => parsed,
        Ok(Err(resp)) => return resp,
        Err(e) => return pool_error(&e),
    };
    // Sources must name trusted locations: the service has no repo to resolve paths in, so a
    // relative path must not climb out of the repo, and anything else must be allowed by the
    // operator (symlinks are checked again where the path is used).
    let problems = quiver_registry::trust::policy().check_registry(&desired, None);
    if !problems.is_empty() {
        let message = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let list: Vec<Json> = problems
            .iter()
            .map(|p| json!({"object": p.object, "field": p.field, "message": p.message}))
            .collect();
        return json_response(
            status_of(ErrorKind::BadRequest),
            &json!({"error": "UntrustedLocation", "message": message, "problems": list}),
        );
    }
    match service
        .apply(body.base_version, desired, now(), body.dry_run)
        .await
    {
        Ok(applied) => {
            let changes: Vec<Json> = applied
                .plan
                .changes
                .iter()
                .map(|c| {
                    json!({
                        "action": match c.action { Action::Create => "create", Action::Update => "update", Action::Delete => "delete" },
                        "kind": c.kind.label(),
                        "name": c.name,
                        "text": c.to_string(),
                    })
                })
                .collect();
            json_response(
                StatusCode::OK,
                &json!({
                    "project": project,
                    "version": applied.version,
                    "previous_version": applied.previous_version,
                    "dry_run": body.dry_run,
                    "changes": changes,
                    "kept": applied.plan.kept,
                }),
            )
        }
        Err(e @ ApplyError::Conflict { base, current }) => json_response(
            status_of(e.kind()),
            &json!({
                "error": "Conflict",
                "message": format!(
                    "project {project} is at version {current}, but this apply was based on version {base}: \
                     the registry changed since it was read; apply again to diff against version {current}"
                ),
                "base_version": base,
                "current_version": current,
            }),
        ),
        Err(ApplyError::Store(e)) => {
            tracing::warn!(error = %e, project, "apply failed");
            store_error(&e)
        }
    }
}

/// `GET /v1/projects/{p}/registry`: the project's objects as a Feast `Registry` protobuf, for
/// tools that need the whole definitions (`quiver materialize --registry-url` reads sources
/// and materialization intervals from it). The project's version is in `X-Quiver-Version`.
fn registry_proto(service: &Service, req: &Request<Incoming>, project: &str) -> Response<Body> {
    if let Some(resp) = check_token(service, req, false) {
        return resp;
    }
    if let Err(resp) = query_params(req.uri().query(), &[]) {
        return resp;
    }
    if let Err(resp) = check_project(project) {
        return resp;
    }
    let catalog = service.catalog();
    if !catalog.projects.iter().any(|p| p == project) {
        return unknown_project(project);
    }
    let objects = match catalog.file.project_objects(project) {
        Ok(o) => o,
        Err(e) => {
            return error(ErrorKind::UpstreamFailed, "StoreCorrupt", e.to_string());
        }
    };
    let mut file = RegistryFile::from_objects(
        objects
            .into_iter()
            .map(|(kind, _, bytes)| (kind, bytes.to_vec())),
    );
    let last_updated = catalog.file.last_updated().unwrap_or_else(now);
    let bytes = file.encode(catalog.file.version_id(), last_updated);
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    if let Ok(v) = HeaderValue::from_str(&catalog.version(project).to_string()) {
        headers.insert("x-quiver-version", v);
    }
    resp
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaterializationsBody {
    intervals: Vec<IntervalBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntervalBody {
    feature_view: String,
    start: String,
    end: String,
}

/// `POST /v1/projects/{p}/materializations` with `{"intervals": [{"feature_view", "start",
/// "end"}]}` (RFC 3339): appends each interval to its view's `materialization_intervals`, as
/// Feast's `apply_materialization` does, and bumps the project's version. All or nothing: an
/// unknown view, an interval that does not end after it starts, or one that ends in the future
/// (beyond [`FUTURE_END_TOLERANCE`] of clock skew) records none.
async fn materializations(
    service: &Arc<Service>,
    req: Request<Incoming>,
    project: &str,
) -> Response<Body> {
    const EXPECTED: &str = "expected {\"intervals\": [{\"feature_view\": NAME, \"start\": RFC3339, \"end\": RFC3339}]}";
    let body: MaterializationsBody = match write_request(service, req, project, EXPECTED).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if body.intervals.is_empty() {
        return error(
            ErrorKind::BadRequest,
            "BadBody",
            format!("intervals: empty: {EXPECTED}"),
        );
    }
    let now = now();
    let mut runs = Vec::with_capacity(body.intervals.len());
    for (i, interval) in body.intervals.iter().enumerate() {
        let parse = |field: &str, value: &str| {
            quiver_core::time::parse_datetime(value).ok_or_else(|| {
                error(
                    ErrorKind::BadRequest,
                    "BadBody",
                    format!(
                        "intervals[{i}].{field}: {value:?} is not a date-time: expected RFC 3339, e.g. 2026-01-01T00:00:00Z"
                    ),
                )
            })
        };
        let start = match parse("start", &interval.start) {
            Ok(t) => t,
            Err(resp) => return resp,
        };
        let end = match parse("end", &interval.end) {
            Ok(t) => t,
            Err(resp) => return resp,
        };
        if (end.seconds, end.nanos) <= (start.seconds, start.nanos) {
            return error(
                ErrorKind::BadRequest,
                "BadBody",
                format!(
                    "intervals[{i}].end: {} is not after intervals[{i}].start {}: an interval must end after it starts",
                    interval.end, interval.start
                ),
            );
        }
        let limit = now
            .seconds
            .saturating_add(FUTURE_END_TOLERANCE.as_secs() as i64);
        if (end.seconds, end.nanos) > (limit, now.nanos) {
            return error(
                ErrorKind::BadRequest,
                "BadBody",
                format!(
                    "intervals[{i}].end: {} is in the future (now {}; at most {}s of clock skew \
                     is allowed): a later materialize-incremental would start there and skip \
                     every row written until then",
                    interval.end,
                    quiver_core::time::format_rfc3339(&now),
                    FUTURE_END_TOLERANCE.as_secs()
                ),
            );
        }
        runs.push(MaterializedInterval {
            view: interval.feature_view.clone(),
            start,
            end,
        });
    }
    let count = runs.len();
    match service.record_materialization(project, runs, now).await {
        Ok(recorded) => json_response(
            StatusCode::OK,
            &json!({"project": project, "version": recorded.version, "recorded": count}),
        ),
        Err(RecordError::UnknownView(view)) => error(
            ErrorKind::NotFound,
            "UnknownFeatureView",
            format!("project {project} has no feature view {view}: nothing was recorded"),
        ),
        Err(RecordError::Store(e)) => {
            tracing::warn!(error = %e, project, "recording materialization failed");
            store_error(&e)
        }
    }
}

/// `DELETE /v1/projects/{p}/materializations/{view}`: removes every interval of the view, so
/// that a bad record (an end in the future written before this service refused them) can be
/// repaired; the next incremental run starts from the view's ttl. A write: the token guards it.
async fn clear_materializations(
    service: &Arc<Service>,
    req: &Request<Incoming>,
    project: &str,
    view: &str,
) -> Response<Body> {
    if let Some(resp) = check_token(service, req, true) {
        return resp;
    }
    if let Err(resp) = check_project(project) {
        return resp;
    }
    if let Err(resp) = query_params(req.uri().query(), &[]) {
        return resp;
    }
    let view = match percent_decode(view) {
        Ok(v) if !v.is_empty() => v,
        _ => {
            return error(
                ErrorKind::BadRequest,
                "BadPath",
                format!("view: {view:?} is not a feature view name"),
            );
        }
    };
    match service
        .clear_materializations(project, vec![view.clone()], now())
        .await
    {
        Ok(recorded) => json_response(
            StatusCode::OK,
            &json!({"project": project, "version": recorded.version, "cleared": view}),
        ),
        Err(RecordError::UnknownView(view)) => error(
            ErrorKind::NotFound,
            "UnknownFeatureView",
            format!("project {project} has no feature view {view}: nothing was cleared"),
        ),
        Err(RecordError::Store(e)) => {
            tracing::warn!(error = %e, project, "clearing materialization intervals failed");
            store_error(&e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_are_upstream_statuses_from_the_kind() {
        let down = store_error(&RegistryStoreError::Unavailable(
            "connection refused".into(),
        ));
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        let corrupt = store_error(&RegistryStoreError::Corrupt("bad bytes".into()));
        assert_eq!(corrupt.status(), StatusCode::BAD_GATEWAY);
        let conflict = ApplyError::Conflict {
            base: 1,
            current: 2,
        };
        assert_eq!(status_of(conflict.kind()), StatusCode::CONFLICT);
        let missing = RecordError::UnknownView("v".into());
        assert_eq!(status_of(missing.kind()), StatusCode::NOT_FOUND);
    }

    #[test]
    fn waits_and_escapes() {
        assert_eq!(parse_wait("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_wait("5"), Ok(Duration::from_secs(5)));
        assert!(parse_wait("soon").unwrap_err().starts_with("wait:"));
        assert_eq!(percent_decode("a%2Cb+c").unwrap(), "a,b c");
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%ff").is_err());
    }

    /// Query-string decoding on random input (the stable-Rust stand-in for a cargo-fuzz target:
    /// this crate's fuzz build would drag in Postgres and the object store clients). Never a
    /// panic; a value %-encoded byte by byte decodes back to itself; time linear in the input.
    #[test]
    fn random_query_strings_decode_or_fail_cleanly() {
        const ALPHABET: &[&str] = &[
            "%",
            "%2",
            "%2C",
            "%e2%82%ac",
            "%ff",
            "%zz",
            "+",
            "&",
            "=",
            "a",
            "wait",
            "30s",
            "é",
            "€",
            "\u{0}",
            " ",
            "%%",
            "==",
            "&&",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let start = Instant::now();
        let mut runs = 0u64;
        while start.elapsed() < Duration::from_secs(2) && runs < 200_000 {
            let len = (next() % 24) as usize;
            let q: String = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            let _ = query_params(Some(&q), &["wait", "a", "feature_services"]);
            let _ = percent_decode(&q);
            let encoded: String = q.bytes().map(|b| format!("%{b:02X}")).collect();
            assert_eq!(percent_decode(&encoded).as_deref(), Ok(q.as_str()), "{q:?}");
            runs += 1;
        }
        // The worst case is linear: a 16 KiB query of escapes decodes at once.
        let long = "%2C".repeat(16 << 10);
        let t = Instant::now();
        assert_eq!(percent_decode(&long).map(|s| s.len()), Ok(16 << 10));
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(runs > 1000, "{runs}");
    }
}

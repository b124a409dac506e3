//! KServe enrichment (`quiver serve --enrich FILE --upstream URL`): the sidecar stands in front
//! of the model server, adds each request's features, and forwards it.
//!
//! ```text
//! POST /v1/models/{m}:predict|:explain   {"instances": [{"driver_id": 1001, ...}, ...]}
//! POST /v2/models/{m}[/versions/{v}]/infer   {"inputs": [{"name": "driver_id", ...}, ...]}
//!   ─▶ config::ModelConfig (unknown model: 404) ─▶ body (limit) ─▶ v1 | v2: entity columns
//!   ─▶ the engine, in process (cache → online store; the code of /get-online-features)
//!      rendered as typed columns (render::typed) ─▶ missing / stale policy (fill or 422)
//!   ─▶ v1: {"instances": [[features...], ...]} | v2: a tensor per feature, or one stacked
//!   ─▶ upstream (pooled client, deadline, answer limit) ─▶ the answer unchanged
//! GET /v2, /v2/health/*, /v2/models/{m}[/ready], /v1/models[/{m}] ─▶ passed through
//!
//! gRPC port (--grpc-port): inference.GRPCInferenceService/ModelInfer ─▶ the same V2 core
//!   ─▶ the model server's gRPC port (--upstream-grpc) ─▶ its answer unchanged
//! the other calls (ServerLive, ModelMetadata, ...) ─▶ passed through as bytes
//! ```
//!
//! Metrics per configured model (series made at start): requests by protocol (v1, v2 over
//! REST, grpc for V2 over gRPC) and status class (a gRPC status counts as the class of the HTTP
//! status it stands for: OK 2xx, the caller's codes 4xx, the rest 5xx),
//! rows enriched, missing and stale features, the latency the sidecar adds (everything but the
//! model server's time) and the model server's.

pub mod config;
pub mod grpc;
pub mod upstream;
mod v1;
mod v2;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use quiver_core::Value;
use quiver_core::fault::ErrorKind;
use serde_json::Value as Json;

use crate::State;
use crate::api::{EntityColumns, OnlineRequest, Status};
use crate::engine::Prepared;
use crate::error::ApiError;
use crate::metrics::{Counter, Histogram};
use crate::render::typed::{FeatureTable, Typed};
pub use config::{ConfigError, ConfigErrors, EnrichConfig, ModelConfig, Policy, V2Layout};
pub use grpc::GrpcUpstream;
pub use upstream::{Upstream, UpstreamConfig};

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("config", &self.config)
            .field("upstream", &self.upstream.config)
            .field("grpc_upstream", &self.grpc.as_ref().map(|g| &g.config))
            .finish()
    }
}

/// The enrichment of a running sidecar: the checked config, the model server's clients (REST,
/// and gRPC when the sidecar has a gRPC port), the metric series of each model.
pub struct Enricher {
    pub config: EnrichConfig,
    pub upstream: Upstream,
    /// The model server's gRPC port, for the sidecar's (`--upstream-grpc`).
    pub grpc: Option<GrpcUpstream>,
    metrics: Vec<ModelMetrics>,
}

#[derive(Default)]
struct ModelMetrics {
    /// `model="name"`, rendered once.
    label: String,
    /// By protocol (v1, v2, grpc) and status class (2xx, 4xx, 5xx).
    requests: [[Counter; 3]; 3],
    rows: Counter,
    missing: Counter,
    stale: Counter,
    added: Histogram,
    upstream: Histogram,
}

/// The request protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    V1 = 0,
    V2 = 1,
    /// V2 over gRPC: V2's messages, its own metric series.
    Grpc = 2,
}

impl Enricher {
    pub fn new(config: EnrichConfig, upstream: UpstreamConfig) -> Enricher {
        let metrics = config
            .models
            .iter()
            .map(|m| ModelMetrics {
                label: format!("model=\"{}\"", m.name),
                ..ModelMetrics::default()
            })
            .collect();
        Enricher {
            config,
            upstream: Upstream::new(upstream),
            grpc: None,
            metrics,
        }
    }

    /// Forward the sidecar's gRPC port to the model server's, at `upstream`.
    pub fn with_grpc(mut self, upstream: UpstreamConfig) -> Enricher {
        self.grpc = Some(GrpcUpstream::new(upstream));
        self
    }

    /// The model's config and metrics; a model not in the config is a 404 / NOT_FOUND.
    fn model(&self, name: &str) -> Result<(&ModelConfig, &ModelMetrics), ApiError> {
        match self
            .config
            .models
            .binary_search_by(|m| m.name.as_str().cmp(name))
        {
            Ok(i) => Ok((&self.config.models[i], &self.metrics[i])),
            Err(_) => {
                let known: Vec<&str> = self.config.models.iter().map(|m| m.name.as_str()).collect();
                Err(ApiError::not_found(
                    "ModelNotEnriched",
                    format!(
                        "model {name:?} is not in the enrich config (its models: {})",
                        known.join(", ")
                    ),
                ))
            }
        }
    }

    /// Appends the enrichment's series to `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        out.push_str("# HELP quiver_enrich_requests_total KServe requests enriched, by model, protocol and status class.\n# TYPE quiver_enrich_requests_total counter\n");
        for m in &self.metrics {
            for (p, protocol) in ["v1", "v2", "grpc"].iter().enumerate() {
                for (c, class) in ["2xx", "4xx", "5xx"].iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "quiver_enrich_requests_total{{{},protocol=\"{protocol}\",status=\"{class}\"}} {}",
                        m.label,
                        m.requests[p][c].get()
                    );
                }
            }
        }
        for (name, help, pick) in [
            (
                "quiver_enrich_rows_total",
                "Instances (V1) or tensor rows (V2) enriched with features.",
                (|m: &ModelMetrics| &m.rows) as fn(&ModelMetrics) -> &Counter,
            ),
            (
                "quiver_enrich_missing_features_total",
                "Feature values missing (NOT_FOUND, null, INVALID): filled or rejected as configured.",
                |m| &m.missing,
            ),
            (
                "quiver_enrich_stale_features_total",
                "Feature values older than their view's ttl (OUTSIDE_MAX_AGE): served, filled or rejected as configured.",
                |m| &m.stale,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for m in &self.metrics {
                let _ = writeln!(out, "{name}{{{}}} {}", m.label, pick(m).get());
            }
        }
        out.push_str("# HELP quiver_enrich_added_seconds Latency the sidecar adds to a KServe request (all but the model server's time).\n# TYPE quiver_enrich_added_seconds histogram\n");
        for m in &self.metrics {
            m.added
                .render_to(out, "quiver_enrich_added_seconds", &m.label);
        }
        out.push_str("# HELP quiver_enrich_upstream_seconds The model server's time for an enriched request.\n# TYPE quiver_enrich_upstream_seconds histogram\n");
        for m in &self.metrics {
            m.upstream
                .render_to(out, "quiver_enrich_upstream_seconds", &m.label);
        }
    }
}

/// What a KServe path asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// `POST /v1/models/{model}:predict` or `:explain`.
    V1(String),
    /// `POST /v2/models/{model}[/versions/{v}]/infer`.
    V2(String),
    /// A read (health, metadata, readiness) passed to the model server as it is.
    Pass,
}

/// The KServe route of a request, `None` when the path is not KServe's.
pub(crate) fn route(method: &Method, path: &str) -> Option<Result<Route, ApiError>> {
    let kserve = path == "/v2" || path.starts_with("/v2/") || path.starts_with("/v1/models");
    if !kserve {
        return None;
    }
    if let Some(rest) = path.strip_prefix("/v1/models/")
        && let Some((model, verb)) = rest.rsplit_once(':')
        && matches!(verb, "predict" | "explain")
        && !model.contains('/')
    {
        return Some(post_only(method, path, Route::V1(model.to_owned())));
    }
    if let Some(rest) = path.strip_prefix("/v2/models/")
        && let Some(rest) = rest.strip_suffix("/infer")
    {
        let model = match rest.split_once("/versions/") {
            Some((model, version)) if !version.is_empty() && !version.contains('/') => model,
            _ => rest,
        };
        if !model.contains('/') {
            return Some(post_only(method, path, Route::V2(model.to_owned())));
        }
    }
    if matches!(*method, Method::GET | Method::HEAD) {
        return Some(Ok(Route::Pass));
    }
    Some(Err(ApiError::not_found(
        "NotFound",
        format!(
            "{method} {path}: the sidecar enriches POST /v1/models/NAME:predict, :explain and /v2/models/NAME/infer, and passes GET requests through"
        ),
    )))
}

fn post_only(method: &Method, path: &str, r: Route) -> Result<Route, ApiError> {
    if *method == Method::POST {
        Ok(r)
    } else {
        Err(ApiError::method_not_allowed(method, path))
    }
}

/// Serves one KServe request: `route` is what [`route`] made of its path.
pub(crate) async fn serve(
    state: &Arc<State>,
    enricher: &Enricher,
    route: Route,
    req: Request<Incoming>,
    body_timeout: Duration,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let (model, protocol) = match route {
        Route::Pass => {
            let (parts, _) = req.into_parts();
            return match enricher
                .upstream
                .call(
                    parts.method,
                    &path_and_query,
                    &parts.headers,
                    None,
                    Bytes::new(),
                )
                .await
            {
                Ok(answer) => upstream::respond(answer),
                Err(e) => error(&e),
            };
        }
        Route::V1(m) => (m, Protocol::V1),
        Route::V2(m) => (m, Protocol::V2),
    };
    let (config, metrics) = match enricher.model(&model) {
        Ok(m) => m,
        Err(e) => {
            quiver_http::discard_body(req, body_timeout);
            return error(&e);
        }
    };
    let mut upstream_time = Duration::ZERO;
    let resp = match enrich(
        state,
        enricher,
        config,
        metrics,
        protocol,
        req,
        body_timeout,
        &path_and_query,
        &mut upstream_time,
    )
    .await
    {
        Ok(resp) => resp,
        Err(e) => error(&e),
    };
    metrics.record(protocol, resp.status().as_u16(), started, upstream_time);
    resp
}

impl ModelMetrics {
    /// One request done: its protocol, (HTTP) status, start, and the model server's share.
    fn record(&self, protocol: Protocol, status: u16, started: Instant, upstream_time: Duration) {
        let class = match status {
            200..=399 => 0,
            400..=499 => 1,
            _ => 2,
        };
        self.requests[protocol as usize][class].inc();
        self.added
            .observe(started.elapsed().saturating_sub(upstream_time));
        if !upstream_time.is_zero() {
            self.upstream.observe(upstream_time);
        }
    }
}

fn error(e: &ApiError) -> Response<Full<Bytes>> {
    match e.kind.severity() {
        quiver_core::fault::Severity::Debug => tracing::debug!(error = %e, "enrich request failed"),
        quiver_core::fault::Severity::Warn => tracing::warn!(error = %e, "enrich request failed"),
        quiver_core::fault::Severity::Error => tracing::error!(error = %e, "enrich request failed"),
    }
    let mut resp = Response::new(Full::new(Bytes::from(e.to_body())));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(e.status()).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

#[allow(clippy::too_many_arguments)]
async fn enrich(
    state: &Arc<State>,
    enricher: &Enricher,
    config: &ModelConfig,
    metrics: &ModelMetrics,
    protocol: Protocol,
    req: Request<Incoming>,
    body_timeout: Duration,
    path_and_query: &str,
    upstream_time: &mut Duration,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if protocol == Protocol::V2
        && req
            .headers()
            .contains_key("inference-header-content-length")
    {
        quiver_http::discard_body(req, body_timeout);
        return Err(ApiError::new(
            ErrorKind::Unprocessable,
            "BinaryTensorsUnsupported",
            "the binary tensor extension (Inference-Header-Content-Length) is not supported: send tensors as JSON data",
        ));
    }
    let headers = req.headers().clone();
    let body = quiver_http::read_body(req, state.config.max_body_bytes, body_timeout)
        .await
        .map_err(|e| {
            let class = match e {
                quiver_http::BodyError::TooLarge { .. } => "RequestTooLarge",
                quiver_http::BodyError::Timeout(_) => "RequestTimeout",
                quiver_http::BodyError::Read(_) => "BadBody",
            };
            ApiError::new(
                quiver_core::fault::Classified::kind(&e),
                class,
                e.to_string(),
            )
        })?;
    let forward = match protocol {
        Protocol::V1 => {
            let request = v1::parse(&body, config)?;
            let out = features(
                state,
                config,
                metrics,
                protocol,
                request.columns(),
                &request.inputs(),
                request.rows(),
            )
            .await?;
            request.forward(&out)
        }
        Protocol::V2 | Protocol::Grpc => {
            let request = v2::parse(&body, config)?;
            let out = features(
                state,
                config,
                metrics,
                protocol,
                request.columns(),
                &request.inputs(),
                request.rows,
            )
            .await?;
            request.forward(config, &out)?
        }
    };
    let sent = Instant::now();
    let answer = enricher
        .upstream
        .call(
            Method::POST,
            path_and_query,
            &headers,
            Some("application/json"),
            Bytes::from(forward),
        )
        .await;
    *upstream_time = sent.elapsed();
    Ok(upstream::respond(answer?))
}

/// The output columns of one request: the features of `columns` (its entity and request
/// inputs) looked up, the missing and stale policies applied, ordered as configured; one
/// registry version from start to end. Every protocol's requests come through here.
async fn features<'a>(
    state: &Arc<State>,
    config: &ModelConfig,
    metrics: &ModelMetrics,
    protocol: Protocol,
    columns: Vec<(String, Vec<Json>)>,
    inputs: &[InputColumn<'a>],
    rows: usize,
) -> Result<Vec<OutColumn<'a>>, ApiError> {
    let registry = state.registry.load_full();
    let plan = config.plan(&registry).map_err(|e| {
        // Registries that do not fit the config are not swapped in (State::install_registry),
        // so this is a bug if it happens.
        ApiError::new(
            ErrorKind::Internal,
            "EnrichConfigStale",
            format!(
                "model {}: feature service {}: {}",
                config.name, config.feature_service, e.message
            ),
        )
    })?;
    let features = lookup(state, &registry, config, columns, protocol).await?;
    let out = resolve(config, metrics, features, &plan, inputs, protocol)?;
    metrics.rows.add(rows as u64);
    Ok(out)
}

/// The features of `columns` (entity and request inputs), through the engine in process.
async fn lookup(
    state: &Arc<State>,
    registry: &Arc<crate::registry::ServingRegistry>,
    config: &ModelConfig,
    columns: Vec<(String, Vec<Json>)>,
    protocol: Protocol,
) -> Result<FeatureTable, ApiError> {
    let request = OnlineRequest {
        features: None,
        feature_service: Some(config.feature_service.clone()),
        entities: EntityColumns::from(columns),
        full_feature_names: config.full_feature_names,
    };
    let answer = match state.engine.prepare(registry, request, Typed) {
        Ok(Prepared::Answered(table)) => Ok(table),
        Ok(Prepared::Pending(pending)) => state.engine.finish(registry, *pending).await,
        Err(e) => Err(e),
    };
    answer.map_err(|e| relabel(e, protocol))
}

/// Turns the engine's `entities.NAME[i]: ...` into where the caller put that value.
fn relabel(mut e: ApiError, protocol: Protocol) -> ApiError {
    if let Some(rest) = e.message.strip_prefix("entities.")
        && let Some((name, rest)) = rest.split_once('[')
        && let Some((row, rest)) = rest.split_once("]: ")
    {
        e.message = match protocol {
            Protocol::V1 => format!("instances[{row}].{name}: {rest}"),
            Protocol::V2 | Protocol::Grpc => format!("inputs[name={name}].data[{row}]: {rest}"),
        };
    }
    e
}

/// The request's inputs as output columns can use them: name, type, values.
pub(crate) struct InputColumn<'a> {
    pub name: &'a str,
    pub values: &'a [Json],
}

/// One output column: a feature (typed, missing values filled) or a request input.
pub(crate) enum OutColumn<'a> {
    Feature {
        name: String,
        dtype: quiver_core::ValueType,
        values: Vec<Value>,
    },
    Input {
        name: String,
        dtype: quiver_core::ValueType,
        values: &'a [Json],
    },
}

impl OutColumn<'_> {
    pub fn name(&self) -> &str {
        match self {
            OutColumn::Feature { name, .. } | OutColumn::Input { name, .. } => name,
        }
    }
    pub fn dtype(&self) -> quiver_core::ValueType {
        match self {
            OutColumn::Feature { dtype, .. } | OutColumn::Input { dtype, .. } => *dtype,
        }
    }
}

/// Applies the model's missing and stale policies to `features` and orders the output columns.
fn resolve<'a>(
    config: &ModelConfig,
    metrics: &ModelMetrics,
    features: FeatureTable,
    plan: &crate::registry::Plan,
    inputs: &[InputColumn<'a>],
    protocol: Protocol,
) -> Result<Vec<OutColumn<'a>>, ApiError> {
    let mut missing = 0u64;
    let mut stale = 0u64;
    let mut columns: Vec<Option<OutColumn<'a>>> = Vec::with_capacity(features.columns.len());
    for col in features.columns {
        let mut values = col.values;
        for (r, (value, status)) in values.iter_mut().zip(&col.statuses).enumerate() {
            let policy = match status {
                Status::Present if !value.is_null() => continue,
                Status::OutsideMaxAge if !value.is_null() => {
                    stale += 1;
                    &config.stale
                }
                _ => {
                    missing += 1;
                    &config.missing
                }
            };
            match policy.for_feature(&col.name) {
                Some(None) => {}
                Some(Some(fill)) => {
                    *value = quiver_core::json::parse_value(fill, col.dtype).map_err(|e| {
                        ApiError::internal(
                            "EnrichConfigStale",
                            format!(
                                "model {}: the fill {fill} does not fit {} any more: {e}",
                                config.name, col.name
                            ),
                        )
                    })?;
                }
                None => {
                    metrics.missing.add(missing);
                    metrics.stale.add(stale);
                    let what = if *status == Status::OutsideMaxAge {
                        "is older than its view's ttl (OUTSIDE_MAX_AGE), and the model's stale policy rejects it"
                    } else {
                        "has no value (NOT_FOUND, null or INVALID), and the model's missing policy rejects it"
                    };
                    return Err(ApiError::unprocessable(
                        if *status == Status::OutsideMaxAge {
                            "StaleFeature"
                        } else {
                            "MissingFeature"
                        },
                        format!(
                            "{}: feature {} {what}",
                            describe_row(protocol, inputs, r),
                            col.name
                        ),
                    ));
                }
            }
        }
        columns.push(Some(OutColumn::Feature {
            name: col.name,
            dtype: col.dtype,
            values,
        }));
    }
    metrics.missing.add(missing);
    metrics.stale.add(stale);
    if config.order.is_empty() {
        return Ok(columns.into_iter().flatten().collect());
    }
    let mut out = Vec::with_capacity(config.order.len());
    for name in &config.order {
        if let Some(c) = columns
            .iter_mut()
            .find(|c| c.as_ref().is_some_and(|c| c.name() == name))
            .and_then(Option::take)
        {
            out.push(c);
            continue;
        }
        let dtype = plan
            .entity_columns
            .iter()
            .chain(&plan.request_fields)
            .find(|(k, _)| k == name)
            .map(|(_, t)| *t);
        match (inputs.iter().find(|i| i.name == name), dtype) {
            (Some(input), Some(dtype)) => out.push(OutColumn::Input {
                name: name.clone(),
                dtype,
                values: input.values,
            }),
            _ => {
                return Err(ApiError::internal(
                    "EnrichConfigStale",
                    format!(
                        "model {}: order names {name:?}, which the feature service {} no longer has",
                        config.name, config.feature_service
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// `instances[3] (driver_id=1001, customer_id="c9")`: a row, by where it is and its ids.
fn describe_row(protocol: Protocol, inputs: &[InputColumn<'_>], r: usize) -> String {
    let mut out = match protocol {
        Protocol::V1 => format!("instances[{r}] ("),
        Protocol::V2 | Protocol::Grpc => format!("row {r} ("),
    };
    for (i, input) in inputs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(
            out,
            "{}={}",
            input.name,
            input.values.get(r).unwrap_or(&Json::Null)
        );
    }
    out.push(')');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kserve_paths_route_to_enrichment_or_pass_through() {
        let post = Method::POST;
        let get = Method::GET;
        let r = |m: &Method, p: &str| route(m, p).map(|r| r.map_err(|e| e.status()));
        assert_eq!(
            r(&post, "/v1/models/m-1:predict"),
            Some(Ok(Route::V1("m-1".into())))
        );
        assert_eq!(
            r(&post, "/v1/models/m:explain"),
            Some(Ok(Route::V1("m".into())))
        );
        assert_eq!(
            r(&post, "/v2/models/m/infer"),
            Some(Ok(Route::V2("m".into())))
        );
        assert_eq!(
            r(&post, "/v2/models/m/versions/3/infer"),
            Some(Ok(Route::V2("m".into())))
        );
        assert_eq!(r(&get, "/v1/models/m:predict"), Some(Err(405)));
        for p in [
            "/v2",
            "/v2/health/live",
            "/v2/health/ready",
            "/v2/models/m",
            "/v2/models/m/ready",
            "/v1/models/m",
            "/v1/models",
        ] {
            assert_eq!(r(&get, p), Some(Ok(Route::Pass)), "{p}");
        }
        assert_eq!(r(&post, "/v2/repository/index"), Some(Err(404)));
        assert_eq!(r(&post, "/get-online-features"), None);
        assert_eq!(r(&get, "/health"), None);
    }

    #[test]
    fn engine_messages_name_the_request_field() {
        let e = ApiError::bad_request("X", "entities.driver_id[3]: expected an integer");
        assert_eq!(
            relabel(e.clone(), Protocol::V1).message,
            "instances[3].driver_id: expected an integer"
        );
        assert_eq!(
            relabel(e, Protocol::V2).message,
            "inputs[name=driver_id].data[3]: expected an integer"
        );
    }
}

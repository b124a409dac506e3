//! Requests that need an on-demand feature view: the source features through the engine, the
//! transformation through Feast's transformation service, the answer in Feast's shape.
//!
//! ```text
//! 1. resolve      output columns (base features and on-demand outputs, in request order), the
//!                 source features each on-demand view reads, the request fields it needs
//! 2. request data the request-source fields taken out of `entities`, checked against their
//!                 declared types (400 naming the field); they are not echoed
//! 3. engine       one ordinary request for the base and source features (full names), through
//!                 the cache like any other
//! 4. transform    per on-demand view: its inputs as an Arrow IPC file (`view__feature` columns,
//!                 join keys, request fields) → TransformFeatures → `odfv__feature` columns
//! 5. render       Feast's JSON: entity columns, then each output; on-demand outputs PRESENT
//!                 with the epoch as event time, as Feast's server answers them
//! ```
//!
//! The transformation costs a round trip to Python, so this path parses and re-renders the
//! engine's JSON instead of joining the engine's zero-copy renderer; values are copied as the
//! engine rendered them (raw JSON), never re-formatted.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use quiver_core::fault::ErrorKind;
use quiver_core::on_demand::{OnDemandView, input_column, sent_to_transformation};
use quiver_core::{Value, ValueType, json};
use quiver_transform::{TransformClient, TransformError, column_values};
use serde::Deserialize;
use serde_json::Value as Json;

use crate::api::{EntityColumns, OnlineRequest, Status};
use crate::engine::request;
use crate::error::ApiError;
use crate::metrics::{Metrics, TransformOutcome, TransformPhase};
use crate::registry::ServingRegistry;
use crate::render::Format;
use crate::state::State;

const EPOCH_TS: &str = "\"1970-01-01T00:00:00Z\"";

/// The answer for an on-demand view asked for when no transformation service is configured.
pub(crate) fn not_served(view: &str) -> ApiError {
    ApiError::bad_request(
        "OnDemandFeatureViewNotSupported",
        format!(
            "{view} is an on-demand feature view, computed by Feast's transformation service: start `feast serve_transformations` in the feature repo and quiver serve with --transformation-service HOST:PORT"
        ),
    )
}

/// At start without a transformation service: which feature services will be refused.
pub(crate) fn warn_unserved(reg: &ServingRegistry) {
    if reg.on_demand.is_empty() {
        return;
    }
    let mut views: Vec<&str> = reg.on_demand.keys().map(String::as_str).collect();
    views.sort_unstable();
    let services = reg.on_demand_services();
    tracing::warn!(
        on_demand_views = %views.join(", "),
        refused_feature_services = %services.join(", "),
        "no --transformation-service: requests for these on-demand views and feature services will be refused (400); run `feast serve_transformations` in the feature repo and pass --transformation-service HOST:PORT"
    );
}

fn from_transform(e: &TransformError) -> ApiError {
    let class = match e {
        TransformError::Timeout { .. } => "TransformationServiceTimeout",
        TransformError::Unreachable { .. } => "TransformationServiceUnavailable",
        TransformError::Failed { .. } | TransformError::BadAnswer { .. } => {
            "TransformationServiceFailed"
        }
        TransformError::Input { .. } => "TransformationInput",
    };
    ApiError::new(
        quiver_core::fault::Classified::kind(e),
        class,
        e.to_string(),
    )
}

/// One output column of the answer.
enum Out {
    /// A feature the engine reads, by its full name in the engine's answer (`view__feature`),
    /// with its type (for an Arrow answer).
    Base {
        engine_name: String,
        dtype: ValueType,
    },
    /// Output `feature` of the on-demand view `call`.
    OnDemand { call: usize, feature: usize },
}

/// One on-demand view to compute.
struct Call {
    view: Arc<OnDemandView>,
    /// (input column name, engine column name, type) of each source feature sent.
    inputs: Vec<(String, String, ValueType)>,
}

/// What a request resolves to.
struct Resolved {
    /// (output name, column).
    columns: Vec<(String, Out)>,
    calls: Vec<Call>,
    /// `view:feature` refs for the engine, without repeats.
    engine_refs: Vec<String>,
}

impl Resolved {
    fn engine_ref(&mut self, view: &str, feature: &str) -> String {
        let r = format!("{view}:{feature}");
        if !self.engine_refs.contains(&r) {
            self.engine_refs.push(r);
        }
        format!("{view}__{feature}")
    }

    fn call(&mut self, reg: &ServingRegistry, view: &Arc<OnDemandView>) -> Result<usize, ApiError> {
        if let Some(i) = self.calls.iter().position(|c| c.view.name == view.name) {
            return Ok(i);
        }
        if !view.transformation.runs_on_transformation_service() {
            return Err(ApiError::new(
                ErrorKind::NotImplemented,
                "OnDemandFeatureViewModeNotSupported",
                format!(
                    "on-demand feature view {} has mode {:?}; Feast's transformation service runs mode \"pandas\" only",
                    view.name,
                    view.transformation.mode()
                ),
            ));
        }
        let mut inputs = Vec::new();
        for p in view.view_sources() {
            let v = reg.servable(&p.view)?;
            for f in &p.features {
                reg.feature_index(v, &f.name)?;
                if sent_to_transformation(f.dtype) {
                    let engine_name = self.engine_ref(&p.view, &f.name);
                    inputs.push((input_column(p, &f.name), engine_name, f.dtype));
                }
            }
        }
        self.calls.push(Call {
            view: Arc::clone(view),
            inputs,
        });
        Ok(self.calls.len() - 1)
    }

    fn on_demand_column(
        &mut self,
        reg: &ServingRegistry,
        view: &Arc<OnDemandView>,
        prefix: &str,
        feature: &str,
        full_names: bool,
    ) -> Result<(), ApiError> {
        let f = view
            .features
            .iter()
            .position(|f| f.name == feature)
            .ok_or_else(|| {
                ApiError::not_found(
                    "FeatureNotFoundException",
                    format!(
                        "Feature {feature} does not exist in on-demand feature view {}",
                        view.name
                    ),
                )
            })?;
        let call = self.call(reg, view)?;
        self.columns.push((
            out_name(prefix, feature, full_names),
            Out::OnDemand { call, feature: f },
        ));
        Ok(())
    }
}

fn out_name(prefix: &str, feature: &str, full_names: bool) -> String {
    if full_names {
        format!("{prefix}__{feature}")
    } else {
        feature.to_owned()
    }
}

fn resolve(
    reg: &ServingRegistry,
    features: Option<Vec<String>>,
    service: Option<String>,
    full_names: bool,
) -> Result<Resolved, ApiError> {
    let mut r = Resolved {
        columns: Vec::new(),
        calls: Vec::new(),
        engine_refs: Vec::new(),
    };
    match (service, features) {
        (Some(name), _) => {
            let service = reg.service(&name).ok_or_else(|| {
                ApiError::not_found(
                    "FeatureServiceNotFoundException",
                    format!(
                        "Feature service {name} does not exist in project {}",
                        reg.project
                    ),
                )
            })?;
            for p in &service.projections {
                if let Some(view) = reg.on_demand.get(&p.view) {
                    for f in &p.features {
                        r.on_demand_column(reg, view, p.name_to_use(), &f.name, full_names)?;
                    }
                    continue;
                }
                if p.alias.is_some() || !p.join_key_map.is_empty() {
                    return Err(ApiError::new(
                        ErrorKind::NotImplemented,
                        "ProjectionNotSupported",
                        format!(
                            "feature service {name} projects {} with an alias or a join key map next to an on-demand view; quiver serves such projections only without on-demand views",
                            p.view
                        ),
                    ));
                }
                let v = reg.servable(&p.view)?;
                for f in &p.features {
                    let dtype = reg.views[v].features[reg.feature_index(v, &f.name)?].1;
                    let engine_name = r.engine_ref(&p.view, &f.name);
                    r.columns.push((
                        out_name(&p.view, &f.name, full_names),
                        Out::Base { engine_name, dtype },
                    ));
                }
            }
        }
        (None, Some(refs)) => {
            for reference in refs {
                let (view, feature) = reference.split_once(':').ok_or_else(|| {
                    ApiError::bad_request(
                        "InvalidFeatureReference",
                        format!(
                            "{reference:?} is not a feature reference: expected \"view:feature\""
                        ),
                    )
                })?;
                if let Some(odfv) = reg.on_demand.get(view) {
                    r.on_demand_column(reg, odfv, view, feature, full_names)?;
                } else {
                    let v = reg.servable(view)?;
                    let dtype = reg.views[v].features[reg.feature_index(v, feature)?].1;
                    let engine_name = r.engine_ref(view, feature);
                    r.columns.push((
                        out_name(view, feature, full_names),
                        Out::Base { engine_name, dtype },
                    ));
                }
            }
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "MissingFeatures",
                "the request names no features: give features: [\"view:feature\", ...] or feature_service",
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (name, _) in &r.columns {
        if !seen.insert(name.as_str()) {
            return Err(ApiError::bad_request(
                "FeatureNameCollisionError",
                format!(
                    "feature name {name} is requested twice; set full_feature_names to true to tell them apart"
                ),
            ));
        }
    }
    Ok(r)
}

/// The request-source fields the calls need, taken out of the entity columns and typed.
fn request_data(
    calls: &[Call],
    columns: &mut Vec<(String, Vec<Json>)>,
) -> Result<HashMap<String, (ValueType, Vec<Value>)>, ApiError> {
    let mut wanted: Vec<(&str, ValueType, &str)> = Vec::new();
    for c in calls {
        for (_, field) in c.view.request_fields() {
            if !wanted.iter().any(|(n, _, _)| *n == field.name) {
                wanted.push((&field.name, field.dtype, &c.view.name));
            }
        }
    }
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(n, _, _)| !columns.iter().any(|(c, _)| c == n))
        .map(|(n, _, _)| *n)
        .collect();
    if !missing.is_empty() {
        let views: Vec<&str> = calls.iter().map(|c| c.view.name.as_str()).collect();
        return Err(ApiError::bad_request(
            "RequestDataNotFoundInEntityRowsException",
            format!(
                "request data {} missing from entities: on-demand feature view {} reads it; send it as entities.{}: [...]",
                missing.join(", "),
                views.join(", "),
                missing[0]
            ),
        ));
    }
    let mut out = HashMap::new();
    for (name, ty, view) in wanted {
        let Some(i) = columns.iter().position(|(c, _)| c == name) else {
            continue;
        };
        let (_, values) = columns.remove(i);
        let typed = values
            .iter()
            .enumerate()
            .map(|(r, v)| {
                json::parse_value(v, ty).map_err(|e| {
                    ApiError::bad_request(
                        "InvalidRequestData",
                        format!(
                            "entities.{name}[{r}]: {e} (request data of on-demand feature view {view}, declared {ty})"
                        ),
                    )
                })
            })
            .collect::<Result<Vec<Value>, ApiError>>()?;
        out.insert(name.to_owned(), (ty, typed));
    }
    Ok(out)
}

/// The engine's answer, parsed (and re-rendered with [`write_json`], which prints numbers as
/// the engine did).
#[derive(Deserialize)]
struct EngineAnswer {
    metadata: EngineMeta,
    results: Vec<EngineColumn>,
}

#[derive(Deserialize)]
struct EngineMeta {
    feature_names: Vec<String>,
}

#[derive(Deserialize)]
struct EngineColumn {
    values: Vec<Json>,
    statuses: Vec<Json>,
    event_timestamps: Vec<Json>,
}

/// Answers a request that reads on-demand views (see the module comment).
pub(crate) async fn serve(
    state: &State,
    reg: &Arc<ServingRegistry>,
    req: OnlineRequest,
    format: Format,
) -> Result<Vec<u8>, ApiError> {
    let OnlineRequest {
        features,
        feature_service,
        entities,
        full_feature_names,
    } = req;
    // 1. What to compute, before anything is read.
    let resolved = resolve(reg, features, feature_service, full_feature_names)?;
    let Some(client) = &state.transform else {
        let view = resolved
            .calls
            .first()
            .map_or("on-demand view", |c| c.view.name.as_str());
        return Err(not_served(view));
    };
    // 2. Request data out of the entity columns (so it is not echoed), typed.
    let mut columns = entities.0;
    let rows = request::entity_rows(&columns, state.config.engine.max_entity_rows)?;
    let request_data = request_data(&resolved.calls, &mut columns)?;
    // 3. Base and source features through the engine.
    let engine_json = if resolved.engine_refs.is_empty() {
        None
    } else {
        let inner = OnlineRequest {
            features: Some(resolved.engine_refs.clone()),
            feature_service: None,
            entities: EntityColumns::from(columns.clone()),
            full_feature_names: true,
        };
        Some(
            state
                .engine
                .get_online_features(reg, inner, Format::Json)
                .await?,
        )
    };
    let engine: Option<EngineAnswer> = match &engine_json {
        Some(bytes) => Some(serde_json::from_slice(bytes).map_err(|e| {
            ApiError::internal("EngineAnswer", format!("engine answer does not parse: {e}"))
        })?),
        None => None,
    };
    let engine_column = |name: &str| -> Result<&EngineColumn, ApiError> {
        let e = engine
            .as_ref()
            .ok_or_else(|| ApiError::internal("EngineAnswer", "no engine answer".to_owned()))?;
        e.metadata
            .feature_names
            .iter()
            .position(|n| n == name)
            .and_then(|i| e.results.get(i))
            .ok_or_else(|| ApiError::internal("EngineAnswer", format!("no column {name}")))
    };
    // 4. Each on-demand view through the transformation service.
    let mut outputs: Vec<Vec<Vec<Value>>> = Vec::with_capacity(resolved.calls.len());
    for call in &resolved.calls {
        let mut arrays: Vec<(String, ArrayRef)> = Vec::new();
        for (input, engine_name, ty) in &call.inputs {
            let typed: Vec<Value> = engine_column(engine_name)?
                .values
                .iter()
                .map(|v| json::parse_value(v, *ty).unwrap_or(Value::Null))
                .collect();
            arrays.push((
                input.clone(),
                crate::render::arrow::values_array(*ty, typed.iter().map(Some)),
            ));
        }
        // Join keys of the source views, typed as those views declare them.
        for p in call.view.view_sources() {
            let Some(v) = reg.view(&p.view) else { continue };
            for (key, ty) in &v.join_keys {
                let column = p.join_key_map.get(key).unwrap_or(key);
                if arrays.iter().any(|(n, _)| n == column) {
                    continue;
                }
                if let Some((_, values)) = columns.iter().find(|(n, _)| n == column) {
                    let typed: Vec<Value> = values
                        .iter()
                        .map(|v| json::parse_entity_value(v, *ty).unwrap_or(Value::Null))
                        .collect();
                    arrays.push((
                        column.clone(),
                        crate::render::arrow::values_array(*ty, typed.iter().map(Some)),
                    ));
                }
            }
        }
        for (_, field) in call.view.request_fields() {
            if let Some((ty, values)) = request_data.get(&field.name)
                && !arrays.iter().any(|(n, _)| *n == field.name)
            {
                arrays.push((
                    field.name.clone(),
                    crate::render::arrow::values_array(*ty, values.iter().map(Some)),
                ));
            }
        }
        outputs.push(
            transform(
                client,
                &state.metrics,
                TransformPhase::Serve,
                &reg.project,
                &call.view,
                arrays,
                rows,
            )
            .await?,
        );
    }
    if format == Format::Arrow {
        return arrow_answer(reg, &resolved, &columns, engine.as_ref(), &outputs, rows);
    }
    // 5. Feast's JSON: echoed entity columns, then the outputs in order.
    let mut out = String::with_capacity(256 + rows * 32 * (resolved.columns.len() + 1));
    out.push_str("{\"metadata\":{\"feature_names\":[");
    let mut first = true;
    let mut name = |out: &mut String, n: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        json::write_str(out, n);
    };
    for (n, _) in &columns {
        name(&mut out, n);
    }
    for (n, _) in &resolved.columns {
        name(&mut out, n);
    }
    out.push_str("]},\"results\":[");
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !first {
            out.push(',');
        }
        first = false;
    };
    for (i, (_, values)) in columns.iter().enumerate() {
        sep(&mut out);
        // The engine echoes the entity columns first, in the request's order.
        match engine.as_ref().and_then(|e| e.results.get(i)) {
            Some(c) => push_raw(&mut out, c),
            None => {
                out.push_str("{\"values\":");
                out.push_str(&serde_json::to_string(values).unwrap_or_default());
                out.push_str(",\"statuses\":[");
                repeat(&mut out, Status::Present.as_json(), rows);
                out.push_str("],\"event_timestamps\":[");
                repeat(&mut out, EPOCH_TS, rows);
                out.push_str("]}");
            }
        }
    }
    for (_, column) in &resolved.columns {
        sep(&mut out);
        match column {
            Out::Base { engine_name, .. } => push_raw(&mut out, engine_column(engine_name)?),
            Out::OnDemand { call, feature } => {
                out.push_str("{\"values\":[");
                for (r, v) in outputs[*call][*feature].iter().enumerate() {
                    if r > 0 {
                        out.push(',');
                    }
                    json::write_value(&mut out, v);
                }
                out.push_str("],\"statuses\":[");
                repeat(&mut out, Status::Present.as_json(), rows);
                out.push_str("],\"event_timestamps\":[");
                repeat(&mut out, EPOCH_TS, rows);
                out.push_str("]}");
            }
        }
    }
    out.push_str("]}");
    Ok(out.into_bytes())
}

/// Step 5 for `Accept: application/vnd.apache.arrow.stream`: the engine's answer typed back
/// (values by the features' declared types, statuses, event times) and the on-demand outputs,
/// in the columns `render::arrow` gives every answer (`name`, `name__status`,
/// `name__event_timestamp`).
fn arrow_answer(
    reg: &ServingRegistry,
    resolved: &Resolved,
    columns: &[(String, Vec<Json>)],
    engine: Option<&EngineAnswer>,
    outputs: &[Vec<Vec<Value>>],
    rows: usize,
) -> Result<Vec<u8>, ApiError> {
    use crate::render::arrow::{encode, status_array, timestamp_array, values_array};
    let mut out: Vec<(String, ArrayRef)> = Vec::new();
    let column_of = |name: &str| -> Result<&EngineColumn, ApiError> {
        engine
            .and_then(|e| {
                e.metadata
                    .feature_names
                    .iter()
                    .position(|n| n == name)
                    .and_then(|i| e.results.get(i))
            })
            .ok_or_else(|| ApiError::internal("EngineAnswer", format!("no column {name}")))
    };
    // Entity columns, typed as the views that read them declare their join keys.
    for (name, values) in columns {
        let Some(ty) = reg
            .views
            .iter()
            .flat_map(|v| v.join_keys.iter())
            .find(|(k, _)| k == name)
            .map(|(_, t)| *t)
        else {
            continue;
        };
        let typed: Vec<Value> = values
            .iter()
            .map(|v| json::parse_entity_value(v, ty).unwrap_or(Value::Null))
            .collect();
        out.push((
            name.clone(),
            values_array(ty, typed.iter().map(|v| Some(v).filter(|v| !v.is_null()))),
        ));
    }
    let status = |s: &Json| match s.as_str() {
        Some("PRESENT") => Status::Present,
        Some("NOT_FOUND") => Status::NotFound,
        Some("OUTSIDE_MAX_AGE") => Status::OutsideMaxAge,
        _ => Status::Invalid,
    };
    let nanos = |t: &Json| {
        t.as_str()
            .and_then(quiver_core::time::parse_datetime)
            .map(|t| {
                t.seconds
                    .saturating_mul(1_000_000_000)
                    .saturating_add(i64::from(t.nanos))
            })
    };
    for (name, column) in &resolved.columns {
        let (values, statuses, times) = match column {
            Out::Base { engine_name, dtype } => {
                let c = column_of(engine_name)?;
                let typed: Vec<Value> = c
                    .values
                    .iter()
                    .map(|v| json::parse_value(v, *dtype).unwrap_or(Value::Null))
                    .collect();
                (
                    values_array(
                        *dtype,
                        typed.iter().map(|v| Some(v).filter(|v| !v.is_null())),
                    ),
                    status_array(c.statuses.iter().map(status)),
                    timestamp_array(c.event_timestamps.iter().map(nanos)),
                )
            }
            Out::OnDemand { call, feature } => {
                let dtype = resolved.calls[*call].view.features[*feature].dtype;
                let values = &outputs[*call][*feature];
                (
                    values_array(
                        dtype,
                        values.iter().map(|v| Some(v).filter(|v| !v.is_null())),
                    ),
                    status_array((0..rows).map(|_| Status::Present)),
                    timestamp_array((0..rows).map(|_| Some(0))),
                )
            }
        };
        out.push((name.clone(), values));
        out.push((format!("{name}__status"), statuses));
        out.push((format!("{name}__event_timestamp"), times));
    }
    encode(out)
}

/// Runs one on-demand view: its outputs, one vector of values per feature, in feature order.
pub(crate) async fn transform(
    client: &TransformClient,
    metrics: &Metrics,
    phase: TransformPhase,
    project: &str,
    view: &OnDemandView,
    arrays: Vec<(String, ArrayRef)>,
    rows: usize,
) -> Result<Vec<Vec<Value>>, ApiError> {
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
    let schema = arrow_schema::Schema::new(
        arrays
            .iter()
            .map(|(n, a)| arrow_schema::Field::new(n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    let batch = RecordBatch::try_new_with_options(
        Arc::new(schema),
        arrays.into_iter().map(|(_, a)| a).collect(),
        &options,
    )
    .map_err(|e| ApiError::internal("TransformationInput", e.to_string()))?;
    let started = std::time::Instant::now();
    let answer = client.transform(project, &view.name, &batch).await;
    metrics.record_transform(phase, TransformOutcome::of(&answer), started.elapsed());
    let answer = answer.map_err(|e| from_transform(&e))?;
    view.features
        .iter()
        .map(|f| {
            let full = format!("{}__{}", view.name, f.name);
            let array = answer
                .column_by_name(&full)
                .or_else(|| answer.column_by_name(&f.name))
                .ok_or_else(|| {
                    from_transform(&TransformError::BadAnswer {
                        view: view.name.clone(),
                        reason: format!("no column {full}"),
                    })
                })?;
            column_values(array, f.dtype).map_err(|reason| {
                from_transform(&TransformError::BadAnswer {
                    view: view.name.clone(),
                    reason: format!("{full}: {reason}"),
                })
            })
        })
        .collect()
}

fn push_raw(out: &mut String, c: &EngineColumn) {
    for (key, items) in [
        ("{\"values\":[", &c.values),
        ("],\"statuses\":[", &c.statuses),
        ("],\"event_timestamps\":[", &c.event_timestamps),
    ] {
        out.push_str(key);
        for (j, v) in items.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            write_json(out, v);
        }
    }
    out.push_str("]}");
}

/// JSON as the engine renders it: floats as Python prints them (`1e-05`, `1e+16`), so a value
/// read back from the engine's answer is written out unchanged.
fn write_json(out: &mut String, v: &Json) {
    match v {
        Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => json::write_int(out, i),
            (None, Some(u), _) => out.push_str(&u.to_string()),
            (None, None, Some(x)) => json::write_float(out, x),
            _ => out.push_str(&n.to_string()),
        },
        Json::String(s) => json::write_str(out, s),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Json::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json::write_str(out, k);
                out.push(':');
                write_json(out, item);
            }
            out.push('}');
        }
        Json::Null | Json::Bool(_) => out.push_str(&v.to_string()),
    }
}

fn repeat(out: &mut String, item: &str, n: usize) {
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
}

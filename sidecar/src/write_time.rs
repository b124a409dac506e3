//! Write-time on-demand views (`write_to_online_store=True`), as Feast 0.67 does them: computed
//! when rows are written (`POST /write-to-online-store` naming the view), stored under the view's
//! own name in Feast's layout, and then served as stored values, like any feature view (the
//! registry lists them among `ServingRegistry::views`): no transformation per request.
//!
//! ```text
//! df (join keys, the inputs: source features as `feature` or `view__feature`, request fields)
//!   ─▶ checked whole (parse) ─▶ outputs: native → NativeProgram over the typed columns;
//!      pandas → Feast's transformation service (one call for the table);
//!      transform_on_write: false → the df carries the outputs itself
//!   ─▶ rows as Feast writes them: event and created time = now, of a repeated entity the
//!      first row on Redis and the last on SQLite (as Feast's two stores end up), the outputs
//!      and the join keys as fields (Feast stores `{view}:{join_key}` too) ─▶ the online
//!      store's write rule
//! ```
//!
//! What Feast's pandas function sees is `pd.DataFrame(df)`: integers as int64 and numbers as
//! float64 whatever the declared type, so the inputs are sent to the transformation service
//! widened the same way (a Float32 source feature as Float64), and its results equal Feast's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::ArrayRef;
use quiver_core::fault::ErrorKind;
use quiver_core::on_demand::{
    NativeInput, NativeProgram, OnDemandView, input_column, sent_to_transformation,
};
use quiver_core::time::Timestamp;
use quiver_core::{Value, ValueType, entity_key, json};
use quiver_online_store::{OnlineStore, ViewLayout, WriteRow};
use quiver_transform::TransformClient;
use serde_json::Value as Json;

use crate::error::ApiError;
use crate::metrics::{Metrics, TransformPhase};
use crate::push::{WriteRequest, Written};
use crate::registry::{ServingRegistry, ServingView};

/// Columns Feast's clients send with every write that a write-time view does not read (Feast
/// stamps its rows with the time of the write).
const IGNORED: [&str; 2] = ["event_timestamp", "created"];

/// A write-time view, resolved once per registry version.
#[derive(Debug)]
pub struct WriteTime {
    pub view: Arc<OnDemandView>,
    /// A native view's compiled program, or why it does not compile; `None`: Feast's
    /// transformation service computes the view.
    pub native: Option<Result<Arc<NativeProgram>, String>>,
    /// Where rows are written: the outputs, then the join keys (Feast writes both).
    pub layout: Arc<ViewLayout>,
}

impl WriteTime {
    pub fn new(project: &str, view: &OnDemandView, join_keys: &[(String, ValueType)]) -> WriteTime {
        let fields = view
            .features
            .iter()
            .map(|f| f.name.clone())
            .chain(join_keys.iter().map(|(k, _)| k.clone()));
        WriteTime {
            native: view
                .native_program()
                .map(|p| p.map(Arc::new).map_err(|e| e.to_string())),
            layout: Arc::new(ViewLayout::new(project, &view.name, fields)),
            view: Arc::new(view.clone()),
        }
    }

    /// An input column by the names Feast accepts for it: the feature's own name or
    /// `view__feature`; request fields by name. With the type it is parsed as.
    fn input_type(&self, column: &str) -> Option<ValueType> {
        if let Some((_, f)) = self.view.request_fields().find(|(_, f)| f.name == column) {
            return Some(f.dtype);
        }
        self.view.view_sources().find_map(|p| {
            p.features
                .iter()
                .find(|f| f.name == column || input_column(p, &f.name) == column)
                .map(|f| f.dtype)
        })
    }

    /// The column of the table that carries a native program's input.
    fn native_column<'a>(
        &self,
        input: &NativeInput,
        columns: &'a [(String, Vec<Json>)],
    ) -> Option<&'a [Json]> {
        let find = |name: &str| {
            columns
                .iter()
                .find(|(c, _)| c == name)
                .map(|(_, v)| v.as_slice())
        };
        match input {
            NativeInput::Request { field, .. } => find(field),
            NativeInput::Feature { view, feature, .. } => find(feature).or_else(|| {
                self.view
                    .view_sources()
                    .filter(|p| p.view == *view)
                    .find_map(|p| find(&input_column(p, feature)))
            }),
        }
    }
}

fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("ValidationError", message)
}

/// `transform_on_write` of a write body (Feast's flag, default true): false means the table
/// carries the view's outputs already.
pub(crate) fn transform_on_write(body: &serde_json::Map<String, Json>) -> Result<bool, ApiError> {
    match body.get("transform_on_write") {
        None | Some(Json::Null) => Ok(true),
        Some(Json::Bool(b)) => Ok(*b),
        Some(_) => Err(unprocessable("transform_on_write must be a boolean")),
    }
}

/// Checks a table written to a write-time view: the join keys present; with
/// `transform_on_write`, a native view's inputs present, and only inputs besides (source
/// features, request fields); without it, every output. `event_timestamp` and `created` are
/// dropped (Feast stamps the rows itself).
pub(crate) fn check_columns(
    view: &ServingView,
    wt: &WriteTime,
    columns: &mut Vec<(String, Vec<Json>)>,
    transform: bool,
) -> Result<(), ApiError> {
    let read = |c: &str| {
        view.join_keys.iter().any(|(k, _)| k == c)
            || wt.input_type(c).is_some()
            || wt.view.feature(c).is_some()
    };
    columns.retain(|(c, _)| read(c) || !IGNORED.contains(&c.as_str()));
    let name = &view.name;
    let mut required: Vec<String> = view.join_keys.iter().map(|(k, _)| k.clone()).collect();
    if !transform {
        required.extend(wt.view.features.iter().map(|f| f.name.clone()));
    }
    for r in &required {
        if !columns.iter().any(|(c, _)| c == r) {
            return Err(unprocessable(format!(
                "df has no column {r:?}, which on-demand feature view {name} needs{}",
                if transform {
                    ""
                } else {
                    " (transform_on_write is false: the df carries the outputs)"
                }
            )));
        }
    }
    if transform && let Some(Ok(program)) = &wt.native {
        for input in &program.inputs {
            if wt.native_column(input, columns).is_none() {
                let missing = match input {
                    NativeInput::Request { field, .. } => field.clone(),
                    NativeInput::Feature { feature, .. } => feature.clone(),
                };
                return Err(unprocessable(format!(
                    "df has no column {missing:?}, which on-demand feature view {name} computes its features from"
                )));
            }
        }
    }
    for (c, _) in columns.iter() {
        let known = view.join_keys.iter().any(|(k, _)| k == c)
            || if transform {
                wt.input_type(c).is_some()
            } else {
                wt.view.feature(c).is_some()
            };
        if !known {
            return Err(unprocessable(format!(
                "df column {c:?} is not a join key or {} of on-demand feature view {name}",
                if transform {
                    "an input (source feature or request field)"
                } else {
                    "a feature"
                }
            )));
        }
    }
    Ok(())
}

/// The view's outputs for every row of the table: one column of values per feature.
async fn outputs(
    reg: &ServingRegistry,
    view: &ServingView,
    wt: &WriteTime,
    req: &WriteRequest,
    transform: bool,
    client: Option<&TransformClient>,
    metrics: &Metrics,
) -> Result<Vec<Vec<Value>>, ApiError> {
    let rows = req.rows;
    let typed = |name: &str, values: &[Json], ty: ValueType| -> Result<Vec<Value>, ApiError> {
        values
            .iter()
            .enumerate()
            .map(|(r, v)| {
                json::parse_value(v, ty)
                    .map_err(|e| unprocessable(format!("df column {name:?}, row {r}: {e}")))
            })
            .collect()
    };
    if !transform {
        return wt
            .view
            .features
            .iter()
            .map(|f| {
                let values = req
                    .columns
                    .iter()
                    .find(|(c, _)| *c == f.name)
                    .map_or(&[][..], |(_, v)| v.as_slice());
                typed(&f.name, values, f.dtype)
            })
            .collect();
    }
    if let Some(native) = &wt.native {
        let program = native.as_ref().map_err(|e| {
            ApiError::unprocessable(
                "OnDemandFeatureViewInvalid",
                format!(
                    "on-demand feature view {} cannot be computed: {e}",
                    view.name
                ),
            )
        })?;
        let mut inputs = Vec::with_capacity(program.inputs.len());
        for input in &program.inputs {
            let values = wt.native_column(input, &req.columns).unwrap_or(&[]);
            let name = match input {
                NativeInput::Request { field, .. } => field,
                NativeInput::Feature { feature, .. } => feature,
            };
            inputs.push(typed(name, values, input.dtype())?);
        }
        let slices: Vec<&[Value]> = inputs.iter().map(Vec::as_slice).collect();
        return Ok(program.eval(&slices, rows));
    }
    if !wt.view.transformation.runs_on_transformation_service() {
        return Err(ApiError::new(
            ErrorKind::NotImplemented,
            "OnDemandFeatureViewModeNotSupported",
            format!(
                "on-demand feature view {} has mode {:?}; Feast's transformation service runs mode \"pandas\" only",
                view.name,
                wt.view.transformation.mode()
            ),
        ));
    }
    let Some(client) = client else {
        return Err(ApiError::bad_request(
            "OnDemandFeatureViewNotSupported",
            format!(
                "{} is a write-time on-demand feature view whose rows Feast's transformation service computes: start `feast serve_transformations` in the feature repo and quiver serve with --transformation-service HOST:PORT (or write its outputs with transform_on_write: false)",
                view.name
            ),
        ));
    };
    let mut arrays: Vec<(String, ArrayRef)> = Vec::with_capacity(req.columns.len());
    for (name, values) in &req.columns {
        let ty = match view.join_keys.iter().find(|(k, _)| k == name) {
            Some((_, t)) => *t,
            None => match wt.input_type(name) {
                Some(t) if sent_to_transformation(t) => t,
                _ => continue,
            },
        };
        // As pandas reads the JSON Feast's server receives: int64 and float64.
        let ty = match ty {
            ValueType::Int32 => ValueType::Int64,
            ValueType::Float => ValueType::Double,
            ValueType::Int32List => ValueType::Int64List,
            ValueType::FloatList => ValueType::DoubleList,
            t => t,
        };
        let values = typed(name, values, ty)?;
        arrays.push((
            name.clone(),
            crate::render::arrow::values_array(ty, values.iter().map(Some)),
        ));
    }
    crate::on_demand::transform(
        client,
        metrics,
        TransformPhase::Write,
        &reg.project,
        &wt.view,
        arrays,
        rows,
    )
    .await
}

/// Writes a checked table to a write-time view (see the module comment).
pub(crate) async fn write(
    store: &OnlineStore,
    reg: &ServingRegistry,
    req: WriteRequest,
    transform: bool,
    client: Option<&TransformClient>,
    metrics: &Metrics,
    key_ttl_seconds: Option<u64>,
) -> Result<Written, ApiError> {
    let Some(&i) = req.views.first() else {
        return Err(ApiError::internal("NoView", "a write names no view"));
    };
    let view = &reg.views[i];
    let Some(wt) = &view.write_time else {
        return Err(ApiError::internal(
            "NotWriteTime",
            format!("{} is not a write-time on-demand view", view.name),
        ));
    };
    // Keys first: a bad join key is the caller's, before any transformation runs.
    let mut keys: Vec<(Vec<u8>, Vec<Value>)> = Vec::with_capacity(req.rows);
    for row in 0..req.rows {
        let mut values = Vec::with_capacity(view.join_keys.len());
        for (k, t) in &view.join_keys {
            let cell = req
                .columns
                .iter()
                .find(|(c, _)| c == k)
                .and_then(|(_, v)| v.get(row))
                .unwrap_or(&Json::Null);
            values.push(
                json::parse_entity_value(cell, *t)
                    .map_err(|e| unprocessable(format!("df column {k:?}, row {row}: {e}")))?,
            );
        }
        let pairs: Vec<(&str, &Value)> = view
            .join_keys
            .iter()
            .map(|(k, _)| k.as_str())
            .zip(values.iter())
            .collect();
        let key = entity_key::serialize(&pairs)
            .map_err(|e| unprocessable(format!("df row {row}: {e}")))?;
        keys.push((key, values));
    }
    let outputs = outputs(reg, view, wt, &req, transform, client, metrics).await?;
    // Feast writes nothing when every output is null (its "empty feature columns" warning).
    if outputs.iter().all(|c| c.iter().all(Value::is_null)) {
        return Ok(Written {
            online: Default::default(),
            keys: Vec::new(),
            offline: None,
        });
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = Timestamp {
        seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(now.subsec_nanos()).unwrap_or(0),
    };
    // One `now` for the whole table, as Feast stamps it: of an entity's rows, Feast's Redis
    // store keeps the first (a later one is not newer), its SQLite store the last (an
    // unconditional upsert per row).
    let keep_last = matches!(store, OnlineStore::Sqlite(_));
    let mut chosen: HashMap<&[u8], usize> = HashMap::with_capacity(keys.len());
    let mut order = Vec::with_capacity(keys.len());
    for (row, (key, _)) in keys.iter().enumerate() {
        match chosen.get_mut(key.as_slice()) {
            Some(at) if keep_last => *at = row,
            Some(_) => {}
            None => {
                chosen.insert(key, row);
                order.push(key.as_slice());
            }
        }
    }
    let picked: Vec<usize> = order
        .iter()
        .filter_map(|k| chosen.get(k).copied())
        .collect();
    let mut rows = Vec::with_capacity(picked.len());
    let mut encoded = Vec::with_capacity(view.features.len() + view.join_keys.len());
    for row in picked {
        let (key, key_values) = &keys[row];
        encoded.clear();
        for (f, column) in wt.view.features.iter().zip(&outputs) {
            let v = column.get(row).cloned().unwrap_or(Value::Null);
            let v = if v.is_null() {
                Value::missing(f.dtype)
            } else {
                v
            };
            encoded.push(v.encode_to_vec());
        }
        encoded.extend(key_values.iter().map(Value::encode_to_vec));
        rows.push(WriteRow::new(key.clone(), now, Some(now), &encoded));
    }
    let keys: Vec<Vec<u8>> = rows.iter().map(|r| r.entity_key.clone()).collect();
    let online = store
        .write(&wt.layout, rows.into(), key_ttl_seconds)
        .await
        .map_err(|e| {
            ApiError::from_store(
                &e,
                format!("writing on-demand feature view {}: {e}", view.name),
            )
        })?;
    Ok(Written {
        online,
        keys,
        offline: None,
    })
}

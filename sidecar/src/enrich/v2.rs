//! Open Inference Protocol (KServe V2): entity-id input tensors in (shape `[n]` or `[n, 1]`,
//! INT8..UINT64 or BYTES; request inputs also FP32/FP64/BOOL), feature tensors out: one per
//! output column (FP32, FP64, INT32, INT64, BOOL or BYTES by the feature's type, shape `[n]`) or
//! one stacked `[n, k]` FP32/FP64 tensor. The entity tensors are not forwarded (name them in
//! `order` to keep them); every other input tensor and key of the body is forwarded as it came.
//!
//! The protocol has two encodings, JSON over REST (here) and protobuf over gRPC (`grpc.rs`);
//! both go through the one core here: [`EntityInputs`] checks the entity and request tensors
//! (shape, datatype, one value per row, none missing or given twice) and [`out_tensors`] with
//! [`element`] and [`number`] decide the feature tensors (layout, datatype, each element).
//! Each front-end only reads and writes its encoding.

use std::fmt::Write as _;

use quiver_core::fault::ErrorKind;
use quiver_core::{Value, ValueType};
use serde_json::{Map, Value as Json};

use super::config::{Float, V2Layout};
use super::{InputColumn, OutColumn};
use crate::enrich::config::{ModelConfig, type_name};
use crate::error::ApiError;

pub(super) struct V2Request {
    /// The body's keys other than `inputs`.
    rest: Map<String, Json>,
    /// Input tensors forwarded unchanged.
    kept: Vec<Json>,
    /// Entity inputs, then request inputs.
    columns: Columns,
    pub rows: usize,
}

fn bad(class: &'static str, message: String) -> ApiError {
    ApiError::bad_request(class, message)
}

/// What an entity or request tensor's elements must be, by its datatype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Integer,
    Bytes,
    Float,
    Bool,
}

/// The entity and request inputs by name, each a value per row: what the engine reads.
pub(super) type Columns = Vec<(String, Vec<Json>)>;

/// The entity and request input tensors of one request, collected and checked as they come.
pub(super) struct EntityInputs<'c> {
    config: &'c ModelConfig,
    /// Entity inputs, then request inputs, each filled once.
    columns: Vec<(String, Option<Vec<Json>>)>,
    /// The row count, and the tensor that set it.
    rows: Option<(usize, String)>,
}

impl<'c> EntityInputs<'c> {
    pub fn new(config: &'c ModelConfig) -> EntityInputs<'c> {
        EntityInputs {
            config,
            columns: config
                .entities
                .iter()
                .chain(&config.request_inputs)
                .map(|n| (n.clone(), None))
                .collect(),
            rows: None,
        }
    }

    /// The slot of the input tensor `name`, `None` for a tensor the sidecar forwards as it is.
    pub fn slot(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|(n, _)| n == name)
    }

    /// The row count `shape` gives: `[n]` or `[n, 1]` with `n > 0`.
    pub fn rows_of(name: &str, shape: &[i64]) -> Result<usize, ApiError> {
        match shape {
            [n] | [n, 1] if *n > 0 => usize::try_from(*n).map_err(|_| {
                bad(
                    "InvalidTensor",
                    format!("inputs[name={name}].shape: {n} rows is too many"),
                )
            }),
            _ => Err(bad(
                "InvalidTensor",
                format!(
                    "inputs[name={name}].shape: {shape:?}; an entity or request input is one value per row: [n] or [n, 1] with n > 0"
                ),
            )),
        }
    }

    /// What the elements of the tensor in `slot` must be, by its `datatype`.
    pub fn kind(&self, slot: usize, name: &str, datatype: &str) -> Result<Kind, ApiError> {
        let entity = slot < self.config.entities.len();
        Ok(match datatype {
            "INT8" | "INT16" | "INT32" | "INT64" | "UINT8" | "UINT16" | "UINT32" | "UINT64" => {
                Kind::Integer
            }
            "BYTES" => Kind::Bytes,
            "FP16" | "FP32" | "FP64" if !entity => Kind::Float,
            "BOOL" if !entity => Kind::Bool,
            other => {
                return Err(bad(
                    "InvalidTensor",
                    format!(
                        "inputs[name={name}].datatype: {other}; {} inputs are INT8..INT64, UINT8..UINT64 or BYTES{}",
                        if entity { "entity" } else { "request" },
                        if entity { "" } else { ", FP32, FP64 or BOOL" }
                    ),
                ));
            }
        })
    }

    /// Takes the tensor in `slot`'s values: one per row, as many as the other tensors have.
    pub fn put(&mut self, slot: usize, values: Vec<Json>) -> Result<(), ApiError> {
        let name = &self.columns[slot].0;
        match &self.rows {
            Some((n, first)) if *n != values.len() => {
                return Err(bad(
                    "ShapeMismatch",
                    format!(
                        "inputs[name={name}]: {} rows, but {first} has {n}; every entity and request input has one value per row",
                        values.len()
                    ),
                ));
            }
            Some(_) => {}
            None => self.rows = Some((values.len(), name.clone())),
        }
        if self.columns[slot].1.is_some() {
            return Err(bad(
                "DuplicateTensor",
                format!("inputs: the tensor {name} is given twice"),
            ));
        }
        self.columns[slot].1 = Some(values);
        Ok(())
    }

    /// The columns for the engine and the row count; a tensor not given is a 400 naming it.
    pub fn finish(self) -> Result<(Columns, usize), ApiError> {
        let config = self.config;
        let columns = self
            .columns
            .into_iter()
            .map(|(name, values)| match values {
                Some(v) => Ok((name, v)),
                None => Err(bad(
                    "MissingEntityInput",
                    format!(
                        "inputs: no tensor named {name}; the model {} needs {} (shape [n], INT64 or BYTES)",
                        config.name,
                        config
                            .entities
                            .iter()
                            .chain(&config.request_inputs)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((columns, self.rows.map_or(0, |r| r.0)))
    }
}

/// Reads a V2 inference request in JSON; entity tensors of the wrong shape, type or length are
/// a 400 naming the tensor.
pub(super) fn parse(body: &[u8], config: &ModelConfig) -> Result<V2Request, ApiError> {
    let mut rest: Map<String, Json> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::unprocessable(
                "InvalidRequest",
                format!("request body: {e}; expected {{\"inputs\": [...]}}"),
            )
        } else {
            ApiError::bad_request("MalformedJson", format!("request body: {e}"))
        }
    })?;
    let Some(Json::Array(inputs)) = rest.remove("inputs") else {
        return Err(bad(
            "NoInputs",
            format!(
                "inputs: expected an array of tensors, among them {} ({{\"name\", \"shape\": [n], \"datatype\": \"INT64\" or \"BYTES\", \"data\"}})",
                config.entities.join(", ")
            ),
        ));
    };
    let mut entities = EntityInputs::new(config);
    let mut kept = Vec::with_capacity(inputs.len());
    for (i, tensor) in inputs.into_iter().enumerate() {
        let name = tensor.get("name").and_then(Json::as_str).map(str::to_owned);
        let Some(name) = name else {
            return Err(bad(
                "InvalidTensor",
                format!("inputs[{i}]: expected a tensor object with a string name"),
            ));
        };
        let Some(slot) = entities.slot(&name) else {
            kept.push(tensor);
            continue;
        };
        let Json::Object(mut tensor) = tensor else {
            return Err(bad(
                "InvalidTensor",
                format!("inputs[{i}]: expected an object"),
            ));
        };
        let values = entity_tensor(&entities, slot, &name, &mut tensor)?;
        entities.put(slot, values)?;
    }
    let (columns, rows) = entities.finish()?;
    Ok(V2Request {
        rest,
        kept,
        rows,
        columns,
    })
}

/// One entity or request input tensor's values, checked against its shape and datatype.
fn entity_tensor(
    entities: &EntityInputs<'_>,
    slot: usize,
    name: &str,
    tensor: &mut Map<String, Json>,
) -> Result<Vec<Json>, ApiError> {
    let at = |m: String| bad("InvalidTensor", format!("inputs[name={name}].{m}"));
    let shape: Vec<i64> = match tensor.get("shape") {
        Some(Json::Array(dims)) => dims
            .iter()
            .map(|d| {
                d.as_u64()
                    .and_then(|d| i64::try_from(d).ok())
                    .ok_or_else(|| at(format!("shape: expected non-negative integers, got {d}")))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(at("shape: expected [n] or [n, 1]".into())),
    };
    let n = EntityInputs::rows_of(name, &shape)?;
    let datatype = tensor
        .get("datatype")
        .and_then(Json::as_str)
        .ok_or_else(|| at("datatype: missing".into()))?
        .to_owned();
    let ok: fn(&Json) -> bool = match entities.kind(slot, name, &datatype)? {
        Kind::Integer => |v| v.is_i64() || v.is_u64(),
        Kind::Bytes => Json::is_string,
        Kind::Float => Json::is_number,
        Kind::Bool => Json::is_boolean,
    };
    let data = match tensor.remove("data") {
        Some(Json::Array(data)) => data,
        _ => return Err(at("data: expected an array".into())),
    };
    // Row-major flat, or nested one value per row ([[1], [2]]).
    let data: Vec<Json> = data
        .into_iter()
        .map(|v| match v {
            Json::Array(mut inner) if inner.len() == 1 => inner.pop().unwrap_or(Json::Null),
            v => v,
        })
        .collect();
    if data.len() != n {
        return Err(at(format!(
            "data: {} values for shape {shape:?} ({n} expected)",
            data.len()
        )));
    }
    if let Some((i, v)) = data.iter().enumerate().find(|(_, v)| !ok(v)) {
        return Err(at(format!("data[{i}]: {v} is not a {datatype} value")));
    }
    Ok(data)
}

/// One tensor sent to the model.
pub(super) enum OutTensor<'c, 'a> {
    /// A column of its own, `[n]`, in the datatype of its type.
    Column {
        col: &'c OutColumn<'a>,
        datatype: &'static str,
    },
    /// Every column, `[n, k]` row-major, as floats.
    Stacked {
        name: &'c str,
        datatype: Float,
        columns: &'c [OutColumn<'a>],
    },
}

/// The tensors `columns` become under the model's layout; a column with no tensor datatype
/// (a list or a map) is a 501 naming it.
pub(super) fn out_tensors<'c, 'a>(
    config: &'c ModelConfig,
    columns: &'c [OutColumn<'a>],
) -> Result<Vec<OutTensor<'c, 'a>>, ApiError> {
    match &config.v2 {
        V2Layout::PerFeature => columns
            .iter()
            .map(|col| match datatype(col.dtype()) {
                Some(datatype) => Ok(OutTensor::Column { col, datatype }),
                None => Err(ApiError::new(
                    ErrorKind::NotImplemented,
                    "UnsupportedFeatureType",
                    format!(
                        "model {}: {} is {}; a V2 tensor per feature carries scalar types only (use V1, or leave it out with order)",
                        config.name,
                        col.name(),
                        type_name(col.dtype())
                    ),
                )),
            })
            .collect(),
        V2Layout::Stacked { name, datatype } => Ok(vec![OutTensor::Stacked {
            name,
            datatype: *datatype,
            columns,
        }]),
    }
}

/// One element of a per-column tensor, typed as its tensor's datatype says.
#[derive(Debug, PartialEq)]
pub(super) enum Element<'a> {
    F32(f32),
    F64(f64),
    I32(i32),
    I64(i64),
    Bool(bool),
    /// A BYTES element holding text.
    Str(&'a str),
    /// A BYTES element holding bytes (base64 in JSON).
    Bytes(&'a [u8]),
}

/// Row `r` of a per-column tensor; a value the tensor cannot carry is the reason why.
pub(super) fn element<'a>(col: &'a OutColumn<'_>, r: usize) -> Result<Element<'a>, String> {
    match col {
        OutColumn::Feature { values, .. } => match &values[r] {
            Value::Float(x) => Ok(Element::F32(*x)),
            Value::Double(x) => Ok(Element::F64(*x)),
            Value::Int32(x) => Ok(Element::I32(*x)),
            Value::Int64(x) | Value::UnixTimestamp(x) => Ok(Element::I64(*x)),
            Value::Bool(b) => Ok(Element::Bool(*b)),
            Value::String(s) | Value::Json(s) => Ok(Element::Str(s)),
            Value::Bytes(b) => Ok(Element::Bytes(b)),
            Value::Null => Err(
                "no value (null) cannot travel in a tensor: fill it (missing: {fill: ...})".into(),
            ),
            _ => Err("not a scalar".into()),
        },
        OutColumn::Input { values, dtype, .. } => {
            let v = &values[r];
            let wrong = || format!("{v} is not a {} value", type_name(*dtype));
            match dtype {
                ValueType::Float => v.as_f64().map(|x| Element::F32(x as f32)),
                ValueType::Double => v.as_f64().map(Element::F64),
                ValueType::Int32 => v
                    .as_i64()
                    .and_then(|x| i32::try_from(x).ok())
                    .map(Element::I32),
                ValueType::Int64 | ValueType::UnixTimestamp => v.as_i64().map(Element::I64),
                ValueType::Bool => v.as_bool().map(Element::Bool),
                ValueType::String | ValueType::Bytes | ValueType::Json => {
                    v.as_str().map(Element::Str)
                }
                _ => None,
            }
            .ok_or_else(wrong)
        }
    }
}

impl V2Request {
    /// The entity and request columns for the engine.
    pub fn columns(&self) -> Vec<(String, Vec<Json>)> {
        self.columns.clone()
    }

    pub fn inputs(&self) -> Vec<InputColumn<'_>> {
        self.columns
            .iter()
            .map(|(name, values)| InputColumn { name, values })
            .collect()
    }

    /// The body sent to the model: the kept tensors, then the feature tensors, and the
    /// request's other keys.
    pub fn forward(
        &self,
        config: &ModelConfig,
        columns: &[OutColumn<'_>],
    ) -> Result<Vec<u8>, ApiError> {
        let rows = self.rows;
        let mut out = String::with_capacity(128 + rows * columns.len() * 12);
        out.push_str("{\"inputs\":[");
        for (i, t) in self.kept.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&t.to_string());
        }
        let mut sep = !self.kept.is_empty();
        let mut comma = |out: &mut String| {
            if sep {
                out.push(',');
            }
            sep = true;
        };
        for tensor in out_tensors(config, columns)? {
            comma(&mut out);
            match tensor {
                OutTensor::Column { col, datatype } => {
                    out.push_str("{\"name\":");
                    quiver_core::json::write_str(&mut out, col.name());
                    let _ = write!(
                        out,
                        ",\"shape\":[{rows}],\"datatype\":\"{datatype}\",\"data\":["
                    );
                    for r in 0..rows {
                        if r > 0 {
                            out.push(',');
                        }
                        element(col, r)
                            .and_then(|e| write_element(&mut out, e))
                            .map_err(|e| cell_error(config, col, r, e))?;
                    }
                }
                OutTensor::Stacked {
                    name,
                    datatype,
                    columns,
                } => {
                    out.push_str("{\"name\":");
                    quiver_core::json::write_str(&mut out, name);
                    let _ = write!(
                        out,
                        ",\"shape\":[{rows},{}],\"datatype\":\"{}\",\"data\":[",
                        columns.len(),
                        datatype.as_str()
                    );
                    for r in 0..rows {
                        for (c, col) in columns.iter().enumerate() {
                            if r > 0 || c > 0 {
                                out.push(',');
                            }
                            let x = number(col, r).map_err(|e| cell_error(config, col, r, e))?;
                            match datatype {
                                Float::Fp32 => write_finite(&mut out, x as f32 as f64, x as f32),
                                Float::Fp64 => write_finite(&mut out, x, x),
                            }
                            .map_err(|e| cell_error(config, col, r, e))?;
                        }
                    }
                }
            }
            out.push_str("]}");
        }
        out.push(']');
        for (k, v) in &self.rest {
            out.push(',');
            quiver_core::json::write_str(&mut out, k);
            out.push(':');
            out.push_str(&v.to_string());
        }
        out.push('}');
        Ok(out.into_bytes())
    }
}

pub(super) fn cell_error(
    config: &ModelConfig,
    col: &OutColumn<'_>,
    r: usize,
    e: String,
) -> ApiError {
    ApiError::unprocessable(
        "UnrepresentableFeature",
        format!("model {}: {} row {r}: {e}", config.name, col.name()),
    )
}

/// The V2 datatype of a feature type's tensor (`None`: not a scalar).
pub(super) fn datatype(t: ValueType) -> Option<&'static str> {
    Some(match t {
        ValueType::Float => "FP32",
        ValueType::Double => "FP64",
        ValueType::Int32 => "INT32",
        ValueType::Int64 | ValueType::UnixTimestamp => "INT64",
        ValueType::Bool => "BOOL",
        ValueType::String | ValueType::Bytes | ValueType::Json => "BYTES",
        _ => return None,
    })
}

/// A float as JSON, always with a fraction (`3.0`, not `3`: the tensor stays a float tensor
/// to a reader that types by the JSON); a JSON tensor cannot carry NaN or infinities.
fn write_finite(out: &mut String, x: f64, shown: impl std::fmt::Display) -> Result<(), String> {
    if !x.is_finite() {
        return Err(format!("{x} cannot travel in a JSON tensor"));
    }
    let start = out.len();
    let _ = write!(out, "{shown}");
    if !out[start..].contains('.') {
        out.push_str(".0");
    }
    Ok(())
}

/// One element of a per-column tensor, as JSON.
fn write_element(out: &mut String, e: Element<'_>) -> Result<(), String> {
    match e {
        Element::F32(x) => write_finite(out, f64::from(x), x)?,
        Element::F64(x) => write_finite(out, x, x)?,
        Element::I32(x) => {
            let _ = write!(out, "{x}");
        }
        Element::I64(x) => {
            let _ = write!(out, "{x}");
        }
        Element::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Element::Str(s) => quiver_core::json::write_str(out, s),
        Element::Bytes(b) => quiver_core::json::write_value(out, &Value::Bytes(b.to_vec())),
    }
    Ok(())
}

/// One element of a stacked tensor, as a number.
pub(super) fn number(col: &OutColumn<'_>, r: usize) -> Result<f64, String> {
    match col {
        OutColumn::Feature { values, .. } => match &values[r] {
            Value::Float(x) => Ok(f64::from(*x)),
            Value::Double(x) => Ok(*x),
            Value::Int32(x) => Ok(f64::from(*x)),
            Value::Int64(x) | Value::UnixTimestamp(x) => Ok(*x as f64),
            Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
            Value::Null => Err("no value (null): fill it (missing: {fill: ...})".into()),
            _ => Err("not a number".into()),
        },
        OutColumn::Input { values, .. } => match &values[r] {
            Json::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
            v => v.as_f64().ok_or_else(|| format!("{v} is not a number")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::config::EnrichConfig;

    fn model(v2: &str) -> ModelConfig {
        EnrichConfig::parse(
            &format!("models:\n  m:\n    feature_service: s\n    entities: [driver_id, customer_id]\n    v2: {v2}\n"),
            "t",
        )
        .unwrap()
        .models
        .remove(0)
    }

    fn features() -> Vec<OutColumn<'static>> {
        vec![
            OutColumn::Feature {
                name: "conv".into(),
                dtype: ValueType::Float,
                values: vec![Value::Float(0.1), Value::Float(2.0)],
            },
            OutColumn::Feature {
                name: "trips".into(),
                dtype: ValueType::Int64,
                values: vec![Value::Int64(3), Value::Int64(-4)],
            },
            OutColumn::Feature {
                name: "vip".into(),
                dtype: ValueType::Bool,
                values: vec![Value::Bool(true), Value::Bool(false)],
            },
        ]
    }

    const BODY: &[u8] = br#"{"id": "r1", "inputs": [
        {"name": "driver_id", "shape": [2], "datatype": "INT64", "data": [1001, 1002]},
        {"name": "other", "shape": [1], "datatype": "FP32", "data": [9.5]},
        {"name": "customer_id", "shape": [2, 1], "datatype": "BYTES", "data": [["a"], ["b"]]}
    ], "outputs": [{"name": "predictions"}]}"#;

    #[test]
    fn entity_tensors_out_feature_tensors_in() {
        let m = model("{layout: per_feature}");
        let r = parse(BODY, &m).unwrap();
        assert_eq!(r.rows, 2);
        assert_eq!(
            r.columns(),
            vec![
                ("driver_id".into(), vec![1001.into(), 1002.into()]),
                ("customer_id".into(), vec!["a".into(), "b".into()]),
            ]
        );
        let body: Json = serde_json::from_slice(&r.forward(&m, &features()).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"id": "r1", "outputs": [{"name": "predictions"}], "inputs": [
                {"name": "other", "shape": [1], "datatype": "FP32", "data": [9.5]},
                {"name": "conv", "shape": [2], "datatype": "FP32", "data": [0.1, 2.0]},
                {"name": "trips", "shape": [2], "datatype": "INT64", "data": [3, -4]},
                {"name": "vip", "shape": [2], "datatype": "BOOL", "data": [true, false]},
            ]})
        );
    }

    #[test]
    fn stacked_is_one_row_major_float_tensor() {
        let m = model("{layout: stacked, name: x}");
        let r = parse(BODY, &m).unwrap();
        let body: Json = serde_json::from_slice(&r.forward(&m, &features()).unwrap()).unwrap();
        assert_eq!(
            body["inputs"][1],
            serde_json::json!({"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [0.1, 3.0, 1.0, 2.0, -4.0, 0.0]})
        );
        // A value a JSON tensor cannot carry is a 422 naming the feature and row.
        let nan = vec![OutColumn::Feature {
            name: "conv".into(),
            dtype: ValueType::Double,
            values: vec![Value::Double(1.0), Value::Double(f64::NAN)],
        }];
        let e = r.forward(&m, &nan).unwrap_err();
        assert!(e.status() == 422 && e.message.contains("conv row 1"), "{e}");
        // Lists have no per-feature tensor.
        let m = model("{layout: per_feature}");
        let list = vec![OutColumn::Feature {
            name: "zones".into(),
            dtype: ValueType::Int32List,
            values: vec![Value::Int32List(vec![1]), Value::Null],
        }];
        let e = r.forward(&m, &list).unwrap_err();
        assert!(e.status() == 501 && e.message.contains("zones"), "{e}");
    }

    #[test]
    fn bad_entity_tensors_name_the_tensor() {
        let m = model("{layout: per_feature}");
        let e = |body: &str| {
            let e = parse(body.as_bytes(), &m).err().unwrap();
            assert_eq!(e.status(), 400, "{e}");
            e.message
        };
        let t = |name: &str, shape: &str, dt: &str, data: &str| {
            format!(r#"{{"name": "{name}", "shape": {shape}, "datatype": "{dt}", "data": {data}}}"#)
        };
        let c = t("customer_id", "[1]", "BYTES", r#"["a"]"#);
        let body = |d: String| format!(r#"{{"inputs": [{d}, {c}]}}"#);
        assert!(e(r#"{"id": 1}"#).contains("inputs: expected an array"));
        assert!(e(&format!(r#"{{"inputs": [{c}]}}"#)).contains("no tensor named driver_id"));
        let msg = e(&body(t("driver_id", "[1]", "FP32", "[1.5]")));
        assert!(
            msg.contains("inputs[name=driver_id].datatype: FP32"),
            "{msg}"
        );
        let msg = e(&body(t("driver_id", "[1, 2]", "INT64", "[1, 2]")));
        assert!(msg.contains("inputs[name=driver_id].shape"), "{msg}");
        let msg = e(&body(t("driver_id", "[2]", "INT64", "[1]")));
        assert!(msg.contains("data: 1 values for shape [2]"), "{msg}");
        let msg = e(&body(t("driver_id", "[1]", "INT64", r#"["1"]"#)));
        assert!(msg.contains("data[0]"), "{msg}");
        let msg = e(&body(t("driver_id", "[2]", "INT64", "[1, 2]")));
        assert!(msg.contains("rows"), "{msg}");
        let msg = e(&format!(
            r#"{{"inputs": [{c}, {c}, {}]}}"#,
            t("driver_id", "[1]", "INT64", "[1]")
        ));
        assert!(msg.contains("given twice"), "{msg}");
    }
}

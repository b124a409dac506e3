//! KServe V1: `{"instances": [{"driver_id": 1001, "customer_id": "c1"}, ...]}` in, each
//! instance an object keyed by the model's entity (and request) inputs; out
//! `{"instances": [[feature values...], ...]}` in the output order, the request's other keys
//! (e.g. `parameters`) kept.

use serde_json::{Map, Value as Json};

use super::{InputColumn, OutColumn};
use crate::enrich::config::ModelConfig;
use crate::error::ApiError;

pub(super) struct V1Request {
    /// The body's other keys.
    rest: Map<String, Json>,
    /// Entity inputs, then request inputs, one value per instance.
    columns: Vec<(String, Vec<Json>)>,
    rows: usize,
}

/// Reads a V1 body; a missing or malformed `instances` is a 4xx naming it.
pub(super) fn parse(body: &[u8], config: &ModelConfig) -> Result<V1Request, ApiError> {
    let mut rest: Map<String, Json> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::unprocessable(
                "InvalidRequest",
                format!("request body: {e}; expected {{\"instances\": [...]}}"),
            )
        } else {
            ApiError::bad_request("MalformedJson", format!("request body: {e}"))
        }
    })?;
    let instances = match rest.remove("instances") {
        Some(Json::Array(a)) if !a.is_empty() => a,
        Some(Json::Array(_)) => {
            return Err(ApiError::bad_request(
                "NoInstances",
                "instances is empty: give one object per prediction, keyed by the entity inputs",
            ));
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "InvalidInstances",
                "instances: expected an array of objects, e.g. [{\"driver_id\": 1001}]",
            ));
        }
        None => {
            return Err(ApiError::bad_request(
                "NoInstances",
                format!(
                    "instances: missing; the model {} takes {{\"instances\": [{{{}}}, ...]}}",
                    config.name,
                    config
                        .entities
                        .iter()
                        .map(|e| format!("\"{e}\": ..."))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    };
    let names = config.entities.iter().chain(&config.request_inputs);
    let mut columns: Vec<(String, Vec<Json>)> = names
        .map(|n| (n.clone(), Vec::with_capacity(instances.len())))
        .collect();
    for (i, instance) in instances.into_iter().enumerate() {
        let Json::Object(mut fields) = instance else {
            return Err(ApiError::bad_request(
                "InvalidInstance",
                format!(
                    "instances[{i}]: expected an object keyed by the entity inputs ({})",
                    config.entities.join(", ")
                ),
            ));
        };
        for (name, values) in &mut columns {
            match fields.remove(name.as_str()) {
                Some(Json::Null) | None => {
                    return Err(ApiError::bad_request(
                        "MissingEntityInput",
                        format!(
                            "instances[{i}].{name}: missing; the model {} needs it",
                            config.name
                        ),
                    ));
                }
                Some(v) => values.push(v),
            }
        }
    }
    let rows = columns.first().map_or(0, |c| c.1.len());
    Ok(V1Request {
        rest,
        columns,
        rows,
    })
}

impl V1Request {
    pub fn rows(&self) -> usize {
        self.rows
    }

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

    /// The body sent to the model: `{"instances": [[...], ...], ...the other keys}`.
    pub fn forward(&self, columns: &[OutColumn<'_>]) -> Vec<u8> {
        let mut out = String::with_capacity(64 + self.rows * (columns.len() * 12 + 4));
        out.push_str("{\"instances\":[");
        for r in 0..self.rows {
            if r > 0 {
                out.push(',');
            }
            out.push('[');
            for (c, col) in columns.iter().enumerate() {
                if c > 0 {
                    out.push(',');
                }
                match col {
                    OutColumn::Feature { values, .. } => {
                        quiver_core::json::write_value(&mut out, &values[r])
                    }
                    OutColumn::Input { values, .. } => out.push_str(&values[r].to_string()),
                }
            }
            out.push(']');
        }
        out.push(']');
        for (k, v) in &self.rest {
            out.push(',');
            quiver_core::json::write_str(&mut out, k);
            out.push(':');
            out.push_str(&v.to_string());
        }
        out.push('}');
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::config::EnrichConfig;
    use quiver_core::{Value, ValueType};

    fn model() -> ModelConfig {
        EnrichConfig::parse(
            "models:\n  m:\n    feature_service: s\n    entities: [driver_id, customer_id]\n    request_inputs: [km]\n",
            "t",
        )
        .unwrap()
        .models
        .remove(0)
    }

    #[test]
    fn instances_become_columns_and_rows_of_features() {
        let m = model();
        let r = parse(
            br#"{"instances": [{"driver_id": 1, "customer_id": "a", "km": 2.5, "x": 0}, {"customer_id": "b", "driver_id": 2, "km": 1}], "parameters": {"p": 1}}"#,
            &m,
        )
        .unwrap();
        assert_eq!(r.rows(), 2);
        let cols = r.columns();
        assert_eq!(cols[0], ("driver_id".into(), vec![1.into(), 2.into()]));
        assert_eq!(cols[1].1, vec![Json::from("a"), Json::from("b")]);
        assert_eq!(cols[2].0, "km");
        let km = &r.columns[2].1;
        let out = [
            OutColumn::Feature {
                name: "f".into(),
                dtype: ValueType::Float,
                values: vec![Value::Float(0.5), Value::Float(0.25)],
            },
            OutColumn::Feature {
                name: "t".into(),
                dtype: ValueType::String,
                values: vec![Value::String("gold".into()), Value::String("x\"y".into())],
            },
            OutColumn::Input {
                name: "km".into(),
                dtype: ValueType::Double,
                values: km,
            },
        ];
        let body: Json = serde_json::from_slice(&r.forward(&out)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"instances": [[0.5, "gold", 2.5], [0.25, "x\"y", 1]], "parameters": {"p": 1}})
        );
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let m = model();
        let e = |b: &[u8]| {
            let e = parse(b, &m).err().unwrap();
            (e.status(), e.message)
        };
        assert_eq!(e(b"{").0, 400);
        let (s, msg) = e(br#"{"inputs": []}"#);
        assert!(s == 400 && msg.contains("instances: missing"), "{msg}");
        let (s, msg) = e(br#"{"instances": []}"#);
        assert!(s == 400 && msg.contains("instances is empty"), "{msg}");
        let (s, msg) = e(br#"{"instances": [[1, "a"]]}"#);
        assert!(
            s == 400 && msg.contains("instances[0]: expected an object"),
            "{msg}"
        );
        let (s, msg) = e(br#"{"instances": [{"driver_id": 1, "customer_id": "a", "km": 1}, {"driver_id": 1, "km": 1}]}"#);
        assert!(
            s == 400 && msg.contains("instances[1].customer_id: missing"),
            "{msg}"
        );
        let (s, msg) = e(br#"{"instances": [{"driver_id": null, "customer_id": "a", "km": 1}]}"#);
        assert!(s == 400 && msg.contains("instances[0].driver_id"), "{msg}");
        assert_eq!(e(br#"[1]"#).0, 422);
    }
}

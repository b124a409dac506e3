//! The enrich config (`quiver serve --enrich FILE`): which models the sidecar enriches, with
//! which feature service, from which request inputs, into which tensor layout, and what a
//! missing or stale feature becomes.
//!
//! ```yaml
//! models:
//!   driver-ranker:                      # the KServe model name in the request path
//!     feature_service: driver_ranking
//!     entities: [driver_id, customer_id]  # V1 instance keys / V2 input tensors (join keys)
//!     request_inputs: [distance_km]     # optional: request fields of native on-demand views
//!     order: [conv_rate, distance_km]   # optional: output columns (features or inputs);
//!                                       #   default: the service's features in its order
//!     full_feature_names: false         # optional: view__feature names
//!     v2: {layout: per_feature}         # or {layout: stacked, name: features, datatype: FP32}
//!     missing: reject                   # NOT_FOUND, null or INVALID: reject (422) or {fill: 0}
//!     stale: reject                     # OUTSIDE_MAX_AGE: reject, serve (the stored value) or
//!                                       #   {fill: 0}
//! ```
//!
//! Read with the definitions' YAML parser (`quiver_registry::yaml`: budgets, located syntax
//! errors); every semantic problem is reported with the file, the line and the key path, all
//! at once. [`EnrichConfig::check`] then checks each model against the registry before the
//! port is bound.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use quiver_core::ValueType;
use quiver_registry::yaml::{self, Number, Yaml};
use serde::Deserialize;
use serde_json::Value as Json;
use serde_saphyr::Spanned;

use crate::registry::ServingRegistry;

/// Most models one config may name (each has its own metric series).
pub const MAX_MODELS: usize = 256;

/// A checked enrich config.
#[derive(Debug, Clone)]
pub struct EnrichConfig {
    /// By model name, sorted.
    pub models: Vec<ModelConfig>,
    /// Where it was read from, for the messages of [`EnrichConfig::check`].
    pub file: String,
}

/// How one model's requests are enriched.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub name: String,
    pub feature_service: String,
    /// Request inputs carrying join keys, in the order given.
    pub entities: Vec<String>,
    /// Request inputs passed to the service's native on-demand views.
    pub request_inputs: Vec<String>,
    /// Output columns by name (features, entities or request inputs); empty: the service's
    /// features in its order.
    pub order: Vec<String>,
    pub full_feature_names: bool,
    pub v2: V2Layout,
    /// NOT_FOUND, a null value, INVALID.
    pub missing: Policy,
    /// OUTSIDE_MAX_AGE.
    pub stale: Policy,
}

/// The V2 (Open Inference Protocol) output layout.
#[derive(Debug, Clone, PartialEq)]
pub enum V2Layout {
    /// One tensor per output column, named after it, typed by the feature's type.
    PerFeature,
    /// One `[n, k]` tensor of all output columns (numbers and bools), as FP32 or FP64.
    Stacked { name: String, datatype: Float },
}

/// The datatype of a stacked tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Float {
    Fp32,
    Fp64,
}

impl Float {
    pub fn as_str(self) -> &'static str {
        match self {
            Float::Fp32 => "FP32",
            Float::Fp64 => "FP64",
        }
    }
}

/// What a missing or stale feature becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// The request is refused (422 naming the entity and the feature).
    Reject,
    /// The stored value is used (only for stale values).
    Serve,
    /// This value is used instead (a number, a string or a bool).
    Fill(Json),
    /// A value per feature (`{fill: {conv_rate: 0.0, tier: "new"}}`); a feature not named is
    /// refused as by [`Policy::Reject`].
    FillEach(BTreeMap<String, Json>),
}

impl Policy {
    /// What a missing (or stale) value of `feature` becomes: `None` refuses the request,
    /// `Some(None)` keeps the stored value, `Some(Some(v))` uses `v`.
    pub(crate) fn for_feature(&self, feature: &str) -> Option<Option<&Json>> {
        match self {
            Policy::Reject => None,
            Policy::Serve => Some(None),
            Policy::Fill(v) => Some(Some(v)),
            Policy::FillEach(m) => m.get(feature).map(Some),
        }
    }
}

/// One problem in an enrich config: the file, the line when known, the key path, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    models: Option<BTreeMap<String, Spanned<RawModel>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    feature_service: Option<Spanned<String>>,
    #[serde(default)]
    entities: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    request_inputs: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    order: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    full_feature_names: bool,
    #[serde(default)]
    v2: Option<Spanned<Yaml>>,
    #[serde(default)]
    missing: Option<Spanned<Yaml>>,
    #[serde(default)]
    stale: Option<Spanned<Yaml>>,
}

fn line<T>(s: &Spanned<T>) -> Option<usize> {
    Some(s.referenced.line() as usize)
}

impl EnrichConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<EnrichConfig, ConfigErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.clone(),
                line: None,
                path: String::new(),
                message: format!("cannot read it: {e}"),
            }])
        })?;
        EnrichConfig::parse(&text, &file)
    }

    /// Parses and checks a config's text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<EnrichConfig, ConfigErrors> {
        let raw: RawConfig = yaml::from_str(text, yaml::LIMITS).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.to_owned(),
                line: e.line,
                path: String::new(),
                message: e.message,
            }])
        })?;
        let mut errors = Vec::new();
        let mut err = |line: Option<usize>, path: String, message: String| {
            errors.push(ConfigError {
                file: file.to_owned(),
                line,
                path,
                message,
            })
        };
        let raw_models = raw.models.unwrap_or_default();
        if raw_models.is_empty() {
            err(
                None,
                "models".into(),
                "no models: name at least one, e.g. models: {my-model: {feature_service: ..., entities: [...]}}".into(),
            );
        }
        if raw_models.len() > MAX_MODELS {
            err(
                None,
                "models".into(),
                format!("{} models; at most {MAX_MODELS}", raw_models.len()),
            );
        }
        let mut models = Vec::new();
        for (name, m) in raw_models {
            let at = line(&m);
            let p = |key: &str| format!("models.{name}.{key}");
            if !valid_name(&name) {
                err(
                    at,
                    format!("models.{name}"),
                    "a model name is 1 to 253 letters, digits, '-', '_' or '.' (the {name} of /v1/models/{name}:predict)".into(),
                );
            }
            let m = m.value;
            let feature_service = match m.feature_service {
                Some(s) if !s.value.trim().is_empty() => s.value,
                Some(s) => {
                    err(line(&s), p("feature_service"), "is empty".into());
                    String::new()
                }
                None => {
                    err(
                        at,
                        p("feature_service"),
                        "missing: the feature service whose features the model gets".into(),
                    );
                    String::new()
                }
            };
            let names = |list: Option<Spanned<Vec<String>>>,
                         key: &str,
                         err: &mut dyn FnMut(Option<usize>, String, String)|
             -> Vec<String> {
                let Some(list) = list else { return Vec::new() };
                let mut seen = std::collections::HashSet::new();
                for n in &list.value {
                    if n.trim().is_empty() {
                        err(line(&list), p(key), "an empty name in the list".into());
                    } else if !seen.insert(n.as_str()) {
                        err(line(&list), p(key), format!("{n:?} is listed twice"));
                    }
                }
                list.value
            };
            let entities_line = m.entities.as_ref().and_then(line).or(at);
            let entities = names(m.entities, "entities", &mut err);
            if entities.is_empty() {
                err(
                    entities_line,
                    p("entities"),
                    "no entity inputs: list the request inputs that carry the service's join keys, e.g. [driver_id]".into(),
                );
            }
            let request_inputs = names(m.request_inputs, "request_inputs", &mut err);
            for r in &request_inputs {
                if entities.contains(r) {
                    err(
                        at,
                        p("request_inputs"),
                        format!("{r:?} is also an entity input"),
                    );
                }
            }
            let order = names(m.order, "order", &mut err);
            let v2 = match m.v2 {
                None => V2Layout::PerFeature,
                Some(v) => match v2_layout(&v.value) {
                    Ok(l) => l,
                    Err(msg) => {
                        err(line(&v), p("v2"), msg);
                        V2Layout::PerFeature
                    }
                },
            };
            let mut policy = |v: Option<Spanned<Yaml>>, key: &str, serve: bool| match v {
                None => Policy::Reject,
                Some(v) => match policy(&v.value, serve) {
                    Ok(p) => p,
                    Err(msg) => {
                        err(line(&v), p(key), msg);
                        Policy::Reject
                    }
                },
            };
            let missing = policy(m.missing, "missing", false);
            let stale = policy(m.stale, "stale", true);
            models.push(ModelConfig {
                name,
                feature_service,
                entities,
                request_inputs,
                order,
                full_feature_names: m.full_feature_names,
                v2,
                missing,
                stale,
            });
        }
        if errors.is_empty() {
            Ok(EnrichConfig {
                models,
                file: file.to_owned(),
            })
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// The model called `name`.
    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models
            .binary_search_by(|m| m.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.models[i])
    }

    /// Checks every model against the registry: the feature service exists and needs no
    /// transformation service, the entity inputs are exactly its join keys, the request inputs
    /// its request fields, `order` names its columns, a stacked layout holds numbers only and a
    /// fill fits every feature. Run before the port is bound and on every registry swap
    /// ([`crate::State::install_registry`]).
    pub fn check(&self, reg: &ServingRegistry) -> Result<(), ConfigErrors> {
        let file = self.file.as_str();
        let mut errors = Vec::new();
        for m in &self.models {
            let mut err = |key: &str, message: String| {
                errors.push(ConfigError {
                    file: file.to_owned(),
                    line: None,
                    path: format!("models.{}.{key}", m.name),
                    message,
                })
            };
            if reg.service(&m.feature_service).is_none() {
                err(
                    "feature_service",
                    format!(
                        "no feature service {:?} in project {}",
                        m.feature_service, reg.project
                    ),
                );
                continue;
            }
            if reg.needs_on_demand(None, Some(&m.feature_service)) {
                err(
                    "feature_service",
                    format!(
                        "{:?} reads an on-demand view computed by Feast's transformation service; enrichment serves feature views and native on-demand views only",
                        m.feature_service
                    ),
                );
                continue;
            }
            let plan = match m.plan(reg) {
                Ok(p) => p,
                Err(e) => {
                    err("feature_service", e.message);
                    continue;
                }
            };
            for (key, _) in &plan.entity_columns {
                if !m.entities.contains(key) {
                    err(
                        "entities",
                        format!(
                            "the service {:?} reads join key {key:?}: add it to entities",
                            m.feature_service
                        ),
                    );
                }
            }
            for e in &m.entities {
                if !plan.entity_columns.iter().any(|(k, _)| k == e) {
                    err(
                        "entities",
                        format!(
                            "{e:?} is not a join key of the service {:?} (its join keys: {})",
                            m.feature_service,
                            list(plan.entity_columns.iter().map(|(k, _)| k.as_str()))
                        ),
                    );
                }
            }
            for (field, _) in &plan.request_fields {
                if !m.request_inputs.contains(field) {
                    err(
                        "request_inputs",
                        format!(
                            "the service's on-demand views read request field {field:?}: add it to request_inputs"
                        ),
                    );
                }
            }
            for r in &m.request_inputs {
                if !plan.request_fields.iter().any(|(f, _)| f == r) {
                    err(
                        "request_inputs",
                        format!("{r:?} is not a request field of the service's on-demand views"),
                    );
                }
            }
            let columns = output_columns(m, reg, &plan);
            let columns = match columns {
                Ok(c) => c,
                Err(e) => {
                    err("order", e);
                    continue;
                }
            };
            for (name, dtype) in &columns {
                if let V2Layout::Stacked { .. } = m.v2
                    && !numeric(*dtype)
                {
                    err(
                        "v2",
                        format!(
                            "a stacked tensor holds numbers and bools; {name} is {}",
                            type_name(*dtype)
                        ),
                    );
                }
                for (key, policy) in [("missing", &m.missing), ("stale", &m.stale)] {
                    if let Some(Some(v)) = policy.for_feature(name)
                        && !fill_fits(v, *dtype)
                    {
                        err(
                            key,
                            format!("the fill {v} does not fit {name} ({})", type_name(*dtype)),
                        );
                    }
                }
            }
            for (key, policy) in [("missing", &m.missing), ("stale", &m.stale)] {
                if let Policy::FillEach(each) = policy {
                    for name in each.keys() {
                        if !columns.iter().any(|(c, _)| c == name) {
                            err(
                                key,
                                format!(
                                    "fill names {name:?}, which is not one of the model's features ({})",
                                    list(columns.iter().map(|(c, _)| c.as_str()))
                                ),
                            );
                        }
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

impl ModelConfig {
    /// The plan of this model's feature service.
    pub(crate) fn plan(
        &self,
        reg: &ServingRegistry,
    ) -> Result<std::sync::Arc<crate::registry::Plan>, crate::error::ApiError> {
        reg.plan(crate::engine::request::plan_key(
            None,
            Some(self.feature_service.clone()),
            self.full_feature_names,
        )?)
    }
}

/// The output columns of a model (name, type): `order`, or the plan's features.
fn output_columns(
    m: &ModelConfig,
    reg: &ServingRegistry,
    plan: &crate::registry::Plan,
) -> Result<Vec<(String, ValueType)>, String> {
    let mut features: Vec<(String, ValueType)> = plan
        .columns
        .iter()
        .map(|c| {
            let view = &reg.views[plan.groups[c.group].view];
            (c.name.clone(), view.features[c.feature].1)
        })
        .collect();
    for v in &plan.computed {
        for (o, name) in &v.outputs {
            features.push((name.clone(), v.program.outputs[*o].0.dtype));
        }
    }
    if m.order.is_empty() {
        return Ok(features);
    }
    m.order
        .iter()
        .map(|n| {
            if let Some(f) = features.iter().find(|(f, _)| f == n) {
                return Ok(f.clone());
            }
            if let Some((_, t)) = plan
                .entity_columns
                .iter()
                .chain(&plan.request_fields)
                .find(|(k, _)| k == n)
            {
                return Ok((n.clone(), *t));
            }
            Err(format!(
                "{n:?} is neither a feature of the service (its features: {}) nor an entity or request input",
                list(features.iter().map(|(f, _)| f.as_str()))
            ))
        })
        .collect()
}

/// A feature type as definitions write it (Float32, Int64, ...).
pub(crate) fn type_name(t: ValueType) -> &'static str {
    t.dtype_name().unwrap_or_else(|| t.proto_name())
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    names.join(", ")
}

/// Whether a feature of this type goes into a stacked float tensor.
pub(crate) fn numeric(t: ValueType) -> bool {
    matches!(
        t,
        ValueType::Int32
            | ValueType::Int64
            | ValueType::Float
            | ValueType::Double
            | ValueType::Bool
            | ValueType::UnixTimestamp
    )
}

fn fill_fits(v: &Json, t: ValueType) -> bool {
    match v {
        Json::Number(n) => {
            numeric(t) && (!n.is_f64() || matches!(t, ValueType::Float | ValueType::Double))
        }
        Json::Bool(_) => t == ValueType::Bool,
        Json::String(_) => matches!(t, ValueType::String | ValueType::Bytes | ValueType::Json),
        _ => false,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn v2_layout(v: &Yaml) -> Result<V2Layout, String> {
    const EXPECTED: &str =
        "expected {layout: per_feature} or {layout: stacked, name: TENSOR, datatype: FP32|FP64}";
    let Some(map) = v.as_mapping() else {
        return Err(EXPECTED.into());
    };
    for (k, _) in map {
        match k.as_str() {
            Some("layout" | "name" | "datatype") => {}
            _ => return Err(format!("unknown key {k}; {EXPECTED}")),
        }
    }
    match map.get("layout").and_then(Yaml::as_str) {
        Some("per_feature") => {
            if map.contains_key("name") || map.contains_key("datatype") {
                return Err(
                    "name and datatype belong to layout: stacked (per_feature names each tensor after its feature and types it by the feature)".into(),
                );
            }
            Ok(V2Layout::PerFeature)
        }
        Some("stacked") => {
            let name = match map.get("name") {
                None => "features".to_owned(),
                Some(Yaml::String(s)) if !s.trim().is_empty() => s.clone(),
                Some(other) => return Err(format!("name: expected a tensor name, got {other}")),
            };
            let datatype = match map.get("datatype").map(|d| d.as_str()) {
                None | Some(Some("FP32")) => Float::Fp32,
                Some(Some("FP64")) => Float::Fp64,
                Some(_) => return Err("datatype: expected FP32 or FP64".into()),
            };
            Ok(V2Layout::Stacked { name, datatype })
        }
        _ => Err(EXPECTED.into()),
    }
}

/// A fill: a number, a string or a bool.
fn fill_value(v: &Yaml) -> Result<Json, String> {
    match v {
        Yaml::Bool(b) => Ok(Json::Bool(*b)),
        Yaml::String(s) => Ok(Json::String(s.clone())),
        Yaml::Number(Number::PosInt(n)) => Ok(Json::from(*n)),
        Yaml::Number(Number::NegInt(n)) => Ok(Json::from(*n)),
        Yaml::Number(Number::Float(x)) => serde_json::Number::from_f64(*x)
            .map(Json::Number)
            .ok_or_else(|| format!("{x} is not a finite number")),
        other => Err(format!(
            "expected a number, a string or a bool, got {other}"
        )),
    }
}

fn policy(v: &Yaml, serve: bool) -> Result<Policy, String> {
    let expected = if serve {
        "expected reject, serve, {fill: VALUE} or {fill: {FEATURE: VALUE, ...}}"
    } else {
        "expected reject, {fill: VALUE} or {fill: {FEATURE: VALUE, ...}}"
    };
    match v {
        Yaml::String(s) if s == "reject" => Ok(Policy::Reject),
        Yaml::String(s) if s == "serve" && serve => Ok(Policy::Serve),
        Yaml::Mapping(m) if m.len() == 1 => {
            let fill = m.get("fill").ok_or_else(|| expected.to_owned())?;
            if let Yaml::Mapping(each) = fill {
                let mut values = BTreeMap::new();
                for (k, v) in each {
                    let Yaml::String(name) = k else {
                        return Err(format!("fill: expected feature names as keys, got {k}"));
                    };
                    values.insert(
                        name.clone(),
                        fill_value(v).map_err(|e| format!("fill.{name}: {e}"))?,
                    );
                }
                if values.is_empty() {
                    return Err("fill: an empty map fills nothing; use reject".into());
                }
                return Ok(Policy::FillEach(values));
            }
            Ok(Policy::Fill(
                fill_value(fill).map_err(|e| format!("fill: {e}"))?,
            ))
        }
        _ => Err(format!("{expected}, got {v}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EnrichConfig, ConfigErrors> {
        EnrichConfig::parse(text, "enrich.yaml")
    }

    #[test]
    fn a_full_model_reads_with_its_defaults() {
        let c = parse(
            "models:\n  b-model:\n    feature_service: s\n    entities: [driver_id]\n  a.model:\n    feature_service: t\n    entities: [a, b]\n    request_inputs: [x]\n    order: [f, a]\n    full_feature_names: true\n    v2: {layout: stacked, name: feats, datatype: FP64}\n    missing: {fill: -1.5}\n    stale: serve\n",
        )
        .unwrap();
        // Sorted by name, for the lookup by path.
        assert_eq!(c.models[0].name, "a.model");
        let a = c.model("a.model").unwrap();
        assert_eq!(a.entities, ["a", "b"]);
        assert_eq!(a.request_inputs, ["x"]);
        assert_eq!(a.order, ["f", "a"]);
        assert!(a.full_feature_names);
        assert_eq!(
            a.v2,
            V2Layout::Stacked {
                name: "feats".into(),
                datatype: Float::Fp64
            }
        );
        assert_eq!(a.missing, Policy::Fill(serde_json::json!(-1.5)));
        assert_eq!(a.stale, Policy::Serve);
        let b = c.model("b-model").unwrap();
        assert_eq!(b.v2, V2Layout::PerFeature);
        assert_eq!((&b.missing, &b.stale), (&Policy::Reject, &Policy::Reject));
        assert!(c.model("c").is_none());
    }

    #[test]
    fn problems_are_all_reported_with_file_line_and_key() {
        let e = parse(
            "models:\n  m:\n    feature_service: s\n    entities: []\n    missing: serve\n    stale: {fill: [1]}\n    v2: {layout: diagonal}\n  bad/name:\n    entities: [a, a]\n",
        )
        .unwrap_err();
        let text = e.to_string();
        for want in [
            "enrich.yaml:4: models.m.entities: no entity inputs",
            "enrich.yaml:5: models.m.missing: expected reject, {fill: VALUE} or {fill: {FEATURE: VALUE, ...}}, got serve",
            "enrich.yaml:6: models.m.stale: fill: expected a number, a string or a bool",
            "enrich.yaml:7: models.m.v2: expected {layout: per_feature}",
            "models.bad/name: a model name is",
            "models.bad/name.feature_service: missing",
            "models.bad/name.entities: \"a\" is listed twice",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_yaml_are_located() {
        let e =
            parse("models:\n  m:\n    feature_service: s\n    entities: [a]\n    entitis: [b]\n")
                .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("enrich.yaml:5") && text.contains("entitis"),
            "{text}"
        );
        let e = parse("models: [\n").unwrap_err();
        assert!(e.to_string().starts_with("enrich.yaml"), "{e}");
        let e = parse("").unwrap_err();
        assert!(e.to_string().contains("models: no models"), "{e}");
    }

    #[test]
    fn a_fill_per_feature_fills_those_named_and_rejects_the_rest() {
        let c = parse(
            "models:\n  m:\n    feature_service: s\n    entities: [a]\n    missing: {fill: {rate: 0.5, tier: new}}\n",
        )
        .unwrap();
        let m = &c.model("m").unwrap().missing;
        assert_eq!(m.for_feature("rate"), Some(Some(&serde_json::json!(0.5))));
        assert_eq!(m.for_feature("tier"), Some(Some(&serde_json::json!("new"))));
        assert_eq!(m.for_feature("trips"), None);
        assert_eq!(Policy::Serve.for_feature("x"), Some(None));
        assert_eq!(Policy::Reject.for_feature("x"), None);
        let e = parse(
            "models:\n  m:\n    feature_service: s\n    entities: [a]\n    missing: {fill: {}}\n    stale: {fill: {rate: [1]}}\n",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "enrich.yaml:5: models.m.missing: fill: an empty map fills nothing",
            "enrich.yaml:6: models.m.stale: fill.rate: expected a number, a string or a bool",
        ] {
            assert!(e.contains(want), "{want:?} not in\n{e}");
        }
    }

    #[test]
    fn fills_fit_by_type() {
        use ValueType::*;
        assert!(fill_fits(&serde_json::json!(0), Float));
        assert!(fill_fits(&serde_json::json!(0), Int64));
        assert!(!fill_fits(&serde_json::json!(0.5), Int64));
        assert!(fill_fits(&serde_json::json!("x"), String));
        assert!(!fill_fits(&serde_json::json!("x"), Double));
        assert!(fill_fits(&serde_json::json!(true), Bool));
        assert!(!fill_fits(&serde_json::json!(1), StringList));
    }
}

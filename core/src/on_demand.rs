//! On-demand feature views: features computed from other views' features and request data,
//! read from Feast's `OnDemandFeatureView` proto.
//!
//! quiver does not run Feast's Python transformations itself: a pandas function is sent to
//! Feast's transformation service (`feast serve_transformations`) with its inputs. The model
//! keeps what that needs: the sources (feature-view projections and request sources, with their
//! typed fields), the output features, the mode and the function's name and source text.
//!
//! Native views ([`Transformation::Native`]) are quiver's own: declared in YAML with one
//! expression per feature ([`crate::expr`]), evaluated in Rust by serving and historical
//! retrieval alike ([`NativeProgram`]). They are stored as a Python-mode function whose own
//! `mode` is `quiver`; its source text is a Python stub that holds the expressions in a comment
//! line (see [`native_body_text`]), so Feast's SDK can still load and list the registry (it
//! rehydrates functions from their source text), while calling the function in Feast raises an
//! error that says quiver computes it.

use crate::expr::{self, Expr, ExprError, Ref};
use crate::model::{DataSource, FeatureView, Field, Meta, Projection, SourceKind, Tags};
use crate::proto::core as pb;
use crate::{Value, ValueType};

/// The `mode` of the stored function that marks a view as quiver-native.
pub const NATIVE_MODE: &str = "quiver";
/// The name of a native view's stored (stub) function.
pub const NATIVE_FUNCTION: &str = "quiver_native";
/// The comment line of the stub that carries the expressions, as a JSON list of pairs.
const EXPRESSIONS_LINE: &str = "# quiver-expressions: ";

/// An on-demand feature view of one project.
#[derive(Debug, Clone, PartialEq)]
pub struct OnDemandView {
    pub name: String,
    /// The output features, typed.
    pub features: Vec<Field>,
    /// Sources in the registry's order (Feast keys them by name, so sorted by name).
    pub sources: Vec<OnDemandSource>,
    pub transformation: Transformation,
    /// Computed when rows are written (push, materialize) and stored, instead of per request.
    pub write_to_online_store: bool,
    /// Entities (Feast writes `__dummy` for a view computed from request data alone).
    pub entities: Vec<String>,
    pub entity_columns: Vec<Field>,
    pub description: String,
    pub tags: Tags,
    pub owner: String,
    pub meta: Meta,
}

/// One input of an on-demand view.
#[derive(Debug, Clone, PartialEq)]
pub enum OnDemandSource {
    /// Features of a feature view (the projection selects them, and may alias the view).
    View(Projection),
    /// Values sent with each request (`RequestSource`): a name and its typed fields.
    Request { name: String, schema: Vec<Field> },
}

/// How the output is computed from the inputs.
#[derive(Debug, Clone, PartialEq)]
pub enum Transformation {
    /// A Python function over a pandas DataFrame (`mode="pandas"`): Feast's transformation
    /// service runs it.
    Pandas(Udf),
    /// A Python function over dicts of lists (`mode="python"`), which Feast's transformation
    /// service does not run.
    Python(Udf),
    /// A Substrait plan (`mode="substrait"`).
    Substrait,
    /// A mode quiver does not know, by the name Feast wrote.
    Other { mode: String },
    /// quiver's own expressions, `(feature, expression)` in feature order: evaluated in Rust.
    Native { expressions: Vec<(String, String)> },
}

/// A user-defined Python function, by name and source text (its pickled body is not read).
#[derive(Debug, Clone, PartialEq)]
pub struct Udf {
    pub name: String,
    pub body_text: String,
}

impl Transformation {
    /// The mode as Feast names it (`pandas`, `python`, `substrait`, ...).
    pub fn mode(&self) -> &str {
        match self {
            Transformation::Pandas(_) => "pandas",
            Transformation::Python(_) => "python",
            Transformation::Substrait => "substrait",
            Transformation::Other { mode } => mode,
            Transformation::Native { .. } => NATIVE_MODE,
        }
    }

    /// Whether Feast's transformation service can compute it (it runs pandas functions only).
    pub fn runs_on_transformation_service(&self) -> bool {
        matches!(self, Transformation::Pandas(_))
    }
}

impl OnDemandView {
    /// The feature-view projections among the sources.
    pub fn view_sources(&self) -> impl Iterator<Item = &Projection> {
        self.sources.iter().filter_map(|s| match s {
            OnDemandSource::View(p) => Some(p),
            OnDemandSource::Request { .. } => None,
        })
    }

    /// Every request-source field, with the source it belongs to.
    pub fn request_fields(&self) -> impl Iterator<Item = (&str, &Field)> {
        self.sources.iter().flat_map(|s| match s {
            OnDemandSource::Request { name, schema } => schema
                .iter()
                .map(|f| (name.as_str(), f))
                .collect::<Vec<_>>(),
            OnDemandSource::View(_) => Vec::new(),
        })
    }

    pub fn feature(&self, name: &str) -> Option<&Field> {
        self.features.iter().find(|f| f.name == name)
    }

    pub fn from_proto(p: pb::OnDemandFeatureView) -> OnDemandView {
        let spec = p.spec.unwrap_or_default();
        let meta = p.meta.unwrap_or_default();
        let sources = spec
            .sources
            .into_iter()
            .filter_map(|(key, s)| OnDemandSource::from_proto(key, s))
            .collect();
        OnDemandView {
            name: spec.name,
            features: spec.features.into_iter().map(Field::from_proto).collect(),
            sources,
            transformation: Transformation::from_proto(
                &spec.mode,
                spec.feature_transformation,
                spec.user_defined_function,
            ),
            write_to_online_store: spec.write_to_online_store,
            entities: spec.entities,
            entity_columns: spec
                .entity_columns
                .into_iter()
                .map(Field::from_proto)
                .collect(),
            description: spec.description,
            tags: spec.tags,
            owner: spec.owner,
            meta: Meta {
                created: meta.created_timestamp,
                last_updated: meta.last_updated_timestamp,
            },
        }
    }

    /// The proto with the fields quiver models (the pickled body is not among them).
    pub fn to_proto(&self, project: &str) -> pb::OnDemandFeatureView {
        let (mode, feature_transformation) = self.transformation.to_proto(&self.name);
        pb::OnDemandFeatureView {
            spec: Some(pb::OnDemandFeatureViewSpec {
                name: self.name.clone(),
                project: project.to_owned(),
                features: self.features.iter().map(Field::to_proto).collect(),
                sources: self.sources.iter().map(|s| s.to_proto(project)).collect(),
                user_defined_function: None,
                description: self.description.clone(),
                tags: self.tags.clone(),
                owner: self.owner.clone(),
                feature_transformation,
                mode,
                write_to_online_store: self.write_to_online_store,
                entities: self.entities.clone(),
                entity_columns: self.entity_columns.iter().map(Field::to_proto).collect(),
            }),
            meta: Some(pb::OnDemandFeatureViewMeta {
                created_timestamp: self.meta.created,
                last_updated_timestamp: self.meta.last_updated,
            }),
        }
    }
}

impl OnDemandSource {
    /// The name the registry keys the source by.
    pub fn name(&self) -> &str {
        match self {
            OnDemandSource::View(p) => &p.view,
            OnDemandSource::Request { name, .. } => name,
        }
    }

    fn from_proto(key: String, s: pb::OnDemandSource) -> Option<OnDemandSource> {
        use pb::on_demand_source::Source;
        Some(match s.source? {
            Source::FeatureViewProjection(p) => OnDemandSource::View(Projection::from_proto(p)),
            // Older registries hold the whole view: every feature is selected.
            Source::FeatureView(v) => {
                let view = FeatureView::from_proto(v);
                OnDemandSource::View(Projection {
                    view: view.name,
                    alias: None,
                    features: view.features,
                    join_key_map: Default::default(),
                })
            }
            Source::RequestDataSource(d) => {
                let source = DataSource::from_proto(d);
                let schema = match source.kind {
                    SourceKind::Request { schema } => schema,
                    _ => Vec::new(),
                };
                let name = if source.name.is_empty() {
                    key
                } else {
                    source.name
                };
                OnDemandSource::Request { name, schema }
            }
        })
    }

    fn to_proto(&self, project: &str) -> (String, pb::OnDemandSource) {
        use pb::on_demand_source::Source;
        let source = match self {
            OnDemandSource::View(p) => Source::FeatureViewProjection(p.to_proto()),
            OnDemandSource::Request { name, schema } => Source::RequestDataSource(
                DataSource {
                    name: name.clone(),
                    kind: SourceKind::Request {
                        schema: schema.clone(),
                    },
                    timestamp_field: String::new(),
                    created_timestamp_column: String::new(),
                    date_partition_column: String::new(),
                    field_mapping: Default::default(),
                    description: String::new(),
                    tags: Tags::new(),
                    owner: String::new(),
                }
                .to_proto(project),
            ),
        };
        (
            self.name().to_owned(),
            pb::OnDemandSource {
                source: Some(source),
            },
        )
    }
}

impl Transformation {
    fn from_proto(
        mode: &str,
        v2: Option<pb::FeatureTransformationV2>,
        legacy: Option<pb::UserDefinedFunction>,
    ) -> Transformation {
        use pb::feature_transformation_v2::Transformation as T;
        let udf = match v2.and_then(|t| t.transformation) {
            Some(T::SubstraitTransformation(_)) => return Transformation::Substrait,
            Some(T::UserDefinedFunction(u)) if u.mode == NATIVE_MODE => {
                return match parse_native_body_text(&u.body_text) {
                    Some(expressions) => Transformation::Native { expressions },
                    None => Transformation::Other {
                        mode: format!("{NATIVE_MODE} (unreadable expressions)"),
                    },
                };
            }
            Some(T::UserDefinedFunction(u)) => Udf {
                name: u.name,
                body_text: u.body_text,
            },
            None => {
                let u = legacy.unwrap_or_default();
                Udf {
                    name: u.name,
                    body_text: u.body_text,
                }
            }
        };
        // Feast writes the mode on the spec; registries older than the field meant pandas.
        match mode {
            "" | "pandas" => Transformation::Pandas(udf),
            "python" => Transformation::Python(udf),
            "substrait" => Transformation::Substrait,
            other => Transformation::Other {
                mode: other.to_owned(),
            },
        }
    }

    fn to_proto(&self, view: &str) -> (String, Option<pb::FeatureTransformationV2>) {
        use pb::feature_transformation_v2::Transformation as T;
        if let Transformation::Native { expressions } = self {
            // Python mode for Feast's SDK, which loads the stub; the function's own mode says
            // quiver computes it.
            let udf = pb::UserDefinedFunctionV2 {
                name: NATIVE_FUNCTION.to_owned(),
                body_text: native_body_text(view, expressions),
                mode: NATIVE_MODE.to_owned(),
            };
            return (
                "python".to_owned(),
                Some(pb::FeatureTransformationV2 {
                    transformation: Some(T::UserDefinedFunction(udf)),
                }),
            );
        }
        let transformation = match self {
            Transformation::Pandas(u) | Transformation::Python(u) => {
                Some(T::UserDefinedFunction(pb::UserDefinedFunctionV2 {
                    name: u.name.clone(),
                    body_text: u.body_text.clone(),
                    mode: self.mode().to_owned(),
                }))
            }
            Transformation::Substrait => Some(T::SubstraitTransformation(
                pb::SubstraitTransformationV2::default(),
            )),
            Transformation::Other { .. } | Transformation::Native { .. } => None,
        };
        (
            self.mode().to_owned(),
            transformation.map(|t| pb::FeatureTransformationV2 {
                transformation: Some(t),
            }),
        )
    }
}

/// Whether quiver sends a source feature of this type to a transformation: scalars and lists.
/// Map, Struct and Json features are left out of the input (their Arrow form is not settled
/// in quiver yet); a function that reads one fails in the transformation service, by name.
pub fn sent_to_transformation(t: crate::ValueType) -> bool {
    use crate::ValueType as T;
    !matches!(
        t,
        T::Map | T::MapList | T::Struct | T::StructList | T::Json | T::JsonList
    )
}

/// The stored source text of a native view: a Python function that Feast's SDK can load (and
/// so list the registry), that raises when Feast calls it, and whose comment line carries the
/// expressions as JSON (one line: JSON escapes newlines).
pub fn native_body_text(view: &str, expressions: &[(String, String)]) -> String {
    let json = serde_json::to_string(expressions).unwrap_or_else(|_| "[]".to_owned());
    let message = serde_json::to_string(&format!(
        "on-demand feature view {view} is quiver-native: its features are computed by quiver \
         (quiver serve, quiver historical) from the expressions above, not by Feast"
    ))
    .unwrap_or_else(|_| "\"quiver-native\"".to_owned());
    format!(
        "# A quiver-native on-demand feature view: quiver evaluates these expressions in Rust.\n\
         {EXPRESSIONS_LINE}{json}\n\
         def {NATIVE_FUNCTION}(inputs):\n    raise NotImplementedError({message})\n"
    )
}

/// The expressions of a native view's stored source text; `None` when it holds none.
pub fn parse_native_body_text(text: &str) -> Option<Vec<(String, String)>> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(EXPRESSIONS_LINE))?;
    serde_json::from_str(line).ok()
}

/// One input of a native view's program.
#[derive(Debug, Clone, PartialEq)]
pub enum NativeInput {
    /// A request field, sent with each request (or a column of the entity table).
    Request { field: String, dtype: ValueType },
    /// A feature of one of the view's source views.
    Feature {
        view: String,
        feature: String,
        dtype: ValueType,
    },
}

impl NativeInput {
    pub fn dtype(&self) -> ValueType {
        match self {
            NativeInput::Request { dtype, .. } | NativeInput::Feature { dtype, .. } => *dtype,
        }
    }
}

/// A native view's expressions, checked and compiled: what serving and historical retrieval
/// evaluate. Inputs are numbered in order of first use; `eval` takes one column per input.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeProgram {
    pub inputs: Vec<NativeInput>,
    /// `(feature, compiled expression)` in the view's feature order.
    pub outputs: Vec<(Field, Expr)>,
}

/// A native view's expression that does not check, with the feature it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("feature {feature}: expr {error}")]
pub struct NativeError {
    pub feature: String,
    pub error: ExprError,
}

impl NativeProgram {
    /// Evaluates every output over `rows` rows: `inputs[i]` is input `i`'s column.
    pub fn eval(&self, inputs: &[&[Value]], rows: usize) -> Vec<Vec<Value>> {
        self.outputs
            .iter()
            .map(|(_, e)| e.eval(inputs, rows))
            .collect()
    }
}

impl OnDemandView {
    /// The compiled program of a native view (`None` for other transformations). References
    /// resolve against the view's own sources: `view.feature` against the features its
    /// projections select, a bare name against its request sources' fields.
    pub fn native_program(&self) -> Option<Result<NativeProgram, NativeError>> {
        let Transformation::Native { expressions } = &self.transformation else {
            return None;
        };
        Some(self.compile_native(expressions))
    }

    fn compile_native(
        &self,
        expressions: &[(String, String)],
    ) -> Result<NativeProgram, NativeError> {
        let whole = |feature: &str, message: String| NativeError {
            feature: feature.to_owned(),
            error: ExprError { column: 1, message },
        };
        let mut inputs: Vec<NativeInput> = Vec::new();
        let mut outputs = Vec::new();
        for field in &self.features {
            let Some((_, text)) = expressions.iter().find(|(f, _)| *f == field.name) else {
                return Err(whole(
                    &field.name,
                    "the feature has no expression".to_owned(),
                ));
            };
            let mut resolve = |r: &Ref| -> Result<(usize, ValueType), String> {
                let input = self.resolve_input(r)?;
                let slot = match inputs.iter().position(|i| *i == input) {
                    Some(i) => i,
                    None => {
                        inputs.push(input.clone());
                        inputs.len() - 1
                    }
                };
                Ok((slot, input.dtype()))
            };
            let compiled =
                expr::compile(text, &mut resolve, field.dtype).map_err(|error| NativeError {
                    feature: field.name.clone(),
                    error,
                })?;
            outputs.push((field.clone(), compiled));
        }
        if let Some((f, _)) = expressions.iter().find(|(f, _)| self.feature(f).is_none()) {
            return Err(whole(
                f,
                "an expression for a feature the view does not declare".to_owned(),
            ));
        }
        Ok(NativeProgram { inputs, outputs })
    }

    fn resolve_input(&self, r: &Ref) -> Result<NativeInput, String> {
        match r {
            Ref::Request(name) => match self.request_fields().find(|(_, f)| f.name == *name) {
                Some((_, f)) => Ok(NativeInput::Request {
                    field: f.name.clone(),
                    dtype: f.dtype,
                }),
                None => {
                    let have: Vec<&str> = self
                        .request_fields()
                        .map(|(_, f)| f.name.as_str())
                        .collect();
                    Err(format!(
                        "{name} is not a request field of this view (its request fields: {}); a source feature is written view.feature",
                        if have.is_empty() {
                            "none".to_owned()
                        } else {
                            have.join(", ")
                        }
                    ))
                }
            },
            Ref::Feature { view, feature } => {
                let Some(p) = self
                    .view_sources()
                    .find(|p| p.view == *view || p.name_to_use() == view)
                else {
                    let have: Vec<&str> = self.view_sources().map(|p| p.view.as_str()).collect();
                    return Err(format!(
                        "{view} is not a source view of this on-demand view (its sources: {}): add it to sources",
                        if have.is_empty() {
                            "none".to_owned()
                        } else {
                            have.join(", ")
                        }
                    ));
                };
                match p.features.iter().find(|f| f.name == *feature) {
                    Some(f) => Ok(NativeInput::Feature {
                        view: p.view.clone(),
                        feature: f.name.clone(),
                        dtype: f.dtype,
                    }),
                    None => {
                        let have: Vec<&str> = p.features.iter().map(|f| f.name.as_str()).collect();
                        Err(format!(
                            "feature view {view} has no feature {feature} (its features: {})",
                            have.join(", ")
                        ))
                    }
                }
            }
        }
    }
}

/// The column name Feast gives a source feature in a transformation's input
/// (`view__feature`, the projection's alias when it has one).
pub fn input_column(projection: &Projection, feature: &str) -> String {
    format!("{}__{feature}", projection.name_to_use())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ValueType;
    use prost::Message;

    fn view() -> OnDemandView {
        OnDemandView {
            name: "transformed_conv_rate".into(),
            features: vec![
                Field::new("conv_rate_plus_val1", ValueType::Double),
                Field::new("conv_rate_plus_val2", ValueType::Double),
            ],
            sources: vec![
                OnDemandSource::View(Projection {
                    view: "driver_hourly_stats".into(),
                    alias: None,
                    features: vec![Field::new("conv_rate", ValueType::Float)],
                    join_key_map: Default::default(),
                }),
                OnDemandSource::Request {
                    name: "vals_to_add".into(),
                    schema: vec![
                        Field::new("val_to_add", ValueType::Int64),
                        Field::new("val_to_add_2", ValueType::Int64),
                    ],
                },
            ],
            transformation: Transformation::Pandas(Udf {
                name: "transformed_conv_rate".into(),
                body_text: "def transformed_conv_rate(inputs): ...".into(),
            }),
            write_to_online_store: false,
            entities: vec!["__dummy".into()],
            entity_columns: vec![Field::new("__dummy_id", ValueType::String)],
            description: String::new(),
            tags: Tags::new(),
            owner: String::new(),
            meta: Meta::default(),
        }
    }

    #[test]
    fn round_trips_through_its_proto() {
        let v = view();
        let bytes = v.to_proto("p").encode_to_vec();
        let back =
            OnDemandView::from_proto(pb::OnDemandFeatureView::decode(bytes.as_slice()).unwrap());
        assert_eq!(back, v);
        assert_eq!(back.view_sources().count(), 1);
        let fields: Vec<_> = back
            .request_fields()
            .map(|(_, f)| f.name.as_str())
            .collect();
        assert_eq!(fields, ["val_to_add", "val_to_add_2"]);
    }

    #[test]
    fn modes_are_read_from_the_spec() {
        let udf = || {
            Some(pb::FeatureTransformationV2 {
                transformation: Some(
                    pb::feature_transformation_v2::Transformation::UserDefinedFunction(
                        pb::UserDefinedFunctionV2 {
                            name: "f".into(),
                            body_text: "def f(x): ...".into(),
                            mode: String::new(),
                        },
                    ),
                ),
            })
        };
        assert!(matches!(
            Transformation::from_proto("python", udf(), None),
            Transformation::Python(Udf { ref name, .. }) if name == "f"
        ));
        assert!(Transformation::from_proto("", udf(), None).runs_on_transformation_service());
        assert_eq!(
            Transformation::from_proto("spark", udf(), None),
            Transformation::Other {
                mode: "spark".into()
            }
        );
        // Before feature_transformation existed, the function was in user_defined_function.
        let legacy = pb::UserDefinedFunction {
            name: "old".into(),
            body_text: "def old(x): ...".into(),
        };
        assert!(matches!(
            Transformation::from_proto("", None, Some(legacy)),
            Transformation::Pandas(Udf { ref name, .. }) if name == "old"
        ));
    }

    fn native_view() -> OnDemandView {
        OnDemandView {
            transformation: Transformation::Native {
                expressions: vec![
                    (
                        "conv_rate_plus_val1".into(),
                        "driver_hourly_stats.conv_rate + val_to_add".into(),
                    ),
                    (
                        "conv_rate_plus_val2".into(),
                        "coalesce(driver_hourly_stats.conv_rate, 0) + val_to_add_2 * 2\n".into(),
                    ),
                ],
            },
            ..view()
        }
    }

    #[test]
    fn native_views_round_trip_as_a_python_stub() {
        let v = native_view();
        let proto = v.to_proto("p");
        let spec = proto.spec.clone().unwrap();
        // Feast's SDK dispatches on the spec's mode: python, whose function it loads from text.
        assert_eq!(spec.mode, "python");
        let Some(pb::feature_transformation_v2::Transformation::UserDefinedFunction(udf)) =
            spec.feature_transformation.unwrap().transformation
        else {
            panic!("no function");
        };
        assert_eq!(udf.mode, NATIVE_MODE);
        assert_eq!(udf.name, NATIVE_FUNCTION);
        assert!(udf.body_text.contains("def quiver_native(inputs):"));
        let bytes = proto.encode_to_vec();
        let back =
            OnDemandView::from_proto(pb::OnDemandFeatureView::decode(bytes.as_slice()).unwrap());
        assert_eq!(back, v);
        assert_eq!(back.transformation.mode(), "quiver");
        assert!(!back.transformation.runs_on_transformation_service());
    }

    #[test]
    fn native_programs_evaluate_and_check_their_references() {
        let program = native_view().native_program().unwrap().unwrap();
        assert_eq!(program.inputs.len(), 3);
        let conv = [Value::Float(0.5), Value::Null];
        let val = [Value::Int64(1000), Value::Int64(1)];
        let val2 = [Value::Int64(2), Value::Int64(3)];
        let out = program.eval(&[&conv, &val, &val2], 2);
        assert_eq!(out[0], [Value::Double(1000.5), Value::Null]);
        assert_eq!(out[1], [Value::Double(4.5), Value::Double(6.0)]);

        let bad = |expr: &str| {
            let v = OnDemandView {
                transformation: Transformation::Native {
                    expressions: vec![
                        ("conv_rate_plus_val1".into(), "1.0".into()),
                        ("conv_rate_plus_val2".into(), expr.into()),
                    ],
                },
                ..view()
            };
            v.native_program().unwrap().unwrap_err().to_string()
        };
        assert!(bad("acc + 1").contains(
            "acc is not a request field of this view (its request fields: val_to_add, val_to_add_2)"
        ));
        assert!(bad("other.x").contains("other is not a source view"));
        assert!(
            bad("driver_hourly_stats.acc_rate")
                .contains("has no feature acc_rate (its features: conv_rate)")
        );
        assert!(bad("val_to_add").contains("feature conv_rate_plus_val2: expr column 1: the expression is Int64 but the feature is declared Float64"));
        let missing = OnDemandView {
            transformation: Transformation::Native {
                expressions: vec![],
            },
            ..view()
        };
        assert!(
            missing
                .native_program()
                .unwrap()
                .unwrap_err()
                .to_string()
                .contains("has no expression")
        );
    }

    #[test]
    fn a_stub_without_expressions_is_not_native() {
        assert_eq!(parse_native_body_text("def f(x): ..."), None);
        let text = native_body_text("v", &[("a".into(), "x || 'b'".into())]);
        assert_eq!(
            parse_native_body_text(&text),
            Some(vec![("a".to_owned(), "x || 'b'".to_owned())])
        );
    }
}

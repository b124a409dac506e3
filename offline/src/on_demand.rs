//! On-demand feature views in historical retrieval: the source views are joined as usual, then
//! each on-demand view's transformation runs on Feast's transformation service, batch by
//! batch, and its outputs are appended.
//!
//! ```text
//! select     requested features split into base features and on-demand outputs; each
//!            on-demand view's source features join the retrieval (full names, the input
//!            columns Feast's transformation expects: `view__feature`); its request fields
//!            must be entity-table columns (checked before any data is read)
//! join       the ordinary point-in-time join (historical.rs), full feature names
//! transform  per output batch of at most MAX_BATCH_ROWS rows: one TransformFeatures call per
//!            on-demand view with the joined columns (Arrow IPC file)
//! project    entity columns, then the requested features in request order: base features
//!            renamed (short or full names), on-demand outputs cast to their declared types
//! ```
//!
//! Feast's file offline store also returns the on-demand views' source features that were not
//! asked for; quiver returns what was asked for.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use quiver_core::ValueType;
use quiver_core::on_demand::{OnDemandView, Transformation, sent_to_transformation};
use quiver_core::registry::ProjectRegistry;
pub use quiver_transform::{TransformClient, TransformConfig};

use crate::Error;
use crate::historical::{self, Features, ViewRequest, select};

/// Rows sent to the transformation service in one call.
pub const MAX_BATCH_ROWS: usize = 10_000;

/// One column of the final output after the entity columns.
#[derive(Debug, Clone)]
enum Out {
    /// A joined feature, by its full name in the join's output.
    Base { joined: String, name: String },
    /// Output `feature` of on-demand view `call`.
    OnDemand {
        call: usize,
        feature: String,
        dtype: ValueType,
        name: String,
    },
}

/// What a request with on-demand views adds to the ordinary retrieval.
#[derive(Debug, Clone)]
pub struct OnDemandPlan {
    project: String,
    calls: Vec<Arc<OnDemandView>>,
    out: Vec<Out>,
}

/// The retrieval to run, and (when on-demand views are requested) what to do with its output.
pub struct Selection {
    /// The join: feature views, and native on-demand views computed inside it.
    pub views: historical::Selection,
    /// Full feature names in the join when on-demand views are requested (the transformation
    /// reads `view__feature`), else the request's choice.
    pub full_feature_names: bool,
    pub on_demand: Option<OnDemandPlan>,
}

impl OnDemandPlan {
    /// The on-demand views a request reads.
    pub fn views(&self) -> impl Iterator<Item = &str> {
        self.calls.iter().map(|v| v.name.as_str())
    }

    /// The output columns the on-demand views compute (short or full names).
    pub fn output_names(&self) -> impl Iterator<Item = &str> {
        self.out.iter().filter_map(|o| match o {
            Out::OnDemand { name, .. } => Some(name.as_str()),
            Out::Base { .. } => None,
        })
    }
}

/// An on-demand view computed by Feast's transformation service (native ones are computed in
/// the join itself, see `historical::select`).
fn through_service<'a>(registry: &'a ProjectRegistry, name: &str) -> Option<&'a OnDemandView> {
    registry
        .on_demand_view(name)
        .filter(|v| !matches!(v.transformation, Transformation::Native { .. }))
}

/// Splits a request into base features and on-demand outputs. Without on-demand views computed
/// by the transformation service it is [`select`] unchanged.
pub fn select_with_on_demand(
    registry: &ProjectRegistry,
    features: &Features,
    full: bool,
) -> Result<Selection, Error> {
    match features {
        Features::Refs(refs) => {
            // (view or alias, feature) pairs in request order, each base or on-demand.
            let mut wanted: Wanted = Vec::new();
            let mut base_projections: Vec<quiver_core::model::Projection> = Vec::new();
            // Native on-demand views requested beside service-computed ones.
            let mut native: Vec<crate::native::OnDemandRequest> = Vec::new();
            if !refs.iter().any(|r| {
                r.split_once(':')
                    .is_some_and(|(v, _)| through_service(registry, v).is_some())
            }) {
                return Ok(Selection {
                    views: select(registry, features)?,
                    full_feature_names: full,
                    on_demand: None,
                });
            }
            let mut base_refs = Vec::new();
            for r in refs {
                let (v, f) = r.split_once(':').ok_or_else(|| {
                    Error::bad_request(format!(
                        "feature reference {r:?}: expected view:feature (e.g. driver_hourly_stats:conv_rate)"
                    ))
                })?;
                let odfv = through_service(registry, v).map(|o| Arc::new(o.clone()));
                if odfv.is_none() {
                    base_refs.push(r.clone());
                }
                wanted.push((v.to_owned(), f.to_owned(), odfv));
            }
            if !base_refs.is_empty() {
                let base = select(registry, &Features::Refs(base_refs))?;
                // Native views are computed inside the join (named view__feature there) and
                // read from its output like base features.
                native = base.on_demand;
                for v in base.views {
                    base_projections.push(projection_of(&v));
                }
            }
            finish(registry, wanted, base_projections, native, full)
        }
        Features::Service(name) => {
            let service = registry.feature_service(name).ok_or_else(|| {
                Error::not_found(format!(
                    "project {} has no feature service {name:?}",
                    registry.project
                ))
            })?;
            if !service
                .projections
                .iter()
                .any(|p| through_service(registry, &p.view).is_some())
            {
                return Ok(Selection {
                    views: select(registry, features)?,
                    full_feature_names: full,
                    on_demand: None,
                });
            }
            select_projections(registry, &service.projections, full)
        }
    }
}

/// (view or alias, feature, the on-demand view computed by the transformation service) in
/// output order.
type Wanted = Vec<(String, String, Option<Arc<OnDemandView>>)>;

/// Like [`select_with_on_demand`] for projections (a feature service's, or what Feast's remote
/// offline client sends: views with aliases and join-key maps): feature views, native on-demand
/// views and ones computed by the transformation service, each possibly aliased.
pub fn select_projections(
    registry: &ProjectRegistry,
    projections: &[quiver_core::model::Projection],
    full: bool,
) -> Result<Selection, Error> {
    let mut wanted: Wanted = Vec::new();
    let mut base_projections: Vec<quiver_core::model::Projection> = Vec::new();
    let mut native: Vec<crate::native::OnDemandRequest> = Vec::new();
    for p in projections {
        if through_service(registry, &p.view).is_none()
            && let Some(v) = registry.on_demand_view(&p.view)
        {
            // A native view: computed inside the join, read from its output.
            let names: Vec<&str> = if p.features.is_empty() {
                v.features.iter().map(|f| f.name.as_str()).collect()
            } else {
                p.features.iter().map(|f| f.name.as_str()).collect()
            };
            for f in names {
                historical::select_on_demand(registry, &mut native, &p.view, p.name_to_use(), f)?;
                wanted.push((p.name_to_use().to_owned(), f.to_owned(), None));
            }
            continue;
        }
        let odfv = through_service(registry, &p.view).map(|o| Arc::new(o.clone()));
        let names: Vec<String> = match (&odfv, p.features.is_empty()) {
            (Some(o), true) => o.features.iter().map(|f| f.name.clone()).collect(),
            (None, true) => registry
                .feature_view(&p.view)
                .map(|v| v.features.iter().map(|f| f.name.clone()).collect())
                .unwrap_or_default(),
            _ => p.features.iter().map(|f| f.name.clone()).collect(),
        };
        if odfv.is_none() {
            base_projections.push(p.clone());
        }
        for f in names {
            wanted.push((p.name_to_use().to_owned(), f, odfv.clone()));
        }
    }
    finish(registry, wanted, base_projections, native, full)
}

/// The join's views (the base projections, then each on-demand view's sources merged in) and
/// the output columns.
fn finish(
    registry: &ProjectRegistry,
    wanted: Wanted,
    base_projections: Vec<quiver_core::model::Projection>,
    native: Vec<crate::native::OnDemandRequest>,
    full: bool,
) -> Result<Selection, Error> {
    // The base views, then each on-demand view's sources merged in.
    let mut views: Vec<ViewRequest> = Vec::new();
    let mut add = |p: &quiver_core::model::Projection, feature: &str| -> Result<(), Error> {
        let view = registry.feature_view(&p.view).ok_or_else(|| {
            Error::not_found(format!(
                "project {} has no feature view {:?}",
                registry.project, p.view
            ))
        })?;
        if view.feature(feature).is_none() {
            return Err(Error::not_found(format!(
                "feature view {} has no feature {feature:?}",
                view.name
            )));
        }
        let name_to_use = p.name_to_use();
        match views.iter_mut().find(|v| v.name_to_use == name_to_use) {
            Some(v) => {
                if !v.features.iter().any(|f| f == feature) {
                    v.features.push(feature.to_owned());
                }
            }
            None => views.push(ViewRequest {
                view: view.clone(),
                name_to_use: name_to_use.to_owned(),
                join_key_map: p.join_key_map.clone(),
                features: vec![feature.to_owned()],
            }),
        }
        Ok(())
    };
    for p in &base_projections {
        for f in &p.features {
            add(p, &f.name)?;
        }
    }
    let mut calls: Vec<Arc<OnDemandView>> = Vec::new();
    let mut out = Vec::new();
    for (prefix, feature, odfv) in wanted {
        let name = if full {
            format!("{prefix}__{feature}")
        } else {
            feature.clone()
        };
        let Some(odfv) = odfv else {
            out.push(Out::Base {
                joined: format!("{prefix}__{feature}"),
                name,
            });
            continue;
        };
        let declared = odfv.feature(&feature).ok_or_else(|| {
            Error::not_found(format!(
                "on-demand feature view {} has no feature {feature:?}",
                odfv.name
            ))
        })?;
        let dtype = declared.dtype;
        let call = match calls.iter().position(|c| c.name == odfv.name) {
            Some(i) => i,
            None => {
                if !odfv.transformation.runs_on_transformation_service() {
                    return Err(Error::unprocessable(format!(
                        "on-demand feature view {} has mode {:?}; Feast's transformation service runs mode \"pandas\" only",
                        odfv.name,
                        odfv.transformation.mode()
                    )));
                }
                for p in odfv.view_sources() {
                    for f in p
                        .features
                        .iter()
                        .filter(|f| sent_to_transformation(f.dtype))
                    {
                        add(p, &f.name)?;
                    }
                }
                calls.push(Arc::clone(&odfv));
                calls.len() - 1
            }
        };
        out.push(Out::OnDemand {
            call,
            feature,
            dtype,
            name,
        });
    }
    Ok(Selection {
        views: historical::Selection {
            views,
            on_demand: native,
        },
        full_feature_names: true,
        on_demand: Some(OnDemandPlan {
            project: registry.project.clone(),
            calls,
            out,
        }),
    })
}

fn projection_of(v: &ViewRequest) -> quiver_core::model::Projection {
    quiver_core::model::Projection {
        view: v.view.name.clone(),
        alias: (v.name_to_use != v.view.name).then(|| v.name_to_use.clone()),
        features: v
            .features
            .iter()
            .filter_map(|f| v.view.feature(f).cloned())
            .collect(),
        join_key_map: v.join_key_map.clone(),
    }
}

/// The Arrow type an on-demand output is written as.
fn arrow_type(dtype: ValueType) -> Result<DataType, Error> {
    Ok(match dtype {
        ValueType::Double => DataType::Float64,
        ValueType::Float => DataType::Float32,
        ValueType::Int64 => DataType::Int64,
        ValueType::Int32 => DataType::Int32,
        ValueType::Bool => DataType::Boolean,
        ValueType::String => DataType::Utf8,
        ValueType::Bytes => DataType::Binary,
        ValueType::UnixTimestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        other => {
            return Err(Error::unprocessable(format!(
                "an on-demand feature of type {other}: historical retrieval writes Int32, Int64, Float, Double, Bool, String, Bytes and UnixTimestamp outputs"
            )));
        }
    })
}

impl Selection {
    /// Plans the join over `entities` and starts it, computing the on-demand outputs with
    /// `client` (required when `self.on_demand` is set; callers name their own flag): the plan,
    /// the output schema and the stream. Request fields are checked before any data is read.
    pub async fn execute(
        self,
        engine: &historical::HistoricalEngine,
        registry: &ProjectRegistry,
        repo_dir: &std::path::Path,
        entities: historical::Entities,
        client: Option<Arc<TransformClient>>,
    ) -> Result<(historical::Planned, SchemaRef, SendableRecordBatchStream), Error> {
        if let Some(spark) = engine.spark() {
            if let Some(plan) = &self.on_demand {
                return Err(Error::unprocessable(format!(
                    "on-demand feature view {}: the Spark engine does not compute on-demand views (Feast's transformation service) yet",
                    plan.views().collect::<Vec<_>>().join(", ")
                )));
            }
            let r = spark
                .retrieve(
                    registry,
                    repo_dir,
                    &self.views,
                    self.full_feature_names,
                    entities,
                )
                .await?;
            let planned = historical::Planned::ran_elsewhere(r.rows, Arc::clone(&r.schema));
            return Ok((planned, r.schema, r.stream));
        }
        let planned = engine
            .plan(
                registry,
                repo_dir,
                &self.views,
                self.full_feature_names,
                entities,
            )
            .await?;
        let Some(plan) = self.on_demand else {
            let schema = Arc::clone(&planned.schema);
            let stream = engine.execute(&planned)?;
            return Ok((planned, schema, stream));
        };
        let client = client.ok_or_else(|| {
            Error::internal("on-demand views to compute without a transformation service")
        })?;
        let entity_columns = entity_columns(&planned.schema, &self.views);
        let schema = plan.output_schema(&planned.schema, &entity_columns)?;
        let stream = engine.execute(&planned)?;
        let stream = plan.apply(stream, Arc::clone(&schema), entity_columns, client);
        Ok((planned, schema, stream))
    }
}

/// The entity-table columns of a join's output `joined` (of `views`): the columns before the
/// feature columns.
fn entity_columns(joined: &Schema, views: &historical::Selection) -> Vec<String> {
    let features: usize = views.views.iter().map(|v| v.features.len()).sum::<usize>()
        + views
            .on_demand
            .iter()
            .map(|r| r.outputs.len())
            .sum::<usize>();
    let fields = joined.fields();
    fields[..fields.len().saturating_sub(features)]
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

impl OnDemandPlan {
    /// Checks the entity table has every request field (before any data is read), and gives
    /// the output schema of [`Self::apply`] for the join's output schema `joined`.
    pub fn output_schema(
        &self,
        joined: &Schema,
        entity_columns: &[String],
    ) -> Result<SchemaRef, Error> {
        for v in &self.calls {
            let missing: Vec<&str> = v
                .request_fields()
                .map(|(_, f)| f.name.as_str())
                .filter(|n| !entity_columns.iter().any(|c| c == n))
                .collect();
            if !missing.is_empty() {
                return Err(Error::bad_request(format!(
                    "the entity table has no column {}: request data of on-demand feature view {} (entity columns: {})",
                    missing.join(", "),
                    v.name,
                    entity_columns.join(", ")
                )));
            }
        }
        let mut fields: Vec<Field> = Vec::new();
        for c in entity_columns {
            let f = joined
                .field_with_name(c)
                .map_err(|_| Error::internal(format!("no entity column {c} in the join")))?;
            fields.push(f.clone());
        }
        for o in &self.out {
            match o {
                Out::Base { joined: j, name } => {
                    let f = joined
                        .field_with_name(j)
                        .map_err(|_| Error::internal(format!("no column {j} in the join")))?;
                    fields.push(f.clone().with_name(name));
                }
                Out::OnDemand { dtype, name, .. } => {
                    fields.push(Field::new(name, arrow_type(*dtype)?, true));
                }
            }
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// The join's output with the on-demand outputs computed and the columns projected.
    pub fn apply(
        self,
        joined: SendableRecordBatchStream,
        schema: SchemaRef,
        entity_columns: Vec<String>,
        client: Arc<TransformClient>,
    ) -> SendableRecordBatchStream {
        let plan = Arc::new(self);
        let out_schema = Arc::clone(&schema);
        let stream = joined
            .flat_map(|batch| {
                // Bounded calls: a large batch is sent in slices.
                let slices: Vec<Result<RecordBatch, datafusion::error::DataFusionError>> =
                    match batch {
                        Ok(b) => (0..b.num_rows().max(1))
                            .step_by(MAX_BATCH_ROWS)
                            .map(|start| {
                                Ok(b.slice(start, MAX_BATCH_ROWS.min(b.num_rows() - start)))
                            })
                            .collect(),
                        Err(e) => vec![Err(e)],
                    };
                futures::stream::iter(slices)
            })
            .then(move |batch| {
                let plan = Arc::clone(&plan);
                let client = Arc::clone(&client);
                let schema = Arc::clone(&out_schema);
                let entity_columns = entity_columns.clone();
                async move {
                    let batch = batch?;
                    plan.transform(&batch, &schema, &entity_columns, &client)
                        .await
                        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
                }
            });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }

    async fn transform(
        &self,
        batch: &RecordBatch,
        schema: &SchemaRef,
        entity_columns: &[String],
        client: &TransformClient,
    ) -> Result<RecordBatch, Error> {
        let mut outputs: BTreeMap<usize, RecordBatch> = BTreeMap::new();
        if batch.num_rows() > 0 {
            for (i, v) in self.calls.iter().enumerate() {
                let answer = client
                    .transform(&self.project, &v.name, batch)
                    .await
                    .map_err(|e| Error::wrap(format!("on-demand feature view {}", v.name), e))?;
                outputs.insert(i, answer);
            }
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for c in entity_columns {
            columns.push(column(batch, c)?);
        }
        for (o, field) in self
            .out
            .iter()
            .zip(schema.fields().iter().skip(entity_columns.len()))
        {
            let array = match o {
                Out::Base { joined, .. } => column(batch, joined)?,
                Out::OnDemand { call, feature, .. } => {
                    let view = &self.calls[*call].name;
                    match outputs.get(call) {
                        None => datafusion::arrow::array::new_null_array(field.data_type(), 0),
                        Some(answer) => {
                            let full = format!("{view}__{feature}");
                            let a = answer
                                .column_by_name(&full)
                                .or_else(|| answer.column_by_name(feature))
                                .ok_or_else(|| {
                                    Error::unprocessable(format!(
                                        "on-demand feature view {view}: the transformation returned no column {full}"
                                    ))
                                })?;
                            cast(a, field.data_type()).map_err(|e| {
                                Error::arrow(
                                    format!("on-demand feature view {view}: output {full}"),
                                    e,
                                )
                            })?
                        }
                    }
                }
            };
            columns.push(array);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
            .map_err(|e| Error::arrow("on-demand output", e))
    }
}

fn column(batch: &RecordBatch, name: &str) -> Result<ArrayRef, Error> {
    batch
        .column_by_name(name)
        .cloned()
        .ok_or_else(|| Error::internal(format!("no column {name} in the joined batch")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::historical::select_for_feast;
    use quiver_core::fault::{Classified, ErrorKind};

    /// The registry Feast 0.67 wrote for compat/feast_repo: `ride_features` (pandas) reads
    /// `driver_hourly_stats` and the request source `ride_request` (`distance_km`).
    fn feast_registry() -> ProjectRegistry {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../registry-sync/tests/fixtures/feast_quickstart_registry.db"
        ))
        .unwrap();
        quiver_core::registry::RegistryFile::decode(&bytes)
            .unwrap()
            .project("quickstart")
            .unwrap()
    }

    #[test]
    fn on_demand_outputs_bring_their_source_features_into_the_join() {
        let reg = feast_registry();
        let features = Features::Refs(vec![
            "driver_hourly_stats:acc_rate".into(),
            "ride_features:conv_per_km".into(),
        ]);
        let s = select_with_on_demand(&reg, &features, false).unwrap();
        assert!(s.full_feature_names, "the join names columns view__feature");
        let plan = s.on_demand.unwrap();
        assert_eq!(plan.views().collect::<Vec<_>>(), ["ride_features"]);
        // One view, the requested feature first, then the on-demand view's sources.
        assert_eq!(s.views.views.len(), 1);
        let v = &s.views.views[0];
        assert_eq!(v.name_to_use, "driver_hourly_stats");
        assert_eq!(v.features[0], "acc_rate");
        assert!(v.features.iter().any(|f| f == "conv_rate"));
        // The request field must be an entity column; checked before any data is read.
        let joined = Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("driver_hourly_stats__acc_rate", DataType::Float32, true),
        ]);
        let e = plan
            .output_schema(&joined, &["driver_id".to_owned()])
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadRequest);
        assert!(e.message().contains("distance_km"), "{e}");
        let joined = Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("distance_km", DataType::Float64, true),
            Field::new("driver_hourly_stats__acc_rate", DataType::Float32, true),
        ]);
        let entities = ["driver_id".to_owned(), "distance_km".to_owned()];
        let schema = plan.output_schema(&joined, &entities).unwrap();
        let out: Vec<(&str, &DataType)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type()))
            .collect();
        assert_eq!(
            out,
            [
                ("driver_id", &DataType::Int64),
                ("distance_km", &DataType::Float64),
                ("acc_rate", &DataType::Float32),
                ("conv_per_km", &DataType::Float64),
            ]
        );
        // Without on-demand views: `select` unchanged.
        let plain = Features::Refs(vec!["driver_hourly_stats:acc_rate".into()]);
        let s = select_with_on_demand(&reg, &plain, false).unwrap();
        assert!(s.on_demand.is_none() && !s.full_feature_names);
    }

    #[test]
    fn unknown_on_demand_features_are_not_found() {
        let reg = feast_registry();
        let features = Features::Refs(vec!["ride_features:nope".into()]);
        let e = select_with_on_demand(&reg, &features, true).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn the_offline_server_refuses_on_demand_views_instead_of_dropping_them() {
        let reg = feast_registry();
        let e = select_for_feast(
            &reg,
            &["driver_hourly_stats".to_owned()],
            &[None],
            &[
                "driver_hourly_stats:conv_rate".to_owned(),
                "ride_features:conv_per_km".to_owned(),
            ],
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotImplemented);
        assert!(e.message.contains("ride_features"), "{}", e.message);
    }
}

//! The registry as the serving path needs it: views with their online layouts resolved, feature
//! services, and a cache of request plans, so no request pays for registry lookups.
//!
//! A `ServingRegistry` is immutable once built; a new registry version is a new value swapped in
//! atomically, and a request holds the `Arc` it started with until it is answered.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use dashmap::DashMap;
use std::time::Duration;

use quiver_core::ValueType;
use quiver_core::model::{DataSource, FeatureService, FeatureView, Projection, SourceKind};
use quiver_core::on_demand::{NativeInput, NativeProgram, OnDemandView};
use quiver_core::registry::ProjectRegistry;
use quiver_online_store::ViewLayout;

use crate::cache::ViewId;
use crate::error::ApiError;
use crate::write_time::WriteTime;

/// At most this many distinct request shapes keep a plan (then the plan cache starts over).
const MAX_PLANS: usize = 4096;

#[derive(Debug)]
pub struct ServingView {
    pub id: ViewId,
    pub name: String,
    /// Join keys and their types, as the view's entity columns declare them.
    pub join_keys: Vec<(String, ValueType)>,
    pub features: Vec<(String, ValueType)>,
    /// Zero: values never expire.
    pub ttl: Duration,
    pub online: bool,
    /// Index of the view's layout in [`ServingRegistry::layouts`].
    pub layout: usize,
    /// The push source feeding the view, if any (`POST /push` writes to it).
    pub push_source: Option<String>,
    /// The event-time column of the view's (batch) source, as pushed rows carry it.
    pub timestamp_field: String,
    /// The created-time column of the view's source, when it has one.
    pub created_field: Option<String>,
    /// The path or URI of the view's file source (where `to: offline` pushes append).
    pub batch_source_uri: Option<String>,
    /// That source's own S3 endpoint (`s3_endpoint_override`; empty: the environment's).
    pub batch_source_s3_endpoint: String,
    /// Set for a write-time on-demand view (`write_to_online_store`): served from its stored
    /// rows like a view, computed when rows are written (`crate::write_time`).
    pub write_time: Option<Arc<WriteTime>>,
}

pub struct ServingRegistry {
    pub project: String,
    /// Local version, incremented on every swap.
    pub version: u64,
    /// The registry's own `version_id` (Feast writes a uuid per write).
    pub version_id: String,
    pub views: Vec<ServingView>,
    pub layouts: Vec<Arc<ViewLayout>>,
    by_name: HashMap<String, usize>,
    services: HashMap<String, FeatureService>,
    /// On-demand views computed per request (through the transformation service), by name;
    /// write-time views are not among them (they are `views`).
    pub on_demand: HashMap<String, Arc<OnDemandView>>,
    /// Native on-demand views (quiver's expressions): the compiled program, or why the view
    /// cannot be served (its expressions do not check against this registry).
    native: HashMap<String, Result<Arc<NativeProgram>, String>>,
    /// Resolved plans by request shape. Sharded, read-locked on the hot path.
    plans: DashMap<PlanKey, Arc<Plan>, foldhash::fast::RandomState>,
}

/// A request's shape: what decides its plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PlanKey {
    Features { refs: Vec<String>, full_names: bool },
    Service { name: String, full_names: bool },
}

/// How to answer one request shape: which views to read with which request columns, and which
/// output column each feature becomes.
#[derive(Debug)]
pub struct Plan {
    /// The request entity columns the plan reads, with the type each must parse as.
    pub entity_columns: Vec<(String, ValueType)>,
    pub groups: Vec<PlanGroup>,
    /// Feature columns in output order.
    pub columns: Vec<OutColumn>,
    /// The feature columns' names as JSON array items (`"a","b"`), rendered once; computed
    /// columns included, after the others (where Feast puts on-demand features too).
    pub names_json: String,
    /// The request fields native on-demand views read, with their declared types: taken out of
    /// the request's `entities` (not echoed back).
    pub request_fields: Vec<(String, ValueType)>,
    /// Native on-demand views to compute, their columns after `columns`.
    pub computed: Vec<ComputedView>,
}

/// One native on-demand view a plan computes.
#[derive(Debug)]
pub struct ComputedView {
    pub program: Arc<NativeProgram>,
    /// Where each of the program's inputs comes from.
    pub inputs: Vec<PlanInput>,
    /// (index of the program's output, output column name), in request order.
    pub outputs: Vec<(usize, String)>,
}

/// Where a computed view's input comes from.
#[derive(Debug, Clone, Copy)]
pub enum PlanInput {
    /// Feature `feature` of the view read by plan group `group`.
    Feature { group: usize, feature: usize },
    /// The request field at this index of `Plan::request_fields`.
    Request(usize),
}

/// One view read for one mapping of join keys to request columns.
#[derive(Debug)]
pub struct PlanGroup {
    pub view: usize,
    /// For each join key of the view (in view order): its name, and the index of the request
    /// column (in `Plan::entity_columns`) that carries it.
    pub keys: Vec<(String, usize)>,
}

#[derive(Debug)]
pub struct OutColumn {
    pub group: usize,
    /// Index into the view's features.
    pub feature: usize,
    pub name: String,
}

impl Plan {
    /// Whether the request column `name` comes back in the answer, and its index in
    /// `entity_columns` when it does: only the requested views' join keys are echoed, as Feast
    /// answers (request-only columns are inputs, not outputs).
    #[inline]
    pub fn echoed(&self, name: &str) -> Option<usize> {
        self.entity_columns.iter().position(|(c, _)| c == name)
    }
}

fn view_id(view: &FeatureView) -> ViewId {
    let mut h = DefaultHasher::new();
    view.name.hash(&mut h);
    for f in &view.features {
        f.name.hash(&mut h);
        (f.dtype as i32).hash(&mut h);
    }
    h.finish()
}

/// The source whose columns rows of a view carry: the batch source, or a push source's.
fn batch_source(v: &FeatureView) -> Option<&DataSource> {
    let source = v.batch_source.as_ref().or(v.stream_source.as_ref())?;
    match &source.kind {
        SourceKind::Push { batch_source } => Some(batch_source),
        _ => Some(source),
    }
}

impl ServingRegistry {
    pub fn build(reg: &ProjectRegistry, version: u64, version_id: &str) -> ServingRegistry {
        let entity_types: HashMap<&str, (&str, ValueType)> = reg
            .entities
            .iter()
            .map(|e| (e.name.as_str(), (e.join_key.as_str(), e.value_type)))
            .collect();
        let mut views = Vec::new();
        let mut layouts = Vec::new();
        let mut by_name = HashMap::new();
        for v in &reg.feature_views {
            // Entity columns carry the join keys' types; registries without them (old Feast)
            // fall back to the entities'.
            let join_keys: Vec<(String, ValueType)> = if v.entity_columns.is_empty() {
                v.entities
                    .iter()
                    .filter_map(|e| entity_types.get(e.as_str()))
                    .map(|(k, t)| ((*k).to_owned(), *t))
                    .collect()
            } else {
                v.entity_columns
                    .iter()
                    .map(|c| (c.name.clone(), c.dtype))
                    .collect()
            };
            let layout = Arc::new(ViewLayout::new(
                &reg.project,
                &v.name,
                v.features.iter().map(|f| f.name.clone()),
            ));
            by_name.insert(v.name.clone(), views.len());
            views.push(ServingView {
                id: view_id(v),
                name: v.name.clone(),
                join_keys,
                features: v
                    .features
                    .iter()
                    .map(|f| (f.name.clone(), f.dtype))
                    .collect(),
                ttl: v.ttl,
                online: v.online,
                layout: layouts.len(),
                push_source: [v.stream_source.as_ref(), v.batch_source.as_ref()]
                    .into_iter()
                    .flatten()
                    .find(|s| matches!(s.kind, SourceKind::Push { .. }))
                    .map(|s| s.name.clone()),
                timestamp_field: batch_source(v)
                    .map(|s| s.timestamp_field.clone())
                    .unwrap_or_default(),
                created_field: batch_source(v)
                    .map(|s| s.created_timestamp_column.clone())
                    .filter(|c| !c.is_empty()),
                batch_source_uri: batch_source(v).and_then(|s| match &s.kind {
                    SourceKind::File { uri, .. } => Some(uri.clone()),
                    _ => None,
                }),
                batch_source_s3_endpoint: batch_source(v)
                    .and_then(|s| match &s.kind {
                        SourceKind::File {
                            s3_endpoint_override,
                            ..
                        } => Some(s3_endpoint_override.clone()),
                        _ => None,
                    })
                    .unwrap_or_default(),
                write_time: None,
            });
            layouts.push(layout);
        }
        // Write-time on-demand views: stored rows under the view's own name, read like a view.
        for odfv in reg
            .on_demand_views
            .iter()
            .filter(|v| v.write_to_online_store)
        {
            let join_keys: Vec<(String, ValueType)> = if odfv.entity_columns.is_empty() {
                odfv.entities
                    .iter()
                    .filter_map(|e| entity_types.get(e.as_str()))
                    .map(|(k, t)| ((*k).to_owned(), *t))
                    .collect()
            } else {
                odfv.entity_columns
                    .iter()
                    .map(|c| (c.name.clone(), c.dtype))
                    .collect()
            };
            let write_time = WriteTime::new(&reg.project, odfv, &join_keys);
            by_name.insert(odfv.name.clone(), views.len());
            let mut h = DefaultHasher::new();
            ("on-demand", &odfv.name).hash(&mut h);
            for f in &odfv.features {
                f.name.hash(&mut h);
                (f.dtype as i32).hash(&mut h);
            }
            views.push(ServingView {
                id: h.finish(),
                name: odfv.name.clone(),
                join_keys,
                features: odfv
                    .features
                    .iter()
                    .map(|f| (f.name.clone(), f.dtype))
                    .collect(),
                ttl: Duration::ZERO,
                online: true,
                layout: layouts.len(),
                push_source: None,
                timestamp_field: String::new(),
                created_field: None,
                batch_source_uri: None,
                batch_source_s3_endpoint: String::new(),
                write_time: Some(Arc::new(write_time)),
            });
            layouts.push(Arc::new(ViewLayout::new(
                &reg.project,
                &odfv.name,
                odfv.features.iter().map(|f| f.name.clone()),
            )));
        }
        ServingRegistry {
            project: reg.project.clone(),
            version,
            version_id: version_id.to_owned(),
            views,
            layouts,
            by_name,
            services: reg
                .feature_services
                .iter()
                .map(|s| (s.name.clone(), s.clone()))
                .collect(),
            on_demand: reg
                .on_demand_views
                .iter()
                .filter(|v| !v.write_to_online_store && v.native_program().is_none())
                .map(|v| (v.name.clone(), Arc::new(v.clone())))
                .collect(),
            native: reg
                .on_demand_views
                .iter()
                .filter(|v| !v.write_to_online_store)
                .filter_map(|v| {
                    let program = v.native_program()?;
                    Some((
                        v.name.clone(),
                        program.map(Arc::new).map_err(|e| e.to_string()),
                    ))
                })
                .collect(),
            plans: DashMap::with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    pub fn view(&self, name: &str) -> Option<&ServingView> {
        self.by_name.get(name).map(|&i| &self.views[i])
    }

    /// Whether answering a request needs an on-demand view computed (then it is answered by
    /// [`crate::on_demand`], not by the engine alone).
    pub fn needs_on_demand(&self, features: Option<&[String]>, service: Option<&str>) -> bool {
        if self.on_demand.is_empty() {
            return false;
        }
        match (service, features) {
            (Some(name), _) => self.services.get(name).is_some_and(|s| {
                s.projections
                    .iter()
                    .any(|p| self.on_demand.contains_key(&p.view))
            }),
            (None, Some(refs)) => refs.iter().any(|r| {
                r.split_once(':')
                    .is_some_and(|(v, _)| self.on_demand.contains_key(v))
            }),
            (None, None) => false,
        }
    }

    /// A feature service, by name.
    pub fn service(&self, name: &str) -> Option<&FeatureService> {
        self.services.get(name)
    }

    /// Feature services that read an on-demand view, sorted (refused without a transformation
    /// service).
    pub fn on_demand_services(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .services
            .values()
            .filter(|s| {
                s.projections
                    .iter()
                    .any(|p| self.on_demand.contains_key(&p.view))
            })
            .map(|s| s.name.as_str())
            .collect();
        out.sort_unstable();
        out
    }

    /// The views a feature service reads, if there is such a service.
    pub fn service_views(&self, name: &str) -> Option<Vec<String>> {
        self.services
            .get(name)
            .map(|s| s.projections.iter().map(|p| p.view.clone()).collect())
    }

    /// The plan for a request shape, from the plan cache or resolved now.
    pub fn plan(&self, key: PlanKey) -> Result<Arc<Plan>, ApiError> {
        if let Some(p) = self.plans.get(&key) {
            return Ok(Arc::clone(&p));
        }
        let plan = Arc::new(self.resolve(&key)?);
        if self.plans.len() >= MAX_PLANS {
            self.plans.clear();
        }
        self.plans.insert(key, Arc::clone(&plan));
        Ok(plan)
    }

    pub(crate) fn servable(&self, view: &str) -> Result<usize, ApiError> {
        match self.by_name.get(view) {
            Some(&i) if self.views[i].online => Ok(i),
            Some(_) => Err(ApiError::bad_request(
                "FeatureViewNotOnline",
                format!("feature view {view} is not online (online: false); it cannot be served"),
            )),
            None if self.on_demand.contains_key(view) => Err(crate::on_demand::not_served(view)),
            None => Err(ApiError::not_found(
                "FeatureViewNotFoundException",
                format!(
                    "Feature view {view} does not exist in project {}",
                    self.project
                ),
            )),
        }
    }

    fn resolve(&self, key: &PlanKey) -> Result<Plan, ApiError> {
        // (view index, alias, join key map) -> group; then the features of each ref.
        let mut builder = PlanBuilder::default();
        match key {
            PlanKey::Features { refs, full_names } => {
                if refs.is_empty() {
                    return Err(ApiError::bad_request(
                        "EmptyFeatureList",
                        "features is empty: list feature references like \"view:feature\"",
                    ));
                }
                for r in refs {
                    let (view_name, feature) = r.split_once(':').ok_or_else(|| {
                        ApiError::bad_request(
                            "InvalidFeatureReference",
                            format!("{r:?} is not a feature reference: expected \"view:feature\""),
                        )
                    })?;
                    if let Some(program) = self.native.get(view_name) {
                        builder.computed(
                            self,
                            view_name,
                            program,
                            feature,
                            view_name,
                            *full_names,
                        )?;
                        continue;
                    }
                    let view = self.servable(view_name)?;
                    let f = self.feature_index(view, feature)?;
                    let group = builder.group(self, view, &BTreeMap::new())?;
                    builder.column(
                        group,
                        f,
                        view_name,
                        &self.views[view].features[f].0,
                        *full_names,
                    );
                }
            }
            PlanKey::Service { name, full_names } => {
                let service = self.services.get(name).ok_or_else(|| {
                    ApiError::not_found(
                        "FeatureServiceNotFoundException",
                        format!(
                            "Feature service {name} does not exist in project {}",
                            self.project
                        ),
                    )
                })?;
                for p in &service.projections {
                    self.add_projection(&mut builder, p, *full_names)?;
                }
            }
        }
        builder.finish()
    }

    fn add_projection(
        &self,
        builder: &mut PlanBuilder,
        p: &Projection,
        full_names: bool,
    ) -> Result<(), ApiError> {
        if let Some(program) = self.native.get(&p.view) {
            for field in &p.features {
                builder.computed(
                    self,
                    &p.view,
                    program,
                    &field.name,
                    p.name_to_use(),
                    full_names,
                )?;
            }
            return Ok(());
        }
        let view = self.servable(&p.view)?;
        let group = builder.group(self, view, &p.join_key_map)?;
        for field in &p.features {
            let f = self.feature_index(view, &field.name)?;
            builder.column(group, f, p.name_to_use(), &field.name, full_names);
        }
        Ok(())
    }

    pub(crate) fn feature_index(&self, view: usize, feature: &str) -> Result<usize, ApiError> {
        let v = &self.views[view];
        v.features
            .iter()
            .position(|(n, _)| n == feature)
            .ok_or_else(|| {
                ApiError::not_found(
                    "FeatureNotFoundException",
                    format!(
                        "Feature {feature} does not exist in feature view {}",
                        v.name
                    ),
                )
            })
    }
}

#[derive(Default)]
struct PlanBuilder {
    entity_columns: Vec<(String, ValueType)>,
    groups: Vec<PlanGroup>,
    group_keys: Vec<(usize, BTreeMap<String, String>)>,
    columns: Vec<OutColumn>,
    request_fields: Vec<(String, ValueType)>,
    /// Computed views, with the on-demand view's name.
    computed: Vec<(String, ComputedView)>,
}

impl PlanBuilder {
    fn group(
        &mut self,
        reg: &ServingRegistry,
        view: usize,
        join_key_map: &BTreeMap<String, String>,
    ) -> Result<usize, ApiError> {
        if let Some(i) = self
            .group_keys
            .iter()
            .position(|(v, m)| *v == view && m == join_key_map)
        {
            return Ok(i);
        }
        let mut keys = Vec::new();
        for (join_key, ty) in &reg.views[view].join_keys {
            let column = join_key_map.get(join_key).unwrap_or(join_key);
            let idx = match self.entity_columns.iter().position(|(c, _)| c == column) {
                Some(i) if self.entity_columns[i].1 == *ty => i,
                Some(i) => {
                    return Err(ApiError::bad_request(
                        "ConflictingEntityTypes",
                        format!(
                            "entity column {column} is {} for one view and {ty} for {}",
                            self.entity_columns[i].1, reg.views[view].name
                        ),
                    ));
                }
                None => {
                    self.entity_columns.push((column.clone(), *ty));
                    self.entity_columns.len() - 1
                }
            };
            keys.push((join_key.clone(), idx));
        }
        self.groups.push(PlanGroup { view, keys });
        self.group_keys.push((view, join_key_map.clone()));
        Ok(self.groups.len() - 1)
    }

    fn column(&mut self, group: usize, feature: usize, prefix: &str, name: &str, full_names: bool) {
        let name = if full_names {
            format!("{prefix}__{name}")
        } else {
            name.to_owned()
        };
        self.columns.push(OutColumn {
            group,
            feature,
            name,
        });
    }

    /// Adds feature `feature` of the native on-demand view `odfv` as a computed column, and
    /// what it reads: its source views as groups, its request fields.
    fn computed(
        &mut self,
        reg: &ServingRegistry,
        odfv: &str,
        program: &Result<Arc<NativeProgram>, String>,
        feature: &str,
        prefix: &str,
        full_names: bool,
    ) -> Result<(), ApiError> {
        let program = program.as_ref().map_err(|e| {
            ApiError::unprocessable(
                "OnDemandFeatureViewInvalid",
                format!("on-demand feature view {odfv} cannot be computed: {e}"),
            )
        })?;
        let Some(output) = program.outputs.iter().position(|(f, _)| f.name == feature) else {
            return Err(ApiError::not_found(
                "FeatureNotFoundException",
                format!("Feature {feature} does not exist in on-demand feature view {odfv}"),
            ));
        };
        let name = if full_names {
            format!("{prefix}__{feature}")
        } else {
            feature.to_owned()
        };
        if let Some((_, c)) = self.computed.iter_mut().find(|(n, _)| n == odfv) {
            c.outputs.push((output, name));
            return Ok(());
        }
        let mut inputs = Vec::with_capacity(program.inputs.len());
        for input in &program.inputs {
            inputs.push(match input {
                NativeInput::Feature { view, feature, .. } => {
                    let v = reg.servable(view)?;
                    let f = reg.feature_index(v, feature)?;
                    let group = self.group(reg, v, &BTreeMap::new())?;
                    PlanInput::Feature { group, feature: f }
                }
                NativeInput::Request { field, dtype } => {
                    match self.request_fields.iter().position(|(n, _)| n == field) {
                        Some(i) if self.request_fields[i].1 == *dtype => PlanInput::Request(i),
                        Some(i) => {
                            return Err(ApiError::bad_request(
                                "ConflictingRequestFieldTypes",
                                format!(
                                    "request field {field} is {} for one on-demand view and {dtype} for {odfv}",
                                    self.request_fields[i].1
                                ),
                            ));
                        }
                        None => {
                            self.request_fields.push((field.clone(), *dtype));
                            PlanInput::Request(self.request_fields.len() - 1)
                        }
                    }
                }
            });
        }
        self.computed.push((
            odfv.to_owned(),
            ComputedView {
                program: Arc::clone(program),
                inputs,
                outputs: vec![(output, name)],
            },
        ));
        Ok(())
    }

    fn finish(self) -> Result<Plan, ApiError> {
        let mut seen = HashSet::new();
        let computed_names = self
            .computed
            .iter()
            .flat_map(|(_, c)| c.outputs.iter().map(|(_, n)| n.as_str()));
        for name in self
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .chain(computed_names)
        {
            if !seen.insert(name) {
                return Err(ApiError::bad_request(
                    "FeatureNameCollisionError",
                    format!(
                        "feature name {name} is requested twice; set full_feature_names to true to tell them apart"
                    ),
                ));
            }
        }
        let mut names_json = String::new();
        let computed: Vec<ComputedView> = self.computed.into_iter().map(|(_, c)| c).collect();
        let names = self.columns.iter().map(|c| c.name.as_str()).chain(
            computed
                .iter()
                .flat_map(|c| c.outputs.iter().map(|(_, n)| n.as_str())),
        );
        for (i, name) in names.enumerate() {
            if i > 0 {
                names_json.push(',');
            }
            quiver_core::json::write_str(&mut names_json, name);
        }
        Ok(Plan {
            entity_columns: self.entity_columns,
            groups: self.groups,
            columns: self.columns,
            names_json,
            request_fields: self.request_fields,
            computed,
        })
    }
}

//! Historical retrieval: point-in-time-correct training datasets (Feast's
//! `get_historical_features`), on DataFusion.
//!
//! The rules (shared/feast-compat.md section 5): per entity row (keys K, time T) and feature
//! view, the source row with the same keys, the largest `event_ts <= T` and, when the view has a
//! ttl, `event_ts >= T - ttl`; ties on `event_ts` go to the larger created time; no such row gives
//! nulls. One output row per entity row, in input order, duplicates kept; entity columns first,
//! then features.
//!
//! The plan, per view: the source is scanned through a DataFusion listing table with only the
//! needed columns and the filter `T_min - ttl <= event_ts <= T_max` (row groups and pages pruned on
//! statistics, hive partitions on their values); both sides are hash-partitioned on the join keys
//! and sorted (DataFusion's `SortExec`, which spills to disk past the memory limit); then
//! [`AsOfJoinExec`] merges them. The entity rows carry their input position (`__row`), and a
//! final sort on it (spilling too) restores the input order. Views are joined one after the
//! other, each carrying the previous views' features along.
//!
//! Everything that can be wrong with a request (a missing or mistyped column, an unknown view or
//! feature, an unreadable file, a name clash) is found while planning, before any data is read.
//!
//! Length: the request is checked whole before any data is read (entity columns, every view's
//! source columns and types, name clashes), and those checks sit next to the plan they guard; the
//! as-of operator itself is `asof.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt64Array};
use datafusion::arrow::compute::{SortOptions, cast};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::options::{
    ArrowReadOptions, CsvReadOptions, ParquetReadOptions, ReadOptions,
};
use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::physical_expr::expressions::{CastExpr, Column, Literal};
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, execute_stream,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use quiver_core::ValueType;
use quiver_core::fault::{Classified, ErrorKind};
use quiver_core::model::{FeatureView, SourceKind};
use quiver_core::on_demand::NativeInput;
use quiver_core::registry::ProjectRegistry;

use crate::Error;
use crate::asof::{AsOfColumns, AsOfJoinExec};
use crate::convert;
use crate::native::{self, OnDemandRequest};
use crate::source::{self, Bucket, Format, Located};

/// The entity table's time column when there is more than one datetime column.
pub const EVENT_TIMESTAMP: &str = "event_timestamp";
pub(crate) const ROW: &str = "__quiver_row";
pub(crate) const TIME: &str = "__quiver_t";

/// Which features a request wants.
#[derive(Debug, Clone)]
pub enum Features {
    /// `view:feature` references.
    Refs(Vec<String>),
    /// A feature service's projections (aliases and join-key maps included).
    Service(String),
}

/// One feature view as a request uses it.
#[derive(Debug, Clone)]
pub struct ViewRequest {
    pub view: FeatureView,
    /// The alias, or the view's name: the prefix of full feature names.
    pub name_to_use: String,
    /// View join key → entity-table column.
    pub join_key_map: BTreeMap<String, String>,
    pub features: Vec<String>,
}

/// What a request reads: feature views, and native on-demand views computed from them.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub views: Vec<ViewRequest>,
    pub on_demand: Vec<OnDemandRequest>,
}

impl From<Vec<ViewRequest>> for Selection {
    fn from(views: Vec<ViewRequest>) -> Selection {
        Selection {
            views,
            on_demand: Vec::new(),
        }
    }
}

/// Adds feature `feature` of on-demand view `name`, when it is a native one (`Ok(false)`: no
/// on-demand view has that name).
pub(crate) fn select_on_demand(
    registry: &ProjectRegistry,
    out: &mut Vec<OnDemandRequest>,
    name: &str,
    prefix: &str,
    feature: &str,
) -> Result<bool, Error> {
    let Some(view) = registry.on_demand_view(name) else {
        return Ok(false);
    };
    let program = match view.native_program() {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            return Err(Error::unprocessable(format!(
                "on-demand feature view {name} cannot be computed: {e}"
            )));
        }
        None => {
            return Err(Error::unprocessable(format!(
                "on-demand feature view {name} is a {} transformation: historical retrieval computes native (quiver expression) views only",
                view.transformation.mode()
            )));
        }
    };
    let Some(output) = program.outputs.iter().position(|(f, _)| f.name == feature) else {
        return Err(Error::not_found(format!(
            "on-demand feature view {name} has no feature {feature:?} (its features: {})",
            view.features
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    match out.iter_mut().find(|r| r.name == prefix) {
        Some(r) if r.outputs.contains(&output) => {}
        Some(r) => r.outputs.push(output),
        None => out.push(OnDemandRequest {
            name: prefix.to_owned(),
            program: Arc::new(program),
            outputs: vec![output],
        }),
    }
    Ok(true)
}

/// Resolves `Features` against the registry: every view and feature must exist.
pub fn select(registry: &ProjectRegistry, features: &Features) -> Result<Selection, Error> {
    let mut on_demand = Vec::new();
    match features {
        Features::Refs(refs) => {
            if refs.is_empty() {
                return Err(Error::bad_request("no features requested"));
            }
            let mut out: Vec<ViewRequest> = Vec::new();
            for r in refs {
                let (view_name, feature) = r.split_once(':').ok_or_else(|| {
                    Error::bad_request(format!(
                        "feature reference {r:?}: expected view:feature (e.g. driver_hourly_stats:conv_rate)"
                    ))
                })?;
                if select_on_demand(registry, &mut on_demand, view_name, view_name, feature)? {
                    continue;
                }
                let view = registry.feature_view(view_name).ok_or_else(|| {
                    Error::not_found(format!(
                        "feature reference {r:?}: project {} has no feature view {view_name:?}",
                        registry.project
                    ))
                })?;
                if view.feature(feature).is_none() {
                    return Err(Error::not_found(format!(
                        "feature reference {r:?}: feature view {view_name} has no feature {feature:?} (its features: {})",
                        view.features
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                match out.iter_mut().find(|v| v.name_to_use == view_name) {
                    Some(v) => {
                        if !v.features.iter().any(|f| f == feature) {
                            v.features.push(feature.to_owned());
                        }
                    }
                    None => out.push(ViewRequest {
                        view: view.clone(),
                        name_to_use: view_name.to_owned(),
                        join_key_map: BTreeMap::new(),
                        features: vec![feature.to_owned()],
                    }),
                }
            }
            Ok(Selection {
                views: out,
                on_demand,
            })
        }
        Features::Service(name) => {
            let service = registry.feature_service(name).ok_or_else(|| {
                Error::not_found(format!(
                    "project {} has no feature service {name:?}",
                    registry.project
                ))
            })?;
            let mut views = Vec::new();
            for p in &service.projections {
                if registry.on_demand_view(&p.view).is_some() {
                    for f in &p.features {
                        select_on_demand(
                            registry,
                            &mut on_demand,
                            &p.view,
                            p.name_to_use(),
                            &f.name,
                        )?;
                    }
                    continue;
                }
                views.push(p);
            }
            let views = views
                .into_iter()
                .map(|p| {
                    let view = registry.feature_view(&p.view).ok_or_else(|| {
                        Error::unprocessable(format!(
                            "feature service {name}: feature view {:?} does not exist",
                            p.view
                        ))
                    })?;
                    let features: Vec<String> = if p.features.is_empty() {
                        view.features.iter().map(|f| f.name.clone()).collect()
                    } else {
                        p.features.iter().map(|f| f.name.clone()).collect()
                    };
                    for f in &features {
                        if view.feature(f).is_none() {
                            return Err(Error::unprocessable(format!(
                                "feature service {name}: feature view {} has no feature {f:?}",
                                view.name
                            )));
                        }
                    }
                    Ok(ViewRequest {
                        view: view.clone(),
                        name_to_use: p.name_to_use().to_owned(),
                        join_key_map: p.join_key_map.clone(),
                        features,
                    })
                })
                .collect::<Result<Vec<ViewRequest>, Error>>()?;
            Ok(Selection { views, on_demand })
        }
    }
}

/// Resolves a Feast client's request (the remote offline store's `feature_view_names`,
/// `name_aliases` and `feature_refs`): an alias names a feature-service projection of that view,
/// whose join-key map applies.
pub fn select_for_feast(
    registry: &ProjectRegistry,
    view_names: &[String],
    aliases: &[Option<String>],
    refs: &[String],
) -> Result<Vec<ViewRequest>, FeastError> {
    // Feature views only: the offline server computes on-demand views through
    // `on_demand::select_with_on_demand`; dropping them here would silently lose their columns.
    if let Some(odfv) = refs
        .iter()
        .filter_map(|r| r.split_once(':'))
        .map(|(prefix, _)| prefix)
        .find(|p| registry.on_demand_view(p).is_some() && !view_names.iter().any(|v| v == p))
    {
        return Err(FeastError::new(
            ErrorKind::NotImplemented,
            "FeastError",
            format!(
                "on-demand feature view {odfv}: resolve requests with on-demand views through on_demand::select_with_on_demand"
            ),
        ));
    }
    let mut out = Vec::new();
    for (i, view_name) in view_names.iter().enumerate() {
        let view = registry
            .feature_view(view_name)
            .ok_or_else(|| FeastError::view_not_found(view_name, &registry.project))?;
        let alias = aliases.get(i).cloned().flatten();
        let mut join_key_map = BTreeMap::new();
        if let Some(alias) = &alias {
            for service in &registry.feature_services {
                for p in &service.projections {
                    if p.view == *view_name && p.alias.as_deref() == Some(alias.as_str()) {
                        join_key_map = p.join_key_map.clone();
                    }
                }
            }
        }
        let name_to_use = alias.unwrap_or_else(|| view_name.clone());
        let mut features = Vec::new();
        for r in refs {
            if let Some((prefix, feature)) = r.split_once(':')
                && prefix == name_to_use
            {
                if view.feature(feature).is_none() {
                    return Err(FeastError::new(
                        ErrorKind::NotFound,
                        "FeastError",
                        format!("Feature view {view_name} has no feature {feature}"),
                    ));
                }
                features.push(feature.to_owned());
            }
        }
        out.push(ViewRequest {
            view: view.clone(),
            name_to_use,
            join_key_map,
            features,
        });
    }
    Ok(out)
}

/// An error as Feast's SDK rebuilds it: the Python module and class, and the message; its
/// kind picks the gRPC code.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct FeastError {
    pub module: String,
    pub class: String,
    pub message: String,
    pub kind: ErrorKind,
}

impl FeastError {
    /// A `feast.errors.<class>`.
    pub fn new(kind: ErrorKind, class: &str, message: impl Into<String>) -> FeastError {
        FeastError {
            module: "feast.errors".to_owned(),
            class: class.to_owned(),
            message: message.into(),
            kind,
        }
    }

    /// A `feast.errors.FeastError` about a malformed request.
    pub fn bad_request(message: impl Into<String>) -> FeastError {
        FeastError::new(ErrorKind::BadRequest, "FeastError", message)
    }

    pub fn view_not_found(view: &str, project: &str) -> FeastError {
        FeastError::new(
            ErrorKind::NotFound,
            "FeatureViewNotFoundException",
            format!("Feature view {view} does not exist in project {project}"),
        )
    }
}

impl Classified for FeastError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// A client sees [`Error::public_message`] (an object store's own words replaced by the kind
/// of failure); the whole message is logged here.
impl From<Error> for FeastError {
    fn from(e: Error) -> FeastError {
        let public = e.public_message();
        let message = e.message();
        if public != message {
            crate::error::log(e.kind(), "offline request failed upstream", &message);
        }
        FeastError::new(e.kind(), "FeastError", public)
    }
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Memory for sorts and joins; past it they spill to disk. `None`: unbounded.
    pub memory_limit: Option<usize>,
    /// Where spill files go (default: the system's temp dir).
    pub spill_dir: Option<PathBuf>,
    /// Parallel partitions (default: four per core).
    pub partitions: usize,
    pub batch_size: usize,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            memory_limit: None,
            spill_dir: None,
            // More partitions than cores: smaller sorts, and scan, sort and merge overlap
            // (5M x 1M on 2 cores: 3.5 s with 2 partitions, 2.9 s with 4, 2.5 s with 8).
            partitions: 4 * std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            batch_size: 8192,
        }
    }
}

/// A DataFusion session set up for historical retrieval.
#[derive(Clone)]
pub struct HistoricalEngine {
    ctx: SessionContext,
    partitions: usize,
    /// When set (`offline_store: {type: spark}`), joins run on Spark; this session still reads
    /// entity tables and writes outputs.
    spark: Option<Arc<crate::spark::historical::SparkEngine>>,
}

/// A planned retrieval: run it with [`HistoricalEngine::execute`].
pub struct Planned {
    pub plan: Arc<dyn ExecutionPlan>,
    /// Entity rows, which is also the number of output rows.
    pub rows: usize,
    /// The output's schema (on-demand features included).
    pub schema: SchemaRef,
    /// Native on-demand views, evaluated on the plan's batches.
    stage: Option<Arc<native::Stage>>,
}

impl Planned {
    /// A retrieval that ran elsewhere (on Spark): its plan is an empty placeholder, never
    /// executed; `rows` and `schema` are the retrieval's.
    pub(crate) fn ran_elsewhere(rows: usize, schema: SchemaRef) -> Planned {
        Planned {
            plan: Arc::new(datafusion::physical_plan::empty::EmptyExec::new(
                Arc::clone(&schema),
            )),
            rows,
            schema,
            stage: None,
        }
    }

    /// Spill files written and bytes spilled so far by the plan's operators.
    pub fn spilled(&self) -> (usize, usize) {
        fn walk(plan: &Arc<dyn ExecutionPlan>, acc: &mut (usize, usize)) {
            if let Some(m) = plan.metrics() {
                acc.0 += m.spill_count().unwrap_or(0);
                acc.1 += m.spilled_bytes().unwrap_or(0);
            }
            for child in plan.children() {
                walk(child, acc);
            }
        }
        let mut acc = (0, 0);
        walk(&self.plan, &mut acc);
        acc
    }
}

/// The entity table: its batches and schema, as read or received.
pub struct Entities {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl Entities {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// An entity table's batches in the order of its files and rows: partition by partition (files
/// are grouped in path order, a large file split into byte ranges in order), where `collect`
/// would interleave the partitions as their batches arrive.
async fn in_input_order(
    df: datafusion::dataframe::DataFrame,
    context: &str,
) -> Result<Vec<RecordBatch>, Error> {
    Ok(df
        .collect_partitioned()
        .await
        .map_err(df_error(context))?
        .into_iter()
        .flatten()
        .collect())
}

fn df_error(context: &str) -> impl Fn(datafusion::error::DataFusionError) -> Error + '_ {
    move |e| Error::query(context, e)
}

impl HistoricalEngine {
    pub fn new(options: &EngineOptions) -> Result<HistoricalEngine, Error> {
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(limit) = options.memory_limit {
            let pool = TrackConsumersPool::new(
                FairSpillPool::new(limit),
                std::num::NonZeroUsize::new(5).unwrap_or(std::num::NonZeroUsize::MIN),
            );
            runtime = runtime.with_memory_pool(Arc::new(pool));
        }
        let disk = match &options.spill_dir {
            Some(dir) => DiskManagerBuilder::default()
                .with_mode(DiskManagerMode::Directories(vec![dir.clone()])),
            None => DiskManagerBuilder::default().with_mode(DiskManagerMode::OsTmpDirectory),
        };
        let runtime = runtime
            .with_disk_manager_builder(disk)
            .build_arc()
            .map_err(df_error("starting the query engine"))?;
        let partitions = options.partitions.max(1);
        // Each sort sets this much aside to merge its spill files; several sorts run at once,
        // so under a small limit the reservation shrinks with it.
        let merge_reserve = options.memory_limit.map_or(10 << 20, |limit| {
            (limit / (16 * partitions)).clamp(256 << 10, 10 << 20)
        });
        let mut config = SessionConfig::new()
            .with_target_partitions(partitions)
            .with_batch_size(options.batch_size.max(1024))
            // Keep strings as the files have them (Utf8): what Feast clients expect back.
            .set_bool(
                "datafusion.execution.parquet.schema_force_view_types",
                false,
            )
            .set_bool("datafusion.execution.parquet.pushdown_filters", false);
        config.options_mut().execution.sort_spill_reservation_bytes = merge_reserve;
        Ok(HistoricalEngine {
            ctx: SessionContext::new_with_config_rt(config, runtime),
            partitions,
            spark: None,
        })
    }

    /// Joins run on Spark ([`crate::spark::historical`]) instead of here.
    pub fn with_spark(mut self, spark: crate::spark::historical::SparkEngine) -> HistoricalEngine {
        self.spark = Some(Arc::new(spark));
        self
    }

    pub fn spark(&self) -> Option<&crate::spark::historical::SparkEngine> {
        self.spark.as_deref()
    }

    /// A DataFrame over `located`'s files: a listing table of one file, or of a folder's (or
    /// prefix's) data files with its hive partitions. For objects, the bucket's client is
    /// registered with the engine first. `what` names the table in errors ("feature view x:
    /// source"); returns the location as shown in them.
    async fn listing(
        &self,
        located: &Located,
        what: &str,
    ) -> Result<(datafusion::dataframe::DataFrame, String), Error> {
        let (format, ext) = located
            .first()
            .ok_or_else(|| Error::not_found(format!("{what}: no files")))?;
        let (mut url, is_dir, shown) = match located {
            Located::Local { root, is_dir, .. } => (
                root.display().to_string(),
                *is_dir,
                root.display().to_string(),
            ),
            Located::Object {
                bucket, is_prefix, ..
            } => (bucket.uri.to_string(), *is_prefix, bucket.uri.to_string()),
        };
        if is_dir && !url.ends_with('/') {
            url.push('/');
        }
        let context = format!("{what} {shown}");
        let table_url = ListingTableUrl::parse(&url).map_err(df_error(&context))?;
        if let Located::Object { bucket, .. } = located {
            self.ctx.register_object_store(
                table_url.object_store().as_ref(),
                Arc::clone(&bucket.store),
            );
        }
        let config = self.ctx.copied_config();
        let table_options = self.ctx.copied_table_options();
        let listing = match format {
            Format::Parquet => ParquetReadOptions::default()
                .file_extension(&ext)
                .to_listing_options(&config, table_options),
            Format::Csv => CsvReadOptions::new()
                .file_extension(&ext)
                .to_listing_options(&config, table_options),
            Format::ArrowIpc => ArrowReadOptions {
                file_extension: &ext,
                ..Default::default()
            }
            .to_listing_options(&config, table_options),
        };
        let state = self.ctx.state();
        let mut table_config = ListingTableConfig::new(table_url).with_listing_options(listing);
        if is_dir {
            table_config = table_config
                .infer_partitions_from_path(&state)
                .await
                .map_err(df_error(&context))?;
        }
        let table_config = table_config
            .infer_schema(&state)
            .await
            .map_err(df_error(&context))?;
        let table = ListingTable::try_new(table_config).map_err(df_error(&context))?;
        let df = self
            .ctx
            .read_table(Arc::new(table))
            .map_err(df_error(&context))?;
        Ok((df, shown))
    }

    /// Reads an entity table from a local file ([`HistoricalEngine::read_entities`]) or from S3 or GCS:
    /// one object (`s3://bucket/entities.parquet`) or the data objects under a prefix
    /// (`s3://bucket/entities/`, Spark's `_SUCCESS` and hidden objects skipped). The bucket's
    /// client is configured from the environment, as for the registry.
    pub async fn read_entities_at(&self, location: &str) -> Result<Entities, Error> {
        const WHAT: &str = "entity table";
        match source::object_uri(location, WHAT)? {
            None => self.read_entities(Path::new(location)).await,
            Some((uri, folder)) => {
                let bucket = Bucket::open(uri, "", WHAT)?;
                let located = source::locate_objects(bucket, folder).await?;
                self.read_located_entities(&located).await
            }
        }
    }

    /// Reads an entity table from files already found: see [`source::locate_objects`].
    /// Each file is read on its own, in path order: how DataFusion spreads several files over
    /// its partitions does not follow their order, and the table's order is its rows' identity.
    pub async fn read_located_entities(&self, located: &Located) -> Result<Entities, Error> {
        let one_by_one: Vec<Located> = match located {
            Located::Object {
                bucket,
                is_prefix: true,
                files,
            } => files
                .iter()
                .map(|file| {
                    let mut bucket = bucket.clone();
                    bucket.uri.key = file.0.location.to_string();
                    Located::Object {
                        bucket,
                        is_prefix: false,
                        files: vec![file.clone()],
                    }
                })
                .collect(),
            _ => vec![located.clone()],
        };
        let mut schema: Option<SchemaRef> = None;
        let mut batches = Vec::new();
        for part in &one_by_one {
            let (df, shown) = self.listing(part, "entity table").await?;
            let context = format!("entity table {shown}");
            let part_schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            match &schema {
                Some(first) if first != &part_schema => {
                    return Err(Error::unprocessable(format!(
                        "{context}: its columns ({}) differ from the first part's ({})",
                        source::column_list(&part_schema),
                        source::column_list(first)
                    )));
                }
                Some(_) => {}
                None => schema = Some(part_schema),
            }
            batches.extend(in_input_order(df, &context).await?);
        }
        let schema = schema.ok_or_else(|| Error::not_found("entity table: no files"))?;
        Ok(Entities { schema, batches })
    }

    /// Reads an entity table from a Parquet, CSV or Arrow IPC file.
    pub async fn read_entities(&self, path: &Path) -> Result<Entities, Error> {
        let shown = path.display().to_string();
        std::fs::metadata(path).map_err(|e| Error::io(format!("entity file {shown}"), e))?;
        let format = Format::of(path).ok_or_else(|| {
            Error::bad_request(format!(
                "entity file {shown}: unknown format; name it .parquet, .csv or .arrow"
            ))
        })?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| format!(".{e}"))
            .unwrap_or_default();
        let context = format!("entity file {shown}");
        let df = match format {
            Format::Parquet => {
                self.ctx
                    .read_parquet(
                        shown.as_str(),
                        ParquetReadOptions::default().file_extension(&ext),
                    )
                    .await
            }
            Format::Csv => {
                self.ctx
                    .read_csv(shown.as_str(), CsvReadOptions::new().file_extension(&ext))
                    .await
            }
            Format::ArrowIpc => {
                self.ctx
                    .read_arrow(
                        shown.as_str(),
                        ArrowReadOptions {
                            file_extension: &ext,
                            ..Default::default()
                        },
                    )
                    .await
            }
        }
        .map_err(df_error(&context))?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = in_input_order(df, &context).await?;
        Ok(Entities { schema, batches })
    }

    /// Checks the request against the registry, the entity table and the sources, and builds
    /// the plan. Nothing is read but file metadata.
    pub async fn plan(
        &self,
        registry: &ProjectRegistry,
        repo_dir: &Path,
        selection: &Selection,
        full_feature_names: bool,
        entities: Entities,
    ) -> Result<Planned, Error> {
        if selection.views.is_empty() && selection.on_demand.is_empty() {
            return Err(Error::bad_request("no feature views requested"));
        }
        let requested = &selection.views;
        let entity_schema = strip_pandas_index(&entities.schema);
        let time_column = entity_time_column(&entity_schema)?;
        // The entity time is answered as Feast answers it: a UTC timestamp (naive ones are UTC),
        // whatever it was read as (a CSV's text or seconds, a date, another unit or zone).
        let entity_schema = with_utc_time(&entity_schema, &time_column);
        // Output names, checked for clashes up front.
        let mut names: HashMap<String, String> = entity_schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), "an entity column".to_owned()))
            .collect();
        let odfv_names: Vec<Vec<String>> = selection
            .on_demand
            .iter()
            .map(|r| {
                r.outputs
                    .iter()
                    .map(|&o| {
                        let f = &r.program.outputs[o].0.name;
                        if full_feature_names {
                            format!("{}__{f}", r.name)
                        } else {
                            f.clone()
                        }
                    })
                    .collect()
            })
            .collect();
        let all_outputs = requested
            .iter()
            .flat_map(|v| {
                v.features.iter().map(move |f| {
                    (
                        output_name(v, f, full_feature_names),
                        format!("feature {}:{f}", v.name_to_use),
                    )
                })
            })
            .chain(
                selection
                    .on_demand
                    .iter()
                    .zip(&odfv_names)
                    .flat_map(|(r, names)| {
                        names
                            .iter()
                            .map(move |n| (n.clone(), format!("on-demand feature of {}", r.name)))
                    }),
            );
        for (out, what) in all_outputs {
            if let Some(prev) = names.insert(out.clone(), what.clone()) {
                return Err(Error::bad_request(format!(
                    "output column {out:?} would be both {prev} and {what}; use full feature names (view__feature) or a feature service alias"
                )));
            }
        }
        // The source features on-demand views read, joined too (hidden when not requested),
        // and their request fields, which must be entity columns of the right type.
        let mut views: Vec<ViewRequest> = requested.clone();
        let visible: Vec<usize> = views.iter().map(|v| v.features.len()).collect();
        let mut odfv_inputs: Vec<Vec<OdfvInput>> = Vec::new();
        for r in &selection.on_demand {
            let mut inputs = Vec::new();
            for input in &r.program.inputs {
                inputs.push(match input {
                    NativeInput::Feature { view, feature, .. } => {
                        let n = match views
                            .iter()
                            .position(|v| v.name_to_use == *view && v.join_key_map.is_empty())
                        {
                            Some(n) => n,
                            None => {
                                let fv = registry.feature_view(view).ok_or_else(|| {
                                    Error::unprocessable(format!(
                                        "on-demand feature view {}: its source feature view {view} does not exist",
                                        r.name
                                    ))
                                })?;
                                views.push(ViewRequest {
                                    view: fv.clone(),
                                    name_to_use: view.clone(),
                                    join_key_map: BTreeMap::new(),
                                    features: Vec::new(),
                                });
                                views.len() - 1
                            }
                        };
                        let j = match views[n].features.iter().position(|f| f == feature) {
                            Some(j) => j,
                            None => {
                                views[n].features.push(feature.clone());
                                views[n].features.len() - 1
                            }
                        };
                        OdfvInput::Joined(internal_feature(n, j))
                    }
                    NativeInput::Request { field, dtype } => {
                        let f = entity_schema.field_with_name(field).map_err(|_| {
                            Error::bad_request(format!(
                                "on-demand feature view {} reads the request field {field} ({dtype}): add it as a column of the entity table",
                                r.name
                            ))
                        })?;
                        if !convert::compatible(f.data_type(), *dtype) {
                            return Err(Error::bad_request(format!(
                                "entity table column {field} is {} but on-demand feature view {} reads it as {dtype}",
                                f.data_type(),
                                r.name
                            )));
                        }
                        OdfvInput::Entity(field.clone())
                    }
                });
            }
            odfv_inputs.push(inputs);
        }
        let (entity_batches, t_min, t_max) =
            prepare_entities(&entities, &entity_schema, &time_column)?;
        let rows: usize = entity_batches.iter().map(|b| b.num_rows()).sum();
        let prepared_schema = match entity_batches.first() {
            Some(b) => b.schema(),
            None => Arc::new(with_internal_columns(&entity_schema)),
        };
        let mut plan: Arc<dyn ExecutionPlan> =
            MemorySourceConfig::try_new_exec(&[entity_batches], prepared_schema, None)
                .map_err(df_error("entity table"))?;
        let mut feature_columns: Vec<(String, String)> = Vec::new();
        for (n, v) in views.iter().enumerate() {
            let view_plan = self
                .plan_view(registry, repo_dir, v, &entity_schema, (t_min, t_max), n)
                .await?;
            plan = self.join_view(plan, view_plan, n)?;
            for (j, f) in v.features.iter().enumerate() {
                if j < visible.get(n).copied().unwrap_or(0) {
                    feature_columns.push((
                        internal_feature(n, j),
                        output_name(v, f, full_feature_names),
                    ));
                }
            }
        }
        // Back to input order.
        let row_sort = sort_by(&plan.schema(), &[ROW])?;
        plan = Arc::new(SortExec::new(row_sort.clone(), plan).with_preserve_partitioning(true));
        if plan.output_partitioning().partition_count() > 1 {
            plan = Arc::new(SortPreservingMergeExec::new(row_sort, plan));
        }
        let schema = plan.schema();
        let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::new();
        for f in entity_schema.fields() {
            exprs.push((column(&schema, f.name())?, f.name().clone()));
        }
        for (internal, out) in &feature_columns {
            exprs.push((column(&schema, internal)?, out.clone()));
        }
        // On-demand inputs after the output columns: hidden features under their internal
        // names; request fields are entity columns already.
        let keep = exprs.len();
        let mut stage_views = Vec::new();
        for (r, inputs) in selection.on_demand.iter().zip(&odfv_inputs) {
            let mut at = Vec::with_capacity(inputs.len());
            for input in inputs {
                let name = match input {
                    OdfvInput::Joined(internal) => internal,
                    OdfvInput::Entity(field) => field,
                };
                let i = match exprs.iter().position(|(_, n)| n == name) {
                    Some(i) if matches!(input, OdfvInput::Entity(_)) => i,
                    _ => match exprs[keep..].iter().position(|(_, n)| n == name) {
                        Some(i) => keep + i,
                        None => {
                            exprs.push((column(&schema, name)?, name.clone()));
                            exprs.len() - 1
                        }
                    },
                };
                at.push(i);
            }
            stage_views.push((r.clone(), at));
        }
        let plan: Arc<dyn ExecutionPlan> =
            Arc::new(ProjectionExec::try_new(exprs, plan).map_err(df_error("output"))?);
        let stage = if selection.on_demand.is_empty() {
            None
        } else {
            Some(Arc::new(native::Stage::new(
                &plan.schema(),
                keep,
                stage_views,
                &odfv_names,
            )?))
        };
        Ok(Planned {
            schema: stage
                .as_ref()
                .map_or_else(|| plan.schema(), |s| Arc::clone(&s.schema)),
            plan,
            rows,
            stage,
        })
    }

    /// Runs a plan: the output, in entity-table order.
    pub fn execute(&self, planned: &Planned) -> Result<SendableRecordBatchStream, Error> {
        let stream = execute_stream(Arc::clone(&planned.plan), self.ctx.task_ctx())
            .map_err(df_error("historical retrieval"))?;
        let Some(stage) = planned.stage.clone() else {
            return Ok(stream);
        };
        use futures::StreamExt;
        let computed = stream.map(move |batch| {
            batch.and_then(|b| {
                stage
                    .apply(&b)
                    .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
            })
        });
        Ok(Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                Arc::clone(&planned.schema),
                computed,
            ),
        ))
    }

    /// The source side of one view: scanned, filtered to the window, keys cast to the entity
    /// side's types, times as Int64 nanoseconds.
    async fn plan_view(
        &self,
        registry: &ProjectRegistry,
        repo_dir: &Path,
        v: &ViewRequest,
        entity_schema: &Schema,
        (t_min, t_max): (Option<i64>, Option<i64>),
        n: usize,
    ) -> Result<SourceSide, Error> {
        let view = &v.view;
        let name = &view.name;
        let mut source = view.batch_source.as_ref().ok_or_else(|| {
            Error::unprocessable(format!("feature view {name} has no batch source"))
        })?;
        if let SourceKind::Push { batch_source } = &source.kind {
            source = batch_source;
        }
        let SourceKind::File {
            uri,
            s3_endpoint_override,
            ..
        } = &source.kind
        else {
            return Err(Error::unprocessable(format!(
                "feature view {name}: its source {} is a {} source; quiver reads file sources",
                source.name,
                source.kind_name()
            )));
        };
        let column_of = |feature: &str| -> String {
            source
                .field_mapping
                .iter()
                .find(|(_, to)| to.as_str() == feature)
                .map(|(from, _)| from.clone())
                .unwrap_or_else(|| feature.to_owned())
        };
        if source.timestamp_field.is_empty() {
            return Err(Error::unprocessable(format!(
                "feature view {name}: source {} has no timestamp_field",
                source.name
            )));
        }
        // Entity side: the join keys' columns must be there, with compatible types.
        let mut keys = Vec::new();
        for (join_key, declared) in crate::join_keys(registry, view)? {
            let entity_column = v
                .join_key_map
                .get(&join_key)
                .cloned()
                .unwrap_or_else(|| join_key.clone());
            let field = entity_schema.field_with_name(&entity_column).map_err(|_| {
                Error::bad_request(format!(
                    "the entity table has no column {entity_column:?}, the join key of feature view {name} (entity columns: {})",
                    source::column_list(entity_schema)
                ))
            })?;
            // An entity declared without a type gives its views a String key by default (Feast's
            // label views do that); Feast's join then keys on the data as it is, and so does
            // quiver: the entity table's column type decides.
            let untyped = view.entities.iter().any(|e| {
                registry
                    .entity(e)
                    .is_some_and(|e| e.join_key == join_key && e.value_type == ValueType::Invalid)
            });
            let value_type = match (untyped, key_type_of_data(field.data_type())) {
                (true, Some(t)) => t,
                _ => declared,
            };
            let canonical = canonical_key_type(value_type).ok_or_else(|| {
                Error::unprocessable(format!(
                    "feature view {name}: join key {join_key} is of type {value_type}; historical retrieval supports Int32, Int64, String and Bytes keys"
                ))
            })?;
            if !convert::compatible(field.data_type(), value_type) {
                return Err(Error::bad_request(format!(
                    "entity column {entity_column:?} is {}, but join key {join_key} of feature view {name} holds {value_type} values",
                    field.data_type()
                )));
            }
            keys.push((entity_column, column_of(&join_key), value_type, canonical));
        }
        // The source's files: local, or objects read through a client registered for their
        // bucket.
        let located = source::locate(uri, s3_endpoint_override, repo_dir)
            .await
            .map_err(|e| e.context(format!("feature view {name}")))?;
        let (df, shown) = self
            .listing(&located, &format!("feature view {name}: source"))
            .await?;
        let context = format!("feature view {name}: source {shown}");
        let source_schema: Schema = df.schema().as_arrow().clone();
        let path = &shown;
        let field = |column: &str, role: &str| -> Result<Field, Error> {
            source_schema
                .field_with_name(column)
                .cloned()
                .map_err(|_| {
                    Error::unprocessable(format!(
                        "feature view {name}: source {path} has no column {column:?} ({role}); its columns: {}",
                        source::column_list(&source_schema)
                    ))
                })
        };
        for (_, source_column, value_type, _) in &keys {
            let f = field(source_column, "join key")?;
            if !convert::compatible(f.data_type(), *value_type) {
                return Err(Error::unprocessable(format!(
                    "feature view {name}: source {path} column {source_column:?} (join key) is {}, expected {value_type} values",
                    f.data_type()
                )));
            }
        }
        let ts_column = column_of(&source.timestamp_field);
        let created_column = (!source.created_timestamp_column.is_empty())
            .then(|| column_of(&source.created_timestamp_column));
        for (column, role) in std::iter::once((ts_column.as_str(), "event timestamp"))
            .chain(created_column.as_deref().map(|c| (c, "created timestamp")))
        {
            let f = field(column, role)?;
            if !convert::is_time_type(f.data_type()) {
                return Err(Error::unprocessable(format!(
                    "feature view {name}: source {path} column {column:?} ({role}) is {}, expected a timestamp",
                    f.data_type()
                )));
            }
        }
        let mut features = Vec::new();
        for feature in &v.features {
            let declared = view.feature(feature).map(|f| f.dtype).ok_or_else(|| {
                Error::not_found(format!("feature view {name} has no feature {feature:?}"))
            })?;
            let source_column = column_of(feature);
            let f = field(&source_column, "feature")?;
            if !convert::compatible(f.data_type(), declared) {
                return Err(Error::unprocessable(format!(
                    "feature view {name}: source {path} column {source_column:?} is {}, which cannot hold the feature's type {declared}",
                    f.data_type()
                )));
            }
            features.push(source_column);
        }
        // Only what the window can use: event_ts in [T_min - ttl, T_max].
        let ts_field = field(&ts_column, "event timestamp")?;
        let ttl = duration_nanos(view.ttl);
        let mut df = df;
        if let DataType::Timestamp(unit, tz) = ts_field.data_type()
            && let Some(t_max) = t_max
        {
            let per = unit_nanos(*unit);
            let upper = t_max.div_euclid(per);
            let mut filter: Expr =
                col(ident(&ts_column)).lt_eq(lit(timestamp_scalar(*unit, tz.clone(), upper)));
            if ttl > 0
                && let Some(t_min) = t_min
            {
                let lower = t_min.saturating_sub(ttl);
                // ceil(lower / per)
                let lower = lower.div_euclid(per) + i64::from(lower.rem_euclid(per) != 0);
                filter = filter.and(col(ident(&ts_column)).gt_eq(lit(timestamp_scalar(
                    *unit,
                    tz.clone(),
                    lower,
                ))));
            }
            df = df.filter(filter).map_err(df_error(&context))?;
        }
        let mut needed: Vec<String> = keys.iter().map(|k| k.1.clone()).collect();
        needed.push(ts_column.clone());
        needed.extend(created_column.clone());
        needed.extend(features.iter().cloned());
        needed.dedup();
        let mut unique = Vec::new();
        for c in needed {
            if !unique.contains(&c) {
                unique.push(c);
            }
        }
        let df = df
            .select(unique.iter().map(|c| col(ident(c))).collect::<Vec<_>>())
            .map_err(df_error(&context))?;
        let scan = df
            .create_physical_plan()
            .await
            .map_err(df_error(&context))?;
        let schema = scan.schema();
        let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::new();
        for (i, (_, source_column, _, canonical)) in keys.iter().enumerate() {
            exprs.push((
                cast_to(column(&schema, source_column)?, canonical.clone()),
                format!("__k{i}"),
            ));
        }
        exprs.push((
            time_nanos(column(&schema, &ts_column)?, ts_field.data_type()),
            "__ts".into(),
        ));
        match &created_column {
            Some(c) => {
                let f = field(c, "created timestamp")?;
                exprs.push((
                    time_nanos(column(&schema, c)?, f.data_type()),
                    "__created".into(),
                ));
            }
            None => exprs.push((
                Arc::new(Literal::new(ScalarValue::Int64(None))),
                "__created".into(),
            )),
        }
        for (j, c) in features.iter().enumerate() {
            exprs.push((column(&schema, c)?, internal_feature(n, j)));
        }
        let right: Arc<dyn ExecutionPlan> =
            Arc::new(ProjectionExec::try_new(exprs, scan).map_err(df_error(&context))?);
        Ok(SourceSide {
            keys: keys
                .into_iter()
                .map(|(entity_column, _, _, canonical)| (entity_column, canonical))
                .collect(),
            ttl,
            right,
            features: v.features.len(),
        })
    }

    /// Joins one view onto the entity plan.
    fn join_view(
        &self,
        left: Arc<dyn ExecutionPlan>,
        view: SourceSide,
        n: usize,
    ) -> Result<Arc<dyn ExecutionPlan>, Error> {
        let context = "planning the join";
        let left_schema = left.schema();
        let carried = left_schema.fields().len();
        // Entity side: everything it carries, plus the keys as the join compares them.
        let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = left_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                (
                    Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>,
                    f.name().clone(),
                )
            })
            .collect();
        let n_keys = view.keys.len();
        for (i, (entity_column, canonical)) in view.keys.iter().enumerate() {
            exprs.push((
                cast_to(column(&left_schema, entity_column)?, canonical.clone()),
                format!("__k{i}"),
            ));
        }
        let mut left: Arc<dyn ExecutionPlan> =
            Arc::new(ProjectionExec::try_new(exprs, left).map_err(df_error(context))?);
        let mut right = view.right;
        let key_names: Vec<String> = (0..n_keys).map(|i| format!("__k{i}")).collect();
        if self.partitions > 1 && n_keys > 0 {
            let hash = |plan: &Arc<dyn ExecutionPlan>| -> Result<Partitioning, Error> {
                let schema = plan.schema();
                let exprs = key_names
                    .iter()
                    .map(|k| column(&schema, k))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Partitioning::Hash(exprs, self.partitions))
            };
            let lp = hash(&left)?;
            left = Arc::new(RepartitionExec::try_new(left, lp).map_err(df_error(context))?);
            let rp = hash(&right)?;
            right = Arc::new(RepartitionExec::try_new(right, rp).map_err(df_error(context))?);
        } else {
            // Entityless views (one key for all rows), or one partition: one stream each.
            if left.output_partitioning().partition_count() > 1 {
                left = Arc::new(CoalescePartitionsExec::new(left));
            }
            if right.output_partitioning().partition_count() > 1 {
                right = Arc::new(CoalescePartitionsExec::new(right));
            }
        }
        let mut left_order: Vec<&str> = key_names.iter().map(String::as_str).collect();
        left_order.push(TIME);
        let mut right_order: Vec<&str> = key_names.iter().map(String::as_str).collect();
        right_order.push("__ts");
        right_order.push("__created");
        let left = Arc::new(
            SortExec::new(sort_by(&left.schema(), &left_order)?, left)
                .with_preserve_partitioning(true),
        ) as Arc<dyn ExecutionPlan>;
        let right = Arc::new(
            SortExec::new(sort_by(&right.schema(), &right_order)?, right)
                .with_preserve_partitioning(true),
        ) as Arc<dyn ExecutionPlan>;
        let ls = left.schema();
        let rs = right.schema();
        let index = |schema: &Schema, name: &str| {
            schema
                .index_of(name)
                .map_err(|e| Error::internal(format!("{context}: {e}")))
        };
        let columns = AsOfColumns {
            left_keys: key_names
                .iter()
                .map(|k| index(&ls, k))
                .collect::<Result<_, _>>()?,
            left_time: index(&ls, TIME)?,
            left_output: (0..carried).collect(),
            right_keys: key_names
                .iter()
                .map(|k| index(&rs, k))
                .collect::<Result<_, _>>()?,
            right_time: index(&rs, "__ts")?,
            right_output: (0..view.features)
                .map(|j| index(&rs, &internal_feature(n, j)))
                .collect::<Result<_, _>>()?,
        };
        let mut fields: Vec<Arc<Field>> = ls.fields().iter().take(carried).cloned().collect();
        for &i in &columns.right_output {
            fields.push(Arc::new(rs.field(i).clone().with_nullable(true)));
        }
        let schema = Arc::new(Schema::new(fields));
        Ok(Arc::new(
            AsOfJoinExec::try_new(left, right, columns, view.ttl, schema)
                .map_err(df_error(context))?,
        ))
    }
}

struct SourceSide {
    /// Entity column and the type both sides are cast to, per join key.
    keys: Vec<(String, DataType)>,
    ttl: i64,
    right: Arc<dyn ExecutionPlan>,
    features: usize,
}

/// Where an on-demand view's input is in the joined batch.
enum OdfvInput {
    /// A joined feature, by its internal column name.
    Joined(String),
    /// An entity-table column (a request field).
    Entity(String),
}

pub(crate) fn internal_feature(view: usize, feature: usize) -> String {
    format!("__quiver_v{view}_f{feature}")
}

/// The output name of a feature: `prefix__feature` with full names.
pub fn output_name(v: &ViewRequest, feature: &str, full: bool) -> String {
    if full {
        format!("{}__{feature}", v.name_to_use)
    } else {
        feature.to_owned()
    }
}

/// A column name as a DataFusion identifier (no parsing of dots or case folding).
fn ident(name: &str) -> datafusion::common::Column {
    datafusion::common::Column::new_unqualified(name)
}

fn column(schema: &Schema, name: &str) -> Result<Arc<dyn PhysicalExpr>, Error> {
    let i = schema
        .index_of(name)
        .map_err(|_| Error::internal(format!("no column {name:?} in the plan")))?;
    Ok(Arc::new(Column::new(name, i)))
}

fn cast_to(expr: Arc<dyn PhysicalExpr>, to: DataType) -> Arc<dyn PhysicalExpr> {
    Arc::new(CastExpr::new(expr, to, None))
}

/// A timestamp or date column as Int64 nanoseconds since the epoch (UTC; the unit converted,
/// the zone kept so no local-time shift happens).
fn time_nanos(expr: Arc<dyn PhysicalExpr>, from: &DataType) -> Arc<dyn PhysicalExpr> {
    let ns = match from {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Nanosecond, tz.clone()),
        _ => DataType::Timestamp(TimeUnit::Nanosecond, None),
    };
    cast_to(cast_to(expr, ns), DataType::Int64)
}

fn sort_by(schema: &Schema, names: &[&str]) -> Result<LexOrdering, Error> {
    let exprs = names
        .iter()
        .map(|n| {
            Ok(PhysicalSortExpr {
                expr: column(schema, n)?,
                options: SortOptions {
                    descending: false,
                    nulls_first: true,
                },
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    LexOrdering::new(exprs).ok_or_else(|| Error::internal("empty sort"))
}

/// The key type an entity table's column holds, for keys whose entity declares no type.
pub(crate) fn key_type_of_data(t: &DataType) -> Option<ValueType> {
    match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => Some(ValueType::Int64),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(ValueType::String),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Some(ValueType::Bytes),
        _ => None,
    }
}

pub(crate) fn canonical_key_type(t: ValueType) -> Option<DataType> {
    match t {
        ValueType::Int32 | ValueType::Int64 => Some(DataType::Int64),
        ValueType::String => Some(DataType::Utf8),
        ValueType::Bytes => Some(DataType::Binary),
        _ => None,
    }
}

pub(crate) fn duration_nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn unit_nanos(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

fn timestamp_scalar(unit: TimeUnit, tz: Option<Arc<str>>, v: i64) -> ScalarValue {
    match unit {
        TimeUnit::Second => ScalarValue::TimestampSecond(Some(v), tz),
        TimeUnit::Millisecond => ScalarValue::TimestampMillisecond(Some(v), tz),
        TimeUnit::Microsecond => ScalarValue::TimestampMicrosecond(Some(v), tz),
        TimeUnit::Nanosecond => ScalarValue::TimestampNanosecond(Some(v), tz),
    }
}

/// The schema without pandas' index columns (`__index_level_0__`), which `pa.Table.from_pandas`
/// adds for a non-default index.
pub(crate) fn strip_pandas_index(schema: &Schema) -> Schema {
    Schema::new(
        schema
            .fields()
            .iter()
            .filter(|f| !(f.name().starts_with("__index_level_") && f.name().ends_with("__")))
            .cloned()
            .collect::<Vec<_>>(),
    )
}

fn is_datetime(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
    )
}

/// `event_timestamp`, else the only datetime column (Feast's rule).
pub fn entity_time_column(schema: &Schema) -> Result<String, Error> {
    if let Ok(f) = schema.field_with_name(EVENT_TIMESTAMP) {
        if is_datetime(f.data_type())
            || matches!(
                f.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            )
        {
            return Ok(EVENT_TIMESTAMP.to_owned());
        }
        return Err(Error::bad_request(format!(
            "entity column \"event_timestamp\" is {}, expected a timestamp",
            f.data_type()
        )));
    }
    let times: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| is_datetime(f.data_type()))
        .map(|f| f.name().as_str())
        .collect();
    match times.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(Error::bad_request(format!(
            "the entity table has no \"event_timestamp\" column and no other timestamp column (columns: {})",
            source::column_list(schema)
        ))),
        many => Err(Error::bad_request(format!(
            "the entity table has no \"event_timestamp\" column and several timestamp columns ({}); name the one to join on event_timestamp",
            many.join(", ")
        ))),
    }
}

/// The type of the entity time column in the output: Feast's `datetime64[ns, UTC]`.
fn utc_time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// The schema with the entity time column as [`utc_time_type`].
pub(crate) fn with_utc_time(schema: &Schema, time_column: &str) -> Schema {
    Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                if f.name() == time_column {
                    Arc::new(f.as_ref().clone().with_data_type(utc_time_type()))
                } else {
                    Arc::clone(f)
                }
            })
            .collect::<Vec<_>>(),
    )
}

fn with_internal_columns(schema: &Schema) -> Schema {
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(ROW, DataType::UInt64, false)));
    fields.push(Arc::new(Field::new(TIME, DataType::Int64, true)));
    Schema::new(fields)
}

/// Entity batches ready to join, and the smallest and largest entity time.
pub(crate) type PreparedEntities = (Vec<RecordBatch>, Option<i64>, Option<i64>);

/// Entity batches with the row position and the time (Int64 ns, UTC) appended; and the
/// smallest and largest time.
pub(crate) fn prepare_entities(
    entities: &Entities,
    schema: &Schema,
    time_column: &str,
) -> Result<PreparedEntities, Error> {
    let out_schema = Arc::new(with_internal_columns(schema));
    let mut out = Vec::with_capacity(entities.batches.len());
    let mut row = 0u64;
    let (mut t_min, mut t_max) = (None::<i64>, None::<i64>);
    for batch in &entities.batches {
        let n = batch.num_rows();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len() + 2);
        for f in schema.fields() {
            let c = batch.column_by_name(f.name()).ok_or_else(|| {
                Error::bad_request(format!(
                    "entity table: a batch has no column {:?}",
                    f.name()
                ))
            })?;
            columns.push(Arc::clone(c));
        }
        let t = batch.column_by_name(time_column).ok_or_else(|| {
            Error::bad_request(format!("entity table: no column {time_column:?}"))
        })?;
        let nanos = entity_nanos(t.as_ref(), time_column)?;
        for v in nanos.iter().flatten() {
            t_min = Some(t_min.map_or(v, |m| m.min(v)));
            t_max = Some(t_max.map_or(v, |m| m.max(v)));
        }
        if let Ok(i) = schema.index_of(time_column) {
            columns[i] = cast(&nanos, &utc_time_type())
                .map_err(|e| Error::bad_request(format!("entity column {time_column:?}: {e}")))?;
        }
        columns.push(Arc::new(UInt64Array::from_iter_values(row..row + n as u64)));
        columns.push(Arc::new(nanos));
        row += n as u64;
        out.push(
            RecordBatch::try_new(Arc::clone(&out_schema), columns)
                .map_err(|e| Error::bad_request(format!("entity table: {e}")))?,
        );
    }
    Ok((out, t_min, t_max))
}

/// The entity time as Int64 nanoseconds since the epoch: timestamps of any unit (naive = UTC),
/// dates, or RFC 3339 strings.
fn entity_nanos(array: &dyn Array, name: &str) -> Result<Int64Array, Error> {
    let fail = |e: &dyn std::fmt::Display| {
        Error::bad_request(format!("entity column {name:?} (the entity time): {e}"))
    };
    let as_ts: ArrayRef = match array.data_type() {
        DataType::Timestamp(_, tz) => cast(
            array,
            &DataType::Timestamp(TimeUnit::Nanosecond, tz.clone()),
        )
        .map_err(|e| fail(&e))?,
        DataType::Date32 | DataType::Date64 => {
            cast(array, &DataType::Timestamp(TimeUnit::Nanosecond, None)).map_err(|e| fail(&e))?
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let parsed = cast(
                array,
                &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            )
            .map_err(|e| fail(&e))?;
            if parsed.null_count() > array.null_count() {
                return Err(fail(&"some values are not timestamps"));
            }
            parsed
        }
        other => return Err(fail(&format!("{other} is not a timestamp type"))),
    };
    let ints = cast(&as_ts, &DataType::Int64).map_err(|e| fail(&e))?;
    Ok(ints
        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
        .clone())
}

//! quiver's typed model of feature definitions, and its mapping to and from Feast's registry
//! protos. Converting a model object to a proto and back gives the same object; the project is
//! not part of the objects (a registry is read per project) and is supplied when writing.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ValueType;
use crate::proto::core as pb;
use crate::time::Timestamp;

pub type Tags = BTreeMap<String, String>;

/// The hidden entity Feast registers for views without entities (join key `__dummy_id`).
pub const DUMMY_ENTITY: &str = "__dummy";

/// Registry bookkeeping kept with each object: when it was created and last changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    pub created: Option<Timestamp>,
    pub last_updated: Option<Timestamp>,
}

/// An entity: what features are keyed on. Feast allows exactly one join key per entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub name: String,
    pub join_key: String,
    pub value_type: ValueType,
    pub description: String,
    pub tags: Tags,
    pub owner: String,
    pub meta: Meta,
}

/// A named, typed column: a feature, an entity column, or a request-source field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub dtype: ValueType,
    pub description: String,
    pub tags: Tags,
}

impl Field {
    pub fn new(name: impl Into<String>, dtype: ValueType) -> Field {
        Field {
            name: name.into(),
            dtype,
            description: String::new(),
            tags: Tags::new(),
        }
    }
}

/// Where a view's rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// Files (Parquet and friends) at a local path or an object-store URI.
    File {
        uri: String,
        s3_endpoint_override: String,
    },
    /// Values that arrive with the request, for on-demand transformations.
    Request { schema: Vec<Field> },
    /// Rows pushed to the online store, backed by a batch source for history.
    Push { batch_source: Box<DataSource> },
    /// Feast's SparkSource: what Spark reads, one of a table (catalog name), a SQL query, or a
    /// path with its format (`parquet`, `csv`, `json`, `orc`, ... as Spark names them). Read
    /// through the Spark offline store only.
    Spark {
        table: String,
        query: String,
        path: String,
        file_format: String,
        date_partition_column_format: String,
    },
    /// A source type quiver does not read (BigQuery, Kafka, ...), by Feast's enum number.
    Other { source_type: i32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct DataSource {
    pub name: String,
    pub kind: SourceKind,
    pub timestamp_field: String,
    pub created_timestamp_column: String,
    pub date_partition_column: String,
    /// Source column → feature name.
    pub field_mapping: BTreeMap<String, String>,
    pub description: String,
    pub tags: Tags,
    pub owner: String,
}

impl DataSource {
    /// The word used in definitions and listings: `file`, `request`, `push`, `spark` or `other`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            SourceKind::File { .. } => "file",
            SourceKind::Request { .. } => "request",
            SourceKind::Push { .. } => "push",
            SourceKind::Spark { .. } => "spark",
            SourceKind::Other { .. } => "other",
        }
    }
}

/// Feast keeps stream feature views and label views in their own registry lists, with other
/// field numbers; all three are served, pushed to and joined the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewKind {
    Batch,
    Stream,
    /// A Feast 0.67 `LabelView`: mutable labels fed by a push source. Feast never materializes
    /// one (labels arrive by push only).
    Label(LabelOptions),
}

/// What a label view has beyond a feature view's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelOptions {
    /// The column naming who wrote a label (Feast's default `labeler`).
    pub labeler_field: String,
    pub conflict_policy: ConflictPolicy,
    /// The feature view whose entities the labels annotate (informational; may be empty).
    pub reference_feature_view: String,
}

/// How a label view resolves labels written for one entity by several labelers. Feast 0.67
/// enforces it only in its UI's offline reads; its online store is always last-write-wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictPolicy {
    LastWriteWins,
    LabelerPriority,
    MajorityVote,
    /// An enum number this version of Feast's proto does not define.
    Other(i32),
}

impl ConflictPolicy {
    pub fn from_proto(n: i32) -> ConflictPolicy {
        match pb::ConflictResolutionPolicy::try_from(n) {
            Ok(pb::ConflictResolutionPolicy::LastWriteWins) => ConflictPolicy::LastWriteWins,
            Ok(pb::ConflictResolutionPolicy::LabelerPriority) => ConflictPolicy::LabelerPriority,
            Ok(pb::ConflictResolutionPolicy::MajorityVote) => ConflictPolicy::MajorityVote,
            Err(_) => ConflictPolicy::Other(n),
        }
    }

    pub fn to_proto(self) -> i32 {
        match self {
            ConflictPolicy::LastWriteWins => pb::ConflictResolutionPolicy::LastWriteWins as i32,
            ConflictPolicy::LabelerPriority => pb::ConflictResolutionPolicy::LabelerPriority as i32,
            ConflictPolicy::MajorityVote => pb::ConflictResolutionPolicy::MajorityVote as i32,
            ConflictPolicy::Other(n) => n,
        }
    }

    /// The name Feast's SDK and CLI print (`ConflictPolicy.value`), e.g. `last_write_wins`.
    pub fn name(self) -> String {
        match self {
            ConflictPolicy::LastWriteWins => "last_write_wins".to_owned(),
            ConflictPolicy::LabelerPriority => "labeler_priority".to_owned(),
            ConflictPolicy::MajorityVote => "majority_vote".to_owned(),
            ConflictPolicy::Other(n) => format!("conflict_policy_{n}"),
        }
    }

    /// Reads the name [`Self::name`] prints (definitions' `conflict_policy`).
    pub fn from_name(name: &str) -> Option<ConflictPolicy> {
        Some(match name {
            "last_write_wins" => ConflictPolicy::LastWriteWins,
            "labeler_priority" => ConflictPolicy::LabelerPriority,
            "majority_vote" => ConflictPolicy::MajorityVote,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeatureView {
    pub name: String,
    pub kind: ViewKind,
    /// Entity names, in declaration order.
    pub entities: Vec<String>,
    pub features: Vec<Field>,
    /// Join keys with their types.
    pub entity_columns: Vec<Field>,
    /// How long a value stays valid after its event time; zero means forever.
    pub ttl: Duration,
    pub batch_source: Option<DataSource>,
    pub stream_source: Option<DataSource>,
    pub online: bool,
    pub offline: bool,
    pub description: String,
    pub tags: Tags,
    pub owner: String,
    pub meta: Meta,
    /// `(start, end)` of each materialization run, oldest first.
    pub materialization_intervals: Vec<(Timestamp, Timestamp)>,
}

impl FeatureView {
    pub fn feature(&self, name: &str) -> Option<&Field> {
        self.features.iter().find(|f| f.name == name)
    }

    /// The source that defines the view's data: the stream (push) source when there is one,
    /// else the batch source. This is the `source` of a definition.
    pub fn source(&self) -> Option<&DataSource> {
        self.stream_source.as_ref().or(self.batch_source.as_ref())
    }

    /// The label view's own options; `None` for feature views.
    pub fn label_options(&self) -> Option<&LabelOptions> {
        match &self.kind {
            ViewKind::Label(o) => Some(o),
            _ => None,
        }
    }
}

/// A view's features as a feature service uses them: a subset, maybe under another name.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    pub view: String,
    pub alias: Option<String>,
    pub features: Vec<Field>,
    pub join_key_map: BTreeMap<String, String>,
}

impl Projection {
    /// The name used to prefix features (`alias__feature` or `view__feature`).
    pub fn name_to_use(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.view)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeatureService {
    pub name: String,
    pub projections: Vec<Projection>,
    pub description: String,
    pub tags: Tags,
    pub owner: String,
    pub meta: Meta,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub name: String,
    pub description: String,
    pub tags: Tags,
    pub owner: String,
    pub meta: Meta,
}

// ---- proto conversions -------------------------------------------------------------------

/// Feast's Python class names, which its SDK uses to rebuild a source from the registry.
const FILE_SOURCE_CLASS: &str = "feast.infra.offline_stores.file_source.FileSource";
const REQUEST_SOURCE_CLASS: &str = "feast.data_source.RequestSource";
const PUSH_SOURCE_CLASS: &str = "feast.data_source.PushSource";
const SPARK_SOURCE_CLASS: &str =
    "feast.infra.offline_stores.contrib.spark_offline_store.spark_source.SparkSource";

fn meta_from(created: Option<Timestamp>, last_updated: Option<Timestamp>) -> Meta {
    Meta {
        created,
        last_updated,
    }
}

fn duration_from_proto(d: Option<&prost_types::Duration>) -> Duration {
    match d {
        Some(d) if d.seconds > 0 || (d.seconds == 0 && d.nanos > 0) => Duration::new(
            d.seconds.max(0) as u64,
            d.nanos.clamp(0, 999_999_999) as u32,
        ),
        _ => Duration::ZERO,
    }
}

fn duration_to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

impl Entity {
    pub fn from_proto(p: pb::Entity) -> Entity {
        let spec = p.spec.unwrap_or_default();
        let meta = p.meta.unwrap_or_default();
        Entity {
            name: spec.name,
            join_key: spec.join_key,
            value_type: ValueType::from_proto(spec.value_type),
            description: spec.description,
            tags: spec.tags,
            owner: spec.owner,
            meta: meta_from(meta.created_timestamp, meta.last_updated_timestamp),
        }
    }

    pub fn to_proto(&self, project: &str) -> pb::Entity {
        pb::Entity {
            spec: Some(pb::EntitySpecV2 {
                name: self.name.clone(),
                value_type: self.value_type.to_proto(),
                description: self.description.clone(),
                join_key: self.join_key.clone(),
                tags: self.tags.clone(),
                project: project.to_owned(),
                owner: self.owner.clone(),
            }),
            meta: Some(pb::EntityMeta {
                created_timestamp: self.meta.created,
                last_updated_timestamp: self.meta.last_updated,
            }),
        }
    }
}

impl Field {
    pub fn from_proto(p: pb::FeatureSpecV2) -> Field {
        Field {
            name: p.name,
            dtype: ValueType::from_proto(p.value_type),
            description: p.description,
            tags: p.tags,
        }
    }

    pub fn to_proto(&self) -> pb::FeatureSpecV2 {
        pb::FeatureSpecV2 {
            name: self.name.clone(),
            value_type: self.dtype.to_proto(),
            tags: self.tags.clone(),
            description: self.description.clone(),
        }
    }
}

impl DataSource {
    pub fn from_proto(p: pb::DataSource) -> DataSource {
        use pb::data_source::{Options, SourceType};
        let kind = match (p.r#type, p.options) {
            (_, Some(Options::FileOptions(f))) => SourceKind::File {
                uri: f.uri,
                s3_endpoint_override: f.s3_endpoint_override,
            },
            (_, Some(Options::RequestDataOptions(r))) => SourceKind::Request {
                schema: r.schema.into_iter().map(Field::from_proto).collect(),
            },
            (_, Some(Options::SparkOptions(o))) => SourceKind::Spark {
                table: o.table,
                query: o.query,
                path: o.path,
                file_format: o.file_format,
                date_partition_column_format: o.date_partition_column_format,
            },
            (t, _) if t == SourceType::PushSource as i32 => SourceKind::Push {
                batch_source: Box::new(DataSource::from_proto(
                    p.batch_source.map(|b| *b).unwrap_or_default(),
                )),
            },
            (t, _) => SourceKind::Other { source_type: t },
        };
        // Feast copies a push source's time columns from its batch source into the proto, but
        // a push source has none of its own (its SDK reports them empty): so does quiver.
        let is_push = matches!(kind, SourceKind::Push { .. });
        let own = |field: String| if is_push { String::new() } else { field };
        DataSource {
            name: p.name,
            kind,
            timestamp_field: own(p.timestamp_field),
            created_timestamp_column: own(p.created_timestamp_column),
            date_partition_column: p.date_partition_column,
            field_mapping: p.field_mapping,
            description: p.description,
            tags: p.tags,
            owner: p.owner,
        }
    }

    pub fn to_proto(&self, project: &str) -> pb::DataSource {
        use pb::data_source::{
            FileOptions, Options, PushOptions, RequestDataOptions, SourceType, SparkOptions,
        };
        let (source_type, options, class, batch_source) = match &self.kind {
            SourceKind::File {
                uri,
                s3_endpoint_override,
            } => (
                SourceType::BatchFile as i32,
                Some(Options::FileOptions(FileOptions {
                    file_format: Some(pb::FileFormat {
                        format: Some(pb::file_format::Format::ParquetFormat(
                            pb::file_format::ParquetFormat {},
                        )),
                    }),
                    uri: uri.clone(),
                    s3_endpoint_override: s3_endpoint_override.clone(),
                })),
                FILE_SOURCE_CLASS,
                None,
            ),
            SourceKind::Request { schema } => (
                SourceType::RequestSource as i32,
                Some(Options::RequestDataOptions(RequestDataOptions {
                    schema: schema.iter().map(Field::to_proto).collect(),
                })),
                REQUEST_SOURCE_CLASS,
                None,
            ),
            SourceKind::Push { batch_source } => (
                SourceType::PushSource as i32,
                Some(Options::PushOptions(PushOptions {})),
                PUSH_SOURCE_CLASS,
                Some(Box::new(batch_source.to_proto(project))),
            ),
            SourceKind::Spark {
                table,
                query,
                path,
                file_format,
                date_partition_column_format,
            } => (
                SourceType::BatchSpark as i32,
                Some(Options::SparkOptions(SparkOptions {
                    table: table.clone(),
                    query: query.clone(),
                    path: path.clone(),
                    file_format: file_format.clone(),
                    date_partition_column_format: date_partition_column_format.clone(),
                })),
                SPARK_SOURCE_CLASS,
                None,
            ),
            SourceKind::Other { source_type } => (*source_type, None, "", None),
        };
        pb::DataSource {
            name: self.name.clone(),
            project: project.to_owned(),
            description: self.description.clone(),
            tags: self.tags.clone(),
            owner: self.owner.clone(),
            r#type: source_type,
            field_mapping: self.field_mapping.clone(),
            timestamp_field: self.timestamp_field.clone(),
            date_partition_column: self.date_partition_column.clone(),
            created_timestamp_column: self.created_timestamp_column.clone(),
            data_source_class_type: class.to_owned(),
            batch_source,
            options,
        }
    }
}

fn intervals_from(p: Vec<pb::MaterializationInterval>) -> Vec<(Timestamp, Timestamp)> {
    p.into_iter()
        .map(|i| {
            (
                i.start_time.unwrap_or_default(),
                i.end_time.unwrap_or_default(),
            )
        })
        .collect()
}

impl FeatureView {
    pub fn from_proto(p: pb::FeatureView) -> FeatureView {
        let spec = p.spec.unwrap_or_default();
        let meta = p.meta.unwrap_or_default();
        FeatureView {
            name: spec.name,
            kind: ViewKind::Batch,
            entities: spec.entities,
            features: spec.features.into_iter().map(Field::from_proto).collect(),
            entity_columns: spec
                .entity_columns
                .into_iter()
                .map(Field::from_proto)
                .collect(),
            ttl: duration_from_proto(spec.ttl.as_ref()),
            batch_source: spec.batch_source.map(DataSource::from_proto),
            stream_source: spec.stream_source.map(DataSource::from_proto),
            online: spec.online,
            offline: spec.offline,
            description: spec.description,
            tags: spec.tags,
            owner: spec.owner,
            meta: meta_from(meta.created_timestamp, meta.last_updated_timestamp),
            materialization_intervals: intervals_from(meta.materialization_intervals),
        }
    }

    pub fn from_stream_proto(p: pb::StreamFeatureView) -> FeatureView {
        let spec = p.spec.unwrap_or_default();
        let meta = p.meta.unwrap_or_default();
        FeatureView {
            name: spec.name,
            kind: ViewKind::Stream,
            entities: spec.entities,
            features: spec.features.into_iter().map(Field::from_proto).collect(),
            entity_columns: spec
                .entity_columns
                .into_iter()
                .map(Field::from_proto)
                .collect(),
            ttl: duration_from_proto(spec.ttl.as_ref()),
            batch_source: spec.batch_source.map(DataSource::from_proto),
            stream_source: spec.stream_source.map(DataSource::from_proto),
            online: spec.online,
            offline: false,
            description: spec.description,
            tags: spec.tags,
            owner: spec.owner,
            meta: meta_from(meta.created_timestamp, meta.last_updated_timestamp),
            materialization_intervals: intervals_from(meta.materialization_intervals),
        }
    }

    fn meta_proto(&self) -> pb::FeatureViewMeta {
        pb::FeatureViewMeta {
            created_timestamp: self.meta.created,
            last_updated_timestamp: self.meta.last_updated,
            materialization_intervals: self
                .materialization_intervals
                .iter()
                .map(|(s, e)| pb::MaterializationInterval {
                    start_time: Some(*s),
                    end_time: Some(*e),
                })
                .collect(),
            state: 0,
        }
    }

    /// A batch view as Feast's `FeatureView` proto (stream views: [`Self::to_stream_proto`]).
    pub fn to_proto(&self, project: &str) -> pb::FeatureView {
        pb::FeatureView {
            spec: Some(pb::FeatureViewSpec {
                name: self.name.clone(),
                project: project.to_owned(),
                entities: self.entities.clone(),
                features: self.features.iter().map(Field::to_proto).collect(),
                tags: self.tags.clone(),
                ttl: Some(duration_to_proto(self.ttl)),
                batch_source: self.batch_source.as_ref().map(|s| s.to_proto(project)),
                online: self.online,
                stream_source: self.stream_source.as_ref().map(|s| s.to_proto(project)),
                description: self.description.clone(),
                owner: self.owner.clone(),
                entity_columns: self.entity_columns.iter().map(Field::to_proto).collect(),
                offline: self.offline,
                disabled: false,
            }),
            meta: Some(self.meta_proto()),
        }
    }

    pub fn to_stream_proto(&self, project: &str) -> pb::StreamFeatureView {
        pb::StreamFeatureView {
            spec: Some(pb::StreamFeatureViewSpec {
                name: self.name.clone(),
                project: project.to_owned(),
                entities: self.entities.clone(),
                features: self.features.iter().map(Field::to_proto).collect(),
                entity_columns: self.entity_columns.iter().map(Field::to_proto).collect(),
                description: self.description.clone(),
                tags: self.tags.clone(),
                owner: self.owner.clone(),
                ttl: Some(duration_to_proto(self.ttl)),
                batch_source: self.batch_source.as_ref().map(|s| s.to_proto(project)),
                stream_source: self.stream_source.as_ref().map(|s| s.to_proto(project)),
                online: self.online,
                timestamp_field: String::new(),
                disabled: false,
            }),
            meta: Some(self.meta_proto()),
        }
    }
}

impl FeatureView {
    /// A label view. Its one `source` becomes the view's stream source when it is a push source
    /// (its batch source then being the push source's), else its batch source: the same shape a
    /// feature view fed by a push source has, so serving, push and historical retrieval treat
    /// both alike.
    pub fn from_label_proto(p: pb::LabelView) -> FeatureView {
        let spec = p.spec.unwrap_or_default();
        let meta = p.meta.unwrap_or_default();
        let source = spec.source.map(DataSource::from_proto);
        let (batch_source, stream_source) = match source {
            Some(s) => match &s.kind {
                SourceKind::Push { batch_source } => (Some((**batch_source).clone()), Some(s)),
                _ => (Some(s), None),
            },
            None => (None, None),
        };
        FeatureView {
            name: spec.name,
            kind: ViewKind::Label(LabelOptions {
                labeler_field: spec.labeler_field,
                conflict_policy: ConflictPolicy::from_proto(spec.conflict_policy),
                reference_feature_view: spec.reference_feature_view,
            }),
            entities: spec.entities,
            features: spec.features.into_iter().map(Field::from_proto).collect(),
            entity_columns: spec
                .entity_columns
                .into_iter()
                .map(Field::from_proto)
                .collect(),
            ttl: duration_from_proto(spec.ttl.as_ref()),
            batch_source,
            stream_source,
            online: spec.online,
            offline: false,
            description: spec.description,
            tags: spec.tags,
            owner: spec.owner,
            meta: meta_from(meta.created_timestamp, meta.last_updated_timestamp),
            materialization_intervals: Vec::new(),
        }
    }

    /// A label view as Feast's `LabelView` proto (a feature view gets the default options).
    pub fn to_label_proto(&self, project: &str) -> pb::LabelView {
        let options = self.label_options().cloned().unwrap_or(LabelOptions {
            labeler_field: "labeler".to_owned(),
            conflict_policy: ConflictPolicy::LastWriteWins,
            reference_feature_view: String::new(),
        });
        pb::LabelView {
            spec: Some(pb::LabelViewSpec {
                name: self.name.clone(),
                project: project.to_owned(),
                entities: self.entities.clone(),
                features: self.features.iter().map(Field::to_proto).collect(),
                tags: self.tags.clone(),
                ttl: Some(duration_to_proto(self.ttl)),
                source: self.source().map(|s| s.to_proto(project)),
                online: self.online,
                description: self.description.clone(),
                owner: self.owner.clone(),
                entity_columns: self.entity_columns.iter().map(Field::to_proto).collect(),
                labeler_field: options.labeler_field,
                conflict_policy: options.conflict_policy.to_proto(),
                retain_history: false,
                reference_feature_view: options.reference_feature_view,
            }),
            meta: Some(pb::LabelViewMeta {
                created_timestamp: self.meta.created,
                last_updated_timestamp: self.meta.last_updated,
            }),
        }
    }
}

impl Projection {
    pub fn from_proto(p: pb::FeatureViewProjection) -> Projection {
        Projection {
            view: p.feature_view_name,
            alias: Some(p.feature_view_name_alias).filter(|a| !a.is_empty()),
            features: p
                .feature_columns
                .into_iter()
                .map(Field::from_proto)
                .collect(),
            join_key_map: p.join_key_map,
        }
    }

    pub fn to_proto(&self) -> pb::FeatureViewProjection {
        pb::FeatureViewProjection {
            feature_view_name: self.view.clone(),
            feature_columns: self.features.iter().map(Field::to_proto).collect(),
            feature_view_name_alias: self.alias.clone().unwrap_or_default(),
            join_key_map: self.join_key_map.clone(),
        }
    }
}

impl FeatureService {
    pub fn from_proto(p: pb::FeatureService) -> FeatureService {
        let spec = p.spec.unwrap_or_default();
        let meta = p.meta.unwrap_or_default();
        FeatureService {
            name: spec.name,
            projections: spec
                .features
                .into_iter()
                .map(Projection::from_proto)
                .collect(),
            description: spec.description,
            tags: spec.tags,
            owner: spec.owner,
            meta: meta_from(meta.created_timestamp, meta.last_updated_timestamp),
        }
    }

    pub fn to_proto(&self, project: &str) -> pb::FeatureService {
        pb::FeatureService {
            spec: Some(pb::FeatureServiceSpec {
                name: self.name.clone(),
                project: project.to_owned(),
                features: self.projections.iter().map(Projection::to_proto).collect(),
                tags: self.tags.clone(),
                description: self.description.clone(),
                owner: self.owner.clone(),
            }),
            meta: Some(pb::FeatureServiceMeta {
                created_timestamp: self.meta.created,
                last_updated_timestamp: self.meta.last_updated,
            }),
        }
    }
}

impl Project {
    pub fn from_proto(p: pb::Project) -> Project {
        let spec = p.spec.unwrap_or_default();
        let meta = p.meta.unwrap_or_default();
        Project {
            name: spec.name,
            description: spec.description,
            tags: spec.tags,
            owner: spec.owner,
            meta: meta_from(meta.created_timestamp, meta.last_updated_timestamp),
        }
    }

    pub fn to_proto(&self) -> pb::Project {
        pb::Project {
            spec: Some(pb::ProjectSpec {
                name: self.name.clone(),
                description: self.description.clone(),
                tags: self.tags.clone(),
                owner: self.owner.clone(),
            }),
            meta: Some(pb::ProjectMeta {
                created_timestamp: self.meta.created,
                last_updated_timestamp: self.meta.last_updated,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_source() -> DataSource {
        DataSource {
            name: "driver_stats".into(),
            kind: SourceKind::File {
                uri: "data/driver_stats.parquet".into(),
                s3_endpoint_override: String::new(),
            },
            timestamp_field: "event_timestamp".into(),
            created_timestamp_column: "created".into(),
            date_partition_column: String::new(),
            field_mapping: [("ltv".to_owned(), "lifetime_value".to_owned())].into(),
            description: String::new(),
            tags: Tags::new(),
            owner: String::new(),
        }
    }

    #[test]
    fn objects_round_trip_through_protos() {
        let ts = Timestamp {
            seconds: 10,
            nanos: 5,
        };
        let entity = Entity {
            name: "driver".into(),
            join_key: "driver_id".into(),
            value_type: ValueType::Int64,
            description: "d".into(),
            tags: [("a".to_owned(), "b".to_owned())].into(),
            owner: "o".into(),
            meta: Meta {
                created: Some(ts),
                last_updated: Some(ts),
            },
        };
        assert_eq!(Entity::from_proto(entity.to_proto("p")), entity);

        let push = DataSource {
            name: "push".into(),
            kind: SourceKind::Push {
                batch_source: Box::new(file_source()),
            },
            timestamp_field: String::new(),
            created_timestamp_column: String::new(),
            ..file_source()
        };
        for source in [file_source(), push.clone()] {
            assert_eq!(DataSource::from_proto(source.to_proto("p")), source);
        }

        let mut view = FeatureView {
            name: "v".into(),
            kind: ViewKind::Batch,
            entities: vec!["driver".into()],
            features: vec![Field::new("conv_rate", ValueType::Float)],
            entity_columns: vec![Field::new("driver_id", ValueType::Int64)],
            ttl: Duration::from_secs(86_400),
            batch_source: Some(file_source()),
            stream_source: Some(push),
            online: true,
            offline: false,
            description: String::new(),
            tags: Tags::new(),
            owner: String::new(),
            meta: Meta::default(),
            materialization_intervals: vec![(ts, ts)],
        };
        assert_eq!(FeatureView::from_proto(view.to_proto("p")), view);
        view.kind = ViewKind::Stream;
        assert_eq!(
            FeatureView::from_stream_proto(view.to_stream_proto("p")),
            view
        );
        // A label view fed by a push source: batch source = the push source's.
        let mut label = FeatureView {
            kind: ViewKind::Label(LabelOptions {
                labeler_field: "labeler".into(),
                conflict_policy: ConflictPolicy::MajorityVote,
                reference_feature_view: "v".into(),
            }),
            batch_source: Some(file_source()),
            materialization_intervals: Vec::new(),
            ..view.clone()
        };
        assert_eq!(
            FeatureView::from_label_proto(label.to_label_proto("p")),
            label
        );
        label.stream_source = None;
        assert_eq!(
            FeatureView::from_label_proto(label.to_label_proto("p")),
            label
        );
        assert_eq!(ConflictPolicy::from_proto(7), ConflictPolicy::Other(7));
        for p in [
            ConflictPolicy::LastWriteWins,
            ConflictPolicy::LabelerPriority,
            ConflictPolicy::MajorityVote,
        ] {
            assert_eq!(ConflictPolicy::from_proto(p.to_proto()), p);
            assert_eq!(ConflictPolicy::from_name(&p.name()), Some(p));
        }

        let service = FeatureService {
            name: "s".into(),
            projections: vec![Projection {
                view: "v".into(),
                alias: Some("fresh".into()),
                features: vec![Field::new("conv_rate", ValueType::Float)],
                join_key_map: BTreeMap::new(),
            }],
            description: String::new(),
            tags: Tags::new(),
            owner: String::new(),
            meta: Meta::default(),
        };
        assert_eq!(FeatureService::from_proto(service.to_proto("p")), service);
    }

    #[test]
    fn zero_or_absent_ttl_means_forever() {
        assert_eq!(duration_from_proto(None), Duration::ZERO);
        let neg = prost_types::Duration {
            seconds: -5,
            nanos: 0,
        };
        assert_eq!(duration_from_proto(Some(&neg)), Duration::ZERO);
    }
}

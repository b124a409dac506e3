//! A JSON listing of one project's objects, in the shape `compat/feast_summary.py` prints for
//! the real Feast SDK, so the two can be compared field for field.

use quiver_core::model::{DUMMY_ENTITY, DataSource, FeatureView, Field, SourceKind, ViewKind};
use quiver_core::registry::ProjectRegistry;
use serde_json::{Value as Json, json};

fn fields(fields: &[Field]) -> Json {
    fields
        .iter()
        .map(|f| json!({"name": f.name, "dtype": f.dtype.to_string()}))
        .collect()
}

fn source(s: &DataSource) -> Json {
    let (path, batch, schema) = match &s.kind {
        SourceKind::File { uri, .. } => (Json::from(uri.as_str()), Json::Null, Json::Null),
        SourceKind::Push { batch_source } => (
            Json::Null,
            Json::from(batch_source.name.as_str()),
            Json::Null,
        ),
        SourceKind::Request { schema } => (Json::Null, Json::Null, fields(schema)),
        // compat/feast_summary.py prints a path for FileSources only.
        SourceKind::Spark { .. } | SourceKind::Other { .. } => (Json::Null, Json::Null, Json::Null),
    };
    json!({
        "name": s.name,
        "type": s.kind_name(),
        "path": path,
        "timestamp_field": s.timestamp_field,
        "created_timestamp_column": s.created_timestamp_column,
        "field_mapping": s.field_mapping,
        "batch_source": batch,
        "schema": schema,
    })
}

fn view(v: &FeatureView) -> Json {
    let name = |s: &Option<DataSource>| s.as_ref().map(|s| s.name.clone());
    json!({
        "name": v.name,
        "entities": v.entities,
        "ttl_seconds": v.ttl.as_secs(),
        "online": v.online,
        "source": v.source().map(|s| s.name.clone()),
        "batch_source": name(&v.batch_source),
        "stream_source": name(&v.stream_source),
        "tags": v.tags,
        "description": v.description,
        "features": fields(&v.features),
        "entity_columns": fields(&v.entity_columns),
    })
}

/// A label view: a feature view's shape plus what labels add.
fn label_view(v: &FeatureView) -> Json {
    let mut out = view(v);
    if let (Some(map), Some(o)) = (out.as_object_mut(), v.label_options()) {
        map.insert("labeler_field".to_owned(), json!(o.labeler_field));
        map.insert(
            "conflict_policy".to_owned(),
            json!(o.conflict_policy.name()),
        );
        map.insert(
            "reference_feature_view".to_owned(),
            json!(Some(&o.reference_feature_view).filter(|r| !r.is_empty())),
        );
    }
    out
}

fn sorted_by_name(mut items: Vec<Json>) -> Json {
    items.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Json::Array(items)
}

/// The project's objects as JSON (lists sorted by name).
pub fn summarize(reg: &ProjectRegistry) -> Json {
    let entities = reg
        .entities
        .iter()
        .filter(|e| e.name != DUMMY_ENTITY) // Feast's SDK hides it too
        .map(|e| {
            json!({
                "name": e.name,
                "join_key": e.join_key,
                "value_type": e.value_type.sdk_enum_name(),
                "description": e.description,
                "tags": e.tags,
            })
        })
        .collect();
    let views = |kind: ViewKind| {
        sorted_by_name(
            reg.feature_views
                .iter()
                .filter(|v| v.kind == kind)
                .map(view)
                .collect(),
        )
    };
    let label_views = sorted_by_name(
        reg.feature_views
            .iter()
            .filter(|v| v.label_options().is_some())
            .map(label_view)
            .collect(),
    );
    let services = reg
        .feature_services
        .iter()
        .map(|s| {
            let projections: Vec<Json> = s
                .projections
                .iter()
                .map(|p| {
                    json!({
                        "feature_view": p.view,
                        "alias": p.alias,
                        "features": p.features.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
                        "join_key_map": p.join_key_map,
                    })
                })
                .collect();
            json!({"name": s.name, "description": s.description, "tags": s.tags, "projections": projections})
        })
        .collect();
    let mut odfvs: Vec<&str> = reg
        .on_demand_views
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    odfvs.sort();
    json!({
        "project": reg.project,
        "entities": sorted_by_name(entities),
        "data_sources": sorted_by_name(reg.data_sources.iter().map(source).collect()),
        "feature_views": views(ViewKind::Batch),
        "stream_feature_views": views(ViewKind::Stream),
        "label_views": label_views,
        "feature_services": sorted_by_name(services),
        "on_demand_feature_views": odfvs,
    })
}

//! quiver and a registry the real Feast 0.67 wrote (`feast apply` of compat/feast_repo, the
//! Python twin of examples/quickstart): quiver reads every object as Feast's SDK reports it, and
//! applying the YAML twin over it changes nothing and keeps what YAML cannot express.

use std::path::PathBuf;

use prost::Message;

use quiver_core::registry::{ObjectKind, RegistryFile};
use quiver_core::time::Timestamp;
use quiver_registry::{apply, definitions, summary};
use serde_json::Value as Json;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn feast_registry() -> RegistryFile {
    let bytes =
        std::fs::read(manifest().join("tests/fixtures/feast_quickstart_registry.db")).unwrap();
    RegistryFile::decode(&bytes).unwrap()
}

fn expected() -> Json {
    let text =
        std::fs::read_to_string(manifest().join("tests/fixtures/feast_quickstart_expected.json"))
            .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn quickstart_definitions() -> quiver_core::registry::ProjectRegistry {
    definitions::load(&manifest().join("../examples/quickstart"), "quickstart").unwrap()
}

#[test]
fn quiver_reads_what_feast_wrote_as_feast_does() {
    let file = feast_registry();
    assert_eq!(file.project_names().unwrap(), ["quickstart"]);
    let reg = file.project("quickstart").unwrap();
    assert_eq!(summary::summarize(&reg), expected());
}

#[test]
fn yaml_twin_produces_the_same_objects_as_the_python_repo() {
    let mut file = RegistryFile::empty();
    apply::apply(&mut file, &quickstart_definitions(), Timestamp::default()).unwrap();
    let mut ours = summary::summarize(&file.project("quickstart").unwrap());
    let mut theirs = expected();
    // The Python repo also has an on-demand view, which YAML definitions cannot express.
    theirs["on_demand_feature_views"] = Json::Array(vec![]);
    ours["on_demand_feature_views"] = Json::Array(vec![]);
    assert_eq!(ours, theirs);
}

#[test]
fn applying_the_yaml_twin_over_feasts_registry_changes_nothing() {
    let original =
        std::fs::read(manifest().join("tests/fixtures/feast_quickstart_registry.db")).unwrap();
    let mut file = feast_registry();
    let plan = apply::apply(
        &mut file,
        &quickstart_definitions(),
        Timestamp {
            seconds: 1,
            nanos: 0,
        },
    )
    .unwrap();
    assert!(plan.is_empty(), "unexpected changes: {:?}", plan.changes);
    assert_eq!(plan.kept, ["on-demand feature view ride_features"]);

    // Every object keeps Feast's exact bytes (fields quiver does not model included).
    let before = RegistryFile::decode(&original).unwrap();
    for kind in [
        ObjectKind::Entity,
        ObjectKind::DataSource,
        ObjectKind::FeatureView,
        ObjectKind::FeatureService,
        ObjectKind::Project,
    ] {
        assert_eq!(file.list(kind), before.list(kind), "{kind:?}");
    }
    assert_eq!(file.on_demand_view_count(), 1);
}

#[test]
fn changing_a_view_over_feasts_registry_rewrites_only_that_view() {
    let mut defs = quickstart_definitions();
    let view = defs
        .feature_views
        .iter_mut()
        .find(|v| v.name == "customer_profile")
        .unwrap();
    view.ttl = std::time::Duration::from_secs(3600);
    let mut file = feast_registry();
    let before = feast_registry();
    let plan = apply::apply(
        &mut file,
        &defs,
        Timestamp {
            seconds: 1,
            nanos: 0,
        },
    )
    .unwrap();
    let changes: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
    assert_eq!(changes, ["Updated feature view customer_profile"]);
    let changed = file
        .object_bytes(ObjectKind::FeatureView, "quickstart", "customer_profile")
        .unwrap();
    assert_ne!(
        changed,
        before
            .object_bytes(ObjectKind::FeatureView, "quickstart", "customer_profile")
            .unwrap()
    );
    for name in [
        "driver_hourly_stats",
        "driver_hourly_stats_fresh",
        "driver_customer_affinity",
    ] {
        assert_eq!(
            file.object_bytes(ObjectKind::FeatureView, "quickstart", name)
                .unwrap(),
            before
                .object_bytes(ObjectKind::FeatureView, "quickstart", name)
                .unwrap(),
            "{name}"
        );
    }
    let reg = file.project("quickstart").unwrap();
    let view = reg.feature_view("customer_profile").unwrap();
    assert_eq!(view.ttl.as_secs(), 3600);
    let old = before.project("quickstart").unwrap();
    assert_eq!(
        view.meta.created,
        old.feature_view("customer_profile").unwrap().meta.created
    );
}

// ---- the `feast init` template of Feast 0.67: a label view (registry field 19) ----------------

fn template_registry() -> (Vec<u8>, RegistryFile) {
    let bytes =
        std::fs::read(manifest().join("tests/fixtures/feast_template_registry.db")).unwrap();
    let file = RegistryFile::decode(&bytes).unwrap();
    (bytes, file)
}

fn template_expected() -> Json {
    let text =
        std::fs::read_to_string(manifest().join("tests/fixtures/feast_template_expected.json"))
            .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn quiver_reads_feasts_label_view_as_feast_does() {
    let (_, file) = template_registry();
    let reg = file.project("demo_repo").unwrap();
    let ours = summary::summarize(&reg);
    let theirs = template_expected();
    assert_eq!(ours["label_views"], theirs["label_views"]);
    assert_eq!(ours["label_views"][0]["name"], "driver_quality_labels");
    // The template's entity declares no type: Feast's SDK says UNKNOWN.
    assert_eq!(ours["entities"], theirs["entities"]);
    assert_eq!(ours["data_sources"], theirs["data_sources"]);
    let view = reg.feature_view("driver_quality_labels").unwrap();
    let options = view.label_options().unwrap();
    assert_eq!(
        options.conflict_policy,
        quiver_core::model::ConflictPolicy::LastWriteWins
    );
    assert_eq!(options.labeler_field, "labeler");
}

#[test]
fn label_views_round_trip_byte_for_byte_and_survive_apply() {
    let (bytes, mut file) = template_registry();
    let before = RegistryFile::decode(&bytes).unwrap();
    let feast_label_bytes = before.list(ObjectKind::LabelView).to_vec();
    assert_eq!(feast_label_bytes.len(), 1);

    // Definitions that know nothing of the label view: it is kept, with Feast's exact bytes.
    let defs = r#"
entities:
  - {name: rider, join_keys: [rider_id], value_type: INT64}
sources:
  - {name: rides, path: data/rides.parquet}
feature_views:
  - {name: ride_stats, entities: [rider], source: rides, schema: [{name: trips, dtype: Int64}]}
"#;
    let desired = definitions::parse(&[("features.yaml", defs)], "demo_repo").unwrap();
    let plan = apply::apply(&mut file, &desired, Timestamp::default()).unwrap();
    assert!(
        plan.kept
            .contains(&"label view driver_quality_labels".to_owned()),
        "{:?}",
        plan.kept
    );
    let written = file.encode(
        "v2",
        Timestamp {
            seconds: 2,
            nanos: 0,
        },
    );
    let after = RegistryFile::decode(&written).unwrap();
    assert_eq!(
        after.list(ObjectKind::LabelView),
        feast_label_bytes.as_slice()
    );
    let reg = after.project("demo_repo").unwrap();
    assert!(reg.feature_view("driver_quality_labels").is_some());
    assert!(reg.feature_view("ride_stats").is_some());

    // quiver's own encoding of the label view decodes to the same model, and a registry holding
    // it is read back by quiver equal to Feast's.
    let view = before
        .project("demo_repo")
        .unwrap()
        .feature_view("driver_quality_labels")
        .unwrap()
        .clone();
    let ours = view.to_label_proto("demo_repo").encode_to_vec();
    let back = quiver_core::model::FeatureView::from_label_proto(
        quiver_core::proto::core::LabelView::decode(ours.as_slice()).unwrap(),
    );
    assert_eq!(back, view);
}

#[test]
fn a_yaml_label_view_is_created_once_and_feast_reads_its_shape() {
    let defs = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: STRING}
sources:
  - {name: driver_quality_labels_batch, path: data/driver_quality_labels.parquet}
  - {name: driver_quality_labels_push, type: push, batch_source: driver_quality_labels_batch}
label_views:
  - name: driver_quality_labels
    entities: [driver]
    source: driver_quality_labels_push
    description: Human quality labels for drivers - used for model training and evaluation
    tags:
      feast.io/labeling-method: table
      feast.io/field-role:is_reliable: label
      feast.io/field-role:quality_score: label
      feast.io/field-role:reviewer_notes: metadata
      feast.io/label-values:is_reliable: "1 0"
      feast.io/label-widget:is_reliable: binary
      feast.io/label-widget:quality_score: number
      feast.io/label-widget:reviewer_notes: text
    schema:
      - {name: is_reliable, dtype: Int64}
      - {name: quality_score, dtype: Float32}
      - {name: reviewer_notes, dtype: String}
      - {name: labeler, dtype: String}
"#;
    let desired = definitions::parse(&[("features.yaml", defs)], "demo_repo").unwrap();
    let mut file = RegistryFile::empty();
    let plan = apply::apply(&mut file, &desired, Timestamp::default()).unwrap();
    let changes: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
    assert!(
        changes.contains(&"Created label view driver_quality_labels".to_owned()),
        "{changes:?}"
    );
    assert_eq!(file.list(ObjectKind::LabelView).len(), 1);
    assert!(file.list(ObjectKind::FeatureView).is_empty());
    let bytes = file.encode("v1", Timestamp::default());
    let mut again = RegistryFile::decode(&bytes).unwrap();
    let plan = apply::apply(&mut again, &desired, Timestamp::default()).unwrap();
    assert!(plan.is_empty(), "{plan:?}");
    // The YAML twin of the template's label view reads as Feast's own.
    let ours = summary::summarize(&again.project("demo_repo").unwrap());
    assert_eq!(ours["label_views"], template_expected()["label_views"]);
}

//! quiver and a registry the real Feast 0.67 wrote (`feast apply` of compat/feast_repo, the
//! Python twin of examples/quickstart): quiver reads every object as Feast's SDK reports it, and
//! applying the YAML twin over it changes nothing and keeps what YAML cannot express.

use std::path::PathBuf;

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
fn feasts_on_demand_view_is_read_whole() {
    use quiver_core::ValueType;
    use quiver_core::on_demand::{OnDemandSource, Transformation};
    let reg = feast_registry().project("quickstart").unwrap();
    let v = reg.on_demand_view("ride_features").unwrap();
    let features: Vec<_> = v
        .features
        .iter()
        .map(|f| (f.name.as_str(), f.dtype))
        .collect();
    assert_eq!(features, [("conv_per_km", ValueType::Double)]);
    assert!(!v.write_to_online_store);
    let Transformation::Pandas(udf) = &v.transformation else {
        panic!("{:?}", v.transformation);
    };
    assert_eq!(udf.name, "ride_features");
    assert!(
        udf.body_text
            .contains("inputs[\"conv_rate\"] / inputs[\"distance_km\"]")
    );
    let [
        OnDemandSource::View(p),
        OnDemandSource::Request { name, schema },
    ] = v.sources.as_slice()
    else {
        panic!("{:?}", v.sources);
    };
    assert_eq!(p.view, "driver_hourly_stats");
    assert!(
        p.features
            .iter()
            .any(|f| f.name == "conv_rate" && f.dtype == ValueType::Float)
    );
    assert_eq!(name, "ride_request");
    assert_eq!(schema.len(), 1);
    assert_eq!(
        (schema[0].name.as_str(), schema[0].dtype),
        ("distance_km", ValueType::Double)
    );
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

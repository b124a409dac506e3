//! Replays each cargo-fuzz target's committed corpus through the function the target calls
//! (`fuzz/checks.rs`): `quiver_testkit::replay_corpus` says why.

#[path = "../fuzz/checks.rs"]
mod checks;

fn replay(target: &str, check: fn(&[u8])) {
    quiver_testkit::replay_corpus(env!("CARGO_MANIFEST_DIR"), target, check);
}

#[test]
fn definitions_yaml_corpus() {
    replay("definitions_yaml", checks::definitions_yaml);
}

#[test]
fn feature_store_yaml_corpus() {
    replay("feature_store_yaml", checks::feature_store_yaml);
}

#[test]
fn snapshot_corpus() {
    replay("snapshot", checks::snapshot);
}

/// The snapshot target's seed: a real snapshot of a small project (the fuzzer cannot reach
/// past the checksum from random bytes). Regenerate with `--run-ignored only`.
fn seed_snapshot() -> Vec<u8> {
    let definitions = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: stats_file, type: file, path: data/stats.parquet, timestamp_field: event_timestamp}
feature_views:
  - name: stats
    entities: [driver]
    ttl: 1d
    source: stats_file
    schema: [{name: conv_rate, dtype: Float32}, {name: tags, dtype: Array(String)}]
feature_services:
  - {name: svc, features: [stats]}
"#;
    let desired = quiver_registry::definitions::parse(&[("features.yaml", definitions)], "p")
        .unwrap_or_else(|e| panic!("{e:?}"));
    let mut file = quiver_core::registry::RegistryFile::empty();
    let now = quiver_core::time::Timestamp {
        seconds: 1,
        nanos: 0,
    };
    quiver_registry::apply::apply(&mut file, &desired, now).unwrap();
    let objects = quiver_registry::snapshot::select(&file, "p", &[]).unwrap();
    let refs: Vec<_> = objects
        .iter()
        .map(|(k, n, b)| (*k, n.as_str(), *b))
        .collect();
    quiver_registry::snapshot::encode("p", 1, &["svc".to_owned()], &refs).0
}

#[test]
fn the_snapshot_seed_decodes() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/snapshot/seed.snapshot");
    let seed = std::fs::read(&path).unwrap();
    assert!(quiver_registry::snapshot::decode(&seed).is_ok());
}

#[test]
#[ignore = "writes the snapshot target's seed"]
fn write_snapshot_seed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/snapshot");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("seed.snapshot"), seed_snapshot()).unwrap();
}

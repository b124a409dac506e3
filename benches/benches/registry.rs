//! The registry snapshot a sidecar receives, for a registry of 1,000 feature views (10
//! features each): encoding it (the service, once per version), and what a sidecar does with
//! one (verify + checksum, decode the protos into the typed project, build the serving
//! registry).

use criterion::{Criterion, criterion_group, criterion_main};
use quiver_core::registry::RegistryFile;
use quiver_core::time::Timestamp;
use quiver_registry::{apply, definitions, snapshot};
use quiver_sidecar::registry::ServingRegistry;

fn registry(views: usize) -> RegistryFile {
    let mut defs = String::from(
        "entities:\n  - {name: driver, join_keys: [driver_id], value_type: INT64}\nsources:\n  - {name: src, path: data/src.parquet}\nfeature_views:\n",
    );
    for i in 0..views {
        defs.push_str(&format!("  - name: view_{i}\n    entities: [driver]\n    ttl: 1d\n    source: src\n    schema:\n"));
        for f in 0..10 {
            defs.push_str(&format!(
                "      - {{name: feature_{f}, dtype: {}}}\n",
                ["Int64", "Float32", "String", "Array(Int32)", "Bool"][f % 5]
            ));
        }
    }
    defs.push_str("feature_services:\n");
    for i in 0..views / 10 {
        defs.push_str(&format!(
            "  - {{name: service_{i}, features: [view_{}]}}\n",
            i * 10
        ));
    }
    let desired = definitions::parse(&[("features.yaml", &defs)], "bench").unwrap();
    let mut file = RegistryFile::empty();
    apply::apply(
        &mut file,
        &desired,
        Timestamp {
            seconds: 1,
            nanos: 0,
        },
    )
    .unwrap();
    file
}

fn bench(c: &mut Criterion) {
    let file = registry(1000);
    let objects = snapshot::select(&file, "bench", &[]).unwrap();
    let refs: Vec<_> = objects
        .iter()
        .map(|(k, n, b)| (*k, n.as_str(), *b))
        .collect();
    let (bytes, _) = snapshot::encode("bench", 1, &[], &refs);
    eprintln!(
        "snapshot of 1,000 feature views: {} bytes, {} objects",
        bytes.len(),
        refs.len()
    );
    let mut g = c.benchmark_group("registry_snapshot_1000_views");
    g.bench_function("encode", |b| {
        b.iter(|| snapshot::encode("bench", 1, &[], &refs))
    });
    g.bench_function("verify_and_checksum", |b| {
        b.iter(|| snapshot::decode(&bytes).unwrap())
    });
    g.bench_function("decode_to_project", |b| {
        b.iter(|| {
            snapshot::decode(&bytes)
                .unwrap()
                .project_registry("bench")
                .unwrap()
        })
    });
    g.bench_function("decode_to_serving_registry", |b| {
        b.iter(|| {
            let project = snapshot::decode(&bytes)
                .unwrap()
                .project_registry("bench")
                .unwrap();
            ServingRegistry::build(&project, 1, "bench")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

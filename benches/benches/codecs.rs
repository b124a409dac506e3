//! The byte-level work on every online read and write: entity keys, Redis field hashes, value
//! decoding, the response JSON, and loading a registry. Feast's own Python for the same work is
//! timed by `benches/feast_baseline.py` in the same run (see RESULTS.md).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use quiver_core::registry::RegistryFile;
use quiver_core::{Value, entity_key, json, layout, time};

fn entity_keys(c: &mut Criterion) {
    let id = Value::Int64(1001);
    c.bench_function("entity_key/redis_key_int64", |b| {
        b.iter(|| entity_key::redis_key(black_box(&[("driver_id", &id)]), black_box("quickstart")))
    });
    let customer = Value::String("c-000123".into());
    c.bench_function("entity_key/redis_key_composite", |b| {
        b.iter(|| {
            entity_key::redis_key(
                black_box(&[("driver_id", &id), ("customer_id", &customer)]),
                black_box("quickstart"),
            )
        })
    });
}

fn fields(c: &mut Criterion) {
    c.bench_function("layout/redis_field", |b| {
        b.iter(|| layout::redis_field(black_box("driver_hourly_stats"), black_box("conv_rate")))
    });
}

fn values(c: &mut Criterion) {
    let float = Value::Float(0.805_710_2).encode_to_vec();
    let list = Value::DoubleList((0..16).map(f64::from).collect()).encode_to_vec();
    c.bench_function("value/decode_float", |b| {
        b.iter(|| Value::decode(black_box(&float)))
    });
    c.bench_function("value/decode_double_list16", |b| {
        b.iter(|| Value::decode(black_box(&list)))
    });
}

/// The value of feature `f` for entity `e` in the response benchmarks (feast_baseline.py builds
/// the same table).
fn cell(f: usize, e: usize) -> Value {
    let i = (f * 10 + e) as i64;
    match f % 4 {
        0 => Value::Float(i as f32 * 0.1),
        1 => Value::Int64(i),
        2 => Value::String(format!("zone-{i}")),
        _ => Value::Int32List(vec![1, 2, 3]),
    }
}

fn response_json(c: &mut Criterion) {
    // A whole /get-online-features response: 10 features x 10 entities, column-major, with
    // statuses and event timestamps, in Feast's JSON shape.
    let columns: Vec<Vec<Value>> = (0..10)
        .map(|f| (0..10).map(|e| cell(f, e)).collect())
        .collect();
    let names: Vec<String> = (0..10).map(|f| format!("feature_{f}")).collect();
    c.bench_function("json/response_10x10", |b| {
        let mut out = String::with_capacity(8192);
        b.iter(|| {
            out.clear();
            out.push_str("{\"metadata\":{\"feature_names\":[");
            for (i, n) in black_box(&names).iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json::write_str(&mut out, n);
            }
            out.push_str("]},\"results\":[");
            for (i, col) in black_box(&columns).iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"values\":[");
                for (j, v) in col.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    json::write_value(&mut out, v);
                }
                out.push_str("],\"statuses\":[");
                for j in 0..col.len() {
                    out.push_str(if j > 0 { ",\"PRESENT\"" } else { "\"PRESENT\"" });
                }
                out.push_str("],\"event_timestamps\":[");
                for j in 0..col.len() {
                    if j > 0 {
                        out.push(',');
                    }
                    out.push('"');
                    time::write_rfc3339(&mut out, 1_714_564_800 + j as i64, 0);
                    out.push('"');
                }
                out.push_str("]}");
            }
            out.push_str("]}");
            out.len()
        })
    });
}

fn registry(c: &mut Criterion) {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../registry-sync/tests/fixtures/feast_quickstart_registry.db"
    ))
    .expect("registry fixture");
    c.bench_function("registry/decode_and_load_project", |b| {
        b.iter(|| {
            let file = RegistryFile::decode(black_box(&bytes)).expect("valid");
            file.project("quickstart")
                .expect("valid")
                .feature_views
                .len()
        })
    });
}

criterion_group!(
    benches,
    entity_keys,
    fields,
    values,
    response_json,
    registry
);
criterion_main!(benches);

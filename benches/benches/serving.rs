//! The pieces of the sidecar's hot path, for 1 entity × 3 features and 10 entities × 10
//! features: request decoding, a cache lookup, and a whole warm-cache request through the engine
//! (decode, plan, entity keys, lookups, response) in JSON and in Arrow. The online store is a
//! real SQLite file in Feast's layout; every request here is a cache hit, as in a warm sidecar.
//! `request_odfv_*` asks for 3 features of a native on-demand view (quiver expressions over the
//! view's features and a request field) instead of 3 stored features: the cost of computing them.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use quiver_core::{Value, entity_key, layout};
use quiver_online_store::{OnlineStore, SqliteStore};
use quiver_sidecar::api::parse_request;
use quiver_sidecar::cache::{Cache, CacheKey, Entry, Row};
use quiver_sidecar::{Format, SidecarConfig};

// The allocator of the quiver binary, so allocation costs are the sidecar's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: src, path: data/src.parquet}
feature_views:
  - name: bench
    entities: [driver]
    source: src
    schema:
      - {name: f0, dtype: Float32}
      - {name: f1, dtype: Int64}
      - {name: f2, dtype: String}
      - {name: f3, dtype: Float64}
      - {name: f4, dtype: Int64}
      - {name: f5, dtype: Float32}
      - {name: f6, dtype: String}
      - {name: f7, dtype: Int64}
      - {name: f8, dtype: Float64}
      - {name: f9, dtype: Bool}
on_demand_feature_views:
  - name: bench_odfv
    sources: [bench]
    request_schema: [{name: val, dtype: Int64}]
    features:
      - {name: o0, dtype: Float64, expr: "bench.f0 + val"}
      - {name: o1, dtype: Float64, expr: "bench.f3 * 2.0 - cast(bench.f1, Float64) / 3"}
      - {name: o2, dtype: String, expr: "coalesce(bench.f2, 'none') || '-x'"}
"#;

const KEYS: i64 = 1000;

fn value(f: usize, id: i64) -> Value {
    match f % 5 {
        0 => Value::Float(id as f32 * 0.001),
        1 => Value::Int64(id * 3),
        2 => Value::String(format!("zone-{}", id % 97)),
        3 => Value::Double(id as f64 / 7.0),
        _ => Value::Bool(id % 2 == 0),
    }
}

fn body(entities: usize, features: usize, first: i64) -> String {
    let refs: Vec<String> = (0..features).map(|f| format!("\"bench:f{f}\"")).collect();
    let ids: Vec<String> = (0..entities as i64)
        .map(|i| ((first + i * 37) % KEYS).to_string())
        .collect();
    format!(
        "{{\"features\":[{}],\"entities\":{{\"driver_id\":[{}]}}}}",
        refs.join(","),
        ids.join(",")
    )
}

/// A request for the 3 on-demand features, with the request field.
fn odfv_body(entities: usize, first: i64) -> String {
    let ids: Vec<String> = (0..entities as i64)
        .map(|i| ((first + i * 37) % KEYS).to_string())
        .collect();
    let vals: Vec<String> = (0..entities).map(|i| i.to_string()).collect();
    format!(
        "{{\"features\":[\"bench_odfv:o0\",\"bench_odfv:o1\",\"bench_odfv:o2\"],\"entities\":{{\"driver_id\":[{}],\"val\":[{}]}}}}",
        ids.join(","),
        vals.join(",")
    )
}

/// A repo with the bench view applied and KEYS drivers in Feast's SQLite layout.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        "project: bench\nregistry: data/registry.db\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("features.yaml"), DEFS).expect("write");
    let desired = quiver_registry::definitions::load(dir.path(), "bench").expect("definitions");
    let mut file = quiver_core::registry::RegistryFile::empty();
    quiver_registry::apply::apply(&mut file, &desired, Default::default()).expect("apply");
    let registry = dir.path().join("data/registry.db");
    quiver_registry::store::write_atomic(&registry, &file.encode("bench", Default::default()))
        .expect("registry");

    let conn = rusqlite::Connection::open(dir.path().join("data/online.db")).expect("sqlite");
    let table = layout::sqlite_table("bench", "bench");
    for stmt in layout::sqlite_create_table(&table) {
        conn.execute(&stmt, []).expect("create");
    }
    let insert = format!(
        "INSERT INTO {} (entity_key, feature_name, value, event_ts) VALUES (?1, ?2, ?3, ?4)",
        layout::quote_ident(&table)
    );
    for id in 0..KEYS {
        let key = entity_key::serialize(&[("driver_id", &Value::Int64(id))]).expect("key");
        for f in 0..10 {
            conn.execute(
                &insert,
                rusqlite::params![
                    key,
                    format!("f{f}"),
                    value(f, id).encode_to_vec(),
                    1_795_651_200i64
                ],
            )
            .expect("insert");
        }
    }
    dir
}

fn hot_path(c: &mut Criterion) {
    let dir = repo();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = OnlineStore::Sqlite(Arc::new(SqliteStore::open(
        &dir.path().join("data/online.db"),
    )));
    let (state, _background) = rt
        .block_on(quiver_sidecar::start(
            SidecarConfig::default(),
            "bench",
            dir.path().join("data/registry.db"),
            store,
        ))
        .expect("start");
    // Warm the cache: every driver read once.
    for first in (0..KEYS).step_by(100) {
        let req = parse_request(body(100, 10, first).as_bytes()).expect("request");
        let reg = state.registry.load_full();
        rt.block_on(state.engine.get_online_features(&reg, req, Format::Json))
            .expect("warm");
    }

    for (shape, entities, features) in [("1x3", 1, 3), ("10x10", 10, 10)] {
        let bodies: Vec<String> = (0..64).map(|i| body(entities, features, i * 13)).collect();
        c.bench_function(&format!("sidecar/decode_{shape}"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % bodies.len();
                parse_request(black_box(bodies[i].as_bytes())).expect("valid")
            })
        });
        for (name, format) in [("json", Format::Json), ("arrow", Format::Arrow)] {
            c.bench_function(&format!("sidecar/request_{name}_{shape}"), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % bodies.len();
                    let req = parse_request(bodies[i].as_bytes()).expect("valid");
                    let reg = state.registry.load_full();
                    rt.block_on(state.engine.get_online_features(&reg, req, format))
                        .expect("answer")
                        .len()
                })
            });
        }
    }

    // The same warm requests for 3 computed features instead of 3 stored ones.
    for (shape, entities) in [("1x3", 1), ("10x3", 10)] {
        let plain: Vec<String> = (0..64).map(|i| body(entities, 3, i * 13)).collect();
        let odfv: Vec<String> = (0..64).map(|i| odfv_body(entities, i * 13)).collect();
        for (name, bodies) in [("stored", &plain), ("odfv", &odfv)] {
            c.bench_function(&format!("sidecar/request_{name}_json_{shape}"), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % bodies.len();
                    let req = parse_request(bodies[i].as_bytes()).expect("valid");
                    let reg = state.registry.load_full();
                    rt.block_on(state.engine.get_online_features(&reg, req, Format::Json))
                        .expect("answer")
                        .len()
                })
            });
        }
    }

    // One cache lookup among 100,000 entries.
    let cache = Cache::new(1 << 30);
    let keys: Vec<CacheKey> = (0..100_000i64)
        .map(|id| CacheKey {
            view: 7,
            entity: quiver_sidecar::cache::EntityBytes::from_slice(
                &entity_key::serialize(&[("driver_id", &Value::Int64(id))]).expect("key"),
            ),
        })
        .collect();
    for k in &keys {
        let row = Row::new(Default::default(), (0..10).map(|f| value(f, 1)).collect());
        cache.insert(
            k.clone(),
            Arc::new(Entry::new(
                Some(row),
                std::time::Instant::now(),
                false,
                k.entity.len(),
            )),
        );
    }
    c.bench_function("sidecar/cache_get", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 7919) % keys.len();
            cache.get(black_box(&keys[i])).is_some()
        })
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);

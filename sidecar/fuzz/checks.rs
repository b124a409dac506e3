//! What each fuzz target checks, shared by the cargo-fuzz targets (`fuzz_targets/`) and by
//! `tests/fuzz_corpus.rs`, which replays the committed corpora through these same functions in
//! the normal test suite (CI). Each function takes the fuzzer's bytes and panics on a finding.

#![allow(dead_code)] // each fuzz target uses one function

use std::sync::OnceLock;

use quiver_sidecar::api::{MAX_ENTITY_COLUMNS, parse_request};
use quiver_sidecar::push::{self, PushConfig};
use quiver_sidecar::registry::ServingRegistry;

/// `POST /get-online-features` bodies: never a panic; the entity-column cap holds.
pub fn online_request(data: &[u8]) {
    if let Ok(r) = parse_request(data) {
        assert!(r.entities.0.len() <= MAX_ENTITY_COLUMNS);
    }
}

/// A push source feeding two views (every value type a push checks), and a view written by
/// `/write-to-online-store`.
const DEFINITIONS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
  - {name: city, join_keys: [city], value_type: STRING}
sources:
  - {name: stats_file, type: file, path: data/stats.parquet, timestamp_field: event_timestamp, created_timestamp_column: created}
  - {name: stats_push, type: push, batch_source: stats_file}
feature_views:
  - name: stats
    entities: [driver]
    ttl: 1d
    source: stats_push
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: trips, dtype: Int64}
      - {name: label, dtype: String}
      - {name: ok, dtype: Bool}
      - {name: hist, dtype: Array(Float64)}
      - {name: when, dtype: UnixTimestamp}
      - {name: raw, dtype: Bytes}
  - name: stats_by_city
    entities: [driver, city]
    ttl: 1d
    source: stats_push
    schema:
      - {name: trips, dtype: Int64}
      - {name: small, dtype: Int32}
"#;

fn registry() -> &'static ServingRegistry {
    static REGISTRY: OnceLock<ServingRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let project = quiver_registry::definitions::parse(&[("features.yaml", DEFINITIONS)], "p")
            .unwrap_or_else(|e| panic!("the fuzz definitions do not parse: {e:?}"));
        ServingRegistry::build(&project, 1, "fuzz")
    })
}

/// Push tables (`POST /push` and `/write-to-online-store` bodies): never a panic; the row and
/// value limits hold while parsing; every row a view gets passed its type and range checks.
pub fn push_table(data: &[u8]) {
    let reg = registry();
    let config = PushConfig {
        max_rows: 64,
        max_values: 1024,
        ..PushConfig::default()
    };
    for by_source in [true, false] {
        let Ok(request) = push::parse(reg, data, by_source, &config) else {
            continue;
        };
        assert!(request.rows <= config.max_rows, "{} rows", request.rows);
        let values: usize = request.columns.iter().map(|(_, v)| v.len()).sum();
        assert!(values <= config.max_values, "{values} values");
        for &i in &request.views {
            if let Ok(rows) = push::view_rows(&reg.views[i], &request) {
                assert!(rows.len() <= request.rows.max(1));
            }
        }
    }
}

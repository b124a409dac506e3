//! What each fuzz target checks, shared by the cargo-fuzz targets (`fuzz_targets/`) and by
//! `tests/fuzz_corpus.rs`, which replays the committed corpora through these same functions in
//! the normal test suite (CI). Each function takes the fuzzer's bytes and panics on a finding.

#![allow(dead_code)] // each fuzz target uses one function

use prost::Message;
use quiver_core::registry::RegistryFile;
use quiver_core::{Value, entity_key};

fn serialize(pairs: &[(String, Value)]) -> Option<Vec<u8>> {
    let refs: Vec<(&str, &Value)> = pairs.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = Vec::new();
    entity_key::serialize_into(&mut out, &refs).ok()?;
    Some(out)
}

/// Serialized entity keys (v3) as read back from Redis keys: never a panic; what decodes
/// re-serializes to bytes that decode and re-serialize to themselves.
pub fn entity_key(data: &[u8]) {
    if let Ok(pairs) = entity_key::deserialize(data)
        && let Some(once) = serialize(&pairs)
    {
        let again = entity_key::deserialize(&once)
            .ok()
            .and_then(|p| serialize(&p));
        assert_eq!(again.as_ref(), Some(&once));
    }
}

/// Whole Feast registry protobufs (a registry file or object anyone could write): never a
/// panic, whatever the bytes; every project typed.
pub fn registry_proto(data: &[u8]) {
    if let Ok(file) = RegistryFile::decode(data)
        && let Ok(names) = file.project_names()
    {
        for p in names {
            let _ = file.project(&p);
        }
    }
}

fn encode(v: Value) -> Vec<u8> {
    quiver_core::proto::types::Value::from(v).encode_to_vec()
}

/// Feast `Value` protos as stored in the online store: never a panic; what decodes converts
/// back to a proto whose bytes are stable (decode → encode is idempotent; bytes, not values,
/// are compared so NaN compares equal to itself).
pub fn value_proto(data: &[u8]) {
    if let Ok(v) = Value::decode(data) {
        let once = encode(v);
        let again = Value::decode(&once).map(encode);
        assert_eq!(again.as_ref().ok(), Some(&once));
    }
}

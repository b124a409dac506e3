//! Serialized entity keys (v3) as read back from Redis keys: never a panic; what decodes
//! re-serializes to bytes that decode and re-serialize to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_core::{Value, entity_key};

fn serialize(pairs: &[(String, Value)]) -> Option<Vec<u8>> {
    let refs: Vec<(&str, &Value)> = pairs.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = Vec::new();
    entity_key::serialize_into(&mut out, &refs).ok()?;
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = entity_key::deserialize(data)
        && let Some(once) = serialize(&pairs)
    {
        let again = entity_key::deserialize(&once).ok().and_then(|p| serialize(&p));
        assert_eq!(again.as_ref(), Some(&once));
    }
});

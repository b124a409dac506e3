//! Feast `Value` protos as stored in the online store: never a panic; what decodes converts
//! back to a proto whose bytes are stable (decode → encode is idempotent; bytes, not values,
//! are compared so NaN compares equal to itself).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use quiver_core::Value;

fn encode(v: Value) -> Vec<u8> {
    quiver_core::proto::types::Value::from(v).encode_to_vec()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = Value::decode(data) {
        let once = encode(v);
        let again = Value::decode(&once).map(encode);
        assert_eq!(again.as_ref().ok(), Some(&once));
    }
});

//! Serialized entity keys (v3): never a panic; decode → encode is stable (`checks::entity_key`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::entity_key(data));

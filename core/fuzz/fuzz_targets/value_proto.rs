//! Feast `Value` protos: never a panic; decode → encode is idempotent (`checks::value_proto`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::value_proto(data));

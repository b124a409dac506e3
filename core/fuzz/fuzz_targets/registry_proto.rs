//! Whole Feast registry protobufs: never a panic; every project typed (`checks::registry_proto`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::registry_proto(data));

//! `feature_store.yaml` text: never a panic (`checks::feature_store_yaml`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::feature_store_yaml(data));

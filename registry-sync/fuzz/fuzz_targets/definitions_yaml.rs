//! Definitions YAML as sent to apply: never a panic; the parser's caps hold (`checks::definitions_yaml`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::definitions_yaml(data));

//! Kubernetes quantities: never a panic; what parses is finite and non-negative (`checks::quantity`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::quantity(data));

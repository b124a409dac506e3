//! Push tables, `/push` and `/write-to-online-store` bodies: never a panic; row and value
//! limits hold while parsing; rows pass their type and range checks (`checks::push_table`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::push_table(data));

//! `POST /get-online-features` bodies: never a panic; the entity-column cap holds
//! (`checks::online_request`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::online_request(data));

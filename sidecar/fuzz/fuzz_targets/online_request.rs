//! `POST /get-online-features` bodies: never a panic; the entity-column cap holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_sidecar::api::{MAX_ENTITY_COLUMNS, parse_request};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = parse_request(data) {
        assert!(r.entities.0.len() <= MAX_ENTITY_COLUMNS);
    }
});

//! The flatbuffers registry snapshot a sidecar receives (and keeps in its state dir): never a
//! panic, whatever the bytes (size, verifier, schema version and checksum are checked first).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = quiver_registry::snapshot::decode(data);
});

//! Flight uploads (DoPut/DoExchange entity tables) as Arrow IPC messages: never a panic; what
//! decodes cost no more than was reserved for it (`checks::flight_upload`).
#![no_main]

#[path = "../../src/flight_wire.rs"]
mod flight_wire;

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::flight_upload(data));

//! Flight command descriptors (Feast's request JSON): never a panic; accepted commands have
//! an `api`, and `get_historical_features`' parameters are typed (`checks::flight_command`).
#![no_main]

#[path = "../../src/flight_wire.rs"]
mod flight_wire;

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::flight_command(data));

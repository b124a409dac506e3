//! Replays each cargo-fuzz target's committed corpus through the function the target calls
//! (`fuzz/checks.rs`): `quiver_testkit::replay_corpus` says why.

use quiver_offline::flight_wire;

#[path = "../fuzz/checks.rs"]
mod checks;

fn replay(target: &str, check: fn(&[u8])) {
    quiver_testkit::replay_corpus(env!("CARGO_MANIFEST_DIR"), target, check);
}

#[test]
fn flight_upload_corpus() {
    replay("flight_upload", checks::flight_upload);
}

#[test]
fn flight_command_corpus() {
    replay("flight_command", checks::flight_command);
}

//! Replays each cargo-fuzz target's committed corpus through the function the target calls
//! (`fuzz/checks.rs`): `quiver_testkit::replay_corpus` says why.

#[path = "../fuzz/checks.rs"]
mod checks;

fn replay(target: &str, check: fn(&[u8])) {
    quiver_testkit::replay_corpus(env!("CARGO_MANIFEST_DIR"), target, check);
}

#[test]
fn online_request_corpus() {
    replay("online_request", checks::online_request);
}

#[test]
fn push_table_corpus() {
    replay("push_table", checks::push_table);
}

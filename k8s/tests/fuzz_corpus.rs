//! Replays each cargo-fuzz target's committed corpus through the function the target calls
//! (`fuzz/checks.rs`): `quiver_testkit::replay_corpus` says why.

#[path = "../fuzz/checks.rs"]
mod checks;

fn replay(target: &str, check: fn(&[u8])) {
    quiver_testkit::replay_corpus(env!("CARGO_MANIFEST_DIR"), target, check);
}

#[test]
fn admission_review_corpus() {
    replay("admission_review", checks::admission_review);
}

#[test]
fn quantity_corpus() {
    replay("quantity", checks::quantity);
}

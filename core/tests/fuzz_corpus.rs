//! Replays each cargo-fuzz target's committed corpus through the function the target calls
//! (`fuzz/checks.rs`): `quiver_testkit::replay_corpus` says why.

#[path = "../fuzz/checks.rs"]
mod checks;

fn replay(target: &str, check: fn(&[u8])) {
    quiver_testkit::replay_corpus(env!("CARGO_MANIFEST_DIR"), target, check);
}

#[test]
fn entity_key_corpus() {
    replay("entity_key", checks::entity_key);
}

#[test]
fn registry_proto_corpus() {
    replay("registry_proto", checks::registry_proto);
}

#[test]
fn value_proto_corpus() {
    replay("value_proto", checks::value_proto);
}

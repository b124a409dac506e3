//! Replays each cargo-fuzz target's committed corpus (`fuzz/corpus/<target>`) through the very
//! function the target calls (`fuzz/checks.rs`), so CI checks every input the fuzzers kept
//! without building the fuzz projects (benches/RESULTS.md: their sanitizer builds cost more
//! than CI's budget). A finding fixed later gets its input added to the corpus.

#[path = "../fuzz/checks.rs"]
mod checks;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "{target}: {} fails its check",
            path.display()
        );
        inputs += 1;
    }
    assert!(inputs > 0, "{} holds no input", dir.display());
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

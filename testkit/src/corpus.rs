//! Replaying a cargo-fuzz target's committed corpus in the normal test suite.
//!
//! Each fuzzed crate keeps `fuzz/corpus/<target>/` and the functions its targets call in
//! `fuzz/checks.rs`; its `tests/fuzz_corpus.rs` runs every kept input through the very same
//! function, so CI checks what the fuzzers found without building the fuzz projects (their
//! sanitizer builds cost more than CI's budget: benches/RESULTS.md). A finding fixed later gets
//! its input added to the corpus.

use std::path::Path;

/// Runs `check` on every file of `crate_dir/fuzz/corpus/target`; fails naming the first input
/// whose check panics, or when the corpus is empty or missing.
pub fn replay_corpus(crate_dir: &str, target: &str, check: fn(&[u8])) {
    let dir = Path::new(crate_dir).join("fuzz/corpus").join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a corpus entry").path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
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

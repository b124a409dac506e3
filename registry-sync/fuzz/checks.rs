//! What each fuzz target checks, shared by the cargo-fuzz targets (`fuzz_targets/`) and by
//! `tests/fuzz_corpus.rs`, which replays the committed corpora through these same functions in
//! the normal test suite (CI). Each function takes the fuzzer's bytes and panics on a finding.

#![allow(dead_code)] // each fuzz target uses one function

/// Definitions YAML as sent to `POST /v1/projects/{p}/apply`: never a panic; the caps (depth,
/// nodes, objects) hold, so any input is checked in time linear in its size (libFuzzer's
/// -timeout reports a slow input as a finding).
pub fn definitions_yaml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = quiver_registry::definitions::parse(&[("features.yaml", text)], "p");
    }
}

/// `feature_store.yaml` text (also given whole in an environment variable): never a panic.
pub fn feature_store_yaml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = quiver_registry::config::RepoConfig::parse(
            text,
            std::path::Path::new("/repo"),
            "feature_store.yaml",
        );
    }
}

/// The flatbuffers registry snapshot a sidecar receives (and keeps in its state dir): never a
/// panic, whatever the bytes (size, verifier, schema version and checksum are checked first).
pub fn snapshot(data: &[u8]) {
    let _ = quiver_registry::snapshot::decode(data);
}

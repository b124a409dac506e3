//! `feature_store.yaml` text (also given whole in an environment variable): never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = quiver_registry::config::RepoConfig::parse(
            text,
            std::path::Path::new("/repo"),
            "feature_store.yaml",
        );
    }
});

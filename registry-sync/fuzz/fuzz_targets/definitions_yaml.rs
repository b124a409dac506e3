//! Definitions YAML as sent to `POST /v1/projects/{p}/apply`: never a panic; the caps (depth,
//! nodes, objects) hold, so any input is checked in time linear in its size (libFuzzer's
//! -timeout reports a slow input as a finding).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = quiver_registry::definitions::parse(&[("features.yaml", text)], "p");
    }
});

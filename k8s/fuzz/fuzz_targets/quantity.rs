//! Kubernetes quantities from annotations: never a panic; what parses is a finite,
//! non-negative number.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(v) = quiver_k8s::quantity::parse(text)
    {
        assert!(v.is_finite() && v >= 0.0, "{text:?} -> {v}");
    }
});

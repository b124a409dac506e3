//! What each fuzz target checks, shared by the cargo-fuzz targets (`fuzz_targets/`) and by
//! `tests/fuzz_corpus.rs`, which replays the committed corpora through these same functions in
//! the normal test suite (CI). Each function takes the fuzzer's bytes and panics on a finding.

#![allow(dead_code)] // each fuzz target uses one function

use quiver_k8s::InjectorConfig;
use quiver_k8s::admission::AdmissionReview;

/// AdmissionReview JSON (with the Pod inside) as the API server sends it: never a panic;
/// whatever parses is answered (allowed, patched or denied).
pub fn admission_review(data: &[u8]) {
    if let Ok(review) = serde_json::from_slice::<AdmissionReview>(data)
        && let Some(request) = review.request
    {
        let _ = quiver_k8s::admit(&request, &InjectorConfig::default());
    }
}

/// Kubernetes quantities from annotations: never a panic; what parses is a finite,
/// non-negative number.
pub fn quantity(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(v) = quiver_k8s::quantity::parse(text)
    {
        assert!(v.is_finite() && v >= 0.0, "{text:?} -> {v}");
    }
}

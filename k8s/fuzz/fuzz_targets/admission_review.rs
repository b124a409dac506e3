//! AdmissionReview JSON (with the Pod inside) as the API server sends it: never a panic;
//! whatever parses is answered (allowed, patched or denied).
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_k8s::InjectorConfig;
use quiver_k8s::admission::AdmissionReview;

fuzz_target!(|data: &[u8]| {
    if let Ok(review) = serde_json::from_slice::<AdmissionReview>(data)
        && let Some(request) = review.request
    {
        let _ = quiver_k8s::admit(&request, &InjectorConfig::default());
    }
});

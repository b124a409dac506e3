//! AdmissionReview JSON through `admit`: never a panic (`checks::admission_review`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::admission_review(data));

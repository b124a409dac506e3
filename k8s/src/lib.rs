//! quiver-k8s: quiver on Kubernetes. The sidecar injector, a mutating admission webhook that
//! adds a `quiver serve` sidecar to the KServe pods that ask for one by annotation.
//!
//! ```text
//! POST /mutate (TLS; cert and key reloaded when their files change)
//!   └─ body limit ─▶ AdmissionReview v1 ─▶ inject::admit (pure) ─▶ AdmissionReview + JSONPatch
//! GET /health
//! ```
//!
//! [`inject`] is the decision and the patch, with no I/O ([`enrich`]: the rewiring that puts
//! the sidecar in front of the model server); [`server`] is the HTTPS server around
//! it; [`tls`] loads and reloads the certificate. The manifests that deploy it are in `k8s/`
//! beside this crate.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admission;
pub mod enrich;
pub mod inject;
pub mod quantity;
pub mod server;
pub mod tls;

pub use inject::{InjectorConfig, Outcome, admit};

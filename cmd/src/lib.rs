//! quiver-cmd: what the two binaries share, and nothing that pulls in the offline side.
//!
//! - [`common`]: logging, runtimes, listen addresses, tokens, the server core's flags
//!   ([`common::ServerArgs`]), shutdown on SIGTERM, the online store from `feature_store.yaml`.
//! - [`serve`]: `serve` (the sidecar), run by `quiver serve` and by the lean `quiver-sidecar`.
//! - [`registry_io`]: the repo's registry wherever `feature_store.yaml` puts it.
//!
//! The `quiver-sidecar` binary (`src/bin/quiver-sidecar.rs`) is this crate's: it links the
//! serving path only (no DataFusion, no Parquet writer), so the image beside every model stays
//! small. The full `quiver` binary (`cli/`) adds every other role.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod common;
pub mod registry_io;
pub mod serve;

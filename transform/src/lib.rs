//! quiver-transform: on-demand feature views computed by Feast's transformation service.
//!
//! `feast serve_transformations` (Feast's own Python, run in the feature repo) serves gRPC
//! `feast.serving.TransformationService/TransformFeatures`: the request names an on-demand view
//! and carries its inputs as an Arrow IPC *file* (source features as `view__feature` columns,
//! request-source fields by their names); the answer is an Arrow IPC file with one column per
//! output feature, named `odfv__feature`. This is how Feast's Go feature server runs Python
//! transformations; quiver does the same from the sidecar and from historical retrieval.
//!
//! - [`TransformClient`]: one HTTP/2 connection to the service (made on first use, made again
//!   after it breaks), a deadline per call, an answer size bound.
//! - [`TransformError`]: unreachable (502), past the deadline (504), the service said no (502,
//!   with its gRPC status and message), an answer that is not Arrow (502).
//! - [`encode_ipc_file`], [`decode_ipc_file`], [`column_values`]: the Arrow side.
//!
//! Why not tonic: a unary gRPC call is one POST with a 5-byte length prefix and a `grpc-status`
//! trailer. hyper's HTTP/2 client, already in the lean sidecar's tree, does it in a page; tonic
//! would add its codegen, tower stack and a second protobuf build step for one method.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod arrow;
mod client;

pub use arrow::{column_values, decode_ipc_file, encode_ipc_file};
pub use client::{TransformClient, TransformConfig, TransformError};

//! quiver-registry: everything about definitions and the registry that is not serving.
//!
//! - `client` (cargo feature `client`): the registry service's client: snapshot sync, backoff,
//!   the state dir.
//! - [`config`]: `feature_store.yaml` (Feast's keys, defaults and env override).
//! - [`definitions`]: YAML feature definitions, validated as a whole.
//! - [`apply`]: diffing definitions against a registry and rewriting it.
//! - [`store`]: reading and atomically writing a registry file.
//! - [`location`]: where a registry is (a local file, or an `s3://` / `gs://` object).
//! - `object` (cargo feature `object-store`): reading and conditionally writing a registry
//!   object in S3 or GCS.
//! - [`spark`]: the Spark offline store's settings and Spark Connect URLs (`sc://`).
//! - [`snapshot`]: the flatbuffers registry snapshot a sidecar syncs from the registry service.
//! - [`summary`]: a JSON listing of a project's objects (`quiver list --json`).
//! - [`yaml`]: every YAML read, with caps on depth and size checked while parsing.
//! - [`trust`]: the operator's trusted locations for sources and sinks.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod apply;
#[cfg(feature = "client")]
pub mod client;
pub mod config;
pub mod definitions;
pub mod location;
#[cfg(feature = "object-store")]
pub mod object;
pub mod snapshot;
pub mod spark;
pub mod store;
pub mod summary;
pub mod trust;
pub mod yaml;

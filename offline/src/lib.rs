//! quiver-offline: the offline side of quiver.
//!
//! - [`source`]: Feast file sources (Parquet, Arrow IPC; a file or a folder of them, local or in
//!   S3/GCS) scanned as Arrow batches, with column projection and row-group pruning on
//!   event-time statistics.
//! - [`convert`]: Arrow cells → Feast's serialized `Value`s, entity keys and event times.
//! - [`append`]: pushed rows appended to a file source as Parquet (`POST /push` to offline, and
//!   Feast's `offline_write_batch` through [`offline_write`]).
//! - [`historical`]: point-in-time-correct training datasets (Feast's `get_historical_features`)
//!   on DataFusion, with [`asof`]'s merge join; [`native`] computes native on-demand views
//!   on the joined batches.
//! - [`materialize`]: the latest row per entity key in a time window, written to the online
//!   store with Feast's write rule, in bounded memory (one compact winner per entity key, never
//!   the whole window); [`materialize_odfv`] computes write-time on-demand views from their
//!   sources' latest rows and stores them as Feast does.
//! - [`shard`]: the share of the entity keys one process of a sharded materialization writes
//!   (`--shard i/N`), by a hash Spark SQL computes alike.
//! - [`spark`]: the same join and materialization's selection run on Spark through Spark
//!   Connect, for repos whose `offline_store` is `type: spark`.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod append;
pub mod asof;
pub mod budget;
pub mod convert;
pub mod error;
pub mod flight;
pub mod flight_wire;
pub mod historical;
pub mod http;
pub mod inline;
pub mod materialize;
pub mod materialize_odfv;
pub mod native;
pub mod offline_write;
pub mod on_demand;
pub mod output;
pub mod remote_registry;
pub mod shard;
pub mod source;
pub mod spark;

pub use error::Error;

/// The view's join keys and their types: its entity columns, or its entities' join keys.
pub(crate) fn join_keys(
    registry: &quiver_core::registry::ProjectRegistry,
    view: &quiver_core::model::FeatureView,
) -> Result<Vec<(String, quiver_core::ValueType)>, Error> {
    if view
        .entities
        .iter()
        .all(|e| e == quiver_core::model::DUMMY_ENTITY)
    {
        return Ok(Vec::new());
    }
    if !view.entity_columns.is_empty() {
        return Ok(view
            .entity_columns
            .iter()
            .map(|f| (f.name.clone(), f.dtype))
            .collect());
    }
    view.entities
        .iter()
        .map(|e| {
            registry
                .entity(e)
                .map(|entity| (entity.join_key.clone(), entity.value_type))
                .ok_or_else(|| {
                    Error::unprocessable(format!("feature view {}: unknown entity {e}", view.name))
                })
        })
        .collect()
}

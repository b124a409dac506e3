//! The repo's registry wherever feature_store.yaml puts it: a local file, or an `s3://` or
//! `gs://` object (through `quiver_registry::object`). Every subcommand that reads or writes the
//! registry file goes through here.

use std::future::Future;
use std::path::PathBuf;

use anyhow::anyhow;
use quiver_core::registry::RegistryFile;
use quiver_core::time::Timestamp;
use quiver_registry::config::RepoConfig;
use quiver_registry::location::RegistryLocation;
use quiver_registry::object::ObjectRegistry;
use quiver_registry::store::{self, MaterializedInterval, RecordError};

/// Where the repo's registry is, ready to be read or written.
#[derive(Debug, Clone)]
pub enum RepoRegistry {
    File(PathBuf),
    Object(ObjectRegistry),
}

impl RepoRegistry {
    /// The registry `feature_store.yaml` names (an error for SQL or remote registries, or a
    /// malformed URI, naming it).
    pub fn open(config: &RepoConfig) -> anyhow::Result<RepoRegistry> {
        match config.registry_location().map_err(|e| anyhow!(e))? {
            RegistryLocation::File(path) => Ok(RepoRegistry::File(path)),
            RegistryLocation::Object(uri) => Ok(RepoRegistry::Object(
                ObjectRegistry::open(&uri).map_err(|e| anyhow!(e))?,
            )),
        }
    }

    /// The path or URI, for messages.
    pub fn describe(&self) -> String {
        match self {
            RepoRegistry::File(p) => p.display().to_string(),
            RepoRegistry::Object(o) => o.uri().to_string(),
        }
    }

    /// Reads the registry; `None` when it does not exist. Not to be called inside a runtime.
    pub fn read(&self) -> anyhow::Result<Option<RegistryFile>> {
        match self {
            RepoRegistry::File(path) => {
                if !path.exists() {
                    return Ok(None);
                }
                store::read(path).map(Some).map_err(|e| anyhow!(e))
            }
            RepoRegistry::Object(o) => block_on(async {
                match o.get().await? {
                    None => Ok(None),
                    Some((bytes, _)) => RegistryFile::decode(&bytes)
                        .map(Some)
                        .map_err(|e| anyhow!("registry {}: not a Feast registry: {e}", o.uri())),
                }
            })?,
        }
    }

    /// Reads the registry, a missing one being empty (what apply and materialize start from).
    pub fn read_or_empty(&self) -> anyhow::Result<RegistryFile> {
        Ok(self.read()?.unwrap_or_else(RegistryFile::empty))
    }

    /// Appends materialization intervals to their views, without losing a concurrent writer's
    /// change: under the file lock, or by a conditional write retried on a lost race.
    pub fn record_materialization(
        &self,
        project: &str,
        intervals: &[MaterializedInterval],
        now: Timestamp,
        version_id: &str,
    ) -> anyhow::Result<()> {
        match self {
            RepoRegistry::File(path) => {
                store::record_materialization(path, project, intervals, now, version_id)
                    .map_err(|e| anyhow!(e))
            }
            RepoRegistry::Object(o) => {
                let uri = o.uri().to_string();
                block_on(o.update_registry(
                    |file| {
                        store::append_intervals(file, project, intervals, now)
                            .map(Some)
                            .map_err(|e| match e {
                                RecordError::UnknownView(v) => format!(
                                    "registry {uri}: project {project} has no feature view {v}"
                                ),
                                RecordError::Registry(m) => format!("registry {uri}: {m}"),
                            })
                    },
                    || version_id.to_owned(),
                    || now,
                ))?
                .map(|_| ())
                .map_err(|e| anyhow!(e))
            }
        }
    }
}

/// Runs `f` to completion on a small runtime of its own (for the synchronous subcommands).
pub fn block_on<F: Future>(f: F) -> anyhow::Result<F::Output> {
    Ok(crate::common::small_runtime()?.block_on(f))
}

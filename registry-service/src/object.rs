//! The registry service over a registry object in S3 or GCS (`--store s3://bucket/registry.db`,
//! `gs://...`), the object Feast's file registry writes, with the version records in a sibling
//! object `.<name>.versions.json`.
//!
//! There is no lock to hold across a read-modify-write, so every write is conditional (on the
//! ETag, or GCS generation, read at the start of the attempt; a new object only if it still
//! does not exist) and an attempt that loses the race starts over from a fresh read:
//!
//! - an apply re-reads, re-reconciles and re-checks its base version, so of two concurrent
//!   applies to one project based on the same version one is written and the other gets a
//!   conflict (409); applies to different projects both land;
//! - the version record is derived state (reconciled from fingerprints). A write of it that
//!   loses merges with what won, keeping the higher version of each project, so versions only
//!   go up whichever replica wrote last.
//!
//! The store is checked at start to refuse conditional writes it cannot honour (see
//! `quiver_registry::object::ObjectRegistry::check_conditional_writes`).

use bytes::Bytes;
use quiver_core::registry::{ProjectRegistry, RegistryFile};
use quiver_core::time::Timestamp;
use quiver_registry::object::{
    MAX_ATTEMPTS, ObjectError, ObjectRegistry, ObjectUri, ObjectVersion, pause_after_conflict,
};
use xxhash_rust::xxh3::Xxh3;

use quiver_registry::store::IntervalEdit;

use crate::store::{
    Applied, ApplyError, Loaded, RecordError, Recorded, RegistryStoreError, Versions, VersionsFile,
    bump, plan_apply, plan_record, reconcile,
};

/// A registry object and its version record.
pub struct ObjectStore {
    registry: ObjectRegistry,
    versions: ObjectRegistry,
}

fn unavailable(e: ObjectError) -> RegistryStoreError {
    RegistryStoreError::Unavailable(e.to_string())
}

/// Each project's record with the higher version (on a tie, `theirs`: it is already stored).
pub(crate) fn merge_versions(theirs: &Versions, ours: &Versions) -> Versions {
    let mut out = theirs.clone();
    for (project, rec) in ours {
        match out.get(project) {
            Some(t) if t.version >= rec.version => {}
            _ => {
                out.insert(project.clone(), *rec);
            }
        }
    }
    out
}

impl ObjectStore {
    /// Opens the object store at `uri` and checks, with one conditional write that must be
    /// refused, that the store is reachable, the bucket exists and conditional writes are
    /// honoured.
    pub async fn open(uri: &ObjectUri) -> Result<ObjectStore, String> {
        let registry = ObjectRegistry::open(uri)?;
        let versions = registry.sibling(&format!(".{}.versions.json", uri.file_name()))?;
        registry
            .check_conditional_writes()
            .await
            .map_err(|e| format!("--store {uri}: {e}"))?;
        Ok(ObjectStore { registry, versions })
    }

    pub fn describe(&self) -> String {
        format!("object {}", self.registry.uri())
    }

    async fn read_file(&self) -> Result<(RegistryFile, Option<ObjectVersion>), RegistryStoreError> {
        match self.registry.get().await.map_err(unavailable)? {
            Some((bytes, v)) => RegistryFile::decode(&bytes)
                .map(|f| (f, Some(v)))
                .map_err(|e| RegistryStoreError::Corrupt(format!("{}: {e}", self.registry.uri()))),
            None => Ok((RegistryFile::empty(), None)),
        }
    }

    async fn read_versions(&self) -> Result<(Versions, Option<ObjectVersion>), RegistryStoreError> {
        match self.versions.get().await.map_err(unavailable)? {
            Some((bytes, v)) => serde_json::from_slice::<VersionsFile>(&bytes)
                .map(|f| (f.projects, Some(v)))
                .map_err(|e| RegistryStoreError::Corrupt(format!("{}: {e}", self.versions.uri()))),
            None => Ok((Versions::new(), None)),
        }
    }

    async fn read_all(
        &self,
    ) -> Result<(Loaded, Option<ObjectVersion>, Option<ObjectVersion>), RegistryStoreError> {
        // The record first: a record older than the objects only makes reconcile bump, never
        // lose, a version.
        let (versions, vv) = self.read_versions().await?;
        let (file, fv) = self.read_file().await?;
        Ok((Loaded { file, versions }, fv, vv))
    }

    fn encode_versions(versions: &Versions) -> Result<Bytes, RegistryStoreError> {
        serde_json::to_vec_pretty(&VersionsFile {
            projects: versions.clone(),
        })
        .map(Bytes::from)
        .map_err(|e| RegistryStoreError::Unavailable(e.to_string()))
    }

    /// Writes the version record if it is still at `expected`; when another writer got there
    /// first, merges (higher version wins) and tries again. Returns what was stored.
    async fn store_versions(
        &self,
        ours: &Versions,
        mut expected: Option<ObjectVersion>,
    ) -> Result<Versions, RegistryStoreError> {
        let mut versions = ours.clone();
        for attempt in 1..=MAX_ATTEMPTS {
            match self
                .versions
                .put(Self::encode_versions(&versions)?, expected.as_ref())
                .await
            {
                Ok(_) => return Ok(versions),
                Err(ObjectError::Conflict(_)) if attempt < MAX_ATTEMPTS => {
                    let (theirs, v) = self.read_versions().await?;
                    versions = merge_versions(&theirs, ours);
                    expected = v;
                    if versions == theirs {
                        return Ok(versions);
                    }
                    pause_after_conflict(attempt).await;
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(RegistryStoreError::Unavailable(format!(
            "{}: written continuously by others; gave up after {MAX_ATTEMPTS} attempts",
            self.versions.uri()
        )))
    }

    /// Two HEAD requests: the registry's and the record's versions.
    pub async fn change_token(&self) -> Result<u64, RegistryStoreError> {
        let mut h = Xxh3::new();
        for object in [&self.registry, &self.versions] {
            match object.head().await.map_err(unavailable)? {
                Some(v) => {
                    h.update(v.e_tag.as_deref().unwrap_or("").as_bytes());
                    h.update(&[0]);
                    h.update(v.version.as_deref().unwrap_or("").as_bytes());
                    h.update(&[0]);
                    h.update(&v.last_modified_ms.to_le_bytes());
                    h.update(&v.size.to_le_bytes());
                }
                None => h.update(b"missing\0"),
            }
        }
        Ok(h.digest())
    }

    /// Reads everything and reconciles the versions, persisting a bump.
    pub async fn load(&self) -> Result<Loaded, RegistryStoreError> {
        let (mut loaded, _, vv) = self.read_all().await?;
        if reconcile(&loaded.file, &mut loaded.versions)? {
            loaded.versions = self.store_versions(&loaded.versions, vv).await?;
        }
        Ok(loaded)
    }

    pub async fn apply(
        &self,
        base_version: Option<u64>,
        desired: ProjectRegistry,
        now: Timestamp,
        dry_run: bool,
    ) -> Result<Applied, ApplyError> {
        let project = desired.project.clone();
        for attempt in 1..=MAX_ATTEMPTS {
            let (mut loaded, fv, vv) = self.read_all().await?;
            // A dry run's objects are not what the store holds: keep what it read.
            let before = dry_run.then(|| loaded.file.clone());
            let (plan, current, reconciled) =
                plan_apply(&mut loaded, &project, base_version, &desired, now)?;
            if dry_run || plan.is_empty() {
                if reconciled && !dry_run {
                    loaded.versions = self.store_versions(&loaded.versions, vv).await?;
                }
                if let Some(file) = before {
                    loaded.file = file;
                }
                return Ok(Applied {
                    plan,
                    previous_version: current,
                    version: current,
                    loaded,
                });
            }
            let bytes = Bytes::from(loaded.file.encode(&uuid::Uuid::new_v4().to_string(), now));
            match self.registry.put(bytes, fv.as_ref()).await {
                Ok(_) => {}
                // Another writer got in between the read and the write: start over, so the
                // base version is checked against what it wrote.
                Err(ObjectError::Conflict(m)) if attempt < MAX_ATTEMPTS => {
                    tracing::info!("{m}; applying again on what it wrote");
                    pause_after_conflict(attempt).await;
                    continue;
                }
                Err(e) => return Err(ApplyError::Store(unavailable(e))),
            }
            let version = bump(&mut loaded, &project, current)?;
            loaded.versions = self.store_versions(&loaded.versions, vv).await?;
            return Ok(Applied {
                plan,
                previous_version: current,
                version,
                loaded,
            });
        }
        Err(ApplyError::Store(RegistryStoreError::Unavailable(format!(
            "{}: written continuously by others; gave up after {MAX_ATTEMPTS} attempts",
            self.registry.uri()
        ))))
    }
}

impl ObjectStore {
    /// Appends materialization intervals (whatever the project's version: intervals only
    /// accumulate). A lost race re-reads and appends again to what won, so concurrent runs keep
    /// every interval.
    pub async fn record(
        &self,
        project: &str,
        edit: &IntervalEdit,
        now: Timestamp,
    ) -> Result<Recorded, RecordError> {
        for attempt in 1..=MAX_ATTEMPTS {
            let (mut loaded, fv, vv) = self.read_all().await?;
            let (_, version) = plan_record(&mut loaded, project, edit, now)?;
            let bytes = Bytes::from(loaded.file.encode(&uuid::Uuid::new_v4().to_string(), now));
            match self.registry.put(bytes, fv.as_ref()).await {
                Ok(_) => {}
                Err(ObjectError::Conflict(m)) if attempt < MAX_ATTEMPTS => {
                    tracing::info!("{m}; recording again on what it wrote");
                    pause_after_conflict(attempt).await;
                    continue;
                }
                Err(e) => return Err(RecordError::Store(unavailable(e))),
            }
            loaded.versions = self.store_versions(&loaded.versions, vv).await?;
            return Ok(Recorded { version, loaded });
        }
        Err(RecordError::Store(RegistryStoreError::Unavailable(
            format!(
                "{}: written continuously by others; gave up after {MAX_ATTEMPTS} attempts",
                self.registry.uri()
            ),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::VersionRecord;

    fn rec(version: u64, fingerprint: u64) -> VersionRecord {
        VersionRecord {
            version,
            fingerprint,
        }
    }

    #[test]
    fn merged_versions_only_go_up() {
        let theirs: Versions = [
            ("a".to_owned(), rec(3, 30)),
            ("b".to_owned(), rec(5, 50)),
            ("c".to_owned(), rec(1, 10)),
        ]
        .into();
        let ours: Versions = [
            ("a".to_owned(), rec(4, 31)),
            ("b".to_owned(), rec(4, 49)),
            ("c".to_owned(), rec(1, 11)),
            ("d".to_owned(), rec(1, 70)),
        ]
        .into();
        let merged = merge_versions(&theirs, &ours);
        assert_eq!(merged["a"], rec(4, 31), "ours is newer");
        assert_eq!(merged["b"], rec(5, 50), "theirs is newer");
        assert_eq!(merged["c"], rec(1, 10), "a tie keeps what is stored");
        assert_eq!(merged["d"], rec(1, 70), "a project only we know");
        assert_eq!(merged.len(), 4);
    }
}

//! Where the registry lives, and its versions.
//!
//! A store holds Feast-format objects (a registry file, or Feast's SQL-registry tables) plus one
//! record per project: its version and the fingerprint of its objects at that version. The
//! version is the service's, monotonic and persisted beside the objects:
//!
//! - every write through the service bumps it by one, in the same critical section (file lock,
//!   or a Postgres transaction under an advisory lock) that checks the writer's base version;
//! - a change made behind the service's back (`feast apply`, `quiver apply` on the file) shows
//!   as a fingerprint that no longer matches the record, and bumps the version on the next load
//!   (see [`reconcile`]). A crash between writing the objects and the record heals the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quiver_core::fault::{Classified, ErrorKind};
use quiver_core::registry::{ObjectKind, ObjectWrite, ProjectRegistry, RegistryFile};
use quiver_core::time::Timestamp;
use quiver_registry::apply::{self, Plan};
use quiver_registry::store::IntervalEdit;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::object::ObjectStore;
use crate::postgres::PgStore;

/// A project's version and the fingerprint of its objects at that version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u64,
    pub fingerprint: u64,
}

/// Version records by project.
pub type Versions = BTreeMap<String, VersionRecord>;

/// The whole registry and its versions, as loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: RegistryFile,
    pub versions: Versions,
}

/// Why a registry store operation failed (the online store's is `quiver_online_store::StoreError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryStoreError {
    /// The store cannot be reached or read (I/O, connection).
    #[error("registry store unavailable: {0}")]
    Unavailable(String),
    /// The store holds something that is not a valid registry.
    #[error("registry store holds an invalid registry: {0}")]
    Corrupt(String),
}

impl RegistryStoreError {
    /// The stable name in error bodies.
    pub fn class(&self) -> &'static str {
        match self {
            RegistryStoreError::Unavailable(_) => "StoreUnavailable",
            RegistryStoreError::Corrupt(_) => "StoreCorrupt",
        }
    }
}

impl From<quiver_registry::store::FileError> for RegistryStoreError {
    fn from(e: quiver_registry::store::FileError) -> RegistryStoreError {
        match e {
            quiver_registry::store::FileError::Corrupt { .. } => {
                RegistryStoreError::Corrupt(e.to_string())
            }
            quiver_registry::store::FileError::Io { .. } => {
                RegistryStoreError::Unavailable(e.to_string())
            }
        }
    }
}

impl Classified for RegistryStoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            RegistryStoreError::Unavailable(_) => ErrorKind::Unavailable,
            // The store (file, Postgres, object) answered with bytes that do not decode.
            RegistryStoreError::Corrupt(_) => ErrorKind::UpstreamFailed,
        }
    }
}

/// Why an apply was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The project moved on since the version the write was based on.
    #[error("the project is at version {current}, not {base}")]
    Conflict { base: u64, current: u64 },
    #[error(transparent)]
    Store(RegistryStoreError),
}

impl Classified for ApplyError {
    fn kind(&self) -> ErrorKind {
        match self {
            ApplyError::Conflict { .. } => ErrorKind::Conflict,
            ApplyError::Store(e) => e.kind(),
        }
    }
}

impl From<RegistryStoreError> for ApplyError {
    fn from(e: RegistryStoreError) -> ApplyError {
        ApplyError::Store(e)
    }
}

/// What an apply did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub plan: Plan,
    /// The version the apply was checked against.
    pub previous_version: u64,
    /// The project's version afterwards (unchanged for an empty plan or a dry run).
    pub version: u64,
    /// The whole store afterwards.
    pub loaded: Loaded,
}

/// Why recording materialization intervals failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The project has no (stream) feature view of this name.
    #[error("no feature view {0}")]
    UnknownView(String),
    #[error(transparent)]
    Store(RegistryStoreError),
}

impl Classified for RecordError {
    fn kind(&self) -> ErrorKind {
        match self {
            RecordError::UnknownView(_) => ErrorKind::NotFound,
            RecordError::Store(e) => e.kind(),
        }
    }
}

impl From<RegistryStoreError> for RecordError {
    fn from(e: RegistryStoreError) -> RecordError {
        RecordError::Store(e)
    }
}

/// What recording intervals did.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The project's version afterwards.
    pub version: u64,
    /// The whole store afterwards.
    pub loaded: Loaded,
}

/// The shared part of recording intervals (or clearing them): reconcile, edit, bump. Returns
/// the objects rewritten, for stores that keep a row per object.
pub(crate) fn plan_record(
    loaded: &mut Loaded,
    project: &str,
    edit: &IntervalEdit,
    now: Timestamp,
) -> Result<(Vec<ObjectWrite>, u64), RecordError> {
    reconcile(&loaded.file, &mut loaded.versions)?;
    let current = loaded.versions.get(project).map_or(0, |r| r.version);
    let writes = quiver_registry::store::edit_intervals(&mut loaded.file, project, edit, now)
        .map_err(|e| match e {
            quiver_registry::store::RecordError::UnknownView(v) => RecordError::UnknownView(v),
            quiver_registry::store::RecordError::Registry(m) => {
                RecordError::Store(RegistryStoreError::Corrupt(m))
            }
        })?;
    let version = bump(loaded, project, current)?;
    Ok((writes, version))
}

/// The fingerprint of one project's objects (any order in, one value out).
pub fn fingerprint(file: &RegistryFile, project: &str) -> Result<u64, RegistryStoreError> {
    let mut objects = file
        .project_objects(project)
        .map_err(|e| RegistryStoreError::Corrupt(e.to_string()))?;
    objects.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
    let mut h = Xxh3::new();
    for (kind, name, bytes) in objects {
        h.update(kind.label().as_bytes());
        h.update(&(name.len() as u32).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&(bytes.len() as u32).to_le_bytes());
        h.update(bytes);
    }
    Ok(h.digest())
}

/// Brings the records up to date with the objects: a new project starts at version 1, a
/// project whose objects changed since its record goes up by one. Returns whether any record
/// changed.
pub fn reconcile(file: &RegistryFile, versions: &mut Versions) -> Result<bool, RegistryStoreError> {
    let mut changed = false;
    let names = file
        .project_names()
        .map_err(|e| RegistryStoreError::Corrupt(e.to_string()))?;
    let mut all: Vec<String> = versions.keys().cloned().collect();
    all.extend(names);
    all.sort();
    all.dedup();
    for project in all {
        let fp = fingerprint(file, &project)?;
        match versions.get_mut(&project) {
            Some(rec) if rec.fingerprint == fp => {}
            Some(rec) => {
                rec.version += 1;
                rec.fingerprint = fp;
                changed = true;
            }
            None => {
                versions.insert(
                    project,
                    VersionRecord {
                        version: 1,
                        fingerprint: fp,
                    },
                );
                changed = true;
            }
        }
    }
    Ok(changed)
}

/// The checks and the diff of an apply, shared by the stores: reconcile, compare the base
/// version, diff. Returns the plan and the project's current version.
pub(crate) fn plan_apply(
    loaded: &mut Loaded,
    project: &str,
    base_version: Option<u64>,
    desired: &ProjectRegistry,
    now: Timestamp,
) -> Result<(Plan, u64, bool), ApplyError> {
    let reconciled = reconcile(&loaded.file, &mut loaded.versions)?;
    let current = loaded.versions.get(project).map_or(0, |r| r.version);
    if let Some(base) = base_version
        && base != current
    {
        return Err(ApplyError::Conflict { base, current });
    }
    let plan = apply::apply(&mut loaded.file, desired, now)
        .map_err(|e| RegistryStoreError::Corrupt(e.to_string()))?;
    Ok((plan, current, reconciled))
}

/// Records the new version of `project` after its objects changed.
pub(crate) fn bump(
    loaded: &mut Loaded,
    project: &str,
    current: u64,
) -> Result<u64, RegistryStoreError> {
    let fp = fingerprint(&loaded.file, project)?;
    let version = current + 1;
    loaded.versions.insert(
        project.to_owned(),
        VersionRecord {
            version,
            fingerprint: fp,
        },
    );
    Ok(version)
}

/// The registry store the service runs over.
pub enum Store {
    File(FileStore),
    Postgres(Box<PgStore>),
    /// A registry object in S3 or GCS (conditional writes instead of a lock).
    Object(Box<ObjectStore>),
}

impl Store {
    /// Opens the store `uri` names: `postgresql://...` (or `postgres://`), `s3://bucket/key` or
    /// `gs://bucket/key` (a registry object), or a registry file path (`file://` optional).
    pub async fn open(uri: &str) -> Result<Store, String> {
        let uri = uri.trim();
        if uri.is_empty() {
            return Err(
                "--store is empty: give a registry file path or a postgresql:// URL".into(),
            );
        }
        if let Some(rest) = uri
            .strip_prefix("postgresql+psycopg://")
            .or_else(|| uri.strip_prefix("postgresql+psycopg2://"))
        {
            // Feast's SQLAlchemy URL for the same database.
            return Ok(Store::Postgres(Box::new(
                PgStore::open(&format!("postgresql://{rest}")).await?,
            )));
        }
        if uri.starts_with("postgresql://") || uri.starts_with("postgres://") {
            return Ok(Store::Postgres(Box::new(PgStore::open(uri).await?)));
        }
        if let Some(object) =
            quiver_registry::location::ObjectUri::parse(uri).map_err(|e| format!("--store: {e}"))?
        {
            return Ok(Store::Object(Box::new(ObjectStore::open(&object).await?)));
        }
        if let Some((scheme, _)) = uri.split_once("://")
            && scheme != "file"
        {
            return Err(format!(
                "--store {uri:?}: {scheme}:// is not supported: use a registry file on a local \
                 path (a mounted volume), s3://BUCKET/KEY, gs://BUCKET/KEY or a postgresql:// URL"
            ));
        }
        let path = uri.strip_prefix("file://").unwrap_or(uri);
        Ok(Store::File(FileStore::open(Path::new(path))?))
    }

    /// What the store is, for logs and /ready (no password).
    pub fn describe(&self) -> String {
        match self {
            Store::File(f) => format!("file {}", f.path.display()),
            Store::Postgres(p) => p.describe(),
            Store::Object(o) => o.describe(),
        }
    }

    /// Reads everything and reconciles the versions (persisting a bump).
    pub async fn load(&self) -> Result<Loaded, RegistryStoreError> {
        match self {
            Store::File(f) => f.load().await,
            Store::Postgres(p) => p.load().await,
            Store::Object(o) => o.load().await,
        }
    }

    /// A value that changes whenever the store's content may have (cheap to ask often).
    pub async fn change_token(&self) -> Result<u64, RegistryStoreError> {
        match self {
            Store::File(f) => Ok(f.change_token()),
            Store::Postgres(p) => p.change_token().await,
            Store::Object(o) => o.change_token().await,
        }
    }

    /// Applies `desired` to its project if the project is still at `base_version` (`None`:
    /// whatever it is at). With `dry_run`, only plans.
    pub async fn apply(
        &self,
        base_version: Option<u64>,
        desired: ProjectRegistry,
        now: Timestamp,
        dry_run: bool,
    ) -> Result<Applied, ApplyError> {
        match self {
            Store::File(f) => f.apply(base_version, desired, now, dry_run).await,
            Store::Postgres(p) => p.apply(base_version, desired, now, dry_run).await,
            Store::Object(o) => o.apply(base_version, desired, now, dry_run).await,
        }
    }

    /// Appends materialization intervals to their views (Feast's `apply_materialization`),
    /// whatever the project's version: intervals only ever accumulate, so concurrent runs
    /// cannot lose one another's; or clears views' intervals (an operator's repair). Bumps the
    /// project's version.
    pub async fn record_materialization(
        &self,
        project: &str,
        edit: IntervalEdit,
        now: Timestamp,
    ) -> Result<Recorded, RecordError> {
        match self {
            Store::File(f) => f.record(project, edit, now).await,
            Store::Postgres(p) => p.record(project, &edit, now).await,
            Store::Object(o) => o.record(project, &edit, now).await,
        }
    }
}

/// A registry file on a local path (Feast's `registry.db`), with the version records in a
/// sibling `.<name>.versions.json`. One read-modify-write at a time, across processes too
/// (the registry file's lock, shared with `quiver apply` and `quiver materialize`).
pub struct FileStore {
    path: PathBuf,
    versions_path: PathBuf,
}

/// The version record's JSON (a file, or an object beside a registry object).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct VersionsFile {
    pub(crate) projects: Versions,
}

fn file_stamp(path: &Path) -> (u64, u64, u64) {
    match std::fs::metadata(path) {
        Ok(m) => {
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&m);
            #[cfg(not(unix))]
            let inode = 0;
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as u64);
            (mtime, m.len(), inode)
        }
        Err(_) => (0, 0, 0),
    }
}

impl FileStore {
    pub fn open(path: &Path) -> Result<FileStore, String> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("--store {}: not a file path", path.display()))?;
        if path.is_dir() {
            return Err(format!(
                "--store {}: is a directory; give the registry file, e.g. {}/registry.db",
                path.display(),
                path.display()
            ));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // A writer killed between its temp file and the rename leaves the temp file behind.
        for stale in quiver_registry::store::remove_stale_temps(path) {
            tracing::info!(file = %stale.display(), "removed a stale temp file of a dead writer");
        }
        Ok(FileStore {
            versions_path: dir.join(format!(".{name}.versions.json")),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn change_token(&self) -> u64 {
        let mut h = Xxh3::new();
        for p in [&self.path, &self.versions_path] {
            let (a, b, c) = file_stamp(p);
            h.update(&a.to_le_bytes());
            h.update(&b.to_le_bytes());
            h.update(&c.to_le_bytes());
        }
        h.digest()
    }

    fn read_versions(&self) -> Result<Versions, RegistryStoreError> {
        match std::fs::read(&self.versions_path) {
            Ok(bytes) => serde_json::from_slice::<VersionsFile>(&bytes)
                .map(|v| v.projects)
                .map_err(|e| {
                    RegistryStoreError::Corrupt(format!("{}: {e}", self.versions_path.display()))
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Versions::new()),
            Err(e) => Err(RegistryStoreError::Unavailable(format!(
                "{}: {e}",
                self.versions_path.display()
            ))),
        }
    }

    fn write_versions(&self, versions: &Versions) -> Result<(), RegistryStoreError> {
        let body = serde_json::to_vec_pretty(&VersionsFile {
            projects: versions.clone(),
        })
        .map_err(|e| RegistryStoreError::Unavailable(e.to_string()))?;
        quiver_registry::store::write_atomic(&self.versions_path, &body)
            .map_err(RegistryStoreError::from)
    }

    fn read_file(&self) -> Result<RegistryFile, RegistryStoreError> {
        quiver_registry::store::read(&self.path).map_err(RegistryStoreError::from)
    }

    fn lock(&self) -> Result<quiver_registry::store::RegistryLock, RegistryStoreError> {
        quiver_registry::store::RegistryLock::acquire(&self.path).map_err(RegistryStoreError::from)
    }

    fn load_blocking(&self) -> Result<Loaded, RegistryStoreError> {
        let _lock = self.lock()?;
        let file = self.read_file()?;
        let mut versions = self.read_versions()?;
        if reconcile(&file, &mut versions)? {
            self.write_versions(&versions)?;
        }
        Ok(Loaded { file, versions })
    }

    async fn load(&self) -> Result<Loaded, RegistryStoreError> {
        let me = FileStore {
            path: self.path.clone(),
            versions_path: self.versions_path.clone(),
        };
        tokio::task::spawn_blocking(move || me.load_blocking())
            .await
            .map_err(|e| RegistryStoreError::Unavailable(format!("load task: {e}")))?
    }

    fn apply_blocking(
        &self,
        base_version: Option<u64>,
        desired: &ProjectRegistry,
        now: Timestamp,
        dry_run: bool,
    ) -> Result<Applied, ApplyError> {
        let _lock = self.lock()?;
        let mut loaded = Loaded {
            file: self.read_file()?,
            versions: self.read_versions()?,
        };
        let project = desired.project.as_str();
        let (plan, current, reconciled) =
            plan_apply(&mut loaded, project, base_version, desired, now)?;
        if dry_run || plan.is_empty() {
            if reconciled && !dry_run {
                self.write_versions(&loaded.versions)?;
            }
            // A dry run's objects are not what the store holds: read them back.
            if dry_run {
                loaded.file = self.read_file()?;
            }
            return Ok(Applied {
                plan,
                previous_version: current,
                version: current,
                loaded,
            });
        }
        let bytes = loaded.file.encode(&uuid::Uuid::new_v4().to_string(), now);
        quiver_registry::store::write_atomic(&self.path, &bytes)
            .map_err(RegistryStoreError::from)?;
        let version = bump(&mut loaded, project, current)?;
        self.write_versions(&loaded.versions)?;
        Ok(Applied {
            plan,
            previous_version: current,
            version,
            loaded,
        })
    }

    async fn apply(
        &self,
        base_version: Option<u64>,
        desired: ProjectRegistry,
        now: Timestamp,
        dry_run: bool,
    ) -> Result<Applied, ApplyError> {
        let me = FileStore {
            path: self.path.clone(),
            versions_path: self.versions_path.clone(),
        };
        tokio::task::spawn_blocking(move || me.apply_blocking(base_version, &desired, now, dry_run))
            .await
            .map_err(|e| {
                ApplyError::Store(RegistryStoreError::Unavailable(format!("apply task: {e}")))
            })?
    }

    fn record_blocking(
        &self,
        project: &str,
        edit: &IntervalEdit,
        now: Timestamp,
    ) -> Result<Recorded, RecordError> {
        let _lock = self.lock()?;
        let mut loaded = Loaded {
            file: self.read_file()?,
            versions: self.read_versions()?,
        };
        let (_, version) = plan_record(&mut loaded, project, edit, now)?;
        let bytes = loaded.file.encode(&uuid::Uuid::new_v4().to_string(), now);
        quiver_registry::store::write_atomic(&self.path, &bytes)
            .map_err(RegistryStoreError::from)?;
        self.write_versions(&loaded.versions)?;
        Ok(Recorded { version, loaded })
    }

    async fn record(
        &self,
        project: &str,
        edit: IntervalEdit,
        now: Timestamp,
    ) -> Result<Recorded, RecordError> {
        let me = FileStore {
            path: self.path.clone(),
            versions_path: self.versions_path.clone(),
        };
        let project = project.to_owned();
        tokio::task::spawn_blocking(move || me.record_blocking(&project, &edit, now))
            .await
            .map_err(|e| {
                RecordError::Store(RegistryStoreError::Unavailable(format!("record task: {e}")))
            })?
    }
}

/// One object an apply changed: kind, name, new bytes (`None`: deleted).
pub(crate) type ObjectChange = (ObjectKind, String, Option<Vec<u8>>);

/// The object kinds a store writes for an apply, with their new bytes (`None`: delete).
pub(crate) fn changed_objects(
    plan: &Plan,
    file: &RegistryFile,
    project: &str,
) -> Result<Vec<ObjectChange>, RegistryStoreError> {
    let mut out = Vec::with_capacity(plan.changes.len());
    for c in &plan.changes {
        let bytes = match c.action {
            apply::Action::Delete => None,
            apply::Action::Create | apply::Action::Update => Some(
                file.object_bytes(c.kind, project, &c.name)
                    .map_err(|e| RegistryStoreError::Corrupt(e.to_string()))?
                    .ok_or_else(|| {
                        RegistryStoreError::Corrupt(format!(
                            "{} {} vanished during apply",
                            c.kind.label(),
                            c.name
                        ))
                    })?
                    .to_vec(),
            ),
        };
        out.push((c.kind, c.name.clone(), bytes));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_registry::definitions;

    const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: stats, path: data/stats.parquet}
feature_views:
  - name: hourly
    entities: [driver]
    source: stats
    schema: [{name: conv_rate, dtype: Float32}]
"#;

    fn ts(s: i64) -> Timestamp {
        Timestamp {
            seconds: s,
            nanos: 0,
        }
    }

    #[tokio::test]
    async fn file_store_versions_writes_and_external_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let store = Store::open(path.to_str().unwrap()).await.unwrap();
        let loaded = store.load().await.unwrap();
        assert!(
            loaded.versions.is_empty(),
            "a missing file is an empty registry"
        );

        let desired = definitions::parse(&[("f.yaml", DEFS)], "demo").unwrap();
        let a = store
            .apply(Some(0), desired.clone(), ts(10), false)
            .await
            .unwrap();
        assert_eq!((a.previous_version, a.version), (0, 1));
        assert_eq!(a.plan.changes.len(), 4);

        // The same definitions again: nothing to do, the version stays.
        let again = store
            .apply(Some(1), desired.clone(), ts(20), false)
            .await
            .unwrap();
        assert!(again.plan.is_empty());
        assert_eq!(again.version, 1);

        // A stale base is refused, and nothing is written.
        let changed =
            definitions::parse(&[("f.yaml", &DEFS.replace("conv_rate", "rate"))], "demo").unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = store
            .apply(Some(0), changed.clone(), ts(30), false)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            ApplyError::Conflict {
                base: 0,
                current: 1
            }
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);

        // A dry run plans without writing.
        let dry = store
            .apply(Some(1), changed.clone(), ts(30), true)
            .await
            .unwrap();
        assert_eq!(dry.plan.changes.len(), 1);
        assert_eq!(dry.version, 1);
        assert_eq!(std::fs::read(&path).unwrap(), before);

        // A write behind the service's back (here: the file rewritten by another apply)
        // bumps the version on the next load; the token tells that something moved.
        let token = store.change_token().await.unwrap();
        let mut file = quiver_registry::store::read(&path).unwrap();
        apply::apply(&mut file, &changed, ts(40)).unwrap();
        quiver_registry::store::write_atomic(&path, &file.encode("ext", ts(40))).unwrap();
        assert_ne!(store.change_token().await.unwrap(), token);
        let loaded = store.load().await.unwrap();
        assert_eq!(loaded.versions["demo"].version, 2);
        // Loading again changes nothing more.
        assert_eq!(store.load().await.unwrap().versions["demo"].version, 2);

        // Restarted on the same file: versions carry on.
        let store = Store::open(path.to_str().unwrap()).await.unwrap();
        let r = store.apply(Some(2), desired, ts(50), false).await.unwrap();
        assert_eq!(r.version, 3);
    }

    #[tokio::test]
    async fn unsupported_stores_are_named() {
        let err = Store::open("az://bucket/registry.db").await.err().unwrap();
        assert!(err.contains("az:// is not supported"), "{err}");
        let err = Store::open("s3://bucket/").await.err().unwrap();
        assert!(err.contains("names a folder"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = Store::open(dir.path().to_str().unwrap())
            .await
            .err()
            .unwrap();
        assert!(err.contains("is a directory"), "{err}");
    }
}

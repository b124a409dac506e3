//! Registry storage. A registry file on a local path is read whole and rewritten whole, through a
//! temporary file in the same folder and a rename, so a crash never leaves a half-written file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use quiver_core::fault::{Classified, ErrorKind};
use quiver_core::registry::RegistryFile;

/// Why a registry file could not be locked, read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file system refused: `context` names the file and what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a Feast registry.
    #[error("{path}: {message}")]
    Corrupt { path: String, message: String },
}

impl FileError {
    fn io(context: String, source: std::io::Error) -> FileError {
        FileError::Io { context, source }
    }
}

impl Classified for FileError {
    fn kind(&self) -> ErrorKind {
        match self {
            // The registry is what the process serves from: a file it cannot read or write is
            // this machine's problem (disk, permissions), not the request's.
            FileError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                    ErrorKind::OutOfResources
                }
                _ => ErrorKind::Unavailable,
            },
            FileError::Corrupt { .. } => ErrorKind::UpstreamFailed,
        }
    }
}

impl From<FileError> for String {
    fn from(e: FileError) -> String {
        e.to_string()
    }
}

/// An exclusive lock on a registry file, held for a whole read-modify-write so that two
/// `quiver apply` runs on one machine never lose each other's changes. It is a lock on a sibling
/// `.<name>.lock` file (the registry itself is replaced by rename, so it cannot carry the lock),
/// released when dropped.
pub struct RegistryLock {
    _file: std::fs::File,
}

impl RegistryLock {
    /// Waits for and takes the lock for the registry at `path`.
    pub fn acquire(path: &Path) -> Result<RegistryLock, FileError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| FileError::io(format!("cannot create {}", dir.display()), e))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("registry");
        let lock_path = dir.join(format!(".{name}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                FileError::io(format!("cannot open lock file {}", lock_path.display()), e)
            })?;
        file.lock()
            .map_err(|e| FileError::io(format!("cannot lock {}", lock_path.display()), e))?;
        Ok(RegistryLock { _file: file })
    }
}

/// A write whose temp file is older than this is over, whoever wrote it.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// This process's own temp files older than this are left over by an earlier process with the
/// same PID (PID 1 in every container), not one of its writes in progress.
const STALE_OWN_TEMP: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes the temp files [`write_atomic`] left beside `path` (`.<name>.tmp-<pid>`, and those
/// of its sibling files, e.g. `.<name>.versions.json`) when a writer died before its rename:
/// those of a process that is gone, this process's own that are not fresh, and any older than
/// a day. Returns the files removed. Called when a long-running writer starts.
pub fn remove_stale_temps(path: &Path) -> Vec<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file) = file_name.to_str() else {
            continue;
        };
        let Some((base, pid)) = file.strip_prefix('.').and_then(|f| f.rsplit_once(".tmp-")) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let ours = base == name || base.strip_prefix('.').is_some_and(|b| b.starts_with(name));
        if !ours {
            continue;
        }
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        let gone = cfg!(target_os = "linux") && !Path::new("/proc").join(pid.to_string()).exists();
        let stale = gone || (pid == me && age > STALE_OWN_TEMP) || age > STALE_TEMP;
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// Reads the registry at `path`; a missing file is an empty registry.
pub fn read(path: &Path) -> Result<RegistryFile, FileError> {
    match std::fs::read(path) {
        Ok(bytes) => RegistryFile::decode(&bytes).map_err(|e| FileError::Corrupt {
            path: path.display().to_string(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RegistryFile::empty()),
        Err(e) => Err(FileError::io(
            format!("cannot read registry {}", path.display()),
            e,
        )),
    }
}

/// Replaces the file at `path` with `bytes` atomically (temp file, fsync, rename, fsync folder).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| FileError::io(format!("cannot create {}", dir.display()), e))?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("registry");
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        FileError::io(format!("cannot write registry {}", path.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_empty_and_writes_replace_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/registry.db");
        assert_eq!(read(&path).unwrap(), RegistryFile::empty());
        let mut file = RegistryFile::empty();
        let bytes = file.encode("v1", Default::default());
        write_atomic(&path, &bytes).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file is left behind");
        std::fs::write(&path, b"\x0a\x05garbage").unwrap();
        assert!(read(&path).is_err());
    }

    #[test]
    fn file_errors_say_whose_fault_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        std::fs::write(&path, b"\x0a\x05garbage").unwrap();
        let corrupt = read(&path).unwrap_err();
        assert!(matches!(corrupt, FileError::Corrupt { .. }), "{corrupt}");
        assert_eq!(corrupt.kind(), ErrorKind::UpstreamFailed);
        // A folder where the file should be: the file system refuses.
        let unreadable = read(dir.path()).unwrap_err();
        assert!(matches!(unreadable, FileError::Io { .. }), "{unreadable}");
        assert_eq!(unreadable.kind(), ErrorKind::Unavailable);
        assert!(unreadable.to_string().starts_with("cannot read registry"));
    }

    #[test]
    fn the_lock_serializes_writers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let held = RegistryLock::acquire(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            let _lock = RegistryLock::acquire(&p).unwrap();
            tx.send(()).unwrap();
        });
        // The second acquire waits while the first is held.
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err()
        );
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
    }
}

/// One materialization run of one view, to record in the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct MaterializedInterval {
    pub view: String,
    pub start: quiver_core::time::Timestamp,
    pub end: quiver_core::time::Timestamp,
}

/// Why intervals could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The project has no (stream) feature view of this name.
    UnknownView(String),
    /// The registry could not be read, decoded or written.
    Registry(String),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::UnknownView(v) => write!(f, "no feature view {v}"),
            RecordError::Registry(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for RecordError {}

impl Classified for RecordError {
    fn kind(&self) -> ErrorKind {
        match self {
            RecordError::UnknownView(_) => ErrorKind::NotFound,
            RecordError::Registry(_) => ErrorKind::UpstreamFailed,
        }
    }
}

/// The longest an interval's end may lie past the clock: a recorded end in the future makes the
/// next `materialize-incremental` start there and skip every row written until then (Feast
/// issue 4222), so both `quiver materialize` and the registry service refuse one beyond it.
pub const FUTURE_END_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(300);

/// A change to views' materialization intervals.
#[derive(Debug, Clone, PartialEq)]
pub enum IntervalEdit {
    /// Runs to append, as Feast's `apply_materialization` does.
    Append(Vec<MaterializedInterval>),
    /// Views whose every interval is removed (an operator's repair of a bad record: the next
    /// incremental run starts from the view's ttl again).
    Clear(Vec<String>),
}

/// Appends materialization intervals to the views' `materialization_intervals` (and bumps their
/// `last_updated_timestamp`), as Feast's `apply_materialization` does. Every other object keeps
/// its bytes. Returns the objects it rewrote (for stores that keep one row per object); nothing
/// is changed when a view is missing.
pub fn append_intervals(
    file: &mut RegistryFile,
    project: &str,
    runs: &[MaterializedInterval],
    now: quiver_core::time::Timestamp,
) -> Result<Vec<quiver_core::registry::ObjectWrite>, RecordError> {
    let edits: Vec<(&str, Option<&MaterializedInterval>)> =
        runs.iter().map(|r| (r.view.as_str(), Some(r))).collect();
    edit_views(file, project, &edits, now)
}

/// [`append_intervals`] or the removal of views' intervals, by `edit`.
pub fn edit_intervals(
    file: &mut RegistryFile,
    project: &str,
    edit: &IntervalEdit,
    now: quiver_core::time::Timestamp,
) -> Result<Vec<quiver_core::registry::ObjectWrite>, RecordError> {
    match edit {
        IntervalEdit::Append(runs) => append_intervals(file, project, runs, now),
        IntervalEdit::Clear(views) => {
            let edits: Vec<(&str, Option<&MaterializedInterval>)> =
                views.iter().map(|v| (v.as_str(), None)).collect();
            edit_views(file, project, &edits, now)
        }
    }
}

/// Per (view, run): the run appended to the view's intervals, or (`None`) all of them removed.
fn edit_views(
    file: &mut RegistryFile,
    project: &str,
    edits: &[(&str, Option<&MaterializedInterval>)],
    now: quiver_core::time::Timestamp,
) -> Result<Vec<quiver_core::registry::ObjectWrite>, RecordError> {
    use prost::Message as _;
    use quiver_core::proto::core as pb;
    use quiver_core::registry::{ObjectKind, ObjectWrite};

    let corrupt = |e: quiver_core::Error| RecordError::Registry(e.to_string());
    let change = |intervals: &mut Vec<pb::MaterializationInterval>,
                  run: Option<&MaterializedInterval>| match run {
        Some(run) => intervals.push(pb::MaterializationInterval {
            start_time: Some(run.start),
            end_time: Some(run.end),
        }),
        None => intervals.clear(),
    };
    // Several runs of one view append to the same object: work on the latest bytes of each.
    let mut writes: Vec<ObjectWrite> = Vec::with_capacity(edits.len());
    for &(name, run) in edits {
        let pending = writes.iter().position(|w| w.name == name);
        let stored = match pending {
            Some(i) => Some((writes[i].kind, writes[i].bytes.clone().unwrap_or_default())),
            None => [ObjectKind::FeatureView, ObjectKind::StreamFeatureView]
                .into_iter()
                .find_map(|kind| {
                    file.object_bytes(kind, project, name)
                        .map(|b| b.map(|b| (kind, b.to_vec())))
                        .transpose()
                })
                .transpose()
                .map_err(corrupt)?,
        };
        let Some((kind, bytes)) = stored else {
            return Err(RecordError::UnknownView(name.to_owned()));
        };
        let updated = if kind == ObjectKind::FeatureView {
            let mut view = pb::FeatureView::decode(bytes.as_slice()).map_err(|e| {
                RecordError::Registry(format!("registry: feature view {name}: {e}"))
            })?;
            let meta = view.meta.get_or_insert_with(Default::default);
            change(&mut meta.materialization_intervals, run);
            meta.last_updated_timestamp = Some(now);
            view.encode_to_vec()
        } else {
            let mut view = pb::StreamFeatureView::decode(bytes.as_slice()).map_err(|e| {
                RecordError::Registry(format!("registry: stream feature view {name}: {e}"))
            })?;
            let meta = view.meta.get_or_insert_with(Default::default);
            change(&mut meta.materialization_intervals, run);
            meta.last_updated_timestamp = Some(now);
            view.encode_to_vec()
        };
        let write = ObjectWrite {
            kind,
            name: name.to_owned(),
            bytes: Some(updated),
        };
        match pending {
            Some(i) => writes[i] = write,
            None => writes.push(write),
        }
    }
    file.apply(project, &writes).map_err(corrupt)?;
    Ok(writes)
}

/// [`append_intervals`] on the registry file at `path`, in one locked read-modify-write.
pub fn record_materialization(
    path: &Path,
    project: &str,
    runs: &[MaterializedInterval],
    now: quiver_core::time::Timestamp,
    version_id: &str,
) -> Result<(), String> {
    let _lock = RegistryLock::acquire(path)?;
    let mut file = read(path)?;
    append_intervals(&mut file, project, runs, now).map_err(|e| match e {
        RecordError::UnknownView(v) => format!(
            "registry {}: project {project} has no feature view {v}",
            path.display()
        ),
        RecordError::Registry(m) => m,
    })?;
    let encoded = file.encode(version_id, now);
    write_atomic(path, &encoded).map_err(String::from)
}

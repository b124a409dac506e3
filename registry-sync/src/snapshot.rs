//! The registry snapshot a sidecar receives: one project's objects (optionally narrowed to some
//! feature services) as a flatbuffer, `schema/snapshot.fbs`.
//!
//! Each object travels as the serialized Feast proto the registry stores, so the sidecar builds
//! its serving registry with exactly the code that reads a registry file, and nothing is lost
//! in translation. The flatbuffer is the envelope: it is read without a parse step (the
//! verifier checks every offset first), size-prefixed (so any truncation shows), and carries a
//! schema version and two XXH3-64 hashes:
//!
//! - `checksum` covers every other field, in this canonical order: the file identifier, the
//!   schema version (u32 LE), the project, the version (u64 LE), the content hash (u64 LE), the
//!   number of feature services (u32 LE) and each one, the number of objects (u32 LE) and for
//!   each its kind (u8), name and proto. Strings and byte strings are a u32 LE length, then
//!   the bytes. A truncated or altered snapshot fails the verifier or this check.
//! - `content_hash` covers the project, the feature services and the objects (same encoding):
//!   what a sidecar serves from. It is the snapshot's ETag.
//!
//! The flatbuffers reader needs `unsafe` to follow offsets; it is confined to [`fb`], and only
//! ever runs on a buffer the crate's verifier accepted.

use std::collections::BTreeSet;
use std::fmt;

use quiver_core::fault::{Classified, ErrorKind};
use quiver_core::registry::{ObjectKind, ProjectRegistry, RegistryFile};
use xxhash_rust::xxh3::Xxh3;

/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The flatbuffers file identifier of a snapshot.
pub const FILE_IDENTIFIER: &str = "QVRS";

/// The media type of a snapshot on the wire.
pub const CONTENT_TYPE: &str = "application/vnd.quiver.registry-snapshot";

/// Largest snapshot a reader accepts (a registry of tens of thousands of views fits).
pub const MAX_SNAPSHOT_BYTES: usize = 256 << 20;

/// One registry object in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotObject {
    pub kind: ObjectKind,
    pub name: String,
    /// The serialized Feast proto.
    pub proto: Vec<u8>,
}

/// A decoded and checked snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub schema_version: u32,
    pub project: String,
    /// The project's version in the registry service when the snapshot was built.
    pub version: u64,
    pub content_hash: u64,
    /// The feature services it was narrowed to (empty: the whole project).
    pub feature_services: Vec<String>,
    pub objects: Vec<SnapshotObject>,
}

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// Not a snapshot at all (wrong identifier, too short, too large).
    NotASnapshot(String),
    /// The flatbuffers verifier refused it (truncated or altered offsets).
    Malformed(String),
    /// Written by a schema version this code does not read.
    SchemaVersion(u32),
    /// The stored checksum does not match the content.
    Checksum { stored: u64, computed: u64 },
    /// The content hash does not match the objects.
    ContentHash { stored: u64, computed: u64 },
    /// An object kind this code does not know, or an object that does not decode.
    BadObject(String),
    /// A project other than the one asked for.
    WrongProject { expected: String, got: String },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::NotASnapshot(m) => write!(f, "not a registry snapshot: {m}"),
            SnapshotError::Malformed(m) => write!(f, "malformed snapshot: {m}"),
            SnapshotError::SchemaVersion(v) => write!(
                f,
                "snapshot schema version {v} is not supported (this build reads {SCHEMA_VERSION})"
            ),
            SnapshotError::Checksum { stored, computed } => write!(
                f,
                "snapshot checksum mismatch: stored {stored:016x}, computed {computed:016x}"
            ),
            SnapshotError::ContentHash { stored, computed } => write!(
                f,
                "snapshot content hash mismatch: stored {stored:016x}, computed {computed:016x}"
            ),
            SnapshotError::BadObject(m) => write!(f, "snapshot object: {m}"),
            SnapshotError::WrongProject { expected, got } => {
                write!(f, "snapshot is of project {got:?}, expected {expected:?}")
            }
        }
    }
}

impl std::error::Error for SnapshotError {}

impl Classified for SnapshotError {
    /// A snapshot that does not verify came from the registry service (or the state dir).
    fn kind(&self) -> ErrorKind {
        ErrorKind::UpstreamFailed
    }
}

fn kind_tag(kind: ObjectKind) -> u8 {
    match kind {
        ObjectKind::Project => 0,
        ObjectKind::Entity => 1,
        ObjectKind::DataSource => 2,
        ObjectKind::FeatureView => 3,
        ObjectKind::StreamFeatureView => 4,
        ObjectKind::FeatureService => 5,
        ObjectKind::OnDemandFeatureView => 6,
        ObjectKind::LabelView => 7,
    }
}

fn kind_from_tag(tag: u8) -> Option<ObjectKind> {
    ObjectKind::ALL.into_iter().find(|k| kind_tag(*k) == tag)
}

fn put_bytes(h: &mut Xxh3, b: &[u8]) {
    h.update(&(b.len() as u32).to_le_bytes());
    h.update(b);
}

/// Hashes the project, the narrowing and the objects.
fn hash_content<'a>(
    h: &mut Xxh3,
    project: &str,
    services: &[String],
    objects: impl ExactSizeIterator<Item = (ObjectKind, &'a str, &'a [u8])>,
) {
    put_bytes(h, project.as_bytes());
    h.update(&(services.len() as u32).to_le_bytes());
    for s in services {
        put_bytes(h, s.as_bytes());
    }
    h.update(&(objects.len() as u32).to_le_bytes());
    for (kind, name, proto) in objects {
        h.update(&[kind_tag(kind)]);
        put_bytes(h, name.as_bytes());
        put_bytes(h, proto);
    }
}

fn content_hash<'a>(
    project: &str,
    services: &[String],
    objects: impl ExactSizeIterator<Item = (ObjectKind, &'a str, &'a [u8])>,
) -> u64 {
    let mut h = Xxh3::new();
    hash_content(&mut h, project, services, objects);
    h.digest()
}

fn checksum<'a>(
    schema_version: u32,
    project: &str,
    version: u64,
    content: u64,
    services: &[String],
    objects: impl ExactSizeIterator<Item = (ObjectKind, &'a str, &'a [u8])>,
) -> u64 {
    let mut h = Xxh3::new();
    h.update(FILE_IDENTIFIER.as_bytes());
    h.update(&schema_version.to_le_bytes());
    put_bytes(&mut h, project.as_bytes());
    h.update(&version.to_le_bytes());
    h.update(&content.to_le_bytes());
    h.update(&(services.len() as u32).to_le_bytes());
    for s in services {
        put_bytes(&mut h, s.as_bytes());
    }
    h.update(&(objects.len() as u32).to_le_bytes());
    for (kind, name, proto) in objects {
        h.update(&[kind_tag(kind)]);
        put_bytes(&mut h, name.as_bytes());
        put_bytes(&mut h, proto);
    }
    h.digest()
}

/// The ETag of a content hash (a quoted string, as HTTP wants).
pub fn etag(content_hash: u64) -> String {
    format!("\"{content_hash:016x}\"")
}

/// Writes a snapshot of `objects` (kind, name, serialized proto) for `project` at `version`.
/// Returns the bytes and the content hash (the ETag's value).
pub fn encode(
    project: &str,
    version: u64,
    feature_services: &[String],
    objects: &[(ObjectKind, &str, &[u8])],
) -> (Vec<u8>, u64) {
    let content = content_hash(
        project,
        feature_services,
        objects.iter().map(|(k, n, p)| (*k, *n, *p)),
    );
    let sum = checksum(
        SCHEMA_VERSION,
        project,
        version,
        content,
        feature_services,
        objects.iter().map(|(k, n, p)| (*k, *n, *p)),
    );
    let size: usize = objects.iter().map(|(_, n, p)| n.len() + p.len() + 32).sum();
    let mut b = flatbuffers::FlatBufferBuilder::with_capacity(size + 256);
    let mut offsets = Vec::with_capacity(objects.len());
    for (kind, name, proto) in objects {
        let name = b.create_string(name);
        let proto = b.create_vector(proto);
        let start = b.start_table();
        b.push_slot_always(fb::OBJECT_NAME, name);
        b.push_slot_always(fb::OBJECT_PROTO, proto);
        b.push_slot::<u8>(fb::OBJECT_KIND, kind_tag(*kind), 0);
        offsets.push(b.end_table(start));
    }
    let objects_vec = b.create_vector(&offsets);
    let service_offsets: Vec<_> = feature_services
        .iter()
        .map(|s| b.create_string(s))
        .collect();
    let services_vec = b.create_vector(&service_offsets);
    let project_off = b.create_string(project);
    let start = b.start_table();
    b.push_slot_always(fb::SNAPSHOT_VERSION, version);
    b.push_slot_always(fb::SNAPSHOT_CONTENT_HASH, content);
    b.push_slot_always(fb::SNAPSHOT_CHECKSUM, sum);
    b.push_slot_always(fb::SNAPSHOT_PROJECT, project_off);
    b.push_slot_always(fb::SNAPSHOT_SERVICES, services_vec);
    b.push_slot_always(fb::SNAPSHOT_OBJECTS, objects_vec);
    b.push_slot_always(fb::SNAPSHOT_SCHEMA_VERSION, SCHEMA_VERSION);
    let root = b.end_table(start);
    b.finish_size_prefixed(root, Some(FILE_IDENTIFIER));
    (b.finished_data().to_vec(), content)
}

/// Reads and checks a snapshot: identifier, flatbuffers verification, schema version,
/// checksum, content hash and object kinds. The objects' protos are checked when the registry
/// is built from them ([`Snapshot::registry`]).
pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    if bytes.len() > MAX_SNAPSHOT_BYTES {
        return Err(SnapshotError::NotASnapshot(format!(
            "{} bytes, over the {MAX_SNAPSHOT_BYTES}-byte limit",
            bytes.len()
        )));
    }
    if bytes.len() < 12 || &bytes[8..12] != FILE_IDENTIFIER.as_bytes() {
        return Err(SnapshotError::NotASnapshot(format!(
            "{} bytes without the {FILE_IDENTIFIER} file identifier",
            bytes.len()
        )));
    }
    // The size prefix makes any truncation (or trailing bytes) visible, padding included.
    let declared = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if declared != bytes.len() - 4 {
        return Err(SnapshotError::Malformed(format!(
            "size prefix says {declared} bytes, {} follow it",
            bytes.len() - 4
        )));
    }
    let root = fb::root(bytes).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    let schema_version = root.schema_version();
    if schema_version != SCHEMA_VERSION {
        return Err(SnapshotError::SchemaVersion(schema_version));
    }
    let project = root.project().to_owned();
    let feature_services: Vec<String> = root.feature_services().map(str::to_owned).collect();
    let mut objects = Vec::with_capacity(root.object_count());
    for o in root.objects() {
        let kind = kind_from_tag(o.kind()).ok_or_else(|| {
            SnapshotError::BadObject(format!(
                "object {:?} has unknown kind {}",
                o.name(),
                o.kind()
            ))
        })?;
        objects.push(SnapshotObject {
            kind,
            name: o.name().to_owned(),
            proto: o.proto().to_vec(),
        });
    }
    let iter = || {
        objects
            .iter()
            .map(|o| (o.kind, o.name.as_str(), o.proto.as_slice()))
    };
    let content = root.content_hash();
    let computed = checksum(
        schema_version,
        &project,
        root.version(),
        content,
        &feature_services,
        iter(),
    );
    if computed != root.checksum() {
        return Err(SnapshotError::Checksum {
            stored: root.checksum(),
            computed,
        });
    }
    let computed = content_hash(&project, &feature_services, iter());
    if computed != content {
        return Err(SnapshotError::ContentHash {
            stored: content,
            computed,
        });
    }
    Ok(Snapshot {
        schema_version,
        project,
        version: root.version(),
        content_hash: content,
        feature_services,
        objects,
    })
}

impl Snapshot {
    pub fn etag(&self) -> String {
        etag(self.content_hash)
    }

    /// The objects as a registry (not decoded yet).
    pub fn registry(&self) -> RegistryFile {
        RegistryFile::from_objects(self.objects.iter().map(|o| (o.kind, o.proto.clone())))
    }

    /// The typed project, checked to be the one expected. Every object is decoded (a proto
    /// that does not decode is an error), and every object must belong to the project.
    pub fn project_registry(&self, expected: &str) -> Result<ProjectRegistry, SnapshotError> {
        if self.project != expected {
            return Err(SnapshotError::WrongProject {
                expected: expected.to_owned(),
                got: self.project.clone(),
            });
        }
        let file = self.registry();
        let typed = file
            .project(&self.project)
            .map_err(|e| SnapshotError::BadObject(e.to_string()))?;
        // `project` decoded every object; one of another project would be silently dropped.
        let counted = usize::from(typed.project_object.is_some())
            + typed.entities.len()
            + typed.data_sources.len()
            + typed.feature_views.len()
            + typed.feature_services.len()
            + typed.on_demand_views.len();
        if counted != self.objects.len() {
            return Err(SnapshotError::BadObject(format!(
                "{} of its {} objects are not of project {:?}",
                self.objects.len().saturating_sub(counted),
                self.objects.len(),
                self.project
            )));
        }
        Ok(typed)
    }
}

/// A feature service a snapshot was asked to narrow to does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownService(pub String);

/// The objects of `project` a sidecar needs, as (kind, name, bytes): everything, or with
/// `services` given, the project object, those services, the views they read, the entities of
/// those views and their data sources.
pub fn select<'a>(
    file: &'a RegistryFile,
    project: &str,
    services: &[String],
) -> Result<Vec<quiver_core::registry::RawObject<'a>>, SelectError> {
    let all = file
        .project_objects(project)
        .map_err(|e| SelectError::Registry(e.to_string()))?;
    if services.is_empty() {
        return Ok(all);
    }
    let typed = file
        .project(project)
        .map_err(|e| SelectError::Registry(e.to_string()))?;
    let mut wanted: BTreeSet<(ObjectKind, String)> = BTreeSet::new();
    let mut views: BTreeSet<&str> = BTreeSet::new();
    for name in services {
        let service = typed
            .feature_service(name)
            .ok_or_else(|| SelectError::UnknownService(name.clone()))?;
        wanted.insert((ObjectKind::FeatureService, name.clone()));
        for p in &service.projections {
            views.insert(p.view.as_str());
        }
    }
    for view in &views {
        wanted.insert((ObjectKind::OnDemandFeatureView, (*view).to_owned()));
        if let Some(v) = typed.feature_view(view) {
            wanted.insert((ObjectKind::of_view(v), v.name.clone()));
            for e in &v.entities {
                wanted.insert((ObjectKind::Entity, e.clone()));
            }
            for s in [&v.batch_source, &v.stream_source].into_iter().flatten() {
                wanted.insert((ObjectKind::DataSource, s.name.clone()));
                if let quiver_core::model::SourceKind::Push { batch_source } = &s.kind {
                    wanted.insert((ObjectKind::DataSource, batch_source.name.clone()));
                }
            }
        }
    }
    Ok(all
        .into_iter()
        .filter(|(kind, name, _)| {
            *kind == ObjectKind::Project || wanted.contains(&(*kind, name.clone()))
        })
        .collect())
}

/// Why objects could not be selected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("no feature service {0}")]
    UnknownService(String),
    #[error("{0}")]
    Registry(String),
}

impl Classified for SelectError {
    fn kind(&self) -> ErrorKind {
        match self {
            SelectError::UnknownService(_) => ErrorKind::NotFound,
            // A stored object that does not decode.
            SelectError::Registry(_) => ErrorKind::UpstreamFailed,
        }
    }
}

/// The flatbuffers tables of `schema/snapshot.fbs`, read through the crate's low-level API.
mod fb {
    use flatbuffers::{
        Follow, ForwardsUOffset, InvalidFlatbuffer, Table, VOffsetT, Vector, Verifiable, Verifier,
    };

    // vtable slots: 4 + 2 * field id.
    pub const SNAPSHOT_SCHEMA_VERSION: VOffsetT = 4;
    pub const SNAPSHOT_PROJECT: VOffsetT = 6;
    pub const SNAPSHOT_VERSION: VOffsetT = 8;
    pub const SNAPSHOT_CONTENT_HASH: VOffsetT = 10;
    pub const SNAPSHOT_SERVICES: VOffsetT = 12;
    pub const SNAPSHOT_OBJECTS: VOffsetT = 14;
    pub const SNAPSHOT_CHECKSUM: VOffsetT = 16;
    pub const OBJECT_KIND: VOffsetT = 4;
    pub const OBJECT_NAME: VOffsetT = 6;
    pub const OBJECT_PROTO: VOffsetT = 8;

    /// Verifies a size-prefixed `bytes` and returns its root table.
    pub fn root(bytes: &[u8]) -> Result<SnapshotTable<'_>, InvalidFlatbuffer> {
        flatbuffers::size_prefixed_root::<SnapshotTable<'_>>(bytes)
    }

    #[derive(Clone, Copy)]
    pub struct SnapshotTable<'a> {
        table: Table<'a>,
    }

    #[derive(Clone, Copy)]
    pub struct ObjectTable<'a> {
        table: Table<'a>,
    }

    impl<'a> Follow<'a> for SnapshotTable<'a> {
        type Inner = SnapshotTable<'a>;
        unsafe fn follow(buf: &'a [u8], loc: usize) -> Self::Inner {
            // SAFETY: the caller (flatbuffers' own root/vector code) gives a location the
            // verifier checked holds a table of this type.
            SnapshotTable {
                table: unsafe { Table::new(buf, loc) },
            }
        }
    }

    impl<'a> Follow<'a> for ObjectTable<'a> {
        type Inner = ObjectTable<'a>;
        unsafe fn follow(buf: &'a [u8], loc: usize) -> Self::Inner {
            // SAFETY: as above, for the objects vector's elements.
            ObjectTable {
                table: unsafe { Table::new(buf, loc) },
            }
        }
    }

    impl Verifiable for SnapshotTable<'_> {
        fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
            v.visit_table(pos)?
                .visit_field::<u32>("schema_version", SNAPSHOT_SCHEMA_VERSION, true)?
                .visit_field::<ForwardsUOffset<&str>>("project", SNAPSHOT_PROJECT, true)?
                .visit_field::<u64>("version", SNAPSHOT_VERSION, false)?
                .visit_field::<u64>("content_hash", SNAPSHOT_CONTENT_HASH, true)?
                .visit_field::<ForwardsUOffset<Vector<'_, ForwardsUOffset<&str>>>>(
                    "feature_services",
                    SNAPSHOT_SERVICES,
                    false,
                )?
                .visit_field::<ForwardsUOffset<Vector<'_, ForwardsUOffset<ObjectTable<'_>>>>>(
                    "objects",
                    SNAPSHOT_OBJECTS,
                    false,
                )?
                .visit_field::<u64>("checksum", SNAPSHOT_CHECKSUM, true)?
                .finish();
            Ok(())
        }
    }

    impl Verifiable for ObjectTable<'_> {
        fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> Result<(), InvalidFlatbuffer> {
            v.visit_table(pos)?
                .visit_field::<u8>("kind", OBJECT_KIND, false)?
                .visit_field::<ForwardsUOffset<&str>>("name", OBJECT_NAME, true)?
                .visit_field::<ForwardsUOffset<Vector<'_, u8>>>("proto", OBJECT_PROTO, false)?
                .finish();
            Ok(())
        }
    }

    // SAFETY (all accessors below): these tables are only reached through `root`, which ran
    // the verifier over the whole buffer, and each slot is read with the type it was verified
    // as.
    impl<'a> SnapshotTable<'a> {
        pub fn schema_version(&self) -> u32 {
            unsafe { self.table.get::<u32>(SNAPSHOT_SCHEMA_VERSION, Some(0)) }.unwrap_or(0)
        }
        pub fn project(&self) -> &'a str {
            unsafe {
                self.table
                    .get::<ForwardsUOffset<&str>>(SNAPSHOT_PROJECT, None)
            }
            .unwrap_or("")
        }
        pub fn version(&self) -> u64 {
            unsafe { self.table.get::<u64>(SNAPSHOT_VERSION, Some(0)) }.unwrap_or(0)
        }
        pub fn content_hash(&self) -> u64 {
            unsafe { self.table.get::<u64>(SNAPSHOT_CONTENT_HASH, Some(0)) }.unwrap_or(0)
        }
        pub fn checksum(&self) -> u64 {
            unsafe { self.table.get::<u64>(SNAPSHOT_CHECKSUM, Some(0)) }.unwrap_or(0)
        }
        fn services_vec(&self) -> Option<Vector<'a, ForwardsUOffset<&'a str>>> {
            unsafe {
                self.table
                    .get::<ForwardsUOffset<Vector<'a, ForwardsUOffset<&'a str>>>>(
                        SNAPSHOT_SERVICES,
                        None,
                    )
            }
        }
        pub fn feature_services(&self) -> impl Iterator<Item = &'a str> + use<'a> {
            self.services_vec().into_iter().flat_map(|v| v.iter())
        }
        fn objects_vec(&self) -> Option<Vector<'a, ForwardsUOffset<ObjectTable<'a>>>> {
            unsafe {
                self.table
                    .get::<ForwardsUOffset<Vector<'a, ForwardsUOffset<ObjectTable<'a>>>>>(
                        SNAPSHOT_OBJECTS,
                        None,
                    )
            }
        }
        pub fn object_count(&self) -> usize {
            self.objects_vec().map_or(0, |v| v.len())
        }
        pub fn objects(&self) -> impl Iterator<Item = ObjectTable<'a>> + use<'a> {
            self.objects_vec().into_iter().flat_map(|v| v.iter())
        }
    }

    impl<'a> ObjectTable<'a> {
        pub fn kind(&self) -> u8 {
            unsafe { self.table.get::<u8>(OBJECT_KIND, Some(0)) }.unwrap_or(0)
        }
        pub fn name(&self) -> &'a str {
            unsafe { self.table.get::<ForwardsUOffset<&str>>(OBJECT_NAME, None) }.unwrap_or("")
        }
        pub fn proto(&self) -> &'a [u8] {
            unsafe {
                self.table
                    .get::<ForwardsUOffset<Vector<'a, u8>>>(OBJECT_PROTO, None)
            }
            .map_or(&[][..], |v| v.bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{apply, definitions};
    use quiver_core::time::Timestamp;

    const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
  - {name: customer, join_keys: [customer_id], value_type: STRING}
sources:
  - {name: stats, path: data/stats.parquet}
  - {name: cust, path: data/cust.parquet}
feature_views:
  - name: hourly
    entities: [driver]
    ttl: 1d
    source: stats
    schema: [{name: conv_rate, dtype: Float32}, {name: trips, dtype: Int64}]
  - name: profile
    entities: [customer]
    source: cust
    schema: [{name: age, dtype: Int64}]
feature_services:
  - {name: drivers, features: [hourly]}
  - {name: customers, features: [profile]}
"#;

    fn registry() -> RegistryFile {
        let desired = definitions::parse(&[("features.yaml", DEFS)], "demo").unwrap();
        let mut file = RegistryFile::empty();
        apply::apply(
            &mut file,
            &desired,
            Timestamp {
                seconds: 100,
                nanos: 0,
            },
        )
        .unwrap();
        file
    }

    fn snapshot_of(file: &RegistryFile, services: &[String]) -> (Vec<u8>, u64) {
        let objects = select(file, "demo", services).unwrap();
        let refs: Vec<(ObjectKind, &str, &[u8])> = objects
            .iter()
            .map(|(k, n, b)| (*k, n.as_str(), *b))
            .collect();
        encode("demo", 7, services, &refs)
    }

    #[test]
    fn round_trip_rebuilds_the_same_project() {
        let file = registry();
        let (bytes, hash) = snapshot_of(&file, &[]);
        let snap = decode(&bytes).unwrap();
        assert_eq!(snap.schema_version, SCHEMA_VERSION);
        assert_eq!(snap.version, 7);
        assert_eq!(snap.content_hash, hash);
        assert_eq!(snap.etag(), format!("\"{hash:016x}\""));
        assert_eq!(
            snap.project_registry("demo").unwrap(),
            file.project("demo").unwrap()
        );
        assert!(matches!(
            snap.project_registry("other"),
            Err(SnapshotError::WrongProject { .. })
        ));
        // The content hash ignores the version; the bytes do not.
        let objects = select(&file, "demo", &[]).unwrap();
        let refs: Vec<(ObjectKind, &str, &[u8])> = objects
            .iter()
            .map(|(k, n, b)| (*k, n.as_str(), *b))
            .collect();
        let (other, hash8) = encode("demo", 8, &[], &refs);
        assert_eq!(hash8, hash);
        assert_ne!(other, bytes);
    }

    #[test]
    fn narrowing_keeps_what_the_services_read() {
        let file = registry();
        let (bytes, _) = snapshot_of(&file, &["drivers".to_owned()]);
        let snap = decode(&bytes).unwrap();
        let names: Vec<(ObjectKind, &str)> = snap
            .objects
            .iter()
            .map(|o| (o.kind, o.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (ObjectKind::Project, "demo"),
                (ObjectKind::Entity, "driver"),
                (ObjectKind::DataSource, "stats"),
                (ObjectKind::FeatureView, "hourly"),
                (ObjectKind::FeatureService, "drivers"),
            ]
        );
        assert_eq!(snap.feature_services, ["drivers"]);
        let reg = snap.project_registry("demo").unwrap();
        assert!(reg.feature_view("profile").is_none());
        assert_eq!(
            select(&file, "demo", &["nope".to_owned()]).unwrap_err(),
            SelectError::UnknownService("nope".to_owned())
        );
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let file = registry();
        let (bytes, _) = snapshot_of(&file, &["drivers".to_owned()]);
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "truncated to {len} accepted"
            );
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x5a;
            if let Ok(snap) = decode(&bad) {
                // A flip in padding or in an unused vtable byte changes nothing that is read.
                assert_eq!(
                    snap,
                    decode(&bytes).unwrap(),
                    "byte {i} changed content silently"
                );
            }
        }
    }

    #[test]
    fn other_schema_versions_and_garbage_are_refused() {
        assert!(matches!(
            decode(b"not a snapshot"),
            Err(SnapshotError::NotASnapshot(_))
        ));
        // A version-2 snapshot written with the same layout.
        let mut b = flatbuffers::FlatBufferBuilder::new();
        let p = b.create_string("demo");
        let start = b.start_table();
        b.push_slot_always(fb::SNAPSHOT_PROJECT, p);
        b.push_slot_always(fb::SNAPSHOT_CONTENT_HASH, 0u64);
        b.push_slot_always(fb::SNAPSHOT_CHECKSUM, 0u64);
        b.push_slot_always(fb::SNAPSHOT_SCHEMA_VERSION, 2u32);
        let root = b.end_table(start);
        b.finish_size_prefixed(root, Some(FILE_IDENTIFIER));
        assert_eq!(
            decode(b.finished_data()),
            Err(SnapshotError::SchemaVersion(2))
        );
    }
}

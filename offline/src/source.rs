//! File sources: resolving a `FileSource` path to files (local, or objects in S3 and GCS), and
//! scanning them as Arrow batches with only the needed columns and, for Parquet, only the row
//! groups whose event-time statistics overlap the wanted window.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Schema, SchemaRef};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt as _};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use quiver_registry::object::{ObjectUri, bucket_client};
use quiver_registry::trust;

use crate::Error;
use crate::convert::{self, Nanos};

/// Rows per decoded batch.
const BATCH_ROWS: usize = 16 * 1024;

/// Footers of object-store files read at once when a source is opened.
const FOOTERS_IN_FLIGHT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    ArrowIpc,
    Csv,
}

impl Format {
    /// By file extension.
    pub fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" | "parq" | "pq" => Some(Format::Parquet),
            "arrow" | "ipc" | "feather" | "arrows" => Some(Format::ArrowIpc),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// The files of a local source path: the file itself, or every data file under a folder (hive
/// partitions included), sorted. Relative paths are resolved against the repo, as Feast does.
/// ([`locate`] also takes object-store URIs.)
pub fn resolve(uri: &str, repo_dir: &Path) -> Result<Vec<(PathBuf, Format)>, Error> {
    let path = trusted_path(uri, repo_dir)?;
    let meta = std::fs::metadata(&path)
        .map_err(|e| Error::wrap(format_args!("source {}", path.display()), e))?;
    if meta.is_file() {
        // A single file is read whatever its extension says, as Parquet unless it says otherwise.
        return Ok(vec![(
            path.clone(),
            Format::of(&path).unwrap_or(Format::Parquet),
        )]);
    }
    let mut out = Vec::new();
    walk(&path, repo_dir, &mut out)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if out.is_empty() {
        return Err(Error::not_found(format!(
            "source {}: the folder holds no .parquet, .arrow or .csv files",
            path.display()
        )));
    }
    Ok(out)
}

/// The real path of a local source (relative paths against the repo), refused unless it is
/// inside the repo or an operator's allowed location (`quiver_registry::trust`).
pub fn trusted_path(uri: &str, repo_dir: &Path) -> Result<PathBuf, Error> {
    trust::policy()
        .local_path(repo_dir, uri)
        .map_err(|e| Error::unprocessable(format!("source {uri}: {e}")))
}

/// Refuses an object-store source (or push target) whose bucket or `s3_endpoint_override` the
/// operator did not allow, before any client is built or request sent.
pub fn check_object_source(uri: &str, s3_endpoint_override: &str) -> Result<(), Error> {
    let policy = trust::policy();
    policy
        .object(uri)
        .and_then(|()| policy.endpoint(s3_endpoint_override))
        .map_err(|e| Error::unprocessable(format!("source {uri}: {}: {e}", e.field)))
}

fn walk(dir: &Path, repo_dir: &Path, out: &mut Vec<(PathBuf, Format)>) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::wrap(format_args!("source {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::wrap(format_args!("source {}", dir.display()), e))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Spark's _SUCCESS, _committed_*, hidden files.
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let kind = entry
            .file_type()
            .map_err(|e| Error::wrap(format_args!("source {}", path.display()), e))?;
        if kind.is_symlink() {
            // A link inside a source folder must not lead out of the trusted locations (the
            // query engine's listing follows links).
            trusted_path(&path.to_string_lossy(), repo_dir)?;
        }
        if kind.is_dir() {
            walk(&path, repo_dir, out)?;
        } else if let Some(format) = Format::of(&path) {
            out.push((path, format));
        }
    }
    Ok(())
}

/// A bucket of an object-store source, with its client.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// The object's (or prefix's) URI, for messages.
    pub uri: ObjectUri,
    /// What it is, for messages: "source", "entity table", "output".
    pub what: &'static str,
    pub store: Arc<dyn ObjectStore>,
    /// Where its requests go, for messages.
    pub endpoint: String,
}

impl Bucket {
    /// A client for `uri`'s bucket, configured as Feast's are (`s3_endpoint_override`, when not
    /// empty, wins over the environment's S3 endpoint). `what` names the object in messages
    /// ("source"). Does not touch the network.
    pub fn open(
        uri: ObjectUri,
        s3_endpoint_override: &str,
        what: &'static str,
    ) -> Result<Bucket, Error> {
        let (store, endpoint) =
            bucket_client(&uri, Some(s3_endpoint_override), what).map_err(Error::Unprocessable)?;
        Ok(Bucket {
            uri,
            what,
            store,
            endpoint,
        })
    }
}

/// A path that names an object store: the object (or prefix) and whether it was written as a
/// folder (`s3://bucket/stats/`). `None` for a local path. `what` names it in errors.
pub fn object_uri(uri: &str, what: &str) -> Result<Option<(ObjectUri, bool)>, Error> {
    // ObjectUri names objects: parsed without the folder's slash.
    let folder = uri.trim().ends_with('/');
    let object = ObjectUri::parse_as(uri.trim().trim_end_matches('/'), what, "data.parquet")
        .map_err(Error::BadRequest)?;
    Ok(object.map(|o| (o, folder)))
}

/// Where a source's data is, found out by [`locate`].
#[derive(Debug, Clone)]
pub enum Located {
    /// Local files: one file, or the data files under a folder, sorted.
    Local {
        /// The file or folder the source names, resolved against the repo.
        root: PathBuf,
        is_dir: bool,
        files: Vec<(PathBuf, Format)>,
    },
    /// Objects in S3 or GCS: one object, or the data objects under a prefix, sorted.
    Object {
        bucket: Bucket,
        is_prefix: bool,
        files: Vec<(ObjectMeta, Format)>,
    },
}

impl Located {
    /// How many files the source has.
    pub fn len(&self) -> usize {
        match self {
            Located::Local { files, .. } => files.len(),
            Located::Object { files, .. } => files.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first file's format and extension (`.parquet`).
    pub fn first(&self) -> Option<(Format, String)> {
        let (name, format) = match self {
            Located::Local { files, .. } => files.first().map(|(p, f)| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                (name.into_owned(), *f)
            })?,
            Located::Object { files, .. } => files
                .first()
                .map(|(m, f)| (m.location.filename().unwrap_or_default().to_owned(), *f))?,
        };
        let ext = name
            .rsplit_once('.')
            .map(|(_, e)| format!(".{e}"))
            .unwrap_or_default();
        Some((format, ext))
    }
}

/// Finds a source's files: [`resolve`] for a local path; for `s3://` and `gs://`, the object
/// itself or, when the URI ends with `/` or names no object, every data object under it as a
/// prefix (Spark's `_SUCCESS` and hidden objects skipped). `s3_endpoint_override` is the
/// `FileSource`'s own S3 endpoint (empty: the environment's).
pub async fn locate(
    uri: &str,
    s3_endpoint_override: &str,
    repo_dir: &Path,
) -> Result<Located, Error> {
    let Some((object, folder)) = object_uri(uri, "source")? else {
        let root = trusted_path(uri, repo_dir)?;
        let files = resolve(uri, repo_dir)?;
        return Ok(Located::Local {
            is_dir: root.is_dir(),
            root,
            files,
        });
    };
    check_object_source(uri, s3_endpoint_override)?;
    locate_objects(
        Bucket::open(object, s3_endpoint_override, "source")?,
        folder,
    )
    .await
}

/// The object-store half of [`locate`], on a given client: `bucket.uri`'s object, or the data
/// objects under it (only those when `folder`).
pub async fn locate_objects(bucket: Bucket, folder: bool) -> Result<Located, Error> {
    let fail = |e: object_store::Error| {
        let context = format!(
            "{} {}: {} ({})",
            bucket.what,
            bucket.uri,
            match e {
                object_store::Error::NotFound { .. } => "not found",
                _ => "cannot read it",
            },
            bucket.endpoint
        );
        Error::wrap(context, e)
    };
    let key = bucket.uri.key.clone();
    let path = ObjectPath::parse(&key).map_err(|e| {
        Error::bad_request(format!(
            "{} {}: not a valid object key: {e}",
            bucket.what, bucket.uri
        ))
    })?;
    if !folder {
        match bucket.store.head(&path).await {
            Ok(meta) => {
                let format = Format::of(Path::new(&key)).unwrap_or(Format::Parquet);
                return Ok(Located::Object {
                    bucket,
                    is_prefix: false,
                    files: vec![(meta, format)],
                });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(fail(e)),
        }
    }
    let files = list_data_objects(&bucket, &path).await.map_err(fail)?;
    if files.is_empty() {
        return Err(Error::not_found(format!(
            "{} {}: no such object, and no .parquet, .arrow or .csv objects under it ({})",
            bucket.what, bucket.uri, bucket.endpoint
        )));
    }
    Ok(Located::Object {
        bucket,
        is_prefix: true,
        files,
    })
}

/// The data objects under `prefix` (at any depth), sorted: those with a data file's extension,
/// skipping Spark's `_SUCCESS` and `_committed_*`, `_temporary/` and hidden objects.
pub async fn list_data_objects(
    bucket: &Bucket,
    prefix: &ObjectPath,
) -> Result<Vec<(ObjectMeta, Format)>, object_store::Error> {
    let mut files = Vec::new();
    let mut listing = bucket.store.list(Some(prefix));
    while let Some(meta) = listing.next().await {
        let meta = meta?;
        let hidden = meta.location.prefix_match(prefix).is_none_or(|mut parts| {
            parts.any(|p| p.as_ref().starts_with('.') || p.as_ref().starts_with('_'))
        });
        if hidden {
            continue;
        }
        if let Some(format) = Format::of(Path::new(meta.location.as_ref())) {
            files.push((meta, format));
        }
    }
    files.sort_by(|a, b| a.0.location.cmp(&b.0.location));
    Ok(files)
}

/// A Parquet object's Arrow schema, from its footer.
pub async fn object_schema(bucket: &Bucket, meta: &ObjectMeta) -> Result<SchemaRef, Error> {
    let mut reader = ObjectReader::new(&bucket.store, meta);
    let metadata = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::default())
        .await
        .map_err(|e| {
            let context = format!(
                "{}{}/{} ({})",
                bucket.uri.scheme.prefix(),
                bucket.uri.bucket,
                meta.location,
                bucket.endpoint
            );
            Error::wrap(context, e)
        })?;
    Ok(Arc::clone(metadata.schema()))
}

/// Opens every file of a source for a scan (reading only metadata): see [`open`].
pub async fn open_all(
    located: &Located,
    ts_column: &str,
    window: Option<(Nanos, Nanos)>,
) -> Result<Vec<OpenFile>, Error> {
    let mut out = Vec::with_capacity(located.len());
    match located {
        Located::Local { files, .. } => {
            for (path, format) in files {
                out.push(open(path, *format, ts_column, window)?);
            }
        }
        Located::Object { bucket, files, .. } => {
            // A footer read is small, but its latency adds up over hundreds of part files:
            // several at once, in order.
            let opened: Vec<Result<OpenFile, Error>> = futures::stream::iter(
                files
                    .iter()
                    .map(|(meta, format)| open_object(bucket, meta, *format, ts_column, window)),
            )
            .buffered(FOOTERS_IN_FLIGHT)
            .collect()
            .await;
            for file in opened {
                out.push(file?);
            }
        }
    }
    Ok(out)
}

/// The row groups whose `ts_column` statistics overlap the window (all of them without a
/// window or statistics), and, when every one of them has both statistics, their event-time
/// ranges and row counts (aligned with the groups).
fn overlapping_row_groups(
    schema: &Schema,
    metadata: &ParquetMetaData,
    ts_column: &str,
    window: Option<(Nanos, Nanos)>,
) -> (Vec<usize>, Option<Vec<GroupStats>>) {
    let groups = metadata.row_groups();
    let all: Vec<usize> = (0..groups.len()).collect();
    let Ok(field) = schema.field_with_name(ts_column) else {
        return (all, None);
    };
    if !convert::is_time_type(field.data_type()) {
        return (all, None);
    }
    let Ok(stats) =
        StatisticsConverter::try_new(ts_column, schema, metadata.file_metadata().schema_descr())
    else {
        return (all, None);
    };
    let (Ok(mins), Ok(maxs)) = (stats.row_group_mins(groups), stats.row_group_maxes(groups)) else {
        return (all, None);
    };
    let mut keep = Vec::with_capacity(all.len());
    let mut times = Some(Vec::with_capacity(all.len()));
    for g in all {
        let min = convert::time_at(mins.as_ref(), g);
        let max = convert::time_at(maxs.as_ref(), g);
        if let Some((start, end)) = window
            && (max.is_some_and(|m| m < start) || min.is_some_and(|m| m > end))
        {
            continue;
        }
        keep.push(g);
        times = match (times, min, max) {
            (Some(mut t), Some(min), Some(max)) => {
                t.push((min, max, groups[g].num_rows().max(0) as u64));
                Some(t)
            }
            _ => None,
        };
    }
    (keep, times)
}

fn rows_in(metadata: &ParquetMetaData, groups: &[usize]) -> u64 {
    groups
        .iter()
        .map(|&g| metadata.row_group(g).num_rows().max(0) as u64)
        .sum()
}

/// Parquet's reads of one object: ranged GETs (several ranges of a row group at once), and the
/// footer read knowing the object's size from the listing, so no request asks for a suffix.
struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
}

impl ObjectReader {
    fn new(store: &Arc<dyn ObjectStore>, meta: &ObjectMeta) -> ObjectReader {
        ObjectReader {
            store: Arc::clone(store),
            path: meta.location.clone(),
            size: meta.size,
        }
    }
}

fn parquet_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// Opens a Parquet object: reads its footer (one or two range requests) and selects the row
/// groups that overlap the window. Other formats are read from local files only.
pub async fn open_object(
    bucket: &Bucket,
    meta: &ObjectMeta,
    format: Format,
    ts_column: &str,
    window: Option<(Nanos, Nanos)>,
) -> Result<OpenFile, Error> {
    let shown = format!(
        "{}{}/{}",
        bucket.uri.scheme.prefix(),
        bucket.uri.bucket,
        meta.location
    );
    if format != Format::Parquet {
        return Err(Error::unprocessable(format!(
            "{shown}: only Parquet objects are read from object stores (as Feast's FileSource does)"
        )));
    }
    let mut reader = ObjectReader::new(&bucket.store, meta);
    let metadata = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::default())
        .await
        .map_err(|e| Error::wrap(format_args!("{shown} ({})", bucket.endpoint), e))?;
    let schema = Arc::clone(metadata.schema());
    let (keep, times) = overlapping_row_groups(&schema, metadata.metadata(), ts_column, window);
    Ok(OpenFile {
        rows: rows_in(metadata.metadata(), &keep),
        shown,
        format,
        schema,
        row_groups: Some(keep),
        times,
        origin: Origin::Object {
            store: Arc::clone(&bucket.store),
            meta: meta.clone(),
            metadata,
            runtime: tokio::runtime::Handle::current(),
        },
    })
}

/// A row group's oldest and newest event time, and its rows.
type GroupStats = (Nanos, Nanos, u64);

/// One file opened for a scan: its schema, and how many rows the scan will read.
pub struct OpenFile {
    /// The file's path or URI, for messages.
    pub shown: String,
    pub format: Format,
    pub schema: SchemaRef,
    /// Rows in the row groups that overlap the window (all rows for non-Parquet files).
    pub rows: u64,
    row_groups: Option<Vec<usize>>,
    /// The event-time range and rows of each of `row_groups`, when all have statistics.
    times: Option<Vec<GroupStats>>,
    origin: Origin,
}

/// Where an opened file's bytes come from.
enum Origin {
    Local(PathBuf),
    /// An object, read with range requests on `runtime` (scans run on plain threads).
    Object {
        store: Arc<dyn ObjectStore>,
        meta: ObjectMeta,
        metadata: ArrowReaderMetadata,
        runtime: tokio::runtime::Handle,
    },
}

/// Opens a file and reads its schema; for Parquet also selects the row groups whose `ts_column`
/// statistics overlap `[start, end]` (row groups without statistics are kept).
pub fn open(
    path: &Path,
    format: Format,
    ts_column: &str,
    window: Option<(Nanos, Nanos)>,
) -> Result<OpenFile, Error> {
    let shown = &path.display();
    match format {
        Format::Parquet => {
            let file = File::open(path).map_err(|e| Error::wrap(shown, e))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| Error::wrap(shown, e))?;
            let schema = Arc::clone(builder.schema());
            let (keep, times) =
                overlapping_row_groups(&schema, builder.metadata(), ts_column, window);
            Ok(OpenFile {
                shown: path.display().to_string(),
                format,
                schema,
                rows: rows_in(builder.metadata(), &keep),
                row_groups: Some(keep),
                times,
                origin: Origin::Local(path.to_path_buf()),
            })
        }
        Format::ArrowIpc => {
            let file = File::open(path).map_err(|e| Error::wrap(shown, e))?;
            let reader = arrow_ipc::reader::FileReader::try_new(file, None)
                .map_err(|e| Error::wrap(shown, e))?;
            let schema = reader.schema();
            let mut rows = 0u64;
            for b in reader {
                rows += b.map_err(|e| Error::wrap(shown, e))?.num_rows() as u64;
            }
            Ok(OpenFile {
                shown: path.display().to_string(),
                format,
                schema,
                rows,
                row_groups: None,
                times: None,
                origin: Origin::Local(path.to_path_buf()),
            })
        }
        Format::Csv => Err(Error::unprocessable(format!(
            "{}: CSV sources are not supported by materialization yet; convert the file to Parquet",
            path.display()
        ))),
    }
}

impl OpenFile {
    /// Reads the file's batches with only `columns` (which must exist), calling `each` per
    /// batch; the batch's columns are in the order of `columns`. Blocks: call it on a plain
    /// thread, not an async one (objects are read on the runtime they were opened on).
    pub fn scan(
        &self,
        columns: &[String],
        each: impl FnMut(&RecordBatch) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.scan_row_groups(columns, self.row_groups.as_deref(), each)
    }

    /// The row groups the scan reads (after pruning) with their event-time ranges and row
    /// counts, when the file is Parquet and every one of them has statistics for the event-time
    /// column.
    pub fn row_group_times(&self) -> Option<Vec<(usize, Nanos, Nanos, u64)>> {
        let groups = self.row_groups.as_ref()?;
        let times = self.times.as_ref()?;
        Some(
            groups
                .iter()
                .zip(times)
                .map(|(&g, &(min, max, rows))| (g, min, max, rows))
                .collect(),
        )
    }

    /// Like [`OpenFile::scan`], reading only `groups` (Parquet row-group indices, in this
    /// order; `None`: the whole file).
    pub fn scan_row_groups(
        &self,
        columns: &[String],
        groups: Option<&[usize]>,
        mut each: impl FnMut(&RecordBatch) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let shown = &self.shown;
        let indices: Vec<usize> = columns
            .iter()
            .map(|c| {
                self.schema.index_of(c).map_err(|_| {
                    Error::unprocessable(format!(
                        "{}: no column {c:?} (columns: {})",
                        self.shown,
                        column_list(&self.schema)
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        // Parquet reads columns in file order: project, then reorder to the caller's order.
        let mut sorted = indices.clone();
        sorted.sort_unstable();
        sorted.dedup();
        let projected = self
            .schema
            .project(&sorted)
            .map_err(|e| Error::wrap(shown, e))?;
        let order: Vec<usize> = columns
            .iter()
            .map(|c| projected.index_of(c).unwrap_or(0))
            .collect();
        match (&self.origin, self.format) {
            (Origin::Local(path), Format::Parquet) => {
                let file = File::open(path).map_err(|e| Error::wrap(shown, e))?;
                let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|e| Error::wrap(shown, e))?;
                let mask = ProjectionMask::roots(builder.parquet_schema(), sorted.iter().copied());
                let mut builder = builder.with_projection(mask).with_batch_size(BATCH_ROWS);
                if let Some(groups) = groups {
                    builder = builder.with_row_groups(groups.to_vec());
                }
                for batch in builder.build().map_err(|e| Error::wrap(shown, e))? {
                    let batch = batch.map_err(|e| Error::wrap(shown, e))?;
                    each(&batch.project(&order).map_err(|e| Error::wrap(shown, e))?)?;
                }
            }
            (
                Origin::Object {
                    store,
                    meta,
                    metadata,
                    runtime,
                },
                Format::Parquet,
            ) => runtime.block_on(async {
                let reader = ObjectReader::new(store, meta);
                let builder =
                    ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata.clone());
                let mask = ProjectionMask::roots(builder.parquet_schema(), sorted.iter().copied());
                let mut builder = builder.with_projection(mask).with_batch_size(BATCH_ROWS);
                if let Some(groups) = groups {
                    builder = builder.with_row_groups(groups.to_vec());
                }
                let mut batches = builder.build().map_err(|e| Error::wrap(shown, e))?;
                while let Some(batch) = batches.next().await {
                    let batch = batch.map_err(|e| Error::wrap(shown, e))?;
                    each(&batch.project(&order).map_err(|e| Error::wrap(shown, e))?)?;
                }
                Ok::<(), Error>(())
            })?,
            (Origin::Local(path), Format::ArrowIpc) => {
                let file = File::open(path).map_err(|e| Error::wrap(shown, e))?;
                let reader = arrow_ipc::reader::FileReader::try_new(file, Some(indices))
                    .map_err(|e| Error::wrap(shown, e))?;
                for batch in reader {
                    each(&batch.map_err(|e| Error::wrap(shown, e))?)?;
                }
            }
            (_, format) => {
                return Err(Error::internal(format!(
                    "{shown}: {format:?} files cannot be scanned here"
                )));
            }
        }
        Ok(())
    }
}

/// `a (Int64), b (Utf8)`, for error messages.
pub fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} ({})", f.name(), short_type(f.data_type())))
        .collect::<Vec<_>>()
        .join(", ")
}

fn short_type(t: &DataType) -> String {
    match t {
        DataType::Timestamp(unit, tz) => match tz {
            Some(tz) => format!("Timestamp({unit:?}, {tz})"),
            None => format!("Timestamp({unit:?})"),
        },
        other => other.to_string(),
    }
}

//! Appending pushed rows to a file source (`POST /push` with `to: offline`): the rows of a
//! column-major JSON table become one Arrow batch typed by the source's existing schema, written
//! as Parquet through a temporary file and a rename, so readers never see half a file.
//!
//! - A folder source gets a new file `push-<nanos>-<pid>.parquet` in it.
//! - A single-file source is rewritten whole with the rows appended (what Feast's file offline
//!   store does), under an exclusive file lock (a sibling `.<name>.lock`, flock) so that two
//!   pushes, from this process or another, do not lose each other's rows.
//! - Every local path is resolved to its real path and must be inside the repo or an allowed
//!   location, and every bucket and endpoint allowed (`quiver_registry::trust`).
//! - Sources in S3 and GCS likewise: a prefix gets a new part object, and a single object is
//!   read, extended and written back on condition that it did not change meanwhile (If-Match on
//!   its ETag; a lost race starts over), so pushes from several servers lose nothing either.
//!
//! Without an existing file the schema comes from the registry's types (`hints`).
//!
//! The rows come as a JSON table ([`Rows::Json`], a sidecar's push) or as an Arrow batch
//! ([`Rows::Arrow`], Feast's remote offline store's `offline_write_batch` through the Flight
//! server); both are written by the same code, typed by the same schema, with the same column
//! checks.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder,
    ListBuilder, StringBuilder,
};
use arrow_array::{Array as _, ArrayRef, RecordBatch, StructArray, new_null_array};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use quiver_core::ValueType;
use quiver_core::time::parse_datetime;
use serde_json::Value as Json;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt as _, PutMode, PutOptions, PutPayload, UpdateVersion};
use parquet::file::reader::ChunkReader;
use quiver_registry::object::{MAX_ATTEMPTS, pause_after_conflict};

use crate::Error;
use crate::source::{self, Bucket, Format};

/// What a pushed column holds, from the registry: a feature or join key of a Feast type, or an
/// event/created time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Value(ValueType),
    Time,
}

/// The rows to append.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    /// A column-major JSON table of `rows` rows (`POST /push`): values typed by the source's
    /// schema.
    Json {
        columns: &'a [(String, Vec<Json>)],
        rows: usize,
    },
    /// An Arrow batch (Feast's `offline_write_batch`): each column cast to the source's type
    /// within its family (integers, floats, strings, bytes, times, lists and structs of them).
    Arrow(&'a RecordBatch),
}

impl Rows<'_> {
    fn names(&self) -> Vec<&str> {
        match self {
            Rows::Json { columns, .. } => columns.iter().map(|(c, _)| c.as_str()).collect(),
            Rows::Arrow(batch) => batch
                .schema_ref()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect(),
        }
    }
}

/// Appends pushed rows to file sources under a repo folder.
pub struct ParquetAppender {
    repo_dir: PathBuf,
    /// One append at a time: a single-file source is read, extended and replaced.
    lock: Mutex<()>,
}

impl ParquetAppender {
    pub fn new(repo_dir: &Path) -> Arc<ParquetAppender> {
        Arc::new(ParquetAppender {
            repo_dir: repo_dir.to_path_buf(),
            lock: Mutex::new(()),
        })
    }

    /// Appends `rows` rows given as `columns` to the source at `uri` (a path under the repo, or
    /// an `s3://`/`gs://` object or prefix reached through `s3_endpoint_override` when it is not
    /// empty); returns the file or object written. Blocks: call it on a blocking thread of a
    /// tokio runtime (object stores are written on that runtime).
    pub fn append(
        &self,
        uri: &str,
        s3_endpoint_override: &str,
        columns: &[(String, Vec<Json>)],
        rows: usize,
        hints: &[(String, ColumnKind)],
    ) -> Result<String, Error> {
        self.append_rows(
            uri,
            s3_endpoint_override,
            Rows::Json { columns, rows },
            hints,
        )
    }

    /// [`ParquetAppender::append`] for rows in either shape.
    pub fn append_rows(
        &self,
        uri: &str,
        s3_endpoint_override: &str,
        rows: Rows<'_>,
        hints: &[(String, ColumnKind)],
    ) -> Result<String, Error> {
        let Some((object, folder)) = source::object_uri(uri, "source")? else {
            return self
                .append_local(uri, rows, hints)
                .map(|p| p.display().to_string());
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::internal(format!(
                "source {uri}: object stores are written on a tokio runtime"
            ))
        })?;
        source::check_object_source(uri, s3_endpoint_override)?;
        let bucket = Bucket::open(object, s3_endpoint_override, "source")?;
        let _guard = self
            .lock
            .lock()
            .map_err(|_| Error::internal("append lock poisoned"))?;
        runtime.block_on(append_object(&bucket, folder, rows, hints))
    }

    fn append_local(
        &self,
        uri: &str,
        rows: Rows<'_>,
        hints: &[(String, ColumnKind)],
    ) -> Result<PathBuf, Error> {
        let local = uri.strip_prefix("file://").unwrap_or(uri);
        if local.contains("://") {
            return Err(Error::unprocessable(format!(
                "source {uri}: only local paths, s3:// and gs:// are supported"
            )));
        }
        // The real path (symlinks followed), inside the repo or an allowed location.
        let path = source::trusted_path(uri, &self.repo_dir)?;
        let _guard = self
            .lock
            .lock()
            .map_err(|_| Error::internal("append lock poisoned"))?;
        let is_dir = path.is_dir() || local.ends_with('/');
        if is_dir {
            let existing = if path.is_dir() {
                source::resolve(local, &self.repo_dir).ok()
            } else {
                None
            };
            let schema = match existing
                .as_ref()
                .and_then(|files| files.iter().find(|(_, f)| *f == Format::Parquet))
            {
                Some((file, _)) => parquet_schema(file)?,
                None => schema_from_hints(rows, hints)?,
            };
            let batch = build_batch(&schema, rows)?;
            std::fs::create_dir_all(&path)
                .map_err(|e| Error::wrap(format_args!("cannot create {}", path.display()), e))?;
            let target = path.join(part_name());
            write_parquet(&target, &[batch])?;
            Ok(target)
        } else {
            // Other processes (another sidecar on the same volume) rewrite the same file: an
            // exclusive lock on a sibling `.<name>.lock` file covers the read-modify-write.
            let _file_lock = quiver_registry::store::RegistryLock::acquire(&path)
                .map_err(|e| Error::internal(format!("source {uri}: {e}")))?;
            let (schema, mut batches) = if path.exists() {
                read_all(&path)?
            } else {
                (schema_from_hints(rows, hints)?, Vec::new())
            };
            batches.push(build_batch(&schema, rows)?);
            write_parquet(&path, &on_last_schema(batches)?)?;
            Ok(path)
        }
    }
}

/// A new part file's name: `push-<nanos>-<pid>.parquet`.
fn part_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("push-{nanos}-{}.parquet", std::process::id())
}

/// [`ParquetAppender::append`] for a source in an object store.
async fn append_object(
    bucket: &Bucket,
    folder: bool,
    rows: Rows<'_>,
    hints: &[(String, ColumnKind)],
) -> Result<String, Error> {
    let fail = |op: &str, e: object_store::Error| {
        Error::wrap(
            format_args!("source {}: {op} ({})", bucket.uri, bucket.endpoint),
            e,
        )
    };
    let path = ObjectPath::parse(&bucket.uri.key).map_err(|e| {
        Error::bad_request(format!(
            "source {}: not a valid object key: {e}",
            bucket.uri
        ))
    })?;
    let existing = source::list_data_objects(bucket, &path)
        .await
        .map_err(|e| fail("listing", e))?;
    if folder || !existing.is_empty() {
        // A prefix: a new part object, typed like the first Parquet part when there is one.
        let schema = match existing.iter().find(|(_, f)| *f == Format::Parquet) {
            Some((meta, _)) => source::object_schema(bucket, meta).await?,
            None => schema_from_hints(rows, hints)?,
        };
        let batch = build_batch(&schema, rows)?;
        let target = ObjectPath::from(format!("{}/{}", bucket.uri.key, part_name()));
        let bytes = parquet_bytes(&[batch], &bucket.uri.to_string())?;
        bucket
            .store
            .put_opts(
                &target,
                PutPayload::from(bytes),
                PutOptions::from(PutMode::Create),
            )
            .await
            .map_err(|e| fail("writing a part", e))?;
        return Ok(format!(
            "{}{}/{target}",
            bucket.uri.scheme.prefix(),
            bucket.uri.bucket
        ));
    }
    // One object: read it, extend it, and write it back only if nobody changed it meanwhile.
    let shown = bucket.uri.to_string();
    for attempt in 1..=MAX_ATTEMPTS {
        let (schema, mut batches, mode) = match bucket.store.get(&path).await {
            Ok(got) => {
                let version = UpdateVersion {
                    e_tag: got.meta.e_tag.clone(),
                    version: got.meta.version.clone(),
                };
                let bytes = got.bytes().await.map_err(|e| fail("reading", e))?;
                let (schema, batches) = read_parquet(bytes, &shown)?;
                (schema, batches, PutMode::Update(version))
            }
            Err(object_store::Error::NotFound { .. }) => {
                (schema_from_hints(rows, hints)?, Vec::new(), PutMode::Create)
            }
            Err(e) => return Err(fail("reading", e)),
        };
        batches.push(build_batch(&schema, rows)?);
        let bytes = parquet_bytes(&on_last_schema(batches)?, &shown)?;
        match bucket
            .store
            .put_opts(&path, PutPayload::from(bytes), PutOptions::from(mode))
            .await
        {
            Ok(_) => return Ok(shown),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) if attempt < MAX_ATTEMPTS => {
                tracing::info!(source = %shown, "the object changed while rows were appended; reading it again");
                pause_after_conflict(attempt).await;
            }
            Err(e) => return Err(fail("writing", e)),
        }
    }
    Err(Error::Conflict(format!(
        "source {shown}: gave up after {MAX_ATTEMPTS} attempts (the object is being written continuously)"
    )))
}

/// A whole Parquet file (a local file, or an object's bytes) and its schema.
fn read_parquet<R: ChunkReader + 'static>(
    reader: R,
    shown: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), Error> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(reader).map_err(|e| Error::wrap(shown, e))?;
    let schema = Arc::clone(builder.schema());
    let batches = builder
        .build()
        .map_err(|e| Error::wrap(shown, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::wrap(shown, e))?;
    Ok((schema, batches))
}

fn parquet_bytes(batches: &[RecordBatch], shown: &str) -> Result<Bytes, Error> {
    let mut out = Vec::new();
    if let Some(first) = batches.first() {
        let mut writer = ArrowWriter::try_new(&mut out, first.schema(), None)
            .map_err(|e| Error::wrap(shown, e))?;
        for b in batches {
            writer.write(b).map_err(|e| Error::wrap(shown, e))?;
        }
        writer.close().map_err(|e| Error::wrap(shown, e))?;
    }
    Ok(Bytes::from(out))
}

fn parquet_schema(path: &Path) -> Result<SchemaRef, Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::wrap(path.display(), e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::wrap(path.display(), e))?;
    Ok(Arc::clone(builder.schema()))
}

fn read_all(path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>), Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::wrap(path.display(), e))?;
    read_parquet(file, &path.display().to_string())
}

/// Writes batches to `path` through a temporary sibling and a rename.
fn write_parquet(path: &Path, batches: &[RecordBatch]) -> Result<(), Error> {
    let shown = &path.display();
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("part");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        std::fs::create_dir_all(dir).map_err(|e| Error::wrap(shown, e))?;
        let file = std::fs::File::create(&tmp).map_err(|e| Error::wrap(shown, e))?;
        let mut writer =
            ArrowWriter::try_new(file, first.schema(), None).map_err(|e| Error::wrap(shown, e))?;
        for b in batches {
            writer.write(b).map_err(|e| Error::wrap(shown, e))?;
        }
        writer.close().map_err(|e| Error::wrap(shown, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::wrap(shown, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn arrow_type(kind: ColumnKind) -> Option<DataType> {
    let time = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let list = |inner: DataType| DataType::List(Arc::new(Field::new("item", inner, true)));
    let scalar = |t: ValueType| -> Option<DataType> {
        Some(match t {
            ValueType::Int32 => DataType::Int32,
            ValueType::Int64 => DataType::Int64,
            ValueType::Float => DataType::Float32,
            ValueType::Double => DataType::Float64,
            ValueType::Bool => DataType::Boolean,
            ValueType::String | ValueType::Json => DataType::Utf8,
            ValueType::Bytes => DataType::Binary,
            ValueType::UnixTimestamp => time(),
            _ => return None,
        })
    };
    match kind {
        ColumnKind::Time => Some(time()),
        ColumnKind::Value(t) => match t.element() {
            Some(e) => scalar(e).map(list),
            None => scalar(t),
        },
    }
}

fn schema_from_hints(rows: Rows<'_>, hints: &[(String, ColumnKind)]) -> Result<SchemaRef, Error> {
    let fields = rows
        .names()
        .into_iter()
        .map(|name| {
            let kind = hints
                .iter()
                .find(|(h, _)| h == name)
                .map(|(_, k)| *k)
                .ok_or_else(|| {
                    Error::bad_request(format!("column {name:?}: no type known for it"))
                })?;
            let t = arrow_type(kind).ok_or_else(|| {
                Error::unprocessable(format!(
                    "column {name:?}: {kind:?} cannot be written to Parquet yet"
                ))
            })?;
            Ok(Field::new(name, t, true))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// The pushed table as a batch of `schema`: every df column must be in it; its other columns
/// are null.
fn build_batch(schema: &SchemaRef, rows: Rows<'_>) -> Result<RecordBatch, Error> {
    for name in rows.names() {
        if schema.field_with_name(name).is_err() {
            return Err(Error::bad_request(format!(
                "df column {name:?} is not a column of the offline source (its columns: {})",
                source::column_list(schema)
            )));
        }
    }
    let (given, rows): (Vec<(&str, Column<'_>)>, usize) = match rows {
        Rows::Json { columns, rows } => (
            columns
                .iter()
                .map(|(c, values)| (c.as_str(), Column::Json(values)))
                .collect(),
            rows,
        ),
        Rows::Arrow(batch) => (
            batch
                .schema_ref()
                .fields()
                .iter()
                .zip(batch.columns())
                .map(|(f, a)| (f.name().as_str(), Column::Arrow(a)))
                .collect(),
            batch.num_rows(),
        ),
    };
    // A source column the push does not carry (one the views do not use, or `created`) is
    // null in the new rows, so a column written `not null` becomes nullable.
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut arrays = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        match given.iter().find(|(c, _)| *c == field.name()) {
            Some((name, column)) => {
                arrays.push(
                    match column {
                        Column::Json(values) => array_of(field.data_type(), values),
                        Column::Arrow(array) => cast_to(array, field.data_type()),
                    }
                    .map_err(|e| Error::bad_request(format!("df column {name:?}: {e}")))?,
                );
                fields.push(Arc::clone(field));
            }
            None => {
                arrays.push(new_null_array(field.data_type(), rows));
                fields.push(Arc::new(field.as_ref().clone().with_nullable(true)));
            }
        }
    }
    let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(schema, arrays, &options)
        .map_err(|e| Error::bad_request(e.to_string()))
}

/// One given column.
enum Column<'a> {
    Json(&'a [Json]),
    Arrow(&'a ArrayRef),
}

/// An uploaded Arrow column as the source's type `to`: unchanged when equal; else cast within
/// its family (any integer to an integer, an integer or float to a float, a time to a time,
/// strings to strings, bytes to bytes, lists element-wise, structs field by field by name).
/// Values that do not fit (an Int64 beyond Int32) are refused, never nulled.
fn cast_to(array: &ArrayRef, to: &DataType) -> Result<ArrayRef, String> {
    use DataType as D;
    let from = array.data_type();
    if from == to {
        return Ok(Arc::clone(array));
    }
    let int = |t: &DataType| t.is_integer();
    let string = |t: &DataType| matches!(t, D::Utf8 | D::LargeUtf8 | D::Utf8View);
    let bytes = |t: &DataType| matches!(t, D::Binary | D::LargeBinary | D::BinaryView);
    let time = |t: &DataType| matches!(t, D::Timestamp(..) | D::Date32 | D::Date64);
    let refuse = || format!("the upload's type {from} cannot be written to the source's {to}");
    let family = match to {
        t if int(t) => int(from),
        D::Float16 | D::Float32 | D::Float64 => from.is_floating() || int(from),
        t if string(t) => string(from),
        t if bytes(t) => bytes(from),
        D::Timestamp(..) => time(from),
        D::List(_) | D::LargeList(_) => {
            matches!(from, D::List(_) | D::LargeList(_) | D::FixedSizeList(..))
        }
        D::Struct(to_fields) => {
            let (D::Struct(_), Some(given)) = (from, array.as_any().downcast_ref::<StructArray>())
            else {
                return Err(refuse());
            };
            return cast_struct(given, to_fields);
        }
        _ => false,
    };
    if !family {
        return Err(refuse());
    }
    if let (D::List(to_item) | D::LargeList(to_item), Some(child)) = (to, list_values(array)) {
        // Checked element-wise first, so the error names the element types.
        cast_to(&child, to_item.data_type()).map_err(|e| format!("list elements: {e}"))?;
    }
    let options = datafusion::arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    datafusion::arrow::compute::cast_with_options(array, to, &options).map_err(|e| e.to_string())
}

fn list_values(array: &ArrayRef) -> Option<ArrayRef> {
    use arrow_array::cast::AsArray;
    match array.data_type() {
        DataType::List(_) => Some(Arc::clone(array.as_list::<i32>().values())),
        DataType::LargeList(_) => Some(Arc::clone(array.as_list::<i64>().values())),
        DataType::FixedSizeList(..) => Some(Arc::clone(array.as_fixed_size_list().values())),
        _ => None,
    }
}

/// A struct column as the source's struct: fields matched by name (pandas and pyarrow order a
/// dict's keys as they come), each cast like a column; a missing field is null.
fn cast_struct(given: &StructArray, to_fields: &arrow_schema::Fields) -> Result<ArrayRef, String> {
    let names = |fields: &arrow_schema::Fields| {
        fields
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(extra) = given
        .fields()
        .iter()
        .find(|f| to_fields.find(f.name()).is_none())
    {
        return Err(format!(
            "struct field {:?} is not a field of the source's struct ({})",
            extra.name(),
            names(to_fields)
        ));
    }
    let children = to_fields
        .iter()
        .map(|f| match given.column_by_name(f.name()) {
            Some(child) => cast_to(child, f.data_type())
                .map_err(|e| format!("struct field {:?}: {e}", f.name())),
            None if f.is_nullable() => Ok(new_null_array(f.data_type(), given.len())),
            None => Err(format!(
                "struct field {:?}, which the source requires, is missing",
                f.name()
            )),
        })
        .collect::<Result<Vec<_>, String>>()?;
    StructArray::try_new(to_fields.clone(), children, given.nulls().cloned())
        .map(|s| Arc::new(s) as ArrayRef)
        .map_err(|e| e.to_string())
}

/// Puts every batch on the schema of the last (the pushed one, whose columns may have become
/// nullable), so they can be written to one file.
fn on_last_schema(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, Error> {
    let Some(schema) = batches.last().map(RecordBatch::schema) else {
        return Ok(batches);
    };
    batches
        .into_iter()
        .map(|b| {
            if b.schema() == schema {
                Ok(b)
            } else {
                RecordBatch::try_new(Arc::clone(&schema), b.columns().to_vec())
                    .map_err(|e| Error::internal(format!("appending to the source: {e}")))
            }
        })
        .collect()
}

fn time_micros(j: &Json) -> Option<i64> {
    match j {
        Json::String(s) => {
            parse_datetime(s).map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
        }
        Json::Number(n) => n.as_i64().map(|s| s * 1_000_000).or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| (f * 1e6) as i64)
        }),
        _ => None,
    }
}

fn array_of(t: &DataType, values: &[Json]) -> Result<ArrayRef, String> {
    let bad = |i: usize, what: &str| format!("row {i}: expected {what}, got {}", values[i]);
    macro_rules! build {
        ($builder:expr, $what:expr, $get:expr) => {{
            let mut b = $builder;
            for (i, v) in values.iter().enumerate() {
                if v.is_null() {
                    b.append_null();
                } else {
                    b.append_value($get(v).ok_or_else(|| bad(i, $what))?);
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match t {
        DataType::Int64 => build!(Int64Builder::new(), "an integer", Json::as_i64),
        DataType::Int32 => build!(Int32Builder::new(), "a 32-bit integer", |v: &Json| v
            .as_i64()
            .and_then(|x| i32::try_from(x).ok())),
        DataType::Float64 => build!(Float64Builder::new(), "a number", Json::as_f64),
        DataType::Float32 => build!(Float32Builder::new(), "a number", |v: &Json| v
            .as_f64()
            .map(|x| x as f32)),
        DataType::Boolean => build!(BooleanBuilder::new(), "true or false", Json::as_bool),
        DataType::Utf8 => build!(StringBuilder::new(), "a string", Json::as_str),
        DataType::Binary => build!(BinaryBuilder::new(), "base64 bytes", |v: &Json| v
            .as_str()
            .and_then(|s| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(s).ok()
            })),
        DataType::Timestamp(unit, tz) => {
            let scale = |micros: i64| match unit {
                TimeUnit::Second => micros.div_euclid(1_000_000),
                TimeUnit::Millisecond => micros.div_euclid(1000),
                TimeUnit::Microsecond => micros,
                TimeUnit::Nanosecond => micros.saturating_mul(1000),
            };
            let raw: Vec<Option<i64>> = values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    if v.is_null() {
                        Ok(None)
                    } else {
                        time_micros(v)
                            .map(|m| Some(scale(m)))
                            .ok_or_else(|| bad(i, "an ISO 8601 date-time or epoch seconds"))
                    }
                })
                .collect::<Result<_, String>>()?;
            let array: ArrayRef = match unit {
                TimeUnit::Second => Arc::new(
                    arrow_array::TimestampSecondArray::from(raw).with_timezone_opt(tz.clone()),
                ),
                TimeUnit::Millisecond => Arc::new(
                    arrow_array::TimestampMillisecondArray::from(raw).with_timezone_opt(tz.clone()),
                ),
                TimeUnit::Microsecond => Arc::new(
                    arrow_array::TimestampMicrosecondArray::from(raw).with_timezone_opt(tz.clone()),
                ),
                TimeUnit::Nanosecond => Arc::new(
                    arrow_array::TimestampNanosecondArray::from(raw).with_timezone_opt(tz.clone()),
                ),
            };
            array
        }
        DataType::List(item) => {
            macro_rules! list {
                ($builder:expr, $what:expr, $get:expr) => {{
                    let mut b = ListBuilder::new($builder).with_field(Arc::clone(item));
                    for (i, v) in values.iter().enumerate() {
                        match v {
                            Json::Null => b.append(false),
                            Json::Array(items) => {
                                for x in items {
                                    match $get(x) {
                                        Some(x) => b.values().append_value(x),
                                        None if x.is_null() => b.values().append_null(),
                                        None => return Err(bad(i, $what)),
                                    }
                                }
                                b.append(true);
                            }
                            _ => return Err(bad(i, "an array")),
                        }
                    }
                    Arc::new(b.finish()) as ArrayRef
                }};
            }
            match item.data_type() {
                DataType::Int64 => list!(Int64Builder::new(), "an array of integers", Json::as_i64),
                DataType::Int32 => list!(
                    Int32Builder::new(),
                    "an array of 32-bit integers",
                    |v: &Json| v.as_i64().and_then(|x| i32::try_from(x).ok())
                ),
                DataType::Float64 => {
                    list!(Float64Builder::new(), "an array of numbers", Json::as_f64)
                }
                DataType::Float32 => {
                    list!(Float32Builder::new(), "an array of numbers", |v: &Json| v
                        .as_f64()
                        .map(|x| x as f32))
                }
                DataType::Boolean => {
                    list!(BooleanBuilder::new(), "an array of booleans", Json::as_bool)
                }
                DataType::Utf8 => list!(StringBuilder::new(), "an array of strings", Json::as_str),
                other => return Err(format!("lists of {other} cannot be pushed offline yet")),
            }
        }
        other => {
            return Err(format!(
                "the offline source's type {other} cannot be pushed yet"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table() -> Vec<(String, Vec<Json>)> {
        vec![
            ("driver_id".into(), vec![json!(1), json!(2)]),
            (
                "event_timestamp".into(),
                vec![json!("2026-01-01T10:00:00Z"), json!(1767265200)],
            ),
            ("conv_rate".into(), vec![json!(0.5), json!(null)]),
            ("zones".into(), vec![json!([1, 2]), json!([])]),
        ]
    }

    fn json(columns: &[(String, Vec<Json>)]) -> Rows<'_> {
        Rows::Json { columns, rows: 2 }
    }

    fn hints() -> Vec<(String, ColumnKind)> {
        vec![
            ("driver_id".into(), ColumnKind::Value(ValueType::Int64)),
            ("event_timestamp".into(), ColumnKind::Time),
            ("conv_rate".into(), ColumnKind::Value(ValueType::Float)),
            ("zones".into(), ColumnKind::Value(ValueType::Int32List)),
        ]
    }

    fn rows_in(path: &Path) -> usize {
        read_all(path)
            .unwrap()
            .1
            .iter()
            .map(RecordBatch::num_rows)
            .sum()
    }

    #[test]
    fn folder_sources_get_a_new_file_and_files_grow() {
        let dir = tempfile::tempdir().unwrap();
        let appender = ParquetAppender::new(dir.path());
        // A folder that does not exist yet: typed from the hints.
        let first = appender
            .append_local("data/pushed/", json(&table()), &hints())
            .unwrap();
        assert_eq!(rows_in(&first), 2);
        // The next file takes the first one's schema; a missing column is null.
        let mut partial = table();
        partial.retain(|(c, _)| c != "zones");
        let second = appender
            .append_local("data/pushed", json(&partial), &hints())
            .unwrap();
        assert_ne!(first, second);
        let (schema, _) = read_all(&second).unwrap();
        assert_eq!(schema, read_all(&first).unwrap().0);
        // A single file is rewritten with the rows appended.
        let file = appender
            .append_local("data/one.parquet", json(&table()), &hints())
            .unwrap();
        appender
            .append_local("data/one.parquet", json(&table()), &hints())
            .unwrap();
        assert_eq!(rows_in(&file), 4);
    }

    #[test]
    fn bad_rows_name_the_column_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let appender = ParquetAppender::new(dir.path());
        appender
            .append_local("data/one.parquet", json(&table()), &hints())
            .unwrap();
        let mut bad = table();
        bad[2].1[1] = json!("fast");
        let err = appender
            .append_local("data/one.parquet", json(&bad), &hints())
            .unwrap_err();
        assert!(
            err.message().contains("df column \"conv_rate\": row 1"),
            "{err}"
        );
        let mut extra = table();
        extra.push(("colour".into(), vec![json!("red"), json!("blue")]));
        let err = appender
            .append_local("data/one.parquet", json(&extra), &hints())
            .unwrap_err();
        assert!(
            err.message().contains("\"colour\" is not a column"),
            "{err}"
        );
        assert_eq!(rows_in(&dir.path().join("data/one.parquet")), 2);
        assert!(
            appender
                .append_local("s3://bucket/x", json(&table()), &hints())
                .is_err()
        );
    }

    #[test]
    fn arrow_rows_are_cast_to_the_sources_types_within_their_family() {
        use arrow_array::{
            Float64Array, Int32Array, Int64Array, ListArray, StringArray, TimestampNanosecondArray,
            types::Int64Type,
        };
        let dir = tempfile::tempdir().unwrap();
        let appender = ParquetAppender::new(dir.path());
        let file = appender
            .append_local("data/one.parquet", json(&table()), &hints())
            .unwrap();
        let (schema, _) = read_all(&file).unwrap();
        // pandas' shapes: int64 keys, double features, naive ns times, int64 lists.
        let zones = |v: Vec<Option<Vec<Option<i64>>>>| {
            Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(v)) as ArrayRef
        };
        let batch = |zone: i64| {
            RecordBatch::try_from_iter([
                ("zones", zones(vec![Some(vec![Some(zone)]), None])),
                (
                    "conv_rate",
                    Arc::new(Float64Array::from(vec![0.25, 0.5])) as ArrayRef,
                ),
                ("driver_id", Arc::new(Int32Array::from(vec![7, 8]))),
                (
                    "event_timestamp",
                    Arc::new(TimestampNanosecondArray::from(vec![
                        1_767_265_200_000_000_000i64;
                        2
                    ])),
                ),
            ])
            .unwrap()
        };
        appender
            .append_local("data/one.parquet", Rows::Arrow(&batch(3)), &hints())
            .unwrap();
        let (after, batches) = read_all(&file).unwrap();
        assert_eq!(after, schema);
        let all = datafusion::arrow::compute::concat_batches(&after, &batches).unwrap();
        assert_eq!(all.num_rows(), 4);
        let times = all
            .column_by_name("event_timestamp")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::TimestampMicrosecondArray>()
            .unwrap();
        // The naive nanoseconds, as UTC microseconds.
        assert_eq!(times.value(2), 1_767_265_200_000_000);
        let rates = all
            .column_by_name("conv_rate")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::Float32Array>()
            .unwrap();
        assert_eq!((rates.value(2), rates.value(3)), (0.25, 0.5));

        // A value that does not fit the source's Int32 list is refused, naming the column.
        let e = appender
            .append_local("data/one.parquet", Rows::Arrow(&batch(1 << 40)), &hints())
            .unwrap_err();
        assert!(e.message().contains("df column \"zones\""), "{e}");
        // Another family: strings for a float.
        let strings = RecordBatch::try_from_iter([(
            "conv_rate",
            Arc::new(StringArray::from(vec!["0.5"])) as ArrayRef,
        )])
        .unwrap();
        let e = appender
            .append_local("data/one.parquet", Rows::Arrow(&strings), &hints())
            .unwrap_err();
        assert!(e.message().contains("df column \"conv_rate\""), "{e}");
        let rows = |p: &Path| {
            read_all(p)
                .unwrap()
                .1
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>()
        };
        assert_eq!(rows(&file), 4);

        // Struct fields are matched by name, whatever order the upload has them in.
        let st = |names: [&str; 2], values: [&str; 2]| {
            Arc::new(StructArray::from(vec![
                (
                    Arc::new(Field::new(names[0], DataType::Utf8, true)),
                    Arc::new(StringArray::from(vec![values[0]])) as ArrayRef,
                ),
                (
                    Arc::new(Field::new(names[1], DataType::Utf8, true)),
                    Arc::new(StringArray::from(vec![values[1]])) as ArrayRef,
                ),
            ])) as ArrayRef
        };
        let first = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("meta", st(["vehicle_type", "rating"], ["truck", "5.0"])),
        ])
        .unwrap();
        let path = dir.path().join("data/structs.parquet");
        write_parquet(&path, &[first]).unwrap();
        let swapped = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![2])) as ArrayRef),
            ("meta", st(["rating", "vehicle_type"], ["4.0", "van"])),
        ])
        .unwrap();
        appender
            .append_local("data/structs.parquet", Rows::Arrow(&swapped), &[])
            .unwrap();
        let (schema, batches) = read_all(&path).unwrap();
        let all = datafusion::arrow::compute::concat_batches(&schema, &batches).unwrap();
        let second = all.slice(1, 1);
        let meta = second
            .column_by_name("meta")
            .unwrap()
            .as_any()
            .downcast_ref::<StructArray>()
            .unwrap();
        let field = |name: &str| {
            meta.column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(0)
                .to_owned()
        };
        assert_eq!(
            (field("vehicle_type"), field("rating")),
            ("van".into(), "4.0".into())
        );
        let unknown = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![3])) as ArrayRef),
            ("meta", st(["rating", "colour"], ["4.0", "red"])),
        ])
        .unwrap();
        let e = appender
            .append_local("data/structs.parquet", Rows::Arrow(&unknown), &[])
            .unwrap_err();
        assert!(e.message().contains("\"colour\""), "{e}");
    }

    fn memory_bucket(store: &Arc<object_store::memory::InMemory>, uri: &str) -> Bucket {
        Bucket {
            what: "source",
            uri: quiver_registry::object::ObjectUri::parse(uri)
                .unwrap()
                .unwrap(),
            store: Arc::clone(store) as Arc<dyn object_store::ObjectStore>,
            endpoint: "memory".to_owned(),
        }
    }

    async fn object_rows(store: &object_store::memory::InMemory, key: &str) -> (SchemaRef, usize) {
        let bytes = store
            .get(&ObjectPath::from(key))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let (schema, batches) = read_parquet(bytes, key).unwrap();
        (schema, batches.iter().map(RecordBatch::num_rows).sum())
    }

    #[tokio::test]
    async fn object_prefixes_get_new_parts_and_single_objects_grow() {
        let store = Arc::new(object_store::memory::InMemory::new());
        // A prefix with nothing under it yet: a part typed from the hints, then a second one
        // typed like the first (a missing column is null).
        let prefix = memory_bucket(&store, "s3://bkt/pushed");
        let first = append_object(&prefix, true, json(&table()), &hints())
            .await
            .unwrap();
        let mut partial = table();
        partial.retain(|(c, _)| c != "zones");
        // Without the trailing slash, a key with parts under it is still a prefix.
        let second = append_object(&prefix, false, json(&partial), &hints())
            .await
            .unwrap();
        assert_ne!(first, second);
        assert!(first.starts_with("s3://bkt/pushed/push-"), "{first}");
        let parts = source::list_data_objects(&prefix, &ObjectPath::from("pushed"))
            .await
            .unwrap();
        assert_eq!(parts.len(), 2);
        let (schema_a, rows_a) = object_rows(&store, parts[0].0.location.as_ref()).await;
        let (schema_b, rows_b) = object_rows(&store, parts[1].0.location.as_ref()).await;
        assert_eq!((rows_a, rows_b), (2, 2));
        assert_eq!(schema_a, schema_b);

        // A single object: created, then read, extended and written back.
        let one = memory_bucket(&store, "s3://bkt/data/one.parquet");
        for _ in 0..3 {
            let at = append_object(&one, false, json(&table()), &hints())
                .await
                .unwrap();
            assert_eq!(at, "s3://bkt/data/one.parquet");
        }
        assert_eq!(object_rows(&store, "data/one.parquet").await.1, 6);

        // Bad rows write nothing.
        let mut bad = table();
        bad[0].1[1] = json!("two");
        let e = append_object(&one, false, json(&bad), &hints())
            .await
            .unwrap_err();
        assert!(e.message().contains("driver_id"), "{e}");
        assert_eq!(object_rows(&store, "data/one.parquet").await.1, 6);
    }
}

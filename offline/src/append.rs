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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder,
    ListBuilder, StringBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, new_null_array};
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
        let Some((object, folder)) = source::object_uri(uri, "source")? else {
            return self
                .append_local(uri, columns, rows, hints)
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
        runtime.block_on(append_object(&bucket, folder, columns, rows, hints))
    }

    fn append_local(
        &self,
        uri: &str,
        columns: &[(String, Vec<Json>)],
        rows: usize,
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
                None => schema_from_hints(columns, hints)?,
            };
            let batch = build_batch(&schema, columns, rows)?;
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
                (schema_from_hints(columns, hints)?, Vec::new())
            };
            batches.push(build_batch(&schema, columns, rows)?);
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
    columns: &[(String, Vec<Json>)],
    rows: usize,
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
            None => schema_from_hints(columns, hints)?,
        };
        let batch = build_batch(&schema, columns, rows)?;
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
            Err(object_store::Error::NotFound { .. }) => (
                schema_from_hints(columns, hints)?,
                Vec::new(),
                PutMode::Create,
            ),
            Err(e) => return Err(fail("reading", e)),
        };
        batches.push(build_batch(&schema, columns, rows)?);
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

fn schema_from_hints(
    columns: &[(String, Vec<Json>)],
    hints: &[(String, ColumnKind)],
) -> Result<SchemaRef, Error> {
    let fields = columns
        .iter()
        .map(|(name, _)| {
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
fn build_batch(
    schema: &SchemaRef,
    columns: &[(String, Vec<Json>)],
    rows: usize,
) -> Result<RecordBatch, Error> {
    for (name, _) in columns {
        if schema.field_with_name(name).is_err() {
            return Err(Error::bad_request(format!(
                "df column {name:?} is not a column of the offline source (its columns: {})",
                source::column_list(schema)
            )));
        }
    }
    // A source column the push does not carry (one the views do not use, or `created`) is
    // null in the new rows, so a column written `not null` becomes nullable.
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut arrays = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        match columns.iter().find(|(c, _)| c == field.name()) {
            Some((name, values)) => {
                arrays.push(
                    array_of(field.data_type(), values)
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
    RecordBatch::try_new(schema, arrays).map_err(|e| Error::bad_request(e.to_string()))
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
            .append_local("data/pushed/", &table(), 2, &hints())
            .unwrap();
        assert_eq!(rows_in(&first), 2);
        // The next file takes the first one's schema; a missing column is null.
        let mut partial = table();
        partial.retain(|(c, _)| c != "zones");
        let second = appender
            .append_local("data/pushed", &partial, 2, &hints())
            .unwrap();
        assert_ne!(first, second);
        let (schema, _) = read_all(&second).unwrap();
        assert_eq!(schema, read_all(&first).unwrap().0);
        // A single file is rewritten with the rows appended.
        let file = appender
            .append_local("data/one.parquet", &table(), 2, &hints())
            .unwrap();
        appender
            .append_local("data/one.parquet", &table(), 2, &hints())
            .unwrap();
        assert_eq!(rows_in(&file), 4);
    }

    #[test]
    fn bad_rows_name_the_column_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let appender = ParquetAppender::new(dir.path());
        appender
            .append_local("data/one.parquet", &table(), 2, &hints())
            .unwrap();
        let mut bad = table();
        bad[2].1[1] = json!("fast");
        let err = appender
            .append_local("data/one.parquet", &bad, 2, &hints())
            .unwrap_err();
        assert!(
            err.message().contains("df column \"conv_rate\": row 1"),
            "{err}"
        );
        let mut extra = table();
        extra.push(("colour".into(), vec![json!("red"), json!("blue")]));
        let err = appender
            .append_local("data/one.parquet", &extra, 2, &hints())
            .unwrap_err();
        assert!(
            err.message().contains("\"colour\" is not a column"),
            "{err}"
        );
        assert_eq!(rows_in(&dir.path().join("data/one.parquet")), 2);
        assert!(
            appender
                .append_local("s3://bucket/x", &table(), 2, &hints())
                .is_err()
        );
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
        let first = append_object(&prefix, true, &table(), 2, &hints())
            .await
            .unwrap();
        let mut partial = table();
        partial.retain(|(c, _)| c != "zones");
        // Without the trailing slash, a key with parts under it is still a prefix.
        let second = append_object(&prefix, false, &partial, 2, &hints())
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
            let at = append_object(&one, false, &table(), 2, &hints())
                .await
                .unwrap();
            assert_eq!(at, "s3://bkt/data/one.parquet");
        }
        assert_eq!(object_rows(&store, "data/one.parquet").await.1, 6);

        // Bad rows write nothing.
        let mut bad = table();
        bad[0].1[1] = json!("two");
        let e = append_object(&one, false, &bad, 2, &hints())
            .await
            .unwrap_err();
        assert!(e.message().contains("driver_id"), "{e}");
        assert_eq!(object_rows(&store, "data/one.parquet").await.1, 6);
    }
}

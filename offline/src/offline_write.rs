//! The Flight APIs behind a push to the offline store through Feast's remote offline store
//! (`store.push(..., to=PushMode.OFFLINE | ONLINE_AND_OFFLINE)`, `write_to_offline_store`), as
//! Feast 0.67's `offline_server.py` answers them:
//!
//! - `get_table_column_names_and_types_from_data_source` (on `DoExchange`, or `DoPut` then
//!   `DoGet`): a table of the source's columns, `name` and `type` (pyarrow's type names), which
//!   the client checks its dataframe against before writing;
//! - `offline_write_batch` (on `DoPut`): the uploaded table appended to the feature view's batch
//!   source.
//!
//! and `validate_data_source` (on `DoPut`), which `feast apply` calls per batch source: like
//! Feast's file store, it only logs what is wrong with a source it knows.
//!
//! What they touch is resolved BY NAME in the server's registry: of the `DataSource` proto the
//! client sends, only its name and project are read (never its path, options or endpoint), and
//! the feature view's batch source is the registry's. A request cannot name a file.
//!
//! The append is [`ParquetAppender`]'s, the code a sidecar's `to: offline` push runs: the same
//! schema (the source's existing file, or the registry's types), the same column checks. Before
//! it, the table is checked against the view as a push is: at most `max_rows` rows; every join
//! key, the event time and every feature present and of a type that can hold the registry's.
//! Columns the view does not use are written when the source has them (Feast's client sends
//! exactly the source's columns).

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use quiver_core::fault::ErrorKind;
use quiver_core::model::{DataSource, FeatureView, SourceKind};
use quiver_core::registry::ProjectRegistry;
use serde_json::Value as Json;

use crate::Error;
use crate::append::{ColumnKind, ParquetAppender, Rows};
use crate::historical::{Entities, FeastError};
use crate::source::{self, Located};

/// Feast's name of the column-listing API.
pub const COLUMNS_API: &str = "get_table_column_names_and_types_from_data_source";
/// Feast's name of the write API.
pub const WRITE_API: &str = "offline_write_batch";
/// Feast's name of the check `feast apply` makes of each batch source.
pub const VALIDATE_API: &str = "validate_data_source";

/// Most rows one `offline_write_batch` may carry by default (a push's default limit).
pub const DEFAULT_MAX_ROWS: usize = 100_000;

/// The source a `DataSource` proto in a command names: its name, and its project when set.
/// The proto is the JSON text of Feast's `MessageToJson` (`str(data_source)`); nothing else of
/// it is used.
fn named_source(command: &Json) -> Result<(String, Option<String>), FeastError> {
    let bad = |why: &str| {
        FeastError::bad_request(format!(
            "parameter data_source_proto {why} (expected the JSON of a DataSource proto with a name)"
        ))
    };
    let text = command
        .get("data_source_proto")
        .and_then(Json::as_str)
        .ok_or_else(|| bad("is missing or not a string"))?;
    let proto: Json = serde_json::from_str(text).map_err(|_| bad("is not JSON"))?;
    let name = proto
        .get("name")
        .and_then(Json::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("has no name"))?;
    let project = proto
        .get("project")
        .and_then(Json::as_str)
        .filter(|p| !p.is_empty());
    Ok((name.to_owned(), project.map(str::to_owned)))
}

/// A data source by name: a registered one, or one a feature view carries; a push source
/// stands for its batch source.
fn source_by_name<'a>(registry: &'a ProjectRegistry, name: &str) -> Option<&'a DataSource> {
    let found = registry.data_source(name).or_else(|| {
        registry
            .feature_views
            .iter()
            .flat_map(|v| [v.batch_source.as_ref(), v.stream_source.as_ref()])
            .flatten()
            .flat_map(|s| match &s.kind {
                SourceKind::Push { batch_source } => [Some(s), Some(&**batch_source)],
                _ => [Some(s), None],
            })
            .flatten()
            .find(|s| s.name == name)
    })?;
    match &found.kind {
        SourceKind::Push { batch_source } => Some(&**batch_source),
        _ => Some(found),
    }
}

/// A file source's URI and S3 endpoint; `what` names it in the error for other kinds.
fn file_of<'a>(source: &'a DataSource, what: &str) -> Result<(&'a str, &'a str), FeastError> {
    match &source.kind {
        SourceKind::File {
            uri,
            s3_endpoint_override,
        } => Ok((uri, s3_endpoint_override)),
        _ => Err(FeastError::new(
            ErrorKind::Unprocessable,
            "FeastError",
            format!(
                "{what} is a {} source; quiver's offline store reads and writes file sources only",
                source.kind_name()
            ),
        )),
    }
}

/// The schema of a source's data: its first file's (Parquet or Arrow IPC; objects: Parquet).
async fn source_schema(
    uri: &str,
    endpoint: &str,
    repo_dir: &Path,
) -> Result<arrow_schema::SchemaRef, Error> {
    match source::locate(uri, endpoint, repo_dir).await? {
        Located::Local { files, .. } => {
            let (path, format) = files
                .first()
                .ok_or_else(|| Error::not_found(format!("source {uri}: it holds no data files")))?;
            let (path, format) = (path.clone(), *format);
            // A footer read: small, but file I/O, so off the async threads.
            let opened = tokio::task::spawn_blocking(move || source::open(&path, format, "", None))
                .await
                .map_err(|e| Error::internal(format!("reading the schema of {uri}: {e}")))??;
            Ok(opened.schema)
        }
        Located::Object { bucket, files, .. } => {
            let (meta, format) = files.first().ok_or_else(|| {
                Error::not_found(format!("source {uri}: it holds no data objects"))
            })?;
            if *format != source::Format::Parquet {
                return Err(Error::unprocessable(format!(
                    "source {uri}: only Parquet objects are read from object stores"
                )));
            }
            source::object_schema(&bucket, meta).await
        }
    }
}

/// `get_table_column_names_and_types_from_data_source`: the named source's columns and their
/// pyarrow type names, as a table `{name: string, type: string}`.
pub async fn source_columns(
    registry: &ProjectRegistry,
    repo_dir: &Path,
    command: &Json,
) -> Result<RecordBatch, FeastError> {
    let (name, project) = named_source(command)?;
    let not_found = || {
        FeastError::new(
            ErrorKind::NotFound,
            "DataSourceObjectNotFoundException",
            format!(
                "Data source {name} does not exist in project {}",
                project.as_deref().unwrap_or(&registry.project)
            ),
        )
    };
    if project.as_deref().is_some_and(|p| p != registry.project) {
        return Err(not_found());
    }
    let source = source_by_name(registry, &name).ok_or_else(not_found)?;
    let (uri, endpoint) = file_of(source, &format!("data source {name}"))?;
    let schema = source_schema(uri, endpoint, repo_dir)
        .await
        .map_err(|e| FeastError::from(e.context(format_args!("data source {name}"))))?;
    let names: StringArray = schema.fields().iter().map(|f| Some(f.name())).collect();
    let types: StringArray = schema
        .fields()
        .iter()
        .map(|f| Some(pyarrow_type(f.data_type())))
        .collect();
    RecordBatch::try_from_iter([
        ("name", Arc::new(names) as ArrayRef),
        ("type", Arc::new(types) as ArrayRef),
    ])
    .map_err(|e| FeastError::new(ErrorKind::Internal, "FeastError", e.to_string()))
}

/// `validate_data_source` (`feast apply` with a remote offline store): Feast's file store only
/// logs what it finds wrong (a missing file, no timestamp column) and never fails, so this does
/// the same for a source the registry has by that name. A source applied for the first time is
/// not known yet, and a path in the request is never read.
pub async fn validate_source(
    registry: &ProjectRegistry,
    repo_dir: &Path,
    command: &Json,
) -> Result<(), FeastError> {
    let (name, _) = named_source(command)?;
    let Some(source) = source_by_name(registry, &name) else {
        return Ok(());
    };
    if let SourceKind::File {
        uri,
        s3_endpoint_override,
    } = &source.kind
    {
        match source_schema(uri, s3_endpoint_override, repo_dir).await {
            Ok(schema) if schema.field_with_name(&source.timestamp_field).is_err() => {
                tracing::warn!(
                    "data source {name}: no timestamp column {:?} (columns: {})",
                    source.timestamp_field,
                    source::column_list(&schema)
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("data source {name}: {}", e.message()),
        }
    }
    Ok(())
}

/// `offline_write_batch`: the uploaded table appended to the named feature view's batch source
/// with `appender` (the sidecar's `to: offline` code). Returns where the rows went.
pub async fn write_batch(
    registry: &ProjectRegistry,
    appender: &Arc<ParquetAppender>,
    max_rows: usize,
    command: &Json,
    upload: Entities,
) -> Result<Option<String>, FeastError> {
    let names = command
        .get("feature_view_names")
        .and_then(Json::as_array)
        .filter(|a| a.len() == 1)
        .and_then(|a| a[0].as_str())
        .ok_or_else(|| {
            FeastError::bad_request(format!(
                "{WRITE_API}: parameter feature_view_names must be a list of one feature view name"
            ))
        })?;
    let view = registry
        .feature_view(names)
        .ok_or_else(|| FeastError::view_not_found(names, &registry.project))?;
    let rows = upload.rows();
    if rows > max_rows {
        return Err(FeastError::new(
            ErrorKind::TooLarge,
            "FeastError",
            format!("{rows} rows in the table; at most {max_rows} per {WRITE_API}"),
        ));
    }
    let source = view
        .batch_source
        .as_ref()
        .or(view.stream_source.as_ref())
        .map(|s| match &s.kind {
            SourceKind::Push { batch_source } => &**batch_source,
            _ => s,
        })
        .ok_or_else(|| {
            FeastError::new(
                ErrorKind::Unprocessable,
                "FeastError",
                format!("feature view {} has no batch source", view.name),
            )
        })?;
    let (uri, endpoint) = file_of(
        source,
        &format!("the batch source of feature view {}", view.name),
    )?;
    let batch = datafusion::arrow::compute::concat_batches(&upload.schema, &upload.batches)
        .map_err(|e| FeastError::bad_request(format!("{WRITE_API}: the table: {e}")))?;
    let (batch, hints) = check_table(registry, view, source, batch)?;
    if batch.num_rows() == 0 {
        return Ok(None);
    }
    let appender = Arc::clone(appender);
    let (uri, endpoint) = (uri.to_owned(), endpoint.to_owned());
    let view_name = view.name.clone();
    let written = tokio::task::spawn_blocking(move || {
        appender.append_rows(&uri, &endpoint, Rows::Arrow(&batch), &hints)
    })
    .await
    .map_err(|e| FeastError::new(ErrorKind::Internal, "FeastError", e.to_string()))?
    .map_err(|e| FeastError::from(e.context(format_args!("feature view {view_name}"))))?;
    Ok(Some(written))
}

/// The source column a (feature or join key) name is read from: Feast's client renames source
/// columns by the source's `field_mapping` before it uploads; the rows are written back under
/// the source's names.
fn source_column<'a>(source: &'a DataSource, name: &'a str) -> &'a str {
    source
        .field_mapping
        .iter()
        .find(|(_, to)| *to == name)
        .map_or(name, |(from, _)| from.as_str())
}

/// Checks the table against the view as a push is checked (every join key, the event time and
/// every feature present, each of a type that can hold the registry's), with its columns named
/// as the source names them; returns it and the type hints for the appender.
fn check_table(
    registry: &ProjectRegistry,
    view: &FeatureView,
    source: &DataSource,
    batch: RecordBatch,
) -> Result<(RecordBatch, Vec<(String, ColumnKind)>), FeastError> {
    // Undo the client's field mapping where the source column is not there under its own name.
    let schema = batch.schema();
    let renamed: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let original = source_column(source, f.name());
            if original != f.name() && schema.field_with_name(original).is_err() {
                f.as_ref().clone().with_name(original)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(
            renamed,
            schema.metadata().clone(),
        )),
        batch.columns().to_vec(),
    )
    .map_err(|e| FeastError::bad_request(format!("{WRITE_API}: the table: {e}")))?;
    let schema = batch.schema();
    let mut hints: Vec<(String, ColumnKind)> = Vec::new();
    let keys = crate::join_keys(registry, view)?;
    let typed = keys
        .iter()
        .map(|(n, t)| (n.as_str(), *t))
        .chain(view.features.iter().map(|f| (f.name.as_str(), f.dtype)));
    for (name, dtype) in typed {
        let column = source_column(source, name);
        let field = schema.field_with_name(column).map_err(|_| {
            FeastError::bad_request(format!(
                "df has no column {column:?}, which feature view {} needs",
                view.name
            ))
        })?;
        if !crate::convert::compatible(field.data_type(), dtype) {
            return Err(FeastError::bad_request(format!(
                "df column {column:?} is {}, which cannot hold {}'s type {dtype:?} (feature view {})",
                field.data_type(),
                name,
                view.name
            )));
        }
        hints.push((column.to_owned(), ColumnKind::Value(dtype)));
    }
    let times = std::iter::once((&source.timestamp_field, true)).chain(
        Some(&source.created_timestamp_column)
            .filter(|c| !c.is_empty())
            .map(|c| (c, false)),
    );
    for (column, required) in times {
        match schema.field_with_name(column) {
            Ok(field) if crate::convert::is_time_type(field.data_type()) => {}
            Ok(field) => {
                return Err(FeastError::bad_request(format!(
                    "df column {column:?} is {}, but it holds the event times of feature view {}: expected a timestamp",
                    field.data_type(),
                    view.name
                )));
            }
            Err(_) if required => {
                return Err(FeastError::bad_request(format!(
                    "df has no column {column:?}, which feature view {} needs",
                    view.name
                )));
            }
            Err(_) => continue,
        }
        hints.push((column.clone(), ColumnKind::Time));
    }
    Ok((batch, hints))
}

/// pyarrow's name of an Arrow type (`str(pa_type)`), which Feast's file source reports.
pub fn pyarrow_type(t: &DataType) -> String {
    use DataType as D;
    let unit = |u: &TimeUnit| match u {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    };
    let field = |f: &Field| {
        format!(
            "{}: {}{}",
            f.name(),
            pyarrow_type(f.data_type()),
            if f.is_nullable() { "" } else { " not null" }
        )
    };
    match t {
        D::Null => "null".into(),
        D::Boolean => "bool".into(),
        D::Int8 => "int8".into(),
        D::Int16 => "int16".into(),
        D::Int32 => "int32".into(),
        D::Int64 => "int64".into(),
        D::UInt8 => "uint8".into(),
        D::UInt16 => "uint16".into(),
        D::UInt32 => "uint32".into(),
        D::UInt64 => "uint64".into(),
        D::Float16 => "halffloat".into(),
        D::Float32 => "float".into(),
        D::Float64 => "double".into(),
        D::Utf8 => "string".into(),
        D::LargeUtf8 => "large_string".into(),
        D::Utf8View => "string_view".into(),
        D::Binary => "binary".into(),
        D::LargeBinary => "large_binary".into(),
        D::BinaryView => "binary_view".into(),
        D::FixedSizeBinary(n) => format!("fixed_size_binary[{n}]"),
        D::Date32 => "date32[day]".into(),
        D::Date64 => "date64[ms]".into(),
        D::Time32(u) => format!("time32[{}]", unit(u)),
        D::Time64(u) => format!("time64[{}]", unit(u)),
        D::Duration(u) => format!("duration[{}]", unit(u)),
        D::Timestamp(u, None) => format!("timestamp[{}]", unit(u)),
        D::Timestamp(u, Some(tz)) => format!("timestamp[{}, tz={tz}]", unit(u)),
        D::Decimal128(p, s) => format!("decimal128({p}, {s})"),
        D::Decimal256(p, s) => format!("decimal256({p}, {s})"),
        D::List(f) => format!("list<{}>", field(f)),
        D::LargeList(f) => format!("large_list<{}>", field(f)),
        D::FixedSizeList(f, n) => format!("fixed_size_list<{}>[{n}]", field(f)),
        D::Struct(fields) => format!(
            "struct<{}>",
            fields
                .iter()
                .map(|f| field(f.as_ref()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        D::Map(entries, _) => match entries.data_type() {
            D::Struct(kv) if kv.len() == 2 => format!(
                "map<{}, {}>",
                pyarrow_type(kv[0].data_type()),
                pyarrow_type(kv[1].data_type())
            ),
            other => format!("map<{}>", pyarrow_type(other)),
        },
        D::Dictionary(k, v) => format!(
            "dictionary<values={}, indices={}, ordered=0>",
            pyarrow_type(v),
            pyarrow_type(k)
        ),
        other => other.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyarrow_names_are_pyarrows() {
        let list = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
        let st = DataType::Struct(
            vec![
                Field::new("vehicle_type", DataType::Utf8, true),
                Field::new("rating", DataType::Utf8, true),
            ]
            .into(),
        );
        let cases = [
            (
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                "timestamp[ns, tz=UTC]",
            ),
            (
                DataType::Timestamp(TimeUnit::Microsecond, None),
                "timestamp[us]",
            ),
            (DataType::Float32, "float"),
            (DataType::Float64, "double"),
            (DataType::Int64, "int64"),
            (DataType::Utf8, "string"),
            (list, "list<item: int64>"),
            (st, "struct<vehicle_type: string, rating: string>"),
        ];
        for (t, name) in cases {
            assert_eq!(pyarrow_type(&t), name);
        }
    }

    #[test]
    fn a_source_is_named_by_its_proto_and_nothing_else_is_read() {
        let command = serde_json::json!({
            "data_source_proto": r#"{"type": "BATCH_FILE", "name": "stats", "project": "p",
                "fileOptions": {"uri": "/etc/passwd"}}"#,
        });
        assert_eq!(
            named_source(&command).unwrap(),
            ("stats".to_owned(), Some("p".to_owned()))
        );
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"data_source_proto": "not json"}),
            serde_json::json!({"data_source_proto": r#"{"fileOptions": {"uri": "x"}}"#}),
        ] {
            let e = named_source(&bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(e.message.contains("data_source_proto"), "{}", e.message);
        }
    }
}

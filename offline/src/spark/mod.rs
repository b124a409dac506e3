//! The Spark engine: historical retrieval and materialization's selection run on an existing
//! Spark through Spark Connect, for a repo whose `offline_store` is `type: spark`.
//!
//! - [`client`]: the Spark Connect session (gRPC ExecutePlan, Arrow IPC both ways).
//! - [`historical`]: the point-in-time join as Spark SQL, union-and-window (no rows × versions
//!   join), with quiver's rules; the result streamed back in entity-table order.
//! - [`materialize`]: the latest row per entity key in a window, one pass, optionally one shard
//!   of N; the winners go to quiver's own online-store writers.
//!
//! Sources: Feast's SparkSource (a table, a query, or a path with a format) and file sources
//! (Parquet or CSV, a file or a folder; local paths are resolved against the repo, `s3://`
//! becomes `s3a://` for Spark's Hadoop filesystems). A Spark failure is an error naming Spark's
//! cause; nothing falls back to the local engine.

pub mod client;
pub mod historical;
pub mod materialize;

pub(crate) mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/spark.connect.rs"));
}

use std::path::Path;

use arrow_schema::{DataType, Schema};
use quiver_core::ValueType;
use quiver_core::model::{DataSource, FeatureView, SourceKind};
use quiver_core::registry::ProjectRegistry;

pub use client::{SessionOptions, SparkError, SparkSession, SparkTarget};

use crate::Error;
use crate::source::{self, Format};

/// A Spark SQL identifier: backquoted, backquotes doubled.
pub(crate) fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A Spark SQL string literal.
pub(crate) fn string_lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// What a view reads, as Spark names it: the FROM item and how errors show it.
#[derive(Debug, Clone)]
pub(crate) struct SparkFrom {
    pub sql: String,
    pub shown: String,
    /// SQL to run in the session first (a temporary view over a CSV source).
    pub setup: Option<String>,
}

/// The view's batch source (a push source's batch source) as a Spark FROM item; `n` tells
/// this view's session objects apart from the others'.
pub(crate) fn source_from(
    view: &FeatureView,
    repo_dir: &Path,
    n: usize,
) -> Result<(DataSource, SparkFrom), Error> {
    let name = &view.name;
    let mut source = view
        .batch_source
        .as_ref()
        .ok_or_else(|| Error::unprocessable(format!("feature view {name} has no batch source")))?;
    if let SourceKind::Push { batch_source } = &source.kind {
        source = batch_source;
    }
    let from = match &source.kind {
        SourceKind::Spark {
            table,
            query,
            path,
            file_format,
            ..
        } => {
            if !table.is_empty() {
                SparkFrom {
                    sql: table.clone(),
                    shown: format!("table {table}"),
                    setup: None,
                }
            } else if !query.is_empty() {
                SparkFrom {
                    sql: format!("({query}) AS __quiver_query"),
                    shown: "its query".to_owned(),
                    setup: None,
                }
            } else if !path.is_empty() {
                let format = if file_format.is_empty() {
                    "parquet"
                } else {
                    file_format.as_str()
                };
                if !format
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(Error::unprocessable(format!(
                        "feature view {name}: source {}: file_format {format:?} is not a Spark data source name",
                        source.name
                    )));
                }
                let at = spark_path(path, repo_dir);
                SparkFrom {
                    sql: format!("{format}.{}", ident(&at)),
                    shown: at,
                    setup: None,
                }
            } else {
                return Err(Error::unprocessable(format!(
                    "feature view {name}: spark source {} has no table, query or path",
                    source.name
                )));
            }
        }
        SourceKind::File { uri, .. } => {
            let at = spark_path(uri, repo_dir);
            let format = match Format::of(Path::new(uri.trim_end_matches('/'))) {
                Some(Format::Parquet) | None => "parquet",
                Some(Format::Csv) => "csv",
                Some(Format::ArrowIpc) => {
                    return Err(Error::unprocessable(format!(
                        "feature view {name}: source {} is Arrow IPC ({uri}), which Spark does not read; use Parquet",
                        source.name
                    )));
                }
            };
            if format == "csv" {
                // As quiver reads CSV: a header row, types inferred.
                let view_name = format!("__quiver_csv_{n}");
                SparkFrom {
                    setup: Some(format!(
                        "CREATE OR REPLACE TEMPORARY VIEW {view_name} USING csv OPTIONS (path {}, header 'true', inferSchema 'true')",
                        string_lit(&at)
                    )),
                    sql: view_name,
                    shown: at,
                }
            } else {
                SparkFrom {
                    sql: format!("{format}.{}", ident(&at)),
                    shown: at,
                    setup: None,
                }
            }
        }
        _ => {
            return Err(Error::unprocessable(format!(
                "feature view {name}: its source {} is a {} source; the Spark engine reads spark and file sources",
                source.name,
                source.kind_name()
            )));
        }
    };
    if source.timestamp_field.is_empty() {
        return Err(Error::unprocessable(format!(
            "feature view {name}: source {} has no timestamp_field",
            source.name
        )));
    }
    Ok((source.clone(), from))
}

/// A path as Spark should read it: object URIs with Spark's Hadoop scheme (`s3a://`), local
/// paths absolute (relative ones are the repo's, as for quiver's file sources).
fn spark_path(path: &str, repo_dir: &Path) -> String {
    if let Some(rest) = path.strip_prefix("s3://") {
        return format!("s3a://{rest}");
    }
    if path.contains("://") {
        return path.to_owned();
    }
    let p = Path::new(path);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        repo_dir.join(p)
    };
    let abs = std::fs::canonicalize(&abs).unwrap_or(abs);
    abs.display().to_string()
}

/// One view's columns in its source, checked against the source's schema as Spark reads it.
#[derive(Debug, Clone)]
pub(crate) struct ViewColumns {
    /// Per join key: the view's join key, the source column, its declared type, and the type
    /// both sides are compared as (BIGINT, STRING or BINARY).
    pub keys: Vec<(String, String, ValueType, &'static str)>,
    pub ts: String,
    pub created: Option<String>,
    /// Source column per requested feature.
    pub features: Vec<String>,
}

/// The Spark SQL type keys of a declared type are compared as.
pub(crate) fn spark_key_type(t: ValueType) -> Option<&'static str> {
    match t {
        ValueType::Int32 | ValueType::Int64 => Some("BIGINT"),
        ValueType::String => Some("STRING"),
        ValueType::Bytes => Some("BINARY"),
        _ => None,
    }
}

pub(crate) fn is_time(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
    )
}

/// Resolves a view's columns (field mappings applied) and checks them against `schema`.
pub(crate) fn view_columns(
    registry: &ProjectRegistry,
    view: &FeatureView,
    source: &DataSource,
    features: &[String],
    schema: &Schema,
    shown: &str,
) -> Result<ViewColumns, Error> {
    let name = &view.name;
    let column_of = |feature: &str| -> String {
        source
            .field_mapping
            .iter()
            .find(|(_, to)| to.as_str() == feature)
            .map(|(from, _)| from.clone())
            .unwrap_or_else(|| feature.to_owned())
    };
    let field = |column: &str, role: &str| -> Result<DataType, Error> {
        schema
            .field_with_name(column)
            .map(|f| f.data_type().clone())
            .map_err(|_| {
                Error::unprocessable(format!(
                    "feature view {name}: source {shown} has no column {column:?} ({role}); its columns: {}",
                    source::column_list(schema)
                ))
            })
    };
    let mut keys = Vec::new();
    for (join_key, declared) in crate::join_keys(registry, view)? {
        let column = column_of(&join_key);
        let t = field(&column, "join key")?;
        let untyped = view.entities.iter().any(|e| {
            registry
                .entity(e)
                .is_some_and(|e| e.join_key == join_key && e.value_type == ValueType::Invalid)
        });
        let value_type = match (untyped, crate::historical::key_type_of_data(&t)) {
            (true, Some(v)) => v,
            _ => declared,
        };
        let spark = spark_key_type(value_type).ok_or_else(|| {
            Error::unprocessable(format!(
                "feature view {name}: join key {join_key} is of type {value_type}; the Spark engine joins on Int32, Int64, String and Bytes keys"
            ))
        })?;
        if !crate::convert::compatible(&t, value_type) {
            return Err(Error::unprocessable(format!(
                "feature view {name}: source {shown} column {column:?} (join key) is {t}, expected {value_type} values"
            )));
        }
        keys.push((join_key, column, value_type, spark));
    }
    let ts = column_of(&source.timestamp_field);
    let created = (!source.created_timestamp_column.is_empty())
        .then(|| column_of(&source.created_timestamp_column));
    for (column, role) in std::iter::once((ts.as_str(), "event timestamp"))
        .chain(created.as_deref().map(|c| (c, "created timestamp")))
    {
        let t = field(column, role)?;
        if !is_time(&t) {
            return Err(Error::unprocessable(format!(
                "feature view {name}: source {shown} column {column:?} ({role}) is {t}, expected a timestamp"
            )));
        }
    }
    let mut cols = Vec::new();
    for feature in features {
        let declared = view.feature(feature).map(|f| f.dtype).ok_or_else(|| {
            Error::not_found(format!("feature view {name} has no feature {feature:?}"))
        })?;
        let column = column_of(feature);
        let t = field(&column, "feature")?;
        if !crate::convert::compatible(&t, declared) {
            return Err(Error::unprocessable(format!(
                "feature view {name}: source {shown} column {column:?} is {t}, which cannot hold the feature's type {declared}"
            )));
        }
        cols.push(column);
    }
    Ok(ViewColumns {
        keys,
        ts,
        created,
        features: cols,
    })
}

/// A time column as BIGINT microseconds since the epoch (UTC: the session's time zone is UTC,
/// so naive timestamps are UTC, quiver's rule).
pub(crate) fn micros(column: &str) -> String {
    format!("unix_micros(CAST({} AS TIMESTAMP))", ident(column))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spark_targets_are_folders_spark_names_or_tables() {
        for (text, want) in [
            ("s3a://b/train/", SparkTarget::Path("s3a://b/train/".into())),
            ("/data/train", SparkTarget::Path("/data/train".into())),
            (
                "table:db.train_2026",
                SparkTarget::Table("db.train_2026".into()),
            ),
        ] {
            assert_eq!(SparkTarget::parse(text), Ok(want));
        }
        for (text, says) in [
            ("train/", "absolute path"),
            ("table:", "expected table:NAME"),
            ("table:a-b", "expected table:NAME"),
            ("table:db..t", "expected table:NAME"),
        ] {
            let e = SparkTarget::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(string_lit("it's \\"), "'it\\'s \\\\'");
        assert_eq!(spark_path("s3://b/k", Path::new("/r")), "s3a://b/k");
        assert_eq!(spark_path("gs://b/k", Path::new("/r")), "gs://b/k");
        assert_eq!(
            spark_path("/abs/x.parquet", Path::new("/r")),
            "/abs/x.parquet"
        );
        assert_eq!(
            spark_path("data/x.parquet", Path::new("/nowhere-r")),
            "/nowhere-r/data/x.parquet"
        );
    }
}

//! File sources: resolving a `FileSource` path to files, and scanning them as Arrow batches with
//! only the needed columns and, for Parquet, only the row groups whose event-time statistics
//! overlap the wanted window.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Schema, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;

use crate::Error;
use crate::convert::{self, Nanos};

/// Rows per decoded batch.
const BATCH_ROWS: usize = 16 * 1024;

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

/// The files of a source path: the file itself, or every data file under a folder (hive
/// partitions included), sorted. Relative paths are resolved against the repo, as Feast does.
pub fn resolve(uri: &str, repo_dir: &Path) -> Result<Vec<(PathBuf, Format)>, Error> {
    let local = uri.strip_prefix("file://").unwrap_or(uri);
    if local.contains("://") {
        return Err(Error::new(format!(
            "source {uri}: object-store sources (s3://, gs://, ...) are not supported yet; use a local path"
        )));
    }
    let path = repo_dir.join(local);
    let meta = std::fs::metadata(&path)
        .map_err(|e| Error::new(format!("source {}: {e}", path.display())))?;
    if meta.is_file() {
        // A single file is read whatever its extension says, as Parquet unless it says otherwise.
        return Ok(vec![(
            path.clone(),
            Format::of(&path).unwrap_or(Format::Parquet),
        )]);
    }
    let mut out = Vec::new();
    walk(&path, &mut out)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    if out.is_empty() {
        return Err(Error::new(format!(
            "source {}: the folder holds no .parquet, .arrow or .csv files",
            path.display()
        )));
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, Format)>) -> Result<(), Error> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::new(format!("source {}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::new(format!("source {}: {e}", dir.display())))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Spark's _SUCCESS, _committed_*, hidden files.
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let kind = entry
            .file_type()
            .map_err(|e| Error::new(format!("source {}: {e}", path.display())))?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if let Some(format) = Format::of(&path) {
            out.push((path, format));
        }
    }
    Ok(())
}

/// One file opened for a scan: its schema, and how many rows the scan will read.
pub struct OpenFile {
    pub path: PathBuf,
    pub format: Format,
    pub schema: SchemaRef,
    /// Rows in the row groups that overlap the window (all rows for non-Parquet files).
    pub rows: u64,
    row_groups: Option<Vec<usize>>,
}

/// Opens a file and reads its schema; for Parquet also selects the row groups whose `ts_column`
/// statistics overlap `[start, end]` (row groups without statistics are kept).
pub fn open(
    path: &Path,
    format: Format,
    ts_column: &str,
    window: Option<(Nanos, Nanos)>,
) -> Result<OpenFile, Error> {
    let fail = |e: &dyn std::fmt::Display| Error::new(format!("{}: {e}", path.display()));
    match format {
        Format::Parquet => {
            let file = File::open(path).map_err(|e| fail(&e))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| fail(&e))?;
            let schema = Arc::clone(builder.schema());
            let metadata = builder.metadata();
            let groups = metadata.row_groups();
            let mut keep: Vec<usize> = (0..groups.len()).collect();
            if let (Some((start, end)), Ok(field)) = (window, schema.field_with_name(ts_column))
                && convert::is_time_type(field.data_type())
                && let Ok(stats) =
                    StatisticsConverter::try_new(ts_column, &schema, builder.parquet_schema())
                && let (Ok(mins), Ok(maxs)) =
                    (stats.row_group_mins(groups), stats.row_group_maxes(groups))
            {
                keep.retain(|&g| {
                    let min = convert::time_at(mins.as_ref(), g);
                    let max = convert::time_at(maxs.as_ref(), g);
                    !(max.is_some_and(|m| m < start) || min.is_some_and(|m| m > end))
                });
            }
            let rows = keep
                .iter()
                .map(|&g| groups[g].num_rows().max(0) as u64)
                .sum();
            Ok(OpenFile {
                path: path.to_path_buf(),
                format,
                schema,
                rows,
                row_groups: Some(keep),
            })
        }
        Format::ArrowIpc => {
            let file = File::open(path).map_err(|e| fail(&e))?;
            let reader =
                arrow_ipc::reader::FileReader::try_new(file, None).map_err(|e| fail(&e))?;
            let schema = reader.schema();
            let mut rows = 0u64;
            for b in reader {
                rows += b.map_err(|e| fail(&e))?.num_rows() as u64;
            }
            Ok(OpenFile {
                path: path.to_path_buf(),
                format,
                schema,
                rows,
                row_groups: None,
            })
        }
        Format::Csv => Err(Error::new(format!(
            "{}: CSV sources are not supported by materialization yet; convert the file to Parquet",
            path.display()
        ))),
    }
}

impl OpenFile {
    /// Reads the file's batches with only `columns` (which must exist), calling `each` per
    /// batch; the batch's columns are in the order of `columns`.
    pub fn scan(
        &self,
        columns: &[String],
        mut each: impl FnMut(&RecordBatch) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let fail = |e: &dyn std::fmt::Display| Error::new(format!("{}: {e}", self.path.display()));
        let indices: Vec<usize> = columns
            .iter()
            .map(|c| {
                self.schema.index_of(c).map_err(|_| {
                    Error::new(format!(
                        "{}: no column {c:?} (columns: {})",
                        self.path.display(),
                        column_list(&self.schema)
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        match self.format {
            Format::Parquet => {
                let file = File::open(&self.path).map_err(|e| fail(&e))?;
                let builder =
                    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| fail(&e))?;
                let mut sorted = indices.clone();
                sorted.sort_unstable();
                sorted.dedup();
                let mask = ProjectionMask::roots(builder.parquet_schema(), sorted.iter().copied());
                let mut builder = builder.with_projection(mask).with_batch_size(BATCH_ROWS);
                if let Some(groups) = &self.row_groups {
                    builder = builder.with_row_groups(groups.clone());
                }
                let reader = builder.build().map_err(|e| fail(&e))?;
                let projected = self.schema.project(&sorted).map_err(|e| fail(&e))?;
                // Reorder from file order to the caller's order.
                let order: Vec<usize> = columns
                    .iter()
                    .map(|c| projected.index_of(c).unwrap_or(0))
                    .collect();
                for batch in reader {
                    let batch = batch.map_err(|e| fail(&e))?;
                    let batch = batch.project(&order).map_err(|e| fail(&e))?;
                    each(&batch)?;
                }
            }
            Format::ArrowIpc => {
                let file = File::open(&self.path).map_err(|e| fail(&e))?;
                let reader = arrow_ipc::reader::FileReader::try_new(file, Some(indices))
                    .map_err(|e| fail(&e))?;
                for batch in reader {
                    each(&batch.map_err(|e| fail(&e))?)?;
                }
            }
            Format::Csv => return Err(fail(&"CSV sources are not supported yet")),
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

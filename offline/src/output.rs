//! Writing a result stream to a file (Parquet, CSV or Arrow IPC, by extension) or to stdout as an
//! Arrow IPC stream, batch by batch: nothing is collected first.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::Error;
use crate::source::Format;

enum Sink {
    Parquet(ArrowWriter<BufWriter<File>>),
    Csv(datafusion::arrow::csv::Writer<BufWriter<File>>),
    Ipc(arrow_ipc::writer::FileWriter<BufWriter<File>>),
    Stream(arrow_ipc::writer::StreamWriter<BufWriter<std::io::Stdout>>),
}

/// Where a result goes: `-` is stdout (Arrow IPC stream).
pub struct Output {
    sink: Sink,
    shown: String,
}

impl Output {
    /// Creates the file (or takes stdout) for results of `schema`; the format comes from the
    /// extension: .parquet, .csv, .arrow/.feather/.ipc.
    pub fn create(path: &Path, schema: &SchemaRef) -> Result<Output, Error> {
        let shown = path.display().to_string();
        let fail = |e: &dyn std::fmt::Display| Error::new(format!("output {shown}: {e}"));
        if shown == "-" {
            let w =
                arrow_ipc::writer::StreamWriter::try_new(BufWriter::new(std::io::stdout()), schema)
                    .map_err(|e| fail(&e))?;
            return Ok(Output {
                sink: Sink::Stream(w),
                shown,
            });
        }
        let format = Format::of(path).ok_or_else(|| {
            fail(&"unknown format; name it .parquet, .csv or .arrow (or - for stdout)")
        })?;
        let file = || -> Result<BufWriter<File>, Error> {
            Ok(BufWriter::new(File::create(path).map_err(|e| fail(&e))?))
        };
        let sink = match format {
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                Sink::Parquet(
                    ArrowWriter::try_new(file()?, schema.clone(), Some(props))
                        .map_err(|e| fail(&e))?,
                )
            }
            Format::Csv => {
                if let Some(f) = schema.fields().iter().find(|f| f.data_type().is_nested()) {
                    return Err(fail(&format!(
                        "column {:?} is a {}, which CSV cannot hold; write .parquet or .arrow",
                        f.name(),
                        f.data_type()
                    )));
                }
                Sink::Csv(datafusion::arrow::csv::Writer::new(file()?))
            }
            Format::ArrowIpc => Sink::Ipc(
                arrow_ipc::writer::FileWriter::try_new(file()?, schema).map_err(|e| fail(&e))?,
            ),
        };
        Ok(Output { sink, shown })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        let shown = &self.shown;
        let fail = |e: &dyn std::fmt::Display| Error::new(format!("output {shown}: {e}"));
        match &mut self.sink {
            Sink::Parquet(w) => w.write(batch).map_err(|e| fail(&e)),
            Sink::Csv(w) => w.write(batch).map_err(|e| fail(&e)),
            Sink::Ipc(w) => w.write(batch).map_err(|e| fail(&e)),
            Sink::Stream(w) => w.write(batch).map_err(|e| fail(&e)),
        }
    }

    pub fn finish(self) -> Result<(), Error> {
        let shown = self.shown;
        let fail = |e: &dyn std::fmt::Display| Error::new(format!("output {shown}: {e}"));
        match self.sink {
            Sink::Parquet(w) => {
                w.close().map_err(|e| fail(&e))?;
            }
            Sink::Csv(w) => {
                w.into_inner().flush().map_err(|e| fail(&e))?;
            }
            Sink::Ipc(mut w) => {
                w.finish().map_err(|e| fail(&e))?;
                w.into_inner()
                    .map_err(|e| fail(&e))?
                    .flush()
                    .map_err(|e| fail(&e))?;
            }
            Sink::Stream(mut w) => {
                w.finish().map_err(|e| fail(&e))?;
                w.into_inner()
                    .map_err(|e| fail(&e))?
                    .flush()
                    .map_err(|e| fail(&e))?;
            }
        }
        Ok(())
    }
}

/// Drains `stream` into `out`, calling `progress` with the rows written so far.
pub async fn write_stream(
    mut stream: SendableRecordBatchStream,
    out: &mut Output,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, Error> {
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| Error::new(format!("historical retrieval: {e}")))?;
        out.write(&batch)?;
        rows += batch.num_rows() as u64;
        progress(rows);
    }
    Ok(rows)
}

//! Writing a result stream to a file (Parquet, CSV or Arrow IPC, by extension), to an object in
//! S3 or GCS, or to stdout as an Arrow IPC stream, batch by batch: nothing is collected first.
//!
//! An object is written to a local temporary file first and uploaded when the stream ends, in
//! parts of [`UPLOAD_PART`] bytes: Parquet's footer comes last, and an object store takes an
//! object whole or not at all, so a failed run leaves no partial object behind.

use std::fs::File;
use std::io::{BufWriter, Read as _, Write};
use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt as _, WriteMultipart};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::Error;
use crate::source::{self, Bucket, Format};

/// The size of each part of an upload to an object store (S3's minimum is 5 MiB).
pub const UPLOAD_PART: usize = 8 << 20;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

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
    /// For an object: where the local file goes when it is complete.
    upload: Option<Upload>,
}

struct Upload {
    bucket: Bucket,
    /// The local file, deleted when dropped.
    file: tempfile::TempPath,
}

impl Output {
    /// Creates the file (or takes stdout) for results of `schema`; the format comes from the
    /// extension: .parquet, .csv, .arrow/.feather/.ipc.
    pub fn create(path: &Path, schema: &SchemaRef) -> Result<Output, Error> {
        let shown = path.display().to_string();
        let ctx = format!("output {shown}");
        if shown == "-" {
            let w =
                arrow_ipc::writer::StreamWriter::try_new(BufWriter::new(std::io::stdout()), schema)
                    .map_err(|e| Error::wrap(&ctx, e))?;
            return Ok(Output {
                sink: Sink::Stream(w),
                shown,
                upload: None,
            });
        }
        let format = Format::of(path).ok_or_else(|| {
            Error::bad_request(format!(
                "{ctx}: unknown format; name it .parquet, .csv or .arrow (or - for stdout)"
            ))
        })?;
        let file = File::create(path).map_err(|e| Error::wrap(&ctx, e))?;
        Self::over(file, format, schema, shown)
    }

    /// Like [`Output::create`], and an `s3://` or `gs://` URI names an object to write (its
    /// client configured from the environment, as for the registry): the data goes to a local
    /// temporary file in `temp_dir` (the system's when `None`), uploaded by [`Output::finish`].
    pub fn create_at(
        location: &str,
        schema: &SchemaRef,
        temp_dir: Option<&Path>,
    ) -> Result<Output, Error> {
        const WHAT: &str = "output";
        let Some((uri, folder)) = source::object_uri(location, WHAT)? else {
            return Self::create(Path::new(location), schema);
        };
        if folder {
            return Err(Error::bad_request(format!(
                "output {location}: name an object ending in .parquet, .csv or .arrow, not a folder"
            )));
        }
        Self::create_object(Bucket::open(uri, "", WHAT)?, schema, temp_dir)
    }

    /// An output to `bucket.uri`'s object, on a given client: see [`Output::create_at`].
    pub fn create_object(
        bucket: Bucket,
        schema: &SchemaRef,
        temp_dir: Option<&Path>,
    ) -> Result<Output, Error> {
        let shown = bucket.uri.to_string();
        let ctx = format!("output {shown}");
        let format = Format::of(Path::new(&bucket.uri.key)).ok_or_else(|| {
            Error::bad_request(format!(
                "{ctx}: unknown format; name the object .parquet, .csv or .arrow"
            ))
        })?;
        let temp = match temp_dir {
            Some(dir) => tempfile::NamedTempFile::new_in(dir),
            None => tempfile::NamedTempFile::new(),
        }
        .map_err(|e| Error::wrap(format_args!("{ctx}: a local temporary file"), e))?;
        let (file, path) = temp.into_parts();
        let mut out = Self::over(file, format, schema, shown)?;
        out.upload = Some(Upload { bucket, file: path });
        Ok(out)
    }

    fn over(
        file: File,
        format: Format,
        schema: &SchemaRef,
        shown: String,
    ) -> Result<Output, Error> {
        let ctx = format!("output {shown}");
        let file = BufWriter::new(file);
        let sink = match format {
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                Sink::Parquet(
                    ArrowWriter::try_new(file, schema.clone(), Some(props))
                        .map_err(|e| Error::wrap(&ctx, e))?,
                )
            }
            Format::Csv => {
                if let Some(f) = schema.fields().iter().find(|f| f.data_type().is_nested()) {
                    return Err(Error::bad_request(format!(
                        "{ctx}: column {:?} is a {}, which CSV cannot hold; write .parquet or .arrow",
                        f.name(),
                        f.data_type()
                    )));
                }
                Sink::Csv(datafusion::arrow::csv::Writer::new(file))
            }
            Format::ArrowIpc => Sink::Ipc(
                arrow_ipc::writer::FileWriter::try_new(file, schema)
                    .map_err(|e| Error::wrap(&ctx, e))?,
            ),
        };
        Ok(Output {
            sink,
            shown,
            upload: None,
        })
    }

    /// Whether [`Output::finish`] uploads the file to an object store.
    pub fn uploads(&self) -> bool {
        self.upload.is_some()
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        let shown = &self.shown;
        let ctx = format!("output {shown}");
        match &mut self.sink {
            Sink::Parquet(w) => w.write(batch).map_err(|e| Error::wrap(&ctx, e)),
            Sink::Csv(w) => w.write(batch).map_err(|e| Error::wrap(&ctx, e)),
            Sink::Ipc(w) => w.write(batch).map_err(|e| Error::wrap(&ctx, e)),
            Sink::Stream(w) => w.write(batch).map_err(|e| Error::wrap(&ctx, e)),
        }
    }

    /// Completes the file (Parquet's footer, the IPC end marker) and, for an object, uploads it.
    pub async fn finish(self) -> Result<(), Error> {
        let shown = self.shown;
        let ctx = format!("output {shown}");
        match self.sink {
            Sink::Parquet(w) => {
                w.close().map_err(|e| Error::wrap(&ctx, e))?;
            }
            Sink::Csv(w) => {
                w.into_inner().flush().map_err(|e| Error::wrap(&ctx, e))?;
            }
            Sink::Ipc(mut w) => {
                w.finish().map_err(|e| Error::wrap(&ctx, e))?;
                w.into_inner()
                    .map_err(|e| Error::wrap(&ctx, e))?
                    .flush()
                    .map_err(|e| Error::wrap(&ctx, e))?;
            }
            Sink::Stream(mut w) => {
                w.finish().map_err(|e| Error::wrap(&ctx, e))?;
                w.into_inner()
                    .map_err(|e| Error::wrap(&ctx, e))?
                    .flush()
                    .map_err(|e| Error::wrap(&ctx, e))?;
            }
        }
        match self.upload {
            Some(upload) => upload.send().await,
            None => Ok(()),
        }
    }
}

impl Upload {
    /// Puts the local file in its object, in parts; on failure the upload is aborted, so
    /// nothing is left behind.
    async fn send(self) -> Result<(), Error> {
        let bucket = &self.bucket;
        let ctx = format!("output {} ({})", bucket.uri, bucket.endpoint);
        let path = ObjectPath::parse(&bucket.uri.key)
            .map_err(|e| Error::bad_request(format!("{ctx}: not a valid object key: {e}")))?;
        let mut file = File::open(&self.file).map_err(|e| Error::wrap(&ctx, e))?;
        let multipart = bucket
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| Error::wrap(&ctx, e))?;
        // WriteMultipart gathers what it is given into parts of UPLOAD_PART bytes.
        let mut upload = WriteMultipart::new_with_chunk_size(multipart, UPLOAD_PART);
        let mut chunk = vec![0u8; 1 << 20];
        let sent: Result<(), Error> = async {
            loop {
                // Local reads of a MiB from the page cache: short enough to do in place.
                let n = match file.read(&mut chunk) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::wrap(&ctx, e)),
                };
                upload
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| Error::wrap(&ctx, e))?;
                upload.write(&chunk[..n]);
            }
        }
        .await;
        match sent {
            Ok(()) => upload
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| Error::wrap(&ctx, e)),
            Err(e) => {
                let _ = upload.abort().await;
                Err(e)
            }
        }
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
        let batch = batch.map_err(|e| Error::query("historical retrieval", e))?;
        out.write(&batch)?;
        rows += batch.num_rows() as u64;
        progress(rows);
    }
    Ok(rows)
}

//! The offline side's error: what went wrong, with a message that names the view, file, column
//! or URI at fault, and whose fault it is ([`Classified`]).
//!
//! Failures of the libraries underneath keep their error values (`DataFusionError`,
//! `object_store::Error`, `std::io::Error`, the online store's `StoreError`) so the kind is read
//! off the variant, never off the message: DataFusion's `ResourcesExhausted` is this process
//! out of memory, an object store's connect failure is an unreachable upstream, its `NotFound`
//! a missing object.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::parquet::errors::ParquetError;
use object_store::client::HttpErrorKind;
use quiver_core::fault::{Classified, ErrorKind, Severity};
use quiver_online_store::StoreError;

/// An offline failure, with a message that names the view, file or column at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed: a missing or mistyped parameter, an entity table without the
    /// columns the views need, a path outside the repo.
    #[error("{0}")]
    BadRequest(String),
    /// The request names a view, feature, feature service, entity, file or object that does
    /// not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is well-formed but the definitions or the data cannot answer it as they
    /// stand: a view without a batch source, a source column of the wrong type, a file in a
    /// format quiver does not read, a window the view has no data for.
    #[error("{0}")]
    Unprocessable(String),
    /// This process's memory budget cannot hold the work, however it is split.
    #[error("{0}")]
    OutOfResources(String),
    /// A write lost to concurrent writers every time it was retried.
    #[error("{0}")]
    Conflict(String),
    /// An object store (S3, GCS) failed, refused, or could not be reached.
    #[error("{context}: {source}")]
    ObjectStore {
        /// What was being read or written, and where: `source s3://b/k (http://minio:9000)`.
        context: String,
        #[source]
        source: object_store::Error,
    },
    /// A local file or folder could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// The file and what was being done with it.
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A Parquet file could not be decoded or encoded.
    #[error("{context}: {source}")]
    Parquet {
        /// The file.
        context: String,
        #[source]
        source: ParquetError,
    },
    /// Arrow could not convert or encode a column.
    #[error("{context}: {source}")]
    Arrow {
        /// The table or column.
        context: String,
        #[source]
        source: ArrowError,
    },
    /// The query engine failed; the kind comes from DataFusion's variant.
    #[error("{context}: {source}")]
    Query {
        /// The view or table being read or joined.
        context: String,
        #[source]
        source: DataFusionError,
    },
    /// The online store failed while materialization wrote to it.
    #[error("{context}: {source}")]
    OnlineStore {
        /// The view being written.
        context: String,
        #[source]
        source: StoreError,
    },
    /// The registry could not be read or written.
    #[error("{context}: {source}")]
    Transform {
        context: String,
        #[source]
        source: quiver_transform::TransformError,
    },
    /// Spark (through Spark Connect) failed, refused the plan, or could not be reached.
    #[error("{context}: {source}")]
    Spark {
        context: String,
        #[source]
        source: crate::spark::SparkError,
    },
    #[error("{message}")]
    Registry { message: String, kind: ErrorKind },
    /// The upload memory budget (`crate::budget`) cannot hold the request now, or at all.
    #[error(transparent)]
    Budget(#[from] crate::budget::BudgetError),
    /// A bug: an invariant of quiver's own plans does not hold.
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    /// The whole message, as `Display` writes it.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The message for a caller: as [`Error::message`], except that an object store's own
    /// words (what the store answered, which an endpoint named in a definition controls) are
    /// replaced by the kind of failure, wherever the store's error sits in the chain (directly,
    /// or under DataFusion, Parquet or Arrow); the whole message belongs in the log.
    pub fn public_message(&self) -> String {
        let (context, store) = match self {
            Error::ObjectStore { context, source } => (context, Some(source)),
            Error::Query { context, source } => (context, store_error_in(source)),
            Error::Parquet { context, source } => (context, store_error_in(source)),
            Error::Arrow { context, source } => (context, store_error_in(source)),
            _ => return self.to_string(),
        };
        let Some(source) = store else {
            return self.to_string();
        };
        use object_store::Error as E;
        let what = match source {
            E::NotFound { .. } => "not found",
            E::PermissionDenied { .. } => "permission denied by the store",
            E::Unauthenticated { .. } => "not authenticated (credentials)",
            E::Precondition { .. } | E::AlreadyExists { .. } | E::NotModified { .. } => {
                "changed by another writer"
            }
            E::InvalidPath { .. } => "not a valid object path",
            E::NotSupported { .. } | E::NotImplemented { .. } => {
                "an operation the store does not support"
            }
            _ => "the store failed or could not be reached",
        };
        format!("{context}: {what} (details in the server's log)")
    }

    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::BadRequest(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Error::NotFound(message.into())
    }

    pub fn unprocessable(message: impl Into<String>) -> Error {
        Error::Unprocessable(message.into())
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::Internal(message.into())
    }

    /// `cause` while doing `context` (the file, object or view): the message is
    /// `{context}: {cause}`, the kind is the cause's.
    pub fn wrap(context: impl std::fmt::Display, cause: impl Cause) -> Error {
        cause.in_context(context.to_string())
    }

    /// The same error, its message prefixed with `prefix: ` (the view or file it concerns).
    pub fn context(self, prefix: impl std::fmt::Display) -> Error {
        let pre = |m: String| format!("{prefix}: {m}");
        match self {
            Error::BadRequest(m) => Error::BadRequest(pre(m)),
            Error::NotFound(m) => Error::NotFound(pre(m)),
            Error::Unprocessable(m) => Error::Unprocessable(pre(m)),
            Error::Conflict(m) => Error::Conflict(pre(m)),
            Error::OutOfResources(m) => Error::OutOfResources(pre(m)),
            Error::Internal(m) => Error::Internal(pre(m)),
            Error::Budget(b) => Error::Budget(b),
            Error::Registry { message, kind } => Error::Registry {
                message: pre(message),
                kind,
            },
            Error::ObjectStore { context, source } => Error::ObjectStore {
                context: pre(context),
                source,
            },
            Error::Io { context, source } => Error::Io {
                context: pre(context),
                source,
            },
            Error::Parquet { context, source } => Error::Parquet {
                context: pre(context),
                source,
            },
            Error::Arrow { context, source } => Error::Arrow {
                context: pre(context),
                source,
            },
            Error::Query { context, source } => Error::Query {
                context: pre(context),
                source,
            },
            Error::OnlineStore { context, source } => Error::OnlineStore {
                context: pre(context),
                source,
            },
            Error::Transform { context, source } => Error::Transform {
                context: pre(context),
                source,
            },
            Error::Spark { context, source } => Error::Spark {
                context: pre(context),
                source,
            },
        }
    }

    /// A query-engine failure while doing `context`.
    pub fn query(context: impl Into<String>, source: DataFusionError) -> Error {
        Error::Query {
            context: context.into(),
            source,
        }
    }

    /// An object-store failure while doing `context`.
    pub fn object_store(context: impl Into<String>, source: object_store::Error) -> Error {
        Error::ObjectStore {
            context: context.into(),
            source,
        }
    }

    /// A local I/O failure while doing `context`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn parquet(context: impl Into<String>, source: ParquetError) -> Error {
        Error::Parquet {
            context: context.into(),
            source,
        }
    }

    pub fn arrow(context: impl Into<String>, source: ArrowError) -> Error {
        Error::Arrow {
            context: context.into(),
            source,
        }
    }
}

/// A library error that becomes an [`Error`] with a context: see [`Error::wrap`].
pub trait Cause {
    fn in_context(self, context: String) -> Error;
}

impl Cause for std::io::Error {
    fn in_context(self, context: String) -> Error {
        Error::Io {
            context,
            source: self,
        }
    }
}

impl Cause for ParquetError {
    fn in_context(self, context: String) -> Error {
        Error::Parquet {
            context,
            source: self,
        }
    }
}

impl Cause for ArrowError {
    fn in_context(self, context: String) -> Error {
        Error::Arrow {
            context,
            source: self,
        }
    }
}

impl Cause for DataFusionError {
    fn in_context(self, context: String) -> Error {
        Error::Query {
            context,
            source: self,
        }
    }
}

impl Cause for object_store::Error {
    fn in_context(self, context: String) -> Error {
        Error::ObjectStore {
            context,
            source: self,
        }
    }
}

impl Cause for StoreError {
    fn in_context(self, context: String) -> Error {
        Error::OnlineStore {
            context,
            source: self,
        }
    }
}

impl Cause for quiver_transform::TransformError {
    fn in_context(self, context: String) -> Error {
        Error::Transform {
            context,
            source: self,
        }
    }
}

impl Cause for crate::spark::SparkError {
    fn in_context(self, context: String) -> Error {
        Error::Spark {
            context,
            source: self,
        }
    }
}

impl Cause for Error {
    fn in_context(self, context: String) -> Error {
        self.context(context)
    }
}

/// The object store's error in `e`'s chain of sources, if any.
fn store_error_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a object_store::Error> {
    let mut at = Some(e);
    while let Some(err) = at {
        if let Some(store) = err.downcast_ref::<object_store::Error>() {
            return Some(store);
        }
        at = err.source();
    }
    None
}

impl Classified for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::BadRequest(_) => ErrorKind::BadRequest,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Unprocessable(_) => ErrorKind::Unprocessable,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::OutOfResources(_) => ErrorKind::OutOfResources,
            Error::ObjectStore { source, .. } => object_store_kind(source),
            Error::Io { source, .. } => io_kind(source),
            Error::Parquet { source, .. } => parquet_kind(source),
            Error::Arrow { source, .. } => arrow_kind(source),
            Error::Query { source, .. } => datafusion_kind(source),
            Error::OnlineStore { source, .. } => source.kind(),
            Error::Transform { source, .. } => source.kind(),
            Error::Spark { source, .. } => source.kind(),
            Error::Registry { kind, .. } => *kind,
            Error::Internal(_) => ErrorKind::Internal,
            Error::Budget(b) => b.kind(),
        }
    }
}

/// Logs a failed request as loudly as its kind says: the caller's mistakes at debug, an
/// upstream's or a resource limit at warn, bugs at error.
pub(crate) fn log(kind: ErrorKind, what: &str, message: &str) {
    let kind_name = kind.name();
    match kind.severity() {
        Severity::Debug => tracing::debug!(kind = kind_name, error = message, "{what}"),
        Severity::Warn => tracing::warn!(kind = kind_name, error = message, "{what}"),
        Severity::Error => tracing::error!(kind = kind_name, error = message, "{what}"),
    }
}

/// DataFusion's variants: memory exhausted is this process's limit, I/O and object stores are
/// classified as themselves, bad data in a file is the data's fault, the rest are bugs in the
/// plans quiver builds.
pub fn datafusion_kind(e: &DataFusionError) -> ErrorKind {
    match e {
        DataFusionError::ResourcesExhausted(_) => ErrorKind::OutOfResources,
        DataFusionError::ObjectStore(e) => object_store_kind(e),
        DataFusionError::IoError(e) => io_kind(e),
        DataFusionError::ArrowError(e, _) => arrow_kind(e),
        DataFusionError::ParquetError(e) => parquet_kind(e),
        DataFusionError::External(e) => boxed_kind(e.as_ref()),
        DataFusionError::Context(_, e) | DataFusionError::Diagnostic(_, e) => datafusion_kind(e),
        DataFusionError::Shared(e) => datafusion_kind(e),
        DataFusionError::Collection(errors) => {
            errors.first().map_or(ErrorKind::Internal, datafusion_kind)
        }
        // A schema that does not fit (a listing whose files disagree, a column missing from a
        // file): the data's fault.
        DataFusionError::SchemaError(..) => ErrorKind::Unprocessable,
        DataFusionError::NotImplemented(_)
        | DataFusionError::Internal(_)
        | DataFusionError::Plan(_)
        | DataFusionError::Configuration(_)
        | DataFusionError::Execution(_)
        | DataFusionError::ExecutionJoin(_)
        | DataFusionError::Substrait(_)
        | DataFusionError::Ffi(_) => ErrorKind::Internal,
        #[allow(unreachable_patterns)] // variants behind DataFusion features quiver leaves off
        _ => ErrorKind::Internal,
    }
}

/// An object store's failure: a missing object is `NotFound`; refused credentials are the
/// store's configuration (an upstream answer, not the caller's); transport failures by
/// object_store's own `HttpErrorKind` (connect → unreachable, timeout → timeout).
pub fn object_store_kind(e: &object_store::Error) -> ErrorKind {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::InvalidPath { .. } => ErrorKind::BadRequest,
        E::AlreadyExists { .. } | E::Precondition { .. } | E::NotModified { .. } => {
            ErrorKind::Conflict
        }
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => ErrorKind::UpstreamFailed,
        E::Generic { source, .. } => boxed_kind(source.as_ref()),
        E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. }
        | E::JoinError { .. } => ErrorKind::Internal,
        _ => ErrorKind::UpstreamFailed,
    }
}

/// An error carried as a trait object (DataFusion's `External`, object_store's `Generic`): the
/// first error in its source chain whose type is known decides.
fn boxed_kind(e: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(e) = current {
        if let Some(e) = e.downcast_ref::<Error>() {
            return e.kind();
        }
        if let Some(e) = e.downcast_ref::<DataFusionError>() {
            return datafusion_kind(e);
        }
        if let Some(e) = e.downcast_ref::<object_store::Error>() {
            return object_store_kind(e);
        }
        if let Some(e) = e.downcast_ref::<object_store::client::HttpError>() {
            return match e.kind() {
                HttpErrorKind::Connect | HttpErrorKind::Request | HttpErrorKind::Interrupted => {
                    ErrorKind::Unavailable
                }
                HttpErrorKind::Timeout => ErrorKind::Timeout,
                _ => ErrorKind::UpstreamFailed,
            };
        }
        if let Some(e) = e.downcast_ref::<ArrowError>() {
            return arrow_kind(e);
        }
        if let Some(e) = e.downcast_ref::<ParquetError>() {
            return parquet_kind(e);
        }
        if let Some(e) = e.downcast_ref::<std::io::Error>() {
            return io_kind(e);
        }
        if let Some(e) = e.downcast_ref::<StoreError>() {
            return e.kind();
        }
        current = e.source();
    }
    // An object store's error with no transport error under it: the store answered with
    // one (a 5xx after retries, a body that did not parse).
    ErrorKind::UpstreamFailed
}

/// Local I/O: a full disk or memory is this process's limit; a missing file is not found.
pub fn io_kind(e: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as Io;
    match e.kind() {
        Io::NotFound => ErrorKind::NotFound,
        Io::StorageFull | Io::OutOfMemory | Io::QuotaExceeded | Io::FileTooLarge => {
            ErrorKind::OutOfResources
        }
        Io::TimedOut => ErrorKind::Timeout,
        Io::ConnectionRefused
        | Io::ConnectionReset
        | Io::ConnectionAborted
        | Io::NotConnected
        | Io::HostUnreachable
        | Io::NetworkUnreachable => ErrorKind::Unavailable,
        Io::InvalidData | Io::UnexpectedEof => ErrorKind::Unprocessable,
        _ => match e.get_ref() {
            Some(inner) => match boxed_kind(inner) {
                ErrorKind::UpstreamFailed => ErrorKind::Internal,
                kind => kind,
            },
            None => ErrorKind::Internal,
        },
    }
}

/// Arrow: values that do not cast or parse are the data's fault; memory is this process's.
pub fn arrow_kind(e: &ArrowError) -> ErrorKind {
    match e {
        ArrowError::ExternalError(e) => boxed_kind(e.as_ref()),
        ArrowError::IoError(_, e) => io_kind(e),
        ArrowError::MemoryError(_) => ErrorKind::OutOfResources,
        ArrowError::CastError(_)
        | ArrowError::ParseError(_)
        | ArrowError::CsvError(_)
        | ArrowError::JsonError(_)
        | ArrowError::IpcError(_)
        | ArrowError::ParquetError(_)
        | ArrowError::SchemaError(_) => ErrorKind::Unprocessable,
        _ => ErrorKind::Internal,
    }
}

/// Parquet: a file that does not decode is the data's fault.
pub fn parquet_kind(e: &ParquetError) -> ErrorKind {
    match e {
        ParquetError::External(e) => boxed_kind(e.as_ref()),
        ParquetError::General(_)
        | ParquetError::EOF(_)
        | ParquetError::ArrowError(_)
        | ParquetError::IndexOutOfBound(..)
        | ParquetError::NeedMoreData(_)
        | ParquetError::NeedMoreDataRange(_) => ErrorKind::Unprocessable,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_are_classified_by_variant() {
        let exhausted = DataFusionError::ResourcesExhausted("sort: 10 MB".into());
        assert_eq!(datafusion_kind(&exhausted), ErrorKind::OutOfResources);
        let wrapped = DataFusionError::Context("x".into(), Box::new(exhausted));
        assert_eq!(datafusion_kind(&wrapped), ErrorKind::OutOfResources);
        let missing = object_store::Error::NotFound {
            path: "k".into(),
            source: "gone".into(),
        };
        assert_eq!(object_store_kind(&missing), ErrorKind::NotFound);
        let external = DataFusionError::External(Box::new(missing));
        assert_eq!(datafusion_kind(&external), ErrorKind::NotFound);
        let refused = object_store::Error::Generic {
            store: "S3",
            source: Box::new(object_store::client::HttpError::new(
                HttpErrorKind::Connect,
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            )),
        };
        assert_eq!(object_store_kind(&refused), ErrorKind::Unavailable);
        assert_eq!(
            datafusion_kind(&DataFusionError::Internal("bug".into())),
            ErrorKind::Internal
        );
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert_eq!(
            datafusion_kind(&DataFusionError::IoError(full)),
            ErrorKind::OutOfResources
        );
        let ours = DataFusionError::External(Box::new(Error::bad_request("no")));
        assert_eq!(datafusion_kind(&ours), ErrorKind::BadRequest);
    }
}

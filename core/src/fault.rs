//! Whose fault an error is, and what every protocol makes of that: the one table that turns an
//! error's [`ErrorKind`] into an HTTP status, a gRPC code and a log level.
//!
//! Every crate's error enum says, per variant, which kind it is (`fn kind(&self) -> ErrorKind`);
//! servers never choose a status by hand or by matching message text. The split follows
//! DataFusion's and pingora's: expected failures of the caller or of an upstream are ordinary,
//! `Internal` means a bug in quiver and is logged loudly.

/// Who is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The request (or the definitions, or the data it names) is wrong; retrying it unchanged
    /// fails the same way.
    Caller,
    /// Something quiver depends on failed or is unreachable: the online store, an object store,
    /// the registry service, a model server. Retrying later may succeed.
    Upstream,
    /// A bug in quiver, or a limit of this process (memory, disk) that no request fixes.
    Internal,
}

/// What went wrong, at the granularity a protocol can express.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Malformed or invalid input (400 / INVALID_ARGUMENT).
    BadRequest,
    /// No credentials, or wrong ones (401 / UNAUTHENTICATED).
    Unauthorized,
    /// A named object does not exist (404 / NOT_FOUND).
    NotFound,
    /// The client did not send its request in time (408 / DEADLINE_EXCEEDED).
    RequestTimeout,
    /// The method is not allowed on this path (405 / UNIMPLEMENTED).
    MethodNotAllowed,
    /// The request conflicts with the current state, e.g. a stale base version (409 / ABORTED).
    Conflict,
    /// The request is larger than a configured limit (413 / RESOURCE_EXHAUSTED).
    TooLarge,
    /// The request is well-formed but cannot be processed as it stands (422 / FAILED_PRECONDITION).
    Unprocessable,
    /// An upstream answered with an error or with data that does not decode (502 / UNAVAILABLE).
    UpstreamFailed,
    /// An upstream cannot be reached, or this server is not ready (503 / UNAVAILABLE).
    Unavailable,
    /// An upstream did not answer within the deadline (504 / DEADLINE_EXCEEDED).
    Timeout,
    /// This process ran out of memory or disk for the request (507 / RESOURCE_EXHAUSTED).
    OutOfResources,
    /// The server's shared budget (e.g. memory for uploads) is taken by other requests; retry
    /// later (503 / RESOURCE_EXHAUSTED).
    Overloaded,
    /// This server, as configured, does not do what the request asks, e.g. a push to the offline
    /// store with no offline writer (501 / UNIMPLEMENTED).
    NotImplemented,
    /// A bug (500 / INTERNAL).
    Internal,
}

/// How loudly an error is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The caller's mistake: worth a debug line, not an operator's attention.
    Debug,
    /// An upstream or resource problem an operator may need to act on.
    Warn,
    /// A bug.
    Error,
}

impl ErrorKind {
    pub fn fault(self) -> Fault {
        match self {
            ErrorKind::BadRequest
            | ErrorKind::Unauthorized
            | ErrorKind::NotFound
            | ErrorKind::MethodNotAllowed
            | ErrorKind::RequestTimeout
            | ErrorKind::Conflict
            | ErrorKind::TooLarge
            | ErrorKind::Unprocessable => Fault::Caller,
            ErrorKind::UpstreamFailed | ErrorKind::Unavailable | ErrorKind::Timeout => {
                Fault::Upstream
            }
            ErrorKind::OutOfResources
            | ErrorKind::Overloaded
            | ErrorKind::NotImplemented
            | ErrorKind::Internal => Fault::Internal,
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::Conflict => 409,
            ErrorKind::TooLarge => 413,
            ErrorKind::Unprocessable => 422,
            ErrorKind::Internal => 500,
            ErrorKind::NotImplemented => 501,
            ErrorKind::UpstreamFailed => 502,
            ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
            ErrorKind::OutOfResources => 507,
            ErrorKind::Overloaded => 503,
        }
    }

    /// The gRPC status code (the numbers of `google.rpc.Code`, as `tonic::Code::from_i32` takes
    /// them), so this crate needs no gRPC dependency.
    pub fn grpc_code(self) -> i32 {
        match self {
            ErrorKind::BadRequest => 3,                          // INVALID_ARGUMENT
            ErrorKind::Timeout | ErrorKind::RequestTimeout => 4, // DEADLINE_EXCEEDED
            ErrorKind::NotFound => 5,                            // NOT_FOUND
            ErrorKind::TooLarge | ErrorKind::OutOfResources | ErrorKind::Overloaded => 8, // RESOURCE_EXHAUSTED
            ErrorKind::Unprocessable => 9, // FAILED_PRECONDITION
            ErrorKind::Conflict => 10,     // ABORTED
            ErrorKind::MethodNotAllowed | ErrorKind::NotImplemented => 12, // UNIMPLEMENTED
            ErrorKind::Internal => 13,     // INTERNAL
            ErrorKind::UpstreamFailed | ErrorKind::Unavailable => 14, // UNAVAILABLE
            ErrorKind::Unauthorized => 16, // UNAUTHENTICATED
        }
    }

    pub fn severity(self) -> Severity {
        match self.fault() {
            Fault::Caller => Severity::Debug,
            Fault::Upstream => Severity::Warn,
            Fault::Internal => match self {
                ErrorKind::OutOfResources | ErrorKind::Overloaded | ErrorKind::NotImplemented => {
                    Severity::Warn
                }
                _ => Severity::Error,
            },
        }
    }

    /// A stable name for the kind, for error bodies and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "BadRequest",
            ErrorKind::Unauthorized => "Unauthorized",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::MethodNotAllowed => "MethodNotAllowed",
            ErrorKind::RequestTimeout => "RequestTimeout",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::TooLarge => "TooLarge",
            ErrorKind::Unprocessable => "Unprocessable",
            ErrorKind::UpstreamFailed => "UpstreamFailed",
            ErrorKind::Unavailable => "Unavailable",
            ErrorKind::Timeout => "Timeout",
            ErrorKind::OutOfResources => "OutOfResources",
            ErrorKind::Overloaded => "Overloaded",
            ErrorKind::NotImplemented => "NotImplemented",
            ErrorKind::Internal => "Internal",
        }
    }
}

/// An error that knows its kind. Implemented by every crate's error enum, so servers turn any
/// of them into a response the same way.
pub trait Classified: std::error::Error {
    fn kind(&self) -> ErrorKind;
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorKind; 15] = [
        ErrorKind::RequestTimeout,
        ErrorKind::BadRequest,
        ErrorKind::Unauthorized,
        ErrorKind::NotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::Conflict,
        ErrorKind::TooLarge,
        ErrorKind::Unprocessable,
        ErrorKind::UpstreamFailed,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::OutOfResources,
        ErrorKind::Overloaded,
        ErrorKind::NotImplemented,
        ErrorKind::Internal,
    ];

    #[test]
    fn caller_faults_are_4xx_and_quiet() {
        for k in ALL {
            let status = k.http_status();
            match k.fault() {
                Fault::Caller => {
                    assert!((400..500).contains(&status), "{k:?}");
                    assert_eq!(k.severity(), Severity::Debug);
                }
                Fault::Upstream => {
                    assert!((502..=504).contains(&status), "{k:?}");
                    assert_eq!(k.severity(), Severity::Warn);
                }
                Fault::Internal => assert!(status >= 500, "{k:?}"),
            }
            assert_ne!(k.grpc_code(), 0, "{k:?} must not map to OK");
            assert!(!k.name().is_empty());
        }
        assert_eq!(ErrorKind::Internal.severity(), Severity::Error);
    }
}

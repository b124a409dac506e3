//! What every handler needs from a request: its body within a size limit, and its bearer token
//! checked in constant time.

use bytes::Bytes;
use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper::HeaderMap;
use hyper::Request;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, EXPECT};
use quiver_core::fault::{Classified, ErrorKind};
use subtle::ConstantTimeEq;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Declared or sent larger than the limit; nothing past the limit was read.
    #[error("request body over {limit} bytes")]
    TooLarge { limit: usize },
    /// The body did not arrive whole within the deadline.
    #[error("the request body did not arrive within {0:?}")]
    Timeout(std::time::Duration),
    /// The client broke off or sent a malformed body.
    #[error("reading the request body: {0}")]
    Read(String),
}

impl Classified for BodyError {
    fn kind(&self) -> ErrorKind {
        match self {
            BodyError::TooLarge { .. } => ErrorKind::TooLarge,
            BodyError::Timeout(_) => ErrorKind::RequestTimeout,
            BodyError::Read(_) => ErrorKind::BadRequest,
        }
    }
}

/// How much of a refused body is read and thrown away so that the client, which may write its
/// whole body before it reads, gets the 413 rather than a reset connection (nginx's lingering
/// close). Past it (or past the body deadline) the connection is closed.
pub const DISCARD_LIMIT: u64 = 256 << 20;

/// Reads a body of at most `limit` bytes within `timeout`: refused at once when its
/// Content-Length says more, and never kept past the limit otherwise. A refused body is drained
/// in the background while the 413 goes out (up to [`DISCARD_LIMIT`] bytes, within `timeout`),
/// unless the client waits for `100 Continue`, which it then never gets.
pub async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, BodyError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expects_continue = req
        .headers()
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut body = req.into_body();
    let refuse = |body: Incoming, read: u64| {
        linger(body, declared, expects_continue, read, deadline);
        BodyError::TooLarge { limit }
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(refuse(body, 0));
    }
    let capacity = declared.map_or(0, |n| n as usize);
    let mut buf = BytesMut::with_capacity(capacity);
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout(timeout)),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            let read = (buf.len() + data.len()) as u64;
            drop(buf);
            return Err(refuse(body, read));
        }
        buf.extend_from_slice(&data);
    }
}

/// Drains a request's body in the background, as [`read_body`] does for a body it refuses: for
/// a handler that answers without reading the body (e.g. 503 when busy), so that a client that
/// writes its whole body before reading still gets the answer.
pub fn discard_body(req: Request<Incoming>, timeout: std::time::Duration) {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expects_continue = parts
        .headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    linger(
        body,
        declared,
        expects_continue,
        0,
        tokio::time::Instant::now() + timeout,
    );
}

/// Starts draining what is left of a body (`read` bytes of it already read): not when the
/// client waits for `100 Continue` (it sends nothing more), nor when more than
/// [`DISCARD_LIMIT`] is still declared to come.
fn linger(
    body: Incoming,
    declared: Option<u64>,
    expects_continue: bool,
    read: u64,
    deadline: tokio::time::Instant,
) {
    let rest = declared.map_or(DISCARD_LIMIT, |d| d.saturating_sub(read));
    if !expects_continue && rest > 0 && rest <= DISCARD_LIMIT {
        tokio::spawn(discard(body, rest, deadline));
    }
}

/// Reads and drops what is left of a refused body, until it ends, `budget` more bytes were
/// read, or `deadline`; dropping the body then closes the connection if it did not end.
async fn discard(mut body: Incoming, budget: u64, deadline: tokio::time::Instant) {
    let mut read = 0u64;
    let drained = tokio::time::timeout_at(deadline, async {
        while read <= budget {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        read += data.len() as u64;
                    }
                }
                Some(Err(_)) | None => return,
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            read,
            "a refused request body was still arriving at its deadline"
        );
    }
}

/// What a request's `Authorization` header says against the expected token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer {
    /// The token matches.
    Valid,
    /// No `Authorization: Bearer ...` header.
    Missing,
    /// A bearer token that is not the expected one.
    Wrong,
}

/// Checks `Authorization: Bearer <token>` (the scheme in any case, as RFC 9110 has it;
/// surrounding spaces ignored) against `expected`, comparing in constant time.
pub fn bearer_matches(headers: &HeaderMap, expected: &str) -> Bearer {
    check_bearer(
        headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()),
        expected,
    )
}

/// [`bearer_matches`] on the value of an `Authorization` header (or gRPC `authorization`
/// metadata), for servers that are not on hyper's types.
pub fn check_bearer(authorization: Option<&str>, expected: &str) -> Bearer {
    let Some(value) = authorization else {
        return Bearer::Missing;
    };
    let value = value.trim();
    let Some((scheme, token)) = value.split_once(' ') else {
        return Bearer::Missing;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Bearer::Missing;
    }
    if bool::from(token.trim().as_bytes().ct_eq(expected.as_bytes())) {
        Bearer::Valid
    } else {
        Bearer::Wrong
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_matches(&headers(None), "s3cret"), Bearer::Missing);
        assert_eq!(
            bearer_matches(&headers(Some("Bearer s3cret")), "s3cret"),
            Bearer::Valid
        );
        assert_eq!(
            bearer_matches(&headers(Some("bearer s3cret")), "s3cret"),
            Bearer::Valid
        );
        assert_eq!(
            bearer_matches(&headers(Some("BEARER  s3cret ")), "s3cret"),
            Bearer::Valid
        );
        assert_eq!(
            bearer_matches(&headers(Some("Bearer s3cre")), "s3cret"),
            Bearer::Wrong
        );
        assert_eq!(
            bearer_matches(&headers(Some("Bearer s3cretX")), "s3cret"),
            Bearer::Wrong
        );
        assert_eq!(
            bearer_matches(&headers(Some("Basic czNjcmV0")), "s3cret"),
            Bearer::Missing
        );
        assert_eq!(
            bearer_matches(&headers(Some("s3cret")), "s3cret"),
            Bearer::Missing
        );
    }
}

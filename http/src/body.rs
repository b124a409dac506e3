//! What every handler needs from a request: its body within a size limit, and its bearer token
//! checked in constant time.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::HeaderMap;
use hyper::Request;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH};
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

/// Reads a body of at most `limit` bytes within `timeout`: refused at once when its
/// Content-Length says more, and never read past the limit otherwise.
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
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let collected = tokio::time::timeout(timeout, Limited::new(req.into_body(), limit).collect())
        .await
        .map_err(|_| BodyError::Timeout(timeout))?;
    match collected {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge { limit }),
        Err(e) => Err(BodyError::Read(e.to_string())),
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

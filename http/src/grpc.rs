//! Unary gRPC on plain HTTP/2: the 5-byte message frame, the `grpc-status` / `grpc-message`
//! trailers, and a response body that carries them. Shared by the enriching sidecar's gRPC port
//! (a server on [`crate::Server::http2`]) and quiver's gRPC clients (the transformation service).
//!
//! A unary call is one POST to `/package.Service/Method` with `content-type: application/grpc`;
//! the body is one message prefixed by a compressed flag (0: none) and a big-endian u32 length.
//! The answer is one framed message then trailers carrying `grpc-status: 0`, or, on error, only
//! headers carrying `grpc-status` and a percent-encoded `grpc-message` ("trailers-only").
//! Streaming, compression and deadlines in `grpc-timeout` are not needed by quiver and not done.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

/// gRPC's content type.
pub const CONTENT_TYPE_GRPC: &str = "application/grpc";

/// The gRPC status codes quiver sends (the numbers of `google.rpc.Code`).
pub mod code {
    pub const OK: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
}

/// `message` framed: no compression, its length, its bytes.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// The one message in a unary call's body; what is wrong with the body otherwise.
pub fn unframe(mut body: Bytes) -> Result<Bytes, String> {
    if body.len() < 5 {
        return Err(format!(
            "a {}-byte body; a gRPC message has a 5-byte prefix",
            body.len()
        ));
    }
    let compressed = body.get_u8();
    let len = body.get_u32() as usize;
    if compressed != 0 {
        return Err(
            "a compressed message (grpc-encoding is not supported: send it uncompressed)"
                .to_owned(),
        );
    }
    if body.len() != len {
        return Err(format!(
            "a message prefix of {len} bytes before {} bytes (one message per unary call)",
            body.len()
        ));
    }
    Ok(body)
}

/// The gRPC status in `headers` (trailers, or the headers of a trailers-only answer): its code
/// and decoded message, `None` when there is no `grpc-status`.
pub fn status(headers: &HeaderMap) -> Option<(i32, String)> {
    let code: i32 = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some((code, message))
}

/// `grpc-message` is percent-encoded (gRPC's HTTP/2 protocol spec).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |b: u8| (b as char).to_digit(16);
    while i < bytes.len() {
        let pair = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match pair {
            Some((hi, lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes what the spec asks for: bytes outside printable ASCII, and `%`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A unary gRPC answer's body: at most one data frame, then trailers.
#[derive(Debug, Default)]
pub struct GrpcBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl GrpcBody {
    /// `data` (already framed, or empty for none) followed by `trailers` (none: no trailers).
    pub fn new(data: Bytes, trailers: Option<HeaderMap>) -> GrpcBody {
        GrpcBody {
            data: (!data.is_empty()).then_some(data),
            trailers,
        }
    }
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

fn grpc_response(body: GrpcBody) -> Response<GrpcBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_GRPC));
    resp
}

/// A successful answer: `message` framed, then `grpc-status: 0`.
pub fn ok(message: &[u8]) -> Response<GrpcBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    grpc_response(GrpcBody::new(frame(message), Some(trailers)))
}

/// A failed call, trailers-only: HTTP 200 with `grpc-status` and `grpc-message` in the headers.
pub fn error(code: i32, message: &str) -> Response<GrpcBody> {
    let mut resp = grpc_response(GrpcBody::default());
    let headers = resp.headers_mut();
    headers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(m) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", m);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_named() {
        let framed = frame(b"hello");
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 5]);
        assert_eq!(unframe(framed).unwrap(), Bytes::from_static(b"hello"));
        assert!(
            unframe(Bytes::from_static(&[0, 0]))
                .unwrap_err()
                .contains("2-byte")
        );
        assert!(
            unframe(Bytes::from_static(&[1, 0, 0, 0, 1, 7]))
                .unwrap_err()
                .contains("compressed")
        );
        assert!(
            unframe(Bytes::from_static(&[0, 0, 0, 0, 3, 7]))
                .unwrap_err()
                .contains("prefix of 3 bytes before 1")
        );
    }

    #[test]
    fn messages_are_percent_coded() {
        assert_eq!(
            percent_decode("Exception calling application: %27val_to_add%27"),
            "Exception calling application: 'val_to_add'"
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        let m = "inputs[name=driver_id]: 100% wrong — é\n";
        assert_eq!(percent_decode(&percent_encode(m)), m);
        assert!(percent_encode(m).is_ascii());
    }

    #[test]
    fn errors_are_trailers_only() {
        let resp = error(code::NOT_FOUND, "model \"x\" is unknown");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            status(resp.headers()),
            Some((5, "model \"x\" is unknown".to_owned()))
        );
        assert!(resp.body().is_end_stream());
    }
}

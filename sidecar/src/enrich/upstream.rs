//! The model server behind the sidecar: one pooled HTTP/1 client (keep-alive, a connect
//! timeout, a whole-exchange deadline), and the answer read within a byte limit.
//!
//! Failures are the upstream's: cannot connect → 502 with the connector's message; no answer
//! within the deadline → 504; an answer larger than the limit → 502 naming the limit (the
//! body is never buffered past it).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use quiver_core::fault::ErrorKind;

use crate::error::ApiError;

/// Where and how the model server is called.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `http://host:port` (loopback expected), without a path.
    pub base: String,
    /// Deadline for one exchange: connect, send, the whole answer.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Largest answer read from the model server.
    pub max_response_bytes: usize,
}

impl UpstreamConfig {
    /// Checks `url`: an `http://` URL of a host and port, no path, query or user info.
    pub fn parse(url: &str) -> Result<UpstreamConfig, String> {
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|_| format!("{url:?} is not a URL; expected http://127.0.0.1:PORT"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "{url:?}: the model server is called over plain http:// on the pod's loopback (expected http://127.0.0.1:PORT)"
            ));
        }
        let Some(authority) = uri.authority() else {
            return Err(format!("{url:?}: no host; expected http://127.0.0.1:PORT"));
        };
        if authority.as_str().contains('@') {
            return Err(format!("{url:?}: user info is not allowed"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "{url:?}: give the model server's address only (no path or query); request paths are kept"
            ));
        }
        Ok(UpstreamConfig {
            base: format!("http://{authority}"),
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(2),
            max_response_bytes: 64 << 20,
        })
    }

    /// Whether the host is a loopback name or address (anything else is logged at start).
    pub fn is_loopback(&self) -> bool {
        let host = self
            .base
            .trim_start_matches("http://")
            .rsplit_once(':')
            .map_or(self.base.trim_start_matches("http://"), |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// The pooled client.
pub struct Upstream {
    pub config: UpstreamConfig,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// The model server's answer, whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Headers that belong to one connection, never forwarded (RFC 9110 7.6.1), and the ones the
/// sidecar sets itself.
pub(super) fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

impl Upstream {
    pub fn new(config: UpstreamConfig) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        Upstream { config, client }
    }

    /// Sends `body` to `path_and_query` with the caller's end-to-end headers (the content type
    /// replaced when `content_type` is given), and reads the answer within the limit and the
    /// deadline.
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<Answer, ApiError> {
        let uri = format!("{}{path_and_query}", self.config.base);
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri.parse().map_err(|_| {
            ApiError::bad_request("BadPath", format!("{path_and_query:?} is not a valid path"))
        })?;
        for (name, value) in headers {
            // A rewritten body is the sidecar's: the caller's encoding does not describe it.
            let rewritten = content_type.is_some() && name == header::CONTENT_ENCODING;
            if !hop_by_hop(name) && !rewritten {
                req.headers_mut().append(name.clone(), value.clone());
            }
        }
        if let Some(ct) = content_type {
            req.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        let limit = self.config.max_response_bytes;
        let exchange = async {
            let resp: Response<hyper::body::Incoming> =
                self.client.request(req).await.map_err(|e| {
                    ApiError::new(
                        ErrorKind::UpstreamFailed,
                        "UpstreamUnreachable",
                        format!("model server {}: {}", self.config.base, error_chain(&e)),
                    )
                })?;
            let (parts, body) = resp.into_parts();
            if let Some(len) = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                && len > limit as u64
            {
                return Err(too_large(&self.config.base, limit));
            }
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        too_large(&self.config.base, limit)
                    } else {
                        ApiError::new(
                            ErrorKind::UpstreamFailed,
                            "UpstreamFailed",
                            format!("model server {}: reading its answer: {e}", self.config.base),
                        )
                    }
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(ApiError::new(
                ErrorKind::Timeout,
                "UpstreamTimeout",
                format!(
                    "model server {} did not answer within {:?}",
                    self.config.base, self.config.timeout
                ),
            )),
        }
    }
}

fn too_large(base: &str, limit: usize) -> ApiError {
    ApiError::new(
        ErrorKind::UpstreamFailed,
        "UpstreamAnswerTooLarge",
        format!(
            "model server {base}: its answer is larger than {limit} bytes (--upstream-max-body)"
        ),
    )
}

/// An error and its causes, `a: b: c` (hyper's client error alone says only "client error
/// (Connect)").
pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

/// The model server's answer as the sidecar's response: status, end-to-end headers, body.
pub fn respond(answer: Answer) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(answer.body));
    *resp.status_mut() = answer.status;
    for (name, value) in &answer.headers {
        if !hop_by_hop(name) {
            resp.headers_mut().append(name.clone(), value.clone());
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_addresses_are_upstreams() {
        let c = UpstreamConfig::parse("http://127.0.0.1:8081").unwrap();
        assert_eq!(c.base, "http://127.0.0.1:8081");
        assert!(c.is_loopback());
        assert!(
            UpstreamConfig::parse("http://localhost:8081/")
                .unwrap()
                .is_loopback()
        );
        assert!(
            UpstreamConfig::parse("http://[::1]:8081")
                .unwrap()
                .is_loopback()
        );
        assert!(
            !UpstreamConfig::parse("http://10.0.0.2:8081")
                .unwrap()
                .is_loopback()
        );
        for bad in [
            "https://127.0.0.1:8081",
            "unix:///tmp/s",
            "127.0.0.1:8081",
            "http://127.0.0.1:8081/v1",
            "http://u:p@127.0.0.1:8081",
            "http://127.0.0.1:8081?x=1",
            "",
        ] {
            assert!(UpstreamConfig::parse(bad).is_err(), "{bad}");
        }
    }
}

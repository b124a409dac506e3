//! The gRPC client: `TransformFeatures` as one HTTP/2 POST.
//!
//! gRPC over HTTP/2, unary: `POST /feast.serving.TransformationService/TransformFeatures` with
//! `content-type: application/grpc` and `te: trailers`; the body is one message framed as a
//! compressed flag (0) and a big-endian u32 length; the answer is one framed message and a
//! `grpc-status` trailer (or, on error, only headers carrying `grpc-status`/`grpc-message`).

use std::sync::Mutex;
use std::time::Duration;

use arrow_array::RecordBatch;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper::header::{CONTENT_TYPE, HeaderValue, TE};
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use quiver_core::fault::{Classified, ErrorKind};
use quiver_core::proto::serving as pb;
use tokio::net::TcpStream;

use crate::arrow::{decode_ipc_file, encode_ipc_file};

const PATH: &str = "/feast.serving.TransformationService/TransformFeatures";

/// Where the service is and how long a call may take.
#[derive(Debug, Clone)]
pub struct TransformConfig {
    /// `host:port` (an `http://` prefix is accepted and dropped; TLS is not spoken: the service
    /// runs beside quiver, on localhost or in the same pod).
    pub endpoint: String,
    /// The whole call: connecting, sending, the transformation, reading the answer.
    pub timeout: Duration,
    /// The largest answer read.
    pub max_response_bytes: usize,
}

impl TransformConfig {
    pub fn new(endpoint: &str, timeout: Duration) -> TransformConfig {
        let endpoint = endpoint
            .strip_prefix("http://")
            .unwrap_or(endpoint)
            .trim_end_matches('/')
            .to_owned();
        TransformConfig {
            endpoint,
            timeout,
            max_response_bytes: 256 << 20,
        }
    }
}

/// Why a transformation did not come back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    #[error("transformation service at {endpoint} is unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("transformation service at {endpoint} did not answer within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    /// A gRPC status other than OK (the function raised, the service does not know the view).
    #[error("transformation service failed on {view}: gRPC status {code}: {message}")]
    Failed {
        view: String,
        code: i32,
        message: String,
    },
    /// An answer quiver cannot read (not gRPC, not Arrow, too large, a column missing).
    #[error("transformation service answered {view} with {reason}")]
    BadAnswer { view: String, reason: String },
    /// The input could not be encoded (a bug: the caller built the batch).
    #[error("transformation input for {view}: {reason}")]
    Input { view: String, reason: String },
}

impl Classified for TransformError {
    fn kind(&self) -> ErrorKind {
        match self {
            TransformError::Unreachable { .. }
            | TransformError::Failed { .. }
            | TransformError::BadAnswer { .. } => ErrorKind::UpstreamFailed,
            TransformError::Timeout { .. } => ErrorKind::Timeout,
            TransformError::Input { .. } => ErrorKind::Internal,
        }
    }
}

/// A client of one transformation service, shared by every request.
pub struct TransformClient {
    config: TransformConfig,
    /// The open connection's sender (cloned out; the lock is never held across an await).
    conn: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl TransformClient {
    pub fn new(config: TransformConfig) -> TransformClient {
        TransformClient {
            config,
            conn: Mutex::new(None),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.config.endpoint
    }

    /// Runs `view`'s transformation on `input` (one row per entity row); the answer has the
    /// same number of rows.
    pub async fn transform(
        &self,
        project: &str,
        view: &str,
        input: &RecordBatch,
    ) -> Result<RecordBatch, TransformError> {
        let arrow = encode_ipc_file(input).map_err(|reason| TransformError::Input {
            view: view.to_owned(),
            reason,
        })?;
        let message = pb::TransformFeaturesRequest {
            on_demand_feature_view_name: view.to_owned(),
            project: project.to_owned(),
            transformation_input: Some(pb::ValueType {
                value: Some(pb::value_type::Value::ArrowValue(arrow)),
            }),
        };
        let call = self.call(view, message);
        let answer = tokio::time::timeout(self.config.timeout, call)
            .await
            .map_err(|_| {
                // The connection may be stuck; the next call makes a new one.
                self.drop_connection();
                TransformError::Timeout {
                    endpoint: self.config.endpoint.clone(),
                    timeout: self.config.timeout,
                }
            })??;
        let bad = |reason: String| TransformError::BadAnswer {
            view: view.to_owned(),
            reason,
        };
        let bytes = match answer.transformation_output.and_then(|v| v.value) {
            Some(pb::value_type::Value::ArrowValue(b)) => b,
            None => return Err(bad("no transformation_output".to_owned())),
        };
        let batch = decode_ipc_file(&bytes).map_err(bad)?;
        if batch.num_rows() != input.num_rows() {
            return Err(bad(format!(
                "{} rows for {} input rows",
                batch.num_rows(),
                input.num_rows()
            )));
        }
        Ok(batch)
    }

    fn drop_connection(&self) {
        if let Ok(mut c) = self.conn.lock() {
            *c = None;
        }
    }

    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, TransformError> {
        let existing = self.conn.lock().ok().and_then(|c| c.clone());
        if let Some(mut s) = existing {
            if s.ready().await.is_ok() {
                return Ok(s);
            }
            self.drop_connection();
        }
        let unreachable = |reason: String| TransformError::Unreachable {
            endpoint: self.config.endpoint.clone(),
            reason,
        };
        let stream = TcpStream::connect(&self.config.endpoint)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "transformation service connection closed");
            }
        });
        if let Ok(mut c) = self.conn.lock() {
            *c = Some(sender.clone());
        }
        Ok(sender)
    }

    async fn call(
        &self,
        view: &str,
        message: pb::TransformFeaturesRequest,
    ) -> Result<pb::TransformFeaturesResponse, TransformError> {
        let mut sender = self.sender().await?;
        let body = quiver_http::grpc::frame(&message.encode_to_vec());
        let uri = format!("http://{}{PATH}", self.config.endpoint);
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
            .header(TE, HeaderValue::from_static("trailers"))
            .body(Full::new(body))
            .map_err(|e| TransformError::Input {
                view: view.to_owned(),
                reason: e.to_string(),
            })?;
        let response = sender.send_request(request).await.map_err(|e| {
            self.drop_connection();
            TransformError::Unreachable {
                endpoint: self.config.endpoint.clone(),
                reason: e.to_string(),
            }
        })?;
        let bad = |reason: String| TransformError::BadAnswer {
            view: view.to_owned(),
            reason,
        };
        if !response.status().is_success() {
            return Err(bad(format!("HTTP status {}", response.status())));
        }
        // A trailers-only answer (an error) carries the status in the headers.
        if let Some(err) = grpc_error(view, response.headers()) {
            return Err(err);
        }
        let collected = Limited::new(response.into_body(), self.config.max_response_bytes)
            .collect()
            .await
            .map_err(|e| bad(format!("a body that could not be read: {e}")))?;
        let trailers = collected.trailers().cloned();
        let data = collected.to_bytes();
        match trailers.as_ref().and_then(|t| grpc_error(view, t)) {
            Some(err) => return Err(err),
            None if trailers.is_none() => return Err(bad("no grpc-status trailer".to_owned())),
            None => {}
        }
        let message = quiver_http::grpc::unframe(data).map_err(bad)?;
        pb::TransformFeaturesResponse::decode(message).map_err(|e| bad(e.to_string()))
    }
}

/// The gRPC status in `headers`, when it is one other than OK.
fn grpc_error(view: &str, headers: &hyper::HeaderMap) -> Option<TransformError> {
    match quiver_http::grpc::status(headers)? {
        (0, _) => None,
        (code, message) => Some(TransformError::Failed {
            view: view.to_owned(),
            code,
            message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_drop_the_scheme() {
        let c = TransformConfig::new("http://127.0.0.1:6566/", Duration::from_secs(1));
        assert_eq!(c.endpoint, "127.0.0.1:6566");
    }
}

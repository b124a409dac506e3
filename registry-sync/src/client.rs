//! The registry service's client side (cargo feature `client`): a small HTTP/1.1 client over
//! one kept-alive connection (plain, or TLS with rustls), the sidecar's snapshot fetcher with
//! ETags and long polls, the last-good-snapshot file in a state dir, and jittered exponential
//! backoff.
//!
//! It is deliberately small: a sidecar needs GET (and `quiver apply` one POST) against one
//! server, not a general HTTP client.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quiver_core::fault::{Classified, ErrorKind};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, HOST, HeaderValue, IF_NONE_MATCH};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::snapshot::{self, Snapshot, SnapshotError};

/// Where the registry service is: `http://host:port` or `https://host:port`, with an optional
/// path prefix.
#[derive(Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
    /// Prefix for every path, without a trailing slash ("" or "/registry").
    base: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// What the URL was, for messages.
    pub url: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Endpoint {
    /// Parses `url`; `https://` trusts the system's roots, or only `ca_file` (PEM) when given.
    pub fn parse(url: &str, ca_file: Option<&Path>) -> Result<Endpoint, String> {
        let bad = |why: &str| {
            format!("registry URL {url:?}: {why}: expected http://host:port or https://host:port")
        };
        let uri: hyper::Uri = url.trim().parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if uri.query().is_some() {
            return Err(bad("a query string is not allowed"));
        }
        let base = uri.path().trim_end_matches('/').to_owned();
        let tls = if https {
            Some((tls_connector(ca_file)?, server_name(&host)?))
        } else {
            if ca_file.is_some() {
                return Err(format!(
                    "a CA file is given but the registry URL {url:?} is not https"
                ));
            }
            None
        };
        Ok(Endpoint {
            host,
            port,
            base,
            tls,
            url: url.trim().to_owned(),
        })
    }
}

fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("registry URL host {host:?} is not a TLS server name: {e}"))
}

fn tls_connector(ca_file: Option<&Path>) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("CA file {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("CA file {}: no certificate in it", path.display()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(
                    "no system CA certificates found for an https registry URL: give a CA file"
                        .to_owned(),
                );
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Why a request did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// Could not connect (refused, unreachable, TLS handshake).
    Connect(String),
    /// Connected, but the exchange failed or timed out.
    Exchange(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(m) => write!(f, "cannot connect: {m}"),
            ClientError::Exchange(m) => write!(f, "request failed: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl Classified for ClientError {
    fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Connect(_) => ErrorKind::Unavailable,
            ClientError::Exchange(_) => ErrorKind::UpstreamFailed,
        }
    }
}

/// A response: status, ETag, content type and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl Response {
    /// The `message` of a JSON error body, or the body as text.
    pub fn message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_owned())
    }
}

/// Whether a failed exchange on a kept-alive connection may be tried again on a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    Never,
    /// The request may have reached the server: only a GET is sent again.
    IfIdempotent,
    /// The request was not sent.
    Always,
}

/// One connection to the registry service, reopened when it breaks.
pub struct Client {
    endpoint: Endpoint,
    token: Option<String>,
    connect_timeout: Duration,
    max_body: usize,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    pub fn new(endpoint: Endpoint, token: Option<String>) -> Client {
        Client {
            endpoint,
            token,
            connect_timeout: Duration::from_secs(5),
            max_body: snapshot::MAX_SNAPSHOT_BYTES,
            conn: None,
        }
    }

    pub fn with_connect_timeout(mut self, t: Duration) -> Client {
        self.connect_timeout = t;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let addr = (self.endpoint.host.as_str(), self.endpoint.port);
        let stream =
            tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| ClientError::Connect(format!("{} timed out", self.endpoint.url)))?
                .map_err(|e| ClientError::Connect(format!("{}: {e}", self.endpoint.url)))?;
        let _ = stream.set_nodelay(true);
        macro_rules! handshake {
            ($io:expr) => {{
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new($io))
                    .await
                    .map_err(|e| ClientError::Connect(format!("{}: {e}", self.endpoint.url)))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                send
            }};
        }
        Ok(match &self.endpoint.tls {
            None => handshake!(stream),
            Some((connector, name)) => {
                let tls = tokio::time::timeout(
                    self.connect_timeout,
                    connector.connect(name.clone(), stream),
                )
                .await
                .map_err(|_| {
                    ClientError::Connect(format!("{}: TLS handshake timed out", self.endpoint.url))
                })?
                .map_err(|e| {
                    ClientError::Connect(format!("{}: TLS handshake: {e}", self.endpoint.url))
                })?;
                handshake!(tls)
            }
        })
    }

    /// Sends one request and reads the whole answer within `timeout`. `path` is relative to
    /// the endpoint's base and includes the query string. A kept-alive connection the server
    /// closed in the meantime is replaced once: for any request when the request was not
    /// sent, and for a GET in any case (it changes nothing).
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(hyper::header::HeaderName, String)],
        body: Option<(Bytes, &'static str)>,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let reused = self.conn.is_some();
        match self
            .request_once(method.clone(), path, headers, body.clone(), timeout)
            .await
        {
            Err((e, retry))
                if reused
                    && (retry == Retry::Always
                        || (retry == Retry::IfIdempotent && method == Method::GET)) =>
            {
                tracing::debug!(error = %e, "kept-alive connection failed; retrying on a new one");
                self.conn = None;
                self.request_once(method, path, headers, body, timeout)
                    .await
                    .map_err(|(e, _)| e)
            }
            other => other.map_err(|(e, _)| e),
        }
    }

    async fn request_once(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(hyper::header::HeaderName, String)],
        body: Option<(Bytes, &'static str)>,
        timeout: Duration,
    ) -> Result<Response, (ClientError, Retry)> {
        let reused = match self.conn.take() {
            Some(mut s) => s.ready().await.is_ok().then_some(s),
            None => None,
        };
        let mut send = match reused {
            Some(s) => s,
            None => self.connect().await.map_err(|e| (e, Retry::Never))?,
        };
        let uri = format!("{}{}", self.endpoint.base, path);
        let mut req = Request::builder().method(method).uri(&uri);
        let host = if self.endpoint.host.contains(':') {
            format!("[{}]:{}", self.endpoint.host, self.endpoint.port)
        } else {
            format!("{}:{}", self.endpoint.host, self.endpoint.port)
        };
        req = req.header(HOST, host);
        if let Some(token) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let body = match body {
            Some((bytes, content_type)) => {
                req = req.header(CONTENT_TYPE, content_type);
                Full::new(bytes)
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| {
            (
                ClientError::Exchange(format!("building the request for {uri}: {e}")),
                Retry::Never,
            )
        })?;
        let max_body = self.max_body;
        let exchange = async {
            let resp = send.send_request(req).await.map_err(|e| {
                let retry = if e.is_canceled() {
                    Retry::Always
                } else {
                    Retry::IfIdempotent
                };
                (ClientError::Exchange(format!("{uri}: {e}")), retry)
            })?;
            let status = resp.status().as_u16();
            let header = |name| {
                resp.headers()
                    .get(name)
                    .and_then(|v: &HeaderValue| v.to_str().ok())
                    .map(str::to_owned)
            };
            let etag = header(ETAG);
            let content_type = header(CONTENT_TYPE);
            let body = Limited::new(resp.into_body(), max_body)
                .collect()
                .await
                .map_err(|e| {
                    (
                        ClientError::Exchange(format!("{uri}: reading the body: {e}")),
                        Retry::IfIdempotent,
                    )
                })?
                .to_bytes();
            Ok::<_, (ClientError, Retry)>(Response {
                status,
                etag,
                content_type,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(resp)) => {
                // Keep the connection for the next request.
                self.conn = Some(send);
                Ok(resp)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err((
                ClientError::Exchange(format!("{uri}: no answer within {timeout:?}")),
                Retry::Never,
            )),
        }
    }
}

/// How a sidecar follows the registry service.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub endpoint: Endpoint,
    pub project: String,
    /// Narrow the snapshot to these feature services (empty: the whole project).
    pub feature_services: Vec<String>,
    /// Bearer token for reads, when the service asks for one.
    pub token: Option<String>,
    /// Where the last good snapshot is kept.
    pub state_dir: Option<PathBuf>,
    /// How long one long poll waits for a change.
    pub wait: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
}

impl SyncConfig {
    /// The feature services as the service normalizes them (sorted, no duplicates or blanks).
    pub fn feature_services_sorted(&self) -> Vec<String> {
        let mut s: Vec<String> = self
            .feature_services
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        s.sort();
        s.dedup();
        s
    }

    pub fn new(endpoint: Endpoint, project: &str) -> SyncConfig {
        SyncConfig {
            endpoint,
            project: project.to_owned(),
            feature_services: Vec::new(),
            token: None,
            state_dir: None,
            wait: Duration::from_secs(30),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// Why a snapshot could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncError {
    /// The service could not be reached or did not answer.
    Unreachable(ClientError),
    /// The service answered with an error status.
    Status { status: u16, message: String },
    /// The service answered with a snapshot that does not check out.
    Invalid(SnapshotError),
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::Unreachable(e) => write!(f, "registry service unreachable: {e}"),
            SyncError::Status { status, message } => {
                write!(f, "registry service answered {status}: {message}")
            }
            SyncError::Invalid(e) => write!(f, "registry service sent a bad snapshot: {e}"),
        }
    }
}

impl std::error::Error for SyncError {}

impl Classified for SyncError {
    fn kind(&self) -> ErrorKind {
        match self {
            SyncError::Unreachable(e) => e.kind(),
            // The service answered, with an error or a snapshot that does not check out.
            SyncError::Status { .. } | SyncError::Invalid(_) => ErrorKind::UpstreamFailed,
        }
    }
}

/// A fetch's outcome.
#[derive(Debug)]
pub enum Fetched {
    /// A new, checked snapshot: the typed project built from it, and its bytes (for the
    /// state dir).
    Changed {
        snapshot: Box<Snapshot>,
        project: Box<quiver_core::registry::ProjectRegistry>,
        bytes: Bytes,
    },
    /// Nothing changed (304).
    NotModified,
}

/// Fetches the project's snapshot from the service, with the ETag of the last one it accepted.
pub struct SnapshotFetcher {
    client: Client,
    config: SyncConfig,
    path: String,
    etag: Option<String>,
}

impl SnapshotFetcher {
    pub fn new(config: SyncConfig) -> SnapshotFetcher {
        let client = Client::new(config.endpoint.clone(), config.token.clone())
            .with_connect_timeout(config.connect_timeout);
        let mut path = format!("/v1/projects/{}/snapshot", encode_path(&config.project));
        let services = config.feature_services_sorted();
        if !services.is_empty() {
            path.push_str("?feature_services=");
            path.push_str(&encode_path(&services.join(",")));
        }
        SnapshotFetcher {
            client,
            config,
            path,
            etag: None,
        }
    }

    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// Sets the ETag of the snapshot in use (e.g. one loaded from the state dir).
    pub fn set_etag(&mut self, etag: Option<String>) {
        self.etag = etag;
    }

    /// One fetch. With `wait`, the service holds the request until the snapshot differs from
    /// the one in use or the time passes (then 304).
    pub async fn fetch(&mut self, wait: Option<Duration>) -> Result<Fetched, SyncError> {
        let mut path = self.path.clone();
        let mut timeout = self.config.connect_timeout + Duration::from_secs(10);
        if let Some(w) = wait {
            path.push(if path.contains('?') { '&' } else { '?' });
            path.push_str(&format!("wait={}ms", w.as_millis()));
            timeout += w;
        }
        let headers: Vec<_> = self
            .etag
            .iter()
            .map(|e| (IF_NONE_MATCH, e.clone()))
            .collect();
        let resp = self
            .client
            .request(Method::GET, &path, &headers, None, timeout)
            .await
            .map_err(SyncError::Unreachable)?;
        match StatusCode::from_u16(resp.status) {
            Ok(StatusCode::NOT_MODIFIED) => Ok(Fetched::NotModified),
            Ok(StatusCode::OK) => {
                let snap = snapshot::decode(&resp.body).map_err(SyncError::Invalid)?;
                // Build the typed project now: a snapshot whose objects do not decode is
                // refused here, before anyone swaps it in.
                let project = snap
                    .project_registry(&self.config.project)
                    .map_err(SyncError::Invalid)?;
                if resp.etag.as_deref().is_some_and(|e| e != snap.etag()) {
                    return Err(SyncError::Invalid(SnapshotError::Malformed(format!(
                        "ETag {:?} does not match the snapshot's content hash {}",
                        resp.etag.as_deref().unwrap_or(""),
                        snap.etag()
                    ))));
                }
                if snap.feature_services != self.config.feature_services_sorted() {
                    return Err(SyncError::Invalid(SnapshotError::Malformed(format!(
                        "snapshot narrowed to {:?}, asked for {:?}",
                        snap.feature_services, self.config.feature_services
                    ))));
                }
                self.etag = Some(snap.etag());
                Ok(Fetched::Changed {
                    snapshot: Box::new(snap),
                    project: Box::new(project),
                    bytes: resp.body,
                })
            }
            _ => Err(SyncError::Status {
                status: resp.status,
                message: resp.message(),
            }),
        }
    }
}

/// Percent-encodes what a path segment or query value must not carry raw.
pub fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b',') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The state-dir file that holds a project's last good snapshot.
pub fn state_file(dir: &Path, project: &str) -> PathBuf {
    dir.join(format!("{}.snapshot", encode_path(project)))
}

/// Writes the snapshot bytes to the state dir (temp file + rename).
pub fn save_state(dir: &Path, project: &str, bytes: &[u8]) -> Result<(), String> {
    crate::store::write_atomic(&state_file(dir, project), bytes)
        .map_err(|e| format!("state dir: {e}"))
}

/// Reads and checks the last good snapshot in the state dir; `Ok(None)` when there is none.
pub fn load_state(dir: &Path, project: &str) -> Result<Option<Snapshot>, String> {
    let path = state_file(dir, project);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let snap = snapshot::decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    snap.project_registry(project)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(snap))
}

/// The one backoff (quiver-core's): exponential with full jitter.
pub use quiver_core::backoff::Backoff;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = Endpoint::parse("http://registry:6570", None).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.base.as_str()),
            ("registry", 6570, "")
        );
        let e = Endpoint::parse("http://127.0.0.1:1/prefix/", None).unwrap();
        assert_eq!(e.base, "/prefix");
        for bad in [
            "registry:6570",
            "ftp://x:1",
            "http://",
            "http://x:1/?a=b",
            "",
        ] {
            assert!(Endpoint::parse(bad, None).is_err(), "{bad}");
        }
        let err = Endpoint::parse("http://x:1", Some(Path::new("/ca.pem"))).unwrap_err();
        assert!(err.contains("not https"), "{err}");
        let err =
            Endpoint::parse("https://x:1", Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn state_dir_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_state(dir.path(), "demo").unwrap(), None);
        let (bytes, _) = snapshot::encode("demo", 3, &[], &[]);
        save_state(dir.path(), "demo", &bytes).unwrap();
        assert_eq!(load_state(dir.path(), "demo").unwrap().unwrap().version, 3);
        std::fs::write(state_file(dir.path(), "demo"), &bytes[..bytes.len() - 3]).unwrap();
        assert!(load_state(dir.path(), "demo").is_err());
        assert_eq!(encode_path("a b/c"), "a%20b%2Fc");
    }
}

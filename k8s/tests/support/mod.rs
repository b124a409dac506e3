//! What the webhook tests share: certificates made with the openssl CLI, the webhook served on
//! a loopback port, and an HTTPS client that trusts a given CA.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use quiver_k8s::InjectorConfig;
use quiver_k8s::server::Limits;
use quiver_k8s::tls::CertReloader;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("the openssl CLI (Debian package openssl) is needed to make test certificates");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[derive(Clone, Copy)]
pub enum KeyKind {
    Rsa,
    /// P-256, PKCS#8: what the cert-manager Certificate in k8s/ asks for.
    EcP256,
}

/// `<ca>.crt`/`<ca>.key` in `dir`, a self-signed CA.
pub fn make_ca(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={ca}"),
        ],
    );
}

/// `<name>.crt`/`<name>.key` in `dir`: a server certificate for `sans` signed by `ca`.
pub fn make_server_cert(dir: &Path, ca: &str, name: &str, key: KeyKind, sans: &str) {
    let key_file = format!("{name}.key");
    match key {
        KeyKind::Rsa => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &key_file,
            ],
        ),
        KeyKind::EcP256 => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &key_file,
            ],
        ),
    }
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key_file,
            "-out",
            &format!("{name}.csr"),
            "-subj",
            "/CN=quiver-injector",
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

/// A running webhook; dropping it stops the server.
pub struct Webhook {
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

pub async fn start(cert: &Path, key: &Path, config: InjectorConfig, limits: Limits) -> Webhook {
    let certs = CertReloader::load(cert, key).expect("the certificate loads");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(quiver_k8s::server::serve(
        listener,
        Arc::new(certs),
        Arc::new(config),
        limits,
        async move {
            let _ = stopped.await;
        },
    ));
    Webhook { addr, _stop: stop }
}

pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request over TLS, verifying the server as `server_name` against `ca_pem`.
/// An error is a failed TLS handshake (or connection).
pub async fn https(
    addr: SocketAddr,
    ca_pem: &Path,
    server_name: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<HttpResponse, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {server_name}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    // A server that refuses the body early (413) may close before all of it is written; its
    // answer is still there to read.
    let _ = tls.write_all(body).await;
    let mut raw = Vec::new();
    // The server closes after answering (Connection: close); what arrived is the answer.
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response: {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line: {head:?}"))?;
    Ok(HttpResponse {
        status,
        body: body.as_bytes().to_vec(),
    })
}

//! quiver-tls: a server certificate read from PEM files, and read again when they change, so a
//! certificate that cert-manager (or a script) renews is served without a restart. Used by the
//! injector webhook and the registry service.
//!
//! Every accepted connection looks at the two files' metadata (two `stat`s, cheap next to a
//! handshake) and rebuilds the rustls config when either changed. A
//! pair that does not load (a key written before its certificate, say) keeps the previous
//! certificate in service; the next change is tried again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Larger than any certificate chain or key; a bigger file is not one.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// What identifies a version of a file: a rename (Kubernetes' atomic volume update, or
/// write-then-rename) changes the inode, an in-place rewrite the time or the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Ok(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    })
}

struct Current {
    acceptor: TlsAcceptor,
    /// The files' stamps when they were last looked at (loaded or not).
    seen: (Stamp, Stamp),
}

/// The certificate in service, and where it comes from.
pub struct CertReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<Current>,
}

impl CertReloader {
    /// Loads the pair once; an error names the file and what is wrong with it.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<CertReloader, String> {
        let seen = stamps(cert_path, key_path)?;
        let config = server_config(cert_path, key_path)?;
        Ok(CertReloader {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: ArcSwap::from_pointee(Current {
                acceptor: TlsAcceptor::from(config),
                seen,
            }),
        })
    }

    /// The acceptor for the next handshake, after reloading the pair if either file changed.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.load();
        let now = match stamps(&self.cert_path, &self.key_path) {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look at the certificate files; serving the loaded certificate");
                return current.acceptor.clone();
            }
        };
        if now == current.seen {
            return current.acceptor.clone();
        }
        let acceptor = match server_config(&self.cert_path, &self.key_path) {
            Ok(config) => {
                tracing::info!(cert = %self.cert_path.display(), "certificate reloaded");
                TlsAcceptor::from(config)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the changed certificate does not load; serving the previous one until the files change again");
                current.acceptor.clone()
            }
        };
        self.current.store(Arc::new(Current {
            acceptor: acceptor.clone(),
            seen: now,
        }));
        acceptor
    }
}

fn stamps(cert: &Path, key: &Path) -> Result<(Stamp, Stamp), String> {
    let one = |p: &Path| stamp(p).map_err(|e| format!("{}: {e}", p.display()));
    Ok((one(cert)?, one(key)?))
}

fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len > MAX_PEM_BYTES {
        return Err(format!(
            "{}: {len} bytes is too large for a PEM certificate or key",
            path.display()
        ));
    }
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A rustls server config (ring, TLS 1.2 and 1.3, HTTP/1.1 by ALPN) from the PEM pair.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, String> {
    let cert_pem = read_pem(cert_path)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no CERTIFICATE block: expected the PEM certificate chain (tls.crt)",
            cert_path.display()
        ));
    }
    let key_pem = read_pem(key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "{}: no private key ({e}): expected a PEM PKCS#8, PKCS#1 or SEC1 key (tls.key)",
            key_path.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} with {}: {e}", cert_path.display(), key_path.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

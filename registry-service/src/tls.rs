//! TLS for the service: the certificate and key given by `--tls-cert` and `--tls-key`, checked
//! before the port is bound and reloaded when the files change (see [`quiver_tls`]).

use std::path::Path;
use std::sync::Arc;

pub use quiver_tls::CertReloader;

/// Loads the pair; errors name the flags and the files.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertReloader>, String> {
    CertReloader::load(cert_path, key_path)
        .map(Arc::new)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))
}

//! Certificates for TLS tests, made with `openssl` in a folder the test owns.

use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `openssl` with `args` in `dir`; panics if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(ok.success(), "openssl {args:?}");
}

/// A CA (`ca.crt`, `ca.key`), a server certificate for localhost and 127.0.0.1 signed by it
/// (`server.crt`, `server.key`), and a second, untrusted CA (`other.crt`), all in `dir`.
pub fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=quiver-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("ext.cnf");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.crt",
            "-days",
            "2",
            "-subj",
            "/CN=someone-else",
        ],
    );
}

/// A redis-server's certificate arguments, for the files [`certificates`] put in `certs`.
pub fn tls_args(certs: &Path) -> Vec<String> {
    [
        ("--tls-cert-file", "server.crt"),
        ("--tls-key-file", "server.key"),
        ("--tls-ca-cert-file", "ca.crt"),
    ]
    .into_iter()
    .flat_map(|(flag, file)| [flag.to_owned(), certs.join(file).display().to_string()])
    .collect()
}

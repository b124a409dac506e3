//! `quiver inject serve` as an operator starts it: a bad configuration or certificate stops it
//! before it binds, with a message naming the flag or the file.

use std::process::Command;

fn inject_serve(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["inject", "serve"])
        .args(args)
        .output()
        .expect("run quiver");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_is_refused_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

    let (ok, err) = inject_serve(&["--tls-cert", cert, "--tls-key", key]);
    assert!(!ok);
    assert!(err.contains("tls.crt"), "{err}");

    let (ok, err) = inject_serve(&[
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--memory",
        "128Mi",
        "--image",
        "",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--image") && err.contains("--memory 128Mi: too little memory"),
        "{err}"
    );
}

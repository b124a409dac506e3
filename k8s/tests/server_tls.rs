//! The webhook end to end over real TLS on loopback: a CA and server certificates made with
//! openssl, the server on port 0, a rustls client that trusts only the CA. Covers the admission
//! round trip, the HTTP errors, and the certificate being replaced while the server runs.

mod support;

use std::path::Path;

use quiver_k8s::InjectorConfig;
use quiver_k8s::admission::AdmissionReview;
use quiver_k8s::server::Limits;
use serde_json::json;
use support::*;

const SANS: &str = "DNS:localhost,DNS:quiver-injector.quiver.svc,IP:127.0.0.1";

fn fixture(case: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/admission")
            .join(format!("{case}.request.json")),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "ca");
    make_server_cert(d, "ca", "server", KeyKind::Rsa, SANS);
    let webhook = start(
        &d.join("server.crt"),
        &d.join("server.key"),
        InjectorConfig::default(),
        Limits::default(),
    )
    .await;
    let ca = d.join("ca.crt");

    let health = https(webhook.addr, &ca, "localhost", "GET", "/health", b"")
        .await
        .unwrap();
    assert_eq!(
        (health.status, health.json()),
        (200, json!({"status": "ok"}))
    );

    // The service name the API server uses (the certificate's SAN), not only localhost.
    let body = fixture("predictor-native");
    let resp = https(
        webhook.addr,
        &ca,
        "quiver-injector.quiver.svc",
        "POST",
        "/mutate",
        &body,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    let review: AdmissionReview = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(review.api_version, "admission.k8s.io/v1");
    assert_eq!(review.kind, "AdmissionReview");
    assert!(review.request.is_none());
    let answer = review.response.unwrap();
    // The same answer the pure function gives for the same request.
    let request: AdmissionReview = serde_json::from_slice(&body).unwrap();
    let (expected, _) = quiver_k8s::admit(&request.request.unwrap(), &InjectorConfig::default());
    assert_eq!(answer.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert!(answer.allowed);
    assert_eq!(answer.patch_type.as_deref(), Some("JSONPatch"));
    assert_eq!(answer.patch, expected.patch);
    assert!(answer.patch_ops().unwrap().len() == 4);

    let denied = https(
        webhook.addr,
        &ca,
        "localhost",
        "POST",
        "/mutate",
        &fixture("predictor-inject-not-boolean"),
    )
    .await
    .unwrap();
    assert_eq!(
        denied.status, 200,
        "a denial is an answer, not an HTTP error"
    );
    let denied = denied.json();
    assert_eq!(denied["response"]["allowed"], false);
    assert!(
        denied["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("quiver.dev/inject")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_http_errors_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "ca");
    make_server_cert(d, "ca", "server", KeyKind::EcP256, SANS);
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        ..Limits::default()
    };
    let webhook = start(
        &d.join("server.crt"),
        &d.join("server.key"),
        InjectorConfig::default(),
        limits,
    )
    .await;
    let ca = d.join("ca.crt");
    let call = |method: &'static str, path: &'static str, body: Vec<u8>| {
        let ca = ca.clone();
        async move {
            https(webhook.addr, &ca, "localhost", method, path, &body)
                .await
                .unwrap()
        }
    };

    for (body, expect) in [
        (b"{not json".to_vec(), "not an AdmissionReview"),
        (b"[]".to_vec(), "not an AdmissionReview"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Pod"}}}"#.to_vec(),
            "expected apiVersion admission.k8s.io/v1",
        ),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(), "has no request"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{"kind":"Pod"}}}"#.to_vec(), "missing field `uid`"),
    ] {
        let resp = call("POST", "/mutate", body).await;
        assert_eq!(resp.status, 400);
        let json = resp.json();
        assert_eq!(json["error"], "BadRequest");
        assert!(json["message"].as_str().unwrap().contains(expect), "{json}");
    }
    let resp = call("POST", "/mutate", vec![b' '; 64 * 1024 + 1]).await;
    assert_eq!(
        (resp.status, resp.json()["error"].as_str().unwrap()),
        (413, "RequestTooLarge")
    );
    let resp = call("GET", "/mutate", Vec::new()).await;
    assert_eq!(resp.status, 405);
    let resp = call("GET", "/metrics", Vec::new()).await;
    assert_eq!(resp.status, 404);
    assert!(
        resp.json()["message"]
            .as_str()
            .unwrap()
            .contains("POST /mutate")
    );
    // Still serving after all of that.
    assert_eq!(call("GET", "/health", Vec::new()).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_is_reloaded_when_its_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "ca1");
    make_ca(d, "ca2");
    make_server_cert(d, "ca1", "one", KeyKind::Rsa, SANS);
    make_server_cert(d, "ca2", "two", KeyKind::EcP256, SANS);
    let live = d.join("live");
    std::fs::create_dir(&live).unwrap();
    // Replaced by rename, as Kubernetes updates a mounted Secret.
    let install = |name: &str| {
        for ext in ["crt", "key"] {
            let tmp = live.join(format!(".tls.{ext}.tmp"));
            std::fs::copy(d.join(format!("{name}.{ext}")), &tmp).unwrap();
            std::fs::rename(&tmp, live.join(format!("tls.{ext}"))).unwrap();
        }
    };
    install("one");
    let webhook = start(
        &live.join("tls.crt"),
        &live.join("tls.key"),
        InjectorConfig::default(),
        Limits::default(),
    )
    .await;
    let get = |ca: &'static str| {
        let ca = d.join(format!("{ca}.crt"));
        async move { https(webhook.addr, &ca, "localhost", "GET", "/health", b"").await }
    };
    assert_eq!(get("ca1").await.unwrap().status, 200);
    let refused = get("ca2")
        .await
        .err()
        .expect("a certificate from another CA is refused");
    assert!(refused.contains("certificate"), "{refused}");

    install("two");
    assert_eq!(
        get("ca2").await.unwrap().status,
        200,
        "the new certificate is served"
    );
    assert!(get("ca1").await.is_err(), "the old one is not");

    // A broken pair (a certificate that is not PEM) keeps the last good one in service.
    std::fs::write(live.join(".tls.crt.tmp"), "not a certificate").unwrap();
    std::fs::rename(live.join(".tls.crt.tmp"), live.join("tls.crt")).unwrap();
    assert_eq!(get("ca2").await.unwrap().status, 200);
    // A certificate whose key is not the one beside it, likewise.
    std::fs::copy(d.join("one.crt"), live.join(".tls.crt.tmp")).unwrap();
    std::fs::rename(live.join(".tls.crt.tmp"), live.join("tls.crt")).unwrap();
    assert_eq!(get("ca2").await.unwrap().status, 200);
    // Once the pair is whole again, it is served.
    install("one");
    assert_eq!(get("ca1").await.unwrap().status, 200);
}

#[test]
fn unusable_certificates_are_refused_at_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = quiver_k8s::tls::CertReloader::load(&d.join("nope.crt"), &d.join("nope.key"))
        .err()
        .unwrap();
    assert!(missing.contains("nope.crt"), "{missing}");
    std::fs::write(d.join("empty.crt"), "").unwrap();
    std::fs::write(d.join("empty.key"), "").unwrap();
    let empty = quiver_k8s::tls::CertReloader::load(&d.join("empty.crt"), &d.join("empty.key"))
        .err()
        .unwrap();
    assert!(empty.contains("empty.crt: no CERTIFICATE block"), "{empty}");
    make_ca(d, "ca");
    make_server_cert(d, "ca", "a", KeyKind::Rsa, SANS);
    make_server_cert(d, "ca", "b", KeyKind::Rsa, SANS);
    let mismatched = quiver_k8s::tls::CertReloader::load(&d.join("a.crt"), &d.join("b.key"))
        .err()
        .unwrap();
    assert!(
        mismatched.contains("a.crt with") && mismatched.contains("b.key"),
        "{mismatched}"
    );
}

/// k8s/webhook-certs.sh, the way without cert-manager: its certificate is served and trusted
/// through its CA under the Service's DNS name; a second run keeps the CA; the apply step
/// stores the pair in the injector's Secret and the CA in the webhook's caBundle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_certs_script() {
    use base64::Engine;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("webhook-certs.sh");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let run = |extra: &[&str], path: Option<String>| {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(&script).arg("--out").arg(&out).args(extra);
        if let Some(path) = path {
            cmd.env("PATH", path)
                .env("KUBECTL_LOG", dir.path().join("kubectl.log"));
        }
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "webhook-certs.sh: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&["--no-apply"], None);
    let ca_first = std::fs::read(out.join("ca.crt")).unwrap();
    let cert_first = std::fs::read(out.join("tls.crt")).unwrap();
    let webhook = start(
        &out.join("tls.crt"),
        &out.join("tls.key"),
        InjectorConfig::default(),
        Limits::default(),
    )
    .await;
    let resp = https(
        webhook.addr,
        &out.join("ca.crt"),
        "quiver-injector.quiver.svc",
        "POST",
        "/mutate",
        &fixture("predictor-native"),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["response"]["allowed"], true);

    // Renewal: same CA, new certificate, served by the running webhook once the files change.
    run(&["--no-apply"], None);
    assert_eq!(std::fs::read(out.join("ca.crt")).unwrap(), ca_first);
    assert_ne!(std::fs::read(out.join("tls.crt")).unwrap(), cert_first);
    let resp = https(
        webhook.addr,
        &out.join("ca.crt"),
        "quiver-injector.quiver.svc.cluster.local",
        "GET",
        "/health",
        b"",
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);

    // The apply step, against a kubectl that records what it is asked to do.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(
        bin.join("kubectl"),
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$KUBECTL_LOG\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(bin.join("kubectl"))
        .status()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run(&[], Some(path));
    let log = std::fs::read_to_string(dir.path().join("kubectl.log")).unwrap();
    assert!(
        log.contains("-n quiver create secret tls quiver-injector-tls --cert=tls.crt --key=tls.key --dry-run=client -o yaml"),
        "{log}"
    );
    assert!(log.contains("apply -f -"), "{log}");
    let bundle = base64::engine::general_purpose::STANDARD.encode(&ca_first);
    assert!(
        log.contains(&format!(
            "patch mutatingwebhookconfiguration quiver-sidecar-injector --type=json -p [{{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"{bundle}\"}}]"
        )),
        "{log}"
    );
}

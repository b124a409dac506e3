//! Trickling clients cannot hold the webhook (issue: 512 trickling TLS clients held every slot
//! for 75 s, so annotated pods could not be created). Every slot is taken by clients that
//! stall at each step a request goes through (no TLS handshake, a head sent a byte at a time, a
//! body sent a byte at a time), and they reconnect as soon as they are dropped; a normal
//! AdmissionReview sent meanwhile is still answered, within the deadlines plus a generous
//! margin, because the server core's handshake, header and body deadlines free the slots.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use quiver_k8s::InjectorConfig;
use quiver_k8s::server::Limits;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::io::AsyncWriteExt;

const SANS: &str = "DNS:localhost,IP:127.0.0.1";

#[derive(Clone, Copy, Debug)]
enum Stall {
    /// Connects and never starts the TLS handshake.
    Handshake,
    /// Finishes the handshake, then sends the request head a byte at a time.
    Head,
    /// Sends a whole head announcing a large body, then the body a byte at a time.
    Body,
}

fn tls_connector(ca: &Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One slow client, reconnecting whenever the server drops it, until `stop`. Counts the times
/// the server dropped it.
async fn slow_client(
    addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    stall: Stall,
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let trickle: Vec<u8> = match stall {
            Stall::Handshake => {
                // A TLS record header, then nothing more, a byte every 200 ms.
                let _ = tcp.write_all(&[0x16]).await;
                vec![0x03; 1 << 16]
            }
            Stall::Head | Stall::Body => {
                let name = ServerName::try_from("localhost").unwrap();
                let Ok(mut tls) = connector.connect(name, tcp).await else {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let head = b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n";
                let data: Vec<u8> = match stall {
                    Stall::Head => head.to_vec(),
                    _ => {
                        if tls.write_all(head).await.is_err() {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        vec![b' '; 100_000]
                    }
                };
                for b in data {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if tls.write_all(&[b]).await.is_err() || tls.flush().await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        for b in trickle {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if tcp.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        dropped.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_clients_cannot_starve_admission_reviews() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "ca");
    make_server_cert(d, "ca", "server", KeyKind::EcP256, SANS);
    // The defaults hold a trickler at most ~10 s per step (within the API server's default
    // webhook timeout); the test uses 1 s to run quickly, with few slots to fill.
    let defaults = Limits::default().http;
    assert!(defaults.tls_handshake_timeout <= Duration::from_secs(10));
    assert!(defaults.header_read_timeout <= Duration::from_secs(10));
    assert!(defaults.body_read_timeout <= Duration::from_secs(10));
    let slots = 12;
    let deadline = Duration::from_secs(1);
    let limits = Limits {
        http: quiver_http::Limits {
            max_connections: slots,
            tls_handshake_timeout: deadline,
            header_read_timeout: deadline,
            body_read_timeout: deadline,
            idle_timeout: deadline * 2,
            ..Limits::default().http
        },
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
    let connector = tls_connector(&ca);

    let stop = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicUsize::new(0));
    let mut slow = Vec::new();
    for i in 0..slots {
        let stall = [Stall::Handshake, Stall::Head, Stall::Body][i % 3];
        slow.push(tokio::spawn(slow_client(
            webhook.addr,
            connector.clone(),
            stall,
            stop.clone(),
            dropped.clone(),
        )));
    }
    // Let them take every slot.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let review = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/admission/predictor-native.request.json"),
    )
    .unwrap();
    let t = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(15),
        https(webhook.addr, &ca, "localhost", "POST", "/mutate", &review),
    )
    .await;
    let took = t.elapsed();
    let answer = answer
        .unwrap_or_else(|_| {
            stop.store(true, Ordering::Relaxed);
            panic!("no answer within 15 s while slow clients held every slot")
        })
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["response"]["allowed"], true);
    // A slot frees within one deadline (plus the handshake); generous: 5x.
    assert!(
        took < deadline * 5,
        "answered after {took:?} (deadlines {deadline:?})"
    );
    // It did wait for a slot: the slow clients held every one.
    assert!(
        took > Duration::from_millis(200),
        "answered after {took:?}: the slow clients did not hold the slots"
    );
    // The server dropped them (a client notices on its next write, up to 200 ms later).
    let t = Instant::now();
    while dropped.load(Ordering::Relaxed) == 0 && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        dropped.load(Ordering::Relaxed) >= 1,
        "the server dropped no slow client"
    );
    stop.store(true, Ordering::Relaxed);
    for s in slow {
        let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
    }
}

//! quiver-http: the one HTTP server core that every quiver server runs on (the sidecar, the
//! offline HTTP server, the registry service, the injector webhook, and the enriching sidecar's
//! gRPC port).
//!
//! Servers speak HTTP/1 (with TLS when given a certificate); [`Server::http2`] makes one speak
//! HTTP/2 with prior knowledge (h2c, plaintext) instead, which is how gRPC clients call a
//! plaintext port. [`grpc`] frames unary gRPC messages and statuses on top of it, for the server
//! here and for quiver's gRPC clients.
//!
//! What a connection goes through, in order, each step with its reason:
//!
//! 1. **A connection permit** (`max_connections`): past the limit the loop stops accepting, so
//!    the kernel's backlog (not this process's memory) holds the excess.
//! 2. **The TLS handshake**, when the server has a certificate, within `tls_handshake_timeout`:
//!    a client that never finishes it does not hold a permit forever.
//! 3. **HTTP/1 with a header deadline** (`header_read_timeout`, hyper's timer): a request head must
//!    arrive whole within it. hyper starts that timer whenever it waits for a head, so it also
//!    closes a keep-alive connection that sends nothing for that long. An HTTP/2 server instead
//!    bounds the streams one connection may have open (`max_concurrent_streams`).
//! 4. **An idle deadline** (`idle_timeout`): a connection that waits on its client (no request
//!    being worked on, or an answer the client does not read) and moves no byte for that long is
//!    dropped. A slow handler or a long poll is the server's time, not idleness.
//! 5. **The handler**, which reads the body through [`read_body`] (size limit checked before
//!    reading past it, whole body within `body_read_timeout`) and checks tokens with
//!    [`bearer_matches`] (constant time).
//!
//! Shutdown ([`Server::serve`]'s `shutdown` future resolving, e.g. on SIGTERM): [`Draining`] turns
//! on at once (readiness probes answer 503 from then on), connections are still accepted for
//! `drain_delay` (while load balancers and the kubelet notice), then the listener is closed (new
//! connections are refused), every connection is asked to finish its in-flight request and close,
//! and whatever is still open after `drain_timeout` is dropped.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod blocking;
mod body;
mod conn;
pub mod grpc;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use quiver_tls::CertReloader;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

pub use blocking::{BlockingPool, PoolError, RETRY_AFTER_SECS};
pub use body::{
    Bearer, BodyError, DISCARD_LIMIT, bearer_matches, check_bearer, discard_body, read_body,
};

/// Bounds on what clients can hold. Every field has a flag in the CLI (`quiver_cmd::ServerArgs`;
/// `max_concurrent_streams`, for the one HTTP/2 server, `quiver serve --grpc-max-streams`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections open at once; past it the server stops accepting until one closes.
    pub max_connections: usize,
    /// Longest wait for a whole request head (and for the next one on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// Longest a connection may move no byte in either direction while it waits on its client
    /// (no request being worked on, or an answer the client does not read).
    pub idle_timeout: Duration,
    /// Longest a handler waits for a request body ([`read_body`]); 408 beyond.
    pub body_read_timeout: Duration,
    /// Longest a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// How long the server keeps accepting after shutdown begins, with readiness already 503.
    pub drain_delay: Duration,
    /// How long open connections get to finish after the listener closes.
    pub drain_timeout: Duration,
    /// HTTP/2 only: most requests (streams) one connection may have in flight.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            body_read_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(10),
            max_concurrent_streams: 256,
        }
    }
}

/// The protocol a server speaks on its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge (no upgrade, no ALPN): gRPC's plaintext transport.
    Http2,
}

/// A request handler: the server's routes. Cloned once per connection.
pub trait Handler: Clone + Send + Sync + 'static {
    type Body: hyper::body::Body<Data = bytes::Bytes, Error = Self::BodyError>
        + Send
        + Unpin
        + 'static;
    type BodyError: Into<Box<dyn std::error::Error + Send + Sync>>;

    fn call(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Self::Body>> + Send;
}

/// Whether the server is shutting down. Readiness handlers answer 503 while it is on.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn start(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Connection counters, rendered into each server's `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicU64,
    open: AtomicU64,
    idle_closed: AtomicU64,
    handshake_failed: AtomicU64,
    drain_dropped: AtomicU64,
}

impl Stats {
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Prometheus text for the counters, each name prefixed with `prefix` (e.g. `quiver_sidecar`).
    pub fn render(&self, prefix: &str, out: &mut String) {
        use std::fmt::Write as _;
        let rows: [(&str, &str, &str, u64); 5] = [
            (
                "connections_accepted_total",
                "counter",
                "Connections accepted.",
                self.accepted(),
            ),
            (
                "connections_open",
                "gauge",
                "Connections open now.",
                self.open(),
            ),
            (
                "connections_idle_closed_total",
                "counter",
                "Connections closed for moving no byte within the idle timeout.",
                self.idle_closed.load(Ordering::Relaxed),
            ),
            (
                "connections_handshake_failed_total",
                "counter",
                "TLS handshakes that failed or timed out.",
                self.handshake_failed.load(Ordering::Relaxed),
            ),
            (
                "connections_drain_dropped_total",
                "counter",
                "Connections dropped at shutdown because they outlived the drain timeout.",
                self.drain_dropped.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(out, "# HELP {prefix}_{name} {help}");
            let _ = writeln!(out, "# TYPE {prefix}_{name} {kind}");
            let _ = writeln!(out, "{prefix}_{name} {value}");
        }
    }
}

/// A server: its limits, its drain flag and its counters. Build it, hand [`Server::draining`]
/// and [`Server::stats`] to the handler, then [`Server::serve`].
#[derive(Clone)]
pub struct Server {
    limits: Arc<Limits>,
    draining: Draining,
    stats: Arc<Stats>,
    tls: Option<Arc<CertReloader>>,
    protocol: Protocol,
}

impl Server {
    pub fn new(limits: Limits) -> Server {
        Server {
            limits: Arc::new(limits),
            draining: Draining::default(),
            stats: Arc::new(Stats::default()),
            tls: None,
            protocol: Protocol::Http1,
        }
    }

    /// Speak HTTP/2 with prior knowledge (h2c) instead of HTTP/1: for a plaintext gRPC port.
    /// Not with TLS (a TLS gRPC port would negotiate h2 by ALPN, which no quiver server needs).
    pub fn http2(mut self) -> Server {
        self.protocol = Protocol::Http2;
        self
    }

    /// Serve HTTPS with this certificate (reloaded when its files change).
    pub fn with_tls(mut self, certs: Arc<CertReloader>) -> Server {
        self.tls = Some(certs);
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn draining(&self) -> Draining {
        self.draining.clone()
    }

    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Serves until `shutdown` resolves, then drains (see the crate docs) and returns.
    pub async fn serve<H: Handler>(
        self,
        listener: TcpListener,
        handler: H,
        shutdown: impl Future<Output = ()>,
    ) {
        let limits = Arc::clone(&self.limits);
        let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        // Connections watch this; `true` asks them to finish their request and close.
        let (closing_tx, closing_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        let mut drain_deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        let mut shutting_down = false;
        loop {
            // Reap finished connection tasks so the set holds only open ones.
            while connections.try_join_next().is_some() {}
            // A permit first, then a connection: past the limit, the backlog holds the excess.
            // Both are cancel-safe, so shutdown can interrupt either.
            let next = async {
                let permit = Arc::clone(&permits).acquire_owned().await;
                (permit, listener.accept().await)
            };
            let stop_accepting = async {
                match drain_deadline.as_mut() {
                    Some(d) => d.await,
                    None => std::future::pending().await,
                }
            };
            let (permit, accepted) = tokio::select! {
                next = next => next,
                () = &mut shutdown, if !shutting_down => {
                    shutting_down = true;
                    self.draining.start();
                    if limits.drain_delay.is_zero() {
                        tracing::info!("shutting down: readiness answers 503");
                    } else {
                        tracing::info!(delay = ?limits.drain_delay, "shutting down: readiness answers 503; still accepting for the drain delay");
                    }
                    drain_deadline = Some(Box::pin(tokio::time::sleep(limits.drain_delay)));
                    continue;
                }
                () = stop_accepting => break,
            };
            let Ok(permit) = permit else { break };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let conn = conn::Conn {
                limits: Arc::clone(&limits),
                stats: Arc::clone(&self.stats),
                tls: self.tls.as_ref().map(|t| t.acceptor()),
                closing: closing_rx.clone(),
                peer,
                protocol: self.protocol,
            };
            let handler = handler.clone();
            connections.spawn(async move {
                let _permit = permit;
                conn.run(stream, handler).await;
            });
        }
        // New connections are refused from here on.
        drop(listener);
        let _ = closing_tx.send(true);
        let open = connections.len();
        if open > 0 {
            tracing::info!(open, timeout = ?limits.drain_timeout, "waiting for open connections to finish");
        }
        let finished = tokio::time::timeout(limits.drain_timeout, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            let left = connections.len() as u64;
            self.stats.drain_dropped.fetch_add(left, Ordering::Relaxed);
            tracing::warn!(left, "drain timeout: dropping the connections still open");
            connections.shutdown().await;
        }
    }
}

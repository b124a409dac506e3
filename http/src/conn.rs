//! One connection: TLS handshake (optional), HTTP/1 with the header deadline (or HTTP/2 with
//! prior knowledge, for gRPC), the idle deadline, and the graceful close asked for at shutdown.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::{Handler, Limits, Protocol, Stats};

pub(crate) struct Conn {
    pub limits: Arc<Limits>,
    pub stats: Arc<Stats>,
    pub tls: Option<TlsAcceptor>,
    pub closing: watch::Receiver<bool>,
    pub peer: SocketAddr,
    pub protocol: Protocol,
}

/// Counts the connection as open for as long as it lives.
struct OpenGuard(Arc<Stats>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Conn {
    pub async fn run<H: Handler>(self, stream: TcpStream, handler: H) {
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        let _open = OpenGuard(Arc::clone(&self.stats));
        let activity = Arc::new(Activity::new());
        let io = IdleIo {
            inner: stream,
            activity: Arc::clone(&activity),
        };
        match self.tls.clone() {
            None => self.http(io, activity, handler).await,
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(self.limits.tls_handshake_timeout, acceptor.accept(io))
                        .await;
                match handshake {
                    Ok(Ok(tls)) => self.http(tls, activity, handler).await,
                    Ok(Err(e)) => {
                        self.stats.handshake_failed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        self.stats.handshake_failed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                    }
                }
            }
        }
    }

    async fn http<I, H>(self, io: I, activity: Arc<Activity>, handler: H)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Handler,
    {
        let peer = self.peer;
        let tracked = Arc::clone(&activity);
        let service = service_fn(move |req| {
            let handler = handler.clone();
            let in_flight = InFlight::start(&tracked);
            async move {
                // The access log costs nothing per request unless it is enabled.
                let logged = tracing::enabled!(target: "quiver::access", tracing::Level::DEBUG)
                    .then(|| {
                        (
                            req.method().clone(),
                            req.uri().path().to_owned(),
                            Instant::now(),
                        )
                    });
                let resp = handler.call(req, peer).await;
                if let Some((method, path, started)) = logged {
                    tracing::debug!(
                        target: "quiver::access",
                        %peer,
                        %method,
                        path,
                        status = resp.status().as_u16(),
                        micros = started.elapsed().as_micros() as u64,
                    );
                }
                // The request counts as in flight until its body is sent (or dropped).
                Ok::<_, Infallible>(resp.map(|inner| Tracked {
                    inner,
                    _in_flight: in_flight,
                }))
            }
        });
        // The two protocols differ in their connection type only; the loop below is written
        // once for both.
        macro_rules! drive {
            ($conn:expr) => {{
                let conn = $conn;
                tokio::pin!(conn);
                let mut closing = self.closing;
                let mut asked_to_close = false;
                loop {
                    tokio::select! {
                        done = conn.as_mut() => {
                            if let Err(e) = done {
                                tracing::debug!(%peer, error = %e, "connection closed with an error");
                            }
                            return;
                        }
                        _ = closing.wait_for(|c| *c), if !asked_to_close => {
                            // Finish the requests in flight (if any), then close.
                            conn.as_mut().graceful_shutdown();
                            asked_to_close = true;
                        }
                        () = activity.idle_for(self.limits.idle_timeout) => {
                            self.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, timeout = ?self.limits.idle_timeout, "closing an idle connection");
                            return;
                        }
                    }
                }
            }};
        }
        match self.protocol {
            Protocol::Http1 => drive!(
                http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(self.limits.header_read_timeout)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(io), service)
            ),
            Protocol::Http2 => drive!(
                // No header deadline in HTTP/2 (streams are multiplexed); the idle deadline
                // still closes a connection that moves nothing, and the stream limit bounds
                // the requests one connection may have in flight.
                http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(self.limits.max_concurrent_streams)
                    .max_header_list_size(64 << 10)
                    .serve_connection(TokioIo::new(io), service)
            ),
        }
    }
}

/// When the connection last moved a byte (in milliseconds since it opened), how many requests
/// are being worked on, and whether the socket refuses more output (the client stopped reading).
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicU64,
    write_blocked: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Waiting on the client: nothing being worked on, or an answer it does not read.
    fn waiting_on_client(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0 || self.write_blocked.load(Ordering::Relaxed)
    }

    /// Resolves once no byte has moved for `idle` while the connection waited on its client.
    /// A handler (or a streamed answer) that takes longer is not idle: that is the server's time.
    async fn idle_for(&self, idle: std::time::Duration) {
        loop {
            let deadline = self.last() + idle;
            if deadline <= Instant::now() {
                if self.waiting_on_client() {
                    return;
                }
                tokio::time::sleep(idle).await;
                continue;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// One request being worked on, from its head until its answer's body is sent or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight.
pub(crate) struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting each byte that moves.
struct IdleIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> IdleIo<T> {
    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        let blocked = polled.is_pending();
        if self.activity.write_blocked.load(Ordering::Relaxed) != blocked {
            self.activity
                .write_blocked
                .store(blocked, Ordering::Relaxed);
        }
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.touch();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

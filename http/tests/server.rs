//! The server core against real sockets on loopback: each limit, and the drain at shutdown.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use quiver_http::{Draining, Limits, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Routes: `/ready` (503 while draining), `/slow?ms=N` (answers after N ms), `/echo` (the body,
/// at most 16 bytes).
#[derive(Clone)]
struct Routes {
    draining: Draining,
    body_timeout: Duration,
}

impl quiver_http::Handler for Routes {
    type Body = Full<Bytes>;
    type BodyError = std::convert::Infallible;

    async fn call(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<Full<Bytes>> {
        let (status, body) = match req.uri().path() {
            "/ready" if self.draining.is_on() => (503, Bytes::from_static(b"draining")),
            "/ready" => (200, Bytes::from_static(b"ready")),
            "/slow" => {
                let ms: u64 = req
                    .uri()
                    .query()
                    .and_then(|q| q.strip_prefix("ms="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                (200, Bytes::from_static(b"slow done"))
            }
            "/big" => (200, Bytes::from(vec![b'x'; 32 << 20])),
            "/echo" => match quiver_http::read_body(req, 16, self.body_timeout).await {
                Ok(b) => (200, b),
                Err(e) => {
                    use quiver_core::fault::Classified;
                    (e.kind().http_status(), Bytes::from(e.to_string()))
                }
            },
            _ => (404, Bytes::new()),
        };
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        resp
    }
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
    stats: std::sync::Arc<quiver_http::Stats>,
}

async fn start(limits: Limits) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(limits);
    let routes = Routes {
        draining: server.draining(),
        body_timeout: server.limits().body_read_timeout,
    };
    let stats = server.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(server.serve(listener, routes, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        done,
        stats,
    }
}

fn short_limits() -> Limits {
    Limits {
        max_connections: 8,
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        body_read_timeout: Duration::from_millis(300),
        tls_handshake_timeout: Duration::from_millis(300),
        drain_delay: Duration::ZERO,
        drain_timeout: Duration::from_secs(5),
        max_concurrent_streams: 4,
    }
}

/// Sends one request on `stream` and reads one response (Content-Length framed).
async fn exchange(stream: &mut TcpStream, request: &str) -> (u16, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(stream).await.expect("a response")
}

async fn read_response(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let head = &text[..head_end];
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + len {
                let status = head[9..12].parse().unwrap();
                return Some((status, text[head_end + 4..head_end + 4 + len].to_owned()));
            }
        }
    }
}

/// True when the server closed the connection (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

const GET_READY: &str = "GET /ready HTTP/1.1\r\nhost: x\r\n\r\n";

#[tokio::test]
async fn serves_keep_alive_requests() {
    let server = start(short_limits()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..3 {
        assert_eq!(exchange(&mut s, GET_READY).await, (200, "ready".into()));
    }
    assert_eq!(server.stats.accepted(), 1);
}

#[tokio::test]
async fn a_request_head_that_never_completes_is_cut_off() {
    let server = start(short_limits()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /ready HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Keep trickling header bytes: the idle deadline never fires, the header deadline does.
    let started = Instant::now();
    let mut closed = false;
    for _ in 0..20 {
        if s.write_all(b"x-a: b\r\n").await.is_err() {
            closed = true;
            break;
        }
        if closed_within(&mut s, Duration::from_millis(100)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "the header deadline must close the connection");
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn a_silent_connection_is_closed() {
    let server = start(short_limits()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(exchange(&mut s, GET_READY).await.0, 200);
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn a_body_that_stalls_gets_408() {
    let limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        ..short_limits()
    };
    let server = start(limits).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let (status, body) = exchange(
        &mut s,
        "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nab",
    )
    .await;
    assert_eq!(status, 408, "{body}");
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answer_is_dropped() {
    let limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        ..short_limits()
    };
    let server = start(limits).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Read nothing: the answer fills the socket buffers, the server's writes block, and the
    // idle deadline closes the connection.
    let mut closed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut metrics = String::new();
        server.stats.render("t", &mut metrics);
        if metrics.contains("t_connections_idle_closed_total 1") {
            closed = true;
            break;
        }
    }
    assert!(closed, "a blocked writer must count as idle");
}

#[tokio::test]
async fn a_slow_handler_is_not_idle() {
    let server = start(short_limits()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    // 900 ms of work, longer than the 600 ms idle timeout, with no byte moving meanwhile.
    let answer = exchange(&mut s, "GET /slow?ms=900 HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(answer, (200, "slow done".into()));
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let server = start(short_limits()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let (status, _) = exchange(
        &mut s,
        "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(status, 200);
    // Declared too large: refused before the body is read.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let (status, body) = exchange(
        &mut s,
        "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 17\r\n\r\n",
    )
    .await;
    assert_eq!((status, body.as_str()), (413, "request body over 16 bytes"));
    // Chunked, no length declared: cut off at the limit.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let (status, _) = exchange(
        &mut s,
        "POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n14\r\n01234567890123456789\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 413);
}

/// Writes `head` and then `total` bytes of body in 1 MiB pieces (as HTTP/1.1 chunks when
/// `chunked`), the way a client that reads nothing until it has sent everything does; returns
/// whether every byte went out, and the answer read after.
async fn write_all_then_read(
    addr: SocketAddr,
    head: &str,
    total: usize,
    chunked: bool,
) -> (bool, Option<(u16, String)>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let piece = vec![b'x'; 1 << 20];
    let mut sent = s.write_all(head.as_bytes()).await.is_ok();
    let mut left = total;
    while sent && left > 0 {
        let n = left.min(piece.len());
        sent = if chunked {
            let framed = [format!("{n:x}\r\n").as_bytes(), &piece[..n], b"\r\n"].concat();
            s.write_all(&framed).await.is_ok()
        } else {
            s.write_all(&piece[..n]).await.is_ok()
        };
        left -= n;
    }
    if sent && chunked {
        sent = s.write_all(b"0\r\n\r\n").await.is_ok();
    }
    (sent, read_response(&mut s).await)
}

/// Issue 19: a client that writes a whole 200 MB body before reading saw a broken pipe (the
/// server answered 413 and closed with the body unread, so the kernel reset the connection).
/// The refused body is now drained while the 413 goes out.
#[tokio::test]
async fn a_client_writing_a_huge_body_before_reading_gets_its_413() {
    let server = start(Limits {
        body_read_timeout: Duration::from_secs(60),
        ..short_limits()
    })
    .await;
    let total = 200 << 20;
    let head = format!("POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: {total}\r\n\r\n");
    let (sent, answer) = write_all_then_read(server.addr, &head, total, false).await;
    assert!(sent, "the client could not write its whole body");
    assert_eq!(answer, Some((413, "request body over 16 bytes".to_owned())));
    // No length declared: cut off at the limit, the rest drained the same way.
    let head = "POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
    let (sent, answer) = write_all_then_read(server.addr, head, total, true).await;
    assert!(sent, "the client could not write its whole chunked body");
    assert_eq!(answer.map(|(status, _)| status), Some(413));
    // The server is still there for others.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(exchange(&mut s, GET_READY).await.0, 200);
}

#[tokio::test]
async fn connections_past_the_limit_wait_for_a_free_slot() {
    let limits = Limits {
        max_connections: 1,
        ..short_limits()
    };
    let server = start(limits).await;
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(exchange(&mut first, GET_READY).await.0, 200);
    // The second connection completes the TCP handshake (the backlog) but is not served.
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    second.write_all(GET_READY.as_bytes()).await.unwrap();
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), second.read(&mut byte))
            .await
            .is_err(),
        "served past the connection limit"
    );
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(2), read_response(&mut second))
        .await
        .expect("served once the first connection closed");
    assert_eq!(answer.map(|a| a.0), Some(200));
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_refuses_new_connections() {
    let limits = Limits {
        drain_delay: Duration::from_millis(300),
        ..short_limits()
    };
    let mut server = start(limits).await;
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    busy.write_all(b"GET /slow?ms=700 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.stop.take().unwrap().send(()).unwrap();
    // During the drain delay: still accepting, readiness already 503.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut probe = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(exchange(&mut probe, GET_READY).await.0, 503);
    // After it: new connections are refused, the request in flight still gets its answer.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(TcpStream::connect(server.addr).await.is_err());
    let answer = read_response(&mut busy).await;
    assert_eq!(answer, Some((200, "slow done".into())));
    tokio::time::timeout(Duration::from_secs(2), server.done)
        .await
        .expect("serve returns once connections are done")
        .unwrap();
}

#[tokio::test]
async fn the_drain_timeout_bounds_shutdown() {
    let limits = Limits {
        drain_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(30),
        ..short_limits()
    };
    let mut server = start(limits).await;
    let mut stuck = TcpStream::connect(server.addr).await.unwrap();
    stuck
        .write_all(b"GET /slow?ms=20000 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    server.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(3), server.done)
        .await
        .expect("serve returns after the drain timeout")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(closed_within(&mut stuck, Duration::from_secs(1)).await);
    let mut metrics = String::new();
    server.stats.render("t", &mut metrics);
    assert!(
        metrics.contains("t_connections_drain_dropped_total 1"),
        "{metrics}"
    );
}

//! The HTTP/2 (h2c) mode and the gRPC framing over real loopback: a unary gRPC echo served by
//! the server core, called with hyper's HTTP/2 client as a gRPC client calls it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use quiver_http::grpc::{self, GrpcBody};
use quiver_http::{Limits, Server};
use tokio::net::{TcpListener, TcpStream};

/// `/echo.Echo/Say` answers its message; a bad frame is INVALID_ARGUMENT; the body limit is
/// 64 bytes (RESOURCE_EXHAUSTED past it).
#[derive(Clone)]
struct Echo;

impl quiver_http::Handler for Echo {
    type Body = GrpcBody;
    type BodyError = std::convert::Infallible;

    async fn call(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<GrpcBody> {
        if req.uri().path() != "/echo.Echo/Say" {
            return grpc::error(grpc::code::UNIMPLEMENTED, "no such method");
        }
        match quiver_http::read_body(req, 64, Duration::from_secs(5)).await {
            Err(e) => grpc::error(grpc::code::RESOURCE_EXHAUSTED, &e.to_string()),
            Ok(body) => match grpc::unframe(body) {
                Ok(message) => grpc::ok(&message),
                Err(e) => grpc::error(grpc::code::INVALID_ARGUMENT, &format!("request: {e}")),
            },
        }
    }
}

async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(Limits::default()).http2();
    tokio::spawn(server.serve(listener, Echo, std::future::pending()));
    addr
}

/// One unary call: (gRPC status and message, the message answered).
async fn call(addr: SocketAddr, path: &str, body: Bytes) -> ((i32, String), Bytes) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(body))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    if let Some(status) = grpc::status(resp.headers()) {
        return (status, Bytes::new());
    }
    let collected = resp.into_body().collect().await.unwrap();
    let status = grpc::status(collected.trailers().expect("trailers")).expect("grpc-status");
    (status, grpc::unframe(collected.to_bytes()).unwrap())
}

#[tokio::test]
async fn unary_calls_over_h2c_answer_with_a_message_and_a_status_trailer() {
    let addr = start().await;
    let (status, message) = call(addr, "/echo.Echo/Say", grpc::frame(b"hello")).await;
    assert_eq!(status, (0, String::new()));
    assert_eq!(message, Bytes::from_static(b"hello"));
    // Errors are trailers-only, the message percent-coded on the wire and decoded here.
    let (status, _) = call(addr, "/echo.Echo/Say", Bytes::from_static(&[1, 0, 0, 0, 0])).await;
    assert_eq!(status.0, grpc::code::INVALID_ARGUMENT);
    assert!(status.1.contains("compressed"), "{status:?}");
    let (status, _) = call(addr, "/echo.Echo/Say", grpc::frame(&[b'x'; 100])).await;
    assert_eq!(status.0, grpc::code::RESOURCE_EXHAUSTED);
    assert!(status.1.contains("64 bytes"), "{status:?}");
    let (status, _) = call(addr, "/other.Service/X", grpc::frame(b"")).await;
    assert_eq!(status.0, grpc::code::UNIMPLEMENTED);
}

#[tokio::test]
async fn an_http1_request_on_the_h2c_port_is_not_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = start().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /echo.Echo/Say HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    assert!(
        !out.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
}

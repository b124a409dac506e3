//! The ceiling of an enriching sidecar: a proxy on the sidecar's own server core
//! (`quiver_http`) and its own model-server client (`quiver_sidecar::enrich::Upstream`: pooled
//! keep-alive HTTP/1, the same deadline and answer limit) that forwards every request as it
//! came, with no lookup, no parsing and no rewriting. benches/kserve/run.sh sends it the
//! direct leg's requests (features already in the body): what it adds over calling the model
//! directly is the cost of the second HTTP exchange alone, which no enrichment can go below.
//!
//! Usage: bare_proxy PORT UPSTREAM_URL

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use quiver_sidecar::enrich::upstream::{self, Upstream, UpstreamConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone)]
struct Proxy(std::sync::Arc<Upstream>);

impl quiver_http::Handler for Proxy {
    type Body = Full<Bytes>;
    type BodyError = std::convert::Infallible;

    async fn call(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<Full<Bytes>> {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        // As the sidecar does: the headers kept for the forward, the body read whole.
        let (method, headers) = (req.method().clone(), req.headers().clone());
        let forwarded = match quiver_http::read_body(req, 64 << 20, Duration::from_secs(30)).await {
            Ok(body) => self.0.call(method, &path, &headers, None, body).await,
            Err(e) => {
                let mut resp = Response::new(Full::new(Bytes::from(e.to_string())));
                *resp.status_mut() = hyper::StatusCode::BAD_REQUEST;
                return resp;
            }
        };
        match forwarded {
            Ok(answer) => upstream::respond(answer),
            Err(e) => {
                let mut resp = Response::new(Full::new(Bytes::from(e.to_body())));
                *resp.status_mut() = hyper::StatusCode::from_u16(e.status())
                    .unwrap_or(hyper::StatusCode::BAD_GATEWAY);
                resp
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bare_proxy PORT UPSTREAM_URL";
    let port: u16 = args.get(1).ok_or(usage)?.parse()?;
    let upstream = UpstreamConfig::parse(args.get(2).ok_or(usage)?)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
            let proxy = Proxy(std::sync::Arc::new(Upstream::new(upstream)));
            quiver_http::Server::new(quiver_http::Limits::default())
                .serve(listener, proxy, std::future::pending())
                .await;
            Ok(())
        })
}

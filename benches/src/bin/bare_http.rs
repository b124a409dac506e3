//! The HTTP ceiling of the machine: a hyper server (same stack and settings as the sidecar) that
//! answers every request with a fixed body, for benches/serve.sh to compare the sidecar against.
//!
//! Usage: bare_http PORT BODY_FILE [WORKERS]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args
        .get(1)
        .ok_or("usage: bare_http PORT BODY_FILE [WORKERS]")?
        .parse()?;
    let body = Bytes::from(std::fs::read(args.get(2).ok_or("BODY_FILE missing")?)?);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(w) = args.get(3) {
        rt.worker_threads(w.parse()?);
    }
    rt.build()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let body = Arc::new(body);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let body = Arc::clone(&body);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let body = Arc::clone(&body);
                    async move {
                        // Read the request body as the sidecar does.
                        let _ = req.into_body().collect().await;
                        let mut resp = Response::new(Full::new(Bytes::clone(&body)));
                        resp.headers_mut().insert(
                            "content-type",
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

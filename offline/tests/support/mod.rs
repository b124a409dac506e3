//! What the server tests share: a repo with a registry file and a local Parquet source, the
//! offline HTTP server on port 0, and a plain HTTP/1.1 request.

#![allow(dead_code)] // each test file uses part of it

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
use parquet::arrow::ArrowWriter;
use quiver_offline::flight::{RegistryPlace, RegistrySource};
use quiver_offline::historical::{EngineOptions, HistoricalEngine};
use quiver_offline::http::HttpState;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub const PROJECT: &str = "errs";

/// Seconds since 2026-01-01T00:00:00Z at hour `h`.
pub fn at(h: i64) -> i64 {
    1_767_225_600 + h * 3600
}

/// A repo whose registry holds `definitions`, with `data/driver.parquet` (drivers 1..=rows,
/// one row each at hour 0).
pub fn repo(definitions: &str, rows: i64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let desired =
        quiver_registry::definitions::parse(&[("features.yaml", definitions)], PROJECT).unwrap();
    let now = quiver_core::time::Timestamp::default();
    let mut file = quiver_core::registry::RegistryFile::empty();
    quiver_registry::apply::apply(&mut file, &desired, now).unwrap();
    quiver_registry::store::write_atomic(&dir.path().join("registry.db"), &file.encode("t", now))
        .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "driver_id",
            Arc::new(Int64Array::from_iter_values(1..=rows)),
        ),
        (
            "event_timestamp",
            Arc::new(
                TimestampMicrosecondArray::from(vec![at(0) * 1_000_000; rows as usize])
                    .with_timezone("UTC"),
            ),
        ),
        ("trips", Arc::new(Int64Array::from_iter_values(0..rows))),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let out = std::fs::File::create(data.join("driver.parquet")).unwrap();
    let mut w = ArrowWriter::try_new(out, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    dir
}

pub fn registry(repo: &Path) -> RegistrySource {
    RegistrySource {
        registry: RegistryPlace::File(repo.join("registry.db")),
        project: PROJECT.to_owned(),
        repo_dir: repo.to_path_buf(),
    }
}

/// Starts the offline HTTP server on a free port; returns its address.
pub async fn start_http(repo: &Path, options: &EngineOptions) -> std::net::SocketAddr {
    start_http_with(
        repo,
        options,
        quiver_offline::budget::MemoryBudget::new(
            quiver_offline::budget::DEFAULT_BYTES,
            quiver_offline::budget::DEFAULT_WAIT,
        ),
    )
    .await
}

/// [`start_http`] with the upload memory `budget`.
pub async fn start_http_with(
    repo: &Path,
    options: &EngineOptions,
    budget: quiver_offline::budget::MemoryBudget,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(HttpState {
        engine: HistoricalEngine::new(options).unwrap(),
        registry: registry(repo),
        token: None,
        transform: None,
        budget,
    });
    tokio::spawn(quiver_offline::http::serve(
        listener,
        state,
        quiver_http::Limits::default(),
        std::future::pending(),
    ));
    addr
}

/// POSTs `body` to `path`; returns the status and the body (JSON errors parsed).
pub async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// A request body for `features` over two entity rows.
pub fn request(features: &[&str]) -> String {
    serde_json::json!({
        "features": features,
        "entities": {
            "driver_id": [1, 2],
            "event_timestamp": ["2026-01-01T05:00:00Z", "2026-01-01T06:00:00Z"],
        },
    })
    .to_string()
}

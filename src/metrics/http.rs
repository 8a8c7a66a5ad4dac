//! A deliberately tiny HTTP/1.1 server for `GET /metrics` and `GET /health`.
//!
//! Written here rather than taken from the exporter so that each pglittle
//! instance serves its own registry on its own address, with nothing
//! global. One request per connection (`Connection: close`), a bounded
//! request head, and a read timeout: scrapers are simple clients.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the endpoint serves; implemented by the app, which sees every room.
pub trait Endpoint: Send + Sync + 'static {
    /// The Prometheus text exposition, freshly collected.
    fn metrics(&self) -> String;
    /// True when pglittle can serve clients (not shutting down, a primary up).
    fn healthy(&self) -> bool;
}

const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until `stop` completes.
pub async fn serve(
    listener: TcpListener,
    endpoint: Arc<dyn Endpoint>,
    stop: impl Future<Output = ()> + Send,
) {
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(READ_TIMEOUT, answer(stream, endpoint)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, endpoint: Arc<dyn Endpoint>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > MAX_HEAD {
            return respond(&mut stream, 431, "text/plain", "request head too large\n").await;
        }
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let body = endpoint.metrics();
            respond(&mut stream, 200, "text/plain; version=0.0.4", &body).await
        }
        ("GET", "/health") => {
            if endpoint.healthy() {
                respond(&mut stream, 200, "text/plain", "ok\n").await
            } else {
                respond(&mut stream, 503, "text/plain", "unavailable\n").await
            }
        }
        ("GET", _) => respond(&mut stream, 404, "text/plain", "try /metrics or /health\n").await,
        _ => respond(&mut stream, 405, "text/plain", "only GET is supported\n").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// A minimal client for tests and `pglittle` health checks: GET `path`,
/// returning the status and body.
pub async fn get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

//! A minimal HTTP endpoint for Prometheus: `GET /metrics` answers the text
//! the `render` closure returns; anything else is 404. Enough for scraping
//! without an HTTP framework.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds `addr` and serves until the task is dropped; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    render: Render,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let render = render.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let ok =
                    request.starts_with(b"GET /metrics ") || request.starts_with(b"GET /metrics?");
                let (status, body) = if ok {
                    ("200 OK", render())
                } else {
                    ("404 Not Found", "not found\n".to_string())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok((bound, task))
}

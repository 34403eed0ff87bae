//! A minimal HTTP endpoint for Prometheus: `GET /metrics` answers what the
//! writers add to one exposition (each family once, however many nodes
//! `sluice up` runs); anything else is 404. Enough for scraping without an
//! HTTP framework. The metrics are listed in `docs/METRICS.md`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_broker::Bus;
use sluice_schema::metrics::Exposition;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Adds one component's metrics.
pub type Writer = Arc<dyn Fn(&mut Exposition) + Send + Sync>;

/// The text of every writer's metrics.
pub fn render(writers: &[Writer]) -> String {
    let mut out = Exposition::new();
    for write in writers {
        write(&mut out);
    }
    out.render()
}

/// Binds `addr` and serves until the task is dropped (over TLS with
/// `tls`); returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    writers: Vec<Writer>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let writers = Arc::new(writers);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let writers = writers.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => answer(stream, &writers).await,
                    Some(tls) => {
                        let accepted =
                            tokio::time::timeout(Duration::from_secs(10), tls.accept(stream)).await;
                        if let Ok(Ok(stream)) = accepted {
                            answer(stream, &writers).await;
                        }
                    }
                }
            });
        }
    });
    Ok((bound, task))
}

/// Reads one request and answers it.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, writers: &[Writer]) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let ok = request.starts_with(b"GET /metrics ") || request.starts_with(b"GET /metrics?");
    let (status, body) = if ok {
        ("200 OK", render(writers))
    } else {
        ("404 Not Found", "not found\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Serves `writers` at `addr` for the life of the process: plain HTTP on a
/// loopback address, HTTPS with `tls` elsewhere (refused without it). The
/// bound address and the scheme.
pub async fn serve_on(
    addr: SocketAddr,
    writers: Vec<Writer>,
    tls: Option<&crate::tls::ServerTls>,
) -> anyhow::Result<(SocketAddr, &'static str)> {
    use anyhow::Context as _;
    let acceptor = if addr.ip().is_loopback() {
        None
    } else {
        let tls = tls.with_context(|| {
            format!("metrics on {addr} (not a loopback address) are served over TLS only: pass --tls-cert and --tls-key")
        })?;
        Some(tls.acceptor()?)
    };
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let (bound, _) = serve(addr, writers, acceptor)
        .await
        .with_context(|| format!("failed to serve metrics on {addr}"))?;
    Ok((bound, scheme))
}

/// The bus's end offsets and the consumer groups' lag, refreshed every
/// `every` in the background (asking the bus is async; scrapes are not).
pub fn bus_writer(bus: Arc<dyn Bus>, groups: &'static [&'static str], every: Duration) -> Writer {
    let last: Arc<Mutex<Option<sluice_broker::BusStatus>>> = Arc::default();
    let weak = Arc::downgrade(&last);
    tokio::spawn(async move {
        loop {
            let status = bus.status(groups).await;
            // Ends once the writer (every scrape's reference) is gone.
            let Some(slot) = weak.upgrade() else { return };
            match status {
                Ok(status) => *slot.lock().unwrap() = Some(status),
                Err(e) => tracing::debug!(error = %e, "bus status for metrics failed"),
            }
            drop(slot);
            tokio::time::sleep(every).await;
        }
    });
    Arc::new(move |out: &mut Exposition| {
        let Some(status) = last.lock().unwrap().clone() else {
            return;
        };
        for topic in &status.topics {
            let end: u64 = topic.partitions.iter().map(|p| p.end_offset).sum();
            out.gauge(
                "sluice_bus_end_offset",
                "records ever written to a topic (sum of partition end offsets)",
                &[("topic", &topic.topic)],
                end,
            );
        }
        for group in &status.groups {
            out.gauge(
                "sluice_bus_group_lag_records",
                "records a consumer group has not committed yet",
                &[("group", &group.group)],
                group.lag,
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family a Sluice process can serve is in docs/METRICS.md.
    #[test]
    fn every_metric_is_documented() {
        let doc = include_str!("../docs/METRICS.md");
        let mut out = Exposition::new();
        sluice_shipper::metrics::Metrics::default().write("n", &mut out);
        sluice_scheduler::agent::AgentMetrics::default().write("n", &mut out);
        sluice_query::metrics::write(
            &mut out,
            Some(&Default::default()),
            Some(&Default::default()),
        );
        sluice_query::metrics::write_query(&mut out, &Default::default());
        let text = out.render();
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        // Families written from live state (scheduler, bus), by name.
        let sources = [
            include_str!("scheduler_cmd.rs"),
            include_str!("metrics_http.rs"),
        ];
        for source in sources {
            for literal in source.split('"').skip(1).step_by(2) {
                if literal.starts_with("sluice_") && !literal.contains(' ') {
                    names.push(literal);
                }
            }
        }
        assert!(names.len() > 60, "{names:?}");
        for name in names {
            assert!(
                doc.contains(&format!("`{name}")),
                "{name} is not in docs/METRICS.md"
            );
        }
    }
}

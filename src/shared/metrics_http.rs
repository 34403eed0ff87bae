//! The HTTP endpoint for Prometheus (hyper, the HTTP stack tonic already
//! brings): `GET /metrics` answers what the writers add to one exposition
//! (each family once, however many nodes `sluice up` runs); anything else
//! is 404. Plain HTTP on loopback, HTTPS elsewhere. The metrics are listed
//! in `docs/METRICS.md`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_broker::Bus;
use sluice_scheduler::scheduler::SchedulerService;
use sluice_schema::metrics::Exposition;

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
/// `tls`); returns the bound address. HTTP/1 by hyper: `GET /metrics`, 404
/// for anything else.
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
                    None => answer(stream, writers).await,
                    Some(tls) => {
                        let accepted =
                            tokio::time::timeout(Duration::from_secs(10), tls.accept(stream)).await;
                        if let Ok(Ok(stream)) = accepted {
                            answer(stream, writers).await;
                        }
                    }
                }
            });
        }
    });
    Ok((bound, task))
}

/// Serves one connection.
async fn answer<S>(stream: S, writers: Arc<Vec<Writer>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let writers = writers.clone();
            async move {
                let found =
                    request.method() == hyper::Method::GET && request.uri().path() == "/metrics";
                let response = if found {
                    hyper::Response::builder()
                        .header(
                            hyper::header::CONTENT_TYPE,
                            sluice_schema::metrics::CONTENT_TYPE,
                        )
                        .body(http_body_util::Full::new(bytes::Bytes::from(render(
                            &writers,
                        ))))
                } else {
                    hyper::Response::builder()
                        .status(hyper::StatusCode::NOT_FOUND)
                        .body(http_body_util::Full::new(bytes::Bytes::from_static(
                            b"not found\n",
                        )))
                };
                Ok::<_, std::convert::Infallible>(response.expect("a valid response"))
            }
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "metrics connection ended");
    }
}

/// Serves `writers` at `addr` for the life of the process: plain HTTP on a
/// loopback address, HTTPS with `tls` elsewhere (refused without it). The
/// bound address and the scheme.
pub async fn serve_on(
    addr: SocketAddr,
    writers: Vec<Writer>,
    tls: Option<&crate::shared::tls::ServerTls>,
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

/// The node directory's shippers, for `/metrics`.
pub fn directory_writer(
    directory: Arc<crate::shared::directory::Directory>,
) -> crate::shared::metrics_http::Writer {
    use sluice_schema::metrics::Kind;
    const SHIPPERS: &str = "shippers registered in the node directory, by state";
    const LAG: &str =
        "bytes a registered shipper's files hold that the bus has not acknowledged, as last heard";
    const AGE: &str = "seconds since a registered shipper's last heartbeat";
    Arc::new(move |out| {
        let now = sluice_scheduler::scheduler::service::now_unix_nanos();
        let shippers = directory.snapshot(now);
        let stale = shippers.iter().filter(|s| s.stale).count() as u64;
        let live = shippers.len() as u64 - stale;
        out.gauge(
            "sluice_directory_shippers",
            SHIPPERS,
            &[("state", "live")],
            live,
        );
        out.gauge(
            "sluice_directory_shippers",
            SHIPPERS,
            &[("state", "stale")],
            stale,
        );
        out.declare("sluice_directory_shipper_lag_bytes", Kind::Gauge, LAG);
        out.declare(
            "sluice_directory_shipper_heartbeat_age_seconds",
            Kind::Gauge,
            AGE,
        );
        for info in &shippers {
            let h = info.heartbeat.clone().unwrap_or_default();
            let labels = [("host", h.host.as_str()), ("layout", h.layout.as_str())];
            out.gauge(
                "sluice_directory_shipper_lag_bytes",
                LAG,
                &labels,
                h.lag_bytes,
            );
            let age = now.saturating_sub(info.last_heartbeat_unix_nanos) as f64 / 1e9;
            out.gauge(
                "sluice_directory_shipper_heartbeat_age_seconds",
                AGE,
                &labels,
                age,
            );
        }
    })
}

/// Jobs by state, instances by task state and nodes by liveness, for
/// `/metrics`.
pub fn scheduler_writer(scheduler: SchedulerService) -> crate::shared::metrics_http::Writer {
    use std::collections::BTreeMap;
    Arc::new(move |out| {
        let (jobs, nodes) = scheduler.with_core(|core| (core.list(&|_| true), core.nodes()));
        let mut job_states = BTreeMap::<&str, u64>::new();
        let mut task_states = BTreeMap::<String, u64>::new();
        for state in ["running", "killing", "killed", "finished"] {
            job_states.insert(state, 0);
        }
        for job in &jobs {
            *job_states.entry(job.state.as_str()).or_default() += 1;
            for i in &job.instances {
                *task_states
                    .entry(crate::shared::format::state_name(i.state))
                    .or_default() += 1;
            }
        }
        for (state, n) in job_states {
            out.gauge(
                "sluice_scheduler_jobs",
                "jobs, by state",
                &[("state", state)],
                n,
            );
        }
        out.declare(
            "sluice_scheduler_instances",
            sluice_schema::metrics::Kind::Gauge,
            "job instances, by the state of their current task",
        );
        for (state, n) in task_states {
            out.gauge("sluice_scheduler_instances", "", &[("state", &state)], n);
        }
        let alive = nodes.iter().filter(|n| n.alive).count();
        for (state, n) in [("alive", alive), ("silent", nodes.len() - alive)] {
            out.gauge(
                "sluice_scheduler_nodes",
                "nodes known to the scheduler, alive or silent",
                &[("state", state)],
                n,
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
        let doc = include_str!("../../docs/METRICS.md");
        let mut out = Exposition::new();
        sluice_shipper::metrics::Metrics::default().write("n", &mut out);
        sluice_scheduler::agent::AgentMetrics::default().write("n", &mut out);
        sluice_archiver::metrics::write(
            &mut out,
            Some(&Default::default()),
            Some(&Default::default()),
        );
        sluice_query::metrics::write(&mut out, &Default::default());
        let text = out.render();
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        // Families written from live state (scheduler, bus), by name.
        let sources = [include_str!("metrics_http.rs")];
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

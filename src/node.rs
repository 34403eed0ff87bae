//! A node: the shipper of one sandbox root with its Tail service (and, with
//! the scheduler, its agent). `sluice up --nodes N` runs N of them in one
//! process, each with its own root under `DATA_DIR/nodes/`; `sluice
//! shipper --listen` serves one shipper's Tail service the same way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use sluice_broker::Bus;
use sluice_schema::auth::{AuthInterceptor, Tokens};
use sluice_schema::pb::tail_server::TailServer;
use sluice_shipper::layout::LayoutKind;
use sluice_shipper::{Shipper, ShipperConfig, TailService};
use tokio::sync::oneshot;

/// Serves `service` on `listen` until the returned sender is dropped or
/// fired; returns the bound address.
pub async fn serve_tail(
    service: TailService,
    tokens: Arc<Tokens>,
    listen: SocketAddr,
) -> anyhow::Result<(SocketAddr, oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("failed to listen on {listen} for the Tail service"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_service(TailServer::with_interceptor(
            service,
            AuthInterceptor::new(tokens),
        ))
        .serve_with_incoming_shutdown(crate::up::incoming(listener), async {
            let _ = stopped.await;
        });
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "tail service failed");
        }
    });
    Ok((addr, stop))
}

/// What `sluice status` shows of a node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub name: String,
    pub root: PathBuf,
    /// `http://ADDR` of its Tail service.
    pub tail: String,
}

/// A node's live figures for the admin service.
#[derive(Clone)]
pub struct NodeStatus {
    pub info: NodeInfo,
    pub metrics: Arc<sluice_shipper::metrics::Metrics>,
}

impl NodeStatus {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.info.name,
            "root": self.info.root,
            "tail": self.info.tail,
            "files": self.metrics.files_tracked.get(),
            "lines_shipped": self.metrics.lines_read.get(),
            "lag_bytes": self.metrics.lag_bytes.get(),
        })
    }
}

pub struct Node {
    pub info: NodeInfo,
    shipper: Shipper,
    stop_tail: oneshot::Sender<()>,
}

impl Node {
    /// Node `name` with its sandboxes in `DIR/sandboxes` and its state in
    /// `DIR/shipper`, `DIR` being `DATA_DIR/nodes/NAME`.
    pub async fn start(
        name: &str,
        dir: PathBuf,
        bus: Arc<dyn Bus>,
        tokens: Arc<Tokens>,
        listen: SocketAddr,
    ) -> anyhow::Result<Node> {
        let root = dir.join("sandboxes");
        std::fs::create_dir_all(&root)
            .with_context(|| format!("failed to create {}", root.display()))?;
        let config = ShipperConfig::new(name, LayoutKind::Native, &root, dir.join("shipper"));
        let shipper = Shipper::start(config, bus)
            .with_context(|| format!("failed to start the shipper of {name}"))?;
        let (addr, stop_tail) = serve_tail(shipper.tail_service(), tokens, listen).await?;
        Ok(Node {
            info: NodeInfo {
                name: name.to_string(),
                root,
                tail: format!("http://{addr}"),
            },
            shipper,
            stop_tail,
        })
    }

    /// The node as `sluice status` shows it, read when asked.
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            info: self.info.clone(),
            metrics: self.shipper.metrics(),
        }
    }

    pub async fn stop(self) {
        let _ = self.stop_tail.send(());
        self.shipper.shutdown().await;
    }
}

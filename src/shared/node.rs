//! A node: the agent that runs the scheduler's tasks in sandboxes and the
//! shipper that tails them, behind one gRPC server (the Tail and Node
//! services). `sluice up --nodes N` runs N of them in one process, each
//! with its own root under `DATA_DIR/nodes/`; `sluice node` runs one;
//! `sluice shipper --listen` serves a lone shipper's Tail service.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use anyhow::Context;
use serde::Serialize;
use sluice_broker::{Bus, BusConfig};
use sluice_scheduler::agent::{Agent, AgentConfig, AgentMetrics, ShipState, ShippedFile};
use sluice_scheduler::gc::GcConfig;
use sluice_scheduler::scheduler::service::now_unix_nanos;
use sluice_schema::audit::Audit;
use sluice_schema::auth::TokenStore;
use sluice_schema::pb::node_server::NodeServer;
use sluice_schema::pb::tail_server::TailServer;
use sluice_schema::topics;
use sluice_shipper::layout::LayoutKind;
use sluice_shipper::{Shipper, ShipperConfig, ShipperHandle, TailService};
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;

use crate::shared::serve::{Guard, MAX_MESSAGE_BYTES};
use crate::shared::tls::ServerTls;

/// Serves the Tail service (and the Node service, if given) on `listener`,
/// over TLS, until the returned sender fires or is dropped.
pub fn serve(
    listener: tokio::net::TcpListener,
    tail: TailService,
    node: Option<sluice_scheduler::agent::NodeService>,
    guard: &Guard,
) -> anyhow::Result<oneshot::Sender<()>> {
    let (stop, stopped) = oneshot::channel::<()>();
    let tail = TailServer::new(tail.with_audit(guard.audit.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let node = node.map(|n| {
        NodeServer::new(n.with_audit(guard.audit.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    });
    let server = guard
        .builder()?
        .add_service(InterceptedService::new(tail, guard.auth("sluice.v1.Tail")))
        .add_optional_service(
            node.map(|n| InterceptedService::new(n, guard.auth("sluice.v1.Node"))),
        )
        .serve_with_incoming_shutdown(crate::shared::serve::incoming(listener), async {
            let _ = stopped.await;
        });
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "node service failed");
        }
    });
    Ok(stop)
}

/// Serves a lone shipper's Tail service on `listen`; returns the bound
/// address and the sender that stops it.
pub async fn serve_tail(
    service: TailService,
    guard: &Guard,
    listen: SocketAddr,
) -> anyhow::Result<(SocketAddr, oneshot::Sender<()>)> {
    let listener = bind(listen).await?;
    let addr = listener.local_addr()?;
    Ok((addr, serve(listener, service, None, guard)?))
}

async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("failed to listen on {listen} for the node's services"))
}

/// What `sluice status` shows of a node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub name: String,
    pub root: PathBuf,
    /// `https://ADDR` of its Tail and Node services.
    pub tail: String,
}

/// A node's live figures for the admin service.
#[derive(Clone)]
pub struct NodeStatus {
    pub info: NodeInfo,
    pub metrics: Arc<sluice_shipper::metrics::Metrics>,
    pub agent: Option<Arc<AgentMetrics>>,
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
            "agent": self.agent.as_ref().map(|a| {
                let get = |v: &std::sync::atomic::AtomicU64| v.load(Relaxed);
                serde_json::json!({
                    "tasks_running": get(&a.tasks_running),
                    "sandboxes": get(&a.sandboxes),
                    "quota_kills": get(&a.quota_kills),
                    "disk_used_bytes": get(&a.disk_used_bytes),
                    "disk_total_bytes": get(&a.disk_total_bytes),
                    "gc_passes": get(&a.gc_passes),
                    "gc_sandboxes_deleted": get(&a.gc_sandboxes_deleted),
                    "gc_bytes_freed": get(&a.gc_bytes_freed),
                    "gc_data_loss_bytes": get(&a.gc_data_loss_bytes),
                    "gc_last_pass_unix_nanos": a.gc_last_pass_unix_nanos.load(Relaxed),
                    "scheduler_unreachable": get(&a.scheduler_unreachable) == 1,
                })
            }),
        })
    }

    /// The node's shipper and agent metrics for `/metrics`.
    pub fn metrics_writer(&self) -> crate::shared::metrics_http::Writer {
        let status = self.clone();
        Arc::new(move |out| {
            status.metrics.write(&status.info.name, out);
            if let Some(agent) = &status.agent {
                agent.write(&status.info.name, out);
            }
        })
    }
}

/// How a node reaches its scheduler and what it offers.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub scheduler: String,
    /// The CA the scheduler's certificate is checked against.
    pub scheduler_ca: Option<String>,
    pub token: String,
    /// Tail streams one user may have open at once.
    pub tail_streams_per_user: usize,
    /// How tasks are confined.
    pub tasks: sluice_scheduler::agent::confine::Policy,
    pub cpu: f64,
    pub ram_mb: u64,
    pub disk_mb: u64,
    pub disk_capacity_bytes: Option<u64>,
    pub gc: GcConfig,
}

pub struct Node {
    pub info: NodeInfo,
    guard: Guard,
    shipper: Shipper,
    agent: Option<Arc<Agent>>,
    stop_services: oneshot::Sender<()>,
    /// Heartbeats to the node directory, where the scheduler is.
    register: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Node `name` with its sandboxes in `DIR/sandboxes` and the shipper's
    /// state in `DIR/shipper`, `DIR` being `DATA_DIR/nodes/NAME`.
    pub async fn start(
        name: &str,
        dir: PathBuf,
        bus: Arc<dyn Bus>,
        tokens: TokenStore,
        tls: ServerTls,
        listen: SocketAddr,
        options: NodeOptions,
    ) -> anyhow::Result<Node> {
        let root = dir.join("sandboxes");
        std::fs::create_dir_all(&root)
            .with_context(|| format!("failed to create {}", root.display()))?;
        let config = ShipperConfig::new(name, LayoutKind::Native, &root, dir.join("shipper"));
        let shipper = Shipper::start(config, bus)
            .with_context(|| format!("failed to start the shipper of {name}"))?;
        let listener = bind(listen).await?;
        let addr = listener.local_addr()?;
        let endpoint = format!("https://{}", crate::shared::tls::reported(addr));
        let agent = Agent::start(
            AgentConfig {
                node: name.to_string(),
                root: root.clone(),
                scheduler: options.scheduler.clone(),
                scheduler_ca: options.scheduler_ca.clone(),
                tail_endpoint: endpoint.clone(),
                cpu: options.cpu,
                ram_mb: options.ram_mb,
                disk_mb: options.disk_mb,
                disk_capacity_bytes: options.disk_capacity_bytes,
                heartbeat_ms: 500,
                kill_grace_ms: 5_000,
                gc: options.gc.clone(),
                tasks: options.tasks.clone(),
            },
            &options.token,
            executor_command()?,
            Arc::new(ShipperState(shipper.handle())),
            shipper.event_sink(),
            tokio::runtime::Handle::current(),
        )
        .with_context(|| format!("failed to start the agent of {name}"))?;
        let agent = Arc::new(agent);
        let guard = Guard {
            tokens,
            tls,
            audit: Arc::new(Audit::new(shipper.event_sink(), name, now_unix_nanos())),
        };
        let stop_services = serve(
            listener,
            shipper
                .tail_service()
                .with_streams_per_user(options.tail_streams_per_user),
            Some(agent.service()),
            &guard,
        )?;
        let register = crate::shared::register::spawn(crate::shared::register::Registration {
            cluster: sluice_client::Cluster {
                endpoint: options.scheduler.clone(),
                token: options.token.clone(),
                ca: options.scheduler_ca.clone(),
            },
            host: name.to_string(),
            layout: LayoutKind::Native.name(),
            tail_endpoint: endpoint.clone(),
            metrics: shipper.metrics(),
            started_unix_nanos: now_unix_nanos(),
        });
        Ok(Node {
            guard,
            register,
            info: NodeInfo {
                name: name.to_string(),
                root,
                tail: endpoint,
            },
            shipper,
            agent: Some(agent),
            stop_services,
        })
    }

    /// Who may call the node's services, and their TLS and audit (for
    /// services started beside them, such as OTLP).
    pub fn guard(&self) -> Guard {
        self.guard.clone()
    }

    /// The node as `sluice status` shows it, read when asked.
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            info: self.info.clone(),
            metrics: self.shipper.metrics(),
            agent: self.agent.as_ref().map(|a| a.metrics()),
        }
    }

    /// Stops the agent (tasks keep running under their executors), the
    /// services and the shipper.
    pub async fn stop(mut self) {
        self.register.abort();
        let _ = self.stop_services.send(());
        if let Some(agent) = self.agent.take() {
            // The services held the other references; they are stopping.
            let _ = tokio::task::spawn_blocking(move || drop(agent)).await;
        }
        self.shipper.shutdown().await;
    }
}

/// `[this sluice binary, "executor"]`: what runs each task.
fn executor_command() -> anyhow::Result<Vec<OsString>> {
    let exe = std::env::current_exe().context("cannot find the sluice binary to run tasks")?;
    Ok(vec![exe.into_os_string(), "executor".into()])
}

/// The shipper's progress as the agent's garbage collector asks for it.
struct ShipperState(ShipperHandle);

impl ShipState for ShipperState {
    fn files(&self, dir: &Path) -> Vec<ShippedFile> {
        self.0
            .progress()
            .sandbox(dir)
            .files
            .into_iter()
            .map(|f| ShippedFile {
                path: f.path,
                size: f.size,
                acked: f.acked,
            })
            .collect()
    }

    fn task_ended(&self, dir: &Path) {
        self.0.sandbox_ended(dir);
    }
}

/// What this machine offers by default: its cores, memory and the root
/// filesystem's size.
pub fn machine_options(scheduler: &str, scheduler_ca: Option<String>, token: &str) -> NodeOptions {
    let cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let ram_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(1024, |kb| kb / 1024);
    NodeOptions {
        scheduler: scheduler.to_string(),
        scheduler_ca,
        token: token.to_string(),
        tail_streams_per_user: sluice_shipper::tail::DEFAULT_STREAMS_PER_USER,
        tasks: Default::default(),
        cpu,
        ram_mb,
        disk_mb: 1 << 20,
        disk_capacity_bytes: None,
        gc: GcConfig::default(),
    }
}

/// Opens the bus and creates Sluice's topics on it.
pub async fn open_bus(config: &BusConfig) -> anyhow::Result<Arc<dyn sluice_broker::Bus>> {
    let bus = sluice_broker::open(config)
        .await
        .context("failed to open the bus")?;
    bus.ensure_topics(&topics::ALL)
        .await
        .context("failed to create the bus topics")?;
    Ok(bus)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

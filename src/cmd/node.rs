//! `sluice node` (one node: agent and shipper, for a machine of a cluster)
//! and `sluice gc` (garbage collection on the nodes, or what it would do).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use sluice_broker::BusUrl;
use sluice_scheduler::gc::{Decision, GcPlan, KeepReason, Pressure};

use crate::shared::format::human_bytes;
use sluice_schema::pb::node_client::NodeClient;
use sluice_schema::pb::scheduler_client::SchedulerClient;
use sluice_schema::pb::{GcRequest, NodeStatusRequest};

use crate::shared::args::{DataDirArg, TaskArgs};
use crate::shared::client;
use crate::shared::node::Node;
use crate::shared::node::machine_options;
use crate::shared::tokens::read_tokens;

#[derive(Args, Debug)]
pub struct NodeArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The scheduler, `https://HOST:PORT` [default: the data directory's
    /// cluster]; its certificate is checked against --tls-ca (or the data
    /// directory's client.toml).
    #[arg(long, env = "SLUICE_SCHEDULER")]
    pub scheduler: Option<String>,
    /// This node's name [default: the machine's host name].
    #[arg(long, env = "SLUICE_HOST")]
    pub name: Option<String>,
    /// Where sandboxes go [default: DATA_DIR/nodes/NAME/sandboxes].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// The bus [default: the data directory's].
    #[arg(long, env = "SLUICE_BUS")]
    pub bus: Option<BusUrl>,
    /// Kafka client setting passed to librdkafka (SASL, TLS, …); repeatable.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = sluice_broker::parse_property)]
    pub kafka_properties: Vec<(String, String)>,
    /// Address of the node's Tail and Node services.
    #[arg(long, default_value = "127.0.0.1:0", env = "SLUICE_LISTEN")]
    pub listen: SocketAddr,
    /// Who may call them [default: DATA_DIR/tokens.toml].
    #[arg(long, env = "SLUICE_TOKENS")]
    pub tokens: Option<PathBuf>,
    #[command(flatten)]
    pub tls: crate::shared::tls::TlsArgs,
    /// Tail streams one user may have open at once.
    #[arg(long, default_value_t = sluice_shipper::tail::DEFAULT_STREAMS_PER_USER)]
    pub max_tail_streams_per_user: usize,
    #[command(flatten)]
    pub tasks: TaskArgs,
    /// Cores offered to the scheduler [default: this machine's].
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Memory offered, MiB [default: this machine's].
    #[arg(long)]
    pub ram_mb: Option<u64>,
    /// Disk offered to sandboxes, MiB [default: the root's filesystem].
    #[arg(long)]
    pub disk_mb: Option<u64>,
    /// Garbage collection: treat the node's disk as this many MiB holding
    /// only the sandboxes [default: the root's filesystem].
    #[arg(long)]
    pub gc_capacity_mb: Option<u64>,
    /// Seconds between disk quota checks and garbage-collection passes.
    #[arg(long, default_value_t = 60)]
    pub disk_watch_interval: u64,
    /// Serve Prometheus metrics (shipper, agent, garbage collection) at
    /// http://ADDR/metrics.
    #[arg(long, env = "SLUICE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub otlp: crate::shared::otlp::OtlpArgs,
}

pub async fn node(args: NodeArgs) -> anyhow::Result<()> {
    // Before joining anything: a signal during start-up stops cleanly.
    let shutdown = crate::shared::serve::shutdown_signal();
    let data_dir = std::path::absolute(&args.dir.data_dir)?;
    let cluster = client::cluster(&args.dir)?;
    let scheduler = args
        .scheduler
        .clone()
        .map(|s| sluice_client::with_scheme(&s))
        .unwrap_or(cluster.endpoint.clone());
    let name = args
        .name
        .clone()
        .unwrap_or_else(crate::shared::node::hostname);
    let node_dir = data_dir.join("nodes").join(&name);
    let tokens = read_tokens(args.tokens.as_ref(), &data_dir, "the node's services need")?;
    let bus = sluice_broker::open(&client::bus_config(
        args.bus.as_ref(),
        &data_dir,
        &args.kafka_properties,
    )?)
    .await
    .context("failed to open the bus")?;
    let (tls, _) = crate::shared::tls::server(&args.tls, &data_dir, args.listen.ip(), false)?;
    let mut options = machine_options(&scheduler, cluster.ca.clone(), &cluster.token);
    options.tail_streams_per_user = args.max_tail_streams_per_user;
    options.tasks = args.tasks.policy(&data_dir);
    if let Some(cpu) = args.cpu {
        options.cpu = cpu;
    }
    if let Some(ram) = args.ram_mb {
        options.ram_mb = ram;
    }
    if let Some(disk) = args.disk_mb {
        options.disk_mb = disk;
    }
    options.disk_capacity_bytes = args.gc_capacity_mb.map(|mb| mb << 20);
    options.gc.disk_watch_interval_secs = args.disk_watch_interval;
    let dir = match &args.root {
        Some(root) => {
            anyhow::ensure!(
                root.file_name().is_some_and(|n| n == "sandboxes"),
                "--root must end in /sandboxes (the shipper's state goes beside it)"
            );
            std::path::absolute(root)?.parent().unwrap().to_path_buf()
        }
        None => node_dir,
    };
    let node = Node::start(
        &name,
        dir,
        bus.clone(),
        tokens,
        tls.clone(),
        args.listen,
        options,
    )
    .await?;
    if let Some(listen) = args.metrics_listen {
        let (bound, scheme) = crate::shared::metrics_http::serve_on(
            listen,
            vec![node.status().metrics_writer()],
            Some(&tls),
        )
        .await?;
        eprintln!("metrics on {scheme}://{bound}/metrics");
    }
    if args.otlp.any() {
        let receiver = sluice_shipper::otlp::Receiver::new(
            bus.clone(),
            sluice_shipper::otlp::OtlpConfig::new(&name),
        );
        crate::shared::otlp::serve(&args.otlp, std::sync::Arc::new(receiver), &node.guard())
            .await?;
    }
    eprintln!(
        "node {name}: sandboxes in {}, services on {}, scheduler {scheduler}",
        node.info.root.display(),
        node.info.tail
    );
    shutdown.await;
    node.stop().await;
    bus.flush(std::time::Duration::from_secs(10)).await?;
    Ok(())
}

/// Why a sandbox stays, for people.
fn keep_reason(reason: &KeepReason) -> String {
    let at = |ms: u64| rfc3339_seconds(ms as i64 * 1_000_000);
    match reason {
        KeepReason::Running => "running".into(),
        KeepReason::TooYoung {
            eligible_at_unix_ms,
        } => format!(
            "finished, kept until {} (the gc delay, shorter as the disk fills)",
            at(*eligible_at_unix_ms)
        ),
        KeepReason::NotShipped {
            unshipped_bytes,
            forced_at_unix_ms,
        } => format!(
            "{} not yet shipped; deleted anyway at {} or when the disk is critical",
            human_bytes(*unshipped_bytes),
            at(*forced_at_unix_ms)
        ),
    }
}

/// `2026-11-21T15:17:06Z`.
fn rfc3339_seconds(unix_nanos: i64) -> String {
    let full = sluice_schema::time::rfc3339_nanos(unix_nanos);
    match full.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => full,
    }
}

#[derive(Args, Debug)]
pub struct GcArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Say what would be deleted and why; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only this node.
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// `sluice gc`: a pass on every node (or `--node`), via the scheduler's list
/// of nodes.
pub async fn gc(args: GcArgs) -> anyhow::Result<()> {
    let cluster = client::cluster(&args.dir)?;
    let mut scheduler = SchedulerClient::new(client::connect(&cluster).await?);
    let nodes = scheduler
        .nodes(NodeStatusRequest {})
        .await
        .with_context(|| format!("nodes from {}", cluster.endpoint))?
        .into_inner()
        .nodes;
    let mut results = Vec::new();
    for node in nodes {
        if args.node.as_ref().is_some_and(|n| *n != node.node) || !node.alive {
            continue;
        }
        let mut client = NodeClient::new(client::connect_to(&node.tail_endpoint, &cluster).await?);
        let reply = client
            .gc(GcRequest {
                dry_run: args.dry_run,
            })
            .await
            .with_context(|| format!("gc on {}", node.node))?
            .into_inner();
        let plan: GcPlan = serde_json::from_str(&reply.plan_json)
            .with_context(|| format!("gc plan from {}", node.node))?;
        results.push((reply, plan));
    }
    if let Some(name) = &args.node {
        anyhow::ensure!(!results.is_empty(), "no live node named {name}");
    }
    if args.json {
        for (reply, _) in &results {
            let plan: serde_json::Value = serde_json::from_str(&reply.plan_json)?;
            println!(
                "{}",
                serde_json::json!({"node": reply.node, "applied": reply.applied, "freed_bytes": reply.freed_bytes, "plan": plan})
            );
        }
        return Ok(());
    }
    for (reply, plan) in results {
        let pressure = match plan.pressure {
            Pressure::None => "no pressure",
            Pressure::High => "above the pressure line",
            Pressure::Critical => "CRITICAL",
        };
        println!(
            "{}: disk {} of {} used ({pressure}), {}",
            reply.node,
            human_bytes(plan.used_before),
            human_bytes(plan.total_bytes),
            if reply.applied {
                format!("freed {}", human_bytes(reply.freed_bytes))
            } else {
                format!(
                    "would free {}",
                    human_bytes(plan.used_before.saturating_sub(plan.expected_used_after))
                )
            }
        );
        for d in &plan.decisions {
            let line = match d {
                Decision::Delete {
                    id,
                    bytes,
                    forced,
                    unshipped_bytes,
                    ..
                } => match forced {
                    None => format!(
                        "  delete {id}: {}, fully shipped and old enough",
                        human_bytes(*bytes)
                    ),
                    Some(f) => format!(
                        "  delete {id}: {}, forced ({f:?}), {} not shipped are lost",
                        human_bytes(*bytes),
                        human_bytes(*unshipped_bytes)
                    ),
                },
                Decision::PunchHoles { id, bytes, reason } => format!(
                    "  punch {id}: {} of shipped log prefixes ({reason:?})",
                    human_bytes(*bytes)
                ),
                Decision::Keep { id, reason } => format!("  keep {id}: {}", keep_reason(reason)),
            };
            println!("{line}");
        }
    }
    Ok(())
}

//! `sluice up`: everything in one process.
//!
//! Today that is the bus (embedded in `D/bus` by default, or Kafka), the
//! authenticated admin and scheduler services (state in `D/scheduler`), and
//! `--nodes` nodes, each an agent running tasks in
//! `D/nodes/node-<i>/sandboxes` and a shipper tailing them, with its Tail
//! and Node services, and the archiver (the bus into `D/archive` or
//! `--store`) with its maintenance (compaction, `--retention`); and the query service (`sluice query`, `sluice events`). Tasks run under executors of their own: stopping `up` leaves them
//! running, and the next `up` finds them again. It writes `D/tokens.toml` (an admin token,
//! stored hashed) once, and `D/client.toml` (endpoint, admin token, bus) on
//! every start, and stops cleanly on Ctrl-C or SIGTERM.

mod demo;
mod progress;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sluice_broker::{BusConfig, BusUrl};
use sluice_scheduler::scheduler::service::now_unix_nanos;
use sluice_schema::audit::Audit;
use sluice_schema::pb::admin_server::AdminServer;
use sluice_schema::pb::query_server::QueryServer;
use tonic::service::interceptor::InterceptedService;

use crate::shared::admin::AdminService;
use crate::shared::args::DataDirArg;
use crate::shared::client::ClientFile;
use crate::shared::node::open_bus;
use crate::shared::node::{Node, NodeInfo};
use crate::shared::serve::{Guard, MAX_MESSAGE_BYTES, incoming, shutdown_signal};
use crate::shared::tokens::admin_token;
use sluice_broker::BusEventSink;
use sluice_scheduler::scheduler::{SchedulerConfig, SchedulerService};

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Nodes to run (agents and shippers, each with its own sandbox root)
    /// [default: 1, 3 with --demo].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub nodes: Option<u32>,
    /// Run no scheduler and no nodes: the admin, query and archiver
    /// services for shippers on a cluster Sluice does not schedule
    /// (Kubernetes, Nomad, Aurora). They register in the node directory,
    /// where `tailll` finds them.
    #[arg(long, conflicts_with_all = ["nodes", "demo"])]
    pub no_scheduler: bool,
    /// Seconds without a heartbeat after which `sluice status` shows a
    /// registered shipper as stale.
    #[arg(long, default_value_t = crate::shared::directory::DEFAULT_STALE_AFTER.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub shipper_stale_secs: u64,
    /// The bus: `embedded:///PATH` or `kafka://HOST:PORT[,HOST:PORT]`
    /// [default: embedded in DATA_DIR/bus]
    #[arg(long, env = "SLUICE_BUS")]
    pub bus: Option<BusUrl>,
    /// Kafka client setting passed to librdkafka (SASL, TLS, …); repeatable.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = sluice_broker::parse_property)]
    pub kafka_properties: Vec<(String, String)>,
    /// The archive: `file:///PATH` or `s3://BUCKET/PREFIX` [default: DATA_DIR/archive]
    #[arg(long, env = "SLUICE_STORE")]
    pub store: Option<String>,
    /// Submit sample jobs (web service, crashing worker, cron job, a job
    /// over its disk quota) and print what to try next; Ctrl-C kills them.
    #[arg(long)]
    pub demo: bool,
    /// Address of the services.
    #[arg(long, default_value = "127.0.0.1:0", env = "SLUICE_LISTEN")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub tls: crate::shared::tls::TlsArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub tasks: crate::shared::args::TaskArgs,
    /// Seconds between disk quota checks and garbage-collection passes on
    /// each node [default: 60, 5 with --demo].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub disk_watch_interval: Option<u64>,
    /// Garbage collection: seconds a finished sandbox is kept when the disk
    /// is empty (less as it fills: the Mesos rule) [default: a day].
    #[arg(long)]
    pub gc_delay: Option<u64>,
    /// Garbage collection: treat each node's disk as this many MiB holding
    /// only its sandboxes [default: the data directory's filesystem].
    #[arg(long)]
    pub gc_capacity_mb: Option<u64>,
    #[command(flatten)]
    pub maintenance: crate::shared::archiving::MaintenanceArgs,
    /// Write the services' log to the terminal (standard error) instead of
    /// DATA_DIR/logs/sluice.log.
    #[arg(long)]
    pub log_stderr: bool,
    /// Serve Prometheus metrics of everything `up` runs (shippers, agents
    /// and garbage collection, scheduler, bus lag, archiver, compaction,
    /// retention, queries) at http://ADDR/metrics; see docs/METRICS.md.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Address of the console: the browser pages at https://ADDR/ and
    /// their JSON API at /api/v1/ (docs/API.md), with the services' TLS
    /// and tokens.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:0",
        env = "SLUICE_CONSOLE_LISTEN"
    )]
    pub console_listen: SocketAddr,
    /// Serve no console.
    #[arg(long)]
    pub no_console: bool,
    #[command(flatten)]
    pub otlp: crate::shared::otlp::OtlpArgs,
}

/// Limits that keep one user from starving the rest.
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Queries (and context calls) one user may run at once.
    #[arg(long, default_value_t = sluice_query::service::DEFAULT_QUERIES_PER_USER)]
    pub max_queries_per_user: usize,
    /// Tail streams one user may have open at once on each node.
    #[arg(long, default_value_t = sluice_shipper::tail::DEFAULT_STREAMS_PER_USER)]
    pub max_tail_streams_per_user: usize,
    /// Memory all running queries share, MiB.
    #[arg(long, default_value_t = 1024)]
    pub query_memory_mb: usize,
}

/// `file:///PATH` or `s3://BUCKET[/PREFIX]`.
fn check_store(url: &str) -> anyhow::Result<()> {
    if let Some(path) = url.strip_prefix("file://") {
        anyhow::ensure!(
            path.starts_with('/'),
            "--store {url:?}: a file store needs an absolute path, `file:///PATH`"
        );
        return Ok(());
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        anyhow::ensure!(
            !rest.is_empty() && !rest.starts_with('/'),
            "--store {url:?}: no bucket, expected `s3://BUCKET/PREFIX`"
        );
        return Ok(());
    }
    anyhow::bail!("--store {url:?}: expected `file:///PATH` or `s3://BUCKET/PREFIX`")
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(&args.dir.data_dir)?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("failed to create data directory {}", data_dir.display()))?;
    let store = match &args.store {
        Some(url) => url.clone(),
        None => format!("file://{}", data_dir.join("archive").display()),
    };
    check_store(&store)?;
    let maintenance = args.maintenance.config("archiver")?;
    let archive = store
        .parse::<sluice_archive::store::StoreUrl>()?
        .open(&crate::shared::client::s3_options())
        .with_context(|| format!("failed to open the archive {store}"))?;
    let mut bus_config = BusConfig::new(
        args.bus
            .clone()
            .unwrap_or_else(|| BusUrl::Embedded(data_dir.join("bus"))),
    );
    bus_config
        .kafka
        .properties
        .extend(args.kafka_properties.iter().cloned());
    let bus = open_bus(&bus_config).await?;
    // After the bus: a second `up` on this data directory stops at its lock
    // before touching the tokens.
    let token = admin_token(&data_dir)?;
    let tokens = crate::shared::tokens::load_and_watch(&data_dir.join("tokens.toml"))?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let endpoint = format!("https://{}", crate::shared::tls::reported(addr));
    let (tls, local_ca) = crate::shared::tls::server(&args.tls, &data_dir, addr.ip(), true)?;
    let ca = match local_ca {
        Some(ca) => Some(ca),
        None => crate::shared::client::overrides(&args.dir)?.ca,
    };

    let events = BusEventSink::start(bus.clone());
    let guard = Guard {
        tokens: tokens.clone(),
        tls: tls.clone(),
        audit: Arc::new(Audit::new(events.clone(), "up", now_unix_nanos())),
    };
    let (stop_archiver, archiver_stopped) = tokio::sync::oneshot::channel();
    let (archiver_metrics, archiver) = crate::shared::archiving::spawn(
        sluice_archiver::ArchiverConfig {
            separate_roles: maintenance.compaction.separate_roles.clone(),
            ..Default::default()
        },
        bus.clone(),
        &archive,
        archiver_stopped,
        None,
    )
    .await?;
    let (stop_maintenance, maintenance_stopped) = tokio::sync::oneshot::channel();
    let (maintenance_metrics, maintenance) =
        crate::shared::archiving::spawn_maintenance(maintenance, &archive, maintenance_stopped)
            .await?;
    let scheduler = if args.no_scheduler {
        None
    } else {
        Some(
            SchedulerService::start(
                SchedulerConfig::new(data_dir.join("scheduler").join("state.json")),
                events.clone(),
            )
            .context("failed to start the scheduler")?,
        )
    };
    let directory = Arc::new(crate::shared::directory::Directory::new(
        Duration::from_secs(args.shipper_stale_secs),
    ));

    // Each node serves its Tail and Node services on its own port of the
    // same address, and its agent reports to the scheduler here.
    let mut options = crate::shared::node::machine_options(&endpoint, ca.clone(), &token);
    options.tail_streams_per_user = args.limits.max_tail_streams_per_user;
    options.tasks = args.tasks.policy(&data_dir);
    options.gc.disk_watch_interval_secs =
        (args.disk_watch_interval).unwrap_or(if args.demo { 5 } else { 60 });
    if let Some(delay) = args.gc_delay {
        options.gc.gc_delay_secs = delay;
    }
    options.disk_capacity_bytes = args.gc_capacity_mb.map(|mb| mb << 20);
    let mut nodes = Vec::new();
    let node_count = match (&scheduler, args.nodes) {
        (None, _) => 0,
        (Some(_), Some(n)) => n,
        (Some(_), None) if args.demo => 3,
        (Some(_), None) => 1,
    };
    for i in 0..node_count {
        let name = format!("node-{i}");
        let node = Node::start(
            &name,
            data_dir.join("nodes").join(&name),
            bus.clone(),
            tokens.clone(),
            tls.clone(),
            SocketAddr::new(addr.ip(), 0),
            options.clone(),
        )
        .await?;
        nodes.push(node);
    }
    let infos: Vec<NodeInfo> = nodes.iter().map(|n| n.info.clone()).collect();

    let statuses: Vec<crate::shared::node::NodeStatus> = nodes.iter().map(Node::status).collect();
    let archiver_metrics_for_progress = archiver_metrics.clone();
    let service = AdminService::new(
        bus.clone(),
        store.clone(),
        statuses.clone(),
        scheduler.clone(),
        archiver_metrics.clone(),
        maintenance_metrics.clone(),
        guard.audit.clone(),
    )
    .with_directory(directory.clone());
    let engine = sluice_query::QueryEngine::open(
        archive.clone(),
        sluice_query::EngineConfig {
            memory_limit_bytes: args.limits.query_memory_mb << 20,
            ..sluice_query::EngineConfig::default()
        },
    )
    .await
    .context("failed to open the archive for queries")?;
    let query_metrics = engine.metrics();
    let query = sluice_query::service::QueryService::new(std::sync::Arc::new(engine))
        .with_audit(guard.audit.clone())
        .with_queries_per_user(args.limits.max_queries_per_user);
    if let Some(listen) = args.metrics_listen {
        let mut writers = vec![
            crate::shared::archiving::metrics_writer(archiver_metrics, maintenance_metrics),
            crate::shared::metrics_http::directory_writer(directory.clone()),
            crate::shared::metrics_http::bus_writer(
                bus.clone(),
                &[sluice_archiver::GROUP],
                Duration::from_secs(5),
            ),
            Arc::new(move |out: &mut sluice_schema::metrics::Exposition| {
                sluice_query::metrics::write(out, &query_metrics);
            }),
        ];
        writers.extend(
            scheduler
                .iter()
                .map(|s| crate::shared::metrics_http::scheduler_writer(s.clone())),
        );
        writers.extend(nodes.iter().map(|n| n.status().metrics_writer()));
        let (bound, scheme) =
            crate::shared::metrics_http::serve_on(listen, writers, Some(&tls)).await?;
        eprintln!("metrics on {scheme}://{bound}/metrics");
    }
    if args.otlp.any() {
        let receiver = sluice_shipper::otlp::Receiver::new(
            bus.clone(),
            sluice_shipper::otlp::OtlpConfig::new(crate::shared::node::hostname()),
        );
        crate::shared::otlp::serve(&args.otlp, Arc::new(receiver), &guard).await?;
    }
    // The services stop after the demo's jobs: their kills reach the agents
    // through the scheduler service.
    let (stop_serving, serve_until) = tokio::sync::oneshot::channel::<()>();
    let server = guard
        .builder()?
        .add_service(InterceptedService::new(
            AdminServer::new(service).max_decoding_message_size(MAX_MESSAGE_BYTES),
            guard.auth("sluice.v1.Admin"),
        ))
        .add_optional_service(
            scheduler
                .as_ref()
                .map(|s| s.server(guard.auth("sluice.v1.Scheduler"), MAX_MESSAGE_BYTES)),
        )
        .add_service(InterceptedService::new(
            QueryServer::new(query).max_decoding_message_size(MAX_MESSAGE_BYTES),
            guard.auth("sluice.v1.Query"),
        ))
        .serve_with_incoming_shutdown(incoming(listener), async {
            let _ = serve_until.await;
        });
    let server = tokio::spawn(server);
    // Jobs submitted as soon as `up` says it is up are spread over every
    // node: wait (briefly) for each to report to the scheduler.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let alive =
        |s: &SchedulerService| s.with_core(|c| c.nodes().iter().filter(|n| n.alive).count());
    while scheduler.as_ref().is_some_and(|s| alive(s) < nodes.len()) {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("not every node has reported to the scheduler yet");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let endpoint_for_shippers = endpoint.clone();
    let console = match (!args.no_console).then_some(args.console_listen) {
        Some(listen) => {
            let upstream = crate::console::Upstream::new(&endpoint, ca.as_deref(), &data_dir)?;
            Some(crate::console::serve(listen, guard.clone(), upstream).await?)
        }
        None => None,
    };
    ClientFile {
        endpoint,
        token,
        ca,
        bus: Some(bus_config.url.to_string()),
        store: Some(store.clone()),
    }
    .write(&data_dir)?;
    eprintln!(
        "sluice is up: services on {addr}, bus {}, archive {store}\n  client settings in {}\n  try: sluice status --data-dir {}",
        bus_config.url,
        ClientFile::path(&data_dir).display(),
        data_dir.display()
    );
    for node in &infos {
        eprintln!(
            "  {}: sandboxes in {}, tail service {}",
            node.name,
            node.root.display(),
            node.tail
        );
    }
    if let Some(bound) = console {
        eprintln!(
            "  console on https://{}/ (log in with a token of {}, or the admin token in client.toml)",
            crate::shared::tls::reported(bound),
            data_dir.join("tokens.toml").display()
        );
    }
    if !args.log_stderr {
        eprintln!(
            "  log: {} (--log-stderr to see it here)",
            crate::shared::logs::file_of(&data_dir).display()
        );
    }
    if scheduler.is_none() {
        eprintln!(
            "  no scheduler: shippers register here (sluice shipper --register {endpoint_for_shippers}), tailll finds jobs through them"
        );
    }
    let demo_jobs = match (&scheduler, args.demo) {
        (Some(scheduler), true) => demo::submit(scheduler)?,
        _ => Vec::new(),
    };
    if args.demo {
        eprintln!("{}", demo::next_steps(&data_dir));
    }
    // With the log in a file, the terminal has room for a line of what is
    // happening.
    let progress = scheduler
        .clone()
        .filter(|_| !args.log_stderr)
        .map(|scheduler| {
            use std::io::IsTerminal as _;
            progress::spawn(
                progress::Progress {
                    scheduler,
                    nodes: statuses,
                    archiver: archiver_metrics_for_progress,
                },
                std::io::stderr().is_terminal(),
            )
        });
    let mut server = server;
    let served = tokio::select! {
        served = &mut server => served,
        () = shutdown_signal() => {
            if let Some((stop, task)) = progress {
                let _ = stop.send(());
                let _ = task.await;
            }
            if let (false, Some(scheduler)) = (demo_jobs.is_empty(), &scheduler) {
                eprintln!("stopping the demo jobs (the next `sluice up --demo` submits them again)");
                demo::kill(scheduler, &demo_jobs, Duration::from_secs(15)).await;
            }
            let _ = stop_serving.send(());
            server.await
        }
    };
    let served = match served {
        Ok(served) => served.context("service failed"),
        Err(e) => Err(anyhow::anyhow!("service failed: {e}")),
    };
    tracing::info!("shutting down");
    for node in nodes {
        node.stop().await;
    }
    if let Some(scheduler) = scheduler
        && let Err(e) = scheduler.stop().await
    {
        tracing::error!(error = %e, "the scheduler did not stop cleanly");
    }
    if !events.flush(Duration::from_secs(5)).await {
        tracing::warn!(
            queued = events.queued(),
            "cluster events not yet on the bus at shutdown"
        );
    }
    let _ = stop_maintenance.send(());
    let _ = maintenance.await;
    // Last: it commits what it holds (the bus keeps the rest for next time).
    let _ = stop_archiver.send(());
    let _ = archiver.await;
    served?;
    bus.flush(Duration::from_secs(10))
        .await
        .context("failed to flush the bus")?;
    Ok(())
}

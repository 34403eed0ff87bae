//! `sluice scheduler`: the scheduler on its own, for a cluster of machines
//! each running `sluice node --scheduler ADDR` (with a Kafka bus, which
//! every machine can reach).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sluice_broker::{BusConfig, BusEventSink, BusUrl};
use sluice_scheduler::scheduler::{SchedulerConfig, SchedulerService};

use crate::cli::DataDirArg;
use crate::client::{self, ClientConfig};
use crate::up::{admin_token, incoming, open_bus, shutdown_signal};

#[derive(Args, Debug)]
pub struct SchedulerArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Address of the scheduler service.
    #[arg(long, default_value = "127.0.0.1:0", env = "SLUICE_LISTEN")]
    pub listen: SocketAddr,
    /// Where cluster events go [default: the data directory's bus].
    #[arg(long, env = "SLUICE_BUS")]
    pub bus: Option<BusUrl>,
    /// Milliseconds of silence after which a node's tasks are lost and
    /// placed again elsewhere.
    #[arg(long, default_value_t = 10_000)]
    pub agent_timeout_ms: u64,
}

pub async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(&args.dir.data_dir)?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("failed to create data directory {}", data_dir.display()))?;
    let bus_config = BusConfig::new(client::bus_url(args.bus.as_ref(), &data_dir)?);
    let bus = open_bus(&bus_config).await?;
    let (token, tokens) = admin_token(&data_dir)?;
    let tokens = Arc::new(tokens);
    let events = BusEventSink::start(bus.clone());
    let mut config = SchedulerConfig::new(data_dir.join("scheduler").join("state.json"));
    config.agent_timeout_ms = args.agent_timeout_ms;
    config.validate()?;
    let scheduler =
        SchedulerService::start(config, events.clone()).context("failed to start the scheduler")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let server = tonic::transport::Server::builder()
        .add_service(scheduler.server(tokens))
        .serve_with_incoming_shutdown(incoming(listener), shutdown_signal());
    ClientConfig {
        endpoint: format!("http://{addr}"),
        token,
        bus: bus_config.url.clone(),
        store: None,
    }
    .write(&data_dir)?;
    eprintln!(
        "scheduler on {addr}, state in {}, events to {}\n  nodes: sluice node --scheduler http://{addr} --bus {}",
        data_dir.join("scheduler").display(),
        bus_config.url,
        bus_config.url
    );
    let served = server.await.context("scheduler service failed");
    if let Err(e) = scheduler.stop().await {
        tracing::error!(error = %e, "the scheduler did not stop cleanly");
    }
    events.flush(Duration::from_secs(5)).await;
    bus.flush(Duration::from_secs(10)).await?;
    served
}

//! `sluice scheduler`: the scheduler on its own, for a cluster of machines
//! each running `sluice node --scheduler ADDR` (with a Kafka bus, which
//! every machine can reach).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sluice_broker::{BusEventSink, BusUrl};
use sluice_scheduler::scheduler::{SchedulerConfig, SchedulerService};

use crate::shared::args::DataDirArg;
use crate::shared::client::{self, ClientFile};
use crate::shared::metrics_http::scheduler_writer;
use crate::shared::node::open_bus;
use crate::shared::serve::{Guard, MAX_MESSAGE_BYTES, incoming, shutdown_signal};
use crate::shared::tokens::admin_token;

#[derive(Args, Debug)]
pub struct SchedulerArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Address of the scheduler service.
    #[arg(long, default_value = "127.0.0.1:0", env = "SLUICE_LISTEN")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub tls: crate::shared::tls::TlsArgs,
    /// Where cluster events go [default: the data directory's bus].
    #[arg(long, env = "SLUICE_BUS")]
    pub bus: Option<BusUrl>,
    /// Kafka client setting passed to librdkafka (SASL, TLS, …); repeatable.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = sluice_broker::parse_property)]
    pub kafka_properties: Vec<(String, String)>,
    /// Milliseconds of silence after which a node's tasks are lost and
    /// placed again elsewhere.
    #[arg(long, default_value_t = 10_000)]
    pub agent_timeout_ms: u64,
    /// Serve Prometheus metrics (jobs, instances, nodes, bus) at
    /// http://ADDR/metrics.
    #[arg(long, env = "SLUICE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

pub async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(&args.dir.data_dir)?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("failed to create data directory {}", data_dir.display()))?;
    let bus_config = client::bus_config(args.bus.as_ref(), &data_dir, &args.kafka_properties)?;
    let bus = open_bus(&bus_config).await?;
    let token = admin_token(&data_dir)?;
    let tokens = crate::shared::tokens::load_and_watch(&data_dir.join("tokens.toml"))?;
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
    let (tls, local_ca) = crate::shared::tls::server(&args.tls, &data_dir, addr.ip(), true)?;
    let ca = match local_ca {
        Some(ca) => Some(ca),
        None => client::overrides(&args.dir)?.ca,
    };
    let guard = Guard {
        tokens,
        tls: tls.clone(),
        audit: Arc::new(sluice_schema::audit::Audit::new(
            events.clone(),
            "scheduler",
            sluice_scheduler::scheduler::service::now_unix_nanos(),
        )),
    };
    if let Some(listen) = args.metrics_listen {
        let writers = vec![
            scheduler_writer(scheduler.clone()),
            crate::shared::metrics_http::bus_writer(
                bus.clone(),
                &[sluice_archiver::GROUP],
                Duration::from_secs(5),
            ),
        ];
        let (bound, scheme) =
            crate::shared::metrics_http::serve_on(listen, writers, Some(&tls)).await?;
        eprintln!("metrics on {scheme}://{bound}/metrics");
    }
    let server = guard
        .builder()?
        .add_service(scheduler.server(guard.auth("sluice.v1.Scheduler"), MAX_MESSAGE_BYTES))
        .serve_with_incoming_shutdown(incoming(listener), shutdown_signal());
    let endpoint = format!("https://{}", crate::shared::tls::reported(addr));
    ClientFile {
        endpoint: endpoint.clone(),
        token,
        ca,
        bus: Some(bus_config.url.to_string()),
        store: None,
    }
    .write(&data_dir)?;
    eprintln!(
        "scheduler on {addr}, state in {}, events to {}\n  nodes: sluice node --scheduler {endpoint} --bus {}",
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

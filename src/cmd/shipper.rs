//! `sluice shipper`: one shipper on its own.
//!
//! `--layout` and `--root` cover the common case; `--config FILE` (TOML)
//! holds the rest: a `[shipper]` table with any `ShipperConfig` field and a
//! `[bus]` table (`url`, `embedded`, `kafka`). Flags override the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use sluice_broker::{BusConfig, BusUrl};
use sluice_shipper::layout::LayoutKind;
use sluice_shipper::{Shipper, ShipperConfig};

use crate::shared::args::DataDirArg;
use crate::shared::node::hostname;
use crate::shared::{client, metrics_http, node};

#[derive(Args, Debug)]
pub struct ShipperArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// native, thermos, mesos, kubernetes, docker or nomad.
    #[arg(long, env = "SLUICE_LAYOUT")]
    pub layout: Option<LayoutKind>,
    /// Where the sandboxes are.
    #[arg(long, env = "SLUICE_ROOT")]
    pub root: Option<PathBuf>,
    /// The bus [default: the data directory's].
    #[arg(long, env = "SLUICE_BUS")]
    pub bus: Option<BusUrl>,
    /// This node's name [default: the machine's host name].
    #[arg(long, env = "SLUICE_HOST")]
    pub host: Option<String>,
    /// Where checkpoints are kept [default: DATA_DIR/shipper/HOST].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// TOML file with `[shipper]` and `[bus]` tables.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, env = "SLUICE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the Tail service (for `tailll`) on ADDR.
    #[arg(long, env = "SLUICE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Who may call the Tail service [default: DATA_DIR/tokens.toml, as
    /// written by `sluice up`].
    #[arg(long, env = "SLUICE_TOKENS")]
    pub tokens: Option<PathBuf>,
    #[command(flatten)]
    pub tls: crate::shared::tls::TlsArgs,
    /// Tail streams one user may have open at once.
    #[arg(long, default_value_t = sluice_shipper::tail::DEFAULT_STREAMS_PER_USER)]
    pub max_tail_streams_per_user: usize,
    #[command(flatten)]
    pub otlp: crate::shared::otlp::OtlpArgs,
    /// Register in the node directory of the admin service at URL
    /// (`https://HOST:PORT`, what `sluice up` prints) and heartbeat there,
    /// so `tailll` and `sluice status` find this shipper. The CA is
    /// --tls-ca's, else client.toml's.
    #[arg(long, env = "SLUICE_REGISTER", value_name = "URL")]
    pub register: Option<String>,
    /// File holding the token to register with (a Kubernetes Secret's
    /// mount) [default: SLUICE_TOKEN, else client.toml's]. It must be
    /// allowed to write every role this shipper holds a job of.
    #[arg(long, env = "SLUICE_REGISTER_TOKEN_FILE", value_name = "FILE")]
    pub register_token_file: Option<PathBuf>,
    /// The Tail service's URL as tailll should dial it (the name must be in
    /// the certificate) [default: https:// and the --listen address].
    #[arg(long, env = "SLUICE_ADVERTISE", value_name = "URL")]
    pub advertise: Option<String>,
    /// Kubernetes layout: ask the API server for each pod's labels and
    /// controller (`in-cluster`: from the pod's environment and service
    /// account; or `https://HOST:PORT` with [shipper.kubernetes_api]'s
    /// token_file and ca_file). Needs `get` on pods.
    #[arg(long, env = "SLUICE_KUBERNETES_API", value_name = "in-cluster|URL")]
    pub kubernetes_api: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    shipper: Option<toml::Table>,
    bus: Option<BusConfig>,
}

pub async fn run(args: ShipperArgs) -> anyhow::Result<()> {
    // Before joining anything: a signal during start-up stops cleanly.
    let shutdown = crate::shared::serve::shutdown_signal();
    anyhow::ensure!(
        args.advertise.is_none() || args.register.is_some(),
        "--advertise is what the node directory is told: it needs --register"
    );
    let (config, bus) = resolve(&args)?;
    let data_dir = std::path::absolute(&args.dir.data_dir)?;
    // The Tail and OTLP services need tokens and TLS (for the first
    // address they listen on).
    let first = [
        args.listen,
        args.otlp.otlp_grpc_listen,
        args.otlp.otlp_http_listen,
    ]
    .into_iter()
    .flatten()
    .next();
    let secured = match first {
        Some(listen) => Some((
            crate::shared::tokens::read_tokens(
                args.tokens.as_ref(),
                &data_dir,
                match (args.listen.is_some(), args.otlp.any()) {
                    (true, false) => "the Tail service needs",
                    (false, true) => "the OTLP services need",
                    _ => "the Tail and OTLP services need",
                },
            )?,
            crate::shared::tls::server(&args.tls, &data_dir, listen.ip(), false)?.0,
        )),
        None => None,
    };
    let bus_handle = sluice_broker::open(&bus)
        .await
        .with_context(|| format!("failed to open bus {}", bus.url))?;
    let shipper = Shipper::start(config.clone(), bus_handle.clone())
        .context("failed to start the shipper")?;
    if let Some(addr) = args.metrics_listen {
        let metrics = shipper.metrics();
        let host = config.host.clone();
        let tls = match (&secured, &args.tls.tls_cert, &args.tls.tls_key) {
            (Some((_, tls)), _, _) => Some(tls.clone()),
            (None, Some(cert), Some(key)) => {
                Some(crate::shared::tls::ServerTls::from_files(cert, key)?)
            }
            _ => None,
        };
        let (bound, scheme) = metrics_http::serve_on(
            addr,
            vec![Arc::new(move |out| metrics.write(&host, out))],
            tls.as_ref(),
        )
        .await?;
        eprintln!("metrics on {scheme}://{bound}/metrics");
    }
    let guard = secured.map(|(tokens, tls)| crate::shared::serve::Guard {
        tokens,
        tls,
        audit: Arc::new(sluice_schema::audit::Audit::new(
            shipper.event_sink(),
            &config.host,
            sluice_scheduler::scheduler::service::now_unix_nanos(),
        )),
    });
    if let Some(guard) = guard.as_ref().filter(|_| args.otlp.any()) {
        let receiver = sluice_shipper::otlp::Receiver::new(
            bus_handle.clone(),
            sluice_shipper::otlp::OtlpConfig::new(&config.host),
        );
        crate::shared::otlp::serve(&args.otlp, Arc::new(receiver), guard).await?;
    }
    let mut tail_endpoint = String::new();
    let _tail = match (args.listen, guard) {
        (Some(listen), Some(guard)) => {
            let service = shipper
                .tail_service()
                .with_streams_per_user(args.max_tail_streams_per_user);
            let (addr, stop) = node::serve_tail(service, &guard, listen).await?;
            let reported = format!("https://{}", crate::shared::tls::reported(addr));
            eprintln!("tail service on {reported}");
            tail_endpoint = args.advertise.clone().unwrap_or(reported);
            Some(stop)
        }
        _ => None,
    };
    let _registered = match &args.register {
        Some(url) => {
            let mut overrides = client::overrides(&args.dir)?;
            overrides.addr = Some(url.clone());
            if let Some(path) = &args.register_token_file {
                let token = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "failed to read the token {} (--register-token-file)",
                        path.display()
                    )
                })?;
                overrides.token = Some(token.trim().to_string());
            }
            let cluster = sluice_client::Cluster::resolve(&args.dir.data_dir, &overrides)
                .context("--register: no token (pass --register-token-file or set SLUICE_TOKEN)")?;
            anyhow::ensure!(
                !cluster.endpoint.starts_with("https://") || cluster.ca.is_some(),
                "--register {url}: no CA to check its certificate against (pass --tls-ca)"
            );
            eprintln!("registering in the node directory at {}", cluster.endpoint);
            Some(crate::shared::register::spawn(
                crate::shared::register::Registration {
                    cluster,
                    host: config.host.clone(),
                    layout: config.layout.name(),
                    tail_endpoint,
                    metrics: shipper.metrics(),
                    started_unix_nanos: sluice_scheduler::scheduler::service::now_unix_nanos(),
                },
            ))
        }
        None => None,
    };
    eprintln!(
        "shipping {} ({}) to {}",
        config.root.display(),
        config.layout.name(),
        bus.url
    );
    shutdown.await;
    shipper.shutdown().await;
    bus_handle.flush(std::time::Duration::from_secs(10)).await?;
    Ok(())
}

/// File, then flags; errors name the field and the file.
fn resolve(args: &ShipperArgs) -> anyhow::Result<(ShipperConfig, BusConfig)> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let mut table = file.shipper.unwrap_or_default();
    let data_dir = std::path::absolute(&args.dir.data_dir)?;
    let host = match (&args.host, table.get("host")) {
        (Some(h), _) => h.clone(),
        (None, Some(h)) => h
            .as_str()
            .context("shipper.host must be a string")?
            .to_string(),
        (None, None) => hostname(),
    };
    table.insert("host".into(), host.clone().into());
    if let Some(layout) = args.layout {
        table.insert("layout".into(), layout.name().into());
    }
    if let Some(api) = &args.kubernetes_api {
        let mut settings = match table.get("kubernetes_api") {
            Some(toml::Value::Table(t)) => t.clone(),
            _ => toml::Table::new(),
        };
        let url = match api.as_str() {
            "in-cluster" => {
                sluice_shipper::layout::pod_api::KubernetesApi::in_cluster()
                    .map_err(|e| anyhow::anyhow!("--kubernetes-api in-cluster: {e}"))?
                    .url
            }
            url => url.to_string(),
        };
        settings.insert("url".into(), url.into());
        table.insert("kubernetes_api".into(), settings.into());
    }
    if let Some(root) = &args.root {
        table.insert(
            "root".into(),
            std::path::absolute(root)?
                .to_string_lossy()
                .into_owned()
                .into(),
        );
    }
    let state = match &args.state_dir {
        Some(dir) => std::path::absolute(dir)?,
        None => data_dir.join("shipper").join(&host),
    };
    if args.state_dir.is_some() || !table.contains_key("state_dir") {
        table.insert(
            "state_dir".into(),
            state.to_string_lossy().into_owned().into(),
        );
    }
    for field in ["layout", "root"] {
        anyhow::ensure!(
            table.contains_key(field),
            "missing {field}: pass --{field} or set shipper.{field} in --config"
        );
    }
    let where_ = args
        .config
        .as_ref()
        .map_or("flags".to_string(), |p| p.display().to_string());
    let config: ShipperConfig = toml::Value::Table(table)
        .try_into()
        .with_context(|| format!("invalid shipper configuration in {where_}"))?;
    config.validate()?;
    if let Some(api) = &config.kubernetes_api {
        std::fs::read(&api.ca_file)
            .with_context(|| format!("kubernetes_api.ca_file {}", api.ca_file.display()))?;
    }
    // --bus, else the file's [bus], else the data directory's bus.
    let mut bus = match file.bus {
        Some(bus) => bus,
        None => BusConfig::new(client::bus_url(None, &args.dir.data_dir)?),
    };
    if let Some(url) = &args.bus {
        bus.url = url.clone();
    }
    bus.validate()?;
    Ok((config, bus))
}

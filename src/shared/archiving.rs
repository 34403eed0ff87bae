//! The archiver and its maintenance as background tasks of a process (`sluice up`, `sluice archiver`), and their flags.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use sluice_archiver as archiver;
use sluice_archiver::maintenance::{
    self, Maintenance, MaintenanceConfig, MaintenanceMetrics, RetentionConfig,
};
use sluice_archiver::{Archiver, ArchiverConfig, ArchiverMetrics};

use crate::shared::metrics_http;

/// Compaction and retention, as `sluice up` and `sluice archiver` run them
/// in the background.
#[derive(Args, Debug, Clone)]
pub struct MaintenanceArgs {
    /// Remove archived splits whose newest line is older than AGE (`30d`,
    /// `12h`, `2w`; `m` is minutes; at least 1h) [default: keep forever].
    #[arg(long, value_name = "AGE", env = "SLUICE_RETENTION", value_parser = maintenance::parse_age)]
    pub retention: Option<u64>,
    /// The retention of one role, overriding --retention for it; repeatable.
    /// A split holding lines of several roles goes when all of them expired.
    #[arg(long = "retention-role", value_name = "ROLE=AGE", value_parser = maintenance::parse_role_age)]
    pub retention_roles: Vec<(String, u64)>,
    /// Merge each hour's small splits into splits of up to this many MiB of
    /// line text.
    #[arg(long, value_name = "MIB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub compact_target_mb: u64,
    /// Do not merge small splits.
    #[arg(long)]
    pub no_compaction: bool,
}

impl MaintenanceArgs {
    /// The configuration these flags make, for the writer `id`.
    pub fn config(&self, id: &str) -> anyhow::Result<MaintenanceConfig> {
        let mut config = MaintenanceConfig {
            id: id.to_string(),
            retention: retention_config(self.retention, &self.retention_roles)?,
            ..MaintenanceConfig::default()
        };
        config.compaction.enabled = !self.no_compaction;
        config.compaction.target_raw_bytes = self.compact_target_mb << 20;
        config.compaction.separate_roles = config.retention.roles.keys().cloned().collect();
        config.validate()?;
        Ok(config)
    }
}

pub fn retention_config(
    global: Option<u64>,
    roles: &[(String, u64)],
) -> anyhow::Result<RetentionConfig> {
    let mut config = RetentionConfig {
        max_age_secs: global,
        ..RetentionConfig::default()
    };
    for (role, age) in roles {
        anyhow::ensure!(
            config.roles.insert(role.clone(), *age).is_none(),
            "--retention-role {role}: given twice"
        );
    }
    Ok(config)
}

/// Starts an archiver in this process; it stops (committing what it holds)
/// when `stop` fires.
pub async fn spawn(
    config: ArchiverConfig,
    bus: Arc<dyn sluice_broker::Bus>,
    store: &sluice_archive::store::Store,
    stop: tokio::sync::oneshot::Receiver<()>,
    crash_at: Option<(archiver::Step, u32)>,
) -> anyhow::Result<(Arc<ArchiverMetrics>, tokio::task::JoinHandle<()>)> {
    let mut archiver = Archiver::open(config, bus, store.clone())
        .await
        .with_context(|| format!("failed to start the archiver on {}", store.url))?;
    if let Some((at, n)) = crash_at {
        let seen = std::sync::atomic::AtomicU32::new(0);
        archiver.on_step(move |step| {
            if step == at && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 >= n {
                eprintln!("crashing at {step:?} as asked");
                std::process::abort();
            }
        });
    }
    let metrics = archiver.metrics();
    let task = tokio::spawn(async move {
        if let Err(e) = archiver
            .run(async {
                let _ = stop.await;
            })
            .await
        {
            tracing::error!(error = %e, "the archiver stopped");
        }
    });
    Ok((metrics, task))
}

/// Starts archive maintenance (compaction, retention, janitor) in this
/// process; it stops when `stop` fires (a merge cut short is left to the
/// janitor).
pub async fn spawn_maintenance(
    config: MaintenanceConfig,
    store: &sluice_archive::store::Store,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<(Arc<MaintenanceMetrics>, tokio::task::JoinHandle<()>)> {
    let maintenance = Maintenance::open(config, store.clone())
        .await
        .with_context(|| format!("failed to start archive maintenance on {}", store.url))?;
    let metrics = maintenance.metrics();
    let task = tokio::spawn(maintenance.run(async {
        let _ = stop.await;
    }));
    Ok((metrics, task))
}

/// The archive's metrics (archiver and maintenance) for `/metrics`.
pub fn metrics_writer(
    archiver: Arc<ArchiverMetrics>,
    maintenance: Arc<MaintenanceMetrics>,
) -> metrics_http::Writer {
    Arc::new(move |out| {
        sluice_archiver::metrics::write(out, Some(&archiver), Some(&maintenance));
    })
}

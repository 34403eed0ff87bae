//! Where the cluster is and how to talk to it: `sluice`'s rules, from the
//! shared `sluice-client` crate. `--addr`/`SLUICE_ADDR`, `--token`/
//! `SLUICE_TOKEN` and `--tls-ca`/`SLUICE_TLS_CA` first, then
//! `DATA_DIR/client.toml`'s `endpoint`, `token` and `ca`.
//!
//! The scheduler's address is looked up again whenever it stops answering:
//! a restarted `sluice up` listens on a new port and rewrites client.toml.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
pub use sluice_client::{AuthedChannel, Cluster};
use sluice_client::{ConnectOptions, Overrides};

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the scheduler is and who we are.
#[derive(Debug, Clone)]
pub struct ClusterAddress {
    data_dir: PathBuf,
    overrides: Overrides,
}

impl ClusterAddress {
    /// `overrides` win over the data directory's client.toml.
    pub fn new(data_dir: &Path, overrides: Overrides) -> Self {
        ClusterAddress {
            data_dir: data_dir.to_path_buf(),
            overrides,
        }
    }

    /// The scheduler's endpoint, the token and the CA, read now.
    pub fn resolve(&self) -> anyhow::Result<Cluster> {
        Ok(Cluster::resolve(&self.data_dir, &self.overrides)?)
    }
}

/// Connects to `endpoint` (TLS checked against `ca` for `https://`),
/// adding `token` to every call.
pub async fn connect(
    endpoint: &str,
    token: &str,
    ca: Option<&str>,
) -> anyhow::Result<AuthedChannel> {
    let options = ConnectOptions {
        connect_timeout: CONNECT_TIMEOUT,
        keep_alive: Some(Duration::from_secs(10)),
    };
    sluice_client::connect(endpoint, token, ca, &options)
        .await
        .with_context(|| format!("cannot reach {endpoint}"))
}

//! How client commands find a cluster: `DATA_DIR/client.toml` (which `sluice
//! up` and `sluice scheduler` write; the format and the rules are the
//! `sluice-client` crate's, shared with `tailll`), then `SLUICE_ADDR`,
//! `SLUICE_TOKEN` and `--tls-ca`/`SLUICE_TLS_CA` for a remote cluster.

use std::path::Path;

use anyhow::Context;
use sluice_broker::BusUrl;
pub use sluice_client::{AuthedChannel, ClientFile, Cluster, ConnectOptions};

use crate::shared::args::DataDirArg;

/// What the flags and the environment say over client.toml.
pub fn overrides(dir: &DataDirArg) -> anyhow::Result<sluice_client::Overrides> {
    let ca = match &dir.tls_ca {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("failed to read the CA {} (--tls-ca)", path.display()))?,
        ),
        None => None,
    };
    Ok(sluice_client::Overrides {
        addr: std::env::var("SLUICE_ADDR").ok(),
        token: std::env::var("SLUICE_TOKEN").ok(),
        ca,
    })
}

/// The cluster a client command talks to.
pub fn cluster(dir: &DataDirArg) -> anyhow::Result<Cluster> {
    Ok(Cluster::resolve(&dir.data_dir, &overrides(dir)?)?)
}

/// Connects to the cluster's services.
pub async fn connect(cluster: &Cluster) -> anyhow::Result<AuthedChannel> {
    Ok(cluster.connect(&ConnectOptions::default()).await?)
}

/// Connects to another service of the cluster (a node's), with the
/// cluster's token and CA.
pub async fn connect_to(endpoint: &str, cluster: &Cluster) -> anyhow::Result<AuthedChannel> {
    Ok(sluice_client::connect(
        endpoint,
        &cluster.token,
        cluster.ca.as_deref(),
        &ConnectOptions::default(),
    )
    .await?)
}

/// The archive a client command reads: `--store`, else the data
/// directory's, else `DATA_DIR/archive`.
pub fn store_url(
    flag: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<sluice_archive::store::StoreUrl> {
    let text = match flag {
        Some(url) => url.to_string(),
        None => match ClientFile::read(data_dir)?.and_then(|c| c.store) {
            Some(url) => url,
            None => format!(
                "file://{}",
                std::path::absolute(data_dir)?.join("archive").display()
            ),
        },
    };
    Ok(text.parse()?)
}

/// S3 settings from the environment (`AWS_*`, object_store's names), for
/// `s3://` stores.
pub fn s3_options() -> Vec<(String, String)> {
    sluice_archive::store::s3_options(std::env::vars())
}

/// The bus a client command uses: `--bus`, else the data directory's.
/// The bus of [`bus_url`] with `--kafka-property` settings for librdkafka.
pub fn bus_config(
    flag: Option<&BusUrl>,
    data_dir: &Path,
    kafka_properties: &[(String, String)],
) -> anyhow::Result<sluice_broker::BusConfig> {
    let mut config = sluice_broker::BusConfig::new(bus_url(flag, data_dir)?);
    config
        .kafka
        .properties
        .extend(kafka_properties.iter().cloned());
    Ok(config)
}

pub fn bus_url(flag: Option<&BusUrl>, data_dir: &Path) -> anyhow::Result<BusUrl> {
    if let Some(url) = flag {
        return Ok(url.clone());
    }
    if let Some(bus) = ClientFile::read(data_dir)?.and_then(|c| c.bus) {
        return bus
            .parse()
            .with_context(|| format!("invalid bus in {}", ClientFile::path(data_dir).display()));
    }
    let dir = std::path::absolute(data_dir.join("bus"))?;
    Ok(BusUrl::Embedded(dir))
}

//! `client.toml`: how client commands find a cluster.
//!
//! `sluice up --data-dir D` writes `D/client.toml` (mode 0600: it holds the
//! admin token). Client commands read it from `--data-dir`/`SLUICE_DATA_DIR`;
//! `SLUICE_ADDR` and `SLUICE_TOKEN` override the endpoint and token, for a
//! remote cluster.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sluice_broker::BusUrl;
use sluice_schema::auth::BearerInterceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub const FILE_NAME: &str = "client.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// gRPC endpoint of the cluster's services, `http://HOST:PORT`.
    pub endpoint: String,
    /// Bearer token sent with every call.
    pub token: String,
    /// The bus the cluster uses.
    pub bus: BusUrl,
    /// The archive (`file:///PATH`, `s3://BUCKET/PREFIX`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

impl ClientConfig {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// Reads `D/client.toml`; `Ok(None)` when there is none.
    pub fn read(data_dir: &Path) -> anyhow::Result<Option<ClientConfig>> {
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
        };
        let config =
            toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
        Ok(Some(config))
    }

    /// Writes `D/client.toml` atomically, readable by its owner only.
    pub fn write(&self, data_dir: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = Self::path(data_dir);
        let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
        let text = format!(
            "# Written by `sluice up`; read by `sluice` and `tailll` with --data-dir {}.\n{}",
            data_dir.display(),
            toml::to_string(self)?
        );
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("failed to write {}", tmp.display()))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| format!("failed to write {}", path.display()))
    }

    /// The endpoint and token to use: `SLUICE_ADDR`/`SLUICE_TOKEN` first,
    /// then the data directory's `client.toml`.
    pub fn resolve(data_dir: &Path) -> anyhow::Result<(String, String)> {
        let file = Self::read(data_dir)?;
        let endpoint = std::env::var("SLUICE_ADDR")
            .ok()
            .or_else(|| file.as_ref().map(|f| f.endpoint.clone()));
        let token = std::env::var("SLUICE_TOKEN")
            .ok()
            .or_else(|| file.as_ref().map(|f| f.token.clone()));
        match (endpoint, token) {
            (Some(endpoint), Some(token)) => Ok((endpoint, token)),
            _ => anyhow::bail!(
                "no cluster found: {} does not exist (start one with `sluice up --data-dir {}`) and SLUICE_ADDR/SLUICE_TOKEN are not both set",
                Self::path(data_dir).display(),
                data_dir.display()
            ),
        }
    }
}

pub type AuthedChannel = InterceptedService<Channel, BearerInterceptor>;

/// Connects to `endpoint`, adding `token` to every call.
pub async fn connect(endpoint: &str, token: &str) -> anyhow::Result<AuthedChannel> {
    let channel = Endpoint::from_shared(endpoint.to_string())
        .with_context(|| format!("invalid endpoint {endpoint:?}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("failed to connect to {endpoint}"))?;
    let auth = BearerInterceptor::new(token).context("invalid token")?;
    Ok(InterceptedService::new(channel, auth))
}

/// The archive a client command reads: `--store`, else the data
/// directory's, else `DATA_DIR/archive`.
pub fn store_url(
    flag: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<sluice_query::store::StoreUrl> {
    let text = match flag {
        Some(url) => url.to_string(),
        None => match ClientConfig::read(data_dir)?.and_then(|c| c.store) {
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
    std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .filter(|(k, _)| k.parse::<object_store::aws::AmazonS3ConfigKey>().is_ok())
        .collect()
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
    if let Some(config) = ClientConfig::read(data_dir)? {
        return Ok(config.bus);
    }
    let dir = std::path::absolute(data_dir.join("bus"))?;
    Ok(BusUrl::Embedded(dir))
}

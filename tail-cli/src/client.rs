//! Where the cluster is and how to talk to it: the same rules as `sluice`'s
//! client commands. `--addr`/`SLUICE_ADDR` and `--token`/`SLUICE_TOKEN`
//! first, then `DATA_DIR/client.toml`'s `endpoint` and `token` (its other
//! fields are the `sluice` binary's business and ignored here).
//!
//! The scheduler's address is looked up again whenever it stops answering:
//! a restarted `sluice up` listens on a new port and rewrites client.toml.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use sluice_schema::auth::BearerInterceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub const FILE_NAME: &str = "client.toml";

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The part of `client.toml` tailll reads.
#[derive(Debug, Deserialize)]
struct ClientFile {
    endpoint: Option<String>,
    token: Option<String>,
}

/// Where the scheduler is and who we are.
#[derive(Debug, Clone)]
pub struct ClusterAddress {
    data_dir: PathBuf,
    addr: Option<String>,
    token: Option<String>,
}

impl ClusterAddress {
    /// `addr` and `token` override the data directory's client.toml.
    pub fn new(data_dir: &Path, addr: Option<String>, token: Option<String>) -> Self {
        ClusterAddress {
            data_dir: data_dir.to_path_buf(),
            addr: addr.filter(|a| !a.is_empty()),
            token: token.filter(|t| !t.is_empty()),
        }
    }

    /// The scheduler's endpoint and the token, read now.
    pub fn resolve(&self) -> anyhow::Result<(String, String)> {
        let file = match (&self.addr, &self.token) {
            (Some(_), Some(_)) => None,
            _ => read(&self.data_dir)?,
        };
        let endpoint = self
            .addr
            .clone()
            .or_else(|| file.as_ref().and_then(|f| f.endpoint.clone()));
        let token = self
            .token
            .clone()
            .or_else(|| file.as_ref().and_then(|f| f.token.clone()));
        match (endpoint, token) {
            (Some(endpoint), Some(token)) => Ok((with_scheme(&endpoint), token)),
            _ => anyhow::bail!(
                "no cluster found: {} does not exist or lacks `endpoint`/`token` (start one with `sluice up --data-dir {}`, or pass --data-dir) and SLUICE_ADDR/SLUICE_TOKEN are not both set",
                self.data_dir.join(FILE_NAME).display(),
                self.data_dir.display()
            ),
        }
    }
}

fn read(data_dir: &Path) -> anyhow::Result<Option<ClientFile>> {
    let path = data_dir.join(FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    };
    let file = toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
    Ok(Some(file))
}

/// `HOST:PORT` becomes `http://HOST:PORT`; an address with a scheme is kept.
pub fn with_scheme(endpoint: &str) -> String {
    let endpoint = endpoint.trim();
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

pub type AuthedChannel = InterceptedService<Channel, BearerInterceptor>;

/// Connects to `endpoint`, adding `token` to every call.
pub async fn connect(endpoint: &str, token: &str) -> anyhow::Result<AuthedChannel> {
    let auth = BearerInterceptor::new(token).context("invalid token")?;
    let channel = Endpoint::from_shared(with_scheme(endpoint))
        .with_context(|| format!("invalid endpoint {endpoint:?}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("failed to connect to {endpoint}"))?;
    Ok(InterceptedService::new(channel, auth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_toml_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let none = ClusterAddress::new(dir.path(), None, None);
        let err = none.resolve().unwrap_err().to_string();
        assert!(
            err.contains("no cluster found") && err.contains("client.toml"),
            "{err}"
        );

        std::fs::write(
            dir.path().join(FILE_NAME),
            "# written by sluice up\nendpoint = \"http://127.0.0.1:7000\"\ntoken = \"t0\"\n\
             store = \"file:///x\"\n[bus]\nkind = \"whatever\"\n",
        )
        .unwrap();
        assert_eq!(
            none.resolve().unwrap(),
            ("http://127.0.0.1:7000".to_string(), "t0".to_string())
        );
        let addr = ClusterAddress::new(dir.path(), Some("127.0.0.1:9".into()), None);
        assert_eq!(
            addr.resolve().unwrap(),
            ("http://127.0.0.1:9".to_string(), "t0".to_string())
        );
        let both = ClusterAddress::new(
            Path::new("/nonexistent"),
            Some("https://h:1".into()),
            Some("t1".into()),
        );
        assert_eq!(
            both.resolve().unwrap(),
            ("https://h:1".to_string(), "t1".to_string())
        );

        std::fs::write(dir.path().join(FILE_NAME), "endpoint = [").unwrap();
        assert!(none.resolve().unwrap_err().to_string().contains("invalid"));
    }

    #[test]
    fn schemes() {
        assert_eq!(with_scheme("127.0.0.1:1"), "http://127.0.0.1:1");
        assert_eq!(with_scheme(" http://a:1 "), "http://a:1");
        assert_eq!(with_scheme("https://a:1"), "https://a:1");
    }
}

//! How Sluice's client programs (`sluice`'s client commands, `tailll`)
//! find a cluster and reach it.
//!
//! `sluice up` and `sluice scheduler` write `DATA_DIR/client.toml` (mode
//! 0600: it holds a token): the services' endpoint, the admin token, the CA
//! that signed the services' certificates, the bus and the archive. A
//! client takes the file of `--data-dir`, then [`Overrides`] (the binaries
//! fill them from flags and `SLUICE_ADDR`, `SLUICE_TOKEN`, `SLUICE_TLS_CA`;
//! this crate reads no environment), and [`connect`]s over TLS when the
//! endpoint is `https://`, checking the server's certificate against the CA
//! and its name against the endpoint's host.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_schema::auth::BearerInterceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// The file's name in a data directory.
pub const FILE_NAME: &str = "client.toml";

/// What went wrong finding or reaching a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `client.toml` exists but could not be read.
    #[error("failed to read {path}: {source}")]
    Read {
        /// The `client.toml` that could not be read.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// `client.toml` is not a valid [`ClientFile`] (or could not be written
    /// as TOML).
    #[error("invalid {path}: {message}")]
    Invalid {
        /// The `client.toml` at fault.
        path: PathBuf,
        /// The TOML parser's (or serializer's) message.
        message: String,
    },
    /// `client.toml` could not be written or renamed into place.
    #[error("failed to write {path}: {source}")]
    Write {
        /// The `client.toml` being written.
        path: PathBuf,
        /// Why it could not be written.
        source: std::io::Error,
    },
    /// Neither `client.toml` nor the overrides give both an endpoint and a
    /// token.
    #[error(
        "no cluster found: {path} does not exist or lacks `endpoint`/`token` (start one with `sluice up --data-dir {dir}`, or pass --data-dir) and SLUICE_ADDR/SLUICE_TOKEN are not both set"
    )]
    NoCluster {
        /// The `client.toml` looked for.
        path: PathBuf,
        /// The data directory it was looked for in (`--data-dir`).
        dir: PathBuf,
    },
    /// The endpoint is not a valid URI, or its TLS settings were refused.
    #[error("invalid endpoint {endpoint:?}: {message}")]
    Endpoint {
        /// The endpoint, with its scheme added if it had none.
        endpoint: String,
        /// What is wrong with it.
        message: String,
    },
    /// The endpoint is `https://` but no CA was given to check its certificate.
    #[error(
        "{endpoint} is https but no CA is known to check its certificate: pass --tls-ca FILE (or SLUICE_TLS_CA), or use the data directory's client.toml"
    )]
    NoCa {
        /// The `https://` endpoint.
        endpoint: String,
    },
    /// The token cannot be sent in a header (it is not printable ASCII).
    #[error("invalid token: {0}")]
    Token(String),
    /// Connecting failed (refused, timed out, TLS handshake).
    #[error("failed to connect to {endpoint}: {message}")]
    Connect {
        /// The endpoint as given to [`connect`].
        endpoint: String,
        /// The error and its sources, `: `-separated.
        message: String,
    },
}

/// This crate's result, with [`Error`] by default.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `client.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// The services' endpoint, `https://HOST:PORT`.
    pub endpoint: String,
    /// Bearer token sent with every call.
    pub token: String,
    /// PEM of the CA that signed the services' certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// The bus the cluster uses (`embedded:///PATH`, `kafka://HOST:PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// The archive (`file:///PATH`, `s3://BUCKET/PREFIX`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

impl ClientFile {
    /// Where the file is in `data_dir`: `DATA_DIR/client.toml`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// Reads `DATA_DIR/client.toml`; `Ok(None)` when there is none.
    pub fn read(data_dir: &Path) -> Result<Option<ClientFile>> {
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Read { path, source }),
        };
        toml::from_str(&text).map(Some).map_err(|e| Error::Invalid {
            path,
            message: e.to_string(),
        })
    }

    /// Writes `DATA_DIR/client.toml` atomically, readable by its owner only.
    pub fn write(&self, data_dir: &Path) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = Self::path(data_dir);
        let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
        let text = format!(
            "# Written by `sluice`; read by `sluice` and `tailll` with --data-dir {}.\n{}",
            data_dir.display(),
            toml::to_string(self).map_err(|e| Error::Invalid {
                path: path.clone(),
                message: e.to_string(),
            })?
        );
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })
    }
}

/// What a client was told besides its data directory (flags and the
/// environment, read by the binary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `HOST:PORT` or a URL (`SLUICE_ADDR`).
    pub addr: Option<String>,
    /// `SLUICE_TOKEN`.
    pub token: Option<String>,
    /// PEM of the CA (the contents of `--tls-ca` / `SLUICE_TLS_CA`).
    pub ca: Option<String>,
}

/// Where a cluster is and who we are to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The services' URL, always with a scheme (a bare `HOST:PORT` becomes
    /// `https://HOST:PORT`).
    pub endpoint: String,
    /// Bearer token sent with every call.
    pub token: String,
    /// PEM of the CA that signed the cluster's certificates.
    pub ca: Option<String>,
}

impl Cluster {
    /// The cluster of `data_dir`'s client.toml with `overrides` applied.
    pub fn resolve(data_dir: &Path, overrides: &Overrides) -> Result<Cluster> {
        let file = match (&overrides.addr, &overrides.token, &overrides.ca) {
            (Some(_), Some(_), Some(_)) => None,
            _ => ClientFile::read(data_dir)?,
        };
        let endpoint = overrides
            .addr
            .clone()
            .filter(|a| !a.is_empty())
            .or_else(|| file.as_ref().map(|f| f.endpoint.clone()));
        let token = overrides
            .token
            .clone()
            .filter(|t| !t.is_empty())
            .or_else(|| file.as_ref().map(|f| f.token.clone()));
        let ca = overrides
            .ca
            .clone()
            .or_else(|| file.as_ref().and_then(|f| f.ca.clone()));
        match (endpoint, token) {
            (Some(endpoint), Some(token)) => Ok(Cluster {
                endpoint: with_scheme(&endpoint),
                token,
                ca,
            }),
            _ => Err(Error::NoCluster {
                path: ClientFile::path(data_dir),
                dir: data_dir.to_path_buf(),
            }),
        }
    }

    /// [`connect`] to this cluster's services.
    pub async fn connect(&self, options: &ConnectOptions) -> Result<AuthedChannel> {
        connect(&self.endpoint, &self.token, self.ca.as_deref(), options).await
    }
}

/// `HOST:PORT` becomes `https://HOST:PORT`; an address with a scheme is kept.
pub fn with_scheme(endpoint: &str) -> String {
    let endpoint = endpoint.trim();
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("https://{endpoint}")
    }
}

/// A channel that adds the bearer token to every call.
pub type AuthedChannel = InterceptedService<Channel, BearerInterceptor>;

/// How a connection is made.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Longest a connection attempt may take; 5 s by default.
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive pings (long streams such as Tail).
    pub keep_alive: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(5),
            keep_alive: None,
        }
    }
}

/// The endpoint of `url`: TLS checked against `ca` for `https://` (the
/// server's name must be in its certificate), plain for `http://`.
pub fn endpoint(url: &str, ca: Option<&str>, options: &ConnectOptions) -> Result<Endpoint> {
    let url = with_scheme(url);
    let bad = |message: String| Error::Endpoint {
        endpoint: url.clone(),
        message,
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true);
    if let Some(interval) = options.keep_alive {
        endpoint = endpoint
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(interval);
    }
    if url.starts_with("https://") {
        let ca = ca.ok_or_else(|| Error::NoCa {
            endpoint: url.clone(),
        })?;
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        endpoint = endpoint.tls_config(tls).map_err(|e| bad(e.to_string()))?;
    }
    Ok(endpoint)
}

/// Connects to `url`, adding `token` to every call; see [`endpoint`].
pub async fn connect(
    url: &str,
    token: &str,
    ca: Option<&str>,
    options: &ConnectOptions,
) -> Result<AuthedChannel> {
    let auth = BearerInterceptor::new(token).map_err(|e| Error::Token(e.to_string()))?;
    let channel = endpoint(url, ca, options)?
        .connect()
        .await
        .map_err(|e| Error::Connect {
            endpoint: url.to_string(),
            message: error_chain(&e),
        })?;
    Ok(InterceptedService::new(channel, auth))
}

/// `e` and its sources, `: `-separated (a TLS failure is in a source).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_toml_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let none = Overrides::default();
        let err = Cluster::resolve(dir.path(), &none).unwrap_err().to_string();
        assert!(
            err.contains("no cluster found") && err.contains("client.toml"),
            "{err}"
        );

        let file = ClientFile {
            endpoint: "https://127.0.0.1:7000".into(),
            token: "t0".into(),
            ca: Some("CA PEM".into()),
            bus: Some("embedded:///x/bus".into()),
            store: Some("file:///x".into()),
        };
        file.write(dir.path()).unwrap();
        assert_eq!(ClientFile::read(dir.path()).unwrap(), Some(file));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(ClientFile::path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let cluster = Cluster::resolve(dir.path(), &none).unwrap();
        assert_eq!(
            cluster,
            Cluster {
                endpoint: "https://127.0.0.1:7000".into(),
                token: "t0".into(),
                ca: Some("CA PEM".into())
            }
        );
        let addr = Overrides {
            addr: Some("127.0.0.1:9".into()),
            ca: Some("OTHER".into()),
            ..Overrides::default()
        };
        let cluster = Cluster::resolve(dir.path(), &addr).unwrap();
        assert_eq!(cluster.endpoint, "https://127.0.0.1:9");
        assert_eq!(
            (cluster.token.as_str(), cluster.ca.as_deref()),
            ("t0", Some("OTHER"))
        );
        let all = Overrides {
            addr: Some("http://h:1".into()),
            token: Some("t1".into()),
            ca: Some("X".into()),
        };
        assert_eq!(
            Cluster::resolve(Path::new("/nonexistent"), &all)
                .unwrap()
                .endpoint,
            "http://h:1"
        );

        std::fs::write(ClientFile::path(dir.path()), "endpoint = [").unwrap();
        let err = Cluster::resolve(dir.path(), &none).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid ") && err.contains("client.toml"),
            "{err}"
        );
    }

    #[test]
    fn https_needs_a_ca() {
        let options = ConnectOptions::default();
        let err = endpoint("127.0.0.1:1", None, &options)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no CA is known"), "{err}");
        assert!(endpoint("http://127.0.0.1:1", None, &options).is_ok());
        assert_eq!(with_scheme(" a:1 "), "https://a:1");
        assert_eq!(with_scheme("http://a:1"), "http://a:1");
    }
}

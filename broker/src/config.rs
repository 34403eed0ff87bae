//! Bus configuration: the URL and the settings of each implementation.
//!
//! Bus URLs: `embedded:///ABSOLUTE/PATH` or `kafka://HOST:PORT[,HOST:PORT…]`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which bus to use, parsed from `embedded:///ABSOLUTE/PATH` or `kafka://HOST:PORT[,HOST:PORT…]`;
/// serialized back as that URL string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum BusUrl {
    /// An embedded bus in this directory.
    Embedded(PathBuf),
    /// Kafka bootstrap servers, `host:port,host:port`.
    Kafka(String),
}

impl FromStr for BusUrl {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self> {
        if let Some(path) = url.strip_prefix("embedded://") {
            if !path.starts_with('/') {
                return Err(Error::Config(format!(
                    "bus url {url:?}: an embedded bus needs an absolute path, `embedded:///PATH`"
                )));
            }
            return Ok(BusUrl::Embedded(PathBuf::from(path)));
        }
        if let Some(servers) = url.strip_prefix("kafka://") {
            let servers = servers.trim_end_matches('/');
            if servers.is_empty() {
                return Err(Error::Config(format!(
                    "bus url {url:?}: no broker address, expected `kafka://HOST:PORT[,HOST:PORT]`"
                )));
            }
            for server in servers.split(',') {
                let port = server
                    .rsplit_once(':')
                    .map(|(host, port)| (host, port.parse::<u16>()));
                match port {
                    Some((host, Ok(_))) if !host.is_empty() => {}
                    _ => {
                        return Err(Error::Config(format!(
                            "bus url {url:?}: broker address {server:?} is not HOST:PORT"
                        )));
                    }
                }
            }
            return Ok(BusUrl::Kafka(servers.to_string()));
        }
        Err(Error::Config(format!(
            "bus url {url:?}: expected `embedded:///PATH` or `kafka://HOST:PORT`"
        )))
    }
}

impl TryFrom<String> for BusUrl {
    type Error = Error;
    fn try_from(url: String) -> Result<Self> {
        url.parse()
    }
}

impl From<BusUrl> for String {
    fn from(url: BusUrl) -> String {
        url.to_string()
    }
}

impl fmt::Display for BusUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusUrl::Embedded(path) => write!(f, "embedded://{}", path.display()),
            BusUrl::Kafka(servers) => write!(f, "kafka://{servers}"),
        }
    }
}

/// Everything needed to open a bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Which bus to open; picks whether [`embedded`](Self::embedded) or [`kafka`](Self::kafka)
    /// applies.
    pub url: BusUrl,
    /// Settings used when `url` is `embedded://`, ignored otherwise; defaults when absent.
    #[serde(default)]
    pub embedded: EmbeddedConfig,
    /// Settings used when `url` is `kafka://`, ignored otherwise; defaults when absent.
    #[serde(default)]
    pub kafka: KafkaConfig,
}

impl BusConfig {
    /// A config for `url` with default settings for both implementations.
    pub fn new(url: BusUrl) -> Self {
        BusConfig {
            url,
            embedded: EmbeddedConfig::default(),
            kafka: KafkaConfig::default(),
        }
    }

    /// Checks both settings sections (even the one `url` does not use); [`Error::Config`] names the
    /// first bad field.
    pub fn validate(&self) -> Result<()> {
        self.embedded.validate()?;
        self.kafka.validate()
    }
}

/// When the embedded bus calls `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Before acknowledging each group of records written together: an
    /// acknowledged record survives a power loss. The default.
    Batch,
    /// Every `fsync_interval_ms`, acknowledging once written: an acknowledged
    /// record survives `kill -9` of the process but may be lost with the
    /// machine's power within the interval.
    Interval,
    /// Never (the kernel writes back when it likes): survives `kill -9` only.
    Never,
}

/// Settings of the embedded bus, [`BusConfig::embedded`]; missing fields take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// Partitions of a topic created on first use.
    pub partitions: u32,
    /// When records are synced to disk; default [`FsyncPolicy::Batch`].
    pub fsync: FsyncPolicy,
    /// Milliseconds between syncs with `fsync = "interval"` (must then be positive); unused
    /// otherwise. Default 200.
    pub fsync_interval_ms: u64,
    /// With `fsync = "batch"`: once an append arrives, the writer waits up
    /// to this long for more before writing and syncing, so many small
    /// appends share one `fdatasync` (Kafka's `linger.ms`). 0: no wait.
    pub linger_ms: u64,
    /// A segment file is closed and a new one begun past this size.
    pub segment_bytes: u64,
    /// Largest record accepted (key and payload).
    pub max_record_bytes: usize,
    /// Oldest segments of a partition are deleted past this many bytes.
    pub retention_bytes: u64,
    /// Segments whose newest record is older than this are deleted.
    pub retention_hours: u64,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            partitions: 4,
            fsync: FsyncPolicy::Batch,
            fsync_interval_ms: 200,
            linger_ms: 2,
            segment_bytes: 128 << 20,
            max_record_bytes: 16 << 20,
            retention_bytes: 16 << 30,
            retention_hours: 7 * 24,
        }
    }
}

impl EmbeddedConfig {
    /// Checks each field's range; [`Error::Config`] names the first bad one as `embedded.<field>`.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(Error::Config(format!("embedded.{field}: {why}")));
        if self.partitions == 0 || self.partitions > 1024 {
            return bad("partitions", "must be between 1 and 1024");
        }
        if self.fsync == FsyncPolicy::Interval && self.fsync_interval_ms == 0 {
            return bad(
                "fsync_interval_ms",
                "must be positive with fsync = \"interval\"",
            );
        }
        if self.linger_ms > 1000 {
            return bad("linger_ms", "must be at most 1000");
        }
        if self.segment_bytes < 1 << 16 {
            return bad("segment_bytes", "must be at least 65536");
        }
        if self.max_record_bytes == 0 || self.max_record_bytes as u64 > u32::MAX as u64 / 2 {
            return bad("max_record_bytes", "must be between 1 and 2 GiB");
        }
        if self.retention_bytes < self.segment_bytes {
            return bad("retention_bytes", "must be at least segment_bytes");
        }
        if self.retention_hours == 0 {
            return bad("retention_hours", "must be positive");
        }
        Ok(())
    }

    /// [`retention_hours`](Self::retention_hours) as a `Duration`.
    pub fn retention_age(&self) -> Duration {
        Duration::from_secs(self.retention_hours * 3600)
    }
}

/// Settings of the Kafka bus, [`BusConfig::kafka`]; missing fields take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Partitions of a topic Sluice creates.
    pub partitions: u32,
    /// Replication factor of a topic Sluice creates.
    pub replication: u32,
    /// Bound on reaching the cluster at start and on each delivery: past it
    /// the operation fails with an error naming the brokers.
    pub timeout_ms: u64,
    /// Producer batching: how long to wait to fill a batch.
    pub linger_ms: u64,
    /// Producer batching: largest batch in bytes.
    pub batch_bytes: u64,
    /// Passed to librdkafka unchanged, last, for SASL and TLS and anything
    /// else: `security.protocol`, `sasl.mechanism`, `sasl.username`,
    /// `ssl.ca.location`, …
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            partitions: 4,
            replication: 1,
            timeout_ms: 30_000,
            linger_ms: 5,
            batch_bytes: 1 << 20,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// Checks each field's range and property names; [`Error::Config`] names the first bad one as
    /// `kafka.<field>`.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(Error::Config(format!("kafka.{field}: {why}")));
        if self.partitions == 0 {
            return bad("partitions", "must be positive");
        }
        if self.replication == 0 {
            return bad("replication", "must be positive");
        }
        if self.timeout_ms < 100 {
            return bad("timeout_ms", "must be at least 100");
        }
        if self.batch_bytes == 0 {
            return bad("batch_bytes", "must be positive");
        }
        for key in self.properties.keys() {
            if key.trim().is_empty() || key.contains(char::is_whitespace) {
                return bad(
                    "properties",
                    &format!("property name {key:?} is not a librdkafka setting"),
                );
            }
        }
        Ok(())
    }

    /// [`timeout_ms`](Self::timeout_ms) as a `Duration`.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// `KEY=VALUE` (a `--kafka-property` flag) as a pair; the error quotes the
/// text.
pub fn parse_property(text: &str) -> std::result::Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_print_back() {
        for url in ["embedded:///var/lib/sluice/bus", "kafka://k1:9092,k2:9093"] {
            assert_eq!(url.parse::<BusUrl>().unwrap().to_string(), url);
        }
        assert_eq!(
            "kafka://localhost:9092/".parse::<BusUrl>().unwrap(),
            BusUrl::Kafka("localhost:9092".into())
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases = [
            ("embedded://relative/bus", "needs an absolute path"),
            ("kafka://", "no broker address"),
            ("kafka://k1", "\"k1\" is not HOST:PORT"),
            ("kafka://k1:99999", "is not HOST:PORT"),
            ("kafka://:9092", "is not HOST:PORT"),
            (
                "redis://x:1",
                "expected `embedded:///PATH` or `kafka://HOST:PORT`",
            ),
        ];
        for (url, expected) in cases {
            let err = url.parse::<BusUrl>().unwrap_err().to_string();
            assert!(err.contains(expected), "{url}: {err}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        let config = EmbeddedConfig {
            partitions: 0,
            ..Default::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("embedded.partitions")
        );
        let config = KafkaConfig {
            replication: 0,
            ..Default::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("kafka.replication")
        );
        let text = "url = \"embedded:///b\"\n[embedded]\nfsync = \"sometimes\"\n";
        let err = toml_err(text);
        assert!(err.contains("fsync"), "{err}");
        let err = toml_err("url = \"embedded:///b\"\nbogus = 1\n");
        assert!(err.contains("unknown field `bogus`"), "{err}");
    }

    fn toml_err(text: &str) -> String {
        match toml::from_str::<BusConfig>(text) {
            Ok(_) => panic!("{text:?} parsed"),
            Err(e) => e.to_string(),
        }
    }
}

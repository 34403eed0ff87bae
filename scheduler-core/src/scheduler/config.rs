//! Configuration of the scheduler: where its state lives and how long it
//! waits for silent nodes. `validate` names the field that is wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Shortest `agent_timeout_ms` accepted.
pub const MIN_AGENT_TIMEOUT_MS: u64 = 100;
/// Longest `agent_timeout_ms` accepted: one hour.
pub const MAX_AGENT_TIMEOUT_MS: u64 = 3_600_000;
/// Shortest `tick_ms` accepted.
pub const MIN_TICK_MS: u64 = 10;
/// Longest `tick_ms` accepted: one minute (cron jobs tick by the minute).
pub const MAX_TICK_MS: u64 = 60_000;

/// How the scheduler runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// The JSON file holding every job and task; written atomically after
    /// each change. Its directory is created if missing.
    pub state_file: PathBuf,
    /// A node that has not heartbeated for this long is declared gone: its
    /// tasks become LOST and their instances are placed again elsewhere.
    /// After a scheduler start, nodes get this long to heartbeat first.
    #[serde(default = "defaults::agent_timeout_ms")]
    pub agent_timeout_ms: u64,
    /// How often timeouts, cron ticks and pending placements are checked.
    #[serde(default = "defaults::tick_ms")]
    pub tick_ms: u64,
}

mod defaults {
    pub fn agent_timeout_ms() -> u64 {
        10_000
    }
    pub fn tick_ms() -> u64 {
        500
    }
}

impl SchedulerConfig {
    /// The defaults, with state in `state_file`.
    pub fn new(state_file: impl Into<PathBuf>) -> Self {
        SchedulerConfig {
            state_file: state_file.into(),
            agent_timeout_ms: defaults::agent_timeout_ms(),
            tick_ms: defaults::tick_ms(),
        }
    }

    /// The JSON file the scheduler's jobs and tasks are saved to.
    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    /// `agent_timeout_ms`: how long a node may go without heartbeating
    /// before its tasks are LOST.
    pub fn agent_timeout(&self) -> Duration {
        Duration::from_millis(self.agent_timeout_ms)
    }

    /// `tick_ms`: how often timeouts, cron ticks and pending placements are
    /// checked.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.state_file.as_os_str().is_empty() {
            return Err(Error::Config("state_file: must not be empty".into()));
        }
        if self.state_file.file_name().is_none() {
            return Err(Error::Config(format!(
                "state_file: {} does not name a file",
                self.state_file.display()
            )));
        }
        let timeout = self.agent_timeout_ms;
        if !(MIN_AGENT_TIMEOUT_MS..=MAX_AGENT_TIMEOUT_MS).contains(&timeout) {
            return Err(Error::Config(format!(
                "agent_timeout_ms: must be between {MIN_AGENT_TIMEOUT_MS} and \
                 {MAX_AGENT_TIMEOUT_MS}, got {timeout}"
            )));
        }
        let tick = self.tick_ms;
        if !(MIN_TICK_MS..=MAX_TICK_MS).contains(&tick) {
            return Err(Error::Config(format!(
                "tick_ms: must be between {MIN_TICK_MS} and {MAX_TICK_MS}, got {tick}"
            )));
        }
        if tick > timeout {
            return Err(Error::Config(format!(
                "tick_ms: must be at most agent_timeout_ms ({timeout}), got {tick}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_strict_fields() {
        let config: SchedulerConfig =
            serde_json::from_str(r#"{"state_file": "/tmp/s.json"}"#).unwrap();
        assert_eq!(config, SchedulerConfig::new("/tmp/s.json"));
        assert_eq!(config.agent_timeout_ms, 10_000);
        assert_eq!(config.tick_ms, 500);
        config.validate().unwrap();
        let err = serde_json::from_str::<SchedulerConfig>(r#"{"state_file": "a", "tick": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `tick`"), "{err}");
    }

    #[test]
    fn validate_names_the_field() {
        let base = SchedulerConfig::new("/tmp/s.json");
        let cases = [
            (
                SchedulerConfig {
                    state_file: PathBuf::new(),
                    ..base.clone()
                },
                "state_file: must not be empty",
            ),
            (
                SchedulerConfig {
                    agent_timeout_ms: 5,
                    ..base.clone()
                },
                "agent_timeout_ms: must be between 100 and 3600000, got 5",
            ),
            (
                SchedulerConfig {
                    tick_ms: 0,
                    ..base.clone()
                },
                "tick_ms: must be between",
            ),
            (
                SchedulerConfig {
                    tick_ms: 20_000,
                    ..base.clone()
                },
                "tick_ms: must be at most agent_timeout_ms (10000), got 20000",
            ),
        ];
        for (config, expected) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}

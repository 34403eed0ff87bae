//! Settings of the catalog: checkpoint interval, retries of transient store
//! errors, how old a draft may get, where the data objects live.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// Settings of a [`Catalog`](super::Catalog); the archiver's and maintenance's
/// configurations embed it as `catalog`. Unknown fields are refused, missing
/// ones take their defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// A checkpoint (Sluice's state cache and a Delta checkpoint) is written
    /// after every commit whose version is a multiple of this; it is also
    /// the tables' `delta.checkpointInterval`.
    pub checkpoint_interval: u64,
    /// A draft older than this is refused by `commit`; the janitor's grace
    /// period must be at least twice this.
    pub max_draft_age_secs: u64,
    /// How long the janitor spares the objects of a split after compaction
    /// or retention removed it from the catalog: longer than any query
    /// runs (a query planned before the removal may still read them), and
    /// no longer than needed: `--as-of` reads of older versions need them too.
    pub removed_grace_secs: u64,
    /// Attempts of a store call that fails transiently (1: no retry).
    pub retry_attempts: u32,
    /// Wait before the first retry, in milliseconds; doubled for each further
    /// attempt up to `retry_max_backoff_ms`, then jittered by ±50 %.
    pub retry_initial_backoff_ms: u64,
    /// Cap on the wait between retries, in milliseconds (before jitter).
    pub retry_max_backoff_ms: u64,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            checkpoint_interval: 50,
            max_draft_age_secs: 30 * 60,
            removed_grace_secs: 15 * 60,
            retry_attempts: 5,
            retry_initial_backoff_ms: 100,
            retry_max_backoff_ms: 5_000,
        }
    }
}

impl CatalogConfig {
    /// Checks every field; the [`Error::Config`] names the bad one as `catalog.<field>`.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(Error::Config(format!("catalog.{field}: {why}")));
        if self.checkpoint_interval == 0 {
            return bad("checkpoint_interval", "must be at least 1");
        }
        if self.max_draft_age_secs == 0 {
            return bad("max_draft_age_secs", "must be at least 1");
        }
        if self.removed_grace_secs < 60 {
            return bad(
                "removed_grace_secs",
                "must be at least 60 (queries in flight read removed splits)",
            );
        }
        if self.retry_attempts == 0 {
            return bad("retry_attempts", "must be at least 1");
        }
        if self.retry_initial_backoff_ms > self.retry_max_backoff_ms {
            return bad(
                "retry_initial_backoff_ms",
                "must not exceed retry_max_backoff_ms",
            );
        }
        Ok(())
    }

    /// `max_draft_age_secs` as a [`Duration`]: the oldest a draft may be when committed.
    pub fn max_draft_age(&self) -> Duration {
        Duration::from_secs(self.max_draft_age_secs)
    }

    /// The wait before retry `attempt` (1-based): exponential, capped, with
    /// jitter so racing writers spread out.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .retry_initial_backoff_ms
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
            .min(self.retry_max_backoff_ms);
        let jittered = base as f64 * (0.5 + super::commit::jitter());
        Duration::from_millis(jittered as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_fields_are_named() {
        CatalogConfig::default().validate().unwrap();
        type Change = fn(&mut CatalogConfig);
        let cases: [(Change, &str); 3] = [
            (|c| c.checkpoint_interval = 0, "catalog.checkpoint_interval"),
            (|c| c.retry_attempts = 0, "catalog.retry_attempts"),
            (
                |c| c.retry_initial_backoff_ms = 10_000,
                "catalog.retry_initial",
            ),
        ];
        for (change, field) in cases {
            let mut config = CatalogConfig::default();
            change(&mut config);
            let e = config.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        let parsed: Result<CatalogConfig, _> =
            serde_json::from_str(r#"{"checkpoint_intervall": 3}"#);
        assert!(parsed.is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let config = CatalogConfig::default();
        let first = config.backoff(1);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(150));
        let late = config.backoff(30);
        assert!(late >= Duration::from_millis(2_500) && late <= Duration::from_millis(7_500));
    }
}

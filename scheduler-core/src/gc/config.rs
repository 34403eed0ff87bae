//! Configuration of sandbox garbage collection and disk watching. Every
//! field has a default; `validate` names the field that is wrong.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How sandboxes are measured, collected and punched on a node.
///
/// Durations are whole seconds (`*_secs`), as elsewhere in Sluice's
/// configuration files; the methods without the suffix return them as
/// [`Duration`]s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// How often each running sandbox is measured against its quota and the
    /// garbage-collection policy runs (Mesos `--disk_watch_interval`).
    #[serde(default = "defaults::disk_watch_interval_secs")]
    pub disk_watch_interval_secs: u64,
    /// The age at which a terminated sandbox is collected on an empty disk
    /// (Mesos `--gc_delay`). Mesos defaults to one week; Sluice to 24 hours,
    /// because logs are kept on the bus and in the archive, so the sandbox
    /// copy is only for debugging the latest runs.
    #[serde(default = "defaults::gc_delay_secs")]
    pub gc_delay_secs: u64,
    /// The fraction of the disk GC tries to keep free (Mesos
    /// `--gc_disk_headroom`): above `1 − gc_disk_headroom` of the disk used
    /// (the pressure line) the threshold age is zero.
    #[serde(default = "defaults::gc_disk_headroom")]
    pub gc_disk_headroom: f64,
    /// At or above this fraction of the disk used, sandboxes the shipper has
    /// not fully shipped are deleted too (oldest first) and a `data_loss`
    /// event says what was lost. At least the pressure line.
    #[serde(default = "defaults::critical_mark")]
    pub critical_mark: f64,
    /// How long a terminated sandbox past its collection age may wait for
    /// the shipper before it is deleted anyway (`data_loss`). This bounds
    /// sandboxes the shipper never finishes (an unreadable file); a disk
    /// filling during a bus outage is the critical mark's business. The
    /// wait starts when the sandbox becomes old enough, which is at once
    /// under pressure and about ten hours after termination at half usage,
    /// so a short `max_wait` turns any long bus outage into data loss on a
    /// disk with room to spare: 24 hours (the benchmark loses nothing in a
    /// 16-hour outage).
    #[serde(default = "defaults::max_wait_secs")]
    pub max_wait_secs: u64,
    /// A running sandbox's already-shipped log prefix is punched out under
    /// pressure only when at least this many bytes would be freed (small
    /// punches cost more than they give). Below the critical mark only.
    #[serde(default = "defaults::punch_min_bytes")]
    pub punch_min_bytes: u64,
    /// A running sandbox using more than this fraction of its disk quota has
    /// its shipped prefix punched whatever the disk pressure, so a task that
    /// never rotates its logs is not killed for bytes already shipped.
    #[serde(default = "defaults::punch_quota_fraction")]
    pub punch_quota_fraction: f64,
}

mod defaults {
    pub fn disk_watch_interval_secs() -> u64 {
        60
    }
    pub fn gc_delay_secs() -> u64 {
        24 * 3600
    }
    pub fn gc_disk_headroom() -> f64 {
        0.1
    }
    pub fn critical_mark() -> f64 {
        0.95
    }
    pub fn max_wait_secs() -> u64 {
        24 * 3600
    }
    pub fn punch_min_bytes() -> u64 {
        64 << 20
    }
    pub fn punch_quota_fraction() -> f64 {
        0.8
    }
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            disk_watch_interval_secs: defaults::disk_watch_interval_secs(),
            gc_delay_secs: defaults::gc_delay_secs(),
            gc_disk_headroom: defaults::gc_disk_headroom(),
            critical_mark: defaults::critical_mark(),
            max_wait_secs: defaults::max_wait_secs(),
            punch_min_bytes: defaults::punch_min_bytes(),
            punch_quota_fraction: defaults::punch_quota_fraction(),
        }
    }
}

impl GcConfig {
    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(Error::Config(format!("{field}: {why}")));
        if self.disk_watch_interval_secs == 0 {
            return bad("disk_watch_interval_secs", "must be positive");
        }
        if !(0.0..1.0).contains(&self.gc_disk_headroom) {
            return bad("gc_disk_headroom", "must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&self.critical_mark) || self.critical_mark == 0.0 {
            return bad("critical_mark", "must be between 0 and 1");
        }
        if self.critical_mark < 1.0 - self.gc_disk_headroom {
            return bad(
                "critical_mark",
                "must be at least the pressure line, 1 - gc_disk_headroom",
            );
        }
        if !(0.0..=1.0).contains(&self.punch_quota_fraction) || self.punch_quota_fraction == 0.0 {
            return bad("punch_quota_fraction", "must be between 0 and 1");
        }
        for (field, secs) in [
            ("gc_delay_secs", self.gc_delay_secs),
            ("max_wait_secs", self.max_wait_secs),
            ("disk_watch_interval_secs", self.disk_watch_interval_secs),
        ] {
            // Ten years: far beyond any sensible value, and keeps
            // millisecond arithmetic far from overflow.
            if secs > 10 * 365 * 24 * 3600 {
                return bad(field, "must be at most ten years");
            }
        }
        Ok(())
    }

    /// `disk_watch_interval_secs`: time between quota checks and GC passes.
    pub fn disk_watch_interval(&self) -> Duration {
        Duration::from_secs(self.disk_watch_interval_secs)
    }
    /// `gc_delay_secs`: collection age of a terminated sandbox on an empty disk.
    pub fn gc_delay(&self) -> Duration {
        Duration::from_secs(self.gc_delay_secs)
    }
    /// `max_wait_secs`: how long an old enough sandbox waits for the shipper
    /// before it is deleted anyway.
    pub fn max_wait(&self) -> Duration {
        Duration::from_secs(self.max_wait_secs)
    }

    /// Used bytes above which the disk is under pressure:
    /// `⌊total × (1 − gc_disk_headroom)⌋`.
    pub fn pressure_line_bytes(&self, total_bytes: u64) -> u64 {
        (total_bytes as f64 * (1.0 - self.gc_disk_headroom)).floor() as u64
    }

    /// Used bytes at or above which the disk is critical:
    /// `⌈total × critical_mark⌉`.
    pub fn critical_bytes(&self, total_bytes: u64) -> u64 {
        (total_bytes as f64 * self.critical_mark).ceil() as u64
    }

    /// The Mesos threshold age in milliseconds with `used_bytes` of
    /// `total_bytes` used: `gc_delay × max(0, 1 − gc_disk_headroom − usage)`,
    /// exactly zero above the pressure line. Never increases as `used_bytes`
    /// grows. An unknown capacity (`total_bytes == 0`) counts as an empty
    /// disk.
    pub fn threshold_age_ms(&self, used_bytes: u64, total_bytes: u64) -> u64 {
        let delay_ms = self.gc_delay_secs.saturating_mul(1000) as f64;
        if total_bytes == 0 {
            return (delay_ms * (1.0 - self.gc_disk_headroom).max(0.0)) as u64;
        }
        if used_bytes >= self.pressure_line_bytes(total_bytes) {
            return 0;
        }
        let usage = used_bytes as f64 / total_bytes as f64;
        (delay_ms * (1.0 - self.gc_disk_headroom - usage).max(0.0)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_fill_a_partial_file() {
        GcConfig::default().validate().unwrap();
        let parsed: GcConfig = serde_json::from_str(r#"{"gc_delay_secs": 3600}"#).unwrap();
        assert_eq!(parsed.gc_delay(), Duration::from_secs(3600));
        assert_eq!(parsed.critical_mark, 0.95);
        let err = serde_json::from_str::<GcConfig>(r#"{"gc_delay": 3600}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `gc_delay`"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let ok = GcConfig::default();
        let cases = [
            (
                GcConfig {
                    gc_disk_headroom: 1.0,
                    ..ok.clone()
                },
                "gc_disk_headroom: must be between 0 and 1",
            ),
            (
                GcConfig {
                    gc_disk_headroom: f64::NAN,
                    ..ok.clone()
                },
                "gc_disk_headroom:",
            ),
            (
                GcConfig {
                    critical_mark: 1.5,
                    ..ok.clone()
                },
                "critical_mark: must be between 0 and 1",
            ),
            (
                GcConfig {
                    critical_mark: 0.85,
                    ..ok.clone()
                },
                "critical_mark: must be at least the pressure line",
            ),
            (
                GcConfig {
                    disk_watch_interval_secs: 0,
                    ..ok.clone()
                },
                "disk_watch_interval_secs: must be positive",
            ),
            (
                GcConfig {
                    punch_quota_fraction: 0.0,
                    ..ok.clone()
                },
                "punch_quota_fraction:",
            ),
            (
                GcConfig {
                    max_wait_secs: u64::MAX,
                    ..ok.clone()
                },
                "max_wait_secs: must be at most ten years",
            ),
        ];
        for (config, expected) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn threshold_age_is_the_mesos_rule() {
        let config = GcConfig::default();
        let day_ms = 24 * 3600 * 1000;
        assert_eq!(config.threshold_age_ms(0, 1000), day_ms * 9 / 10);
        // 1 − 0.1 − 0.5 = 0.4 of a day (allow float rounding).
        let at_half = config.threshold_age_ms(500, 1000);
        assert!(at_half.abs_diff(day_ms * 4 / 10) <= 1, "{at_half}");
        assert_eq!(config.threshold_age_ms(900, 1000), 0);
        assert_eq!(config.threshold_age_ms(2000, 1000), 0);
        assert_eq!(config.threshold_age_ms(5, 0), day_ms * 9 / 10);
        assert_eq!(config.pressure_line_bytes(1000), 900);
        assert_eq!(config.critical_bytes(1000), 950);
    }
}

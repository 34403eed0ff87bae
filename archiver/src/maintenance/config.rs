//! Settings of archive maintenance: when and how far compaction merges,
//! how long retention keeps splits (globally and per role), how often the
//! janitor runs; and the parser of ages such as `30d` that the flags use.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_schema::auth::is_valid_role;

use crate::{Error, Result};
use sluice_archive::catalog::CatalogConfig;
use sluice_archive::split::SplitOptions;

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;
/// The shortest retention accepted: guards against `1m` meant as a month.
pub const MIN_RETENTION_SECS: u64 = HOUR;
/// The longest retention accepted (it must fit in `i64` nanoseconds).
pub const MAX_RETENTION_SECS: u64 = 100 * 365 * DAY;

/// Settings of [`Maintenance`](super::Maintenance). Unknown fields are
/// refused, missing ones take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// The writer's name in catalog commits.
    pub id: String,
    /// When and how far small splits are merged.
    pub compaction: CompactionConfig,
    /// How long splits are kept; by default forever.
    pub retention: RetentionConfig,
    /// Seconds between janitor passes (0: none; the archiver runs its own
    /// every 10 minutes).
    pub janitor_interval_secs: u64,
    /// Objects of failed attempts are deleted this long after they were
    /// written (removed splits after `catalog.removed_grace_secs`).
    pub janitor_grace_secs: u64,
    /// How merged splits are written.
    pub split: SplitOptions,
    /// Settings of the archive's catalog: retries, checkpoints, draft age.
    pub catalog: CatalogConfig,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            id: "maintenance".into(),
            compaction: CompactionConfig::default(),
            retention: RetentionConfig::default(),
            janitor_interval_secs: 10 * 60,
            janitor_grace_secs: 2 * HOUR,
            split: SplitOptions::default(),
            catalog: CatalogConfig::default(),
        }
    }
}

/// Which splits compaction merges. A split is *small* while its line text
/// is under `target_raw_bytes` and its rows under `max_rows`; the small
/// splits of one partition (kind, date, hour) are merged, oldest first,
/// into splits of at most `target_raw_bytes` and `max_rows`, which bounds
/// the memory of a merge (about 2.5 × `target_raw_bytes` + 100 B per row:
/// the rows, the index being built, the Parquet file). See
/// [`plan_compaction`](super::plan_compaction) for when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    /// Whether compaction passes run at all (`--no-compaction` clears it).
    pub enabled: bool,
    /// Seconds between compaction passes.
    pub interval_secs: u64,
    /// Line (or event message) bytes a merged split holds at most.
    pub target_raw_bytes: u64,
    /// Rows a merged split holds at most.
    pub max_rows: u64,
    /// In a partition still being written, splits merge by size class
    /// (classes grow by this factor from 1 MiB) once this many of one class
    /// wait, so a row is rewritten about once per class, not once per pass.
    /// In a settled partition, a split more than this many times larger
    /// than the other small ones together waits for them to grow (late
    /// lines do not rewrite a whole hour each).
    pub merge_factor: usize,
    /// How long after its hour (or day, for events) a partition counts as
    /// still being written.
    pub settle_secs: u64,
    /// Merges per pass; a pass that leaves work starts the next at once,
    /// after retention and the janitor had their turn.
    pub max_merges_per_pass: usize,
    /// Roles kept in splits of their own (those with a retention of their
    /// own; the archiver writes them apart): a merge never mixes them with
    /// other roles.
    pub separate_roles: std::collections::BTreeSet<String>,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            enabled: true,
            interval_secs: 30,
            target_raw_bytes: 128 << 20,
            max_rows: 1_000_000,
            merge_factor: 8,
            settle_secs: 10 * MINUTE,
            max_merges_per_pass: 8,
            separate_roles: std::collections::BTreeSet::new(),
        }
    }
}

/// Which splits retention removes: those whose newest row is older than
/// the retention of every role in them. A role's retention is its entry in
/// `roles`, else `max_age_secs`; without either its splits are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// The retention of roles without one of their own (`None`: forever).
    pub max_age_secs: Option<u64>,
    /// Per-role retentions, overriding `max_age_secs`.
    pub roles: BTreeMap<String, u64>,
    /// Seconds between retention passes.
    pub interval_secs: u64,
    /// Splits one catalog commit removes at most.
    pub max_splits_per_commit: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age_secs: None,
            roles: BTreeMap::new(),
            interval_secs: 5 * MINUTE,
            max_splits_per_commit: 1000,
        }
    }
}

impl RetentionConfig {
    /// A retention with a global age and no per-role ones.
    pub fn with_max_age(max_age: Duration) -> RetentionConfig {
        RetentionConfig {
            max_age_secs: Some(max_age.as_secs()),
            ..RetentionConfig::default()
        }
    }

    /// Whether retention would ever remove anything.
    pub fn is_enabled(&self) -> bool {
        self.max_age_secs.is_some() || !self.roles.is_empty()
    }

    /// The retention of `role`, `None` for forever.
    pub fn age_of(&self, role: &str) -> Option<u64> {
        self.roles.get(role).copied().or(self.max_age_secs)
    }
}

impl MaintenanceConfig {
    /// Checks every field, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::config(format!("{field}: {why}")));
        if self.id.is_empty() {
            return bad("id", "must not be empty".into());
        }
        let c = &self.compaction;
        if !(1..=86_400).contains(&c.interval_secs) {
            return bad(
                "compaction.interval_secs",
                "must be between 1 and 86400".into(),
            );
        }
        if !(1 << 20..=1 << 30).contains(&c.target_raw_bytes) {
            return bad(
                "compaction.target_raw_bytes",
                "must be between 1 MiB and 1 GiB".into(),
            );
        }
        // The index of a merged split takes about a byte per byte of text
        // and must fit in one segment.
        if c.target_raw_bytes > self.split.index_memory_bytes as u64 / 2 {
            return bad(
                "compaction.target_raw_bytes",
                format!(
                    "must be at most half of split.index_memory_bytes ({})",
                    self.split.index_memory_bytes
                ),
            );
        }
        if !(2..=100_000_000).contains(&c.max_rows) {
            return bad(
                "compaction.max_rows",
                "must be between 2 and 100000000".into(),
            );
        }
        if !(2..=1000).contains(&c.merge_factor) {
            return bad(
                "compaction.merge_factor",
                "must be between 2 and 1000".into(),
            );
        }
        if c.settle_secs > DAY {
            return bad("compaction.settle_secs", "must be at most 86400".into());
        }
        if c.max_merges_per_pass == 0 {
            return bad(
                "compaction.max_merges_per_pass",
                "must be at least 1".into(),
            );
        }
        let r = &self.retention;
        if let Some(age) = r.max_age_secs {
            check_age(age).or_else(|why| {
                bad(
                    "retention.max_age_secs",
                    format!("{} {why}", format_age(age)),
                )
            })?;
        }
        for (role, &age) in &r.roles {
            if !is_valid_role(role) {
                return bad(
                    "retention.roles",
                    format!("{role:?} is not a role name ([A-Za-z0-9_.-])"),
                );
            }
            check_age(age).or_else(|why| {
                bad(
                    &format!("retention.roles.{role}"),
                    format!("{} {why}", format_age(age)),
                )
            })?;
        }
        if !(1..=86_400).contains(&r.interval_secs) {
            return bad(
                "retention.interval_secs",
                "must be between 1 and 86400".into(),
            );
        }
        if !(1..=100_000).contains(&r.max_splits_per_commit) {
            return bad(
                "retention.max_splits_per_commit",
                "must be between 1 and 100000".into(),
            );
        }
        if self.janitor_grace_secs < 2 * self.catalog.max_draft_age_secs {
            return bad(
                "janitor_grace_secs",
                "must be at least twice catalog.max_draft_age_secs".into(),
            );
        }
        if self.janitor_grace_secs >= sluice_archive::catalog::REMOVED_RETENTION_MS / 1000 {
            return bad(
                "janitor_grace_secs",
                "must be shorter than the 30 days removed splits are remembered".into(),
            );
        }
        self.split
            .validate()
            .map_err(|e| Error::config(format!("split: {e}")))?;
        self.catalog.validate().map_err(Error::from)
    }
}

/// `Err("is less than …")`: to follow the age as the user wrote it.
fn check_age(secs: u64) -> std::result::Result<(), &'static str> {
    if secs < MIN_RETENTION_SECS {
        return Err("is less than the shortest retention, 1h");
    }
    if secs > MAX_RETENTION_SECS {
        return Err("is more than the longest retention, 36500d");
    }
    Ok(())
}

pub use sluice_schema::time::parse_duration;

/// A retention age: a [`parse_duration`] between 1h and 36500d, in seconds.
pub fn parse_age(text: &str) -> std::result::Result<u64, String> {
    let secs = parse_duration(text)?.as_secs();
    check_age(secs).map_err(|why| format!("{text:?} {why}"))?;
    Ok(secs)
}

/// `ROLE=AGE`, as `--retention-role` takes it.
pub fn parse_role_age(text: &str) -> std::result::Result<(String, u64), String> {
    let (role, age) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not ROLE=AGE, e.g. batch=7d"))?;
    let role = role.trim();
    if !is_valid_role(role) {
        return Err(format!(
            "{role:?} is not a role name ([A-Za-z0-9_.-], not . or ..)"
        ));
    }
    Ok((role.to_string(), parse_age(age.trim())?))
}

/// Seconds in the largest unit that divides them: `30d`, `36h`, `90s`.
pub fn format_age(secs: u64) -> String {
    for (unit, name) in [(WEEK, "w"), (DAY, "d"), (HOUR, "h"), (MINUTE, "m")] {
        if secs >= unit && secs.is_multiple_of(unit) {
            return format!("{}{name}", secs / unit);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        for (text, secs) in [
            ("30d", 30 * DAY),
            ("12h", 12 * HOUR),
            ("1d12h", DAY + 12 * HOUR),
            ("90m", 90 * MINUTE),
            ("2w", 2 * WEEK),
            ("45s", 45),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert_eq!(format_age(30 * DAY), "30d");
        assert_eq!(format_age(2 * WEEK), "2w");
        assert_eq!(format_age(36 * HOUR), "36h");
        assert_eq!(format_age(61), "61s");
        for bad in [
            "",
            "30",
            "d",
            "30x",
            "3.5d",
            "-1d",
            "30 days",
            "99999999999999999999w",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn ages_are_bounded_and_roles_checked() {
        assert_eq!(parse_age("30d"), Ok(30 * DAY));
        assert!(
            parse_age("1m")
                .unwrap_err()
                .contains("shortest retention, 1h")
        );
        assert!(parse_age("36501d").unwrap_err().contains("longest"));
        assert_eq!(parse_role_age("batch=7d"), Ok(("batch".into(), 7 * DAY)));
        assert!(parse_role_age("batch").unwrap_err().contains("ROLE=AGE"));
        assert!(parse_role_age("a/b=7d").unwrap_err().contains("\"a/b\""));
        assert!(parse_role_age("=7d").unwrap_err().contains("role name"));
        assert!(parse_role_age("www=7").unwrap_err().contains("unit"));
    }

    #[test]
    fn defaults_are_valid_and_bad_fields_are_named() {
        MaintenanceConfig::default().validate().unwrap();
        type Change = fn(&mut MaintenanceConfig);
        let cases: [(Change, &str); 10] = [
            (|c| c.id.clear(), "id:"),
            (
                |c| c.compaction.target_raw_bytes = 10,
                "compaction.target_raw_bytes",
            ),
            (
                |c| c.split.index_memory_bytes = 100 << 20,
                "split.index_memory_bytes",
            ),
            (|c| c.compaction.max_rows = 1, "compaction.max_rows"),
            (|c| c.compaction.merge_factor = 1, "compaction.merge_factor"),
            (
                |c| c.retention.max_age_secs = Some(60),
                "retention.max_age_secs: 1m is less",
            ),
            (
                |c| {
                    c.retention.roles.insert("www".into(), 5);
                },
                "retention.roles.www",
            ),
            (
                |c| {
                    c.retention.roles.insert("a b".into(), DAY);
                },
                "\"a b\" is not a role name",
            ),
            (|c| c.janitor_grace_secs = 60, "janitor_grace_secs"),
            (
                |c| c.janitor_grace_secs = 31 * DAY,
                "janitor_grace_secs: must be shorter",
            ),
        ];
        for (change, field) in cases {
            let mut config = MaintenanceConfig::default();
            change(&mut config);
            let e = config.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
        let parsed: std::result::Result<MaintenanceConfig, _> =
            serde_json::from_str(r#"{"retention": {"max_age": 3}}"#);
        assert!(parsed.is_err());
        let parsed: MaintenanceConfig =
            serde_json::from_str(r#"{"retention": {"max_age_secs": 86400}}"#).unwrap();
        assert_eq!(parsed.retention.interval_secs, 300);
        assert_eq!(parsed.retention.age_of("www"), Some(DAY));
    }

    #[test]
    fn role_retention_overrides_the_global_one() {
        let mut r = RetentionConfig::with_max_age(Duration::from_secs(30 * DAY));
        r.roles.insert("batch".into(), 7 * DAY);
        assert_eq!(r.age_of("batch"), Some(7 * DAY));
        assert_eq!(r.age_of("www"), Some(30 * DAY));
        r.max_age_secs = None;
        assert_eq!(r.age_of("www"), None);
        assert!(r.is_enabled());
        assert!(!RetentionConfig::default().is_enabled());
    }
}

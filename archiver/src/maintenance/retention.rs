//! Retention: which splits are old enough to remove ([`plan_retention`],
//! pure). Age is measured from a split's newest row, so a split is removed
//! only once every row in it has outlived its role's retention.
//!
//! Retention acts on whole splits. A split holding rows of several roles
//! (the archiver writes one split per hour for all jobs) is removed only
//! when the retention of each of its roles has expired: a role with a
//! short retention shares the fate of the longest-kept role it was
//! archived with. A role without a retention of its own takes the global
//! one; with neither, its splits are kept.

use sluice_archive::catalog::SplitEntry;

use super::config::RetentionConfig;

/// The splits among `splits` (the live ones) that retention removes at
/// `now_unix_ms`, in the order given.
pub fn plan_retention<'a>(
    splits: impl IntoIterator<Item = &'a SplitEntry>,
    config: &RetentionConfig,
    now_unix_ms: u64,
) -> Vec<&'a SplitEntry> {
    if !config.is_enabled() {
        return Vec::new();
    }
    let now_nanos = i128::from(now_unix_ms) * 1_000_000;
    splits
        .into_iter()
        .filter(|split| is_expired(split, config, now_nanos))
        .collect()
}

/// Whether every role of `split` has a retention and the split's newest row
/// is older than each of them. A split without roles (rows of jobs without
/// a role) takes the global retention.
pub fn is_expired(split: &SplitEntry, config: &RetentionConfig, now_unix_nanos: i128) -> bool {
    let newest = i128::from(split.max_ts_nanos);
    let expired = |role: &str| {
        config
            .age_of(role)
            .is_some_and(|age| newest + i128::from(age) * 1_000_000_000 <= now_unix_nanos)
    };
    if split.roles.is_empty() {
        expired("")
    } else {
        split.roles.iter().all(|role| expired(role))
    }
}

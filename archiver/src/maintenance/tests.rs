//! Planning tests: which splits compaction merges and retention removes,
//! by example and by property.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use sluice_archive::catalog::SplitKind;

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
/// 2026-11-21 00:00 UTC.
const DAY0_MS: u64 = 1_795_219_200_000;

fn date_of(unix_ms: u64) -> String {
    sluice_schema::archive::Date::from_unix_nanos(unix_ms as i64 * 1_000_000).to_string()
}

/// A log split of the hour starting at `hour_ms`, with rows at `at_ms`.
fn log_split(name: &str, hour_ms: u64, raw: u64, rows: u64) -> SplitEntry {
    split(name, SplitKind::Logs, hour_ms, raw, rows, &["www"])
}

fn split(
    name: &str,
    kind: SplitKind,
    at_ms: u64,
    raw: u64,
    rows: u64,
    roles: &[&str],
) -> SplitEntry {
    let hour = ((at_ms / HOUR_MS) % 24) as u8;
    let date = date_of(at_ms);
    let dir = match kind {
        SplitKind::Logs => format!("logs/date={date}/hour={hour:02}"),
        SplitKind::Events => format!("events/date={date}"),
    };
    let ts = at_ms as i64 * 1_000_000;
    SplitEntry {
        key: format!("{dir}/{name}.parquet"),
        index_key: (kind == SplitKind::Logs).then(|| format!("{dir}/{name}.index")),
        kind,
        date,
        hour: (kind == SplitKind::Logs).then_some(hour),
        rows,
        raw_bytes: raw,
        data_bytes: raw / 10,
        index_bytes: raw / 10,
        min_ts_nanos: ts,
        max_ts_nanos: ts + 1_000,
        jobs: roles.iter().map(|r| format!("{r}/prod/x")).collect(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        created_unix_ms: at_ms,
        held: Default::default(),
        levels: None,
    }
}

fn config(target: u64, max_rows: u64) -> CompactionConfig {
    CompactionConfig {
        target_raw_bytes: target,
        max_rows,
        ..CompactionConfig::default()
    }
}

fn keys(job: &CompactionJob) -> Vec<&str> {
    job.inputs.iter().map(|s| s.key.as_str()).collect()
}

#[test]
fn small_splits_of_a_closed_hour_merge_within_the_limits() {
    let h7 = DAY0_MS + 7 * HOUR_MS;
    let splits = [
        log_split("a", h7, 40, 10),
        log_split("b", h7 + 1, 40, 10),
        log_split("c", h7 + 2, 40, 10),
        log_split("big", h7 + 3, 100, 10),
        log_split("d", h7 + 4, 10, 10),
        // Another hour, alone in it.
        log_split("e", h7 + HOUR_MS, 10, 10),
    ];
    let now = h7 + 5 * HOUR_MS;
    let jobs = plan_compaction(&splits, &config(100, 1_000), now);
    // a+b fit, c would overflow: c and d go together; big is not small.
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert!(keys(&jobs[0])[0].ends_with("/a.parquet"));
    assert_eq!(jobs[0].inputs.len(), 2);
    assert_eq!(jobs[0].raw_bytes(), 80);
    assert_eq!(jobs[1].inputs.len(), 2);
    assert!(keys(&jobs[1])[1].ends_with("/d.parquet"));
    assert_eq!(jobs[0].partition(), "logs 2026-11-21 07h");

    // The row limit splits groups as well.
    let jobs = plan_compaction(&splits, &config(1_000, 20), now);
    assert!(jobs.iter().all(|j| j.rows() <= 20));
    assert_eq!(jobs.len(), 2);
}

#[test]
fn roles_with_their_own_retention_stay_in_splits_of_their_own() {
    let h7 = DAY0_MS + 7 * HOUR_MS;
    let splits = [
        split("www1", SplitKind::Logs, h7, 10, 10, &["www"]),
        split("batch1", SplitKind::Logs, h7 + 1, 10, 10, &["batch"]),
        split("www2", SplitKind::Logs, h7 + 2, 10, 10, &["www", "db"]),
        split("batch2", SplitKind::Logs, h7 + 3, 10, 10, &["batch"]),
    ];
    let now = h7 + 5 * HOUR_MS;
    // Without separate roles, the hour becomes one split.
    let jobs = plan_compaction(&splits, &config(1_000, 1_000), now);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    // With batch separate, batch merges with batch, the rest with the rest.
    let mut separate = config(1_000, 1_000);
    separate.separate_roles.insert("batch".into());
    let jobs = plan_compaction(&splits, &separate, now);
    let groups: Vec<Vec<&str>> = jobs.iter().map(keys).collect();
    assert_eq!(jobs.len(), 2, "{groups:?}");
    for job in &jobs {
        let batch = job.inputs.iter().filter(|s| s.roles == ["batch"]).count();
        assert!(batch == 0 || batch == job.inputs.len(), "{groups:?}");
    }
}

#[test]
fn an_hour_still_written_merges_like_with_like() {
    const MIB: u64 = 1 << 20;
    let h7 = DAY0_MS + 7 * HOUR_MS;
    let c = CompactionConfig {
        merge_factor: 4,
        settle_secs: 600,
        ..config(256 * MIB, 1_000_000)
    };
    // Three archiver splits of 100 kB, the hour's merged 3 MiB split, and
    // more 2 MiB splits arriving.
    let mut splits: Vec<SplitEntry> = (0..3)
        .map(|i| log_split(&format!("tiny{i}"), h7 + 100 + i, 100_000, 1))
        .collect();
    splits.push(log_split("merged", h7, 3 * MIB, 1));
    splits.extend((0..2).map(|i| log_split(&format!("mid{i}"), h7 + 200 + i, 2 * MIB, 1)));
    // Within the hour and within the settle time after it: no class has
    // four splits.
    assert!(plan_compaction(&splits, &c, h7 + 30 * 60_000).is_empty());
    assert!(plan_compaction(&splits, &c, h7 + HOUR_MS + 599_000).is_empty());
    // A fourth tiny one: the tiny ones merge, the big ones are left alone.
    splits.push(log_split("tiny3", h7 + 103, 100_000, 1));
    let jobs = plan_compaction(&splits, &c, h7 + 30 * 60_000);
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].inputs.iter().all(|s| s.key.contains("/tiny")));
    assert_eq!(jobs[0].inputs.len(), 4);
    // Settled: everything in one.
    let jobs = plan_compaction(&splits, &c, h7 + HOUR_MS + 600_000);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].inputs.len(), 7);
    assert_eq!(size_class(100_000, 4), 0);
    assert_eq!(size_class(MIB, 4), 1);
    assert_eq!(size_class(3 * MIB, 4), 1);
    assert_eq!(size_class(4 * MIB, 4), 2);
}

#[test]
fn late_lines_do_not_rewrite_a_settled_hour_each() {
    let h7 = DAY0_MS + 7 * HOUR_MS;
    let mut splits = vec![log_split("hour", h7, 50_000_000, 1_000)];
    splits.push(log_split("late0", h7 + 10, 10_000, 1));
    let c = config(128 << 20, 1_000_000);
    let settled = h7 + 2 * HOUR_MS;
    assert!(plan_compaction(&splits, &c, settled).is_empty());
    splits.push(log_split("late1", h7 + 11, 10_000, 1));
    let jobs = plan_compaction(&splits, &c, settled);
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].inputs.len(),
        2,
        "the late ones merge among themselves"
    );
    assert!(!jobs[0].inputs.iter().any(|s| s.key.contains("/hour.")));
    // Once they are an eighth of it, it is rewritten with them.
    splits.push(log_split("late2", h7 + 12, 50_000_000 / 8, 1));
    let jobs = plan_compaction(&splits, &c, settled);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].inputs.len(), 4);
}

#[test]
fn event_splits_merge_per_day() {
    let day = DAY0_MS - DAY_MS;
    let splits = [
        split("a", SplitKind::Events, day + HOUR_MS, 10, 1, &["www"]),
        split("b", SplitKind::Events, day + 20 * HOUR_MS, 10, 1, &[""]),
        split("c", SplitKind::Logs, day + 20 * HOUR_MS, 10, 1, &["www"]),
        split("d", SplitKind::Events, DAY0_MS + HOUR_MS, 10, 1, &["www"]),
    ];
    let jobs = plan_compaction(&splits, &config(1_000, 1_000), DAY0_MS + 2 * DAY_MS);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].kind, SplitKind::Events);
    assert_eq!(jobs[0].hour, None);
    assert_eq!(jobs[0].partition(), "events 2026-11-20");
    assert_eq!(jobs[0].inputs.len(), 2);
}

#[test]
fn retention_by_role() {
    let now = DAY0_MS + 100 * DAY_MS;
    let mut r = RetentionConfig::with_max_age(std::time::Duration::from_secs(30 * 86_400));
    r.roles.insert("batch".into(), 7 * 86_400);
    r.roles.insert("audit".into(), 365 * 86_400);
    let age = |days: u64| now - days * DAY_MS - 1;
    let splits = [
        split("www-40d", SplitKind::Logs, age(40), 1, 1, &["www"]),
        split("www-20d", SplitKind::Logs, age(20), 1, 1, &["www"]),
        split("batch-8d", SplitKind::Logs, age(8), 1, 1, &["batch"]),
        split("batch-6d", SplitKind::Logs, age(6), 1, 1, &["batch"]),
        // Several roles: kept while any of them is.
        split("mixed-8d", SplitKind::Logs, age(8), 1, 1, &["batch", "www"]),
        split(
            "mixed-40d",
            SplitKind::Logs,
            age(40),
            1,
            1,
            &["batch", "www"],
        ),
        split(
            "audit-40d",
            SplitKind::Logs,
            age(40),
            1,
            1,
            &["audit", "batch"],
        ),
        split("noroles-40d", SplitKind::Events, age(40), 1, 1, &[]),
        split("events-8d", SplitKind::Events, age(8), 1, 1, &["batch"]),
    ];
    let removed: BTreeSet<&str> = plan_retention(&splits, &r, now)
        .into_iter()
        .map(|s| s.key.rsplit('/').next().unwrap())
        .collect();
    let want: BTreeSet<&str> = [
        "www-40d.parquet",
        "batch-8d.parquet",
        "mixed-40d.parquet",
        "noroles-40d.parquet",
        "events-8d.parquet",
    ]
    .into();
    assert_eq!(removed, want);

    // Without a global retention, roles without one of their own stay.
    r.max_age_secs = None;
    let removed: BTreeSet<&str> = plan_retention(&splits, &r, now)
        .into_iter()
        .map(|s| s.key.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(removed, ["batch-8d.parquet", "events-8d.parquet"].into());
    assert!(plan_retention(&splits, &RetentionConfig::default(), now).is_empty());
}

fn arb_split() -> impl Strategy<Value = SplitEntry> {
    (
        0u64..3,                                        // day
        proptest::sample::select(vec![0u64, 1, 7, 23]), // hour
        0u64..HOUR_MS,                                  // within the hour
        any::<bool>(),                                  // events?
        1u64..400,                                      // raw bytes
        1u64..40,                                       // rows
        proptest::sample::subsequence(vec!["www", "batch", "audit", "db"], 0..3),
        any::<u32>(),
    )
        .prop_map(|(day, hour, within, events, raw, rows, roles, id)| {
            let kind = if events {
                SplitKind::Events
            } else {
                SplitKind::Logs
            };
            let at = DAY0_MS + day * DAY_MS + hour * HOUR_MS + within;
            split(&format!("s{id:08x}"), kind, at, raw, rows, &roles)
        })
}

fn arb_splits() -> impl Strategy<Value = Vec<SplitEntry>> {
    proptest::collection::vec(arb_split(), 0..80).prop_map(|mut v| {
        let mut seen = BTreeSet::new();
        v.retain(|s| seen.insert(s.key.clone()));
        v
    })
}

proptest! {
    #[test]
    fn compaction_never_crosses_a_partition_and_respects_its_limits(
        splits in arb_splits(),
        target in prop_oneof![50u64..1_000, (1u64 << 20)..(256 << 20)],
        max_rows in 2u64..100,
        factor in 2usize..6,
        now_day in 0u64..4,
        now_hour in proptest::sample::select(vec![0u64, 1, 7, 23]),
        now_min in 0u64..80,
    ) {
        let c = CompactionConfig {
            target_raw_bytes: target,
            max_rows,
            merge_factor: factor,
            settle_secs: 600,
            ..CompactionConfig::default()
        };
        // Often within a partition or its settle time, often after.
        let now = DAY0_MS + now_day * DAY_MS + now_hour * HOUR_MS + now_min * 60_000;
        let jobs = plan_compaction(&splits, &c, now);
        let mut used = BTreeSet::new();
        let live: BTreeMap<&str, &SplitEntry> =
            splits.iter().map(|s| (s.key.as_str(), s)).collect();
        for job in &jobs {
            prop_assert!(job.inputs.len() >= 2);
            prop_assert!(job.raw_bytes() <= target);
            prop_assert!(job.rows() <= max_rows);
            for input in &job.inputs {
                prop_assert_eq!(live.get(input.key.as_str()), Some(&input));
                prop_assert!(used.insert(input.key.clone()), "an input in two jobs");
                prop_assert_eq!(input.kind, job.kind);
                prop_assert_eq!(&input.date, &job.date);
                prop_assert_eq!(input.hour, job.hour);
            }
        }
        // Per partition, the groups that may merge: all candidates of a
        // settled one less the outsized, the classes of `factor` or more
        // splits of an open one. Nothing else merges, a job never mixes
        // groups, and no two neighbours in time of a group are both left
        // alone when they would fit together.
        let merged: BTreeSet<&str> = jobs
            .iter()
            .flat_map(|j| j.inputs.iter().map(|s| s.key.as_str()))
            .collect();
        let mut partitions: BTreeMap<(SplitKind, &str, Option<u8>), Vec<&SplitEntry>> =
            BTreeMap::new();
        for s in splits.iter().filter(|s| s.raw_bytes < target && s.rows < max_rows) {
            partitions.entry((s.kind, &s.date, s.hour)).or_default().push(s);
        }
        for ((kind, date, hour), mut candidates) in partitions {
            candidates.sort_by(|a, b| (a.min_ts_nanos, &a.key).cmp(&(b.min_ts_nanos, &b.key)));
            let end = partition_end_ms(kind, date, hour).unwrap();
            let groups: Vec<Vec<&SplitEntry>> = if end + 600_000 <= now as i64 {
                let mut kept = candidates.clone();
                while kept.len() >= 2 {
                    let total: u64 = kept.iter().map(|s| s.raw_bytes).sum();
                    let big = kept.iter().copied().max_by_key(|s| s.raw_bytes).unwrap();
                    if big.raw_bytes <= factor as u64 * (total - big.raw_bytes) {
                        break;
                    }
                    // Outsized: more than `factor` times the others.
                    kept.retain(|s| s.key != big.key);
                }
                vec![kept]
            } else {
                let mut classes: BTreeMap<u32, Vec<&SplitEntry>> = BTreeMap::new();
                for s in &candidates {
                    classes.entry(size_class(s.raw_bytes, factor as u64)).or_default().push(s);
                }
                classes.into_values().filter(|c| c.len() >= factor).collect()
            };
            let eligible: BTreeSet<&str> =
                groups.iter().flatten().map(|s| s.key.as_str()).collect();
            for s in &candidates {
                prop_assert!(
                    eligible.contains(s.key.as_str()) || !merged.contains(s.key.as_str()),
                    "{} merged but not eligible", s.key
                );
            }
            let of_partition = jobs
                .iter()
                .filter(|j| (j.kind, j.date.as_str(), j.hour) == (kind, date, hour));
            for job in of_partition {
                let group = groups
                    .iter()
                    .find(|g| g.iter().any(|s| s.key == job.inputs[0].key))
                    .unwrap();
                prop_assert!(
                    job.inputs.iter().all(|i| group.iter().any(|s| s.key == i.key)),
                    "a job mixes groups"
                );
            }
            for group in &groups {
                for pair in group.windows(2) {
                    let alone = !merged.contains(pair[0].key.as_str())
                        && !merged.contains(pair[1].key.as_str());
                    let fits = pair[0].raw_bytes + pair[1].raw_bytes <= target
                        && pair[0].rows + pair[1].rows <= max_rows;
                    prop_assert!(
                        !(alone && fits),
                        "{} and {} fit together", pair[0].key, pair[1].key
                    );
                }
            }
        }
    }

    #[test]
    fn retention_never_removes_a_split_younger_than_its_roles_retention(
        splits in arb_splits(),
        global in proptest::option::of(1u64..5),
        per_role in proptest::collection::btree_map(
            proptest::sample::select(vec!["www", "batch", "audit", "db"]), 1u64..5, 0..3),
        now_h in 0u64..(6 * 24),
    ) {
        let r = RetentionConfig {
            max_age_secs: global.map(|d| d * 86_400),
            roles: per_role.iter().map(|(k, v)| (k.to_string(), v * 86_400)).collect(),
            ..RetentionConfig::default()
        };
        let now = DAY0_MS + now_h * HOUR_MS;
        let removed: BTreeSet<&str> = plan_retention(&splits, &r, now)
            .into_iter()
            .map(|s| s.key.as_str())
            .collect();
        let now_nanos = i128::from(now) * 1_000_000;
        for s in &splits {
            // A split without roles is kept as long as the global retention.
            let roles: Vec<&str> = if s.roles.is_empty() {
                vec![""]
            } else {
                s.roles.iter().map(String::as_str).collect()
            };
            let outlived = |role: &&str| {
                r.age_of(role).is_some_and(|age| {
                    i128::from(s.max_ts_nanos) + i128::from(age) * 1_000_000_000 <= now_nanos
                })
            };
            if removed.contains(s.key.as_str()) {
                // Never early: the newest row outlived every role's retention.
                prop_assert!(roles.iter().all(outlived), "removed early: {:?}", s);
            } else {
                // Never kept past it.
                prop_assert!(!roles.iter().all(outlived), "kept: {:?}", s);
            }
        }
    }
}

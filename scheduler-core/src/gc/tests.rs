//! Tests of the policy: worked examples of the rule, then property tests
//! that replay every plan against the rule's guarantees.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::config::GcConfig;
use super::policy::*;

const NOW: u64 = 1_700_000_000_000;
const HOUR: u64 = 3_600_000;
const GB: u64 = 1 << 30;

fn terminated(id: &str, hours_ago: u64, bytes: u64, unshipped: u64) -> SandboxInfo {
    SandboxInfo {
        id: id.into(),
        state: SandboxState::Terminated {
            at_unix_ms: NOW - hours_ago * HOUR,
        },
        allocated_bytes: bytes,
        unshipped_bytes: unshipped,
        unshipped_files: if unshipped > 0 {
            vec![(format!("/sandboxes/{id}/stdout"), unshipped)]
        } else {
            Vec::new()
        },
        shipped_prefix_reclaimable: 0,
        quota_bytes: None,
    }
}

fn running(id: &str, bytes: u64, reclaimable: u64) -> SandboxInfo {
    SandboxInfo {
        id: id.into(),
        state: SandboxState::Running,
        allocated_bytes: bytes,
        unshipped_bytes: 0,
        unshipped_files: Vec::new(),
        shipped_prefix_reclaimable: reclaimable,
        quota_bytes: None,
    }
}

fn disk(used_gb: u64) -> NodeDisk {
    NodeDisk {
        total_bytes: 100 * GB,
        used_bytes: used_gb * GB,
    }
}

fn find<'a>(plan: &'a GcPlan, id: &str) -> &'a Decision {
    plan.decisions.iter().find(|d| d.id() == id).unwrap()
}

fn deleted(plan: &GcPlan) -> Vec<&str> {
    plan.decisions
        .iter()
        .filter(|d| matches!(d, Decision::Delete { .. }))
        .map(Decision::id)
        .collect()
}

#[test]
fn the_mesos_threshold_decides_without_pressure() {
    // 50% used: threshold 24 h × (1 − 0.1 − 0.5) = 9.6 h.
    let config = GcConfig::default();
    let sandboxes = [terminated("old", 10, GB, 0), terminated("young", 9, GB, 0)];
    let plan = plan(&config, disk(50), &sandboxes, NOW);
    assert_eq!(plan.pressure, Pressure::None);
    assert_eq!(deleted(&plan), ["old"]);
    // After deleting `old`, 49% used: 24 h × 0.41 = 9.84 h.
    let Decision::Keep {
        reason: KeepReason::TooYoung {
            eligible_at_unix_ms,
        },
        ..
    } = find(&plan, "young")
    else {
        panic!("{plan:?}");
    };
    let expected = NOW - 9 * HOUR + config.threshold_age_ms(49 * GB, 100 * GB);
    assert_eq!(*eligible_at_unix_ms, expected);
    assert_eq!(plan.expected_used_after, 49 * GB);
}

#[test]
fn unshipped_sandboxes_wait_then_are_forced_after_max_wait() {
    let config = GcConfig {
        max_wait_secs: 6 * 3600,
        ..GcConfig::default()
    };
    // Empty disk: threshold 21.6 h, forced at 27.6 h.
    let sandboxes = [
        terminated("waiting", 22, GB, 100),
        terminated("stuck", 28, GB, 200),
    ];
    let plan = plan(&config, disk(0), &sandboxes, NOW);
    let threshold = config.threshold_age_ms(0, 100 * GB);
    assert_eq!(
        find(&plan, "waiting"),
        &Decision::Keep {
            id: "waiting".into(),
            reason: KeepReason::NotShipped {
                unshipped_bytes: 100,
                forced_at_unix_ms: NOW - 22 * HOUR + threshold + 6 * HOUR,
            },
        }
    );
    assert_eq!(
        find(&plan, "stuck"),
        &Decision::Delete {
            id: "stuck".into(),
            bytes: GB,
            forced: Some(Forced::MaxWait),
            unshipped_bytes: 200,
            unshipped_files: vec![("/sandboxes/stuck/stdout".into(), 200)],
        }
    );
}

#[test]
fn pressure_deletes_oldest_first_until_under_the_line() {
    let config = GcConfig::default();
    // 93% used, line 90%: three 1 GB sandboxes bring it back to 90%.
    let sandboxes: Vec<_> = (0..6)
        .map(|k| terminated(&format!("t{k}"), 6 - k, GB, 0))
        .collect();
    let plan = plan(&config, disk(93), &sandboxes, NOW);
    assert_eq!(plan.pressure, Pressure::High);
    // At 90% the threshold is 0 too, so t3 (3 h) goes; at 89% it is
    // 24 h × 0.01 = 14.4 min < 2 h: t4 goes; at 88%, 28.8 min < 1 h: t5
    // goes. All six, oldest first.
    assert_eq!(deleted(&plan), ["t0", "t1", "t2", "t3", "t4", "t5"]);
    let young: Vec<_> = (0..6)
        .map(|k| terminated(&format!("t{k}"), 0, GB, 0))
        .collect();
    let plan = super::policy::plan(&config, disk(93), &young, NOW - 1);
    // All terminated "now" (1 ms in the future): the sweep takes them while
    // the threshold is 0, i.e. down to the line, then stops.
    assert_eq!(deleted(&plan), ["t0", "t1", "t2", "t3"]);
    assert_eq!(plan.expected_used_after, 89 * GB);
}

#[test]
fn critical_forces_unshipped_deletions_oldest_first_and_never_running() {
    let config = GcConfig::default();
    let sandboxes = [
        running("run", 30 * GB, 0),
        terminated("shipped", 1, GB, 0),
        terminated("a", 3, 2 * GB, GB),
        terminated("b", 2, 2 * GB, GB),
        terminated("c", 1, 2 * GB, GB),
    ];
    // 97% used, critical 95%: `shipped` (→96%), then `a` (→94%).
    let plan = plan(&config, disk(97), &sandboxes, NOW);
    assert_eq!(plan.pressure, Pressure::Critical);
    assert_eq!(deleted(&plan), ["shipped", "a"]);
    assert!(matches!(
        find(&plan, "a"),
        Decision::Delete {
            forced: Some(Forced::CriticalDisk),
            unshipped_bytes,
            ..
        } if *unshipped_bytes == GB
    ));
    assert!(matches!(
        find(&plan, "run"),
        Decision::Keep {
            reason: KeepReason::Running,
            ..
        }
    ));
    // Even with nothing else to delete, running sandboxes stay.
    let plan = super::policy::plan(&config, disk(99), &sandboxes[..1], NOW);
    assert_eq!(deleted(&plan), Vec::<&str>::new());
}

#[test]
fn running_sandboxes_are_punched_near_quota_or_under_pressure() {
    let config = GcConfig::default();
    let mut near_quota = running("quota", 9 * GB, GB);
    near_quota.quota_bytes = Some(10 * GB);
    let sandboxes = [
        near_quota,
        running("big", 5 * GB, 3 * GB),
        running("small", GB, 1 << 20),
    ];
    let plan = plan(&config, disk(50), &sandboxes, NOW);
    let actions: Vec<_> = plan.actions().cloned().collect();
    assert_eq!(
        actions,
        [Decision::PunchHoles {
            id: "quota".into(),
            bytes: GB,
            reason: PunchReason::NearQuota,
        }]
    );
    // 93%: quota punch (→92%), then `big` (→89%); `small` is under
    // punch_min_bytes and not needed.
    let plan = super::policy::plan(&config, disk(93), &sandboxes, NOW);
    let punched: Vec<_> = plan.actions().map(Decision::id).collect();
    assert_eq!(punched, ["quota", "big"]);
    assert_eq!(plan.expected_used_after, 89 * GB);
}

#[test]
fn an_unknown_capacity_is_an_empty_disk() {
    let config = GcConfig::default();
    let sandboxes = [terminated("a", 1, GB, GB), terminated("b", 30, GB, 0)];
    let node = NodeDisk {
        total_bytes: 0,
        used_bytes: 10 * GB,
    };
    let plan = plan(&config, node, &sandboxes, NOW);
    assert_eq!(plan.pressure, Pressure::None);
    assert_eq!(deleted(&plan), ["b"]);
}

#[test]
fn the_plan_serializes_for_dry_runs() {
    let sandboxes = [terminated("a", 100, GB, 0)];
    let plan = plan(&GcConfig::default(), disk(10), &sandboxes, NOW);
    let json = serde_json::to_string(&plan).unwrap();
    assert!(json.contains(r#""action":"delete""#), "{json}");
    assert!(json.contains(r#""pressure":"none""#), "{json}");
}

// ---- Property tests ----

fn arb_config() -> impl Strategy<Value = GcConfig> {
    (
        0.0..0.5f64,
        0.0..1.0f64,
        0u64..48 * 3600,
        prop_oneof![0u64..6 * 3600, 24 * 3600u64..240 * 3600],
        0u64..1 << 20,
        0.1..1.0f64,
    )
        .prop_map(|(headroom, c, gc_delay, max_wait, punch_min, quota)| {
            let line = 1.0 - headroom;
            GcConfig {
                gc_disk_headroom: headroom,
                critical_mark: line + (1.0 - line) * c,
                gc_delay_secs: gc_delay,
                max_wait_secs: max_wait,
                punch_min_bytes: punch_min,
                punch_quota_fraction: quota,
                ..GcConfig::default()
            }
        })
}

fn arb_sandbox() -> impl Strategy<Value = SandboxInfo> {
    (
        prop::bool::weighted(0.3),
        // Terminated this long ago, in minutes; a few in the future.
        prop_oneof![-30i64..180, -30i64..72 * 60],
        0u64..1 << 22,
        prop_oneof![1 => Just(0.0), 2 => 0.0..1.0f64],
        0.0..1.0f64,
        prop::option::of(1u64..1 << 23),
    )
        .prop_map(
            |(is_running, minutes, bytes, unshipped, reclaimable, quota)| {
                let unshipped = (bytes as f64 * unshipped) as u64;
                SandboxInfo {
                    id: String::new(),
                    state: if is_running {
                        SandboxState::Running
                    } else {
                        SandboxState::Terminated {
                            at_unix_ms: NOW.saturating_add_signed(-minutes * 60_000),
                        }
                    },
                    allocated_bytes: bytes,
                    unshipped_bytes: if is_running { 0 } else { unshipped },
                    unshipped_files: if unshipped > 0 && !is_running {
                        vec![("stdout".into(), unshipped)]
                    } else {
                        Vec::new()
                    },
                    shipped_prefix_reclaimable: if is_running {
                        (bytes as f64 * reclaimable) as u64
                    } else {
                        0
                    },
                    quota_bytes: quota,
                }
            },
        )
}

/// A node whose sandboxes fill between 0 and ~200% of the disk.
fn arb_node() -> impl Strategy<Value = (NodeDisk, Vec<SandboxInfo>)> {
    (
        prop::collection::vec(arb_sandbox(), 0..120),
        0.05..2.0f64,
        0u64..1 << 24,
    )
        .prop_map(|(mut sandboxes, fill, other)| {
            for (k, sandbox) in sandboxes.iter_mut().enumerate() {
                sandbox.id = format!("task-{k:03}");
            }
            let held: u64 = sandboxes.iter().map(|s| s.allocated_bytes).sum();
            let used = held + other;
            let total = ((used as f64 / fill) as u64).max(1);
            let node = NodeDisk {
                total_bytes: total,
                used_bytes: used,
            };
            (node, sandboxes)
        })
}

fn age_key(sandbox: &SandboxInfo) -> (u64, &str) {
    match sandbox.state {
        SandboxState::Terminated { at_unix_ms } => (at_unix_ms, &sandbox.id),
        SandboxState::Running => unreachable!(),
    }
}

/// Replays `plan` and checks every guarantee of the rule.
fn check(config: &GcConfig, node: NodeDisk, sandboxes: &[SandboxInfo], plan: &GcPlan) {
    let by_id: HashMap<&str, &SandboxInfo> = sandboxes.iter().map(|s| (s.id.as_str(), s)).collect();
    // Every sandbox exactly once.
    let ids: HashSet<&str> = plan.decisions.iter().map(Decision::id).collect();
    assert_eq!(ids.len(), plan.decisions.len(), "a sandbox decided twice");
    assert_eq!(ids.len(), sandboxes.len(), "a sandbox left out");

    let mut used = node.used_bytes;
    let mut keeps_started = false;
    let mut unforced = Vec::new();
    let mut critical_deleted = Vec::new();
    for decision in &plan.decisions {
        let sandbox = by_id[decision.id()];
        match decision {
            Decision::Delete {
                bytes,
                forced,
                unshipped_bytes,
                ..
            } => {
                assert!(!keeps_started, "an action after a keep");
                let SandboxState::Terminated { at_unix_ms } = sandbox.state else {
                    panic!("deleted running sandbox {}", sandbox.id);
                };
                assert_eq!(*bytes, sandbox.allocated_bytes);
                assert_eq!(*unshipped_bytes, sandbox.unshipped_bytes);
                let age = NOW.saturating_sub(at_unix_ms);
                match forced {
                    None => {
                        assert_eq!(sandbox.unshipped_bytes, 0, "unshipped, not forced");
                        assert!(age >= config.threshold_age_ms(used, node.total_bytes));
                        unforced.push(sandbox);
                    }
                    Some(Forced::MaxWait) => {
                        assert!(sandbox.unshipped_bytes > 0);
                        assert!(age >= config.max_wait_secs * 1000, "max_wait not passed");
                    }
                    Some(Forced::CriticalDisk) => {
                        assert!(sandbox.unshipped_bytes > 0);
                        assert!(used >= plan.critical_bytes, "forced below critical");
                        critical_deleted.push(sandbox);
                    }
                }
                used = used.saturating_sub(*bytes);
            }
            Decision::PunchHoles { bytes, .. } => {
                assert!(!keeps_started, "an action after a keep");
                assert_eq!(sandbox.state, SandboxState::Running);
                assert!(*bytes > 0);
                assert_eq!(*bytes, sandbox.shipped_prefix_reclaimable);
                used = used.saturating_sub(*bytes);
            }
            Decision::Keep { reason, .. } => {
                keeps_started = true;
                let is_running = sandbox.state == SandboxState::Running;
                assert_eq!(is_running, *reason == KeepReason::Running);
            }
        }
    }
    assert_eq!(used, plan.expected_used_after, "bytes not accounted");
    assert_eq!(
        plan.used_before - plan.expected_used_after,
        plan.bytes_to_free().min(plan.used_before)
    );

    // Oldest first: every kept shipped terminated sandbox is younger than
    // every unforced deletion; every sandbox still waiting is younger than
    // every critical deletion.
    let kept = |pred: &dyn Fn(&KeepReason) -> bool| -> Vec<&SandboxInfo> {
        plan.decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Keep { id, reason } if pred(reason) => Some(by_id[id.as_str()]),
                _ => None,
            })
            .collect()
    };
    let kept_shipped: Vec<_> = kept(&|r| matches!(r, KeepReason::TooYoung { .. }))
        .into_iter()
        .filter(|s| s.unshipped_bytes == 0)
        .collect();
    for d in &unforced {
        for k in &kept_shipped {
            assert!(
                age_key(d) < age_key(k),
                "{} deleted before older {}",
                d.id,
                k.id
            );
        }
    }
    for d in &critical_deleted {
        for k in kept(&|r| matches!(r, KeepReason::NotShipped { .. })) {
            assert!(
                age_key(d) < age_key(k),
                "{} forced before older {}",
                d.id,
                k.id
            );
        }
    }

    // Frees enough: if the disk was under pressure and the terminated,
    // shipped sandboxes could bring it under the line, they did.
    if plan.pressure >= Pressure::High {
        let shipped: u64 = sandboxes
            .iter()
            .filter(|s| s.state != SandboxState::Running && s.unshipped_bytes == 0)
            .map(|s| s.allocated_bytes)
            .sum();
        if shipped >= node.used_bytes - plan.pressure_line_bytes {
            assert!(plan.expected_used_after <= plan.pressure_line_bytes);
        }
        // And at critical, everything but running sandboxes' unpunchable
        // bytes is available.
        let all: u64 = sandboxes
            .iter()
            .map(|s| match s.state {
                SandboxState::Running => s.shipped_prefix_reclaimable,
                SandboxState::Terminated { .. } => s.allocated_bytes,
            })
            .sum();
        if plan.pressure == Pressure::Critical && all > node.used_bytes - plan.critical_bytes {
            assert!(plan.expected_used_after < plan.critical_bytes);
        }
    }
    if plan.pressure == Pressure::None {
        assert!(critical_deleted.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plans_keep_the_rule(config in arb_config(), (node, sandboxes) in arb_node()) {
        let plan = plan(&config, node, &sandboxes, NOW);
        check(&config, node, &sandboxes, &plan);
    }

    #[test]
    fn plans_are_deterministic_in_any_input_order(
        config in arb_config(),
        (node, sandboxes) in arb_node(),
        seed in any::<u64>(),
    ) {
        let first = plan(&config, node, &sandboxes, NOW);
        prop_assert_eq!(&first, &plan(&config, node, &sandboxes, NOW));
        let mut shuffled = sandboxes.clone();
        // Fisher–Yates with a splitmix step.
        let mut state = seed;
        for i in (1..shuffled.len()).rev() {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let j = (state >> 33) as usize % (i + 1);
            shuffled.swap(i, j);
        }
        prop_assert_eq!(&first, &plan(&config, node, &shuffled, NOW));
    }

    #[test]
    fn running_sandboxes_are_never_deleted(
        config in arb_config(),
        (node, mut sandboxes) in arb_node(),
    ) {
        for sandbox in &mut sandboxes {
            sandbox.state = SandboxState::Running;
            sandbox.unshipped_bytes = 0;
        }
        let plan = plan(&config, node, &sandboxes, NOW);
        let deletes = plan
            .decisions
            .iter()
            .filter(|d| matches!(d, Decision::Delete { .. }))
            .count();
        prop_assert_eq!(deletes, 0);
    }
}

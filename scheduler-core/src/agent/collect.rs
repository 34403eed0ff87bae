//! Garbage collection on a node: measure, ask the policy, act, report.
//!
//! One pass every `disk_watch_interval`: every sandbox is measured
//! ([`disk::dir_usage`]), the shipper says what of its logs is not yet
//! acknowledged, [`gc::plan`] decides, and the decisions are carried out:
//! sandboxes deleted (`sandbox_collected` events, and `data_loss` naming the
//! files and bytes when the deletion was forced with bytes unshipped),
//! shipped log prefixes of running tasks punched out (offsets stay valid
//! for the shipper; where the filesystem cannot punch holes it is said once
//! and the sandbox is left alone), and disk pressure changes reported.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sluice_schema::events::{EventIds, EventSink};
use sluice_schema::pb::{ClusterEvent, EventKind, TaskReport};

use crate::disk::{self, Punched};
use crate::gc::{self, Decision, GcConfig, GcPlan, NodeDisk, Pressure, SandboxInfo, SandboxState};

/// What the shipper knows of one log file of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedFile {
    /// The log file, under the sandbox directory; holes are punched in it
    /// through this path.
    pub path: PathBuf,
    /// Bytes in the file now.
    pub size: u64,
    /// Bytes the bus has acknowledged (every line before this offset).
    pub acked: u64,
}

/// The shipper, as the agent needs it: implemented over the shipper's
/// progress by whoever runs both (the `sluice` binary), so this crate does
/// not depend on the shipper.
pub trait ShipState: Send + Sync {
    /// The log files of the sandbox at `dir`, as found on disk (a file the
    /// shipper has not seen yet counts as not shipped at all).
    fn files(&self, dir: &Path) -> Vec<ShippedFile>;
    /// The task of `dir` ended: ship its last unterminated lines now.
    fn task_ended(&self, dir: &Path);
}

/// A sandbox the pass may act on.
pub(crate) struct Candidate {
    pub id: String,
    pub dir: PathBuf,
    pub running: bool,
    pub terminated_at_unix_ms: u64,
    pub quota_bytes: Option<u64>,
    pub report: Option<TaskReport>,
}

/// What a pass did.
#[derive(Debug)]
pub struct Outcome {
    /// What the policy decided for every sandbox.
    pub plan: GcPlan,
    /// Whether the decisions were carried out; `false` for a dry run.
    pub applied: bool,
    /// Bytes deleting sandboxes and punching holes freed; 0 for a dry run.
    pub freed_bytes: u64,
}

#[derive(Default)]
pub(crate) struct Collector {
    /// Per log file, the offset up to which holes were punched.
    punched: HashMap<PathBuf, u64>,
    pressure: Option<Pressure>,
    said_unsupported: bool,
}

pub(crate) struct Context<'a> {
    pub node: &'a str,
    pub root: &'a Path,
    pub gc: &'a GcConfig,
    /// Pretend the node's disk is this big and holds only the sandboxes.
    pub capacity_bytes: Option<u64>,
    pub ship: &'a dyn ShipState,
    pub events: &'a dyn EventSink,
    pub ids: &'a EventIds,
    pub now_unix_ms: u64,
}

impl Collector {
    /// Measures, plans and (unless `dry_run`) acts. Returns the ids of the
    /// sandboxes deleted with the outcome.
    pub(crate) fn pass(
        &mut self,
        cx: &Context<'_>,
        candidates: &[Candidate],
        dry_run: bool,
    ) -> (Outcome, Vec<String>) {
        let mut infos = Vec::with_capacity(candidates.len());
        let mut files_of: HashMap<&str, Vec<ShippedFile>> = HashMap::new();
        let mut measured = 0u64;
        for c in candidates {
            let allocated = disk::dir_usage(&c.dir).map_or(0, |u| u.allocated_bytes);
            measured += allocated;
            let files = cx.ship.files(&c.dir);
            let unshipped_files: Vec<(String, u64)> = files
                .iter()
                .filter(|f| f.size > f.acked)
                .map(|f| (f.path.to_string_lossy().into_owned(), f.size - f.acked))
                .collect();
            let reclaimable = files
                .iter()
                .map(|f| {
                    f.acked
                        .saturating_sub(self.punched.get(&f.path).copied().unwrap_or(0))
                })
                .sum();
            infos.push(SandboxInfo {
                id: c.id.clone(),
                state: if c.running {
                    SandboxState::Running
                } else {
                    SandboxState::Terminated {
                        at_unix_ms: c.terminated_at_unix_ms,
                    }
                },
                allocated_bytes: allocated,
                unshipped_bytes: unshipped_files.iter().map(|(_, b)| b).sum(),
                unshipped_files,
                shipped_prefix_reclaimable: reclaimable,
                quota_bytes: c.quota_bytes,
            });
            files_of.insert(&c.id, files);
        }
        let node = match cx.capacity_bytes {
            Some(total) => NodeDisk {
                total_bytes: total,
                used_bytes: measured,
            },
            None => match disk::fs_usage(cx.root) {
                Ok(fs) => NodeDisk::from_fs(&fs),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot measure the node's disk; collecting by age only");
                    NodeDisk {
                        total_bytes: 0,
                        used_bytes: 0,
                    }
                }
            },
        };
        let plan = gc::plan(cx.gc, node, &infos, cx.now_unix_ms);
        if dry_run {
            return (
                Outcome {
                    plan,
                    applied: false,
                    freed_bytes: 0,
                },
                Vec::new(),
            );
        }
        if self.pressure != Some(plan.pressure) {
            if self.pressure.is_some() || plan.pressure != Pressure::None {
                self.emit(cx, disk_pressure(cx, &plan));
            }
            self.pressure = Some(plan.pressure);
        }
        let by_id: HashMap<&str, &Candidate> =
            candidates.iter().map(|c| (c.id.as_str(), c)).collect();
        let mut freed = 0;
        let mut deleted = Vec::new();
        for decision in &plan.decisions {
            let Some(c) = by_id.get(decision.id()) else {
                continue;
            };
            match decision {
                Decision::Delete {
                    forced,
                    unshipped_bytes,
                    unshipped_files,
                    ..
                } => match disk::remove_tree(&c.dir) {
                    Ok(bytes) => {
                        freed += bytes;
                        deleted.push(c.id.clone());
                        for f in files_of.get(c.id.as_str()).into_iter().flatten() {
                            self.punched.remove(&f.path);
                        }
                        let forced_name = forced.map(|f| match f {
                            gc::Forced::CriticalDisk => "critical_disk",
                            gc::Forced::MaxWait => "max_wait",
                        });
                        let mut attributes = BTreeMap::from([
                            ("bytes_freed".to_string(), bytes.to_string()),
                            ("sandbox".to_string(), c.dir.to_string_lossy().into_owned()),
                        ]);
                        if let Some(f) = forced_name {
                            attributes.insert("forced".into(), f.into());
                        }
                        self.emit(
                            cx,
                            event(
                                cx,
                                c,
                                EventKind::SandboxCollected,
                                forced_name.unwrap_or("collected"),
                                format!("sandbox {} deleted, {bytes} bytes freed", c.id),
                                attributes,
                            ),
                        );
                        if *unshipped_bytes > 0 {
                            let files: Vec<String> = unshipped_files
                                .iter()
                                .map(|(path, bytes)| format!("{path}:{bytes}"))
                                .collect();
                            self.emit(
                                cx,
                                event(
                                    cx,
                                    c,
                                    EventKind::DataLoss,
                                    forced_name.unwrap_or("forced"),
                                    format!(
                                        "sandbox {} deleted with {unshipped_bytes} bytes of logs not shipped",
                                        c.id
                                    ),
                                    BTreeMap::from([
                                        ("bytes".to_string(), unshipped_bytes.to_string()),
                                        ("files".to_string(), files.join(",")),
                                    ]),
                                ),
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!(sandbox = %c.dir.display(), error = %e, "failed to delete sandbox");
                    }
                },
                Decision::PunchHoles { .. } => {
                    freed += self.punch(files_of.get(c.id.as_str()).map_or(&[][..], Vec::as_slice));
                }
                Decision::Keep { .. } => {}
            }
        }
        (
            Outcome {
                plan,
                applied: true,
                freed_bytes: freed,
            },
            deleted,
        )
    }

    /// Punches the acknowledged prefix of each file out.
    fn punch(&mut self, files: &[ShippedFile]) -> u64 {
        let mut freed = 0;
        for f in files {
            let done = self.punched.get(&f.path).copied().unwrap_or(0);
            if f.acked <= done {
                continue;
            }
            let Ok(file) = std::fs::OpenOptions::new().write(true).open(&f.path) else {
                continue;
            };
            match disk::punch_hole(&file, done, f.acked - done) {
                Ok(Punched::Freed { bytes }) => {
                    freed += bytes;
                    self.punched.insert(f.path.clone(), f.acked);
                }
                Ok(Punched::Unsupported) => {
                    if !self.said_unsupported {
                        tracing::warn!(path = %f.path.display(), "this filesystem cannot punch holes: shipped log prefixes of running tasks are not reclaimed");
                        self.said_unsupported = true;
                    }
                    return freed;
                }
                Err(e) => {
                    tracing::warn!(path = %f.path.display(), error = %e, "failed to punch a hole")
                }
            }
        }
        freed
    }

    fn emit(&self, cx: &Context<'_>, event: ClusterEvent) {
        tracing::info!(kind = ?EventKind::try_from(event.kind), message = %event.message, "gc");
        cx.events.emit(event);
    }
}

fn event(
    cx: &Context<'_>,
    c: &Candidate,
    kind: EventKind,
    reason: &str,
    message: String,
    attributes: BTreeMap<String, String>,
) -> ClusterEvent {
    ClusterEvent {
        id: cx.ids.next(),
        ts_unix_nanos: (cx.now_unix_ms as i64) * 1_000_000,
        kind: kind as i32,
        job: c.report.as_ref().map(|r| r.job.clone()).unwrap_or_default(),
        instance: c.report.as_ref().map(|r| r.instance),
        task_id: c.id.clone(),
        run: c.report.as_ref().map_or(0, |r| r.run),
        host: cx.node.to_string(),
        actor: "system:gc".into(),
        reason: reason.into(),
        message,
        attributes,
    }
}

fn disk_pressure(cx: &Context<'_>, plan: &GcPlan) -> ClusterEvent {
    let level = match plan.pressure {
        Pressure::None => "none",
        Pressure::High => "high",
        Pressure::Critical => "critical",
    };
    ClusterEvent {
        id: cx.ids.next(),
        ts_unix_nanos: (cx.now_unix_ms as i64) * 1_000_000,
        kind: EventKind::DiskPressure as i32,
        host: cx.node.to_string(),
        actor: "system:gc".into(),
        reason: level.into(),
        message: format!(
            "disk pressure {level}: {} of {} bytes used",
            plan.used_before, plan.total_bytes
        ),
        attributes: BTreeMap::from([
            ("used_bytes".to_string(), plan.used_before.to_string()),
            ("capacity_bytes".to_string(), plan.total_bytes.to_string()),
        ]),
        ..Default::default()
    }
}

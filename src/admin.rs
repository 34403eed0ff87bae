//! The admin service (`sluice.v1.Admin`) and `sluice status`, its client.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use sluice_broker::Bus;
use sluice_schema::auth::{Principal, principal};
use sluice_schema::pb::admin_client::AdminClient;
use sluice_schema::pb::admin_server::Admin;
use sluice_schema::pb::{StatusReply, StatusRequest};
use tonic::{Request, Response, Status};

use sluice_query::archiver::{self, ArchiverMetrics};
use sluice_query::maintenance::MaintenanceMetrics;
use sluice_scheduler::scheduler::SchedulerService;
use sluice_schema::pb::TaskState;
use std::sync::atomic::Ordering::Relaxed;

use crate::cli::StatusArgs;
use crate::client;
use crate::node::NodeStatus;

pub struct AdminService {
    started: Instant,
    bus: Arc<dyn Bus>,
    store: String,
    nodes: Vec<NodeStatus>,
    scheduler: SchedulerService,
    archiver: Arc<ArchiverMetrics>,
    maintenance: Arc<MaintenanceMetrics>,
}

impl AdminService {
    pub fn new(
        bus: Arc<dyn Bus>,
        store: String,
        nodes: Vec<NodeStatus>,
        scheduler: SchedulerService,
        archiver: Arc<ArchiverMetrics>,
        maintenance: Arc<MaintenanceMetrics>,
    ) -> Self {
        AdminService {
            started: Instant::now(),
            bus,
            store,
            nodes,
            scheduler,
            archiver,
            maintenance,
        }
    }

    /// Jobs with their instances' states, and nodes as the scheduler sees
    /// them.
    fn cluster(&self, caller: &Principal) -> (serde_json::Value, Vec<(String, bool)>) {
        let readable = |key: &sluice_scheduler::spec::JobKey| caller.may_read(&key.role);
        let (jobs, nodes) = self
            .scheduler
            .with_core(|core| (core.list(&readable), core.nodes()));
        let jobs: Vec<serde_json::Value> = jobs
            .iter()
            .map(|job| {
                let instances: Vec<serde_json::Value> = job
                    .instances
                    .iter()
                    .map(|i| {
                        serde_json::json!({
                            "instance": i.instance,
                            "state": state_name(i.state),
                            "host": i.host,
                            "run": i.run,
                            "restarts": i.restarts,
                            "reason": i.reason,
                            "sandbox_bytes": i.sandbox_bytes,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "job": job.job,
                    "state": job.state,
                    "actor": job.actor,
                    "instances": instances,
                })
            })
            .collect();
        let alive = nodes.iter().map(|n| (n.node.clone(), n.alive)).collect();
        (serde_json::Value::Array(jobs), alive)
    }

    fn archive(&self) -> serde_json::Value {
        let a = &self.archiver;
        let m = &self.maintenance;
        serde_json::json!({
            "url": self.store,
            "lines_archived": a.lines_archived.load(Relaxed),
            "events_archived": a.events_archived.load(Relaxed),
            "commits": a.commits.load(Relaxed),
            "errors": a.errors.load(Relaxed),
            "last_commit_unix_nanos": a.last_commit_unix_nanos.load(Relaxed),
            "last_freshness_ms": a.last_freshness_ms.load(Relaxed),
            "live_splits": m.live_splits.load(Relaxed),
            "compactions": m.compactions.load(Relaxed),
        })
    }
}

/// `running` for `TASK_STATE_RUNNING`.
pub fn state_name(state: i32) -> String {
    TaskState::try_from(state).map_or("unknown".into(), |s| {
        s.as_str_name()
            .trim_start_matches("TASK_STATE_")
            .to_lowercase()
    })
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let caller = principal(&request)?;
        let bus = self
            .bus
            .status(&[archiver::GROUP])
            .await
            .map_err(|e| Status::unavailable(format!("bus status: {e}")))?;
        let (jobs, alive) = self.cluster(&caller);
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|node| {
                let mut json = node.to_json();
                json["alive"] = alive
                    .iter()
                    .find(|(name, _)| *name == node.info.name)
                    .is_some_and(|(_, alive)| *alive)
                    .into();
                json
            })
            .collect();
        let detail = serde_json::json!({
            "bus": bus,
            "store": self.store,
            "archive": self.archive(),
            "nodes": nodes,
            "jobs": jobs,
        });
        Ok(Response::new(StatusReply {
            version: sluice_schema::VERSION.to_string(),
            user: caller.user.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            bus_url: self.bus.url(),
            detail_json: detail.to_string(),
        }))
    }
}

/// `sluice status [--json]`; `color` makes the section names bold.
pub async fn status(args: StatusArgs, color: bool) -> anyhow::Result<()> {
    let cluster = client::cluster(&args.dir)?;
    let endpoint = cluster.endpoint.clone();
    let mut admin = AdminClient::new(client::connect(&cluster).await?);
    let reply = admin
        .status(StatusRequest {})
        .await
        .with_context(|| format!("status from {endpoint}"))?
        .into_inner();
    let detail: serde_json::Value =
        serde_json::from_str(&reply.detail_json).context("status detail is not JSON")?;
    if args.json {
        let out = serde_json::json!({
            "version": reply.version,
            "user": reply.user,
            "uptime_seconds": reply.uptime_seconds,
            "bus_url": reply.bus_url,
            "detail": detail,
        });
        println!("{out}");
    } else {
        let text = status_text(
            &endpoint,
            &reply,
            &detail,
            sluice_scheduler::scheduler::service::now_unix_nanos(),
        );
        print!("{}", if color { bold_labels(&text) } else { text });
    }
    Ok(())
}

/// `sluice status` for people: the cluster, bus lag, archive freshness,
/// nodes (disk, sandboxes, shipping, garbage collection) and jobs.
fn status_text(endpoint: &str, reply: &StatusReply, d: &serde_json::Value, now: i64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "sluice {} at {endpoint}, up {}, as {}",
        reply.version,
        human_secs(reply.uptime_seconds),
        reply.user
    );
    let lag: u64 = d["bus"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["group"] == archiver::GROUP)
        .map(|g| u(&g["lag"]))
        .sum();
    let topics: Vec<String> = d["bus"]["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let records: u64 = t["partitions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| u(&p["end_offset"]).saturating_sub(u(&p["start_offset"])))
                .sum();
            format!("{} {records}", t["topic"].as_str().unwrap_or("?"))
        })
        .collect();
    let _ = writeln!(
        out,
        "bus:      {}\n          records kept: {}; not yet archived: {lag}",
        reply.bus_url,
        topics.join(", ")
    );
    let a = &d["archive"];
    let ago = |nanos: &serde_json::Value, never: &str| match nanos.as_i64().unwrap_or(0) {
        0 => never.to_string(),
        t => format!(
            "{} ago",
            human_secs(((now - t).max(0) / 1_000_000_000) as u64)
        ),
    };
    let _ = writeln!(
        out,
        "archive:  {}\n          last commit {}, its newest line {} after it was read; {} lines and {} events in {} commits since up started",
        a["url"].as_str().unwrap_or("?"),
        ago(&a["last_commit_unix_nanos"], "not yet"),
        human_millis(u(&a["last_freshness_ms"])),
        u(&a["lines_archived"]),
        u(&a["events_archived"]),
        u(&a["commits"]),
    );
    let nodes = d["nodes"].as_array().cloned().unwrap_or_default();
    let alive = nodes.iter().filter(|n| n["alive"] == true).count();
    let _ = writeln!(out, "nodes:    {} ({alive} alive)", nodes.len());
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let g = &n["agent"];
            vec![
                n["name"].as_str().unwrap_or("?").to_string(),
                if n["alive"] == true { "yes" } else { "no" }.to_string(),
                u(&g["tasks_running"]).to_string(),
                u(&g["sandboxes"]).to_string(),
                format!(
                    "{} / {}",
                    human_bytes(u(&g["disk_used_bytes"])),
                    human_bytes(u(&g["disk_total_bytes"]))
                ),
                u(&n["lines_shipped"]).to_string(),
                human_bytes(u(&n["lag_bytes"])),
                u(&g["gc_passes"]).to_string(),
                human_bytes(u(&g["gc_bytes_freed"])),
                ago(&g["gc_last_pass_unix_nanos"], "-"),
            ]
        })
        .collect();
    let header = [
        "NODE",
        "ALIVE",
        "TASKS",
        "SANDBOXES",
        "DISK USED",
        "LINES",
        "LAG",
        "GC PASSES",
        "GC FREED",
        "LAST GC",
    ];
    indent(&mut out, &crate::job_cmd::table(&header, &rows));
    let jobs = d["jobs"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "jobs:     {}", jobs.len());
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            let mut states = std::collections::BTreeMap::<String, usize>::new();
            for i in job["instances"].as_array().into_iter().flatten() {
                let state = i["state"].as_str().unwrap_or("?").to_string();
                let state = match i["reason"].as_str() {
                    Some(reason) if !reason.is_empty() && state != "running" => {
                        format!("{state} ({reason})")
                    }
                    _ => state,
                };
                *states.entry(state).or_default() += 1;
            }
            let states: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
            vec![
                job["job"].as_str().unwrap_or("?").to_string(),
                job["state"].as_str().unwrap_or("?").to_string(),
                states.join(", "),
            ]
        })
        .collect();
    if !rows.is_empty() {
        indent(
            &mut out,
            &crate::job_cmd::table(&["JOB", "STATE", "INSTANCES"], &rows),
        );
    }
    out
}

/// The section names of `status_text` (`bus:`, `archive:` …) in bold.
fn bold_labels(text: &str) -> String {
    text.lines()
        .map(|line| match line.split_once(':') {
            Some((label, rest)) if !label.starts_with(' ') && !label.contains(' ') => {
                format!("\x1b[1m{label}:\x1b[0m{rest}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect()
}

/// Appends `text`, each line indented by two spaces.
fn indent(out: &mut String, text: &str) {
    for line in text.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
}

fn human_secs(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

fn human_millis(ms: u64) -> String {
    if ms < 10_000 {
        format!("{ms} ms")
    } else {
        human_secs(ms / 1000)
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_like_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_secs(59), "59s");
        assert_eq!(human_secs(61), "1m01s");
        assert_eq!(human_secs(7322), "2h02m");
    }
}

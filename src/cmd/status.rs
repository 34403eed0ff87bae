//! The admin service (`sluice.v1.Admin`) and `sluice status`, its client.

use anyhow::Context;
use clap::Args;
use sluice_archiver as archiver;
use sluice_schema::pb::admin_client::AdminClient;
use sluice_schema::pb::{StatusReply, StatusRequest};

use crate::shared::args::DataDirArg;
use crate::shared::client;
use crate::shared::format::{human_bytes, human_millis, human_secs, indent, table};

/// `sluice status [--json]`; `color` makes the section names bold.
pub async fn run(args: StatusArgs, color: bool) -> anyhow::Result<()> {
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
    let scheduled = d["scheduler"] != false;
    let nodes = d["nodes"].as_array().cloned().unwrap_or_default();
    let alive = nodes.iter().filter(|n| n["alive"] == true).count();
    if scheduled {
        let _ = writeln!(out, "nodes:    {} ({alive} alive)", nodes.len());
    }
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
    if scheduled {
        indent(&mut out, &table(&header, &rows));
    }
    let shippers = d["shippers"].as_array().cloned().unwrap_or_default();
    let stale = shippers.iter().filter(|s| s["stale"] == true).count();
    let _ = writeln!(
        out,
        "shippers: {} ({stale} stale) in the node directory",
        shippers.len()
    );
    let rows: Vec<Vec<String>> = shippers
        .iter()
        .map(|s| {
            let jobs = s["jobs"].as_array().cloned().unwrap_or_default();
            let sources: u64 = jobs.iter().map(|j| u(&j["sources"])).sum();
            vec![
                s["host"].as_str().unwrap_or("?").to_string(),
                s["layout"].as_str().unwrap_or("?").to_string(),
                if s["stale"] == true { "stale" } else { "live" }.to_string(),
                jobs.len().to_string(),
                sources.to_string(),
                u(&s["lines_shipped"]).to_string(),
                human_bytes(u(&s["lag_bytes"])),
                ago(&s["last_heartbeat_unix_nanos"], "-"),
                s["tail"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        let header = [
            "HOST", "LAYOUT", "STATE", "JOBS", "SOURCES", "LINES", "LAG", "HEARD", "TAIL",
        ];
        indent(&mut out, &table(&header, &rows));
    }
    let jobs = d["jobs"].as_array().cloned().unwrap_or_default();
    if !scheduled {
        let _ = writeln!(
            out,
            "jobs:     no scheduler (jobs are where the shippers above found them)"
        );
        return out;
    }
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
        indent(&mut out, &table(&["JOB", "STATE", "INSTANCES"], &rows));
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

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    #[arg(long)]
    pub json: bool,
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

    #[test]
    fn shippers_of_the_node_directory_are_listed_with_stale_ones_marked() {
        let now = 100_000_000_000;
        let detail = serde_json::json!({
            "scheduler": false,
            "nodes": [],
            "jobs": [],
            "shippers": [
                {"host": "k8s-1", "layout": "kubernetes", "stale": false, "lines_shipped": 7,
                 "lag_bytes": 2048, "last_heartbeat_unix_nanos": now - 1_000_000_000,
                 "tail": "https://10.0.0.1:7000",
                 "jobs": [{"job": "web/k8s/api", "sources": 3}, {"job": "web/k8s/db", "sources": 1}]},
                {"host": "nomad-1", "layout": "nomad", "stale": true, "lines_shipped": 0,
                 "lag_bytes": 0, "last_heartbeat_unix_nanos": now - 60_000_000_000,
                 "tail": "", "jobs": []},
            ],
        });
        let reply = StatusReply {
            version: "0".into(),
            user: "admin".into(),
            ..Default::default()
        };
        let text = status_text("https://x", &reply, &detail, now);
        assert!(text.contains("shippers: 2 (1 stale)"), "{text}");
        let k8s = text.lines().find(|l| l.contains("k8s-1")).unwrap();
        for want in [
            "kubernetes",
            "live",
            " 2 ",
            " 4 ",
            "2.0 KiB",
            "1s ago",
            "https://10.0.0.1:7000",
        ] {
            assert!(k8s.contains(want), "{want:?} in {k8s:?}");
        }
        let nomad = text.lines().find(|l| l.contains("nomad-1")).unwrap();
        assert!(
            nomad.contains("stale") && nomad.contains("1m00s ago"),
            "{nomad}"
        );
        assert!(
            !text.contains("NODE"),
            "no nodes table without a scheduler: {text}"
        );
        assert!(text.contains("no scheduler"), "{text}");
    }
}

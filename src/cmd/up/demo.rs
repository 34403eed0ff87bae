//! `sluice up --demo`: sample jobs, and what to try next.
//!
//! The jobs are the YAML files in `src/demo/`, submitted in-process by the
//! actor `demo` to the scheduler `up` runs: a web service writing access
//! logs (3 instances, one of them in JSON), a worker that dies with a stack
//! trace (one record: `multiline: java`) and is restarted (2 instances), a
//! cron job every minute, and a job that outgrows its disk quota. A job that already exists (after a crash of `up`, its tasks kept
//! running) is left alone; Ctrl-C kills them all, so the next `--demo`
//! starts afresh.

use std::path::Path;
use std::time::Duration;

use sluice_scheduler::scheduler::SchedulerService;
use sluice_scheduler::scheduler::service::now_unix_nanos;
use sluice_scheduler::spec::JobKey;

/// The demo's actor, in events and job status.
pub const ACTOR: &str = "demo";

/// (file name, spec) of every demo job.
pub const SPECS: [(&str, &str); 4] = [
    ("web.yaml", include_str!("demo/web.yaml")),
    ("worker.yaml", include_str!("demo/worker.yaml")),
    ("report.yaml", include_str!("demo/report.yaml")),
    ("hog.yaml", include_str!("demo/hog.yaml")),
];

/// Submits the demo jobs that are not there yet; returns the keys of all.
pub fn submit(scheduler: &SchedulerService) -> anyhow::Result<Vec<JobKey>> {
    let mut keys = Vec::new();
    for (file, yaml) in SPECS {
        let spec = sluice_scheduler::spec::parse(yaml, None)
            .map_err(|e| anyhow::anyhow!("demo job {file}: {e}"))?;
        let key = spec.key.clone();
        let submitted = scheduler.with_core(|core| {
            let live = core
                .describe(&key)
                .is_ok_and(|status| status.state != "killed");
            if live {
                return Ok(false);
            }
            core.submit(spec, ACTOR, now_unix_nanos()).map(|_| true)
        });
        match submitted {
            Ok(true) => tracing::info!(job = %key, "demo job submitted"),
            Ok(false) => tracing::info!(job = %key, "demo job already there"),
            Err(e) => anyhow::bail!("demo job {key}: {e}"),
        }
        keys.push(key);
    }
    Ok(keys)
}

/// Kills the demo jobs and waits (up to `wait`) for their tasks to stop.
pub async fn kill(scheduler: &SchedulerService, keys: &[JobKey], wait: Duration) {
    for key in keys {
        if let Err(e) = scheduler.with_core(|core| core.kill(key, ACTOR, now_unix_nanos())) {
            tracing::warn!(job = %key, error = %e, "failed to kill a demo job");
        }
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let stopping: Vec<String> = scheduler.with_core(|core| {
            keys.iter()
                .filter(|key| core.describe(key).is_ok_and(|s| s.state != "killed"))
                .map(ToString::to_string)
                .collect()
        });
        if stopping.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(jobs = ?stopping, "demo jobs still stopping; their executors finish the kill");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What to try next, as commands that work when pasted into another
/// terminal, in any directory: `SLUICE_DATA_DIR` is set first, and `PATH`
/// when the binaries are not on it.
pub fn next_steps(data_dir: &Path) -> String {
    let mut setup = Vec::new();
    if let Some(bin) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        && !on_path(&bin)
    {
        setup.push(format!("PATH=\"{}:$PATH\"", bin.display()));
    }
    // Always: the default `./sluice-data` is only right in this directory.
    setup.push(format!(
        "SLUICE_DATA_DIR={}",
        shell_quote(&data_dir.display().to_string())
    ));
    let mut out = String::from("\nThe demo is running. In another terminal, try:\n\n");
    if !setup.is_empty() {
        out += &format!("  export {}\n", setup.join(" "));
    }
    for (comment, command) in COMMANDS {
        out += &format!("  # {comment}\n  {command}\n");
    }
    out += "\nLogs reach the archive within seconds; the worker first crashes within 20 s, the hog \
            is over its quota within a minute.\nCtrl-C stops the demo and its jobs.\n";
    out
}

/// (what it shows, the command), printed in this order.
pub const COMMANDS: [(&str, &str); 9] = [
    ("every demo instance, live", "tailll 'demo/prod/*'"),
    (
        "warnings and worse only, judged on the nodes (JSON and plain lines alike)",
        "tailll 'demo/prod/*' --level warn",
    ),
    ("nodes, jobs, bus lag, archive freshness", "sluice status"),
    (
        "which instances ran out of memory",
        "sluice query --since 1h \"SELECT instance, count(*) AS ooms FROM logs WHERE search(line, 'OutOfMemoryError') GROUP BY instance ORDER BY instance\"",
    ),
    (
        "each stack trace is one result; and what came just before",
        "sluice query --since 1h -B 3 \"SELECT * FROM logs WHERE search(line, 'OutOfMemoryError')\"",
    ),
    (
        "HTTP status codes of the web service (instance 2 logs JSON: its status is a field)",
        "sluice query --since 1h \"SELECT coalesce(fields['status'], split_part(line, ' ', 9)) AS status, count(*) AS requests FROM logs WHERE job = 'demo/prod/web' GROUP BY status ORDER BY requests DESC\"",
    ),
    (
        "failed requests found by their fields, with their trace ids",
        "sluice query --since 1h \"SELECT ts, fields['path'] AS path, trace_id FROM logs WHERE search(line, 'level:error AND fields.status:500') ORDER BY ts DESC LIMIT 5\"",
    ),
    (
        "the audit trail: the quota kill, who asked",
        "sluice events --job 'demo/prod/*' --since 1h",
    ),
    ("what garbage collection would do", "sluice gc --dry-run"),
];

fn on_path(dir: &Path) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|p| p == dir))
}

fn shell_quote(text: &str) -> String {
    if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@".contains(&b))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_demo_spec_is_valid() {
        for (file, yaml) in SPECS {
            let spec =
                sluice_scheduler::spec::parse(yaml, None).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(
                spec.key.to_string().split('/').next(),
                Some("demo"),
                "{file}"
            );
        }
    }

    #[test]
    fn quoting_survives_the_shell() {
        assert_eq!(shell_quote("/a/b-c_d.e"), "/a/b-c_d.e");
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}

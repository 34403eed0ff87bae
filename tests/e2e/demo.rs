//! `sluice up --demo` as a newcomer runs it: every command it prints is run
//! as printed (through `sh`, in another directory) and must work; `sluice
//! status` and `/metrics` describe what runs; Ctrl-C stops the demo's jobs
//! and a second `--demo` submits them again.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    Up, executors_under, metrics_addr, scrape, sluice_ok, until_line, until_output,
};

/// The commands `up --demo` printed: the `export` line and each command.
fn printed_commands(log: &str) -> (String, Vec<String>) {
    let block = log
        .split("In another terminal, try:")
        .nth(1)
        .expect("the demo prints what to try");
    let mut export = String::new();
    let mut commands = Vec::new();
    for line in block.lines().skip_while(|l| l.is_empty()) {
        let Some(line) = line.strip_prefix("  ") else {
            break;
        };
        if line.starts_with("export ") {
            export = line.to_string();
        } else if !line.starts_with('#') {
            commands.push(line.to_string());
        }
    }
    (export, commands)
}

/// The value of the sample `name{labels}` (exact text up to the value).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_demo_s_printed_commands_work_as_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let up = Up::start(
        &dir,
        &["--demo", "--nodes", "2", "--metrics-listen", "127.0.0.1:0"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !up.printed().contains("Ctrl-C stops the demo") {
        assert!(Instant::now() < deadline, "no demo guide: {}", up.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = up.printed();
    let (export, commands) = printed_commands(&log);
    assert!(export.contains("SLUICE_DATA_DIR="), "{export}");
    assert_eq!(commands.len(), 9, "{commands:#?}");
    // The README's tour is exactly what the demo prints, so running these
    // runs the README's commands too.
    assert_eq!(
        crate::readme::tour()
            .iter()
            .map(|c| crate::readme::normalized(c))
            .collect::<Vec<_>>(),
        commands
            .iter()
            .map(|c| crate::readme::normalized(c))
            .collect::<Vec<_>>(),
        "the README's tour and the demo's printed commands differ"
    );
    // A quiet terminal: the services log to the data directory's log file.
    assert!(
        !log.contains(" INFO "),
        "service log lines on the terminal:\n{log}"
    );
    assert!(
        up.log().contains(" INFO "),
        "no service log in the log file:\n{}",
        up.log()
    );

    for command in &commands {
        let words: Vec<&str> = command.split_whitespace().collect();
        match (words[0], words[1]) {
            ("tailll", "'demo/prod/*'") if command.contains("--level warn") => {
                // Both kinds: a plain warning or trace, and a JSON failure.
                until_line(&export, command, &elsewhere, |l| {
                    l.contains("WARN heap usage") || l.contains("OutOfMemoryError")
                });
                until_line(&export, command, &elsewhere, |l| {
                    l.contains(r#""level":"warn""#) || l.contains(r#""level":"error""#)
                });
            }
            ("tailll", "'demo/prod/*'") => {
                until_line(&export, command, &elsewhere, |l| {
                    l.contains("demo/prod/web")
                });
            }
            ("sluice", "status") => {
                until_output(&export, command, &elsewhere, |out| {
                    [
                        "demo/prod/web",
                        "demo/prod/worker",
                        "demo/prod/report",
                        "demo/prod/hog",
                    ]
                    .iter()
                    .all(|job| out.contains(job))
                        && out.contains("2 alive")
                        && out.contains("last commit")
                        && !out.contains("last commit not yet")
                });
            }
            ("sluice", "query") if command.contains("count(*) AS ooms") => {
                until_output(&export, command, &elsewhere, |out| out.contains("| ooms"))
                    .lines()
                    .filter(|l| l.starts_with("| 0") || l.starts_with("| 1"))
                    .for_each(|l| assert!(!l.contains("| 0    |"), "{l}"));
            }
            ("sluice", "query") if command.contains("-B 3") => {
                let out = until_output(&export, command, &elsewhere, |out| {
                    out.contains("OutOfMemoryError")
                });
                // The lines before the hit, from the same file: the warnings.
                assert!(out.contains("WARN heap usage 93%"), "{out}");
                // The trace is the hit's own row, not rows of its own.
                assert!(out.contains("Batch.java:88"), "{out}");
            }
            ("sluice", "query") if command.contains("fields.status:500") => {
                let out = until_output(&export, command, &elsewhere, |out| {
                    out.contains("/api/checkout")
                });
                assert!(out.contains("trace_id"), "{out}");
            }
            ("sluice", "query") => {
                let out = until_output(&export, command, &elsewhere, |out| out.contains("| 200"));
                assert!(out.contains("requests"), "{out}");
            }
            ("sluice", "events") => {
                let out = until_output(&export, command, &elsewhere, |out| {
                    out.contains("quota_kill")
                });
                assert!(
                    out.contains("disk_quota_exceeded") && out.contains("demo/prod/hog"),
                    "{out}"
                );
                assert!(
                    out.contains("job_submitted") && out.contains("| demo "),
                    "{out}"
                );
            }
            ("sluice", "gc") => {
                let out = until_output(&export, command, &elsewhere, |out| out.contains("node-0"));
                assert!(out.contains("node-1"), "{out}");
            }
            _ => panic!("a printed command this test does not know: {command}"),
        }
    }

    // Not a terminal: the progress line is printed plain, every 30 s.
    let deadline = Instant::now() + Duration::from_secs(40);
    while !up.printed().contains(" instances running · ") {
        assert!(
            Instant::now() < deadline,
            "no progress line: {}",
            up.printed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let progress = up.printed();
    let line = progress
        .lines()
        .find(|l| l.contains(" instances running · "))
        .unwrap();
    assert!(
        line.starts_with("4 jobs, ")
            && line.contains(" lines shipped · ")
            && line.contains(" archived, last commit "),
        "{line}"
    );
    assert!(
        !progress.contains('\r'),
        "redrawn in place without a terminal: {line}"
    );

    // One exposition for everything `up` runs: each family once, both
    // nodes' shippers and agents, the quota kill, the queries just made.
    let metrics = scrape(&metrics_addr(&log));
    let mut families: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    let count = families.len();
    families.sort();
    families.dedup();
    assert_eq!(families.len(), count, "a family twice:\n{metrics}");
    for node in ["node-0", "node-1"] {
        let lines = sample(
            &metrics,
            &format!("sluice_shipper_lines_total{{host=\"{node}\"}}"),
        );
        assert!(lines.is_some_and(|n| n > 0.0), "{node}:\n{metrics}");
        assert!(
            sample(
                &metrics,
                &format!("sluice_gc_passes_total{{host=\"{node}\"}}")
            )
            .is_some(),
            "{metrics}"
        );
    }
    let quota_kills: f64 = ["node-0", "node-1"]
        .iter()
        .filter_map(|n| {
            sample(
                &metrics,
                &format!("sluice_agent_quota_kills_total{{host=\"{n}\"}}"),
            )
        })
        .sum();
    assert_eq!(quota_kills, 1.0, "{metrics}");
    assert!(
        sample(&metrics, "sluice_query_queries_total").is_some_and(|n| n >= 3.0),
        "{metrics}"
    );
    assert!(sample(&metrics, "sluice_archiver_lines_total").is_some_and(|n| n > 0.0));
    assert_eq!(
        sample(&metrics, "sluice_scheduler_jobs{state=\"running\"}"),
        Some(3.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "sluice_bus_group_lag_records{group=\"sluice-archiver\"}"
        )
        .is_some(),
        "{metrics}"
    );

    let status: Value = serde_json::from_str(&sluice_ok(&[
        "status",
        "--json",
        "--data-dir",
        up.data_dir(),
    ]))
    .unwrap();
    let jobs = status["detail"]["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 4, "{status:#}");
    let hog = jobs.iter().find(|j| j["job"] == "demo/prod/hog").unwrap();
    assert_eq!(
        hog["instances"][0]["reason"], "disk_quota_exceeded",
        "{hog}"
    );
    assert!(status["detail"]["archive"]["last_commit_unix_nanos"].as_i64() > Some(0));

    // Ctrl-C: the demo's tasks stop with it, and the next --demo starts
    // them again.
    assert!(executors_under(&dir) > 0);
    let status = up.signal("INT");
    assert!(status.success(), "{status}");
    assert_eq!(executors_under(&dir), 0, "demo tasks outlived Ctrl-C");
    let up = Up::start(&dir, &["--demo", "--nodes", "2"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = sluice_ok(&["job", "list", "--json", "--data-dir", up.data_dir()]);
        let running = list
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|j| j["state"] == "running")
            .count();
        if running == 4 && executors_under(&dir) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "demo not resubmitted: {list}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(up.signal("INT").success());
    assert_eq!(executors_under(&dir), 0);
}

//! The scheduler with three nodes on loopback, as users drive it: `sluice
//! up --nodes 3` and `sluice job …`, real task processes, logs shipped to
//! the bus, events with their actors.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Proc, Up, dump, sluice, sluice_ok, write_spec};

fn job_status(up: &Up, job: &str) -> Value {
    serde_json::from_str(&sluice_ok(&[
        "job",
        "status",
        job,
        "--data-dir",
        up.data_dir(),
        "--json",
    ]))
    .unwrap()
}

/// Polls `job status` until `done` holds; panics with the last status after
/// `secs`.
fn until(up: &Up, job: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let status = job_status(up, job);
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out; last status {status:#}\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn instances(status: &Value) -> Vec<Value> {
    status["instances"].as_array().cloned().unwrap_or_default()
}

fn start(tmp: &Path, extra: &[&str]) -> Up {
    let dir = tmp.join("d");
    std::fs::create_dir(&dir).unwrap();
    let mut args = vec!["--nodes", "3", "--disk-watch-interval", "1"];
    args.extend_from_slice(extra);
    Up::start(&dir, &args)
}

#[test]
fn a_job_is_spread_over_the_nodes_and_restarted_on_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let up = start(tmp.path(), &[]);
    let spec = write_spec(
        tmp.path(),
        "web",
        r#"
name: web
role: www
env: prod
instances: 5
resources: {cpu: 0.1, ram_mb: 16, disk_mb: 64}
processes:
  - name: main
    cmd: echo "hello from {{instance}} run {{run}}"; sleep 0.2; exit 3
restart:
  policy: on-failure
  backoff: {initial_ms: 100, max_ms: 200}
  limit: 2
"#,
    );
    sluice_ok(&["job", "submit", &spec, "--data-dir", up.data_dir()]);
    let status = until(&up, "www/prod/web", 60, |s| {
        let i = instances(s);
        i.len() == 5 && i.iter().all(|i| i["state"] == "failed")
    });
    let mut per_host = std::collections::BTreeMap::<String, usize>::new();
    for i in instances(&status) {
        *per_host
            .entry(i["host"].as_str().unwrap().to_string())
            .or_default() += 1;
        assert_eq!(i["run"], 2, "two restarts, then the limit: {i}");
        assert_eq!(i["restarts"], 2, "{i}");
    }
    let mut counts: Vec<usize> = per_host.values().copied().collect();
    counts.sort();
    assert_eq!(counts, [1, 2, 2], "spread over three nodes: {per_host:?}");

    // Every run's lines are shipped with their run number.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = dump(&up, "sluice.logs");
        if (0..5).all(|i| (0..3).all(|r| logs.contains(&format!("hello from {i} run {r}")))) {
            assert!(logs.contains(r#""job":"www/prod/web""#), "{logs}");
            break;
        }
        assert!(Instant::now() < deadline, "not all runs shipped: {logs}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let events = dump(&up, "sluice.events");
    assert!(
        events.contains(r#""kind":"job_submitted""#) && events.contains(r#""actor":"admin""#),
        "{events}"
    );
}

#[test]
fn a_task_over_its_disk_quota_is_killed_and_the_event_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let up = start(tmp.path(), &[]);
    let spec = write_spec(
        tmp.path(),
        "hog",
        r#"
name: hog
role: batch
env: prod
resources: {cpu: 0.1, ram_mb: 16, disk_mb: 1}
restart: never
processes:
  - name: fill
    cmd: head -c 3000000 /dev/zero > blob; sleep 60
"#,
    );
    sluice_ok(&["job", "submit", &spec, "--data-dir", up.data_dir()]);
    let status = until(&up, "batch/prod/hog", 60, |s| {
        instances(s).first().is_some_and(|i| i["state"] == "killed")
    });
    assert_eq!(
        instances(&status)[0]["reason"],
        "disk_quota_exceeded",
        "{status:#}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = dump(&up, "sluice.events");
        if events.contains(r#""kind":"quota_kill""#) {
            assert!(events.contains("disk_quota_exceeded"), "{events}");
            break;
        }
        assert!(Instant::now() < deadline, "no quota_kill event: {events}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn hostile_and_malformed_specs_are_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let up = start(tmp.path(), &[]);
    let cases = [
        (
            "name: ../../etc\nrole: x\nenv: prod\nresources: {cpu: 1, ram_mb: 1, disk_mb: 1}\nprocesses: [{name: a, cmd: b}]\n",
            "name",
        ),
        (
            "name: ok\nrole: x\nenv: prod\ninstances: 0\nresources: {cpu: 1, ram_mb: 1, disk_mb: 1}\nprocesses: [{name: a, cmd: b}]\n",
            "instances",
        ),
        (
            "name: ok\nrole: x\nenv: prod\nresources: {cpu: 1, ram_mb: 1, disk_mb: 1}\nprocesses: [{name: a, cmdd: b}]\n",
            "processes[0]",
        ),
    ];
    for (i, (yaml, field)) in cases.iter().enumerate() {
        let spec = write_spec(tmp.path(), &format!("bad{i}"), yaml);
        let out = sluice(&["job", "submit", &spec, "--data-dir", up.data_dir()]);
        assert_eq!(out.status.code(), Some(1), "{yaml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "{yaml}: {err}");
    }
    let out = sluice(&[
        "job",
        "submit",
        "/nonexistent.yaml",
        "--data-dir",
        up.data_dir(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.yaml"));
    let listed = sluice_ok(&["job", "list", "--data-dir", up.data_dir(), "--json"]);
    assert!(!listed.contains("etc"), "{listed}");
}

#[test]
fn finished_sandboxes_are_collected_once_shipped() {
    let tmp = tempfile::tempdir().unwrap();
    let up = start(tmp.path(), &["--gc-delay", "2"]);
    let spec = write_spec(
        tmp.path(),
        "once",
        "name: once\nrole: batch\nenv: prod\ninstances: 3\nresources: {cpu: 0.1, ram_mb: 16, disk_mb: 16}\nrestart: never\nprocesses: [{name: main, cmd: 'echo done {{instance}}'}]\n",
    );
    sluice_ok(&["job", "submit", &spec, "--data-dir", up.data_dir()]);
    let status = until(&up, "batch/prod/once", 60, |s| {
        let i = instances(s);
        i.len() == 3 && i.iter().all(|i| i["state"] == "finished")
    });
    let sandboxes: Vec<std::path::PathBuf> = instances(&status)
        .iter()
        .map(|i| {
            up.dir
                .join("nodes")
                .join(i["host"].as_str().unwrap())
                .join("sandboxes")
                .join(i["task_id"].as_str().unwrap())
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sandboxes.iter().any(|s| s.exists()) {
        assert!(
            Instant::now() < deadline,
            "sandboxes not collected\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Collected after their lines were shipped: every line is on the bus,
    // and the collection events are too, with no data loss.
    let logs = dump(&up, "sluice.logs");
    for i in 0..3 {
        assert!(logs.contains(&format!("done {i}")), "{logs}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let events = dump(&up, "sluice.events");
        let collected = events.matches(r#""kind":"sandbox_collected""#).count();
        if collected >= 3 || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        events.matches(r#""kind":"sandbox_collected""#).count(),
        3,
        "{events}"
    );
    assert!(!events.contains(r#""kind":"data_loss""#), "{events}");
    let gc: Value = serde_json::from_str(
        sluice_ok(&["gc", "--dry-run", "--json", "--data-dir", up.data_dir()])
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(gc["applied"], false);
}

#[test]
fn running_tasks_outlive_a_kill_9_of_up_and_are_found_again() {
    let tmp = tempfile::tempdir().unwrap();
    let up = start(tmp.path(), &[]);
    let spec = write_spec(
        tmp.path(),
        "svc",
        r#"
name: svc
role: www
env: prod
instances: 2
resources: {cpu: 0.1, ram_mb: 16, disk_mb: 64}
processes:
  - name: main
    cmd: echo started >> starts; while true; do echo tick {{instance}}; sleep 0.2; done
"#,
    );
    sluice_ok(&["job", "submit", &spec, "--data-dir", up.data_dir()]);
    let before = until(&up, "www/prod/svc", 60, |s| {
        let i = instances(s);
        i.len() == 2 && i.iter().all(|i| i["state"] == "running")
    });
    let dir = up.crash();
    std::thread::sleep(Duration::from_secs(1));
    let up = Up::start(&dir, &["--nodes", "3", "--disk-watch-interval", "1"]);
    std::thread::sleep(Duration::from_secs(3));
    let after = until(&up, "www/prod/svc", 30, |s| {
        let i = instances(s);
        i.len() == 2 && i.iter().all(|i| i["state"] == "running")
    });
    for (b, a) in instances(&before).iter().zip(instances(&after).iter()) {
        assert_eq!(a["task_id"], b["task_id"], "the same task, not a new one");
        assert_eq!(a["run"], 0, "not restarted: {a}");
        let sandbox = dir
            .join("nodes")
            .join(a["host"].as_str().unwrap())
            .join("sandboxes")
            .join(a["task_id"].as_str().unwrap());
        let starts = std::fs::read_to_string(sandbox.join("work/starts")).unwrap();
        assert_eq!(starts.lines().count(), 1, "started once: {starts}");
    }
    sluice_ok(&["job", "kill", "www/prod/svc", "--data-dir", up.data_dir()]);
    let killed = until(&up, "www/prod/svc", 30, |s| {
        instances(s).iter().all(|i| i["state"] == "killed")
    });
    assert_eq!(killed["state"], "killed", "{killed:#}");
    let events = dump(&up, "sluice.events");
    assert!(
        events.contains(r#""kind":"job_killed""#) && events.contains(r#""actor":"admin""#),
        "{events}"
    );
}

/// `sluice scheduler` and two `sluice node` processes sharing a Kafka bus: a
/// node that goes silent (`kill -9`) has its instance declared lost and
/// placed on the other node; when it comes back, the task it still runs is
/// killed, so the instance never runs twice for long.
#[test]
fn a_silent_node_s_instances_are_placed_again_elsewhere() {
    let Some(kafka) = sluice_testkit::TestKafka::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let data = dir.to_str().unwrap().to_string();
    let bus = kafka.url();
    let scheduler = Proc::scheduler(&tmp.path().join("scheduler.log"), &dir, &bus);
    let deadline = Instant::now() + Duration::from_secs(60);
    let node = |name: &str| {
        Proc::start(
            tmp.path().join(format!("{name}.log")),
            &[
                "node",
                "--data-dir",
                &data,
                "--bus",
                &bus,
                "--name",
                name,
                "--disk-watch-interval",
                "1",
            ],
        )
    };
    let _a = node("node-a");
    let mut b = node("node-b");
    let nodes = |alive: usize| loop {
        let out = sluice_ok(&["job", "nodes", "--data-dir", &data, "--json"]);
        if out
            .lines()
            .filter(|l| l.contains(r#""alive":true"#))
            .count()
            == alive
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nodes: {out}\n{}",
            scheduler.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    nodes(2);
    let spec = write_spec(
        tmp.path(),
        "svc",
        "name: svc\nrole: www\nenv: prod\ninstances: 2\nresources: {cpu: 0.1, ram_mb: 16, disk_mb: 64}\nprocesses: [{name: main, cmd: 'while true; do echo tick; sleep 0.2; done'}]\n",
    );
    sluice_ok(&["job", "submit", &spec, "--data-dir", &data]);
    let status_of = || -> Value {
        serde_json::from_str(&sluice_ok(&[
            "job",
            "status",
            "www/prod/svc",
            "--data-dir",
            &data,
            "--json",
        ]))
        .unwrap()
    };
    let wait = |what: &str, done: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = status_of();
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {s:#}\n{}",
                scheduler.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let spread = wait("both running", &|s| {
        let i = instances(s);
        i.len() == 2 && i.iter().all(|i| i["state"] == "running")
    });
    let hosts: std::collections::BTreeSet<String> = instances(&spread)
        .iter()
        .map(|i| i["host"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(hosts.len(), 2, "one instance per node: {spread:#}");
    let on_b = instances(&spread)
        .into_iter()
        .find(|i| i["host"] == "node-b")
        .unwrap();

    b.kill();
    let moved = wait("placed again on node-a", &|s| {
        instances(s)
            .iter()
            .all(|i| i["host"] == "node-a" && i["state"] == "running")
    });
    let replaced = &instances(&moved)[on_b["instance"].as_u64().unwrap() as usize];
    assert_ne!(replaced["task_id"], on_b["task_id"], "a new task");

    // node-b returns: the task it kept running is told to stop.
    let _b = node("node-b");
    let sandbox = dir
        .join("nodes/node-b/sandboxes")
        .join(on_b["task_id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = std::fs::read_to_string(sandbox.join("status.json")).unwrap_or_default();
        let parsed: Value = serde_json::from_str(&status).unwrap_or_default();
        if parsed["state"] == "killed" {
            assert!(
                parsed["reason"].as_str().unwrap().contains("rescheduled"),
                "{status}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "orphan not killed: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    crate::harness::kill_tasks_under(&dir);
}

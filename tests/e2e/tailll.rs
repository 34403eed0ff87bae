//! `tailll` against clusters on loopback, as users run it: `sluice up
//! --nodes 3` (and `sluice scheduler` + `sluice node` on Kafka for a
//! reschedule), real tasks writing numbered lines, and what tailll printed
//! compared line by line with the files in the sandboxes: every line
//! exactly once, each file's lines in order, through restarts, a `kill -9`
//! of `sluice up`, a node killed and its instance placed elsewhere.
//!
//! The `tailll` binary sits next to `sluice` in the target directory;
//! `cargo test --workspace` builds it (the tailll package has integration
//! tests of its own, which makes cargo build its binary).

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Proc, SLUICE, Up, sluice_ok, write_spec};

fn tailll_bin() -> PathBuf {
    let path = Path::new(SLUICE).with_file_name("tailll");
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo test --workspace` (or `cargo build -p tailll` first)",
        path.display()
    );
    path
}

pub(crate) fn tailll_command(data_dir: &str, args: &[&str]) -> Command {
    let mut command = Command::new(tailll_bin());
    command
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("SLUICE_DATA_DIR")
        .env_remove("SLUICE_ADDR")
        .env_remove("SLUICE_TOKEN")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    command
}

/// `tailll ARGS` to the end as the holder of `token`.
pub(crate) fn tailll_as(data_dir: &str, token: &str, args: &[&str]) -> std::process::Output {
    tailll_command(data_dir, args)
        .env("SLUICE_TOKEN", token)
        .output()
        .expect("run tailll")
}

/// A `tailll` in the background; its stdout collected line by line.
pub(crate) struct Tailll {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: PathBuf,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Tailll {
    pub(crate) fn start(data_dir: &str, args: &[&str]) -> Tailll {
        let stderr = PathBuf::from(format!(
            "{data_dir}.tailll-{}.err",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut child = tailll_command(data_dir, args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start tailll");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Tailll {
            child: Some(child),
            lines,
            stderr,
            reader: Some(reader),
        }
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The JSON objects printed so far that are lines (not lifecycle).
    pub(crate) fn json_lines(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .filter(|v| v.get("line").is_some())
            .collect()
    }

    /// Waits until `done` holds for the output so far.
    pub(crate) fn until(&self, secs: u64, what: &str, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if done(&self.lines()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tailll: {what}: timed out after {} lines; stderr:\n{}",
                self.lines().len(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ctrl-C; returns the exit status once the output is read.
    pub(crate) fn interrupt(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        signal(child.id(), "INT");
        let status = wait(&mut child, 20, "tailll after Ctrl-C");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        status
    }
}

impl Drop for Tailll {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(pid: u32, name: &str) {
    Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
}

fn wait(child: &mut Child, secs: u64, what: &str) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not exit within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `tailll ARGS` to its end (`--no-follow` runs), with a deadline.
fn tailll_run(data_dir: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = tailll_command(data_dir, args)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let status = wait(&mut child, 40, &format!("tailll {args:?}"));
    (
        status,
        std::fs::read_to_string(out).unwrap(),
        std::fs::read_to_string(err).unwrap(),
    )
}

fn instances(data_dir: &str, job: &str) -> Vec<Value> {
    let status: Value = serde_json::from_str(&sluice_ok(&[
        "job",
        "status",
        job,
        "--data-dir",
        data_dir,
        "--json",
    ]))
    .unwrap();
    status["instances"].as_array().cloned().unwrap_or_default()
}

/// Polls the job's instances until `done` holds.
fn until_job(data_dir: &str, job: &str, secs: u64, done: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let i = instances(data_dir, job);
        if done(&i) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out; instances {i:#?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn all_in(states: &'static [&'static str]) -> impl Fn(&[Value]) -> bool {
    move |i: &[Value]| {
        !i.is_empty()
            && i.iter()
                .all(|i| states.contains(&i["state"].as_str().unwrap_or_default()))
    }
}

/// `(instance, task_id, run, stream)`: one log file.
type FileKey = (u64, String, u64, String);

/// Every line of `job` in the sandboxes under `nodes` (a `DATA_DIR/nodes`).
fn files(nodes: &Path, job: &str) -> BTreeMap<FileKey, Vec<String>> {
    let mut all = BTreeMap::new();
    for node in std::fs::read_dir(nodes).unwrap().flatten() {
        let Ok(sandboxes) = std::fs::read_dir(node.path().join("sandboxes")) else {
            continue;
        };
        for sandbox in sandboxes.flatten() {
            let Ok(manifest) = std::fs::read_to_string(sandbox.path().join("sandbox.json")) else {
                continue;
            };
            let manifest: Value = serde_json::from_str(&manifest).unwrap();
            if manifest["job"] != job {
                continue;
            }
            let instance = manifest["instance"].as_u64().unwrap();
            let task = manifest["task_id"].as_str().unwrap().to_string();
            for run in std::fs::read_dir(sandbox.path().join("logs"))
                .unwrap()
                .flatten()
            {
                let name = run.file_name().to_string_lossy().into_owned();
                let run_number: u64 = name.strip_prefix("run-").unwrap().parse().unwrap();
                for stream in ["stdout", "stderr"] {
                    let Ok(text) =
                        std::fs::read_to_string(run.path().join(format!("main.{stream}")))
                    else {
                        continue;
                    };
                    if text.is_empty() {
                        continue;
                    }
                    all.insert(
                        (instance, task.clone(), run_number, stream.to_string()),
                        text.lines().map(str::to_string).collect(),
                    );
                }
            }
        }
    }
    all
}

/// What tailll printed, the same way; panics on a line shown twice.
fn shown(lines: &[Value]) -> BTreeMap<FileKey, Vec<String>> {
    let mut all: BTreeMap<FileKey, Vec<String>> = BTreeMap::new();
    let mut ids = HashSet::new();
    for v in lines {
        let id = (
            v["host"].as_str().unwrap().to_string(),
            v["source_id"].as_str().unwrap().to_string(),
            v["offset"].as_u64().unwrap(),
        );
        assert!(ids.insert(id.clone()), "shown twice: {id:?} {v}");
        all.entry((
            v["instance"].as_u64().unwrap(),
            v["task_id"].as_str().unwrap().to_string(),
            v["run"].as_u64().unwrap(),
            v["stream"].as_str().unwrap().to_string(),
        ))
        .or_default()
        .push(v["line"].as_str().unwrap().to_string());
    }
    all
}

fn line_count(files: &BTreeMap<FileKey, Vec<String>>) -> usize {
    files.values().map(Vec::len).sum()
}

/// Every line of every file shown exactly once, each file's in order.
fn assert_exactly_once(tailll: &Tailll, nodes: &Path, job: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let expected = files(nodes, job);
        let got = shown(&tailll.json_lines());
        if got == expected {
            return;
        }
        if Instant::now() > deadline {
            for (key, lines) in &expected {
                let seen = got.get(key).cloned().unwrap_or_default();
                assert_eq!(
                    &seen,
                    lines,
                    "{key:?}: tailll showed {} lines, the file has {}; stderr:\n{}",
                    seen.len(),
                    lines.len(),
                    tailll.stderr()
                );
            }
            let extra: Vec<&FileKey> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
            panic!("tailll showed lines of no file: {extra:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `up` for the tests that compare tailll with the sandboxes' files: a host
/// disk that happens to be nearly full must not have them collected (the
/// collector is told the node's disk is large and holds only them).
const UP_ARGS: &[&str] = &[
    "--nodes",
    "3",
    "--disk-watch-interval",
    "1",
    "--gc-capacity-mb",
    "1000000",
];

fn start_up(tmp: &Path) -> Up {
    let dir = tmp.join("d");
    std::fs::create_dir(&dir).unwrap();
    Up::start(&dir, UP_ARGS)
}

/// The issue's "done when": `sluice up --nodes 3`, 20 instances that
/// restart now and then, tailll through a `kill -9` of `sluice up` (which
/// restarts every shipper; the tasks live on and are adopted).
#[test]
fn every_line_once_and_in_order_through_restarts_and_a_kill_9_of_up() {
    let tmp = tempfile::tempdir().unwrap();
    let up = start_up(tmp.path());
    let data = up.data_dir().to_string();
    let spec = write_spec(
        tmp.path(),
        "web",
        r#"
name: web
role: www
env: prod
instances: 20
resources: {cpu: 0.01, ram_mb: 16, disk_mb: 64}
processes:
  - name: main
    cmd: for i in $(seq 1 40); do echo "{{instance}}/{{run}}/$i"; if [ $((i % 10)) = 0 ]; then echo "e{{instance}}/{{run}}/$i" >&2; fi; sleep 0.05; done; exit 3
restart:
  policy: on-failure
  backoff: {initial_ms: 100, max_ms: 200}
  limit: 3
"#,
    );
    sluice_ok(&["job", "submit", &spec, "--data-dir", &data]);
    let mut tailll = Tailll::start(&data, &["www/prod/web", "--output", "json", "-n", "100000"]);
    tailll.until(60, "lines from every instance", |lines| {
        let seen: HashSet<&str> = lines
            .iter()
            .filter_map(|l| l.split("\"line\":\"").nth(1))
            .filter_map(|l| l.split('/').next())
            .filter(|i| i.parse::<u32>().is_ok())
            .collect();
        seen.len() >= 20
    });

    let dir = up.crash();
    let up = Up::start(&dir, UP_ARGS);
    until_job(&data, "www/prod/web", 90, all_in(&["failed"]));
    let nodes = dir.join("nodes");
    assert_exactly_once(&tailll, &nodes, "www/prod/web", 30);
    let files = files(&nodes, "www/prod/web");
    assert_eq!(
        files.keys().filter(|k| k.3 == "stdout").count(),
        80,
        "20 instances × 4 runs"
    );
    assert_eq!(line_count(&files), 20 * 4 * 44);

    // Lifecycle lines said what happened.
    let lifecycle: Vec<String> = tailll
        .lines()
        .iter()
        .filter(|l| l.contains("\"lifecycle\""))
        .cloned()
        .collect();
    assert!(
        lifecycle.iter().any(|l| l.contains("restarted on node-")),
        "{lifecycle:#?}"
    );
    assert!(
        tailll.interrupt().success(),
        "Ctrl-C exits 0: {}",
        tailll.stderr()
    );
    drop(up);
}

/// A node killed with `kill -9`: its instance is placed on the other node
/// and tailll follows it there; when the node comes back, its old task is
/// stopped, and tailll shows the lines that task wrote meanwhile. Every
/// line of every file, old task and new, exactly once.
#[test]
fn every_line_once_across_a_reschedule() {
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
            &["node", "--data-dir", &data, "--bus", &bus, "--name", name],
        )
    };
    let _a = node("node-a");
    let mut b = node("node-b");
    loop {
        let out = sluice_ok(&["job", "nodes", "--data-dir", &data, "--json"]);
        if out.matches(r#""alive":true"#).count() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes: {out}\n{}",
            scheduler.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let spec = write_spec(
        tmp.path(),
        "svc",
        "name: svc\nrole: www\nenv: prod\ninstances: 2\nresources: {cpu: 0.1, ram_mb: 16, disk_mb: 64}\n\
         processes: [{name: main, cmd: 'i=0; while true; do i=$((i+1)); echo \"{{instance}} $i\"; sleep 0.02; done'}]\n",
    );
    sluice_ok(&["job", "submit", &spec, "--data-dir", &data]);
    until_job(&data, "www/prod/svc", 60, |i| {
        i.len() == 2 && i.iter().all(|i| i["state"] == "running") && i[0]["host"] != i[1]["host"]
    });
    let before = instances(&data, "www/prod/svc");
    let on_b = before
        .iter()
        .find(|i| i["host"] == "node-b")
        .unwrap()
        .clone();

    let mut tailll = Tailll::start(&data, &["www/prod/svc", "--output", "json", "-n", "100000"]);
    let task_b = on_b["task_id"].as_str().unwrap().to_string();
    tailll.until(30, "lines of the task on node-b", |lines| {
        lines.iter().any(|l| l.contains(&task_b))
    });

    b.kill();
    until_job(&data, "www/prod/svc", 60, |i| {
        i.len() == 2
            && i.iter()
                .all(|i| i["host"] == "node-a" && i["state"] == "running")
    });
    let moved = instances(&data, "www/prod/svc");
    let new_task = moved[on_b["instance"].as_u64().unwrap() as usize]["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_task, task_b);
    tailll.until(30, "lines of the new task on node-a", |lines| {
        lines
            .iter()
            .any(|l| l.contains(&new_task) && l.contains("\"line\""))
    });

    // Reported once, while it stays down.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tailll.stderr().contains("unreachable for") {
        assert!(
            Instant::now() < deadline,
            "node-b not reported: {}",
            tailll.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(tailll.stderr().contains("node-b ("), "{}", tailll.stderr());

    // node-b returns (on a new port): its task is stopped, and what it
    // wrote while its node was away reaches tailll.
    let _b = node("node-b");
    let sandbox = dir.join("nodes/node-b/sandboxes").join(&task_b);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = std::fs::read_to_string(sandbox.join("status.json")).unwrap_or_default();
        let parsed: Value = serde_json::from_str(&status).unwrap_or_default();
        if parsed["state"] == "killed" {
            break;
        }
        assert!(Instant::now() < deadline, "old task not stopped: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    sluice_ok(&["job", "kill", "www/prod/svc", "--data-dir", &data]);
    until_job(&data, "www/prod/svc", 60, all_in(&["killed"]));
    // Give the executors a moment to be gone before reading the files.
    crate::harness::kill_tasks_under(&dir);
    assert_exactly_once(&tailll, &dir.join("nodes"), "www/prod/svc", 40);

    let lifecycle = tailll.lines().join("\n");
    assert!(
        lifecycle.contains("rescheduled to node-a (was node-b)"),
        "{lifecycle}"
    );
    let stderr = tailll.stderr();
    assert_eq!(
        stderr.matches("unreachable for").count(),
        1,
        "node-b reported down once: {stderr}"
    );
    assert!(
        stderr.contains("node-b (") && stderr.contains(") is back after"),
        "{stderr}"
    );
    assert!(tailll.interrupt().success(), "{}", tailll.stderr());
}

#[test]
fn a_hundred_instances_live_and_with_no_follow() {
    let tmp = tempfile::tempdir().unwrap();
    let up = start_up(tmp.path());
    let data = up.data_dir().to_string();
    let spec = write_spec(
        tmp.path(),
        "many",
        "name: many\nrole: batch\nenv: prod\ninstances: 100\nresources: {cpu: 0.01, ram_mb: 8, disk_mb: 8}\n\
         restart: never\nprocesses: [{name: main, cmd: 'sleep 1; for i in 1 2 3 4 5 6 7 8 9 10; do echo \"{{instance}} $i\"; done'}]\n",
    );
    sluice_ok(&["job", "submit", &spec, "--data-dir", &data]);
    let mut live = Tailll::start(
        &data,
        &["batch/prod/many", "--output", "json", "-n", "1000"],
    );
    until_job(&data, "batch/prod/many", 90, all_in(&["finished"]));
    assert_exactly_once(&live, &up.dir.join("nodes"), "batch/prod/many", 30);
    assert_eq!(live.json_lines().len(), 1000);
    assert!(live.interrupt().success());

    let (status, out, err) = tailll_run(&data, &["batch/prod/many", "--no-follow", "-n", "3"]);
    assert!(status.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 300, "3 lines × 100 instances:\n{out}");
    for i in [0, 42, 99] {
        let mine: Vec<&&str> = lines
            .iter()
            .filter(|l| {
                l.trim_start_matches('[')
                    .trim_start()
                    .starts_with(&format!("{i}]"))
            })
            .collect();
        assert_eq!(
            mine.iter()
                .map(|l| l.split("] ").nth(1).unwrap())
                .collect::<Vec<_>>(),
            [format!("{i} 8"), format!("{i} 9"), format!("{i} 10")],
            "{out}"
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with("[ 7] 7 ")),
        "prefixes are aligned: {out}"
    );
}

#[test]
fn filters_templates_and_no_follow() {
    let tmp = tempfile::tempdir().unwrap();
    let up = start_up(tmp.path());
    let data = up.data_dir().to_string();
    let spec = write_spec(
        tmp.path(),
        "mixed",
        r#"
name: mixed
role: www
env: prod
instances: 3
resources: {cpu: 0.01, ram_mb: 8, disk_mb: 8}
restart: never
processes:
  - name: main
    cmd: for i in $(seq 1 12); do if [ $((i % 3)) = 0 ]; then echo "ERROR {{instance}} $i"; else echo "ok {{instance}} $i"; fi; echo "warn {{instance}} $i" >&2; done
"#,
    );
    sluice_ok(&["job", "submit", &spec, "--data-dir", &data]);
    until_job(&data, "www/prod/mixed", 60, all_in(&["finished"]));
    // The files are shipped (and so served) shortly after the tasks end.
    let job = "www/prod/mixed";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, out, _) =
            tailll_run(&data, &[job, "--no-follow", "-n", "100", "--output", "raw"]);
        assert!(status.success());
        if out.lines().count() == 72 {
            break;
        }
        assert!(Instant::now() < deadline, "not all 72 lines served: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let run = |args: &[&str]| -> Vec<String> {
        let mut all = vec![job, "--no-follow", "-n", "100", "--output", "raw"];
        all.extend_from_slice(args);
        let (status, out, err) = tailll_run(&data, &all);
        assert!(status.success(), "{args:?}: {err}");
        let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let errors = run(&["-g", "ERROR"]);
    assert_eq!(errors.len(), 12, "{errors:?}");
    assert!(errors.iter().all(|l| l.starts_with("ERROR ")));
    let rest = run(&["-g", "ERROR", "-v"]);
    assert_eq!(rest.len(), 60);
    assert!(rest.iter().all(|l| !l.contains("ERROR")));
    let some = run(&["-i", "0,2", "--stream", "stdout"]);
    assert_eq!(some.len(), 24);
    assert!(some.iter().all(|l| !l.contains(" 1 ")), "{some:?}");
    let stderr = run(&["--stream", "stderr", "-g", " 1[0-2]$"]);
    assert_eq!(
        stderr,
        [
            "warn 0 10",
            "warn 0 11",
            "warn 0 12",
            "warn 1 10",
            "warn 1 11",
            "warn 1 12",
            "warn 2 10",
            "warn 2 11",
            "warn 2 12"
        ]
    );
    assert!(run(&["--process", "nope"]).is_empty());
    assert_eq!(run(&["--process", "main"]).len(), 72);
    // --since alone: every line since then, however many.
    assert_eq!(run(&["--since", "1h", "-n", "0"]).len(), 72);
    assert_eq!(
        run(&["--since", "2000-01-01T00:00:00Z", "-n", "0"]).len(),
        72
    );
    let last = run(&["-n", "2", "-i", "1", "--stream", "stdout"]);
    assert_eq!(last, ["ERROR 1 12", "ok 1 11"]);
    let templated = run(&[
        "--template",
        "{instance}|{stream}|{line}",
        "-i",
        "2",
        "-g",
        "^ok 2 1$",
    ]);
    assert_eq!(templated, ["2|stdout|ok 2 1"]);

    // Per-instance order in the merged output: each instance's stdout as
    // written.
    let (_, out, _) = tailll_run(
        &data,
        &[job, "--no-follow", "-n", "100", "--stream", "stdout"],
    );
    for i in 0..3 {
        let mine: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with(&format!("[{i}] ")))
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        let expected: Vec<String> = (1..=12).map(|n| n.to_string()).collect();
        assert_eq!(mine, expected, "{out}");
    }
}

/// `tailll … | head -n 5` and Ctrl-C end quietly with status 0; an unknown
/// job, a token without the role and a bad token end with 1 and say why.
#[test]
fn pipes_interrupts_and_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    // A user who may read role `db` only, known before `up` starts.
    std::fs::write(
        dir.join("tokens.toml"),
        "[[tokens]]\nuser = \"bob\"\ntoken = \"bob-token-0123456789\"\nroles = [\"db\"]\n",
    )
    .unwrap();
    let up = Up::start(&dir, &["--nodes", "2"]);
    let data = up.data_dir().to_string();
    let spec = write_spec(
        tmp.path(),
        "chatty",
        "name: chatty\nrole: www\nenv: prod\ninstances: 2\nresources: {cpu: 0.01, ram_mb: 8, disk_mb: 8}\n\
         processes: [{name: main, cmd: 'while true; do echo tick {{instance}}; sleep 0.01; done'}]\n",
    );
    sluice_ok(&["job", "submit", &spec, "--data-dir", &data]);
    until_job(&data, "www/prod/chatty", 60, all_in(&["running"]));

    let mut tailll = tailll_command(&data, &["www/prod/chatty"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let head = Command::new("head")
        .args(["-n", "5"])
        .stdin(Stdio::from(tailll.stdout.take().unwrap()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout).lines().count(), 5);
    let status = wait(&mut tailll, 30, "tailll after head exited");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut tailll.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.is_empty(), "quietly: {stderr}");

    let mut live = Tailll::start(&data, &["www/prod/chatty", "-q"]);
    live.until(30, "ticks", |lines| lines.len() > 10);
    assert!(live.interrupt().success(), "{}", live.stderr());

    let (status, _, err) = tailll_run(&data, &["www/prod/nope"]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("no job matches www/prod/nope"), "{err}");

    let refused = |token: &str, job: &str| {
        let mut child = tailll_command(&data, &[job])
            .env("SLUICE_TOKEN", token)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait(&mut child, 30, "tailll with a refused token");
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        (status, err)
    };
    let (status, err) = refused("bob-token-0123456789", "www/prod/chatty");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("permission denied") && err.contains("user bob may not read role www"),
        "{err}"
    );
    // A glob over every role shows bob nothing of www: no job matches.
    let (status, err) = refused("bob-token-0123456789", "*/prod/chatty");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("no job matches"), "{err}");
    let (status, err) = refused("wrong-token-0123456789", "www/prod/chatty");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("refused the token"), "{err}");
}

/// Scaling up puts instances on nodes tailll did not follow yet: it opens
/// their streams and shows the new instances from their first line;
/// scaling down is said too. Every line once.
#[test]
fn scaling_up_and_down_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let up = start_up(tmp.path());
    let data = up.data_dir().to_string();
    let spec = |n: u32| {
        write_spec(
            tmp.path(),
            &format!("grow{n}"),
            &format!(
                "name: grow\nrole: www\nenv: prod\ninstances: {n}\nresources: {{cpu: 0.01, ram_mb: 8, disk_mb: 8}}\n\
                 processes: [{{name: main, cmd: 'i=0; while true; do i=$((i+1)); echo \"{{{{instance}}}} $i\"; sleep 0.02; done'}}]\n"
            ),
        )
    };
    sluice_ok(&["job", "submit", &spec(1), "--data-dir", &data]);
    until_job(&data, "www/prod/grow", 60, all_in(&["running"]));
    let mut tailll = Tailll::start(
        &data,
        &["www/prod/grow", "--output", "json", "-n", "100000"],
    );
    tailll.until(30, "instance 0", |lines| {
        lines.iter().any(|l| l.contains("\"line\":\"0 "))
    });

    sluice_ok(&["job", "update", &spec(4), "--data-dir", &data]);
    until_job(&data, "www/prod/grow", 60, |i| {
        i.len() == 4 && i.iter().all(|i| i["state"] == "running")
    });
    let hosts: HashSet<String> = instances(&data, "www/prod/grow")
        .iter()
        .map(|i| i["host"].as_str().unwrap().to_string())
        .collect();
    assert!(hosts.len() >= 2, "new instances on other nodes: {hosts:?}");
    tailll.until(30, "lines of every new instance", |lines| {
        (1..4).all(|i| {
            lines
                .iter()
                .any(|l| l.contains(&format!("\"line\":\"{i} ")))
        })
    });

    sluice_ok(&["job", "update", &spec(2), "--data-dir", &data]);
    tailll.until(30, "scaled down", |lines| {
        lines
            .iter()
            .filter(|l| l.contains("removed (scaled down)"))
            .count()
            == 2
    });
    sluice_ok(&["job", "kill", "www/prod/grow", "--data-dir", &data]);
    until_job(&data, "www/prod/grow", 60, |i| {
        i.iter().all(|i| i["state"] == "killed")
    });
    crate::harness::kill_tasks_under(&up.dir);
    assert_exactly_once(&tailll, &up.dir.join("nodes"), "www/prod/grow", 30);
    let all = tailll.lines().join("\n");
    assert_eq!(all.matches("added (scaled up)").count(), 3, "{all}");
    assert!(tailll.interrupt().success(), "{}", tailll.stderr());
}

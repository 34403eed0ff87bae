//! The runtime with real executors (the `sluice` binary, built beforehand)
//! and real processes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_schema::events::VecSink;
use sluice_schema::pb::{ClusterEvent, EventKind, TaskReport, TaskState};
use sluice_schema::sandbox::{MANIFEST, Manifest};

use super::*;
use crate::agent::files::{EXECUTOR_LOG, ExecState, Status};

/// `<target>/debug/sluice`, the executor.
fn sluice_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/sluice");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bin sluice` first",
        bin.display()
    );
    bin
}

struct Node {
    root: tempfile::TempDir,
    sink: Arc<VecSink>,
    rt: TaskRuntime,
    executor: Vec<OsString>,
    disk_watch: Duration,
}

impl Node {
    fn new() -> Node {
        Node::with(
            vec![sluice_bin().into(), "executor".into()],
            Duration::from_secs(60),
        )
    }

    fn with(executor: Vec<OsString>, disk_watch: Duration) -> Node {
        let root = tempfile::tempdir().unwrap();
        let sink = Arc::new(VecSink::default());
        let rt =
            TaskRuntime::open(config(root.path(), &executor, disk_watch), sink.clone()).unwrap();
        Node {
            root,
            sink,
            rt,
            executor,
            disk_watch,
        }
    }

    /// A new runtime on the same root, as after an agent restart.
    fn restart(&mut self) {
        self.sink = Arc::new(VecSink::default());
        let config = config(self.root.path(), &self.executor, self.disk_watch);
        self.rt = TaskRuntime::open(config, self.sink.clone()).unwrap();
    }

    fn launch(&mut self, task_id: &str, instance: u32, yaml: &str) {
        self.rt
            .launch(&assignment(task_id, instance, yaml))
            .unwrap();
    }

    fn report(&mut self, task_id: &str) -> TaskReport {
        self.rt
            .poll()
            .into_iter()
            .find(|r| r.task_id == task_id)
            .unwrap_or_else(|| panic!("no report of {task_id}"))
    }

    /// Polls until `task_id` is in `state`.
    fn wait(&mut self, task_id: &str, state: TaskState) -> TaskReport {
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            let report = self.report(task_id);
            if report.state == state as i32 {
                return report;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir(task_id).join(EXECUTOR_LOG));
                panic!("{task_id} never {state:?}: {report:?}\nexecutor.log: {log:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn dir(&self, task_id: &str) -> PathBuf {
        self.root.path().join(task_id)
    }

    fn read(&self, task_id: &str, path: &str) -> String {
        let path = self.dir(task_id).join(path);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn status(&self, task_id: &str) -> Status {
        files::read_json(&self.dir(task_id), STATUS_FILE)
            .unwrap()
            .unwrap()
    }

    fn status_opt(&self, task_id: &str) -> Option<Status> {
        files::read_json(&self.dir(task_id), STATUS_FILE)
            .ok()
            .flatten()
    }

    /// `(to, run, actor, reason)` of each TASK_STATE event of `task_id`.
    fn changes(&self, task_id: &str) -> Vec<(String, u32, String, String)> {
        self.events(task_id, EventKind::TaskState)
            .into_iter()
            .map(|e| (e.attributes["to"].clone(), e.run, e.actor, e.reason))
            .collect()
    }

    fn events(&self, task_id: &str, kind: EventKind) -> Vec<ClusterEvent> {
        self.sink
            .events()
            .into_iter()
            .filter(|e| e.task_id == task_id && e.kind == kind as i32)
            .collect()
    }
}

impl Drop for Node {
    /// Nothing a test started outlives it.
    fn drop(&mut self) {
        let ids: Vec<String> = self.rt.tasks().map(|(id, _)| id.to_string()).collect();
        for id in &ids {
            let _ = self.rt.kill(id, "test", "cleanup");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.rt.tasks().any(|(_, s)| !is_terminal(s)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            self.rt.poll();
        }
    }
}

fn config(root: &Path, executor: &[OsString], disk_watch: Duration) -> RuntimeConfig {
    RuntimeConfig {
        root: root.to_path_buf(),
        node: "node-1".into(),
        executor: executor.to_vec(),
        kill_grace: Duration::from_millis(300),
        disk_watch_interval: disk_watch,
        tasks: Default::default(),
    }
}

/// A job `www/prod/web` with `yaml` (processes, restart, …) added.
fn assignment(task_id: &str, instance: u32, yaml: &str) -> Assignment {
    let text = format!(
        "name: web\nrole: www\nenv: prod\nresources: {{cpu: 1, ram_mb: 64, disk_mb: 64}}\n\
         labels: {{team: search}}\n{yaml}"
    );
    let spec = crate::spec::parse(&text, None).unwrap();
    Assignment {
        task_id: task_id.into(),
        job: spec.key.clone(),
        instance,
        spec,
    }
}

fn process_is_gone(pid: i32) -> bool {
    proc::stat(pid).is_none_or(|s| !s.is_live())
}

#[test]
fn processes_run_in_order_with_their_logs_in_run_0() {
    let mut node = Node::new();
    let yaml = "ports: [http, admin-v2]\nrestart: never\nprocesses:\n\
        - {name: first, cmd: 'echo one; echo oops >&2; sleep 0.2; touch first.done'}\n\
        - {name: second, cmd: 'test -f first.done && echo \"$SLUICE_TASK_ID $SLUICE_INSTANCE $SLUICE_RUN $PORT_HTTP {{ports.http}} {{instance}} {{ports.admin-v2}} $PORT_ADMIN_V2\" && pwd && echo \"$SLUICE_SANDBOX\"'}\n\
        - {name: quiet, cmd: 'true'}\n";
    node.launch("t-order", 3, yaml);
    node.launch("t-order", 3, yaml); // known: nothing happens
    let report = node.wait("t-order", TaskState::Finished);
    assert_eq!(
        (report.run, report.restarts, report.exit_code),
        (0, 0, Some(0))
    );
    assert_eq!(report.job, "www/prod/web");
    assert_eq!(report.instance, 3);
    assert!(report.sandbox_exists);

    let task: TaskFile = files::read_task(&node.dir("t-order")).unwrap();
    let (http, admin) = (task.ports["http"], task.ports["admin-v2"]);
    assert_ne!(http, admin);
    assert_eq!(node.read("t-order", "logs/run-0/first.stdout"), "one\n");
    assert_eq!(node.read("t-order", "logs/run-0/first.stderr"), "oops\n");
    let sandbox = node.dir("t-order");
    assert_eq!(
        node.read("t-order", "logs/run-0/second.stdout"),
        format!(
            "t-order 3 0 {http} {http} 3 {admin} {admin}\n{}\n{}\n",
            sandbox.join("work").display(),
            sandbox.display()
        )
    );
    assert_eq!(node.read("t-order", "logs/run-0/quiet.stdout"), "");
    assert_eq!(node.read("t-order", "logs/run-0/quiet.stderr"), "");

    let manifest: Manifest = serde_json::from_str(&node.read("t-order", MANIFEST)).unwrap();
    assert_eq!(
        manifest,
        Manifest {
            version: 1,
            job: "www/prod/web".into(),
            instance: 3,
            task_id: "t-order".into(),
            run: 0,
            processes: vec!["first".into(), "second".into(), "quiet".into()],
            labels: [("team".to_string(), "search".to_string())].into(),
            multiline: None,
        }
    );
    let changes = node.changes("t-order");
    let to: Vec<&str> = changes.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(to.first(), Some(&"starting"), "{changes:?}");
    assert_eq!(to.last(), Some(&"finished"), "{changes:?}");
    assert_eq!(
        to.iter().filter(|s| **s == "starting").count(),
        1,
        "launched once"
    );
    let event = node.events("t-order", EventKind::TaskState).pop().unwrap();
    assert_eq!(
        (event.job.as_str(), event.instance, event.host.as_str()),
        ("www/prod/web", Some(3), "node-1")
    );
    assert_eq!(event.attributes["exit_code"], "0");
    assert!(event.id.starts_with("agent@node-1/"), "{}", event.id);
    assert!(node.rt.terminated_at("t-order").is_some());
}

#[test]
fn failed_runs_restart_into_new_run_directories_until_the_limit() {
    let mut node = Node::new();
    let started = Instant::now();
    node.launch(
        "t-flaky",
        0,
        "restart: {policy: on-failure, backoff: {initial_ms: 150, max_ms: 1000}, limit: 2}\n\
         processes:\n\
         - {name: work, cmd: 'echo run $SLUICE_RUN {{run}}; exit 3'}\n\
         - {name: after, cmd: 'echo never'}\n",
    );
    let report = node.wait("t-flaky", TaskState::Failed);
    // Backoffs of 150 and 300 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((report.run, report.restarts), (2, 2));
    assert_eq!(report.exit_code, Some(3));
    assert_eq!(report.reason, "restart limit reached");
    for run in 0..3 {
        assert_eq!(
            node.read("t-flaky", &format!("logs/run-{run}/work.stdout")),
            format!("run {run} {run}\n")
        );
        let after = node
            .dir("t-flaky")
            .join(format!("logs/run-{run}/after.stdout"));
        assert!(!after.exists(), "a process after a failed one never starts");
    }
    assert!(!node.dir("t-flaky").join("logs/run-3").exists());
    let manifest: Manifest = serde_json::from_str(&node.read("t-flaky", MANIFEST)).unwrap();
    assert_eq!(manifest.run, 2);
    let changes = node.changes("t-flaky");
    let runs: Vec<u32> = changes.iter().map(|c| c.1).collect();
    assert!(runs.is_sorted() && runs.contains(&1), "{changes:?}");
    let last = changes.last().unwrap();
    assert_eq!((last.0.as_str(), last.1), ("failed", 2));
}

/// A job's `filesystem.read` paths are the only way to files beyond the
/// system's, and no job may be given the node's data directory.
#[test]
fn a_job_s_filesystem_paths_are_given_and_the_data_directory_is_not() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tempfile::tempdir().unwrap();
    let shared = tempfile::tempdir().unwrap();
    for dir in [root.path(), shared.path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::write(shared.path().join("model.txt"), "weights\n").unwrap();
    let mut config = config(
        root.path(),
        &[sluice_bin().into(), "executor".into()],
        Duration::from_secs(60),
    );
    config.tasks.protected = vec![root.path().to_path_buf()];
    let sink = Arc::new(VecSink::default());
    let mut rt = TaskRuntime::open(config, sink).unwrap();
    let model = shared.path().join("model.txt");
    let given = format!(
        "restart: never\nfilesystem: {{read: [{}]}}\nprocesses: [{{name: p, cmd: 'cat {}'}}]\n",
        shared.path().display(),
        model.display()
    );
    let not_given = format!(
        "restart: never\nprocesses: [{{name: p, cmd: 'cat {}'}}]\n",
        model.display()
    );
    rt.launch(&assignment("t-given", 0, &given)).unwrap();
    rt.launch(&assignment("t-not-given", 0, &not_given))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let ended = |rt: &mut TaskRuntime| {
        let reports = rt.poll();
        ["t-given", "t-not-given"].iter().all(|id| {
            reports.iter().any(|r| {
                r.task_id == *id
                    && r.state != TaskState::Starting as i32
                    && r.state != TaskState::Running as i32
            })
        })
    };
    while !ended(&mut rt) {
        assert!(std::time::Instant::now() < deadline, "tasks did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = |id: &str| {
        std::fs::read_to_string(root.path().join(id).join("logs/run-0/p.stdout")).unwrap()
    };
    assert_eq!(out("t-given"), "weights\n");
    assert_eq!(out("t-not-given"), "");

    for (field, yaml) in [
        (
            "filesystem.write",
            format!(
                "filesystem: {{write: [{}]}}\nprocesses: [{{name: p, cmd: 'true'}}]\n",
                root.path().display()
            ),
        ),
        (
            "filesystem.read",
            "filesystem: {read: [/]}\nprocesses: [{name: p, cmd: 'true'}]\n".to_string(),
        ),
    ] {
        let err = rt
            .launch(&assignment("t-greedy", 0, &yaml))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(field) && err.contains("data directory"),
            "{err}"
        );
    }
}

#[test]
fn never_restarting_tasks_fail_at_once() {
    let mut node = Node::new();
    node.launch(
        "t-never",
        0,
        "restart: never\nprocesses: [{name: p, cmd: 'exit 7'}]\n",
    );
    let report = node.wait("t-never", TaskState::Failed);
    assert_eq!((report.run, report.exit_code), (0, Some(7)));
    assert_eq!(report.reason, "exit 7");
    assert!(!node.dir("t-never").join("logs/run-1").exists());
    let status = node.status("t-never");
    assert_eq!(status.state, ExecState::Failed);
    assert_eq!(status.process.as_deref(), Some("p"));
}

#[test]
fn always_restarts_after_a_success_too() {
    let mut node = Node::new();
    node.launch(
        "t-always",
        0,
        "restart: {policy: always, backoff: {initial_ms: 50}, limit: 1}\n\
         processes: [{name: p, cmd: 'echo ok'}]\n",
    );
    let report = node.wait("t-always", TaskState::Finished);
    assert_eq!((report.run, report.exit_code), (1, Some(0)));
    assert_eq!(report.reason, "restart limit reached");
    assert_eq!(node.read("t-always", "logs/run-1/p.stdout"), "ok\n");
}

#[test]
fn kills_reach_the_process_group_and_sigkill_after_the_grace() {
    let mut node = Node::new();
    // Traps TERM (its child gets TERM too) and leaves cleanly.
    node.launch(
        "t-polite",
        0,
        "processes: [{name: p, cmd: 'trap \"echo term > term.marker; exit 0\" TERM; sleep 30 & wait'}]\n",
    );
    // Ignores TERM (and so does its sleep).
    node.launch(
        "t-stubborn",
        0,
        "processes: [{name: p, cmd: 'echo $$ > pid; trap \"\" TERM; sleep 30'}]\n",
    );
    node.wait("t-polite", TaskState::Running);
    node.wait("t-stubborn", TaskState::Running);
    std::thread::sleep(Duration::from_millis(200)); // the traps are set

    let started = Instant::now();
    node.rt.kill("t-polite", "alice", "user request").unwrap();
    node.rt.kill("t-stubborn", "bob", "update").unwrap();
    let polite = node.wait("t-polite", TaskState::Killed);
    let stubborn = node.wait("t-stubborn", TaskState::Killed);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "grace respected"
    );
    assert_eq!(node.read("t-polite", "work/term.marker"), "term\n");
    assert_eq!(
        (polite.reason.as_str(), polite.exit_code),
        ("user request", Some(0))
    );
    assert_eq!(stubborn.reason, "update");
    assert_eq!(node.status("t-stubborn").signal, Some(libc::SIGKILL));
    let pid: i32 = node.read("t-stubborn", "work/pid").trim().parse().unwrap();
    assert!(process_is_gone(pid));

    let last = node.changes("t-polite").pop().unwrap();
    assert_eq!(
        last,
        ("killed".into(), 0, "alice".into(), "user request".into())
    );
    let last = node.changes("t-stubborn").pop().unwrap();
    assert_eq!(last, ("killed".into(), 0, "bob".into(), "update".into()));
    let event = node
        .events("t-stubborn", EventKind::TaskState)
        .pop()
        .unwrap();
    assert_eq!(event.attributes["signal"], "9");
    // Killing again or killing the unknown changes nothing.
    node.rt.kill("t-polite", "carol", "again").unwrap();
    node.rt.kill("t-nobody", "carol", "again").unwrap();
    assert_eq!(node.report("t-polite").reason, "user request");
}

#[test]
fn a_kill_during_the_backoff_ends_the_wait() {
    let mut node = Node::new();
    node.launch(
        "t-backoff",
        0,
        "restart: {policy: on-failure, backoff: {initial_ms: 60000}}\nprocesses: [{name: p, cmd: 'exit 1'}]\n",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while node
        .status_opt("t-backoff")
        .is_none_or(|s| s.next_restart_unix_ms.is_none())
    {
        assert!(Instant::now() < deadline, "never backed off");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(node.report("t-backoff").state, TaskState::Starting as i32);
    node.rt.kill("t-backoff", "alice", "stop").unwrap();
    let report = node.wait("t-backoff", TaskState::Killed);
    assert_eq!((report.run, report.exit_code), (0, Some(1)));
}

#[test]
fn a_new_runtime_adopts_live_tasks_and_loses_dead_ones() {
    let mut node = Node::new();
    node.launch(
        "t-live",
        0,
        "processes: [{name: p, cmd: 'echo $$ >> pids; sleep 30'}]\n",
    );
    node.launch(
        "t-dead",
        1,
        "processes: [{name: p, cmd: 'echo $$ > pid; sleep 30'}]\n",
    );
    node.wait("t-live", TaskState::Running);
    node.wait("t-dead", TaskState::Running);
    let dead = node.status("t-dead");

    // The agent goes away (its tasks keep running), one executor is SIGKILLed.
    proc::signal(dead.executor_pid, libc::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while proc::is_locked(&node.dir("t-dead").join(LOCK_FILE)).unwrap() {
        assert!(Instant::now() < deadline, "the executor does not die");
        std::thread::sleep(Duration::from_millis(10));
    }
    node.restart();
    let report = node.report("t-dead");
    assert_eq!(report.state, TaskState::Lost as i32, "{report:?}");
    assert_eq!(report.reason, "executor died");
    let pid: i32 = node.read("t-dead", "work/pid").trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !process_is_gone(pid) {
        assert!(
            Instant::now() < deadline,
            "the dead executor's process is left running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let changes = node.changes("t-dead");
    assert_eq!(
        changes,
        [("lost".into(), 0, AGENT_ACTOR.into(), "executor died".into())]
    );
    assert_eq!(
        node.events("t-dead", EventKind::TaskState)[0].attributes["from"],
        "running"
    );

    for _ in 0..10 {
        assert_eq!(node.report("t-live").state, TaskState::Running as i32);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        node.read("t-live", "work/pids").lines().count(),
        1,
        "started once"
    );
    assert!(node.changes("t-live").is_empty(), "nothing new to announce");

    // Adopted tasks can be killed; a third runtime keeps what it finds.
    node.rt.kill("t-live", "alice", "done").unwrap();
    node.wait("t-live", TaskState::Killed);
    node.restart();
    assert_eq!(node.report("t-live").state, TaskState::Killed as i32);
    assert_eq!(node.report("t-dead").state, TaskState::Lost as i32);
    assert!(node.sink.events().is_empty());
}

#[test]
fn sandboxes_over_their_disk_quota_are_killed() {
    let executor = vec![sluice_bin().into(), "executor".into()];
    let mut node = Node::with(executor, Duration::from_millis(100));
    let mut a = assignment(
        "t-hog",
        0,
        "processes: [{name: p, cmd: 'head -c 3000000 /dev/zero > big; sleep 30'}]\n",
    );
    a.spec.resources.disk_mb = 1;
    node.rt.launch(&a).unwrap();
    let report = node.wait("t-hog", TaskState::Killed);
    assert_eq!(report.reason, DISK_QUOTA_EXCEEDED);
    assert!(report.sandbox_bytes > 1 << 20, "{report:?}");
    let quota = node.events("t-hog", EventKind::QuotaKill);
    assert_eq!(quota.len(), 1);
    assert_eq!(quota[0].reason, DISK_QUOTA_EXCEEDED);
    assert_eq!(quota[0].actor, AGENT_ACTOR);
    assert_eq!(quota[0].attributes["quota_bytes"], (1u64 << 20).to_string());
    let last = node.changes("t-hog").pop().unwrap();
    assert_eq!(
        last,
        (
            "killed".into(),
            0,
            AGENT_ACTOR.into(),
            DISK_QUOTA_EXCEEDED.into()
        )
    );
}

#[test]
fn executors_refuse_damaged_tasks_and_taken_sandboxes() {
    let mut node = Node::new();
    node.launch("t-run", 0, "processes: [{name: p, cmd: 'sleep 30'}]\n");
    node.wait("t-run", TaskState::Running);
    let err = proc::spawn_executor(&node.executor, &node.dir("t-run")).unwrap_err();
    assert!(err.to_string().contains("already runs"), "{err}");
    // Started by hand, without the lock: it cannot take it.
    let (program, args) = node.executor.split_first().unwrap();
    let status = std::process::Command::new(program)
        .args(args)
        .arg("--sandbox")
        .arg(node.dir("t-run"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    assert_eq!(node.status("t-run").state, ExecState::Running);

    let dir = node.root.path().join("t-bad");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(TASK_FILE), "{}").unwrap();
    let mut child = proc::spawn_executor(&node.executor, &dir).unwrap();
    assert!(!child.wait().unwrap().success());
    let status: Status = files::read_json(&dir, STATUS_FILE).unwrap().unwrap();
    assert_eq!(status.state, ExecState::Failed);
    assert!(
        status.reason.starts_with("invalid task"),
        "{}",
        status.reason
    );
}

#[test]
fn hostile_assignments_are_refused() {
    let mut node = Node::with(vec!["/bin/false".into()], Duration::from_secs(60));
    for bad in ["../escape", "a/b", "", ".hidden", "-rf", "x..y"] {
        let err = node
            .rt
            .launch(&assignment(bad, 0, "processes: [{name: p, cmd: 'true'}]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("task_id"), "{bad:?}: {err}");
    }
    let mut a = assignment("t-ok", 0, "processes: [{name: p, cmd: 'true'}]\n");
    a.spec.processes[0].name = "../../p".into();
    assert!(
        node.rt
            .launch(&a)
            .unwrap_err()
            .to_string()
            .contains("processes[0].name")
    );
    let mut a = assignment("t-ok", 0, "processes: [{name: p, cmd: 'true'}]\n");
    a.job = JobKey::new("www", "prod", "other").unwrap();
    assert!(node.rt.launch(&a).is_err());
    let listed: Vec<_> = std::fs::read_dir(node.root.path()).unwrap().collect();
    assert!(listed.is_empty(), "nothing was created");
    assert!(
        node.root
            .path()
            .parent()
            .unwrap()
            .join("escape")
            .symlink_metadata()
            .is_err()
    );
}

#[test]
fn an_executor_that_cannot_start_makes_the_task_lost() {
    let mut node = Node::with(vec!["/nonexistent/sluice".into()], Duration::from_secs(60));
    let err = node
        .rt
        .launch(&assignment(
            "t-1",
            0,
            "processes: [{name: p, cmd: 'true'}]\n",
        ))
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/sluice"), "{err}");
    let report = node.report("t-1");
    assert_eq!(report.state, TaskState::Lost as i32);
    assert!(
        report.reason.starts_with("executor failed to start"),
        "{report:?}"
    );
    assert!(node.rt.terminated_at("t-1").is_some());
    node.rt.forget("t-1");
    assert!(node.rt.sandbox("t-1").is_none());
}

#[test]
fn damaged_sandboxes_are_reported_lost() {
    let root = tempfile::tempdir().unwrap();
    let good = assignment("t-status", 2, "processes: [{name: p, cmd: 'true'}]\n");
    let task = TaskFile {
        version: FORMAT_VERSION,
        task_id: good.task_id.clone(),
        job: good.job.clone(),
        instance: good.instance,
        spec: good.spec.clone(),
        ports: BTreeMap::new(),
        node: "node-1".into(),
        kill_grace_ms: 100,
        created_unix_ms: 0,
        confinement: Default::default(),
    };
    for (id, task_json, status_json) in [
        ("t-garbage", "{not json", None),
        (
            "t-status",
            &*serde_json::to_string(&task).unwrap(),
            Some("[1, 2"),
        ),
        ("t-other", &*serde_json::to_string(&task).unwrap(), None),
    ] {
        let dir = root.path().join(id);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(TASK_FILE), task_json).unwrap();
        if let Some(status) = status_json {
            std::fs::write(dir.join(STATUS_FILE), status).unwrap();
        }
    }
    std::fs::create_dir(root.path().join("no-task-json")).unwrap();
    std::fs::write(root.path().join("stray-file"), "x").unwrap();
    let sink = Arc::new(VecSink::default());
    let executor = vec![OsString::from("/bin/false")];
    let mut rt = TaskRuntime::open(
        config(root.path(), &executor, Duration::from_secs(60)),
        sink.clone(),
    )
    .unwrap();
    let reports: BTreeMap<String, TaskReport> = rt
        .poll()
        .into_iter()
        .map(|r| (r.task_id.clone(), r))
        .collect();
    assert_eq!(
        reports.keys().collect::<Vec<_>>(),
        ["t-garbage", "t-other", "t-status"]
    );
    for report in reports.values() {
        assert_eq!(report.state, TaskState::Lost as i32, "{report:?}");
    }
    assert!(
        reports["t-garbage"].reason.starts_with("invalid task"),
        "{:?}",
        reports["t-garbage"]
    );
    assert!(
        reports["t-status"].reason.starts_with("invalid status"),
        "{:?}",
        reports["t-status"]
    );
    // task.json names another task: refused.
    assert!(
        reports["t-other"].reason.starts_with("invalid task"),
        "{:?}",
        reports["t-other"]
    );
    assert_eq!(reports["t-status"].job, "www/prod/web");
    assert_eq!(sink.events().len(), 3);
}

#[test]
fn runtimes_need_an_executor_and_a_node_name() {
    let root = tempfile::tempdir().unwrap();
    let sink = Arc::new(VecSink::default());
    let mut bad = config(root.path(), &[], Duration::from_secs(1));
    assert!(TaskRuntime::open(bad.clone(), sink.clone()).is_err());
    bad.executor = vec!["x".into()];
    bad.node = "a/b".into();
    assert!(TaskRuntime::open(bad, sink).is_err());
}

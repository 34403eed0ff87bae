//! The task runtime: the node agent's side of running tasks. It creates
//! each task's sandbox in the native layout, starts the task's executor
//! ([`super::executor`]) and follows it through the sandbox's files
//! ([`super::files`]): reporting states, announcing their changes as
//! `TASK_STATE` cluster events, killing on request or when a sandbox grows
//! past its disk quota, and finding running tasks again after the agent
//! restarts.
//!
//! ```text
//! ASSIGNED ─launch─▶ STARTING ─▶ RUNNING ─▶ FINISHED | FAILED | KILLED
//!                       ▲           │
//!                       └─ restart ─┘   (any state) ─executor gone─▶ LOST
//! ```
//!
//! **States.** The executor writes `status.json`; the runtime reads it on
//! every [`TaskRuntime::poll`]. An executor that is gone (nobody holds
//! `executor.lock`) without a terminal status makes the task `LOST`
//! (`executor died`), or `KILLED` if a kill was asked for; whatever is
//! left of the task then (its executor's session) is SIGKILLed, so an
//! instance placed again elsewhere never runs twice. States the runtime
//! reported are kept in `agent.json`, so a new runtime announces only the
//! changes it did not announce already, and keeps the terminal states it
//! decided itself.
//!
//! **Restart of the agent.** [`TaskRuntime::open`] reads every sandbox
//! under the root that has a `task.json`: a live executor is adopted (it
//! is not started again), a dead one makes the task `LOST`. A damaged
//! `task.json`, `status.json` or `agent.json` is reported and the task is
//! `LOST`; the runtime never panics on what it finds on disk.
//!
//! **Disk quota.** Every `disk_watch_interval`, each existing sandbox is
//! measured ([`disk::dir_usage`], allocated bytes); a task that is not
//! terminal and uses more than `resources.disk_mb` MiB is killed by
//! `system:agent` with reason `disk_quota_exceeded`, announced by a
//! `QUOTA_KILL` event.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_schema::events::{EventIds, EventSink};
use sluice_schema::pb::{ClusterEvent, EventKind, TaskReport, TaskState};
use sluice_schema::sandbox::{LOGS_DIR, MANIFEST, WORK_DIR};

use super::files::{
    self, AGENT_FILE, AgentRecord, FORMAT_VERSION, KILL_FILE, KillRequest, LOCK_FILE, STATUS_FILE,
    Status, TASK_FILE, TaskFile,
};
use super::proc;
use super::{confine, executor};
use crate::disk::{self, DISK_QUOTA_EXCEEDED};
use crate::spec::{JobKey, JobSpec, valid_name};
use crate::{Error, Result};

/// The actor of what the agent does on its own.
pub const AGENT_ACTOR: &str = "system:agent";
/// Most attempts at a port no other task of the node has.
const PORT_ATTEMPTS: usize = 64;

/// How the runtime runs tasks on this node.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The sandbox root: `<root>/<task_id>/` per task.
    pub root: PathBuf,
    /// This node's name, for events and `task.json`.
    pub node: String,
    /// The program and leading arguments of the executor
    /// (`[sluice, "executor"]`); `--sandbox DIR` is appended.
    pub executor: Vec<OsString>,
    /// Time between SIGTERM and SIGKILL when a task is killed.
    pub kill_grace: Duration,
    /// How often sandboxes are measured against their quotas.
    pub disk_watch_interval: Duration,
    /// How tasks are confined.
    pub tasks: confine::Policy,
}

/// A task the scheduler gave this node.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// A [`valid_name`]; also the sandbox directory's name.
    pub task_id: String,
    /// The job the task belongs to; must equal `spec.key`.
    pub job: JobKey,
    /// Which of the job's instances the task runs, counted from 0.
    pub instance: u32,
    /// The job's spec: what to run, its disk quota, ports and filesystem
    /// access.
    pub spec: JobSpec,
}

/// The tasks of one node (module docs). Synchronous: the agent's thread
/// calls it.
pub struct TaskRuntime {
    cx: Context,
    tasks: BTreeMap<String, Task>,
    last_measured: Option<Instant>,
}

/// What every task's handling needs, apart from the tasks.
struct Context {
    config: RuntimeConfig,
    events: Arc<dyn EventSink>,
    ids: EventIds,
    quota_kills: std::sync::atomic::AtomicU64,
}

struct Task {
    id: String,
    dir: PathBuf,
    /// `None` when `task.json` is damaged (the task is `LOST`).
    file: Option<TaskFile>,
    /// The executor, when this runtime started it (to reap it).
    executor: Option<Child>,
    /// The last `status.json` read.
    status: Option<Status>,
    view: View,
    sandbox_bytes: u64,
    sandbox_exists: bool,
    kill_sent: bool,
    /// Said that the sandbox could not be measured completely.
    warned_skipped: bool,
    /// The executor is known to have exited (and is reaped if ours).
    exited: bool,
}

/// What the runtime reports of a task.
#[derive(Debug, Clone, PartialEq)]
struct View {
    state: TaskState,
    run: u32,
    restarts: u32,
    exit_code: Option<i32>,
    signal: Option<i32>,
    reason: String,
    actor: String,
    /// A terminal state the runtime decided (`status.json` no longer counts).
    decided: bool,
    terminated_unix_ms: Option<u64>,
}

impl View {
    fn assigned() -> View {
        View {
            state: TaskState::Assigned,
            run: 0,
            restarts: 0,
            exit_code: None,
            signal: None,
            reason: String::new(),
            actor: AGENT_ACTOR.to_string(),
            decided: false,
            terminated_unix_ms: None,
        }
    }

    fn of_status(status: &Status) -> View {
        let terminal = status.state.is_terminal();
        View {
            state: status.state.task_state(),
            run: status.run,
            restarts: status.restarts,
            exit_code: status.exit_code,
            signal: status.signal,
            reason: status.reason.clone(),
            actor: match status.actor.is_empty() {
                true => AGENT_ACTOR.to_string(),
                false => status.actor.clone(),
            },
            decided: false,
            terminated_unix_ms: terminal.then_some(status.updated_unix_ms),
        }
    }

    /// `state`, decided by the runtime now, keeping what is known of the run.
    fn decided(&self, state: TaskState, actor: &str, reason: String) -> View {
        View {
            state,
            reason,
            actor: actor.to_string(),
            decided: true,
            terminated_unix_ms: Some(files::now_unix_ms()),
            ..self.clone()
        }
    }

    fn of_record(record: &AgentRecord) -> Option<View> {
        Some(View {
            state: TaskState::from_str_name(&record.state)?,
            run: record.run,
            restarts: record.run,
            exit_code: record.exit_code,
            signal: record.signal,
            reason: record.reason.clone(),
            actor: record.actor.clone(),
            decided: record.decided,
            terminated_unix_ms: record.terminated_unix_ms,
        })
    }

    fn record(&self) -> AgentRecord {
        AgentRecord {
            version: FORMAT_VERSION,
            state: self.state.as_str_name().to_string(),
            run: self.run,
            decided: self.decided,
            reason: self.reason.clone(),
            actor: self.actor.clone(),
            exit_code: self.exit_code,
            signal: self.signal,
            terminated_unix_ms: self.terminated_unix_ms,
        }
    }
}

fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Finished | TaskState::Failed | TaskState::Killed | TaskState::Lost
    )
}

impl TaskRuntime {
    /// Opens the runtime on `config.root` (created if missing) and finds the
    /// tasks already there (module docs): live executors are adopted, dead
    /// ones make their tasks `LOST`. Nothing is started.
    pub fn open(config: RuntimeConfig, events: Arc<dyn EventSink>) -> Result<TaskRuntime> {
        if config.executor.is_empty() {
            return Err(Error::Config("executor: must name a program".into()));
        }
        if valid_name("node", &config.node).is_err() {
            let message = format!("node: {:?} is not a name of [A-Za-z0-9_.-]", config.node);
            return Err(Error::Config(message));
        }
        std::fs::create_dir_all(&config.root)
            .map_err(|e| Error::io("failed to create the sandbox root", &config.root, e))?;
        let entries = std::fs::read_dir(&config.root)
            .map_err(|e| Error::io("failed to list the sandbox root", &config.root, e))?;
        let ids = EventIds::new(&format!("agent@{}", config.node), now_nanos());
        let mut runtime = TaskRuntime {
            cx: Context {
                config,
                events,
                ids,
                quota_kills: Default::default(),
            },
            tasks: BTreeMap::new(),
            last_measured: None,
        };
        for entry in entries {
            let entry = entry.map_err(|e| {
                Error::io(
                    "failed to list the sandbox root",
                    &runtime.cx.config.root,
                    e,
                )
            })?;
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let dir = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if valid_name("task_id", &id).is_err() || !is_dir {
                continue;
            }
            if !dir.join(TASK_FILE).exists() {
                tracing::warn!(sandbox = %dir.display(), "sandbox without task.json skipped");
                continue;
            }
            let task = runtime.cx.load(id.clone(), dir);
            runtime.tasks.insert(id, task);
        }
        let adopted = runtime
            .tasks
            .values()
            .filter(|t| !is_terminal(t.view.state))
            .count();
        tracing::info!(
            root = %runtime.cx.config.root.display(),
            tasks = runtime.tasks.len(),
            adopted,
            "task runtime opened"
        );
        Ok(runtime)
    }

    /// Creates the task's sandbox and starts its executor; the task is then
    /// `STARTING`. Does nothing for a task id the runtime knows. Refuses
    /// (naming it) a task id, job key, spec or process name that is not a
    /// safe name. If the executor cannot be started, the task is `LOST` and
    /// the error returned.
    pub fn launch(&mut self, assignment: &Assignment) -> Result<()> {
        let a = assignment;
        valid_name("task_id", &a.task_id)?;
        if self.tasks.contains_key(&a.task_id) {
            return Ok(());
        }
        a.job.validate()?;
        if a.spec.key != a.job {
            let message = format!(
                "task {} is of job {}, its spec of {}",
                a.task_id, a.job, a.spec.key
            );
            return Err(Error::spec("key", message));
        }
        a.spec.validate()?;
        let fs = &a.spec.filesystem;
        let confinement = self
            .cx
            .config
            .tasks
            .confinement(&a.job.role, &fs.read, &fs.write)?;
        let dir = self.cx.config.root.join(&a.task_id);
        for sub in [WORK_DIR, LOGS_DIR, confine::TMP_DIR] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path)
                .map_err(|e| Error::io("failed to create sandbox directory", path, e))?;
        }
        // The task's user gets work/ and tmp/; the rest of the sandbox (the
        // manifest, the logs) stays the node's, out of the task's reach.
        if let Some(user) = &confinement.user {
            confine::set_mode(&dir, 0o711)?;
            confine::set_mode(&dir.join(LOGS_DIR), 0o700)?;
            confine::hand_over(&dir.join(WORK_DIR), user)?;
            confine::hand_over(&dir.join(confine::TMP_DIR), user)?;
        }
        let file = TaskFile {
            version: FORMAT_VERSION,
            task_id: a.task_id.clone(),
            job: a.job.clone(),
            instance: a.instance,
            spec: a.spec.clone(),
            ports: self.allocate_ports(&a.spec.ports)?,
            node: self.cx.config.node.clone(),
            kill_grace_ms: self.cx.config.kill_grace.as_millis() as u64,
            created_unix_ms: files::now_unix_ms(),
            confinement,
        };
        files::write_json(&dir, MANIFEST, &executor::manifest(&file, 0))?;
        files::write_json(&dir, TASK_FILE, &file)?;
        let mut task = Task::new(a.task_id.clone(), dir, Some(file));
        let spawned = proc::spawn_executor(&self.cx.config.executor, &task.dir);
        let view = match &spawned {
            Ok(_) => View {
                state: TaskState::Starting,
                ..View::assigned()
            },
            Err(e) => task.view.decided(
                TaskState::Lost,
                AGENT_ACTOR,
                format!("executor failed to start: {e}"),
            ),
        };
        self.cx.apply(&mut task, view);
        self.tasks.insert(a.task_id.clone(), task);
        let child = spawned?;
        tracing::info!(task = %a.task_id, executor_pid = child.id(), "task launched");
        if let Some(task) = self.tasks.get_mut(&a.task_id) {
            task.executor = Some(child);
        }
        Ok(())
    }

    /// Kills the task: records `actor` and `reason` in `kill.json`, then
    /// SIGTERM to its executor, which stops the task (grace period, then
    /// SIGKILL) and reports it `KILLED`. If the executor is gone, the task
    /// is `KILLED` at once. An unknown or terminal task is left alone; a
    /// second kill keeps the first one's actor and reason.
    pub fn kill(&mut self, task_id: &str, actor: &str, reason: &str) -> Result<()> {
        let Some(task) = self.tasks.get_mut(task_id) else {
            tracing::debug!(task = task_id, "kill of an unknown task ignored");
            return Ok(());
        };
        self.cx.kill(task, actor, reason)
    }

    /// Reads every task's state, detects dead executors, measures sandboxes
    /// when `disk_watch_interval` has passed (killing those over quota),
    /// announces changes and returns a report of every known task.
    pub fn poll(&mut self) -> Vec<TaskReport> {
        let interval = self.cx.config.disk_watch_interval;
        let measure = self.last_measured.is_none_or(|at| at.elapsed() >= interval);
        if measure {
            self.last_measured = Some(Instant::now());
        }
        let mut reports = Vec::with_capacity(self.tasks.len());
        for task in self.tasks.values_mut() {
            if !is_terminal(task.view.state) {
                let view = self.cx.observe(task);
                self.cx.apply(task, view);
            } else if !task.exited {
                // An executor exits just after its terminal status.
                task.exited = task.reap();
            }
            task.sandbox_exists = task.dir.is_dir();
            if measure && task.sandbox_exists {
                self.cx.measure(task);
            }
            reports.push(task.report());
        }
        reports
    }

    /// The sandbox directory of a known task.
    pub fn sandbox(&self, task_id: &str) -> Option<PathBuf> {
        self.tasks.get(task_id).map(|t| t.dir.clone())
    }

    /// When a terminal task ended (Unix milliseconds).
    pub fn terminated_at(&self, task_id: &str) -> Option<u64> {
        let task = self.tasks.get(task_id)?;
        task.view
            .terminated_unix_ms
            .filter(|_| is_terminal(task.view.state))
    }

    /// Forgets a terminal task whose sandbox was collected. A task that is
    /// not terminal is kept (it would be orphaned).
    pub fn forget(&mut self, task_id: &str) {
        match self.tasks.get(task_id) {
            Some(task) if !is_terminal(task.view.state) => {
                tracing::warn!(task = task_id, "not forgetting a task that is not terminal");
            }
            Some(_) => {
                self.tasks.remove(task_id);
            }
            None => {}
        }
    }

    /// Tasks killed for going over their disk quota since the runtime opened.
    pub fn quota_kills(&self) -> u64 {
        self.cx
            .quota_kills
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The task's disk quota in bytes (its spec's `disk_mb`).
    pub fn disk_quota_bytes(&self, task_id: &str) -> Option<u64> {
        let file = self.tasks.get(task_id)?.file.as_ref()?;
        Some(file.spec.resources.disk_mb << 20)
    }

    /// Every known task and its state, by task id.
    pub fn tasks(&self) -> impl Iterator<Item = (&str, TaskState)> {
        self.tasks
            .iter()
            .map(|(id, task)| (id.as_str(), task.view.state))
    }

    /// Ports for `names`, each free on 127.0.0.1 now and not allocated to
    /// another task of the node that is not terminal.
    fn allocate_ports(&self, names: &[String]) -> Result<BTreeMap<String, u16>> {
        let taken: HashSet<u16> = self
            .tasks
            .values()
            .filter(|t| !is_terminal(t.view.state))
            .filter_map(|t| t.file.as_ref())
            .flat_map(|f| f.ports.values().copied())
            .collect();
        // Held until all are chosen, so one task never gets a port twice.
        let mut held = Vec::new();
        let mut ports = BTreeMap::new();
        for name in names {
            for _ in 0..PORT_ATTEMPTS {
                let listener = TcpListener::bind(("127.0.0.1", 0))
                    .map_err(|e| Error::io("failed to allocate a port for", name, e))?;
                let port = listener
                    .local_addr()
                    .map_err(|e| Error::io("failed to allocate a port for", name, e))?
                    .port();
                held.push(listener);
                if !taken.contains(&port) {
                    ports.insert(name.clone(), port);
                    break;
                }
            }
            if !ports.contains_key(name) {
                let taken = std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "every port offered is another task's",
                );
                return Err(Error::io("failed to allocate a port for", name, taken));
            }
        }
        Ok(ports)
    }
}

impl Task {
    fn new(id: String, dir: PathBuf, file: Option<TaskFile>) -> Task {
        Task {
            id,
            dir,
            file,
            executor: None,
            status: None,
            view: View::assigned(),
            sandbox_bytes: 0,
            sandbox_exists: true,
            kill_sent: false,
            warned_skipped: false,
            exited: false,
        }
    }

    fn report(&self) -> TaskReport {
        let view = &self.view;
        TaskReport {
            task_id: self.id.clone(),
            job: self
                .file
                .as_ref()
                .map(|f| f.job.to_string())
                .unwrap_or_default(),
            instance: self.file.as_ref().map_or(0, |f| f.instance),
            run: view.run,
            state: view.state as i32,
            exit_code: view.exit_code,
            reason: view.reason.clone(),
            sandbox_bytes: self.sandbox_bytes,
            restarts: view.restarts,
            sandbox_exists: self.sandbox_exists,
        }
    }

    /// Whether the task's executor has exited, reaping it if it is a child
    /// of this process: the one this runtime started, or a zombie left by
    /// a runtime before this one in this process (never another child).
    fn reap(&mut self) -> bool {
        if let Some(child) = &mut self.executor {
            if matches!(child.try_wait(), Ok(None)) {
                return false;
            }
            self.executor = None;
            return true;
        }
        let Some(status) = &self.status else {
            return true;
        };
        match proc::stat(status.executor_pid) {
            Some(stat) if stat.start_ticks == status.executor_start_ticks => {
                if stat.is_live() {
                    return false;
                }
                // SAFETY: waitpid with WNOHANG and no status pointer; ECHILD
                // if the zombie is not ours.
                unsafe { libc::waitpid(status.executor_pid, std::ptr::null_mut(), libc::WNOHANG) };
                true
            }
            _ => true,
        }
    }

    /// The executor's pid, if it can be signalled safely: our child not yet
    /// reaped, or the pid in `status.json` still with its start time.
    fn executor_pid(&self) -> Option<i32> {
        if let Some(child) = &self.executor {
            return Some(child.id() as i32);
        }
        let status = self.status.as_ref()?;
        proc::is_same_live(status.executor_pid, status.executor_start_ticks)
            .then_some(status.executor_pid)
    }
}

impl Context {
    /// A task found on disk by [`TaskRuntime::open`].
    fn load(&self, id: String, dir: PathBuf) -> Task {
        let record = files::read_json::<AgentRecord>(&dir, AGENT_FILE).unwrap_or_else(|e| {
            tracing::warn!(task = %id, error = %e, "damaged agent record ignored");
            None
        });
        let file = files::read_task(&dir);
        let mut task = Task::new(id, dir, file.as_ref().ok().cloned());
        if let Some(view) = record.as_ref().and_then(View::of_record) {
            task.view = view;
        }
        if task.view.decided || is_terminal(task.view.state) {
            return task;
        }
        let view = match file {
            Ok(_) => self.observe(&mut task),
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "damaged task; reporting it lost");
                task.status = files::read_json(&task.dir, STATUS_FILE).ok().flatten();
                self.stop_lost(&mut task);
                task.view
                    .decided(TaskState::Lost, AGENT_ACTOR, format!("invalid task: {e}"))
            }
        };
        if !is_terminal(view.state) {
            tracing::info!(task = %task.id, state = %files::state_name(view.state), run = view.run, "task adopted");
        }
        self.apply(&mut task, view);
        task
    }

    /// What the task's files say now (for a task that is not terminal).
    fn observe(&self, task: &mut Task) -> View {
        // Liveness first: an executor that was gone before the status is
        // read wrote everything it ever will.
        let alive = match proc::is_locked(&task.dir.join(LOCK_FILE)) {
            Ok(alive) => alive,
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "cannot tell whether the executor lives");
                return task.view.clone();
            }
        };
        let status = match files::read_json::<Status>(&task.dir, STATUS_FILE) {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "damaged status; reporting the task lost");
                self.stop_lost(task);
                return task.view.decided(
                    TaskState::Lost,
                    AGENT_ACTOR,
                    format!("invalid status: {e}"),
                );
            }
        };
        if status.is_some() {
            task.status = status;
        }
        match &task.status {
            Some(status) if status.state.is_terminal() => return View::of_status(status),
            Some(status) if alive => return View::of_status(status),
            None if alive => {
                return View {
                    state: TaskState::Starting,
                    ..task.view.clone()
                };
            }
            _ => {}
        }
        // The executor is gone and said nothing final.
        task.exited = task.reap();
        let known = task
            .status
            .as_ref()
            .map_or(task.view.clone(), View::of_status);
        let request = files::read_json::<KillRequest>(&task.dir, KILL_FILE)
            .ok()
            .flatten();
        self.stop_lost(task);
        match request {
            Some(kill) => known.decided(TaskState::Killed, &kill.actor, kill.reason),
            None => {
                let reason = match task.status {
                    Some(_) => "executor died",
                    None => "executor never started",
                };
                tracing::warn!(task = %task.id, reason, "task lost");
                known.decided(TaskState::Lost, AGENT_ACTOR, reason.to_string())
            }
        }
    }

    /// Makes sure nothing of a task the runtime gives up on keeps running:
    /// a live executor is asked to kill the task, and whatever is left of
    /// a dead one's session is SIGKILLed.
    fn stop_lost(&self, task: &mut Task) {
        if let Some(pid) = task.executor_pid() {
            self.request_kill(task, AGENT_ACTOR, "lost");
            let _ = proc::signal(pid, libc::SIGTERM);
            return;
        }
        if proc::is_locked(&task.dir.join(LOCK_FILE)).unwrap_or(false) {
            // Alive but unknown: it finds kill.json within a poll.
            self.request_kill(task, AGENT_ACTOR, "lost");
            return;
        }
        if let Some(status) = &task.status {
            let killed = proc::kill_session(status.executor_pid, status.executor_start_ticks, 0);
            if killed > 0 {
                tracing::warn!(task = %task.id, killed, "killed processes left by a dead executor");
            }
        }
    }

    fn request_kill(&self, task: &mut Task, actor: &str, reason: &str) {
        if task.kill_sent || task.dir.join(KILL_FILE).exists() {
            task.kill_sent = true;
            return;
        }
        let request = KillRequest {
            actor: actor.to_string(),
            reason: reason.to_string(),
            requested_unix_ms: files::now_unix_ms(),
        };
        match files::write_json(&task.dir, KILL_FILE, &request) {
            Ok(()) => task.kill_sent = true,
            Err(e) => {
                tracing::error!(task = %task.id, error = %e, "failed to write the kill request")
            }
        }
    }

    fn kill(&self, task: &mut Task, actor: &str, reason: &str) -> Result<()> {
        if is_terminal(task.view.state) {
            return Ok(());
        }
        let first = !task.kill_sent && !task.dir.join(KILL_FILE).exists();
        if first {
            let request = KillRequest {
                actor: actor.to_string(),
                reason: reason.to_string(),
                requested_unix_ms: files::now_unix_ms(),
            };
            files::write_json(&task.dir, KILL_FILE, &request)?;
            tracing::info!(task = %task.id, actor, reason, "killing task");
        }
        task.kill_sent = true;
        if first && let Some(pid) = task.executor_pid() {
            proc::signal(pid, libc::SIGTERM)
                .map_err(|e| Error::io("failed to signal the executor of", &task.dir, e))?;
        }
        // A gone executor makes the task KILLED now.
        let view = self.observe(task);
        self.apply(task, view);
        Ok(())
    }

    /// Measures the sandbox; kills a task over its quota.
    fn measure(&self, task: &mut Task) {
        let usage = match disk::dir_usage(&task.dir) {
            Ok(usage) => usage,
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "cannot measure sandbox");
                return;
            }
        };
        task.sandbox_bytes = usage.allocated_bytes;
        if usage.skipped_dirs > 0 && !task.warned_skipped {
            task.warned_skipped = true;
            tracing::warn!(task = %task.id, skipped = usage.skipped_dirs, "sandbox not measured completely (deep, unreadable or mounted directories)");
        }
        let Some(file) = &task.file else { return };
        let disk_mb = file.spec.resources.disk_mb;
        if is_terminal(task.view.state) || task.kill_sent || !disk::over_quota(&usage, disk_mb) {
            return;
        }
        let used = usage.allocated_bytes;
        tracing::warn!(task = %task.id, used, disk_mb, "sandbox over its disk quota; killing the task");
        let mut event = self.event(task, EventKind::QuotaKill, AGENT_ACTOR, DISK_QUOTA_EXCEEDED);
        event.message = format!(
            "task {} uses {used} bytes of disk, over its quota of {disk_mb} MiB; killing it",
            task.id
        );
        event.attributes = BTreeMap::from([
            ("used_bytes".to_string(), used.to_string()),
            ("quota_bytes".to_string(), (disk_mb << 20).to_string()),
        ]);
        self.events.emit(event);
        self.quota_kills
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = self.kill(task, AGENT_ACTOR, DISK_QUOTA_EXCEEDED) {
            tracing::error!(task = %task.id, error = %e, "failed to kill a task over its quota");
        }
    }

    /// Takes `view` as the task's; a change of state or run is announced
    /// and recorded in `agent.json`.
    fn apply(&self, task: &mut Task, view: View) {
        let old = std::mem::replace(&mut task.view, view);
        let new = &task.view;
        if old.state == new.state && old.run == new.run {
            return;
        }
        let (from, to) = (files::state_name(old.state), files::state_name(new.state));
        let mut event = self.event(task, EventKind::TaskState, &new.actor, &new.reason);
        event.message = match new.reason.is_empty() {
            true => format!("task {} {from} → {to} (run {})", task.id, new.run),
            false => format!(
                "task {} {from} → {to} (run {}): {}",
                task.id, new.run, new.reason
            ),
        };
        let mut attributes = BTreeMap::from([
            ("from".to_string(), from),
            ("to".to_string(), to),
            ("run".to_string(), new.run.to_string()),
        ]);
        if let Some(code) = new.exit_code {
            attributes.insert("exit_code".into(), code.to_string());
        }
        if let Some(signal) = new.signal {
            attributes.insert("signal".into(), signal.to_string());
        }
        event.attributes = attributes;
        self.events.emit(event);
        if let Err(e) = files::write_json(&task.dir, AGENT_FILE, &new.record()) {
            tracing::warn!(task = %task.id, error = %e, "failed to record the task's state");
        }
    }

    fn event(&self, task: &Task, kind: EventKind, actor: &str, reason: &str) -> ClusterEvent {
        ClusterEvent {
            id: self.ids.next(),
            ts_unix_nanos: now_nanos(),
            kind: kind as i32,
            job: task
                .file
                .as_ref()
                .map(|f| f.job.to_string())
                .unwrap_or_default(),
            instance: task.file.as_ref().map(|f| f.instance),
            task_id: task.id.clone(),
            run: task.view.run,
            host: self.config.node.clone(),
            actor: actor.to_string(),
            reason: reason.to_string(),
            ..Default::default()
        }
    }
}

use sluice_schema::time::now_unix_nanos as now_nanos;

#[cfg(test)]
mod tests;

//! The files a task's sandbox holds beside its logs, through which the node
//! agent ([`super::runtime`]) and the task's executor ([`super::executor`])
//! talk. Each has one writer, and every write is atomic (a temporary file,
//! fsync, rename, fsync of the directory), so a reader sees the old or the
//! new content, never a mix, even across a crash.
//!
//! ```text
//! <sandbox>/task.json      agent, once before the executor starts   TaskFile
//! <sandbox>/sandbox.json   agent (run 0), then executor per run      sluice_schema::sandbox::Manifest
//! <sandbox>/status.json    executor only                             Status
//! <sandbox>/kill.json      agent, before it signals the executor     KillRequest
//! <sandbox>/agent.json     agent: the last state it reported         AgentRecord
//! <sandbox>/executor.lock  held (flock) by the live executor
//! <sandbox>/executor.log   the executor's own stdout and stderr
//! <sandbox>/logs/run-<n>/<process>.stdout|.stderr
//! <sandbox>/work/          the processes' working directory
//! ```
//!
//! Temporary files are named `.<name>.tmp-<pid>` at the top of the sandbox,
//! where the shipper does not look for logs.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sluice_schema::pb::TaskState;

use crate::spec::{JobKey, JobSpec, valid_name};
use crate::{Error, Result};

/// The task the executor runs (written by the agent).
pub const TASK_FILE: &str = "task.json";
/// Where the task is (written by the executor).
pub const STATUS_FILE: &str = "status.json";
/// Who asked to kill the task and why (written by the agent).
pub const KILL_FILE: &str = "kill.json";
/// The agent's own record of the task (written by the agent).
pub const AGENT_FILE: &str = "agent.json";
/// Locked by the live executor for its whole life.
pub const LOCK_FILE: &str = "executor.lock";
/// The executor's stdout and stderr.
pub const EXECUTOR_LOG: &str = "executor.log";

/// Version of the formats below.
pub const FORMAT_VERSION: u32 = 1;

/// `task.json`: everything the executor needs to run the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    /// Format version; [`TaskFile::validate`] accepts only [`FORMAT_VERSION`].
    pub version: u32,
    /// The task's id, a [`valid_name`]; must equal the sandbox directory's name.
    pub task_id: String,
    /// The job the task belongs to; must equal `spec.key`.
    pub job: JobKey,
    /// Which of the job's instances this task runs, counted from 0.
    pub instance: u32,
    /// The job's spec as placed; the executor runs its processes in order.
    pub spec: JobSpec,
    /// The port allocated for each name in `spec.ports`.
    pub ports: BTreeMap<String, u16>,
    /// The node the task runs on.
    pub node: String,
    /// How long a killed process has between SIGTERM and SIGKILL.
    pub kill_grace_ms: u64,
    /// When the agent wrote this file, in unix milliseconds.
    pub created_unix_ms: u64,
    /// How the task is confined (the node's decision).
    #[serde(default)]
    pub confinement: super::confine::Confinement,
}

impl TaskFile {
    /// Checks what a hostile or damaged file could get wrong: names used
    /// as paths, the spec, the ports. The sandbox `dir`'s name must be the
    /// task id.
    pub fn validate(&self, dir: &Path) -> Result<()> {
        let path = dir.join(TASK_FILE);
        let invalid = |message: String| {
            Error::io(
                "invalid",
                &path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, message),
            )
        };
        if self.version != FORMAT_VERSION {
            return Err(invalid(format!("unknown version {}", self.version)));
        }
        valid_name("task_id", &self.task_id)?;
        let dir_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if self.task_id != dir_name {
            return Err(invalid(format!(
                "task_id {:?} is not the sandbox's name {dir_name:?}",
                self.task_id
            )));
        }
        self.job.validate()?;
        if self.spec.key != self.job {
            return Err(invalid(format!(
                "job {} is not the spec's {}",
                self.job, self.spec.key
            )));
        }
        self.spec.validate()?;
        for port in &self.spec.ports {
            if !self.ports.contains_key(port) {
                return Err(invalid(format!("no port allocated for {port:?}")));
            }
        }
        Ok(())
    }
}

/// Where the executor is, as it says in `status.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecState {
    /// Started, or waiting out a restart backoff.
    Starting,
    /// A run is under way: its processes run one after another.
    Running,
    /// Terminal: every process of the last run exited 0 and no restart followed.
    Finished,
    /// Terminal: a process failed or could not start and no restart followed,
    /// or the task could not be read or confined.
    Failed,
    /// Terminal: stopped on a kill request (`kill.json`) or a SIGTERM to the
    /// executor.
    Killed,
}

impl ExecState {
    /// Whether the executor is done with the task: `Finished`, `Failed` or
    /// `Killed`.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecState::Finished | ExecState::Failed | ExecState::Killed
        )
    }

    /// The cluster-wide [`TaskState`] this state is reported as.
    pub fn task_state(self) -> TaskState {
        match self {
            ExecState::Starting => TaskState::Starting,
            ExecState::Running => TaskState::Running,
            ExecState::Finished => TaskState::Finished,
            ExecState::Failed => TaskState::Failed,
            ExecState::Killed => TaskState::Killed,
        }
    }
}

/// `status.json`: the executor's account of the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// Format version, [`FORMAT_VERSION`] when written.
    pub version: u32,
    /// Where the task is; the executor writes a terminal state last.
    pub state: ExecState,
    /// The current run (`logs/run-<run>/`).
    pub run: u32,
    /// Restarts so far (equal to `run`).
    pub restarts: u32,
    /// The process running now, its pid (also its process group) and its
    /// start time (clock ticks since boot, `/proc/<pid>/stat` field 22).
    pub process: Option<String>,
    /// Pid of the running process, also its process group id; `None` between
    /// runs and once the task ended.
    pub process_pid: Option<i32>,
    /// Start time of that process in clock ticks since boot; `None` with no
    /// process, or when `/proc` could not be read.
    pub process_start_ticks: Option<u64>,
    /// The executor (the leader of the task's session) and its start time,
    /// which tells it from a later process given the same pid.
    pub executor_pid: i32,
    /// Start time of the executor in clock ticks since boot.
    pub executor_start_ticks: u64,
    /// How the last process that ended did.
    pub exit_code: Option<i32>,
    /// Signal that ended that process; `None` if it exited on its own or
    /// none has ended.
    pub signal: Option<i32>,
    /// `exit 3`, `signal 9`, `restart limit reached`, a kill's reason…
    pub reason: String,
    /// Who killed the task, for `killed`.
    pub actor: String,
    /// While backing off: when the next run starts.
    pub next_restart_unix_ms: Option<u64>,
    /// When the executor last wrote this file, in unix milliseconds; for a
    /// terminal state, when the task ended.
    pub updated_unix_ms: u64,
}

/// `kill.json`: a kill the agent asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillRequest {
    /// Who asked for the kill (a user, or `system:agent`); the killed task's
    /// actor.
    pub actor: String,
    /// Why, such as `disk_quota_exceeded` or `lost`; the killed task's reason.
    pub reason: String,
    /// When the agent wrote the request, in unix milliseconds.
    pub requested_unix_ms: u64,
}

/// `agent.json`: what the agent last reported of the task, so that a
/// restarted agent knows which state changes it already announced, and
/// the terminal states it decided itself (`lost`, or `killed` when the
/// executor was already gone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRecord {
    /// Format version, [`FORMAT_VERSION`] when written.
    pub version: u32,
    /// `TASK_STATE_*` name.
    pub state: String,
    /// The run the state belongs to; read back as the restart count too.
    pub run: u32,
    /// The agent decided this terminal state; `status.json` no longer counts.
    pub decided: bool,
    /// Why the task is in `state` (`exit 3`, `executor died`, a kill's reason).
    pub reason: String,
    /// Who caused the state: a kill's requester, otherwise `system:agent`.
    pub actor: String,
    /// Exit code of the last process that ended; `None` if a signal ended it
    /// or none has ended.
    pub exit_code: Option<i32>,
    /// Signal that ended the last process that ended, if a signal did.
    pub signal: Option<i32>,
    /// When the task reached a terminal state, in unix milliseconds; `None`
    /// while it is not terminal.
    pub terminated_unix_ms: Option<u64>,
}

pub use sluice_schema::time::now_unix_ms;

/// Writes `value` as JSON to `dir/name` atomically.
pub fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<()> {
    let path = dir.join(name);
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::io("failed to encode", &path, e.into()))?;
    bytes.push(b'\n');
    write_atomic(dir, name, &bytes)
}

/// Writes `bytes` to `dir/name` atomically: temporary file, fsync, rename,
/// fsync of `dir`.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        Error::io("failed to write", &path, e)
    })
}

/// Reads `dir/name` as JSON: `Ok(None)` if it does not exist, an error
/// naming the file if it cannot be read or parsed.
pub fn read_json<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<Option<T>> {
    let path = dir.join(name);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("failed to read", &path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::io("failed to parse", &path, e.into()))
}

/// `task.json` of the sandbox `dir`, validated.
pub fn read_task(dir: &Path) -> Result<TaskFile> {
    let task: TaskFile = read_json(dir, TASK_FILE)?.ok_or_else(|| {
        Error::io(
            "failed to read",
            dir.join(TASK_FILE),
            std::io::ErrorKind::NotFound.into(),
        )
    })?;
    task.validate(dir)?;
    Ok(task)
}

/// `dir/logs/run-<run>`.
pub fn run_logs(dir: &Path, run: u32) -> PathBuf {
    use sluice_schema::sandbox::{LOGS_DIR, run_dir};
    dir.join(LOGS_DIR).join(run_dir(run))
}

/// The lowercase name of a state for events and messages: `running`.
pub fn state_name(state: TaskState) -> String {
    state
        .as_str_name()
        .trim_start_matches("TASK_STATE_")
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        crate::spec::parse(
            "name: web\nrole: www\nenv: prod\nresources: {cpu: 1, ram_mb: 64, disk_mb: 10}\n\
             ports: [http]\nprocesses: [{name: serve, cmd: 'true'}]\n",
            None,
        )
        .unwrap()
    }

    fn task() -> TaskFile {
        let spec = spec();
        TaskFile {
            version: FORMAT_VERSION,
            task_id: "t-1".into(),
            job: spec.key.clone(),
            instance: 0,
            ports: BTreeMap::from([("http".into(), 8080)]),
            spec,
            node: "n1".into(),
            kill_grace_ms: 1000,
            created_unix_ms: 1,
            confinement: Default::default(),
        }
    }

    #[test]
    fn files_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        write_json(dir.path(), TASK_FILE, &task()).unwrap();
        let back: TaskFile = read_json(dir.path(), TASK_FILE).unwrap().unwrap();
        assert_eq!(back, task());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [TASK_FILE], "no temporary file is left");
        assert!(
            read_json::<Status>(dir.path(), STATUS_FILE)
                .unwrap()
                .is_none()
        );
        std::fs::write(dir.path().join(STATUS_FILE), "{\"version\":1,").unwrap();
        let err = read_json::<Status>(dir.path(), STATUS_FILE).unwrap_err();
        assert!(err.to_string().contains("status.json"), "{err}");
    }

    #[test]
    fn task_files_are_checked() {
        let dir = Path::new("/sandboxes/t-1");
        task().validate(dir).unwrap();
        let mut bad = task();
        bad.task_id = "../etc".into();
        assert!(
            bad.validate(Path::new("/sandboxes/../etc"))
                .unwrap_err()
                .to_string()
                .contains("task_id")
        );
        let err = task().validate(Path::new("/t-2")).unwrap_err().to_string();
        assert!(err.starts_with("invalid /t-2/task.json: task_id"), "{err}");
        let mut bad = task();
        bad.ports.clear();
        assert!(bad.validate(dir).unwrap_err().to_string().contains("http"));
        let mut bad = task();
        bad.spec.processes[0].name = "../../x".into();
        assert!(bad.validate(dir).is_err());
        let mut bad = task();
        bad.job = JobKey::new("www", "prod", "other").unwrap();
        assert!(bad.validate(dir).is_err());
    }
}

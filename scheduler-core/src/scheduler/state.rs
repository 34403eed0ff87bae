//! What the scheduler remembers: jobs, their instances and the tasks that
//! ran them, and how that is kept in the state file.
//!
//! The state file is one JSON document, written whole and atomically (a
//! temporary file, `fsync`, `rename`, `fsync` of the directory):
//!
//! ```json
//! {"format": 1, "jobs": [{
//!   "spec": { … scheduler-core JobSpec … },
//!   "actor": "alice", "created_unix_nanos": 1, "updated_unix_nanos": 2,
//!   "generation": 1, "killed": null, "next_cron_secs": null,
//!   "instances": {"0": {"replace": false, "removed": false, "tasks": [{
//!     "id": "search-devel-indexer-0-1a2b3c4d", "generation": 1,
//!     "resources": {"cpu": 1.5, "ram_mb": 2048, "disk_mb": 10240},
//!     "state": "running", "host": "node-1", "tail_endpoint": "http://…",
//!     "run": 1, "exit_code": null, "reason": "", "sandbox_bytes": 4096,
//!     "restarts": 0, "created_unix_nanos": 1, "updated_unix_nanos": 2,
//!     "kill": null}]}}}]}
//! ```
//!
//! An instance's tasks are oldest first; the last one is its current task,
//! and only the current task may be non-terminal. Up to
//! [`HISTORY_PER_INSTANCE`] terminal tasks are kept before it. Nodes are not
//! in the file: they are known again when they heartbeat.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sluice_schema::pb::{InstanceStatus, JobStatus, TaskState};

use crate::spec::{JobKey, JobSpec, Resources};
use crate::{Error, Result};

/// Version of the state file layout.
pub const FORMAT: u32 = 1;
/// Terminal tasks kept per instance besides its current one.
pub const HISTORY_PER_INSTANCE: usize = 10;

/// The state file's document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StateFile {
    pub format: u32,
    pub jobs: Vec<Job>,
}

/// A submitted job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// The spec as last submitted or updated.
    pub spec: JobSpec,
    /// Who submitted or last updated it.
    pub actor: String,
    /// When the job was submitted, unix nanoseconds; a killed job submitted
    /// again starts over.
    pub created_unix_nanos: i64,
    /// When it was last submitted, updated or killed, unix nanoseconds; task
    /// changes do not count.
    pub updated_unix_nanos: i64,
    /// Bumped by each update that changes what a task runs; a task started
    /// under an older generation is restarted.
    pub generation: u64,
    /// Set once the job is killed: who asked, and when.
    #[serde(default)]
    pub killed: Option<KillRequest>,
    /// A cron job's next tick, Unix seconds.
    #[serde(default)]
    pub next_cron_secs: Option<i64>,
    /// Its instances by index, `0..spec.instances`, plus instances removed by
    /// an update until their tasks end.
    pub instances: BTreeMap<u32, Instance>,
}

/// One instance of a job and the tasks that ran it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// A fresh task is wanted as soon as the current one is terminal (new
    /// instance, lost node, update).
    #[serde(default)]
    pub replace: bool,
    /// Gone from the spec: deleted once its current task is terminal.
    #[serde(default)]
    pub removed: bool,
    /// Oldest first; the last is the current task.
    #[serde(default)]
    pub tasks: Vec<Task>,
}

/// One task: an instance placed on a node, from assignment to its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// Unique id from [`new_task_id`](super::engine::new_task_id); also the
    /// name of its sandbox on the node.
    pub id: String,
    /// The job's generation it runs.
    pub generation: u64,
    /// What it holds on its node (the spec's when it was created).
    pub resources: Resources,
    /// Where the task is; stored by its lowercase name (`running`).
    #[serde(with = "state_serde")]
    pub state: TaskState,
    /// The node, empty while pending.
    #[serde(default)]
    pub host: String,
    /// The node's Tail service when it was last heard of.
    #[serde(default)]
    pub tail_endpoint: String,
    /// The executor's current run, counted from 0, as last reported by the
    /// node.
    #[serde(default)]
    pub run: u32,
    /// Exit code of the task's last process to end, as reported; `None` if
    /// none exited on its own.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why the task is in its state: the node's reason (`exit 3`), or the
    /// scheduler's (a kill's reason, `node … no longer reports it`).
    #[serde(default)]
    pub reason: String,
    /// Bytes its sandbox holds on the node, as last reported; 0 before that.
    #[serde(default)]
    pub sandbox_bytes: u64,
    /// Times the executor restarted the task's processes, as reported.
    #[serde(default)]
    pub restarts: u32,
    /// When the scheduler created the task (PENDING), unix nanoseconds.
    pub created_unix_nanos: i64,
    /// When its state, run, exit code, restarts or reason last changed, unix
    /// nanoseconds.
    pub updated_unix_nanos: i64,
    /// A kill ordered by the scheduler, sent to the node until it reports
    /// the task terminal.
    #[serde(default)]
    pub kill: Option<KillRequest>,
}

/// Who asked for a kill, why and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillRequest {
    /// Who killed or updated the job, causing the kill.
    pub actor: String,
    /// `job killed`, `updated` or `instance removed`.
    pub reason: String,
    /// When the kill was asked for, unix nanoseconds.
    pub unix_nanos: i64,
}

/// FINISHED, FAILED, KILLED and LOST: the task will not run again.
pub fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Finished | TaskState::Failed | TaskState::Killed | TaskState::Lost
    )
}

/// `running`, `lost`, …: the state's name in files, events and output.
pub fn state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Unspecified => "unspecified",
        TaskState::Pending => "pending",
        TaskState::Assigned => "assigned",
        TaskState::Starting => "starting",
        TaskState::Running => "running",
        TaskState::Finished => "finished",
        TaskState::Failed => "failed",
        TaskState::Killed => "killed",
        TaskState::Lost => "lost",
    }
}

/// The state named by [`state_name`].
pub fn parse_state_name(name: &str) -> Option<TaskState> {
    TaskState::from_str_name(&format!("TASK_STATE_{}", name.to_ascii_uppercase()))
        .filter(|s| *s != TaskState::Unspecified)
}

mod state_serde {
    use serde::{Deserialize, Deserializer, Serializer, de};
    use sluice_schema::pb::TaskState;

    pub fn serialize<S: Serializer>(state: &TaskState, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(super::state_name(*state))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TaskState, D::Error> {
        let name = String::deserialize(d)?;
        super::parse_state_name(&name)
            .ok_or_else(|| de::Error::custom(format!("unknown task state {name:?}")))
    }
}

impl Instance {
    /// The newest task, the only one that may be non-terminal; `None` if the
    /// instance never had a task.
    pub fn current(&self) -> Option<&Task> {
        self.tasks.last()
    }

    /// [`Instance::current`], mutable.
    pub fn current_mut(&mut self) -> Option<&mut Task> {
        self.tasks.last_mut()
    }

    /// No task, or its current task is terminal.
    pub fn is_idle(&self) -> bool {
        self.current().is_none_or(|t| is_terminal(t.state))
    }
}

impl Job {
    /// `running`, `killing` (killed, tasks still stopping), `killed`, or
    /// `finished` (not a cron job, and every instance done). A cron job
    /// stays `running` between its runs.
    pub fn state(&self) -> &'static str {
        let idle = self.instances.values().all(Instance::is_idle);
        match (&self.killed, self.spec.cron.is_some()) {
            (Some(_), _) if idle => "killed",
            (Some(_), _) => "killing",
            (None, false) if idle && !self.instances.values().any(|i| i.replace) => "finished",
            (None, _) => "running",
        }
    }

    /// The job as the API shows it; `endpoint` gives a live node's Tail
    /// endpoint (else the one last heard is shown).
    pub fn status(&self, spec_json: &str, endpoint: &dyn Fn(&str) -> Option<String>) -> JobStatus {
        let instances = self
            .instances
            .iter()
            .map(|(&instance, inst)| match inst.current() {
                Some(task) => InstanceStatus {
                    instance,
                    task_id: task.id.clone(),
                    run: task.run,
                    state: task.state as i32,
                    host: task.host.clone(),
                    tail_endpoint: match task.host.as_str() {
                        "" => String::new(),
                        host => endpoint(host).unwrap_or_else(|| task.tail_endpoint.clone()),
                    },
                    sandbox_bytes: task.sandbox_bytes,
                    reason: task.reason.clone(),
                    exit_code: task.exit_code,
                    updated_unix_nanos: task.updated_unix_nanos,
                    restarts: task.restarts,
                },
                None => InstanceStatus {
                    instance,
                    state: TaskState::Pending as i32,
                    reason: match self.next_cron_secs {
                        Some(secs) => format!(
                            "waiting for the cron tick at {}",
                            sluice_schema::time::rfc3339_nanos(secs.saturating_mul(1_000_000_000))
                        ),
                        None => "waiting to be placed".into(),
                    },
                    updated_unix_nanos: self.updated_unix_nanos,
                    ..InstanceStatus::default()
                },
            })
            .collect();
        JobStatus {
            job: self.spec.key.to_string(),
            spec_json: spec_json.to_string(),
            instances,
            state: self.state().to_string(),
            actor: self.actor.clone(),
            updated_unix_nanos: self.updated_unix_nanos,
        }
    }
}

/// The document for `jobs`.
pub(crate) fn encode<'a>(jobs: impl Iterator<Item = &'a Job>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a> {
        format: u32,
        jobs: Vec<&'a Job>,
    }
    let out = Out {
        format: FORMAT,
        jobs: jobs.collect(),
    };
    let mut bytes = serde_json::to_vec(&out).expect("scheduler state serializes");
    bytes.push(b'\n');
    bytes
}

/// Reads the state file: no file is an empty state; anything unreadable is
/// an error naming the file (it is never silently replaced).
pub(crate) fn load(path: &Path) -> Result<BTreeMap<JobKey, Job>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io("failed to read scheduler state", path, e)),
    };
    let corrupt = |message: String| {
        Error::io(
            "corrupt scheduler state",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, message),
        )
    };
    let file: StateFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.format != FORMAT {
        return Err(corrupt(format!(
            "format {} is not the supported {FORMAT}",
            file.format
        )));
    }
    let mut jobs = BTreeMap::new();
    let mut ids = std::collections::HashSet::new();
    for job in file.jobs {
        let key = job.spec.key.clone();
        job.spec
            .validate()
            .map_err(|e| corrupt(format!("job {key}: {e}")))?;
        for (instance, inst) in &job.instances {
            let live = inst.tasks.iter().filter(|t| !is_terminal(t.state)).count();
            let last_live = inst.current().is_some_and(|t| !is_terminal(t.state));
            if live > 1 || (live == 1 && !last_live) {
                return Err(corrupt(format!(
                    "job {key} instance {instance}: only its last task may be live"
                )));
            }
            for task in &inst.tasks {
                if !ids.insert(task.id.clone()) {
                    return Err(corrupt(format!("task id {} appears twice", task.id)));
                }
            }
        }
        if jobs.insert(key.clone(), job).is_some() {
            return Err(corrupt(format!("job {key} appears twice")));
        }
    }
    Ok(jobs)
}

/// Replaces `path` with `bytes` atomically and durably.
pub(crate) fn save(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let write = |tmp: &Path| -> std::io::Result<()> {
        let mut file = std::fs::File::create(tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write(&tmp).map_err(|e| Error::io("failed to write scheduler state", &tmp, e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::io("failed to write scheduler state", path, e))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("failed to sync scheduler state directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for state in [
            TaskState::Pending,
            TaskState::Assigned,
            TaskState::Starting,
            TaskState::Running,
            TaskState::Finished,
            TaskState::Failed,
            TaskState::Killed,
            TaskState::Lost,
        ] {
            assert_eq!(parse_state_name(state_name(state)), Some(state));
        }
        assert_eq!(parse_state_name("unspecified"), None);
        assert_eq!(parse_state_name("bogus"), None);
    }

    #[test]
    fn missing_file_is_empty_and_saves_are_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(load(&path).unwrap().is_empty());
        save(&path, &encode(std::iter::empty())).unwrap();
        assert!(load(&path).unwrap().is_empty());
        assert!(!dir.path().join("state.json.tmp").exists());
    }
}

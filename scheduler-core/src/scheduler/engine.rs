//! [`SchedulerCore`]: the scheduler's decisions, synchronous and
//! deterministic. Every method takes the time (`now`, Unix nanoseconds), so
//! tests drive the clock; the gRPC service wraps it in a mutex and saves a
//! [`Snapshot`] after each change.
//!
//! The life of an instance: a task is created PENDING when the instance
//! wants one (new instance, its node lost, an update, a cron tick), placed
//! (ASSIGNED) on a live node with room, then reported by that node
//! (STARTING, RUNNING, and a terminal state). Only an instance's newest task
//! may be non-terminal; a replacement is created only once the task it
//! replaces is terminal, so an instance never runs twice and a node never
//! holds more than its capacity.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sluice_schema::events::{EventIds, EventSink};
use sluice_schema::pb::{ClusterEvent, EventKind, JobStatus, NodeInfo, TaskState};

use super::config::SchedulerConfig;
use super::placement::{Agent, Capacity, Placer};
use super::state::{
    self, HISTORY_PER_INSTANCE, Instance, Job, KillRequest, Task, is_terminal, state_name,
};
use crate::Result;
use crate::spec::{JobKey, JobSpec, MAX_NAME_LEN};

/// The actor of what the scheduler does on its own (placements, LOST).
pub const SCHEDULER_ACTOR: &str = "system:scheduler";
const NANOS_PER_SEC: i64 = 1_000_000_000;
const NANOS_PER_MS: i64 = 1_000_000;

/// Why a request was refused; each maps to a gRPC status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No job has the key the request names.
    #[error("{0}")]
    NotFound(String),
    /// A submitted job's key belongs to a job that is not killed.
    #[error("{0}")]
    AlreadyExists(String),
    /// The job's state forbids the request, such as updating a killed job.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A request field is malformed, such as a heartbeat's node name.
    #[error("{0}")]
    InvalidArgument(String),
}

impl From<RequestError> for tonic::Status {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::NotFound(m) => tonic::Status::not_found(m),
            RequestError::AlreadyExists(m) => tonic::Status::already_exists(m),
            RequestError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            RequestError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
        }
    }
}

/// The state file's next content, taken under the lock and written outside.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Increases with every change; a snapshot older than one already
    /// written is dropped.
    pub version: u64,
    /// The whole state file: every job as one JSON document, newline-terminated.
    pub bytes: Vec<u8>,
}

/// Where events go, and their ids.
pub(super) struct Events {
    sink: Arc<dyn EventSink>,
    ids: EventIds,
}

impl Events {
    pub(super) fn emit(
        &self,
        kind: EventKind,
        now: i64,
        job: &JobKey,
        actor: &str,
        message: String,
    ) {
        self.sink.emit(ClusterEvent {
            id: self.ids.next(),
            ts_unix_nanos: now,
            kind: kind as i32,
            job: job.to_string(),
            actor: actor.to_string(),
            message,
            ..ClusterEvent::default()
        });
    }

    fn emit_job(&self, kind: EventKind, now: i64, job: &Job, actor: &str, message: String) {
        let mut event = ClusterEvent {
            id: self.ids.next(),
            ts_unix_nanos: now,
            kind: kind as i32,
            job: job.spec.key.to_string(),
            actor: actor.to_string(),
            message,
            ..ClusterEvent::default()
        };
        let attributes = &mut event.attributes;
        attributes.insert("instances".into(), job.spec.instances.to_string());
        attributes.insert("generation".into(), job.generation.to_string());
        if let Some(cron) = &job.spec.cron {
            attributes.insert("cron".into(), cron.as_str().to_string());
        }
        self.sink.emit(event);
    }

    /// A task state change the scheduler made itself.
    pub(super) fn emit_task(
        &self,
        now: i64,
        key: &JobKey,
        instance: u32,
        task: &Task,
        from: TaskState,
    ) {
        let actor = match (&task.kill, task.state) {
            (Some(kill), TaskState::Killed) => kill.actor.as_str(),
            _ => SCHEDULER_ACTOR,
        };
        let (from, to) = (state_name(from), state_name(task.state));
        let on = match task.host.as_str() {
            "" => String::new(),
            host => format!(" on {host}"),
        };
        let mut event = ClusterEvent {
            id: self.ids.next(),
            ts_unix_nanos: now,
            kind: EventKind::TaskState as i32,
            job: key.to_string(),
            instance: Some(instance),
            task_id: task.id.clone(),
            run: task.run,
            host: task.host.clone(),
            actor: actor.to_string(),
            reason: task.reason.clone(),
            message: format!("task {} {from} -> {to}{on}", task.id),
            ..ClusterEvent::default()
        };
        event.attributes.insert("from".into(), from.into());
        event.attributes.insert("to".into(), to.into());
        self.sink.emit(event);
    }
}

/// The scheduler's state and decisions. See the module docs.
pub struct SchedulerCore {
    pub(super) config: SchedulerConfig,
    pub(super) jobs: BTreeMap<JobKey, Job>,
    /// Task id → its job and instance, for every task kept.
    pub(super) tasks: HashMap<String, (JobKey, u32)>,
    pub(super) agents: BTreeMap<String, Agent>,
    pub(super) started_unix_nanos: i64,
    pub(super) events: Events,
    /// Bumped by every change the state file must get.
    pub(super) version: u64,
    pub(super) saved_version: u64,
}

impl SchedulerCore {
    /// Loads the state file (none: an empty scheduler). Nodes are unknown
    /// until they heartbeat; they have `agent_timeout` from `now` to do so
    /// before their tasks are declared LOST.
    pub fn open(config: SchedulerConfig, sink: Arc<dyn EventSink>, now: i64) -> Result<Self> {
        config.validate()?;
        if let Some(dir) = config.state_file.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                crate::Error::io("failed to create scheduler state directory", dir, e)
            })?;
        }
        let jobs = state::load(&config.state_file)?;
        let mut tasks = HashMap::new();
        for (key, job) in &jobs {
            for (&instance, inst) in &job.instances {
                for task in &inst.tasks {
                    tasks.insert(task.id.clone(), (key.clone(), instance));
                }
            }
        }
        tracing::info!(
            state_file = %config.state_file.display(),
            jobs = jobs.len(),
            tasks = tasks.len(),
            "scheduler state loaded"
        );
        Ok(SchedulerCore {
            config,
            jobs,
            tasks,
            agents: BTreeMap::new(),
            started_unix_nanos: now,
            events: Events {
                sink,
                ids: EventIds::new("scheduler", now),
            },
            version: 0,
            saved_version: 0,
        })
    }

    /// The configuration the core was opened with.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The state file's content if it changed since the last save.
    pub fn snapshot(&self) -> Option<Snapshot> {
        (self.version != self.saved_version).then(|| Snapshot {
            version: self.version,
            bytes: state::encode(self.jobs.values()),
        })
    }

    /// Records that the snapshot of `version` is on disk.
    pub fn mark_saved(&mut self, version: u64) {
        self.saved_version = self.saved_version.max(version);
    }

    /// Writes the state file now if it changed (blocking I/O).
    pub fn save(&mut self) -> Result<()> {
        if let Some(snapshot) = self.snapshot() {
            state::save(&self.config.state_file, &snapshot.bytes)?;
            self.mark_saved(snapshot.version);
        }
        Ok(())
    }

    /// A new job. `AlreadyExists` if its key is taken by a job that is not
    /// killed; a killed job's key may be submitted again (its history goes).
    pub fn submit(
        &mut self,
        spec: JobSpec,
        actor: &str,
        now: i64,
    ) -> Result<JobStatus, RequestError> {
        let key = spec.key.clone();
        if let Some(old) = self.jobs.get(&key) {
            let state = old.state();
            if state != "killed" {
                return Err(RequestError::AlreadyExists(format!(
                    "job {key} already exists ({state}); use update to change it, or kill it \
                     first"
                )));
            }
            if let Some(old) = self.jobs.remove(&key) {
                self.forget(&old);
            }
        }
        let cron = spec.cron.is_some();
        let next_cron_secs = spec.cron.as_ref().and_then(|c| c.next_after(secs(now)));
        let instances = (0..spec.instances)
            .map(|i| {
                let inst = Instance {
                    replace: !cron,
                    ..Instance::default()
                };
                (i, inst)
            })
            .collect();
        let job = Job {
            spec,
            actor: actor.to_string(),
            created_unix_nanos: now,
            updated_unix_nanos: now,
            generation: 1,
            killed: None,
            next_cron_secs,
            instances,
        };
        let message = format!(
            "{actor} submitted {key} with {} instances",
            job.spec.instances
        );
        tracing::info!(job = %key, actor, instances = job.spec.instances, "job submitted");
        self.events
            .emit_job(EventKind::JobSubmitted, now, &job, actor, message);
        self.jobs.insert(key.clone(), job);
        self.version += 1;
        self.reconcile(now);
        Ok(self.status(&key))
    }

    /// Replaces a job's spec. Instances whose task ran an older spec get
    /// that task killed (reason `updated`) if it still runs and, once it
    /// has stopped, a fresh one, even if it had finished or failed (a cron
    /// job's next run waits for its next tick instead); instances past the
    /// new count are killed and dropped; new ones are placed. Changes to
    /// `instances` and `cron` alone restart nothing.
    pub fn update(
        &mut self,
        spec: JobSpec,
        actor: &str,
        now: i64,
    ) -> Result<JobStatus, RequestError> {
        let key = spec.key.clone();
        let Some(job) = self.jobs.get_mut(&key) else {
            return Err(RequestError::NotFound(format!("no job {key}")));
        };
        if job.killed.is_some() {
            return Err(RequestError::FailedPrecondition(format!(
                "job {key} is killed; submit it again instead"
            )));
        }
        if task_view(&job.spec) != task_view(&spec) {
            job.generation += 1;
        }
        if job.spec.cron != spec.cron {
            job.next_cron_secs = spec.cron.as_ref().and_then(|c| c.next_after(secs(now)));
        }
        let cron = spec.cron.is_some();
        let (old_count, count) = (job.spec.instances, spec.instances);
        job.spec = spec;
        job.actor = actor.to_string();
        job.updated_unix_nanos = now;
        let generation = job.generation;
        let kill = |reason: &str| KillRequest {
            actor: actor.to_string(),
            reason: reason.to_string(),
            unix_nanos: now,
        };
        let mut restarted = 0;
        for i in 0..count {
            let inst = job.instances.entry(i).or_insert_with(|| Instance {
                replace: !cron,
                ..Instance::default()
            });
            if inst.removed {
                inst.removed = false;
                inst.replace = !cron;
            }
            // A job that stops being a cron job runs instances that never ran.
            inst.replace |= !cron && inst.tasks.is_empty();
            if let Some(task) = inst.current_mut()
                && task.generation != generation
            {
                // Stopped or not, it ran the old spec: a fresh task follows.
                order_kill(&self.events, now, &key, i, task, kill("updated"));
                restarted += 1;
                inst.replace |= !cron;
            }
        }
        for (&i, inst) in job.instances.range_mut(count..) {
            if inst.removed {
                continue;
            }
            (inst.removed, inst.replace) = (true, false);
            if let Some(task) = inst.current_mut() {
                order_kill(&self.events, now, &key, i, task, kill("instance removed"));
            }
        }
        let message = format!(
            "{actor} updated {key}: {old_count} -> {count} instances, {restarted} restarted"
        );
        tracing::info!(job = %key, actor, restarted, instances = count, "job updated");
        self.events
            .emit_job(EventKind::JobUpdated, now, job, actor, message);
        self.version += 1;
        self.reconcile(now);
        Ok(self.status(&key))
    }

    /// Kills a job: its tasks are ordered killed (actor `actor`) and it is
    /// `killed` once every task is terminal. Killing again is a no-op.
    pub fn kill(&mut self, key: &JobKey, actor: &str, now: i64) -> Result<JobStatus, RequestError> {
        let Some(job) = self.jobs.get_mut(key) else {
            return Err(RequestError::NotFound(format!("no job {key}")));
        };
        if job.killed.is_none() {
            let request = KillRequest {
                actor: actor.to_string(),
                reason: "job killed".into(),
                unix_nanos: now,
            };
            job.killed = Some(request.clone());
            job.updated_unix_nanos = now;
            for (&i, inst) in job.instances.iter_mut() {
                inst.replace = false;
                if let Some(task) = inst.current_mut() {
                    order_kill(&self.events, now, key, i, task, request.clone());
                }
            }
            tracing::info!(job = %key, actor, "job killed");
            self.events.emit(
                EventKind::JobKilled,
                now,
                key,
                actor,
                format!("{actor} killed {key}"),
            );
            self.version += 1;
            self.reconcile(now);
        }
        Ok(self.status(key))
    }

    /// The status of the job `key`, with its instances; `NotFound` if there
    /// is none.
    pub fn describe(&self, key: &JobKey) -> Result<JobStatus, RequestError> {
        match self.jobs.contains_key(key) {
            true => Ok(self.status(key)),
            false => Err(RequestError::NotFound(format!("no job {key}"))),
        }
    }

    /// The jobs `filter` accepts, in key order.
    pub fn list(&self, filter: &dyn Fn(&JobKey) -> bool) -> Vec<JobStatus> {
        self.jobs
            .keys()
            .filter(|k| filter(k))
            .map(|k| self.status(k))
            .collect()
    }

    /// The job `key` as stored, with its task history; `None` if unknown.
    pub fn job(&self, key: &JobKey) -> Option<&Job> {
        self.jobs.get(key)
    }

    /// Every node heard from since the scheduler started.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut tasks: HashMap<&str, u32> = HashMap::new();
        for task in self.live_tasks() {
            *tasks.entry(task.host.as_str()).or_default() += 1;
        }
        self.agents
            .values()
            .map(|a| NodeInfo {
                node: a.name.clone(),
                tail_endpoint: a.tail_endpoint.clone(),
                alive: a.alive,
                last_heartbeat_unix_nanos: a.last_heartbeat_unix_nanos,
                cpu: a.cpu,
                ram_mb: a.capacity.ram_mb,
                disk_mb: a.capacity.disk_mb,
                tasks: tasks.get(a.name.as_str()).copied().unwrap_or(0),
            })
            .collect()
    }

    /// Timeouts, cron ticks and placement: call every `tick_ms`.
    pub fn tick(&mut self, now: i64) {
        let timeout = i64::try_from(self.config.agent_timeout_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(NANOS_PER_MS);
        for agent in self.agents.values_mut() {
            if agent.alive && now.saturating_sub(agent.last_heartbeat_unix_nanos) > timeout {
                agent.alive = false;
                tracing::warn!(node = agent.name, "node stopped heartbeating");
            }
        }
        let grace_over = now.saturating_sub(self.started_unix_nanos) > timeout;
        for (key, job) in self.jobs.iter_mut() {
            let keep = job.killed.is_none();
            for (&i, inst) in job.instances.iter_mut() {
                let Some(task) = inst.current_mut() else {
                    continue;
                };
                if is_terminal(task.state) || task.host.is_empty() {
                    continue;
                }
                let gone = match self.agents.get(&task.host) {
                    Some(agent) => !agent.alive,
                    None => grace_over,
                };
                if gone {
                    let reason = format!("node {} stopped heartbeating", task.host);
                    set_state(&self.events, now, key, i, task, TaskState::Lost, reason);
                    inst.replace |= keep && !inst.removed;
                    self.version += 1;
                }
            }
        }
        let now_secs = secs(now);
        for (key, job) in self.jobs.iter_mut() {
            let (Some(cron), Some(next), None) = (&job.spec.cron, job.next_cron_secs, &job.killed)
            else {
                continue;
            };
            if now_secs < next {
                continue;
            }
            for (i, inst) in job.instances.iter_mut().filter(|(_, i)| !i.removed) {
                if inst.is_idle() {
                    inst.replace = true;
                } else {
                    tracing::info!(job = %key, instance = i, "cron tick skipped: previous run not done");
                }
            }
            job.next_cron_secs = cron.next_after(now_secs);
            self.version += 1;
        }
        self.reconcile(now);
    }

    /// The status of a job that exists.
    fn status(&self, key: &JobKey) -> JobStatus {
        let job = &self.jobs[key];
        let endpoint = |host: &str| {
            self.agents
                .get(host)
                .map(|a| a.tail_endpoint.clone())
                .filter(|e| !e.is_empty())
        };
        job.status(&spec_json_of(&job.spec), &endpoint)
    }

    fn live_tasks(&self) -> impl Iterator<Item = &Task> {
        self.jobs
            .values()
            .flat_map(|j| j.instances.values())
            .filter_map(Instance::current)
            .filter(|t| !is_terminal(t.state))
    }

    fn forget(&mut self, job: &Job) {
        for task in job.instances.values().flat_map(|i| &i.tasks) {
            self.tasks.remove(&task.id);
        }
    }

    /// Creates the tasks instances want, drops removed instances that have
    /// stopped, and places pending tasks.
    pub(super) fn reconcile(&mut self, now: i64) {
        for (key, job) in self.jobs.iter_mut() {
            let mut gone = Vec::new();
            for (&i, inst) in job.instances.iter_mut() {
                if inst.removed {
                    if inst.is_idle() {
                        gone.push(i);
                    }
                    continue;
                }
                if !(inst.replace && job.killed.is_none() && inst.is_idle()) {
                    continue;
                }
                let id = new_task_id(key, i, &self.tasks);
                self.tasks.insert(id.clone(), (key.clone(), i));
                inst.tasks.push(Task {
                    id,
                    generation: job.generation,
                    resources: job.spec.resources.clone(),
                    state: TaskState::Pending,
                    host: String::new(),
                    tail_endpoint: String::new(),
                    run: 0,
                    exit_code: None,
                    reason: String::new(),
                    sandbox_bytes: 0,
                    restarts: 0,
                    created_unix_nanos: now,
                    updated_unix_nanos: now,
                    kill: None,
                });
                inst.replace = false;
                let excess = inst.tasks.len().saturating_sub(HISTORY_PER_INSTANCE + 1);
                for old in inst.tasks.drain(..excess) {
                    self.tasks.remove(&old.id);
                }
                self.version += 1;
            }
            for i in gone {
                if let Some(inst) = job.instances.remove(&i) {
                    for task in inst.tasks {
                        self.tasks.remove(&task.id);
                    }
                }
                self.version += 1;
            }
        }
        self.place(now);
    }

    /// Places every pending task that fits somewhere; the others keep (or
    /// get) the reason they wait.
    fn place(&mut self, now: i64) {
        let mut placer = Placer::new(self.agents.values());
        let mut pending = false;
        for (key, job) in &self.jobs {
            let name = key.to_string();
            for task in job.instances.values().filter_map(Instance::current) {
                match task.state {
                    TaskState::Pending => pending = true,
                    s if !is_terminal(s) => {
                        placer.add(&task.host, &name, Capacity::of(&task.resources));
                    }
                    _ => {}
                }
            }
        }
        if !pending {
            return;
        }
        for (key, job) in self.jobs.iter_mut() {
            let name = key.to_string();
            // Loads only grow during a pass: once one instance of a job
            // finds no room, its other pending instances will not either.
            let mut refused: Option<String> = None;
            for (&i, inst) in job.instances.iter_mut() {
                let Some(task) = inst.current_mut() else {
                    continue;
                };
                if task.state != TaskState::Pending {
                    continue;
                }
                let placed = match &refused {
                    Some(reason) => Err(reason.clone()),
                    None => placer.place(&name, &task.resources),
                };
                match placed {
                    Ok(node) => {
                        task.host = node;
                        if let Some(agent) = self.agents.get(&task.host) {
                            task.tail_endpoint.clone_from(&agent.tail_endpoint);
                        }
                        set_state(
                            &self.events,
                            now,
                            key,
                            i,
                            task,
                            TaskState::Assigned,
                            "".into(),
                        );
                        self.version += 1;
                    }
                    Err(reason) => {
                        if task.reason != reason {
                            task.reason.clone_from(&reason);
                            self.version += 1;
                        }
                        refused = Some(reason);
                    }
                }
            }
        }
    }
}

/// Sets a task's state (a change the scheduler makes itself) and emits it.
pub(super) fn set_state(
    events: &Events,
    now: i64,
    key: &JobKey,
    instance: u32,
    task: &mut Task,
    state: TaskState,
    reason: String,
) {
    let from = task.state;
    task.state = state;
    task.reason = reason;
    task.updated_unix_nanos = now;
    events.emit_task(now, key, instance, task, from);
}

/// Orders a live task killed: a pending one is killed at once, any other
/// is sent to its node until the node reports it terminal.
fn order_kill(
    events: &Events,
    now: i64,
    key: &JobKey,
    instance: u32,
    task: &mut Task,
    request: KillRequest,
) {
    if is_terminal(task.state) || task.kill.is_some() {
        return;
    }
    let reason = request.reason.clone();
    task.kill = Some(request);
    if task.state == TaskState::Pending {
        set_state(events, now, key, instance, task, TaskState::Killed, reason);
    }
}

/// The parts of a spec that change what a task runs.
fn task_view(spec: &JobSpec) -> JobSpec {
    JobSpec {
        instances: 0,
        cron: None,
        ..spec.clone()
    }
}

pub(super) fn spec_json_of(spec: &JobSpec) -> String {
    serde_json::to_string(spec).expect("a job spec serializes")
}

fn secs(unix_nanos: i64) -> i64 {
    unix_nanos.div_euclid(NANOS_PER_SEC)
}

/// `<role>-<env>-<name>-<instance>-<8 hex>`, cut to [`MAX_NAME_LEN`] bytes
/// before the random part so that it is a valid name (a path segment and a
/// shell word).
pub fn new_task_id<V>(key: &JobKey, instance: u32, taken: &HashMap<String, V>) -> String {
    let mut prefix = format!("{}-{}-{}-{instance}", key.role, key.env, key.name);
    prefix.truncate(MAX_NAME_LEN - 9);
    loop {
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        let id = format!("{prefix}-{:08x}", u32::from_be_bytes(bytes));
        if !taken.contains_key(&id) {
            return id;
        }
    }
}

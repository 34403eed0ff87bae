//! The node agent: runs the scheduler's tasks in sandboxes on one node,
//! enforces their disk quotas and collects their sandboxes.
//!
//! ```text
//! scheduler ◀──AgentHeartbeat (reports) / reply (run, kill)── agent loop (thread)
//!                                                                 │
//!                             TaskRuntime (executors, quotas) ◀───┤
//!                             Collector (GC passes)           ◀───┘── ShipState (shipper)
//! ```
//!
//! One thread owns the [`TaskRuntime`]: every 200 ms it polls the tasks,
//! every `heartbeat_ms` it reports them to the scheduler and carries out the
//! reply (start the tasks it does not run, kill the ones it is told to),
//! and every `disk_watch_interval` it runs a garbage-collection pass. Tasks
//! run under executor processes of their own, so the agent can stop,
//! crash or restart without stopping them; a new agent finds them again.

mod collect;
pub mod confine;
pub mod executor;
pub mod files;
pub mod metrics;
mod proc;
pub mod runtime;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use prost::Message as _;
use serde::{Deserialize, Serialize};
use sluice_schema::audit::{Audit, Call, method_of, outcome};
use sluice_schema::auth::{BearerInterceptor, principal};
use sluice_schema::events::{EventIds, EventSink};
use sluice_schema::pb::node_server::Node;
use sluice_schema::pb::scheduler_client::SchedulerClient;
use sluice_schema::pb::{AgentHeartbeatRequest, GcReply, GcRequest, TaskReport, TaskState};
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub use collect::{Outcome, ShipState, ShippedFile};
pub use metrics::AgentMetrics;
pub use runtime::{Assignment, RuntimeConfig, TaskRuntime};

use crate::gc::GcConfig;
use crate::spec::{JobKey, JobSpec};
use crate::{Error, Result};

/// How often the agent polls its tasks.
const POLL: Duration = Duration::from_millis(200);

/// Under the sandbox root: the last reports of tasks whose sandboxes were
/// collected before the scheduler took note of their end
/// (`AgentHeartbeatRequest.tasks`, protobuf), for an agent that restarts.
pub const UNSETTLED_FILE: &str = ".collected-unsettled.pb";

/// How a node agent runs: its identity, the scheduler it reports to, what it
/// offers for placement, and its timers; checked by [`AgentConfig::validate`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The node's name, unique in the cluster.
    pub node: String,
    /// The sandbox root (the shipper tails it in the native layout).
    pub root: PathBuf,
    /// `https://HOST:PORT` (or `http://`) of the scheduler.
    pub scheduler: String,
    /// PEM of the CA the scheduler's certificate is checked against
    /// (`https://` schedulers).
    #[serde(default)]
    pub scheduler_ca: Option<String>,
    /// `http://HOST:PORT` of this node's Tail service.
    pub tail_endpoint: String,
    /// What the node offers the scheduler.
    pub cpu: f64,
    /// Memory offered, in MiB; must be positive.
    pub ram_mb: u64,
    /// Disk offered for sandboxes, in MiB; must be positive.
    pub disk_mb: u64,
    /// For garbage collection, treat the node's disk as this many bytes
    /// holding only the sandboxes (small test nodes, or a share of a disk
    /// used for other things); default: the filesystem of `root`.
    #[serde(default)]
    pub disk_capacity_bytes: Option<u64>,
    /// Milliseconds between heartbeats to the scheduler, 100 to 60000;
    /// default 1000.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Milliseconds a killed task's processes get between SIGTERM and SIGKILL;
    /// default 10000.
    #[serde(default = "default_kill_grace_ms")]
    pub kill_grace_ms: u64,
    /// When sandboxes are garbage-collected; its `disk_watch_interval` also
    /// sets how often quotas are checked.
    #[serde(default)]
    pub gc: GcConfig,
    /// How tasks are confined (flags, not part of a config file).
    #[serde(skip)]
    pub tasks: confine::Policy,
}

fn default_heartbeat_ms() -> u64 {
    1000
}

fn default_kill_grace_ms() -> u64 {
    10_000
}

impl AgentConfig {
    /// Checks the values a config file could get wrong; the error is
    /// [`Error::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(Error::Config(format!("{field}: {why}")));
        crate::spec::valid_name("node", &self.node)
            .or_else(|_| bad("node", "must be a name of [A-Za-z0-9_.-]"))?;
        if !self.root.is_absolute() {
            return bad("root", "must be an absolute path");
        }
        if self.cpu.is_nan() || self.cpu <= 0.0 || self.ram_mb == 0 || self.disk_mb == 0 {
            return bad("cpu, ram_mb, disk_mb", "must be positive");
        }
        if !(100..=60_000).contains(&self.heartbeat_ms) {
            return bad("heartbeat_ms", "must be between 100 and 60000");
        }
        if self.disk_capacity_bytes == Some(0) {
            return bad("disk_capacity_bytes", "must be positive");
        }
        self.gc.validate()
    }
}

type Client = SchedulerClient<InterceptedService<Channel, BearerInterceptor>>;

enum Command {
    Gc {
        dry_run: bool,
        reply: oneshot::Sender<Outcome>,
    },
    Stop,
}

/// A running agent; stops (leaving its tasks running) when dropped or
/// [`Agent::stop`]ped.
pub struct Agent {
    node: String,
    metrics: Arc<AgentMetrics>,
    commands: mpsc::Sender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    /// Starts the agent's thread. `executor` is the program and leading
    /// arguments that run one task (`[sluice, "executor"]`); `handle` runs
    /// its calls to the scheduler.
    pub fn start(
        config: AgentConfig,
        token: &str,
        executor: Vec<OsString>,
        ship: Arc<dyn ShipState>,
        events: Arc<dyn EventSink>,
        handle: tokio::runtime::Handle,
    ) -> Result<Agent> {
        config.validate()?;
        config.tasks.check()?;
        std::fs::create_dir_all(&config.root)
            .map_err(|e| Error::io("failed to create the sandbox root", &config.root, e))?;
        let runtime = TaskRuntime::open(
            RuntimeConfig {
                root: config.root.clone(),
                node: config.node.clone(),
                executor,
                kill_grace: Duration::from_millis(config.kill_grace_ms),
                disk_watch_interval: config.gc.disk_watch_interval(),
                tasks: config.tasks.clone(),
            },
            events.clone(),
        )?;
        let auth =
            BearerInterceptor::new(token).map_err(|e| Error::Config(format!("token: {e}")))?;
        let mut endpoint = Channel::from_shared(config.scheduler.clone())
            .map_err(|e| Error::Config(format!("scheduler: {e}")))?
            .connect_timeout(Duration::from_secs(5));
        if config.scheduler.starts_with("https://") {
            let ca = config.scheduler_ca.as_deref().ok_or_else(|| {
                Error::Config(format!(
                    "scheduler_ca: {} is https but no CA is given to check it",
                    config.scheduler
                ))
            })?;
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca));
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Error::Config(format!("scheduler_ca: {e}")))?;
        }
        let channel = endpoint.connect_lazy();
        let client = SchedulerClient::with_interceptor(channel, auth);
        let (commands, inbox) = mpsc::channel();
        let node = config.node.clone();
        let ids = EventIds::new(&format!("gc@{}", config.node), now_nanos());
        let metrics = Arc::new(AgentMetrics::default());
        let unsettled = read_unsettled(&config.root);
        let mut agent_loop = Loop {
            metrics: metrics.clone(),
            config,
            runtime,
            client,
            ship,
            events,
            ids,
            handle,
            collector: collect::Collector::default(),
            collected: unsettled.keys().cloned().collect(),
            reports: unsettled,
            ended: HashSet::new(),
            settled: HashSet::new(),
            warned: false,
        };
        let thread = std::thread::Builder::new()
            .name(format!("sluice-agent-{node}"))
            .spawn(move || agent_loop.run(inbox))
            .map_err(|e| Error::io("failed to start the agent thread for", &node, e))?;
        Ok(Agent {
            node,
            metrics,
            commands,
            thread: Some(thread),
        })
    }

    /// A garbage-collection pass now (or what it would do).
    pub async fn gc(&self, dry_run: bool) -> Option<Outcome> {
        let (reply, outcome) = oneshot::channel();
        self.commands.send(Command::Gc { dry_run, reply }).ok()?;
        outcome.await.ok()
    }

    /// The agent's counters, updated by its thread.
    pub fn metrics(&self) -> Arc<AgentMetrics> {
        self.metrics.clone()
    }

    /// The node service (`sluice.v1.Node`) of this agent.
    pub fn service(self: &Arc<Self>) -> NodeService {
        NodeService {
            agent: self.clone(),
            audit: None,
        }
    }

    /// Stops the agent; its tasks keep running.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.halt();
    }
}

struct Loop {
    metrics: Arc<AgentMetrics>,
    config: AgentConfig,
    runtime: TaskRuntime,
    client: Client,
    ship: Arc<dyn ShipState>,
    events: Arc<dyn EventSink>,
    ids: EventIds,
    handle: tokio::runtime::Handle,
    collector: collect::Collector,
    /// The last report of each task, and of each task in `collected`.
    reports: HashMap<String, TaskReport>,
    /// Terminal tasks whose sandboxes were collected before the scheduler
    /// took note of their end. Their last report is kept, sent and saved
    /// ([`UNSETTLED_FILE`]) until it does: an assignment it sends again in
    /// the meantime is not run a second time.
    collected: HashSet<String>,
    /// Tasks whose end the shipper was told of.
    ended: HashSet<String>,
    /// Terminal tasks the scheduler has taken note of (it no longer lists
    /// them to run): not reported again.
    settled: HashSet<String>,
    /// The scheduler was unreachable (said once until it answers).
    warned: bool,
}

impl Loop {
    fn run(&mut self, inbox: mpsc::Receiver<Command>) {
        let heartbeat = Duration::from_millis(self.config.heartbeat_ms);
        let gc_every = self.config.gc.disk_watch_interval();
        let mut last_heartbeat = Instant::now() - heartbeat;
        let mut last_gc = Instant::now();
        loop {
            match inbox.recv_timeout(POLL) {
                Ok(Command::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Ok(Command::Gc { dry_run, reply }) => {
                    self.poll();
                    let _ = reply.send(self.collect(dry_run));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            self.poll();
            if last_heartbeat.elapsed() >= heartbeat {
                last_heartbeat = Instant::now();
                self.heartbeat();
            }
            if last_gc.elapsed() >= gc_every {
                last_gc = Instant::now();
                self.collect(false);
            }
        }
        tracing::info!(node = %self.config.node, "agent stopped; its tasks keep running");
    }

    fn poll(&mut self) {
        for report in self.runtime.poll() {
            if is_terminal(report.state)
                && self.ended.insert(report.task_id.clone())
                && let Some(dir) = self.runtime.sandbox(&report.task_id)
            {
                self.ship.task_ended(&dir);
            }
            self.reports.insert(report.task_id.clone(), report);
        }
        let running = self
            .runtime
            .tasks()
            .filter(|(_, state)| !is_terminal(*state as i32))
            .count();
        let m = &self.metrics;
        m.tasks_running.store(running as u64, Relaxed);
        m.sandboxes
            .store(self.runtime.tasks().count() as u64, Relaxed);
        m.quota_kills.store(self.runtime.quota_kills(), Relaxed);
    }

    fn heartbeat(&mut self) {
        let request = AgentHeartbeatRequest {
            node: self.config.node.clone(),
            tail_endpoint: self.config.tail_endpoint.clone(),
            cpu: self.config.cpu,
            ram_mb: self.config.ram_mb,
            disk_mb: self.config.disk_mb,
            tasks: self
                .reports
                .values()
                .filter(|r| !self.settled.contains(&r.task_id))
                .cloned()
                .collect(),
        };
        let sent_terminal: Vec<String> = request
            .tasks
            .iter()
            .filter(|r| is_terminal(r.state))
            .map(|r| r.task_id.clone())
            .collect();
        let mut client = self.client.clone();
        let reply = self.handle.block_on(async move {
            tokio::time::timeout(Duration::from_secs(5), client.agent_heartbeat(request)).await
        });
        let reply = match reply {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => return self.unreachable(&status.to_string()),
            Err(_) => return self.unreachable("no answer in 5 s"),
        };
        self.metrics.scheduler_unreachable.store(0, Relaxed);
        if self.warned {
            tracing::info!(scheduler = %self.config.scheduler, "scheduler reachable again");
            self.warned = false;
        }
        for id in sent_terminal {
            if !reply.run.iter().any(|a| a.task_id == id) {
                self.settled.insert(id);
            }
        }
        let known: Vec<String> = self
            .collected
            .iter()
            .filter(|id| self.settled.contains(*id))
            .cloned()
            .collect();
        if !known.is_empty() {
            for id in &known {
                self.collected.remove(id);
                self.settled.remove(id);
                self.reports.remove(id);
            }
            self.save_unsettled();
        }
        for assignment in reply.run {
            if self.reports.contains_key(&assignment.task_id)
                || self.runtime.sandbox(&assignment.task_id).is_some()
            {
                continue;
            }
            let parsed = JobKey::parse(&assignment.job).and_then(|job| {
                let spec: JobSpec = serde_json::from_str(&assignment.spec_json).map_err(|e| {
                    Error::spec(
                        "",
                        format!("the scheduler sent a spec that does not parse: {e}"),
                    )
                })?;
                spec.validate()?;
                Ok(Assignment {
                    task_id: assignment.task_id.clone(),
                    job,
                    instance: assignment.instance,
                    spec,
                })
            });
            match parsed.and_then(|a| self.runtime.launch(&a)) {
                Ok(()) => {
                    self.metrics.tasks_launched.fetch_add(1, Relaxed);
                    tracing::info!(task = %assignment.task_id, "task started");
                }
                Err(e) => {
                    tracing::error!(task = %assignment.task_id, error = %e, "cannot start task");
                    self.reports.insert(
                        assignment.task_id.clone(),
                        TaskReport {
                            task_id: assignment.task_id,
                            job: assignment.job,
                            instance: assignment.instance,
                            state: TaskState::Failed as i32,
                            reason: format!("cannot start: {e}"),
                            ..Default::default()
                        },
                    );
                }
            }
        }
        for order in reply.kill {
            if let Err(e) = self
                .runtime
                .kill(&order.task_id, &order.actor, &order.reason)
            {
                tracing::warn!(task = %order.task_id, error = %e, "cannot kill task");
            }
        }
    }

    fn unreachable(&mut self, why: &str) {
        self.metrics.scheduler_unreachable.store(1, Relaxed);
        if !self.warned {
            tracing::warn!(scheduler = %self.config.scheduler, error = why, "scheduler unreachable; tasks keep running, retrying");
            self.warned = true;
        }
    }

    fn collect(&mut self, dry_run: bool) -> Outcome {
        let candidates: Vec<collect::Candidate> = self
            .runtime
            .tasks()
            .filter_map(|(id, state)| {
                let dir = self.runtime.sandbox(id)?;
                Some(collect::Candidate {
                    id: id.to_string(),
                    dir,
                    running: !is_terminal(state as i32),
                    terminated_at_unix_ms: self.runtime.terminated_at(id).unwrap_or(0),
                    quota_bytes: self.runtime.disk_quota_bytes(id),
                    report: self.reports.get(id).cloned(),
                })
            })
            .collect();
        let cx = collect::Context {
            node: &self.config.node,
            root: &self.config.root,
            gc: &self.config.gc,
            capacity_bytes: self.config.disk_capacity_bytes,
            ship: self.ship.as_ref(),
            events: self.events.as_ref(),
            ids: &self.ids,
            now_unix_ms: (now_nanos() / 1_000_000) as u64,
        };
        let (outcome, deleted) = self.collector.pass(&cx, &candidates, dry_run);
        if outcome.applied {
            let m = &self.metrics;
            m.gc_passes.fetch_add(1, Relaxed);
            m.gc_sandboxes_deleted
                .fetch_add(deleted.len() as u64, Relaxed);
            m.gc_bytes_freed.fetch_add(outcome.freed_bytes, Relaxed);
            let lost: u64 = outcome
                .plan
                .actions()
                .map(|d| match d {
                    crate::gc::Decision::Delete {
                        forced: Some(_),
                        unshipped_bytes,
                        ..
                    } => *unshipped_bytes,
                    _ => 0,
                })
                .sum();
            m.gc_data_loss_bytes.fetch_add(lost, Relaxed);
            m.disk_used_bytes.store(
                outcome.plan.used_before.saturating_sub(outcome.freed_bytes),
                Relaxed,
            );
            m.disk_total_bytes.store(outcome.plan.total_bytes, Relaxed);
            m.gc_last_pass_unix_nanos.store(now_nanos(), Relaxed);
        }
        let mut unsettled = false;
        for id in deleted {
            self.runtime.forget(&id);
            self.ended.remove(&id);
            if self.settled.remove(&id) {
                self.reports.remove(&id);
            } else {
                // The scheduler has not taken note of its end yet (the disk
                // is filling, or the heartbeat is slow): keep telling it.
                self.collected.insert(id);
                unsettled = true;
            }
        }
        if unsettled {
            self.save_unsettled();
        }
        outcome
    }

    fn save_unsettled(&self) {
        let root = &self.config.root;
        let result = if self.collected.is_empty() {
            match std::fs::remove_file(root.join(UNSETTLED_FILE)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::io("failed to remove", root.join(UNSETTLED_FILE), e))
                }
                _ => Ok(()),
            }
        } else {
            let tasks = self
                .collected
                .iter()
                .filter_map(|id| self.reports.get(id).cloned())
                .collect();
            let bytes = AgentHeartbeatRequest {
                tasks,
                ..Default::default()
            }
            .encode_to_vec();
            files::write_atomic(root, UNSETTLED_FILE, &bytes)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot save the reports of collected tasks the scheduler has not taken note of");
        }
    }
}

/// The reports [`UNSETTLED_FILE`] keeps; none if it is missing or unreadable
/// (said).
fn read_unsettled(root: &std::path::Path) -> HashMap<String, TaskReport> {
    let path = root.join(UNSETTLED_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the reports of collected tasks");
            return HashMap::new();
        }
    };
    match AgentHeartbeatRequest::decode(bytes.as_slice()) {
        Ok(request) => request
            .tasks
            .into_iter()
            .filter(|r| is_terminal(r.state))
            .map(|r| (r.task_id.clone(), r))
            .collect(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the reports of collected tasks do not decode; ignored");
            HashMap::new()
        }
    }
}

fn is_terminal(state: i32) -> bool {
    matches!(
        TaskState::try_from(state),
        Ok(TaskState::Finished | TaskState::Failed | TaskState::Killed | TaskState::Lost)
    )
}

use sluice_schema::time::now_unix_nanos as now_nanos;

/// `sluice.v1.Node`: garbage collection on demand (admin only).
#[derive(Clone)]
pub struct NodeService {
    agent: Arc<Agent>,
    audit: Option<Arc<Audit>>,
}

impl NodeService {
    /// Records each garbage collection asked for (not dry runs, which
    /// change nothing) in `audit`.
    pub fn with_audit(mut self, audit: Arc<Audit>) -> Self {
        self.audit = Some(audit);
        self
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn gc(&self, request: Request<GcRequest>) -> Result<Response<GcReply>, Status> {
        let caller = principal(&request)?;
        let method = method_of(&request, "/sluice.v1.Node/Gc");
        let peer = request.remote_addr();
        let dry_run = request.get_ref().dry_run;
        let result = async {
            caller.require_admin()?;
            let outcome = self
                .agent
                .gc(dry_run)
                .await
                .ok_or_else(|| Status::unavailable("the agent is stopping"))?;
            Ok(Response::new(GcReply {
                node: self.agent.node.clone(),
                plan_json: serde_json::to_string(&outcome.plan)
                    .map_err(|e| Status::internal(e.to_string()))?,
                applied: outcome.applied,
                freed_bytes: outcome.freed_bytes,
            }))
        }
        .await;
        if let Some(audit) = self.audit.as_ref().filter(|_| !dry_run || result.is_err()) {
            let call = Call {
                actor: caller.user.clone(),
                method,
                target: format!("node {}", self.agent.node),
                job: String::new(),
                outcome: outcome(&result),
                peer,
            };
            audit.record(call, now_nanos());
        }
        result
    }
}

//! The node agent with real task processes, a scheduler on loopback gRPC
//! (a stand-in that hands out fixed assignments) and a stand-in shipper
//! whose progress the test controls: sandboxes are collected only once
//! shipped, and past the critical disk mark they are collected anyway with a
//! `data_loss` event that names the bytes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_scheduler::agent::{Agent, AgentConfig, ShipState, ShippedFile};
use sluice_scheduler::gc::GcConfig;
use sluice_schema::auth::{self, AuthInterceptor, Tokens};
use sluice_schema::events::VecSink;
use sluice_schema::pb::scheduler_server::{Scheduler, SchedulerServer};
use sluice_schema::pb::{
    AgentHeartbeatReply, AgentHeartbeatRequest, EventKind, JobKeyRequest, JobStatus, ListJobsReply,
    ListJobsRequest, NodeStatusRequest, NodesReply, SubmitJobRequest, TaskAssignment, TaskReport,
    TaskState,
};
use tonic::{Request, Response, Status};

const TOKEN: &str = "admin-token-for-agent-tests";

/// Hands every agent the same assignments and remembers the last reports.
#[derive(Default)]
struct FakeScheduler {
    assignments: Mutex<Vec<TaskAssignment>>,
    reports: Mutex<HashMap<String, TaskReport>>,
}

struct FakeService(Arc<FakeScheduler>);

#[tonic::async_trait]
impl Scheduler for FakeService {
    async fn submit_job(
        &self,
        _: Request<SubmitJobRequest>,
    ) -> Result<Response<JobStatus>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn update_job(
        &self,
        _: Request<SubmitJobRequest>,
    ) -> Result<Response<JobStatus>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn kill_job(&self, _: Request<JobKeyRequest>) -> Result<Response<JobStatus>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn describe_job(&self, _: Request<JobKeyRequest>) -> Result<Response<JobStatus>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_jobs(
        &self,
        _: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn nodes(&self, _: Request<NodeStatusRequest>) -> Result<Response<NodesReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn agent_heartbeat(
        &self,
        request: Request<AgentHeartbeatRequest>,
    ) -> Result<Response<AgentHeartbeatReply>, Status> {
        auth::principal(&request)?.require_admin()?;
        let mut reports = self.0.reports.lock().unwrap();
        for task in request.into_inner().tasks {
            reports.insert(task.task_id.clone(), task);
        }
        Ok(Response::new(AgentHeartbeatReply {
            run: self.0.assignments.lock().unwrap().clone(),
            kill: Vec::new(),
            timeout_ms: 10_000,
        }))
    }
}

/// The shipper as the test says: files under a sandbox are acknowledged up
/// to their size once `shipped`, else not at all.
#[derive(Default)]
struct FakeShipper {
    shipped: Mutex<bool>,
}

impl ShipState for FakeShipper {
    fn files(&self, dir: &Path) -> Vec<ShippedFile> {
        let shipped = *self.shipped.lock().unwrap();
        let mut files = Vec::new();
        let logs = dir.join("logs");
        for run in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(run.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let size = f.metadata().unwrap().len();
                files.push(ShippedFile {
                    path: f.path(),
                    size,
                    acked: if shipped { size } else { 0 },
                });
            }
        }
        files
    }

    fn task_ended(&self, _: &Path) {}
}

fn sluice_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let exe = target.join("debug/sluice");
    assert!(
        exe.exists(),
        "{} is missing: run `cargo build --bin sluice` first",
        exe.display()
    );
    exe
}

async fn serve(scheduler: Arc<FakeScheduler>) -> String {
    let tokens = Tokens::parse(&auth::token_file_entry("admin", TOKEN, &[auth::ANY_ROLE])).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = futures::stream::unfold(listener, |l| async move {
        Some((l.accept().await.map(|(s, _)| s), l))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SchedulerServer::with_interceptor(
                FakeService(scheduler),
                AuthInterceptor::new(tokens),
            ))
            .serve_with_incoming(incoming),
    );
    format!("http://{addr}")
}

fn assignment(task_id: &str, cmd: &str) -> TaskAssignment {
    let yaml = format!(
        "name: job\nrole: r\nenv: prod\ninstances: 1\nresources: {{cpu: 0.1, ram_mb: 16, disk_mb: 64}}\nrestart: never\nprocesses:\n  - name: main\n    cmd: {cmd:?}\n"
    );
    let spec = sluice_scheduler::spec::parse(&yaml, None).unwrap();
    TaskAssignment {
        task_id: task_id.into(),
        job: "r/prod/job".into(),
        instance: 0,
        spec_json: serde_json::to_string(&spec).unwrap(),
    }
}

struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    endpoint: String,
    capacity_bytes: u64,
    scheduler: Arc<FakeScheduler>,
    shipper: Arc<FakeShipper>,
    events: Arc<VecSink>,
    agent: Option<Agent>,
}

impl World {
    async fn new(capacity_bytes: u64) -> World {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sandboxes");
        let scheduler = Arc::new(FakeScheduler::default());
        let endpoint = serve(scheduler.clone()).await;
        let shipper = Arc::new(FakeShipper::default());
        let events = Arc::new(VecSink::default());
        let mut world = World {
            _dir: dir,
            root,
            endpoint,
            capacity_bytes,
            scheduler,
            shipper,
            events,
            agent: None,
        };
        world.agent = Some(world.start_agent());
        world
    }

    /// A new agent on the world's root (as after a restart of the node).
    fn start_agent(&self) -> Agent {
        let gc = GcConfig {
            disk_watch_interval_secs: 1,
            gc_delay_secs: 1,
            ..GcConfig::default()
        };
        Agent::start(
            AgentConfig {
                scheduler_ca: None,
                tasks: Default::default(),
                node: "node-a".into(),
                root: self.root.clone(),
                scheduler: self.endpoint.clone(),
                tail_endpoint: "http://127.0.0.1:1".into(),
                cpu: 4.0,
                ram_mb: 4096,
                disk_mb: 4096,
                disk_capacity_bytes: Some(self.capacity_bytes),
                heartbeat_ms: 200,
                kill_grace_ms: 1000,
                gc,
            },
            TOKEN,
            vec![sluice_binary().into_os_string(), "executor".into()],
            self.shipper.clone(),
            self.events.clone(),
            tokio::runtime::Handle::current(),
        )
        .unwrap()
    }

    async fn until(&self, what: &str, done: impl Fn(&World) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn state(&self, task: &str) -> Option<TaskState> {
        self.scheduler
            .reports
            .lock()
            .unwrap()
            .get(task)
            .and_then(|r| TaskState::try_from(r.state).ok())
    }

    fn kinds(&self, kind: EventKind) -> Vec<sluice_schema::pb::ClusterEvent> {
        self.events
            .events()
            .into_iter()
            .filter(|e| e.kind == kind as i32)
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_sandboxes_are_collected_only_once_shipped() {
    let world = World::new(1 << 40).await;
    world
        .scheduler
        .assignments
        .lock()
        .unwrap()
        .push(assignment("t-done", "echo finished"));
    world
        .until("the task to finish", |w| {
            w.state("t-done") == Some(TaskState::Finished)
        })
        .await;
    // Old enough after gc_delay, but not shipped: kept, pass after pass.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        world.root.join("t-done").exists(),
        "an unshipped sandbox was deleted"
    );
    assert!(world.kinds(EventKind::SandboxCollected).is_empty());
    let plan = world.agent.as_ref().unwrap().gc(true).await.unwrap().plan;
    let json = serde_json::to_string(&plan).unwrap();
    assert!(json.contains("not_shipped"), "{json}");

    *world.shipper.shipped.lock().unwrap() = true;
    world
        .until("collection", |w| {
            !w.root.join("t-done").exists() && !w.kinds(EventKind::SandboxCollected).is_empty()
        })
        .await;
    let collected = world.kinds(EventKind::SandboxCollected);
    assert_eq!(collected.len(), 1);
    assert_eq!(collected[0].task_id, "t-done");
    assert!(world.kinds(EventKind::DataLoss).is_empty());
}

/// The race a full disk or a slow scheduler opens: a sandbox collected
/// before the scheduler took note of its task's end, and the scheduler
/// still listing the task to run. The task must not run again, neither in
/// this agent nor in one restarted on the same root, and its end is
/// reported until the scheduler stops listing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collected_task_the_scheduler_still_lists_is_not_run_again() {
    use sluice_scheduler::agent::UNSETTLED_FILE;
    let mut world = World::new(1 << 40).await;
    *world.shipper.shipped.lock().unwrap() = true;
    // The stand-in lists its assignments on every heartbeat: it never
    // takes note of the task's end.
    world
        .scheduler
        .assignments
        .lock()
        .unwrap()
        .push(assignment("t-once", "echo once"));
    world
        .until("collection", |w| {
            !w.kinds(EventKind::SandboxCollected).is_empty()
        })
        .await;
    let starts = |w: &World| {
        w.kinds(EventKind::TaskState)
            .iter()
            .filter(|e| {
                e.task_id == "t-once" && e.attributes.get("to").is_some_and(|t| t == "starting")
            })
            .count()
    };
    let unsettled = world.root.join(UNSETTLED_FILE);
    assert!(unsettled.exists(), "the unsettled report is not saved");
    // Many heartbeats and GC passes later (200 ms, 1 s): still one run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(starts(&world), 1, "{:?}", world.events.events());
    assert_eq!(world.kinds(EventKind::SandboxCollected).len(), 1);
    assert!(!world.root.join("t-once").exists());
    assert_eq!(world.state("t-once"), Some(TaskState::Finished));

    // A restarted agent remembers it from the file.
    world.agent.take().unwrap().stop();
    world.scheduler.reports.lock().unwrap().clear();
    world.agent = Some(world.start_agent());
    world
        .until("the end reported again", |w| {
            w.state("t-once") == Some(TaskState::Finished)
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(starts(&world), 1, "{:?}", world.events.events());
    assert!(!world.root.join("t-once").exists());

    // Once the scheduler stops listing it, the report is dropped.
    world.scheduler.assignments.lock().unwrap().clear();
    world
        .until("the unsettled file removed", |w| {
            !w.root.join(UNSETTLED_FILE).exists()
        })
        .await;
    assert_eq!(starts(&world), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_critical_mark_collection_is_forced_and_the_loss_reported() {
    // A 4 MiB "disk": a finished task that wrote 3.9 MiB of logs puts it
    // past the critical mark (95 %), and the shipper has shipped nothing.
    let world = World::new(4 << 20).await;
    world
        .scheduler
        .assignments
        .lock()
        .unwrap()
        .push(assignment("t-big", "head -c 4089446 /dev/zero"));
    world
        .until("the task to finish", |w| {
            w.state("t-big") == Some(TaskState::Finished)
        })
        .await;
    world
        .until("forced collection", |w| {
            !w.root.join("t-big").exists() && !w.kinds(EventKind::DataLoss).is_empty()
        })
        .await;
    let loss = world.kinds(EventKind::DataLoss);
    assert_eq!(loss.len(), 1, "{loss:?}");
    assert_eq!(loss[0].attributes["bytes"], "4089446", "{loss:?}");
    assert!(
        loss[0].attributes["files"].contains("main.stdout"),
        "{loss:?}"
    );
    assert_eq!(loss[0].actor, "system:gc");
    let collected = world.kinds(EventKind::SandboxCollected);
    assert_eq!(collected[0].attributes["forced"], "critical_disk");
    assert!(
        world
            .kinds(EventKind::DiskPressure)
            .iter()
            .any(|e| e.reason == "critical"),
        "a disk_pressure event says the mark was crossed"
    );
}

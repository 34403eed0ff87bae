//! The scheduler's gRPC service over loopback, as `sluice job` and node
//! agents use it: authentication and roles, errors that name what was
//! wrong, assignments to heartbeating agents, the tick task and restarts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_scheduler::scheduler::{SchedulerConfig, SchedulerService};
use sluice_schema::auth::{AuthInterceptor, BearerInterceptor, Tokens, token_file_entry};
use sluice_schema::events::VecSink;
use sluice_schema::pb::scheduler_client::SchedulerClient;
use sluice_schema::pb::{
    AgentHeartbeatReply, AgentHeartbeatRequest, EventKind, JobKeyRequest, JobStatus,
    ListJobsRequest, NodeStatusRequest, SubmitJobRequest, TaskReport, TaskState,
};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};

const ADMIN: &str = "admin-token-0123456789";
const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789";

type Client = SchedulerClient<InterceptedService<Channel, BearerInterceptor>>;

struct Cluster {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    service: SchedulerService,
    sink: Arc<VecSink>,
    server: tokio::task::JoinHandle<()>,
}

fn tokens() -> Tokens {
    let text = [
        token_file_entry("admin", ADMIN, &["*"]),
        token_file_entry("alice", ALICE, &["search"]),
        token_file_entry("bob", BOB, &["www"]),
    ]
    .concat();
    Tokens::parse(&text).unwrap()
}

fn config(dir: &tempfile::TempDir) -> SchedulerConfig {
    SchedulerConfig {
        agent_timeout_ms: 1_000,
        tick_ms: 20,
        ..SchedulerConfig::new(dir.path().join("scheduler/state.json"))
    }
}

async fn serve(dir: tempfile::TempDir) -> Cluster {
    let sink = Arc::new(VecSink::default());
    let service = SchedulerService::start(config(&dir), sink.clone()).unwrap();
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let router =
        Server::builder().add_service(service.server(AuthInterceptor::new(tokens()), 4 << 20));
    let server = tokio::spawn(async move {
        router.serve_with_incoming(incoming).await.unwrap();
    });
    Cluster {
        dir,
        addr,
        service,
        sink,
        server,
    }
}

async fn start() -> Cluster {
    serve(tempfile::tempdir().unwrap()).await
}

impl Cluster {
    async fn client(&self, token: &str) -> Client {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        SchedulerClient::with_interceptor(channel, BearerInterceptor::new(token).unwrap())
    }

    async fn stop(self) -> tempfile::TempDir {
        self.service.stop().await.unwrap();
        self.server.abort();
        self.dir
    }
}

fn spec(name: &str, instances: u32) -> SubmitJobRequest {
    SubmitJobRequest {
        spec_yaml: format!(
            "name: {name}\nrole: search\nenv: devel\ninstances: {instances}\n\
             resources: {{cpu: 1, ram_mb: 256, disk_mb: 100}}\n\
             processes: [{{name: main, cmd: ./serve}}]\n"
        ),
        stage: String::new(),
    }
}

fn with(request: SubmitJobRequest, from: &str, to: &str) -> SubmitJobRequest {
    SubmitJobRequest {
        spec_yaml: request.spec_yaml.replace(from, to),
        ..request
    }
}

fn key(job: &str) -> JobKeyRequest {
    JobKeyRequest { job: job.into() }
}

async fn heartbeat(admin: &mut Client, node: &str, tasks: Vec<TaskReport>) -> AgentHeartbeatReply {
    let request = AgentHeartbeatRequest {
        node: node.into(),
        tail_endpoint: format!("http://{node}.test:7000"),
        cpu: 4.0,
        ram_mb: 4096,
        disk_mb: 100_000,
        tasks,
    };
    admin.agent_heartbeat(request).await.unwrap().into_inner()
}

fn running(reply: &AgentHeartbeatReply) -> Vec<TaskReport> {
    reply
        .run
        .iter()
        .map(|a| TaskReport {
            task_id: a.task_id.clone(),
            job: a.job.clone(),
            instance: a.instance,
            run: 1,
            state: TaskState::Running as i32,
            sandbox_bytes: 8192,
            sandbox_exists: true,
            ..TaskReport::default()
        })
        .collect()
}

#[tokio::test]
async fn writes_need_the_jobs_role_and_a_valid_token() {
    let cluster = start().await;
    let mut bob = cluster.client(BOB).await;
    let err = bob.submit_job(spec("web", 1)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), "user bob may not act on role search");

    let mut stranger = cluster.client("not-a-known-token-at-all").await;
    let err = stranger
        .list_jobs(ListJobsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let mut alice = cluster.client(ALICE).await;
    alice.submit_job(spec("web", 1)).await.unwrap();
    let err = bob.kill_job(key("search/devel/web")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = bob.update_job(spec("web", 2)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = bob.describe_job(key("search/devel/web")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), "user bob may not read role search");
    // Lists show only readable roles; naming an unreadable one is refused.
    let jobs = bob
        .list_jobs(ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(jobs.is_empty());
    let err = bob
        .list_jobs(ListJobsRequest {
            glob: "search/*".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Heartbeats are for administrators (the node agents).
    let err = alice
        .agent_heartbeat(AgentHeartbeatRequest {
            node: "n".into(),
            ..AgentHeartbeatRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Everyone may see the nodes.
    bob.nodes(NodeStatusRequest {}).await.unwrap();
    // Only alice's submit got through, and it says so.
    let submitted: Vec<_> = cluster
        .sink
        .events()
        .into_iter()
        .filter(|e| e.kind() == EventKind::JobSubmitted)
        .collect();
    assert_eq!(submitted.len(), 1);
    assert_eq!(submitted[0].actor, "alice");
    cluster.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_naming_what_is_wrong() {
    let cluster = start().await;
    let mut alice = cluster.client(ALICE).await;
    let err = alice
        .submit_job(with(spec("web", 1), "cpu: 1", "cpu: -1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("invalid job spec: resources.cpu: "),
        "{}",
        err.message()
    );

    let err = alice
        .submit_job(with(spec("web", 1), "role: search", "role: ../etc"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("role: \"../etc\""),
        "{}",
        err.message()
    );

    let err = alice
        .submit_job(SubmitJobRequest {
            stage: "prod".into(),
            ..spec("web", 1)
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("no stage \"prod\""),
        "{}",
        err.message()
    );

    for job in ["../etc/passwd/x", "search/devel/..", "search/devel"] {
        let err = alice.kill_job(key(job)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{job}");
        assert!(
            err.message().starts_with("invalid job key: "),
            "{}",
            err.message()
        );
        let err = alice.describe_job(key(job)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{job}");
    }
    let err = alice
        .list_jobs(ListJobsRequest {
            glob: "a/b/c/d".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = alice
        .describe_job(key("search/devel/none"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "no job search/devel/none");

    alice.submit_job(spec("web", 1)).await.unwrap();
    let err = alice.submit_job(spec("web", 1)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(
        cluster
            .sink
            .events()
            .iter()
            .filter(|e| e.kind != EventKind::ApiCall as i32)
            .all(|e| e.job == "search/devel/web")
    );
    // Every refused change is on the audit trail, naming the caller and why.
    let refused: Vec<_> = cluster
        .sink
        .events()
        .into_iter()
        .filter(|e| e.kind == EventKind::ApiCall as i32 && e.reason != "ok")
        .collect();
    assert!(
        refused.iter().any(|e| e.actor == "alice"
            && e.reason == "already_exists"
            && e.job == "search/devel/web"),
        "{refused:#?}"
    );
    assert!(
        refused
            .iter()
            .all(|e| e.actor == "alice" && !e.attributes["method"].is_empty()),
        "{refused:#?}"
    );
    cluster.stop().await;
}

#[tokio::test]
async fn agents_get_assignments_and_describe_shows_where_instances_run() {
    let cluster = start().await;
    let mut admin = cluster.client(ADMIN).await;
    let mut alice = cluster.client(ALICE).await;
    heartbeat(&mut admin, "node-0", vec![]).await;
    heartbeat(&mut admin, "node-1", vec![]).await;
    let status = alice.submit_job(spec("web", 2)).await.unwrap().into_inner();
    assert_eq!(status.state, "running");
    assert_eq!(status.actor, "alice");
    assert!(
        status
            .instances
            .iter()
            .all(|i| i.state() == TaskState::Assigned)
    );

    let mut tasks = Vec::new();
    for node in ["node-0", "node-1"] {
        let reply = heartbeat(&mut admin, node, vec![]).await;
        assert_eq!(reply.run.len(), 1, "{node}: {reply:?}");
        assert_eq!(reply.run[0].job, "search/devel/web");
        assert_eq!(reply.timeout_ms, 1_000);
        let reports = running(&reply);
        heartbeat(&mut admin, node, reports.clone()).await;
        tasks.push(reports);
    }
    let status: JobStatus = alice
        .describe_job(key("search/devel/web"))
        .await
        .unwrap()
        .into_inner();
    for (instance, node) in status.instances.iter().zip(["node-0", "node-1"]) {
        assert_eq!(instance.state(), TaskState::Running);
        assert_eq!(instance.host, node);
        assert_eq!(instance.tail_endpoint, format!("http://{node}.test:7000"));
        assert_eq!(instance.run, 1);
        assert_eq!(instance.sandbox_bytes, 8192);
    }
    let listed = alice
        .list_jobs(ListJobsRequest {
            glob: "search".into(),
        })
        .await
        .unwrap();
    assert_eq!(listed.into_inner().jobs, vec![status]);
    let nodes = alice
        .nodes(NodeStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 2);
    assert!(
        nodes
            .iter()
            .all(|n| n.alive && n.tasks == 1 && n.cpu == 4.0)
    );

    // node-1 goes silent: the tick task declares its task lost and places
    // the instance on node-0.
    let mut reply = AgentHeartbeatReply::default();
    for _ in 0..250 {
        reply = heartbeat(&mut admin, "node-0", tasks[0].clone()).await;
        if reply.run.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reply.run.len(), 2, "{reply:?}");
    let on_node_0 = running(&reply);
    heartbeat(&mut admin, "node-0", on_node_0.clone()).await;
    let status = alice
        .describe_job(key("search/devel/web"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.instances[1].host, "node-0", "{status:?}");
    assert_ne!(status.instances[1].task_id, tasks[1][0].task_id);
    let lost = cluster
        .sink
        .events()
        .into_iter()
        .filter(|e| e.kind() == EventKind::TaskState && e.attributes["to"] == "lost")
        .count();
    assert_eq!(lost, 1);

    // Killing: the node is told, with alice as the actor.
    alice.kill_job(key("search/devel/web")).await.unwrap();
    let reply = heartbeat(&mut admin, "node-0", on_node_0).await;
    assert!(reply.run.is_empty());
    assert_eq!(reply.kill.len(), 2);
    assert!(reply.kill.iter().all(|k| k.actor == "alice"));
    cluster.stop().await;
}

#[tokio::test]
async fn jobs_survive_a_scheduler_restart() {
    let cluster = start().await;
    let mut alice = cluster.client(ALICE).await;
    let before = alice.submit_job(spec("web", 3)).await.unwrap().into_inner();
    let dir = cluster.stop().await;
    let state = std::fs::read_to_string(dir.path().join("scheduler/state.json")).unwrap();
    assert!(state.contains("search/devel/web"), "{state}");

    let cluster = serve(dir).await;
    let mut alice = cluster.client(ALICE).await;
    let after = alice
        .describe_job(key("search/devel/web"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after, before);
    cluster.stop().await;
}

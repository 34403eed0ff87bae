//! Tests of the scheduler core: placement, lost nodes, kills, updates,
//! cron, persistence, events, and a property test of its invariants. Time
//! is driven explicitly; nothing here touches the network.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;
use sluice_schema::events::VecSink;
use sluice_schema::pb::{
    AgentHeartbeatReply, AgentHeartbeatRequest, EventKind, InstanceStatus, JobStatus, TaskReport,
    TaskState,
};

use super::engine::new_task_id;
use super::placement::Capacity;
use super::state::is_terminal;
use super::{RequestError, SchedulerConfig, SchedulerCore};
use crate::spec::{self, JobKey, JobSpec, valid_name};

const SEC: i64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600 * SEC;

fn yaml(name: &str, instances: u32, cpu: f64, ram_mb: u64, cmd: &str) -> String {
    format!(
        "name: {name}\nrole: search\nenv: devel\ninstances: {instances}\n\
         resources: {{cpu: {cpu}, ram_mb: {ram_mb}, disk_mb: 100}}\n\
         processes: [{{name: main, cmd: '{cmd}'}}]\n"
    )
}

fn job(name: &str, instances: u32, cpu: f64, ram_mb: u64) -> JobSpec {
    spec::parse(&yaml(name, instances, cpu, ram_mb, "./serve"), None).unwrap()
}

fn key(name: &str) -> JobKey {
    JobKey::new("search", "devel", name).unwrap()
}

struct Harness {
    dir: tempfile::TempDir,
    core: SchedulerCore,
    sink: Arc<VecSink>,
}

fn config(dir: &tempfile::TempDir) -> SchedulerConfig {
    SchedulerConfig {
        agent_timeout_ms: 10_000,
        ..SchedulerConfig::new(dir.path().join("scheduler").join("state.json"))
    }
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(VecSink::default());
    let core = SchedulerCore::open(config(&dir), sink.clone(), T0).unwrap();
    Harness { dir, core, sink }
}

/// A node agent that runs what it is told at once.
#[derive(Debug, Clone)]
struct FakeAgent {
    name: String,
    cpu: f64,
    ram_mb: u64,
    disk_mb: u64,
    tasks: BTreeMap<String, TaskReport>,
}

impl FakeAgent {
    fn new(name: &str, cpu: f64, ram_mb: u64) -> Self {
        FakeAgent {
            name: name.into(),
            cpu,
            ram_mb,
            disk_mb: 10_000,
            tasks: BTreeMap::new(),
        }
    }

    fn heartbeat(&mut self, core: &mut SchedulerCore, now: i64) -> AgentHeartbeatReply {
        let request = AgentHeartbeatRequest {
            node: self.name.clone(),
            tail_endpoint: format!("http://{}:7000", self.name),
            cpu: self.cpu,
            ram_mb: self.ram_mb,
            disk_mb: self.disk_mb,
            tasks: self.tasks.values().cloned().collect(),
        };
        let reply = core.heartbeat(request, now).unwrap();
        let run: HashSet<&str> = reply.run.iter().map(|a| a.task_id.as_str()).collect();
        self.tasks
            .retain(|id, t| !is_terminal(t.state()) || run.contains(id.as_str()));
        for assignment in &reply.run {
            self.tasks
                .entry(assignment.task_id.clone())
                .or_insert_with(|| TaskReport {
                    task_id: assignment.task_id.clone(),
                    job: assignment.job.clone(),
                    instance: assignment.instance,
                    run: 1,
                    state: TaskState::Running as i32,
                    sandbox_bytes: 4096,
                    sandbox_exists: true,
                    ..TaskReport::default()
                });
        }
        for order in &reply.kill {
            if let Some(task) = self.tasks.get_mut(&order.task_id)
                && !is_terminal(task.state())
            {
                task.state = TaskState::Killed as i32;
                task.reason.clone_from(&order.reason);
            }
        }
        reply
    }

    fn set_state(&mut self, task_id: &str, state: TaskState, exit_code: Option<i32>) {
        let task = self
            .tasks
            .get_mut(task_id)
            .expect("the agent runs the task");
        task.state = state as i32;
        task.exit_code = exit_code;
    }
}

fn instances(status: &JobStatus) -> Vec<(u32, TaskState, String)> {
    status
        .instances
        .iter()
        .map(|i| (i.instance, i.state(), i.host.clone()))
        .collect()
}

fn per_host(status: &JobStatus) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for i in &status.instances {
        *out.entry(i.host.clone()).or_default() += 1;
    }
    out
}

fn instance(status: &JobStatus, n: u32) -> &InstanceStatus {
    status.instances.iter().find(|i| i.instance == n).unwrap()
}

fn events_of(sink: &VecSink, kind: EventKind) -> Vec<sluice_schema::pb::ClusterEvent> {
    sink.events()
        .into_iter()
        .filter(|e| e.kind() == kind)
        .collect()
}

#[test]
fn placement_spreads_instances_within_resources() {
    let mut h = harness();
    let mut agents = [
        FakeAgent::new("a", 4.0, 4096),
        FakeAgent::new("b", 4.0, 4096),
        // Room in cpu for three, but in memory for one.
        FakeAgent::new("c", 8.0, 1024),
    ];
    for agent in &mut agents {
        agent.heartbeat(&mut h.core, T0);
    }
    let status = h
        .core
        .submit(job("web", 5, 1.0, 1024), "alice", T0)
        .unwrap();
    assert!(
        status
            .instances
            .iter()
            .all(|i| i.state() == TaskState::Assigned),
        "{status:?}"
    );
    let hosts = per_host(&status);
    assert_eq!(
        hosts,
        BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 1)])
    );
    // Each agent is given its own tasks, with the spec.
    let reply = agents[2].heartbeat(&mut h.core, T0 + SEC);
    assert_eq!(reply.run.len(), 1);
    agents[2].heartbeat(&mut h.core, T0 + 2 * SEC);
    let spec: JobSpec = serde_json::from_str(&reply.run[0].spec_json).unwrap();
    assert_eq!(spec.key, key("web"));
    assert_eq!(reply.timeout_ms, 10_000);
    let status = h.core.describe(&key("web")).unwrap();
    let on_c = status.instances.iter().find(|i| i.host == "c").unwrap();
    assert_eq!(on_c.state(), TaskState::Running);
    assert_eq!(on_c.tail_endpoint, "http://c:7000");
    assert_eq!(on_c.sandbox_bytes, 4096);
    assert!(valid_name("task_id", &on_c.task_id).is_ok());
    let nodes = h.core.nodes();
    assert_eq!(nodes.iter().map(|n| n.tasks).collect::<Vec<_>>(), [2, 2, 1]);
}

#[test]
fn an_instance_that_fits_nowhere_stays_pending_with_the_reason() {
    let mut h = harness();
    let status = h.core.submit(job("big", 1, 8.0, 256), "alice", T0).unwrap();
    assert_eq!(status.instances[0].state(), TaskState::Pending);
    assert_eq!(status.instances[0].reason, "no live nodes");
    let mut small = FakeAgent::new("small", 4.0, 4096);
    small.heartbeat(&mut h.core, T0 + SEC);
    let status = h.core.describe(&key("big")).unwrap();
    assert_eq!(status.instances[0].state(), TaskState::Pending);
    assert_eq!(
        status.instances[0].reason,
        "no node has room for cpu 8, ram_mb 256, disk_mb 100"
    );
    assert_eq!(status.instances[0].host, "");
    assert_eq!(status.state, "running");
    // Room appears: placed at once.
    let mut large = FakeAgent::new("large", 16.0, 4096);
    let reply = large.heartbeat(&mut h.core, T0 + 2 * SEC);
    assert_eq!(reply.run.len(), 1);
    let status = h.core.describe(&key("big")).unwrap();
    assert_eq!(
        instances(&status),
        [(0, TaskState::Assigned, "large".into())]
    );
    assert_eq!(status.instances[0].reason, "");
}

#[test]
fn a_silent_agent_loses_its_tasks_and_they_are_placed_again() {
    let mut h = harness();
    let (mut a, mut b) = (
        FakeAgent::new("a", 4.0, 4096),
        FakeAgent::new("b", 4.0, 4096),
    );
    a.heartbeat(&mut h.core, T0);
    b.heartbeat(&mut h.core, T0);
    let status = h.core.submit(job("web", 2, 1.0, 512), "alice", T0).unwrap();
    assert_eq!(per_host(&status).len(), 2);
    a.heartbeat(&mut h.core, T0 + SEC / 2);
    b.heartbeat(&mut h.core, T0 + SEC / 2);
    a.heartbeat(&mut h.core, T0 + SEC);
    b.heartbeat(&mut h.core, T0 + SEC);
    let on_a = status
        .instances
        .iter()
        .find(|i| i.host == "a")
        .unwrap()
        .clone();

    // b keeps heartbeating; a goes silent.
    for s in 2..=11 {
        b.heartbeat(&mut h.core, T0 + s * SEC);
        h.core.tick(T0 + s * SEC);
    }
    let status = h.core.describe(&key("web")).unwrap();
    assert_eq!(instance(&status, on_a.instance).host, "a", "not yet lost");
    b.heartbeat(&mut h.core, T0 + 12 * SEC);
    h.core.tick(T0 + 12 * SEC);
    let status = h.core.describe(&key("web")).unwrap();
    let moved = instance(&status, on_a.instance);
    assert_eq!(moved.host, "b");
    assert_eq!(moved.state(), TaskState::Assigned);
    assert_ne!(moved.task_id, on_a.task_id);
    assert!(!h.core.nodes()[0].alive);
    let lost = events_of(&h.sink, EventKind::TaskState);
    let lost: Vec<_> = lost
        .iter()
        .filter(|e| e.attributes["to"] == "lost")
        .collect();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].task_id, on_a.task_id);
    assert_eq!(lost[0].actor, "system:scheduler");
    assert_eq!(lost[0].reason, "node a stopped heartbeating");
    assert_eq!(lost[0].attributes["from"], "running");
    let reply = b.heartbeat(&mut h.core, T0 + 13 * SEC);
    assert_eq!(reply.run.len(), 2);

    // a comes back still running the old task: told to kill it.
    let reply = a.heartbeat(&mut h.core, T0 + 14 * SEC);
    assert!(reply.run.is_empty());
    assert_eq!(reply.kill.len(), 1);
    assert_eq!(reply.kill[0].task_id, on_a.task_id);
    assert_eq!(reply.kill[0].reason, "rescheduled after lost");
    assert_eq!(reply.kill[0].actor, "system:scheduler");
    // Its report of the kill ends it; nothing else changes.
    let reply = a.heartbeat(&mut h.core, T0 + 15 * SEC);
    assert!(reply.kill.is_empty() && reply.run.is_empty());
    assert!(a.tasks.is_empty());
    assert!(h.core.nodes()[0].alive);
}

#[test]
fn an_agent_that_forgets_a_task_gets_it_replaced_and_unknown_tasks_killed() {
    let mut h = harness();
    let mut a = FakeAgent::new("a", 4.0, 4096);
    a.heartbeat(&mut h.core, T0);
    h.core.submit(job("web", 1, 1.0, 512), "alice", T0).unwrap();
    a.heartbeat(&mut h.core, T0 + SEC / 2);
    a.heartbeat(&mut h.core, T0 + SEC);
    let first = h.core.describe(&key("web")).unwrap().instances[0].clone();
    assert_eq!(first.state(), TaskState::Running);
    // The agent restarts and knows nothing, except a task nobody placed.
    a.tasks.clear();
    a.tasks.insert(
        "stray".into(),
        TaskReport {
            task_id: "stray".into(),
            state: TaskState::Running as i32,
            ..TaskReport::default()
        },
    );
    let reply = a.heartbeat(&mut h.core, T0 + 2 * SEC);
    assert_eq!(reply.kill.len(), 1);
    assert_eq!(
        (
            reply.kill[0].task_id.as_str(),
            reply.kill[0].reason.as_str()
        ),
        ("stray", "unknown task")
    );
    assert_eq!(reply.run.len(), 1);
    assert_ne!(reply.run[0].task_id, first.task_id);
    let job = h.core.job(&key("web")).unwrap();
    let tasks = &job.instances[&0].tasks;
    assert_eq!(tasks[0].state, TaskState::Lost);
    assert_eq!(tasks[0].reason, "node a no longer reports it");

    // The node loses a task itself (its executor died): placed again.
    let second = reply.run[0].task_id.clone();
    a.heartbeat(&mut h.core, T0 + 3 * SEC);
    a.set_state(&second, TaskState::Lost, None);
    let reply = a.heartbeat(&mut h.core, T0 + 4 * SEC);
    assert_eq!(reply.run.len(), 1);
    assert_ne!(reply.run[0].task_id, second);
    assert_eq!(
        h.core.job(&key("web")).unwrap().instances[&0].tasks.len(),
        3
    );
}

#[test]
fn a_killed_job_gets_kill_orders_with_the_actor() {
    let mut h = harness();
    let mut a = FakeAgent::new("a", 4.0, 4096);
    a.heartbeat(&mut h.core, T0);
    h.core.submit(job("web", 2, 1.0, 512), "alice", T0).unwrap();
    h.core
        .submit(job("big", 1, 64.0, 512), "alice", T0)
        .unwrap();
    a.heartbeat(&mut h.core, T0 + SEC);

    let status = h.core.kill(&key("web"), "bob", T0 + 2 * SEC).unwrap();
    assert_eq!(status.state, "killing");
    let reply = a.heartbeat(&mut h.core, T0 + 3 * SEC);
    assert!(reply.run.is_empty());
    assert_eq!(reply.kill.len(), 2);
    assert!(
        reply
            .kill
            .iter()
            .all(|k| k.actor == "bob" && k.reason == "job killed")
    );
    // The agent reports them killed.
    a.heartbeat(&mut h.core, T0 + 4 * SEC);
    let status = h.core.describe(&key("web")).unwrap();
    assert_eq!(status.state, "killed");
    assert!(
        status
            .instances
            .iter()
            .all(|i| i.state() == TaskState::Killed)
    );
    let killed = events_of(&h.sink, EventKind::JobKilled);
    assert_eq!(killed.len(), 1);
    assert_eq!(
        (killed[0].actor.as_str(), killed[0].job.as_str()),
        ("bob", "search/devel/web")
    );

    // A pending job is killed at once, by the scheduler, for bob.
    let status = h.core.kill(&key("big"), "bob", T0 + 5 * SEC).unwrap();
    assert_eq!(status.state, "killed");
    let to_killed: Vec<_> = events_of(&h.sink, EventKind::TaskState)
        .into_iter()
        .filter(|e| e.attributes["to"] == "killed")
        .collect();
    assert_eq!(to_killed.len(), 1);
    assert_eq!(to_killed[0].actor, "bob");
    assert_eq!(to_killed[0].attributes["from"], "pending");

    // Killing again changes nothing; a killed key may be submitted again.
    h.core.kill(&key("web"), "carol", T0 + 6 * SEC).unwrap();
    assert_eq!(events_of(&h.sink, EventKind::JobKilled).len(), 2);
    let status = h
        .core
        .submit(job("web", 1, 1.0, 512), "carol", T0 + 7 * SEC)
        .unwrap();
    assert_eq!(status.state, "running");
    assert_eq!(status.actor, "carol");
    let err = h
        .core
        .submit(job("web", 1, 1.0, 512), "carol", T0 + 8 * SEC)
        .unwrap_err();
    assert!(
        matches!(&err, RequestError::AlreadyExists(m) if m.contains("search/devel/web")),
        "{err}"
    );
    let err = h
        .core
        .update(job("nope", 1, 1.0, 512), "carol", T0)
        .unwrap_err();
    assert_eq!(
        err,
        RequestError::NotFound("no job search/devel/nope".into())
    );
    let err = h
        .core
        .update(job("big", 1, 1.0, 512), "carol", T0)
        .unwrap_err();
    assert!(matches!(err, RequestError::FailedPrecondition(_)));
}

#[test]
fn update_restarts_changed_instances_only() {
    let mut h = harness();
    let mut a = FakeAgent::new("a", 16.0, 16384);
    a.heartbeat(&mut h.core, T0);
    h.core.submit(job("web", 2, 1.0, 512), "alice", T0).unwrap();
    a.heartbeat(&mut h.core, T0 + SEC);
    let before = h.core.describe(&key("web")).unwrap();

    // More instances, same task: the two running ones are untouched.
    let status = h
        .core
        .update(job("web", 3, 1.0, 512), "bob", T0 + 2 * SEC)
        .unwrap();
    assert_eq!(status.actor, "bob");
    assert_eq!(status.instances[..2], before.instances[..2]);
    assert_eq!(status.instances[2].state(), TaskState::Assigned);
    let reply = a.heartbeat(&mut h.core, T0 + 3 * SEC);
    assert!(reply.kill.is_empty());
    assert_eq!(reply.run.len(), 3);

    // A new command: every instance restarts, as bob asked.
    let changed = spec::parse(&yaml("web", 3, 1.0, 512, "./serve --fast"), None).unwrap();
    let old: Vec<String> = h
        .core
        .describe(&key("web"))
        .unwrap()
        .instances
        .iter()
        .map(|i| i.task_id.clone())
        .collect();
    h.core.update(changed, "bob", T0 + 4 * SEC).unwrap();
    let reply = a.heartbeat(&mut h.core, T0 + 5 * SEC);
    assert!(
        reply.run.is_empty(),
        "replacements wait for the old tasks to stop"
    );
    let mut killed: Vec<String> = reply.kill.iter().map(|k| k.task_id.clone()).collect();
    killed.sort();
    let mut expected = old.clone();
    expected.sort();
    assert_eq!(killed, expected);
    assert!(
        reply
            .kill
            .iter()
            .all(|k| k.actor == "bob" && k.reason == "updated")
    );
    // The agent reports them killed: fresh tasks are placed and run.
    let reply = a.heartbeat(&mut h.core, T0 + 6 * SEC);
    assert_eq!(reply.run.len(), 3);
    assert!(reply.run.iter().all(|r| !old.contains(&r.task_id)));
    assert!(reply.run[0].spec_json.contains("--fast"));
    let status = h.core.describe(&key("web")).unwrap();
    assert!(
        status
            .instances
            .iter()
            .all(|i| i.state() == TaskState::Assigned)
    );
    a.heartbeat(&mut h.core, T0 + 7 * SEC);

    // Fewer instances: the extra ones are killed, then gone.
    let status = h
        .core
        .update(
            spec::parse(&yaml("web", 1, 1.0, 512, "./serve --fast"), None).unwrap(),
            "bob",
            T0 + 8 * SEC,
        )
        .unwrap();
    assert_eq!(status.instances.len(), 3);
    let reply = a.heartbeat(&mut h.core, T0 + 9 * SEC);
    assert_eq!(reply.kill.len(), 2);
    assert!(reply.kill.iter().all(|k| k.reason == "instance removed"));
    a.heartbeat(&mut h.core, T0 + 10 * SEC);
    let status = h.core.describe(&key("web")).unwrap();
    assert_eq!(instances(&status), [(0, TaskState::Running, "a".into())]);
    let updated = events_of(&h.sink, EventKind::JobUpdated);
    assert_eq!(updated.len(), 3);
    assert!(updated.iter().all(|e| e.actor == "bob"));
}

#[test]
fn an_update_gives_a_failed_instance_a_fresh_task() {
    let mut h = harness();
    let mut a = FakeAgent::new("a", 4.0, 4096);
    a.heartbeat(&mut h.core, T0);
    h.core.submit(job("web", 1, 1.0, 512), "alice", T0).unwrap();
    a.heartbeat(&mut h.core, T0 + SEC);
    let failed = h.core.describe(&key("web")).unwrap().instances[0]
        .task_id
        .clone();
    a.set_state(&failed, TaskState::Failed, Some(3));
    a.heartbeat(&mut h.core, T0 + 2 * SEC);
    let status = h.core.describe(&key("web")).unwrap();
    assert_eq!(status.state, "finished");
    assert_eq!(status.instances[0].exit_code, Some(3));
    // The same spec again changes nothing; a fixed one runs afresh.
    h.core
        .update(job("web", 1, 1.0, 512), "alice", T0 + 3 * SEC)
        .unwrap();
    assert_eq!(h.core.describe(&key("web")).unwrap().state, "finished");
    let fixed = spec::parse(&yaml("web", 1, 1.0, 512, "./serve --fixed"), None).unwrap();
    let status = h.core.update(fixed, "alice", T0 + 4 * SEC).unwrap();
    assert_eq!(status.state, "running");
    assert_eq!(status.instances[0].state(), TaskState::Assigned);
    assert_ne!(status.instances[0].task_id, failed);
}

#[test]
fn cron_runs_once_per_tick_and_never_overlaps() {
    let mut h = harness();
    let mut a = FakeAgent::new("a", 4.0, 4096);
    a.heartbeat(&mut h.core, T0);
    let cron = format!(
        "{}cron: '*/5 * * * *'\n",
        yaml("report", 1, 1.0, 256, "./report")
    );
    let start = T0 + 10 * SEC;
    let status = h
        .core
        .submit(spec::parse(&cron, None).unwrap(), "alice", start)
        .unwrap();
    assert_eq!(status.instances[0].state(), TaskState::Pending);
    assert_eq!(status.instances[0].task_id, "");
    assert!(
        status.instances[0].reason.contains("2026-01-01T00:05:00"),
        "{status:?}"
    );
    let minute = 60 * SEC;
    let tasks = |core: &SchedulerCore| {
        core.job(&key("report")).unwrap().instances[&0]
            .tasks
            .clone()
    };

    // Before the tick: nothing.
    h.core.tick(T0 + 4 * minute);
    assert!(tasks(&h.core).is_empty());
    // First tick: one run, placed and started.
    h.core.tick(T0 + 5 * minute);
    h.core.tick(T0 + 5 * minute + SEC);
    assert_eq!(tasks(&h.core).len(), 1);
    a.heartbeat(&mut h.core, T0 + 5 * minute + 2 * SEC);
    let first = tasks(&h.core)[0].id.clone();
    // Second tick while it runs: skipped.
    a.heartbeat(&mut h.core, T0 + 10 * minute);
    h.core.tick(T0 + 10 * minute);
    assert_eq!(tasks(&h.core).len(), 1);
    // It finishes; the next tick starts one more.
    a.set_state(&first, TaskState::Finished, Some(0));
    a.heartbeat(&mut h.core, T0 + 12 * minute);
    assert_eq!(h.core.describe(&key("report")).unwrap().state, "running");
    h.core.tick(T0 + 14 * minute);
    assert_eq!(tasks(&h.core).len(), 1);
    a.heartbeat(&mut h.core, T0 + 15 * minute);
    h.core.tick(T0 + 15 * minute);
    let all = tasks(&h.core);
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].state, TaskState::Finished);
    assert_eq!(all[0].exit_code, Some(0));
    assert_eq!(all[1].state, TaskState::Assigned);
    // A scheduler down for many ticks runs once, not once per missed tick.
    a.heartbeat(&mut h.core, T0 + 15 * minute + SEC);
    a.set_state(&all[1].id, TaskState::Finished, Some(0));
    a.heartbeat(&mut h.core, T0 + 16 * minute);
    h.core.tick(T0 + 60 * minute);
    h.core.tick(T0 + 60 * minute + SEC);
    assert_eq!(tasks(&h.core).len(), 3);
}

#[test]
fn state_survives_reopening_and_nodes_get_a_grace_period() {
    let mut h = harness();
    let mut a = FakeAgent::new("a", 4.0, 4096);
    a.heartbeat(&mut h.core, T0);
    h.core.submit(job("web", 2, 1.0, 512), "alice", T0).unwrap();
    h.core
        .submit(job("gone", 1, 1.0, 512), "alice", T0)
        .unwrap();
    h.core.kill(&key("gone"), "bob", T0).unwrap();
    a.heartbeat(&mut h.core, T0 + SEC);
    a.heartbeat(&mut h.core, T0 + 2 * SEC);
    h.core.save().unwrap();
    assert!(h.core.snapshot().is_none(), "saved");
    let before = h.core.list(&|_| true);
    assert_eq!(before.len(), 2);

    let sink = Arc::new(VecSink::default());
    let restart = T0 + 100 * SEC;
    let mut core = SchedulerCore::open(config(&h.dir), sink.clone(), restart).unwrap();
    let mut after = core.list(&|_| true);
    // Nodes are unknown until they heartbeat, so the endpoint shown is the
    // one last heard.
    assert_eq!(after, before);
    assert!(core.nodes().is_empty());
    core.tick(restart + 9 * SEC);
    after = core.list(&|_| true);
    assert_eq!(after, before, "within the grace period nothing is lost");
    // The node heartbeats in time: its tasks carry on.
    let reply = a.heartbeat(&mut core, restart + 9 * SEC);
    assert_eq!(reply.run.len(), 2);
    assert!(reply.kill.is_empty());
    core.tick(restart + 15 * SEC);
    assert_eq!(
        core.describe(&key("web")).unwrap().instances,
        before[1].instances
    );
    assert!(sink.events().is_empty());

    // Without a heartbeat, after the grace period: lost.
    let mut core = SchedulerCore::open(config(&h.dir), sink.clone(), restart).unwrap();
    core.tick(restart + 11 * SEC);
    let status = core.describe(&key("web")).unwrap();
    assert!(
        status
            .instances
            .iter()
            .all(|i| i.state() == TaskState::Pending),
        "{status:?}"
    );
    assert_eq!(core.describe(&key("gone")).unwrap().state, "killed");
}

#[test]
fn a_corrupt_state_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let sink = Arc::new(VecSink::default());
    for (text, words) in [
        ("{not json", "key must be a string"),
        (r#"{"format": 2, "jobs": []}"#, "format 2"),
        (r#"{"format": 1, "jobz": []}"#, "unknown field `jobz`"),
    ] {
        std::fs::write(&path, text).unwrap();
        let err = SchedulerCore::open(SchedulerConfig::new(&path), sink.clone(), T0)
            .err()
            .expect("a corrupt file is refused")
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("corrupt scheduler state"), "{err}");
        assert!(err.contains(words), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "left as it was"
        );
    }
}

#[test]
fn events_record_submits_and_placements() {
    let mut h = harness();
    let mut a = FakeAgent::new("a", 4.0, 4096);
    a.heartbeat(&mut h.core, T0);
    h.core.submit(job("web", 1, 1.0, 512), "alice", T0).unwrap();
    let events = h.sink.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind(), EventKind::JobSubmitted);
    assert_eq!(events[0].actor, "alice");
    assert_eq!(events[0].job, "search/devel/web");
    assert_eq!(events[0].id, format!("scheduler/{T0}-0"));
    assert_eq!(events[1].kind(), EventKind::TaskState);
    assert_eq!(events[1].actor, "system:scheduler");
    assert_eq!(events[1].host, "a");
    assert_eq!(events[1].instance, Some(0));
    assert_eq!(
        (
            events[1].attributes["from"].as_str(),
            events[1].attributes["to"].as_str()
        ),
        ("pending", "assigned")
    );
    // Node-reported changes are the node's to emit.
    a.heartbeat(&mut h.core, T0 + SEC);
    assert_eq!(h.sink.events().len(), 2);
}

#[test]
fn task_ids_are_valid_names_even_for_long_keys() {
    let long = "x".repeat(64);
    let key = JobKey::new(&long, &long, &long).unwrap();
    let taken: HashMap<String, ()> = HashMap::new();
    let id = new_task_id(&key, 9999, &taken);
    assert_eq!(id.len(), 64);
    valid_name("task_id", &id).unwrap();
    let id = new_task_id(&super::tests::key("web"), 3, &taken);
    let (prefix, random) = id.rsplit_once('-').unwrap();
    assert_eq!(prefix, "search-devel-web-3");
    assert!(random.len() == 8 && random.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn heartbeats_with_bad_fields_are_refused() {
    let mut h = harness();
    for (node, cpu, words) in [
        ("", 1.0, "node: must be 1 to"),
        ("../x", 1.0, "node: \"../x\" may hold only"),
        ("a", f64::NAN, "cpu: must be a non-negative number"),
    ] {
        let request = AgentHeartbeatRequest {
            node: node.into(),
            cpu,
            ..AgentHeartbeatRequest::default()
        };
        let err = h.core.heartbeat(request, T0).unwrap_err();
        assert!(
            matches!(&err, RequestError::InvalidArgument(m) if m.contains(words)),
            "{err}"
        );
    }
}

// ---- property test ----

#[derive(Debug, Clone)]
enum Op {
    Heartbeat(usize),
    /// An agent's task ends on its own (finished, failed or lost).
    End(usize, usize, u8),
    /// An agent restarts and forgets its tasks.
    Forget(usize),
    Submit(usize, u32, u32, u64),
    Update(usize, u32, bool),
    Kill(usize),
    Advance(i64),
}

const JOBS: [&str; 3] = ["a", "b", "c"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize).prop_map(Op::Heartbeat),
        1 => (0..3usize, 0..8usize, 0..3u8).prop_map(|(a, i, how)| Op::End(a, i, how)),
        1 => (0..3usize).prop_map(Op::Forget),
        2 => (0..3usize, 1..6u32, 1..30u32, 1..4u64)
            .prop_map(|(j, n, tenths, ram)| Op::Submit(j, n, tenths, ram * 256)),
        1 => (0..3usize, 1..6u32, any::<bool>()).prop_map(|(j, n, c)| Op::Update(j, n, c)),
        1 => (0..3usize).prop_map(Op::Kill),
        3 => (0..6_000i64).prop_map(Op::Advance),
    ]
}

/// No node holds more than its capacity; no instance has two live tasks.
fn check_invariants(core: &SchedulerCore, agents: &[FakeAgent]) -> Result<(), TestCaseError> {
    let mut used: HashMap<String, Capacity> = HashMap::new();
    for status in core.list(&|_| true) {
        let job = core.job(&status.job.parse().unwrap()).unwrap();
        for (i, inst) in &job.instances {
            let live: Vec<_> = inst
                .tasks
                .iter()
                .filter(|t| !is_terminal(t.state))
                .collect();
            prop_assert!(live.len() <= 1, "{} instance {i}: {live:?}", status.job);
            for task in live {
                if !task.host.is_empty() {
                    let total = used.entry(task.host.clone()).or_default();
                    *total = total.plus(Capacity::of(&task.resources));
                }
            }
        }
    }
    for agent in agents {
        let capacity = Capacity::new(agent.cpu, agent.ram_mb, agent.disk_mb);
        let used = used.get(&agent.name).copied().unwrap_or_default();
        prop_assert!(
            used.fits_in(capacity),
            "{}: {used:?} > {capacity:?}",
            agent.name
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn nodes_never_overfill_and_instances_never_run_twice(
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(VecSink::default());
        let mut core = SchedulerCore::open(config(&dir), sink, T0).unwrap();
        let mut agents = vec![
            FakeAgent::new("n0", 2.0, 1024),
            FakeAgent::new("n1", 3.0, 2048),
            FakeAgent::new("n2", 4.5, 512),
        ];
        let mut now = T0;
        for op in ops {
            now += 1_000_000;
            match op {
                Op::Heartbeat(a) => {
                    let reply = agents[a].heartbeat(&mut core, now);
                    let ids: HashSet<&str> = reply.run.iter().map(|r| r.task_id.as_str()).collect();
                    prop_assert_eq!(ids.len(), reply.run.len(), "a task assigned twice");
                }
                Op::End(a, i, how) => {
                    let live: Vec<String> = agents[a].tasks.iter()
                        .filter(|(_, t)| !is_terminal(t.state()))
                        .map(|(id, _)| id.clone())
                        .collect();
                    if let Some(id) = live.get(i) {
                        let (state, code) = match how {
                            0 => (TaskState::Finished, Some(0)),
                            1 => (TaskState::Failed, Some(1)),
                            _ => (TaskState::Lost, None),
                        };
                        agents[a].set_state(id, state, code);
                    }
                }
                Op::Forget(a) => agents[a].tasks.clear(),
                Op::Submit(j, n, tenths, ram) => {
                    let spec = job(JOBS[j], n, f64::from(tenths) / 10.0, ram);
                    let _ = core.submit(spec, "alice", now);
                }
                Op::Update(j, n, change) => {
                    let cmd = if change { "./serve --v2" } else { "./serve" };
                    let spec = spec::parse(&yaml(JOBS[j], n, 1.0, 256, cmd), None).unwrap();
                    let _ = core.update(spec, "bob", now);
                }
                Op::Kill(j) => {
                    let _ = core.kill(&key(JOBS[j]), "carol", now);
                }
                Op::Advance(ms) => {
                    now += ms * 1_000_000;
                    core.tick(now);
                }
            }
            check_invariants(&core, &agents)?;
        }
    }
}

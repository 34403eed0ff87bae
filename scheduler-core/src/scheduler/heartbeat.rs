//! Heartbeats: a node agent reports what it runs and learns what it must
//! run and kill. The node's reports update the tasks it holds; a task it
//! reports that the scheduler considers terminal, belongs elsewhere or does
//! not know gets a kill order; a task it stopped reporting is gone from it
//! (LOST, and placed again) unless it was an assignment not yet started.

use std::collections::HashSet;

use sluice_schema::pb::{
    AgentHeartbeatReply, AgentHeartbeatRequest, KillOrder, TaskAssignment, TaskReport, TaskState,
};

use super::engine::{RequestError, SCHEDULER_ACTOR, SchedulerCore, set_state, spec_json_of};
use super::placement::{Agent, Capacity};
use super::state::{is_terminal, state_name};

/// Longest node name and tail endpoint accepted in a heartbeat.
const MAX_NODE_FIELD: usize = 1024;

impl SchedulerCore {
    /// A node's heartbeat: records its capacity and its tasks' reports, and
    /// answers with every task it should run and every task it must kill.
    pub fn heartbeat(
        &mut self,
        request: AgentHeartbeatRequest,
        now: i64,
    ) -> Result<AgentHeartbeatReply, RequestError> {
        check_heartbeat(&request)?;
        let node = request.node.clone();
        let agent = self.agents.entry(node.clone()).or_insert_with(|| Agent {
            name: node.clone(),
            tail_endpoint: String::new(),
            capacity: Capacity::default(),
            cpu: 0.0,
            last_heartbeat_unix_nanos: now,
            alive: false,
        });
        if !agent.alive {
            tracing::info!(node, tail = request.tail_endpoint, "node is live");
        }
        agent.alive = true;
        agent.last_heartbeat_unix_nanos = now;
        agent.tail_endpoint.clone_from(&request.tail_endpoint);
        agent.capacity = Capacity::new(request.cpu, request.ram_mb, request.disk_mb);
        agent.cpu = request.cpu;

        let mut kills = Vec::new();
        let mut reported = HashSet::new();
        for report in &request.tasks {
            reported.insert(report.task_id.as_str());
            if let Some(order) = self.apply_report(&node, report, now) {
                kills.push(order);
            }
        }
        self.settle_unreported(&node, &request.tail_endpoint, &reported, now);
        self.reconcile(now);

        let mut run = Vec::new();
        for (key, job) in &self.jobs {
            let mut spec_json = None;
            for (&instance, inst) in &job.instances {
                let Some(task) = inst.current() else { continue };
                if task.host != node || is_terminal(task.state) {
                    continue;
                }
                match &task.kill {
                    Some(kill) => kills.push(KillOrder {
                        task_id: task.id.clone(),
                        actor: kill.actor.clone(),
                        reason: kill.reason.clone(),
                    }),
                    None => run.push(TaskAssignment {
                        task_id: task.id.clone(),
                        job: key.to_string(),
                        instance,
                        spec_json: spec_json
                            .get_or_insert_with(|| spec_json_of(&job.spec))
                            .clone(),
                    }),
                }
            }
        }
        Ok(AgentHeartbeatReply {
            run,
            kill: kills,
            timeout_ms: u32::try_from(self.config.agent_timeout_ms).unwrap_or(u32::MAX),
        })
    }

    /// Applies one task report of `node`; returns a kill order for a task
    /// the node should not be running.
    fn apply_report(&mut self, node: &str, report: &TaskReport, now: i64) -> Option<KillOrder> {
        let reported = TaskState::try_from(report.state).unwrap_or(TaskState::Unspecified);
        let live = !is_terminal(reported);
        let order = |actor: &str, reason: String| KillOrder {
            task_id: report.task_id.clone(),
            actor: actor.to_string(),
            reason,
        };
        let Some((key, instance)) = self.tasks.get(&report.task_id) else {
            return live.then(|| order(SCHEDULER_ACTOR, "unknown task".into()));
        };
        let job = self.jobs.get_mut(key)?;
        let keep = job.killed.is_none();
        let inst = job.instances.get_mut(instance)?;
        let replace = &mut inst.replace;
        let keep = keep && !inst.removed;
        let task = inst.tasks.iter_mut().find(|t| t.id == report.task_id)?;
        if task.host != node {
            let reason = format!("task belongs to node {}", task.host);
            return live.then(|| order(SCHEDULER_ACTOR, reason));
        }
        if is_terminal(task.state) {
            task.sandbox_bytes = report.sandbox_bytes;
            let (actor, reason) = match (&task.kill, task.state) {
                (_, TaskState::Lost) => (SCHEDULER_ACTOR, "rescheduled after lost".to_string()),
                (Some(kill), _) => (kill.actor.as_str(), kill.reason.clone()),
                (None, state) => (SCHEDULER_ACTOR, format!("task is {}", state_name(state))),
            };
            return live.then(|| order(actor, reason));
        }
        let mut changed = false;
        if matches!(
            reported,
            TaskState::Starting
                | TaskState::Running
                | TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Lost
        ) && reported != task.state
        {
            task.state = reported;
            changed = true;
            // The node lost it (its executor died): placed again, as for
            // a lost node, unless someone wanted it stopped.
            if reported == TaskState::Lost && task.kill.is_none() {
                *replace |= keep;
            }
        }
        if (task.run, task.exit_code, task.restarts)
            != (report.run, report.exit_code, report.restarts)
            || task.reason != report.reason
        {
            (task.run, task.exit_code, task.restarts) =
                (report.run, report.exit_code, report.restarts);
            task.reason.clone_from(&report.reason);
            changed = true;
        }
        task.sandbox_bytes = report.sandbox_bytes;
        if changed {
            task.updated_unix_nanos = now;
            self.version += 1;
        }
        None
    }

    /// The live tasks of `node` it did not report: an assignment not yet
    /// started stays (or is dropped, if it was killed meanwhile); anything
    /// further along is gone from the node.
    fn settle_unreported(
        &mut self,
        node: &str,
        tail_endpoint: &str,
        reported: &HashSet<&str>,
        now: i64,
    ) {
        for (key, job) in self.jobs.iter_mut() {
            let keep = job.killed.is_none();
            for (&i, inst) in job.instances.iter_mut() {
                let Some(task) = inst.current_mut() else {
                    continue;
                };
                if task.host != node || is_terminal(task.state) {
                    continue;
                }
                if task.tail_endpoint != tail_endpoint {
                    task.tail_endpoint = tail_endpoint.to_string();
                    self.version += 1;
                }
                if reported.contains(task.id.as_str()) {
                    continue;
                }
                let (state, reason) = match (&task.kill, task.state) {
                    (None, TaskState::Assigned) => continue,
                    (Some(kill), _) => (TaskState::Killed, kill.reason.clone()),
                    (None, _) => (TaskState::Lost, format!("node {node} no longer reports it")),
                };
                set_state(&self.events, now, key, i, task, state, reason);
                if state == TaskState::Lost {
                    inst.replace |= keep && !inst.removed;
                }
                self.version += 1;
            }
        }
    }
}

fn check_heartbeat(request: &AgentHeartbeatRequest) -> Result<(), RequestError> {
    let node = &request.node;
    let bad = |m: String| Err(RequestError::InvalidArgument(m));
    if node.is_empty() || node.len() > MAX_NODE_FIELD {
        return bad(format!(
            "node: must be 1 to {MAX_NODE_FIELD} bytes, got {}",
            node.len()
        ));
    }
    if !node
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return bad(format!(
            "node: {node:?} may hold only letters, digits, '_', '.' and '-'"
        ));
    }
    if request.tail_endpoint.len() > MAX_NODE_FIELD {
        return bad(format!("tail_endpoint: longer than {MAX_NODE_FIELD} bytes"));
    }
    if !(request.cpu.is_finite() && request.cpu >= 0.0) {
        return bad(format!(
            "cpu: must be a non-negative number, got {}",
            request.cpu
        ));
    }
    Ok(())
}

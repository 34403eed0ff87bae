//! Where the selected instances are: the scheduler's `ListJobs` for the
//! job glob (each instance's current task, run, state, node and the node's
//! Tail address) and `Nodes` (the addresses of nodes no instance lists any
//! more, whose old runs may still have lines to send). Polled every
//! `--refresh` (1 s), or sooner when a stream hints that something changed.
//!
//! Comparing two placements gives the lifecycle lines the scheduler alone
//! knows: instances added or removed (scaling), placed again elsewhere
//! (rescheduled), replaced by a new task (cron), lost with their node. The
//! nodes' own events (restarts, exits, quota kills) arrive on the Tail
//! streams and are worded by [`event_notice`].
//!
//! Where no Sluice scheduler runs (`sluice up --no-scheduler` for a
//! Kubernetes, Nomad or Aurora cluster), the Scheduler service is not
//! there: the admin service's node directory says which shippers hold the
//! job, and lines say when the job appears on a node or leaves it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use sluice_schema::glob::JobGlob;
use sluice_schema::pb::admin_client::AdminClient;
use sluice_schema::pb::scheduler_client::SchedulerClient;
use sluice_schema::pb::{
    ClusterEvent, EventKind, ListJobsRequest, ListShippersRequest, NodeStatusRequest, TaskState,
};
use tokio::sync::{Notify, mpsc};

use crate::args::Instances;
use crate::client::{self, AuthedChannel, ClusterAddress};
use crate::render::Notice;

/// Polls no closer together than this, however many hints arrive.
const MIN_POLL_GAP: Duration = Duration::from_millis(200);
/// A call to the scheduler that takes longer has failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One selected instance's current task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The scheduler's id of the task; a new id means a new task (rescheduled,
    /// cron).
    pub task_id: String,
    /// Run (restart) number of the task, from 0.
    pub run: u32,
    /// The task's state as the scheduler last saw it (`Unspecified` if this
    /// build does not know it).
    pub state: TaskState,
    /// Node name; empty while pending.
    pub host: String,
    /// Why it is in this state (`exit 3`, `no node has room: …`); may be empty.
    pub reason: String,
}

/// What the scheduler said, filtered to the selected instances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Jobs the glob matched.
    pub jobs: BTreeSet<String>,
    /// `(job, instance)` → its task.
    pub instances: BTreeMap<(String, u32), Instance>,
    /// Node name → its Tail service address.
    pub endpoints: BTreeMap<String, String>,
    /// Without a scheduler: node → the selected jobs its shipper holds
    /// (from the node directory; stale shippers left out).
    pub holders: BTreeMap<String, BTreeSet<String>>,
}

impl Placement {
    /// Nodes that hold a selected instance.
    pub fn hosts(&self) -> BTreeSet<String> {
        self.instances
            .values()
            .filter(|i| !i.host.is_empty())
            .map(|i| i.host.clone())
            .chain(self.holders.keys().cloned())
            .collect()
    }

    /// The highest selected instance number (0 when none), for the width of
    /// prefixes.
    pub fn max_instance(&self) -> u32 {
        self.instances.keys().map(|(_, i)| *i).max().unwrap_or(0)
    }
}

/// Why a poll failed.
#[derive(Debug)]
pub enum PollError {
    /// Refused for good (bad token, no permission, bad glob).
    Fatal(anyhow::Error),
    /// Worth trying again (unreachable, restarting).
    Transient(anyhow::Error),
}

impl PollError {
    /// The error, whether fatal or not.
    pub fn into_inner(self) -> anyhow::Error {
        match self {
            PollError::Fatal(e) | PollError::Transient(e) => e,
        }
    }
}

/// Whether a refusal is final: the same call will be refused again.
pub fn is_fatal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::InvalidArgument
            | tonic::Code::Unimplemented
    )
}

/// A refusal as the user should read it.
pub fn status_error(what: &str, endpoint: &str, status: &tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unauthenticated => anyhow::anyhow!(
            "{what} at {endpoint} refused the token: {} (check SLUICE_TOKEN or client.toml)",
            status.message()
        ),
        tonic::Code::PermissionDenied => {
            anyhow::anyhow!(
                "permission denied by {what} at {endpoint}: {}",
                status.message()
            )
        }
        _ => anyhow::anyhow!(
            "{what} at {endpoint} failed: {} ({:?})",
            status.message(),
            status.code()
        ),
    }
}

/// A refusal as a poll's error: fatal when the same call would be refused
/// again.
fn poll_error(what: &str, endpoint: &str, status: &tonic::Status) -> PollError {
    let error = status_error(what, endpoint, status);
    if is_fatal(status.code()) {
        PollError::Fatal(error)
    } else {
        PollError::Transient(error)
    }
}

/// The scheduler, reconnected (and looked up again) when it stops answering.
pub struct Scheduler {
    address: ClusterAddress,
    glob: JobGlob,
    instances: Option<Instances>,
    client: Option<(String, Clients)>,
}

struct Clients {
    scheduler: SchedulerClient<AuthedChannel>,
    admin: AdminClient<AuthedChannel>,
    /// The endpoint serves no Scheduler: the node directory is asked.
    no_scheduler: bool,
}

impl Scheduler {
    /// A poller of `glob`'s instances (only `instances`, if given) at the
    /// scheduler `address` names; it connects on the first poll.
    pub fn new(address: ClusterAddress, glob: JobGlob, instances: Option<Instances>) -> Self {
        Scheduler {
            address,
            glob,
            instances,
            client: None,
        }
    }

    /// Asks the scheduler once where the selected instances are. A transient
    /// failure drops the connection: the next poll looks the address up again
    /// and reconnects.
    pub async fn poll(&mut self) -> Result<Placement, PollError> {
        let result = self.try_poll().await;
        if matches!(result, Err(PollError::Transient(_))) {
            self.client = None;
        }
        result
    }

    async fn try_poll(&mut self) -> Result<Placement, PollError> {
        let cluster = self.address.resolve().map_err(PollError::Fatal)?;
        let endpoint = cluster.endpoint.clone();
        if self.client.as_ref().is_none_or(|(e, _)| *e != endpoint) {
            let connect = client::connect(&endpoint, &cluster.token, cluster.ca.as_deref());
            let channel = tokio::time::timeout(CALL_TIMEOUT, connect)
                .await
                .map_err(|_| {
                    PollError::Transient(anyhow::anyhow!(
                        "failed to connect to the scheduler at {endpoint}: timed out"
                    ))
                })?
                .map_err(|e| PollError::Transient(e.context("cannot reach the scheduler")))?;
            let clients = Clients {
                scheduler: SchedulerClient::new(channel.clone()),
                admin: AdminClient::new(channel),
                no_scheduler: false,
            };
            self.client = Some((endpoint.clone(), clients));
        }
        let (_, clients) = self.client.as_mut().expect("connected above");
        let call = |status: tonic::Status| poll_error("the scheduler", &endpoint, &status);
        let timed_out = || {
            PollError::Transient(anyhow::anyhow!(
                "the scheduler at {endpoint} did not answer"
            ))
        };
        let scheduler = &mut clients.scheduler;
        let jobs = if clients.no_scheduler {
            None
        } else {
            let listed = tokio::time::timeout(
                CALL_TIMEOUT,
                scheduler.list_jobs(ListJobsRequest {
                    glob: self.glob.as_str().to_string(),
                }),
            )
            .await
            .map_err(|_| timed_out())?;
            match listed {
                Err(status) if status.code() == tonic::Code::Unimplemented => None,
                listed => Some(listed.map_err(call)?.into_inner().jobs),
            }
        };
        let Some(jobs) = jobs else {
            clients.no_scheduler = true;
            return directory(
                &mut clients.admin,
                &self.glob,
                self.instances.as_ref(),
                &endpoint,
            )
            .await;
        };
        // Nodes no instance lists may still hold old runs: their addresses
        // too. Any authenticated caller may ask; a failure costs nothing.
        let nodes = tokio::time::timeout(CALL_TIMEOUT, scheduler.nodes(NodeStatusRequest {}))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|r| r.into_inner().nodes)
            .unwrap_or_default();

        let mut placement = Placement::default();
        for node in nodes {
            if !node.tail_endpoint.is_empty() {
                placement.endpoints.insert(node.node, node.tail_endpoint);
            }
        }
        for job in jobs {
            placement.jobs.insert(job.job.clone());
            for i in job.instances {
                if self
                    .instances
                    .as_ref()
                    .is_some_and(|set| !set.contains(i.instance))
                {
                    continue;
                }
                if !i.host.is_empty() && !i.tail_endpoint.is_empty() {
                    placement
                        .endpoints
                        .insert(i.host.clone(), i.tail_endpoint.clone());
                }
                placement.instances.insert(
                    (job.job.clone(), i.instance),
                    Instance {
                        task_id: i.task_id,
                        run: i.run,
                        state: TaskState::try_from(i.state).unwrap_or(TaskState::Unspecified),
                        host: i.host,
                        reason: i.reason,
                    },
                );
            }
        }
        Ok(placement)
    }
}

/// Where the selected jobs are by the admin service's node directory: each
/// live shipper holding one (of a selected instance) is followed.
async fn directory(
    admin: &mut AdminClient<AuthedChannel>,
    glob: &JobGlob,
    instances: Option<&Instances>,
    endpoint: &str,
) -> Result<Placement, PollError> {
    let listed = tokio::time::timeout(
        CALL_TIMEOUT,
        admin.list_shippers(ListShippersRequest {
            glob: glob.as_str().to_string(),
        }),
    )
    .await
    .map_err(|_| {
        PollError::Transient(anyhow::anyhow!(
            "the admin service at {endpoint} did not answer"
        ))
    })?;
    let shippers = listed
        .map_err(|status| poll_error("the node directory", endpoint, &status))?
        .into_inner()
        .shippers;
    let mut placement = Placement::default();
    for info in shippers {
        let Some(h) = info.heartbeat else { continue };
        for job in &h.jobs {
            placement.jobs.insert(job.job.clone());
        }
        if info.stale || h.tail_endpoint.is_empty() {
            continue;
        }
        let held: BTreeSet<String> = h
            .jobs
            .iter()
            .filter(|j| instances.is_none_or(|set| j.instances.iter().any(|&i| set.contains(i))))
            .map(|j| j.job.clone())
            .collect();
        if !held.is_empty() {
            placement.endpoints.insert(h.host.clone(), h.tail_endpoint);
            placement.holders.insert(h.host, held);
        }
    }
    Ok(placement)
}

/// What the poller reports.
pub enum Polled {
    /// A poll answered: where the selected instances are now.
    Placement(Placement),
    /// A poll failed in a way worth retrying; polling goes on.
    Failed(anyhow::Error),
    /// The scheduler refused for good (token, permission, glob); the poller has
    /// stopped.
    Fatal(anyhow::Error),
}

/// Polls every `every`, or sooner after `hint` fires.
pub fn spawn_poller(
    mut scheduler: Scheduler,
    every: Duration,
    hint: Arc<Notify>,
    tx: mpsc::Sender<Polled>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = hint.notified() => {}
            }
            let polled = match scheduler.poll().await {
                Ok(p) => Polled::Placement(p),
                Err(PollError::Transient(e)) => Polled::Failed(e),
                Err(PollError::Fatal(e)) => Polled::Fatal(e),
            };
            let fatal = matches!(polled, Polled::Fatal(_));
            if tx.send(polled).await.is_err() || fatal {
                return;
            }
            tokio::time::sleep(MIN_POLL_GAP).await;
        }
    })
}

fn state_name(state: TaskState) -> String {
    state
        .as_str_name()
        .trim_start_matches("TASK_STATE_")
        .to_ascii_lowercase()
}

/// Lifecycle lines for what changed between two placements.
pub fn changes(old: &Placement, new: &Placement, now: i64) -> Vec<Notice> {
    let mut notices = Vec::new();
    let mut say = |(job, instance): &(String, u32), text: String| {
        notices.push(Notice {
            ts: now,
            job: job.clone(),
            instance: Some(*instance),
            text,
        });
    };
    let on = |host: &str| match host {
        "" => String::new(),
        h => format!(" on {h}"),
    };
    let because = |reason: &str| match reason {
        "" => String::new(),
        r => format!(": {r}"),
    };
    for (key, now_at) in &new.instances {
        let Some(was) = old.instances.get(key) else {
            if old.jobs.contains(&key.0) {
                say(
                    key,
                    format!(
                        "added (scaled up), {}{}",
                        state_name(now_at.state),
                        on(&now_at.host)
                    ),
                );
            } else {
                say(
                    key,
                    format!("{}{}", state_name(now_at.state), on(&now_at.host)),
                );
            }
            continue;
        };
        if was.task_id != now_at.task_id {
            let text = match (was.host.as_str(), now_at.host.as_str()) {
                (_, "") => format!("waiting to be placed again{}", because(&now_at.reason)),
                (a, b) if !a.is_empty() && a != b => format!("rescheduled to {b} (was {a})"),
                (_, b) => format!("new task {} on {b}", now_at.task_id),
            };
            say(key, text);
        } else if was.host != now_at.host && !now_at.host.is_empty() {
            say(key, format!("placed on {}", now_at.host));
        }
        if now_at.state == TaskState::Lost && was.state != TaskState::Lost {
            say(
                key,
                format!("lost{}{}", on(&now_at.host), because(&now_at.reason)),
            );
        }
    }
    for key in old.instances.keys() {
        if !new.instances.contains_key(key) {
            let text = if new.jobs.contains(&key.0) {
                "removed (scaled down)"
            } else {
                "removed"
            };
            say(key, text.to_string());
        }
    }
    // The node directory's view: a job's shipper on a node came or went.
    let empty = BTreeSet::new();
    for host in old
        .holders
        .keys()
        .chain(new.holders.keys())
        .collect::<BTreeSet<_>>()
    {
        let was = old.holders.get(host).unwrap_or(&empty);
        let is = new.holders.get(host).unwrap_or(&empty);
        for job in is.difference(was) {
            notices.push(Notice {
                ts: now,
                job: job.clone(),
                instance: None,
                text: format!("found on {host}"),
            });
        }
        for job in was.difference(is) {
            notices.push(Notice {
                ts: now,
                job: job.clone(),
                instance: None,
                text: format!("no longer on {host}"),
            });
        }
    }
    notices
}

/// A node's cluster event as a lifecycle line, if it is worth one:
/// `[3] restarted on node-2 (run 4): exit 137`.
pub fn event_notice(e: &ClusterEvent) -> Option<Notice> {
    let attr = |k: &str| e.attributes.get(k).map(String::as_str).unwrap_or_default();
    let host = if e.host.is_empty() {
        String::new()
    } else {
        format!(" on {}", e.host)
    };
    let text = match EventKind::try_from(e.kind).ok()? {
        EventKind::TaskState => {
            let (from, to) = (attr("from"), attr("to"));
            let reason = e.reason.trim_start_matches("restarted after ");
            let reason = if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            };
            let killed_by = match (to, e.actor.as_str()) {
                ("killed", a) if !a.is_empty() && !a.starts_with("system:") => format!(" by {a}"),
                _ => String::new(),
            };
            match to {
                "running" if e.run > 0 => format!("restarted{host} (run {}){reason}", e.run),
                "running" => format!("running{host}"),
                "starting" if from == "running" => format!("exited{host}{reason}; restarting"),
                "starting" => format!("starting{host}"),
                "" => return None,
                to => format!("{to}{host}{killed_by}{reason}"),
            }
        }
        EventKind::QuotaKill => format!("killed{host}: {} ({})", e.reason, e.message),
        EventKind::DataLoss => format!("data loss{host}: {}", e.message),
        _ => return None,
    };
    Some(Notice {
        ts: e.ts_unix_nanos,
        job: e.job.clone(),
        instance: e.instance,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(task: &str, host: &str, state: TaskState) -> Instance {
        Instance {
            task_id: task.into(),
            run: 0,
            state,
            host: host.into(),
            reason: String::new(),
        }
    }

    fn placement(instances: &[(u32, Instance)]) -> Placement {
        Placement {
            jobs: ["www/prod/web".to_string()].into(),
            instances: instances
                .iter()
                .map(|(i, x)| (("www/prod/web".to_string(), *i), x.clone()))
                .collect(),
            endpoints: BTreeMap::new(),
            holders: BTreeMap::new(),
        }
    }

    #[test]
    fn the_directory_says_when_a_job_comes_to_a_node_or_leaves_it() {
        let held = |pairs: &[(&str, &[&str])]| Placement {
            holders: pairs
                .iter()
                .map(|(h, jobs)| (h.to_string(), jobs.iter().map(|j| j.to_string()).collect()))
                .collect(),
            ..Placement::default()
        };
        let old = held(&[("node-a", &["web/k8s/api"])]);
        let new = held(&[("node-b", &["web/k8s/api"])]);
        assert_eq!(new.hosts(), ["node-b".to_string()].into());
        let texts: Vec<(String, Option<u32>, String)> = changes(&old, &new, 7)
            .into_iter()
            .map(|n| (n.job, n.instance, n.text))
            .collect();
        assert_eq!(
            texts,
            [
                ("web/k8s/api".into(), None, "no longer on node-a".into()),
                ("web/k8s/api".into(), None, "found on node-b".into()),
            ]
        );
    }

    fn texts(notices: &[Notice]) -> Vec<String> {
        notices
            .iter()
            .map(|n| format!("[{}] {}", n.instance.unwrap(), n.text))
            .collect()
    }

    #[test]
    fn placement_changes_become_lifecycle_lines() {
        use TaskState::*;
        let old = placement(&[
            (0, at("t0", "node-0", Running)),
            (1, at("t1", "node-1", Running)),
            (2, at("t2", "node-2", Running)),
            (3, at("t3", "node-2", Running)),
        ]);
        let mut lost = at("t1", "node-1", Lost);
        lost.reason = "node stopped reporting".into();
        let new = placement(&[
            (0, at("t0b", "node-0", Starting)),
            (1, lost),
            (2, at("t2b", "node-0", Assigned)),
            (4, at("t4", "", Pending)),
        ]);
        assert_eq!(
            texts(&changes(&old, &new, 1)),
            [
                "[0] new task t0b on node-0",
                "[1] lost on node-1: node stopped reporting",
                "[2] rescheduled to node-0 (was node-2)",
                "[4] added (scaled up), pending",
                "[3] removed (scaled down)",
            ]
        );
        assert!(changes(&new, &new, 1).is_empty());
    }

    #[test]
    fn hosts_and_widths() {
        use TaskState::*;
        let p = placement(&[
            (0, at("t0", "node-0", Running)),
            (7, at("t7", "", Pending)),
            (2, at("t2", "node-0", Running)),
        ]);
        assert_eq!(p.hosts(), ["node-0".to_string()].into());
        assert_eq!(p.max_instance(), 7);
    }

    fn event(to: &str, from: &str, run: u32, reason: &str) -> ClusterEvent {
        ClusterEvent {
            kind: EventKind::TaskState as i32,
            job: "www/prod/web".into(),
            instance: Some(3),
            run,
            host: "node-2".into(),
            reason: reason.into(),
            attributes: [
                ("from".to_string(), from.to_string()),
                ("to".to_string(), to.to_string()),
            ]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn node_events_become_lifecycle_lines() {
        let text = |e: &ClusterEvent| event_notice(e).map(|n| n.text);
        assert_eq!(
            text(&event("running", "starting", 4, "restarted after exit 137")).as_deref(),
            Some("restarted on node-2 (run 4): exit 137")
        );
        assert_eq!(
            text(&event("starting", "running", 3, "exit 137")).as_deref(),
            Some("exited on node-2: exit 137; restarting")
        );
        assert_eq!(
            text(&event("failed", "running", 3, "restart limit reached")).as_deref(),
            Some("failed on node-2: restart limit reached")
        );
        let mut killed = event("killed", "running", 0, "update");
        killed.actor = "alice".into();
        assert_eq!(
            text(&killed).as_deref(),
            Some("killed on node-2 by alice: update")
        );
        let quota = ClusterEvent {
            kind: EventKind::QuotaKill as i32,
            host: "node-2".into(),
            reason: "disk_quota_exceeded".into(),
            message: "uses 3 MB".into(),
            ..Default::default()
        };
        assert_eq!(
            text(&quota).as_deref(),
            Some("killed on node-2: disk_quota_exceeded (uses 3 MB)")
        );
        let collected = ClusterEvent {
            kind: EventKind::SandboxCollected as i32,
            ..Default::default()
        };
        assert_eq!(text(&collected), None);
    }
}

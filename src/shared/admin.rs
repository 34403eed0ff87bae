//! The admin service (`sluice.v1.Admin`): how the cluster is, for `sluice
//! status`, and the node directory shippers register in (with or without a
//! Sluice scheduler).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use sluice_archiver::maintenance::MaintenanceMetrics;
use sluice_archiver::{self as archiver, ArchiverMetrics};
use sluice_broker::Bus;
use sluice_scheduler::scheduler::SchedulerService;
use sluice_schema::audit::{Audit, Call, method_of, outcome};
use sluice_schema::auth::{Principal, principal};
use sluice_schema::glob::JobGlob;
use sluice_schema::pb::admin_server::Admin;
use sluice_schema::pb::{
    ListShippersReply, ListShippersRequest, ShipperHeartbeat, ShipperHeartbeatReply, StatusReply,
    StatusRequest,
};
use tonic::{Request, Response, Status};

use crate::shared::directory::{Directory, HEARTBEAT_INTERVAL, Registered};

use crate::shared::format::state_name;
use crate::shared::node::NodeStatus;

pub struct AdminService {
    started: Instant,
    bus: Arc<dyn Bus>,
    store: String,
    nodes: Vec<NodeStatus>,
    /// None when `sluice up --no-scheduler` runs for a cluster Sluice
    /// does not schedule.
    scheduler: Option<SchedulerService>,
    archiver: Arc<ArchiverMetrics>,
    maintenance: Arc<MaintenanceMetrics>,
    directory: Arc<Directory>,
    audit: Arc<Audit>,
}

impl AdminService {
    pub fn new(
        bus: Arc<dyn Bus>,
        store: String,
        nodes: Vec<NodeStatus>,
        scheduler: Option<SchedulerService>,
        archiver: Arc<ArchiverMetrics>,
        maintenance: Arc<MaintenanceMetrics>,
        audit: Arc<Audit>,
    ) -> Self {
        AdminService {
            started: Instant::now(),
            bus,
            store,
            nodes,
            scheduler,
            archiver,
            maintenance,
            directory: Arc::new(Directory::new(
                crate::shared::directory::DEFAULT_STALE_AFTER,
            )),
            audit,
        }
    }

    /// Keeps the node directory in `directory` (shared with `/metrics`).
    pub fn with_directory(mut self, directory: Arc<Directory>) -> Self {
        self.directory = directory;
        self
    }

    /// Jobs with their instances' states, and nodes as the scheduler sees
    /// them.
    fn cluster(&self, caller: &Principal) -> (serde_json::Value, Vec<(String, bool)>) {
        let readable = |key: &sluice_scheduler::spec::JobKey| caller.may_read(&key.role);
        let Some(scheduler) = &self.scheduler else {
            return (serde_json::Value::Array(Vec::new()), Vec::new());
        };
        let (jobs, nodes) = scheduler.with_core(|core| (core.list(&readable), core.nodes()));
        let jobs: Vec<serde_json::Value> = jobs
            .iter()
            .map(|job| {
                let instances: Vec<serde_json::Value> = job
                    .instances
                    .iter()
                    .map(|i| {
                        serde_json::json!({
                            "instance": i.instance,
                            "state": state_name(i.state),
                            "host": i.host,
                            "run": i.run,
                            "restarts": i.restarts,
                            "reason": i.reason,
                            "sandbox_bytes": i.sandbox_bytes,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "job": job.job,
                    "state": job.state,
                    "actor": job.actor,
                    "instances": instances,
                })
            })
            .collect();
        let alive = nodes.iter().map(|n| (n.node.clone(), n.alive)).collect();
        (serde_json::Value::Array(jobs), alive)
    }

    fn archive(&self) -> serde_json::Value {
        let a = &self.archiver;
        let m = &self.maintenance;
        serde_json::json!({
            "url": self.store,
            "lines_archived": a.lines_archived.load(Relaxed),
            "events_archived": a.events_archived.load(Relaxed),
            "commits": a.commits.load(Relaxed),
            "errors": a.errors.load(Relaxed),
            "last_commit_unix_nanos": a.last_commit_unix_nanos.load(Relaxed),
            "last_freshness_ms": a.last_freshness_ms.load(Relaxed),
            "live_splits": m.live_splits.load(Relaxed),
            "compactions": m.compactions.load(Relaxed),
        })
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let caller = principal(&request)?;
        let bus = self
            .bus
            .status(&[archiver::GROUP])
            .await
            .map_err(|e| Status::unavailable(format!("bus status: {e}")))?;
        let (jobs, alive) = self.cluster(&caller);
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|node| {
                let mut json = node.to_json();
                json["alive"] = alive
                    .iter()
                    .find(|(name, _)| *name == node.info.name)
                    .is_some_and(|(_, alive)| *alive)
                    .into();
                json
            })
            .collect();
        let detail = serde_json::json!({
            "bus": bus,
            "store": self.store,
            "archive": self.archive(),
            "nodes": nodes,
            "jobs": jobs,
            "scheduler": self.scheduler.is_some(),
            "shippers": self.directory.to_json(&caller, now_unix_nanos()),
        });
        Ok(Response::new(StatusReply {
            version: sluice_schema::VERSION.to_string(),
            user: caller.user.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            bus_url: self.bus.url(),
            detail_json: detail.to_string(),
        }))
    }

    async fn register_shipper(
        &self,
        request: Request<ShipperHeartbeat>,
    ) -> Result<Response<ShipperHeartbeatReply>, Status> {
        let caller = principal(&request)?;
        let peer = request.remote_addr();
        let method = method_of(&request, "/sluice.v1.Admin/RegisterShipper");
        let heartbeat = request.into_inner();
        let host = heartbeat.host.clone();
        let endpoint = heartbeat.tail_endpoint.clone();
        let result = self
            .directory
            .heartbeat(&caller, heartbeat, now_unix_nanos());
        // A registration (new, moved, restarted) is on the audit trail, a
        // repeated heartbeat is not; refusals are, at the refusals' rate
        // limit (a hostile shipper retries every interval).
        let call = || Call {
            actor: caller.user.clone(),
            method: method.clone(),
            target: format!("{host} {endpoint}").trim().to_string(),
            job: String::new(),
            outcome: outcome(&result),
            peer,
        };
        match &result {
            Ok(Registered::Same) => {}
            Ok(_) => self.audit.record(call(), now_unix_nanos()),
            Err(_) => self.audit.refused(call(), now_unix_nanos()),
        }
        result?;
        Ok(Response::new(ShipperHeartbeatReply {
            interval_ms: HEARTBEAT_INTERVAL.as_millis() as u32,
        }))
    }

    async fn list_shippers(
        &self,
        request: Request<ListShippersRequest>,
    ) -> Result<Response<ListShippersReply>, Status> {
        let caller = principal(&request)?;
        let glob = &request.get_ref().glob;
        let glob = match glob.as_str() {
            "" => None,
            g => Some(JobGlob::parse(g).map_err(|e| Status::invalid_argument(e.to_string()))?),
        };
        if let Some(role) = glob.as_ref().and_then(JobGlob::exact_role) {
            caller.require_read(role)?;
        }
        let shippers = self
            .directory
            .list(&caller, glob.as_ref(), now_unix_nanos());
        Ok(Response::new(ListShippersReply { shippers }))
    }
}

fn now_unix_nanos() -> i64 {
    sluice_scheduler::scheduler::service::now_unix_nanos()
}

//! [`SchedulerService`]: the `sluice.v1.Scheduler` gRPC service over a
//! [`SchedulerCore`] behind a mutex (never held across an `.await`), a
//! background task that ticks it every `tick_ms`, and the state file, saved
//! before a changing call is answered.
//!
//! Authorisation (the service is wrapped in `AuthInterceptor`): submitting,
//! updating and killing need write access to the job's role (for a submit,
//! the role in the spec); describing needs read access; listing shows only
//! readable roles (and refuses a glob naming an unreadable role outright);
//! `Nodes` is open to every authenticated caller; `AgentHeartbeat` needs an
//! administrator's token. The caller's user is the actor of what it asks.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use sluice_schema::audit::{ANONYMOUS, Audit, Call, method_of, outcome};
use sluice_schema::auth::{AuthInterceptor, principal};
use sluice_schema::events::EventSink;
use sluice_schema::glob::JobGlob;
use sluice_schema::pb::scheduler_server::{Scheduler, SchedulerServer};
use sluice_schema::pb::{
    AgentHeartbeatReply, AgentHeartbeatRequest, JobKeyRequest, JobStatus, ListJobsReply,
    ListJobsRequest, NodeStatusRequest, NodesReply, SubmitJobRequest,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use super::config::SchedulerConfig;
use super::engine::{SchedulerCore, Snapshot};
use super::state;
use crate::spec::{self, JobKey, JobSpec};
use crate::{Error, Result};

/// Largest spec accepted, in bytes.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// The scheduler's gRPC service. Clones share one scheduler.
#[derive(Clone)]
pub struct SchedulerService {
    inner: Arc<Inner>,
}

struct Inner {
    core: Mutex<SchedulerCore>,
    /// Submits, updates and kills, accepted or refused.
    audit: Audit,
    state_file: PathBuf,
    /// The version last written; held while writing, so writes are ordered.
    written: Mutex<u64>,
    stop: watch::Sender<bool>,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

/// The tonic service with authentication, ready for `Server::add_service`.
pub type AuthedSchedulerServer =
    InterceptedService<SchedulerServer<SchedulerService>, AuthInterceptor>;

impl SchedulerService {
    /// Opens the state file and starts the tick task. Call from inside a
    /// Tokio runtime. Stop it with [`SchedulerService::stop`] (it also ends
    /// when every clone of the service is dropped).
    pub fn start(config: SchedulerConfig, events: Arc<dyn EventSink>) -> Result<SchedulerService> {
        let tick = config.tick();
        let state_file = config.state_file.clone();
        let audit = Audit::new(events.clone(), "scheduler", now_unix_nanos());
        let core = SchedulerCore::open(config, events, now_unix_nanos())?;
        let (stop, stopped) = watch::channel(false);
        let inner = Arc::new(Inner {
            core: Mutex::new(core),
            audit,
            state_file,
            written: Mutex::new(0),
            stop,
            ticker: Mutex::new(None),
        });
        let ticker = tokio::spawn(run_ticker(Arc::downgrade(&inner), tick, stopped));
        *lock(&inner.ticker) = Some(ticker);
        Ok(SchedulerService { inner })
    }

    /// The service wrapped in `auth`, the authentication every Sluice
    /// service uses, taking messages of up to `max_message_bytes`.
    pub fn server(&self, auth: AuthInterceptor, max_message_bytes: usize) -> AuthedSchedulerServer {
        InterceptedService::new(
            SchedulerServer::new(self.clone()).max_decoding_message_size(max_message_bytes),
            auth,
        )
    }

    /// Records a changing call on the audit trail.
    fn audit<T, U>(
        &self,
        request: &Request<U>,
        method: &str,
        job: &str,
        result: &Result<T, Status>,
    ) {
        let actor = principal(request).map_or_else(|_| ANONYMOUS.to_string(), |p| p.user.clone());
        let call = Call {
            actor,
            method: method_of(request, method),
            target: job.to_string(),
            job: job.to_string(),
            outcome: outcome(result),
            peer: request.remote_addr(),
        };
        self.inner.audit.record(call, now_unix_nanos());
    }

    /// Runs `f` on the scheduler core (for status pages and tests).
    pub fn with_core<R>(&self, f: impl FnOnce(&mut SchedulerCore) -> R) -> R {
        f(&mut self.inner.core())
    }

    /// Stops the tick task and saves the state a last time.
    pub async fn stop(&self) -> Result<()> {
        self.inner.stop.send_replace(true);
        let ticker = lock(&self.inner.ticker).take();
        if let Some(ticker) = ticker {
            let _ = ticker.await;
        }
        self.persist().await
    }

    /// Writes the state file if the core changed since the last write.
    async fn persist(&self) -> Result<()> {
        let Some(snapshot) = self.inner.core().snapshot() else {
            return Ok(());
        };
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.write(snapshot))
            .await
            .unwrap_or_else(|e| {
                Err(Error::io(
                    "failed to write scheduler state",
                    &self.inner.state_file,
                    std::io::Error::other(e.to_string()),
                ))
            })
    }

    /// Saves after a change; the change stands if saving fails (the tick
    /// task tries again), but the caller is told.
    async fn persist_for_call(&self) -> Result<(), Status> {
        self.persist().await.map_err(|e| {
            tracing::error!(error = %e, "failed to save scheduler state");
            Status::internal(e.to_string())
        })
    }
}

impl Inner {
    fn core(&self) -> MutexGuard<'_, SchedulerCore> {
        lock(&self.core)
    }

    fn write(&self, snapshot: Snapshot) -> Result<()> {
        let mut written = lock(&self.written);
        if snapshot.version <= *written {
            return Ok(());
        }
        state::save(&self.state_file, &snapshot.bytes)?;
        *written = snapshot.version;
        self.core().mark_saved(snapshot.version);
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn run_ticker(inner: Weak<Inner>, tick: Duration, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => break,
        }
        let Some(inner) = inner.upgrade() else { break };
        let snapshot = {
            let mut core = inner.core();
            core.tick(now_unix_nanos());
            core.snapshot()
        };
        if let Some(snapshot) = snapshot {
            let writer = inner.clone();
            match tokio::task::spawn_blocking(move || writer.write(snapshot)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "failed to save scheduler state"),
                Err(e) => tracing::error!(error = %e, "scheduler state writer panicked"),
            }
        }
    }
}

pub use sluice_schema::time::now_unix_nanos;

fn parse_spec(request: &SubmitJobRequest) -> Result<JobSpec, Status> {
    sluice_schema::limits::check_size("spec_yaml", request.spec_yaml.len(), MAX_SPEC_BYTES)?;
    let stage = Some(request.stage.as_str()).filter(|s| !s.is_empty());
    spec::parse(&request.spec_yaml, stage).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn parse_key(job: &str) -> Result<JobKey, Status> {
    JobKey::parse(job).map_err(|e| match e {
        Error::Spec { field, message } => {
            Status::invalid_argument(format!("invalid job key: {field}: {message}"))
        }
        other => Status::invalid_argument(other.to_string()),
    })
}

#[tonic::async_trait]
impl Scheduler for SchedulerService {
    async fn submit_job(
        &self,
        request: Request<SubmitJobRequest>,
    ) -> Result<Response<JobStatus>, Status> {
        let mut job = String::new();
        let result = async {
            let caller = principal(&request)?;
            let spec = parse_spec(request.get_ref())?;
            job = spec.key.to_string();
            caller.require_write(&spec.key.role)?;
            let status = self
                .inner
                .core()
                .submit(spec, &caller.user, now_unix_nanos())?;
            self.persist_for_call().await?;
            Ok(Response::new(status))
        }
        .await;
        self.audit(&request, "/sluice.v1.Scheduler/SubmitJob", &job, &result);
        result
    }

    async fn update_job(
        &self,
        request: Request<SubmitJobRequest>,
    ) -> Result<Response<JobStatus>, Status> {
        let mut job = String::new();
        let result = async {
            let caller = principal(&request)?;
            let spec = parse_spec(request.get_ref())?;
            job = spec.key.to_string();
            caller.require_write(&spec.key.role)?;
            let status = self
                .inner
                .core()
                .update(spec, &caller.user, now_unix_nanos())?;
            self.persist_for_call().await?;
            Ok(Response::new(status))
        }
        .await;
        self.audit(&request, "/sluice.v1.Scheduler/UpdateJob", &job, &result);
        result
    }

    async fn kill_job(
        &self,
        request: Request<JobKeyRequest>,
    ) -> Result<Response<JobStatus>, Status> {
        let job = request.get_ref().job.clone();
        let result = async {
            let caller = principal(&request)?;
            let key = parse_key(&request.get_ref().job)?;
            caller.require_write(&key.role)?;
            let status = self
                .inner
                .core()
                .kill(&key, &caller.user, now_unix_nanos())?;
            self.persist_for_call().await?;
            Ok(Response::new(status))
        }
        .await;
        self.audit(&request, "/sluice.v1.Scheduler/KillJob", &job, &result);
        result
    }

    async fn describe_job(
        &self,
        request: Request<JobKeyRequest>,
    ) -> Result<Response<JobStatus>, Status> {
        let caller = principal(&request)?;
        let key = parse_key(&request.get_ref().job)?;
        caller.require_read(&key.role)?;
        let status = self.inner.core().describe(&key)?;
        Ok(Response::new(status))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsReply>, Status> {
        let caller = principal(&request)?;
        let glob = JobGlob::parse(&request.get_ref().glob)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(role) = glob.exact_role() {
            caller.require_read(role)?;
        }
        let readable = caller.readable_roles();
        let filter = |key: &JobKey| {
            readable.as_ref().is_none_or(|r| r.contains(&key.role))
                && glob.matches(&key.to_string())
        };
        let jobs = self.inner.core().list(&filter);
        Ok(Response::new(ListJobsReply { jobs }))
    }

    async fn nodes(
        &self,
        request: Request<NodeStatusRequest>,
    ) -> Result<Response<NodesReply>, Status> {
        principal(&request)?;
        let nodes = self.inner.core().nodes();
        Ok(Response::new(NodesReply { nodes }))
    }

    async fn agent_heartbeat(
        &self,
        request: Request<AgentHeartbeatRequest>,
    ) -> Result<Response<AgentHeartbeatReply>, Status> {
        principal(&request)?.require_admin()?;
        let reply = self
            .inner
            .core()
            .heartbeat(request.into_inner(), now_unix_nanos())?;
        self.persist_for_call().await?;
        Ok(Response::new(reply))
    }
}

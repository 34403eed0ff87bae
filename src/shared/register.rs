//! A shipper's registration in the node directory (see
//! [`crate::shared::directory`]): a heartbeat to the admin service every
//! interval it asks for, with what the shipper holds now. Losing the admin
//! service loses nothing: shipping goes on, heartbeats resume when it is
//! back, and a refusal (a token that may not write a role it holds) is
//! logged, not fatal.

use std::sync::Arc;
use std::time::Duration;

use sluice_client::{Cluster, ConnectOptions};
use sluice_schema::pb::ShipperHeartbeat;
use sluice_schema::pb::admin_client::AdminClient;
use sluice_shipper::metrics::Metrics;

use crate::shared::directory::HEARTBEAT_INTERVAL;

/// Who registers, where, and what it reports.
pub struct Registration {
    /// The admin service, the token and the CA.
    pub cluster: Cluster,
    pub host: String,
    pub layout: &'static str,
    /// The Tail service's URL as `tailll` should dial it, empty if none.
    pub tail_endpoint: String,
    pub metrics: Arc<Metrics>,
    pub started_unix_nanos: i64,
}

impl Registration {
    fn heartbeat(&self) -> ShipperHeartbeat {
        let jobs = self.metrics.jobs.lock().expect("jobs lock").clone();
        ShipperHeartbeat {
            host: self.host.clone(),
            layout: self.layout.to_string(),
            tail_endpoint: self.tail_endpoint.clone(),
            jobs,
            files_tracked: self.metrics.files_tracked.get(),
            lines_shipped: self.metrics.lines_read.get(),
            lag_bytes: self.metrics.lag_bytes.get(),
            started_unix_nanos: self.started_unix_nanos,
            version: sluice_schema::VERSION.to_string(),
        }
    }

    async fn send(
        &self,
        client: &mut Option<AdminClient<sluice_client::AuthedChannel>>,
    ) -> Result<Duration, String> {
        if client.is_none() {
            let options = ConnectOptions {
                connect_timeout: Duration::from_secs(3),
                keep_alive: None,
            };
            let channel = self
                .cluster
                .connect(&options)
                .await
                .map_err(|e| e.to_string())?;
            *client = Some(AdminClient::new(channel));
        }
        let admin = client.as_mut().expect("connected above");
        match admin.register_shipper(self.heartbeat()).await {
            Ok(reply) => Ok(Duration::from_millis(
                u64::from(reply.into_inner().interval_ms).clamp(200, 60_000),
            )),
            Err(status) => {
                if status.code() == tonic::Code::Unavailable {
                    *client = None;
                }
                Err(format!("{:?}: {}", status.code(), status.message()))
            }
        }
    }
}

/// Heartbeats until the task is dropped or aborted; logs each change
/// between registered and failing once.
pub fn spawn(registration: Registration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = None;
        // The last error logged, and failures in a row (the admin service
        // may start after the shipper: the first two are not worth a line).
        let mut failing: Option<String> = None;
        let mut failures = 0u32;
        let mut interval = HEARTBEAT_INTERVAL;
        let admin = registration.cluster.endpoint.clone();
        loop {
            match registration.send(&mut client).await {
                // A `sluice scheduler` serves no admin service: there is no
                // directory to be in.
                Err(e) if e.starts_with("Unimplemented") => {
                    tracing::info!(%admin, "no node directory there (a scheduler without the admin service): not registering");
                    return;
                }
                Ok(every) => {
                    if failing.take().is_some() {
                        tracing::info!(%admin, "registered in the node directory again");
                    }
                    failures = 0;
                    interval = every;
                }
                Err(e) => {
                    failures += 1;
                    if failures >= 3 && failing.as_deref() != Some(e.as_str()) {
                        tracing::warn!(%admin, error = %e, "could not register in the node directory (shipping goes on)");
                        failing = Some(e);
                    }
                }
            }
            tokio::time::sleep(interval).await;
        }
    })
}

//! The admin service (`sluice.v1.Admin`) and `sluice status`, its client.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use sluice_broker::Bus;
use sluice_schema::auth::principal;
use sluice_schema::pb::admin_client::AdminClient;
use sluice_schema::pb::admin_server::Admin;
use sluice_schema::pb::{StatusReply, StatusRequest};
use tonic::{Request, Response, Status};

use crate::cli::StatusArgs;
use crate::client::{self, ClientConfig};
use crate::node::NodeStatus;

pub struct AdminService {
    started: Instant,
    bus: Arc<dyn Bus>,
    store: String,
    nodes: Vec<NodeStatus>,
}

impl AdminService {
    pub fn new(bus: Arc<dyn Bus>, store: String, nodes: Vec<NodeStatus>) -> Self {
        AdminService {
            started: Instant::now(),
            bus,
            store,
            nodes,
        }
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
            .status(&[])
            .await
            .map_err(|e| Status::unavailable(format!("bus status: {e}")))?;
        let nodes: Vec<serde_json::Value> = self.nodes.iter().map(NodeStatus::to_json).collect();
        let detail = serde_json::json!({ "bus": bus, "store": self.store, "nodes": nodes });
        Ok(Response::new(StatusReply {
            version: sluice_schema::VERSION.to_string(),
            user: caller.user.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            bus_url: self.bus.url(),
            detail_json: detail.to_string(),
        }))
    }
}

/// `sluice status [--json]`.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let (endpoint, token) = ClientConfig::resolve(&args.dir.data_dir)?;
    let mut admin = AdminClient::new(client::connect(&endpoint, &token).await?);
    let reply = admin
        .status(StatusRequest {})
        .await
        .with_context(|| format!("status from {endpoint}"))?
        .into_inner();
    let detail: serde_json::Value =
        serde_json::from_str(&reply.detail_json).context("status detail is not JSON")?;
    if args.json {
        let out = serde_json::json!({
            "version": reply.version,
            "user": reply.user,
            "uptime_seconds": reply.uptime_seconds,
            "bus_url": reply.bus_url,
            "detail": detail,
        });
        println!("{out}");
    } else {
        println!(
            "sluice {} at {endpoint}, up {}s, as {}",
            reply.version, reply.uptime_seconds, reply.user
        );
        println!("bus:     {}", reply.bus_url);
        println!("archive: {}", detail["store"].as_str().unwrap_or("?"));
        let nodes = detail["nodes"].as_array().cloned().unwrap_or_default();
        println!("nodes:   {}", nodes.len());
        for node in nodes {
            println!(
                "  {:<10} files {:>6}  lines shipped {:>10}  lag {:>10} B  tail {}",
                node["name"].as_str().unwrap_or("?"),
                node["files"],
                node["lines_shipped"],
                node["lag_bytes"],
                node["tail"].as_str().unwrap_or("?"),
            );
        }
    }
    Ok(())
}

//! `sluice job …`: submit, update, kill and inspect jobs through the
//! scheduler's gRPC API (`sluice.v1.Scheduler`), found like every client
//! command through `--data-dir` (or `SLUICE_ADDR`/`SLUICE_TOKEN`).
//!
//! Errors are the server's message (`invalid job spec: resources.cpu: …`,
//! `user bob may not act on role search`), and `sluice` exits 1.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use sluice_schema::pb::scheduler_client::SchedulerClient;
use sluice_schema::pb::{
    InstanceStatus, JobKeyRequest, JobStatus, ListJobsRequest, NodeInfo, NodeStatusRequest,
    SubmitJobRequest,
};
use sluice_schema::time::rfc3339_nanos;

use crate::shared::args::DataDirArg;
use crate::shared::client::{self, AuthedChannel};
use crate::shared::format::{state_name, table};

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Submit a new job from its YAML spec.
    #[command(
        after_help = "Examples:\n  sluice job submit hello.yaml\n  sluice job submit web.yaml --stage prod"
    )]
    Submit(SpecArgs),
    /// Replace a job's spec; instances whose task changed are restarted.
    #[command(after_help = "Examples:\n  sluice job update hello.yaml")]
    Update(SpecArgs),
    /// Kill every task of a job.
    #[command(after_help = "Examples:\n  sluice job kill demo/devel/hello")]
    Kill(KeyArgs),
    /// A job's instances: state, run, host, task id, sandbox bytes.
    #[command(
        after_help = "Examples:\n  sluice job status demo/devel/hello\n  sluice job status demo/devel/hello --json"
    )]
    Status(StatusArgs),
    /// The jobs you may read, one per line.
    #[command(after_help = "Examples:\n  sluice job list\n  sluice job list 'demo/*'")]
    List(ListArgs),
    /// The nodes the scheduler knows and what they hold.
    #[command(after_help = "Examples:\n  sluice job nodes")]
    Nodes(NodesArgs),
}

#[derive(Args, Debug)]
pub struct SpecArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The job spec, a YAML file.
    pub file: PathBuf,
    /// Apply the spec's overrides for this stage (`envs.<STAGE>`).
    #[arg(long)]
    pub stage: Option<String>,
}

#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The job, `role/env/name`.
    pub key: String,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The job, `role/env/name`.
    pub key: String,
    /// Print the job as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Only jobs matching this glob (`www/prod/*`); default: all you may read.
    pub glob: Option<String>,
    /// One JSON object per job and line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct NodesArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// One JSON object per node and line.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: JobCommand) -> anyhow::Result<()> {
    match command {
        JobCommand::Submit(args) => submit(args, false).await,
        JobCommand::Update(args) => submit(args, true).await,
        JobCommand::Kill(args) => kill(args).await,
        JobCommand::Status(args) => status(args).await,
        JobCommand::List(args) => list(args).await,
        JobCommand::Nodes(args) => nodes(args).await,
    }
}

/// A scheduler client and the endpoint it talks to.
async fn scheduler(dir: &DataDirArg) -> anyhow::Result<(SchedulerClient<AuthedChannel>, String)> {
    let cluster = client::cluster(dir)?;
    let channel = client::connect(&cluster).await?;
    Ok((SchedulerClient::new(channel), cluster.endpoint))
}

/// The server's message, which names what was wrong.
fn refused(status: tonic::Status, endpoint: &str) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unimplemented => {
            anyhow::anyhow!("the cluster at {endpoint} does not run a scheduler")
        }
        tonic::Code::Unavailable => {
            anyhow::anyhow!("scheduler at {endpoint} unavailable: {}", status.message())
        }
        _ => anyhow::anyhow!("{}", status.message()),
    }
}

async fn submit(args: SpecArgs, update: bool) -> anyhow::Result<()> {
    let spec_yaml = std::fs::read_to_string(&args.file)
        .with_context(|| format!("failed to read job spec {}", args.file.display()))?;
    let request = SubmitJobRequest {
        spec_yaml,
        stage: args.stage.unwrap_or_default(),
    };
    let (mut scheduler, endpoint) = scheduler(&args.dir).await?;
    let reply = match update {
        false => scheduler.submit_job(request).await,
        true => scheduler.update_job(request).await,
    };
    let job = reply.map_err(|e| refused(e, &endpoint))?.into_inner();
    let verb = if update { "updated" } else { "submitted" };
    println!("{verb} {}: {}", job.job, summary(&job));
    print_instances(&job);
    Ok(())
}

async fn kill(args: KeyArgs) -> anyhow::Result<()> {
    let (mut scheduler, endpoint) = scheduler(&args.dir).await?;
    let job = scheduler
        .kill_job(JobKeyRequest { job: args.key })
        .await
        .map_err(|e| refused(e, &endpoint))?
        .into_inner();
    println!("{} is {}: {}", job.job, job.state, summary(&job));
    Ok(())
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let (mut scheduler, endpoint) = scheduler(&args.dir).await?;
    let job = scheduler
        .describe_job(JobKeyRequest { job: args.key })
        .await
        .map_err(|e| refused(e, &endpoint))?
        .into_inner();
    if args.json {
        println!("{}", job_json(&job));
    } else {
        println!(
            "{} {} (by {}, updated {}): {}",
            job.job,
            job.state,
            job.actor,
            rfc3339_nanos(job.updated_unix_nanos),
            summary(&job)
        );
        print_instances(&job);
    }
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let (mut scheduler, endpoint) = scheduler(&args.dir).await?;
    let glob = args.glob.unwrap_or_default();
    let jobs = scheduler
        .list_jobs(ListJobsRequest { glob })
        .await
        .map_err(|e| refused(e, &endpoint))?
        .into_inner()
        .jobs;
    if args.json {
        for job in &jobs {
            println!("{}", job_json(job));
        }
        return Ok(());
    }
    let rows = jobs
        .iter()
        .map(|job| {
            vec![
                job.job.clone(),
                job.state.clone(),
                summary(job),
                job.actor.clone(),
            ]
        })
        .collect();
    print_table(&["JOB", "STATE", "INSTANCES", "ACTOR"], rows);
    Ok(())
}

async fn nodes(args: NodesArgs) -> anyhow::Result<()> {
    let (mut scheduler, endpoint) = scheduler(&args.dir).await?;
    let nodes = scheduler
        .nodes(NodeStatusRequest {})
        .await
        .map_err(|e| refused(e, &endpoint))?
        .into_inner()
        .nodes;
    if args.json {
        for node in &nodes {
            println!("{}", node_json(node));
        }
        return Ok(());
    }
    let rows = nodes
        .iter()
        .map(|n| {
            vec![
                n.node.clone(),
                if n.alive { "alive" } else { "silent" }.to_string(),
                n.cpu.to_string(),
                n.ram_mb.to_string(),
                n.disk_mb.to_string(),
                n.tasks.to_string(),
                rfc3339_nanos(n.last_heartbeat_unix_nanos),
                n.tail_endpoint.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "NODE",
            "STATE",
            "CPU",
            "RAM_MB",
            "DISK_MB",
            "TASKS",
            "LAST HEARTBEAT",
            "TAIL",
        ],
        rows,
    );
    Ok(())
}

/// `3 instances: 2 running, 1 pending`.
fn summary(job: &JobStatus) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for instance in &job.instances {
        let name = state_name(instance.state);
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => counts.push((name, 1)),
        }
    }
    let parts: Vec<String> = counts.iter().map(|(n, c)| format!("{c} {n}")).collect();
    let n = job.instances.len();
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} instance{plural}: {}", parts.join(", "))
}

fn print_instances(job: &JobStatus) {
    let rows = job
        .instances
        .iter()
        .map(|i| {
            vec![
                i.instance.to_string(),
                state_name(i.state),
                i.run.to_string(),
                i.host.clone(),
                i.task_id.clone(),
                i.sandbox_bytes.to_string(),
                i.reason.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "INSTANCE", "STATE", "RUN", "HOST", "TASK ID", "BYTES", "REASON",
        ],
        rows,
    );
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    print!("{}", table(header, &rows));
}

fn instance_json(i: &InstanceStatus) -> Value {
    json!({
        "instance": i.instance,
        "task_id": i.task_id,
        "run": i.run,
        "state": state_name(i.state),
        "host": i.host,
        "tail_endpoint": i.tail_endpoint,
        "sandbox_bytes": i.sandbox_bytes,
        "reason": i.reason,
        "exit_code": i.exit_code,
        "restarts": i.restarts,
        "updated_unix_nanos": i.updated_unix_nanos,
    })
}

fn job_json(job: &JobStatus) -> Value {
    let spec: Value = serde_json::from_str(&job.spec_json).unwrap_or(Value::Null);
    json!({
        "job": job.job,
        "state": job.state,
        "actor": job.actor,
        "updated_unix_nanos": job.updated_unix_nanos,
        "instances": job.instances.iter().map(instance_json).collect::<Vec<_>>(),
        "spec": spec,
    })
}

fn node_json(node: &NodeInfo) -> Value {
    json!({
        "node": node.node,
        "alive": node.alive,
        "tail_endpoint": node.tail_endpoint,
        "last_heartbeat_unix_nanos": node.last_heartbeat_unix_nanos,
        "cpu": node.cpu,
        "ram_mb": node.ram_mb,
        "disk_mb": node.disk_mb,
        "tasks": node.tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_schema::pb::TaskState;

    #[test]
    fn job_json_has_lowercase_states_and_the_spec() {
        let job = JobStatus {
            job: "search/devel/web".into(),
            spec_json: r#"{"instances": 1}"#.into(),
            instances: vec![InstanceStatus {
                instance: 0,
                task_id: "search-devel-web-0-00000001".into(),
                state: TaskState::Running as i32,
                host: "node-0".into(),
                sandbox_bytes: 4096,
                ..InstanceStatus::default()
            }],
            state: "running".into(),
            actor: "alice".into(),
            updated_unix_nanos: 5,
        };
        let value = job_json(&job);
        assert_eq!(value["instances"][0]["state"], "running");
        assert_eq!(value["instances"][0]["sandbox_bytes"], 4096);
        assert_eq!(value["instances"][0]["exit_code"], Value::Null);
        assert_eq!(value["spec"]["instances"], 1);
        assert_eq!(summary(&job), "1 instance: 1 running");
        assert_eq!(state_name(99), "unspecified");
    }
}

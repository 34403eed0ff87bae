//! `sluice`: runs and inspects a Sluice cluster. Flags are parsed in `cli`;
//! each command is a module that wires the libraries together.

mod admin;
mod archive_cmd;
mod bench;
mod bench_archive;
mod bench_e2e;
mod bench_gc;
mod bench_query;
mod bench_shipper;
mod bench_tailll;
mod bus_cmd;
mod cli;
mod client;
mod demo;
mod executor_cmd;
mod job_cmd;
mod logs;
mod metrics_http;
mod node;
mod node_cmd;
mod progress;
mod query_cmd;
mod scheduler_cmd;
mod serve;
mod shipper_cmd;
mod tls;
mod tokens;
mod up;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tls::install_provider();
    if let Err(e) = logs::init(&cli) {
        eprintln!("sluice: {e:#}");
        return ExitCode::from(1);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sluice: failed to start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `sluice … | head` closing the pipe is a normal way to stop.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

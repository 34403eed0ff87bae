//! `sluice`: runs and inspects a Sluice cluster. Flags are parsed in `cli`;
//! each command is a module that wires the libraries together.

mod cli;
mod cmd;
mod console;
mod shared;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    shared::tls::install_provider();
    let log_file = match cli.log_file() {
        Ok(file) => file,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = shared::logs::init(cli.log_level(), cli.color, log_file.as_deref()) {
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

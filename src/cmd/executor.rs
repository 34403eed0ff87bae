//! `sluice executor --sandbox DIR` (hidden): runs one task in its sandbox
//! until it ends or is killed. A node agent starts it, in a session of its
//! own, with its stdout and stderr in `<sandbox>/executor.log`; the work is
//! done by `sluice_scheduler::agent::executor`.

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct ExecutorArgs {
    /// The task's sandbox.
    #[arg(long)]
    pub sandbox: PathBuf,
}

pub fn run(args: ExecutorArgs) -> anyhow::Result<()> {
    sluice_scheduler::agent::executor::run(&args.sandbox)?;
    Ok(())
}

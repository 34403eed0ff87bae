//! Where `sluice`'s own log goes: standard error, except for `sluice up`,
//! whose services log to `DATA_DIR/logs/sluice.log` so that its terminal
//! shows the tour and a line of what is happening (`--log-stderr` brings the
//! log back to the terminal). `-v`/`-vv` or `SLUICE_LOG` set the level.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use crate::shared::args::ColorArg;

/// A log file over this size is moved to `sluice.log.1` when `up` starts.
const ROTATE_BYTES: u64 = 64 << 20;

/// The log file of `sluice up --data-dir D`.
pub fn file_of(data_dir: &Path) -> PathBuf {
    data_dir.join("logs").join("sluice.log")
}

/// Installs the process's log subscriber: at `level` (`SLUICE_LOG`
/// overrides), to `file` when given, else to standard error (coloured as
/// `color` says).
pub fn init(level: &str, color: ColorArg, file: Option<&Path>) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new(directives(level)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(path) => {
            let file = open(path)?;
            builder.with_ansi(false).with_writer(Arc::new(file)).init();
        }
        None => {
            use std::io::IsTerminal as _;
            builder
                .with_ansi(color.enabled(std::io::stderr().is_terminal()))
                .with_writer(std::io::stderr)
                .init();
        }
    }
    Ok(())
}

/// The filter for `level`: below `debug`, the Delta kernel's and delta-rs's
/// `info` lines (a few per checkpoint written) are left out.
fn directives(level: &str) -> String {
    match level {
        "debug" | "trace" => level.to_string(),
        _ => format!("{level},buoyant_kernel=warn,delta_kernel=warn,deltalake_core=warn"),
    }
}

/// Opens `path` for appending, after moving a large one aside.
fn open(path: &Path) -> anyhow::Result<std::fs::File> {
    let dir = path.parent().expect("a log file has a directory");
    std::fs::create_dir_all(dir)
        .with_context(|| format!("failed to create the log directory {}", dir.display()))?;
    if std::fs::metadata(path).is_ok_and(|m| m.len() > ROTATE_BYTES) {
        let _ = std::fs::rename(path, path.with_extension("log.1"));
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("failed to open the log file {}", path.display()))
}

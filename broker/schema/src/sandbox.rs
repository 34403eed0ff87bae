//! The native sandbox layout, shared by scheduler-core (which creates
//! sandboxes) and the shipper (which reads them). No I/O here: paths and the
//! manifest's format.
//!
//! ```text
//! <root>/<task_id>/sandbox.json                    the manifest (below)
//! <root>/<task_id>/logs/run-<run>/<process>.stdout
//! <root>/<task_id>/logs/run-<run>/<process>.stderr
//! <root>/<task_id>/work/                           the processes' working directory
//! ```
//!
//! A restart of the instance on the same node is a new run of the same
//! task: its logs go to `logs/run-<run+1>/`, beside the earlier runs', so
//! nothing an earlier run wrote is overwritten or mixed with the new one.
//! The shipper takes identity from the manifest, never from guessing at
//! paths: a sandbox without a valid manifest is reported and skipped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// File name of the manifest at the top of a sandbox.
pub const MANIFEST: &str = "sandbox.json";
/// Directory of the runs' log files.
pub const LOGS_DIR: &str = "logs";
/// Working directory of the task's processes.
pub const WORK_DIR: &str = "work";

/// What a native sandbox holds, written by the node agent before the first
/// process starts and rewritten atomically when a run begins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format version, `1`.
    pub version: u32,
    /// Job key `role/env/name`.
    pub job: String,
    /// Instance number of the job this task runs.
    pub instance: u32,
    /// Task id; must equal the sandbox directory's name, or the shipper rejects the manifest.
    pub task_id: String,
    /// The current run.
    pub run: u32,
    /// Process names in start order.
    pub processes: Vec<String>,
    /// Source labels the shipper attaches to every line of the task; empty if absent.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How the task's lines group into multi-line events (the job spec's
    /// `multiline`); absent: every line is its own record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiline: Option<crate::multiline::Multiline>,
}

/// `run-<n>`, the directory of one run's logs.
pub fn run_dir(run: u32) -> String {
    format!("run-{run}")
}

/// The run number of a `run-<n>` directory name.
pub fn parse_run_dir(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("run-")?;
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

/// `<process>.stdout` / `<process>.stderr`.
pub fn log_file(process: &str, stderr: bool) -> String {
    format!("{process}.{}", if stderr { "stderr" } else { "stdout" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dirs_round_trip_and_refuse_lookalikes() {
        assert_eq!(parse_run_dir(&run_dir(12)), Some(12));
        for bad in ["run-", "run-01", "run-x", "run--1", "rn-1"] {
            assert_eq!(parse_run_dir(bad), None, "{bad}");
        }
    }

    #[test]
    fn manifests_refuse_unknown_fields() {
        let text = r#"{"version":1,"job":"a/b/c","instance":0,"task_id":"t","run":0,"processes":["p"],"extra":1}"#;
        assert!(serde_json::from_str::<Manifest>(text).is_err());
    }
}

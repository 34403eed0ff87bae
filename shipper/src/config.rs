//! Shipper configuration. Every field has a default but `root`,
//! `state_dir` and `host`; `validate` names the field that is wrong.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_schema::glob::JobGlob;
use sluice_schema::multiline::Multiline;

use crate::layout::LayoutKind;
use crate::{Error, Result};

/// Settings of one shipper (the `[shipper]` table of `sluice shipper --config`).
/// `Shipper::start` refuses it unless `validate` passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipperConfig {
    /// This node's name, recorded on every line.
    pub host: String,
    /// Which cluster manager's sandbox layout is under `root`.
    pub layout: LayoutKind,
    /// Where the layout's sandboxes are (e.g. `/var/log/pods`).
    pub root: PathBuf,
    /// Where checkpoints are kept.
    pub state_dir: PathBuf,
    /// Longer lines are cut into pieces flagged `partial`.
    #[serde(default = "defaults::max_line_bytes")]
    pub max_line_bytes: usize,
    /// Target size of one bus record (line text bytes).
    #[serde(default = "defaults::chunk_bytes")]
    pub chunk_bytes: usize,
    /// A last line without newline is shipped after this long without growth.
    #[serde(default = "defaults::quiet_ms")]
    pub quiet_ms: u64,
    /// How often open files are checked for new bytes (inotify wakes sooner).
    #[serde(default = "defaults::poll_ms")]
    pub poll_ms: u64,
    /// After inotify says a file grew, wait this long for more writes
    /// before reading, so a task writing many small lines costs one read
    /// and one bus record per interval instead of one per write. 0: read at
    /// once.
    #[serde(default = "defaults::coalesce_ms")]
    pub coalesce_ms: u64,
    /// Full rescan of the root, the safety net under inotify.
    #[serde(default = "defaults::rescan_ms")]
    pub rescan_ms: u64,
    /// Most files held open; idle, fully read files are closed first.
    #[serde(default = "defaults::max_open_files")]
    pub max_open_files: usize,
    /// Bytes read but not yet acknowledged by the bus: past it the shipper
    /// stops reading (the files are the buffer).
    #[serde(default = "defaults::max_inflight_bytes")]
    pub max_inflight_bytes: usize,
    /// A rotated or deleted file is closed this long after its last growth.
    #[serde(default = "defaults::rotated_grace_ms")]
    pub rotated_grace_ms: u64,
    /// How often acknowledged offsets are written to the checkpoint file.
    #[serde(default = "defaults::checkpoint_ms")]
    pub checkpoint_ms: u64,
    /// Chunks a Tail stream may fall behind the tracker before it catches
    /// up from the files instead.
    #[serde(default = "defaults::tail_buffer")]
    pub tail_buffer: usize,
    /// Added to every source's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Multi-line rules by job glob, for layouts whose sandboxes do not
    /// carry one (Kubernetes, Docker, Nomad, Mesos, Thermos; a native
    /// sandbox's manifest rule wins). The first rule whose `job` glob
    /// matches applies.
    #[serde(default)]
    pub multiline: Vec<JobMultiline>,
    /// The kubernetes layout's optional mode: ask the API server for each
    /// pod's labels and controller ([`crate::layout::pod_api`]).
    #[serde(default)]
    pub kubernetes_api: Option<crate::layout::pod_api::KubernetesApi>,
}

/// `[[shipper.multiline]]`: a multi-line rule for the jobs a glob matches.
///
/// ```toml
/// [[shipper.multiline]]
/// job = "payments/prod/*"
/// rule = "java"                # or { start = '^\d{4}-' }, { continue = '^\s' }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMultiline {
    /// Job key glob (`www/prod/*`, `*/prod/web`, `www`).
    pub job: String,
    /// The rule (see `sluice_schema::multiline`).
    pub rule: Multiline,
}

mod defaults {
    pub fn max_line_bytes() -> usize {
        256 << 10
    }
    pub fn chunk_bytes() -> usize {
        64 << 10
    }
    pub fn quiet_ms() -> u64 {
        1000
    }
    pub fn poll_ms() -> u64 {
        200
    }
    pub fn coalesce_ms() -> u64 {
        5
    }
    pub fn rescan_ms() -> u64 {
        10_000
    }
    pub fn max_open_files() -> usize {
        1024
    }
    pub fn max_inflight_bytes() -> usize {
        8 << 20
    }
    pub fn tail_buffer() -> usize {
        4096
    }
    pub fn rotated_grace_ms() -> u64 {
        5000
    }
    pub fn checkpoint_ms() -> u64 {
        1000
    }
}

impl ShipperConfig {
    /// A configuration with every default.
    pub fn new(
        host: impl Into<String>,
        layout: LayoutKind,
        root: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        ShipperConfig {
            host: host.into(),
            layout,
            root: root.into(),
            state_dir: state_dir.into(),
            max_line_bytes: defaults::max_line_bytes(),
            chunk_bytes: defaults::chunk_bytes(),
            quiet_ms: defaults::quiet_ms(),
            poll_ms: defaults::poll_ms(),
            coalesce_ms: defaults::coalesce_ms(),
            rescan_ms: defaults::rescan_ms(),
            max_open_files: defaults::max_open_files(),
            max_inflight_bytes: defaults::max_inflight_bytes(),
            rotated_grace_ms: defaults::rotated_grace_ms(),
            checkpoint_ms: defaults::checkpoint_ms(),
            tail_buffer: defaults::tail_buffer(),
            labels: BTreeMap::new(),
            multiline: Vec::new(),
            kubernetes_api: None,
        }
    }

    /// Checks every field's range and relations (e.g. `state_dir` outside
    /// `root`); the error is `Error::Config` naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(Error::Config(format!("{field}: {why}")));
        if self.host.trim().is_empty() {
            return bad("host", "must not be empty");
        }
        if !self.root.is_absolute() {
            return bad("root", "must be an absolute path");
        }
        if !self.state_dir.is_absolute() {
            return bad("state_dir", "must be an absolute path");
        }
        if self.state_dir.starts_with(&self.root) {
            return bad("state_dir", "must not be inside root");
        }
        if !(1024..=16 << 20).contains(&self.max_line_bytes) {
            return bad("max_line_bytes", "must be between 1024 and 16777216");
        }
        if !(1024..=8 << 20).contains(&self.chunk_bytes) {
            return bad("chunk_bytes", "must be between 1024 and 8388608");
        }
        if self.max_inflight_bytes < 2 * self.chunk_bytes.max(self.max_line_bytes) {
            return bad(
                "max_inflight_bytes",
                "must be at least twice chunk_bytes and max_line_bytes",
            );
        }
        if !(1..=1 << 20).contains(&self.tail_buffer) {
            return bad("tail_buffer", "must be between 1 and 1048576");
        }
        if self.coalesce_ms > 1000 {
            return bad("coalesce_ms", "must be at most 1000");
        }
        if self.max_open_files < 16 {
            return bad("max_open_files", "must be at least 16");
        }
        for (field, value) in [
            ("quiet_ms", self.quiet_ms),
            ("poll_ms", self.poll_ms),
            ("rescan_ms", self.rescan_ms),
            ("checkpoint_ms", self.checkpoint_ms),
        ] {
            if value == 0 {
                return bad(field, "must be positive");
            }
        }
        if let Some(api) = &self.kubernetes_api {
            if self.layout != LayoutKind::Kubernetes {
                return bad(
                    "kubernetes_api",
                    "only the kubernetes layout asks the API server",
                );
            }
            if !(100..=60_000).contains(&api.timeout_ms) {
                return bad("kubernetes_api.timeout_ms", "must be between 100 and 60000");
            }
        }
        for (i, rule) in self.multiline.iter().enumerate() {
            if let Err(e) = JobGlob::parse(&rule.job) {
                return bad(&format!("multiline[{i}].job"), &e.to_string());
            }
            if let Err(e) = rule.rule.validate() {
                return bad(&format!("multiline[{i}].rule"), &e);
            }
        }
        Ok(())
    }

    /// The multi-line rule of `job` from `multiline`: the first whose glob
    /// matches.
    pub fn multiline_for(&self, job: &str) -> Option<&Multiline> {
        self.multiline
            .iter()
            .find(|r| JobGlob::parse(&r.job).is_ok_and(|g| g.matches(job)))
            .map(|r| &r.rule)
    }

    /// `quiet_ms` as a duration: how long an unterminated last line waits
    /// for more bytes before it is shipped.
    pub fn quiet(&self) -> Duration {
        Duration::from_millis(self.quiet_ms)
    }
    /// `coalesce_ms` as a duration; zero reads as soon as inotify reports growth.
    pub fn coalesce(&self) -> Duration {
        Duration::from_millis(self.coalesce_ms)
    }

    /// `poll_ms` as a duration: the interval between checks of open files.
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }
    /// `rescan_ms` as a duration: the interval between full walks of the root.
    pub fn rescan(&self) -> Duration {
        Duration::from_millis(self.rescan_ms)
    }
    /// `rotated_grace_ms` as a duration: how long a rotated or deleted file
    /// stays open after its last growth.
    pub fn rotated_grace(&self) -> Duration {
        Duration::from_millis(self.rotated_grace_ms)
    }
    /// `checkpoint_ms` as a duration: the interval between checkpoint saves.
    pub fn checkpoint_every(&self) -> Duration {
        Duration::from_millis(self.checkpoint_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let ok = ShipperConfig::new(
            "n1",
            LayoutKind::Native,
            "/srv/sandboxes",
            "/var/lib/sluice/shipper",
        );
        ok.validate().unwrap();
        let cases: Vec<(ShipperConfig, &str)> = vec![
            (
                ShipperConfig {
                    host: " ".into(),
                    ..ok.clone()
                },
                "host:",
            ),
            (
                ShipperConfig {
                    root: "rel".into(),
                    ..ok.clone()
                },
                "root:",
            ),
            (
                ShipperConfig {
                    state_dir: "/srv/sandboxes/state".into(),
                    ..ok.clone()
                },
                "state_dir: must not be inside root",
            ),
            (
                ShipperConfig {
                    max_line_bytes: 10,
                    ..ok.clone()
                },
                "max_line_bytes:",
            ),
            (
                ShipperConfig {
                    max_inflight_bytes: 1000,
                    ..ok.clone()
                },
                "max_inflight_bytes:",
            ),
            (
                ShipperConfig {
                    poll_ms: 0,
                    ..ok.clone()
                },
                "poll_ms: must be positive",
            ),
        ];
        for (config, expected) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn unknown_fields_and_layouts_are_refused() {
        let err = serde_json::from_str::<ShipperConfig>(
            r#"{"host":"h","layout":"native","root":"/r","state_dir":"/s","bogus":1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `bogus`"), "{err}");
        let err = serde_json::from_str::<ShipperConfig>(
            r#"{"host":"h","layout":"lxc","root":"/r","state_dir":"/s"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown variant `lxc`"), "{err}");
    }

    #[test]
    fn multiline_rules_are_checked_and_matched_by_glob() {
        let mut c = ShipperConfig::new("n", LayoutKind::Kubernetes, "/r", "/s");
        let json = r#"[
            {"job": "pay/prod/*", "rule": "java"},
            {"job": "*/*/*", "rule": {"start": "^\\d{4}-", "timeout_ms": 500}}
        ]"#;
        c.multiline = serde_json::from_str(json).unwrap();
        c.validate().unwrap();
        use sluice_schema::multiline::Rule;
        assert_eq!(c.multiline_for("pay/prod/api").unwrap().rule, Rule::Java);
        assert_eq!(c.multiline_for("web/prod/x").unwrap().timeout_ms, 500);
        c.multiline[0].job = "a/b/c/d".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("multiline[0].job"), "{err}");
        c.multiline[0].job = "pay".into();
        c.multiline[1].rule.rule = Rule::Continue("(".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("multiline[1].rule: continue: regex parse error"),
            "{err}"
        );
    }
}

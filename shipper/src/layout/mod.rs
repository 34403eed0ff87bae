//! Sandbox layouts: where each cluster manager puts task logs, and how a
//! path becomes the identity of who wrote it.
//!
//! Each layout is a module: [`native`] (sandboxes created by scheduler-core,
//! identity from their manifest), [`thermos`] (Aurora), [`mesos`] (agent work
//! directory), [`kubernetes`] (`/var/log/pods`, CRI lines), [`docker`]
//! (json-file driver) and [`nomad`] (alloc logs). A layout answers three
//! questions about a path under its root: is it a log file, who wrote it
//! ([`Identity`]), and which sandbox does it belong to (the unit the
//! scheduler's garbage collector asks about). Its [`Framing`] says how the
//! file's bytes become lines.

pub mod docker;
pub mod framing;
pub mod kubernetes;
pub mod mesos;
mod names;
pub mod native;
pub mod nomad;
pub mod pod_api;
pub mod thermos;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_schema::pb::{Layout as LayoutProto, Stream};

pub use framing::{Frame, Framing, FramingError};

/// Who wrote a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Job key `role/env/name`.
    pub job: String,
    /// Instance number within the job (StatefulSet ordinal, Aurora
    /// instance, ...); 0 where the layout has none.
    pub instance: u32,
    /// The cluster manager's id for the task: manifest task id, pod uid,
    /// container id, allocation id or executor id.
    pub task_id: String,
    /// Run (restart) number of the instance.
    pub run: u32,
    /// Process or container name.
    pub process: String,
    /// `Unspecified` when the file holds both streams and its framing says
    /// which each line is (Kubernetes CRI, Docker json-file).
    pub stream: Stream,
    /// Labels the layout found (manifest labels, pod namespace, container
    /// id, ...); they override the configured labels of the same name.
    pub labels: BTreeMap<String, String>,
    /// How the task's lines group into multi-line events, when the layout
    /// says (a native sandbox's manifest); otherwise the shipper's
    /// configuration may give a rule for the job.
    pub multiline: Option<sluice_schema::multiline::Multiline>,
}

/// Why a path that looks like a log file has no identity. The shipper
/// reports it once per sandbox and skips the file; it never stops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{problem}", path.display(), crate::error::field_prefix(field))]
pub struct LayoutError {
    /// The file at fault (a log file, or the metadata naming it).
    pub path: PathBuf,
    /// The field of that file at fault (`Config.Labels`), `""` when the
    /// problem is not one field's.
    pub field: String,
    /// What is wrong, e.g. a missing manifest or one whose task id differs from its directory.
    pub problem: String,
}

impl LayoutError {
    /// An error about `path` as a whole; add a field with [`in_field`](Self::in_field).
    pub fn new(path: &Path, problem: impl Into<String>) -> Self {
        LayoutError {
            path: path.to_path_buf(),
            field: String::new(),
            problem: problem.into(),
        }
    }

    /// The same error, naming the field at fault.
    pub fn in_field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }
}

/// The layouts, as named in configuration and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutKind {
    /// Sandboxes made by scheduler-core's node agent, with a `sandbox.json` manifest.
    Native,
    /// Aurora/Thermos sandboxes: `<task_id>/.logs/<process>/<run>/`.
    Thermos,
    /// A Mesos agent's work directory: each executor run's `stdout` and `stderr`.
    Mesos,
    /// The kubelet's `/var/log/pods`, CRI-framed files.
    Kubernetes,
    /// Docker's containers directory, json-file log driver.
    Docker,
    /// A Nomad client's `alloc` directory, `logmon`'s numbered files.
    Nomad,
}

impl LayoutKind {
    /// Every layout, in the order an unknown-layout error lists them.
    pub const ALL: [LayoutKind; 6] = [
        LayoutKind::Native,
        LayoutKind::Thermos,
        LayoutKind::Mesos,
        LayoutKind::Kubernetes,
        LayoutKind::Docker,
        LayoutKind::Nomad,
    ];

    /// The lowercase name used in configuration, `--layout` and logs; what
    /// `from_str` accepts.
    pub fn name(self) -> &'static str {
        match self {
            LayoutKind::Native => "native",
            LayoutKind::Thermos => "thermos",
            LayoutKind::Mesos => "mesos",
            LayoutKind::Kubernetes => "kubernetes",
            LayoutKind::Docker => "docker",
            LayoutKind::Nomad => "nomad",
        }
    }

    /// A new instance of this layout's [`Layout`] implementation.
    pub fn layout(self) -> Box<dyn Layout> {
        match self {
            LayoutKind::Native => Box::new(native::Native),
            LayoutKind::Thermos => Box::new(thermos::Thermos),
            LayoutKind::Mesos => Box::new(mesos::Mesos),
            LayoutKind::Kubernetes => Box::new(kubernetes::Kubernetes::default()),
            LayoutKind::Docker => Box::new(docker::Docker),
            LayoutKind::Nomad => Box::new(nomad::Nomad),
        }
    }
}

impl std::str::FromStr for LayoutKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        LayoutKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = LayoutKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown layout {name:?}, expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// One cluster manager's log layout: which files under the root are logs,
/// who wrote each, its sandbox and framing. Stateless; shared by the
/// tracker and ship progress.
pub trait Layout: Send + Sync + fmt::Debug {
    /// The layout as recorded in each line's `Source`.
    fn kind(&self) -> LayoutProto;

    /// How this layout's files frame lines.
    fn framing(&self) -> Framing;

    /// How many directories deep under the root log files sit
    /// (`<root>/a/b/x.log` is 2): discovery descends no further.
    fn max_depth(&self) -> usize;

    /// The identity of the file at `path` (somewhere under `root`):
    /// `Ok(None)` when it is not a log file of this layout (a manifest, a
    /// working file, a compressed rotation), an error when it should be one
    /// but its identity cannot be known (a native sandbox without a valid
    /// manifest). May read small metadata files beside it; never the log.
    fn identify(&self, root: &Path, path: &Path) -> Result<Option<Identity>, LayoutError>;

    /// The sandbox directory `path` belongs to: what the scheduler's garbage
    /// collector deletes as a whole and asks "fully shipped?" about.
    fn sandbox(&self, root: &Path, path: &Path) -> Option<PathBuf>;
}

/// `path` relative to `root`, as UTF-8 components; `None` when `path` is not
/// under `root` or a component is not UTF-8. Layouts match on these.
pub fn components<'a>(root: &Path, path: &'a Path) -> Option<Vec<&'a str>> {
    path.strip_prefix(root)
        .ok()?
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect()
}

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
    pub instance: u32,
    pub task_id: String,
    /// Run (restart) number of the instance.
    pub run: u32,
    /// Process or container name.
    pub process: String,
    /// `Unspecified` when the file holds both streams and its framing says
    /// which each line is (Kubernetes CRI, Docker json-file).
    pub stream: Stream,
    pub labels: BTreeMap<String, String>,
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
    pub problem: String,
}

impl LayoutError {
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
    Native,
    Thermos,
    Mesos,
    Kubernetes,
    Docker,
    Nomad,
}

impl LayoutKind {
    pub const ALL: [LayoutKind; 6] = [
        LayoutKind::Native,
        LayoutKind::Thermos,
        LayoutKind::Mesos,
        LayoutKind::Kubernetes,
        LayoutKind::Docker,
        LayoutKind::Nomad,
    ];

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

    pub fn layout(self) -> Box<dyn Layout> {
        match self {
            LayoutKind::Native => Box::new(native::Native),
            LayoutKind::Thermos => Box::new(thermos::Thermos),
            LayoutKind::Mesos => Box::new(mesos::Mesos),
            LayoutKind::Kubernetes => Box::new(kubernetes::Kubernetes),
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

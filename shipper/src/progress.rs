//! Ship progress: for each sandbox, how many bytes its log files hold and how
//! many of them the bus has acknowledged.
//!
//! The scheduler's garbage collector asks [`Progress::sandbox`] "is this
//! sandbox fully shipped?" before deleting it. The answer does not trust the
//! shipper's memory alone: it lists the sandbox's log files on disk (through
//! the layout), so a file the shipper has not discovered yet counts as
//! entirely unshipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::files::source::FileKey;
use crate::layout::Layout;

/// Ship progress of one log file in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileProgress {
    /// Path of the file as found in the sandbox.
    pub path: PathBuf,
    /// Bytes in the file now.
    pub size: u64,
    /// Bytes acknowledged by the bus (every line before this offset).
    pub acked: u64,
}

impl FileProgress {
    /// Bytes not yet acknowledged; 0 also when the file shrank below `acked`.
    pub fn unshipped(&self) -> u64 {
        self.size.saturating_sub(self.acked)
    }
}

/// How much of one sandbox's logs the bus has acknowledged, as
/// [`Progress::sandbox`] finds it on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxProgress {
    /// The sandbox directory asked about.
    pub sandbox: PathBuf,
    /// Its log files, sorted by path, as found on disk now; files whose identity
    /// failed are included, and being never shipped, a non-empty one keeps the
    /// sandbox unshipped.
    pub files: Vec<FileProgress>,
    /// Sum of the files' sizes, in bytes.
    pub written: u64,
    /// Sum of the files' acknowledged bytes (each capped at its size).
    pub acked: u64,
    /// Sum of the files' [`FileProgress::unshipped`] bytes.
    pub unshipped: u64,
    /// `unshipped == 0`: the garbage collector may delete the sandbox.
    pub fully_shipped: bool,
}

/// Shared between the tracker (which records acknowledgements) and whoever
/// asks (the node agent's garbage collector, status, metrics).
#[derive(Debug)]
pub struct Progress {
    root: PathBuf,
    layout: Arc<dyn Layout>,
    acked: Mutex<HashMap<FileKey, u64>>,
}

impl Progress {
    pub(crate) fn new(root: PathBuf, layout: Arc<dyn Layout>) -> Self {
        Progress {
            root,
            layout,
            acked: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn record(&self, key: FileKey, acked: u64) {
        self.acked.lock().unwrap().insert(key, acked);
    }

    pub(crate) fn forget(&self, key: &FileKey) {
        self.acked.lock().unwrap().remove(key);
    }

    /// The progress of the sandbox directory `sandbox`, from its files on disk.
    pub fn sandbox(&self, sandbox: &Path) -> SandboxProgress {
        let acked = self.acked.lock().unwrap().clone();
        let mut files = Vec::new();
        let mut stack = vec![sandbox.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.is_file()
                    && matches!(
                        self.layout.identify(&self.root, &path),
                        Ok(Some(_)) | Err(_)
                    )
                {
                    let key = FileKey::of(&meta);
                    let size = meta.len();
                    files.push(FileProgress {
                        path,
                        size,
                        acked: acked.get(&key).copied().unwrap_or(0).min(size),
                    });
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let written = files.iter().map(|f| f.size).sum();
        let shipped: u64 = files.iter().map(|f| f.acked).sum();
        let unshipped = files.iter().map(FileProgress::unshipped).sum();
        SandboxProgress {
            sandbox: sandbox.to_path_buf(),
            files,
            written,
            acked: shipped,
            unshipped,
            fully_shipped: unshipped == 0,
        }
    }
}

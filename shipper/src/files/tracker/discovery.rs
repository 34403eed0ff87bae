//! Finding files: inotify hints and rescans, identities from the layout,
//! new generations, resuming from the checkpoint, pairing a copy with the
//! file it was copied from.

use super::*;

impl Tracker {
    /// Walks the root for log files, and forgets checkpoints of files that
    /// no longer exist.
    pub(super) fn rescan(&mut self) {
        let root = self.config.root.clone();
        let mut found = Vec::new();
        walk(&root, self.layout.max_depth() + 1, &mut found);
        // Files known from checkpoints first: an original must be known
        // before a copy of it is looked at.
        found.sort_by_cached_key(|p| {
            let known = std::fs::symlink_metadata(p)
                .is_ok_and(|m| self.checkpoints.get(&FileKey::of(&m)).is_some());
            !known
        });
        for path in &found {
            self.consider(path, true);
        }
        let live: std::collections::HashSet<FileKey> = found
            .iter()
            .filter_map(|p| std::fs::symlink_metadata(p).ok().map(|m| FileKey::of(&m)))
            .collect();
        // A file renamed while the directory was being read can be missed
        // by one walk: its checkpoint goes only when two walks in a row
        // miss it, or it would be read again under a new name.
        let mut missing = std::collections::HashSet::new();
        for key in self.checkpoints.keys() {
            if !live.contains(&key) && !self.files.contains_key(&key) {
                if self.missed.contains(&key) {
                    self.checkpoints.remove(&key);
                } else {
                    missing.insert(key);
                }
            }
        }
        self.missed = missing;
        self.metrics.files_tracked.set(self.files.len() as u64);
    }

    pub(super) fn hinted(&mut self, path: &Path) {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {
                let depth = path
                    .strip_prefix(&self.config.root)
                    .map_or(0, |p| p.components().count());
                let mut found = Vec::new();
                walk(
                    path,
                    (self.layout.max_depth() + 1).saturating_sub(depth),
                    &mut found,
                );
                for p in found {
                    self.consider(&p, false);
                }
            }
            Ok(meta) if meta.is_file() => match self.by_path.get(path) {
                Some(key) if *key == FileKey::of(&meta) => {
                    self.dirty.insert(*key);
                }
                _ => self.consider(path, false),
            },
            _ => {
                if let Some(key) = self.by_path.get(path) {
                    self.dirty.insert(*key);
                }
            }
        }
    }

    /// Starts tracking the file at `path` if it is a log file not tracked yet.
    pub(super) fn consider(&mut self, path: &Path, rescan: bool) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        if !meta.is_file() {
            return;
        }
        let key = FileKey::of(&meta);
        if let Some(t) = self.files.get_mut(&key) {
            if t.path != path {
                t.path = path.to_path_buf();
                t.dir_id = dir_id(path);
                self.by_path.insert(path.to_path_buf(), key);
            }
            return;
        }
        if !rescan && self.reported.contains_key(path) {
            return;
        }
        let identity = match self.layout.identify(&self.config.root, path) {
            Ok(Some(identity)) => identity,
            Ok(None) => return,
            Err(e) => {
                let problem = e.to_string();
                if self.reported.get(path) != Some(&problem) {
                    tracing::warn!(error = %problem, "log file skipped: its identity is unknown");
                    self.metrics.errors.inc();
                    self.reported.insert(path.to_path_buf(), problem);
                }
                return;
            }
        };
        self.reported.remove(path);
        let Ok(file) = File::open(path) else { return };
        let birth = source::birth_nanos(&meta);
        let size = meta.len();
        let prefix = source::prefix(&file, size).unwrap_or_default();
        let dir = path.parent().unwrap_or(path).to_path_buf();

        let mut paired = false;
        let mut cuts = Vec::new();
        let (start, generation, source_id) = match self.checkpoints.get(&key).cloned() {
            // The same file generation as before a restart.
            Some(c) if resumes(&c, birth, &file, size) => {
                cuts = c.cuts;
                (c.offset, c.generation, c.source_id)
            }
            // Truncated or rewritten while the shipper was down (same birth),
            // or a new file on a reused inode: the next generation, so its
            // `source_id` is new; old content may have a copy beside it.
            Some(c) => {
                // Wraps rather than panics on a checkpoint file that says
                // u32::MAX (no file is truncated 4 billion times).
                let generation = c.generation.wrapping_add(1);
                if c.birth == birth {
                    self.record_truncation(TruncationRecord {
                        dir: dir.clone(),
                        source_id: c.source_id,
                        prefix: c.prefix,
                        offset: c.offset,
                        at_unix_ms: now_nanos() / 1_000_000,
                    });
                    self.metrics.truncations.inc();
                    self.event(
                        EventKind::FileTruncated,
                        None,
                        path,
                        "truncated",
                        format!(
                            "{} was truncated while the shipper was down (it had read {} bytes)",
                            path.display(),
                            c.offset
                        ),
                        &[("offset", c.offset.to_string())],
                    );
                }
                (
                    0,
                    generation,
                    source::source_id(&self.config.host, key, birth, generation),
                )
            }
            _ => match self.copy_origin(&dir, &key, &file, size, path) {
                // The copy is the truncated generation, byte for byte: it
                // keeps that generation's name, so lines sent from both carry
                // the same (source_id, offset) and the archive keeps one.
                CopyOf::Truncated { source_id, offset } => {
                    self.event(
                        EventKind::FileRotated,
                        None,
                        path,
                        "copytruncate",
                        format!(
                            "{} is a copy of a truncated file (acknowledged up to byte {offset}); its lines continue that file's",
                            path.display()
                        ),
                        &[
                            ("offset", offset.to_string()),
                            ("source_id", format!("{source_id:016x}")),
                        ],
                    );
                    // From the start: what the original already sent is sent
                    // again under the same names and dropped downstream; no
                    // offset bookkeeping can lose a line in a crash.
                    paired = true;
                    (0, 0, source_id)
                }
                CopyOf::Live => return,
                CopyOf::Nothing => (0, 0, source::source_id(&self.config.host, key, birth, 0)),
            },
        };
        self.waiting_copies.remove(path);
        let sandbox = self.layout.sandbox(&self.config.root, path).unwrap_or(dir);
        let source = self.source_proto(&identity, path, source_id);
        // The sandbox's own rule, else the configuration's for the job
        // (both validated: the manifest's when read, the configuration's
        // at start).
        let grouping = identity
            .multiline
            .as_ref()
            .or_else(|| self.config.multiline_for(&identity.job))
            .and_then(|m| Grouping::new(m).ok())
            .map(Arc::new);
        self.make_room();
        self.open_files += 1;
        let start_tail = source::tail(&file, start).unwrap_or_default();
        tracing::debug!(path = %path.display(), source_id = format_args!("{source_id:016x}"), start, generation, copy_of_truncated = paired, "tracking file");
        let t = Tracked {
            key,
            path: path.to_path_buf(),
            dir_id: dir_id(path),
            sandbox,
            source,
            birth,
            generation,
            prefix,
            file: Some(file),
            lines: LineAssembler::new(self.framing, self.config.max_line_bytes, start)
                .with_grouping(grouping.clone(), &cuts),
            grouping,
            cuts,
            read_tail: start_tail,
            acked: start,
            acked_tail: start_tail,
            epoch: 0,
            inflight: VecDeque::new(),
            size,
            mtime: (meta.mtime(), meta.mtime_nsec()),
            last_growth: Instant::now(),
            registered: false,
            gone: false,
            ended: false,
            retry_at: None,
            backoff: Duration::from_millis(100),
            first_seen_nanos: now_nanos(),
            samples: Vec::new(),
        };
        self.progress.record(key, start);
        self.checkpoints.put(t.checkpoint());
        self.files.insert(key, t);
        self.by_path.insert(path.to_path_buf(), key);
        self.dirty.insert(key);
        self.metrics.files_tracked.set(self.files.len() as u64);
        if paired {
            // The pairing lives only in memory until saved: a restart must
            // find the copy under the name it adopted.
            self.save();
        }
    }

    pub(super) fn source_proto(&self, identity: &Identity, path: &Path, source_id: u64) -> Source {
        let mut labels = self.config.labels.clone();
        labels.extend(identity.labels.clone());
        Source {
            host: self.config.host.clone(),
            job: identity.job.clone(),
            instance: identity.instance,
            task_id: identity.task_id.clone(),
            run: identity.run,
            process: identity.process.clone(),
            stream: identity.stream as i32,
            path: path.to_string_lossy().into_owned(),
            layout: self.layout.kind() as i32,
            labels,
            source_id,
        }
    }
}

/// Whether `file` (`size` bytes) is still the generation `c` records: same
/// birth, not shorter than what was acknowledged, and the recorded bytes at
/// its start and before the acknowledged offset are still there.
///
/// Without birth times, the first bytes tell a reused inode: the file must
/// still begin with the recorded ones. A file that grew past a recorded
/// prefix shorter than `PREFIX_BYTES` does; its current, longer prefix
/// differs from the recorded one, and is no sign of a new generation.
pub(super) fn resumes(c: &Checkpoint, birth: Option<i64>, file: &File, size: u64) -> bool {
    c.birth == birth
        && c.offset <= size
        && still_starts(file, &c.prefix)
        && (c.tail.len == 0 || source::tail(file, c.offset).is_ok_and(|t| same_start(&t, &c.tail)))
}

/// Regular files in `dir` and its subdirectories, `depth` levels in all
/// (1: `dir` itself); symlinks skipped.
pub(super) fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_file() {
            out.push(entry.path());
        } else if kind.is_dir() && depth > 1 {
            walk(&entry.path(), depth - 1, out);
        }
    }
}

pub(super) fn dir_id(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let dir = path.parent().unwrap_or(path);
    source::Prefix::of(dir.as_os_str().as_bytes()).hash
}

//! Measuring and reclaiming disk on a node (Linux): how much a sandbox
//! directory holds ([`dir_usage`]), how full its filesystem is
//! ([`fs_usage`]), giving back the already-shipped prefix of a log file that
//! is still being written ([`punch_hole`]) and deleting a collected sandbox
//! ([`remove_tree`]).
//!
//! Everything here counts *allocated* bytes (`st_blocks × 512`), not file
//! sizes: a sparse or hole-punched log costs only what it holds, which is the
//! point of punching, and is what the disk quota ([`over_quota`]) compares
//! with `disk_mb`. The garbage-collection policy that decides what to delete
//! or punch is pure and lives in [`crate::gc`].

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Directories nested deeper than this below the walked root are not
/// entered; they are counted in [`DirUsage::skipped_dirs`]. The walk is
/// iterative, so the bound protects path lengths and time, not the stack.
pub const MAX_DEPTH: usize = 64;

/// The `reason` of the event and kill when a task uses more than its disk
/// quota.
pub const DISK_QUOTA_EXCEEDED: &str = "disk_quota_exceeded";

/// What a directory tree holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirUsage {
    /// Blocks allocated (`st_blocks × 512`) by every entry, directories
    /// included; a hard-linked inode is counted once.
    pub allocated_bytes: u64,
    /// Sum of the sizes of the files (not directories) in the tree.
    pub apparent_bytes: u64,
    /// Entries that are not directories (files, symlinks, sockets…).
    pub files: u64,
    /// Directories that were not walked: deeper than [`MAX_DEPTH`], on
    /// another filesystem (a mount inside the tree), or unreadable. Their
    /// contents are missing from the totals, so a caller enforcing a quota
    /// should report a sandbox where this is not zero.
    pub skipped_dirs: u64,
}

/// Measures the tree at `path` without following symbolic links and without
/// crossing into other filesystems. Entries that vanish during the walk are
/// skipped (tasks keep writing while they are measured); only a failure to
/// read `path` itself is an error.
pub fn dir_usage(path: &Path) -> Result<DirUsage> {
    let root = std::fs::symlink_metadata(path)
        .map_err(|e| Error::io("failed to measure disk usage of", path, e))?;
    let mut usage = DirUsage::default();
    let mut seen = HashSet::new();
    if !root.is_dir() {
        add_entry(&mut usage, &mut seen, &root);
        return Ok(usage);
    }
    let device = root.dev();
    usage.allocated_bytes += root.blocks() * 512;
    let mut stack: Vec<(PathBuf, usize)> = vec![(path.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound && depth > 0 => continue,
            Err(e) if depth == 0 => {
                return Err(Error::io("failed to measure disk usage of", path, e));
            }
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "unreadable directory skipped");
                usage.skipped_dirs += 1;
                continue;
            }
        };
        for entry in entries {
            // An error here is the directory vanishing under us.
            let Ok(entry) = entry else { break };
            // `DirEntry::metadata` is `fstatat(AT_SYMLINK_NOFOLLOW)`.
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(_) => continue,
            };
            if !meta.is_dir() {
                add_entry(&mut usage, &mut seen, &meta);
                continue;
            }
            if meta.dev() != device || depth + 1 > MAX_DEPTH {
                usage.skipped_dirs += 1;
                continue;
            }
            usage.allocated_bytes += meta.blocks() * 512;
            stack.push((entry.path(), depth + 1));
        }
    }
    Ok(usage)
}

fn add_entry(usage: &mut DirUsage, seen: &mut HashSet<(u64, u64)>, meta: &std::fs::Metadata) {
    if meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
        return;
    }
    usage.files += 1;
    usage.apparent_bytes += meta.size();
    usage.allocated_bytes += meta.blocks() * 512;
}

/// Whether a sandbox measured at `usage` is over a quota of `disk_mb`
/// mebibytes (allocated bytes, so punched holes do not count). The node
/// agent kills such a task with reason [`DISK_QUOTA_EXCEEDED`].
pub fn over_quota(usage: &DirUsage, disk_mb: u64) -> bool {
    usage.allocated_bytes > disk_mb.saturating_mul(1 << 20)
}

/// How full a filesystem is, from `statvfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    /// Size of the filesystem.
    pub total_bytes: u64,
    /// Blocks in use (`f_blocks − f_bfree`).
    pub used_bytes: u64,
    /// Blocks an unprivileged writer may still use (`f_bavail`): the blocks
    /// reserved for root are neither used nor available.
    pub available_bytes: u64,
}

impl FsUsage {
    /// `used / (used + available)`, as `df` computes `Use%`: 1.0 when tasks
    /// (which do not write as root) can write no more, even though the
    /// root-reserved blocks are still free.
    pub fn usage_fraction(&self) -> f64 {
        let capacity = self.capacity_bytes();
        if capacity == 0 {
            return 1.0;
        }
        self.used_bytes as f64 / capacity as f64
    }

    /// `used + available`: what tasks can fill.
    pub fn capacity_bytes(&self) -> u64 {
        self.used_bytes.saturating_add(self.available_bytes)
    }
}

/// The usage of the filesystem holding `path`.
pub fn fs_usage(path: &Path) -> Result<FsUsage> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        Error::io(
            "failed to stat filesystem of",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        )
    })?;
    // SAFETY: `statvfs` is plain old data; zeroed is a valid value and the
    // call fully initialises it on success.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string, `stat` a valid
    // out-pointer for the duration of the call.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(Error::io(
            "failed to stat filesystem of",
            path,
            io::Error::last_os_error(),
        ));
    }
    let fragment = stat.f_frsize as u64;
    let blocks = stat.f_blocks as u64;
    let free = stat.f_bfree as u64;
    Ok(FsUsage {
        total_bytes: blocks * fragment,
        used_bytes: blocks.saturating_sub(free) * fragment,
        available_bytes: stat.f_bavail as u64 * fragment,
    })
}

/// What [`punch_hole`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Punched {
    /// The hole was punched; `bytes` is how much the file's allocation
    /// shrank (0 when the range held no whole block, or was already a hole).
    Freed {
        /// Bytes the file's allocation shrank by; 0 if nothing was freed.
        bytes: u64,
    },
    /// The filesystem cannot punch holes (`EOPNOTSUPP`, `ENOSYS`): say so
    /// once, and do not try that filesystem again.
    Unsupported,
}

/// Deallocates the whole filesystem blocks inside `[offset, offset + len)`
/// of `file`, keeping its size: offsets stay valid for readers, and the
/// range reads back as zeros. The range is shrunk to block boundaries
/// (`st_blksize`: the start rounded up, the end down), so bytes outside it
/// are never touched. `file` must be open for writing. Meant for the
/// already-shipped prefix of a log a running task still appends to.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> Result<Punched> {
    let before = file
        .metadata()
        .map_err(|e| Error::io("failed to stat file to punch", fd_path(file), e))?;
    let block = before.blksize().max(1);
    let start = offset.div_ceil(block).saturating_mul(block);
    let end = offset.saturating_add(len) / block * block;
    if start >= end {
        return Ok(Punched::Freed { bytes: 0 });
    }
    let (Ok(start_off), Ok(len_off)) = (
        libc::off_t::try_from(start),
        libc::off_t::try_from(end - start),
    ) else {
        return Err(Error::io(
            "failed to punch hole in",
            fd_path(file),
            io::Error::new(io::ErrorKind::InvalidInput, "range beyond off_t"),
        ));
    };
    loop {
        // SAFETY: plain syscall on a file descriptor owned by `file`,
        // which outlives the call.
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                start_off,
                len_off,
            )
        };
        if rc == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => return Ok(Punched::Unsupported),
            _ => return Err(Error::io("failed to punch hole in", fd_path(file), err)),
        }
    }
    let after = file
        .metadata()
        .map_err(|e| Error::io("failed to stat punched file", fd_path(file), e))?;
    // A writer appending meanwhile may have allocated more: saturate.
    let bytes = before.blocks().saturating_sub(after.blocks()) * 512;
    Ok(Punched::Freed { bytes })
}

/// The path an open file was opened at, for error messages.
fn fd_path(file: &File) -> PathBuf {
    let fd = file.as_raw_fd();
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .unwrap_or_else(|_| PathBuf::from(format!("<fd {fd}>")))
}

/// Deletes the sandbox directory `path` and returns the bytes it had
/// allocated (measured just before). Refuses a symbolic link at `path` (it
/// would delete whatever it points to, or only the link) and a tree with a
/// filesystem mounted inside it (deleting would reach into the mount).
/// Symbolic links inside the tree are removed, never followed. A `path`
/// that is already gone frees 0 bytes.
pub fn remove_tree(path: &Path) -> Result<u64> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("failed to delete sandbox", path, e)),
    };
    let refuse = |why: &str| {
        Err(Error::io(
            "refusing to delete sandbox",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, why.to_string()),
        ))
    };
    if meta.file_type().is_symlink() {
        return refuse("it is a symbolic link");
    }
    if !meta.is_dir() {
        return refuse("it is not a directory");
    }
    let real =
        std::fs::canonicalize(path).map_err(|e| Error::io("failed to delete sandbox", path, e))?;
    if let Some(mount) = mounts_under(&real)
        .map_err(|e| Error::io("failed to read mounts to delete sandbox", path, e))?
    {
        return refuse(&format!("{} is mounted inside it", mount.display()));
    }
    let freed = dir_usage(path)?.allocated_bytes;
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(freed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(freed),
        Err(e) => Err(Error::io("failed to delete sandbox", path, e)),
    }
}

/// The first mount point at or below `dir` (canonical), from this
/// process's `/proc/self/mountinfo`.
fn mounts_under(dir: &Path) -> io::Result<Option<PathBuf>> {
    let text = match std::fs::read("/proc/self/mountinfo") {
        Ok(text) => text,
        // No procfs (a minimal container): nothing to check against.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for line in text.split(|&b| b == b'\n') {
        // `id parent major:minor root mount-point options ...`
        let Some(field) = line.split(|&b| b == b' ').nth(4) else {
            continue;
        };
        let mount = PathBuf::from(std::ffi::OsStr::from_bytes(&unescape_mountinfo(field)));
        if mount.starts_with(dir) {
            return Ok(Some(mount));
        }
    }
    Ok(None)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 3 < field.len() {
            let digits = &field[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};

    use super::*;

    fn write_file(path: &Path, bytes: usize) {
        std::fs::write(path, vec![b'x'; bytes]).unwrap();
    }

    #[test]
    fn dir_usage_counts_files_once_and_does_not_follow_links() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        write_file(&root.join("stdout"), 10_000);
        write_file(&root.join("a/b/stderr"), 5_000);
        std::fs::hard_link(root.join("stdout"), root.join("a/stdout.link")).unwrap();
        write_file(&outside.path().join("big"), 1 << 20);
        std::os::unix::fs::symlink(outside.path(), root.join("a/escape")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("big"), root.join("big")).unwrap();

        let usage = dir_usage(root).unwrap();
        // stdout (once), stderr, two symlinks.
        assert_eq!(usage.files, 4, "{usage:?}");
        let link_len = outside.path().as_os_str().len() as u64;
        let big_len = outside.path().join("big").as_os_str().len() as u64;
        assert_eq!(usage.apparent_bytes, 15_000 + link_len + big_len);
        assert!(usage.allocated_bytes >= 15_000, "{usage:?}");
        assert!(
            usage.allocated_bytes < 1 << 20,
            "followed a link: {usage:?}"
        );
        assert_eq!(usage.skipped_dirs, 0);
    }

    #[test]
    fn dir_usage_of_a_missing_root_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = dir_usage(&dir.path().join("gone")).unwrap_err().to_string();
        assert!(err.starts_with("failed to measure disk usage of"), "{err}");
        assert!(err.contains("gone"), "{err}");
    }

    #[test]
    fn dir_usage_stops_at_max_depth() {
        let dir = tempfile::tempdir().unwrap();
        let mut deep = dir.path().to_path_buf();
        for _ in 0..MAX_DEPTH + 3 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        write_file(&deep.join("hidden"), 4096);
        let usage = dir_usage(dir.path()).unwrap();
        assert_eq!(usage.skipped_dirs, 1, "{usage:?}");
        assert_eq!(usage.files, 0, "{usage:?}");
    }

    #[test]
    fn quota_compares_allocated_mebibytes() {
        let usage = DirUsage {
            allocated_bytes: 3 << 20,
            ..DirUsage::default()
        };
        assert!(over_quota(&usage, 2));
        assert!(!over_quota(&usage, 3));
        assert!(!over_quota(&usage, u64::MAX));
    }

    #[test]
    fn fs_usage_is_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let usage = fs_usage(dir.path()).unwrap();
        assert!(usage.total_bytes > 0);
        assert!(usage.used_bytes <= usage.total_bytes);
        assert!(usage.capacity_bytes() <= usage.total_bytes);
        let fraction = usage.usage_fraction();
        assert!((0.0..=1.0).contains(&fraction), "{fraction}");
        let err = fs_usage(&dir.path().join("gone")).unwrap_err().to_string();
        assert!(err.starts_with("failed to stat filesystem of"), "{err}");
    }

    fn filesystem_type(path: &Path) -> String {
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: zeroed `statfs` is valid; the call fills it.
        let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid string and out-pointer.
        let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
        if rc != 0 {
            return "unknown".into();
        }
        format!("f_type {:#x}", stat.f_type)
    }

    #[test]
    fn punch_hole_frees_the_aligned_range_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        let content: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8 + 1).collect();
        let mut file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        file.write_all(&content).unwrap();
        file.sync_all().unwrap();
        let block = file.metadata().unwrap().blksize();
        let allocated_before = file.metadata().unwrap().blocks() * 512;

        let (offset, len) = (5_000u64, 600_000u64);
        let punched = punch_hole(&file, offset, len).unwrap();
        let Punched::Freed { bytes } = punched else {
            eprintln!(
                "punch_hole unsupported on {} ({})",
                dir.path().display(),
                filesystem_type(dir.path())
            );
            assert_eq!(punched, Punched::Unsupported);
            return;
        };
        let start = offset.div_ceil(block) * block;
        let end = (offset + len) / block * block;
        assert!(bytes >= end - start, "freed {bytes}, range {}", end - start);
        let meta = file.metadata().unwrap();
        assert_eq!(meta.len(), content.len() as u64, "size changed");
        assert_eq!(meta.blocks() * 512, allocated_before - bytes);

        let mut read_back = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut read_back).unwrap();
        let (start, end) = (start as usize, end as usize);
        assert_eq!(
            read_back[..start],
            content[..start],
            "bytes before the hole"
        );
        assert!(
            read_back[start..end].iter().all(|&b| b == 0),
            "hole not zero"
        );
        assert_eq!(read_back[end..], content[end..], "bytes after the hole");

        // Less than one block, and a range already punched, free nothing.
        assert_eq!(
            punch_hole(&file, start as u64 + 1, block - 1).unwrap(),
            Punched::Freed { bytes: 0 }
        );
        assert_eq!(
            punch_hole(&file, start as u64, (end - start) as u64).unwrap(),
            Punched::Freed { bytes: 0 }
        );
    }

    #[test]
    fn punch_hole_needs_a_writable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        write_file(&path, 1 << 16);
        let file = File::open(&path).unwrap();
        match punch_hole(&file, 0, 1 << 16) {
            Ok(Punched::Unsupported) => {}
            Ok(other) => panic!("punched a read-only file: {other:?}"),
            Err(err) => {
                let err = err.to_string();
                assert!(err.starts_with("failed to punch hole in"), "{err}");
                assert!(err.contains("stdout"), "{err}");
            }
        }
    }

    #[test]
    fn remove_tree_returns_what_it_freed() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir_all(sandbox.join("logs")).unwrap();
        write_file(&sandbox.join("logs/stdout"), 100_000);
        let outside = dir.path().join("keep");
        write_file(&outside, 10);
        std::os::unix::fs::symlink(&outside, sandbox.join("link")).unwrap();
        let expected = dir_usage(&sandbox).unwrap().allocated_bytes;
        assert_eq!(remove_tree(&sandbox).unwrap(), expected);
        assert!(!sandbox.exists());
        assert!(outside.exists(), "followed a symlink");
        assert_eq!(remove_tree(&sandbox).unwrap(), 0, "already gone");
    }

    #[test]
    fn remove_tree_refuses_symlinks_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        write_file(&target.join("stdout"), 10);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = remove_tree(&link).unwrap_err().to_string();
        assert!(err.contains("refusing to delete sandbox"), "{err}");
        assert!(err.contains("symbolic link"), "{err}");
        assert!(target.join("stdout").exists());
        let err = remove_tree(&target.join("stdout")).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn mount_points_inside_a_tree_are_found() {
        // `/proc` is a mount point inside `/`.
        let found = mounts_under(Path::new("/")).unwrap();
        assert!(found.is_some(), "no mount found under /");
        assert_eq!(
            mounts_under(Path::new("/proc/self/nonexistent")).unwrap(),
            None
        );
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(br"/a\040b\134c"), b"/a b\\c".to_vec());
        assert_eq!(
            unescape_mountinfo(br"/trailing\04"),
            br"/trailing\04".to_vec()
        );
        assert_eq!(unescape_mountinfo(br"\777"), br"\777".to_vec());
    }
}

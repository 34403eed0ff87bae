//! Processes on Linux, as the agent and the executor need them: identity
//! that survives pid reuse (pid + start time from `/proc/<pid>/stat`),
//! signals to one process, a process group or a whole session, the
//! executor's lock, which says whether a task's executor is alive, and
//! starting an executor.
//!
//! Signals are never sent to pid 0, 1 or a negative pid from a file: a
//! damaged `status.json` must not make the agent signal its own process
//! group or every process.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::files::{EXECUTOR_LOG, LOCK_FILE};
use crate::{Error, Result};

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `Z` (zombie), …
    pub state: u8,
    pub pgrp: i32,
    pub session: i32,
    /// Clock ticks after boot when the process started.
    pub start_ticks: u64,
}

impl ProcStat {
    /// Not a zombie or dead.
    pub fn is_live(&self) -> bool {
        !matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may hold anything, so fields are counted after the last
/// `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // fields[0] is field 3 (state); field n is fields[n - 3].
    Some(ProcStat {
        state: *fields.first()?.as_bytes().first()?,
        pgrp: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// `/proc/<pid>/stat` of a process, `None` if there is none.
pub fn stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// This process's start time.
pub fn self_start_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|text| parse_stat(&text))
        .map_or(0, |s| s.start_ticks)
}

/// Whether `pid` is still the live process that started at `start_ticks`.
pub fn is_same_live(pid: i32, start_ticks: u64) -> bool {
    stat(pid).is_some_and(|s| s.is_live() && s.start_ticks == start_ticks)
}

/// Sends `signal` to `pid` (a positive pid above 1); `Ok(false)` if there is
/// no such process.
pub fn signal(pid: i32, signal: i32) -> io::Result<bool> {
    kill(pid, pid, signal)
}

/// Sends `signal` to the process group `pgid`; `Ok(false)` if the group is
/// empty.
pub fn signal_group(pgid: i32, signal: i32) -> io::Result<bool> {
    kill(pgid, -pgid, signal)
}

fn kill(id: i32, target: i32, signal: i32) -> io::Result<bool> {
    if id <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {id}"),
        ));
    }
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(target, signal) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ESRCH) => Ok(false),
        _ => Err(e),
    }
}

/// SIGKILLs every process of the session `sid` that started at or after
/// `leader_start_ticks`, except `spare` (the caller, when it is the
/// session's leader). A task's executor leads a session of its own, and
/// every process of the task is in it unless it made a session itself, so
/// this reaches the stragglers that left their process group.
///
/// A session id is the pid of its leader, and Linux does not give that pid
/// to a new process while the session has members; if the pid is live with
/// another start time, the session ended and this does nothing. Returns
/// how many processes were signalled.
pub fn kill_session(sid: i32, leader_start_ticks: u64, spare: i32) -> usize {
    if sid <= 1 {
        return 0;
    }
    if let Some(leader) = stat(sid)
        && leader.start_ticks != leader_start_ticks
    {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == spare || pid <= 1 {
            continue;
        }
        let Some(s) = stat(pid) else { continue };
        let ours = s.session == sid && s.start_ticks >= leader_start_ticks && s.is_live();
        if ours && let Ok(true) = signal(pid, libc::SIGKILL) {
            killed += 1;
        }
    }
    killed
}

/// Opens `path` (creating it) and takes an exclusive `flock` on it without
/// waiting: `Ok(None)` if another open file holds it. The lock lasts as
/// long as the returned file (and any copy of its descriptor) is open.
pub fn try_lock(path: &Path) -> io::Result<Option<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(Some(file));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(None),
        _ => Err(e),
    }
}

/// Whether someone holds the lock at `path` (a live executor); `false` if
/// there is no lock file.
pub fn is_locked(path: &Path) -> io::Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    // Taking the lock for a moment cannot hurt: an executor only runs with
    // the lock, which the agent takes before starting it.
    Ok(try_lock(path)?.is_none())
}

/// Starts the executor (`executor` is its program and leading arguments)
/// of the sandbox `dir`: `--sandbox DIR` appended, in a session of its own
/// (so it outlives the agent and no terminal signal reaches it), stdout
/// and stderr appended to `executor.log`, holding the sandbox's lock: the
/// agent takes it before the fork and the executor inherits the locked
/// descriptor, so there is no moment at which a live executor looks dead.
pub fn spawn_executor(executor: &[OsString], dir: &Path) -> Result<Child> {
    let Some((program, args)) = executor.split_first() else {
        return Err(Error::Config("executor: must name a program".into()));
    };
    let lock_path = dir.join(LOCK_FILE);
    let lock = match try_lock(&lock_path) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            return Err(Error::io(
                "an executor already runs sandbox",
                dir,
                io::ErrorKind::WouldBlock.into(),
            ));
        }
        Err(e) => return Err(Error::io("failed to lock", lock_path, e)),
    };
    let log_path = dir.join(EXECUTOR_LOG);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io("failed to open", &log_path, e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| Error::io("failed to open", &log_path, e))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .arg("--sandbox")
        .arg(dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    let fd = lock.as_raw_fd();
    // SAFETY: only async-signal-safe calls (setsid, fcntl) between fork
    // and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            // The executor inherits the locked descriptor.
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags == -1 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| Error::io("failed to start executor", program, e))?;
    // The executor holds the lock now; ours goes.
    drop(lock);
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_names() {
        let line = "1234 (a) b) (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            (s.state, s.pgrp, s.session, s.start_ticks),
            (b'S', 1234, 1234, 987654)
        );
        assert!(parse_stat("12 (x) S 1").is_none());
        let me = stat(std::process::id() as i32).unwrap();
        assert!(me.is_live());
        assert_eq!(me.start_ticks, self_start_ticks());
        assert!(is_same_live(std::process::id() as i32, me.start_ticks));
        assert!(!is_same_live(std::process::id() as i32, me.start_ticks + 1));
    }

    #[test]
    fn dangerous_pids_are_refused() {
        for pid in [-5, 0, 1] {
            assert!(signal(pid, 0).is_err());
            assert!(signal_group(pid, 0).is_err());
        }
        assert_eq!(kill_session(0, 0, 0), 0);
        assert_eq!(kill_session(1, 0, 0), 0);
    }

    #[test]
    fn locks_are_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        assert!(!is_locked(&path).unwrap());
        let held = try_lock(&path).unwrap().unwrap();
        assert!(is_locked(&path).unwrap());
        assert!(try_lock(&path).unwrap().is_none());
        drop(held);
        assert!(!is_locked(&path).unwrap());
    }
}

//! The executor: one process per task (`sluice executor --sandbox DIR`),
//! the parent of the task's processes, so it sees how each one ends. The
//! agent starts it in a session of its own, so the executor and the task
//! outlive the agent (stopped, crashed or `kill -9`ed) and a new agent
//! finds them again (see [`super::runtime`]).
//!
//! **Runs.** The task's processes run in their order, one after the other,
//! in one *run*: each must exit 0 before the next starts, the run succeeds
//! when the last exits 0 and fails at the first process that exits non-zero
//! or is killed by a signal (the later ones do not start), like a Thermos
//! task whose processes are chained by ordering constraints. After a run
//! the restart policy decides (`RestartPolicy::should_restart`, so `always`
//! restarts after a success too): a restart waits out the backoff
//! (`backoff_ms(restarts)`, state `starting`) and begins run `n + 1`, whose
//! logs go to `logs/run-<n+1>/` beside the earlier runs' (nothing is
//! overwritten; the shipper tells runs apart by directory). Otherwise the
//! task ends `finished` or `failed` (`exit 3`, `signal 9`, `restart limit
//! reached`, `cannot start process …`).
//!
//! **Processes.** `/bin/sh -c CMD` (placeholders rendered for the run), in
//! a process group of its own, working directory `<sandbox>/work`, stdin
//! `/dev/null`, stdout and stderr appended to
//! `logs/run-<n>/<process>.stdout|.stderr` (opened by the executor before
//! the process starts, so they exist even if it writes nothing, and handed
//! to it as descriptors: the process cannot open them by name). Between
//! fork and exec the process is confined ([`super::confine`]: another user
//! when the node is root, Landlock, `no_new_privs`). The environment is
//! fresh, nothing of the node's (no `SLUICE_*` settings or tokens, no
//! credentials): `PATH`, `HOME`, `TMPDIR`, `USER`, the locale, plus
//! `SLUICE_TASK_ID`, `SLUICE_INSTANCE`, `SLUICE_RUN`, `SLUICE_SANDBOX`
//! (absolute) and `PORT_<NAME>` for each allocated port (the name
//! upper-cased, characters other than letters and digits made `_`: port
//! `admin-v2` is `PORT_ADMIN_V2`). When a process
//! exits, whatever it left running in its process group is SIGKILLed; when
//! the task ends, so is whatever is left in the executor's session.
//!
//! **Kills.** The agent writes `kill.json` and sends SIGTERM. A signal
//! handler (installed first thing, process-wide, so it does not matter
//! which thread the signal lands on) sets a flag and writes a byte to a
//! non-blocking self-pipe; SIGCHLD writes one too. The executor's one loop
//! waits on that pipe with `poll` (at most 250 ms, after which it also
//! looks for `kill.json`, in case the agent could not signal it) and
//! `try_wait`s its child. On a kill it sends SIGTERM to the current
//! process group, waits up to the grace period (`task.json`
//! `kill_grace_ms`) for the group to empty, SIGKILLs the group, SIGKILLs
//! the rest of its session, writes status `killed` with `kill.json`'s actor
//! and reason, and exits 0. A kill during a restart backoff ends the wait.
//!
//! **Liveness.** The agent locks `executor.lock` (`flock`) before starting
//! the executor and hands it the locked descriptor; the executor keeps it
//! (close-on-exec, so the task's processes do not hold it) until it exits.
//! A lock nobody holds is an executor that is gone. Started by hand without
//! it, the executor takes the lock itself, and refuses to run a sandbox
//! another executor runs.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use sluice_schema::sandbox::{MANIFEST, Manifest, WORK_DIR, log_file};

use super::files::{
    self, ExecState, FORMAT_VERSION, KILL_FILE, KillRequest, LOCK_FILE, STATUS_FILE, Status,
    TaskFile,
};
use super::{confine, proc};
use crate::spec::{Policy, Process, RestartPolicy, TaskContext};
use crate::{Error, Result};

/// Longest wait before looking for `kill.json` again.
const POLL: Duration = Duration::from_millis(250);
/// How often a killed process group is checked for having emptied.
const KILL_POLL: Duration = Duration::from_millis(20);

/// Runs the task in `sandbox` to its end; returns once its terminal status
/// is written. An error means the task could not be run at all (the
/// status says why when it could be written).
pub fn run(sandbox: &Path) -> Result<()> {
    // Normally done by the agent before exec; harmless (EPERM) then.
    // SAFETY: setsid has no memory-safety preconditions.
    unsafe { libc::setsid() };
    let waker =
        Waker::install().map_err(|e| Error::io("failed to install", "signal handlers", e))?;
    let dir = std::path::absolute(sandbox)
        .map_err(|e| Error::io("failed to resolve sandbox", sandbox, e))?;
    let _lock = hold_lock(&dir)?;
    let pid = std::process::id() as i32;
    let mut status = Status {
        version: FORMAT_VERSION,
        state: ExecState::Starting,
        run: 0,
        restarts: 0,
        process: None,
        process_pid: None,
        process_start_ticks: None,
        executor_pid: pid,
        executor_start_ticks: proc::self_start_ticks(),
        exit_code: None,
        signal: None,
        reason: String::new(),
        actor: String::new(),
        next_restart_unix_ms: None,
        updated_unix_ms: 0,
    };
    let task = match files::read_task(&dir) {
        Ok(task) => task,
        Err(e) => {
            status.state = ExecState::Failed;
            status.reason = format!("invalid task: {e}");
            write_status(&dir, &mut status);
            return Err(e);
        }
    };
    let confinement = match confine::Prepared::new(&task.confinement, &dir) {
        Ok(prepared) => Arc::new(prepared),
        Err(e) => {
            status.state = ExecState::Failed;
            status.reason = format!("cannot confine the task: {e}");
            write_status(&dir, &mut status);
            return Err(e);
        }
    };
    let mut executor = Executor {
        grace: Duration::from_millis(task.kill_grace_ms),
        dir,
        task,
        waker,
        status,
        confinement,
    };
    write_status(&executor.dir, &mut executor.status);
    tracing::info!(task = %executor.task.task_id, "executor started");
    executor.run_task();
    Ok(())
}

struct Executor {
    dir: PathBuf,
    task: TaskFile,
    waker: Waker,
    status: Status,
    grace: Duration,
    /// Applied to every process, between fork and exec.
    confinement: Arc<confine::Prepared>,
}

/// How a run ended.
enum Ended {
    Succeeded,
    Failed {
        exit: Option<ExitStatus>,
        reason: String,
    },
    /// Killed, with the exit of the process that was running.
    Killed(Option<ExitStatus>),
}

impl Executor {
    fn run_task(&mut self) {
        let policy = self.task.spec.restart;
        let mut run = 0u32;
        loop {
            if self.kill_requested() {
                return self.finish_killed(None);
            }
            self.begin_run(run);
            let (succeeded, exit, reason) = match self.run_processes(run) {
                Ended::Killed(exit) => return self.finish_killed(exit),
                Ended::Succeeded => (true, None, "exit 0".to_string()),
                Ended::Failed { exit, reason } => (false, exit, reason),
            };
            if let Some(exit) = exit {
                self.record_exit(exit);
            }
            self.status.process_pid = None;
            self.status.process_start_ticks = None;
            if policy.should_restart(succeeded, run)
                && let Some(next) = run.checked_add(1)
            {
                let backoff = policy.backoff_ms(run);
                tracing::info!(run, backoff_ms = backoff, %reason, "run ended; restarting");
                self.status.state = ExecState::Starting;
                self.status.reason = reason;
                self.status.next_restart_unix_ms = Some(files::now_unix_ms() + backoff);
                write_status(&self.dir, &mut self.status);
                if !self.sleep(Duration::from_millis(backoff)) {
                    return self.finish_killed(None);
                }
                run = next;
                continue;
            }
            self.sweep_session();
            self.status.state = match succeeded {
                true => ExecState::Finished,
                false => ExecState::Failed,
            };
            self.status.reason = match gave_up(&policy, succeeded) {
                true => "restart limit reached".to_string(),
                false => reason,
            };
            self.status.next_restart_unix_ms = None;
            tracing::info!(run, state = ?self.status.state, reason = %self.status.reason, "task ended");
            write_status(&self.dir, &mut self.status);
            return;
        }
    }

    /// Logs directory, manifest and status for run `run`; a restart's
    /// reason says what ended the run before.
    fn begin_run(&mut self, run: u32) {
        let logs = files::run_logs(&self.dir, run);
        if let Err(e) = std::fs::create_dir_all(&logs) {
            tracing::error!(dir = %logs.display(), error = %e, "failed to create the run's log directory");
        }
        let manifest = manifest(&self.task, run);
        if let Err(e) = files::write_json(&self.dir, MANIFEST, &manifest) {
            tracing::error!(error = %e, "failed to write the manifest");
        }
        self.status.state = ExecState::Running;
        if run > 0 {
            self.status.reason = format!("restarted after {}", self.status.reason);
        }
        self.status.run = run;
        self.status.restarts = run;
        self.status.next_restart_unix_ms = None;
        write_status(&self.dir, &mut self.status);
        tracing::info!(run, "run started");
    }

    fn run_processes(&mut self, run: u32) -> Ended {
        let processes = self.task.spec.processes.clone();
        for process in &processes {
            if self.kill_requested() {
                return Ended::Killed(None);
            }
            let mut child = match self.spawn(process, run) {
                Ok(child) => child,
                Err(e) => {
                    tracing::error!(process = %process.name, error = %e, "cannot start process");
                    return Ended::Failed {
                        exit: None,
                        reason: format!("cannot start process {}: {e}", process.name),
                    };
                }
            };
            let pid = child.id() as i32;
            tracing::info!(process = %process.name, pid, "process started");
            self.status.process = Some(process.name.clone());
            self.status.process_pid = Some(pid);
            self.status.process_start_ticks = proc::stat(pid).map(|s| s.start_ticks);
            write_status(&self.dir, &mut self.status);
            let exit = loop {
                match child.try_wait() {
                    Ok(Some(exit)) => break exit,
                    Ok(None) => {}
                    Err(e) => tracing::warn!(pid, error = %e, "failed to wait for process"),
                }
                if self.kill_requested() {
                    return Ended::Killed(self.stop(&mut child, pid));
                }
                self.waker.wait(POLL);
            };
            // Nothing a process started outlives it.
            let _ = proc::signal_group(pid, libc::SIGKILL);
            let (reason, _, _) = exit_reason(exit);
            tracing::info!(process = %process.name, pid, %reason, "process exited");
            if !exit.success() {
                return Ended::Failed {
                    exit: Some(exit),
                    reason,
                };
            }
            self.record_exit(exit);
        }
        Ended::Succeeded
    }

    fn spawn(&self, process: &Process, run: u32) -> std::io::Result<Child> {
        let task = &self.task;
        let logs = files::run_logs(&self.dir, run);
        let stdout = open_log(&logs.join(log_file(&process.name, false)))?;
        let stderr = open_log(&logs.join(log_file(&process.name, true)))?;
        let ctx = TaskContext {
            instance: task.instance,
            task_id: &task.task_id,
            run,
            ports: &task.ports,
            key: &task.job,
        };
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(process.render(&ctx))
            .current_dir(self.dir.join(WORK_DIR))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let own = [
            ("SLUICE_TASK_ID".to_string(), task.task_id.clone()),
            ("SLUICE_INSTANCE".to_string(), task.instance.to_string()),
            ("SLUICE_RUN".to_string(), run.to_string()),
            ("SLUICE_SANDBOX".to_string(), self.dir.display().to_string()),
        ]
        .into_iter()
        .chain(
            task.ports
                .iter()
                .map(|(name, port)| (port_var(name), port.to_string())),
        );
        command.env_clear().envs(confine::environment(
            &self.dir,
            self.confinement.user(),
            own,
        ));
        let confinement = Arc::clone(&self.confinement);
        // SAFETY: the closure only makes system calls (no allocation, no
        // lock), as is required between fork and exec.
        unsafe {
            command.pre_exec(move || confinement.apply_in_child());
        }
        command.spawn()
    }

    /// SIGTERM to the process group, the grace period, SIGKILL; the exit
    /// status of the process.
    fn stop(&self, child: &mut Child, pid: i32) -> Option<ExitStatus> {
        tracing::info!(
            pid,
            grace_ms = self.grace.as_millis() as u64,
            "stopping process group"
        );
        let _ = proc::signal_group(pid, libc::SIGTERM);
        let deadline = Instant::now() + self.grace;
        let mut exit = None;
        loop {
            if exit.is_none() {
                exit = child.try_wait().ok().flatten();
            }
            // The group is empty once its leader is reaped and no one is left.
            if exit.is_some() && !proc::signal_group(pid, 0).unwrap_or(false) {
                return exit;
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::info!(pid, "grace period over; SIGKILL to the process group");
                let _ = proc::signal_group(pid, libc::SIGKILL);
                return exit.or_else(|| child.wait().ok());
            }
            self.waker.wait((deadline - now).min(KILL_POLL));
        }
    }

    fn finish_killed(&mut self, exit: Option<ExitStatus>) {
        self.sweep_session();
        let request = files::read_json::<KillRequest>(&self.dir, KILL_FILE)
            .inspect_err(|e| tracing::warn!(error = %e, "unreadable kill request"))
            .ok()
            .flatten();
        let (actor, reason) = match request {
            Some(request) => (request.actor, request.reason),
            None => (String::new(), "sigterm".to_string()),
        };
        if let Some(exit) = exit {
            self.record_exit(exit);
        }
        self.status.state = ExecState::Killed;
        self.status.reason = reason;
        self.status.actor = actor;
        self.status.process_pid = None;
        self.status.process_start_ticks = None;
        self.status.next_restart_unix_ms = None;
        tracing::info!(actor = %self.status.actor, reason = %self.status.reason, "task killed");
        write_status(&self.dir, &mut self.status);
    }

    /// SIGKILLs whatever is left of the task in the executor's session.
    fn sweep_session(&self) {
        let me = self.status.executor_pid;
        let killed = proc::kill_session(me, self.status.executor_start_ticks, me);
        if killed > 0 {
            tracing::info!(killed, "killed processes left in the session");
        }
    }

    fn record_exit(&mut self, exit: ExitStatus) {
        let (_, code, signal) = exit_reason(exit);
        self.status.exit_code = code;
        self.status.signal = signal;
    }

    fn kill_requested(&self) -> bool {
        TERMINATE.load(Ordering::SeqCst) || self.dir.join(KILL_FILE).exists()
    }

    /// Waits `duration`; `false` if a kill cut it short.
    fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        loop {
            if self.kill_requested() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            self.waker.wait((deadline - now).min(POLL));
        }
    }
}

/// The policy wanted a restart but its limit was reached.
fn gave_up(policy: &RestartPolicy, succeeded: bool) -> bool {
    let unlimited = RestartPolicy {
        max_restarts: None,
        ..*policy
    };
    policy.max_restarts.is_some()
        && policy.policy != Policy::Never
        && unlimited.should_restart(succeeded, 0)
}

/// The manifest of `task` in run `run`.
pub fn manifest(task: &TaskFile, run: u32) -> Manifest {
    Manifest {
        version: 1,
        job: task.job.to_string(),
        instance: task.instance,
        task_id: task.task_id.clone(),
        run,
        processes: task.spec.processes.iter().map(|p| p.name.clone()).collect(),
        labels: task.spec.labels.clone(),
        multiline: task.spec.multiline.clone(),
    }
}

/// `PORT_<NAME>`: upper case, anything but letters and digits as `_`.
pub fn port_var(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() {
            true => c.to_ascii_uppercase(),
            false => '_',
        })
        .collect();
    format!("PORT_{name}")
}

/// `exit 3` or `signal 9`, with the code and the signal.
fn exit_reason(exit: ExitStatus) -> (String, Option<i32>, Option<i32>) {
    match (exit.code(), exit.signal()) {
        (Some(code), _) => (format!("exit {code}"), Some(code), None),
        (None, Some(signal)) => (format!("signal {signal}"), None, Some(signal)),
        (None, None) => ("ended".to_string(), None, None),
    }
}

fn open_log(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn write_status(dir: &Path, status: &mut Status) {
    status.updated_unix_ms = files::now_unix_ms();
    if let Err(e) = files::write_json(dir, STATUS_FILE, status) {
        tracing::error!(error = %e, "failed to write the status");
    }
}

/// The sandbox's lock: the descriptor the agent handed over, or the lock
/// taken now.
fn hold_lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    if let Ok(meta) = std::fs::metadata(&path) {
        let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .map_err(|e| Error::io("failed to list", "/proc/self/fd", e))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        for fd in fds {
            let Ok(held) = std::fs::metadata(format!("/proc/self/fd/{fd}")) else {
                continue;
            };
            if (held.dev(), held.ino()) != (meta.dev(), meta.ino()) {
                continue;
            }
            // SAFETY: fd is open (listed just now) and no one else in this
            // process owns it: it was inherited.
            let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            // SAFETY: fcntl and flock on an owned descriptor.
            let ok = unsafe {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) == 0
                    && libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) == 0
            };
            if ok {
                return Ok(file);
            }
        }
    }
    match proc::try_lock(&path) {
        Ok(Some(file)) => Ok(file),
        Ok(None) => Err(Error::io(
            "another executor runs sandbox",
            dir,
            std::io::ErrorKind::WouldBlock.into(),
        )),
        Err(e) => Err(Error::io("failed to lock", path, e)),
    }
}

/// Set by SIGTERM or SIGINT.
static TERMINATE: AtomicBool = AtomicBool::new(false);
/// The write end of the self-pipe.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    if signal == libc::SIGTERM || signal == libc::SIGINT {
        TERMINATE.store(true, Ordering::SeqCst);
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // Only async-signal-safe calls here: write, and errno restored.
        // SAFETY: a one-byte write from a live buffer; errno is per thread.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, [1u8].as_ptr().cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// The self-pipe that signals wake the executor's loop through.
struct Waker {
    read: OwnedFd,
    _write: OwnedFd,
}

impl Waker {
    fn install() -> std::io::Result<Waker> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the array on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are ours.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        WAKE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
            // SAFETY: a zeroed sigaction with a handler that only makes
            // async-signal-safe calls.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(Waker {
            read,
            _write: write,
        })
    }

    /// Waits until a signal arrives or `timeout` passes.
    fn wait(&self, timeout: Duration) {
        let mut poll = libc::pollfd {
            fd: self.read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd; the buffer outlives the reads.
        unsafe {
            libc::poll(&mut poll, 1, ms);
            let mut buf = [0u8; 64];
            while libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) > 0 {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_variables_are_shell_names() {
        assert_eq!(port_var("http"), "PORT_HTTP");
        assert_eq!(port_var("admin-v2.x"), "PORT_ADMIN_V2_X");
    }

    #[test]
    fn limits_are_told_from_policies() {
        let policy = |policy, max| RestartPolicy {
            policy,
            initial_backoff_ms: 1,
            max_backoff_ms: 1,
            max_restarts: max,
        };
        assert!(gave_up(&policy(Policy::OnFailure, Some(2)), false));
        assert!(!gave_up(&policy(Policy::OnFailure, Some(2)), true));
        assert!(!gave_up(&policy(Policy::OnFailure, None), false));
        assert!(!gave_up(&policy(Policy::Never, Some(2)), false));
        assert!(gave_up(&policy(Policy::Always, Some(0)), true));
    }

    #[test]
    fn exits_are_described() {
        assert_eq!(
            exit_reason(ExitStatus::from_raw(3 << 8)),
            ("exit 3".into(), Some(3), None)
        );
        assert_eq!(
            exit_reason(ExitStatus::from_raw(9)),
            ("signal 9".into(), None, Some(9))
        );
    }
}

//! Confining a task: what its processes may read, write and run, and as
//! whom. The agent decides ([`Policy::confinement`], written into
//! `task.json`, which only the node writes); the executor applies it to
//! each process it starts ([`Prepared`]), after fork and before exec.
//!
//! - **Landlock** (when the kernel has it, which every node is required to
//!   unless `--insecure-tasks`): the task may read and write its sandbox's
//!   `work/` and `tmp/` (and a job's declared `filesystem.write` paths),
//!   read and run the system's files (`/usr`, `/bin`, `/lib*`, `/etc`,
//!   `/opt`, the `sluice` binary, and the node's and job's `read` paths),
//!   read `/proc` and `/sys`, and use a few devices (`/dev/null`, `zero`,
//!   `full`, `random`, `urandom`, `tty`); nothing else: not the data
//!   directory (tokens, `client.toml`, the bus, the archive, the TLS keys),
//!   not its own sandbox outside `work/` (the manifest, the logs), not
//!   other sandboxes. Landlock also keeps the task from reading other
//!   processes' memory and environment under `/proc` (its ptrace rule) and,
//!   from ABI 6, from signalling processes outside its domain.
//! - **Another user** when the node runs as root: the task runs as a user
//!   of its own role (`sluice-<role>`, created with `useradd` the first
//!   time, or one mapped with `--task-user ROLE=USER`), without
//!   supplementary groups; `work/` and `tmp/` are its, the rest of the
//!   sandbox stays root's.
//! - Processes get `no_new_privs` (a setuid program gains nothing) and a
//!   fresh environment: `PATH`, `HOME` (`work/`), `TMPDIR` (`tmp/`), `USER`,
//!   `LANG`/`LC_ALL`/`TZ` when the node has them, and the task's own
//!   variables; never the node's (no `SLUICE_*`, no `AWS_*` credentials).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope,
};
use serde::{Deserialize, Serialize};
use sluice_schema::sandbox::WORK_DIR;

use crate::{Error, Result};

/// The Landlock ABI this code was written and tested against; newer
/// kernels are used at this level, older ones as far as they go.
const ABI_TESTED: ABI = ABI::V7;

/// System paths a task may read and run (those that exist).
pub const SYSTEM_READ: [&str; 9] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];
/// Paths a task may read (not run).
pub const SYSTEM_READ_ONLY: [&str; 2] = ["/proc", "/sys"];
/// Devices a task may read and write.
pub const DEVICES: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// The directory under the sandbox a task may use for temporary files.
pub const TMP_DIR: &str = "tmp";

/// How one task is confined (in `task.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confinement {
    /// Run the processes as this user (the node runs as root).
    #[serde(default)]
    pub user: Option<TaskUser>,
    /// Restrict the filesystem with Landlock.
    #[serde(default)]
    pub landlock: bool,
    /// Paths the task may read and run besides the system's.
    #[serde(default)]
    pub read: Vec<PathBuf>,
    /// Paths the task may write besides `work/` and `tmp/`.
    #[serde(default)]
    pub write: Vec<PathBuf>,
}

/// A user a task runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskUser {
    /// Login name, also given to the task as `USER` and `LOGNAME`.
    pub name: String,
    /// Numeric user id the processes run as; never 0.
    pub uid: u32,
    /// Primary group id the processes run as; supplementary groups are dropped.
    pub gid: u32,
}

/// How the node confines its tasks (flags of `sluice up` and `sluice node`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Run tasks unconfined when Landlock is missing, instead of refusing.
    pub insecure: bool,
    /// Users for roles (`--task-user ROLE=USER`); other roles get
    /// `sluice-<role>`.
    pub users: BTreeMap<String, String>,
    /// Paths every task of the node may read and run.
    pub read: Vec<PathBuf>,
    /// Paths no task may be given (the data directory): a job's
    /// `filesystem` paths may be neither inside nor above them.
    pub protected: Vec<PathBuf>,
}

/// The Landlock ABI of the running kernel, 0 when it has none.
pub fn landlock_abi() -> i64 {
    // LANDLOCK_CREATE_RULESET_VERSION (1): the ABI, or -1 (ENOSYS,
    // EOPNOTSUPP) without Landlock.
    // SAFETY: with a null attribute and this flag the call reads nothing.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    abi.max(0)
}

/// Whether this process runs as root (and so gives tasks users of their
/// own).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Policy {
    /// Refuses a node that could not confine its tasks, saying why.
    pub fn check(&self) -> Result<()> {
        if landlock_abi() == 0 && !self.insecure {
            return Err(Error::Config(
                "cannot confine tasks: this kernel has no Landlock (it needs Linux 5.13 or later with `landlock` in the lsm= boot parameter), so a task could read the node's tokens and forge other jobs' logs; pass --insecure-tasks to run tasks unconfined anyway".into(),
            ));
        }
        Ok(())
    }

    /// How a task of `role` is confined, given its job's own `read` and
    /// `write` paths (refused when they reach a protected path).
    pub fn confinement(
        &self,
        role: &str,
        read: &[PathBuf],
        write: &[PathBuf],
    ) -> Result<Confinement> {
        for (field, paths) in [("filesystem.read", read), ("filesystem.write", write)] {
            for path in paths {
                self.check_job_path(field, path)?;
            }
        }
        let landlock = landlock_abi() > 0;
        if !landlock && !self.insecure {
            self.check()?;
        }
        let user = if is_root() {
            let name = self
                .users
                .get(role)
                .cloned()
                .unwrap_or_else(|| role_user(role));
            Some(ensure_user(&name)?)
        } else {
            None
        };
        let mut all_read = self.read.clone();
        all_read.extend(read.iter().cloned());
        if let Ok(exe) = std::env::current_exe() {
            all_read.push(exe);
        }
        Ok(Confinement {
            user,
            landlock,
            read: all_read,
            write: write.to_vec(),
        })
    }

    fn check_job_path(&self, field: &str, path: &Path) -> Result<()> {
        if !path.is_absolute() {
            return Err(Error::spec(
                field,
                format!("{} is not an absolute path", path.display()),
            ));
        }
        let path = normalize(path);
        for protected in &self.protected {
            let protected = normalize(protected);
            if path.starts_with(&protected) || protected.starts_with(&path) {
                return Err(Error::spec(
                    field,
                    format!(
                        "{} would give the task {} (the node's data directory)",
                        path.display(),
                        protected.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `path` without `.` and `..` (lexically; symlinks are not followed).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The user of a role: `sluice-<role>`, lowercased, other characters than
/// `[a-z0-9_-]` made `-`, with a short hash of the role when that changed
/// it (so two roles never share a user), at most 32 bytes.
pub fn role_user(role: &str) -> String {
    let clean: String = role
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    let mut name = format!("sluice-{clean}");
    if clean != role || name.len() > 32 {
        let hash = role.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        name.truncate(24);
        name = format!("{name}-{:07x}", hash & 0xfff_ffff);
    }
    name
}

/// The user `name`, created (a system user with its own group, no home, no
/// shell) if there is none.
fn ensure_user(name: &str) -> Result<TaskUser> {
    if let Some(user) = lookup_user(name)? {
        return Ok(user);
    }
    let output = std::process::Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            name,
        ])
        .output()
        .map_err(|e| Error::io("failed to run useradd for the task user", name, e))?;
    // Another agent of this machine may have made it meanwhile.
    match lookup_user(name)? {
        Some(user) => {
            tracing::info!(user = name, uid = user.uid, "made a task user");
            Ok(user)
        }
        None => Err(Error::Config(format!(
            "cannot make the task user {name}: useradd: {} (make it by hand, or map the role to a user with --task-user ROLE=USER)",
            String::from_utf8_lossy(&output.stderr).trim()
        ))),
    }
}

/// The user called `name`, if there is one.
pub fn lookup_user(name: &str) -> Result<Option<TaskUser>> {
    let c_name =
        CString::new(name).map_err(|_| Error::Config(format!("bad user name {name:?}")))?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: the buffers outlive the call; `result` points into `pwd`.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(Error::io(
            "failed to look up the task user",
            name,
            std::io::Error::from_raw_os_error(rc),
        ));
    }
    if result.is_null() {
        return Ok(None);
    }
    if pwd.pw_uid == 0 {
        return Err(Error::Config(format!("the task user {name} is root")));
    }
    Ok(Some(TaskUser {
        name: name.to_string(),
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    }))
}

/// Makes `dir` belong to the task's user, private to it.
pub fn hand_over(dir: &Path, user: &TaskUser) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
        .map_err(|e| Error::io("failed to give the task user", dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("failed to set the permissions of", dir, e))
}

/// Sets `dir`'s mode.
pub fn set_mode(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("failed to set the permissions of", dir, e))
}

/// A confinement made ready in the executor before fork: the Landlock
/// ruleset built (paths opened), so that the child only makes system calls.
pub struct Prepared {
    user: Option<TaskUser>,
    ruleset: Option<OwnedFd>,
}

impl Prepared {
    /// Builds `confinement` for a task whose sandbox is `sandbox`.
    pub fn new(confinement: &Confinement, sandbox: &Path) -> Result<Prepared> {
        let ruleset = if confinement.landlock {
            Some(ruleset(confinement, sandbox)?)
        } else {
            None
        };
        Ok(Prepared {
            user: confinement.user.clone(),
            ruleset,
        })
    }

    /// The user the processes run as; `None` when they keep the executor's.
    pub fn user(&self) -> Option<&TaskUser> {
        self.user.as_ref()
    }

    /// In the child, after fork and before exec: drops to the task's user
    /// and restricts itself. Only system calls, no allocation.
    pub fn apply_in_child(&self) -> std::io::Result<()> {
        let check = |rc: libc::c_long| {
            if rc < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: plain system calls on values owned by `self`.
        unsafe {
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as libc::c_long)?;
            if let Some(user) = &self.user {
                check(libc::setgroups(0, std::ptr::null()) as libc::c_long)?;
                check(libc::setgid(user.gid) as libc::c_long)?;
                check(libc::setuid(user.uid) as libc::c_long)?;
            }
            if let Some(fd) = &self.ruleset {
                check(libc::syscall(
                    libc::SYS_landlock_restrict_self,
                    fd.as_raw_fd(),
                    0u32,
                ))?;
            }
        }
        Ok(())
    }
}

fn landlock_error(e: impl std::fmt::Display) -> Error {
    Error::Config(format!("cannot confine the task with Landlock: {e}"))
}

/// The task's Landlock ruleset (module docs).
fn ruleset(confinement: &Confinement, sandbox: &Path) -> Result<OwnedFd> {
    let abi = ABI_TESTED;
    let all = AccessFs::from_all(abi);
    let read_run = AccessFs::from_read(abi);
    let read_only = AccessFs::ReadFile | AccessFs::ReadDir;
    let device = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;
    let own = [sandbox.join(WORK_DIR), sandbox.join(TMP_DIR)];
    let required = own.iter().map(|p| (p.as_path(), all, true));
    let optional = confinement
        .write
        .iter()
        .map(|p| (p.as_path(), all))
        .chain(SYSTEM_READ.iter().map(|p| (Path::new(*p), read_run)))
        .chain(confinement.read.iter().map(|p| (p.as_path(), read_run)))
        .chain(SYSTEM_READ_ONLY.iter().map(|p| (Path::new(*p), read_only)))
        .chain(DEVICES.iter().map(|p| (Path::new(*p), device)))
        .map(|(p, a)| (p, a, false));
    let mut rules = Vec::new();
    for (path, access, required) in required.chain(optional) {
        let fd = match PathFd::new(path) {
            Ok(fd) => fd,
            // Paths this machine does not have (/lib32, /opt …).
            Err(_) if !required => continue,
            Err(e) => return Err(landlock_error(format!("{}: {e}", path.display()))),
        };
        // A file takes only the rights a file can have.
        let is_dir = std::fs::metadata(path).is_ok_and(|m| m.is_dir());
        let access = if is_dir {
            access
        } else {
            access & AccessFs::from_file(abi)
        };
        rules.push(Ok::<_, landlock::RulesetError>(PathBeneath::new(
            fd, access,
        )));
    }
    let created = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(rules))
        .map_err(landlock_error)?;
    Option::<OwnedFd>::from(created).ok_or_else(|| landlock_error("the kernel has no Landlock"))
}

/// The environment of a task's processes: nothing of the node's but the
/// locale and time zone.
pub fn environment(
    sandbox: &Path,
    user: Option<&TaskUser>,
    own: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PATH".to_string(),
            "/usr/local/bin:/usr/bin:/bin".to_string(),
        ),
        (
            "HOME".to_string(),
            sandbox.join(WORK_DIR).display().to_string(),
        ),
        (
            "TMPDIR".to_string(),
            sandbox.join(TMP_DIR).display().to_string(),
        ),
    ];
    if let Some(user) = user {
        env.push(("USER".into(), user.name.clone()));
        env.push(("LOGNAME".into(), user.name.clone()));
    }
    for key in ["LANG", "LC_ALL", "TZ"] {
        if let Ok(value) = std::env::var(key) {
            env.push((key.to_string(), value));
        }
    }
    env.extend(own);
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_users_are_valid_distinct_names() {
        assert_eq!(role_user("www"), "sluice-www");
        assert_eq!(role_user("batch-2"), "sluice-batch-2");
        let a = role_user("A.b");
        let b = role_user("a-b");
        assert_ne!(a, b);
        assert!(a.starts_with("sluice-a-b-"), "{a}");
        let long = role_user(&"x".repeat(64));
        assert!(long.len() <= 32, "{long}");
        for name in [a, b, long] {
            assert!(
                name.bytes().all(|c| c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || c == b'-'
                    || c == b'_'),
                "{name}"
            );
        }
    }

    #[test]
    fn jobs_cannot_be_given_the_data_directory() {
        let policy = Policy {
            insecure: true,
            protected: vec![PathBuf::from("/var/lib/sluice")],
            ..Policy::default()
        };
        for bad in [
            "/",
            "/var",
            "/var/lib/sluice",
            "/var/lib/sluice/nodes",
            "/srv/../var/lib/sluice/x",
        ] {
            let err = policy
                .check_job_path("filesystem.read", Path::new(bad))
                .unwrap_err();
            assert!(err.to_string().contains("filesystem.read"), "{bad}: {err}");
        }
        assert!(
            policy
                .check_job_path("filesystem.read", Path::new("relative"))
                .is_err()
        );
        policy
            .check_job_path("filesystem.read", Path::new("/srv/models"))
            .unwrap();
    }

    #[test]
    fn the_environment_is_the_task_s_own() {
        let env = environment(
            Path::new("/s/t"),
            None,
            [("SLUICE_RUN".to_string(), "0".to_string())],
        );
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"PATH") && keys.contains(&"TMPDIR") && keys.contains(&"SLUICE_RUN"));
        assert!(
            !keys
                .iter()
                .any(|k| k.starts_with("AWS_") || *k == "SLUICE_DATA_DIR")
        );
        assert!(env.contains(&("HOME".to_string(), "/s/t/work".to_string())));
    }
}

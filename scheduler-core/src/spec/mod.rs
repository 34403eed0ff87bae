//! Job specs: the YAML a user submits to run a job, checked strictly and
//! resolved for one stage into a [`JobSpec`] that the scheduler persists.
//!
//! ```yaml
//! name: indexer              # job key role/env/name; each [A-Za-z0-9_.-],
//! role: search               #   1 to 64 bytes, no "..", not starting with . or -
//! env: devel                 # the stage; `--stage prod` replaces it
//! instances: 3               # 1 to 10000, default 1
//! resources:                 # per instance, all three required
//!   cpu: 1.5                 #   cores, > 0 and <= 1024
//!   ram_mb: 2048             #   > 0 and <= 16 TiB
//!   disk_mb: 10240           #   > 0 and <= 1 PiB
//! ports: [http, admin]       # names of ports the node allocates per instance
//! processes:                 # started in this order, 1 to 64, names unique
//!   - name: fetch
//!     cmd: ./fetch --shard {{instance}} --of {{name}}
//!   - name: serve
//!     cmd: ./serve --port {{ports.http}} --admin {{ ports.admin }} --task {{task_id}}
//! restart: on-failure        # always | on-failure | never, or the long form:
//! # restart:
//! #   policy: on-failure     # default `always`, `never` for cron jobs
//! #   backoff: {initial_ms: 1000, max_ms: 60000}   # doubles after each restart
//! #   limit: 10              # restarts allowed; leave out for no limit
//! cron: "*/15 * * * *"       # optional: one run per tick, never overlapping
//! labels: {team: search}     # optional, for the sandbox manifest
//! multiline: java            # optional: a stack trace is one record; python, go,
//!                            #   {start: REGEX}, {continue: REGEX}, and timeout_ms
//!                            #   (see sluice_schema::multiline)
//! filesystem:                # optional: paths beyond the sandbox's work/ and tmp/
//!   read: [/srv/models]      #   read and run (the system's /usr, /etc … always)
//!   write: [/srv/scratch]    #   read and write; neither may reach the node's data
//!                            #   directory (the node refuses the task, naming the path)
//! envs:                      # optional per-stage overrides, chosen by --stage
//!   prod:
//!     instances: 12
//!     resources: {ram_mb: 8192}   # mappings merge key by key
//!     cron: null                  # everything else is replaced; null unsets
//! ```
//!
//! Placeholders in `cmd`: `{{instance}}`, `{{task_id}}`, `{{run}}`,
//! `{{role}}`, `{{env}}`, `{{name}}` and `{{ports.NAME}}` for a port declared
//! in `ports`; spaces inside the braces are allowed. Anything else in `{{ }}`
//! is an error.
//!
//! [`parse`] reads the YAML into a [`Value`] (anchors and `<<` merge keys
//! work), checks the whole document strictly, overrides of every stage
//! included, then merges the overrides of the chosen stage over the base and
//! checks the result with [`JobSpec::validate`]. The other stages are
//! resolved and validated too, so a spec that is valid for one stage is
//! valid for all. Every error is [`Error::Spec`] naming the field's path,
//! such as `processes[1].cmd` or `envs.prod.resources.ram_mb`.
//!
//! A document with many `[` and `{` for its length (deeply nested flow
//! collections, which the YAML parser reads in time growing with their
//! depth) is refused before it is parsed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::de::{self, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_yaml_ng::{Mapping, Number, Value};

use sluice_schema::multiline::Multiline;

use crate::cron::Schedule;
use crate::{Error, Result};

/// Longest role, env, job, process, port or label name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Most instances of one job.
pub const MAX_INSTANCES: u32 = 10_000;
/// Most cores per instance.
pub const MAX_CPU: f64 = 1024.0;
/// Most memory per instance: 16 TiB.
pub const MAX_RAM_MB: u64 = 16 * 1024 * 1024;
/// Most disk per instance: 1 PiB.
pub const MAX_DISK_MB: u64 = 1024 * 1024 * 1024;
/// Longest restart backoff: one day.
pub const MAX_BACKOFF_MS: u64 = 24 * 3600 * 1000;
/// Default wait before the first restart.
pub const DEFAULT_INITIAL_BACKOFF_MS: u64 = 1_000;
/// Default longest wait between restarts.
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 60_000;
const MAX_PROCESSES: usize = 64;
const MAX_PORTS: usize = 64;
const MAX_CMD_LEN: usize = 64 * 1024;
const MAX_LABELS: usize = 64;
const MAX_LABEL_LEN: usize = 256;
/// Bound on `'['` and `'{'` bytes times document bytes. The YAML scanner
/// spends time proportional to the depth of nested flow collections
/// (`[…]`, `{…}`) on every token, so a megabyte of `[` takes it hours;
/// at this bound a megabyte takes about 0.4 s (release build). No byte is
/// read as anything but a bracket, so quoting cannot hide nesting from the
/// check.
const MAX_FLOW_COST: usize = 1 << 26;

/// Checks a name used as a path segment or in a shell command: 1 to
/// [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9_.-]`, not starting with `.` or `-`
/// and without `..` (so never `.`, `..`, a hidden file or something a
/// command takes for a flag). The error names `field`.
pub fn valid_name(field: &str, s: &str) -> Result<()> {
    name_problem(s).map_or(Ok(()), |problem| Err(Error::spec(field, problem)))
}

fn name_problem(s: &str) -> Option<String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    let problem = if s.is_empty() {
        return Some("must not be empty".into());
    } else if !s.bytes().all(allowed) {
        "may hold only letters, digits, '_', '.' and '-'".to_string()
    } else if s.starts_with(['.', '-']) {
        "must not start with '.' or '-'".to_string()
    } else if s.contains("..") {
        "must not contain \"..\"".to_string()
    } else if s.len() > MAX_NAME_LEN {
        format!("is longer than {MAX_NAME_LEN} bytes")
    } else {
        return None;
    };
    Some(format!("{} {problem}", quoted(s)))
}

/// `s` in quotes, cut short if long.
fn quoted(s: &str) -> String {
    let mut end = s.len().min(77);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    match end < s.len() {
        true => format!("{:?}...", &s[..end]),
        false => format!("{s:?}"),
    }
}

/// Fails with `message` on `field` unless `ok`.
fn ensure(ok: bool, field: impl Into<String>, message: impl Into<String>) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::spec(field, message))
    }
}

/// A job's identity `role/env/name`; each segment is a [`valid_name`].
/// Serialized as the string `role/env/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobKey {
    /// Who the job belongs to, such as `search`; a node running as root
    /// runs its tasks as the role's user (`sluice-<role>` by default).
    pub role: String,
    /// The stage, such as `devel` or `prod`; `--stage` replaces it.
    pub env: String,
    /// The job's name within its role and env, such as `indexer`.
    pub name: String,
}

impl JobKey {
    /// A key from its segments; an error names `role`, `env` or `name`.
    pub fn new(role: &str, env: &str, name: &str) -> Result<JobKey> {
        let (role, env, name) = (role.to_string(), env.to_string(), name.to_string());
        let key = JobKey { role, env, name };
        key.validate()?;
        Ok(key)
    }

    /// Parses `role/env/name`; an error names `key`, `role`, `env` or `name`.
    pub fn parse(s: &str) -> Result<JobKey> {
        let parts: Vec<&str> = s.split('/').collect();
        let [role, env, name] = parts[..] else {
            return Err(Error::spec(
                "key",
                format!("{} is not role/env/name", quoted(s)),
            ));
        };
        JobKey::new(role, env, name)
    }

    /// Checks every segment.
    pub fn validate(&self) -> Result<()> {
        valid_name("role", &self.role)?;
        valid_name("env", &self.env)?;
        valid_name("name", &self.name)
    }
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.role, self.env, self.name)
    }
}

impl FromStr for JobKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<JobKey> {
        JobKey::parse(s)
    }
}

impl Serialize for JobKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for JobKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        JobKey::parse(&String::deserialize(deserializer)?).map_err(de::Error::custom)
    }
}

/// A job resolved for one stage and validated; the scheduler persists it
/// as JSON (call [`JobSpec::validate`] on one read back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job's `role/env/name`, unique in the cluster.
    pub key: JobKey,
    /// The `--stage` the spec was resolved for, if one was given; when set
    /// it equals `key.env`.
    #[serde(default)]
    pub stage: Option<String>,
    /// How many copies of the task run, 1 to [`MAX_INSTANCES`]; each gets
    /// an index from 0.
    pub instances: u32,
    /// Per instance.
    pub resources: Resources,
    /// In start order.
    pub processes: Vec<Process>,
    /// Declared port names, allocated by the node for each instance.
    #[serde(default)]
    pub ports: Vec<String>,
    /// When and how fast the executor restarts the processes after they end.
    pub restart: RestartPolicy,
    /// Present for a cron job: one run per tick, never overlapping.
    #[serde(default)]
    pub cron: Option<Schedule>,
    /// Free-form labels copied into each sandbox's manifest: at most 64,
    /// keys valid names, values at most 256 bytes.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Paths the task may use beyond its sandbox.
    #[serde(default)]
    pub filesystem: Filesystem,
    /// How the task's lines group into multi-line events, copied into each
    /// sandbox's manifest for the shipper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiline: Option<Multiline>,
}

/// What a task may reach beyond its sandbox (absolute paths).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filesystem {
    /// Absolute paths, without `..`, the task may read and run; at most
    /// [`MAX_FILESYSTEM_PATHS`].
    #[serde(default)]
    pub read: Vec<std::path::PathBuf>,
    /// Absolute paths, without `..`, the task may read and write; at most
    /// [`MAX_FILESYSTEM_PATHS`].
    #[serde(default)]
    pub write: Vec<std::path::PathBuf>,
}

/// Most paths in `filesystem.read` or `filesystem.write`.
pub const MAX_FILESYSTEM_PATHS: usize = 32;

/// Resources of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Cores, fractions allowed.
    pub cpu: f64,
    /// Memory in MiB, 1 to [`MAX_RAM_MB`].
    pub ram_mb: u64,
    /// Sandbox disk in MiB, 1 to [`MAX_DISK_MB`]; the node kills a task
    /// whose sandbox grows past it.
    pub disk_mb: u64,
}

/// One process of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// Also names its log files, `<name>.stdout` and `<name>.stderr`.
    pub name: String,
    /// A command line for `sh -c`, with placeholders (module docs).
    pub cmd: String,
}

/// When a task is started again after its processes end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// After every exit: a service.
    Always,
    /// After a failed exit only.
    OnFailure,
    /// Never: a batch or cron run.
    Never,
}

/// How a task is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// After which exits to restart; by default `always`, or `never` for a
    /// cron job (which may not use `always`).
    pub policy: Policy,
    /// Wait before the first restart; doubled for each further one.
    pub initial_backoff_ms: u64,
    /// Longest wait.
    pub max_backoff_ms: u64,
    /// Restarts allowed in all, `None` for no limit.
    pub max_restarts: Option<u32>,
}

impl RestartPolicy {
    /// Whether to restart after an exit (`succeeded`: status 0) when
    /// `restarts` restarts have happened already.
    pub fn should_restart(&self, succeeded: bool, restarts: u32) -> bool {
        let wanted = match self.policy {
            Policy::Always => true,
            Policy::OnFailure => !succeeded,
            Policy::Never => false,
        };
        wanted && self.max_restarts.is_none_or(|max| restarts < max)
    }

    /// Wait before restart number `restarts` (0 for the first):
    /// `initial_backoff_ms` doubled `restarts` times, at most `max_backoff_ms`.
    pub fn backoff_ms(&self, restarts: u32) -> u64 {
        let factor = 1u64.checked_shl(restarts).unwrap_or(u64::MAX);
        self.initial_backoff_ms
            .saturating_mul(factor)
            .min(self.max_backoff_ms)
    }

    fn validate(&self, cron: bool) -> Result<()> {
        let always = "a cron job runs once per tick and cannot restart `always`; use `on-failure` \
                      or `never`";
        ensure(!cron || self.policy != Policy::Always, "restart", always)?;
        let (initial, max) = (self.initial_backoff_ms, self.max_backoff_ms);
        let ms = 1..=MAX_BACKOFF_MS;
        in_range(
            "restart.backoff.initial_ms",
            initial.into(),
            ms.clone(),
            DAY,
        )?;
        in_range("restart.backoff.max_ms", max.into(), ms, DAY)?;
        let message = format!("must be at least initial_ms ({initial}), got {max}");
        ensure(max >= initial, "restart.backoff.max_ms", message)
    }
}

const DAY: &str = " (one day)";
const TIB16: &str = " (16 TiB)";
const PIB: &str = " (1 PiB)";

/// What the placeholders of a task's commands stand for.
#[derive(Debug, Clone, Copy)]
pub struct TaskContext<'a> {
    /// `{{instance}}`: the task's instance index, from 0.
    pub instance: u32,
    /// Made by the scheduler; must be a [`valid_name`], as it goes into a
    /// shell command unquoted.
    pub task_id: &'a str,
    /// `{{run}}`: the executor's run, 0 for the first start, then one more
    /// per restart.
    pub run: u32,
    /// Allocated port of each declared name.
    pub ports: &'a BTreeMap<String, u16>,
    /// `{{role}}`, `{{env}}` and `{{name}}`: the job's key.
    pub key: &'a JobKey,
}

impl Process {
    /// `cmd` with its placeholders replaced.
    ///
    /// The result goes to `sh -c` unquoted. That is safe because every
    /// value is a number or a validated name (`[A-Za-z0-9_.-]`, which the
    /// shell takes literally). Infallible for a validated spec; in an
    /// unvalidated one, a placeholder that cannot be filled (a port missing
    /// from `ctx`, an unclosed `{{`) is left as written.
    pub fn render(&self, ctx: &TaskContext<'_>) -> String {
        let Ok(pieces) = pieces(&self.cmd) else {
            return self.cmd.clone();
        };
        let mut out = String::with_capacity(self.cmd.len() + 16);
        for piece in pieces {
            let (var, raw) = match piece {
                Piece::Text(text) => {
                    out.push_str(text);
                    continue;
                }
                Piece::Var(var, raw) => (var, raw),
            };
            match var {
                Var::Instance => out.push_str(&ctx.instance.to_string()),
                Var::TaskId => out.push_str(ctx.task_id),
                Var::Run => out.push_str(&ctx.run.to_string()),
                Var::Role => out.push_str(&ctx.key.role),
                Var::Env => out.push_str(&ctx.key.env),
                Var::Name => out.push_str(&ctx.key.name),
                Var::Port(port) => match ctx.ports.get(port) {
                    Some(number) => out.push_str(&number.to_string()),
                    None => out.push_str(raw),
                },
            }
        }
        out
    }
}

/// A piece of a `cmd`: text, or a placeholder with its source text.
enum Piece<'a> {
    Text(&'a str),
    Var(Var<'a>, &'a str),
}

enum Var<'a> {
    Instance,
    TaskId,
    Run,
    Role,
    Env,
    Name,
    Port(&'a str),
}

/// Splits `cmd` at its placeholders; the error says which one is wrong.
fn pieces(cmd: &str) -> std::result::Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = cmd;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push(Piece::Text(&rest[..open]));
        }
        let inside = &rest[open + 2..];
        let Some(close) = inside.find("}}") else {
            let at = cmd.len() - rest.len() + open;
            return Err(format!("\"{{{{\" at byte {at} is not closed by \"}}}}\""));
        };
        let var = match inside[..close].trim() {
            "instance" => Var::Instance,
            "task_id" => Var::TaskId,
            "run" => Var::Run,
            "role" => Var::Role,
            "env" => Var::Env,
            "name" => Var::Name,
            other => match other.strip_prefix("ports.") {
                Some(port) => Var::Port(port),
                None => {
                    return Err(format!(
                        "unknown placeholder {}, expected instance, task_id, run, role, env, \
                         name or ports.NAME",
                        quoted(&format!("{{{{{other}}}}}"))
                    ));
                }
            },
        };
        out.push(Piece::Var(var, &rest[open..open + close + 4]));
        rest = &inside[close + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

impl JobSpec {
    /// Checks everything [`parse`] checks after resolving, for a spec read
    /// back from storage. Errors name the YAML field (`resources.ram_mb`).
    pub fn validate(&self) -> Result<()> {
        self.key.validate()?;
        let env = &self.key.env;
        if let Some(stage) = &self.stage {
            ensure(
                stage == env,
                "env",
                format!("is {env:?} but the stage is {stage:?}"),
            )?;
        }
        in_range(
            "instances",
            self.instances.into(),
            1..=MAX_INSTANCES.into(),
            "",
        )?;
        let cpu = self.resources.cpu;
        ensure(
            cpu.is_finite() && cpu > 0.0,
            "resources.cpu",
            format!("must be a positive number, got {cpu}"),
        )?;
        ensure(
            cpu <= MAX_CPU,
            "resources.cpu",
            format!("must be at most {MAX_CPU}, got {cpu}"),
        )?;
        let (ram, disk) = (self.resources.ram_mb.into(), self.resources.disk_mb.into());
        in_range("resources.ram_mb", ram, 1..=MAX_RAM_MB, TIB16)?;
        in_range("resources.disk_mb", disk, 1..=MAX_DISK_MB, PIB)?;

        let count = self.ports.len();
        ensure(
            count <= MAX_PORTS,
            "ports",
            format!("has {count}, at most {MAX_PORTS}"),
        )?;
        let mut ports = BTreeSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            valid_name(&format!("ports[{i}]"), port)?;
            let new = ports.insert(port.as_str());
            ensure(
                new,
                format!("ports[{i}]"),
                format!("{port:?} is declared twice"),
            )?;
        }

        let count = self.processes.len();
        ensure(count > 0, "processes", "needs at least one process")?;
        ensure(
            count <= MAX_PROCESSES,
            "processes",
            format!("has {count}, at most {MAX_PROCESSES}"),
        )?;
        let mut names = BTreeSet::new();
        for (i, Process { name, cmd }) in self.processes.iter().enumerate() {
            let field = format!("processes[{i}].name");
            valid_name(&field, name)?;
            let new = names.insert(name.as_str());
            ensure(
                new,
                field,
                format!("{name:?} is the name of an earlier process"),
            )?;
            check_cmd(cmd, &ports).map_err(|m| Error::spec(format!("processes[{i}].cmd"), m))?;
        }

        self.restart.validate(self.cron.is_some())?;
        if let Some(multiline) = &self.multiline {
            multiline
                .validate()
                .map_err(|e| Error::spec("multiline", e))?;
        }

        let count = self.labels.len();
        ensure(
            count <= MAX_LABELS,
            "labels",
            format!("has {count}, at most {MAX_LABELS}"),
        )?;
        for (key, value) in &self.labels {
            if let Some(problem) = name_problem(key) {
                return Err(Error::spec("labels", format!("key {problem}")));
            }
            let ok = value.len() <= MAX_LABEL_LEN && !value.chars().any(char::is_control);
            ensure(
                ok,
                format!("labels.{key}"),
                format!("must be at most {MAX_LABEL_LEN} bytes without control characters"),
            )?;
        }
        for (name, paths) in [
            ("read", &self.filesystem.read),
            ("write", &self.filesystem.write),
        ] {
            let field = format!("filesystem.{name}");
            ensure(
                paths.len() <= MAX_FILESYSTEM_PATHS,
                field.clone(),
                format!("has {} paths, at most {MAX_FILESYSTEM_PATHS}", paths.len()),
            )?;
            for (i, path) in paths.iter().enumerate() {
                let text = path.to_string_lossy();
                ensure(
                    path.is_absolute()
                        && text.len() <= 4096
                        && !text.contains('\0')
                        && !path
                            .components()
                            .any(|c| c == std::path::Component::ParentDir),
                    format!("{field}[{i}]"),
                    format!("{text:?} must be an absolute path without `..`"),
                )?;
            }
        }
        Ok(())
    }
}

fn check_cmd(cmd: &str, ports: &BTreeSet<&str>) -> std::result::Result<(), String> {
    if cmd.trim().is_empty() {
        return Err("must not be empty".into());
    } else if cmd.contains('\0') {
        return Err("must not contain a NUL byte".into());
    } else if cmd.len() > MAX_CMD_LEN {
        return Err(format!("is longer than {MAX_CMD_LEN} bytes"));
    }
    for piece in pieces(cmd)? {
        if let Piece::Var(Var::Port(port), raw) = piece
            && !ports.contains(port)
        {
            return Err(format!(
                "{raw} names port {port:?}, which is not declared in ports"
            ));
        }
    }
    Ok(())
}

/// Checks an integer against a range; `note` follows the maximum.
fn in_range(field: &str, value: i128, range: RangeInclusive<u64>, note: &str) -> Result<u64> {
    let (min, max) = (i128::from(*range.start()), i128::from(*range.end()));
    let message = if value < min && min == 1 {
        format!("must be positive, got {value}")
    } else if value < min {
        format!("must not be negative, got {value}")
    } else if value > max {
        format!("must be at most {max}{note}, got {value}")
    } else {
        return Ok(value as u64);
    };
    Err(Error::spec(field, message))
}

/// Parses a job spec and resolves it for `stage` (`--stage`), or for its
/// own `env` when `stage` is `None`. See the module docs for the format.
pub fn parse(yaml: &str, stage: Option<&str>) -> Result<JobSpec> {
    check_flow_cost(yaml)?;
    let mut doc: Value = serde_yaml_ng::from_str(yaml).map_err(|e| yaml_error(&e))?;
    doc.apply_merge().map_err(|e| yaml_error(&e))?;
    let Value::Mapping(mut base) = doc else {
        return Err(Error::spec("", "a job spec must be a YAML mapping"));
    };

    // The whole document, overrides of every stage included, strictly.
    let raw: RawSpec = from_value(Value::Mapping(base.clone()))?;
    for (name, over) in raw.envs.iter().flatten() {
        if let Some(problem) = name_problem(name) {
            return Err(Error::spec("envs", format!("stage {problem}")));
        }
        ensure(
            over.envs.is_none(),
            format!("envs.{name}.envs"),
            "stages do not nest",
        )?;
        let same = over.env.as_ref().is_none_or(|env| env == name);
        let message = format!("must be {name:?} or left out: the stage sets env");
        ensure(same, format!("envs.{name}.env"), message)?;
    }
    let overrides: Vec<(String, Value)> = match base.remove("envs") {
        Some(Value::Mapping(envs)) => envs
            .into_iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
            .collect(),
        _ => Vec::new(),
    };
    let over = |name: &str| overrides.iter().find(|(k, _)| k == name).map(|(_, v)| v);

    let env = raw.env.as_deref();
    let target = match (stage, env) {
        (Some(stage), _) => {
            valid_name("env", stage)?;
            let known: Vec<&str> = overrides.iter().map(|(k, _)| k.as_str()).collect();
            let (base_env, known) = (env.unwrap_or(""), known.join(", "));
            let message =
                format!("there is no stage {stage:?}: env is {base_env:?} and envs has [{known}]");
            ensure(env == Some(stage) || over(stage).is_some(), "envs", message)?;
            stage
        }
        (None, Some(env)) => env,
        (None, None) => return Err(Error::spec("env", "is required (or choose a stage)")),
    };
    let spec = resolve(&base, over(target), target, stage)?;
    // The other stages must be valid too.
    for (name, value) in overrides.iter().filter(|(name, _)| name != target) {
        resolve(&base, Some(value), name, Some(name)).map_err(|err| match err {
            Error::Spec { field, message } => {
                let message = format!("{message} (with the overrides of stage {name:?})");
                Error::Spec { field, message }
            }
            other => other,
        })?;
    }
    Ok(spec)
}

/// Refuses a document whose flow collections could make the YAML scanner
/// run for minutes (see [`MAX_FLOW_COST`]).
fn check_flow_cost(yaml: &str) -> Result<()> {
    let opens = yaml.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
    ensure(
        opens.saturating_mul(yaml.len()) <= MAX_FLOW_COST,
        "",
        format!(
            "{opens} '[' and '{{' in {} bytes are more than the YAML parser reads in reasonable \
             time; write the spec in block style or make it shorter",
            yaml.len()
        ),
    )
}

/// Merges the overrides of a stage over the base and builds the spec.
fn resolve(
    base: &Mapping,
    over: Option<&Value>,
    env: &str,
    stage: Option<&str>,
) -> Result<JobSpec> {
    let mut merged = Value::Mapping(base.clone());
    if let Some(over) = over {
        merge(&mut merged, over.clone());
    }
    if let Value::Mapping(map) = &mut merged {
        map.insert("env".into(), env.into());
    }
    let raw: RawSpec = from_value(merged)?;
    let cron = raw.cron.as_deref().map(Schedule::parse).transpose()?;
    let key = JobKey::new(
        &required(raw.role, "role")?,
        env,
        &required(raw.name, "name")?,
    )?;
    let res = required(raw.resources, "resources")?;
    let ram = number("resources.ram_mb", res.ram_mb, 1..=MAX_RAM_MB, TIB16)?;
    let disk = number("resources.disk_mb", res.disk_mb, 1..=MAX_DISK_MB, PIB)?;
    let instances = number("instances", raw.instances, 1..=MAX_INSTANCES.into(), "")?;
    let processes = required(raw.processes, "processes")?;
    let spec = JobSpec {
        key,
        stage: stage.map(str::to_string),
        instances: instances.unwrap_or(1) as u32,
        resources: Resources {
            cpu: required(res.cpu, "resources.cpu")?,
            ram_mb: required(ram, "resources.ram_mb")?,
            disk_mb: required(disk, "resources.disk_mb")?,
        },
        processes: processes.into_iter().map(RawProcess::into).collect(),
        ports: raw.ports.unwrap_or_default(),
        restart: restart_policy(raw.restart, cron.is_some())?,
        cron,
        labels: raw.labels.unwrap_or_default(),
        filesystem: raw.filesystem.unwrap_or_default(),
        multiline: raw.multiline,
    };
    spec.validate()?;
    Ok(spec)
}

/// The restart policy with its defaults filled in.
fn restart_policy(raw: Option<RawRestart>, cron: bool) -> Result<RestartPolicy> {
    let default = if cron { Policy::Never } else { Policy::Always };
    let (policy, backoff, limit) = match raw {
        None => (default, None, None),
        Some(RawRestart::Short(policy)) => (policy, None, None),
        Some(RawRestart::Long(long)) => (long.policy.unwrap_or(default), long.backoff, long.limit),
    };
    let backoff = backoff.unwrap_or_default();
    let ms = 1..=MAX_BACKOFF_MS;
    let initial = number(
        "restart.backoff.initial_ms",
        backoff.initial_ms,
        ms.clone(),
        DAY,
    )?;
    let max = number("restart.backoff.max_ms", backoff.max_ms, ms, DAY)?;
    let (initial_backoff_ms, max_backoff_ms) = match (initial, max) {
        (Some(initial), Some(max)) => (initial, max),
        (Some(initial), None) => (initial, initial.max(DEFAULT_MAX_BACKOFF_MS)),
        (None, Some(max)) => (max.min(DEFAULT_INITIAL_BACKOFF_MS), max),
        (None, None) => (DEFAULT_INITIAL_BACKOFF_MS, DEFAULT_MAX_BACKOFF_MS),
    };
    let limit = number("restart.limit", limit, 0..=u32::MAX.into(), "")?;
    let max_restarts = limit.map(|n| n as u32);
    Ok(RestartPolicy {
        policy,
        initial_backoff_ms,
        max_backoff_ms,
        max_restarts,
    })
}

fn required<T>(value: Option<T>, field: &str) -> Result<T> {
    value.ok_or_else(|| Error::spec(field, "is required"))
}

/// An optional YAML integer, checked against `range` (see [`in_range`]).
fn number(
    field: &str,
    n: Option<Number>,
    range: RangeInclusive<u64>,
    note: &str,
) -> Result<Option<u64>> {
    let Some(n) = n else { return Ok(None) };
    let value = n.as_i64().map(i128::from).or(n.as_u64().map(i128::from));
    let value = value.ok_or_else(|| Error::spec(field, format!("must be an integer, got {n}")))?;
    in_range(field, value, range, note).map(Some)
}

/// Merges `over` into `base`: mappings key by key, anything else replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => drop(base.insert(key, value)),
                }
            }
        }
        (slot, over) => *slot = over,
    }
}

/// A YAML syntax error, with its position first.
fn yaml_error(err: &serde_yaml_ng::Error) -> Error {
    let text = err.to_string();
    let Some(at) = err.location() else {
        return Error::spec("", text);
    };
    let (line, column) = (at.line(), at.column());
    let text = text.replacen(&format!(" at line {line} column {column}"), "", 1);
    Error::spec("", format!("line {line} column {column}: {text}"))
}

/// Deserializes strictly; the error names the path of the bad field.
fn from_value<T: de::DeserializeOwned>(value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = err.into_inner().to_string();
        // serde reports a missing field at its parent, an unknown one at itself.
        let field = |name: &str| match path.as_str() {
            "" => name.to_string(),
            p if p == name || p.ends_with(&format!(".{name}")) => path.clone(),
            p => format!("{p}.{name}"),
        };
        let named = |prefix: &str| {
            let rest = message.strip_prefix(prefix)?;
            Some(rest[..rest.find('`')?].to_string())
        };
        if let Some(name) = named("unknown field `") {
            let expected = message.split_once(", ").map_or("", |(_, rest)| rest);
            Error::spec(field(&name), format!("unknown field, {expected}"))
        } else if let Some(name) = named("missing field `") {
            Error::spec(field(&name), "is required")
        } else {
            Error::spec(path, message)
        }
    })
}

/// The YAML as written: every field optional, as overrides are partial;
/// required fields are checked after merging.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: Option<String>,
    role: Option<String>,
    env: Option<String>,
    instances: Option<Number>,
    resources: Option<RawResources>,
    processes: Option<Vec<RawProcess>>,
    ports: Option<Vec<String>>,
    restart: Option<RawRestart>,
    cron: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    filesystem: Option<Filesystem>,
    multiline: Option<Multiline>,
    envs: Option<BTreeMap<String, RawSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    cpu: Option<f64>,
    ram_mb: Option<Number>,
    disk_mb: Option<Number>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    name: String,
    cmd: String,
}

impl From<RawProcess> for Process {
    fn from(RawProcess { name, cmd }: RawProcess) -> Process {
        Process { name, cmd }
    }
}

/// `restart: on-failure` or the long form.
enum RawRestart {
    Short(Policy),
    Long(RawRestartLong),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestartLong {
    policy: Option<Policy>,
    backoff: Option<RawBackoff>,
    limit: Option<Number>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    initial_ms: Option<Number>,
    max_ms: Option<Number>,
}

impl<'de> Deserialize<'de> for RawRestart {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct RestartVisitor;
        impl<'de> Visitor<'de> for RestartVisitor {
            type Value = RawRestart;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "`always`, `on-failure`, `never` or a mapping of policy, backoff, limit",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<RawRestart, E> {
                Policy::deserialize(v.into_deserializer()).map(RawRestart::Short)
            }

            fn visit_map<A>(self, map: A) -> std::result::Result<RawRestart, A::Error>
            where
                A: MapAccess<'de>,
            {
                let long = RawRestartLong::deserialize(de::value::MapAccessDeserializer::new(map));
                long.map(RawRestart::Long)
            }
        }
        deserializer.deserialize_any(RestartVisitor)
    }
}

#[cfg(test)]
mod tests;

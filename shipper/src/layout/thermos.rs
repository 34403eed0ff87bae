//! Aurora/Thermos sandboxes: each Thermos process's runs, under the task's
//! sandbox:
//!
//! ```text
//! <root>/<task_id>/.logs/<process>/<run>/stdout
//! <root>/<task_id>/.logs/<process>/<run>/stderr
//! <root>/<task_id>/.logs/<process>/<run>/stdout.<n>   rotated (logger mode `rotate`)
//! ```
//!
//! Aurora names tasks `<role>-<env>-<name>-<instance>-<uuid>` (the scheduler
//! replaces every character outside `[A-Za-z0-9_-]` with `-`; releases before
//! Apache Aurora put a millisecond timestamp first, which is skipped). Roles
//! and names may themselves hold `-`, so the task id is read from both ends:
//!
//! 1. the last 36 characters are the UUID (`8-4-4-4-12` hex) after a `-`;
//! 2. the `-`-separated token before it is the instance number;
//! 3. of the remaining tokens, the environment is the first one after the
//!    first that is an environment Aurora accepts by default (`prod`,
//!    `devel`, `test`, `staging<digits>`); the tokens before it are the role
//!    and those after it the name. When no token is such an environment, the
//!    role is the first token, the environment the second and the name the
//!    rest.
//!
//! | field    | from                                                    |
//! |----------|---------------------------------------------------------|
//! | job      | `role/env/name` from the task id, each sanitized to `[A-Za-z0-9_.-]` |
//! | instance | from the task id                                        |
//! | task_id  | the `<task_id>` directory                               |
//! | run      | the numeric `<run>` directory                           |
//! | process  | the `<process>` directory                               |
//! | stream   | the file name                                           |
//! | labels   | none; `identity_problem` when the task id did not parse |
//!
//! A task id that does not parse is still shipped, as job
//! `unknown/unknown/<task_id>` (sanitized), instance 0, with the
//! `identity_problem` label saying why: logs are never dropped for a name.
//! The sandbox is `<root>/<task_id>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sluice_schema::pb::Layout as LayoutProto;

use super::names::{
    IDENTITY_PROBLEM, is_uuid, job_key, labels, parse_index, parse_rotated_stream, plain_components,
};
use super::{Framing, Identity, Layout, LayoutError};

/// Thermos' log directory inside a sandbox.
const LOGS_DIR: &str = ".logs";

/// The [`Layout`] for Aurora/Thermos sandboxes: identity parsed from the
/// Aurora task id directory name.
#[derive(Debug)]
pub struct Thermos;

impl Layout for Thermos {
    fn kind(&self) -> LayoutProto {
        LayoutProto::Thermos
    }

    fn framing(&self) -> Framing {
        Framing::Plain
    }

    fn max_depth(&self) -> usize {
        // <task_id>/.logs/<process>/<run>
        4
    }

    fn identify(&self, root: &Path, path: &Path) -> Result<Option<Identity>, LayoutError> {
        let Some(parts) = plain_components(root, path) else {
            return Ok(None);
        };
        let [task_id, logs, process, run, file] = parts[..] else {
            return Ok(None);
        };
        if logs != LOGS_DIR {
            return Ok(None);
        }
        let (Some(run), Some(stream)) = (parse_index(run), parse_rotated_stream(file)) else {
            return Ok(None);
        };
        let task = AuroraTask::parse_or_unknown(task_id);
        Ok(Some(Identity {
            job: task.job,
            instance: task.instance,
            task_id: task_id.to_string(),
            run,
            process: process.to_string(),
            stream,
            labels: task.labels,
            multiline: None,
        }))
    }

    fn sandbox(&self, root: &Path, path: &Path) -> Option<PathBuf> {
        let parts = plain_components(root, path)?;
        Some(root.join(parts.first()?))
    }
}

/// What an Aurora task id says about its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuroraTask {
    /// Sanitized `role/env/name`.
    pub job: String,
    pub instance: u32,
    /// Empty, or [`IDENTITY_PROBLEM`] when the id did not parse.
    pub labels: BTreeMap<String, String>,
}

impl AuroraTask {
    /// The task `task_id` names (see the module doc).
    pub fn parse(task_id: &str) -> Result<AuroraTask, &'static str> {
        let head = task_id
            .len()
            .checked_sub(37)
            .filter(|&at| task_id.is_char_boundary(at) && task_id[at..].starts_with('-'))
            .filter(|&at| is_uuid(&task_id[at + 1..]))
            .map(|at| &task_id[..at])
            .ok_or("task id does not end in -<uuid>")?;
        let (rest, instance) = head
            .rsplit_once('-')
            .ok_or("task id has no instance number before its uuid")?;
        let instance =
            parse_index(instance).ok_or("task id has no instance number before its uuid")?;

        let mut tokens: Vec<&str> = rest.split('-').collect();
        if tokens.len() > 3
            && tokens[0].len() == 13
            && tokens[0].bytes().all(|b| b.is_ascii_digit())
        {
            tokens.remove(0); // pre-Apache Aurora: `<millis>-<role>-...`
        }
        if tokens.len() < 3 {
            return Err("task id has fewer than role, env and name before its instance");
        }
        let env_at = (1..tokens.len() - 1)
            .find(|&i| is_aurora_env(tokens[i]))
            .unwrap_or(1);
        let role = tokens[..env_at].join("-");
        let env = tokens[env_at];
        let name = tokens[env_at + 1..].join("-");
        if role.is_empty() || env.is_empty() || name.is_empty() {
            return Err("task id has an empty role, env or name");
        }
        Ok(AuroraTask {
            job: job_key(&role, env, &name),
            instance,
            labels: BTreeMap::new(),
        })
    }

    /// [`AuroraTask::parse`], or job `unknown/unknown/<task_id>` labelled
    /// with the reason.
    pub fn parse_or_unknown(task_id: &str) -> AuroraTask {
        AuroraTask::parse(task_id).unwrap_or_else(|problem| AuroraTask {
            job: job_key("unknown", "unknown", task_id),
            instance: 0,
            labels: labels([(IDENTITY_PROBLEM, problem)]),
        })
    }
}

/// Environments Aurora's scheduler accepts by default
/// (`^(prod|devel|test|staging\d*)$`).
fn is_aurora_env(token: &str) -> bool {
    matches!(token, "prod" | "devel" | "test")
        || token
            .strip_prefix("staging")
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use sluice_schema::pb::Stream;

    use super::*;

    const UUID: &str = "0f6a7c5e-2b1d-4e8f-9a3c-5d7e9f1a2b4c";

    fn task(job: &str, instance: u32) -> AuroraTask {
        AuroraTask {
            job: job.into(),
            instance,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn task_ids_parse_from_both_ends() {
        for (id, job, instance) in [
            ("vagrant-test-hello_world-0", "vagrant/test/hello_world", 0),
            ("www-data-prod-hello-12", "www-data/prod/hello", 12),
            ("ci-prod-test-runner-3", "ci/prod/test-runner", 3),
            (
                "test-infra-devel-build-cache-1",
                "test-infra/devel/build-cache",
                1,
            ),
            ("ads-staging42-bidder-7", "ads/staging42/bidder", 7),
            ("mesos-qa-canary-web-2", "mesos/qa/canary-web", 2),
            (
                "1384287574516-www-data-prod-hello-0",
                "www-data/prod/hello",
                0,
            ),
        ] {
            let id = format!("{id}-{UUID}");
            assert_eq!(AuroraTask::parse(&id), Ok(task(job, instance)), "{id}");
        }
    }

    #[test]
    fn unparseable_task_ids_are_shipped_as_unknown() {
        for (id, problem) in [
            ("hello".to_string(), "task id does not end in -<uuid>"),
            (
                format!("www-data-prod-hello-0-{}", &UUID[..35]),
                "task id does not end in -<uuid>",
            ),
            (
                format!("www-data-prod-hello-x-{UUID}"),
                "task id has no instance number before its uuid",
            ),
            (
                format!("www-data-prod-hello-01-{UUID}"),
                "task id has no instance number before its uuid",
            ),
            (UUID.to_string(), "task id does not end in -<uuid>"),
            (
                format!("hello-0-{UUID}"),
                "task id has fewer than role, env and name before its instance",
            ),
            (
                format!("-prod-hello-0-{UUID}"),
                "task id has an empty role, env or name",
            ),
            (format!("é{UUID}"), "task id does not end in -<uuid>"),
        ] {
            assert_eq!(AuroraTask::parse(&id), Err(problem), "{id}");
            let unknown = AuroraTask::parse_or_unknown(&id);
            assert!(unknown.job.starts_with("unknown/unknown/"), "{unknown:?}");
            assert_eq!(unknown.labels[IDENTITY_PROBLEM], problem);
        }
        assert_eq!(
            AuroraTask::parse_or_unknown("a b/../c").job,
            "unknown/unknown/a_b_.._c"
        );
    }

    /// A Thermos sandbox after a process failed once and was restarted.
    fn sandbox(task_id: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let task = root.path().join(task_id);
        fs::create_dir_all(task.join("sandbox")).unwrap();
        for (process, runs) in [("fetch_package", 1), ("hello_world", 2)] {
            for run in 0..runs {
                let dir = task.join(".logs").join(process).join(run.to_string());
                fs::create_dir_all(&dir).unwrap();
                fs::write(dir.join("stdout"), "hi\n").unwrap();
                fs::write(dir.join("stderr"), "").unwrap();
            }
        }
        let run1 = task.join(".logs/hello_world/1");
        fs::write(run1.join("stdout.1"), "older\n").unwrap();
        fs::write(run1.join("stdout.1.gz"), "").unwrap();
        root
    }

    #[test]
    fn identifies_process_runs() {
        let task_id = format!("www-data-prod-hello-2-{UUID}");
        let dir = sandbox(&task_id);
        let root = dir.path();
        let base = root.join(&task_id).join(".logs");
        let id = Thermos
            .identify(root, &base.join("hello_world/1/stderr"))
            .unwrap()
            .unwrap();
        assert_eq!(
            id,
            Identity {
                job: "www-data/prod/hello".into(),
                instance: 2,
                task_id: task_id.clone(),
                run: 1,
                process: "hello_world".into(),
                stream: Stream::Stderr,
                labels: BTreeMap::new(),
                multiline: None,
            }
        );
        let rotated = Thermos
            .identify(root, &base.join("hello_world/1/stdout.1"))
            .unwrap()
            .unwrap();
        assert_eq!((rotated.run, rotated.stream), (1, Stream::Stdout));
        let first = Thermos
            .identify(root, &base.join("fetch_package/0/stdout"))
            .unwrap()
            .unwrap();
        assert_eq!((first.process.as_str(), first.run), ("fetch_package", 0));
        assert_eq!(
            Thermos.sandbox(root, &base.join("hello_world/1/stderr")),
            Some(root.join(&task_id))
        );
    }

    #[test]
    fn other_files_are_not_logs() {
        let task_id = format!("www-data-prod-hello-2-{UUID}");
        let dir = sandbox(&task_id);
        let root = dir.path();
        for rel in [
            "hello_world/1/stdout.1.gz",
            "hello_world/01/stdout",
            "hello_world/latest/stdout",
            "hello_world/stdout",
            "hello_world/1/stdin",
            "hello_world/1/../1/stdout",
            "../sandbox/x/0/stdout",
            "./hello_world/0/stdout/x",
        ] {
            let path = root.join(&task_id).join(".logs").join(rel);
            assert_eq!(Thermos.identify(root, &path), Ok(None), "{rel}");
        }
        let path = root.join(&task_id).join("sandbox/0/stdout");
        assert_eq!(Thermos.identify(root, &path), Ok(None));
        let path = root
            .join("..")
            .join(&task_id)
            .join(".logs/hello_world/1/stdout");
        assert_eq!(Thermos.identify(root, &path), Ok(None));
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_are_not_logs() {
        use std::os::unix::ffi::OsStrExt;
        let root = Path::new("/var/lib/thermos");
        let path = root
            .join(std::ffi::OsStr::from_bytes(b"caf\xe9"))
            .join(".logs/p/0/stdout");
        assert_eq!(Thermos.identify(root, &path), Ok(None));
    }

    #[test]
    fn hostile_task_directories_are_shipped_with_sanitized_jobs() {
        let root = Path::new("/var/lib/thermos");
        let path = root.join("$(reboot) `x`").join(".logs/p/0/stdout");
        let id = Thermos.identify(root, &path).unwrap().unwrap();
        assert_eq!(id.job, "unknown/unknown/__reboot___x_");
        assert_eq!(id.task_id, "$(reboot) `x`");
        assert_eq!(
            id.labels[IDENTITY_PROBLEM],
            "task id does not end in -<uuid>"
        );
    }

    #[test]
    fn kind_framing_and_depth() {
        assert_eq!(Thermos.kind(), LayoutProto::Thermos);
        assert_eq!(Thermos.framing(), Framing::Plain);
        let depth = Path::new("t/.logs/p/0/stdout").components().count() - 1;
        assert_eq!(Thermos.max_depth(), depth);
    }
}

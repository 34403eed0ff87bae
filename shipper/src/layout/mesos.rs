//! A Mesos agent's work directory (`--work_dir`, the root): each executor
//! run's sandbox holds the executor's `stdout` and `stderr`.
//!
//! ```text
//! <root>/slaves/<agent>/frameworks/<fw>/executors/<exec>/runs/<container>/stdout
//! <root>/slaves/<agent>/frameworks/<fw>/executors/<exec>/runs/<container>/stderr
//! <root>/slaves/<agent>/frameworks/<fw>/executors/<exec>/runs/<container>/stdout.<n>
//! <root>/slaves/<agent>/frameworks/<fw>/executors/<exec>/runs/latest -> <container>
//! ```
//!
//! `stdout.<n>` are rotations written by the `LogrotateContainerLogger`
//! module. The `runs/latest` symlink is skipped (a `latest` component is
//! not a log file), so each file is found once, under its container.
//!
//! Identity depends on the executor id:
//!
//! | executor id                      | job                          | instance | task_id          | run | process            |
//! |----------------------------------|------------------------------|----------|------------------|-----|--------------------|
//! | `thermos-<aurora task id>`       | `role/env/name` as [`thermos`](super::thermos) | from the task id | the Aurora task id | 0 | `thermos_executor` |
//! | Marathon `<app>.<uuid>`, `<app>.instance-<uuid>[._app.<n>]` | `marathon/default/<app>` | 0 | the executor id | `<n>`, else 0 | `<app>` |
//! | anything else                    | `mesos/default/<executor id>` | 0       | the executor id  | 0   | the executor id    |
//!
//! Job-key components are sanitized to `[A-Za-z0-9_.-]` (Marathon writes a
//! group app `/prod/web` as `prod_web`). An Aurora task id that does not
//! parse is still shipped as `unknown/unknown/<task id>` with an
//! `identity_problem` label. The stream is the file name. Every identity is
//! labelled `agent_id`, `framework_id`, `executor_id` and `container_id`.
//! The sandbox is the `runs/<container>` directory.

use std::path::{Path, PathBuf};

use sluice_schema::pb::Layout as LayoutProto;

use super::names::{is_uuid, job_key, labels, parse_index, parse_rotated_stream, plain_components};
use super::thermos::AuroraTask;
use super::{Framing, Identity, Layout, LayoutError};

/// Directory names at even depths of a sandbox path, and the symlink to the
/// newest run.
const SLAVES: &str = "slaves";
const FRAMEWORKS: &str = "frameworks";
const EXECUTORS: &str = "executors";
const RUNS: &str = "runs";
const LATEST: &str = "latest";
/// Prefix of the executor ids Aurora gives its Thermos executors.
const THERMOS_PREFIX: &str = "thermos-";

/// The [`Layout`] for a Mesos agent's work directory: one sandbox per
/// executor run (`runs/<container>`), identity from the executor id.
#[derive(Debug)]
pub struct Mesos;

/// The ids on the way to a run's sandbox.
struct Run<'a> {
    agent: &'a str,
    framework: &'a str,
    executor: &'a str,
    container: &'a str,
}

/// The `runs/<container>` part of a path, and what follows it.
fn split_run<'a>(parts: &[&'a str]) -> Option<(Run<'a>, usize)> {
    let [
        slaves,
        agent,
        frameworks,
        framework,
        executors,
        executor,
        runs,
        container,
        ..,
    ] = *parts
    else {
        return None;
    };
    let fixed =
        slaves == SLAVES && frameworks == FRAMEWORKS && executors == EXECUTORS && runs == RUNS;
    (fixed && container != LATEST).then_some((
        Run {
            agent,
            framework,
            executor,
            container,
        },
        8,
    ))
}

impl Layout for Mesos {
    fn kind(&self) -> LayoutProto {
        LayoutProto::Mesos
    }

    fn framing(&self) -> Framing {
        Framing::Plain
    }

    fn max_depth(&self) -> usize {
        // slaves/<agent>/frameworks/<fw>/executors/<exec>/runs/<container>
        8
    }

    fn identify(&self, root: &Path, path: &Path) -> Result<Option<Identity>, LayoutError> {
        let Some(parts) = plain_components(root, path) else {
            return Ok(None);
        };
        let Some((run, at)) = split_run(&parts) else {
            return Ok(None);
        };
        let (Some(file), 1) = (parts.get(at), parts.len() - at) else {
            return Ok(None);
        };
        let Some(stream) = parse_rotated_stream(file) else {
            return Ok(None);
        };

        let mut labels = labels([
            ("agent_id", run.agent),
            ("framework_id", run.framework),
            ("executor_id", run.executor),
            ("container_id", run.container),
        ]);
        let executor = run.executor;
        let identity = if let Some(task_id) = executor.strip_prefix(THERMOS_PREFIX) {
            let task = AuroraTask::parse_or_unknown(task_id);
            labels.extend(task.labels);
            Identity {
                job: task.job,
                instance: task.instance,
                task_id: task_id.to_string(),
                run: 0,
                process: "thermos_executor".to_string(),
                stream,
                labels,
                multiline: None,
            }
        } else if let Some((app, incarnation)) = parse_marathon(executor) {
            Identity {
                job: job_key("marathon", "default", app),
                instance: 0,
                task_id: executor.to_string(),
                run: incarnation,
                process: app.to_string(),
                stream,
                labels,
                multiline: None,
            }
        } else {
            Identity {
                job: job_key("mesos", "default", executor),
                instance: 0,
                task_id: executor.to_string(),
                run: 0,
                process: executor.to_string(),
                stream,
                labels,
                multiline: None,
            }
        };
        Ok(Some(identity))
    }

    fn sandbox(&self, root: &Path, path: &Path) -> Option<PathBuf> {
        let parts = plain_components(root, path)?;
        let (_, at) = split_run(&parts)?;
        Some(
            parts[..at]
                .iter()
                .fold(root.to_path_buf(), |p, c| p.join(c)),
        )
    }
}

/// `(app, incarnation)` of a Marathon task id: `<app>.<uuid>` (Marathon
/// before 1.5) or `<app>.instance-<uuid>[._app.<incarnation>]`.
fn parse_marathon(executor: &str) -> Option<(&str, u32)> {
    executor.match_indices('.').find_map(|(dot, _)| {
        let app = &executor[..dot];
        let rest = &executor[dot + 1..];
        let rest = rest.strip_prefix("instance-").unwrap_or(rest);
        let uuid = rest.get(..36).filter(|u| is_uuid(u))?;
        let incarnation = match &rest[uuid.len()..] {
            "" => 0,
            tail => parse_index(tail.strip_prefix("._app.")?)?,
        };
        (!app.is_empty()).then_some((app, incarnation))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;

    use sluice_schema::pb::Stream;

    use super::*;
    use crate::layout::names::IDENTITY_PROBLEM;

    const AGENT: &str = "b6e4d8c2-1f3a-4c5b-8d7e-9a0b1c2d3e4f-S3";
    const FRAMEWORK: &str = "3d2b1a0f-5e4d-4c3b-9a8f-7e6d5c4b3a29-0000";
    const CONTAINER: &str = "a4f1e2d3-c4b5-4a69-8788-99aabbccddee";
    const AURORA_TASK: &str = "www-data-prod-hello-0-0f6a7c5e-2b1d-4e8f-9a3c-5d7e9f1a2b4c";
    const MARATHON: &str = "prod_web.instance-5e2c9a4b-8f1d-11ee-9c3b-0242ac120002._app.2";

    fn run_dir(executor: &str) -> PathBuf {
        Path::new(SLAVES)
            .join(AGENT)
            .join(FRAMEWORKS)
            .join(FRAMEWORK)
            .join(EXECUTORS)
            .join(executor)
            .join(RUNS)
            .join(CONTAINER)
    }

    /// An agent work dir with a Thermos executor, a Marathon task and a
    /// custom executor, each with its `runs/latest` link.
    fn work_dir() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("meta/slaves").join(AGENT)).unwrap();
        for executor in [
            format!("thermos-{AURORA_TASK}"),
            MARATHON.into(),
            "etl:nightly/x".replace('/', "_"),
        ] {
            let run = root.path().join(run_dir(&executor));
            fs::create_dir_all(run.join("sandbox")).unwrap();
            for file in [
                "stdout",
                "stderr",
                "stdout.1",
                "stdout.2.gz",
                "thermos_executor.log",
            ] {
                fs::write(run.join(file), "x\n").unwrap();
            }
            #[cfg(unix)]
            std::os::unix::fs::symlink(CONTAINER, run.parent().unwrap().join(LATEST)).unwrap();
        }
        root
    }

    fn ids(executor: &str) -> BTreeMap<String, String> {
        labels([
            ("agent_id", AGENT),
            ("framework_id", FRAMEWORK),
            ("executor_id", executor),
            ("container_id", CONTAINER),
        ])
    }

    #[test]
    fn thermos_executors_map_like_thermos() {
        let dir = work_dir();
        let root = dir.path();
        let executor = format!("thermos-{AURORA_TASK}");
        let path = root.join(run_dir(&executor)).join("stderr");
        assert_eq!(
            Mesos.identify(root, &path).unwrap().unwrap(),
            Identity {
                job: "www-data/prod/hello".into(),
                instance: 0,
                task_id: AURORA_TASK.into(),
                run: 0,
                process: "thermos_executor".into(),
                stream: Stream::Stderr,
                labels: ids(&executor),
                multiline: None,
            }
        );
        assert_eq!(
            Mesos.sandbox(root, &path),
            Some(root.join(run_dir(&executor)))
        );
        assert_eq!(
            Mesos.sandbox(root, &root.join(run_dir(&executor))),
            Some(root.join(run_dir(&executor)))
        );
    }

    #[test]
    fn unparseable_aurora_ids_are_labelled() {
        let root = Path::new("/var/lib/mesos");
        let path = root.join(run_dir("thermos-hello")).join("stdout");
        let id = Mesos.identify(root, &path).unwrap().unwrap();
        assert_eq!(id.job, "unknown/unknown/hello");
        assert_eq!(
            id.labels[IDENTITY_PROBLEM],
            "task id does not end in -<uuid>"
        );
        assert_eq!(id.labels["executor_id"], "thermos-hello");
    }

    #[test]
    fn marathon_and_other_executors() {
        let dir = work_dir();
        let root = dir.path();
        let path = root.join(run_dir(MARATHON)).join("stdout.1");
        assert_eq!(
            Mesos.identify(root, &path).unwrap().unwrap(),
            Identity {
                job: "marathon/default/prod_web".into(),
                instance: 0,
                task_id: MARATHON.into(),
                run: 2,
                process: "prod_web".into(),
                stream: Stream::Stdout,
                labels: ids(MARATHON),
                multiline: None,
            }
        );
        assert_eq!(
            parse_marathon("web.5e2c9a4b-8f1d-11ee-9c3b-0242ac120002"),
            Some(("web", 0))
        );
        assert_eq!(
            parse_marathon("api.v2.instance-5e2c9a4b-8f1d-11ee-9c3b-0242ac120002"),
            Some(("api.v2", 0))
        );
        for not in [
            "web",
            ".5e2c9a4b-8f1d-11ee-9c3b-0242ac120002",
            "web.5e2c9a4b-8f1d-11ee-9c3b-0242ac120002.x",
            "web.instance-5e2c9a4b-8f1d-11ee-9c3b-0242ac120002._app.01",
        ] {
            assert_eq!(parse_marathon(not), None, "{not}");
        }

        let path = root.join(run_dir("etl:nightly_x")).join("stderr");
        let id = Mesos.identify(root, &path).unwrap().unwrap();
        assert_eq!(
            (id.job.as_str(), id.task_id.as_str(), id.process.as_str()),
            (
                "mesos/default/etl_nightly_x",
                "etl:nightly_x",
                "etl:nightly_x"
            )
        );
    }

    #[test]
    fn latest_links_and_other_files_are_not_logs() {
        let dir = work_dir();
        let root = dir.path();
        let executor = format!("thermos-{AURORA_TASK}");
        let run = root.join(run_dir(&executor));
        let latest = run.parent().unwrap().join(LATEST);
        for path in [
            latest.join("stdout"),
            run.join("stdout.2.gz"),
            run.join("thermos_executor.log"),
            run.join("sandbox/stdout"),
            run.join("../").join(CONTAINER).join("stdout"),
            run.parent().unwrap().join("stdout"),
            root.join("meta/slaves").join(AGENT).join("stdout"),
            root.join("slaves")
                .join(AGENT)
                .join("frameworks/x/executors/y/run/z/stdout"),
        ] {
            assert_eq!(Mesos.identify(root, &path), Ok(None), "{}", path.display());
        }
        assert_eq!(Mesos.sandbox(root, &latest.join("stdout")), None);
        let executor_dir = run.parent().unwrap().parent().unwrap();
        assert_eq!(Mesos.sandbox(root, &executor_dir.join("x")), None);
        assert_eq!(
            Mesos.sandbox(root, &run.parent().unwrap().join("x")),
            Some(run.parent().unwrap().join("x"))
        );
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_are_not_logs() {
        use std::os::unix::ffi::OsStrExt;
        let root = Path::new("/var/lib/mesos");
        let path = root
            .join(run_dir(&format!("thermos-{AURORA_TASK}")))
            .join(std::ffi::OsStr::from_bytes(b"stdout\xff"));
        assert_eq!(Mesos.identify(root, &path), Ok(None));
    }

    #[test]
    fn kind_framing_and_depth() {
        assert_eq!(Mesos.kind(), LayoutProto::Mesos);
        assert_eq!(Mesos.framing(), Framing::Plain);
        assert_eq!(Mesos.max_depth(), run_dir("e").components().count());
    }
}

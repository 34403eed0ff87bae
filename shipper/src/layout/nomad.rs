//! Nomad: a client's allocation directories (the root, `<data_dir>/alloc`),
//! where `logmon` writes each task's output to numbered files in the
//! allocation's shared log directory.
//!
//! ```text
//! <root>/<alloc_id>/alloc/logs/<task>.stdout.<n>
//! <root>/<alloc_id>/alloc/logs/<task>.stderr.<n>
//! <root>/<alloc_id>/alloc/logs/.<task>.stdout.fifo   logmon's pipe: not a log file
//! <root>/<alloc_id>/<task>/local/…                   the task's directory: not logs
//! ```
//!
//! `<n>` is the rotation index of one stream (`logmon` moves on to `<n+1>`
//! when a file reaches its size limit), not a run: every index of a task's
//! stream has the same identity. A restarted task appends to the newest
//! file, so the run is not in the path and is 0.
//!
//! | field    | from                                                    |
//! |----------|---------------------------------------------------------|
//! | job      | `nomad/default/<task>`, sanitized to `[A-Za-z0-9_.-]` (the job and group names live in the allocation's state, which is not read) |
//! | instance | 0                                                       |
//! | task_id  | `<alloc_id>`                                            |
//! | run      | 0                                                       |
//! | process  | `<task>`                                                |
//! | stream   | the file name                                           |
//! | labels   | `alloc_id`                                              |
//!
//! The sandbox is `<root>/<alloc_id>`.

use std::path::{Path, PathBuf};

use sluice_schema::pb::{Layout as LayoutProto, Stream};

use super::names::{is_plain, job_key, labels, parse_index, parse_stream, plain_components};
use super::{Framing, Identity, Layout, LayoutError};

/// The [`Layout`] for a Nomad client's `alloc` directory: one sandbox per
/// allocation, `logmon`'s numbered files under `alloc/logs`.
#[derive(Debug)]
pub struct Nomad;

impl Layout for Nomad {
    fn kind(&self) -> LayoutProto {
        LayoutProto::Nomad
    }

    fn framing(&self) -> Framing {
        Framing::Plain
    }

    fn max_depth(&self) -> usize {
        // <alloc_id>/alloc/logs
        3
    }

    fn identify(&self, root: &Path, path: &Path) -> Result<Option<Identity>, LayoutError> {
        let Some(parts) = plain_components(root, path) else {
            return Ok(None);
        };
        let [alloc_id, "alloc", "logs", file] = parts[..] else {
            return Ok(None);
        };
        let Some((task, stream)) = parse_log_name(file) else {
            return Ok(None);
        };
        Ok(Some(Identity {
            job: job_key("nomad", "default", task),
            instance: 0,
            task_id: alloc_id.to_string(),
            run: 0,
            process: task.to_string(),
            stream,
            labels: labels([("alloc_id", alloc_id)]),
            multiline: None,
        }))
    }

    fn sandbox(&self, root: &Path, path: &Path) -> Option<PathBuf> {
        let parts = plain_components(root, path)?;
        Some(root.join(parts.first()?))
    }
}

/// `(task, stream)` of `<task>.<stdout|stderr>.<n>`.
fn parse_log_name(file: &str) -> Option<(&str, Stream)> {
    let (head, index) = file.rsplit_once('.')?;
    parse_index(index)?;
    let (task, stream) = head.rsplit_once('.')?;
    let stream = parse_stream(stream)?;
    is_plain(task).then_some((task, stream))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;

    use super::*;

    const ALLOC: &str = "5b3e6c1d-8a2f-4e9b-b7c4-1d2e3f4a5b6c";

    /// An allocation with two tasks, one of whose stdout rotated.
    fn allocs() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let alloc = root.path().join(ALLOC);
        let logs = alloc.join("alloc/logs");
        fs::create_dir_all(&logs).unwrap();
        fs::create_dir_all(alloc.join("alloc/data")).unwrap();
        fs::create_dir_all(alloc.join("web/local")).unwrap();
        fs::write(alloc.join("web/local/app.stdout.0"), "").unwrap();
        for file in [
            "web.stdout.0",
            "web.stdout.1",
            "web.stderr.0",
            "log-shipper.v2.stdout.0",
            ".web.stdout.fifo",
            ".web.stderr.fifo",
        ] {
            fs::write(logs.join(file), "").unwrap();
        }
        root
    }

    #[test]
    fn identifies_task_streams_and_rotations() {
        let dir = allocs();
        let root = dir.path();
        let logs = root.join(ALLOC).join("alloc/logs");
        let id = Nomad
            .identify(root, &logs.join("web.stdout.1"))
            .unwrap()
            .unwrap();
        assert_eq!(
            id,
            Identity {
                job: "nomad/default/web".into(),
                instance: 0,
                task_id: ALLOC.into(),
                run: 0,
                process: "web".into(),
                stream: Stream::Stdout,
                labels: BTreeMap::from([("alloc_id".into(), ALLOC.into())]),
                multiline: None,
            }
        );
        assert_eq!(
            Nomad
                .identify(root, &logs.join("web.stdout.0"))
                .unwrap()
                .unwrap(),
            id
        );
        let err = Nomad
            .identify(root, &logs.join("web.stderr.0"))
            .unwrap()
            .unwrap();
        assert_eq!(err.stream, Stream::Stderr);
        let dotted = Nomad
            .identify(root, &logs.join("log-shipper.v2.stdout.0"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (dotted.job.as_str(), dotted.process.as_str()),
            ("nomad/default/log-shipper.v2", "log-shipper.v2")
        );
        assert_eq!(
            Nomad.sandbox(root, &logs.join("web.stdout.1")),
            Some(root.join(ALLOC))
        );
    }

    #[test]
    fn other_files_are_not_logs() {
        let dir = allocs();
        let root = dir.path();
        let alloc = root.join(ALLOC);
        for path in [
            alloc.join("alloc/logs/.web.stdout.fifo"),
            alloc.join("alloc/logs/web.stdout"),
            alloc.join("alloc/logs/web.stdout.01"),
            alloc.join("alloc/logs/web.stdin.0"),
            alloc.join("alloc/logs/.stdout.0"),
            alloc.join("alloc/logs/..stdout.0"),
            alloc.join("alloc/logs/sub/web.stdout.0"),
            alloc.join("web/local/app.stdout.0"),
            alloc.join("alloc/data/../logs/web.stdout.0"),
            root.join("../x/alloc/logs/web.stdout.0"),
        ] {
            assert_eq!(Nomad.identify(root, &path), Ok(None), "{}", path.display());
        }
    }

    #[test]
    fn hostile_task_names_are_sanitized() {
        let root = Path::new("/var/lib/nomad/alloc");
        let path = root.join(ALLOC).join("alloc/logs/$(id) x.stdout.0");
        let id = Nomad.identify(root, &path).unwrap().unwrap();
        assert_eq!(
            (id.job.as_str(), id.process.as_str()),
            ("nomad/default/__id__x", "$(id) x")
        );
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_are_not_logs() {
        use std::os::unix::ffi::OsStrExt;
        let root = Path::new("/var/lib/nomad/alloc");
        let path = root
            .join(ALLOC)
            .join("alloc/logs")
            .join(std::ffi::OsStr::from_bytes(b"w\xffb.stdout.0"));
        assert_eq!(Nomad.identify(root, &path), Ok(None));
    }

    #[test]
    fn kind_framing_and_depth() {
        assert_eq!(Nomad.kind(), LayoutProto::Nomad);
        assert_eq!(Nomad.framing(), Framing::Plain);
        assert_eq!(Nomad.max_depth(), 3);
    }
}

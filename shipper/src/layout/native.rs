//! Native sandboxes, created by scheduler-core's node agent (the layout and
//! the manifest format live in [`sluice_schema::sandbox`]):
//!
//! ```text
//! <root>/<task_id>/sandbox.json                       manifest
//! <root>/<task_id>/logs/run-<run>/<process>.stdout
//! <root>/<task_id>/logs/run-<run>/<process>.stderr
//! <root>/<task_id>/logs/run-<run>/<process>.<stream>.<n>   rotated by logrotate: same identity
//! ```
//!
//! Identity comes from the manifest, never from guessing at the path:
//!
//! | field    | from                                                    |
//! |----------|---------------------------------------------------------|
//! | job      | manifest `job`, checked to be `role/env/name` over `[A-Za-z0-9_.-]` (refused, not sanitized) |
//! | instance | manifest `instance`                                     |
//! | task_id  | manifest `task_id`, which must equal the directory name |
//! | run      | the `run-<n>` directory (the manifest names only the current run; earlier runs' files keep theirs) |
//! | process  | the file name before `.stdout`/`.stderr`; must be one of the manifest's `processes` |
//! | stream   | the file name's extension                               |
//! | labels   | manifest `labels`                                       |
//!
//! A log file whose manifest is missing, unreadable, not valid JSON, of an
//! unknown version, inconsistent with its directory or without the file's
//! process is a [`LayoutError`] naming the manifest and the problem. Other
//! files (the manifest, `work/`, anything not `<process>.<stream>` in a
//! `run-<n>` directory) are not log files. Nothing is cached: the manifest is
//! read on every call and the caller caches identities.
//! The sandbox is `<root>/<task_id>`.

use std::path::{Path, PathBuf};

use sluice_schema::pb::Layout as LayoutProto;
use sluice_schema::sandbox::{LOGS_DIR, MANIFEST, Manifest, parse_run_dir};

use super::names::{
    check_job_key, is_plain, parse_index, parse_stream, plain_components, read_metadata,
};
use super::{Framing, Identity, Layout, LayoutError};

/// The manifest format version this shipper reads.
const MANIFEST_VERSION: u32 = 1;

/// The [`Layout`] for scheduler-core's own sandboxes: identity from each
/// sandbox's `sandbox.json` manifest, re-read on every call.
#[derive(Debug)]
pub struct Native;

impl Layout for Native {
    fn kind(&self) -> LayoutProto {
        LayoutProto::Native
    }

    fn framing(&self) -> Framing {
        Framing::Plain
    }

    fn max_depth(&self) -> usize {
        // <task_id>/logs/run-<n>
        3
    }

    fn identify(&self, root: &Path, path: &Path) -> Result<Option<Identity>, LayoutError> {
        let Some(parts) = plain_components(root, path) else {
            return Ok(None);
        };
        let [task_dir, logs, run_dir, file] = parts[..] else {
            return Ok(None);
        };
        if logs != LOGS_DIR {
            return Ok(None);
        }
        let Some(run) = parse_run_dir(run_dir) else {
            return Ok(None);
        };
        // `<process>.<stream>`, or a numbered rotation `<process>.<stream>.<n>`.
        let file = match file.rsplit_once('.') {
            Some((base, n)) if parse_index(n).is_some() => base,
            _ => file,
        };
        let Some((process, stream)) = file
            .rsplit_once('.')
            .and_then(|(p, s)| Some((p, parse_stream(s)?)))
        else {
            return Ok(None);
        };
        if !is_plain(process) {
            return Ok(None);
        }

        let manifest_path = root.join(task_dir).join(MANIFEST);
        // Whose lines these are is the node's word, never the task's: the
        // file and the manifest must be the node's own, which a confined
        // task can neither change nor make.
        node_owned(path, "log file")?;
        node_owned(&manifest_path, "manifest")?;
        let manifest = read_manifest(&manifest_path, task_dir)?;
        if !manifest.processes.iter().any(|p| p == process) {
            return Err(LayoutError::new(
                path,
                format!(
                    "process {process:?} is not in manifest {} (processes: {})",
                    manifest_path.display(),
                    manifest.processes.join(", ")
                ),
            ));
        }
        Ok(Some(Identity {
            job: manifest.job,
            instance: manifest.instance,
            task_id: manifest.task_id,
            run,
            process: process.to_string(),
            stream,
            labels: manifest.labels,
            multiline: manifest.multiline,
        }))
    }

    fn sandbox(&self, root: &Path, path: &Path) -> Option<PathBuf> {
        let parts = plain_components(root, path)?;
        Some(root.join(parts.first()?))
    }
}

/// Refuses a file that is a symbolic link, belongs to another user than
/// this process, or that others may write.
fn node_owned(path: &Path, what: &str) -> Result<(), LayoutError> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        // Gone already, or never there: reading it says so.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(LayoutError::new(
                path,
                format!("{what} cannot be read: {e}"),
            ));
        }
    };
    if meta.file_type().is_symlink() {
        return Err(LayoutError::new(
            path,
            format!("{what} is a symbolic link: not shipped (a sandbox's files are the node's)"),
        ));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(LayoutError::new(
            path,
            format!(
                "{what} belongs to uid {}, not the node's ({me}): not shipped (a task may not name its own lines)",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(LayoutError::new(
            path,
            format!(
                "{what} is writable by others (mode {:o}): not shipped",
                meta.mode() & 0o777
            ),
        ));
    }
    Ok(())
}

/// The manifest at `path`, checked against the sandbox directory name.
fn read_manifest(path: &Path, task_dir: &str) -> Result<Manifest, LayoutError> {
    let fail = |problem: String| LayoutError::new(path, format!("manifest {problem}"));
    let bytes = read_metadata(path).map_err(fail)?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| fail(format!("is invalid: {e}")))?;
    if manifest.version != MANIFEST_VERSION {
        return Err(fail(format!(
            "has unsupported version {}, expected {MANIFEST_VERSION}",
            manifest.version
        )));
    }
    check_job_key(&manifest.job).map_err(|e| fail(format!("is invalid: {e}")))?;
    if manifest.task_id != task_dir {
        return Err(fail(format!(
            "names task {:?} but sits in sandbox {task_dir:?}",
            manifest.task_id
        )));
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;

    use sluice_schema::pb::Stream;
    use sluice_schema::sandbox::{WORK_DIR, log_file, run_dir};

    use super::*;

    const TASK: &str = "www-data-prod-hello-0-6a1f3c2e";

    fn manifest() -> Manifest {
        Manifest {
            version: 1,
            job: "www-data/prod/hello".into(),
            instance: 3,
            task_id: TASK.into(),
            run: 1,
            processes: vec!["setup".into(), "hello_world".into()],
            labels: BTreeMap::from([("team".into(), "web".into())]),
            multiline: None,
        }
    }

    /// A sandbox as the node agent leaves it after a restart: two runs.
    fn sandbox(manifest: &Manifest) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let task = root.path().join(TASK);
        fs::create_dir_all(task.join(WORK_DIR).join("data")).unwrap();
        fs::write(task.join(WORK_DIR).join("data/out.stdout"), "").unwrap();
        for run in 0..=1 {
            let dir = task.join(LOGS_DIR).join(run_dir(run));
            fs::create_dir_all(&dir).unwrap();
            for p in ["setup", "hello_world"] {
                fs::write(dir.join(log_file(p, false)), "hello\n").unwrap();
                fs::write(dir.join(log_file(p, true)), "").unwrap();
            }
        }
        fs::write(task.join(MANIFEST), serde_json::to_vec(manifest).unwrap()).unwrap();
        root
    }

    fn identify(root: &Path, rel: &str) -> Result<Option<Identity>, LayoutError> {
        Native.identify(root, &root.join(rel))
    }

    #[test]
    fn identity_comes_from_the_manifest_and_the_run_dir() {
        let dir = sandbox(&manifest());
        let root = dir.path();
        let id = identify(root, &format!("{TASK}/logs/run-0/hello_world.stderr"))
            .unwrap()
            .unwrap();
        assert_eq!(
            id,
            Identity {
                job: "www-data/prod/hello".into(),
                instance: 3,
                task_id: TASK.into(),
                run: 0,
                process: "hello_world".into(),
                stream: Stream::Stderr,
                labels: BTreeMap::from([("team".into(), "web".into())]),
                multiline: None,
            }
        );
        let id = identify(root, &format!("{TASK}/logs/run-1/setup.stdout"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (id.run, id.process.as_str(), id.stream),
            (1, "setup", Stream::Stdout)
        );
        assert_eq!(
            Native.sandbox(root, &root.join(TASK).join("logs/run-1/setup.stdout")),
            Some(root.join(TASK))
        );
        assert_eq!(
            Native.sandbox(root, &root.join(TASK)),
            Some(root.join(TASK))
        );
        assert_eq!(Native.sandbox(root, root), None);
    }

    #[test]
    fn other_files_are_not_logs() {
        let dir = sandbox(&manifest());
        let root = dir.path();
        for rel in [
            format!("{TASK}/sandbox.json"),
            format!("{TASK}/work/data/out.stdout"),
            format!("{TASK}/logs/run-01/setup.stdout"),
            format!("{TASK}/logs/run-0/setup.log"),
            format!("{TASK}/logs/run-0/.stdout"),
            format!("{TASK}/logs/run-0/setup.stdout/x"),
            format!("{TASK}/logs/run-0/../run-0/setup.stdout"),
            format!("{TASK}/logs/setup.stdout"),
            "../escape/logs/run-0/setup.stdout".into(),
        ] {
            assert_eq!(identify(root, &rel), Ok(None), "{rel}");
        }
        assert_eq!(Native.identify(root, Path::new("/etc/passwd")), Ok(None));
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_are_not_logs() {
        use std::os::unix::ffi::OsStrExt;
        let dir = sandbox(&manifest());
        let root = dir.path();
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.stdout");
        let path = root.join(TASK).join("logs/run-0").join(name);
        assert_eq!(Native.identify(root, &path), Ok(None));
    }

    #[test]
    fn bad_manifests_are_errors_naming_the_manifest() {
        type BreakManifest = Box<dyn Fn(&Path)>;
        let cases: Vec<(BreakManifest, &str)> = vec![
            (
                Box::new(|m| fs::remove_file(m).unwrap()),
                "manifest failed to open: ",
            ),
            (
                Box::new(|m| fs::write(m, "{\"version\":1,").unwrap()),
                "manifest is invalid: EOF",
            ),
            (
                Box::new(|m| {
                    let text = serde_json::to_string(&manifest()).unwrap();
                    fs::write(m, text.replace("\"run\":1", "\"run\":1,\"extra\":true")).unwrap()
                }),
                "manifest is invalid: unknown field `extra`",
            ),
            (
                Box::new(|m| {
                    let bad = Manifest {
                        version: 2,
                        ..manifest()
                    };
                    fs::write(m, serde_json::to_vec(&bad).unwrap()).unwrap()
                }),
                "manifest has unsupported version 2, expected 1",
            ),
            (
                Box::new(|m| {
                    let bad = Manifest {
                        job: "www-data/prod/../../etc".into(),
                        ..manifest()
                    };
                    fs::write(m, serde_json::to_vec(&bad).unwrap()).unwrap()
                }),
                "manifest is invalid: job key \"www-data/prod/../../etc\" is not role/env/name",
            ),
            (
                Box::new(|m| {
                    let bad = Manifest {
                        job: "www data/prod/hello".into(),
                        ..manifest()
                    };
                    fs::write(m, serde_json::to_vec(&bad).unwrap()).unwrap()
                }),
                "manifest is invalid: job key \"www data/prod/hello\" has a component outside [A-Za-z0-9_.-]",
            ),
            (
                Box::new(|m| {
                    let bad = Manifest {
                        task_id: "other".into(),
                        ..manifest()
                    };
                    fs::write(m, serde_json::to_vec(&bad).unwrap()).unwrap()
                }),
                "manifest names task \"other\" but sits in sandbox \"www-data-prod-hello-0-6a1f3c2e\"",
            ),
        ];
        for (break_it, problem) in cases {
            let dir = sandbox(&manifest());
            let root = dir.path();
            let manifest_path = root.join(TASK).join(MANIFEST);
            break_it(&manifest_path);
            let err = identify(root, &format!("{TASK}/logs/run-0/setup.stdout")).unwrap_err();
            assert_eq!(err.path, manifest_path);
            assert!(err.problem.starts_with(problem), "{err}");
            assert!(err.to_string().contains("sandbox.json: manifest "), "{err}");
        }
    }

    /// What a task could make of its sandbox if it were not confined: a
    /// symlink for a log, a file or manifest of its own, a manifest others
    /// may write. None of it is shipped.
    #[test]
    fn only_the_node_s_own_files_name_lines() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = sandbox(&manifest());
        let root = dir.path();
        let log = format!("{TASK}/logs/run-1/setup.stdout");
        identify(root, &log).unwrap();

        let link = format!("{TASK}/logs/run-1/hello_world.stderr");
        fs::remove_file(root.join(&link)).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join(&link)).unwrap();
        let err = identify(root, &link).unwrap_err();
        assert!(err.problem.contains("is a symbolic link"), "{err}");

        let manifest_path = root.join(TASK).join(MANIFEST);
        fs::set_permissions(&manifest_path, fs::Permissions::from_mode(0o666)).unwrap();
        let err = identify(root, &log).unwrap_err();
        assert!(
            err.problem.contains("manifest is writable by others"),
            "{err}"
        );
        fs::set_permissions(&manifest_path, fs::Permissions::from_mode(0o644)).unwrap();

        // As root, files of another user are refused (a task's user).
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(root.join(&log), Some(65534), None).unwrap();
            let err = identify(root, &log).unwrap_err();
            assert!(
                err.problem.contains("log file belongs to uid 65534"),
                "{err}"
            );
            std::os::unix::fs::chown(root.join(&log), Some(0), None).unwrap();
            std::os::unix::fs::chown(&manifest_path, Some(65534), None).unwrap();
            let err = identify(root, &log).unwrap_err();
            assert!(
                err.problem.contains("manifest belongs to uid 65534"),
                "{err}"
            );
        }
    }

    #[test]
    fn processes_must_be_in_the_manifest() {
        let dir = sandbox(&manifest());
        let root = dir.path();
        let rel = format!("{TASK}/logs/run-1/sidecar.stdout");
        fs::write(root.join(&rel), "").unwrap();
        let err = identify(root, &rel).unwrap_err();
        assert_eq!(err.path, root.join(&rel));
        assert!(
            err.problem
                .starts_with("process \"sidecar\" is not in manifest ")
                && err
                    .problem
                    .ends_with("sandbox.json (processes: setup, hello_world)"),
            "{err}"
        );
    }

    #[test]
    fn nothing_is_cached() {
        let dir = sandbox(&manifest());
        let root = dir.path();
        let rel = format!("{TASK}/logs/run-1/setup.stdout");
        assert_eq!(identify(root, &rel).unwrap().unwrap().instance, 3);
        let moved = Manifest {
            instance: 4,
            ..manifest()
        };
        fs::write(
            root.join(TASK).join(MANIFEST),
            serde_json::to_vec(&moved).unwrap(),
        )
        .unwrap();
        assert_eq!(identify(root, &rel).unwrap().unwrap().instance, 4);
    }

    #[test]
    fn kind_framing_and_depth() {
        assert_eq!(Native.kind(), LayoutProto::Native);
        assert_eq!(Native.framing(), Framing::Plain);
        // Log files sit in <task_id>/logs/run-<n>, three directories down.
        let dir = sandbox(&manifest());
        let file = dir.path().join(TASK).join("logs/run-0/setup.stdout");
        let depth = file.strip_prefix(dir.path()).unwrap().components().count() - 1;
        assert_eq!(Native.max_depth(), depth);
    }

    #[test]
    fn numbered_rotations_keep_the_identity() {
        let dir = sandbox(&manifest());
        let root = dir.path();
        let rotated = identify(root, &format!("{TASK}/logs/run-1/setup.stdout.1"))
            .unwrap()
            .unwrap();
        let live = identify(root, &format!("{TASK}/logs/run-1/setup.stdout"))
            .unwrap()
            .unwrap();
        assert_eq!(rotated, live);
        for bad in ["setup.stdout.01", "setup.stdout.x", "setup.stdout.1.gz"] {
            assert_eq!(
                identify(root, &format!("{TASK}/logs/run-1/{bad}")).unwrap(),
                None,
                "{bad}"
            );
        }
    }
}

//! The job the pipeline tests run (a generator of lines) and the
//! processes they start and kill (`sluice up`, nodes, the archiver).

use super::*;

// ---------------------------------------------------------------------------
// The job

/// How much each of the 5 instances writes, and how fast.
#[derive(Clone, Copy)]
pub(super) struct Workload {
    pub(super) lines: u32,
    pub(super) batch: u32,
    pub(super) pause_s: f64,
}

/// An absolute path to a Python 3 (the tasks run it without the test's
/// environment, confined to the system's files): the system's
/// `/usr/bin/python3`, else `SLUICE_PYTHON`, else `python3`.
pub(super) fn python() -> String {
    let candidate = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3".to_string()
    } else {
        std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into())
    };
    let out = Command::new(&candidate)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap_or_else(|e| {
            panic!("the pipeline tests need python3 (or SLUICE_PYTHON): {candidate}: {e}")
        });
    assert!(out.status.success(), "{candidate} does not run");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Writes the generator and the job's spec under `tmp`; returns the spec.
pub(super) fn write_job(tmp: &Path, w: Workload) -> String {
    let generator = tmp.join("gen.py");
    std::fs::write(&generator, GENERATOR).unwrap();
    // Task users (the node runs as root) pass through to read it.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o711)).unwrap();
    let spec = tmp.join("gen.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: gen\nrole: e2e\nenv: prod\ninstances: 5\nrestart: never\n\
             resources: {{cpu: 0.1, ram_mb: 64, disk_mb: 1024}}\n\
             processes:\n  - name: main\n    cmd: {} {} {{{{instance}}}} {} {} {}\n",
            python(),
            generator.display(),
            w.lines,
            w.batch,
            w.pause_s
        ),
    )
    .unwrap();
    spec.to_string_lossy().into_owned()
}

pub(super) fn submit(data: &Path, spec: &str) {
    let out = sluice(&["job", "submit", spec, "--data-dir", data.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "job submit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The job's instances, or nothing while the scheduler does not answer.
pub(super) fn instances(data: &Path) -> Vec<Value> {
    let out = sluice(&[
        "job",
        "status",
        JOB,
        "--data-dir",
        data.to_str().unwrap(),
        "--json",
    ]);
    if !out.status.success() {
        return Vec::new();
    }
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|s| s["instances"].as_array().cloned())
        .unwrap_or_default()
}

/// Polls until all 5 instances are in `state`.
pub(super) fn await_instances(
    data: &Path,
    state: &str,
    secs: u64,
    logs: &dyn Fn() -> String,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let i = instances(data);
        if i.len() == 5 && i.iter().all(|i| i["state"] == state) {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "the instances are not all {state} after {secs}s: {i:#?}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Polls `sluice job nodes` until `n` nodes are alive.
pub(super) fn await_nodes(data: &Path, n: usize, logs: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = sluice(&[
            "job",
            "nodes",
            "--data-dir",
            data.to_str().unwrap(),
            "--json",
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        if text.matches(r#""alive":true"#).count() == n {
            return;
        }
        assert!(Instant::now() < deadline, "nodes: {text}\n{}", logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------
// Processes

/// A long-running `sluice ARGS` with its own environment, restartable; each
/// start appends to one log. SIGKILLed when dropped.
pub(super) struct Daemon {
    pub(super) name: String,
    pub(super) args: Vec<String>,
    pub(super) envs: Vec<(String, String)>,
    pub(super) log: PathBuf,
    pub(super) child: Option<Child>,
    pub(super) started: SystemTime,
}

impl Daemon {
    pub(super) fn start(
        dir: &Path,
        name: &str,
        args: &[&str],
        envs: &[(String, String)],
    ) -> Daemon {
        let mut daemon = Daemon {
            name: name.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            envs: envs.to_vec(),
            log: dir.join(format!("{name}.log")),
            child: None,
            started: SystemTime::now(),
        };
        daemon.spawn();
        daemon
    }

    pub(super) fn spawn(&mut self) {
        use std::io::Write as _;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(log, "=== start: sluice {}", self.args.join(" ")).unwrap();
        self.started = SystemTime::now();
        let child = Command::new(SLUICE)
            .args(&self.args)
            .env_remove("SLUICE_DATA_DIR")
            .env_remove("SLUICE_ADDR")
            .env_remove("SLUICE_TOKEN")
            .env_remove("SLUICE_BUS")
            .env_remove("SLUICE_STORE")
            // The tasks may read the generator (`--task-read`).
            .env("SLUICE_TASK_READ", self.log.with_file_name("gen.py"))
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
    }

    /// `kill -9`.
    pub(super) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(super) fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Panics (with the log) if the process exited.
    pub(super) fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("{} exited with {status}:\n{}", self.name, self.log());
        }
    }

    /// Waits for `sluice up` or `sluice scheduler` to have written
    /// `data/client.toml` since it started.
    pub(super) fn await_client_toml(&mut self, data: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let path = data.join("client.toml");
        loop {
            let written = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= self.started);
            if written {
                return;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "{} did not start:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status.
    pub(super) fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} ignored SIGTERM:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The end of the log (every start), for failure messages.
    pub(super) fn log(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let tail = &text[text.len().saturating_sub(12_000)..];
        format!(
            "--- {} ({}):\n{}",
            self.name,
            self.log.display(),
            String::from_utf8_lossy(tail)
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Kills the tasks (executors) of a data directory when dropped: declare it
/// before the daemons, so it runs after them.
pub(super) struct Tasks(pub(super) PathBuf);

impl Drop for Tasks {
    fn drop(&mut self) {
        kill_tasks_under(&self.0);
    }
}

/// The last `n` bytes of `text` (at a character boundary).
pub(super) fn tail(text: &str, n: usize) -> &str {
    let mut at = text.len().saturating_sub(n);
    while !text.is_char_boundary(at) {
        at += 1;
    }
    &text[at..]
}

pub(super) fn logs_of(daemons: &[&Daemon]) -> String {
    daemons
        .iter()
        .map(|d| d.log())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A small deterministic generator for kill timings; the seed is printed
/// and `SLUICE_PIPELINE_SEED` replays it.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn new(what: &str) -> Rng {
        let seed = std::env::var("SLUICE_PIPELINE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{what}: SLUICE_PIPELINE_SEED={seed}");
        Rng(seed | 1)
    }

    pub(super) fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(super) fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

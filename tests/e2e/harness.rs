//! Runs `sluice` processes for the end-to-end tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// `sluice ARGS…` to completion.
pub fn sluice(args: &[&str]) -> Output {
    Command::new(SLUICE)
        .args(args)
        .env_remove("SLUICE_DATA_DIR")
        .env_remove("SLUICE_ADDR")
        .env_remove("SLUICE_TOKEN")
        .env_remove("SLUICE_BUS")
        .stdin(Stdio::null())
        .output()
        .expect("run sluice")
}

/// Runs `sluice ARGS…`, asserting success, and returns its stdout.
pub fn sluice_ok(args: &[&str]) -> String {
    let out = sluice(args);
    assert!(
        out.status.success(),
        "sluice {args:?} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A `sluice up` running in the background; SIGKILLed if dropped.
pub struct Up {
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Up {
    /// Starts `sluice up --data-dir DIR EXTRA…` and waits for its client.toml.
    pub fn start(dir: &Path, extra: &[&str]) -> Up {
        Up::start_with_env(dir, extra, &[])
    }

    /// The process id of `sluice up`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// [`Up::start`] with extra environment variables.
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Up {
        let started = std::time::SystemTime::now();
        let log = std::fs::File::create(dir.with_extension("up.log")).unwrap();
        let child = Command::new(SLUICE)
            .arg("up")
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .envs(env.iter().copied())
            .env_remove("SLUICE_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sluice up");
        let mut up = Up {
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let written = |p: &Path| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= started)
        };
        while !written(&dir.join("client.toml")) {
            if let Some(status) = up.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sluice up exited with {status}: {}", up.log());
            }
            assert!(
                Instant::now() < deadline,
                "sluice up did not start: {}",
                up.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        up
    }

    /// `sluice archive status --json` once the archive holds `rows` log
    /// rows (at most 60 s).
    pub fn wait_for_rows(&self, rows: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status: serde_json::Value = serde_json::from_str(&sluice_ok(&[
                "archive",
                "status",
                "--data-dir",
                self.data_dir(),
                "--json",
            ]))
            .expect("status is JSON");
            if status["logs"]["rows"].as_u64() == Some(rows) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "not archived: {status}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// What `up` printed (its tour and progress line), then its services'
    /// log from `DATA_DIR/logs/sluice.log`.
    pub fn log(&self) -> String {
        let printed =
            std::fs::read_to_string(self.dir.with_extension("up.log")).unwrap_or_default();
        let services =
            std::fs::read_to_string(self.dir.join("logs").join("sluice.log")).unwrap_or_default();
        format!(
            "{printed}\n--- {}/logs/sluice.log:\n{services}",
            self.dir.display()
        )
    }

    /// Only what `up` printed to its terminal.
    pub fn printed(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("up.log")).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// `kill -9` of `sluice up`, leaving its tasks running (as a crash
    /// does); returns the data directory for the next `up`.
    pub fn crash(mut self) -> PathBuf {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let dir = self.dir.clone();
        std::mem::forget(self);
        dir
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(self) -> std::process::ExitStatus {
        self.signal("TERM")
    }

    /// Sends `SIG<name>` and waits for the process to exit.
    pub fn signal(mut self, name: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sluice up ignored SIGTERM: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_tasks_under(&self.dir);
    }
}

/// Writes a job spec `DIR/NAME.yaml`; returns its path.
pub fn write_spec(dir: &Path, name: &str, yaml: &str) -> String {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path.to_string_lossy().into_owned()
}

/// Every record of `topic` on `up`'s bus, one JSON object a line.
pub fn dump(up: &Up, topic: &str) -> String {
    sluice_ok(&[
        "bus",
        "dump",
        "--data-dir",
        up.data_dir(),
        "--topic",
        topic,
        "--from-beginning",
        "--json",
    ])
}

/// The `HOST:PORT` a process's log says its metrics are served on
/// (`metrics on http://ADDR/metrics`).
pub fn metrics_addr(log: &str) -> String {
    log.lines()
        .find_map(|l| l.strip_prefix("metrics on http://"))
        .and_then(|l| l.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"))
        .to_string()
}

/// `GET /metrics` of `addr` (`HOST:PORT`): the whole HTTP response.
pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// Executor processes (one per running task) of the data directory `dir`.
pub fn executors_under(dir: &Path) -> usize {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                return false;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.iter().any(|a| a == "executor") && args.iter().any(|a| a.starts_with(&needle))
        })
        .count()
}

/// Task executors run in sessions of their own and outlive `sluice up` by
/// design; a test kills those of its data directory (and their tasks).
pub fn kill_tasks_under(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut sessions = Vec::new();
    for entry in procs.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let executor =
            args.iter().any(|a| a == "executor") && args.iter().any(|a| a.starts_with(&needle));
        if executor {
            sessions.push(pid);
        }
    }
    for sid in sessions {
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            // Fields after the command: state ppid pgrp session …
            if rest.split_whitespace().nth(3) == Some(&sid.to_string())
                && let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>()
            {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// A process running `sluice ARGS`, SIGKILLed when dropped.
pub struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn start(log: PathBuf, args: &[&str]) -> Proc {
        let child = Command::new(SLUICE)
            .args(args)
            .env_remove("SLUICE_DATA_DIR")
            .env_remove("SLUICE_BUS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc {
            child: Some(child),
            log,
        }
    }

    /// `sluice scheduler` on `bus` with a 2 s agent timeout, its data in
    /// `dir`; returns once it has written `dir/client.toml`.
    pub fn scheduler(log: &Path, dir: &Path, bus: &str) -> Proc {
        let data = dir.to_str().expect("a UTF-8 path");
        let scheduler = Proc::start(
            log.to_path_buf(),
            &[
                "scheduler",
                "--data-dir",
                data,
                "--bus",
                bus,
                "--agent-timeout-ms",
                "2000",
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dir.join("client.toml").exists() {
            assert!(
                Instant::now() < deadline,
                "no scheduler: {}",
                scheduler.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        scheduler
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `command` as printed, after the `export` line, from a directory
/// that is not the data directory's parent.
pub fn shell(export: &str, command: &str, cwd: &Path) -> std::process::Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("{export}\nexec {command}"))
        .current_dir(cwd)
        .env_remove("SLUICE_DATA_DIR")
        .env_remove("SLUICE_ADDR")
        .env_remove("SLUICE_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs a command that ends until it succeeds with output that `done`
/// accepts (the demo's data takes a few seconds to show up).
pub fn until_output(
    export: &str,
    command: &str,
    cwd: &Path,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = shell(export, command, cwd).wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && done(&stdout) {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "`{command}` did not give what the demo promises ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(1000));
    }
}

/// Runs a command that follows (tailll) until it printed a line that
/// `wanted` accepts, then stops it.
pub fn until_line(
    export: &str,
    command: &str,
    cwd: &Path,
    wanted: impl Fn(&str) -> bool,
) -> String {
    let mut child = shell(export, command, cwd);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if wanted(&line) => {
                let _ = child.kill();
                let _ = child.wait();
                return line;
            }
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "`{command}` printed no expected line: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// A TLS channel to `endpoint` (a service of the cluster whose data
/// directory is `dir`), checked against the CA in its client.toml.
pub async fn channel(dir: &Path, endpoint: &str) -> tonic::transport::Channel {
    let file = sluice_client::ClientFile::read(dir)
        .unwrap()
        .expect("the cluster's client.toml");
    sluice_client::endpoint(endpoint, file.ca.as_deref(), &Default::default())
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {endpoint}: {e}"))
}

/// `SLUICE_<NAME>_PYTHON` (set by scripts/test.sh), else `python3`, when
/// it runs `imports`; `None` (with a message) when it does not, unless
/// `SLUICE_REQUIRE_<NAME>=1`, which makes that a failure.
pub fn python_with(name: &str, imports: &str, what: &str) -> Option<String> {
    let python =
        std::env::var(format!("SLUICE_{name}_PYTHON")).unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", imports])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    let require = format!("SLUICE_REQUIRE_{name}");
    assert!(
        std::env::var(&require).as_deref() != Ok("1"),
        "{require}=1 but {python} cannot import {what}"
    );
    eprintln!("skipping: no Python with {what}; scripts/test.sh installs one");
    None
}

//! Test harness shared by Sluice's suites.
//!
//! [`TestKafka`] starts a real Kafka-protocol broker (`tansu`, installed by
//! `scripts/test.sh`) on a free loopback port with its own SQLite storage,
//! restarts it on demand, and stops it when dropped. Where no broker binary
//! is installed the Kafka tests skip with a message, unless
//! `SLUICE_REQUIRE_KAFKA=1` (set by the test script) makes that a failure.

pub mod archive;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tansu broker on loopback.
pub struct TestKafka {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl TestKafka {
    /// Starts a broker, or `None` (after saying why) where none is installed.
    pub fn start() -> Option<TestKafka> {
        let Some(bin) = tansu_binary() else {
            let required = std::env::var("SLUICE_REQUIRE_KAFKA").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "SLUICE_REQUIRE_KAFKA=1 but no tansu binary: set SLUICE_TANSU or run scripts/test.sh"
            );
            eprintln!(
                "skipping: no Kafka-protocol broker (tansu) installed; scripts/test.sh installs one"
            );
            return None;
        };
        let mut kafka = TestKafka {
            bin,
            dir: tempfile::tempdir().expect("temp dir for tansu"),
            port: free_port(),
            child: None,
        };
        kafka.launch();
        Some(kafka)
    }

    /// `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `kafka://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("kafka://{}", self.bootstrap())
    }

    /// Stops the broker abruptly (SIGKILL); its storage stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and starts the broker again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // tansu resolves the database path against its working directory.
        let storage = "sqlite://tansu.db";
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .expect("tansu log file");
        let child = Command::new(&self.bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", storage])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("tansu log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("tansu exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen within 60 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The broker's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for TestKafka {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn tansu_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_TANSU") {
        return Some(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let cached = home.join(".cache/sluice-tools/tansu/bin/tansu");
    if cached.is_file() {
        return Some(cached);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join("tansu"))
        .find(|p| p.is_file())
}

/// A native sandbox `<root>/<task_id>` with its manifest (run 0), as a node
/// agent lays it out; returns its run-0 log directory (created).
pub fn native_sandbox(
    root: &Path,
    task_id: &str,
    job: &str,
    instance: u32,
    processes: &[&str],
) -> PathBuf {
    native_sandbox_with(root, task_id, job, instance, processes, None)
}

/// [`native_sandbox`] whose manifest carries a multi-line rule.
pub fn native_sandbox_with(
    root: &Path,
    task_id: &str,
    job: &str,
    instance: u32,
    processes: &[&str],
    multiline: Option<sluice_schema::multiline::Multiline>,
) -> PathBuf {
    use sluice_schema::sandbox::{self, Manifest};
    let dir = root.join(task_id);
    let logs = dir.join(sandbox::LOGS_DIR).join(sandbox::run_dir(0));
    std::fs::create_dir_all(&logs).expect("create the sandbox");
    let manifest = Manifest {
        version: 1,
        job: job.into(),
        instance,
        task_id: task_id.into(),
        run: 0,
        processes: processes.iter().map(|p| p.to_string()).collect(),
        labels: Default::default(),
        multiline,
    };
    std::fs::write(
        dir.join(sandbox::MANIFEST),
        serde_json::to_vec(&manifest).expect("manifest as JSON"),
    )
    .expect("write the manifest");
    logs
}

/// A moto S3 server on loopback, stopped when dropped.
pub struct TestS3 {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl TestS3 {
    /// Starts moto, or `None` (after saying why) where it is not installed.
    pub fn start() -> Option<TestS3> {
        let Some(command) = moto_command() else {
            let required = std::env::var("SLUICE_REQUIRE_S3").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "SLUICE_REQUIRE_S3=1 but no moto server: pip install 'moto[server]' or set SLUICE_MOTO"
            );
            eprintln!(
                "skipping: no S3-compatible server (moto) installed; pip install 'moto[server]'"
            );
            return None;
        };
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("moto log file");
        let child = Command::new(&command[0])
            .args(&command[1..])
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("moto log"))
            .stderr(log.reopen().expect("moto log"))
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {command:?}: {e}"));
        let mut moto = TestS3 { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto exited with {status}: {}", moto.log());
            }
            assert!(
                Instant::now() < deadline,
                "moto did not listen within 60 s: {}",
                moto.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(moto)
    }

    /// Base URL of the server, `http://127.0.0.1:<port>`, for an S3 endpoint setting.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything moto has written to stdout and stderr so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Creates a bucket with a plain (unsigned) HTTP PUT, which moto takes.
    pub fn create_bucket(&self, bucket: &str) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("send to moto");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("moto's answer");
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "creating bucket {bucket}: {answer}"
        );
    }

    /// object_store S3 settings (as `AWS_*` variables lower-cased) that
    /// reach this server: for `StoreUrl::open` or a `sluice` process's
    /// environment (upper-case them).
    pub fn settings(&self) -> Vec<(String, String)> {
        [
            ("aws_endpoint", self.endpoint()),
            ("aws_allow_http", "true".into()),
            ("aws_virtual_hosted_style_request", "false".into()),
            ("aws_region", "us-east-1".into()),
            ("aws_access_key_id", "sluice-test".into()),
            ("aws_secret_access_key", "sluice-test".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `SLUICE_MOTO`, else `moto_server` on the `PATH`, else `python3 -m
/// moto.server` where that module is importable.
fn moto_command() -> Option<Vec<String>> {
    if let Some(bin) = std::env::var_os("SLUICE_MOTO") {
        return Some(vec![bin.to_string_lossy().into_owned()]);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("moto_server"))
            .find(|p| p.is_file())
    });
    if let Some(bin) = on_path.filter(|bin| runs(bin, &["--help"])) {
        return Some(vec![bin.to_string_lossy().into_owned()]);
    }
    if runs(&PathBuf::from("python3"), &["-c", "import moto.server"]) {
        return Some(vec!["python3".into(), "-m".into(), "moto.server".into()]);
    }
    None
}

fn runs(program: &std::path::Path, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

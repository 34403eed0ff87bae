//! Test harness shared by Sluice's suites.
//!
//! [`TestKafka`] starts a real Kafka-protocol broker (`tansu`, installed by
//! `scripts/test.sh`) on a free loopback port with its own SQLite storage,
//! restarts it on demand, and stops it when dropped. Where no broker binary
//! is installed the Kafka tests skip with a message, unless
//! `SLUICE_REQUIRE_KAFKA=1` (set by the test script) makes that a failure.

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

/// The loghub sample corpus (`../shared/corpus/loghub`), if present.
pub fn corpus_dir() -> Option<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var_os("SLUICE_CORPUS").map(PathBuf::from),
        Some(here.join("../../../shared/corpus/loghub")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_dir())
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
    };
    std::fs::write(
        dir.join(sandbox::MANIFEST),
        serde_json::to_vec(&manifest).expect("manifest as JSON"),
    )
    .expect("write the manifest");
    logs
}

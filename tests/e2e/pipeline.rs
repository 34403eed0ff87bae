//! The whole pipeline on loopback, checked line by line: tasks of a job on
//! three nodes write numbered lines (multi-byte UTF-8, invalid UTF-8, empty
//! lines, 1 MiB lines), the shippers publish them, the archiver writes them
//! to the store, and the archive is compared with the files the tasks wrote,
//! per instance: how many lines, rows and bytes, and a hash of the content
//! in (file, offset) order, and each row against the file's bytes at its
//! offset. Then the same through `kill -9` of `sluice up`, of nodes and of
//! the archiver, through 30 s without the bus (Kafka, tansu) and 30 s
//! without the store (S3, moto behind a proxy that refuses and drops
//! connections, or answers 403).
//!
//! The rule the comparison follows (shipper `files/lines.rs`,
//! `sluice_schema::archive`): a row is one line of a file, or one piece of a
//! line longer than `max_line_bytes` (256 KiB by default), cut at byte
//! boundaries; every piece but the last is `partial`. `offset` is where the
//! row's bytes start in the file and `raw_len` how many bytes of the file it
//! took (its newline included), so a file's rows, ordered by offset, tile it
//! from 0 to its end. `line` is the text with invalid UTF-8 replaced by
//! U+FFFD; `line_bytes` holds the exact bytes when, and only when, that
//! replacement changed something.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, UInt32Type, UInt64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use object_store::ObjectStoreExt as _;
use serde_json::Value;
use sluice_query::catalog::{Catalog, SplitKind};
use sluice_query::store::Store;

use crate::harness::{SLUICE, kill_tasks_under, sluice};

const JOB: &str = "e2e/prod/gen";
/// The shipper's default `max_line_bytes`: longer lines are cut in pieces.
const MAX_LINE_BYTES: usize = 256 << 10;
/// Garbage collection sees the nodes' disks as this large (in MiB) and
/// nearly empty, so it keeps the finished sandboxes the test reads,
/// however full the machine's disk is.
const GC_CAPACITY_MB: &str = "1000000000";

/// The tasks' program: `gen.py INSTANCE LINES BATCH PAUSE` writes LINES
/// lines to stdout, BATCH at a time with PAUSE seconds between batches.
/// The content depends only on the instance and the line number.
const GENERATOR: &str = r#"
import sys, time
inst, n, batch, pause = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
out = sys.stdout.buffer
big = {n // 4, n // 2, (3 * n) // 4}
buf = []
for i in range(n):
    if i in big:
        # Over 1 MiB of 3-byte characters: of the cuts at 256, 512 and
        # 768 KiB, two fall inside a character, whatever the prefix.
        line = (("%d:%d:" % (inst, i)) + "日本" * 180000).encode()[: 1048576 + 1000 + i % 7]
    elif i % 997 == 0:
        line = b"bad \xff\xfe\x80 bytes %d %d \xc3(" % (inst, i)
    elif i % 13 == 0:
        line = ("ünïcödé ✓ 日本語 🚀 %d %d" % (inst, i)).encode()
    elif i % 101 == 0:
        line = b""
    else:
        line = b"instance %d line %d %s" % (inst, i, b"x" * (i % 61))
    buf.append(line)
    if len(buf) >= batch:
        out.write(b"\n".join(buf) + b"\n")
        out.flush()
        buf = []
        if pause:
            time.sleep(pause)
if buf:
    out.write(b"\n".join(buf) + b"\n")
    out.flush()
"#;

// ---------------------------------------------------------------------------
// The job

/// How much each of the 5 instances writes, and how fast.
#[derive(Clone, Copy)]
struct Workload {
    lines: u32,
    batch: u32,
    pause_s: f64,
}

/// An absolute path to a Python 3 (the tasks run it without the test's
/// environment, confined to the system's files): the system's
/// `/usr/bin/python3`, else `SLUICE_PYTHON`, else `python3`.
fn python() -> String {
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
fn write_job(tmp: &Path, w: Workload) -> String {
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

fn submit(data: &Path, spec: &str) {
    let out = sluice(&["job", "submit", spec, "--data-dir", data.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "job submit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The job's instances, or nothing while the scheduler does not answer.
fn instances(data: &Path) -> Vec<Value> {
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
fn await_instances(data: &Path, state: &str, secs: u64, logs: &dyn Fn() -> String) -> Vec<Value> {
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
fn await_nodes(data: &Path, n: usize, logs: &dyn Fn() -> String) {
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
struct Daemon {
    name: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    started: SystemTime,
}

impl Daemon {
    fn start(dir: &Path, name: &str, args: &[&str], envs: &[(String, String)]) -> Daemon {
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

    fn spawn(&mut self) {
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
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Panics (with the log) if the process exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("{} exited with {status}:\n{}", self.name, self.log());
        }
    }

    /// Waits for `sluice up` or `sluice scheduler` to have written
    /// `data/client.toml` since it started.
    fn await_client_toml(&mut self, data: &Path) {
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
    fn stop(&mut self) -> std::process::ExitStatus {
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
    fn log(&self) -> String {
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
struct Tasks(PathBuf);

impl Drop for Tasks {
    fn drop(&mut self) {
        kill_tasks_under(&self.0);
    }
}

/// The last `n` bytes of `text` (at a character boundary).
fn tail(text: &str, n: usize) -> &str {
    let mut at = text.len().saturating_sub(n);
    while !text.is_char_boundary(at) {
        at += 1;
    }
    &text[at..]
}

fn logs_of(daemons: &[&Daemon]) -> String {
    daemons
        .iter()
        .map(|d| d.log())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A small deterministic generator for kill timings; the seed is printed
/// and `SLUICE_PIPELINE_SEED` replays it.
struct Rng(u64);

impl Rng {
    fn new(what: &str) -> Rng {
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

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

// ---------------------------------------------------------------------------
// What the tasks wrote

/// One log file of the job, as on disk.
struct LogFile {
    instance: u32,
    bytes: Vec<u8>,
}

/// Every log file of the job's sandboxes under `data/nodes`, by path.
fn sandbox_files(data: &Path) -> BTreeMap<String, LogFile> {
    let mut files = BTreeMap::new();
    for node in std::fs::read_dir(data.join("nodes"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(sandboxes) = std::fs::read_dir(node.path().join("sandboxes")) else {
            continue;
        };
        for sandbox in sandboxes.flatten() {
            let Ok(manifest) = std::fs::read_to_string(sandbox.path().join("sandbox.json")) else {
                continue;
            };
            let manifest: Value = serde_json::from_str(&manifest).unwrap();
            if manifest["job"] != JOB {
                continue;
            }
            let instance = manifest["instance"].as_u64().unwrap() as u32;
            for run in std::fs::read_dir(sandbox.path().join("logs"))
                .unwrap()
                .flatten()
            {
                for file in std::fs::read_dir(run.path()).unwrap().flatten() {
                    let bytes = std::fs::read(file.path()).unwrap();
                    files.insert(
                        file.path().to_string_lossy().into_owned(),
                        LogFile { instance, bytes },
                    );
                }
            }
        }
    }
    files
}

/// Per instance: what the files hold, or what the archive holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Summary {
    /// Files (sources) with bytes.
    files: usize,
    /// Lines: rows that are not `partial`.
    lines: u64,
    /// Rows: lines, and each piece of a long line.
    rows: u64,
    /// Rows whose bytes are not UTF-8 (`line_bytes` set).
    binary: u64,
    /// Bytes of the files (`raw_len` summed).
    bytes: u64,
    /// Of the content, file after file (by path), in offset order.
    hash: u64,
}

/// The rows the shipper makes of a line of `len` bytes (at least one).
fn pieces(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let n = line.len().div_ceil(MAX_LINE_BYTES).max(1);
    (0..n).map(move |i| &line[i * MAX_LINE_BYTES..((i + 1) * MAX_LINE_BYTES).min(line.len())])
}

/// What the archive must hold, per instance, from the files.
fn expected(files: &BTreeMap<String, LogFile>) -> BTreeMap<u32, Summary> {
    let mut all: BTreeMap<u32, (Summary, std::hash::DefaultHasher)> = BTreeMap::new();
    for file in files.values() {
        let (s, hasher) = all.entry(file.instance).or_default();
        if file.bytes.is_empty() {
            continue;
        }
        s.files += 1;
        s.bytes += file.bytes.len() as u64;
        hasher.write(&file.bytes);
        let body = file.bytes.strip_suffix(b"\n").unwrap_or(&file.bytes);
        for line in body.split(|b| *b == b'\n') {
            s.lines += 1;
            for piece in pieces(line) {
                s.rows += 1;
                s.binary += u64::from(std::str::from_utf8(piece).is_err());
            }
        }
    }
    all.into_iter()
        .map(|(i, (mut s, hasher))| {
            s.hash = hasher.finish();
            (i, s)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// What the archive holds

/// One row of the job's archive, as stored.
#[derive(Clone)]
struct Row {
    source_id: u64,
    offset: u64,
    raw_len: u32,
    partial: bool,
    unterminated: bool,
    truncated: bool,
    /// `line_bytes` was set.
    binary: bool,
    /// The exact bytes: `line_bytes` if set, else `line`.
    text: Vec<u8>,
}

#[derive(Default)]
struct Archived {
    /// Rows by file path, with the instance they name.
    by_path: BTreeMap<String, (u32, Vec<Row>)>,
    /// Breaches of the `line` / `line_bytes` rule.
    rule: Vec<String>,
    splits: usize,
}

/// The live splits' rows (through the catalog, as every reader must).
async fn read_archive(store: &Store) -> Result<Archived, String> {
    let catalog = Catalog::open(store.store.clone(), &store.prefix)
        .await
        .map_err(|e| format!("catalog: {e}"))?;
    let mut archived = Archived::default();
    for split in catalog
        .state()
        .splits()
        .values()
        .filter(|s| s.kind == SplitKind::Logs)
    {
        let path = catalog.object_path(&split.key);
        let bytes = store
            .store
            .get(&path)
            .await
            .map_err(|e| format!("{path}: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| format!("{path}: {e}"))?;
        let mask = ProjectionMask::columns(
            builder.parquet_schema(),
            [
                "job",
                "instance",
                "path",
                "source_id",
                "offset",
                "raw_len",
                "line",
                "line_bytes",
                "partial",
                "truncated",
                "unterminated",
            ],
        );
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(|e| format!("{path}: {e}"))?;
        for batch in reader {
            let batch = batch.map_err(|e| format!("{path}: {e}"))?;
            take_batch(&batch, &mut archived);
        }
        archived.splits += 1;
    }
    Ok(archived)
}

fn utf8_column(batch: &RecordBatch, name: &str) -> datafusion::arrow::array::StringArray {
    let column = batch.column_by_name(name).unwrap();
    let column = datafusion::arrow::compute::cast(column, &DataType::Utf8).unwrap();
    column.as_string::<i32>().clone()
}

fn take_batch(batch: &RecordBatch, archived: &mut Archived) {
    let col = |name: &str| batch.column_by_name(name).unwrap();
    let (job, path, line) = (
        utf8_column(batch, "job"),
        utf8_column(batch, "path"),
        utf8_column(batch, "line"),
    );
    let instance = col("instance").as_primitive::<UInt32Type>();
    let source_id = col("source_id").as_primitive::<UInt64Type>();
    let offset = col("offset").as_primitive::<UInt64Type>();
    let raw_len = col("raw_len").as_primitive::<UInt32Type>();
    let line_bytes = col("line_bytes").as_binary::<i32>();
    let (partial, truncated, unterminated) = (
        col("partial").as_boolean(),
        col("truncated").as_boolean(),
        col("unterminated").as_boolean(),
    );
    for i in 0..batch.num_rows() {
        if job.value(i) != JOB {
            continue;
        }
        let binary = !line_bytes.is_null(i);
        let text = if binary {
            let exact = line_bytes.value(i);
            if std::str::from_utf8(exact).is_ok() && archived.rule.len() < 20 {
                archived.rule.push(format!(
                    "{} offset {}: line_bytes set though the bytes are UTF-8",
                    path.value(i),
                    offset.value(i)
                ));
            }
            if String::from_utf8_lossy(exact) != line.value(i) && archived.rule.len() < 20 {
                archived.rule.push(format!(
                    "{} offset {}: line is not line_bytes with U+FFFD for invalid bytes",
                    path.value(i),
                    offset.value(i)
                ));
            }
            exact.to_vec()
        } else {
            line.value(i).as_bytes().to_vec()
        };
        archived
            .by_path
            .entry(path.value(i).to_string())
            .or_insert_with(|| (instance.value(i), Vec::new()))
            .1
            .push(Row {
                source_id: source_id.value(i),
                offset: offset.value(i),
                raw_len: raw_len.value(i),
                partial: partial.value(i),
                unterminated: unterminated.value(i),
                truncated: truncated.value(i),
                binary,
                text,
            });
    }
}

/// Log rows in the catalog's live splits (cheap: no split is read).
async fn archived_row_count(store: &Store) -> u64 {
    match Catalog::open(store.store.clone(), &store.prefix).await {
        Ok(catalog) => catalog
            .state()
            .splits()
            .values()
            .filter(|s| s.kind == SplitKind::Logs)
            .map(|s| s.rows)
            .sum(),
        Err(_) => 0,
    }
}

// ---------------------------------------------------------------------------
// The comparison

/// The outcome of comparing the archive with the files.
struct Verdict {
    /// Per instance, from the archive (equal to the files' when `problems`
    /// is empty).
    archived: BTreeMap<u32, Summary>,
    expected: BTreeMap<u32, Summary>,
    /// What is wrong, instance by instance; empty when all is well.
    problems: Vec<String>,
    /// Rows archived more than once: never repaired by waiting.
    doubled: u64,
    splits: usize,
}

impl Verdict {
    fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn describe(&self) -> String {
        let mut text = String::new();
        for (i, want) in &self.expected {
            let got = self.archived.get(i).cloned().unwrap_or_default();
            let verdict = if *want == got { "ok" } else { "MISMATCH" };
            text.push_str(&format!(
                "instance {i}: {verdict}\n  files:   {want:?}\n  archive: {got:?}\n"
            ));
        }
        for p in &self.problems {
            text.push_str(&format!("- {p}\n"));
        }
        text
    }
}

fn preview(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned();
    format!("{s:?}{}", if bytes.len() > 60 { "…" } else { "" })
}

/// Compares every file, row by row, with the archive.
fn compare(files: &BTreeMap<String, LogFile>, archived: Archived) -> Verdict {
    let expected = expected(files);
    let mut problems: Vec<String> = archived.rule.clone();
    let mut doubled = 0;
    let mut summaries: BTreeMap<u32, (Summary, std::hash::DefaultHasher)> =
        expected.keys().map(|i| (*i, Default::default())).collect();
    let mut by_path = archived.by_path;
    for (path, file) in files {
        let (instance, mut rows) = by_path.remove(path).unwrap_or((file.instance, Vec::new()));
        let whose = format!("instance {} {path}", file.instance);
        if instance != file.instance {
            problems.push(format!("{whose}: rows say instance {instance}"));
        }
        rows.sort_by_key(|r| r.offset);
        let (summary, hasher) = summaries.entry(file.instance).or_default();
        summary.files += usize::from(!rows.is_empty());
        let sources: BTreeSet<u64> = rows.iter().map(|r| r.source_id).collect();
        if sources.len() > 1 {
            problems.push(format!(
                "{whose}: under {} source ids {sources:?}",
                sources.len()
            ));
        }
        let bytes = &file.bytes;
        let mut at = 0u64;
        let mut twice = Vec::new();
        let mut bad = Vec::new();
        for (k, row) in rows.iter().enumerate() {
            summary.rows += 1;
            summary.lines += u64::from(!row.partial);
            summary.binary += u64::from(row.binary);
            summary.bytes += u64::from(row.raw_len);
            hasher.write(&row.text);
            if !row.partial && !row.unterminated {
                hasher.write(b"\n");
            }
            if k > 0 && rows[k - 1].offset == row.offset {
                doubled += 1;
                twice.push(row.offset);
                continue;
            }
            if row.offset > at {
                let gap = &bytes[at as usize..(row.offset as usize).min(bytes.len())];
                problems.push(format!(
                    "{whose}: {} bytes ({} newlines) missing at offset {at}, from {}",
                    gap.len(),
                    gap.iter().filter(|b| **b == b'\n').count(),
                    preview(gap)
                ));
            } else if row.offset < at {
                bad.push(format!(
                    "offset {} overlaps the row before (ends at {at})",
                    row.offset
                ));
            }
            let start = row.offset as usize;
            let end = start + row.text.len();
            let in_file = bytes.get(start..end);
            let newline = bytes.get(end) == Some(&b'\n');
            let why = if in_file != Some(&row.text[..]) {
                Some(format!(
                    "holds {} but the file has {}",
                    preview(&row.text),
                    preview(bytes.get(start..end.min(bytes.len())).unwrap_or_default())
                ))
            } else if row.truncated {
                Some("is flagged truncated".into())
            } else if row.partial {
                (row.text.len() != MAX_LINE_BYTES || row.raw_len as usize != MAX_LINE_BYTES).then(
                    || {
                        format!(
                            "is a partial piece of {} bytes (raw_len {}), not {MAX_LINE_BYTES}",
                            row.text.len(),
                            row.raw_len
                        )
                    },
                )
            } else if row.unterminated {
                (end != bytes.len() || row.raw_len as usize != row.text.len())
                    .then(|| "is unterminated but not the file's end".to_string())
            } else {
                (!newline
                    || row.raw_len as usize != row.text.len() + 1
                    || row.text.len() > MAX_LINE_BYTES)
                    .then(|| {
                        format!(
                            "({} bytes, raw_len {}) is not a whole line of at most {MAX_LINE_BYTES} bytes",
                            row.text.len(),
                            row.raw_len
                        )
                    })
            };
            if let Some(why) = why {
                bad.push(format!("the row at offset {} {why}", row.offset));
            }
            at = at.max(row.offset + u64::from(row.raw_len));
        }
        if (at as usize) < bytes.len() {
            let rest = &bytes[at as usize..];
            problems.push(format!(
                "{whose}: the last {} bytes ({} newlines) are missing, from offset {at}: {}",
                rest.len(),
                rest.iter().filter(|b| **b == b'\n').count(),
                preview(rest)
            ));
        }
        if !twice.is_empty() {
            problems.push(format!(
                "{whose}: {} rows archived twice (same source and offset), e.g. offsets {:?}",
                twice.len(),
                &twice[..twice.len().min(10)]
            ));
        }
        if !bad.is_empty() {
            problems.push(format!(
                "{whose}: {} rows break the rule, e.g. {:?}",
                bad.len(),
                &bad[..bad.len().min(5)]
            ));
        }
    }
    for (path, (instance, rows)) in by_path {
        problems.push(format!(
            "instance {instance}: {} rows of {path}, which is no file of the job",
            rows.len()
        ));
    }
    let archived_summaries: BTreeMap<u32, Summary> = summaries
        .into_iter()
        .map(|(i, (mut s, hasher))| {
            s.hash = hasher.finish();
            (i, s)
        })
        .collect();
    for (i, want) in &expected {
        if archived_summaries.get(i) != Some(want) && problems.is_empty() {
            problems.push(format!("instance {i}: the summaries differ"));
        }
    }
    Verdict {
        archived: archived_summaries,
        expected,
        problems,
        doubled,
        splits: archived.splits,
    }
}

/// Waits until the archive holds every line of every file of the job
/// exactly once (the tasks must have finished), and returns the verdict;
/// panics naming the instances that differ once `secs` have passed, or at
/// once if a row is archived twice.
fn await_exactly_once(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    data: &Path,
    secs: u64,
    logs: &dyn Fn() -> String,
) -> Verdict {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    loop {
        let files = sandbox_files(data);
        let want_rows: u64 = expected(&files).values().map(|s| s.rows).sum();
        let have_rows = rt.block_on(archived_row_count(store));
        let timed_out = Instant::now() > deadline;
        if have_rows >= want_rows || timed_out {
            let archived = match rt.block_on(read_archive(store)) {
                Ok(archived) => archived,
                Err(e) if !timed_out => {
                    eprintln!("reading the archive: {e}; again");
                    std::thread::sleep(Duration::from_secs(2));
                    continue;
                }
                Err(e) => panic!("reading the archive: {e}"),
            };
            let verdict = compare(&files, archived);
            if verdict.ok() {
                eprintln!(
                    "archive complete after {:.1}s: {want_rows} rows in {} splits",
                    started.elapsed().as_secs_f64(),
                    verdict.splits
                );
                return verdict;
            }
            assert!(
                verdict.doubled == 0 && !timed_out,
                "the archive does not hold each line of the files exactly once \
                 ({have_rows} rows archived, {want_rows} expected):\n{}\n{}",
                verdict.describe(),
                logs()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The same counts through `sluice query` (DataFusion over the catalog), the
/// way users ask: rows, lines, bytes, rows with `line_bytes`, and distinct
/// `(source_id, offset)` pairs per instance.
fn assert_query_agrees(
    location: &[&str],
    envs: &[(String, String)],
    want: &BTreeMap<u32, Summary>,
) {
    let run = |sql: String| -> Vec<Value> {
        let out = Command::new(SLUICE)
            .arg("query")
            .arg(&sql)
            .args(location)
            .args(["--format", "json"])
            .env_remove("SLUICE_DATA_DIR")
            .env_remove("SLUICE_ADDR")
            .env_remove("SLUICE_TOKEN")
            .env_remove("SLUICE_STORE")
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sluice query {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let totals = run(format!(
        "SELECT instance, count(*) AS n_rows, sum(CASE WHEN partial THEN 0 ELSE 1 END) AS n_lines, \
         sum(raw_len) AS n_bytes, count(line_bytes) AS n_binary \
         FROM logs WHERE job = '{JOB}' GROUP BY instance ORDER BY instance"
    ));
    let pairs = run(format!(
        "SELECT instance, count(*) AS n_pairs FROM \
         (SELECT DISTINCT instance, source_id, \"offset\" FROM logs WHERE job = '{JOB}') \
         GROUP BY instance ORDER BY instance"
    ));
    let got: BTreeMap<u64, [u64; 5]> = totals
        .iter()
        .zip(&pairs)
        .map(|(t, p)| {
            assert_eq!(t["instance"], p["instance"]);
            let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
            (
                n(t, "instance"),
                [
                    n(t, "n_rows"),
                    n(t, "n_lines"),
                    n(t, "n_bytes"),
                    n(t, "n_binary"),
                    n(p, "n_pairs"),
                ],
            )
        })
        .collect();
    let wanted: BTreeMap<u64, [u64; 5]> = want
        .iter()
        .map(|(i, s)| (u64::from(*i), [s.rows, s.lines, s.bytes, s.binary, s.rows]))
        .collect();
    assert_eq!(
        got, wanted,
        "sluice query: per instance [rows, lines, bytes, binary rows, distinct (source_id, offset)]"
    );
}

/// Checks that the files are what the generator writes: 5 instances, each
/// `lines` lines (with long lines cut and invalid UTF-8 among them).
fn assert_generated(verdict: &Verdict, lines: u32) {
    assert_eq!(
        verdict.expected.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3, 4],
        "5 instances wrote logs"
    );
    for (i, s) in &verdict.expected {
        assert_eq!(
            s.lines,
            u64::from(lines),
            "instance {i} wrote {lines} lines"
        );
        // 3 lines of just over 1 MiB: 5 pieces each.
        assert_eq!(
            s.rows,
            s.lines + 3 * 4,
            "instance {i}: the long lines' pieces"
        );
        // Every 997th line has invalid bytes, and at least two pieces of
        // each long line start or end inside a character.
        let invalid_lines = u64::from((lines - 1) / 997 + 1);
        assert!(
            s.binary >= invalid_lines + 3 * 2,
            "instance {i}: invalid UTF-8 lines and pieces cut inside a character: {s:?}"
        );
    }
}

fn file_store(data: &Path) -> (String, Store) {
    let url = format!("file://{}", data.join("archive").display());
    let store = url
        .parse::<sluice_query::store::StoreUrl>()
        .unwrap()
        .open(&[])
        .unwrap();
    (url, store)
}

// ---------------------------------------------------------------------------
// The tests

/// `sluice up --nodes 3`, a job of 5 instances writing 1,000,000 lines in
/// all: the archive holds each line of each file once, byte for byte.
#[test]
fn a_job_s_lines_reach_the_archive_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    std::fs::create_dir(&data).unwrap();
    let _tasks = Tasks(data.clone());
    let mut up = Daemon::start(
        tmp.path(),
        "up",
        &[
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "--nodes",
            "3",
            "--gc-capacity-mb",
            GC_CAPACITY_MB,
        ],
        &[],
    );
    up.await_client_toml(&data);
    let spec = write_job(
        tmp.path(),
        Workload {
            lines: 200_000,
            batch: 5000,
            pause_s: 0.0,
        },
    );
    submit(&data, &spec);
    let finished = await_instances(&data, "finished", 180, &|| up.log());
    let hosts: BTreeSet<&str> = finished
        .iter()
        .map(|i| i["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts.len(), 3, "spread over the 3 nodes: {finished:#?}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_, store) = file_store(&data);
    let verdict = await_exactly_once(&rt, &store, &data, 180, &|| up.log());
    assert_generated(&verdict, 200_000);
    assert_eq!(
        verdict.expected.values().map(|s| s.lines).sum::<u64>(),
        1_000_000
    );
    assert_query_agrees(
        &["--data-dir", data.to_str().unwrap()],
        &[],
        &verdict.expected,
    );
    up.assert_running();
    assert!(up.stop().success(), "{}", up.log());
}

/// `kill -9` at random moments, at least 20 times: of a whole `sluice up`
/// (embedded bus) in a loop, and on Kafka of `sluice node` processes
/// (shipper and agent; their tasks live on under their executors and are
/// adopted) and of `sluice archiver`. Each archive holds every line once.
#[test]
fn kill_9_of_up_archiver_and_nodes_loses_and_doubles_nothing() {
    let mut rng = Rng::new("kill -9 test");
    let kafka = sluice_testkit::TestKafka::start();
    let mut kills = 0;
    // Without a Kafka broker (and not required), all the kills go to `up`.
    kills += kill_9_loop_of_up(&mut rng, if kafka.is_some() { 8 } else { 20 });
    if let Some(kafka) = kafka {
        kills += kill_9_of_nodes_and_archiver_on_kafka(&mut rng, &kafka, 12);
    }
    eprintln!("kill -9: {kills} in all");
    assert!(kills >= 20, "only {kills} kills");
}

/// `sluice up --nodes 3` on the embedded bus, killed `n` times while its
/// tasks write; returns the number of kills.
fn kill_9_loop_of_up(rng: &mut Rng, n: u32) -> u32 {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    std::fs::create_dir(&data).unwrap();
    let _tasks = Tasks(data.clone());
    let d = data.to_str().unwrap();
    let mut up = Daemon::start(
        tmp.path(),
        "up",
        &[
            "up",
            "--data-dir",
            d,
            "--nodes",
            "3",
            "--gc-capacity-mb",
            GC_CAPACITY_MB,
        ],
        &[],
    );
    up.await_client_toml(&data);
    let spec = write_job(
        tmp.path(),
        Workload {
            lines: 60_000,
            batch: 1000,
            pause_s: 0.5,
        },
    );
    submit(&data, &spec);
    await_instances(&data, "running", 60, &|| up.log());
    let mut kills = 0;
    for _ in 0..n {
        // Now and then during start-up, else once it serves.
        if rng.below(4) == 0 {
            std::thread::sleep(rng.millis(100, 1500));
        } else {
            up.await_client_toml(&data);
            std::thread::sleep(rng.millis(500, 3000));
        }
        up.kill9();
        kills += 1;
        std::thread::sleep(rng.millis(0, 500));
        up.restart();
    }
    up.await_client_toml(&data);
    eprintln!("kill -9 of sluice up: {kills} times");
    await_instances(&data, "finished", 120, &|| up.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_, store) = file_store(&data);
    let verdict = await_exactly_once(&rt, &store, &data, 120, &|| up.log());
    assert_generated(&verdict, 60_000);
    assert_query_agrees(&["--data-dir", d], &[], &verdict.expected);
    kills
}

/// `sluice scheduler`, three `sluice node` and a `sluice archiver` on Kafka;
/// `n` kills while the tasks write: one of the archiver, the rest of random
/// nodes (each restarted at once; its tasks are adopted).
fn kill_9_of_nodes_and_archiver_on_kafka(
    rng: &mut Rng,
    kafka: &sluice_testkit::TestKafka,
    n: u32,
) -> u32 {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    std::fs::create_dir(&data).unwrap();
    let _tasks = Tasks(data.clone());
    let d = data.to_str().unwrap();
    let bus = kafka.url();
    let (store_url, store) = file_store(&data);
    // A long agent timeout: a node killed and restarted keeps its tasks
    // rather than have them placed again.
    let mut scheduler = Daemon::start(
        tmp.path(),
        "scheduler",
        &[
            "scheduler",
            "--data-dir",
            d,
            "--bus",
            &bus,
            "--agent-timeout-ms",
            "120000",
        ],
        &[],
    );
    scheduler.await_client_toml(&data);
    let mut nodes: Vec<Daemon> = (0..3)
        .map(|i| {
            let name = format!("node-{i}");
            Daemon::start(
                tmp.path(),
                &name,
                &[
                    "node",
                    "--data-dir",
                    d,
                    "--bus",
                    &bus,
                    "--name",
                    &name,
                    "--gc-capacity-mb",
                    GC_CAPACITY_MB,
                ],
                &[],
            )
        })
        .collect();
    let mut archiver = Daemon::start(
        tmp.path(),
        "archiver",
        &[
            "archiver",
            "--data-dir",
            d,
            "--bus",
            &bus,
            "--store",
            &store_url,
            "--cut-ms",
            "1000",
        ],
        &[],
    );
    let logs = |nodes: &[Daemon], archiver: &Daemon, scheduler: &Daemon| {
        let mut all: Vec<&Daemon> = nodes.iter().collect();
        all.push(archiver);
        all.push(scheduler);
        format!(
            "{}\n--- tansu:\n{}",
            logs_of(&all),
            tail(&kafka.log(), 8000)
        )
    };
    await_nodes(&data, 3, &|| logs(&nodes, &archiver, &scheduler));
    let spec = write_job(
        tmp.path(),
        Workload {
            lines: 60_000,
            batch: 1000,
            pause_s: 0.5,
        },
    );
    submit(&data, &spec);
    await_instances(&data, "running", 60, &|| {
        logs(&nodes, &archiver, &scheduler)
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let version = || {
        rt.block_on(Catalog::open(store.store.clone(), &store.prefix))
            .map_or(0, |c| c.version())
    };
    // The archiver is killed once, when it works (it has committed), and
    // stays down longer than the consumer session timeout (librdkafka's
    // 45 s): tansu expires a dead member only when another member's request
    // arrives after its session ran out, and a successor that joined sooner
    // was seen to get no partitions for minutes.
    let session = Duration::from_secs(47);
    let mut archiver_down: Option<Instant> = None;
    let mut archiver_kills = 0;
    let mut kills = 0;
    for _ in 0..n {
        std::thread::sleep(rng.millis(500, 2500));
        if archiver_down.is_some_and(|t| t.elapsed() >= session) {
            archiver.restart();
            archiver_down = None;
        }
        if archiver_kills == 0 && version() > 0 {
            archiver.kill9();
            archiver_down = Some(Instant::now());
            archiver_kills += 1;
            kills += 1;
            eprintln!("kill -9 of the archiver");
            continue;
        }
        let node = &mut nodes[rng.below(3) as usize];
        node.kill9();
        kills += 1;
        eprintln!("kill -9 of {}", node.name);
        std::thread::sleep(rng.millis(100, 1500));
        node.restart();
    }
    if let Some(t) = archiver_down {
        std::thread::sleep(session.saturating_sub(t.elapsed()));
        archiver.restart();
    }
    assert!(
        archiver_kills > 0,
        "the archiver never committed, so was never killed"
    );
    eprintln!(
        "kill -9 of nodes and archiver on Kafka: {kills} times ({archiver_kills} of the archiver)"
    );
    await_instances(&data, "finished", 120, &|| {
        logs(&nodes, &archiver, &scheduler)
    });
    let verdict = await_exactly_once(&rt, &store, &data, 180, &|| {
        logs(&nodes, &archiver, &scheduler)
    });
    assert_generated(&verdict, 60_000);
    assert_query_agrees(&["--store", &store_url], &[], &verdict.expected);
    for daemon in nodes.iter_mut().chain([&mut archiver, &mut scheduler]) {
        daemon.assert_running();
    }
    kills
}

/// Kafka (tansu, SQLite storage) stopped for 30 s while the tasks write and
/// the archiver runs, then started again on the same file and port: every
/// line arrives, once.
///
/// The producers' delivery timeout (`message.timeout.ms`, 30 s by default
/// in Sluice) is raised above the outage: when records time out, librdkafka
/// bumps the idempotent producer's epoch, and tansu 0.6 answers the next
/// produce with a panic of its storage task (`lite.rs:503`, "more or less
/// than one row") after which it fails every request. Real Kafka handles
/// the bump; so the shipper's re-reading after a delivery timeout is not
/// exercised here.
#[test]
fn the_bus_down_for_30_s() {
    let Some(mut kafka) = sluice_testkit::TestKafka::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    std::fs::create_dir(&data).unwrap();
    let _tasks = Tasks(data.clone());
    let d = data.to_str().unwrap();
    let mut up = Daemon::start(
        tmp.path(),
        "up",
        &[
            "up",
            "--data-dir",
            d,
            "--nodes",
            "3",
            "--bus",
            &kafka.url(),
            "--kafka-property",
            "message.timeout.ms=120000",
            "--gc-capacity-mb",
            GC_CAPACITY_MB,
        ],
        &[],
    );
    up.await_client_toml(&data);
    let spec = write_job(
        tmp.path(),
        Workload {
            lines: 60_000,
            batch: 1000,
            pause_s: 0.75,
        },
    );
    submit(&data, &spec);
    await_instances(&data, "running", 60, &|| up.log());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_, store) = file_store(&data);
    // The pipeline works before the outage.
    let deadline = Instant::now() + Duration::from_secs(60);
    while rt.block_on(archived_row_count(&store)) == 0 {
        assert!(Instant::now() < deadline, "nothing archived:\n{}", up.log());
        std::thread::sleep(Duration::from_millis(500));
    }

    let written = |files: &BTreeMap<String, LogFile>| -> u64 {
        files.values().map(|f| f.bytes.len() as u64).sum()
    };
    let before = written(&sandbox_files(&data));
    kafka.kill();
    eprintln!("tansu stopped");
    std::thread::sleep(Duration::from_secs(30));
    up.assert_running();
    let during = written(&sandbox_files(&data));
    kafka.restart();
    eprintln!("tansu started again");
    assert!(
        during > before,
        "the tasks wrote while the bus was down ({before} → {during} bytes)"
    );
    await_instances(&data, "finished", 120, &|| up.log());
    let logs = || format!("{}\n--- tansu:\n{}", up.log(), tail(&kafka.log(), 8000));
    let verdict = await_exactly_once(&rt, &store, &data, 180, &logs);
    assert_generated(&verdict, 60_000);
    assert_query_agrees(&["--data-dir", d], &[], &verdict.expected);
    up.assert_running();
}

/// `sluice up --nodes 3` archiving to S3 (moto) through a [`Proxy`], with
/// the job submitted and its first lines archived. Fields drop in order:
/// `up` first, the tasks, then the proxy and moto.
struct S3Cluster {
    up: Daemon,
    _tasks: Tasks,
    proxy: Proxy,
    s3: sluice_testkit::TestS3,
    /// The archive read directly from moto, not through the proxy.
    store: Store,
    rt: tokio::runtime::Runtime,
    data: PathBuf,
    _tmp: tempfile::TempDir,
}

const S3_STORE: &str = "s3://archive/sluice";

impl S3Cluster {
    fn start(w: Workload) -> Option<S3Cluster> {
        let s3 = sluice_testkit::TestS3::start()?;
        s3.create_bucket("archive");
        let proxy = Proxy::start(s3.endpoint().trim_start_matches("http://"));
        let envs: Vec<(String, String)> = s3
            .settings()
            .into_iter()
            .map(|(k, v)| {
                let v = if k == "aws_endpoint" {
                    format!("http://127.0.0.1:{}", proxy.port)
                } else {
                    v
                };
                (k.to_ascii_uppercase(), v)
            })
            .collect();
        let store = S3_STORE
            .parse::<sluice_query::store::StoreUrl>()
            .unwrap()
            .open(&s3.settings())
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("d");
        std::fs::create_dir(&data).unwrap();
        let tasks = Tasks(data.clone());
        let mut up = Daemon::start(
            tmp.path(),
            "up",
            &[
                "up",
                "--data-dir",
                data.to_str().unwrap(),
                "--nodes",
                "3",
                "--store",
                S3_STORE,
                "--gc-capacity-mb",
                GC_CAPACITY_MB,
            ],
            &envs,
        );
        up.await_client_toml(&data);
        submit(&data, &write_job(tmp.path(), w));
        await_instances(&data, "running", 60, &|| up.log());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while rt.block_on(archived_row_count(&store)) == 0 {
            assert!(Instant::now() < deadline, "nothing archived:\n{}", up.log());
            std::thread::sleep(Duration::from_millis(500));
        }
        Some(S3Cluster {
            up,
            _tasks: tasks,
            proxy,
            s3,
            store,
            rt,
            data,
            _tmp: tmp,
        })
    }

    fn catalog_version(&self) -> u64 {
        self.rt
            .block_on(Catalog::open(self.store.store.clone(), &self.store.prefix))
            .unwrap()
            .version()
    }

    /// Once the tasks have finished: every line in the archive once, also
    /// as `sluice query` (reading moto directly) counts them.
    fn assert_exactly_once(&mut self, w: Workload, secs: u64) {
        await_instances(&self.data, "finished", 120, &|| self.up.log());
        let verdict =
            await_exactly_once(&self.rt, &self.store, &self.data, secs, &|| self.up.log());
        assert_generated(&verdict, w.lines);
        let direct: Vec<(String, String)> = self
            .s3
            .settings()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect();
        assert_query_agrees(&["--store", S3_STORE], &direct, &verdict.expected);
        self.up.assert_running();
    }
}

/// The archive on S3 (moto) behind a proxy that, for 30 s while the tasks
/// write, first refuses connections (15 s) and then accepts and drops them
/// (15 s), having cut the open ones: the archiver retries, and every line
/// arrives once.
#[test]
fn the_store_down_for_30_s() {
    let w = Workload {
        lines: 60_000,
        batch: 1000,
        pause_s: 0.75,
    };
    let Some(mut c) = S3Cluster::start(w) else {
        return;
    };
    c.proxy.set(Mode::Refuse);
    eprintln!("store: refusing connections");
    // A request already past the proxy may still land: let it.
    std::thread::sleep(Duration::from_secs(1));
    let paused_at = c.catalog_version();
    std::thread::sleep(Duration::from_secs(14));
    c.proxy.set(Mode::Drop);
    eprintln!("store: dropping connections");
    std::thread::sleep(Duration::from_secs(15));
    c.up.assert_running();
    assert_eq!(
        c.catalog_version(),
        paused_at,
        "no catalog commit reached the store while it was unreachable"
    );
    let dropped = c.proxy.dropped.load(Ordering::Relaxed);
    c.proxy.set(Mode::Forward);
    eprintln!("store: back ({dropped} connections dropped)");
    assert!(
        dropped > 0,
        "the archiver tried the store while it was down"
    );
    c.assert_exactly_once(w, 240);
}

/// The store answering every request `403 AccessDenied` for 30 s (as S3
/// does while credentials are rotated or a policy propagates) while the
/// tasks write: the archiver keeps running and retries, and once the store
/// accepts again every line arrives, once.
///
/// The archiver gives up on an upload after 8 attempts (about 13 s of
/// backoff) and goes on; it used to go on polling with the batch it held
/// dropped, so the next commit moved the bus positions past lines that were
/// never archived (8,000 lines of each instance here). It now reads again
/// from its last commit first (`Archiver::run`, query/src/archiver.rs).
#[test]
fn the_store_answering_403_for_30_s() {
    let w = Workload {
        lines: 50_000,
        batch: 1000,
        pause_s: 0.75,
    };
    let Some(mut c) = S3Cluster::start(w) else {
        return;
    };
    c.proxy.set(Mode::Forbid);
    eprintln!("store: 403 to every request");
    std::thread::sleep(Duration::from_secs(30));
    c.up.assert_running();
    let forbidden = c.proxy.forbidden.load(Ordering::Relaxed);
    c.proxy.set(Mode::Forward);
    eprintln!("store: back ({forbidden} requests refused with 403)");
    assert!(forbidden > 0, "the archiver tried the store meanwhile");
    c.assert_exactly_once(w, 120);
}

/// The checker itself: rows made from a file by the rule compare equal to
/// it, and a lost row, a row archived twice, a changed byte or an uncut
/// long line are each reported, naming the instance.
#[test]
fn the_comparison_finds_lost_doubled_and_changed_lines() {
    let mut bytes = Vec::new();
    for line in [
        "plain".as_bytes(),
        "ünïcödé ✓".as_bytes(),
        b"bad \xff\xfe",
        b"",
        "日".repeat(200_000).as_bytes(),
        b"last",
    ] {
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
    }
    let path = "/sandboxes/t/logs/run-0/main.stdout".to_string();
    let files = BTreeMap::from([(path.clone(), LogFile { instance: 2, bytes })]);
    let by_the_rule = || {
        let file = &files[&path];
        let mut rows = Vec::new();
        let mut offset = 0u64;
        for line in file.bytes[..file.bytes.len() - 1].split(|b| *b == b'\n') {
            let n = line.len().div_ceil(MAX_LINE_BYTES).max(1);
            for (i, piece) in pieces(line).enumerate() {
                let last = i + 1 == n;
                let raw_len = piece.len() as u32 + u32::from(last);
                rows.push(Row {
                    source_id: 7,
                    offset,
                    raw_len,
                    partial: !last,
                    unterminated: false,
                    truncated: false,
                    binary: std::str::from_utf8(piece).is_err(),
                    text: piece.to_vec(),
                });
                offset += u64::from(raw_len);
            }
        }
        rows
    };
    let check = |rows: Vec<Row>| {
        let archived = Archived {
            by_path: BTreeMap::from([(path.clone(), (2, rows))]),
            ..Archived::default()
        };
        compare(&files, archived)
    };
    let good = check(by_the_rule());
    assert!(good.ok(), "{}", good.describe());
    assert_eq!(good.archived, good.expected);
    assert_eq!(good.expected[&2].rows, 6 + 2, "the long line is 3 pieces");
    // 600,000 bytes of 3-byte characters: each piece starts or ends
    // inside one.
    assert_eq!(good.expected[&2].binary, 1 + 3, "cuts inside characters");

    let mut lost = by_the_rule();
    lost.remove(1);
    let v = check(lost);
    assert!(!v.ok() && v.doubled == 0);
    assert!(
        v.describe().contains("instance 2: MISMATCH"),
        "{}",
        v.describe()
    );
    assert!(
        v.describe().contains("missing at offset 6"),
        "{}",
        v.describe()
    );

    let mut doubled = by_the_rule();
    doubled.push(doubled[3].clone());
    let v = check(doubled);
    assert_eq!(v.doubled, 1);
    assert!(
        v.describe().contains("1 rows archived twice"),
        "{}",
        v.describe()
    );

    let mut changed = by_the_rule();
    changed[2].text[1] = b'A';
    let v = check(changed);
    assert!(
        !v.ok() && v.describe().contains("break the rule"),
        "{}",
        v.describe()
    );

    let mut uncut = by_the_rule();
    let whole: Vec<Row> = uncut.drain(4..7).collect();
    uncut.insert(
        4,
        Row {
            partial: false,
            raw_len: whole.iter().map(|r| r.raw_len).sum(),
            text: whole.iter().flat_map(|r| r.text.clone()).collect(),
            ..whole[0].clone()
        },
    );
    let v = check(uncut);
    assert!(
        v.describe().contains("not a whole line of at most"),
        "{}",
        v.describe()
    );
}

// ---------------------------------------------------------------------------
// A TCP proxy that can refuse or drop connections

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Passes bytes both ways.
    Forward = 0,
    /// Not listening: connections are refused.
    Refuse = 1,
    /// Accepts connections and closes them at once.
    Drop = 2,
    /// Answers every request `403 Forbidden` (as S3 does to expired
    /// credentials), keeping the connection.
    Forbid = 3,
}

struct ProxyShared {
    mode: AtomicU8,
    stop: AtomicBool,
    /// Open connections (both ends), cut when the proxy stops forwarding.
    open: Mutex<Vec<TcpStream>>,
}

/// Forwards `127.0.0.1:port` to an upstream address, unless told not to.
struct Proxy {
    port: u16,
    shared: Arc<ProxyShared>,
    dropped: Arc<AtomicU64>,
    /// Requests answered 403.
    forbidden: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(ProxyShared {
            mode: AtomicU8::new(Mode::Forward as u8),
            stop: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let dropped = Arc::new(AtomicU64::new(0));
        let forbidden = Arc::new(AtomicU64::new(0));
        let (s, dropped2, upstream) = (shared.clone(), dropped.clone(), upstream.to_string());
        let forbidden2 = forbidden.clone();
        let thread = std::thread::spawn(move || {
            let mut listener = Some(listener);
            while !s.stop.load(Ordering::Relaxed) {
                let mode = s.mode.load(Ordering::SeqCst);
                if mode == Mode::Refuse as u8 {
                    listener = None;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let l = listener.get_or_insert_with(|| {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        match TcpListener::bind(("127.0.0.1", port)) {
                            Ok(l) => break l,
                            Err(e) if Instant::now() > deadline => {
                                panic!("proxy: bind port {port} again: {e}")
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(50)),
                        }
                    }
                });
                l.set_nonblocking(true).unwrap();
                match l.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if mode == Mode::Drop as u8 {
                            dropped2.fetch_add(1, Ordering::Relaxed);
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        }
                        if mode == Mode::Forbid as u8 {
                            let (s, forbidden) = (s.clone(), forbidden2.clone());
                            std::thread::spawn(move || forbid(client, &s, &forbidden));
                            continue;
                        }
                        let Ok(server) = TcpStream::connect(&upstream) else {
                            continue;
                        };
                        {
                            let mut open = s.open.lock().unwrap();
                            open.retain(|c| c.peer_addr().is_ok());
                            if s.mode.load(Ordering::SeqCst) != Mode::Forward as u8 {
                                let _ = client.shutdown(Shutdown::Both);
                                let _ = server.shutdown(Shutdown::Both);
                                continue;
                            }
                            open.push(client.try_clone().unwrap());
                            open.push(server.try_clone().unwrap());
                        }
                        pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                        pump(server, client);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            port,
            shared,
            dropped,
            forbidden,
            thread: Some(thread),
        }
    }

    /// Switches modes, cutting the connections of the mode before.
    fn set(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
        for c in self.shared.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// Reads requests (headers and a `Content-Length` body) and answers each
/// `403 Forbidden`, until the proxy leaves [`Mode::Forbid`] (which cuts
/// the connection) or the client closes it.
fn forbid(client: TcpStream, shared: &ProxyShared, forbidden: &AtomicU64) {
    {
        let mut open = shared.open.lock().unwrap();
        if shared.mode.load(Ordering::SeqCst) != Mode::Forbid as u8 {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        open.push(client.try_clone().unwrap());
    }
    let _ = answer_403(&client, forbidden);
    let _ = client.shutdown(Shutdown::Both);
}

fn answer_403(client: &TcpStream, forbidden: &AtomicU64) -> std::io::Result<()> {
    use std::io::{BufRead as _, Read as _, Write as _};
    let mut reader = std::io::BufReader::new(client.try_clone()?);
    let mut writer = client.try_clone()?;
    loop {
        let mut length = 0u64;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink())?;
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                    <Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        write!(
            writer,
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        forbidden.fetch_add(1, Ordering::Relaxed);
    }
}

/// Copies `from` to `to` on a thread until either end closes.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(Mode::Refuse);
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

//! The shipper soak: 48 sandboxes of three layouts (native, Kubernetes CRI,
//! Docker json-file) written to with rename rotation, copytruncate and
//! truncation, while `sluice shipper` processes (one per layout) are killed
//! with SIGKILL every couple of seconds and restarted. At the end the bus (a
//! real Kafka-protocol broker) holds every line written, exactly once after
//! de-duplication by `(source_id, offset)`, with the right identity: checked
//! line by line.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message as _;
use sluice_broker::{BusConfig, Consumer};
use sluice_schema::pb::{LogChunk, Stream};
use sluice_schema::topics;
use sluice_testkit::TestKafka;

use crate::harness::SLUICE;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Who {
    job: String,
    instance: u32,
    process: String,
    stream: Stream,
}

/// One log file the soak writes to.
struct LogFile {
    path: PathBuf,
    layout: usize,
    who: Who,
    /// Next line number written to this file.
    seq: usize,
    rotations: usize,
    /// Texts written since the last truncation, for "shipped yet?".
    current: Vec<String>,
    /// Waiting for its lines to arrive, to be truncated: no writes meanwhile.
    to_truncate: bool,
}

struct ShipperProc {
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl ShipperProc {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(SLUICE)
                .args(&self.args)
                .env(
                    "SLUICE_LOG",
                    std::env::var("SOAK_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for ShipperProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TS: &str = "2026-11-21T08:00:00.123456789Z";

fn frame(layout: usize, text: &str) -> String {
    match layout {
        0 => format!("{text}\n"),
        1 => format!("{TS} stdout F {text}\n"),
        _ => format!("{{\"log\":\"{text}\\n\",\"stream\":\"stdout\",\"time\":\"{TS}\"}}\n"),
    }
}

fn truncate(path: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// Lines on the bus so far, de-duplicated by (source_id, offset).
struct Received {
    consumer: Box<dyn Consumer>,
    by_name: HashMap<(u64, u64), (String, Who)>,
    /// Where each (source_id, offset) came from, for failure messages.
    paths: HashMap<(u64, u64), String>,
    texts: HashMap<String, usize>,
}

impl Received {
    async fn pump(&mut self) {
        loop {
            let batch = self
                .consumer
                .poll(5000, Duration::from_millis(50))
                .await
                .unwrap();
            if batch.is_empty() {
                return;
            }
            for m in batch {
                let chunk = LogChunk::decode(m.payload).unwrap();
                let s = chunk.source.unwrap();
                for line in chunk.lines {
                    let text = String::from_utf8(line.text.to_vec()).unwrap();
                    let who = Who {
                        job: s.job.clone(),
                        instance: s.instance,
                        process: s.process.clone(),
                        stream: Stream::try_from(s.stream).unwrap(),
                    };
                    if let Some((old, _)) = self.by_name.get(&(s.source_id, line.offset)) {
                        assert_eq!(
                            old,
                            &text,
                            "one (source_id {:016x}, offset {}), two texts: first from {}, then from {}",
                            s.source_id,
                            line.offset,
                            self.paths[&(s.source_id, line.offset)],
                            s.path
                        );
                        continue;
                    }
                    self.paths
                        .insert((s.source_id, line.offset), s.path.clone());
                    *self.texts.entry(text.clone()).or_default() += 1;
                    self.by_name.insert((s.source_id, line.offset), (text, who));
                }
            }
        }
    }
}

// Inspect a run: SOAK_KEEP=1 SOAK_LOG=sluice_shipper=debug cargo nextest run
// --test e2e soak --no-capture (keeps the files and shipper logs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipper_soak_with_rotation_truncation_and_kill_9() {
    let Some(kafka) = TestKafka::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // SOAK_KEEP keeps the directory (files, shipper logs) for inspection.
    let (base, _cleanup) = if std::env::var_os("SOAK_KEEP").is_some() {
        let kept = dir.keep();
        eprintln!("soak dir: {}", kept.display());
        (kept, None)
    } else {
        (dir.path().to_path_buf(), Some(dir))
    };
    let tmp = base.as_path();
    let roots: Vec<PathBuf> = ["native", "pods", "docker"]
        .iter()
        .map(|r| tmp.join(r))
        .collect();
    for r in &roots {
        std::fs::create_dir_all(r).unwrap();
    }
    let mut rng = Rng(0x5eed_1234_5678_9abc);
    let mut files: Vec<LogFile> = Vec::new();
    // native: 20 sandboxes, stdout and stderr.
    for i in 0..20u32 {
        let task = format!("soak-prod-svc{i}-0-{i:08x}");
        let job = format!("soak/prod/svc{i}");
        let logs = sluice_testkit::native_sandbox(&roots[0], &task, &job, i, &["main"]);
        for (stream, name) in [
            (Stream::Stdout, "main.stdout"),
            (Stream::Stderr, "main.stderr"),
        ] {
            files.push(LogFile {
                path: logs.join(name),
                layout: 0,
                who: Who {
                    job: job.clone(),
                    instance: i,
                    process: "main".into(),
                    stream,
                },
                seq: 0,
                rotations: 0,
                current: Vec::new(),
                to_truncate: false,
            });
        }
    }
    // kubernetes: 14 StatefulSet pods.
    for i in 0..14u32 {
        let dir = roots[1].join(format!(
            "default_web-{i}_0f1e2d3c-0000-4000-8000-{i:012x}/app"
        ));
        std::fs::create_dir_all(&dir).unwrap();
        files.push(LogFile {
            path: dir.join("0.log"),
            layout: 1,
            who: Who {
                job: "default/k8s/web".into(),
                instance: i,
                process: "app".into(),
                stream: Stream::Stdout,
            },
            seq: 0,
            rotations: 0,
            current: Vec::new(),
            to_truncate: false,
        });
    }
    // docker: 14 containers without config.v2.json.
    for i in 0..14u32 {
        let id = format!("{:064x}", 0xd0c0_0000u64 + u64::from(i));
        let dir = roots[2].join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        let short = id[..12].to_string();
        files.push(LogFile {
            path: dir.join(format!("{id}-json.log")),
            layout: 2,
            who: Who {
                job: format!("docker/default/{short}"),
                instance: 0,
                process: short,
                stream: Stream::Stdout,
            },
            seq: 0,
            rotations: 0,
            current: Vec::new(),
            to_truncate: false,
        });
    }

    let layouts = ["native", "kubernetes", "docker"];
    let mut shippers: Vec<ShipperProc> = (0..3)
        .map(|i| {
            let config = tmp.join(format!("shipper-{i}.toml"));
            std::fs::write(&config, "[shipper]\nquiet_ms = 300\npoll_ms = 50\nrescan_ms = 500\nrotated_grace_ms = 1500\ncheckpoint_ms = 200\n").unwrap();
            let args = [
                "shipper", "--layout", layouts[i], "--root", roots[i].to_str().unwrap(), "--host", &format!("node-{i}"),
                "--bus", &kafka.url(), "--data-dir", tmp.to_str().unwrap(), "--config", config.to_str().unwrap(),
            ];
            ShipperProc { args: args.iter().map(|a| a.to_string()).collect(), log: tmp.join(format!("shipper-{i}.log")), child: None }
        })
        .collect();
    for s in &mut shippers {
        s.start();
    }

    let bus = sluice_broker::open(&BusConfig::new(kafka.url().parse().unwrap()))
        .await
        .unwrap();
    bus.ensure_topics(&[topics::LOGS]).await.unwrap();
    let mut received = Received {
        consumer: bus.consumer("soak-check", &[topics::LOGS]).await.unwrap(),
        by_name: HashMap::new(),
        paths: HashMap::new(),
        texts: HashMap::new(),
    };
    let mut written: BTreeMap<String, Who> = BTreeMap::new();
    let (mut kills, mut rotations, mut copytruncates, mut truncations) = (0, 0, 0, 0);
    let mut next_kill = Instant::now() + Duration::from_millis(1500);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        for (n, f) in files.iter_mut().enumerate() {
            // Plain truncation, only once all the file holds is on the bus
            // (bytes truncated before they are read are lost, and reported):
            // the file waits, unwritten, until then.
            if f.to_truncate {
                if f.current.is_empty() {
                    f.to_truncate = false;
                } else if f.current.iter().all(|t| received.texts.contains_key(t)) {
                    truncate(&f.path);
                    f.current.clear();
                    f.to_truncate = false;
                    truncations += 1;
                }
                continue;
            }
            if rng.below(80) == 0 {
                f.to_truncate = true;
                continue;
            }
            let mut text = String::new();
            for _ in 0..(1 + rng.below(8)) {
                let line = format!("f{n}-r{}-s{}", f.rotations, f.seq);
                f.seq += 1;
                text.push_str(&frame(f.layout, &line));
                written.insert(line.clone(), f.who.clone());
                f.current.push(line);
            }
            append(&f.path, &text);
            match rng.below(60) {
                // Rename rotation (all layouts): the old file keeps its name + index.
                0 => {
                    f.rotations += 1;
                    let to = PathBuf::from(format!("{}.{}", f.path.display(), f.rotations));
                    std::fs::rename(&f.path, &to).unwrap();
                    f.current.clear();
                    rotations += 1;
                }
                // copytruncate (native): copy, then truncate the original.
                1 if f.layout == 0 => {
                    f.rotations += 1;
                    let to = PathBuf::from(format!("{}.{}", f.path.display(), f.rotations));
                    std::fs::copy(&f.path, &to).unwrap();
                    truncate(&f.path);
                    f.current.clear();
                    copytruncates += 1;
                }
                _ => {}
            }
        }
        if Instant::now() >= next_kill {
            let victim = rng.below(3) as usize;
            shippers[victim].kill9();
            kills += 1;
            tokio::time::sleep(Duration::from_millis(100 + rng.below(400))).await;
            shippers[victim].start();
            next_kill = Instant::now() + Duration::from_millis(1000 + rng.below(1500));
        }
        received.pump().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Drain: everything written must arrive.
    let drain = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        received.pump().await;
        if written.keys().all(|t| received.texts.contains_key(t)) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let missing: Vec<&String> = written
        .keys()
        .filter(|t| !received.texts.contains_key(*t))
        .collect();
    let logs: String = (0..3)
        .map(|i| std::fs::read_to_string(tmp.join(format!("shipper-{i}.log"))).unwrap_or_default())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} lines never arrived, e.g. {:?}\n{}",
        missing.len(),
        written.len(),
        &missing[..missing.len().min(5)],
        &logs[logs.len().saturating_sub(4000)..]
    );
    let doubled: Vec<(&String, &usize)> = received.texts.iter().filter(|(_, n)| **n > 1).collect();
    if !doubled.is_empty() {
        let mut detail = String::new();
        for (text, _) in doubled.iter().take(3) {
            for ((id, offset), (t, _)) in &received.by_name {
                if t == *text {
                    detail.push_str(&format!(
                        "\n  {text}: source_id {id:016x} offset {offset} from {}",
                        received.paths[&(*id, *offset)]
                    ));
                }
            }
        }
        panic!(
            "{} lines received twice under different names:{detail}",
            doubled.len()
        );
    }
    assert_eq!(
        received.texts.len(),
        written.len(),
        "nothing but what was written"
    );
    for (text, who) in received.by_name.values() {
        assert_eq!(&written[text], who, "identity of {text}");
    }
    assert!(
        kills >= 5 && rotations > 0 && copytruncates > 0 && truncations > 0,
        "soak did too little: {kills} kills, {rotations} rotations, {copytruncates} copytruncates, {truncations} truncations"
    );
    eprintln!(
        "soak: {} lines drained in {:?}, {kills} kills, {rotations} rotations, {copytruncates} copytruncates, {truncations} truncations",
        written.len(),
        drain.elapsed()
    );
}

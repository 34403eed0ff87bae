use std::io::Write;

use prost::Message as _;
use sluice_schema::pb::LogChunk;
use tokio::sync::mpsc::UnboundedReceiver;

use super::discovery::resumes;
use super::*;
use crate::layout::LayoutKind;

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    logs: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sandboxes");
    let state = dir.path().join("state");
    let logs = sluice_testkit::native_sandbox(&root, "t-race", "a/b/c", 0, &["main"]);
    Setup {
        _dir: dir,
        root,
        state,
        logs,
    }
}

/// A tracker driven by hand (no thread, no watcher, no publisher):
/// dropping it without a save is a `kill -9`.
fn tracker(s: &Setup) -> (Tracker, UnboundedReceiver<ChunkOut>) {
    let config = ShipperConfig::new("node-t", LayoutKind::Native, &s.root, &s.state);
    let layout: Arc<dyn Layout> = Arc::from(config.layout.layout());
    let (out, sent) = tokio::sync::mpsc::unbounded_channel();
    let (_, hints) = std::sync::mpsc::channel();
    let tracker = Tracker::new(TrackerParts {
        progress: Arc::new(Progress::new(config.root.clone(), layout.clone())),
        metrics: Arc::new(Metrics::default()),
        out,
        events: Arc::new(sluice_schema::events::VecSink::default()),
        hints,
        event_ids: Arc::new(EventIds::new("test", 0)),
        tap: Tap::new(16),
        layout,
        config,
    })
    .unwrap();
    (tracker, sent)
}

/// Lines handed to the publisher so far: (source_id, offset, text).
fn sent(out: &mut UnboundedReceiver<ChunkOut>) -> Vec<(u64, u64, String)> {
    let mut lines = Vec::new();
    while let Ok(c) = out.try_recv() {
        let chunk = LogChunk::decode(c.payload).unwrap();
        let id = chunk.source.unwrap().source_id;
        for l in chunk.lines {
            lines.push((id, l.offset, String::from_utf8(l.text.to_vec()).unwrap()));
        }
    }
    lines
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

fn truncate(path: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

/// Five short lines, 11 bytes each (as in the soak: far below
/// `PREFIX_BYTES`).
fn five_lines() -> Vec<String> {
    (40..45).map(|i| format!("f13-r2-s{i}\n")).collect()
}

struct Raced {
    tracker: Tracker,
    out: UnboundedReceiver<ChunkOut>,
    key: FileKey,
    original: u64,
    copy: PathBuf,
    sent: Vec<(u64, u64, String)>,
}

/// The soak's flake: a generation that began empty (as after a
/// rotation) gets five lines; `read_before` of them are read first.
/// Then, as the tracker reads the rest, copytruncate runs: the copy
/// is made and the original truncated after the read returned and
/// before the rest of the poll.
fn copytruncate_during_a_read(s: &Setup, read_before: usize) -> Raced {
    let path = s.logs.join("main.stderr");
    let copy = s.logs.join("main.stderr.3");
    let lines = five_lines();
    append(&path, "");
    let (mut tracker, mut out) = tracker(s);
    tracker.rescan();
    let key = tracker.by_path[&path];
    let original = tracker.files[&key].source.source_id;
    if read_before > 0 {
        append(&path, &lines[..read_before].concat());
        assert!(tracker.poll_one(key));
    }
    append(&path, &lines[read_before..].concat());
    tracker.after_read = Some(Box::new({
        let (path, copy) = (path.clone(), copy.clone());
        move || {
            std::fs::copy(&path, &copy).unwrap();
            truncate(&path);
        }
    }));
    assert!(tracker.poll_one(key));
    tracker.after_read = None;
    let sent = sent(&mut out);
    let want: Vec<(u64, u64, String)> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| (original, 11 * i as u64, l.trim_end().to_string()))
        .collect();
    assert_eq!(sent, want, "the five lines, sent under the original's name");
    Raced {
        tracker,
        out,
        key,
        original,
        copy,
        sent,
    }
}

/// Every text is known by one name (source_id, offset) only: what the
/// soak checks.
fn one_name_per_text(lines: &[(u64, u64, String)]) {
    let mut names: HashMap<&str, std::collections::BTreeSet<(u64, u64)>> = HashMap::new();
    for (id, offset, text) in lines {
        names.entry(text).or_default().insert((*id, *offset));
    }
    for (text, names) in names {
        assert_eq!(
            names.len(),
            1,
            "{text} sent under several names: {names:x?}"
        );
    }
}

#[test]
fn a_copy_made_while_its_original_is_read_continues_the_original() {
    for read_before in [0, 3] {
        let s = setup();
        let Raced {
            mut tracker,
            mut out,
            key,
            original,
            copy,
            mut sent,
        } = copytruncate_during_a_read(&s, read_before);
        // inotify names the copy before the truncation is noticed: the
        // original still looks live, so the copy waits for it.
        tracker.hinted(&copy);
        assert!(tracker.poll_one(key), "the truncation is noticed");
        let copy_key = *tracker
            .by_path
            .get(&copy)
            .expect("the copy is tracked once its original's truncation is seen");
        assert_eq!(
            tracker.files[&copy_key].source.source_id, original,
            "read_before {read_before}: the copy continues the truncated generation"
        );
        assert!(tracker.poll_one(copy_key));
        sent.extend(self::sent(&mut out));
        one_name_per_text(&sent);
    }
}

#[test]
fn a_copy_made_while_its_original_is_read_is_paired_after_a_kill_9() {
    for read_before in [0, 3] {
        let s = setup();
        let Raced {
            tracker: killed,
            original,
            copy,
            mut sent,
            ..
        } = copytruncate_during_a_read(&s, read_before);
        // kill -9 before the tracker looks again: only what was saved
        // (before the lines were sent) survives.
        drop(killed);
        let (mut tracker, mut out) = tracker(&s);
        tracker.rescan();
        let copy_key = tracker.by_path[&copy];
        assert_eq!(
            tracker.files[&copy_key].source.source_id, original,
            "read_before {read_before}: after a restart the copy still continues the truncated generation"
        );
        assert!(tracker.poll_one(copy_key));
        sent.extend(self::sent(&mut out));
        one_name_per_text(&sent);
    }
}

/// Without birth times, a file that grew while the shipper was down
/// (its recorded first bytes were fewer than `PREFIX_BYTES`) is the
/// same generation: it still begins with them.
#[test]
fn without_birth_times_a_short_file_that_grew_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let lines = five_lines();
    std::fs::write(&path, lines[..3].concat()).unwrap();
    let file = File::open(&path).unwrap();
    let checkpoint = Checkpoint {
        key: FileKey { dev: 1, ino: 2 },
        birth: None,
        generation: 0,
        source_id: 7,
        prefix: source::prefix(&file, 33).unwrap(),
        offset: 33,
        tail: source::tail(&file, 33).unwrap(),
        path: path.clone(),
        cuts: Vec::new(),
    };
    assert!(resumes(&checkpoint, None, &file, 33));
    append(&path, &lines[3..].concat());
    assert!(resumes(&checkpoint, None, &file, 55), "grown, not replaced");
    truncate(&path);
    append(&path, &lines[1..].concat());
    assert!(
        !resumes(&checkpoint, None, &file, 44),
        "replaced: a new generation"
    );
}

/// Numbers at the ends of their ranges in a checkpoint file (which the
/// shipper only writes, but may find damaged) neither panic nor stop it.
#[test]
fn extreme_numbers_in_the_checkpoint_file_do_not_panic() {
    let s = setup();
    let path = s.logs.join("main.stderr");
    append(&path, "one\ntwo\n");
    let meta = std::fs::metadata(&path).unwrap();
    let key = FileKey::of(&meta);
    let replaced = Checkpoint {
        key,
        birth: source::birth_nanos(&meta),
        generation: u32::MAX,
        source_id: u64::MAX,
        // Not this file's first bytes: a new generation.
        prefix: Prefix::of(b"other"),
        offset: u64::MAX,
        tail: Prefix {
            len: u64::MAX,
            hash: 0,
        },
        path: path.clone(),
        cuts: vec![u64::MAX],
    };
    let ancient = TruncationRecord {
        dir: s.logs.clone(),
        source_id: 1,
        prefix: Prefix {
            len: u64::MAX,
            hash: 0,
        },
        offset: u64::MAX,
        at_unix_ms: i64::MIN,
    };
    let mut store = CheckpointStore::open(&s.state).unwrap();
    store.put(replaced);
    store.set_truncations(vec![ancient]);
    store.save().unwrap();

    let (mut tracker, mut out) = tracker(&s);
    tracker.rescan();
    let key = tracker.by_path[&path];
    assert_eq!(tracker.files[&key].generation, 0, "u32::MAX + 1 wraps");
    assert!(tracker.poll_one(key));
    let lines: Vec<String> = sent(&mut out).into_iter().map(|(_, _, l)| l).collect();
    assert_eq!(lines, ["one", "two"]);
}

/// A Java trace is one line. An event closed by its timeout, sent and not
/// acknowledged, then `kill -9` (the tracker dropped): the restart reads
/// again from the event's first byte and, with the cut the first run put
/// in the checkpoint before sending, sends the same event (same offset,
/// same text) although a line that would have continued it was written
/// since; that line becomes the next record, so nothing is lost or doubled
/// by the archive's de-duplication by offset.
#[test]
fn a_timed_out_event_is_formed_again_after_a_kill_9() {
    use sluice_schema::multiline::{Multiline, Rule};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sandboxes");
    let rule = Multiline {
        rule: Rule::Java,
        timeout_ms: 1,
    };
    let logs =
        sluice_testkit::native_sandbox_with(&root, "t-ml", "a/b/c", 0, &["main"], Some(rule));
    let s = Setup {
        root,
        state: dir.path().join("state"),
        logs,
        _dir: dir,
    };
    let path = s.logs.join("main.stdout");
    let trace = "ERROR batch 28 failed\njava.lang.OutOfMemoryError: heap\n\tat a.B.c(B.java:1)\n";
    append(&path, trace);
    let (mut tracker, mut out) = tracker(&s);
    tracker.rescan();
    let key = tracker.by_path[&path];
    assert!(tracker.poll_one(key));
    assert!(sent(&mut out).is_empty(), "the event waits for more lines");
    assert_eq!(tracker.files[&key].lines.resume_offset(), 0);
    std::thread::sleep(Duration::from_millis(20));
    assert!(tracker.poll_one(key));
    let first = sent(&mut out);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1, 0);
    assert_eq!(first[0].2, trace.trim_end());
    // Written after the timeout: it would have continued the event.
    append(&path, "\tat d.E.f(E.java:2)\nINFO next\n");
    drop(tracker);

    let (mut restarted, mut out) = self::tracker(&s);
    restarted.rescan();
    let key = restarted.by_path[&path];
    assert!(restarted.poll_one(key));
    std::thread::sleep(Duration::from_millis(20));
    assert!(restarted.poll_one(key));
    let again = sent(&mut out);
    let texts: Vec<&str> = again.iter().map(|l| l.2.as_str()).collect();
    assert_eq!(again[0], first[0], "the same event under the same offset");
    assert_eq!(texts[1..], ["\tat d.E.f(E.java:2)", "INFO next"]);
    let mut next = 0;
    for (_, offset, text) in &again {
        assert_eq!(*offset, next, "records tile the file");
        next += text.len() as u64 + 1;
    }
}

//! One partition of the embedded log: its segments, recovery after a crash,
//! and reading records from an offset.
//!
//! The writer thread appends; readers see records below `durable_end`, the
//! end of what has been acknowledged. A read-only handle (another process
//! inspecting the bus) sees what is valid on disk instead.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::embedded::segment::{self, Invalid, SegmentReader};
use crate::{Error, Message, PartitionStatus, Result};

/// Most bytes one read hands out, so a poll stays short.
const MAX_READ_BYTES: usize = 16 << 20;

#[derive(Debug, Clone)]
pub(crate) struct SegmentInfo {
    pub base: u64,
    pub path: PathBuf,
    pub bytes: u64,
}

#[derive(Debug)]
struct State {
    segments: Vec<SegmentInfo>,
    durable_end: u64,
    /// Bumped when bytes past `durable_end` are rewritten (a failed write
    /// rolled back), so readers drop what they buffered.
    epoch: u64,
}

/// The writer thread's view of the partition's last segment.
#[derive(Debug)]
pub(crate) struct Tail {
    pub next_offset: u64,
    pub file: Option<File>,
    pub base: u64,
    pub size: u64,
}

pub(crate) struct Partition {
    pub topic: String,
    pub id: u32,
    pub dir: PathBuf,
    max_record_bytes: usize,
    read_only: bool,
    state: Mutex<State>,
    /// Touched only by the writer thread.
    pub(crate) tail: Mutex<Tail>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Partition({}/{})", self.topic, self.id)
    }
}

/// Where a consumer is in a partition.
#[derive(Default)]
pub(crate) struct Cursor {
    pub next: u64,
    reader: Option<(u64, u64, SegmentReader)>,
}

impl Cursor {
    pub fn at(next: u64) -> Self {
        Cursor { next, reader: None }
    }
}

impl Partition {
    /// Opens a partition directory. For writing, a torn tail of the last
    /// segment (a write cut short by a crash) is cut off, and corrupt bytes
    /// are moved aside into a `.corrupt` file, never silently dropped.
    pub(crate) fn open(
        topic: &str,
        id: u32,
        dir: &Path,
        max_record_bytes: usize,
        read_only: bool,
    ) -> Result<Self> {
        if !read_only {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io("failed to create partition directory", dir, e))?;
        }
        let segments = list_segments(dir)?;
        let mut next_offset = segments.last().map_or(0, |s| s.base);
        let mut segments = segments;
        if let Some(last) = segments.last_mut() {
            let scan = segment::scan(&last.path, last.base, max_record_bytes)?;
            next_offset = scan.next_offset;
            if let Some(why) = &scan.stopped
                && !read_only
            {
                recover_tail(&last.path, scan.valid_end, scan.file_len, why)?;
            }
            last.bytes = scan.valid_end;
        }
        let base = segments.last().map_or(0, |s| s.base);
        let size = segments.last().map_or(0, |s| s.bytes);
        Ok(Partition {
            topic: topic.to_string(),
            id,
            dir: dir.to_path_buf(),
            max_record_bytes,
            read_only,
            state: Mutex::new(State {
                segments,
                durable_end: next_offset,
                epoch: 0,
            }),
            tail: Mutex::new(Tail {
                next_offset,
                file: None,
                base,
                size,
            }),
        })
    }

    /// Called by the writer once records up to `end` are acknowledged.
    pub(crate) fn publish_end(
        &self,
        end: u64,
        tail_base: u64,
        tail_size: u64,
        new_segment: Option<PathBuf>,
    ) {
        let mut state = self.state.lock().unwrap();
        if let Some(path) =
            new_segment.filter(|_| !state.segments.iter().any(|s| s.base == tail_base))
        {
            state.segments.push(SegmentInfo {
                base: tail_base,
                path,
                bytes: 0,
            });
        }
        if let Some(last) = state.segments.last_mut() {
            last.bytes = tail_size;
        }
        state.durable_end = end;
    }

    /// Called by the writer after rolling back bytes past `durable_end`.
    pub(crate) fn bump_epoch(&self) {
        self.state.lock().unwrap().epoch += 1;
    }

    /// Seals the current tail segment's size before a new one begins.
    pub(crate) fn seal(&self, base: u64, size: u64) {
        let mut state = self.state.lock().unwrap();
        if let Some(s) = state.segments.iter_mut().find(|s| s.base == base) {
            s.bytes = size;
        }
    }

    pub(crate) fn status(&self) -> PartitionStatus {
        let state = self.state.lock().unwrap();
        PartitionStatus {
            partition: self.id,
            start_offset: state.segments.first().map_or(state.durable_end, |s| s.base),
            end_offset: state.durable_end,
            bytes: Some(state.segments.iter().map(|s| s.bytes).sum()),
        }
    }

    pub(crate) fn start_offset(&self) -> u64 {
        let state = self.state.lock().unwrap();
        state.segments.first().map_or(state.durable_end, |s| s.base)
    }

    /// A read-only handle catches up with what another process wrote.
    fn refresh(&self) -> Result<()> {
        let listed = list_segments(&self.dir)?;
        let Some(last) = listed.last() else {
            return Ok(());
        };
        let scan = segment::scan(&last.path, last.base, self.max_record_bytes)?;
        let mut state = self.state.lock().unwrap();
        state.segments = listed;
        if let Some(s) = state.segments.last_mut() {
            s.bytes = scan.valid_end;
        }
        state.durable_end = scan.next_offset;
        Ok(())
    }

    /// Reads up to `max` records from `cursor` into `out`.
    pub(crate) fn read(
        &self,
        cursor: &mut Cursor,
        max: usize,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        if self.read_only {
            self.refresh()?;
        }
        let (segments, durable_end, epoch) = {
            let state = self.state.lock().unwrap();
            (state.segments.clone(), state.durable_end, state.epoch)
        };
        let start = segments.first().map_or(durable_end, |s| s.base);
        if cursor.next < start {
            tracing::warn!(topic = %self.topic, partition = self.id, from = cursor.next, to = start,
                "records before the oldest kept segment were deleted by retention; skipping ahead");
            *cursor = Cursor::at(start);
        }
        if cursor.next > durable_end {
            *cursor = Cursor::at(durable_end);
        }
        if cursor.reader.as_ref().is_some_and(|(_, e, _)| *e != epoch) {
            cursor.reader = None;
        }
        let mut bytes = 0usize;
        let mut taken = 0usize;
        while taken < max && bytes < MAX_READ_BYTES && cursor.next < durable_end {
            if cursor.reader.is_none() {
                let Some(seg) = segments.iter().rev().find(|s| s.base <= cursor.next) else {
                    break;
                };
                let mut reader = SegmentReader::open(&seg.path, 0, self.max_record_bytes)?;
                let reached = reader.skip_to(seg.base, cursor.next)?;
                if reached != cursor.next {
                    return Err(Error::Corrupt {
                        path: seg.path.clone(),
                        position: reader.position(),
                        problem: format!(
                            "offset {} not found, segment ends at {reached}",
                            cursor.next
                        ),
                    });
                }
                cursor.reader = Some((seg.base, epoch, reader));
            }
            let (_, _, reader) = cursor.reader.as_mut().unwrap();
            match reader.next(cursor.next)? {
                Ok(Some(record)) => {
                    bytes += record.payload.len() + record.key.len();
                    out.push(Message {
                        topic: self.topic.clone(),
                        partition: self.id,
                        offset: record.offset,
                        key: record.key,
                        payload: record.payload,
                        timestamp_ms: record.timestamp_ms,
                    });
                    cursor.next += 1;
                    taken += 1;
                }
                Ok(None) if segments.iter().any(|s| s.base == cursor.next) => cursor.reader = None,
                Ok(None) | Err(Invalid::Incomplete) if self.read_only => break,
                Ok(None) | Err(Invalid::Incomplete) => {
                    return Err(Error::Corrupt {
                        path: reader.path().to_path_buf(),
                        position: reader.position(),
                        problem: format!(
                            "segment ends before offset {} of {durable_end} acknowledged",
                            cursor.next
                        ),
                    });
                }
                Err(Invalid::Corrupt(problem)) => {
                    return Err(Error::Corrupt {
                        path: reader.path().to_path_buf(),
                        position: reader.position(),
                        problem,
                    });
                }
            }
        }
        Ok(())
    }

    /// Deletes the oldest segments (never the last) while the partition is
    /// over `max_bytes` or they are older than `max_age`. Returns bytes freed.
    pub(crate) fn apply_retention(
        &self,
        max_bytes: u64,
        max_age: Duration,
        now: SystemTime,
    ) -> u64 {
        let mut doomed = Vec::new();
        {
            let mut state = self.state.lock().unwrap();
            let mut total: u64 = state.segments.iter().map(|s| s.bytes).sum();
            while state.segments.len() > 1 {
                let first = &state.segments[0];
                let too_old = std::fs::metadata(&first.path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > max_age);
                if total <= max_bytes && !too_old {
                    break;
                }
                total -= first.bytes;
                doomed.push(state.segments.remove(0));
            }
        }
        let mut freed = 0;
        for seg in doomed {
            match std::fs::remove_file(&seg.path) {
                Ok(()) => {
                    freed += seg.bytes;
                    tracing::info!(topic = %self.topic, partition = self.id, segment = %seg.path.display(),
                        bytes = seg.bytes, "retention deleted segment");
                }
                Err(e) => {
                    tracing::warn!(segment = %seg.path.display(), error = %e, "retention failed to delete segment")
                }
            }
        }
        freed
    }
}

fn list_segments(dir: &Path) -> Result<Vec<SegmentInfo>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("failed to list partition", dir, e)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("failed to list partition", dir, e))?;
        let name = entry.file_name();
        let Some(base) = name.to_str().and_then(segment::parse_segment_name) else {
            continue;
        };
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        segments.push(SegmentInfo {
            base,
            path: entry.path(),
            bytes,
        });
    }
    segments.sort_by_key(|s| s.base);
    Ok(segments)
}

fn recover_tail(path: &Path, valid_end: u64, file_len: u64, why: &Invalid) -> Result<()> {
    let cut = file_len.saturating_sub(valid_end);
    match why {
        Invalid::Incomplete => {
            tracing::warn!(segment = %path.display(), position = valid_end, bytes = cut,
                "cut a torn record at the end of the log (a write interrupted by a crash, never acknowledged)");
        }
        Invalid::Corrupt(problem) => {
            let aside = path.with_extension(format!("log.{valid_end}.corrupt"));
            // Streamed: a segment may be far larger than what memory holds.
            let mut from =
                File::open(path).map_err(|e| Error::io("failed to read segment", path, e))?;
            from.seek(SeekFrom::Start(valid_end))
                .map_err(|e| Error::io("failed to read segment", path, e))?;
            File::create(&aside)
                .and_then(|mut to| std::io::copy(&mut from, &mut to).and_then(|_| to.sync_all()))
                .map_err(|e| Error::io("failed to save corrupt bytes to", &aside, e))?;
            tracing::error!(segment = %path.display(), position = valid_end, bytes = cut, problem = %problem,
                saved = %aside.display(), "corrupt record in the log; the bytes from it on were moved aside");
        }
    }
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io("failed to open segment", path, e))?;
    file.set_len(valid_end)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("failed to cut torn tail of", path, e))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MAX_RECORD: usize = 1 << 16;

    /// Records `from..to` of a partition, encoded.
    fn records(from: u64, to: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        for offset in from..to {
            let payload = vec![offset as u8; 7 * offset as usize];
            segment::encode(&mut buf, offset, 1_700_000_000_000, b"key", &payload);
        }
        buf
    }

    /// Bytes after three good records: garbage, or records 3 to 5 damaged.
    fn tail() -> impl Strategy<Value = Vec<u8>> {
        let damaged = (
            any::<prop::sample::Index>(),
            any::<u8>(),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(at, mask, cut)| {
                let mut bytes = records(3, 6);
                let at = at.index(bytes.len());
                bytes[at] ^= mask;
                let cut = cut.index(bytes.len() + 1);
                bytes.truncate(cut.max(at + 1));
                bytes
            });
        prop_oneof![prop::collection::vec(any::<u8>(), 0..512), damaged]
    }

    fn read_all(partition: &Partition) -> Vec<Message> {
        let mut out = Vec::new();
        partition
            .read(&mut Cursor::at(0), usize::MAX, &mut out)
            .unwrap();
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever follows the good records, opening recovers them: the
        /// segment is cut at the end of the valid records, corrupt bytes
        /// are moved aside byte for byte, a torn tail is cut, and a
        /// second open finds nothing to recover.
        #[test]
        fn partition_recovery_of_any_tail_never_panics(tail in tail()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(segment::segment_name(0));
            let mut bytes = records(0, 3);
            bytes.extend_from_slice(&tail);
            std::fs::write(&path, &bytes).unwrap();
            let scan = segment::scan(&path, 0, MAX_RECORD).unwrap();
            prop_assert!(scan.next_offset >= 3);

            // A reader in another process changes nothing.
            let reader = Partition::open("t", 0, dir.path(), MAX_RECORD, true).unwrap();
            prop_assert_eq!(read_all(&reader).len() as u64, scan.next_offset);
            prop_assert_eq!(std::fs::read(&path).unwrap(), bytes.clone());

            let partition = Partition::open("t", 0, dir.path(), MAX_RECORD, false).unwrap();
            prop_assert_eq!(partition.status().end_offset, scan.next_offset);
            prop_assert_eq!(std::fs::metadata(&path).unwrap().len(), scan.valid_end);
            let aside = dir.path().join(format!("{}.{}.corrupt", segment::segment_name(0), scan.valid_end));
            match &scan.stopped {
                Some(Invalid::Corrupt(_)) => {
                    prop_assert_eq!(std::fs::read(&aside).unwrap(), bytes[scan.valid_end as usize..].to_vec());
                }
                _ => prop_assert!(!aside.exists()),
            }
            let read = read_all(&partition);
            prop_assert_eq!(read.len() as u64, scan.next_offset);
            for (i, message) in read.iter().enumerate() {
                prop_assert_eq!(message.offset, i as u64);
                prop_assert_eq!(&message.payload[..], &vec![i as u8; 7 * i][..]);
            }
            drop(partition);

            let again = Partition::open("t", 0, dir.path(), MAX_RECORD, false).unwrap();
            prop_assert_eq!(again.status().end_offset, scan.next_offset);
            let files = std::fs::read_dir(dir.path()).unwrap().count();
            prop_assert_eq!(files, if aside.exists() { 2 } else { 1 });
        }
    }
}

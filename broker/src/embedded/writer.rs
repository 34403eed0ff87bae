//! The writer thread: the only code that appends to the embedded log.
//!
//! It takes every append waiting in its queue, writes them per partition with
//! one `write` each, calls `fdatasync` once per partition touched (group
//! commit, with `fsync = "batch"`), and only then makes the records visible
//! to readers and acknowledges them. A failed write is rolled back and its
//! records fail; nothing after a failure is acknowledged out of order.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::embedded::Shared;
use crate::embedded::partition::Partition;
use crate::embedded::segment;
use crate::{Delivery, Error, FsyncPolicy, Record, Result};

/// Most appends taken into one group commit.
const MAX_BATCH: usize = 8192;
/// How often retention runs while the writer is busy or idle.
const RETENTION_EVERY: Duration = Duration::from_secs(30);

pub(crate) struct Append {
    pub partition: Arc<Partition>,
    pub record: Record,
    pub ack: oneshot::Sender<Result<Delivery>>,
    /// Holds queue budget until the record is written.
    pub permit: OwnedSemaphorePermit,
}

pub(crate) enum Command {
    Append(Append),
    Flush(oneshot::Sender<()>),
}

/// Records of one partition in the batch being written: each record's
/// header, and the record whose key and payload follow it on disk.
struct Pending {
    partition: Arc<Partition>,
    records: Vec<([u8; segment::HEADER_LEN], Record)>,
    bytes: u64,
    acks: Vec<(oneshot::Sender<Result<Delivery>>, Delivery)>,
    /// Segment created for this batch, made visible with it.
    new_segment: Option<PathBuf>,
    /// Tail state before the batch, to roll back to.
    first_offset: u64,
    size_before: u64,
}

pub(crate) fn run(shared: Arc<Shared>, commands: Receiver<Command>) {
    let config = shared.config.clone();
    let mut dirty: Vec<Arc<Partition>> = Vec::new();
    let mut last_sync = Instant::now();
    let mut last_retention = Instant::now();
    let idle = match config.fsync {
        FsyncPolicy::Interval => Duration::from_millis(config.fsync_interval_ms),
        _ => RETENTION_EVERY,
    };
    loop {
        let first = match commands.recv_timeout(idle) {
            Ok(command) => Some(command),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut batch: Vec<Command> = first.into_iter().collect();
        // Group commit: what else arrives within the linger shares the sync.
        let linger = match (&config.fsync, batch.first()) {
            (FsyncPolicy::Batch, Some(Command::Append(_))) => {
                Duration::from_millis(config.linger_ms)
            }
            _ => Duration::ZERO,
        };
        let until = Instant::now() + linger;
        while batch.len() < MAX_BATCH {
            let left = until.saturating_duration_since(Instant::now());
            let next = if left.is_zero() {
                commands.try_recv().ok()
            } else {
                commands.recv_timeout(left).ok()
            };
            match next {
                Some(command) => batch.push(command),
                None => break,
            }
        }
        let mut flushes = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        for command in batch {
            match command {
                Command::Append(append) => stage(&shared, &mut pending, append),
                Command::Flush(done) => flushes.push(done),
            }
        }
        let sync_now = config.fsync == FsyncPolicy::Batch;
        let mut wrote = false;
        for p in pending {
            let partition = p.partition.clone();
            wrote |= commit(p, sync_now);
            if config.fsync == FsyncPolicy::Interval
                && !dirty.iter().any(|d| Arc::ptr_eq(d, &partition))
            {
                dirty.push(partition);
            }
        }
        if wrote {
            shared.appended.send_modify(|n| *n += 1);
        }
        if config.fsync == FsyncPolicy::Interval && last_sync.elapsed() >= idle {
            for partition in dirty.drain(..) {
                sync_tail(&partition);
            }
            last_sync = Instant::now();
        }
        for done in flushes {
            let _ = done.send(());
        }
        if last_retention.elapsed() >= RETENTION_EVERY {
            for partition in shared.all_partitions() {
                partition.apply_retention(
                    config.retention_bytes,
                    config.retention_age(),
                    SystemTime::now(),
                );
            }
            last_retention = Instant::now();
        }
    }
    for partition in dirty {
        sync_tail(&partition);
    }
}

/// Encodes an append into its partition's pending buffer, rolling to a new
/// segment (and committing what was pending) when the current one is full.
fn stage(shared: &Shared, pending: &mut Vec<Pending>, append: Append) {
    let Append {
        partition,
        record,
        ack,
        permit,
    } = append;
    let index = match pending
        .iter()
        .position(|p| Arc::ptr_eq(&p.partition, &partition))
    {
        Some(index) => index,
        None => {
            let tail = partition.tail.lock().unwrap();
            pending.push(Pending {
                partition: partition.clone(),
                records: Vec::new(),
                bytes: 0,
                acks: Vec::new(),
                new_segment: None,
                first_offset: tail.next_offset,
                size_before: tail.size,
            });
            pending.len() - 1
        }
    };
    let record_len = segment::encoded_len(record.key.len(), record.payload.len());
    let (needs_roll, has_file) = {
        let tail = partition.tail.lock().unwrap();
        let used = tail.size + pending[index].bytes;
        (
            used > 0 && used + record_len > shared.config.segment_bytes,
            tail.file.is_some() || tail.size > 0,
        )
    };
    if needs_roll {
        let full = std::mem::replace(
            &mut pending[index],
            Pending {
                partition: partition.clone(),
                records: Vec::new(),
                bytes: 0,
                acks: Vec::new(),
                new_segment: None,
                first_offset: 0,
                size_before: 0,
            },
        );
        commit(full, true);
        let mut tail = partition.tail.lock().unwrap();
        partition.seal(tail.base, tail.size);
        tail.file = None;
        tail.base = tail.next_offset;
        tail.size = 0;
        pending[index].first_offset = tail.next_offset;
    }
    let p = &mut pending[index];
    let mut tail = partition.tail.lock().unwrap();
    if tail.file.is_none() {
        let creating = needs_roll || !has_file;
        if creating {
            tail.base = tail.next_offset;
            tail.size = 0;
        }
        match open_segment(&partition.dir, tail.base, creating) {
            Ok(file) => {
                tail.file = Some(file);
                if creating {
                    p.new_segment = Some(partition.dir.join(segment::segment_name(tail.base)));
                }
            }
            Err(e) => {
                let _ = ack.send(Err(e));
                return;
            }
        }
    }
    let offset = tail.next_offset + p.acks.len() as u64;
    let header = segment::header(offset, record.timestamp_ms, &record.key, &record.payload);
    p.bytes += record_len;
    p.records.push((header, record));
    p.acks.push((
        ack,
        Delivery {
            partition: partition.id,
            offset,
        },
    ));
    drop(permit);
}

/// Writes a partition's pending records, syncs them if asked, publishes them
/// to readers and acknowledges them. Returns whether anything was written.
fn commit(p: Pending, sync: bool) -> bool {
    if p.acks.is_empty() {
        return false;
    }
    let partition = p.partition;
    let mut tail = partition.tail.lock().unwrap();
    let path = partition.dir.join(segment::segment_name(tail.base));
    let file = tail.file.as_mut().expect("segment opened when staged");
    let result =
        write_records(file, &p.records).and_then(|()| if sync { file.sync_data() } else { Ok(()) });
    match result {
        Ok(()) => {
            tail.size += p.bytes;
            tail.next_offset += p.acks.len() as u64;
            partition.publish_end(tail.next_offset, tail.base, tail.size, p.new_segment);
            drop(tail);
            for (ack, delivery) in p.acks {
                let _ = ack.send(Ok(delivery));
            }
            true
        }
        Err(e) => {
            tracing::error!(segment = %path.display(), error = %e, records = p.acks.len(),
                "failed to write to the log; the records are refused and may be sent again");
            let _ = file.set_len(p.size_before);
            tail.next_offset = p.first_offset;
            tail.size = p.size_before;
            partition.bump_epoch();
            drop(tail);
            let message = e.to_string();
            for (ack, _) in p.acks {
                let error = std::io::Error::new(e.kind(), message.clone());
                let _ = ack.send(Err(Error::io("failed to write segment", &path, error)));
            }
            false
        }
    }
}

/// Writes each record's header, key and payload with vectored writes: the
/// payload goes from the caller's buffer to the kernel without a copy.
fn write_records(
    file: &mut File,
    records: &[([u8; segment::HEADER_LEN], Record)],
) -> std::io::Result<()> {
    // Linux accepts up to 1024 slices per call.
    for group in records.chunks(300) {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(group.len() * 3);
        for (header, record) in group {
            slices.push(IoSlice::new(header));
            if !record.key.is_empty() {
                slices.push(IoSlice::new(&record.key));
            }
            if !record.payload.is_empty() {
                slices.push(IoSlice::new(&record.payload));
            }
        }
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match file.write_vectored(slices) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn open_segment(dir: &Path, base: u64, create: bool) -> Result<File> {
    let path = dir.join(segment::segment_name(base));
    let file = OpenOptions::new()
        .create(create)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io("failed to open segment for writing", &path, e))?;
    if create {
        // The new file's name must survive a crash as well as its records.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("failed to sync directory", dir, e))?;
    }
    Ok(file)
}

fn sync_tail(partition: &Partition) {
    let tail = partition.tail.lock().unwrap();
    if let Some(file) = &tail.file
        && let Err(e) = file.sync_data()
    {
        tracing::error!(partition = ?partition, error = %e, "periodic fsync failed");
    }
}

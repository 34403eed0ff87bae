//! Segment files: the on-disk record format and reading it back.
//!
//! A partition is a directory of segments named by the offset of their first
//! record (`00000000000000000000.log`). A segment is a sequence of records:
//!
//! ```text
//! u32 frame_len   bytes after this field
//! u32 crc32c      of every byte after this field
//! u64 offset      consecutive within the partition
//! i64 timestamp   milliseconds since the Unix epoch
//! u32 key_len
//! key, payload    payload_len = frame_len - 24 - key_len
//! ```
//!
//! All integers are little-endian. A record is valid when its frame is
//! complete, its checksum matches and its offset is the one expected; the
//! first invalid record ends what can be read from a segment.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::{Error, Result};

/// Bytes before the key: frame_len, crc, offset, timestamp, key_len.
pub(crate) const HEADER_LEN: usize = 28;
/// Bytes of a frame (after `frame_len`) before the key.
const FRAME_FIXED: u32 = 24;
/// Most bytes set aside for a frame before they are read: a damaged
/// `frame_len` (up to `max_record_bytes`, which may be 2 GiB) must not
/// allocate what the file does not hold.
const FRAME_PREALLOC: usize = 1 << 20;

pub(crate) fn segment_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// The base offset a segment file name stands for.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header of a record: what precedes its key and payload on disk. The
/// writer sends header, key and payload to the file without copying them.
pub(crate) fn header(
    offset: u64,
    timestamp_ms: i64,
    key: &[u8],
    payload: &[u8],
) -> [u8; HEADER_LEN] {
    let frame_len = FRAME_FIXED as usize + key.len() + payload.len();
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&(frame_len as u32).to_le_bytes());
    h[8..16].copy_from_slice(&offset.to_le_bytes());
    h[16..24].copy_from_slice(&timestamp_ms.to_le_bytes());
    h[24..28].copy_from_slice(&(key.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c_append(crc32c::crc32c(&h[8..]), key), payload);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Appends one encoded record to `buf`.
#[cfg(test)]
pub(crate) fn encode(
    buf: &mut Vec<u8>,
    offset: u64,
    timestamp_ms: i64,
    key: &[u8],
    payload: &[u8],
) {
    buf.extend_from_slice(&header(offset, timestamp_ms, key, payload));
    buf.extend_from_slice(key);
    buf.extend_from_slice(payload);
}

/// Size of a record once encoded.
pub(crate) fn encoded_len(key: usize, payload: usize) -> u64 {
    (HEADER_LEN + key + payload) as u64
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawRecord {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Bytes,
    pub payload: Bytes,
    /// Position of the byte after this record.
    pub end: u64,
}

/// Why reading stopped before a clean end of file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// The file ends inside a record: a write that never completed.
    Incomplete,
    /// A complete frame that is not a valid record.
    Corrupt(String),
}

/// Reads a segment's records in order from a position.
pub(crate) struct SegmentReader {
    path: PathBuf,
    file: BufReader<File>,
    position: u64,
    max_frame: u32,
}

impl SegmentReader {
    pub(crate) fn open(path: &Path, position: u64, max_record_bytes: usize) -> Result<Self> {
        let mut file =
            File::open(path).map_err(|e| Error::io("failed to open segment", path, e))?;
        file.seek(SeekFrom::Start(position))
            .map_err(|e| Error::io("failed to seek in segment", path, e))?;
        Ok(SegmentReader {
            path: path.to_path_buf(),
            file: BufReader::with_capacity(256 << 10, file),
            position,
            max_frame: FRAME_FIXED
                .saturating_add(max_record_bytes as u32)
                .saturating_add(1024),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// The next record, `Ok(None)` at a clean end of file, or why the bytes
    /// at the current position are not a record (the position stays put).
    /// `expected` is the offset the record must carry.
    pub(crate) fn next(
        &mut self,
        expected: u64,
    ) -> Result<std::result::Result<Option<RawRecord>, Invalid>> {
        let start = self.position;
        let mut head = [0u8; 4];
        match read_full(&mut self.file, &mut head) {
            Ok(0) => return Ok(Ok(None)),
            Ok(4) => {}
            Ok(_) => return self.invalid(start, Invalid::Incomplete),
            Err(e) => return Err(Error::io("failed to read segment", &self.path, e)),
        }
        let frame_len = u32::from_le_bytes(head);
        if !(FRAME_FIXED..=self.max_frame).contains(&frame_len) {
            return self.invalid(
                start,
                Invalid::Corrupt(format!(
                    "frame length {frame_len} out of range ({FRAME_FIXED} to {})",
                    self.max_frame
                )),
            );
        }
        let mut frame = Vec::with_capacity((frame_len as usize).min(FRAME_PREALLOC));
        match (&mut self.file)
            .take(frame_len.into())
            .read_to_end(&mut frame)
        {
            Ok(n) if n == frame_len as usize => {}
            Ok(_) => return self.invalid(start, Invalid::Incomplete),
            Err(e) => return Err(Error::io("failed to read segment", &self.path, e)),
        }
        let crc = u32::from_le_bytes(frame[0..4].try_into().unwrap());
        if crc32c::crc32c(&frame[4..]) != crc {
            return self.invalid(start, Invalid::Corrupt("checksum mismatch".into()));
        }
        let offset = u64::from_le_bytes(frame[4..12].try_into().unwrap());
        let timestamp_ms = i64::from_le_bytes(frame[12..20].try_into().unwrap());
        let key_len = u32::from_le_bytes(frame[20..24].try_into().unwrap());
        if key_len > frame_len - FRAME_FIXED {
            return self.invalid(
                start,
                Invalid::Corrupt(format!("key length {key_len} exceeds frame")),
            );
        }
        if offset != expected {
            return self.invalid(
                start,
                Invalid::Corrupt(format!("offset {offset}, expected {expected}")),
            );
        }
        let frame = Bytes::from(frame);
        let key_end = 24 + key_len as usize;
        self.position = start + 4 + frame_len as u64;
        Ok(Ok(Some(RawRecord {
            offset,
            timestamp_ms,
            key: frame.slice(24..key_end),
            payload: frame.slice(key_end..),
            end: self.position,
        })))
    }

    fn invalid(
        &mut self,
        start: u64,
        why: Invalid,
    ) -> Result<std::result::Result<Option<RawRecord>, Invalid>> {
        self.file
            .seek(SeekFrom::Start(start))
            .map_err(|e| Error::io("failed to seek in segment", &self.path, e))?;
        self.position = start;
        Ok(Err(why))
    }

    /// Moves to the record with offset `target`, starting from the segment's
    /// first record `base`. Stops early at the end of what is valid.
    pub(crate) fn skip_to(&mut self, base: u64, target: u64) -> Result<u64> {
        let mut next = base;
        while next < target {
            match self.next(next)? {
                Ok(Some(_)) => next += 1,
                Ok(None) | Err(_) => break,
            }
        }
        Ok(next)
    }
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The valid prefix of a segment: where it ends, the next offset, and why
/// reading stopped if not at the end of the file.
#[derive(Debug)]
pub(crate) struct Scan {
    pub valid_end: u64,
    pub next_offset: u64,
    pub file_len: u64,
    pub stopped: Option<Invalid>,
}

/// Reads a whole segment, checking every record.
pub(crate) fn scan(path: &Path, base: u64, max_record_bytes: usize) -> Result<Scan> {
    let file_len = std::fs::metadata(path)
        .map_err(|e| Error::io("failed to stat segment", path, e))?
        .len();
    let mut reader = SegmentReader::open(path, 0, max_record_bytes)?;
    let mut next_offset = base;
    let stopped = loop {
        match reader.next(next_offset)? {
            Ok(Some(_)) => next_offset += 1,
            Ok(None) => break None,
            Err(why) => break Some(why),
        }
    };
    Ok(Scan {
        valid_end: reader.position(),
        next_offset,
        file_len,
        stopped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn write_segment(dir: &Path, records: &[(Vec<u8>, Vec<u8>)]) -> PathBuf {
        let path = dir.join(segment_name(100));
        let mut buf = Vec::new();
        for (i, (key, payload)) in records.iter().enumerate() {
            encode(
                &mut buf,
                100 + i as u64,
                1_700_000_000_000 + i as i64,
                key,
                payload,
            );
        }
        std::fs::write(&path, &buf).unwrap();
        path
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_name(42), "00000000000000000042.log");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "42.log",
            "0000000000000000004x.log",
            "00000000000000000042.idx",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn torn_tail_is_incomplete_and_earlier_records_survive() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(
            dir.path(),
            &[
                (b"k".to_vec(), b"one".to_vec()),
                (b"k".to_vec(), b"two".to_vec()),
            ],
        );
        let full = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(full - 2).unwrap();
        let scan = scan(&path, 100, 1 << 20).unwrap();
        assert_eq!(scan.next_offset, 101);
        assert_eq!(scan.valid_end, encoded_len(1, 3));
        assert_eq!(scan.stopped, Some(Invalid::Incomplete));
    }

    #[test]
    fn flipped_bit_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(
            dir.path(),
            &[
                (b"k".to_vec(), b"one".to_vec()),
                (b"k".to_vec(), b"two".to_vec()),
            ],
        );
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let scan = scan(&path, 100, 1 << 20).unwrap();
        assert_eq!(scan.next_offset, 101);
        assert_eq!(
            scan.stopped,
            Some(Invalid::Corrupt("checksum mismatch".into()))
        );
    }

    #[test]
    fn garbage_length_is_corrupt_not_an_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(dir.path(), &[(b"k".to_vec(), b"one".to_vec())]);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(&u32::MAX.to_le_bytes()).unwrap();
        file.write_all(&[0xab; 64]).unwrap();
        let scan = scan(&path, 100, 1 << 20).unwrap();
        assert_eq!(scan.next_offset, 101);
        assert!(
            matches!(scan.stopped, Some(Invalid::Corrupt(ref m)) if m.contains("out of range"))
        );
    }

    #[test]
    fn skip_to_positions_at_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<_> = (0..10u8).map(|i| (vec![i], vec![i; i as usize])).collect();
        let path = write_segment(dir.path(), &records);
        let mut reader = SegmentReader::open(&path, 0, 1 << 20).unwrap();
        assert_eq!(reader.skip_to(100, 107).unwrap(), 107);
        let record = reader.next(107).unwrap().unwrap().unwrap();
        assert_eq!(&record.payload[..], &[7u8; 7]);
    }

    proptest! {
        #[test]
        fn records_round_trip(records in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..40), prop::collection::vec(any::<u8>(), 0..2000)),
            1..30,
        )) {
            let dir = tempfile::tempdir().unwrap();
            let path = write_segment(dir.path(), &records);
            let mut reader = SegmentReader::open(&path, 0, 1 << 20).unwrap();
            for (i, (key, payload)) in records.iter().enumerate() {
                let record = reader.next(100 + i as u64).unwrap().unwrap().unwrap();
                prop_assert_eq!(&record.key[..], &key[..]);
                prop_assert_eq!(&record.payload[..], &payload[..]);
                prop_assert_eq!(record.timestamp_ms, 1_700_000_000_000 + i as i64);
            }
            prop_assert_eq!(reader.next(100 + records.len() as u64).unwrap(), Ok(None));
        }
    }

    /// The header fields a stop names.
    const FIELDS: [&str; 4] = [
        "frame length ",
        "checksum mismatch",
        "key length ",
        "offset ",
    ];

    /// Scans `bytes` as segment 100: never a panic or an error; what it
    /// calls valid reads back record by record, and a corrupt record is
    /// reported by the header field that is wrong.
    fn check_scan(bytes: &[u8]) -> std::result::Result<Scan, TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_name(100));
        std::fs::write(&path, bytes).unwrap();
        let scan = scan(&path, 100, 1 << 16).unwrap();
        prop_assert!(scan.valid_end <= scan.file_len);
        prop_assert_eq!(scan.file_len, bytes.len() as u64);
        prop_assert_eq!(scan.stopped.is_none(), scan.valid_end == scan.file_len);
        if let Some(Invalid::Corrupt(problem)) = &scan.stopped {
            prop_assert!(
                FIELDS.iter().any(|f| problem.starts_with(f)),
                "{:?} names no header field",
                problem
            );
        }
        let mut reader = SegmentReader::open(&path, 0, 1 << 16).unwrap();
        for offset in 100..scan.next_offset {
            let record = reader.next(offset).unwrap();
            prop_assert!(matches!(record, Ok(Some(_))), "{}: {:?}", offset, record);
        }
        prop_assert_eq!(reader.position(), scan.valid_end);
        Ok(scan)
    }

    /// Five records and their encoding.
    fn valid_segment() -> (Vec<u8>, Vec<u64>) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for i in 0..5u8 {
            let payload = vec![i; 10 * i as usize];
            encode(
                &mut buf,
                100 + u64::from(i),
                1_700_000_000_000,
                &[b'k', i],
                &payload,
            );
            ends.push(buf.len() as u64);
        }
        (buf, ends)
    }

    /// One change to valid bytes; header-sized values are spliced in too.
    #[derive(Debug, Clone)]
    enum Edit {
        Flip(prop::sample::Index, u8),
        Insert(prop::sample::Index, u8),
        Delete(prop::sample::Index),
        Truncate(prop::sample::Index),
        Overwrite(prop::sample::Index, u32),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        use prop::sample::Index;
        let word = prop_oneof![
            Just(0u32),
            Just(23),
            Just(24),
            Just(1 << 16),
            Just((1 << 16) + 1048),
            Just(1 << 30),
            Just(u32::MAX),
            any::<u32>(),
        ];
        prop_oneof![
            (any::<Index>(), 1u8..).prop_map(|(i, b)| Edit::Flip(i, b)),
            (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
            any::<Index>().prop_map(Edit::Delete),
            any::<Index>().prop_map(Edit::Truncate),
            (any::<Index>(), word).prop_map(|(i, w)| Edit::Overwrite(i, w)),
        ]
    }

    fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(edit(), 1..4).prop_map(move |edits| {
            let mut bytes = valid.clone();
            for edit in edits {
                let len = bytes.len();
                match edit {
                    Edit::Flip(i, mask) if len > 0 => bytes[i.index(len)] ^= mask,
                    Edit::Insert(i, b) => bytes.insert(i.index(len + 1), b),
                    Edit::Delete(i) if len > 0 => drop(bytes.remove(i.index(len))),
                    Edit::Truncate(i) => bytes.truncate(i.index(len + 1)),
                    Edit::Overwrite(i, word) => {
                        let at = i.index(len + 1);
                        let end = (at + 4).min(len);
                        bytes.splice(at..end, word.to_le_bytes());
                    }
                    Edit::Flip(..) | Edit::Delete(_) => {}
                }
            }
            bytes
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn segment_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
            check_scan(&bytes)?;
        }

        /// Every record wholly before the first damaged byte survives.
        #[test]
        fn segment_mutations_never_panic(bytes in mutated(valid_segment().0)) {
            let scan = check_scan(&bytes)?;
            let (valid, ends) = valid_segment();
            let same = bytes.iter().zip(&valid).take_while(|(a, b)| a == b).count() as u64;
            let intact = ends.iter().filter(|&&end| end <= same).count() as u64;
            prop_assert!(scan.next_offset >= 100 + intact, "{} < 100 + {}", scan.next_offset, intact);
        }
    }

    /// A damaged length up to a large `max_record_bytes` is a torn tail,
    /// read as far as the file goes, not an allocation of that size.
    #[test]
    fn a_huge_frame_length_reads_only_what_the_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(dir.path(), &[(b"k".to_vec(), b"one".to_vec())]);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(&(1u32 << 30).to_le_bytes()).unwrap();
        file.write_all(&[0xab; 64]).unwrap();
        let scan = scan(&path, 100, 1 << 30).unwrap();
        assert_eq!(scan.next_offset, 101);
        assert_eq!(scan.valid_end, encoded_len(1, 3));
        assert_eq!(scan.stopped, Some(Invalid::Incomplete));
    }

    #[test]
    fn a_corrupt_record_names_the_header_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(dir.path(), &[(b"k".to_vec(), b"one".to_vec())]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0..4].copy_from_slice(&7u32.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            scan(&path, 100, 1 << 20).unwrap().stopped,
            Some(Invalid::Corrupt(
                "frame length 7 out of range (24 to 1049624)".into()
            ))
        );
        // A valid record that is not the one expected.
        let path = write_segment(dir.path(), &[(b"k".to_vec(), b"one".to_vec())]);
        assert_eq!(
            scan(&path, 99, 1 << 20).unwrap().stopped,
            Some(Invalid::Corrupt("offset 100, expected 99".into()))
        );
    }
}

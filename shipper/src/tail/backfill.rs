//! Reading back what the tracker already sent: where a backfill starts
//! (the last N lines, or since a time) and the lines of a byte range.
//!
//! Offsets here are always line starts: the tracker's read positions, the
//! positions followers report, and what [`last_lines_start`] finds. The
//! reads are bounded: a backfill never scans more than [`MAX_SCAN`] bytes
//! of a file, whatever N or the time asked for.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::files::lines::{LineAssembler, LineOut};
#[cfg(test)]
use crate::layout::Framing;

/// Most bytes a backfill looks back over in one file.
pub(crate) const MAX_SCAN: u64 = 8 << 20;
const BLOCK: usize = 64 << 10;

/// The offset where the last `n` lines before `end` start (`end` is a line
/// start), looking back at most [`MAX_SCAN`] bytes.
pub(crate) fn last_lines_start(file: &File, end: u64, n: u32) -> io::Result<u64> {
    if n == 0 || end == 0 {
        return Ok(end);
    }
    let floor = end.saturating_sub(MAX_SCAN);
    let mut buf = vec![0u8; BLOCK];
    // The byte before `end` ends the last line; the newline before that
    // starts it, and so on.
    let mut newlines = 0u32;
    let mut hi = end - 1;
    let mut earliest = None;
    while hi > floor {
        let lo = hi.saturating_sub(BLOCK as u64).max(floor);
        let len = (hi - lo) as usize;
        file.read_exact_at(&mut buf[..len], lo)?;
        for i in (0..len).rev() {
            if buf[i] == b'\n' {
                let start = lo + i as u64 + 1;
                newlines += 1;
                earliest = Some(start);
                if newlines == n {
                    return Ok(start);
                }
            }
        }
        hi = lo;
    }
    // Fewer lines than asked: all of them, or all that fit in the scan.
    Ok(if floor == 0 {
        0
    } else {
        earliest.unwrap_or(end)
    })
}

/// The first line start at or after `offset`, or `end` if there is none
/// before it.
pub(crate) fn line_start_at_or_after(file: &File, offset: u64, end: u64) -> io::Result<u64> {
    if offset == 0 || offset >= end {
        return Ok(offset.min(end));
    }
    let mut buf = vec![0u8; BLOCK];
    let mut at = offset - 1;
    while at < end {
        let len = ((end - at) as usize).min(BLOCK);
        let n = file.read_at(&mut buf[..len], at)?;
        if n == 0 {
            break;
        }
        if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
            return Ok(at + i as u64 + 1);
        }
        at += n as u64;
    }
    Ok(end)
}

/// Where reading stood at `since` by the tracker's samples: the last
/// sample taken at or before it. Without one, the file's start if the
/// tracker saw it from the start, else as far back as [`MAX_SCAN`] allows.
pub(crate) fn since_start(
    file: &File,
    samples: &[(u64, i64)],
    end: u64,
    since: i64,
) -> io::Result<u64> {
    if let Some((offset, _)) = samples.iter().rev().find(|(_, at)| *at <= since) {
        return Ok((*offset).min(end));
    }
    match samples.first() {
        Some((0, _)) => Ok(0),
        _ => line_start_at_or_after(file, end.saturating_sub(MAX_SCAN), end),
    }
}

/// Feeds `assembler` the bytes of `file` from its next offset towards
/// `end`, at most `limit` of them, collecting lines in `out`. At `end`, or
/// if the file is shorter (truncated meanwhile), the last unterminated line
/// is flushed (the tracker shipped it after a quiet period) and it returns
/// true: done.
pub(crate) fn read_some(
    file: &File,
    assembler: &mut LineAssembler,
    end: u64,
    limit: usize,
    out: &mut Vec<LineOut>,
) -> io::Result<bool> {
    let mut buf = vec![0u8; BLOCK];
    let stop = end.min(assembler.next_offset().saturating_add(limit as u64));
    while assembler.next_offset() < stop {
        let at = assembler.next_offset();
        let want = ((stop - at) as usize).min(buf.len());
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            assembler.flush(out);
            return Ok(true);
        }
        assembler.push(&buf[..n], out);
    }
    if assembler.next_offset() >= end {
        assembler.flush(out);
        return Ok(true);
    }
    Ok(false)
}

/// All lines of `file` in `[start, end)`.
#[cfg(test)]
fn read_lines(
    file: &File,
    framing: Framing,
    max_line_bytes: usize,
    start: u64,
    end: u64,
) -> Vec<LineOut> {
    let mut assembler = LineAssembler::new(framing, max_line_bytes, start);
    let mut out = Vec::new();
    while !read_some(file, &mut assembler, end, 7, &mut out).unwrap() {}
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(content: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        f
    }

    #[test]
    fn last_lines_start_finds_line_starts() {
        let f = file(b"a\nbb\nccc\n");
        assert_eq!(last_lines_start(&f, 9, 1).unwrap(), 5);
        assert_eq!(last_lines_start(&f, 9, 2).unwrap(), 2);
        assert_eq!(last_lines_start(&f, 9, 3).unwrap(), 0);
        assert_eq!(last_lines_start(&f, 9, 10).unwrap(), 0);
        assert_eq!(last_lines_start(&f, 5, 1).unwrap(), 2);
        assert_eq!(last_lines_start(&f, 9, 0).unwrap(), 9);
    }

    #[test]
    fn last_lines_start_crosses_blocks() {
        let mut content = Vec::new();
        for i in 0..50_000 {
            content.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let f = file(&content);
        let end = content.len() as u64;
        let start = last_lines_start(&f, end, 20_000).unwrap();
        let lines = read_lines(&f, Framing::Plain, 1024, start, end);
        assert_eq!(lines.len(), 20_000);
        assert_eq!(&lines[0].text[..], b"line 30000");
    }

    #[test]
    fn line_start_at_or_after_aligns() {
        let f = file(b"a\nbb\nccc\n");
        assert_eq!(line_start_at_or_after(&f, 0, 9).unwrap(), 0);
        assert_eq!(line_start_at_or_after(&f, 1, 9).unwrap(), 2);
        assert_eq!(line_start_at_or_after(&f, 2, 9).unwrap(), 2);
        assert_eq!(line_start_at_or_after(&f, 3, 9).unwrap(), 5);
        assert_eq!(line_start_at_or_after(&f, 9, 9).unwrap(), 9);
    }

    #[test]
    fn a_file_shorter_than_expected_ends_the_range() {
        let f = file(b"one\ntw");
        let lines = read_lines(&f, Framing::Plain, 1024, 0, 100);
        assert_eq!(lines.len(), 2);
        assert!(lines[1].unterminated);
    }

    #[test]
    fn since_uses_the_last_sample_before() {
        let f = file(b"a\nbb\nccc\n");
        let samples = [(0, 100), (2, 200), (5, 300)];
        assert_eq!(since_start(&f, &samples, 9, 250).unwrap(), 2);
        assert_eq!(since_start(&f, &samples, 9, 300).unwrap(), 5);
        assert_eq!(since_start(&f, &samples, 9, 50).unwrap(), 0);
        assert_eq!(since_start(&f, &[(5, 300)], 9, 50).unwrap(), 0);
    }

    #[test]
    fn read_lines_in_pieces_and_unterminated_end() {
        let f = file(b"one\ntwo\nthree");
        let mut assembler = LineAssembler::new(Framing::Plain, 1024, 4);
        let mut lines = Vec::new();
        assert!(!read_some(&f, &mut assembler, 13, 3, &mut lines).unwrap());
        assert!(read_some(&f, &mut assembler, 13, 100, &mut lines).unwrap());
        assert_eq!(
            lines.iter().map(|l| &l.text[..]).collect::<Vec<_>>(),
            [&b"two"[..], b"three"]
        );
        assert!(lines[1].unterminated);
    }
}

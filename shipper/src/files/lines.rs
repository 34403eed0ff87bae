//! Turning a file's bytes into lines, with their place in the file.
//!
//! [`LineAssembler`] is fed the bytes of one file generation in order and
//! emits [`LineOut`]s. Each line records the offset of its first byte and
//! how many bytes it consumed (`raw_len`, framing and newline included), so
//! `offset + raw_len` is where the next line starts and a checkpoint is
//! always at a line boundary. It does no I/O, so every rule is unit-tested:
//!
//! - a physical line ends at `\n`; the `\n` is not part of the text;
//! - a line longer than `max_line_bytes` is cut into pieces flagged
//!   `partial` (all but the last);
//! - framed lines (CRI, Docker) are decoded and their partial frames joined;
//!   a frame that does not decode is shipped raw and counted;
//! - bytes with no newline yet wait; [`LineAssembler::flush`] (after a quiet
//!   period, or when the task ended) ships them as an `unterminated` line.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use sluice_schema::multiline::Grouping;
use sluice_schema::pb::Stream;

use super::multiline::{Grouper, Through};
use crate::layout::Framing;

/// One line as the assembler emits it, borrowing its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRef<'a> {
    /// File offset of the line's first byte; with `source_id`, the line's
    /// unique name.
    pub offset: u64,
    /// File bytes this line accounts for, framing and `\n` included; 1 for
    /// each piece but the last of a cut framed line.
    pub raw_len: u32,
    /// From the framing, when it has one.
    pub ts_unix_nanos: Option<i64>,
    /// Stdout or stderr from the framing; `None` for plain text and
    /// undecodable frames.
    pub stream: Option<Stream>,
    /// The message: without `\n`, and for CRI and Docker without the framing;
    /// raw bytes when a frame did not decode.
    pub text: &'a [u8],
    /// The line was cut at `max_line_bytes` (or its frames stopped decoding)
    /// and continues in the next line.
    pub partial: bool,
    /// Shipped by `flush` with no `\n` after it (quiet period, task ended,
    /// or frames that said more follows and nothing did).
    pub unterminated: bool,
    /// `end()` is a place reading may resume from. False only inside a
    /// framed line cut into pieces: resuming there would split a frame.
    pub resume: bool,
}

impl LineRef<'_> {
    /// File offset just past this line: where the next line starts.
    pub fn end(&self) -> u64 {
        self.offset + self.raw_len as u64
    }
}

/// Where assembled lines go. The tracker encodes them straight into chunks;
/// a `Vec<LineOut>` collects owned copies (tests, tools).
pub trait LineSink {
    /// Takes one line; called in file order.
    fn line(&mut self, line: LineRef<'_>);
}

/// An owned [`LineRef`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineOut {
    /// File offset of the line's first byte.
    pub offset: u64,
    /// See [`LineRef::raw_len`].
    pub raw_len: u32,
    /// Time from the framing, unix nanoseconds; `None` for plain text.
    pub ts_unix_nanos: Option<i64>,
    /// See [`LineRef::stream`].
    pub stream: Option<Stream>,
    /// The line's text, copied.
    pub text: Bytes,
    /// See [`LineRef::partial`].
    pub partial: bool,
    /// See [`LineRef::unterminated`].
    pub unterminated: bool,
    /// See [`LineRef::resume`].
    pub resume: bool,
}

impl LineOut {
    /// File offset just past this line: where the next line starts.
    pub fn end(&self) -> u64 {
        self.offset + self.raw_len as u64
    }
}

impl LineSink for Vec<LineOut> {
    fn line(&mut self, l: LineRef<'_>) {
        self.push(LineOut {
            offset: l.offset,
            raw_len: l.raw_len,
            ts_unix_nanos: l.ts_unix_nanos,
            stream: l.stream,
            text: Bytes::copy_from_slice(l.text),
            partial: l.partial,
            unterminated: l.unterminated,
            resume: l.resume,
        });
    }
}

/// A framed line whose frames are being joined.
#[derive(Debug)]
struct Joining {
    offset: u64,
    text: Vec<u8>,
    ts_unix_nanos: Option<i64>,
    stream: Option<Stream>,
}

/// Cuts one file generation's bytes into lines, fed in file order; holds
/// an incomplete last line (and frames being joined) until it completes or
/// is flushed.
#[derive(Debug)]
pub struct LineAssembler {
    framing: Framing,
    max_line_bytes: usize,
    /// Bytes of a physical line whose `\n` has not been read yet.
    pending: Vec<u8>,
    /// File offset of `pending[0]`.
    pending_offset: u64,
    joining: Option<Joining>,
    /// Physical lines that did not match the framing.
    pub framing_errors: u64,
    /// Groups lines into multi-line events, when the source has a rule.
    grouper: Option<Grouper>,
    /// Recorded ends of unterminated lines an earlier run shipped (plain
    /// text): a line read whole now is cut there again.
    cuts: VecDeque<u64>,
}

impl LineAssembler {
    /// Starts at `offset`, which must be a line boundary.
    pub fn new(framing: Framing, max_line_bytes: usize, offset: u64) -> Self {
        LineAssembler {
            framing,
            max_line_bytes: max_line_bytes.max(16),
            pending: Vec::new(),
            pending_offset: offset,
            joining: None,
            framing_errors: 0,
            grouper: None,
            cuts: VecDeque::new(),
        }
    }

    /// Groups lines into multi-line events by `grouping`; `cuts` are the
    /// ends of events and unterminated lines that earlier runs shipped
    /// (checkpointed), where lines and events end again.
    pub fn with_grouping(mut self, grouping: Option<Arc<Grouping>>, cuts: &[u64]) -> Self {
        let mut sorted = cuts.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        self.cuts = sorted.into();
        self.grouper = grouping.map(|g| Grouper::new(g, self.cuts.clone()));
        self
    }

    /// How long a held multi-line event waits for more lines, when one is
    /// held.
    pub fn group_timeout(&self) -> Option<std::time::Duration> {
        let g = self.grouper.as_ref()?;
        g.held_offset()
            .map(|_| std::time::Duration::from_millis(g.timeout_ms()))
    }

    /// Ships the multi-line event held, if any (its timeout passed, or the
    /// file ended); returns where it ended.
    pub fn close_group(&mut self, out: &mut impl LineSink) -> Option<u64> {
        self.grouper.as_mut()?.close(out)
    }

    /// Framing errors counted since the last call, for the shipper's counter.
    pub fn take_framing_errors(&mut self) -> u64 {
        std::mem::take(&mut self.framing_errors)
    }

    /// Offset of the first byte not yet part of an emitted line: where
    /// reading must resume after a restart that loses this assembler.
    pub fn resume_offset(&self) -> u64 {
        if let Some(offset) = self.grouper.as_ref().and_then(Grouper::held_offset) {
            return offset;
        }
        self.joining
            .as_ref()
            .map_or(self.pending_offset, |j| j.offset)
    }

    /// Offset of the next byte expected by [`push`](Self::push).
    pub fn next_offset(&self) -> u64 {
        self.pending_offset + self.pending.len() as u64
    }

    /// Bytes held that are not yet lines.
    pub fn held_bytes(&self) -> usize {
        self.pending.len()
            + self.joining.as_ref().map_or(0, |j| j.text.len())
            + self.grouper.as_ref().map_or(0, Grouper::held_bytes)
    }

    /// Feeds the bytes that follow what was fed so far. Lines that lie
    /// whole inside `bytes` are emitted without being copied (or, with a
    /// multi-line rule, copied once into the event they belong to).
    pub fn push(&mut self, bytes: &[u8], out: &mut impl LineSink) {
        match self.grouper.take() {
            None => self.push_lines(bytes, out),
            Some(mut grouper) => {
                self.push_lines(
                    bytes,
                    &mut Through {
                        grouper: &mut grouper,
                        out,
                        buffer: bytes,
                    },
                );
                grouper.keep(bytes);
                self.grouper = Some(grouper);
            }
        }
    }

    /// Ships what is held as unterminated (quiet period or end of task);
    /// with a multi-line rule the line joins the event held, which
    /// [`close_group`](Self::close_group) ships. Returns where a plain
    /// unterminated line ended: a place no later read would end a line by
    /// itself, to be recorded as a cut.
    pub fn flush(&mut self, out: &mut impl LineSink) -> Option<u64> {
        match self.grouper.take() {
            None => self.flush_lines(out),
            Some(mut grouper) => {
                let cut = self.flush_lines(&mut Through {
                    grouper: &mut grouper,
                    out,
                    buffer: &[],
                });
                self.grouper = Some(grouper);
                cut
            }
        }
    }

    fn push_lines(&mut self, mut bytes: &[u8], out: &mut impl LineSink) {
        if !self.pending.is_empty() {
            let Some(i) = memchr::memchr(b'\n', bytes) else {
                self.pending.extend_from_slice(bytes);
                self.cut_long_pending(out);
                return;
            };
            self.pending.extend_from_slice(&bytes[..i]);
            bytes = &bytes[i + 1..];
            let line = std::mem::take(&mut self.pending);
            let offset = self.pending_offset;
            self.pending_offset += line.len() as u64 + 1;
            self.physical(offset, &line, line_len(line.len() + 1), out);
            self.pending = line;
            self.pending.clear();
        }
        let mut start = 0;
        for i in memchr::memchr_iter(b'\n', bytes) {
            let offset = self.pending_offset;
            self.pending_offset += (i + 1 - start) as u64;
            self.physical(offset, &bytes[start..i], line_len(i + 1 - start), out);
            start = i + 1;
        }
        if start < bytes.len() {
            self.pending.extend_from_slice(&bytes[start..]);
            self.cut_long_pending(out);
        }
    }

    fn flush_lines(&mut self, out: &mut impl LineSink) -> Option<u64> {
        let mut cut = None;
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            let offset = self.pending_offset;
            self.pending_offset += line.len() as u64;
            self.emit_raw(offset, &line, line_len(line.len()), false, true, out);
            if self.framing == Framing::Plain {
                cut = Some(self.pending_offset);
            }
        }
        if let Some(j) = self.joining.take() {
            // Frames said "more follows" but nothing did: ship what came.
            out.line(LineRef {
                offset: j.offset,
                raw_len: line_len((self.pending_offset - j.offset) as usize),
                ts_unix_nanos: j.ts_unix_nanos,
                stream: j.stream,
                text: &j.text,
                partial: false,
                unterminated: true,
                resume: true,
            });
        }
        cut
    }

    /// A physical line with no `\n` longer than the limit: plain text is cut
    /// into pieces; framed text can only be decoded whole, so past a hard
    /// bound it is shipped raw.
    fn cut_long_pending(&mut self, out: &mut impl LineSink) {
        let limit = match self.framing {
            Framing::Plain => self.max_line_bytes,
            _ => self.max_line_bytes * 4 + 4096,
        };
        if self.pending.len() <= limit {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let mut at = 0;
        while pending.len() - at > limit {
            let piece = &pending[at..at + self.max_line_bytes];
            let offset = self.pending_offset;
            self.pending_offset += piece.len() as u64;
            at += piece.len();
            if self.framing != Framing::Plain {
                self.framing_errors += 1;
            }
            self.emit_raw(
                offset,
                piece,
                line_len(self.max_line_bytes),
                true,
                false,
                out,
            );
        }
        self.pending = pending[at..].to_vec();
    }

    fn physical(&mut self, offset: u64, line: &[u8], raw_len: u32, out: &mut impl LineSink) {
        if self.framing == Framing::Plain {
            // A cut inside this line: an earlier run shipped its start as an
            // unterminated line; ship the same two lines again.
            while self.cuts.front().is_some_and(|&c| c <= offset) {
                self.cuts.pop_front();
            }
            if let Some(&cut) = self.cuts.front()
                && cut - offset <= line.len() as u64
            {
                self.cuts.pop_front();
                let (head, tail) = line.split_at((cut - offset) as usize);
                self.emit_raw(offset, head, line_len(head.len()), false, true, out);
                let end = offset + u64::from(raw_len);
                return self.physical(cut, tail, line_len((end - cut) as usize), out);
            }
            return self.emit_raw(offset, line, raw_len, false, false, out);
        }
        let frame = match self.framing.decode(line) {
            Ok(frame) => frame,
            Err(_) => {
                self.framing_errors += 1;
                // Whatever was being joined ends here, shipped as it is.
                self.flush_joining(offset, out);
                return self.emit_raw(offset, line, raw_len, false, false, out);
            }
        };
        let end = offset + raw_len as u64;
        // The common case, a whole line in one frame: no copy.
        if self.joining.is_none() && !frame.partial && frame.text.len() <= self.max_line_bytes {
            out.line(LineRef {
                offset,
                raw_len,
                ts_unix_nanos: frame.ts_unix_nanos,
                stream: frame.stream,
                text: &frame.text,
                partial: false,
                unterminated: false,
                resume: true,
            });
            return;
        }
        let joining = self.joining.get_or_insert_with(|| Joining {
            offset,
            text: Vec::new(),
            ts_unix_nanos: frame.ts_unix_nanos,
            stream: frame.stream,
        });
        joining.text.extend_from_slice(&frame.text);
        if frame.partial && joining.text.len() <= self.max_line_bytes {
            return;
        }
        let j = self.joining.take().unwrap();
        self.emit_joined(j, end, frame.partial, out);
    }

    fn flush_joining(&mut self, end: u64, out: &mut impl LineSink) {
        if let Some(j) = self.joining.take() {
            self.emit_joined(j, end, true, out);
        }
    }

    /// Emits a joined framed line, cut into pieces if it is too long. Pieces
    /// get distinct offsets that tile the line's raw bytes (piece `i` starts
    /// at `offset + i`, the last runs to the end), so `(source_id, offset)`
    /// stays unique; only the last piece's end is a resume point.
    fn emit_joined(&mut self, j: Joining, end: u64, continues: bool, out: &mut impl LineSink) {
        let mut text = &j.text[..];
        let mut offset = j.offset;
        while text.len() > self.max_line_bytes && offset + 1 < end {
            let (piece, rest) = text.split_at(self.max_line_bytes);
            out.line(LineRef {
                offset,
                raw_len: 1,
                ts_unix_nanos: j.ts_unix_nanos,
                stream: j.stream,
                text: piece,
                partial: true,
                unterminated: false,
                resume: false,
            });
            text = rest;
            offset += 1;
        }
        out.line(LineRef {
            offset,
            raw_len: line_len((end - offset) as usize),
            ts_unix_nanos: j.ts_unix_nanos,
            stream: j.stream,
            text,
            partial: continues,
            unterminated: false,
            resume: true,
        });
    }

    fn emit_raw(
        &mut self,
        offset: u64,
        text: &[u8],
        raw_len: u32,
        partial: bool,
        unterminated: bool,
        out: &mut impl LineSink,
    ) {
        let mut line = LineRef {
            offset,
            raw_len,
            ts_unix_nanos: None,
            stream: None,
            text,
            partial,
            unterminated,
            resume: true,
        };
        if text.len() <= self.max_line_bytes || self.framing != Framing::Plain {
            return out.line(line);
        }
        // A complete plain line longer than the limit (it arrived in one read).
        let end = offset + raw_len as u64;
        let mut text = text;
        let mut at = offset;
        while text.len() > self.max_line_bytes {
            let (piece, rest) = text.split_at(self.max_line_bytes);
            out.line(LineRef {
                offset: at,
                raw_len: line_len(piece.len()),
                text: piece,
                partial: true,
                unterminated: false,
                ..line
            });
            text = rest;
            at += self.max_line_bytes as u64;
        }
        line.offset = at;
        line.raw_len = line_len((end - at) as usize);
        line.text = text;
        out.line(line);
    }
}

fn line_len(n: usize) -> u32 {
    u32::try_from(n).expect("line pieces are bounded by max_line_bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(a: &mut LineAssembler, chunks: &[&[u8]]) -> Vec<LineOut> {
        let mut out = Vec::new();
        for c in chunks {
            a.push(c, &mut out);
        }
        out
    }

    fn texts(lines: &[LineOut]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.text).into_owned())
            .collect()
    }

    #[test]
    fn lines_carry_offsets_across_reads() {
        let mut a = LineAssembler::new(Framing::Plain, 1024, 100);
        let out = feed(&mut a, &[b"one\ntw", b"o\n\nthree"]);
        assert_eq!(texts(&out), ["one", "two", ""]);
        assert_eq!(
            out.iter()
                .map(|l| (l.offset, l.raw_len))
                .collect::<Vec<_>>(),
            [(100, 4), (104, 4), (108, 1)]
        );
        assert_eq!(a.resume_offset(), 109);
        assert_eq!(a.next_offset(), 114);
        let mut rest = Vec::new();
        a.flush(&mut rest);
        assert_eq!(texts(&rest), ["three"]);
        assert!(rest[0].unterminated);
        assert_eq!((rest[0].offset, rest[0].raw_len), (109, 5));
        assert_eq!(a.resume_offset(), 114);
    }

    #[test]
    fn long_lines_are_cut_into_flagged_pieces_that_tile_the_file() {
        let mut a = LineAssembler::new(Framing::Plain, 16, 0);
        let long = vec![b'x'; 40];
        let mut input = long.clone();
        input.extend_from_slice(b"\nok\n");
        for split in [1, 7, 44] {
            let mut a2 = LineAssembler::new(Framing::Plain, 16, 0);
            let mut out = Vec::new();
            for piece in input.chunks(split) {
                a2.push(piece, &mut out);
            }
            assert_eq!(
                texts(&out),
                ["x".repeat(16), "x".repeat(16), "x".repeat(8), "ok".into()],
                "split {split}"
            );
            assert_eq!(
                out.iter().map(|l| l.partial).collect::<Vec<_>>(),
                [true, true, false, false]
            );
            let mut at = 0;
            for l in &out {
                assert_eq!(l.offset, at, "pieces tile the file");
                at = l.end();
            }
            assert_eq!(at, input.len() as u64);
        }
        let out = feed(&mut a, &[&input]);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn invalid_utf8_and_nul_bytes_are_kept() {
        let mut a = LineAssembler::new(Framing::Plain, 64, 0);
        let out = feed(&mut a, &[b"\xff\xfe\x00ok\n"]);
        assert_eq!(&out[0].text[..], b"\xff\xfe\x00ok");
    }

    #[test]
    fn cri_partials_join_with_the_first_offset_and_last_end() {
        let mut a = LineAssembler::new(Framing::Cri, 1024, 0);
        let p = b"2024-01-02T03:04:05.000000006Z stdout P hel\n";
        let f = b"2024-01-02T03:04:05.100000000Z stdout F lo\n";
        let e = b"2024-01-02T03:04:06Z stderr F boom\n";
        let out = feed(&mut a, &[p, f, e]);
        assert_eq!(texts(&out), ["hello", "boom"]);
        assert_eq!(out[0].offset, 0);
        assert_eq!(out[0].raw_len as usize, p.len() + f.len());
        assert_eq!(out[0].ts_unix_nanos, Some(1_704_164_645_000_000_006));
        assert_eq!(out[0].stream, Some(Stream::Stdout));
        assert_eq!(out[1].stream, Some(Stream::Stderr));
        assert_eq!(out[1].end() as usize, p.len() + f.len() + e.len());
        assert_eq!(a.framing_errors, 0);
    }

    #[test]
    fn a_long_framed_line_is_cut_into_pieces_with_distinct_offsets() {
        let mut a = LineAssembler::new(Framing::Cri, 16, 0);
        let p = format!("2024-01-02T03:04:05Z stdout P {}\n", "a".repeat(20));
        let f = format!("2024-01-02T03:04:05Z stdout F {}\n", "b".repeat(20));
        let out = feed(&mut a, &[p.as_bytes(), f.as_bytes()]);
        let joined: String = texts(&out).concat();
        assert_eq!(joined, format!("{}{}", "a".repeat(20), "b".repeat(20)));
        assert!(out.iter().all(|l| l.text.len() <= 16));
        let mut at = 0;
        for l in &out {
            assert_eq!(l.offset, at, "pieces tile the raw bytes");
            at = l.end();
        }
        assert_eq!(at as usize, p.len() + f.len());
        // Each physical line that overflows is emitted at once, ending on a
        // resume point.
        assert_eq!(
            out.iter().map(|l| l.resume).collect::<Vec<_>>(),
            [false, true, false, true]
        );
    }

    #[test]
    fn a_bad_frame_is_shipped_raw_and_counted() {
        let mut a = LineAssembler::new(Framing::Cri, 1024, 0);
        let out = feed(&mut a, &[b"not cri at all\n"]);
        assert_eq!(texts(&out), ["not cri at all"]);
        assert_eq!(a.framing_errors, 1);
        // The shipper's counter takes what is new since it last looked, so
        // every file's errors add up instead of the last file's replacing them.
        assert_eq!(a.take_framing_errors(), 1);
        assert_eq!(a.take_framing_errors(), 0);
        feed(&mut a, &[b"again not cri\n", b"nor this\n"]);
        assert_eq!(a.take_framing_errors(), 2);
    }
}

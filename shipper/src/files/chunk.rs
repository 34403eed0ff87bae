//! Lines straight into `LogChunk` protobuf bytes.
//!
//! The tracker's hot path: [`ChunkEncoder`] is the [`LineSink`] the line
//! assembler writes to, and it appends each line's protobuf encoding to the
//! chunk being built, so a line is copied once (file buffer → chunk) and no
//! per-line value is allocated. The bytes are exactly what prost would
//! encode for the equivalent `LogChunk` (fields in number order, defaults
//! omitted); a test holds it to that.
//!
//! A chunk holds lines of one stream (framed layouts interleave stdout and
//! stderr in one file) up to `chunk_bytes` of text.

use bytes::Bytes;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use sluice_schema::pb::{Source, Stream};

use crate::files::lines::{LineRef, LineSink};

/// `LogChunk` field numbers (records.proto).
const CHUNK_SOURCE: u32 = 1;
const CHUNK_LINES: u32 = 2;
const CHUNK_SHIPPED_AT: u32 = 3;

/// One encoded chunk and what the tracker needs to know of it.
#[derive(Debug)]
pub(crate) struct EncodedChunk {
    /// A whole `LogChunk` message.
    pub payload: Bytes,
    pub lines: u64,
    /// Bytes of line text (at least 1, so every chunk counts in flight).
    pub bytes: usize,
    /// The furthest line end that reading may resume from, if any line
    /// of the chunk has one.
    pub resume_end: Option<u64>,
}

/// Builds the chunks of one read of one source.
pub(crate) struct ChunkEncoder<'a> {
    source: &'a Source,
    chunk_bytes: usize,
    /// Bytes of text expected in all, to size buffers.
    expected: usize,
    /// Time given to lines whose framing has none, and `shipped_at`.
    now: i64,
    done: Vec<EncodedChunk>,
    current: Option<Building>,
}

struct Building {
    buf: Vec<u8>,
    stream: Option<Stream>,
    lines: u64,
    text: usize,
    resume_end: Option<u64>,
}

impl<'a> ChunkEncoder<'a> {
    /// `expected`: about how many bytes of text will come (a read's size).
    pub(crate) fn new(source: &'a Source, chunk_bytes: usize, expected: usize, now: i64) -> Self {
        ChunkEncoder {
            source,
            chunk_bytes,
            expected,
            now,
            done: Vec::new(),
            current: None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.done.is_empty() && self.current.is_none()
    }

    /// The chunks, in line order.
    pub(crate) fn finish(mut self) -> Vec<EncodedChunk> {
        self.close();
        self.done
    }

    fn close(&mut self) {
        if let Some(mut b) = self.current.take() {
            if self.now != 0 {
                encode_key(CHUNK_SHIPPED_AT, WireType::Varint, &mut b.buf);
                encode_varint(self.now as u64, &mut b.buf);
            }
            self.done.push(EncodedChunk {
                payload: Bytes::from(b.buf),
                lines: b.lines,
                bytes: b.text.max(1),
                resume_end: b.resume_end,
            });
        }
    }

    fn open(&mut self, stream: Option<Stream>) -> &mut Building {
        let mut source = self.source.clone();
        if let Some(stream) = stream {
            source.stream = stream as i32;
        }
        // Text plus about 12 bytes of framing per line of ~100 bytes.
        let text = self.expected.min(self.chunk_bytes).min(8 << 20);
        let mut buf = Vec::with_capacity(text + text / 8 + 512);
        prost::encoding::message::encode(CHUNK_SOURCE, &source, &mut buf);
        self.current.insert(Building {
            buf,
            stream,
            lines: 0,
            text: 0,
            resume_end: None,
        })
    }
}

impl LineSink for ChunkEncoder<'_> {
    fn line(&mut self, line: LineRef<'_>) {
        let fits = self.current.as_ref().is_some_and(|b| {
            b.stream == line.stream && b.text + line.text.len() <= self.chunk_bytes
        });
        if !fits {
            self.close();
            self.open(line.stream);
        }
        let now = self.now;
        let b = self.current.as_mut().unwrap();
        encode_line(&mut b.buf, &line, line.ts_unix_nanos.unwrap_or(now));
        b.lines += 1;
        b.text += line.text.len();
        if line.resume {
            b.resume_end = Some(b.resume_end.map_or(line.end(), |e| e.max(line.end())));
        }
    }
}

/// Appends field 2 of `LogChunk`: one `Line` message.
fn encode_line(buf: &mut Vec<u8>, l: &LineRef<'_>, ts: i64) {
    let varint = |tag: u32, v: u64| {
        if v == 0 {
            0
        } else {
            key_len(tag) + encoded_len_varint(v)
        }
    };
    let text = l.text.len() as u64;
    let len = varint(1, l.offset)
        + varint(2, l.raw_len as u64)
        + varint(3, ts as u64)
        + if text == 0 {
            0
        } else {
            key_len(4) + encoded_len_varint(text) + l.text.len()
        }
        + if l.partial { 2 } else { 0 }
        + if l.unterminated { 2 } else { 0 };
    buf.reserve(len + 12);
    buf.push(key_byte(CHUNK_LINES, WireType::LengthDelimited));
    put_varint(buf, len as u64);
    for (tag, v) in [(1, l.offset), (2, l.raw_len as u64), (3, ts as u64)] {
        if v != 0 {
            buf.push(key_byte(tag, WireType::Varint));
            put_varint(buf, v);
        }
    }
    if text != 0 {
        buf.push(key_byte(4, WireType::LengthDelimited));
        put_varint(buf, text);
        buf.extend_from_slice(l.text);
    }
    // `truncated` (6) is never set by the shipper.
    for (tag, flag) in [(5, l.partial), (7, l.unterminated)] {
        if flag {
            buf.extend_from_slice(&[key_byte(tag, WireType::Varint), 1]);
        }
    }
}

/// The one-byte key of a field numbered below 16.
fn key_byte(tag: u32, wire_type: WireType) -> u8 {
    debug_assert!(tag < 16);
    ((tag << 3) | wire_type as u32) as u8
}

/// prost's `encode_varint` writes byte by byte through `BufMut`; lines are
/// small enough for that to show in profiles.
fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 10];
    let mut i = 0;
    while v >= 0x80 {
        tmp[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    tmp[i] = v as u8;
    buf.extend_from_slice(&tmp[..=i]);
}

/// The `job/instance` bus key of a source's chunks.
pub(crate) fn chunk_key(source: &Source) -> String {
    format!("{}/{}", source.job, source.instance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message as _;
    use sluice_schema::pb::{Line, LogChunk};

    fn source() -> Source {
        Source {
            host: "node-1".into(),
            job: "www/prod/web".into(),
            instance: 3,
            task_id: "t-1".into(),
            run: 2,
            process: "main".into(),
            stream: Stream::Stdout as i32,
            path: "/s/t-1/logs/run-2/main.stdout".into(),
            source_id: 0xfeed,
            ..Default::default()
        }
    }

    fn reference(lines: &[(LineRef<'_>, Option<Stream>)], now: i64) -> LogChunk {
        let mut s = source();
        if let Some(stream) = lines[0].1 {
            s.stream = stream as i32;
        }
        LogChunk {
            source: Some(s),
            lines: lines
                .iter()
                .map(|(l, _)| Line {
                    offset: l.offset,
                    raw_len: l.raw_len,
                    ts_unix_nanos: l.ts_unix_nanos.unwrap_or(now),
                    text: Bytes::copy_from_slice(l.text),
                    partial: l.partial,
                    truncated: false,
                    unterminated: l.unterminated,
                })
                .collect(),
            shipped_at_unix_nanos: now,
        }
    }

    proptest! {
        #[test]
        fn encodes_exactly_what_prost_encodes(
            lines in prop::collection::vec(
                (any::<u64>(), any::<u32>(), prop::option::of(any::<i64>()),
                 prop::collection::vec(any::<u8>(), 0..300), any::<bool>(), any::<bool>()),
                1..40),
            now in any::<i64>(),
        ) {
            let s = source();
            let mut enc = ChunkEncoder::new(&s, usize::MAX / 2, 4096, now);
            let refs: Vec<(LineRef<'_>, Option<Stream>)> = lines
                .iter()
                .map(|(offset, raw_len, ts, text, partial, unterminated)| (LineRef {
                    offset: *offset,
                    raw_len: *raw_len,
                    ts_unix_nanos: *ts,
                    stream: None,
                    text,
                    partial: *partial,
                    unterminated: *unterminated,
                    resume: true,
                }, None))
                .collect();
            for (l, _) in &refs {
                enc.line(*l);
            }
            let chunks = enc.finish();
            prop_assert_eq!(chunks.len(), 1);
            prop_assert_eq!(&chunks[0].payload[..], &reference(&refs, now).encode_to_vec()[..]);
        }
    }

    #[test]
    fn chunks_split_on_stream_and_size_and_track_resume_points() {
        let s = source();
        let mut enc = ChunkEncoder::new(&s, 10, 10, 7);
        let line = |offset: u64, text: &'static [u8], stream, resume| LineRef {
            offset,
            raw_len: text.len() as u32 + 1,
            ts_unix_nanos: None,
            stream,
            text,
            partial: false,
            unterminated: false,
            resume,
        };
        enc.line(line(0, b"aaaa", None, true));
        enc.line(line(5, b"bbbb", None, false));
        enc.line(line(10, b"cccc", None, true)); // over 10 bytes: a new chunk
        enc.line(line(15, b"dd", Some(Stream::Stderr), true)); // new stream
        let chunks = enc.finish();
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            chunks.iter().map(|c| c.lines).collect::<Vec<_>>(),
            [2, 1, 1]
        );
        assert_eq!(chunks[0].resume_end, Some(5));
        assert_eq!(chunks[1].resume_end, Some(15));
        let last = LogChunk::decode(chunks[2].payload.clone()).unwrap();
        assert_eq!(last.source.unwrap().stream, Stream::Stderr as i32);
        assert_eq!(&last.lines[0].text[..], b"dd");
        assert_eq!(last.shipped_at_unix_nanos, 7);
    }
}

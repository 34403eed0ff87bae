//! Multi-line events: consecutive lines a job's rule
//! ([`sluice_schema::multiline`]) says belong together are shipped as one
//! line whose text is theirs joined by `\n` (newlines kept), whose `offset`
//! is the first line's and whose `raw_len` covers them all, so `offset +
//! raw_len` is still where the next record starts and the archive's
//! de-duplication by `(source_id, offset)` still holds.
//!
//! [`Grouper`] sits between the [`LineAssembler`](super::lines::LineAssembler)
//! and the chunk encoder. It holds the event being built (a copy of its
//! lines' text; a single line still in the buffer being pushed is held as
//! a range of it, copied only if the next line continues it or the push
//! ends) until a line starts the next one, and the assembler reports
//! the held event's first offset as its resume point: a checkpoint never
//! passes a half-built event, so after a `kill -9` the event is read again
//! from its first line, whole, and never half-shipped.
//!
//! Where events end depends only on the file's bytes, except when the
//! tracker closes one because the file stopped growing (the rule's
//! timeout), or ships an unterminated last line: a line written later
//! would otherwise join it when the file is read again. The tracker records
//! such an end as a *cut* in the source's checkpoint before shipping, and a
//! grouper built with the cuts ends events there again.

use std::collections::VecDeque;
use std::sync::Arc;

use sluice_schema::multiline::{Grouping, MAX_GROUP_BYTES, MAX_GROUP_LINES};
use sluice_schema::pb::Stream;

use super::lines::{LineRef, LineSink};

/// The event being built (its text is the grouper's `text`).
#[derive(Debug)]
struct Group {
    offset: u64,
    end: u64,
    ts_unix_nanos: Option<i64>,
    stream: Option<Stream>,
    lines: u32,
    unterminated: bool,
}

/// Groups the lines of one file generation (see the module documentation).
#[derive(Debug)]
pub struct Grouper {
    grouping: Arc<Grouping>,
    group: Option<Group>,
    /// The held event's text; kept between events, so grouping allocates
    /// nothing once it has seen the longest event.
    text: Vec<u8>,
    /// While a buffer is being pushed: the held event is one line that lies
    /// in it at this range, not yet copied into `text` (most lines start an
    /// event and end it: they are never copied). Copied before the push
    /// returns ([`Grouper::keep`]).
    in_buffer: Option<(usize, usize)>,
    /// Recorded ends of events (ascending) not yet reached.
    cuts: VecDeque<u64>,
}

impl Grouper {
    /// A grouper applying `grouping`, ending events at `cuts` (offsets
    /// recorded by earlier runs, ascending) as well.
    pub fn new(grouping: Arc<Grouping>, cuts: VecDeque<u64>) -> Grouper {
        Grouper {
            grouping,
            group: None,
            text: Vec::new(),
            in_buffer: None,
            cuts,
        }
    }

    /// First offset of the event held, if one is.
    pub fn held_offset(&self) -> Option<u64> {
        self.group.as_ref().map(|g| g.offset)
    }

    /// Bytes of text held.
    pub fn held_bytes(&self) -> usize {
        self.group.as_ref().map_or(0, |_| self.text.len().max(1))
    }

    /// How long an event waits for more lines, in milliseconds.
    pub fn timeout_ms(&self) -> u64 {
        self.grouping.timeout_ms
    }

    /// Copies a held line that lies in `buffer` into the grouper's own
    /// text: the buffer is about to go.
    pub fn keep(&mut self, buffer: &[u8]) {
        if let Some((start, end)) = self.in_buffer.take() {
            self.text.extend_from_slice(&buffer[start..end]);
        }
    }

    /// Takes the next line in file order. A line that lies in `buffer`
    /// (the bytes being pushed; empty when lines come from elsewhere) is
    /// held where it is, not copied.
    pub fn line_in(&mut self, buffer: &[u8], line: LineRef<'_>, out: &mut impl LineSink) {
        while let Some(&cut) = self.cuts.front() {
            if cut > line.offset {
                break;
            }
            self.cuts.pop_front();
            if self.group.as_ref().is_some_and(|g| cut > g.offset) {
                self.close_in(buffer, out);
            }
        }
        // Pieces of a line cut for length (and of framed lines) are not
        // grouped: they pass through, after what is held.
        if line.partial || !line.resume {
            self.close_in(buffer, out);
            return out.line(line);
        }
        let joins = self.group.as_ref().is_some_and(|g| {
            g.stream == line.stream
                && !g.unterminated
                && g.end == line.offset
                && g.lines < MAX_GROUP_LINES
                && self.text.len() + 1 + line.text.len() <= MAX_GROUP_BYTES
        }) && self.grouping.continues(line.text);
        if joins {
            self.keep(buffer);
            let g = self.group.as_mut().expect("joins only a held group");
            self.text.push(b'\n');
            self.text.extend_from_slice(line.text);
            g.end = line.end();
            g.lines += 1;
            g.unterminated = line.unterminated;
            return;
        }
        self.close_in(buffer, out);
        match within(buffer, line.text) {
            Some(range) => self.in_buffer = Some(range),
            None => self.text.extend_from_slice(line.text),
        }
        self.group = Some(Group {
            offset: line.offset,
            end: line.end(),
            ts_unix_nanos: line.ts_unix_nanos,
            stream: line.stream,
            lines: 1,
            unterminated: line.unterminated,
        });
    }

    /// Ships the event held, if any; returns where it ended.
    pub fn close(&mut self, out: &mut impl LineSink) -> Option<u64> {
        debug_assert!(self.in_buffer.is_none(), "kept before the buffer went");
        self.close_in(&[], out)
    }

    fn close_in(&mut self, buffer: &[u8], out: &mut impl LineSink) -> Option<u64> {
        let g = self.group.take()?;
        let text = match self.in_buffer.take() {
            Some((start, end)) => &buffer[start..end],
            None => &self.text[..],
        };
        out.line(LineRef {
            offset: g.offset,
            raw_len: u32::try_from(g.end - g.offset).unwrap_or(u32::MAX),
            ts_unix_nanos: g.ts_unix_nanos,
            stream: g.stream,
            text,
            partial: false,
            unterminated: g.unterminated,
            resume: true,
        });
        self.text.clear();
        // An unusually long event does not keep its memory.
        if self.text.capacity() > 64 << 10 {
            self.text = Vec::new();
        }
        Some(g.end)
    }
}

/// Where `part` lies in `buffer`, if it is a piece of it.
fn within(buffer: &[u8], part: &[u8]) -> Option<(usize, usize)> {
    let (b, p) = (buffer.as_ptr() as usize, part.as_ptr() as usize);
    let start = p.checked_sub(b)?;
    let end = start + part.len();
    (end <= buffer.len() && !buffer.is_empty()).then_some((start, end))
}

/// A [`LineSink`] that hands lines to a grouper on their way to `out`.
pub struct Through<'a, S> {
    /// The grouper.
    pub grouper: &'a mut Grouper,
    /// Where events go.
    pub out: &'a mut S,
    /// The bytes being pushed (lines that lie in them are held without a
    /// copy until the push ends); empty when lines come from elsewhere.
    pub buffer: &'a [u8],
}

impl<S: LineSink> LineSink for Through<'_, S> {
    fn line(&mut self, line: LineRef<'_>) {
        self.grouper.line_in(self.buffer, line, self.out);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use sluice_schema::multiline::{Multiline, Rule};

    use super::*;
    use crate::files::lines::{LineAssembler, LineOut};
    use crate::layout::Framing;

    fn assembler(rule: Rule, cuts: &[u64]) -> LineAssembler {
        let grouping = Grouping::new(&Multiline::new(rule)).unwrap();
        LineAssembler::new(Framing::Plain, 4096, 0).with_grouping(Some(Arc::new(grouping)), cuts)
    }

    fn texts(lines: &[LineOut]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.text).into_owned())
            .collect()
    }

    #[test]
    fn a_java_trace_is_one_record_with_the_first_offset_and_all_bytes() {
        let file = "INFO start\nERROR batch 28 failed\njava.lang.OutOfMemoryError: heap\n\tat a.B.c(B.java:1)\n\t... 3 more\nCaused by: x.Y\nINFO next\n";
        let mut a = assembler(Rule::Java, &[]);
        let mut out = Vec::new();
        a.push(file.as_bytes(), &mut out);
        assert_eq!(
            texts(&out),
            [
                "INFO start",
                "ERROR batch 28 failed\njava.lang.OutOfMemoryError: heap\n\tat a.B.c(B.java:1)\n\t... 3 more\nCaused by: x.Y"
            ]
        );
        assert_eq!(out[1].offset, 11);
        assert_eq!(out[1].end(), file.find("INFO next").unwrap() as u64);
        // The last line waits for what may continue it: reading resumes there.
        assert_eq!(a.resume_offset(), out[1].end());
        assert!(a.group_timeout().is_some());
        assert_eq!(a.close_group(&mut out), Some(file.len() as u64));
        assert_eq!(texts(&out)[2], "INFO next");
        assert_eq!(a.resume_offset(), file.len() as u64);
    }

    #[test]
    fn a_start_rule_and_the_size_limits_end_events() {
        let mut a = assembler(Rule::Start(r"^\d".into()), &[]);
        let mut out = Vec::new();
        a.push(b"1 a\n b\n c\n2 d\n3 e\n f\n", &mut out);
        a.close_group(&mut out);
        assert_eq!(texts(&out), ["1 a\n b\n c", "2 d", "3 e\n f"]);
        let mut a = assembler(Rule::Continue(".".into()), &[]);
        let mut out = Vec::new();
        let many = "x\n".repeat(MAX_GROUP_LINES as usize + 5);
        a.push(many.as_bytes(), &mut out);
        a.close_group(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].text.split(|&b| b == b'\n').count(),
            MAX_GROUP_LINES as usize
        );
    }

    /// Reads `file` in `reads` pieces; after the pieces listed in `quiet`
    /// the file "went quiet": the unterminated line is flushed and the
    /// event closed, as the tracker does, and the ends returned are the
    /// cuts. Returns the records and the cuts.
    fn run(
        rule: &Rule,
        file: &[u8],
        reads: &[usize],
        quiet: &[usize],
        cuts: &[u64],
    ) -> (Vec<LineOut>, Vec<u64>) {
        let mut a = assembler(rule.clone(), cuts);
        let mut out: Vec<LineOut> = Vec::new();
        let mut recorded = Vec::new();
        let mut at = 0;
        for (i, &n) in reads.iter().enumerate() {
            let end = (at + n).min(file.len());
            let before = out.len();
            let resume = a.resume_offset();
            a.push(&file[at..end], &mut out);
            at = end;
            if quiet.contains(&i) {
                recorded.extend(a.flush(&mut out));
                recorded.extend(a.close_group(&mut out));
            }
            // Nothing emitted starts before the resume point reported
            // before it: a checkpoint never passes unshipped bytes.
            assert!(out[before..].iter().all(|l| l.offset >= resume));
        }
        a.push(&file[at..], &mut out);
        a.flush(&mut out);
        a.close_group(&mut out);
        (out, recorded)
    }

    fn line_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "(ERROR|INFO) [a-z]{0,6}",
            "\tat [a-z.]{1,8}",
            "Caused by: [a-z]{1,5}",
            "[a-z]{1,4}Exception: x",
            "",
            "[ -~]{0,12}",
        ]
    }

    fn rule_strategy() -> impl Strategy<Value = Rule> {
        prop_oneof![
            Just(Rule::Java),
            Just(Rule::Python),
            Just(Rule::Go),
            Just(Rule::Start("^(ERROR|INFO)".into())),
            Just(Rule::Continue(r"^\s".into())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Grouping then splitting gives back the file's bytes: records
        /// tile the file, each record's text is its lines joined by `\n`.
        #[test]
        fn grouping_then_splitting_gives_back_the_bytes(
            rule in rule_strategy(),
            lines in proptest::collection::vec(line_strategy(), 0..40),
            unterminated in any::<bool>(),
            reads in proptest::collection::vec(1usize..64, 1..40),
            quiet in proptest::collection::vec(0usize..40, 0..4),
        ) {
            let mut file = lines.join("\n");
            if !unterminated && !lines.is_empty() {
                file.push('\n');
            }
            let (records, _) = run(&rule, file.as_bytes(), &reads, &quiet, &[]);
            let mut rebuilt = Vec::new();
            let mut next = 0;
            for r in &records {
                prop_assert_eq!(r.offset, next, "records tile the file");
                rebuilt.extend_from_slice(&r.text);
                if !r.unterminated {
                    rebuilt.push(b'\n');
                }
                prop_assert_eq!(rebuilt.len() as u64, r.end());
                next = r.end();
            }
            prop_assert_eq!(rebuilt, file.as_bytes());
        }

        /// Read again from the start after a crash, with the cuts the first
        /// run recorded, in other pieces: the same records, so the
        /// archive's de-duplication by offset drops exactly the re-sent
        /// ones and nothing is lost.
        #[test]
        fn a_re_read_with_the_recorded_cuts_forms_the_same_records(
            rule in rule_strategy(),
            lines in proptest::collection::vec(line_strategy(), 1..40),
            reads in proptest::collection::vec(1usize..64, 1..40),
            quiet in proptest::collection::vec(0usize..40, 0..6),
            again in proptest::collection::vec(1usize..200, 1..10),
        ) {
            let file = lines.join("\n") + "\n";
            let (first, cuts) = run(&rule, file.as_bytes(), &reads, &quiet, &[]);
            let (second, _) = run(&rule, file.as_bytes(), &again, &[], &cuts);
            prop_assert_eq!(texts(&first), texts(&second));
            let offsets = |r: &[LineOut]| r.iter().map(|l| (l.offset, l.raw_len)).collect::<Vec<_>>();
            prop_assert_eq!(offsets(&first), offsets(&second));
        }
    }

    /// The same holds without a multi-line rule: an unterminated line
    /// shipped after a quiet period is cut in the same place when read
    /// again, instead of coming back whole under the same offset (which
    /// the archive would drop, losing its end).
    #[test]
    fn a_re_read_cuts_an_unterminated_line_where_it_was_shipped() {
        let mut a = LineAssembler::new(Framing::Plain, 4096, 0);
        let mut out = Vec::new();
        a.push(b"one\ntw", &mut out);
        let cut = a.flush(&mut out);
        assert_eq!(cut, Some(6));
        a.push(b"o\nthree\n", &mut out);
        let mut b = LineAssembler::new(Framing::Plain, 4096, 0).with_grouping(None, &[6]);
        let mut again = Vec::new();
        b.push(b"one\ntwo\nthree\n", &mut again);
        assert_eq!(out, again);
        assert_eq!(texts(&again), ["one", "tw", "o", "three"]);
        assert!(again[1].unterminated);
    }
}

/// What grouping costs the line assembler, apart from reading and
/// encoding: `SLUICE_CORPUS=DIR cargo test --release -p sluice-shipper
/// --lib measure_grouping_cost -- --ignored --nocapture` (the `*.log` files
/// of DIR, read in 64 KiB pieces as the tracker reads; best of 5).
#[cfg(test)]
#[test]
#[ignore = "measurement: run in release with --ignored --nocapture"]
fn measure_grouping_cost() {
    use sluice_schema::multiline::{Multiline, Rule};

    use crate::files::lines::LineAssembler;
    use crate::layout::Framing;

    struct Count(usize, usize);
    impl LineSink for Count {
        fn line(&mut self, line: LineRef<'_>) {
            self.0 += 1;
            self.1 += line.text.len();
        }
    }
    let Some(dir) = std::env::var_os("SLUICE_CORPUS") else {
        eprintln!("set SLUICE_CORPUS");
        return;
    };
    let mut text = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().extension().is_some_and(|x| x == "log") {
            text.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    let grouping = Arc::new(Grouping::new(&Multiline::new(Rule::Java)).unwrap());
    for rule in [false, true] {
        let best = (0..5)
            .map(|_| {
                let start = std::time::Instant::now();
                let mut a = LineAssembler::new(Framing::Plain, 65536, 0)
                    .with_grouping(rule.then(|| grouping.clone()), &[]);
                let mut out = Count(0, 0);
                for piece in text.chunks(64 << 10) {
                    a.push(piece, &mut out);
                }
                a.close_group(&mut out);
                std::hint::black_box(out.1);
                (start.elapsed(), out.0)
            })
            .min()
            .unwrap();
        println!(
            "{} MB, rule {rule}: {:.3} s, {} records, {:.0} MB/s",
            text.len() >> 20,
            best.0.as_secs_f64(),
            best.1,
            text.len() as f64 / 1048576.0 / best.0.as_secs_f64()
        );
    }
}

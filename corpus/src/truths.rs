//! What any correct reader of a [`Cluster`]'s logs must find in them.
//!
//! Counts come from the layout (which job, instance and time logged each
//! line) and from what the generator planted (needles, levels). Word counts
//! use [`tokens`], a plain statement of the search rule ("a token is a run
//! of letters and digits, compared without case"), applied to the text the
//! generator wrote, not to anything Sluice stored.

use std::collections::BTreeMap;

use crate::{Cluster, Level};

const HOUR: i64 = 3_600_000_000_000;

/// Where a needle is: one line of one stream.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NeedleHit {
    /// The line's time (its event's), in Unix nanoseconds.
    pub ts: i64,
    /// Job key `role/env/name`.
    pub job: String,
    /// Which instance of `job` logged the line.
    pub instance: u32,
    /// The line's byte offset in the stream written as a file, each line
    /// ended by `\n`.
    pub offset: u64,
    /// The line's bytes, without the newline.
    pub line: Vec<u8>,
}

/// Counts and places a correct reader must reproduce.
#[derive(Debug, Clone, Default)]
pub struct Truths {
    /// Lines per job.
    pub lines: BTreeMap<String, u64>,
    /// Instances per job.
    pub instances: BTreeMap<String, u32>,
    /// Lines per (job, start of the UTC hour in Unix nanoseconds).
    pub lines_per_hour: BTreeMap<(String, i64), u64>,
    /// Lines per (job, level of the event they belong to).
    pub lines_per_level: BTreeMap<(String, Level), u64>,
    /// Events per job (a stack trace is one event of several lines).
    pub events: BTreeMap<String, u64>,
    /// (first, last) line time per job.
    pub span: BTreeMap<String, (i64, i64)>,
    /// Lines holding each counted word (or phrase), per (word, job).
    pub word_lines: BTreeMap<(String, String), u64>,
    /// Every needle and where it is, in time order.
    pub needles: BTreeMap<String, Vec<NeedleHit>>,
}

impl Truths {
    pub(crate) fn of(cluster: &Cluster, words: &[&str]) -> Truths {
        let mut t = Truths::default();
        let words: Vec<(String, Vec<String>)> = words
            .iter()
            .map(|w| (w.to_string(), tokens(w.as_bytes())))
            .collect();
        for stream in &cluster.streams {
            let job = &stream.job;
            let instances = t.instances.entry(job.clone()).or_default();
            *instances = (*instances).max(stream.instance + 1);
            let mut offset = 0u64;
            for (ts, event) in &stream.events {
                *t.events.entry(job.clone()).or_default() += 1;
                for (i, line) in event.lines.iter().enumerate() {
                    *t.lines.entry(job.clone()).or_default() += 1;
                    *t.lines_per_hour
                        .entry((job.clone(), ts - ts.rem_euclid(HOUR)))
                        .or_default() += 1;
                    *t.lines_per_level
                        .entry((job.clone(), event.level))
                        .or_default() += 1;
                    let span = t.span.entry(job.clone()).or_insert((*ts, *ts));
                    span.0 = span.0.min(*ts);
                    span.1 = span.1.max(*ts);
                    let line_tokens = tokens(line);
                    for (word, phrase) in &words {
                        if contains(&line_tokens, phrase) {
                            *t.word_lines.entry((word.clone(), job.clone())).or_default() += 1;
                        }
                    }
                    if i == 0
                        && let Some(needle) = &event.needle
                    {
                        t.needles
                            .entry(needle.clone())
                            .or_default()
                            .push(NeedleHit {
                                ts: *ts,
                                job: job.clone(),
                                instance: stream.instance,
                                offset,
                                line: line.clone(),
                            });
                    }
                    offset += line.len() as u64 + 1;
                }
            }
        }
        for hits in t.needles.values_mut() {
            hits.sort();
        }
        t
    }

    /// Lines of `job` holding `word` (one of the words the truths were
    /// made with; a phrase if it has several tokens).
    pub fn lines_with_word(&self, word: &str, job: &str) -> u64 {
        self.word_lines
            .get(&(word.to_string(), job.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Lines holding `word`, every job together.
    pub fn lines_with_word_anywhere(&self, word: &str) -> u64 {
        self.word_lines
            .iter()
            .filter(|((w, _), _)| w == word)
            .map(|(_, n)| n)
            .sum()
    }

    /// Lines of every job together.
    pub fn total_lines(&self) -> u64 {
        self.lines.values().sum()
    }
}

/// The search rule, stated plainly: the line as UTF-8 (invalid bytes
/// replaced), cut into maximal runs of alphanumeric characters, lowercased.
pub fn tokens(line: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(line)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether `phrase` occurs in `tokens` as consecutive tokens.
fn contains(tokens: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty() && tokens.windows(phrase.len()).any(|w| w == phrase)
}

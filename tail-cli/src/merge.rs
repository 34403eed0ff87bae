//! The reorder window: lines of many sources, merged by timestamp.
//!
//! Each source (one file generation on one node) is a queue whose order is
//! never changed: a line leaves only after every line that arrived before
//! it from the same source. Across queues, the line with the smallest
//! timestamp leaves first. A line waits at most `window` after it arrived:
//! when the line that arrived first has waited that long it is printed,
//! after every queue head with a smaller timestamp (those leave early, which
//! only makes them faster). So lines from different nodes that arrive within
//! the window of each other come out in timestamp order, and no line is
//! held longer than the window however skewed the nodes' clocks are.
//!
//! Costs: two ordered-set operations per line; the entries held are those
//! of one window (or of the backfill, which is held until every node sent
//! its own).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Which queue: the caller's id for a source.
pub type QueueId = u64;

struct Entry<T> {
    ts: i64,
    seq: u64,
    arrived: Instant,
    item: T,
}

/// The reorder window (see the module docs): per-source queues of `T`s,
/// handed out by timestamp, none held longer than `window`.
pub struct Merger<T> {
    window: Duration,
    queues: HashMap<QueueId, VecDeque<Entry<T>>>,
    /// Queue heads by (timestamp, arrival).
    by_ts: BTreeSet<(i64, u64, QueueId)>,
    /// Queue heads by arrival; the first is the oldest entry held.
    by_seq: BTreeSet<(u64, QueueId)>,
    next_seq: u64,
    len: usize,
}

impl<T> Merger<T> {
    /// An empty merger; an entry waits at most `window` after it arrived.
    pub fn new(window: Duration) -> Self {
        Merger {
            window,
            queues: HashMap::new(),
            by_ts: BTreeSet::new(),
            by_seq: BTreeSet::new(),
            next_seq: 0,
            len: 0,
        }
    }

    /// Entries held, in all queues.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds an entry at the back of `queue`.
    pub fn push(&mut self, queue: QueueId, ts: i64, arrived: Instant, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let entries = self.queues.entry(queue).or_default();
        if entries.is_empty() {
            self.by_ts.insert((ts, seq, queue));
            self.by_seq.insert((seq, queue));
        }
        entries.push_back(Entry {
            ts,
            seq,
            arrived,
            item,
        });
        self.len += 1;
    }

    /// When the oldest entry must leave.
    pub fn deadline(&self) -> Option<Instant> {
        let (_, queue) = self.by_seq.first()?;
        let head = self.queues.get(queue)?.front()?;
        Some(head.arrived + self.window)
    }

    /// Hands out, in order, every entry that must leave by `now`.
    pub fn pop_due(&mut self, now: Instant, mut out: impl FnMut(T)) {
        while let Some(deadline) = self.deadline() {
            if deadline > now {
                break;
            }
            let (oldest, _) = *self.by_seq.first().expect("a deadline has a head");
            // Everything before the oldest in timestamp order, then it.
            loop {
                let (item, seq) = self.pop_first();
                out(item);
                if seq == oldest {
                    break;
                }
            }
        }
    }

    /// Hands out everything, in order.
    pub fn drain(&mut self, mut out: impl FnMut(T)) {
        while !self.by_ts.is_empty() {
            out(self.pop_first().0);
        }
    }

    /// Removes the head with the smallest timestamp.
    fn pop_first(&mut self) -> (T, u64) {
        let (_, seq, queue) = self.by_ts.pop_first().expect("not empty");
        self.by_seq.remove(&(seq, queue));
        let entries = self.queues.get_mut(&queue).expect("a head has a queue");
        let entry = entries.pop_front().expect("a head has an entry");
        match entries.front() {
            Some(next) => {
                self.by_ts.insert((next.ts, next.seq, queue));
                self.by_seq.insert((next.seq, queue));
            }
            None => {
                self.queues.remove(&queue);
            }
        }
        self.len -= 1;
        (entry.item, entry.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn entries_arriving_within_the_window_leave_in_timestamp_order() {
        let t0 = Instant::now();
        let mut m = Merger::new(ms(30));
        m.push(1, 300, t0, "a300");
        m.push(2, 100, t0 + ms(10), "b100");
        m.push(3, 200, t0 + ms(20), "c200");
        let mut out = Vec::new();
        m.pop_due(t0 + ms(29), |x| out.push(x));
        assert!(out.is_empty(), "nothing is due yet");
        assert_eq!(m.deadline(), Some(t0 + ms(30)));
        m.pop_due(t0 + ms(30), |x| out.push(x));
        // a300 was due; b100 and c200 sort before it and leave with it.
        assert_eq!(out, ["b100", "c200", "a300"]);
        assert!(m.is_empty());
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn a_queue_keeps_its_order_whatever_the_timestamps() {
        let t0 = Instant::now();
        let mut m = Merger::new(ms(30));
        m.push(1, 500, t0, "a1");
        m.push(1, 100, t0, "a2");
        m.push(2, 300, t0, "b1");
        let mut out = Vec::new();
        m.drain(|x| out.push(x));
        assert_eq!(out, ["b1", "a1", "a2"]);
    }

    #[test]
    fn no_entry_waits_longer_than_the_window() {
        // Node 2's clock is far behind: its lines always sort first, but
        // node 1's line leaves once it has waited the window.
        let t0 = Instant::now();
        let mut m = Merger::new(ms(30));
        m.push(1, 10_000, t0, "n1");
        let mut out = Vec::new();
        for i in 0..10u64 {
            m.push(2, i as i64, t0 + ms(i * 5), "n2");
            m.pop_due(t0 + ms(i * 5), |x| out.push(x));
        }
        assert_eq!(out.first(), Some(&"n2"));
        assert!(out.contains(&"n1"), "n1 left at t0+30ms: {out:?}");
        assert!(out.len() < 10, "the later n2 lines are not due yet");
        m.pop_due(t0 + ms(1000), |x| out.push(x));
        assert_eq!(out.len(), 11);
        assert!(m.is_empty());
    }

    #[test]
    fn ties_leave_in_arrival_order() {
        let t0 = Instant::now();
        let mut m = Merger::new(Duration::ZERO);
        for (q, x) in [(1, "x"), (2, "y"), (1, "z")] {
            m.push(q, 7, t0, x);
        }
        let mut out = Vec::new();
        m.pop_due(t0, |x| out.push(x));
        assert_eq!(out, ["x", "y", "z"]);
    }

    #[test]
    fn many_queues_keep_per_queue_order() {
        // A pseudo-random interleaving of 50 queues with jittered clocks.
        let t0 = Instant::now();
        let mut m = Merger::new(ms(20));
        let mut out = Vec::new();
        let mut state = 12345u64;
        let mut next = [0u32; 50];
        for step in 0..5000u64 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let q = (state >> 33) % 50;
            let jitter = ((state >> 13) % 40) as i64;
            let n = next[q as usize];
            next[q as usize] += 1;
            m.push(q, step as i64 + jitter, t0 + ms(step / 10), (q, n));
            m.pop_due(t0 + ms(step / 10), |x| out.push(x));
        }
        m.drain(|x| out.push(x));
        assert_eq!(out.len(), 5000);
        let mut seen = [0u32; 50];
        for (q, n) in out {
            assert_eq!(n, seen[q as usize], "queue {q} out of order");
            seen[q as usize] += 1;
        }
    }
}

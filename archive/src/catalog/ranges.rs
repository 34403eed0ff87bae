//! A set of `u64` offsets kept as disjoint, non-adjacent half-open intervals
//! `[start, end)`: the archived line offsets of one source.
//!
//! A line is identified by its start offset, so "is this line archived" is
//! [`RangeSet::contains`]. Ranges, not a high-water mark, because a source's
//! lines may reach the archive with a gap that is filled later (a re-sent
//! chunk, two archivers after a rebalance); a high-water mark would then
//! either drop the late lines or let earlier ones in twice.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Disjoint, non-adjacent `[start, end)` intervals, ordered by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start → end; invariant: for consecutive entries `a`, `b`:
    /// `a.end < b.start` (adjacent intervals are merged), and `start < end`.
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// An empty set: no offset archived.
    pub fn new() -> Self {
        RangeSet::default()
    }

    /// Adds `[start, end)`, merging it with intervals it overlaps or touches.
    /// An empty interval (`start >= end`) adds nothing.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut new_start = start;
        let mut new_end = end;
        // An interval starting at or before `start` that reaches `start`.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e >= start
        {
            new_start = s;
            new_end = new_end.max(e);
        }
        // Intervals starting inside `[new_start, new_end]` are swallowed.
        let swallowed: Vec<(u64, u64)> = self
            .ranges
            .range(new_start..=new_end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in swallowed {
            self.ranges.remove(&s);
            new_end = new_end.max(e);
        }
        self.ranges.insert(new_start, new_end);
    }

    /// Adds every interval of `other`.
    pub fn extend(&mut self, other: &RangeSet) {
        for (s, e) in other.iter() {
            self.insert(s, e);
        }
    }

    /// Whether `offset` lies in one of the intervals.
    pub fn contains(&self, offset: u64) -> bool {
        self.ranges
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, &e)| offset < e)
    }

    /// Whether any offset of `[start, end)` is in the set.
    pub fn intersects(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return false;
        }
        if self
            .ranges
            .range(..=start)
            .next_back()
            .is_some_and(|(_, &e)| e > start)
        {
            return true;
        }
        self.ranges.range(start..end).next().is_some()
    }

    /// Whether the two sets share an offset.
    pub fn overlaps(&self, other: &RangeSet) -> bool {
        let (small, large) = if self.ranges.len() <= other.ranges.len() {
            (self, other)
        } else {
            (other, self)
        };
        small.iter().any(|(s, e)| large.intersects(s, e))
    }

    /// The intervals in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    /// Number of intervals (not offsets).
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True when the set holds no interval, hence no offset.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The intervals as `(start, end)` pairs, the form commits carry.
    pub fn to_vec(&self) -> Vec<(u64, u64)> {
        self.iter().collect()
    }
}

impl FromIterator<(u64, u64)> for RangeSet {
    fn from_iter<I: IntoIterator<Item = (u64, u64)>>(iter: I) -> Self {
        let mut set = RangeSet::new();
        for (s, e) in iter {
            set.insert(s, e);
        }
        set
    }
}

impl Serialize for RangeSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for RangeSet {
    /// Accepts any list of pairs (overlapping, unordered) and normalizes it;
    /// a pair with `start > end` is refused.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(u64, u64)>::deserialize(deserializer)?;
        if let Some((s, e)) = pairs.iter().find(|(s, e)| s > e) {
            return Err(serde::de::Error::custom(format!(
                "range [{s}, {e}) ends before it starts"
            )));
        }
        Ok(pairs.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn merges_overlapping_and_adjacent() {
        let mut set = RangeSet::new();
        set.insert(10, 20);
        set.insert(30, 40);
        assert_eq!(set.to_vec(), vec![(10, 20), (30, 40)]);
        set.insert(20, 25); // adjacent to the first
        assert_eq!(set.to_vec(), vec![(10, 25), (30, 40)]);
        set.insert(5, 10); // adjacent on the left
        assert_eq!(set.to_vec(), vec![(5, 25), (30, 40)]);
        set.insert(24, 31); // bridges both
        assert_eq!(set.to_vec(), vec![(5, 40)]);
        set.insert(0, 100); // swallows everything
        assert_eq!(set.to_vec(), vec![(0, 100)]);
        set.insert(7, 7); // empty: nothing
        set.insert(9, 3); // reversed: nothing
        assert_eq!(set.to_vec(), vec![(0, 100)]);
    }

    #[test]
    fn a_gap_filled_later_is_exact() {
        let mut set = RangeSet::new();
        set.insert(0, 100);
        set.insert(200, 300);
        assert!(set.contains(99));
        assert!(!set.contains(100));
        assert!(!set.contains(150));
        assert!(set.contains(200));
        assert!(!set.contains(300));
        set.insert(100, 200);
        assert_eq!(set.to_vec(), vec![(0, 300)]);
        assert!(set.contains(150));
    }

    #[test]
    fn intersects_and_overlaps() {
        let set: RangeSet = [(10, 20), (30, 40)].into_iter().collect();
        assert!(!set.intersects(0, 10));
        assert!(set.intersects(0, 11));
        assert!(set.intersects(19, 20));
        assert!(!set.intersects(20, 30));
        assert!(set.intersects(25, 35));
        assert!(!set.intersects(40, 50));
        assert!(!set.intersects(15, 15));
        let other: RangeSet = [(20, 30)].into_iter().collect();
        assert!(!set.overlaps(&other));
        let other: RangeSet = [(0, 5), (39, 41)].into_iter().collect();
        assert!(set.overlaps(&other));
        assert!(other.overlaps(&set));
    }

    #[test]
    fn serializes_as_pairs_and_normalizes() {
        let set: RangeSet = [(30, 40), (10, 20)].into_iter().collect();
        assert_eq!(serde_json::to_string(&set).unwrap(), "[[10,20],[30,40]]");
        let back: RangeSet = serde_json::from_str("[[30,40],[10,20],[15,31]]").unwrap();
        assert_eq!(back.to_vec(), vec![(10, 40)]);
        assert!(serde_json::from_str::<RangeSet>("[[5,4]]").is_err());
    }

    fn interval() -> impl Strategy<Value = (u64, u64)> {
        (0u64..300, 0u64..20).prop_map(|(s, len)| (s, s + len))
    }

    proptest! {
        #[test]
        fn matches_a_set_of_offsets(
            inserts in prop::collection::vec(interval(), 0..40),
            probes in prop::collection::vec(interval(), 0..20),
        ) {
            let mut set = RangeSet::new();
            let mut model = BTreeSet::new();
            for &(s, e) in &inserts {
                set.insert(s, e);
                model.extend(s..e);
            }
            // Invariants: ordered, non-empty, disjoint and non-adjacent.
            let pairs = set.to_vec();
            for &(s, e) in &pairs {
                prop_assert!(s < e);
            }
            for w in pairs.windows(2) {
                prop_assert!(w[0].1 < w[1].0, "{:?}", pairs);
            }
            // Same offsets as the model.
            let offsets: BTreeSet<u64> = pairs.iter().flat_map(|&(s, e)| s..e).collect();
            prop_assert_eq!(&offsets, &model);
            for x in 0..330 {
                prop_assert_eq!(set.contains(x), model.contains(&x), "offset {}", x);
            }
            for &(s, e) in &probes {
                prop_assert_eq!(set.intersects(s, e), (s..e).any(|x| model.contains(&x)));
            }
            // Insertion order does not matter.
            let reversed: RangeSet = inserts.iter().rev().copied().collect();
            prop_assert_eq!(&reversed, &set);
        }
    }
}

//! What a split holds, by identity: the `(source_id, offset)` of its lines
//! and the ids of its events, which the archive's dedup keys on. A split's
//! Delta `add` action carries them as the tags `sluice.lines` and
//! `sluice.events`, so the archived ranges live in the table itself (a
//! reader of the protocol sees them beside the file they describe).
//!
//! Both are kept compact: lines as `[start, end)` offset ranges per source
//! (a source's consecutive lines are one range), and event ids of the form
//! `<prefix>-<n>` (every id Sluice's emitters make) as ranges of `n` per
//! prefix; any other id is kept as it is.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::ranges::RangeSet;

/// The lines and events of one split (or of one commit's splits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// Per `source_id`, the line offsets held: `[offset, offset + raw_len)`
    /// for each line (a line is held iff its start offset is in a range).
    pub lines: BTreeMap<u64, RangeSet>,
    /// The event ids held.
    pub events: IdSet,
}

impl Held {
    /// Records the line of `source_id` at `offset` taking `raw_len` bytes
    /// (at least one offset, so an empty line is held too).
    pub fn add_line(&mut self, source_id: u64, offset: u64, raw_len: u32) {
        let end = offset.saturating_add(u64::from(raw_len.max(1)));
        self.lines.entry(source_id).or_default().insert(offset, end);
    }

    /// Adds everything `other` holds.
    pub fn extend(&mut self, other: &Held) {
        for (source, ranges) in &other.lines {
            self.lines.entry(*source).or_default().extend(ranges);
        }
        self.events.extend(&other.events);
    }

    /// True when it holds no line and no event.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.events.is_empty()
    }

    /// The `sluice.lines` tag: `{"<source_id as 16 hex digits>": [[start, end], …]}`.
    pub fn lines_tag(&self) -> String {
        let map: BTreeMap<String, &RangeSet> = self
            .lines
            .iter()
            .map(|(id, ranges)| (format!("{id:016x}"), ranges))
            .collect();
        serde_json::to_string(&map).expect("ranges serialize")
    }

    /// Parses a `sluice.lines` tag; the error says what is wrong.
    pub fn parse_lines_tag(text: &str) -> Result<BTreeMap<u64, RangeSet>, String> {
        let map: BTreeMap<String, RangeSet> =
            serde_json::from_str(text).map_err(|e| format!("sluice.lines: {e}"))?;
        map.into_iter()
            .map(|(hex, ranges)| {
                let id = (hex.len() == 16)
                    .then(|| u64::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .ok_or_else(|| format!("sluice.lines: {hex:?} is not 16 hex digits"))?;
                Ok((id, ranges))
            })
            .collect()
    }
}

/// A set of event ids: `<prefix>-<n>` ids as ranges of `n` per prefix,
/// others as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdSet {
    /// prefix → the `n`s, as `[start, end)` ranges.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub numbered: BTreeMap<String, RangeSet>,
    /// Ids not of the form `<prefix>-<n>`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub other: BTreeSet<String>,
}

impl IdSet {
    /// Adds `id`.
    pub fn insert(&mut self, id: &str) {
        match numbered(id) {
            Some((prefix, n)) => self
                .numbered
                .entry(prefix.to_string())
                .or_default()
                .insert(n, n + 1),
            None => {
                self.other.insert(id.to_string());
            }
        }
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: &str) -> bool {
        match numbered(id) {
            Some((prefix, n)) => self.numbered.get(prefix).is_some_and(|r| r.contains(n)),
            None => self.other.contains(id),
        }
    }

    /// Adds every id of `other`.
    pub fn extend(&mut self, other: &IdSet) {
        for (prefix, ranges) in &other.numbered {
            self.numbered
                .entry(prefix.clone())
                .or_default()
                .extend(ranges);
        }
        self.other.extend(other.other.iter().cloned());
    }

    /// True when it holds no id.
    pub fn is_empty(&self) -> bool {
        self.numbered.is_empty() && self.other.is_empty()
    }

    /// Every id, numbered ones first by prefix and number.
    pub fn ids(&self) -> impl Iterator<Item = String> + '_ {
        self.numbered
            .iter()
            .flat_map(|(prefix, ranges)| {
                ranges
                    .iter()
                    .flat_map(move |(s, e)| (s..e).map(move |n| format!("{prefix}-{n}")))
            })
            .chain(self.other.iter().cloned())
    }

    /// The `sluice.events` tag.
    pub fn tag(&self) -> String {
        serde_json::to_string(self).expect("id sets serialize")
    }

    /// Parses a `sluice.events` tag; the error says what is wrong.
    pub fn parse_tag(text: &str) -> Result<IdSet, String> {
        serde_json::from_str(text).map_err(|e| format!("sluice.events: {e}"))
    }
}

impl<'a> FromIterator<&'a str> for IdSet {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        let mut set = IdSet::default();
        for id in iter {
            set.insert(id);
        }
        set
    }
}

/// `(prefix, n)` of an id `<prefix>-<n>` whose `n` is a canonical decimal
/// (no leading zero, no sign) below `u64::MAX`; `None` otherwise, so that
/// [`IdSet::ids`] gives back exactly the ids put in.
fn numbered(id: &str) -> Option<(&str, u64)> {
    let (prefix, digits) = id.rsplit_once('-')?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    let n: u64 = digits.parse().ok().filter(|_| canonical)?;
    (n < u64::MAX).then_some((prefix, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lines_round_trip_through_the_tag() {
        let mut held = Held::default();
        held.add_line(u64::MAX, 0, 10);
        held.add_line(u64::MAX, 10, 5);
        held.add_line(7, 100, 0);
        let tag = held.lines_tag();
        assert_eq!(
            tag,
            r#"{"0000000000000007":[[100,101]],"ffffffffffffffff":[[0,15]]}"#
        );
        assert_eq!(Held::parse_lines_tag(&tag).unwrap(), held.lines);
        let e = Held::parse_lines_tag(r#"{"7":[[1,2]]}"#).unwrap_err();
        assert!(e.contains("\"7\" is not 16 hex digits"), "{e}");
        let e = Held::parse_lines_tag(r#"{"0000000000000007":[[5,2]]}"#).unwrap_err();
        assert!(e.contains("ends before it starts"), "{e}");
    }

    #[test]
    fn numbered_ids_are_ranges_and_others_kept() {
        let ids = [
            "n1/17-0", "n1/17-1", "n1/17-2", "n1/17-9", "odd", "x-01", "x--3",
        ];
        let set: IdSet = ids.iter().copied().collect();
        assert_eq!(set.numbered["n1/17"].to_vec(), [(0, 3), (9, 10)]);
        assert_eq!(
            set.tag(),
            r#"{"numbered":{"n1/17":[[0,3],[9,10]],"x-":[[3,4]]},"other":["odd","x-01"]}"#
        );
        for id in ids {
            assert!(set.contains(id), "{id}");
        }
        assert!(!set.contains("n1/17-3") && !set.contains("x-1"));
        assert_eq!(IdSet::parse_tag(&set.tag()).unwrap(), set);
    }

    proptest! {
        #[test]
        fn ids_give_back_exactly_what_went_in(ids in prop::collection::btree_set("[a-c/]{0,3}-?[0-9]{0,3}", 0..40)) {
            let set: IdSet = ids.iter().map(String::as_str).collect();
            let back: BTreeSet<String> = set.ids().collect();
            prop_assert_eq!(back, ids.clone());
            let parsed = IdSet::parse_tag(&set.tag()).unwrap();
            prop_assert_eq!(parsed, set);
        }

        #[test]
        fn tags_never_panic(text in "\\PC{0,60}") {
            let _ = Held::parse_lines_tag(&text);
            let _ = IdSet::parse_tag(&text);
        }
    }
}

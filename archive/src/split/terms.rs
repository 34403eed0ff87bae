//! A split's term filter: a Bloom filter of every term in its line index,
//! kept in the index blob as the plain (uncompressed) file
//! [`TERMS_FILE`], so a query can fetch it with two small range reads and
//! skip a split whose index cannot hold its search's terms, without
//! fetching and unpacking the index (what made the first search of an
//! archive slow).
//!
//! Blocked: a term's probes all fall in one 512-bit block (one cache line),
//! so building and probing cost one cache miss a term. 6 bits per distinct
//! term and 4 probes: about 6 % of the splits without a term have their
//! index read anyway; a split with the term is never skipped. (The size is
//! the trade: at 10 bits a term the filters took 0.7 % of the raw log at
//! rest, enough to undo the archive's 5× ratio.)
//! Tantivy ignores the extra file, and readers that predate it ignore it
//! too; blobs without it are searched as before.
//!
//! # Format
//!
//! ```text
//! 0   8  magic "SLUICETF"
//! 8   4  version (1)
//! 12  4  probes k (1 to 7)
//! 16  8  words w (a multiple of 8, at least 8)
//! 24     w little-endian u64 words of bits
//! end-8  checksum of everything before it (the index's checksum function)
//! ```
//!
//! A term's bits: h = FNV-1a-64 of its bytes, g = the SplitMix64 finaliser
//! of h; its block is h mod (w / 8), and probe i sets bit
//! (g >> 9i) mod 512 of the block.

use super::error::{Result, SplitError};

/// The name of the filter in an index blob.
pub const TERMS_FILE: &str = "sluice.terms";

const MAGIC: &[u8; 8] = b"SLUICETF";
const VERSION: u32 = 1;
const PROBES: u32 = 4;
const BITS_PER_TERM: u64 = 6;
/// u64 words in a block: 512 bits, a cache line.
const BLOCK_WORDS: u64 = 8;
/// Most words a filter may have (128 MiB): a blob claiming more is refused.
const MAX_WORDS: u64 = 1 << 24;

/// A blocked Bloom filter of the terms of a split's line index:
/// [`may_contain`](Self::may_contain) is false only for a term never inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermFilter {
    probes: u32,
    words: Vec<u64>,
}

fn hashes(term: &[u8]) -> (u64, u64) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in term {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut g = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    g = (g ^ (g >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    g = (g ^ (g >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    g ^= g >> 31;
    (h, g)
}

impl TermFilter {
    /// An empty filter sized for `terms` distinct terms.
    pub fn with_capacity(terms: u64) -> TermFilter {
        let blocks = terms.saturating_mul(BITS_PER_TERM) / 512 + 1;
        let words = (blocks * BLOCK_WORDS).min(MAX_WORDS);
        TermFilter {
            probes: PROBES,
            words: vec![0; words as usize],
        }
    }

    fn bits(&self, term: &[u8]) -> impl Iterator<Item = (usize, u64)> + use<> {
        let (h, g) = hashes(term);
        let block = h % (self.words.len() as u64 / BLOCK_WORDS) * BLOCK_WORDS;
        (0..u64::from(self.probes)).map(move |i| {
            let bit = (g >> (9 * i)) % 512;
            ((block + bit / 64) as usize, 1u64 << (bit % 64))
        })
    }

    /// Bytes it takes in memory.
    pub fn size_bytes(&self) -> u64 {
        self.words.len() as u64 * 8
    }

    /// Adds a term: its bytes as the line analyzer produced them.
    pub fn insert(&mut self, term: &[u8]) {
        for (word, mask) in self.bits(term) {
            self.words[word] |= mask;
        }
    }

    /// False only if `term` was never inserted.
    pub fn may_contain(&self, term: &[u8]) -> bool {
        self.bits(term)
            .all(|(word, mask)| self.words[word] & mask != 0)
    }

    /// The filter in the format above, checksummed; [`decode`](Self::decode)
    /// reads it back.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.words.len() * 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.probes.to_le_bytes());
        out.extend_from_slice(&(self.words.len() as u64).to_le_bytes());
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        let sum = super::index::checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Checks and reads an encoded filter.
    pub fn decode(bytes: &[u8]) -> Result<TermFilter> {
        let bad = |problem: &str| SplitError::CorruptIndex(format!("term filter: {problem}"));
        if bytes.len() < 32 || &bytes[..8] != MAGIC {
            return Err(bad("too short or bad magic"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        if super::index::checksum(body) != u64::from_le_bytes(sum.try_into().expect("8")) {
            return Err(bad("checksum mismatch"));
        }
        let version = u32::from_le_bytes(body[8..12].try_into().expect("4"));
        let probes = u32::from_le_bytes(body[12..16].try_into().expect("4"));
        let words = u64::from_le_bytes(body[16..24].try_into().expect("8"));
        if version != VERSION {
            return Err(bad(&format!("unsupported version {version}")));
        }
        if !(1..=7).contains(&probes) || words == 0 || words % BLOCK_WORDS != 0 || words > MAX_WORDS
        {
            return Err(bad(&format!("{probes} probes over {words} words")));
        }
        if body.len() as u64 != 24 + words * 8 {
            return Err(bad("length does not match its word count"));
        }
        let words = body[24..]
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("8")))
            .collect();
        Ok(TermFilter { probes, words })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every inserted term is found after a round trip; few others are.
        #[test]
        fn no_false_negatives(terms in proptest::collection::hash_set("[a-z0-9]{1,12}", 1..400)) {
            let mut filter = TermFilter::with_capacity(terms.len() as u64);
            for t in &terms {
                filter.insert(t.as_bytes());
            }
            let back = TermFilter::decode(&filter.encode()).unwrap();
            prop_assert_eq!(&back, &filter);
            for t in &terms {
                prop_assert!(back.may_contain(t.as_bytes()));
            }
        }
    }

    #[test]
    fn about_six_percent_false_positives() {
        let mut filter = TermFilter::with_capacity(100_000);
        for i in 0..100_000u32 {
            filter.insert(format!("term{i}").as_bytes());
        }
        let false_positives = (0..100_000u32)
            .filter(|i| filter.may_contain(format!("other{i}").as_bytes()))
            .count();
        assert!(false_positives < 8_000, "{false_positives} of 100000");
    }

    #[test]
    fn damage_is_refused() {
        let mut filter = TermFilter::with_capacity(10);
        filter.insert(b"oom");
        let mut bytes = filter.encode();
        bytes[30] ^= 1;
        assert!(TermFilter::decode(&bytes).is_err());
        assert!(TermFilter::decode(&bytes[..20]).is_err());
    }
}

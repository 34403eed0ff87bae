//! Test strategies that damage a valid file: bytes flipped, inserted and
//! deleted, the file cut short, and pieces of the format's syntax spliced
//! in. Purely random bytes rarely get past a parser's first token; these
//! reach the fields behind it.

use proptest::prelude::*;
use proptest::sample::{Index, select};

/// One change to a valid file.
#[derive(Debug, Clone)]
enum Edit {
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
    Splice(Index, &'static str),
}

/// Pieces of JSON and awkward values.
#[rustfmt::skip]
pub(crate) const JSON_PIECES: &[&str] = &[
    "{", "}", "[", "]", ":", ",", "\"", "\\", "null", "true", "0", "-1", "1.5", "1e999",
    "18446744073709551615", "18446744073709551616", "-9223372036854775808", "4294967295", "\"\"",
    "[]", "{}", "\"\\u0000\"", "\"\\ud800\"", "\"x\":1,",
];

fn edit(pieces: &'static [&'static str]) -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 1u8..).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Delete),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), select(pieces)).prop_map(|(i, p)| Edit::Splice(i, p)),
    ]
}

/// `valid` with one to four edits.
pub(crate) fn mutated(
    valid: Vec<u8>,
    pieces: &'static [&'static str],
) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(edit(pieces), 1..5).prop_map(move |edits| {
        let mut bytes = valid.clone();
        for edit in edits {
            let len = bytes.len();
            match edit {
                Edit::Flip(i, mask) if len > 0 => bytes[i.index(len)] ^= mask,
                Edit::Insert(i, b) => bytes.insert(i.index(len + 1), b),
                Edit::Delete(i) if len > 0 => drop(bytes.remove(i.index(len))),
                Edit::Truncate(i) => bytes.truncate(i.index(len + 1)),
                Edit::Splice(i, piece) => {
                    let i = i.index(len + 1);
                    bytes.splice(i..i, piece.bytes());
                }
                Edit::Flip(..) | Edit::Delete(_) => {}
            }
        }
        bytes
    })
}

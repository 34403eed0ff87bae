//! Bad input never panics the schema crate's parsers: property tests over
//! arbitrary bytes and over mutations of a valid token file (purely random
//! bytes rarely get past the first `[`), and errors that name the file and
//! the entry or line at fault.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use sluice_schema::auth::{AuthError, Tokens};

/// A token file with every kind of field, two entries.
const TOKENS: &str = r#"
[[tokens]]
user = "alice"
token = "alice-token-0123456789"
roles = ["www", "db"]
read_roles = ["*"]

[[tokens]]
user = "root"
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
roles = ["*"]
"#;

/// One change to a valid file.
#[derive(Debug, Clone)]
enum Edit {
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
    /// Inserts a piece of the format's syntax or an awkward value.
    Splice(Index, &'static str),
}

/// Pieces of TOML that move a mutation past the tokenizer.
#[rustfmt::skip]
const PIECES: &[&str] = &[
    "[", "]", "[[", "]]", "\"", "'", "=", ",", "\n", "#", "{", "}", ".", "tokens", "user", "roles",
    "read_roles", "token", "sha256", "1", "-1", "true", "1979-05-27", "\"\"", "[]", "\"*\"",
    "\"../x\"", "\"\\u0000\"", "\"\\uD800\"", "9223372036854775808", "1e999", "nan",
    "[[tokens]]\nuser = \"x\"\n",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b.max(1))),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Delete),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), prop::sample::select(PIECES)).prop_map(|(i, p)| Edit::Splice(i, p)),
    ]
}

/// `valid` with one to four edits.
fn mutated(valid: &'static str) -> impl Strategy<Value = String> {
    vec(edit(), 1..5).prop_map(move |edits| {
        let mut bytes = valid.as_bytes().to_vec();
        for edit in edits {
            let at = |i: Index, len: usize| i.index(len + 1);
            match edit {
                Edit::Flip(i, mask) if !bytes.is_empty() => {
                    let i = i.index(bytes.len());
                    bytes[i] ^= mask;
                }
                Edit::Flip(..) => {}
                Edit::Insert(i, b) => bytes.insert(at(i, bytes.len()), b),
                Edit::Delete(i) if !bytes.is_empty() => drop(bytes.remove(i.index(bytes.len()))),
                Edit::Delete(_) => {}
                Edit::Truncate(i) => bytes.truncate(at(i, bytes.len())),
                Edit::Splice(i, piece) => {
                    let i = at(i, bytes.len());
                    bytes.splice(i..i, piece.bytes());
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Parses `text`; an error must say it is the token file and where.
fn check_tokens(text: &str) -> Result<(), TestCaseError> {
    let Err(err) = Tokens::parse(text) else {
        return Ok(());
    };
    let message = err.to_string();
    prop_assert!(
        message.starts_with("invalid token file: "),
        "{message:?} does not name the token file"
    );
    match &err {
        // The entry's index and user, then what is wrong with it.
        AuthError::Entry { index, .. } => {
            let entry = format!("tokens[{index}] (user ");
            prop_assert!(message.contains(&entry), "{message:?} lacks {entry:?}");
        }
        // TOML syntax and type errors point at a line and column.
        AuthError::Syntax(_) => {
            prop_assert!(message.contains(" at line "), "{message:?} has no position");
        }
        AuthError::Token(_) => prop_assert!(false, "a file error as a token error: {message}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn token_file_arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        check_tokens(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn token_file_mutations_never_panic(text in mutated(TOKENS)) {
        check_tokens(&text)?;
    }
}

#[test]
fn the_valid_token_file_parses() {
    assert_eq!(Tokens::parse(TOKENS).unwrap().len(), 2);
}

/// A field of the right shape but a wrong value names the entry (index and
/// user) and the field; a field of the wrong type is named by its path and
/// shown with its line.
#[test]
fn token_file_errors_name_the_entry_and_the_field() {
    let bad_role = TOKENS.replace("\nroles = [\"*\"]", "\nroles = [\"*\", \"a b\"]");
    assert_eq!(
        Tokens::parse(&bad_role).unwrap_err().to_string(),
        "invalid token file: tokens[1] (user \"root\"): roles: role \"a b\" is not `*` or a \
         name of [A-Za-z0-9_.-]"
    );
    let bad_sha = TOKENS.replace("sha256 = \"9f86", "sha256 = \"zz86");
    assert_eq!(
        Tokens::parse(&bad_sha).unwrap_err().to_string(),
        "invalid token file: tokens[1] (user \"root\"): `sha256` must be 64 hexadecimal digits"
    );
    let wrong_type = TOKENS.replace("\nroles = [\"*\"]", "\nroles = \"*\"");
    let message = Tokens::parse(&wrong_type).unwrap_err().to_string();
    assert!(
        message.starts_with(
            "invalid token file: tokens[1].roles: TOML parse error at line 11, column 9"
        ) && message.contains("roles = \"*\"")
            && message.contains("invalid type: string \"*\", expected a sequence"),
        "{message}"
    );
    let unknown = TOKENS.replace("read_roles", "read_role");
    let message = Tokens::parse(&unknown).unwrap_err().to_string();
    assert!(message.contains("unknown field `read_role`"), "{message}");
}

/// Nesting deeper than any stack: an error, not a stack overflow.
#[test]
fn deeply_nested_token_files_are_errors() {
    let n = 100_000;
    for text in [
        format!("tokens = {}", "[".repeat(n)),
        format!("tokens = {}{}", "[".repeat(n), "]".repeat(n)),
        format!("x = {}1{}", "{a=".repeat(n), "}".repeat(n)),
        format!("{}b = 1", "a.".repeat(n)),
    ] {
        let message = Tokens::parse(&text).unwrap_err().to_string();
        assert!(
            message.starts_with("invalid token file: "),
            "{message:.200}"
        );
    }
}

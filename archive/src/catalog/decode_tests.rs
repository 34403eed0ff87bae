//! Bad catalog objects never panic a reader: property tests over arbitrary
//! bytes and over damaged copies of a valid Delta commit, state cache and
//! commit of the catalog before Delta Lake (which `sluice archive migrate`
//! reads), whose errors name the object and, when the JSON is well formed,
//! the field; an object that decodes is replayed without a panic either.

use object_store::path::Path;
use proptest::prelude::*;
use proptest::sample::{Index, select};

use super::log::{decode_checkpoint, decode_legacy_commit as decode_commit};
use super::*;

const COMMIT_KEY: &str = "archive/_catalog/commits/00000000000000000007.json";
const DELTA_KEY: &str = "archive/logs/_delta_log/00000000000000000007.json";
const CHECKPOINT_KEY: &str = "archive/_catalog/checkpoints/00000000000000000006.json";

fn split(name: &str, rows: u64) -> SplitEntry {
    let dir = "logs/date=2026-11-03/hour=07";
    SplitEntry {
        key: format!("{dir}/{name}.parquet"),
        index_key: Some(format!("{dir}/{name}.index")),
        kind: SplitKind::Logs,
        date: "2026-11-03".into(),
        hour: Some(7),
        rows,
        raw_bytes: 1_000,
        data_bytes: 300,
        index_bytes: 200,
        min_ts_nanos: 1_000,
        max_ts_nanos: 2_000,
        jobs: vec!["www/prod/web".into()],
        roles: vec!["www".into()],
        created_unix_ms: 1,
        held: Held::default(),
        levels: Some(vec!["error".into(), "info".into()]),
    }
}

/// Commit `version` with every kind of content.
fn commit(version: u64) -> Commit {
    Commit {
        format: FORMAT,
        version,
        parent: version - 1,
        commit_id: format!("c{version}"),
        writer: "archiver-a".into(),
        created_unix_ms: 1_780_000_000_000 + version,
        added: vec![split(&format!("s{version}"), 10), split("t", 3)],
        removed: vec![format!(
            "logs/date=2026-11-03/hour=07/s{}.parquet",
            version - 1
        )],
        bus: Some(BusCheckpoint {
            group: "archiver".into(),
            positions: [
                ("sluice.logs/0".to_string(), 40),
                ("sluice.logs/1".into(), 7),
            ]
            .into(),
        }),
        archived: [(1, [(0, 10), (20, 30)].into_iter().collect())].into(),
        event_ids: vec![format!("node-1/{version}")],
        data_change: true,
    }
}

/// Commit `version` as a Delta commit carries it: what it archives is held
/// by its splits.
fn delta_commit(version: u64) -> Commit {
    let mut c = commit(version);
    c.added[0].held.lines = c.archived.clone();
    c.added[1].held.events.insert(&c.event_ids[0]);
    c.format = FORMAT;
    c
}

fn valid_delta_commit() -> Vec<u8> {
    let c = delta_commit(7);
    let removed = vec![split("s6", 10)];
    delta::encode(SplitKind::Logs, &c, &removed).unwrap()
}

fn valid_commit() -> Vec<u8> {
    serde_json::to_vec_pretty(&commit(7)).unwrap()
}

/// The state after commits 1 to 6, as a checkpoint object holds it.
fn state() -> CatalogState {
    let mut state = CatalogState::default();
    for v in 1..=6 {
        state.apply(&commit(v));
    }
    state
}

fn valid_checkpoint() -> Vec<u8> {
    let checkpoint = serde_json::json!({
        "format": FORMAT,
        "created_unix_ms": 1_780_000_000_000u64,
        "state": state(),
    });
    serde_json::to_vec(&checkpoint).unwrap()
}

/// One change to a valid object.
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
const PIECES: &[&str] = &[
    "{", "}", "[", "]", ":", ",", "\"", "\\", "null", "true", "0", "-1", "1.5", "1e999",
    "18446744073709551615", "18446744073709551616", "-9223372036854775808", "4294967295", "\"\"",
    "[]", "{}", "[[5,4]]", "[1,2,3]", "\"\\ud800\"", "\"x\":1,",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 1u8..).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Delete),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), select(PIECES)).prop_map(|(i, p)| Edit::Splice(i, p)),
    ]
}

/// `valid` with one to four edits.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(edit(), 1..5).prop_map(move |edits| {
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

/// An error from decoding `bytes` names the object and, for a JSON
/// object, what in it is wrong.
fn check_error(key: &str, bytes: &[u8], err: &Error) -> Result<(), TestCaseError> {
    let message = err.to_string();
    prop_assert!(message.contains(key), "{message:?} does not name {key}");
    let object = serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|v| v.is_object());
    if let (true, Error::Corrupt { reason, .. }) = (object, err) {
        // A field path (`added[0].rows: …`), a missing field or the
        // version fields that disagree with the object's name.
        #[rustfmt::skip]
        const FIELDS: &[&str] = &[
            "format", "version", "parent", "commit_id", "writer", "created_unix_ms", "added",
            "removed", "bus", "archived", "event_ids", "state",
        ];
        let path = FIELDS.iter().any(|f| {
            reason
                .strip_prefix(f)
                .is_some_and(|rest| rest.starts_with(['.', '[', ':']))
        });
        let named = path
            || reason.starts_with("missing field `")
            || reason.starts_with("it says version ")
            || reason.starts_with("it holds version ");
        prop_assert!(
            named,
            "{:?}: {:?} names no field",
            String::from_utf8_lossy(bytes),
            reason
        );
    }
    Ok(())
}

/// Decodes `bytes` as commit 7 and replays it on a fresh state and on
/// the state of the valid checkpoint: never a panic.
fn check_commit(bytes: &[u8]) -> Result<(), TestCaseError> {
    match decode_commit(&Path::from(COMMIT_KEY), 7, bytes) {
        Ok(commit) => {
            let mut state = state();
            state.apply(&commit);
            prop_assert_eq!(state.version(), 7);
            prop_assert!(state.clock_unix_ms() >= commit.created_unix_ms);
        }
        Err(err) => check_error(COMMIT_KEY, bytes, &err)?,
    }
    Ok(())
}

/// Decodes `bytes` as Delta commit 7 and replays it: never a panic; an
/// error names the object, and the line for a line that is not an action.
fn check_delta(bytes: &[u8]) -> Result<(), TestCaseError> {
    match delta::decode(&Path::from(DELTA_KEY), SplitKind::Logs, 7, bytes) {
        Ok(commit) => {
            let mut state = state();
            state.apply(&commit);
            prop_assert_eq!(state.version(), 7);
        }
        Err(err) => {
            let message = err.to_string();
            prop_assert!(
                message.contains(DELTA_KEY),
                "{message:?} does not name {DELTA_KEY}"
            );
        }
    }
    Ok(())
}

/// Decodes `bytes` as checkpoint 6 and replays commit 7 on it.
fn check_checkpoint(bytes: &[u8]) -> Result<(), TestCaseError> {
    match decode_checkpoint(&Path::from(CHECKPOINT_KEY), 6, bytes) {
        Ok(mut state) => {
            let _ = serde_json::to_vec(&state).unwrap();
            state.apply(&commit(7));
            prop_assert_eq!(state.version(), 7);
        }
        Err(err) => check_error(CHECKPOINT_KEY, bytes, &err)?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn catalog_commit_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_commit(&bytes)?;
    }

    #[test]
    fn catalog_commit_mutations_never_panic(bytes in mutated(valid_commit())) {
        check_commit(&bytes)?;
    }

    #[test]
    fn delta_commit_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_delta(&bytes)?;
    }

    #[test]
    fn delta_commit_mutations_never_panic(bytes in mutated(valid_delta_commit())) {
        check_delta(&bytes)?;
    }

    #[test]
    fn catalog_checkpoint_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_checkpoint(&bytes)?;
    }

    #[test]
    fn catalog_checkpoint_mutations_never_panic(bytes in mutated(valid_checkpoint())) {
        check_checkpoint(&bytes)?;
    }
}

#[test]
fn the_valid_objects_decode() {
    let path = Path::from(COMMIT_KEY);
    assert_eq!(decode_commit(&path, 7, &valid_commit()).unwrap(), commit(7));
    let path = Path::from(DELTA_KEY);
    let decoded = delta::decode(&path, SplitKind::Logs, 7, &valid_delta_commit()).unwrap();
    assert_eq!(decoded, delta_commit(7));
    let path = Path::from(CHECKPOINT_KEY);
    assert_eq!(
        decode_checkpoint(&path, 6, &valid_checkpoint()).unwrap(),
        state()
    );
}

#[test]
fn a_wrong_field_is_named_with_the_object() {
    let mut json: serde_json::Value = serde_json::from_slice(&valid_commit()).unwrap();
    json["added"][1]["rows"] = "3".into();
    let bytes = serde_json::to_vec(&json).unwrap();
    let err = decode_commit(&Path::from(COMMIT_KEY), 7, &bytes).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "corrupt catalog object {COMMIT_KEY}: added[1].rows: invalid type: string \"3\", \
             expected u64 at line 1 column "
        )),
        "{err}"
    );

    let mut json: serde_json::Value = serde_json::from_slice(&valid_checkpoint()).unwrap();
    json["state"]["sources"]["1"]["ranges"] = serde_json::json!([[0, 10], [30, 20]]);
    let bytes = serde_json::to_vec(&json).unwrap();
    let err = decode_checkpoint(&Path::from(CHECKPOINT_KEY), 6, &bytes).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "corrupt catalog object {CHECKPOINT_KEY}: state.sources.1.ranges: range [30, 20) \
             ends before it starts"
        )),
        "{err}"
    );
}

/// Regression: `parent + 1` overflowed on a commit whose parent is
/// `u64::MAX`, and a checkpoint of version `u64::MAX` made the next read
/// ask for version `u64::MAX + 1`.
#[test]
fn versions_at_the_end_of_u64_are_corrupt_not_an_overflow() {
    let mut last = commit(7);
    last.parent = u64::MAX;
    let bytes = serde_json::to_vec(&last).unwrap();
    let err = decode_commit(&Path::from(COMMIT_KEY), 7, &bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "corrupt catalog object {COMMIT_KEY}: it says version 7 with parent \
             18446744073709551615"
        )
    );

    let mut json: serde_json::Value = serde_json::from_slice(&valid_checkpoint()).unwrap();
    json["state"]["version"] = u64::MAX.into();
    let bytes = serde_json::to_vec(&json).unwrap();
    let key = "archive/_catalog/checkpoints/18446744073709551615.json";
    let err = decode_checkpoint(&Path::from(key), u64::MAX, &bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "corrupt catalog object {key}: state.version: 18446744073709551615 leaves no room \
             for another commit"
        )
    );
}

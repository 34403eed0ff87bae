//! Checkpoints: where to resume each file generation after a restart.
//!
//! One JSON file (`<state_dir>/checkpoints.json`) holds an entry per file
//! generation: its key, birth time, truncation count, `source_id`, content
//! prefix and the offset up to which the bus acknowledged every line. It is
//! replaced atomically (write, fsync, rename, fsync the directory) and only
//! ever records acknowledged offsets, so a restart resumes at or before the
//! last acknowledged line: nothing is lost, and what is sent twice carries
//! the same `(source_id, offset)` for the archive to drop.
//!
//! A corrupt checkpoint file is renamed aside with a logged error and the
//! shipper starts from the beginning of every file (duplicates, not loss).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::source::{FileKey, Prefix};
use crate::{Error, Result};

const FILE_NAME: &str = "checkpoints.json";

/// Where to resume one file generation: written by the tracker, read back
/// when the file is found again after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Device and inode of the file; the store's key.
    pub key: FileKey,
    /// Birth time in unix nanoseconds; `None` where the filesystem records none.
    pub birth: Option<i64>,
    /// Bumped on each truncation, or when the inode's content is found replaced;
    /// wraps at `u32::MAX`. Hashed into `source_id`.
    pub generation: u32,
    /// Name of this generation's lines, sent with each line's offset;
    /// reused on resume so re-sent lines are dropped downstream.
    pub source_id: u64,
    /// Fingerprint of the file's first bytes (up to `PREFIX_BYTES`): a file
    /// that no longer starts with them is a new generation.
    pub prefix: Prefix,
    /// Every line before this offset is acknowledged by the bus.
    pub offset: u64,
    /// Fingerprint of the bytes just before `offset`: a restart resumes only
    /// if they are still there.
    #[serde(default)]
    pub tail: Prefix,
    /// Last path the file was seen at.
    pub path: PathBuf,
    /// Offsets after `offset` where this run ended a multi-line event by
    /// its timeout or shipped an unterminated line: a restart ends lines
    /// and events there again, so what it sends again is what was sent
    /// (see `files::multiline`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cuts: Vec<u64>,
}

/// A generation truncated recently: a copy of it (copytruncate) found later,
/// also after a restart, continues it under its `source_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruncationRecord {
    /// Directory of the truncated file, where its copy is looked for.
    pub dir: PathBuf,
    /// `source_id` of the generation that was truncated; its copy keeps it.
    pub source_id: u64,
    /// Fingerprint of the truncated file's first bytes: a new file in `dir`
    /// that starts with them is taken as its copy.
    pub prefix: Prefix,
    /// Every line of the original before this offset was acknowledged.
    pub offset: u64,
    /// When the truncation was seen, in unix milliseconds; records older than
    /// twice the copy wait are dropped.
    pub at_unix_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    checkpoints: Vec<Checkpoint>,
    #[serde(default)]
    truncations: Vec<TruncationRecord>,
}

/// The checkpoints of every tracked file generation plus the recent
/// truncations, in memory, written back to `<dir>/checkpoints.json` by `save`.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    entries: BTreeMap<FileKey, Checkpoint>,
    truncations: Vec<TruncationRecord>,
    dirty: bool,
}

impl CheckpointStore {
    /// Loads `<dir>/checkpoints.json`, creating `dir` if needed.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("failed to create state directory", dir, e))?;
        let path = dir.join(FILE_NAME);
        let (entries, truncations) = match std::fs::read(&path) {
            Ok(bytes) => match decode(&path, &bytes) {
                Ok(file) => (
                    file.checkpoints.into_iter().map(|c| (c.key, c)).collect(),
                    file.truncations,
                ),
                Err(e) => {
                    let aside = path.with_extension("json.corrupt");
                    let _ = std::fs::rename(&path, &aside);
                    tracing::error!(path = %path.display(), saved = %aside.display(), error = %e,
                        "corrupt checkpoint file moved aside; files are read again from their start (duplicates, no loss)");
                    (BTreeMap::new(), Vec::new())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (BTreeMap::new(), Vec::new()),
            Err(e) => return Err(Error::io("failed to read checkpoints", &path, e)),
        };
        Ok(CheckpointStore {
            dir: dir.to_path_buf(),
            entries,
            truncations,
            dirty: false,
        })
    }

    /// The checkpoint recorded for this device and inode, as loaded or last `put`.
    pub fn get(&self, key: &FileKey) -> Option<&Checkpoint> {
        self.entries.get(key)
    }

    /// Records `checkpoint` under its key, replacing the previous one; written
    /// to disk at the next `save`, and only if it differs.
    pub fn put(&mut self, checkpoint: Checkpoint) {
        if self.entries.get(&checkpoint.key) != Some(&checkpoint) {
            self.entries.insert(checkpoint.key, checkpoint);
            self.dirty = true;
        }
    }

    /// Forgets the checkpoint of `key`, if any; written to disk at the next `save`.
    pub fn remove(&mut self, key: &FileKey) {
        if self.entries.remove(key).is_some() {
            self.dirty = true;
        }
    }

    /// Truncations recorded so far, oldest first; stale ones are dropped by the
    /// tracker, not here.
    pub fn truncations(&self) -> &[TruncationRecord] {
        &self.truncations
    }

    /// Replaces the recent truncations (the tracker keeps them current).
    pub fn set_truncations(&mut self, truncations: Vec<TruncationRecord>) {
        if self.truncations != truncations {
            self.truncations = truncations;
            self.dirty = true;
        }
    }

    /// Keys of every checkpointed file, in key order; the rescan uses them to
    /// forget files that no longer exist.
    pub fn keys(&self) -> Vec<FileKey> {
        self.entries.keys().copied().collect()
    }

    /// Number of file generations with a checkpoint (truncation records not counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no file generation has a checkpoint (also after a corrupt file was moved aside).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the checkpoints if anything changed since the last save.
    pub fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let path = self.dir.join(FILE_NAME);
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let file = FileFormat {
            version: 1,
            checkpoints: self.entries.values().cloned().collect(),
            truncations: self.truncations.clone(),
        };
        let bytes = serde_json::to_vec(&file).expect("checkpoints serialize");
        let io = |e| Error::io("failed to write checkpoints", &path, e);
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        self.dirty = false;
        Ok(())
    }
}

/// Reads the checkpoint file's bytes; an error names `path` and the field.
fn decode(path: &Path, bytes: &[u8]) -> Result<FileFormat> {
    crate::error::decode_json(bytes).map_err(|(field, message)| Error::Corrupt {
        what: "checkpoint file",
        path: path.to_path_buf(),
        field,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(ino: u64, offset: u64) -> Checkpoint {
        Checkpoint {
            key: FileKey { dev: 1, ino },
            birth: Some(5),
            generation: 0,
            source_id: ino * 7,
            prefix: Prefix::of(b"abc"),
            offset,
            tail: Prefix::default(),
            path: PathBuf::from(format!("/s/{ino}")),
            cuts: Vec::new(),
        }
    }

    #[test]
    fn saved_checkpoints_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(dir.path()).unwrap();
        store.put(checkpoint(1, 10));
        store.put(checkpoint(2, 20));
        store.save().unwrap();
        store.put(checkpoint(2, 30));
        store.remove(&FileKey { dev: 1, ino: 1 });
        store.save().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.get(&FileKey { dev: 1, ino: 2 }).unwrap().offset, 30);
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{\"version\":1,\"checkpo").unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        assert!(store.is_empty());
        assert!(dir.path().join("checkpoints.json.corrupt").exists());
    }

    /// A file as `save` writes it: two checkpoints, one truncation.
    fn valid_file() -> Vec<u8> {
        serde_json::to_vec(&FileFormat {
            version: 1,
            checkpoints: vec![checkpoint(1, 10), checkpoint(2, 20)],
            truncations: vec![TruncationRecord {
                dir: PathBuf::from("/s"),
                source_id: 9,
                prefix: Prefix::of(b"abc"),
                offset: 3,
                at_unix_ms: 1_700_000_000_000,
            }],
        })
        .unwrap()
    }

    const PATH: &str = "/var/lib/sluice/shipper/checkpoints.json";

    /// Decodes `bytes`: never a panic; an error names the file, and when
    /// the JSON is an object, the field.
    fn check_decode(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
        let Err(err) = decode(Path::new(PATH), bytes) else {
            return Ok(());
        };
        let message = err.to_string();
        let file = format!("corrupt checkpoint file {PATH}: ");
        prop_assert!(
            message.starts_with(&file),
            "{message:?} does not name the file"
        );
        let Error::Corrupt { field, message, .. } = err else {
            return Err(TestCaseError::fail(format!(
                "not a corrupt file error: {message}"
            )));
        };
        let object =
            serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|v| v.is_object());
        prop_assert!(
            !object || !field.is_empty() || message.starts_with("missing field `"),
            "{:?}: {:?} names no field",
            String::from_utf8_lossy(bytes),
            message
        );
        Ok(())
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn checkpoint_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            check_decode(&bytes)?;
        }

        #[test]
        fn checkpoint_mutations_never_panic(
            bytes in crate::mutate::mutated(valid_file(), crate::mutate::JSON_PIECES),
        ) {
            check_decode(&bytes)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the file holds, the store opens: with its entries, or
        /// empty with the file moved aside.
        #[test]
        fn any_checkpoint_file_opens(
            bytes in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..256),
                crate::mutate::mutated(valid_file(), crate::mutate::JSON_PIECES),
            ],
        ) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();
            let store = CheckpointStore::open(dir.path()).unwrap();
            let aside = dir.path().join("checkpoints.json.corrupt").exists();
            prop_assert_eq!(aside, decode(Path::new(PATH), &bytes).is_err());
            prop_assert!(!aside || store.is_empty());
        }
    }

    #[test]
    fn a_wrong_field_is_named_with_the_file() {
        let mut file: serde_json::Value = serde_json::from_slice(&valid_file()).unwrap();
        file["checkpoints"][1]["offset"] = "20".into();
        let bytes = serde_json::to_vec(&file).unwrap();
        let err = decode(Path::new(PATH), &bytes).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "corrupt checkpoint file {PATH}: checkpoints[1].offset: invalid type: string \"20\", \
                 expected u64 at line 1 column "
            )),
            "{err}"
        );
        file["checkpoints"][1]["offset"] = 20.into();
        file["truncations"][0]["prefix"]["len"] = (-1).into();
        let bytes = serde_json::to_vec(&file).unwrap();
        let err = decode(Path::new(PATH), &bytes).unwrap_err().to_string();
        assert!(
            err.contains(": truncations[0].prefix.len: invalid value: integer `-1`"),
            "{err}"
        );
    }
}

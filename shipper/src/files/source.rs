//! What makes a file generation: the key a tracked file is known by, and its
//! `source_id`.
//!
//! A file is known by its device and inode while it exists ([`FileKey`]).
//! Its *generation* also counts its birth time (so a reused inode is a new
//! file) and how often it was truncated (so offsets after a truncation never
//! collide with offsets before it). `source_id` is a 64-bit FNV-1a hash of
//! host, device, inode, birth time and truncation count: stable across
//! shipper restarts (the checkpoint keeps it too) and new for every
//! generation, which keeps `(source_id, offset)` unique everywhere.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

/// Bytes of a file's beginning that identify its content: how a copy made
/// by copytruncate is recognised as the continuation of its original.
pub const PREFIX_BYTES: u64 = 256;

/// Device and inode: how a tracked file is known while it exists, across
/// renames. The key of checkpoints and ship progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileKey {
    /// Device the file is on (`st_dev`).
    pub dev: u64,
    /// Inode number (`st_ino`).
    pub ino: u64,
}

impl FileKey {
    /// The key of the file `meta` describes; metadata of a symlink gives the
    /// link's key, not its target's.
    pub fn of(meta: &Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Birth time in nanoseconds where the filesystem records it.
pub fn birth_nanos(meta: &Metadata) -> Option<i64> {
    let created = meta.created().ok()?;
    let since = created.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(since.as_nanos()).ok()
}

/// The `source_id` of one file generation: FNV-1a of host, device, inode,
/// birth time (-1 when `None`) and truncation count, stable across restarts.
pub fn source_id(host: &str, key: FileKey, birth: Option<i64>, generation: u32) -> u64 {
    let mut h = Fnv::new();
    h.write(host.as_bytes());
    h.write(&[0]);
    h.write(&key.dev.to_le_bytes());
    h.write(&key.ino.to_le_bytes());
    h.write(&birth.unwrap_or(-1).to_le_bytes());
    h.write(&generation.to_le_bytes());
    h.finish()
}

/// Hash and length of the first `min(len, PREFIX_BYTES)` bytes of `file`.
pub fn prefix(file: &File, len: u64) -> io::Result<Prefix> {
    let n = len.min(PREFIX_BYTES) as usize;
    let mut buf = vec![0u8; n];
    let mut read = 0;
    while read < n {
        match file.read_at(&mut buf[read..], read as u64)? {
            0 => break,
            k => read += k,
        }
    }
    buf.truncate(read);
    Ok(Prefix::of(&buf))
}

/// Bytes before an offset that identify what was read up to it.
pub const TAIL_BYTES: u64 = 64;

/// Hash and length of the up to `TAIL_BYTES` bytes that end at `end`: if
/// they change, the content under offsets already read was replaced.
pub fn tail(file: &File, end: u64) -> io::Result<Prefix> {
    let n = end.min(TAIL_BYTES) as usize;
    let mut buf = vec![0u8; n];
    let mut read = 0;
    while read < n {
        match file.read_at(&mut buf[read..], end - n as u64 + read as u64)? {
            0 => break,
            k => read += k,
        }
    }
    if read < n {
        return Ok(Prefix {
            len: u64::MAX,
            hash: 0,
        });
    }
    Ok(Prefix::of(&buf))
}

/// A fingerprint of a file's first bytes (or, from [`tail`], of the bytes
/// before an offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Prefix {
    /// Number of bytes hashed; 0 for an empty file, `u64::MAX` from [`tail`]
    /// when the file ended early (so it matches no real fingerprint).
    pub len: u64,
    /// FNV-1a hash of those bytes.
    pub hash: u64,
}

impl Prefix {
    /// Fingerprint of `bytes`, all of them (callers cut to `PREFIX_BYTES`).
    pub fn of(bytes: &[u8]) -> Prefix {
        let mut h = Fnv::new();
        h.write(bytes);
        Prefix {
            len: bytes.len() as u64,
            hash: h.finish(),
        }
    }

    /// Whether all `PREFIX_BYTES` are covered, i.e. the file was at least
    /// that long when fingerprinted.
    pub fn is_complete(&self) -> bool {
        self.len >= PREFIX_BYTES
    }

    /// This prefix grown by `bytes`, read at offset `at` of the same file,
    /// up to `PREFIX_BYTES`: the fingerprint of what those bytes were, not
    /// of what the file holds by the time it is read again (a truncation in
    /// between would empty it). `None` if they add nothing to it, or leave a
    /// gap after it.
    pub fn extended(&self, at: u64, bytes: &[u8]) -> Option<Prefix> {
        let end = (at + bytes.len() as u64).min(PREFIX_BYTES);
        if at > self.len || end <= self.len {
            return None;
        }
        // An empty prefix may be `Prefix::default()`: hash from scratch.
        let mut h = if self.len == 0 {
            Fnv::new()
        } else {
            Fnv(self.hash)
        };
        h.write(&bytes[(self.len - at) as usize..(end - at) as usize]);
        Some(Prefix {
            len: end,
            hash: h.finish(),
        })
    }
}

/// FNV-1a, 64 bits: small, stable across Rust versions (unlike `DefaultHasher`).
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_get_distinct_ids() {
        let key = FileKey { dev: 1, ino: 2 };
        let a = source_id("h", key, Some(10), 0);
        assert_eq!(a, source_id("h", key, Some(10), 0), "stable");
        assert_ne!(a, source_id("h", key, Some(11), 0), "inode reused");
        assert_ne!(a, source_id("h", key, Some(10), 1), "truncated");
        assert_ne!(a, source_id("g", key, Some(10), 0), "other host");
    }

    #[test]
    fn fnv_matches_the_reference_vectors() {
        let mut h = Fnv::new();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_prefix_extended_by_what_was_read_is_the_prefix_of_both() {
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let of = |n: usize| Prefix::of(&bytes[..n]);
        // From nothing (also from `Prefix::default()`, hash 0).
        assert_eq!(Prefix::default().extended(0, &bytes[..55]), Some(of(55)));
        assert_eq!(of(0).extended(0, &bytes[..55]), Some(of(55)));
        // A read that starts at or before the prefix's end.
        assert_eq!(of(33).extended(33, &bytes[33..55]), Some(of(55)));
        assert_eq!(of(33).extended(22, &bytes[22..55]), Some(of(55)));
        // Capped at PREFIX_BYTES.
        assert_eq!(of(200).extended(100, &bytes[100..]), Some(of(256)));
        // Nothing new, nothing read, a gap, or already complete.
        assert_eq!(of(55).extended(0, &bytes[..55]), None);
        assert_eq!(of(33).extended(33, &[]), None);
        assert_eq!(of(33).extended(40, &bytes[40..55]), None);
        assert_eq!(of(256).extended(256, &bytes[256..]), None);
    }

    #[test]
    fn prefix_reads_at_most_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![b'x'; 1000]).unwrap();
        let file = File::open(&path).unwrap();
        let p = prefix(&file, 1000).unwrap();
        assert_eq!(p, Prefix::of(&[b'x'; PREFIX_BYTES as usize]));
        assert!(p.is_complete());
        assert_eq!(prefix(&file, 3).unwrap(), Prefix::of(b"xxx"));
    }
}

//! The line index of a log split: a tantivy index with one field, `line`,
//! in which document N is row N of the split's Parquet file.
//!
//! The index is built in memory by one indexing thread with merges off, so
//! documents get ids in the order they are added and land in one segment;
//! [`IndexBuilder::finish`] checks both and packs the index files into one
//! blob, the `SLUICEIX` container, so a split is two objects, not a
//! directory. [`open_index`] checks the blob and unpacks it into a
//! `RamDirectory`.
//!
//! The field is indexed, not stored, has no field norms and no fast field:
//! the Parquet file is the document store, and results are row sets, not
//! ranked. Terms come from [`line_analyzer`]: split on every character that
//! is not alphanumeric, tokens longer than 128 bytes dropped, lowercased, so
//! search is case-insensitive.
//!
//! # Container format, version 1
//!
//! All integers little-endian; offsets count from the start of the blob.
//!
//! ```text
//! 0   8  magic "SLUICEIX"
//! 8   4  version (1)
//! 12  4  file count N (at most 1024)
//! 16  8  checksum of bytes 24.. (see `checksum`)
//! 24     N entries: name length u16, name (UTF-8), offset u64, length u64
//!        the files' bytes, after the entries
//! ```
//!
//! The files are tantivy's `meta.json`, `.managed.json` and the segment's
//! files. The checksum covers everything after the header, so a damaged
//! blob is refused before tantivy reads any of it (tantivy trusts its
//! files and may panic on damaged ones).

use std::collections::BTreeSet;
use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use sluice_schema::archive::{INDEX_FIELD_LINE, INDEX_MAX_TOKEN_BYTES, INDEX_TOKENIZER};
use tantivy::directory::RamDirectory;
use tantivy::indexer::NoMergePolicy;
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::tokenizer::{LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};
use tantivy::{Directory, Index, IndexSettings, IndexWriter, TantivyDocument};

use super::error::{Result, SplitError};

/// Smallest index memory budget tantivy accepts (its
/// `MEMORY_BUDGET_NUM_BYTES_MIN`, not exported).
pub const MIN_MEMORY_BYTES: usize = 15_000_000;
/// Largest index memory budget tantivy accepts (its
/// `MEMORY_BUDGET_NUM_BYTES_MAX`, not exported).
pub const MAX_MEMORY_BYTES: usize = u32::MAX as usize - 1_000_000;

const MAGIC: &[u8; 8] = b"SLUICEIX";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 24;
const MAX_FILES: usize = 1024;
const META_FILE: &str = "meta.json";
const MANAGED_FILE: &str = ".managed.json";

/// What the index records for each term of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexPostings {
    /// Which documents hold the term. Phrases cannot be checked.
    DocIds,
    /// And how often. Of no use without ranking; kept for measurement.
    Freqs,
    /// And where, so phrases are answered exactly.
    Positions,
}

impl IndexPostings {
    pub fn record_option(self) -> IndexRecordOption {
        match self {
            IndexPostings::DocIds => IndexRecordOption::Basic,
            IndexPostings::Freqs => IndexRecordOption::WithFreqs,
            IndexPostings::Positions => IndexRecordOption::WithFreqsAndPositions,
        }
    }

    fn from_record_option(option: IndexRecordOption) -> IndexPostings {
        match option {
            IndexRecordOption::Basic => IndexPostings::DocIds,
            IndexRecordOption::WithFreqs => IndexPostings::Freqs,
            IndexRecordOption::WithFreqsAndPositions => IndexPostings::Positions,
        }
    }
}

/// The analyzer of the `line` field, for documents and query terms alike.
pub fn line_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(INDEX_MAX_TOKEN_BYTES + 1))
        .filter(LowerCaser)
        .build()
}

/// The index schema: the one field `line`.
pub fn index_schema(postings: IndexPostings) -> (Schema, Field) {
    let mut builder = Schema::builder();
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(INDEX_TOKENIZER)
        .set_index_option(postings.record_option())
        .set_fieldnorms(false);
    let field = builder.add_text_field(
        INDEX_FIELD_LINE,
        TextOptions::default().set_indexing_options(indexing),
    );
    (builder.build(), field)
}

/// The `line` field of a split index and what it records.
pub fn line_field(index: &Index) -> Result<(Field, IndexPostings)> {
    let schema = index.schema();
    let field = schema
        .get_field(INDEX_FIELD_LINE)
        .map_err(|_| SplitError::CorruptIndex(format!("no field {INDEX_FIELD_LINE}")))?;
    let option = match schema.get_field_entry(field).field_type() {
        tantivy::schema::FieldType::Str(options) => options
            .get_indexing_options()
            .map(|i| i.index_option())
            .ok_or_else(|| SplitError::CorruptIndex("field line is not indexed".into()))?,
        _ => return Err(SplitError::CorruptIndex("field line is not text".into())),
    };
    Ok((field, IndexPostings::from_record_option(option)))
}

fn build_error(e: impl std::fmt::Display) -> SplitError {
    SplitError::IndexBuild(e.to_string())
}

/// Builds a split index one line at a time, in row order.
pub struct IndexBuilder {
    index: Index,
    writer: IndexWriter,
    field: Field,
    docs: u64,
}

impl IndexBuilder {
    /// `memory_bytes` bounds the indexer's memory; it must hold the whole
    /// split (see [`IndexBuilder::finish`]).
    pub fn new(postings: IndexPostings, memory_bytes: usize) -> Result<IndexBuilder> {
        let (schema, field) = index_schema(postings);
        // No field is stored, but tantivy writes a store entry per
        // document anyway (about 2 bytes a document with zstd; larger
        // blocks make it bigger, not smaller).
        let settings = IndexSettings {
            docstore_compression: Compressor::Zstd(ZstdCompressor::default()),
            ..IndexSettings::default()
        };
        let index = Index::builder()
            .schema(schema)
            .settings(settings)
            .create_in_ram()
            .map_err(build_error)?;
        index
            .tokenizers()
            .register(INDEX_TOKENIZER, line_analyzer());
        let writer: IndexWriter = index
            .writer_with_num_threads(1, memory_bytes)
            .map_err(build_error)?;
        writer.set_merge_policy(Box::new(NoMergePolicy));
        Ok(IndexBuilder {
            index,
            writer,
            field,
            docs: 0,
        })
    }

    /// Adds the next row's line as the next document.
    pub fn add_line(&mut self, line: &str) -> Result<()> {
        let mut doc = TantivyDocument::new();
        doc.add_text(self.field, line);
        self.writer.add_document(doc).map_err(build_error)?;
        self.docs += 1;
        Ok(())
    }

    /// Documents added so far.
    pub fn docs(&self) -> u64 {
        self.docs
    }

    /// Commits, checks that every document is in one segment, in order,
    /// and packs the index into one blob.
    pub fn finish(self) -> Result<Bytes> {
        let IndexBuilder {
            index,
            mut writer,
            docs,
            ..
        } = self;
        writer.commit().map_err(build_error)?;
        writer.wait_merging_threads().map_err(build_error)?;
        let segments = index.searchable_segment_metas().map_err(build_error)?;
        let max_docs: Vec<u32> = segments.iter().map(|s| s.max_doc()).collect();
        // One indexing thread hands out doc ids in the order documents are
        // added; a second segment would mean the memory budget was too small
        // and its doc ids would restart at 0.
        if segments.len() > 1 {
            return Err(SplitError::IndexBuild(format!(
                "split of {docs} lines needed {} index segments; raise index_memory_bytes or \
                 write smaller splits",
                segments.len()
            )));
        }
        if max_docs.iter().map(|&d| u64::from(d)).sum::<u64>() != docs
            || segments.iter().any(|s| s.has_deletes())
        {
            return Err(SplitError::IndexBuild(format!(
                "index holds {max_docs:?} documents, expected {docs}"
            )));
        }
        pack(index.directory())
    }
}

/// Builds the index of `lines` (row order) and packs it into one blob.
pub fn build_index<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    postings: IndexPostings,
    memory_bytes: usize,
) -> Result<Bytes> {
    let mut builder = IndexBuilder::new(postings, memory_bytes)?;
    for line in lines {
        builder.add_line(line)?;
    }
    builder.finish()
}

/// The names of the files a committed index consists of, sorted.
fn index_files(directory: &dyn Directory, managed: BTreeSet<String>) -> Result<Vec<String>> {
    let mut names = managed;
    names.insert(META_FILE.to_string());
    names.insert(MANAGED_FILE.to_string());
    let mut files = Vec::new();
    for name in names {
        if directory.exists(Path::new(&name)).map_err(build_error)? {
            files.push(name);
        }
    }
    Ok(files)
}

fn pack(directory: &tantivy::directory::ManagedDirectory) -> Result<Bytes> {
    let mut managed = BTreeSet::new();
    for path in directory.list_managed_files() {
        let name = path
            .to_str()
            .ok_or_else(|| build_error(format!("index file name {path:?} is not UTF-8")))?;
        managed.insert(name.to_string());
    }
    let names = index_files(directory, managed)?;
    let mut contents = Vec::with_capacity(names.len());
    for name in &names {
        // `atomic_read` returns a file as stored, footer included
        // (`open_read` of a managed directory strips it).
        let data = directory
            .atomic_read(Path::new(name))
            .map_err(build_error)?;
        contents.push(data);
    }
    let table_len: usize = names.iter().map(|n| 2 + n.len() + 16).sum();
    let data_len: usize = contents.iter().map(|c| c.len()).sum();
    let mut blob = BytesMut::with_capacity(HEADER_LEN + table_len + data_len);
    blob.put_slice(MAGIC);
    blob.put_u32_le(VERSION);
    blob.put_u32_le(names.len() as u32);
    blob.put_u64_le(0); // checksum, filled in below
    let mut offset = (HEADER_LEN + table_len) as u64;
    for (name, data) in names.iter().zip(&contents) {
        blob.put_u16_le(name.len() as u16);
        blob.put_slice(name.as_bytes());
        blob.put_u64_le(offset);
        blob.put_u64_le(data.len() as u64);
        offset += data.len() as u64;
    }
    for data in &contents {
        blob.put_slice(data);
    }
    let sum = checksum(&blob[HEADER_LEN..]);
    blob[16..24].copy_from_slice(&sum.to_le_bytes());
    Ok(blob.freeze())
}

/// A 64-bit checksum against damage (not an adversary): 8 bytes at a time,
/// xor, multiply by an odd constant, xor-shift — each step a bijection of
/// the state, so any change within one 8-byte word is always detected.
fn checksum(data: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |h: u64, w: u64| {
        let h = (h ^ w).wrapping_mul(K);
        h ^ (h >> 29)
    };
    let mut h = mix(0x5354_4c55_4943_4558, data.len() as u64);
    let mut words = data.chunks_exact(8);
    for word in &mut words {
        h = mix(h, u64::from_le_bytes(word.try_into().expect("8 bytes")));
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    mix(h, u64::from_le_bytes(tail))
}

fn corrupt(problem: impl Into<String>) -> SplitError {
    SplitError::CorruptIndex(problem.into())
}

/// Reads little-endian integers off a blob, refusing to go past its end.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| corrupt(format!("file table ends early, in {what}")))?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2"),
        ))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8"),
        ))
    }
}

/// The files of a `SLUICEIX` blob, checked: name and bytes of each.
pub fn unpack(blob: &Bytes) -> Result<Vec<(String, Bytes)>> {
    if blob.len() < HEADER_LEN {
        return Err(corrupt(format!(
            "{} bytes is shorter than the {HEADER_LEN}-byte header",
            blob.len()
        )));
    }
    if &blob[..8] != MAGIC {
        return Err(corrupt("bad magic, not a SLUICEIX blob"));
    }
    let version = u32::from_le_bytes(blob[8..12].try_into().expect("4"));
    if version != VERSION {
        return Err(corrupt(format!(
            "unsupported container version {version} (this build reads {VERSION})"
        )));
    }
    let count = u32::from_le_bytes(blob[12..16].try_into().expect("4")) as usize;
    if count > MAX_FILES {
        return Err(corrupt(format!("{count} files is more than {MAX_FILES}")));
    }
    let expected = u64::from_le_bytes(blob[16..24].try_into().expect("8"));
    if checksum(&blob[HEADER_LEN..]) != expected {
        return Err(corrupt("checksum mismatch (damaged or truncated)"));
    }
    let mut cursor = Cursor {
        data: blob,
        at: HEADER_LEN,
    };
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let what = format!("entry {i}");
        let name_len = cursor.u16(&what)? as usize;
        let name = std::str::from_utf8(cursor.take(name_len, &what)?)
            .map_err(|_| corrupt(format!("{what}: file name is not UTF-8")))?;
        let plain =
            !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
        if !plain {
            return Err(corrupt(format!("{what}: bad file name {name:?}")));
        }
        let offset = cursor.u64(&what)?;
        let len = cursor.u64(&what)?;
        entries.push((name.to_string(), offset, len));
    }
    let data_start = cursor.at as u64;
    let mut files = Vec::with_capacity(count);
    let mut seen = BTreeSet::new();
    for (name, offset, len) in entries {
        let end = offset.checked_add(len);
        if offset < data_start || end.is_none_or(|end| end > blob.len() as u64) {
            return Err(corrupt(format!(
                "file {name} at {offset}+{len} lies outside the blob's data ({data_start}..{})",
                blob.len()
            )));
        }
        if !seen.insert(name.clone()) {
            return Err(corrupt(format!("file {name} appears twice")));
        }
        files.push((name, blob.slice(offset as usize..(offset + len) as usize)));
    }
    if !seen.contains(META_FILE) {
        return Err(corrupt(format!("no {META_FILE}")));
    }
    Ok(files)
}

/// Opens a split index blob (checked, then unpacked into a
/// `RamDirectory`). The index has the line tokenizer registered and exactly
/// one segment.
pub fn open_index(blob: Bytes) -> Result<Index> {
    let files = unpack(&blob)?;
    let directory = RamDirectory::create();
    for (name, data) in &files {
        directory
            .atomic_write(Path::new(name), data)
            .map_err(|e| corrupt(format!("cannot unpack {name}: {e}")))?;
    }
    let index = Index::open(directory).map_err(|e| corrupt(e.to_string()))?;
    index
        .tokenizers()
        .register(INDEX_TOKENIZER, line_analyzer());
    line_field(&index)?;
    let segments = index
        .searchable_segment_metas()
        .map_err(|e| corrupt(e.to_string()))?;
    if segments.len() != 1 {
        return Err(corrupt(format!(
            "{} segments, a split index has exactly one",
            segments.len()
        )));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small_blob() -> Bytes {
        build_index(
            ["Out of memory: Killed process 42", "all good", "oom again"],
            IndexPostings::Positions,
            MIN_MEMORY_BYTES,
        )
        .unwrap()
    }

    fn problem(blob: Bytes) -> String {
        match open_index(blob) {
            Err(SplitError::CorruptIndex(problem)) => problem,
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a damaged blob opened"),
        }
    }

    #[test]
    fn blob_holds_meta_and_segment_files() {
        let blob = small_blob();
        let names: Vec<String> = unpack(&blob).unwrap().into_iter().map(|f| f.0).collect();
        assert!(names.contains(&META_FILE.to_string()), "{names:?}");
        assert!(names.contains(&MANAGED_FILE.to_string()), "{names:?}");
        assert!(names.iter().any(|n| n.ends_with(".idx")), "{names:?}");
        assert!(names.iter().any(|n| n.ends_with(".pos")), "{names:?}");
        let index = open_index(blob).unwrap();
        assert_eq!(
            line_field(&index).unwrap().1,
            IndexPostings::Positions,
            "record option survives"
        );
    }

    #[test]
    fn damaged_blobs_are_refused_with_the_problem_named() {
        let blob = small_blob();
        assert!(problem(Bytes::new()).contains("shorter than"));
        assert!(problem(blob.slice(..20)).contains("shorter than"));
        let mut bad = blob.to_vec();
        bad[0] = b'X';
        assert!(problem(bad.into()).contains("bad magic"));
        let mut bad = blob.to_vec();
        bad[8] = 2;
        assert!(problem(bad.into()).contains("unsupported container version 2"));
        let mut bad = blob.to_vec();
        bad[12..16].copy_from_slice(&5000u32.to_le_bytes());
        assert!(problem(bad.into()).contains("5000 files"));
        assert!(problem(blob.slice(..blob.len() - 1)).contains("checksum mismatch"));
        let mut bad = blob.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(problem(bad.into()).contains("checksum mismatch"));
    }

    /// Rewrites a blob's checksum, so damage gets past it to the checks
    /// behind it.
    fn resealed(mut bytes: Vec<u8>) -> Bytes {
        let sum = checksum(&bytes[HEADER_LEN..]);
        bytes[16..24].copy_from_slice(&sum.to_le_bytes());
        bytes.into()
    }

    #[test]
    fn damage_behind_a_good_checksum_is_refused_too() {
        let blob = small_blob();
        // The first entry's name length, made huge.
        let mut bad = blob.to_vec();
        bad[24..26].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(problem(resealed(bad)).contains("file table ends early"));
        // The first entry's offset, pointed past the end.
        let name_len = u16::from_le_bytes([blob[24], blob[25]]) as usize;
        let at = 26 + name_len;
        let mut bad = blob.to_vec();
        bad[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(problem(resealed(bad)).contains("outside the blob"));
        // The first entry renamed to a path.
        let mut bad = blob.to_vec();
        bad[26] = b'/';
        assert!(problem(resealed(bad)).contains("bad file name"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_damage_never_panics(at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>(), reseal in any::<bool>()) {
            let blob = small_blob();
            let mut bad = blob.to_vec();
            let i = at.index(bad.len());
            prop_assume!(bad[i] != byte);
            bad[i] = byte;
            bad.truncate(bad.len() - cut.index(bad.len() / 8));
            // Resealed blobs get past the checksum: tantivy may then accept
            // or refuse them, but nothing may panic.
            let result = if reseal { open_index(resealed(bad)) } else { open_index(bad.into()) };
            if !reseal {
                prop_assert!(result.is_err());
            }
        }
    }
}

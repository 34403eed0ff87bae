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
//! # Container format, version 2
//!
//! All integers little-endian; offsets count from the start of the blob.
//!
//! ```text
//! 0   8  magic "SLUICEIX"
//! 8   4  version (2)
//! 12  4  file count N (at most 1024)
//! 16  8  checksum of bytes 24.. (see `checksum`)
//! 24     N entries: name length u16, name (UTF-8), offset u64,
//!        stored length u64, length u64
//!        the files' stored bytes, after the entries
//! ```
//!
//! The files are tantivy's `meta.json`, `.managed.json` and the segment's
//! files. A file whose stored length is less than its length is stored as
//! a zstd frame (level 3) that decompresses to exactly its length; one
//! whose stored length equals its length is stored as it is (the writer
//! does so when zstd does not make it smaller). All files together unpack
//! to at most 4 GiB. The checksum covers everything after the header, so a
//! damaged blob is refused before tantivy reads any of it (tantivy trusts
//! its files and may panic on damaged ones).
//!
//! Lengths are checked before anything is allocated for them: a blob
//! whose files unpack to more than 4 GiB, or a file whose length is more
//! than zstd can produce from its stored bytes (32,768 times, a 128 KiB
//! block from 4 bytes), is refused. Within those bounds a reader
//! allocates at most 64 times a file's stored bytes ahead, more only as
//! decompression produces bytes, and stops one byte past the recorded
//! length. The ratio is not bounded tighter because a tantivy `.store` file without
//! stored fields is the same few bytes per document: zstd shrinks it 32×
//! at 100,000 documents and 412× at a million.
//!
//! zstd more than halves the index (measured by `split::measure`, release
//! build, 2-core machine): with doc ids, 240,000 loghub lines (28.9 MB of
//! line text) index into 6.53 MB of files, stored in 2.97 MB (10.3 % of
//! the line text, 22.6 % in version 1); with frequencies 7.40 MB into
//! 3.22 MB (11.2 %, was 25.6 %); with positions 10.96 MB into 4.37 MB
//! (15.1 %, was 38.0 %). Decompressing costs about 0.9 ms per unpacked MB
//! when opening: 9 ms instead of 1.9 ms with doc ids.
//!
//! Version 1, which [`open_index`] still reads, is version 2 without the
//! length: every file stored as it is.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use super::terms::{TERMS_FILE, TermFilter};
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use sluice_schema::archive::{INDEX_FIELD_LINE, INDEX_TOKENIZER};
use tantivy::directory::RamDirectory;
use tantivy::indexer::NoMergePolicy;
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Directory, Index, IndexSettings, IndexWriter, TantivyDocument};

use super::error::{Result, SplitError};
use super::tokenizer::LineTokenizer;

/// Smallest index memory budget tantivy accepts (its
/// `MEMORY_BUDGET_NUM_BYTES_MIN`, not exported).
pub const MIN_MEMORY_BYTES: usize = 15_000_000;
/// Largest index memory budget tantivy accepts (its
/// `MEMORY_BUDGET_NUM_BYTES_MAX`, not exported).
pub const MAX_MEMORY_BYTES: usize = u32::MAX as usize - 1_000_000;

const MAGIC: &[u8; 8] = b"SLUICEIX";
/// The version written: files zstd-compressed.
const VERSION: u32 = 2;
/// The first version, still read: files stored as they are.
const VERSION_1: u32 = 1;
const HEADER_LEN: usize = 24;
const MAX_FILES: usize = 1024;
/// zstd level of the files (see the module documentation for sizes).
const ZSTD_LEVEL: i32 = 3;
/// The most zstd can decompress per stored byte: a block produces at most
/// 128 KiB and takes at least 4 bytes (an RLE block). A longer file is
/// corrupt.
const ZSTD_MAX_RATIO: u64 = 32 * 1024;
/// A reader allocates at most this many times a file's stored bytes
/// before decompression has produced them.
const PREALLOCATE_RATIO: u64 = 64;
/// All files of a blob together unpack to at most this (4 GiB, about the
/// largest index the indexer's memory budget allows).
const MAX_UNPACKED_BYTES: u64 = 4 << 30;
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
    /// The tantivy record option that indexes these postings.
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
    TextAnalyzer::from(LineTokenizer::default())
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
    /// Documents not yet handed to the indexing thread: one channel send
    /// per batch instead of per document (the sends showed in profiles).
    batch: Vec<tantivy::indexer::UserOperation>,
}

/// Documents per hand-over to the indexing thread.
const BATCH_DOCS: usize = 4096;

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
            batch: Vec::with_capacity(BATCH_DOCS),
        })
    }

    /// Adds the next row's line as the next document.
    pub fn add_line(&mut self, line: &str) -> Result<()> {
        let mut doc = TantivyDocument::new();
        doc.add_text(self.field, line);
        self.batch.push(tantivy::indexer::UserOperation::Add(doc));
        self.docs += 1;
        if self.batch.len() >= BATCH_DOCS {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Sends the batch; the one indexing thread takes batches in order,
    /// so doc ids still follow the order lines were added.
    fn hand_over(&mut self) -> Result<()> {
        if !self.batch.is_empty() {
            let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_DOCS));
            self.writer.run(batch).map_err(build_error)?;
        }
        Ok(())
    }

    /// Documents added so far.
    pub fn docs(&self) -> u64 {
        self.docs
    }

    /// Commits, checks that every document is in one segment, in order,
    /// and packs the index into one blob.
    pub fn finish(mut self) -> Result<Bytes> {
        self.hand_over()?;
        let IndexBuilder {
            index,
            mut writer,
            field,
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
        let terms = term_filter(&index, field)?;
        pack(index.directory(), terms.map(|t| t.encode()))
    }
}

/// The filter of every term of the index's one segment (none when empty).
fn term_filter(index: &Index, field: Field) -> Result<Option<TermFilter>> {
    let reader = index.reader().map_err(build_error)?;
    let searcher = reader.searcher();
    let Some(segment) = searcher.segment_readers().first() else {
        return Ok(None);
    };
    let inverted = segment.inverted_index(field).map_err(build_error)?;
    let dictionary = inverted.terms();
    let mut filter = TermFilter::with_capacity(dictionary.num_terms() as u64);
    let mut stream = dictionary.stream().map_err(build_error)?;
    while stream.advance() {
        filter.insert(stream.key());
    }
    Ok(Some(filter))
}

/// Where a blob's term filter is, from the blob's first bytes: its table
/// is read without the blob's checksum (the filter has its own).
#[derive(Debug, PartialEq, Eq)]
pub enum TermsAt {
    /// The table goes on past `head`: read at least this many bytes.
    NeedBytes(usize),
    /// The filter's bytes, stored as they are.
    At {
        /// Byte offset of the filter from the start of the blob.
        offset: u64,
        /// Length of the filter in bytes (stored uncompressed).
        len: u64,
    },
    /// An index written without one.
    Absent,
}

/// Finds [`TERMS_FILE`] in the table at the start of a blob.
pub fn locate_terms(head: &[u8]) -> Result<TermsAt> {
    if head.len() < HEADER_LEN {
        return Ok(TermsAt::NeedBytes(HEADER_LEN));
    }
    if &head[..8] != MAGIC {
        return Err(corrupt("bad magic, not a SLUICEIX blob"));
    }
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4"));
    if version != VERSION {
        return Ok(TermsAt::Absent);
    }
    let count = u32::from_le_bytes(head[12..16].try_into().expect("4")) as usize;
    if count > MAX_FILES {
        return Err(corrupt(format!("{count} files is more than {MAX_FILES}")));
    }
    let mut cursor = Cursor {
        data: head,
        at: HEADER_LEN,
    };
    // Each entry is 26 bytes and its name; names are short.
    let need = || TermsAt::NeedBytes((head.len() * 2).max(HEADER_LEN + count * (26 + 64)));
    for i in 0..count {
        let what = format!("entry {i}");
        let Ok(name_len) = cursor.u16(&what) else {
            return Ok(need());
        };
        let Ok(name) = cursor.take(name_len as usize, &what) else {
            return Ok(need());
        };
        let (Ok(offset), Ok(stored), Ok(len)) =
            (cursor.u64(&what), cursor.u64(&what), cursor.u64(&what))
        else {
            return Ok(need());
        };
        if name == TERMS_FILE.as_bytes() {
            if stored != len || len > 1 << 30 {
                return Err(corrupt(format!(
                    "{TERMS_FILE} stored in {stored} of {len} bytes"
                )));
            }
            return Ok(TermsAt::At { offset, len });
        }
    }
    Ok(TermsAt::Absent)
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

fn pack(directory: &tantivy::directory::ManagedDirectory, terms: Option<Vec<u8>>) -> Result<Bytes> {
    let mut managed = BTreeSet::new();
    for path in directory.list_managed_files() {
        let name = path
            .to_str()
            .ok_or_else(|| build_error(format!("index file name {path:?} is not UTF-8")))?;
        managed.insert(name.to_string());
    }
    let names = index_files(directory, managed)?;
    let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(build_error)?;
    let mut files = Vec::with_capacity(names.len());
    let mut unpacked = 0u64;
    for name in names {
        // `atomic_read` returns a file as stored, footer included
        // (`open_read` of a managed directory strips it).
        let data = directory
            .atomic_read(Path::new(&name))
            .map_err(build_error)?;
        let len = data.len() as u64;
        unpacked += len;
        let stored = stored_form(&mut compressor, data)?;
        files.push((name, stored, len));
    }
    // Plain, so a query reads it with one range request.
    if let Some(terms) = terms {
        let len = terms.len() as u64;
        files.push((TERMS_FILE.to_string(), terms, len));
    }
    if unpacked > MAX_UNPACKED_BYTES {
        return Err(build_error(format!(
            "index files take {unpacked} bytes, more than the {MAX_UNPACKED_BYTES} a split \
             index may hold; write smaller splits"
        )));
    }
    let table_len: usize = files.iter().map(|(name, ..)| 2 + name.len() + 24).sum();
    let data_len: usize = files.iter().map(|(_, stored, _)| stored.len()).sum();
    let mut blob = BytesMut::with_capacity(HEADER_LEN + table_len + data_len);
    blob.put_slice(MAGIC);
    blob.put_u32_le(VERSION);
    blob.put_u32_le(files.len() as u32);
    blob.put_u64_le(0); // checksum, filled in below
    let mut offset = (HEADER_LEN + table_len) as u64;
    for (name, stored, len) in &files {
        blob.put_u16_le(name.len() as u16);
        blob.put_slice(name.as_bytes());
        blob.put_u64_le(offset);
        blob.put_u64_le(stored.len() as u64);
        blob.put_u64_le(*len);
        offset += stored.len() as u64;
    }
    for (_, stored, _) in &files {
        blob.put_slice(stored);
    }
    let sum = checksum(&blob[HEADER_LEN..]);
    blob[16..24].copy_from_slice(&sum.to_le_bytes());
    Ok(blob.freeze())
}

/// What to store of a file: its zstd frame, or the file itself when zstd
/// does not make it smaller.
fn stored_form(compressor: &mut zstd::bulk::Compressor<'_>, data: Vec<u8>) -> Result<Vec<u8>> {
    let frame = compressor.compress(&data).map_err(build_error)?;
    Ok(if frame.len() < data.len() {
        frame
    } else {
        data
    })
}

/// A 64-bit checksum against damage (not an adversary): 8 bytes at a time,
/// xor, multiply by an odd constant, xor-shift — each step a bijection of
/// the state, so any change within one 8-byte word is always detected.
pub(super) fn checksum(data: &[u8]) -> u64 {
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

/// A file of a blob, as its table records it.
struct Entry {
    name: String,
    offset: u64,
    /// Bytes it takes in the blob.
    stored: u64,
    /// Bytes it unpacks to: `stored` if it is stored as it is, more if it
    /// is a zstd frame.
    len: u64,
}

/// The file table of a `SLUICEIX` blob, checked: header, checksum, names,
/// every file inside the blob and of a size a writer may record.
fn entries(blob: &Bytes) -> Result<Vec<Entry>> {
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
    if version != VERSION && version != VERSION_1 {
        return Err(corrupt(format!(
            "unsupported container version {version} (this build reads {VERSION_1} and \
             {VERSION})"
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
        let stored = cursor.u64(&what)?;
        let len = if version == VERSION_1 {
            stored
        } else {
            cursor.u64(&what)?
        };
        entries.push(Entry {
            name: name.to_string(),
            offset,
            stored,
            len,
        });
    }
    if version != VERSION_1 {
        let unpacked = entries
            .iter()
            .try_fold(0u64, |sum, e| sum.checked_add(e.len))
            .filter(|&sum| sum <= MAX_UNPACKED_BYTES);
        if unpacked.is_none() {
            return Err(corrupt(format!(
                "files unpack to more than {MAX_UNPACKED_BYTES} bytes, the most a split index \
                 may hold"
            )));
        }
    }
    let data_start = cursor.at as u64;
    let mut seen = BTreeSet::new();
    for Entry {
        name,
        offset,
        stored,
        len,
    } in &entries
    {
        let (offset, stored, len) = (*offset, *stored, *len);
        let end = offset.checked_add(stored);
        if offset < data_start || end.is_none_or(|end| end > blob.len() as u64) {
            return Err(corrupt(format!(
                "file {name} at {offset}+{stored} lies outside the blob's data ({data_start}..{})",
                blob.len()
            )));
        }
        if !seen.insert(name.as_str()) {
            return Err(corrupt(format!("file {name} appears twice")));
        }
        if stored > len {
            return Err(corrupt(format!(
                "file {name} is stored in {stored} bytes, more than its length {len}"
            )));
        }
        if len > stored.saturating_mul(ZSTD_MAX_RATIO) {
            return Err(corrupt(format!(
                "file {name} would unpack {stored} bytes into {len}, more than zstd can \
                 ({ZSTD_MAX_RATIO} times as many)"
            )));
        }
    }
    if !seen.contains(META_FILE) {
        return Err(corrupt(format!("no {META_FILE}")));
    }
    Ok(entries)
}

/// The bytes of a checked file: a slice of the blob, or its zstd frame
/// decompressed to exactly its recorded length.
fn file_data(blob: &Bytes, entry: &Entry) -> Result<Bytes> {
    let Entry {
        name,
        offset,
        stored,
        len,
    } = entry;
    // `entries` checked that the file lies inside the blob.
    let data = blob.slice(*offset as usize..(offset + stored) as usize);
    if stored == len {
        return Ok(data);
    }
    let failed = |e: std::io::Error| {
        corrupt(format!(
            "file {name}: cannot decompress {stored} bytes into its length {len}: {e}"
        ))
    };
    // `entries` bounded `len` (zstd's ratio, 4 GiB in all); allocate ahead
    // at most `PREALLOCATE_RATIO` times the stored bytes, more only as
    // bytes come, and read one byte past `len` to notice a longer file.
    let ahead = usize::try_from((*len).min(stored.saturating_mul(PREALLOCATE_RATIO)))
        .map_err(|_| corrupt(format!("file {name} of {len} bytes does not fit in memory")))?;
    let mut unpacked = Vec::with_capacity(ahead);
    zstd::stream::read::Decoder::with_buffer(&data[..])
        .map_err(failed)?
        .take(len.saturating_add(1))
        .read_to_end(&mut unpacked)
        .map_err(failed)?;
    if unpacked.len() as u64 != *len {
        return Err(corrupt(format!(
            "file {name} decompresses to {}{} bytes, its length is {len}",
            if unpacked.len() as u64 > *len {
                "more than "
            } else {
                ""
            },
            unpacked.len().min(*len as usize),
        )));
    }
    Ok(unpacked.into())
}

/// The files of a `SLUICEIX` blob, checked: name and (decompressed) bytes
/// of each.
pub fn unpack(blob: &Bytes) -> Result<Vec<(String, Bytes)>> {
    entries(blob)?
        .into_iter()
        .map(|entry| Ok((entry.name.clone(), file_data(blob, &entry)?)))
        .collect()
}

/// Opens a split index blob (checked, then unpacked into a
/// `RamDirectory`). The index has the line tokenizer registered and exactly
/// one segment.
pub fn open_index(blob: Bytes) -> Result<Index> {
    let directory = RamDirectory::create();
    // One file decompressed at a time: the directory copies it.
    for entry in entries(&blob)? {
        if entry.name == TERMS_FILE {
            continue;
        }
        let data = file_data(&blob, &entry)?;
        directory
            .atomic_write(Path::new(&entry.name), &data)
            .map_err(|e| corrupt(format!("cannot unpack {}: {e}", entry.name)))?;
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
mod tests;

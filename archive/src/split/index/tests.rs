use super::*;
use proptest::prelude::*;

const LINES: [&str; 3] = ["Out of memory: Killed process 42", "all good", "oom again"];

fn small_blob() -> Bytes {
    build_index(LINES, IndexPostings::Positions, MIN_MEMORY_BYTES).unwrap()
}

/// `files` in a version 1 blob, written from the format's description.
fn v1_blob(files: &[(String, Bytes)]) -> Bytes {
    let table_len: usize = files.iter().map(|(name, _)| 2 + name.len() + 16).sum();
    let mut blob = BytesMut::new();
    blob.put_slice(MAGIC);
    blob.put_u32_le(1);
    blob.put_u32_le(files.len() as u32);
    blob.put_u64_le(0);
    let mut offset = (HEADER_LEN + table_len) as u64;
    for (name, data) in files {
        blob.put_u16_le(name.len() as u16);
        blob.put_slice(name.as_bytes());
        blob.put_u64_le(offset);
        blob.put_u64_le(data.len() as u64);
        offset += data.len() as u64;
    }
    for (_, data) in files {
        blob.put_slice(data);
    }
    resealed(blob.to_vec())
}

fn small_v1_blob() -> Bytes {
    v1_blob(&unpack(&small_blob()).unwrap())
}

/// Where each entry's `offset` field starts, by file name.
fn offset_fields(blob: &[u8]) -> Vec<(String, usize)> {
    let version = u32::from_le_bytes(blob[8..12].try_into().unwrap());
    let count = u32::from_le_bytes(blob[12..16].try_into().unwrap()) as usize;
    let mut at = HEADER_LEN;
    let mut fields = Vec::new();
    for _ in 0..count {
        let name_len = u16::from_le_bytes([blob[at], blob[at + 1]]) as usize;
        let name = String::from_utf8(blob[at + 2..at + 2 + name_len].to_vec()).unwrap();
        fields.push((name, at + 2 + name_len));
        at += 2 + name_len + if version == 1 { 16 } else { 24 };
    }
    fields
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
fn files_are_compressed_and_version_1_still_opens() {
    let blob = small_blob();
    assert_eq!(blob[8..12], VERSION.to_le_bytes());
    let entries = entries(&blob).unwrap();
    let meta = entries.iter().find(|e| e.name == META_FILE).unwrap();
    assert!(meta.stored < meta.len, "meta.json is compressed");
    let stored: u64 = entries.iter().map(|e| e.stored).sum();
    let unpacked: u64 = entries.iter().map(|e| e.len).sum();
    assert!(stored < unpacked, "{stored} < {unpacked}");
    let terms = entries.iter().find(|e| e.name == TERMS_FILE).unwrap();
    assert_eq!(terms.stored, terms.len, "the term filter is stored plain");
    let files = unpack(&blob).unwrap();

    let v1 = v1_blob(&files);
    assert_eq!(unpack(&v1).unwrap(), files, "version 1 unpacks the same");
    let v1_entries = super::entries(&v1).unwrap();
    assert!(v1_entries.iter().all(|e| e.stored == e.len));
    for blob in [blob, v1] {
        let index = open_index(blob).unwrap();
        let query = super::super::SearchQuery::parse("killed OR oom").unwrap();
        let hits = super::super::search_rows(&index, &query).unwrap();
        assert_eq!(hits.rows, [0, 2]);
    }
}

#[test]
fn the_term_filter_is_found_from_the_blob_s_first_bytes() {
    let blob = small_blob();
    assert_eq!(
        locate_terms(&blob[..10]).unwrap(),
        TermsAt::NeedBytes(HEADER_LEN)
    );
    assert!(matches!(
        locate_terms(&blob[..HEADER_LEN + 5]).unwrap(),
        TermsAt::NeedBytes(n) if n > HEADER_LEN + 5
    ));
    let TermsAt::At { offset, len } = locate_terms(&blob).unwrap() else {
        panic!("a new blob has a term filter");
    };
    let filter = TermFilter::decode(&blob[offset as usize..(offset + len) as usize]).unwrap();
    for term in ["out", "memory", "killed", "42", "oom", "again"] {
        assert!(filter.may_contain(term.as_bytes()), "{term}");
    }
    let mut bad = blob.to_vec();
    bad[..8].copy_from_slice(b"NOTSLUIC");
    assert!(locate_terms(&bad).is_err());
    // A version 1 blob has none: searched by opening the index.
    let v1 = v1_blob(&unpack(&blob).unwrap());
    assert_eq!(locate_terms(&v1).unwrap(), TermsAt::Absent);
}

#[test]
fn files_zstd_would_not_shrink_are_stored_as_they_are() {
    let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL).unwrap();
    let text = LINES.concat().repeat(20).into_bytes();
    let stored = stored_form(&mut compressor, text.clone()).unwrap();
    assert!(stored.len() < text.len());
    assert_eq!(zstd::bulk::decompress(&stored, text.len()).unwrap(), text);
    for data in [vec![], b"oom".to_vec()] {
        assert_eq!(stored_form(&mut compressor, data.clone()).unwrap(), data);
    }
}

#[test]
fn files_compressed_far_beyond_the_preallocation_ratio_open() {
    // The `.store` file of 300,000 documents, the same bytes for each,
    // shrinks about 95 times: decompression grows the buffer past
    // `PREALLOCATE_RATIO` times the stored bytes.
    let lines = vec!["heartbeat ok"; 300_000];
    let blob = build_index(lines, IndexPostings::DocIds, 30_000_000).unwrap();
    let entries = entries(&blob).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.name.ends_with(".store") && e.len > e.stored * PREALLOCATE_RATIO),
        "the test needs a file beyond the preallocation ratio"
    );
    let index = open_index(blob).unwrap();
    let hits = super::super::search_rows(
        &index,
        &super::super::SearchQuery::parse("heartbeat").unwrap(),
    )
    .unwrap();
    assert_eq!(hits.rows.len(), 300_000);
}

#[test]
fn damaged_blobs_are_refused_with_the_problem_named() {
    for blob in [small_blob(), small_v1_blob()] {
        assert!(problem(Bytes::new()).contains("shorter than"));
        assert!(problem(blob.slice(..20)).contains("shorter than"));
        let mut bad = blob.to_vec();
        bad[0] = b'X';
        assert!(problem(bad.into()).contains("bad magic"));
        let mut bad = blob.to_vec();
        bad[8] = 3;
        assert!(problem(bad.into()).contains("unsupported container version 3"));
        let mut bad = blob.to_vec();
        bad[12..16].copy_from_slice(&5000u32.to_le_bytes());
        assert!(problem(bad.into()).contains("5000 files"));
        assert!(problem(blob.slice(..blob.len() - 1)).contains("checksum mismatch"));
        let mut bad = blob.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(problem(bad.into()).contains("checksum mismatch"));
    }
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
    for blob in [small_blob(), small_v1_blob()] {
        // The first entry's name length, made huge.
        let mut bad = blob.to_vec();
        bad[24..26].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(problem(resealed(bad)).contains("file table ends early"));
        // The first entry's offset, pointed past the end.
        let at = offset_fields(&blob)[0].1;
        let mut bad = blob.to_vec();
        bad[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(problem(resealed(bad)).contains("outside the blob"));
        // The first entry renamed to a path.
        let mut bad = blob.to_vec();
        bad[26] = b'/';
        assert!(problem(resealed(bad)).contains("bad file name"));
        // A segment file renamed to the one before it (`.idx`, `.pos`).
        let fields = offset_fields(&blob);
        let pos = fields.iter().position(|f| f.0.ends_with(".pos")).unwrap();
        let idx = &fields[pos - 1].0;
        assert!(idx.ends_with(".idx"), "{fields:?}");
        // The `.pos` name ends where its offset field starts.
        let at = fields[pos].1 - fields[pos].0.len();
        let mut bad = blob.to_vec();
        bad[at..at + idx.len()].copy_from_slice(idx.as_bytes());
        assert!(problem(resealed(bad)).contains("appears twice"));
    }
}

#[test]
fn bad_lengths_behind_a_good_checksum_are_refused_before_allocating() {
    let blob = small_blob();
    let entries = entries(&blob).unwrap();
    let fields = offset_fields(&blob);
    let meta = entries.iter().position(|e| e.name == META_FILE).unwrap();
    let (stored, len) = (entries[meta].stored, entries[meta].len);
    let with_len = |len: u64| {
        let at = fields[meta].1 + 16;
        let mut bad = blob.to_vec();
        bad[at..at + 8].copy_from_slice(&len.to_le_bytes());
        problem(resealed(bad))
    };
    assert!(with_len(len + 1).contains(&format!("decompresses to {len} bytes")));
    assert!(with_len(len - 1).contains(&format!("decompresses to more than {} bytes", len - 1)));
    // A length within zstd's bound but far beyond the frame: refused
    // after reading the frame, without allocating the length.
    assert!(with_len(stored * 1000).contains(&format!("decompresses to {len} bytes")));
    assert!(with_len(stored - 1).contains("more than its length"));
    assert!(with_len(stored * ZSTD_MAX_RATIO + 1).contains("more than zstd can"));
    assert!(with_len(5 << 30).contains("more than 4294967296 bytes"));
    assert!(with_len(u64::MAX).contains("more than 4294967296 bytes"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_damage_never_panics(v1 in any::<bool>(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>(), reseal in any::<bool>()) {
        let blob = if v1 { small_v1_blob() } else { small_blob() };
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

    /// Damage aimed at the file table's numbers, resealed.
    #[test]
    fn damaged_table_numbers_never_panic(v1 in any::<bool>(), entry in any::<prop::sample::Index>(), field in 0usize..3, value in prop_oneof![any::<u64>(), 0u64..100_000]) {
        let blob = if v1 { small_v1_blob() } else { small_blob() };
        let fields = offset_fields(&blob);
        let at = fields[entry.index(fields.len())].1 + 8 * field.min(if v1 { 1 } else { 2 });
        let mut bad = blob.to_vec();
        bad[at..at + 8].copy_from_slice(&value.to_le_bytes());
        let _ = open_index(resealed(bad));
    }
}

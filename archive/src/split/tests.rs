//! Splits end to end: rows → Parquet and index → read back, searched and
//! selected.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, Encoding};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use proptest::prelude::*;
use sluice_schema::archive::{self as schema};
use sluice_schema::pb::{ClusterEvent, EventKind, Line, LogChunk, Source, Stream};

use super::rows::{event_rows_from_batch, log_rows_from_batch};
use super::*;

/// 2027-01-15T08:01:00Z: rows go back from here by a millisecond each.
const BASE_TS: i64 = 1_800_000_060_000_000_000;

fn source(job: &str, instance: u32, source_id: u64) -> Source {
    Source {
        host: format!("host-{}", instance % 3),
        job: job.to_string(),
        instance,
        task_id: format!("{job}/{instance}/abc"),
        run: 1,
        process: "main".into(),
        stream: Stream::Stdout as i32,
        path: format!("/var/sandbox/{instance}/stdout"),
        layout: 1,
        labels: if instance == 0 {
            BTreeMap::new()
        } else {
            [("team".to_string(), "core".to_string())].into()
        },
        source_id,
    }
}

/// `lines` spread over a few jobs and instances, in chunk (not sorted)
/// order; line `i` has text `text(i)` and ts decreasing with i, so sorting
/// really moves rows.
fn rows_with(lines: usize, text: impl Fn(usize) -> Vec<u8>) -> Vec<LogRow> {
    let jobs = ["web/prod/api", "batch/dev/etl", "db/prod/pg"];
    let mut rows = Vec::new();
    let per_chunk = 7;
    for start in (0..lines).step_by(per_chunk) {
        let k = start / per_chunk;
        let chunk = LogChunk {
            source: Some(source(jobs[k % 3], (k % 4) as u32, 1000 + (k % 5) as u64)),
            lines: (start..(start + per_chunk).min(lines))
                .map(|i| Line {
                    offset: i as u64 * 100,
                    raw_len: 100,
                    ts_unix_nanos: BASE_TS - i as i64 * 1_000_000,
                    text: Bytes::from(text(i)),
                    partial: i % 11 == 0,
                    truncated: i % 13 == 0,
                    unterminated: i % 17 == 0,
                })
                .collect(),
            shipped_at_unix_nanos: 0,
        };
        LogRow::extend_from_chunk(&mut rows, &chunk);
    }
    rows
}

fn small_options() -> SplitOptions {
    SplitOptions {
        row_group_rows: 100,
        page_rows: 10,
        index_memory_bytes: index::MIN_MEMORY_BYTES,
        ..Default::default()
    }
}

fn read_log_rows(parquet: &Bytes) -> Vec<LogRow> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(parquet.clone())
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        rows.extend(log_rows_from_batch(&batch.unwrap()).unwrap());
    }
    rows
}

fn metadata(parquet: &Bytes) -> Arc<ParquetMetaData> {
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
    ParquetRecordBatchReaderBuilder::try_new_with_options(parquet.clone(), options)
        .unwrap()
        .metadata()
        .clone()
}

fn sorted(mut rows: Vec<LogRow>) -> Vec<LogRow> {
    rows.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    rows
}

#[test]
fn log_rows_round_trip_sorted_with_exact_bytes() {
    let rows = rows_with(1000, |i| match i {
        5 => b"bad \xff\xfe utf8".to_vec(),
        6 => Vec::new(),
        _ => format!("line {i} of the test").into_bytes(),
    });
    let split = write_log_split(rows.clone(), &small_options()).unwrap();
    let back = read_log_rows(&split.parquet);
    assert_eq!(back, sorted(rows.clone()));
    let bad = back
        .iter()
        .find(|r| r.text.as_ref() == b"bad \xff\xfe utf8")
        .expect("invalid utf-8 line kept");
    assert_eq!(bad.line(), "bad \u{fffd}\u{fffd} utf8");

    let stats = &split.stats;
    assert_eq!(stats.rows, 1000);
    assert_eq!(
        stats.raw_bytes,
        rows.iter().map(|r| r.text.len() as u64).sum::<u64>()
    );
    assert_eq!(stats.parquet_bytes, split.parquet.len() as u64);
    assert_eq!(stats.index_bytes, split.index.len() as u64);
    assert_eq!(stats.max_ts, BASE_TS);
    assert_eq!(stats.min_ts, BASE_TS - 999 * 1_000_000);
    assert_eq!(
        stats.jobs.iter().map(String::as_str).collect::<Vec<_>>(),
        ["batch/dev/etl", "db/prod/pg", "web/prod/api"]
    );
}

#[test]
fn parquet_layout_is_as_documented() {
    let split = write_log_split(
        rows_with(1000, |i| format!("x{i}").into_bytes()),
        &small_options(),
    )
    .unwrap();
    let meta = metadata(&split.parquet);
    let file = meta.file_metadata();
    assert_eq!(file.num_rows(), 1000);
    let kv: BTreeMap<_, _> = file
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    assert_eq!(
        kv.get(schema::FORMAT_VERSION_KEY).map(|v| v.as_deref()),
        Some(Some(schema::FORMAT_VERSION))
    );
    assert_eq!(meta.num_row_groups(), 10);
    assert_eq!(row_group_row_counts(&meta), vec![100; 10]);
    let arrow = schema::logs_schema();
    let col = |name: &str| arrow.index_of(name).unwrap();
    let rg = meta.row_group(0);
    assert_eq!(rg.sorting_columns().unwrap().len(), 5);
    for c in rg.columns() {
        assert!(matches!(c.compression(), Compression::ZSTD(_)));
    }
    let dictionary = |name: &str| {
        rg.column(col(name))
            .encodings()
            .any(|e| e == Encoding::RLE_DICTIONARY)
    };
    assert!(dictionary(schema::COL_HOST) && dictionary(schema::COL_JOB));
    assert!(!dictionary(schema::COL_LINE) && !dictionary(schema::COL_TS));
    assert!(rg.column(col(schema::COL_JOB)).statistics().is_some());
    assert!(rg.column(col(schema::COL_LINE)).statistics().is_none());
    // Page statistics: a column index for `ts`, 10 pages per row group.
    let offsets = meta.offset_index().expect("offset index");
    assert_eq!(offsets[0][col(schema::COL_TS)].page_locations().len(), 10);
    let indexes = meta.column_index().expect("column index");
    assert!(!matches!(
        indexes[0][col(schema::COL_TS)],
        parquet::file::page_index::column_index::ColumnIndexMetaData::NONE
    ));
    // The partition columns are in the path only.
    let names: Vec<&str> = file
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name())
        .collect();
    assert!(!names.contains(&"date") && !names.contains(&"hour"));
}

#[test]
fn empty_splits_and_bad_options_are_refused() {
    assert!(matches!(
        write_log_split(Vec::new(), &SplitOptions::default()),
        Err(SplitError::Empty)
    ));
    let bad = SplitOptions {
        zstd_level: 0,
        ..Default::default()
    };
    let err = write_log_split(rows_with(3, |_| b"a".to_vec()), &bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid split options: zstd_level: must be between 1 and 22"
    );
    let bad = SplitOptions {
        page_rows: 100_000,
        ..Default::default()
    };
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("page_rows")
    );
    let parsed: SplitOptions = serde_json::from_str(r#"{"index_postings": "doc_ids"}"#).unwrap();
    assert_eq!(parsed.index_postings, IndexPostings::DocIds);
    assert!(serde_json::from_str::<SplitOptions>(r#"{"zstd": 3}"#).is_err());
}

fn search(split: &LogSplit, query: &str) -> SearchHits {
    let index = open_index(split.index.clone()).unwrap();
    search_rows(&index, &SearchQuery::parse(query).unwrap()).unwrap()
}

#[test]
fn row_n_is_document_n() {
    let rows = rows_with(3000, |i| format!("request id{i} done").into_bytes());
    let split = write_log_split(rows, &small_options()).unwrap();
    let back = read_log_rows(&split.parquet);
    let index = open_index(split.index.clone()).unwrap();
    for (n, row) in back.iter().enumerate().step_by(7) {
        let token = row.line().split(' ').nth(1).unwrap().to_string();
        let hits = search_rows(&index, &SearchQuery::parse(&token).unwrap()).unwrap();
        assert_eq!(hits.rows, [n as u32], "{token}");
        assert!(hits.exact);
    }
    let all = search_rows(&index, &SearchQuery::parse("request").unwrap()).unwrap();
    assert_eq!(all.rows, (0..3000).collect::<Vec<u32>>());
}

#[test]
fn search_is_case_insensitive() {
    let lines = ["Out Of Memory", "OOM killer", "oom", "fine", "Grüße GRÜSSE"];
    let rows = rows_with(lines.len(), |i| lines[i].as_bytes().to_vec());
    let split = write_log_split(rows, &small_options()).unwrap();
    let back = read_log_rows(&split.parquet);
    let row_of = |text: &str| back.iter().position(|r| r.text == text.as_bytes()).unwrap() as u32;
    let mut want = vec![row_of("OOM killer"), row_of("oom")];
    want.sort();
    assert_eq!(search(&split, "oom").rows, want);
    assert_eq!(search(&split, "OoM").rows, want);
    assert_eq!(search(&split, "MEMORY").rows, [row_of("Out Of Memory")]);
    assert_eq!(search(&split, "grüße").rows, [row_of("Grüße GRÜSSE")]);
}

/// Builds a split of `lines` with `postings` and checks every query
/// against the brute-force answer of `SearchQuery::matches`.
fn check_queries(lines: &[String], queries: &[&str], postings: IndexPostings) {
    let rows = rows_with(lines.len(), |i| lines[i].clone().into_bytes());
    let options = SplitOptions {
        index_postings: postings,
        ..small_options()
    };
    let split = write_log_split(rows, &options).unwrap();
    let back = read_log_rows(&split.parquet);
    let index = open_index(split.index.clone()).unwrap();
    for &text in queries {
        let query = SearchQuery::parse(text).unwrap();
        let hits = search_rows(&index, &query).unwrap();
        let truth: Vec<u32> = (0..back.len() as u32)
            .filter(|&i| query.matches(&back[i as usize].line()))
            .collect();
        let exact_expected =
            (postings == IndexPostings::Positions || !query.has_phrases()) && !query.has_fields();
        assert_eq!(hits.exact, exact_expected, "{text}");
        if hits.exact {
            assert_eq!(hits.rows, truth, "{text} with {postings:?}");
        } else {
            assert!(
                truth.iter().all(|r| hits.rows.binary_search(r).is_ok()),
                "{text}: inexact hits must be a superset"
            );
            let kept: Vec<u32> = hits
                .rows
                .iter()
                .copied()
                .filter(|&r| query.matches(&back[r as usize].line()))
                .collect();
            assert_eq!(kept, truth, "{text}: re-checked");
        }
    }
}

const SEMANTIC_LINES: [&str; 8] = [
    "kernel: Out of memory: Killed process 42 (java)",
    "memory out of reach",
    "oom-killer invoked",
    "connection refused from 10.0.0.7:8080",
    "connection reset",
    "killed by signal 9",
    "all good",
    "not found: /api/v1",
];

const SEMANTIC_QUERIES: [&str; 16] = [
    "memory",
    "out memory",
    "\"out of memory\"",
    "\"memory out\"",
    "oom OR killed",
    "connection AND NOT refused",
    "NOT connection",
    "NOT \"out of memory\"",
    "(oom OR \"out of memory\") killed",
    "10.0.0.7:8080",
    "oom-killer",
    "not found",
    "NOT (memory OR connection OR killed)",
    "refused OR \"reset\"",
    "\"killed process\" OR \"by signal\"",
    "nothing_like_this",
];

#[test]
fn boolean_and_phrase_semantics_with_positions() {
    let lines: Vec<String> = SEMANTIC_LINES.iter().map(|s| s.to_string()).collect();
    check_queries(&lines, &SEMANTIC_QUERIES, IndexPostings::Positions);
}

#[test]
fn without_positions_phrases_are_supersets_flagged_inexact() {
    let lines: Vec<String> = SEMANTIC_LINES.iter().map(|s| s.to_string()).collect();
    check_queries(&lines, &SEMANTIC_QUERIES, IndexPostings::DocIds);
    check_queries(&lines, &SEMANTIC_QUERIES, IndexPostings::Freqs);
    // The superset really is larger for a phrase whose words are apart.
    let rows = rows_with(lines.len(), |i| lines[i].clone().into_bytes());
    let options = SplitOptions {
        index_postings: IndexPostings::DocIds,
        ..small_options()
    };
    let split = write_log_split(rows, &options).unwrap();
    let hits = search(&split, "\"out of memory\"");
    assert!(!hits.exact);
    assert_eq!(hits.rows.len(), 2);
    let back = read_log_rows(&split.parquet);
    let lines = arrow_array::StringArray::from_iter_values(
        hits.rows
            .iter()
            .map(|&r| back[r as usize].line().into_owned()),
    );
    let mask = recheck_mask(&lines, &SearchQuery::parse("\"out of memory\"").unwrap());
    assert_eq!(mask.true_count(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn index_agrees_with_the_semantics(
        lines in prop::collection::vec(prop::collection::vec(0usize..6, 0..6), 1..60),
        queries in prop::collection::vec(
            (0usize..6, 0usize..6, 0usize..6, 0usize..9),
            1..8,
        ),
    ) {
        const WORDS: [&str; 6] = ["alpha", "Beta", "gamma", "delta", "eps", "zeta"];
        let lines: Vec<String> = lines
            .iter()
            .map(|ws| ws.iter().map(|&w| WORDS[w]).collect::<Vec<_>>().join(" "))
            .collect();
        let queries: Vec<String> = queries
            .iter()
            .map(|&(a, b, c, op)| {
                let (a, b, c) = (WORDS[a], WORDS[b], WORDS[c]);
                match op {
                    0 => format!("{a} {b}"),
                    1 => format!("{a} OR {b}"),
                    2 => format!("{a} NOT {b}"),
                    3 => format!("\"{a} {b}\""),
                    4 => format!("\"{a} {b}\" {c}"),
                    5 => format!("{c} OR \"{a} {b} {c}\""),
                    6 => format!("{c} NOT \"{a} {b}\""),
                    7 => format!("NOT ({a} OR \"{b} {c}\")"),
                    _ => format!("NOT \"{a} {b}\" OR {b}"),
                }
            })
            .collect();
        let queries: Vec<&str> = queries.iter().map(String::as_str).collect();
        check_queries(&lines, &queries, IndexPostings::Positions);
        check_queries(&lines, &queries, IndexPostings::DocIds);
    }
}

#[test]
fn selections_cover_each_row_group_exactly() {
    use parquet::arrow::arrow_reader::RowSelector as S;
    let groups = row_group_selections(&[0, 1, 2, 5, 9, 10, 29], &[10, 10, 10]).unwrap();
    let selectors = |g: &RowGroupSelection| g.selection.iter().copied().collect::<Vec<S>>();
    assert_eq!(
        groups
            .iter()
            .map(|g| (g.row_group, g.selected))
            .collect::<Vec<_>>(),
        [(0, 5), (1, 1), (2, 1)]
    );
    // Row 10 starts group 1: the run 9, 10 is cut at the group boundary.
    assert_eq!(
        selectors(&groups[0]),
        [
            S::select(3),
            S::skip(2),
            S::select(1),
            S::skip(3),
            S::select(1)
        ]
    );
    assert_eq!(selectors(&groups[1]), [S::select(1), S::skip(9)]);
    assert_eq!(selectors(&groups[2]), [S::skip(9), S::select(1)]);
    for g in &groups {
        assert_eq!(g.selection.skipped_row_count() + g.selected, 10);
    }
    let groups = row_group_selections(&[3], &[0, 5, 0]).unwrap();
    assert_eq!(groups[0].row_group, 1, "empty row groups are skipped");
    assert!(row_group_selections(&[], &[10]).unwrap().is_empty());
    let err = row_group_selections(&[3, 3], &[10])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not strictly ascending"), "{err}");
    let err = row_group_selections(&[30], &[10, 10, 10])
        .unwrap_err()
        .to_string();
    assert!(err.contains("beyond the file's 30 rows"), "{err}");
}

#[test]
fn selections_read_exactly_the_hits_across_row_groups() {
    let rows = rows_with(1000, |i| {
        let tag = if i % 97 == 3 || i / 100 == 4 {
            " needle"
        } else {
            ""
        };
        format!("line {i}{tag}").into_bytes()
    });
    let split = write_log_split(rows, &small_options()).unwrap();
    let back = read_log_rows(&split.parquet);
    let hits = search(&split, "needle");
    let expected: Vec<LogRow> = hits
        .rows
        .iter()
        .map(|&r| back[r as usize].clone())
        .collect();
    assert!(expected.iter().all(|r| r.line().ends_with("needle")));
    assert_eq!(
        expected.len(),
        back.iter().filter(|r| r.line().ends_with("needle")).count()
    );

    let meta = metadata(&split.parquet);
    let groups = row_group_selections(&hits.rows, &row_group_row_counts(&meta)).unwrap();
    assert!(groups.len() > 2, "{}", groups.len());
    assert_eq!(
        groups.iter().map(|g| g.selected).sum::<usize>(),
        hits.rows.len()
    );
    let (row_groups, selection) = reader_selection(&groups);
    let reader = ParquetRecordBatchReaderBuilder::try_new(split.parquet.clone())
        .unwrap()
        .with_row_groups(row_groups)
        .with_row_selection(selection)
        .build()
        .unwrap();
    let mut got = Vec::new();
    for batch in reader {
        got.extend(log_rows_from_batch(&batch.unwrap()).unwrap());
    }
    assert_eq!(got, expected);
}

#[test]
fn events_round_trip_sorted() {
    let events: Vec<ClusterEvent> = (0..50)
        .map(|i| ClusterEvent {
            id: format!("sched/1-{i}"),
            ts_unix_nanos: 1_800_000_000_000_000_000 + (50 - i) * 1_000,
            kind: if i % 2 == 0 {
                EventKind::TaskState as i32
            } else {
                EventKind::QuotaKill as i32
            },
            job: ["", "web/prod/api", "db/prod/pg"][i as usize % 3].to_string(),
            instance: (i % 4 != 0).then_some((i % 3) as u32),
            task_id: format!("t{i}"),
            run: 2,
            host: "h1".into(),
            actor: "system:gc".into(),
            reason: "disk_quota_exceeded".into(),
            message: format!("event number {i}"),
            attributes: [("exit_code".to_string(), i.to_string())].into(),
        })
        .collect();
    let rows: Vec<EventRow> = events.iter().cloned().map(EventRow::from).collect();
    let split = write_event_split(rows.clone(), &small_options()).unwrap();
    assert_eq!(split.stats.rows, 50);
    assert_eq!(split.stats.jobs.len(), 3);
    assert!(split.stats.event_partition().is_some());
    let reader = ParquetRecordBatchReaderBuilder::try_new(split.parquet.clone())
        .unwrap()
        .build()
        .unwrap();
    let mut back = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let kinds = batch
            .column_by_name(schema::COL_KIND)
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap()
            .clone();
        assert!(
            kinds
                .iter()
                .all(|k| matches!(k, Some("task_state" | "quota_kill")))
        );
        back.extend(event_rows_from_batch(&batch).unwrap());
    }
    let mut want = rows;
    want.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    assert_eq!(back, want);
    assert!(back[0].job.is_empty() && back[0].instance.is_none());
}

#[test]
fn split_keys_round_trip() {
    let stats = write_log_split(rows_with(20, |_| b"x".to_vec()), &small_options())
        .unwrap()
        .stats;
    let (date, hour) = stats.log_partition().expect("one hour");
    let id = schema::split_id_new(1_800_000_000_000_000_000);
    let key = schema::log_split_key(date, hour, &id);
    assert_eq!(key, format!("logs/date=2027-01-15/hour=08/{id}.parquet"));
    let parsed = schema::parse_log_split_key(&key).unwrap();
    assert_eq!(
        (parsed.date, parsed.hour, parsed.split_id.as_str()),
        (date, hour, id.as_str())
    );
    assert_eq!(schema::index_key_for(&key), Some(parsed.index_key()));
    assert_eq!(
        schema::parse_log_split_key(&parsed.index_key()).unwrap(),
        parsed
    );
    let event_key = schema::event_split_key(date, &id);
    assert_eq!(
        schema::parse_event_split_key(&event_key)
            .unwrap()
            .parquet_key(),
        event_key
    );
    assert_eq!(
        schema::parse_split_id(&id).unwrap().created_unix_nanos,
        1_800_000_000_000_000_000
    );
    assert!(schema::parse_log_split_key("logs/date=2027-13-01/hour=08/a.parquet").is_err());
}

#[test]
fn field_terms_find_exactly_the_lines_whose_fields_match() {
    let lines: Vec<String> = [
        r#"{"level":"error","msg":"batch failed","trace_id":"4BF92F3577B34DA6","user":"bob"}"#,
        r#"{"level":"info","msg":"batch ok","trace_id":"4bf92f3577b34da6","user":"ann"}"#,
        r#"ts=1 level=warn msg="slow" trace_id=00f067aa span_id=77 http.code=503"#,
        "ERROR plain failure with trace_id:4bf92f3577b34da6 in the text",
        "WARN disk at 91%",
        "the level was error, in prose: not a level",
        "status:500 GET /x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let queries = [
        "level:error",
        "level:ERROR AND trace_id:4bf92f3577b34da6",
        "trace_id:4bf92f3577b34da6",
        "level:warn OR level:fatal",
        "NOT level:error",
        "batch AND NOT level:info",
        "fields.user:bob",
        "fields.http.code:503",
        r#"fields.user:"ann""#,
        "status:500",
        "span_id:77 AND level:warning",
    ];
    for postings in [IndexPostings::DocIds, IndexPostings::Positions] {
        check_queries(&lines, &queries, postings);
    }
    // The answers themselves, beyond agreeing with the brute force.
    let matching = |q: &str| -> Vec<&str> {
        let query = SearchQuery::parse(q).unwrap();
        lines
            .iter()
            .filter(|l| query.matches(l))
            .map(|l| &l[..12])
            .collect()
    };
    assert_eq!(matching("level:error"), [r#"{"level":"er"#, "ERROR plain "]);
    assert_eq!(
        matching("level:error AND trace_id:4bf92f3577b34da6"),
        [r#"{"level":"er"#]
    );
    assert_eq!(matching("fields.http.code:503"), ["ts=1 level=w"]);
    assert_eq!(matching("status:500"), ["status:500 G"]);
    let err = SearchQuery::parse("level:loud").unwrap_err().to_string();
    assert!(err.contains("unknown level"), "{err}");
}

#[test]
fn the_parsed_columns_hold_what_the_parser_reads() {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    let lines = [
        r#"{"severity":"WARNING","message":"slow","trace_id":"t1","span_id":"s1","http":{"code":503}}"#,
        "ERROR boom",
        "no level here",
        "ts=1 level=debug msg=hi user=bob",
    ];
    let rows = rows_with(lines.len(), |i| lines[i].as_bytes().to_vec());
    let split = write_log_split(rows, &small_options()).unwrap();
    let batches = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        split.parquet.clone(),
    )
    .unwrap()
    .build()
    .unwrap()
    .collect::<std::result::Result<Vec<_>, _>>()
    .unwrap();
    assert_eq!(batches.len(), 1);
    let batch = &batches[0];
    assert_eq!(batch.num_rows(), lines.len());
    assert_eq!(
        batch.schema().fields(),
        sluice_schema::archive::logs_schema().fields()
    );
    let text = |name: &str, i: usize| {
        let c = batch.column_by_name(name).unwrap().as_string::<i32>();
        c.is_valid(i).then(|| c.value(i))
    };
    let line = batch.column_by_name("line").unwrap().as_string::<i32>();
    let fields = batch.column_by_name("fields").unwrap().as_map();
    for i in 0..batch.num_rows() {
        let parsed = sluice_schema::fields::parse(line.value(i).as_bytes());
        assert_eq!(text("level", i), parsed.level.map(|l| l.as_str()));
        assert_eq!(text("message", i), parsed.message.as_deref());
        assert_eq!(text("trace_id", i), parsed.trace_id.as_deref());
        assert_eq!(text("span_id", i), parsed.span_id.as_deref());
        let got: Vec<(String, String)> = if fields.is_valid(i) {
            let entries = fields.value(i);
            let (k, v) = (
                entries.column(0).as_string::<i32>(),
                entries.column(1).as_string::<i32>(),
            );
            (0..entries.len())
                .map(|j| (k.value(j).to_string(), v.value(j).to_string()))
                .collect()
        } else {
            Vec::new()
        };
        let want: Vec<(String, String)> = parsed
            .fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want, "{}", line.value(i));
        assert_eq!(
            fields.is_valid(i),
            parsed.format != sluice_schema::fields::Format::Plain
        );
    }
    let level_of = |want: &str| {
        (0..batch.num_rows())
            .find(|&i| line.value(i) == want)
            .and_then(|i| text("level", i))
    };
    assert_eq!(level_of(lines[0]), Some("warn"));
    assert_eq!(level_of(lines[1]), Some("error"));
    assert_eq!(level_of(lines[2]), None);
    assert_eq!(level_of(lines[3]), Some("debug"));
}

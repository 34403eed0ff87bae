//! What the split format costs, measured on real logs: index size, build
//! time and query latency for each [`IndexPostings`], and Parquet size for
//! a few zstd levels. Run in release, alone on the machine:
//!
//! ```text
//! cargo test --release -p sluice-query --lib split -- --ignored --nocapture
//! ```
//!
//! The corpus is `$SLUICE_CORPUS` (the loghub samples measured the choices
//! below), else the generated one; its lines are repeated ten times with every number of two or more digits changed per repetition,
//! so ids and timestamps are new terms as in a real day of logs. Each
//! sample file is one job, each repetition one instance.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::index::{IndexPostings, build_index, open_index};
use super::rows::{LogRow, RowSource};
use super::writer::encode_log_parquet;
use super::{SearchQuery, SplitOptions, search_rows};

const REPEATS: usize = 10;

/// The samples: the `*.log` files of `$SLUICE_CORPUS` (e.g. the loghub
/// samples), else the generated corpus (every format, seed 1).
fn corpus_files() -> Vec<(String, Vec<String>)> {
    if let Some(dir) = std::env::var_os("SLUICE_CORPUS").map(PathBuf::from) {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("SLUICE_CORPUS={}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        files.sort();
        return files
            .iter()
            .map(|path| {
                let text = std::fs::read(path).unwrap();
                let name = path.file_stem().unwrap().to_string_lossy().to_lowercase();
                let lines = String::from_utf8_lossy(&text)
                    .lines()
                    .map(str::to_string)
                    .collect();
                (name, lines)
            })
            .collect();
    }
    sluice_corpus::files(
        &sluice_corpus::Format::ALL,
        1,
        2_000,
        1_800_000_000_000_000_000,
    )
    .into_iter()
    .map(|(name, lines)| {
        let lines = lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        (name, lines)
    })
    .collect()
}

/// `line` with every run of 2+ digits shifted by `repeat`, same width.
fn vary(line: &str, repeat: usize) -> String {
    if repeat == 0 {
        return line.to_string();
    }
    let mut out = String::with_capacity(line.len());
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &line[start..i];
            if digits.len() < 2 {
                out.push_str(digits);
                continue;
            }
            // Shift each digit by a repetition-dependent amount.
            for (k, d) in digits.bytes().enumerate() {
                let shifted = (d - b'0' + (repeat * 7 + k * repeat) as u8 % 10) % 10;
                out.push((b'0' + shifted) as char);
            }
        } else {
            let ch = line[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn corpus_rows() -> Vec<LogRow> {
    let base_ts = 1_800_000_000_000_000_000i64;
    let mut rows = Vec::new();
    for (f, (name, lines)) in corpus_files().iter().enumerate() {
        for repeat in 0..REPEATS {
            let source = Arc::new(RowSource {
                host: format!("node-{}", repeat % 4),
                job: format!("corpus/prod/{name}"),
                instance: repeat as u32,
                task_id: format!("{name}-{repeat}-7f3a"),
                run: 0,
                process: "main".into(),
                stream: 1,
                path: format!("/var/sluice/sandboxes/{name}/{repeat}/stdout"),
                source_id: (f * 1000 + repeat) as u64,
                labels_json: "{}".into(),
            });
            let mut offset = 0u64;
            for (n, line) in lines.iter().enumerate() {
                let text = vary(line, repeat);
                let raw_len = text.len() as u32 + 1;
                rows.push(LogRow {
                    source: Arc::clone(&source),
                    ts_unix_nanos: base_ts + (n as i64) * 1_000_000,
                    offset,
                    raw_len,
                    text: Bytes::from(text),
                    partial: false,
                    truncated: false,
                    unterminated: false,
                });
                offset += u64::from(raw_len);
            }
        }
    }
    rows.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    rows
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

const QUERIES: [&str; 10] = [
    // An IP address: a phrase of four number tokens, common apart.
    "10.251.70.5",
    "183.62.140.253",
    // A word made of a common and a rare token.
    "dfs.DataNode$PacketResponder",
    // A needle: one block id, a few lines.
    "blk_-8775602795571523802",
    // A rare word.
    "Receiving",
    // A common word.
    "INFO",
    // A phrase.
    "\"Receiving block\"",
    // A phrase whose words are common apart.
    "\"session opened\"",
    // Boolean.
    "error AND NOT warning",
    "(failed OR failure) \"authentication\"",
];

/// With `SLUICE_SPLIT_DUMP=<dir>`, writes what was measured there: a split
/// under its Hive key (for DuckDB), and each index variant as
/// `<dir>/index-<postings>.bin`.
fn dump_dir() -> Option<PathBuf> {
    std::env::var_os("SLUICE_SPLIT_DUMP").map(PathBuf::from)
}

fn dump(path: PathBuf, data: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("dump dir");
    std::fs::write(&path, data).expect("dump");
    println!("wrote {}", path.display());
}

fn parquet_row(label: &str, level: i32, rows: &[LogRow], raw: usize) {
    let options = SplitOptions {
        zstd_level: level,
        ..Default::default()
    };
    let start = Instant::now();
    let parquet = encode_log_parquet(rows, &options, |_, _| {}).expect("writes");
    let write = start.elapsed();
    let start = Instant::now();
    let builder = ParquetRecordBatchReaderBuilder::try_new(parquet.clone()).expect("reads");
    let meta = builder.metadata().clone();
    let mut read_rows = 0;
    for batch in builder.build().expect("reader") {
        read_rows += batch.expect("batch").num_rows();
    }
    let read = start.elapsed();
    assert_eq!(read_rows, rows.len());
    let line_col = sluice_schema::archive::logs_schema()
        .index_of(sluice_schema::archive::COL_LINE)
        .expect("line column");
    let line_bytes: i64 = meta
        .row_groups()
        .iter()
        .map(|rg| rg.column(line_col).compressed_size())
        .sum();
    println!(
        "| {label} | {level:>4} | {:>6.2} | {:>7.1}% | {:>7.2} | {:>7.2} | {:>10.2} |",
        mb(parquet.len()),
        100.0 * parquet.len() as f64 / raw as f64,
        mb(line_bytes as usize),
        write.as_secs_f64(),
        read.as_secs_f64(),
    );
}

#[test]
#[ignore = "measurement: run in release with --ignored --nocapture"]
fn measure_split_costs() {
    let rows = corpus_rows();
    let lines: Vec<String> = rows.iter().map(|r| r.line().into_owned()).collect();
    let raw: usize = rows.iter().map(|r| r.text.len()).sum();
    println!(
        "\ncorpus: {} lines, {:.1} MB of line text ({} repetitions of the samples)\n",
        rows.len(),
        mb(raw),
        REPEATS
    );

    println!("index (one segment, no stored fields, no field norms):");
    println!(
        "| postings  | size MB | % of raw | unpacked MB | % of raw | build s | build ms/MB | open ms \
         | files (unpacked MB) |"
    );
    println!(
        "|-----------|---------|----------|-------------|----------|---------|-------------|---------\
         |---------------------|"
    );
    let mut blobs = Vec::new();
    for postings in [
        IndexPostings::DocIds,
        IndexPostings::Freqs,
        IndexPostings::Positions,
    ] {
        let start = Instant::now();
        let blob =
            build_index(lines.iter().map(String::as_str), postings, 1 << 30).expect("index builds");
        let build = start.elapsed();
        let opens: Vec<Duration> = (0..5)
            .map(|_| {
                let start = Instant::now();
                open_index(blob.clone()).expect("opens");
                start.elapsed()
            })
            .collect();
        let files = super::index::unpack(&blob).expect("unpacks");
        let unpacked: usize = files.iter().map(|(_, data)| data.len()).sum();
        let mut by_ext: Vec<(String, usize)> = files
            .iter()
            .map(|(name, data)| {
                let ext = name.rsplit('.').next().unwrap_or(name).to_string();
                (ext, data.len())
            })
            .collect();
        by_ext.sort_by_key(|e| std::cmp::Reverse(e.1));
        let files: Vec<String> = by_ext
            .iter()
            .filter(|(_, len)| *len > 10_000)
            .map(|(ext, len)| format!("{ext} {:.2}", mb(*len)))
            .collect();
        println!(
            "| {:<9} | {:>7.2} | {:>7.1}% | {:>11.2} | {:>7.1}% | {:>7.2} | {:>11.1} | {:>7.2} | {} |",
            format!("{postings:?}"),
            mb(blob.len()),
            100.0 * blob.len() as f64 / raw as f64,
            mb(unpacked),
            100.0 * unpacked as f64 / raw as f64,
            build.as_secs_f64(),
            build.as_secs_f64() * 1e3 / mb(raw),
            median(opens).as_secs_f64() * 1e3,
            files.join(", ")
        );
        blobs.push((postings, blob));
    }

    println!("\nindex memory budget (doc ids): does the split fit one segment?");
    for budget_mb in [15, 30, 60, 120] {
        let result = build_index(
            lines.iter().map(String::as_str),
            IndexPostings::DocIds,
            budget_mb * 1_000_000,
        );
        println!(
            "  {budget_mb:>3} MB: {}",
            match result {
                Ok(_) => "fits".to_string(),
                Err(e) => e.to_string(),
            }
        );
    }

    println!("\nqueries (median of 20, opening a reader each time as search_rows does):");
    println!("| query | postings | µs | hits | exact | true hits |");
    println!("|-------|----------|----|------|-------|-----------|");
    for text in QUERIES {
        let query = SearchQuery::parse(text).expect("query parses");
        let truth = lines.iter().filter(|l| query.matches(l)).count();
        for (postings, blob) in &blobs {
            let index = open_index(blob.clone()).expect("opens");
            let mut hits = None;
            let times: Vec<Duration> = (0..20)
                .map(|_| {
                    let start = Instant::now();
                    hits = Some(search_rows(&index, &query).expect("searches"));
                    start.elapsed()
                })
                .collect();
            let hits = hits.expect("ran");
            if hits.exact {
                assert_eq!(hits.rows.len(), truth, "{text} {postings:?}");
            }
            println!(
                "| `{text}` | {postings:?} | {:.0} | {} | {} | {truth} |",
                median(times).as_secs_f64() * 1e6,
                hits.rows.len(),
                hits.exact,
            );
        }
    }

    println!("\nparquet (all columns; line = the line column's compressed bytes):");
    println!("| lines | zstd | MB | % of raw | line MB | write s | read all s |");
    println!("|-------|------|----|----------|---------|---------|------------|");
    for level in [1, 3, 6, 9] {
        parquet_row("240k", level, &rows, raw);
    }
    // The first repetition alone: no text repeated across instances.
    let once: Vec<LogRow> = rows
        .iter()
        .filter(|r| r.source.instance == 0)
        .cloned()
        .collect();
    let once_raw: usize = once.iter().map(|r| r.text.len()).sum();
    for level in [1, 3, 6, 9] {
        parquet_row(" 24k", level, &once, once_raw);
    }

    if let Some(dir) = dump_dir() {
        for (postings, blob) in &blobs {
            dump(dir.join(format!("index-{postings:?}.bin")), blob);
        }
        let split =
            super::write_log_split(rows.clone(), &SplitOptions::default()).expect("split writes");
        let (date, hour) = split.stats.log_partition().expect("one hour");
        let id = sluice_schema::archive::split_id_new(split.stats.min_ts);
        dump(
            dir.join(sluice_schema::archive::log_split_key(date, hour, &id)),
            &split.parquet,
        );
        dump(
            dir.join(sluice_schema::archive::log_index_key(date, hour, &id)),
            &split.index,
        );
        let events: Vec<super::EventRow> = (0..100)
            .map(|i| super::EventRow {
                id: format!("sched/1-{i}"),
                ts_unix_nanos: split.stats.min_ts + i * 1_000_000,
                kind: 1 + (i % 3) as i32,
                job: "loghub/prod/hdfs_2k".into(),
                instance: (i % 2 == 0).then_some((i % 10) as u32),
                message: format!("event {i}"),
                attributes: [("exit_code".to_string(), i.to_string())].into(),
                ..Default::default()
            })
            .collect();
        let events = super::write_event_split(events, &SplitOptions::default()).expect("writes");
        let date = events.stats.event_partition().expect("one day");
        dump(
            dir.join(sluice_schema::archive::event_split_key(date, &id)),
            &events.parquet,
        );
    }
}

#[test]
fn vary_keeps_shape() {
    assert_eq!(vary("blk_123 at 5", 0), "blk_123 at 5");
    let varied = vary("blk_123 at 5 é 42", 3);
    assert_eq!(varied.len(), "blk_123 at 5 é 42".len());
    assert!(varied.starts_with("blk_") && varied.contains(" at 5 é "));
    assert_ne!(varied, "blk_123 at 5 é 42");
}

/// Per-column Parquet sizes for a few encodings of `line`.
#[test]
#[ignore = "measurement: run in release with --ignored --nocapture"]
fn measure_parquet_columns() {
    use parquet::basic::{Compression, Encoding, ZstdLevel};
    use parquet::schema::types::ColumnPath;
    let rows = corpus_rows();
    let raw: usize = rows.iter().map(|r| r.text.len()).sum();
    let line = ColumnPath::from(sluice_schema::archive::COL_LINE);
    for (label, level, encoding) in [
        ("plain", 6, None),
        ("delta_length", 6, Some(Encoding::DELTA_LENGTH_BYTE_ARRAY)),
        ("delta", 6, Some(Encoding::DELTA_BYTE_ARRAY)),
        ("delta", 3, Some(Encoding::DELTA_BYTE_ARRAY)),
        ("delta", 9, Some(Encoding::DELTA_BYTE_ARRAY)),
    ] {
        let options = SplitOptions {
            zstd_level: level,
            ..Default::default()
        };
        let mut builder = super::writer::log_properties(&options)
            .expect("properties")
            .into_builder()
            .set_column_compression(
                line.clone(),
                Compression::ZSTD(ZstdLevel::try_new(level).expect("level")),
            );
        if let Some(encoding) = encoding {
            builder = builder.set_column_encoding(line.clone(), encoding);
        }
        let start = Instant::now();
        let parquet =
            super::writer::encode_log_parquet_with(&rows, &options, builder.build(), |_, _| {})
                .expect("writes");
        let write = start.elapsed();
        let meta = ParquetRecordBatchReaderBuilder::try_new(parquet.clone())
            .expect("reads")
            .metadata()
            .clone();
        println!(
            "\n{label} level {level}: {:.2} MB, {:.2}× smaller than raw, write {:.2} s",
            mb(parquet.len()),
            raw as f64 / parquet.len() as f64,
            write.as_secs_f64()
        );
        let columns = meta.file_metadata().schema_descr().num_columns();
        for c in 0..columns {
            let size: i64 = meta
                .row_groups()
                .iter()
                .map(|rg| rg.column(c).compressed_size())
                .sum();
            let name = meta
                .file_metadata()
                .schema_descr()
                .column(c)
                .name()
                .to_string();
            println!("  {name:<14} {:>9} bytes", size);
        }
    }
}

/// Where parsing's cost goes: the parse alone, the Arrow batch and the
/// Parquet file with `parse_fields` on and off (no index; the median of 3).
#[test]
#[ignore = "measurement: run in release with --ignored --nocapture"]
fn measure_parsing_cost() {
    let rows = corpus_rows();
    let raw: usize = rows.iter().map(|r| r.text.len()).sum();
    let time = |f: &dyn Fn()| {
        median(
            (0..3)
                .map(|_| {
                    let start = Instant::now();
                    f();
                    start.elapsed()
                })
                .collect(),
        )
    };
    let parse = time(&|| {
        for row in &rows {
            std::hint::black_box(sluice_schema::fields::parse(&row.text));
        }
    });
    println!(
        "\n{:.1} MB: parse alone {:.2} s",
        mb(raw),
        parse.as_secs_f64()
    );
    for parse_fields in [false, true] {
        let options = SplitOptions {
            parse_fields,
            ..Default::default()
        };
        let batch = time(&|| {
            for chunk in rows.chunks(options.row_group_rows) {
                std::hint::black_box(
                    super::rows::log_batch(chunk, parse_fields, |_, _| {}).expect("batch"),
                );
            }
        });
        let parquet = time(&|| {
            std::hint::black_box(encode_log_parquet(&rows, &options, |_, _| {}).expect("writes"));
        });
        let split = time(&|| {
            std::hint::black_box(super::write_log_split(rows.clone(), &options).expect("writes"));
        });
        println!(
            "parse_fields {parse_fields}: batches {:.2} s, batches + Parquet {:.2} s, split (+ index) {:.2} s",
            batch.as_secs_f64(),
            parquet.as_secs_f64(),
            split.as_secs_f64()
        );
    }
}

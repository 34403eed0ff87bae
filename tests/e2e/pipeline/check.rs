//! The check: what the tasks wrote, what the archive holds, and their
//! comparison byte by byte.

use super::*;

// ---------------------------------------------------------------------------
// What the tasks wrote

/// One log file of the job, as on disk.
pub(super) struct LogFile {
    pub(super) instance: u32,
    pub(super) bytes: Vec<u8>,
}

/// Every log file of the job's sandboxes under `data/nodes`, by path.
pub(super) fn sandbox_files(data: &Path) -> BTreeMap<String, LogFile> {
    let mut files = BTreeMap::new();
    for node in std::fs::read_dir(data.join("nodes"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(sandboxes) = std::fs::read_dir(node.path().join("sandboxes")) else {
            continue;
        };
        for sandbox in sandboxes.flatten() {
            let Ok(manifest) = std::fs::read_to_string(sandbox.path().join("sandbox.json")) else {
                continue;
            };
            let manifest: Value = serde_json::from_str(&manifest).unwrap();
            if manifest["job"] != JOB {
                continue;
            }
            let instance = manifest["instance"].as_u64().unwrap() as u32;
            for run in std::fs::read_dir(sandbox.path().join("logs"))
                .unwrap()
                .flatten()
            {
                for file in std::fs::read_dir(run.path()).unwrap().flatten() {
                    let bytes = std::fs::read(file.path()).unwrap();
                    files.insert(
                        file.path().to_string_lossy().into_owned(),
                        LogFile { instance, bytes },
                    );
                }
            }
        }
    }
    files
}

/// Per instance: what the files hold, or what the archive holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Summary {
    /// Files (sources) with bytes.
    pub(super) files: usize,
    /// Lines: rows that are not `partial`.
    pub(super) lines: u64,
    /// Rows: lines, and each piece of a long line.
    pub(super) rows: u64,
    /// Rows whose bytes are not UTF-8 (`line_bytes` set).
    pub(super) binary: u64,
    /// Bytes of the files (`raw_len` summed).
    pub(super) bytes: u64,
    /// Of the content, file after file (by path), in offset order.
    pub(super) hash: u64,
}

/// The rows the shipper makes of a line of `len` bytes (at least one).
pub(super) fn pieces(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let n = line.len().div_ceil(MAX_LINE_BYTES).max(1);
    (0..n).map(move |i| &line[i * MAX_LINE_BYTES..((i + 1) * MAX_LINE_BYTES).min(line.len())])
}

/// What the archive must hold, per instance, from the files.
pub(super) fn expected(files: &BTreeMap<String, LogFile>) -> BTreeMap<u32, Summary> {
    let mut all: BTreeMap<u32, (Summary, std::hash::DefaultHasher)> = BTreeMap::new();
    for file in files.values() {
        let (s, hasher) = all.entry(file.instance).or_default();
        if file.bytes.is_empty() {
            continue;
        }
        s.files += 1;
        s.bytes += file.bytes.len() as u64;
        hasher.write(&file.bytes);
        let body = file.bytes.strip_suffix(b"\n").unwrap_or(&file.bytes);
        for line in body.split(|b| *b == b'\n') {
            s.lines += 1;
            for piece in pieces(line) {
                s.rows += 1;
                s.binary += u64::from(std::str::from_utf8(piece).is_err());
            }
        }
    }
    all.into_iter()
        .map(|(i, (mut s, hasher))| {
            s.hash = hasher.finish();
            (i, s)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// What the archive holds

/// One row of the job's archive, as stored.
#[derive(Clone)]
pub(super) struct Row {
    pub(super) source_id: u64,
    pub(super) offset: u64,
    pub(super) raw_len: u32,
    pub(super) partial: bool,
    pub(super) unterminated: bool,
    pub(super) truncated: bool,
    /// `line_bytes` was set.
    pub(super) binary: bool,
    /// The exact bytes: `line_bytes` if set, else `line`.
    pub(super) text: Vec<u8>,
}

#[derive(Default)]
pub(super) struct Archived {
    /// Rows by file path, with the instance they name.
    pub(super) by_path: BTreeMap<String, (u32, Vec<Row>)>,
    /// Breaches of the `line` / `line_bytes` rule.
    pub(super) rule: Vec<String>,
    pub(super) splits: usize,
}

/// The live splits' rows (through the catalog, as every reader must).
pub(super) async fn read_archive(store: &Store) -> Result<Archived, String> {
    let catalog = Catalog::open(store.store.clone(), &store.prefix, SplitKind::Logs)
        .await
        .map_err(|e| format!("catalog: {e}"))?;
    let mut archived = Archived::default();
    for split in catalog
        .state()
        .splits()
        .values()
        .filter(|s| s.kind == SplitKind::Logs)
    {
        let path = catalog.object_path(&split.key);
        let bytes = store
            .store
            .get(&path)
            .await
            .map_err(|e| format!("{path}: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| format!("{path}: {e}"))?;
        let mask = ProjectionMask::columns(
            builder.parquet_schema(),
            [
                "job",
                "instance",
                "path",
                "source_id",
                "offset",
                "raw_len",
                "line",
                "line_bytes",
                "partial",
                "truncated",
                "unterminated",
            ],
        );
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(|e| format!("{path}: {e}"))?;
        for batch in reader {
            let batch = batch.map_err(|e| format!("{path}: {e}"))?;
            take_batch(&batch, &mut archived);
        }
        archived.splits += 1;
    }
    Ok(archived)
}

pub(super) fn utf8_column(
    batch: &RecordBatch,
    name: &str,
) -> datafusion::arrow::array::StringArray {
    let column = batch.column_by_name(name).unwrap();
    let column = datafusion::arrow::compute::cast(column, &DataType::Utf8).unwrap();
    column.as_string::<i32>().clone()
}

pub(super) fn take_batch(batch: &RecordBatch, archived: &mut Archived) {
    let col = |name: &str| batch.column_by_name(name).unwrap();
    let (job, path, line) = (
        utf8_column(batch, "job"),
        utf8_column(batch, "path"),
        utf8_column(batch, "line"),
    );
    // BIGINT columns (Delta has no unsigned types): the shipper's values.
    let int = |name: &str| col(name).as_primitive::<Int64Type>().clone();
    let (instance, source_id, offset, raw_len) = (
        int("instance"),
        int("source_id"),
        int("offset"),
        int("raw_len"),
    );
    let line_bytes = col("line_bytes").as_binary::<i32>();
    let (partial, truncated, unterminated) = (
        col("partial").as_boolean(),
        col("truncated").as_boolean(),
        col("unterminated").as_boolean(),
    );
    for i in 0..batch.num_rows() {
        if job.value(i) != JOB {
            continue;
        }
        let binary = !line_bytes.is_null(i);
        let text = if binary {
            let exact = line_bytes.value(i);
            if std::str::from_utf8(exact).is_ok() && archived.rule.len() < 20 {
                archived.rule.push(format!(
                    "{} offset {}: line_bytes set though the bytes are UTF-8",
                    path.value(i),
                    offset.value(i)
                ));
            }
            if String::from_utf8_lossy(exact) != line.value(i) && archived.rule.len() < 20 {
                archived.rule.push(format!(
                    "{} offset {}: line is not line_bytes with U+FFFD for invalid bytes",
                    path.value(i),
                    offset.value(i)
                ));
            }
            exact.to_vec()
        } else {
            line.value(i).as_bytes().to_vec()
        };
        archived
            .by_path
            .entry(path.value(i).to_string())
            .or_insert_with(|| (instance.value(i) as u32, Vec::new()))
            .1
            .push(Row {
                source_id: source_id.value(i) as u64,
                offset: offset.value(i) as u64,
                raw_len: raw_len.value(i) as u32,
                partial: partial.value(i),
                unterminated: unterminated.value(i),
                truncated: truncated.value(i),
                binary,
                text,
            });
    }
}

/// Log rows in the catalog's live splits (cheap: no split is read).
pub(super) async fn archived_row_count(store: &Store) -> u64 {
    match Catalog::open(store.store.clone(), &store.prefix, SplitKind::Logs).await {
        Ok(catalog) => catalog
            .state()
            .splits()
            .values()
            .filter(|s| s.kind == SplitKind::Logs)
            .map(|s| s.rows)
            .sum(),
        Err(_) => 0,
    }
}

// ---------------------------------------------------------------------------
// The comparison

/// The outcome of comparing the archive with the files.
pub(super) struct Verdict {
    /// Per instance, from the archive (equal to the files' when `problems`
    /// is empty).
    pub(super) archived: BTreeMap<u32, Summary>,
    pub(super) expected: BTreeMap<u32, Summary>,
    /// What is wrong, instance by instance; empty when all is well.
    pub(super) problems: Vec<String>,
    /// Rows archived more than once: never repaired by waiting.
    pub(super) doubled: u64,
    pub(super) splits: usize,
}

impl Verdict {
    pub(super) fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    pub(super) fn describe(&self) -> String {
        let mut text = String::new();
        for (i, want) in &self.expected {
            let got = self.archived.get(i).cloned().unwrap_or_default();
            let verdict = if *want == got { "ok" } else { "MISMATCH" };
            text.push_str(&format!(
                "instance {i}: {verdict}\n  files:   {want:?}\n  archive: {got:?}\n"
            ));
        }
        for p in &self.problems {
            text.push_str(&format!("- {p}\n"));
        }
        text
    }
}

pub(super) fn preview(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned();
    format!("{s:?}{}", if bytes.len() > 60 { "…" } else { "" })
}

/// Compares every file, row by row, with the archive.
pub(super) fn compare(files: &BTreeMap<String, LogFile>, archived: Archived) -> Verdict {
    let expected = expected(files);
    let mut problems: Vec<String> = archived.rule.clone();
    let mut doubled = 0;
    let mut summaries: BTreeMap<u32, (Summary, std::hash::DefaultHasher)> =
        expected.keys().map(|i| (*i, Default::default())).collect();
    let mut by_path = archived.by_path;
    for (path, file) in files {
        let (instance, mut rows) = by_path.remove(path).unwrap_or((file.instance, Vec::new()));
        let whose = format!("instance {} {path}", file.instance);
        if instance != file.instance {
            problems.push(format!("{whose}: rows say instance {instance}"));
        }
        rows.sort_by_key(|r| r.offset);
        let (summary, hasher) = summaries.entry(file.instance).or_default();
        summary.files += usize::from(!rows.is_empty());
        let sources: BTreeSet<u64> = rows.iter().map(|r| r.source_id).collect();
        if sources.len() > 1 {
            problems.push(format!(
                "{whose}: under {} source ids {sources:?}",
                sources.len()
            ));
        }
        let bytes = &file.bytes;
        let mut at = 0u64;
        let mut twice = Vec::new();
        let mut bad = Vec::new();
        for (k, row) in rows.iter().enumerate() {
            summary.rows += 1;
            summary.lines += u64::from(!row.partial);
            summary.binary += u64::from(row.binary);
            summary.bytes += u64::from(row.raw_len);
            hasher.write(&row.text);
            if !row.partial && !row.unterminated {
                hasher.write(b"\n");
            }
            if k > 0 && rows[k - 1].offset == row.offset {
                doubled += 1;
                twice.push(row.offset);
                continue;
            }
            if row.offset > at {
                let gap = &bytes[at as usize..(row.offset as usize).min(bytes.len())];
                problems.push(format!(
                    "{whose}: {} bytes ({} newlines) missing at offset {at}, from {}",
                    gap.len(),
                    gap.iter().filter(|b| **b == b'\n').count(),
                    preview(gap)
                ));
            } else if row.offset < at {
                bad.push(format!(
                    "offset {} overlaps the row before (ends at {at})",
                    row.offset
                ));
            }
            let start = row.offset as usize;
            let end = start + row.text.len();
            let in_file = bytes.get(start..end);
            let newline = bytes.get(end) == Some(&b'\n');
            let why = if in_file != Some(&row.text[..]) {
                Some(format!(
                    "holds {} but the file has {}",
                    preview(&row.text),
                    preview(bytes.get(start..end.min(bytes.len())).unwrap_or_default())
                ))
            } else if row.truncated {
                Some("is flagged truncated".into())
            } else if row.partial {
                (row.text.len() != MAX_LINE_BYTES || row.raw_len as usize != MAX_LINE_BYTES).then(
                    || {
                        format!(
                            "is a partial piece of {} bytes (raw_len {}), not {MAX_LINE_BYTES}",
                            row.text.len(),
                            row.raw_len
                        )
                    },
                )
            } else if row.unterminated {
                (end != bytes.len() || row.raw_len as usize != row.text.len())
                    .then(|| "is unterminated but not the file's end".to_string())
            } else {
                (!newline
                    || row.raw_len as usize != row.text.len() + 1
                    || row.text.len() > MAX_LINE_BYTES)
                    .then(|| {
                        format!(
                            "({} bytes, raw_len {}) is not a whole line of at most {MAX_LINE_BYTES} bytes",
                            row.text.len(),
                            row.raw_len
                        )
                    })
            };
            if let Some(why) = why {
                bad.push(format!("the row at offset {} {why}", row.offset));
            }
            at = at.max(row.offset + u64::from(row.raw_len));
        }
        if (at as usize) < bytes.len() {
            let rest = &bytes[at as usize..];
            problems.push(format!(
                "{whose}: the last {} bytes ({} newlines) are missing, from offset {at}: {}",
                rest.len(),
                rest.iter().filter(|b| **b == b'\n').count(),
                preview(rest)
            ));
        }
        if !twice.is_empty() {
            problems.push(format!(
                "{whose}: {} rows archived twice (same source and offset), e.g. offsets {:?}",
                twice.len(),
                &twice[..twice.len().min(10)]
            ));
        }
        if !bad.is_empty() {
            problems.push(format!(
                "{whose}: {} rows break the rule, e.g. {:?}",
                bad.len(),
                &bad[..bad.len().min(5)]
            ));
        }
    }
    for (path, (instance, rows)) in by_path {
        problems.push(format!(
            "instance {instance}: {} rows of {path}, which is no file of the job",
            rows.len()
        ));
    }
    let archived_summaries: BTreeMap<u32, Summary> = summaries
        .into_iter()
        .map(|(i, (mut s, hasher))| {
            s.hash = hasher.finish();
            (i, s)
        })
        .collect();
    for (i, want) in &expected {
        if archived_summaries.get(i) != Some(want) && problems.is_empty() {
            problems.push(format!("instance {i}: the summaries differ"));
        }
    }
    Verdict {
        archived: archived_summaries,
        expected,
        problems,
        doubled,
        splits: archived.splits,
    }
}

/// Waits until the archive holds every line of every file of the job
/// exactly once (the tasks must have finished), and returns the verdict;
/// panics naming the instances that differ once `secs` have passed, or at
/// once if a row is archived twice.
pub(super) fn await_exactly_once(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    data: &Path,
    secs: u64,
    logs: &dyn Fn() -> String,
) -> Verdict {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    loop {
        let files = sandbox_files(data);
        let want_rows: u64 = expected(&files).values().map(|s| s.rows).sum();
        let have_rows = rt.block_on(archived_row_count(store));
        let timed_out = Instant::now() > deadline;
        if have_rows >= want_rows || timed_out {
            let archived = match rt.block_on(read_archive(store)) {
                Ok(archived) => archived,
                Err(e) if !timed_out => {
                    eprintln!("reading the archive: {e}; again");
                    std::thread::sleep(Duration::from_secs(2));
                    continue;
                }
                Err(e) => panic!("reading the archive: {e}"),
            };
            let verdict = compare(&files, archived);
            if verdict.ok() {
                eprintln!(
                    "archive complete after {:.1}s: {want_rows} rows in {} splits",
                    started.elapsed().as_secs_f64(),
                    verdict.splits
                );
                return verdict;
            }
            assert!(
                verdict.doubled == 0 && !timed_out,
                "the archive does not hold each line of the files exactly once \
                 ({have_rows} rows archived, {want_rows} expected):\n{}\n{}",
                verdict.describe(),
                logs()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The same counts through `sluice query` (DataFusion over the catalog), the
/// way users ask: rows, lines, bytes, rows with `line_bytes`, and distinct
/// `(source_id, offset)` pairs per instance.
pub(super) fn assert_query_agrees(
    location: &[&str],
    envs: &[(String, String)],
    want: &BTreeMap<u32, Summary>,
) {
    let run = |sql: String| -> Vec<Value> {
        let out = Command::new(SLUICE)
            .arg("query")
            .arg(&sql)
            .args(location)
            .args(["--format", "json"])
            .env_remove("SLUICE_DATA_DIR")
            .env_remove("SLUICE_ADDR")
            .env_remove("SLUICE_TOKEN")
            .env_remove("SLUICE_STORE")
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sluice query {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let totals = run(format!(
        "SELECT instance, count(*) AS n_rows, sum(CASE WHEN partial THEN 0 ELSE 1 END) AS n_lines, \
         sum(raw_len) AS n_bytes, count(line_bytes) AS n_binary \
         FROM logs WHERE job = '{JOB}' GROUP BY instance ORDER BY instance"
    ));
    let pairs = run(format!(
        "SELECT instance, count(*) AS n_pairs FROM \
         (SELECT DISTINCT instance, source_id, \"offset\" FROM logs WHERE job = '{JOB}') \
         GROUP BY instance ORDER BY instance"
    ));
    let got: BTreeMap<u64, [u64; 5]> = totals
        .iter()
        .zip(&pairs)
        .map(|(t, p)| {
            assert_eq!(t["instance"], p["instance"]);
            let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
            (
                n(t, "instance"),
                [
                    n(t, "n_rows"),
                    n(t, "n_lines"),
                    n(t, "n_bytes"),
                    n(t, "n_binary"),
                    n(p, "n_pairs"),
                ],
            )
        })
        .collect();
    let wanted: BTreeMap<u64, [u64; 5]> = want
        .iter()
        .map(|(i, s)| (u64::from(*i), [s.rows, s.lines, s.bytes, s.binary, s.rows]))
        .collect();
    assert_eq!(
        got, wanted,
        "sluice query: per instance [rows, lines, bytes, binary rows, distinct (source_id, offset)]"
    );
}

/// Checks that the files are what the generator writes: 5 instances, each
/// `lines` lines (with long lines cut and invalid UTF-8 among them).
pub(super) fn assert_generated(verdict: &Verdict, lines: u32) {
    assert_eq!(
        verdict.expected.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3, 4],
        "5 instances wrote logs"
    );
    for (i, s) in &verdict.expected {
        assert_eq!(
            s.lines,
            u64::from(lines),
            "instance {i} wrote {lines} lines"
        );
        // 3 lines of just over 1 MiB: 5 pieces each.
        assert_eq!(
            s.rows,
            s.lines + 3 * 4,
            "instance {i}: the long lines' pieces"
        );
        // Every 997th line has invalid bytes, and at least two pieces of
        // each long line start or end inside a character.
        let invalid_lines = u64::from((lines - 1) / 997 + 1);
        assert!(
            s.binary >= invalid_lines + 3 * 2,
            "instance {i}: invalid UTF-8 lines and pieces cut inside a character: {s:?}"
        );
    }
}

pub(super) fn file_store(data: &Path) -> (String, Store) {
    let url = format!("file://{}", data.join("archive").display());
    let store = url
        .parse::<sluice_archive::store::StoreUrl>()
        .unwrap()
        .open(&[])
        .unwrap();
    (url, store)
}

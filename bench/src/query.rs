//! `sluice bench query`: four queries over the archive of the same raw log
//! that `sluice bench archive` builds (the corpus's samples as 100 sources,
//! two hours), side by side in one run with `zstd -dc | grep` over that raw log
//! compressed with `zstd -3 -T1`, and with DuckDB over the same Parquet files
//! (`logs/**/*.parquet`, Hive partitioning):
//!
//! - a needle: a token that a handful of lines hold, picked from the corpus
//!   (`search()`; `grep -F`; `contains`);
//! - a regex scan (`regexp_like`; `grep -E`; `regexp_matches`);
//! - lines per job and hour (no grep: the raw log knows neither);
//! - the ten most frequent lines holding the word `error` (`search()`;
//!   `grep -iE | sort | uniq -c | sort | head`; `ILIKE` and `regexp_matches`).
//!
//! Sluice runs in this process with `--threads` target partitions, DuckDB
//! with `SET threads` (both 1 by default, so CPU seconds compare per core);
//! `zstd -dc` and `grep` are two processes. Each measurement is run `--runs`
//! times and the run with the least CPU is reported. CPU is this process's
//! (all threads) around the query for Sluice, the children's for the grep
//! pipelines, and DuckDB's process CPU around the query (measured inside the
//! Python process, so its start and `import duckdb` are left out). The three
//! must agree on every answer, or the bench fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, LargeStringArray, StringArray, StringViewArray,
    TimestampMicrosecondArray, TimestampNanosecondArray, UInt64Array,
};
use serde::Serialize;
use sluice_query::{EngineConfig, QueryEngine, QueryOutput, QueryRequest};

use crate::archive::{archive_all, generate, log_sizes, vary};
use crate::cpu::{child_cpu_time, cpu_time};

/// Flags of `sluice bench query`; its help text comes from
/// [`BenchCommand::Query`](crate::BenchCommand::Query).
#[derive(Args, Debug)]
pub struct QueryBenchArgs {
    /// MiB of raw log to archive and query.
    #[arg(long, default_value_t = 1024)]
    pub mb: u64,
    /// A directory of `*.log` log samples (e.g. ../shared/corpus/loghub)
    /// [default: the generated corpus, every format of sluice-corpus]
    #[arg(long, env = "SLUICE_CORPUS")]
    pub corpus: Option<PathBuf>,
    /// Scratch directory [default: the system's temp dir].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Runs of each measurement; the one with the least CPU is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Threads of Sluice (target partitions) and of DuckDB.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Python with DuckDB and its delta extension [default:
    /// ~/.cache/sluice-tools/delta-py/bin/python, which scripts/test.sh
    /// installs]: DuckDB reads the archive's `logs` Delta table.
    #[arg(long, env = "SLUICE_DELTA_PYTHON")]
    pub python: Option<PathBuf>,
    /// Print the report as JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// Keep the scratch directory (bus, archive, raw.log.zst) and print its path.
    #[arg(long)]
    pub keep: bool,
}

/// Warnings and errors that name an IPv4 address (the same in POSIX ERE,
/// Rust's regex and RE2).
const REGEX: &str = "(ERROR|WARN|FATAL).*([0-9]{1,3}\\.){3}[0-9]{1,3}";
/// `error` as a word, any case (what `search(line, 'error')` finds), for
/// grep and RE2.
const ERROR_WORD: &str = "(^|[^[:alnum:]])error($|[^[:alnum:]])";

const HOURLY: &str = "count by job per hour";
const HOURLY_ARITHMETIC: &str = "  same, integer hour";

/// Runs one query in DuckDB: argv is the SQL and the threads; prints the
/// rows (numbers as numbers, the rest as text) and the process CPU and wall
/// seconds of the query alone.
const DUCKDB_SCRIPT: &str = r#"
import glob, json, os, sys, time
import duckdb, duckdb_extension_delta
sql, threads = sys.argv[1], int(sys.argv[2])
ext = glob.glob(os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions", "*", "delta.duckdb_extension"))[0]
con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
con.execute(f"LOAD '{ext}'")
con.execute(f"SET threads = {threads}")
con.execute("SET enable_progress_bar = false")
cpu, wall = time.process_time(), time.perf_counter()
rows = con.execute(sql).fetchall()
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
cell = lambda v: v if isinstance(v, int) else str(v)
print(json.dumps({"rows": [[cell(v) for v in r] for r in rows], "cpu_s": cpu, "wall_s": wall}))
"#;

/// One tool's run of one query.
#[derive(Debug, Clone, Serialize)]
struct Measured {
    tool: String,
    wall_s: f64,
    cpu_s: f64,
    /// DuckDB: the Python process's whole CPU (start, import, query).
    #[serde(skip_serializing_if = "Option::is_none")]
    process_cpu_s: Option<f64>,
    #[serde(skip)]
    rows: Vec<Vec<String>>,
}

#[derive(Debug, Serialize)]
struct QueryReport {
    name: &'static str,
    /// The answer all tools agreed on (a count, or the number of rows).
    answer: String,
    results: Vec<Measured>,
}

/// One query in each tool's words; `None`: the tool cannot answer it.
struct Query {
    name: &'static str,
    sluice: String,
    grep: Option<String>,
    duckdb: String,
}

fn quote_sh(path: &Path) -> anyhow::Result<String> {
    let text = path.to_str().context("scratch path is not UTF-8")?;
    anyhow::ensure!(!text.contains('\''), "scratch path {text} has a quote");
    Ok(format!("'{text}'"))
}

fn queries(needle: &str, zst: &Path, archive: &Path) -> anyhow::Result<Vec<Query>> {
    let zst = quote_sh(zst)?;
    let table = archive.join("logs");
    let parquet = format!(
        "delta_scan('{}')",
        table.to_str().context("scratch path is not UTF-8")?
    );
    // `grep -a`: the generated corpus has binary-ish lines, for which grep
    // would print "binary file matches" instead of the lines.
    let cat = format!("zstd -dcq {zst} | LC_ALL=C");
    Ok(vec![
        Query {
            name: "needle",
            sluice: format!("SELECT count(*) FROM logs WHERE search(line, '{needle}')"),
            grep: Some(format!("{cat} grep -acF -- '{needle}'")),
            duckdb: format!("SELECT count(*) FROM {parquet} WHERE contains(line, '{needle}')"),
        },
        Query {
            name: "regex scan",
            sluice: format!("SELECT count(*) FROM logs WHERE regexp_like(line, '{REGEX}')"),
            grep: Some(format!("{cat} grep -acE -- '{REGEX}'")),
            duckdb: format!("SELECT count(*) FROM {parquet} WHERE regexp_matches(line, '{REGEX}')"),
        },
        Query {
            name: HOURLY,
            sluice: "SELECT job, date_trunc('hour', ts) AS hour, count(*) AS n FROM logs \
                     GROUP BY job, date_trunc('hour', ts) ORDER BY job, hour"
                .into(),
            grep: None,
            duckdb: format!(
                "SELECT job, epoch_ns(date_trunc('hour', ts)) AS hour, count(*) AS n \
                 FROM {parquet} GROUP BY ALL ORDER BY job, hour"
            ),
        },
        // The same with the hour computed by integer arithmetic (faster in
        // DuckDB, and the figure the target is held to).
        Query {
            name: HOURLY_ARITHMETIC,
            sluice: "SELECT job, ts_nanos / 3600000000000 * 3600000000000 AS hour, \
                     count(*) AS n FROM logs GROUP BY 1, 2 ORDER BY job, hour"
                .into(),
            grep: None,
            duckdb: format!(
                "SELECT job, ts_nanos // 3600000000000 * 3600000000000 AS hour, count(*) AS n \
                 FROM {parquet} GROUP BY ALL ORDER BY job, hour"
            ),
        },
        Query {
            name: "top 10 error lines",
            sluice: "SELECT line, count(*) AS n FROM logs WHERE search(line, 'error') \
                     GROUP BY line ORDER BY n DESC, line LIMIT 10"
                .into(),
            grep: Some(format!(
                "{cat} grep -aiE -- '{ERROR_WORD}' | LC_ALL=C sort | uniq -c \
                 | LC_ALL=C sort -k1,1nr -k2 | head -n 10"
            )),
            duckdb: format!(
                "SELECT line, count(*) AS n FROM {parquet} \
                 WHERE line ILIKE '%error%' AND regexp_matches(line, '(?i){ERROR_WORD}') \
                 GROUP BY line ORDER BY n DESC, line LIMIT 10"
            ),
        },
    ])
}

/// A result cell as text: strings, integers, timestamps as nanoseconds.
fn cell(column: &ArrayRef, row: usize) -> anyhow::Result<String> {
    let any = column.as_any();
    if column.is_null(row) {
        return Ok(String::new());
    }
    if let Some(a) = any.downcast_ref::<StringArray>() {
        return Ok(a.value(row).to_string());
    }
    if let Some(a) = any.downcast_ref::<StringViewArray>() {
        return Ok(a.value(row).to_string());
    }
    if let Some(a) = any.downcast_ref::<LargeStringArray>() {
        return Ok(a.value(row).to_string());
    }
    if let Some(a) = any.downcast_ref::<Int64Array>() {
        return Ok(a.value(row).to_string());
    }
    if let Some(a) = any.downcast_ref::<UInt64Array>() {
        return Ok(a.value(row).to_string());
    }
    if let Some(a) = any.downcast_ref::<TimestampNanosecondArray>() {
        return Ok(a.value(row).to_string());
    }
    // Timestamps as nanoseconds, as DuckDB's epoch_ns gives them.
    if let Some(a) = any.downcast_ref::<TimestampMicrosecondArray>() {
        return Ok((a.value(row) * 1_000).to_string());
    }
    anyhow::bail!("a result column of type {}", column.data_type())
}

pub(crate) fn rows_of(output: &QueryOutput) -> anyhow::Result<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    for batch in &output.batches {
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| cell(c, row))
                    .collect::<anyhow::Result<_>>()?,
            );
        }
    }
    Ok(rows)
}

async fn run_sluice(engine: &QueryEngine, sql: &str) -> anyhow::Result<Measured> {
    let request = QueryRequest {
        sql: sql.into(),
        ..Default::default()
    };
    let cpu = cpu_time();
    let wall = Instant::now();
    let output = engine
        .query(&request)
        .await
        .with_context(|| format!("sluice: {sql}"))?;
    let (wall_s, cpu_s) = (
        wall.elapsed().as_secs_f64(),
        (cpu_time() - cpu).as_secs_f64(),
    );
    Ok(Measured {
        tool: "sluice".into(),
        wall_s,
        cpu_s,
        process_cpu_s: None,
        rows: rows_of(&output)?,
    })
}

/// A shell pipeline; its output as rows: one count, or `uniq -c` lines as
/// (line, count).
fn run_grep(pipeline: &str) -> anyhow::Result<Measured> {
    let cpu = child_cpu_time();
    let wall = Instant::now();
    let output = Command::new("sh")
        .args(["-c", pipeline])
        .stderr(Stdio::inherit())
        .output()
        .context("failed to run sh")?;
    let (wall_s, cpu_s) = (
        wall.elapsed().as_secs_f64(),
        (child_cpu_time() - cpu).as_secs_f64(),
    );
    // grep -c exits 1 when it counts nothing.
    anyhow::ensure!(
        output.status.success() || output.status.code() == Some(1),
        "{pipeline}: {}",
        output.status
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let rows = text
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(|l| match l.trim_start().split_once(' ') {
            Some((n, line)) => vec![line.to_string(), n.to_string()],
            None => vec![l.trim().to_string()],
        })
        .collect();
    Ok(Measured {
        tool: "zstd -dc | grep".into(),
        wall_s,
        cpu_s,
        process_cpu_s: None,
        rows,
    })
}

fn run_duckdb(python: &Path, sql: &str, threads: usize) -> anyhow::Result<Measured> {
    let cpu = child_cpu_time();
    let output = Command::new(python)
        .args(["-c", DUCKDB_SCRIPT, sql, &threads.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to run {}", python.display()))?;
    let process_cpu = (child_cpu_time() - cpu).as_secs_f64();
    anyhow::ensure!(output.status.success(), "duckdb: {sql}: {}", output.status);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "duckdb printed {:?}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    let rows = report["rows"]
        .as_array()
        .context("duckdb: no rows")?
        .iter()
        .map(|row| {
            row.as_array()
                .map(|cells| {
                    cells
                        .iter()
                        .map(|v| match v {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    Ok(Measured {
        tool: format!(
            "duckdb ({threads} thread{})",
            if threads == 1 { "" } else { "s" }
        ),
        wall_s: report["wall_s"].as_f64().unwrap_or(f64::NAN),
        cpu_s: report["cpu_s"].as_f64().unwrap_or(f64::NAN),
        process_cpu_s: Some(process_cpu),
        rows,
    })
}

fn python(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    let python = flag.map(Path::to_path_buf).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/sluice-tools/delta-py/bin/python")
    });
    let ok = Command::new(&python)
        .args(["-c", "import duckdb, duckdb_extension_delta"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    anyhow::ensure!(
        ok,
        "no Python with DuckDB's delta extension at {} (scripts/test.sh installs one; or pass --python)",
        python.display()
    );
    Ok(python)
}

/// Keeps the run with the least CPU.
fn keep_best(best: &mut Option<Measured>, run: Measured) {
    if best.as_ref().is_none_or(|b| run.cpu_s < b.cpu_s) {
        *best = Some(run);
    }
}

/// Runs `sluice bench query`: archives the raw log, runs each query with Sluice, `zstd -dc | grep`
/// and DuckDB, fails unless all three agree, and prints the CPU each took.
pub async fn run(args: QueryBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.runs >= 1 && args.threads >= 1,
        "--runs and --threads must be ≥ 1"
    );
    let python = python(args.python.as_deref())?;
    let generated = generate(
        args.mb,
        args.corpus.as_deref(),
        args.dir.as_deref(),
        "sluice-bench-query-",
        false,
    )
    .await?;
    let (bytes, lines) = (generated.bytes, generated.lines);
    let (store, archive_cpu, _) = archive_all(&generated, true).await?;
    let scratch = generated.scratch.path().to_path_buf();
    drop(generated.bus);

    eprintln!("compressing the raw log with zstd -3 -T1…");
    let zst = scratch.join("raw.log.zst");
    let status = Command::new("zstd")
        .args(["-3", "-T1", "-q", "-f", "-o"])
        .arg(&zst)
        .arg(&generated.arrival)
        .status()
        .context("failed to run zstd (apt-get install zstd)")?;
    anyhow::ensure!(status.success(), "zstd failed: {status}");
    std::fs::remove_file(&generated.arrival)?;
    let zst_bytes = std::fs::metadata(&zst)?.len();

    let (splits, data, index, _) = log_sizes(&store).await?;

    // A token of a few lines of the samples; the generator rewrites its
    // digits for each pass, so this form (the first pass's) is in a few
    // lines only.
    let sample_needle = crate::corpus::rare_token(&crate::corpus::corpus_files(args.corpus.as_deref())?)
        .context("no rare token in the corpus to search for (a word of 10+ letters and digits in at most 3 lines)")?;
    let needle = String::from_utf8(vary(sample_needle.as_bytes(), 1))?;
    let engine_store = store.clone();
    let engine = QueryEngine::open(
        store,
        EngineConfig {
            target_partitions: args.threads,
            ..EngineConfig::default()
        },
    )
    .await?;
    // The same without keeping indexes between queries: every search
    // fetches and unpacks the indexes of the splits it reads.
    let cold = QueryEngine::open(
        engine_store,
        EngineConfig {
            target_partitions: args.threads,
            index_cache_bytes: 0,
            ..EngineConfig::default()
        },
    )
    .await?;
    let mut reports = Vec::new();
    for query in queries(&needle, &zst, &scratch.join("archive"))? {
        eprintln!("{}…", query.name);
        let (mut sluice, mut grep, mut duckdb) = (None, None, None);
        for _ in 0..args.runs {
            keep_best(&mut sluice, run_sluice(&engine, &query.sluice).await?);
            if let Some(pipeline) = &query.grep {
                keep_best(&mut grep, run_grep(pipeline)?);
            }
            keep_best(
                &mut duckdb,
                run_duckdb(&python, &query.duckdb, args.threads)?,
            );
        }
        let mut cold_run = run_sluice(&cold, &query.sluice).await?;
        cold_run.tool = "sluice, indexes cold".into();
        let results: Vec<Measured> = [sluice, grep, duckdb, Some(cold_run)]
            .into_iter()
            .flatten()
            .collect();
        for other in &results[1..] {
            anyhow::ensure!(
                other.rows == results[0].rows,
                "{}: {} answered {:?}, sluice {:?}",
                query.name,
                other.tool,
                other.rows,
                results[0].rows
            );
        }
        let answer = match results[0].rows.as_slice() {
            [row] if row.len() == 1 => row[0].clone(),
            rows => format!("{} rows", rows.len()),
        };
        if query.name == "needle" {
            let n: u64 = answer.parse()?;
            anyhow::ensure!(
                (1..=100).contains(&n),
                "the needle {needle} is in {n} lines, not a few"
            );
        }
        reports.push(QueryReport {
            name: query.name,
            answer,
            results,
        });
    }

    let gb = bytes as f64 / 1e9;
    let mb = bytes as f64 / 1048576.0;
    let find = |name: &str, tool: &str| -> Option<&Measured> {
        reports
            .iter()
            .find(|r| r.name == name)?
            .results
            .iter()
            .find(|m| m.tool.starts_with(tool))
    };
    let ratio = |name: &str, tool: &str, by: fn(&Measured) -> f64| -> Option<f64> {
        Some(by(find(name, tool)?) / by(find(name, "sluice")?))
    };
    let needle_wall = ratio("needle", "zstd", |m| m.wall_s);
    let needle_cpu = ratio("needle", "zstd", |m| m.cpu_s);
    // Sluice's CPU over DuckDB's: each engine with its faster formulation,
    // and each formulation alone.
    let best = |tool: &str| {
        [HOURLY, HOURLY_ARITHMETIC]
            .iter()
            .filter_map(|name| find(name, tool).map(|m| m.cpu_s))
            .reduce(f64::min)
    };
    let hourly_vs_duckdb = best("sluice").zip(best("duckdb")).map(|(s, d)| s / d);
    let hourly_each = [HOURLY, HOURLY_ARITHMETIC]
        .map(|name| ratio(name, "duckdb", |m| m.cpu_s).map_or(f64::NAN, |r| 1.0 / r));
    let regex_gb_per_cpu_s = find("regex scan", "sluice").map(|m| gb / m.cpu_s);
    let targets = serde_json::json!({
        "needle_faster_than_zstd_grep": {"by_wall": needle_wall, "by_cpu": needle_cpu, "target": 50.0,
            "met": needle_wall.is_some_and(|r| r >= 50.0) && needle_cpu.is_some_and(|r| r >= 50.0)},
        "count_by_job_per_hour_cpu_vs_duckdb": {"ratio": hourly_vs_duckdb,
            "date_trunc": hourly_each[0], "integer_hour": hourly_each[1], "target": 1.2,
            "met": hourly_vs_duckdb.is_some_and(|r| r <= 1.2)},
        "regex_scan_gb_per_cpu_s": {"value": regex_gb_per_cpu_s, "target": 0.5,
            "met": regex_gb_per_cpu_s.is_some_and(|r| r >= 0.5)},
    });
    if args.keep {
        eprintln!("kept {}", generated.scratch.keep().display());
    }
    if args.json {
        let report = serde_json::json!({
            "raw_bytes": bytes,
            "raw_mb": mb,
            "lines": lines,
            "splits": splits,
            "data_bytes": data,
            "index_bytes": index,
            "zstd_3_bytes": zst_bytes,
            "archive_cpu_s": archive_cpu,
            "threads": args.threads,
            "runs": args.runs,
            "needle": needle,
            "regex": REGEX,
            "queries": reports,
            "targets": targets,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{mb:.0} MiB of raw log, {lines} lines; archive: {} splits, data {:.0} MiB + index {:.0} MiB; zstd -3: {:.0} MiB",
        splits,
        data as f64 / 1048576.0,
        index as f64 / 1048576.0,
        zst_bytes as f64 / 1048576.0
    );
    println!(
        "{} thread(s) for Sluice and DuckDB; best of {} runs by CPU; needle {needle}, regex {REGEX}",
        args.threads, args.runs
    );
    println!(
        "{:<22} {:<20} {:>9} {:>9} {:>14} {:>10}  answer",
        "query", "tool", "wall s", "CPU s", "raw GB/CPU-s", "CPU ÷ sluice"
    );
    for report in &reports {
        let sluice_cpu = report.results[0].cpu_s;
        for (i, m) in report.results.iter().enumerate() {
            println!(
                "{:<22} {:<20} {:>9.3} {:>9.3} {:>14.2} {:>10.2}  {}",
                if i == 0 { report.name } else { "" },
                m.tool,
                m.wall_s,
                m.cpu_s,
                gb / m.cpu_s,
                m.cpu_s / sluice_cpu,
                if i == 0 {
                    report.answer.as_str()
                } else {
                    "same"
                }
            );
        }
    }
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "needle vs zstd -dc | grep: {:.1}× faster by wall, {:.1}× by CPU (target ≥ 50×): {}",
        needle_wall.unwrap_or(f64::NAN),
        needle_cpu.unwrap_or(f64::NAN),
        met(targets["needle_faster_than_zstd_grep"]["met"] == true)
    );
    println!(
        "count by job per hour: {:.2}× DuckDB's CPU, each at its faster formulation \
         (date_trunc {:.2}×, integer hour {:.2}×; target ≤ 1.2×): {}",
        hourly_vs_duckdb.unwrap_or(f64::NAN),
        hourly_each[0],
        hourly_each[1],
        met(targets["count_by_job_per_hour_cpu_vs_duckdb"]["met"] == true)
    );
    println!(
        "regex scan: {:.2} GB of raw log per CPU-second (target ≥ 0.5): {}",
        regex_gb_per_cpu_s.unwrap_or(f64::NAN),
        met(targets["regex_scan_gb_per_cpu_s"]["met"] == true)
    );
    Ok(())
}

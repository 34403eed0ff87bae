//! The benches' log samples: `--corpus DIR` (`*.log` files, e.g. the loghub
//! samples) or the generated corpus, and `sluice bench corpus`, which
//! writes the generated one out.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

/// Flags of `sluice bench corpus`; its help text comes from
/// [`BenchCommand::Corpus`](crate::BenchCommand::Corpus).
#[derive(Args, Debug)]
pub struct CorpusArgs {
    /// Directory to write one `FORMAT.log` file per format into (created).
    pub out: PathBuf,
    /// Events of each format (a Java error with its stack trace is one
    /// event of several lines).
    #[arg(long, default_value_t = GENERATED_EVENTS)]
    pub events: usize,
    /// Seed of the generator: the same seed, events and formats give the same files
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Formats to write, comma-separated: syslog, hdfs, access, java, json,
    /// logfmt, raw [default: all]
    #[arg(long, value_delimiter = ',', value_parser = parse_format)]
    pub formats: Vec<sluice_corpus::Format>,
}

fn parse_format(name: &str) -> Result<sluice_corpus::Format, String> {
    sluice_corpus::Format::parse(name).ok_or_else(|| {
        let names: Vec<&str> = sluice_corpus::Format::ALL
            .iter()
            .map(|f| f.name())
            .collect();
        format!(
            "unknown format {name:?}; expected one of {}",
            names.join(", ")
        )
    })
}

/// Writes the generated corpus the benches use (or another seed or size of
/// it) as files, for other tools to read.
pub fn run(args: CorpusArgs) -> anyhow::Result<()> {
    let formats = if args.formats.is_empty() {
        sluice_corpus::Format::ALL.to_vec()
    } else {
        args.formats.clone()
    };
    let files = sluice_corpus::files(&formats, args.seed, args.events, 1_795_244_400_000_000_000);
    write_corpus(&files, &args.out)?;
    for (name, lines) in &files {
        let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
        println!(
            "{}/{name}.log: {} lines, {bytes} bytes",
            args.out.display(),
            lines.len()
        );
    }
    Ok(())
}

/// Events of each format in the generated corpus the benches use without
/// `--corpus` (about the size of a loghub sample).
const GENERATED_EVENTS: usize = 2_000;

/// The benches' log samples as `(name, non-empty lines)`: the `*.log` files
/// of `corpus` in name order, or, without one, the generated corpus (every
/// format of `sluice-corpus`, seed 1), so a bench runs on a plain clone.
pub fn corpus_files(corpus: Option<&Path>) -> anyhow::Result<Vec<(String, Vec<Vec<u8>>)>> {
    match corpus {
        Some(dir) => read_corpus(dir),
        None => Ok(sluice_corpus::files(
            &sluice_corpus::Format::ALL,
            1,
            GENERATED_EVENTS,
            1_795_244_400_000_000_000,
        )),
    }
}

/// Every line of the corpus, file after file.
pub fn corpus_lines(corpus: Option<&Path>) -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(corpus_files(corpus)?
        .into_iter()
        .flat_map(|(_, lines)| lines)
        .collect())
}

/// A directory of `*.log` files holding the corpus, for processes the bench
/// starts: `corpus` itself, or the generated corpus written under `scratch`.
pub fn corpus_dir(corpus: Option<&Path>, scratch: &Path) -> anyhow::Result<PathBuf> {
    if let Some(dir) = corpus {
        return Ok(std::path::absolute(dir)?);
    }
    let dir = scratch.join("corpus");
    write_corpus(&corpus_files(None)?, &dir)?;
    Ok(dir)
}

/// Writes each `(name, lines)` to `dir/NAME.log`.
pub fn write_corpus(files: &[(String, Vec<Vec<u8>>)], dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    for (name, lines) in files {
        let path = dir.join(format!("{name}.log"));
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&path)
                .with_context(|| format!("failed to create {}", path.display()))?,
        );
        for line in lines {
            out.write_all(line)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    Ok(())
}

/// The `*.log` files of `dir` in name order: each file's stem, lowercased,
/// and its non-empty lines.
fn read_corpus(corpus: &Path) -> anyhow::Result<Vec<(String, Vec<Vec<u8>>)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus)
        .with_context(|| format!("failed to list the corpus {} (--corpus)", corpus.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    paths.sort();
    let mut files = Vec::new();
    for path in &paths {
        let text =
            std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
        let lines: Vec<Vec<u8>> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if !lines.is_empty() {
            files.push((name, lines));
        }
    }
    anyhow::ensure!(
        !files.is_empty(),
        "no *.log files with lines in {}",
        corpus.display()
    );
    Ok(files)
}

/// A needle picked from the data: the first (in file and line order) token
/// of letters and digits, at least 10 long, with letters and a run of two
/// or more digits (which the benches' repetitions rewrite), that is in at
/// most 3 lines of the whole corpus; `None` if there is none.
pub fn rare_token(files: &[(String, Vec<Vec<u8>>)]) -> Option<String> {
    let tokens = |line: &[u8]| -> Vec<String> {
        line.split(|b| !b.is_ascii_alphanumeric())
            .filter(|t| {
                t.len() >= 10
                    && t.windows(2).any(|w| w.iter().all(u8::is_ascii_digit))
                    && t.iter().any(u8::is_ascii_alphabetic)
            })
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect()
    };
    let mut lines_with = std::collections::HashMap::<String, usize>::new();
    for (_, lines) in files {
        for line in lines {
            let mut seen = tokens(line);
            seen.sort();
            seen.dedup();
            for token in seen {
                *lines_with.entry(token).or_default() += 1;
            }
        }
    }
    files
        .iter()
        .flat_map(|(_, lines)| lines)
        .flat_map(|line| tokens(line))
        .find(|t| lines_with.get(t).is_some_and(|n| (1..=3).contains(n)))
}

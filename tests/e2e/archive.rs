//! The archive as other engines see it: `sluice up` archives what a node's
//! tasks wrote, and DuckDB reads `logs/**/*.parquet` with Hive partitioning
//! and finds exactly those lines.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Up, sluice_ok};

/// A Python with DuckDB: `SLUICE_PYTHON` (set by scripts/test.sh), else
/// `python3` if it has it. `None` (with a message) when there is none,
/// unless `SLUICE_REQUIRE_DUCKDB=1`.
fn python_with_duckdb() -> Option<String> {
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import duckdb"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var("SLUICE_REQUIRE_DUCKDB").as_deref() != Ok("1"),
        "SLUICE_REQUIRE_DUCKDB=1 but {python} cannot import duckdb"
    );
    eprintln!("skipping: no Python with duckdb; scripts/test.sh installs one");
    None
}

#[test]
fn duckdb_reads_exactly_the_archived_lines() {
    let Some(python) = python_with_duckdb() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let up = Up::start(&dir, &[]);
    let root = dir.join("nodes/node-0/sandboxes");
    let mut expected = std::collections::BTreeMap::new();
    for instance in 0..3u32 {
        let logs = sluice_testkit::native_sandbox(
            &root,
            &format!("t-{instance}"),
            "www/prod/web",
            instance,
            &["main"],
        );
        let mut f = std::fs::File::create(logs.join("main.stdout")).unwrap();
        let mut lines = Vec::new();
        for i in 0..500 {
            let line = format!("instance {instance} line {i} ünïcode ✓");
            writeln!(f, "{line}").unwrap();
            lines.push(line);
        }
        // Not UTF-8: kept exactly in line_bytes, lossy in line.
        f.write_all(b"bad \xff\xfe bytes\n").unwrap();
        expected.insert(instance, lines);
    }
    let want_rows = 3 * 501;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status: Value = serde_json::from_str(&sluice_ok(&[
            "archive",
            "status",
            "--data-dir",
            up.data_dir(),
            "--json",
        ]))
        .unwrap();
        if status["logs"]["rows"].as_u64() == Some(want_rows) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "not archived: {status}\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        status["logs"]["index_bytes"].as_u64().unwrap() > 0,
        "{status}"
    );

    let glob = dir.join("archive/logs/**/*.parquet");
    let script = format!(
        r#"
import duckdb, json
rows = duckdb.sql("""
  SELECT instance, job, role, date, hour, count(*) AS n,
         string_agg(line, '\n' ORDER BY "offset") FILTER (WHERE line_bytes IS NULL) AS text,
         count(line_bytes) AS binary
  FROM read_parquet('{glob}', hive_partitioning = true)
  GROUP BY ALL ORDER BY instance
""").fetchall()
print(json.dumps([[str(c) for c in r] for r in rows]))
"#,
        glob = glob.display()
    );
    let out = Command::new(&python)
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "duckdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (row, (instance, lines)) in rows.iter().zip(&expected) {
        assert_eq!(row[0], instance.to_string());
        assert_eq!(row[1], "www/prod/web");
        assert_eq!(row[2], "www");
        assert!(row[3].starts_with("20"), "date from the path: {row:?}");
        assert_eq!(row[5], "501");
        assert_eq!(row[6], lines.join("\n"), "instance {instance}");
        assert_eq!(row[7], "1", "the invalid UTF-8 line keeps its bytes");
    }
    assert!(up.stop().success());
}

//! `sluice query` and `sluice events` against `sluice up`'s query service:
//! formats, full-text search with context lines, the audit trail, refused
//! statements, and a token that reads only its own role.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{SLUICE, Up, sluice, sluice_ok};

fn json_rows(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn query_search_context_and_events_through_the_service() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    // A user who may read role `db` only.
    std::fs::write(
        dir.join("tokens.toml"),
        "[[tokens]]\nuser = \"bob\"\ntoken = \"bob-token-0123456789\"\nroles = [\"db\"]\n",
    )
    .unwrap();
    let up = Up::start(&dir, &[]);
    let data = up.data_dir().to_string();
    let root = dir.join("nodes/node-0/sandboxes");
    for (job, lines) in [("www/prod/web", 200), ("db/prod/pg", 100)] {
        let logs = sluice_testkit::native_sandbox(&root, &format!("t-{lines}"), job, 0, &["main"]);
        let mut f = std::fs::File::create(logs.join("main.stdout")).unwrap();
        for i in 0..lines {
            if i == 150 {
                writeln!(f, "ERROR java.lang.OutOfMemoryError: Java heap space").unwrap();
            } else {
                writeln!(f, "{job} request {i} ok").unwrap();
            }
        }
    }
    up.wait_for_rows(300);

    // Per job, as JSON objects.
    let out = sluice_ok(&[
        "query",
        "SELECT job, count(*) AS n FROM logs GROUP BY job ORDER BY job",
        "--format",
        "json",
        "--data-dir",
        &data,
    ]);
    let rows = json_rows(&out);
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(
        (rows[0]["job"].as_str(), rows[0]["n"].as_i64()),
        (Some("db/prod/pg"), Some(100))
    );
    assert_eq!(
        (rows[1]["job"].as_str(), rows[1]["n"].as_i64()),
        (Some("www/prod/web"), Some(200))
    );

    // CSV, with a header.
    let out = sluice_ok(&[
        "query",
        "SELECT instance, count(*) AS n FROM logs WHERE role = 'db' GROUP BY instance",
        "--format",
        "csv",
        "--data-dir",
        &data,
    ]);
    assert_eq!(out, "instance,n\n0,100\n");

    // A needle through the index, with two lines of context either side.
    let sql =
        "SELECT job, source_id, \"offset\", ts FROM logs WHERE search(line, 'OutOfMemoryError')";
    let out = sluice(&["query", sql, "-C", "2", "--stats", "--data-dir", &data]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[2].contains(": ERROR java.lang.OutOfMemoryError"),
        "{text}"
    );
    assert!(
        lines[0].starts_with("www/prod/web[0] ")
            && lines[0].ends_with("- www/prod/web request 148 ok"),
        "{text}"
    );
    assert!(
        lines[4].ends_with("- www/prod/web request 152 ok"),
        "{text}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 selected by the indexes"), "{stderr}");

    // Refused and bad statements say why and fail.
    for (sql, says) in [
        ("DROP TABLE logs", "refused"),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "refused"),
        ("SELEC 1", "SELEC"),
        ("SELECT nope FROM logs", "nope"),
    ] {
        let out = sluice(&["query", sql, "--data-dir", &data]);
        assert!(!out.status.success(), "{sql}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{sql}: {stderr}");
    }

    // Bob reads role db only, whatever the SQL says; a bad token reads nothing.
    let endpoint = std::fs::read_to_string(dir.join("client.toml"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("endpoint = ")
                .map(|e| e.trim_matches('"').to_string())
        })
        .unwrap();
    let as_user = |token: &str| {
        Command::new(SLUICE)
            .args([
                "query",
                "SELECT count(*) AS n FROM logs WHERE role IN ('www', 'db')",
            ])
            .args(["--format", "csv", "--data-dir"])
            .arg(tmp.path().join("elsewhere"))
            .env("SLUICE_ADDR", &endpoint)
            .env("SLUICE_TOKEN", token)
            .env("SLUICE_TLS_CA", up.dir.join("tls/ca.pem"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let bob = as_user("bob-token-0123456789");
    assert!(
        bob.status.success(),
        "{}",
        String::from_utf8_lossy(&bob.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&bob.stdout), "n\n100\n");
    let stranger = as_user("not-a-token-at-all");
    assert!(!stranger.status.success());
    assert!(
        String::from_utf8_lossy(&stranger.stderr).contains("token"),
        "{stranger:?}"
    );

    // The audit trail: a job submitted by the admin shows up with its actor.
    let spec = tmp.path().join("sleeper.yaml");
    std::fs::write(
        &spec,
        "name: sleeper\nrole: www\nenv: prod\ninstances: 1\nresources: {cpu: 0.01, ram_mb: 8, disk_mb: 8}\n\
         processes: [{name: main, cmd: 'sleep 600'}]\n",
    )
    .unwrap();
    sluice_ok(&["job", "submit", spec.to_str().unwrap(), "--data-dir", &data]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let events = loop {
        let out = sluice_ok(&[
            "events",
            "--job",
            "www/prod/*",
            "--since",
            "1h",
            "--format",
            "json",
            "--data-dir",
            &data,
        ]);
        let rows = json_rows(&out);
        if rows.iter().any(|r| r["kind"] == "task_state") {
            break rows;
        }
        assert!(Instant::now() < deadline, "no events: {out}\n{}", up.log());
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        events.iter().all(|r| r["job"] == "www/prod/sleeper"),
        "{events:?}"
    );
    assert!(events.iter().any(|r| r["actor"] == "admin"), "{events:?}");
    sluice_ok(&["job", "kill", "www/prod/sleeper", "--data-dir", &data]);
    assert!(up.stop().success());
}

//! The README as a newcomer follows it: the commands of its tour are the
//! ones `sluice up --demo` prints (`demo.rs` runs them), and those of "A
//! first job" run as written, one after another, from a directory that is
//! not the repository, and do what the README says.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{SLUICE, kill_tasks_under, shell, until_line, until_output};

const README: &str = include_str!("../../README.md");

/// The commands of the first ```sh block under the heading `## {section}`,
/// as the shell reads them: a quoted string or a here-document may span
/// lines, and `# comments` are dropped.
pub fn commands(section: &str) -> Vec<String> {
    let heading = format!("## {section}\n");
    let body = README
        .split(&heading)
        .nth(1)
        .unwrap_or_else(|| panic!("README has no section {section:?}"));
    let block = body
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .unwrap_or_else(|| panic!("README section {section:?} has no sh block"));
    let mut commands = Vec::new();
    let mut lines = block.lines();
    let mut pending = String::new();
    while let Some(line) = lines.next() {
        let line = strip_comment(line);
        if pending.is_empty() && line.trim().is_empty() {
            continue;
        }
        if !pending.is_empty() {
            pending.push('\n');
        }
        pending.push_str(line.trim_end());
        if let Some(tag) = heredoc_tag(line) {
            for body in lines.by_ref() {
                pending.push('\n');
                pending.push_str(body);
                if body == tag {
                    break;
                }
            }
        }
        if !open_quote(&pending) {
            commands.push(std::mem::take(&mut pending));
        }
    }
    assert!(
        pending.is_empty(),
        "unterminated quote in README {section:?}: {pending}"
    );
    commands
}

/// The README's tour, as commands.
pub fn tour() -> Vec<String> {
    commands("A five-minute tour")
}

/// A command with its whitespace runs made single spaces.
pub fn normalized(command: &str) -> String {
    command.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `line` without a `# comment` that starts outside quotes.
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single && previous != '\\' => double = !double,
            '#' if !single && !double && previous.is_whitespace() => return &line[..i],
            _ => {}
        }
        previous = c;
    }
    line
}

fn open_quote(text: &str) -> bool {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for c in text.chars() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single && previous != '\\' => double = !double,
            _ => {}
        }
        previous = c;
    }
    single || double
}

/// `TAG` of a line holding `<<'TAG'` or `<<TAG`.
fn heredoc_tag(line: &str) -> Option<String> {
    let rest = line.split("<<").nth(1)?.trim();
    let tag: String = rest
        .trim_start_matches(['\'', '"'])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!tag.is_empty()).then_some(tag)
}

/// A `sluice up … &` started by the README, stopped (with its tasks) at the
/// end of the test.
struct Background {
    child: std::process::Child,
    data_dir: PathBuf,
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_tasks_under(&self.data_dir);
    }
}

#[test]
fn the_first_job_runs_as_written_from_another_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let elsewhere = tmp.path();
    let bin = Path::new(SLUICE).parent().unwrap();
    let export = format!("export PATH=\"{}:$PATH\"", bin.display());
    let commands = commands("A first job");
    assert!(commands.len() >= 10, "{commands:#?}");
    let mut background = None;
    let mut ran = Vec::new();
    for command in &commands {
        let words: Vec<&str> = command.split_whitespace().collect();
        match (words[0], words.get(1).copied().unwrap_or("")) {
            // The one line that depends on where the reader cloned Sluice.
            ("export", _) => {
                assert!(command.starts_with("export PATH="), "{command}");
                continue;
            }
            ("sluice", "up") => {
                let line = command
                    .strip_suffix('&')
                    .expect("up runs in the background");
                let child = shell(&export, line.trim(), elsewhere);
                let data_dir = elsewhere.join("sluice-data");
                let deadline = Instant::now() + Duration::from_secs(60);
                while !data_dir.join("client.toml").exists() {
                    assert!(Instant::now() < deadline, "`{command}` did not come up");
                    std::thread::sleep(Duration::from_millis(100));
                }
                background = Some(Background { child, data_dir });
            }
            ("cat", _) => {
                let out = shell(&export, command, elsewhere)
                    .wait_with_output()
                    .unwrap();
                assert!(out.status.success(), "{command}");
            }
            ("tailll", _) => {
                until_line(&export, command, elsewhere, |l| l.contains("hello from "));
            }
            ("sluice", "job") if words[2] == "status" => {
                until_output(&export, command, elsewhere, |out| {
                    out.matches("running").count() >= 3
                });
            }
            ("sluice", "job") => {
                until_output(&export, command, elsewhere, |_| true);
            }
            ("sluice", "bus") => {
                until_output(&export, command, elsewhere, |out| {
                    out.contains("hello from")
                });
            }
            ("sluice", "query") if command.contains("-C 1") => {
                until_output(&export, command, elsewhere, |out| out.contains("run 0"));
            }
            ("sluice", "query") => {
                let out = until_output(&export, command, elsewhere, |out| {
                    ["| 0 ", "| 1 ", "| 2 "].iter().all(|i| out.contains(i))
                });
                assert!(out.contains("count(*)"), "{out}");
            }
            ("sluice", "events") => {
                let out = until_output(&export, command, elsewhere, |out| {
                    out.contains("job_killed")
                });
                assert!(out.contains("job_submitted"), "{out}");
            }
            _ => panic!("a README command this test does not know: {command}"),
        }
        ran.push(words[0..2].join(" "));
    }
    assert!(background.is_some(), "the README starts sluice up");
    assert_eq!(
        ran.iter().filter(|c| c.starts_with("sluice query")).count(),
        2,
        "{ran:?}"
    );
}

#[test]
fn the_shell_reader_joins_quotes_and_here_documents() {
    assert_eq!(strip_comment("a 'b # c' # d"), "a 'b # c' ");
    assert!(open_quote("sluice query \"SELECT x FROM"));
    assert!(!open_quote(
        "sluice query \"SELECT \\\"offset\\\" FROM logs\""
    ));
    assert_eq!(
        heredoc_tag("cat > hello.yaml <<'YAML'").as_deref(),
        Some("YAML")
    );
    assert_eq!(
        normalized("sluice query \"SELECT a\n  FROM b\""),
        "sluice query \"SELECT a FROM b\""
    );
}

//! The `tailll` binary without a cluster: flags, and the errors a user
//! meets first. (With a cluster: the root package's `tests/e2e/tailll.rs`,
//! which runs this binary; having this test makes `cargo test --workspace`
//! build it.)

use std::process::{Command, Output, Stdio};

fn tailll(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tailll"))
        .args(args)
        .env_remove("SLUICE_DATA_DIR")
        .env_remove("SLUICE_ADDR")
        .env_remove("SLUICE_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run tailll")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_names_the_flags() {
    let out = tailll(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--lines",
        "--since",
        "--instances",
        "--stream",
        "--process",
        "--grep",
        "--invert",
        "--no-follow",
        "--output",
        "--template",
        "--host",
        "--run",
        "--color",
        "--quiet",
        "--reorder-window",
        "--unordered",
        "--data-dir",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = tailll(&[]);
    assert_eq!(out.status.code(), Some(2));
    let out = tailll(&["www", "-i", "5-2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("backwards"), "{}", stderr(&out));
    let out = tailll(&["a/b/c/d"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("three segments"), "{}", stderr(&out));
    let out = tailll(&["www", "--reorder-window", "10"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing unit"), "{}", stderr(&out));
}

#[test]
fn errors_before_any_cluster_is_asked_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let out = tailll(&["www", "--data-dir", data_dir]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("tailll: no cluster found")
            && stderr(&out).contains("client.toml"),
        "{}",
        stderr(&out)
    );
    let out = tailll(&["www", "--data-dir", data_dir, "-g", "(unclosed"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invalid --grep"), "{}", stderr(&out));
    let out = tailll(&["www", "--data-dir", data_dir, "--template", "{nope}"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown field {nope}"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unreachable_scheduler_is_an_error() {
    // Port 1 on loopback: nothing listens there.
    let out = tailll(&["www", "--addr", "127.0.0.1:1", "--token", "t"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach the scheduler") && err.contains("127.0.0.1:1"),
        "{err}"
    );
}

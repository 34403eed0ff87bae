//! The trust boundaries, attacked (docs/SECURITY.md): a hostile job of one
//! role against the node's secrets and another role's identity; the API
//! against plain-text clients, strangers' CAs, revoked tokens, floods of
//! bad tokens and callers over their limits; the audit trail of it all; and
//! `sluice up --demo` run by an ordinary user, where Landlock alone confines
//! the tasks.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_schema::auth::BearerInterceptor;
use sluice_schema::pb::admin_client::AdminClient;
use sluice_schema::pb::scheduler_client::SchedulerClient;
use sluice_schema::pb::tail_client::TailClient;
use sluice_schema::pb::{FollowRequest, Selector, StatusRequest, SubmitJobRequest};

use crate::harness::{SLUICE, Up, channel, sluice_ok, write_spec};

const GUEST_TOKEN: &str = "guest-token-0123456789abcdef";
const CANARY: &str = "canary-4f1e9a2b7c";

/// `sluice ARGS…` as the holder of `token`, against the cluster in `dir`.
pub(crate) fn sluice_as(token: &str, dir: &Path, args: &[&str]) -> Output {
    Command::new(SLUICE)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("SLUICE_TOKEN", token)
        .env_remove("SLUICE_DATA_DIR")
        .env_remove("SLUICE_ADDR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub(crate) fn add_user(dir: &Path, user: &str, token: &str, roles: &[&str]) {
    let path = dir.join("tokens.toml");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text += &sluice_schema::auth::token_file_entry(user, token, roles);
    std::fs::write(&path, text).unwrap();
}

/// Polls `f` every 300 ms for up to `secs` until it returns `Some`.
fn until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn job_status(dir: &Path, job: &str) -> Value {
    serde_json::from_str(&sluice_ok(&[
        "job",
        "status",
        job,
        "--json",
        "--data-dir",
        dir.to_str().unwrap(),
    ]))
    .unwrap()
}

/// The sandbox of instance 0 of `job`, once it runs.
fn running_sandbox(up: &Up, job: &str) -> std::path::PathBuf {
    let task = until(&format!("{job} running"), 60, || {
        let status = job_status(&up.dir, job);
        let i = &status["instances"][0];
        (i["state"] == "running").then(|| i["task_id"].as_str().unwrap().to_string())
    });
    let root = up.dir.join("nodes/node-0/sandboxes");
    root.join(task)
}

/// What the hostile job tries, each a line `attempt NAME: ok|denied`.
fn hostile_script(victim: &Path, up_pid: u32) -> String {
    let victim = victim.display();
    format!(
        r#"try() {{ name=$1; shift; if "$@" >/dev/null 2>&1; then echo "attempt $name: ok"; else echo "attempt $name: denied"; fi; }}
D=$(dirname "$(dirname "$(dirname "$(dirname "$SLUICE_SANDBOX")")")")
try read-client-toml cat "$D/client.toml"
try read-tokens cat "$D/tokens.toml"
try read-ca-key cat "$D/tls/ca.key"
try list-data-dir ls "$D"
try list-bus ls "$D/bus"
try list-archive ls "$D/archive"
try list-sandboxes ls "$(dirname "$SLUICE_SANDBOX")"
try read-own-task cat "$SLUICE_SANDBOX/task.json"
try rewrite-manifest sh -c 'echo "{{\"version\":1,\"job\":\"victim/prod/web\",\"instance\":0,\"task_id\":\"x\",\"run\":0,\"processes\":[\"main\",\"ghost\"]}}" > "$SLUICE_SANDBOX/sandbox.json"'
try replace-manifest sh -c 'echo {{}} > sandbox.json && mv sandbox.json "$SLUICE_SANDBOX/sandbox.json"'
try add-log-file sh -c 'echo forged-ghost-line > "$SLUICE_SANDBOX/logs/run-0/ghost.stdout"'
try append-own-log sh -c 'echo forged-append >> "$SLUICE_SANDBOX/logs/run-0/main.stdout"'
try rename-logs mv "$SLUICE_SANDBOX/logs" "$SLUICE_SANDBOX/work/stolen-logs"
try read-victim-log cat "{victim}/logs/run-0/main.stdout"
try read-victim-work cat "{victim}/work/secret.txt"
try symlink-victim sh -c 'ln -s "{victim}/work/secret.txt" link && cat link'
try hardlink-victim-log ln "{victim}/logs/run-0/main.stdout" hard
try hardlink-victim-work ln "{victim}/work/secret.txt" hard2
try read-node-environ cat /proc/{up_pid}/environ
try read-executor-environ cat /proc/$PPID/environ
try signal-node kill -0 {up_pid}
try write-tmp sh -c 'echo x > /tmp/sluice-hostile-$$'
if env | grep -q {CANARY}; then echo "attempt inherit-node-env: ok"; else echo "attempt inherit-node-env: denied"; fi
try own-work sh -c 'echo mine > mine.txt && cat mine.txt'
try own-tmp sh -c 'echo mine > "$TMPDIR/mine" && cat "$TMPDIR/mine"'
echo "hostile job done"
while :; do sleep 1; done
"#
    )
}

#[test]
fn a_hostile_job_cannot_read_secrets_or_forge_another_job_s_lines() {
    let tmp = tempfile::tempdir().unwrap();
    // Task users pass through to their sandboxes (as under /var/lib).
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    add_user(&dir, "guest", GUEST_TOKEN, &["guest"]);
    // `up` adds its admin token beside the guest's.
    let up = Up::start_with_env(&dir, &["--nodes", "1"], &[("CANARY_SECRET", CANARY)]);
    let d = up.data_dir();
    let victim_spec = write_spec(
        tmp.path(),
        "victim",
        "name: web\nrole: victim\nenv: prod\nresources: {cpu: 0.1, ram_mb: 16, disk_mb: 16}\nprocesses:\n  - name: main\n    cmd: echo top-secret > secret.txt; n=0; while :; do n=$((n+1)); echo victim-line $n; sleep 0.2; done\n",
    );
    sluice_ok(&["job", "submit", &victim_spec, "--data-dir", d]);
    let victim = running_sandbox(&up, "victim/prod/web");
    until("the victim's secret", 30, || {
        victim.join("work/secret.txt").exists().then_some(())
    });

    let script = hostile_script(&victim, up.pid());
    let spec = format!(
        "name: evil\nrole: guest\nenv: prod\nresources: {{cpu: 0.1, ram_mb: 16, disk_mb: 16}}\nprocesses:\n  - name: main\n    cmd: |\n{}",
        script
            .lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>()
    );
    let spec = write_spec(tmp.path(), "evil", &spec);
    // The guest may not submit into another role.
    let other = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("role: guest", "role: victim");
    let other = write_spec(tmp.path(), "evil-other", &other);
    let refused = sluice_as(GUEST_TOKEN, &dir, &["job", "submit", &other]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("may not act on role victim"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let out = sluice_as(GUEST_TOKEN, &dir, &["job", "submit", &spec]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let evil = running_sandbox(&up, "guest/prod/evil");
    let log = evil.join("logs/run-0/main.stdout");
    let output = until("the hostile job to finish its attempts", 60, || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("hostile job done").then_some(text)
    });
    let attempts: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("attempt "))
        .collect();
    assert_eq!(attempts.len(), 25, "{output}");
    for line in &attempts {
        let allowed = line.starts_with("attempt own-");
        let expected = if allowed { ": ok" } else { ": denied" };
        assert!(line.ends_with(expected), "{line}\n{output}");
    }
    assert!(!output.contains(CANARY), "{output}");
    let stderr = std::fs::read_to_string(evil.join("logs/run-0/main.stderr")).unwrap_or_default();
    assert!(
        !stderr.contains(CANARY) && !stderr.contains("top-secret"),
        "{stderr}"
    );

    // The node's files are as the node left them.
    let manifest = std::fs::read_to_string(evil.join("sandbox.json")).unwrap();
    assert!(
        manifest.contains("\"job\": \"guest/prod/evil\""),
        "{manifest}"
    );
    assert!(!evil.join("logs/run-0/ghost.stdout").exists());
    assert!(!evil.join("work/stolen-logs").exists());
    let victim_log = std::fs::read_to_string(victim.join("logs/run-0/main.stdout")).unwrap();
    assert!(
        victim_log.lines().all(|l| l.starts_with("victim-line ")),
        "{victim_log}"
    );

    // As root, the task ran as a user of its role, without the node's groups.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::fs::MetadataExt as _;
        let work = std::fs::metadata(evil.join("work")).unwrap();
        let user = sluice_scheduler::agent::confine::lookup_user("sluice-guest")
            .unwrap()
            .expect("the guest role's user");
        assert_eq!((work.uid(), work.gid()), (user.uid, user.gid));
        assert_eq!(work.mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(evil.join("logs")).unwrap().uid(), 0);
    }

    // The archive: the hostile job's lines are its own, under its name;
    // nothing forged reached the victim's job.
    let query = |sql: &str| {
        sluice_ok(&["query", "--data-dir", d, "--format", "json", sql])
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<Value>>()
    };
    until("the hostile job's lines in the archive", 60, || {
        let rows = query(
            "SELECT count(*) AS n FROM logs WHERE job = 'guest/prod/evil' AND line = 'hostile job done'",
        );
        (rows[0]["n"] == 1).then_some(())
    });
    let forged = query(
        "SELECT job, process, line FROM logs WHERE line LIKE '%forged%' OR process <> 'main' OR (job = 'victim/prod/web' AND line NOT LIKE 'victim-line %')",
    );
    assert!(forged.is_empty(), "{forged:?}");
    let processes = query("SELECT DISTINCT job, process FROM logs ORDER BY job");
    assert_eq!(
        processes,
        [
            serde_json::json!({"job": "guest/prod/evil", "process": "main"}),
            serde_json::json!({"job": "victim/prod/web", "process": "main"}),
        ]
    );

    // The guest sees its own role only: status, job lists, queries.
    let status = sluice_as(GUEST_TOKEN, &dir, &["status", "--json"]);
    assert!(status.status.success());
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let jobs: Vec<&str> = status["detail"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["guest/prod/evil"], "{status:#}");
    let list = sluice_as(GUEST_TOKEN, &dir, &["job", "list"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("guest/prod/evil") && !list.contains("victim"),
        "{list}"
    );
    let rows = sluice_as(
        GUEST_TOKEN,
        &dir,
        &["query", "--format", "json", "SELECT DISTINCT job FROM logs"],
    );
    let rows = String::from_utf8_lossy(&rows.stdout);
    assert!(
        rows.contains("guest/prod/evil") && !rows.contains("victim"),
        "{rows}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_plain_text_clients_and_strangers_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let up = Up::start(&dir, &[]);
    let file = sluice_client::ClientFile::read(&dir).unwrap().unwrap();
    assert!(file.endpoint.starts_with("https://"), "{}", file.endpoint);
    let auth = BearerInterceptor::new(&file.token).unwrap();

    // The same port in plain text: no answer but an error, the token unsent
    // in the clear to anyone who would answer.
    let plain = file.endpoint.replace("https://", "http://");
    let result = match tonic::transport::Endpoint::from_shared(plain.clone())
        .unwrap()
        .connect()
        .await
    {
        Ok(channel) => AdminClient::with_interceptor(channel, auth.clone())
            .status(StatusRequest {})
            .await
            .map(|_| ()),
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    assert!(result.is_err(), "a plain-text client was answered");

    // A client that trusts another CA refuses the server.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let stranger = Up::start(&other, &[]);
    let strange_ca = sluice_client::ClientFile::read(&other).unwrap().unwrap().ca;
    let err = sluice_client::connect(
        &file.endpoint,
        &file.token,
        strange_ca.as_deref(),
        &Default::default(),
    )
    .await
    .expect_err("a server whose certificate another CA signed was trusted");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    drop(stranger);

    // The CLI says what went wrong too.
    std::fs::write(tmp.path().join("other-ca.pem"), strange_ca.unwrap()).unwrap();
    let out = Command::new(SLUICE)
        .args(["status", "--data-dir", up.data_dir(), "--tls-ca"])
        .arg(tmp.path().join("other-ca.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid peer certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // With the right CA everything works, and the metrics endpoint off
    // loopback needs TLS too (here: refused without a certificate).
    sluice_ok(&["status", "--data-dir", up.data_dir()]);
    let solo = tmp.path().join("solo");
    let out = Command::new(SLUICE)
        .args(["archiver", "--metrics-listen", "0.0.0.0:0", "--data-dir"])
        .arg(&solo)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("served over TLS only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_token_is_refused_within_seconds_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    add_user(&dir, "guest", GUEST_TOKEN, &["guest"]);
    let up = Up::start(&dir, &["--nodes", "1"]);
    let status: Value = serde_json::from_str(&sluice_ok(&[
        "status",
        "--json",
        "--data-dir",
        up.data_dir(),
    ]))
    .unwrap();
    let tail = status["detail"]["nodes"][0]["tail"]
        .as_str()
        .unwrap()
        .to_string();
    let file = sluice_client::ClientFile::read(&dir).unwrap().unwrap();
    let admin = channel(&dir, &file.endpoint).await;
    let node = channel(&dir, &tail).await;
    let guest = BearerInterceptor::new(GUEST_TOKEN).unwrap();
    let calls = |admin: tonic::transport::Channel, node: tonic::transport::Channel| {
        let guest = guest.clone();
        async move {
            let status = AdminClient::with_interceptor(admin, guest.clone())
                .status(StatusRequest {})
                .await
                .map(|_| ());
            let follow = TailClient::with_interceptor(node, guest)
                .follow(FollowRequest {
                    selector: Some(Selector {
                        job: "guest/*".into(),
                        ..Default::default()
                    }),
                    no_follow: true,
                    ..Default::default()
                })
                .await
                .map(|_| ());
            (status, follow)
        }
    };
    let (status, follow) = calls(admin.clone(), node.clone()).await;
    status.unwrap();
    follow.unwrap();

    // Remove the guest: no restart, refused within seconds by every service.
    let text = std::fs::read_to_string(dir.join("tokens.toml")).unwrap();
    let kept: Vec<&str> = text
        .split("[[tokens]]")
        .filter(|e| !e.contains("\"guest\""))
        .collect();
    std::fs::write(dir.join("tokens.toml"), kept.join("[[tokens]]")).unwrap();
    let started = Instant::now();
    loop {
        let (status, follow) = calls(admin.clone(), node.clone()).await;
        if let (Err(a), Err(b)) = (&status, &follow) {
            assert_eq!(a.code(), tonic::Code::Unauthenticated);
            assert_eq!(b.code(), tonic::Code::Unauthenticated);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the removed token still works"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The admin's own token still works.
    sluice_ok(&["status", "--data-dir", up.data_dir()]);
}

/// Every changing call and every call that reads logs is on the audit trail
/// with actor, method, target, outcome and peer; refusals too, but a flood
/// of bad tokens leaves only a few events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_on_the_audit_trail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    add_user(&dir, "guest", GUEST_TOKEN, &["guest"]);
    let up = Up::start(&dir, &["--nodes", "1"]);
    let d = up.data_dir();
    let spec = write_spec(
        tmp.path(),
        "hello",
        "name: hello\nrole: guest\nenv: prod\nresources: {cpu: 0.1, ram_mb: 16, disk_mb: 16}\nprocesses:\n  - name: main\n    cmd: while :; do echo hello; sleep 0.2; done\n",
    );
    let ok = |out: Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(sluice_as(GUEST_TOKEN, &dir, &["job", "submit", &spec]));
    ok(sluice_as(GUEST_TOKEN, &dir, &["job", "update", &spec]));
    until("a hello line archived", 60, || {
        let out = ok(sluice_as(
            GUEST_TOKEN,
            &dir,
            &[
                "query",
                "--format",
                "csv",
                "SELECT count(*) FROM logs WHERE job = 'guest/prod/hello'",
            ],
        ));
        (out.lines().nth(1).and_then(|n| n.parse::<u64>().ok()) > Some(0)).then_some(())
    });
    ok(sluice_as(
        GUEST_TOKEN,
        &dir,
        &[
            "query",
            "-C",
            "1",
            "--limit",
            "1",
            "SELECT job, source_id, \"offset\", ts FROM logs WHERE search(line, 'hello')",
        ],
    ));
    let tail = Command::new(Path::new(SLUICE).with_file_name("tailll"))
        .args([
            "guest/prod/hello",
            "--no-follow",
            "-n",
            "1",
            "--data-dir",
            d,
        ])
        .env("SLUICE_TOKEN", GUEST_TOKEN)
        .output()
        .unwrap();
    assert!(
        tail.status.success(),
        "{}",
        String::from_utf8_lossy(&tail.stderr)
    );
    // A refused kill (another role) and an accepted one; gc as admin.
    let refused = sluice_as(GUEST_TOKEN, &dir, &["job", "kill", "demo/prod/web"]);
    assert!(!refused.status.success());
    ok(sluice_as(
        GUEST_TOKEN,
        &dir,
        &["job", "kill", "guest/prod/hello"],
    ));
    sluice_ok(&["gc", "--data-dir", d]);
    // A flood of bad tokens.
    let file = sluice_client::ClientFile::read(&dir).unwrap().unwrap();
    let admin = channel(&dir, &file.endpoint).await;
    for i in 0..200 {
        let bad = BearerInterceptor::new(&format!("bad-token-{i:08}-0123456789")).unwrap();
        let err = SchedulerClient::with_interceptor(admin.clone(), bad)
            .submit_job(SubmitJobRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    let events = until("every call on the trail", 60, || {
        let out = sluice_ok(&[
            "query",
            "--data-dir",
            d,
            "--format",
            "json",
            "SELECT actor, reason AS outcome, job, attributes FROM events WHERE kind = 'api_call' ORDER BY ts",
        ]);
        // The attributes (method, target, outcome, peer) are a JSON object.
        let events: Vec<Value> = out
            .lines()
            .map(|l| {
                let mut e: Value = serde_json::from_str(l).unwrap();
                let attributes: Value =
                    serde_json::from_str(e["attributes"].as_str().unwrap()).unwrap();
                for key in ["method", "target", "peer"] {
                    e[key] = attributes[key].clone();
                }
                e
            })
            .collect();
        let methods: Vec<&str> = events.iter().filter_map(|e| e["method"].as_str()).collect();
        let wanted = [
            "/sluice.v1.Scheduler/SubmitJob",
            "/sluice.v1.Scheduler/UpdateJob",
            "/sluice.v1.Scheduler/KillJob",
            "/sluice.v1.Node/Gc",
            "/sluice.v1.Query/Run",
            "/sluice.v1.Query/Context",
            "/sluice.v1.Tail/Follow",
        ];
        let refusals = events.iter().filter(|e| e["actor"] == "anonymous").count();
        (wanted.iter().all(|m| methods.contains(m)) && refusals > 0).then_some(events)
    });
    let find = |method: &str, outcome: &str| {
        events
            .iter()
            .find(|e| {
                e["method"] == method
                    && e["outcome"]
                        .as_str()
                        .is_some_and(|o| o.starts_with(outcome))
            })
            .unwrap_or_else(|| panic!("no {method} {outcome} in {events:#?}"))
    };
    let submit = find("/sluice.v1.Scheduler/SubmitJob", "ok");
    assert_eq!(
        (submit["actor"].as_str(), submit["job"].as_str()),
        (Some("guest"), Some("guest/prod/hello"))
    );
    assert!(
        submit["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{submit}"
    );
    let denied = find("/sluice.v1.Scheduler/KillJob", "permission_denied");
    assert_eq!(denied["target"], "demo/prod/web");
    let query = find("/sluice.v1.Query/Run", "ok");
    assert!(
        query["target"].as_str().unwrap().starts_with("sql:"),
        "{query}"
    );
    assert_eq!(
        find("/sluice.v1.Tail/Follow", "ok")["target"],
        "guest/prod/hello"
    );
    assert_eq!(find("/sluice.v1.Node/Gc", "ok")["actor"], "admin");
    // 200 refusals, at most 10 recorded a minute.
    let refusals: Vec<&Value> = events
        .iter()
        .filter(|e| e["actor"] == "anonymous")
        .collect();
    assert!(
        (1..=sluice_schema::audit::REFUSALS_PER_WINDOW as usize).contains(&refusals.len()),
        "{refusals:#?}"
    );
    assert!(refusals.iter().all(|e| {
        e["outcome"]
            .as_str()
            .unwrap()
            .starts_with("unauthenticated")
    }));
    // `sluice events --kind api_call` shows them to people.
    let shown = sluice_ok(&[
        "events",
        "--kind",
        "api_call",
        "--since",
        "1h",
        "--data-dir",
        d,
    ]);
    assert!(
        shown.contains("/sluice.v1.Scheduler/SubmitJob guest/prod/hello: ok"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_with_resource_exhausted_naming_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    add_user(&dir, "guest", GUEST_TOKEN, &["guest"]);
    let up = Up::start(
        &dir,
        &[
            "--nodes",
            "1",
            "--max-tail-streams-per-user",
            "1",
            "--max-queries-per-user",
            "0",
        ],
    );
    let file = sluice_client::ClientFile::read(&dir).unwrap().unwrap();
    let status: Value = serde_json::from_str(&sluice_ok(&[
        "status",
        "--json",
        "--data-dir",
        up.data_dir(),
    ]))
    .unwrap();
    let tail = status["detail"]["nodes"][0]["tail"]
        .as_str()
        .unwrap()
        .to_string();
    let guest = BearerInterceptor::new(GUEST_TOKEN).unwrap();
    let follow = || FollowRequest {
        selector: Some(Selector {
            job: "guest/*".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let node = channel(&dir, &tail).await;
    let mut first = TailClient::with_interceptor(node.clone(), guest.clone());
    let _open = first.follow(follow()).await.unwrap();
    let err = TailClient::with_interceptor(node.clone(), guest.clone())
        .follow(follow())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("limit tail streams"), "{err}");
    // Another user is not held back by the guest's streams.
    let admin = BearerInterceptor::new(&file.token).unwrap();
    TailClient::with_interceptor(node, admin)
        .follow(follow())
        .await
        .unwrap();

    let out = sluice_as(GUEST_TOKEN, &dir, &["query", "SELECT 1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("limit queries"),
        "{stderr}"
    );

    // Sizes: a spec over 1 MiB, SQL over 64 KiB, a message over 16 MiB.
    let main = channel(&dir, &file.endpoint).await;
    let mut scheduler = SchedulerClient::with_interceptor(main.clone(), guest.clone())
        .max_encoding_message_size(64 << 20);
    for (size, limit) in [(2 << 20, "limit spec_yaml"), (17 << 20, "length too large")] {
        let err = scheduler
            .submit_job(SubmitJobRequest {
                spec_yaml: "x".repeat(size),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{size}: {err}");
        assert!(err.message().contains(limit), "{err}");
    }
    let big_sql = format!("SELECT 1 -- {}", "x".repeat(70 << 10));
    let out = Command::new(SLUICE)
        .args(["query", "--data-dir", up.data_dir(), &big_sql])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("limit sql"),
        "{stderr}"
    );
}

/// `sluice up --demo` run by an ordinary user: nothing needs root, and the
/// tasks, which then run as that same user, are confined by Landlock alone:
/// they cannot read the user's own `client.toml`.
#[test]
fn the_demo_runs_as_an_ordinary_user_with_tasks_confined_by_landlock_alone() {
    if unsafe { libc::geteuid() } != 0 {
        // Already an ordinary user: the other tests here cover it.
        return;
    }
    let user = "sluice-e2e-user";
    if sluice_scheduler::agent::confine::lookup_user(user)
        .unwrap()
        .is_none()
    {
        let status = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                user,
            ])
            .status()
            .unwrap();
        assert!(
            status.success()
                || sluice_scheduler::agent::confine::lookup_user(user)
                    .unwrap()
                    .is_some()
        );
    }
    let account = sluice_scheduler::agent::confine::lookup_user(user)
        .unwrap()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(tmp.path(), Some(account.uid), Some(account.gid)).unwrap();
    std::os::unix::fs::chown(&home, Some(account.uid), Some(account.gid)).unwrap();
    let dir = home.join("d");
    let log = home.join("up.log");
    let as_user = |program: &Path, args: &[&str]| {
        let mut command = Command::new("setpriv");
        command
            .args([
                &format!("--reuid={}", account.uid),
                &format!("--regid={}", account.gid),
                "--clear-groups",
                "--",
            ])
            .arg(program)
            .args(args)
            .env("HOME", &home)
            .env_remove("SLUICE_DATA_DIR")
            .current_dir(&home);
        command
    };
    let mut up = as_user(
        Path::new(SLUICE),
        &[
            "up",
            "--demo",
            "--nodes",
            "1",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    struct Stop<'a>(&'a mut std::process::Child, &'a Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-INT", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
            crate::harness::kill_tasks_under(self.1);
        }
    }
    let dir_for_drop = dir.clone();
    let _stop = Stop(&mut up, &dir_for_drop);
    until("the demo as an ordinary user", 60, || {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("Ctrl-C stops the demo")
            .then_some(())
    });
    // The demo's jobs run and their lines are queryable.
    let out = until("demo lines in the archive", 90, || {
        let out = as_user(
            Path::new(SLUICE),
            &[
                "query",
                "--data-dir",
                dir.to_str().unwrap(),
                "--format",
                "csv",
                "SELECT count(*) FROM logs WHERE job = 'demo/prod/web'",
            ],
        )
        .output()
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.lines().nth(1).and_then(|n| n.parse::<u64>().ok()) > Some(0)).then_some(text)
    });
    assert!(out.starts_with("count"), "{out}");
    // Its tasks run as the user itself, and still cannot read its secrets.
    let spec = home.join("peek.yaml");
    std::fs::write(
        &spec,
        "name: peek\nrole: demo\nenv: prod\nresources: {cpu: 0.1, ram_mb: 16, disk_mb: 16}\nprocesses:\n  - name: main\n    cmd: |\n      D=$(dirname \"$(dirname \"$(dirname \"$(dirname \"$SLUICE_SANDBOX\")\")\")\")\n      if cat \"$D/client.toml\"; then echo peek-ok; else echo peek-denied; fi\n      id -u\n      sleep 30\n",
    )
    .unwrap();
    std::os::unix::fs::chown(&spec, Some(account.uid), Some(account.gid)).unwrap();
    let submitted = as_user(
        Path::new(SLUICE),
        &[
            "job",
            "submit",
            spec.to_str().unwrap(),
            "--data-dir",
            dir.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let line = until("the peek job's answer", 60, || {
        let logs = dir.join("nodes/node-0/sandboxes");
        for entry in std::fs::read_dir(&logs).ok()? {
            let path = entry.ok()?.path();
            if path.file_name()?.to_str()?.starts_with("demo-prod-peek") {
                let text = std::fs::read_to_string(path.join("logs/run-0/main.stdout")).ok()?;
                if text.lines().count() >= 2 {
                    return Some(text);
                }
            }
        }
        None
    });
    assert!(line.starts_with("peek-denied\n"), "{line}");
    assert_eq!(
        line.lines().nth(1),
        Some(account.uid.to_string().as_str()),
        "{line}"
    );
}

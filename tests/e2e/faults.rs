//! Faults a cluster meets: a node's disk filled past its critical mark
//! while the bus is down, and callers without the right token or role.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_schema::auth::BearerInterceptor;
use sluice_schema::pb::admin_client::AdminClient;
use sluice_schema::pb::node_client::NodeClient;
use sluice_schema::pb::query_client::QueryClient;
use sluice_schema::pb::scheduler_client::SchedulerClient;
use sluice_schema::pb::tail_client::TailClient;
use sluice_schema::pb::{
    FollowRequest, GcRequest, JobKeyRequest, ListJobsRequest, QueryRequest, StatusRequest,
};
use sluice_testkit::TestKafka;

use crate::harness::{SLUICE, Up, dump, sluice_ok, write_spec};

fn job(up: &Up, key: &str) -> Value {
    serde_json::from_str(&sluice_ok(&[
        "job",
        "status",
        key,
        "--json",
        "--data-dir",
        up.data_dir(),
    ]))
    .unwrap()
}

fn until(what: &str, secs: u64, mut done: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(found) = done() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn events(up: &Up) -> Vec<Value> {
    dump(up, "sluice.events")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A job of one instance that runs `cmd` once.
fn once(role: &str, name: &str, disk_mb: u64, cmd: &str) -> String {
    format!(
        "name: {name}\nrole: {role}\nenv: prod\nresources: {{cpu: 0.1, ram_mb: 16, disk_mb: {disk_mb}}}\nrestart: never\nprocesses:\n  - name: main\n    cmd: {cmd}\n"
    )
}

/// The disk of a node (a configured capacity of 64 MiB) fills past its
/// critical mark while the bus is down. Garbage collection deletes the
/// finished sandbox that was shipped (no loss), then, still critical, the
/// one whose logs could not be shipped, with a `data_loss` event naming
/// them; the running task's sandbox stays. The events reach the bus when it
/// is back.
#[test]
fn a_full_disk_during_a_bus_outage_loses_only_what_it_must_and_says_so() {
    let Some(mut kafka) = TestKafka::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let up = Up::start(
        &dir,
        &[
            "--bus",
            &kafka.url(),
            "--disk-watch-interval",
            "1",
            "--gc-capacity-mb",
            "64",
        ],
    );
    let submit = |name: &str, yaml: &str| {
        let spec = write_spec(tmp.path(), name, yaml);
        sluice_ok(&["job", "submit", &spec, "--data-dir", up.data_dir()]);
    };
    let finished = |key: &str| {
        let status = job(&up, key);
        (status["instances"][0]["state"] == "finished").then(|| {
            status["instances"][0]["task_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
    };

    // 1. A batch job that finishes with its lines shipped.
    submit(
        "shipped",
        &once(
            "batch",
            "shipped",
            32,
            "'seq 1 2000 | sed s/^/shipped-/; head -c 14000000 /dev/urandom > blob'",
        ),
    );
    let shipped = until("the shipped job to finish", 60, || {
        finished("batch/prod/shipped")
    });
    until("its lines on the bus", 60, || {
        let out = dump(&up, "sluice.logs");
        out.contains("shipped-2000").then_some(out)
    });
    // The acknowledgement reaches ship progress right after.
    std::thread::sleep(Duration::from_secs(2));

    // 2. The bus goes down; a second job writes lines nobody can ship.
    kafka.kill();
    submit(
        "stranded",
        &once(
            "batch",
            "stranded",
            32,
            "'seq 1 3000 | sed s/^/stranded-/; head -c 14000000 /dev/urandom > blob'",
        ),
    );
    let stranded = until("the stranded job to finish", 60, || {
        finished("batch/prod/stranded")
    });

    // 3. A running task fills the disk: 14 + 14 + 48 MiB of 64.
    submit(
        "filler",
        &once(
            "batch",
            "filler",
            128,
            "'echo filling; head -c 50000000 /dev/urandom > blob; sleep 600'",
        ),
    );
    let sandbox = |task: &str| dir.join("nodes/node-0/sandboxes").join(task);
    until("both finished sandboxes to be collected", 60, || {
        (!sandbox(&shipped).exists() && !sandbox(&stranded).exists()).then(String::new)
    });
    // The scheduler hears of the filler's start with the next heartbeat,
    // possibly after its blob filled the disk.
    let task = until("the filler running", 30, || {
        let filler = job(&up, "batch/prod/filler");
        (filler["instances"][0]["state"] == "running").then(|| {
            filler["instances"][0]["task_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
    });
    assert!(sandbox(&task).exists());

    // 4. The bus is back: the collections and the loss are on it.
    kafka.restart();
    let all = until("the collection events", 90, || {
        let all = events(&up);
        let collected = all
            .iter()
            .filter(|e| e["kind"] == "sandbox_collected")
            .count();
        let lost = all.iter().any(|e| e["kind"] == "data_loss");
        (collected >= 2 && lost).then(|| serde_json::to_string(&all).unwrap())
    });
    let all: Vec<Value> = serde_json::from_str(&all).unwrap();
    let losses: Vec<&Value> = all.iter().filter(|e| e["kind"] == "data_loss").collect();
    assert_eq!(losses.len(), 1, "{losses:#?}");
    let loss = losses[0];
    assert_eq!(loss["task_id"], stranded.as_str(), "{loss}");
    assert_eq!(loss["job"], "batch/prod/stranded", "{loss}");
    let lost_bytes: u64 = loss["attributes"]["bytes"]
        .as_str()
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("the loss says how much: {loss}"));
    // seq 1 3000 with the prefix: every line of the stranded job.
    let written: u64 = (1..=3000u64)
        .map(|n| "stranded-".len() as u64 + n.to_string().len() as u64 + 1)
        .sum();
    assert_eq!(lost_bytes, written, "{loss}");
    assert!(
        loss["attributes"]["files"]
            .as_str()
            .unwrap()
            .contains("stdout"),
        "the loss names the file: {loss}"
    );
    let collections: Vec<&Value> = all
        .iter()
        .filter(|e| e["kind"] == "sandbox_collected")
        .collect();
    assert!(
        collections.iter().any(|e| e["task_id"] == shipped.as_str()),
        "{collections:#?}"
    );

    // Status and metrics agree: freed, below the critical mark, the loss
    // counted once.
    let status: Value = serde_json::from_str(&sluice_ok(&[
        "status",
        "--json",
        "--data-dir",
        up.data_dir(),
    ]))
    .unwrap();
    let agent = &status["detail"]["nodes"][0]["agent"];
    assert_eq!(agent["gc_data_loss_bytes"], lost_bytes, "{agent}");
    assert!(agent["gc_sandboxes_deleted"].as_u64() >= Some(2), "{agent}");
    let used = agent["disk_used_bytes"].as_u64().unwrap();
    assert!(used < (64u64 << 20) * 95 / 100, "still critical: {agent}");
    drop(up);
    crate::harness::kill_tasks_under(&dir);
}

fn tailll(data_dir: &str, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(Path::new(SLUICE).with_file_name("tailll"))
        .args(args)
        .args(["--data-dir", data_dir])
        .env("SLUICE_TOKEN", token)
        .env_remove("SLUICE_ADDR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn sluice_as(token: &str, args: &[&str]) -> std::process::Output {
    Command::new(SLUICE)
        .args(args)
        .env("SLUICE_TOKEN", token)
        .env_remove("SLUICE_ADDR")
        .env_remove("SLUICE_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Every service of `sluice up` (admin, scheduler, query, and each node's
/// Tail and Node services) refuses a call without a token and with a wrong
/// one; a user of role `www` cannot tail, query or kill a job of role
/// `batch`, and sees their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_refuses_bad_tokens_and_roles_are_kept_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let alice = "alice-token-0123456789abcdef";
    std::fs::write(
        dir.join("tokens.toml"),
        format!("[[tokens]]\nuser = \"alice\"\ntoken = \"{alice}\"\nroles = [\"www\"]\n"),
    )
    .unwrap();
    let up = Up::start(&dir, &["--nodes", "1"]);
    for (role, name) in [("www", "site"), ("batch", "secret")] {
        let spec = write_spec(
            tmp.path(),
            name,
            &format!(
                "name: {name}\nrole: {role}\nenv: prod\nresources: {{cpu: 0.1, ram_mb: 16, disk_mb: 16}}\nprocesses:\n  - name: main\n    cmd: while :; do echo {name}-line; sleep 0.2; done\n"
            ),
        );
        sluice_ok(&["job", "submit", &spec, "--data-dir", up.data_dir()]);
    }
    let client: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.join("client.toml")).unwrap()).unwrap();
    let endpoint = client["endpoint"].as_str().unwrap().to_string();
    let status = job(&up, "www/prod/site");
    let node = until("the node's endpoint", 30, || {
        status["instances"][0]["tail_endpoint"]
            .as_str()
            .filter(|e| !e.is_empty())
            .map(str::to_string)
    });

    let unauthenticated = |what: &str, result: Result<(), tonic::Status>| {
        let err = result.expect_err(what);
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{what}: {err}");
    };
    let main = crate::harness::channel(&dir, &endpoint).await;
    let node = crate::harness::channel(&dir, &node).await;
    for token in [None, Some("wrong-token-0123456789abcdef")] {
        let auth = BearerInterceptor::new(token.unwrap_or("x-placeholder-token-0123")).unwrap();
        let with = |t: Option<&str>| t.is_some();
        macro_rules! call {
            ($client:ident, $channel:expr, $call:ident, $req:expr) => {{
                let result = if with(token) {
                    $client::with_interceptor($channel.clone(), auth.clone())
                        .$call($req)
                        .await
                        .map(|_| ())
                } else {
                    $client::new($channel.clone()).$call($req).await.map(|_| ())
                };
                unauthenticated(concat!(stringify!($client), ".", stringify!($call)), result);
            }};
        }
        call!(AdminClient, main, status, StatusRequest {});
        call!(SchedulerClient, main, list_jobs, ListJobsRequest::default());
        call!(
            SchedulerClient,
            main,
            kill_job,
            JobKeyRequest {
                job: "batch/prod/secret".into()
            }
        );
        call!(
            QueryClient,
            main,
            run,
            QueryRequest {
                sql: "SELECT 1".into(),
                ..Default::default()
            }
        );
        call!(TailClient, node, follow, FollowRequest::default());
        call!(NodeClient, node, gc, GcRequest { dry_run: true });
    }

    // alice (role www): her job's lines, not batch's.
    let out = tailll(
        up.data_dir(),
        alice,
        &["www/prod/site", "-n", "3", "--no-follow"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = tailll(
        up.data_dir(),
        alice,
        &["batch/prod/secret", "-n", "3", "--no-follow"],
    );
    let shown = String::from_utf8_lossy(&refused.stdout);
    assert!(!shown.contains("secret-line"), "{shown}");
    assert!(
        !refused.status.success(),
        "tailll of another role's job must fail"
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("may not read role batch"), "{err}");
    let kill = sluice_as(
        alice,
        &[
            "job",
            "kill",
            "batch/prod/secret",
            "--data-dir",
            up.data_dir(),
        ],
    );
    assert!(!kill.status.success());
    assert_eq!(job(&up, "batch/prod/secret")["state"], "running");

    let until_rows = |token: &str| {
        until("archived lines of both jobs", 60, || {
            let out = sluice_as(
                token,
                &[
                    "query",
                    "--format",
                    "json",
                    "--data-dir",
                    up.data_dir(),
                    "SELECT job, count(*) AS n FROM logs GROUP BY job ORDER BY job",
                ],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            (text.contains("www/prod/site")).then_some(text)
        })
    };
    let admin_sees = until_rows(client["token"].as_str().unwrap());
    assert!(admin_sees.contains("batch/prod/secret"), "{admin_sees}");
    let alice_sees = until_rows(alice);
    assert!(!alice_sees.contains("batch/prod/secret"), "{alice_sees}");
    let out = sluice_as(
        alice,
        &[
            "query",
            "--data-dir",
            up.data_dir(),
            "SELECT line FROM logs WHERE search(line, 'secret')",
        ],
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("secret-line"));
    drop(up);
    crate::harness::kill_tasks_under(&dir);
}

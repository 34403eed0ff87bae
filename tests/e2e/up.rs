//! `sluice up`: client.toml, status while running, authentication, restart.

use serde_json::Value;
use sluice_schema::auth::BearerInterceptor;
use sluice_schema::pb::StatusRequest;
use sluice_schema::pb::admin_client::AdminClient;

use crate::harness::{Up, sluice, sluice_ok};

fn client_toml(dir: &std::path::Path) -> toml::Table {
    toml::from_str(&std::fs::read_to_string(dir.join("client.toml")).unwrap()).unwrap()
}

#[test]
fn up_writes_client_toml_and_bus_status_answers_while_it_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let up = Up::start(&dir, &[]);
    let client = client_toml(&dir);
    assert!(
        client["endpoint"]
            .as_str()
            .unwrap()
            .starts_with("https://127.0.0.1:")
    );
    assert_eq!(
        client["bus"].as_str().unwrap(),
        format!("embedded://{}/bus", dir.display())
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("client.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "client.toml holds a token: owner only");

    let status: Value = serde_json::from_str(&sluice_ok(&[
        "bus",
        "status",
        "--data-dir",
        up.data_dir(),
        "--json",
    ]))
    .unwrap();
    let topics: Vec<&str> = status["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["sluice.events", "sluice.logs"]);
    assert_eq!(
        status["topics"][0]["partitions"].as_array().unwrap().len(),
        4
    );

    let text = sluice_ok(&["bus", "status", "--data-dir", up.data_dir()]);
    assert!(
        text.contains("sluice.logs") && text.contains("PARTITION"),
        "{text}"
    );

    let admin: Value = serde_json::from_str(&sluice_ok(&[
        "status",
        "--data-dir",
        up.data_dir(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(admin["user"], "admin");
    assert_eq!(
        admin["detail"]["bus"]["topics"].as_array().unwrap().len(),
        2
    );

    let status = up.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
}

#[test]
fn a_restart_keeps_the_admin_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let token = {
        let up = Up::start(&dir, &[]);
        let token = client_toml(&dir)["token"].as_str().unwrap().to_string();
        assert!(up.stop().success());
        token
    };
    let tokens = std::fs::read_to_string(dir.join("tokens.toml")).unwrap();
    assert!(
        !tokens.contains(&token),
        "tokens.toml stores digests, not tokens"
    );
    let up = Up::start(&dir, &[]);
    assert_eq!(client_toml(&dir)["token"].as_str().unwrap(), token);
    sluice_ok(&["status", "--data-dir", up.data_dir()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_service_refuses_calls_without_a_valid_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let up = Up::start(&dir, &[]);
    let client = client_toml(&dir);
    let endpoint = client["endpoint"].as_str().unwrap().to_string();
    let channel = crate::harness::channel(&dir, &endpoint).await;

    let err = AdminClient::new(channel.clone())
        .status(StatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert_eq!(err.message(), "missing bearer token");

    let wrong = BearerInterceptor::new("0123456789abcdef-not-the-token").unwrap();
    let err = AdminClient::with_interceptor(channel.clone(), wrong)
        .status(StatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let right = BearerInterceptor::new(client["token"].as_str().unwrap()).unwrap();
    let reply = AdminClient::with_interceptor(channel, right)
        .status(StatusRequest {})
        .await
        .unwrap();
    assert_eq!(reply.into_inner().user, "admin");
    drop(up);
}

#[test]
fn client_commands_without_a_cluster_say_how_to_start_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = sluice(&["status", "--data-dir", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no cluster found") && err.contains("sluice up --data-dir"),
        "{err}"
    );
}

#[test]
fn bad_flags_name_what_is_wrong() {
    let cases: [(&[&str], &str); 9] = [
        (
            &["up", "--bus", "redis://x:1"],
            "expected `embedded:///PATH` or `kafka://HOST:PORT`",
        ),
        (
            &["up", "--bus", "embedded://relative"],
            "needs an absolute path",
        ),
        (
            &["up", "--store", "ftp://x"],
            "expected `file:///PATH` or `s3://BUCKET/PREFIX`",
        ),
        (&["up", "--nodes", "0"], "--nodes"),
        (
            &[
                "shipper",
                "--layout",
                "native",
                "--root",
                "/nonexistent-sandboxes",
                "--listen",
                "127.0.0.1:0",
            ],
            "the Tail service needs a token file",
        ),
        (&["up", "--no-scheduler", "--demo"], "--no-scheduler"),
        (
            &[
                "shipper",
                "--layout",
                "docker",
                "--root",
                "/nonexistent-sandboxes",
                "--kubernetes-api",
                "https://127.0.0.1:6443",
            ],
            "kubernetes_api: only the kubernetes layout asks the API server",
        ),
        (
            &[
                "shipper",
                "--layout",
                "kubernetes",
                "--root",
                "/nonexistent-pods",
                "--bus",
                "kafka://127.0.0.1:1",
                "--kubernetes-api",
                "https://127.0.0.1:6443",
            ],
            "kubernetes_api.ca_file /var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        ),
        (
            &[
                "shipper",
                "--layout",
                "kubernetes",
                "--root",
                "/nonexistent-pods",
                "--advertise",
                "https://10.0.0.1:7000",
            ],
            "--advertise is what the node directory is told: it needs --register",
        ),
    ];
    for (args, expected) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let mut args = args.to_vec();
        args.extend(["--data-dir", tmp.path().to_str().unwrap()]);
        let out = sluice(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn ctrl_c_stops_cleanly_and_kill_9_leaves_a_bus_that_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let up = Up::start(&dir, &[]);
    assert!(up.signal("INT").success(), "Ctrl-C (SIGINT) exits 0");

    let up = Up::start(&dir, &[]);
    assert!(!up.signal("KILL").success());
    let up = Up::start(&dir, &[]);
    let status: Value = serde_json::from_str(&sluice_ok(&[
        "bus",
        "status",
        "--data-dir",
        up.data_dir(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(status["topics"].as_array().unwrap().len(), 2);
    assert!(up.stop().success());
}

#[test]
fn a_second_up_on_the_same_data_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let _up = Up::start(&dir, &[]);
    let out = sluice(&["up", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is in use by another process (pid "), "{err}");
}

/// `sluice up --nodes 2`: each node ships its own sandbox root to the bus and
/// serves its lines live over its Tail service, to callers with a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_a_shipper_per_node_with_its_tail_service() {
    use sluice_schema::pb::tail_client::TailClient;
    use sluice_schema::pb::tail_message::Kind as Msg;
    use sluice_schema::pb::{FollowRequest, Selector};
    use sluice_schema::sandbox;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let up = Up::start(&dir, &["--nodes", "2"]);
    let status: Value = serde_json::from_str(&sluice_ok(&[
        "status",
        "--data-dir",
        up.data_dir(),
        "--json",
    ]))
    .unwrap();
    let nodes = status["detail"]["nodes"].as_array().unwrap().clone();
    assert_eq!(nodes.len(), 2);
    let node1 = &nodes[1];
    assert_eq!(node1["name"], "node-1");
    let root = std::path::PathBuf::from(node1["root"].as_str().unwrap());
    assert_eq!(root, dir.join("nodes/node-1/sandboxes"));

    // A task's sandbox on node-1, as the agent lays it out.
    let logs = sluice_testkit::native_sandbox(&root, "t-1", "www/prod/web", 4, &["main"]);
    let log = logs.join(sandbox::log_file("main", false));
    std::fs::write(&log, "first\nsecond\n").unwrap();

    let token = client_toml(&dir)["token"].as_str().unwrap().to_string();
    let channel = crate::harness::channel(&dir, node1["tail"].as_str().unwrap()).await;
    let refused = TailClient::new(channel.clone())
        .follow(FollowRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut tail = TailClient::with_interceptor(channel, BearerInterceptor::new(&token).unwrap());
    let mut stream = tail
        .follow(FollowRequest {
            selector: Some(Selector {
                job: "www/*".into(),
                ..Default::default()
            }),
            backfill_lines: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut texts = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while texts.len() < 3 {
        assert!(std::time::Instant::now() < deadline, "saw only {texts:?}");
        let message = tokio::time::timeout(std::time::Duration::from_secs(30), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match message.kind.unwrap() {
            Msg::Lines(chunk) => {
                assert_eq!(chunk.source.as_ref().unwrap().host, "node-1");
                for line in chunk.lines {
                    texts.push(String::from_utf8(line.text.to_vec()).unwrap());
                }
            }
            Msg::CaughtUp(_) => {
                // Written after the stream caught up: arrives live.
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
                writeln!(f, "third").unwrap();
            }
            _ => {}
        }
    }
    assert_eq!(texts, ["first", "second", "third"]);

    // The bus holds them too (once acknowledged: poll a little).
    let dump = loop {
        let dump = sluice_ok(&[
            "bus",
            "dump",
            "--data-dir",
            up.data_dir(),
            "--topic",
            "sluice.logs",
            "--from-beginning",
            "--json",
        ]);
        if dump.contains("third") || std::time::Instant::now() > deadline {
            break dump;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        dump.contains("\"www/prod/web\"") && dump.contains("third"),
        "{dump}"
    );
    assert!(up.stop().success());
}

//! A cluster Sluice does not schedule: `sluice up --no-scheduler` on Kafka,
//! standalone shippers over Kubernetes, Docker and Nomad fixture trees that
//! register in its node directory, and `tailll` following a pod as it
//! restarts and moves between nodes, found through the directory alone.
//! Every line exactly once, in order per file; `sluice status` lists the
//! shippers; a shipper whose token may not write a role it holds is not
//! registered.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Proc, Up, sluice_ok};
use crate::tailll::Tailll;

/// Now, as the container runtimes write it (RFC 3339, nanoseconds, UTC).
fn now_rfc3339() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    sluice_schema::time::rfc3339_nanos(nanos)
}

/// `path` opened for appending, its directory made.
fn append(path: &Path) -> std::fs::File {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// Appends `lines` to `path` as Kubernetes' CRI log lines.
fn cri(path: &Path, lines: &[String]) {
    let mut f = append(path);
    for line in lines {
        writeln!(f, "{} stdout F {line}", now_rfc3339()).unwrap();
    }
}

/// Appends `lines` to `path` as Docker's json-file driver writes them.
fn docker(path: &Path, lines: &[String]) {
    let mut f = append(path);
    for line in lines {
        let record = serde_json::json!({"log": format!("{line}\n"), "stream": "stdout", "time": now_rfc3339()});
        writeln!(f, "{record}").unwrap();
    }
}

/// Appends plain `lines` to `path` (Nomad's logmon files).
fn plain(path: &Path, lines: &[String]) {
    let mut f = append(path);
    for line in lines {
        writeln!(f, "{line}").unwrap();
    }
}

fn numbered(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix} {i}")).collect()
}

struct Shipper {
    _proc: Proc,
    log: PathBuf,
}

/// `sluice up --no-scheduler` on a Kafka of its own: where shippers ship
/// and register. Dropped in order: `up`, then its directory, then Kafka.
struct Cluster {
    up: Up,
    tmp: tempfile::TempDir,
    dir: PathBuf,
    data: String,
    bus: String,
    endpoint: String,
    /// What `up` wrote in client.toml: the admin token.
    admin_token: String,
    _kafka: sluice_testkit::TestKafka,
}

impl Cluster {
    /// `None` (the test skipped) without a Kafka-protocol broker.
    fn start(extra: &[&str]) -> Option<Cluster> {
        let kafka = sluice_testkit::TestKafka::start()?;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let bus = kafka.url();
        let mut args = vec!["--no-scheduler", "--bus", &bus];
        args.extend(extra);
        let up = Up::start(&dir, &args);
        let client: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.join("client.toml")).unwrap()).unwrap();
        Some(Cluster {
            up,
            data: dir.to_str().unwrap().to_string(),
            endpoint: client["endpoint"].as_str().unwrap().to_string(),
            admin_token: client["token"].as_str().unwrap().to_string(),
            dir,
            tmp,
            bus,
            _kafka: kafka,
        })
    }

    /// A standalone shipper of `layout` over `root` as node `host`,
    /// registering with the token in `token_file`.
    fn shipper(&self, token_file: &Path, host: &str, layout: &str, root: &Path) -> Shipper {
        let config = self.tmp.path().join(format!("{host}.toml"));
        std::fs::write(
            &config,
            "[shipper]\nquiet_ms = 200\npoll_ms = 50\nrescan_ms = 300\ncheckpoint_ms = 200\n",
        )
        .unwrap();
        let log = self.tmp.path().join(format!("{host}.log"));
        let proc = Proc::start(
            log.clone(),
            &[
                "shipper",
                "--layout",
                layout,
                "--root",
                root.to_str().unwrap(),
                "--host",
                host,
                "--bus",
                &self.bus,
                "--data-dir",
                &self.data,
                "--config",
                config.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--register",
                &self.endpoint,
                "--register-token-file",
                token_file.to_str().unwrap(),
            ],
        );
        Shipper { _proc: proc, log }
    }
}

fn status(data: &str) -> Value {
    let out = sluice_ok(&["status", "--data-dir", data, "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The shippers `sluice status` lists, host → (layout, stale, jobs).
fn shippers(data: &str) -> BTreeMap<String, (String, bool, Vec<String>)> {
    status(data)["detail"]["shippers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let jobs = s["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["job"].as_str().unwrap().to_string())
                .collect();
            (
                s["host"].as_str().unwrap().to_string(),
                (
                    s["layout"].as_str().unwrap().to_string(),
                    s["stale"] == true,
                    jobs,
                ),
            )
        })
        .collect()
}

fn until(secs: u64, what: &str, mut done: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: timed out\n{}", why());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn tailll_follows_pods_across_nodes_through_the_node_directory() {
    let Some(c) = Cluster::start(&[
        "--shipper-stale-secs",
        "3",
        "--metrics-listen",
        "127.0.0.1:0",
    ]) else {
        return;
    };
    let (tmp, dir, data, up) = (c.tmp.path(), c.dir.as_path(), c.data.as_str(), &c.up);
    // Shippers of the web namespace's nodes hold a token of role web only;
    // the Docker and Nomad nodes' shippers, one of roles docker and nomad.
    crate::trust::add_user(dir, "web-nodes", "web-node-token", &["web"]);
    crate::trust::add_user(dir, "other-nodes", "other-node-token", &["docker", "nomad"]);
    let web_token = tmp.join("web.token");
    std::fs::write(&web_token, "web-node-token\n").unwrap();
    let other_token = tmp.join("other.token");
    std::fs::write(&other_token, "other-node-token\n").unwrap();

    let roots: BTreeMap<&str, PathBuf> = ["node-a", "node-b", "node-c", "node-d", "node-x"]
        .iter()
        .map(|n| (*n, tmp.join("roots").join(n)))
        .collect();
    for root in roots.values() {
        std::fs::create_dir_all(root).unwrap();
    }
    // Pod api-0 of namespace web starts on node-a.
    let pod_a = roots["node-a"].join("web_api-0_0f1e2d3c-0000-4000-8000-00000000000a/app");
    cri(&pod_a.join("0.log"), &numbered("api-0 run0", 0..200));
    let container = format!("{:064x}", 0xd0c0u64);
    let docker_log = roots["node-c"]
        .join(&container)
        .join(format!("{container}-json.log"));
    docker(&docker_log, &numbered("docker", 0..100));
    let nomad_log =
        roots["node-d"].join("5a1b2c3d-aaaa-bbbb-cccc-000000000001/alloc/logs/cache.stdout.0");
    plain(&nomad_log, &numbered("nomad", 0..100));
    // The attacker: a node whose shipper holds a Nomad job but only the web
    // token; it must not get into the directory.
    let x_log =
        roots["node-x"].join("5a1b2c3d-aaaa-bbbb-cccc-00000000000f/alloc/logs/cache.stdout.0");
    plain(&x_log, &numbered("forged", 0..10));

    let _a = c.shipper(&web_token, "node-a", "kubernetes", &roots["node-a"]);
    let _b = c.shipper(&web_token, "node-b", "kubernetes", &roots["node-b"]);
    let _c = c.shipper(&other_token, "node-c", "docker", &roots["node-c"]);
    let _d = c.shipper(&other_token, "node-d", "nomad", &roots["node-d"]);
    let x = c.shipper(&web_token, "node-x", "nomad", &roots["node-x"]);

    until(
        60,
        "four shippers registered with their jobs",
        || {
            let s = shippers(data);
            s.len() == 4
                && s["node-a"].2 == ["web/k8s/api"]
                && s["node-c"].2.len() == 1
                && s["node-d"].2 == ["nomad/default/cache"]
        },
        || format!("{:#?}\n{}", shippers(data), up.log()),
    );
    let s = shippers(data);
    assert_eq!(s["node-a"].0, "kubernetes");
    assert_eq!(s["node-c"].0, "docker");
    assert_eq!(s["node-d"].0, "nomad");
    assert!(s["node-b"].2.is_empty(), "node-b holds nothing yet");
    assert!(!s.contains_key("node-x"), "{s:#?}");
    let x_log_text = std::fs::read_to_string(&x.log).unwrap();
    assert!(
        x_log_text.contains("could not register") && x_log_text.contains("nomad"),
        "{x_log_text}"
    );
    let text = sluice_ok(&["status", "--data-dir", data]);
    assert!(text.contains("shippers: 4 (0 stale)"), "{text}");
    assert!(text.contains("no scheduler"), "{text}");

    // tailll finds every job through the directory.
    let mut tailll = Tailll::start(data, &["*", "--output", "json", "-n", "100000"]);
    let count = |t: &Tailll, prefix: &str| {
        t.json_lines()
            .iter()
            .filter(|v| v["line"].as_str().unwrap_or("").starts_with(prefix))
            .count()
    };
    tailll.until(60, "the first lines of every job", |_| {
        count(&tailll, "api-0 run0") == 200
            && count(&tailll, "docker") == 100
            && count(&tailll, "nomad") == 100
    });

    // The container restarts on node-a (a new file, 1.log) while its old
    // file gets its last lines.
    cri(&pod_a.join("0.log"), &numbered("api-0 run0", 200..250));
    cri(&pod_a.join("1.log"), &numbered("api-0 run1", 0..150));
    docker(&docker_log, &numbered("docker", 100..150));
    tailll.until(60, "the restarted container's lines", |_| {
        count(&tailll, "api-0 run1") == 150
            && count(&tailll, "api-0 run0") == 250
            && count(&tailll, "docker") == 150
    });

    // The pod moves: deleted from node-a, created on node-b.
    std::fs::remove_dir_all(pod_a.parent().unwrap()).unwrap();
    let pod_b = roots["node-b"].join("web_api-0_0f1e2d3c-0000-4000-8000-00000000000b/app");
    cri(&pod_b.join("0.log"), &numbered("api-0 moved", 0..300));
    plain(&nomad_log, &numbered("nomad", 100..180));
    tailll.until(90, "the moved pod's lines", |_| {
        count(&tailll, "api-0 moved") == 300 && count(&tailll, "nomad") == 180
    });
    until(
        30,
        "the directory says the pod left node-a",
        || {
            let s = shippers(data);
            s["node-a"].2.is_empty() && s["node-b"].2 == ["web/k8s/api"]
        },
        || format!("{:#?}", shippers(data)),
    );
    tailll.until(30, "the notices of the move", |lines| {
        let all = lines.join("\n");
        all.contains("found on node-b") && all.contains("no longer on node-a")
    });

    // Exactly once, in order per file.
    let mut by_source: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for v in tailll.json_lines() {
        let key = (
            v["host"].as_str().unwrap().to_string(),
            v["source_id"].to_string(),
        );
        by_source
            .entry(key)
            .or_default()
            .push(v["line"].as_str().unwrap().to_string());
    }
    let want: BTreeMap<&str, Vec<String>> = [
        ("api-0 run0", numbered("api-0 run0", 0..250)),
        ("api-0 run1", numbered("api-0 run1", 0..150)),
        ("api-0 moved", numbered("api-0 moved", 0..300)),
        ("docker", numbered("docker", 0..150)),
        ("nomad", numbered("nomad", 0..180)),
    ]
    .into_iter()
    .collect();
    let mut got: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for lines in by_source.values() {
        let prefix = want
            .keys()
            .find(|p| lines[0].starts_with(&format!("{p} ")))
            .unwrap_or_else(|| panic!("unexpected line {:?}", lines[0]));
        assert!(
            got.insert(prefix, lines.clone()).is_none(),
            "{prefix}: two sources"
        );
    }
    assert_eq!(got, want, "every line once, in order per file");
    assert!(
        !tailll.lines().join("\n").contains("forged"),
        "the unregistered node's lines are not followed"
    );
    assert!(tailll.interrupt().success(), "{}", tailll.stderr());

    // A shipper that stops heartbeating is shown stale.
    drop(_d);
    until(
        30,
        "node-d stale",
        || shippers(data)["node-d"].1,
        || format!("{:#?}", shippers(data)),
    );
    let text = sluice_ok(&["status", "--data-dir", data]);
    assert!(text.contains("shippers: 4 (1 stale)"), "{text}");
    let metrics = crate::harness::scrape(&crate::harness::metrics_addr(&up.log()));
    assert!(
        metrics.contains("sluice_directory_shippers{state=\"live\"} 3")
            && metrics.contains("sluice_directory_shippers{state=\"stale\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "sluice_directory_shipper_heartbeat_age_seconds{host=\"node-d\",layout=\"nomad\"}"
        ),
        "{metrics}"
    );
}

/// `tailll` as a user of one role sees only that role's shippers, and the
/// directory refuses another role's exact job.
#[test]
fn the_directory_is_scoped_to_the_callers_roles() {
    let Some(c) = Cluster::start(&[]) else {
        return;
    };
    let (tmp, dir, data, up) = (c.tmp.path(), c.dir.as_path(), c.data.as_str(), &c.up);
    let admin_token = tmp.join("admin.token");
    std::fs::write(&admin_token, &c.admin_token).unwrap();
    crate::trust::add_user(dir, "dev", "dev-token", &["dev"]);
    let root = tmp.join("root");
    cri(
        &root.join("dev_app-0_0f1e2d3c-0000-4000-8000-000000000001/app/0.log"),
        &numbered("dev", 0..5),
    );
    cri(
        &root.join("ops_db-0_0f1e2d3c-0000-4000-8000-000000000002/app/0.log"),
        &numbered("ops", 0..5),
    );
    let _s = c.shipper(&admin_token, "node-a", "kubernetes", &root);
    // A stolen and revoked token (or a made-up one): nothing registers.
    let revoked = tmp.join("revoked.token");
    std::fs::write(&revoked, "revoked-token-0123456789").unwrap();
    let root_z = tmp.join("root-z");
    std::fs::create_dir_all(&root_z).unwrap();
    let stranger = c.shipper(&revoked, "node-z", "kubernetes", &root_z);
    until(
        60,
        "registered",
        || shippers(data).get("node-a").is_some_and(|s| s.2.len() == 2),
        || format!("{:#?}\n{}", shippers(data), up.log()),
    );
    until(
        60,
        "the revoked token's shipper told it was refused",
        || std::fs::read_to_string(&stranger.log).is_ok_and(|l| l.contains("Unauthenticated")),
        || std::fs::read_to_string(&stranger.log).unwrap_or_default(),
    );
    assert!(!shippers(data).contains_key("node-z"));
    let as_dev = crate::trust::sluice_as("dev-token", dir, &["status", "--json"]);
    let as_dev = String::from_utf8_lossy(&as_dev.stdout).into_owned();
    let detail: Value = serde_json::from_str(&as_dev).unwrap_or_else(|e| panic!("{e}: {as_dev}"));
    let jobs: Vec<&str> = detail["detail"]["shippers"][0]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["dev/k8s/app"], "{as_dev}");
    // tailll of another role's job, as dev: refused, not shown nothing.
    let out = crate::tailll::tailll_as(data, "dev-token", &["ops/k8s/db", "--no-follow"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("permission denied"), "{stderr}");
    let out = crate::tailll::tailll_as(
        data,
        "dev-token",
        &["dev/k8s/app", "--no-follow", "--output", "json"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("\"dev ").count(), 5, "{stdout}");
    assert!(!stdout.contains("ops"), "{stdout}");
}

//! OpenTelemetry logs in, sent by the real OpenTelemetry Python SDK (its
//! OTLP/gRPC and OTLP/HTTP exporters) and by hand in OTLP/JSON, to
//! `sluice up --otlp-grpc-listen --otlp-http-listen`: records land in the
//! archive under the job their resource names, with level, message, trace
//! and span ids and attributes in the columns shipped lines use; a retried
//! export is stored once; a token of another role, no token, a wrong token
//! and plain-text clients are refused and store nothing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Up, sluice_ok};

/// A Python with the OpenTelemetry SDK and exporters:
/// `SLUICE_OTEL_PYTHON` (set by scripts/test.sh). `None` (with a message)
/// when there is none, unless `SLUICE_REQUIRE_OTEL=1`.
fn otel_python() -> Option<String> {
    crate::harness::python_with(
        "OTEL",
        "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, \
         opentelemetry.exporter.otlp.proto.http",
        "the OpenTelemetry SDK and exporters",
    )
}

struct Sender<'a> {
    python: &'a str,
    ca: &'a Path,
}

impl Sender<'_> {
    /// Runs otel_send.py; its JSON.
    fn send(
        &self,
        protocol: &str,
        endpoint: &str,
        token: Option<&str>,
        namespace: &str,
        tag: &str,
    ) -> Value {
        let mut command = Command::new(self.python);
        command
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/e2e/otel_send.py"
            ))
            .args(["--protocol", protocol, "--endpoint", endpoint])
            .args(["--namespace", namespace, "--service", "checkout"])
            .args(["--count", "3", "--tag", tag])
            .arg("--ca")
            .arg(self.ca);
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "otel_send.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn all(results: &Value, want: &str) -> bool {
    let results = results["results"].as_array().unwrap();
    !results.is_empty()
        && results
            .iter()
            .all(|r| r.as_str().unwrap().starts_with(want))
}

/// Rows of `sql`, whose columns must be named `c0`, `c1`, … (JSON rows
/// come with their keys sorted).
fn query(up: &Up, sql: &str) -> Vec<Vec<String>> {
    let out = sluice_ok(&[
        "query",
        "--data-dir",
        up.data_dir(),
        "--format",
        "json",
        sql,
    ]);
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let row: serde_json::Map<String, Value> = serde_json::from_str(l).unwrap();
            // Null columns are left out of a row.
            let columns = sql.matches(" AS c").count();
            (0..columns)
                .map(|i| match row.get(&format!("c{i}")) {
                    Some(Value::String(s)) => s.clone(),
                    None | Some(Value::Null) => "∅".into(),
                    Some(other) => other.to_string(),
                })
                .collect()
        })
        .collect()
}

fn count(up: &Up, filter: &str) -> u64 {
    query(
        up,
        &format!("SELECT count(*) AS c0 FROM logs WHERE {filter}"),
    )[0][0]
        .parse()
        .unwrap()
}

fn wait_for(up: &Up, filter: &str, rows: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = count(up, filter);
        if n == rows {
            return;
        }
        assert!(n < rows, "{n} rows where {filter}, want {rows}");
        assert!(
            Instant::now() < deadline,
            "{n} rows where {filter}, want {rows}: {}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_opentelemetry_sdk_s_logs_arrive_over_grpc_and_http_with_their_fields() {
    let Some(python) = otel_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let up = Up::start(
        &dir,
        &[
            "--otlp-grpc-listen",
            "127.0.0.1:0",
            "--otlp-http-listen",
            "127.0.0.1:0",
        ],
    );
    let printed = up.printed();
    let grpc = printed
        .lines()
        .find_map(|l| l.strip_prefix("OTLP/gRPC on "))
        .unwrap_or_else(|| panic!("{printed}"))
        .to_string();
    let http = printed
        .lines()
        .find_map(|l| l.strip_prefix("OTLP/HTTP on "))
        .unwrap_or_else(|| panic!("{printed}"))
        .to_string();
    assert!(grpc.starts_with("https://") && http.ends_with("/v1/logs"));
    let (shop, web) = ("shop-token-0123456789abcdef", "web-token-0123456789abcdef");
    crate::trust::add_user(&dir, "shop-app", shop, &["shop"]);
    crate::trust::add_user(&dir, "web-app", web, &["web"]);
    let ca = dir.join("tls").join("ca.pem");
    let sender = Sender {
        python: &python,
        ca: &ca,
    };
    // The token file is re-read within seconds of a change.
    let deadline = Instant::now() + Duration::from_secs(20);
    let by_grpc = loop {
        let sent = sender.send("grpc", &grpc, Some(shop), "shop", "g1");
        if all(&sent, "SUCCESS") {
            break sent;
        }
        assert!(
            Instant::now() < deadline,
            "never accepted: {sent}\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let by_http = sender.send("http", &http, Some(shop), "shop", "h1");
    assert!(all(&by_http, "SUCCESS"), "{by_http}");
    let job = "job = 'shop/prod/checkout'";
    wait_for(&up, job, 6);

    let rows = query(
        &up,
        "SELECT level AS c0, message AS c1, trace_id AS c2, fields['user'] AS c3, \
         fields['tag'] AS c4, fields['exception.type'] AS c5, instance AS c6 FROM logs \
         WHERE job = 'shop/prod/checkout' ORDER BY fields['tag'], ts",
    );
    let column = |i: usize| rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>();
    assert_eq!(
        column(0),
        ["error", "warn", "error", "error", "warn", "error"]
    );
    assert_eq!(
        column(1),
        [
            "batch 0 failed g1",
            "batch 1 slow g1",
            "batch 2 crashed g1",
            "batch 0 failed h1",
            "batch 1 slow h1",
            "batch 2 crashed h1"
        ]
    );
    let trace_ids: Vec<String> = [&by_grpc, &by_http]
        .iter()
        .flat_map(|s| s["trace_ids"].as_array().unwrap().iter())
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        column(2),
        trace_ids,
        "each record carries its span's trace id"
    );
    assert!(column(3).iter().all(|u| u == "bob"));
    assert_eq!(column(5)[2], "ZeroDivisionError");
    assert_eq!(
        column(6),
        vec!["1"; 6],
        "service.instance.id is the instance"
    );
    // A field search finds one record by its trace id.
    let needle = format!("search(line, 'level:error AND trace_id:{}')", trace_ids[3]);
    assert_eq!(count(&up, &needle), 1);

    // OTLP/JSON, sent twice as a client that lost the first answer does:
    // stored once.
    let json = sender.send("http-json", &http, Some(shop), "shop", "j1");
    assert!(all(&json, "SUCCESS"), "{json}");
    wait_for(&up, job, 7);
    let rows = query(
        &up,
        "SELECT level AS c0, message AS c1, trace_id AS c2, span_id AS c3 FROM logs \
         WHERE fields['tag'] = 'j1'",
    );
    assert_eq!(
        rows,
        [[
            "error",
            "json record j1",
            "5b8efff798038103d269b633813fc60c",
            "eee19b7ec3c1b174"
        ]]
    );

    // Attackers: a token of another role, no token, a wrong token, and
    // clients that do not speak TLS. None of it is stored.
    let refused = [
        sender.send("grpc", &grpc, Some(web), "shop", "evil1"),
        sender.send("http", &http, Some(web), "shop", "evil2"),
        sender.send("http-json", &http, Some(web), "shop", "evil3"),
        sender.send("grpc", &grpc, None, "shop", "evil4"),
        sender.send("http", &http, None, "shop", "evil5"),
        sender.send(
            "grpc",
            &grpc,
            Some("not-a-token-0123456789"),
            "shop",
            "evil6",
        ),
        sender.send(
            "grpc",
            &grpc.replace("https://", "http://"),
            Some(shop),
            "shop",
            "evil7",
        ),
        sender.send(
            "http",
            &http.replace("https://", "http://"),
            Some(shop),
            "shop",
            "evil8",
        ),
    ];
    for r in &refused {
        assert!(all(r, "FAILURE"), "{r}");
    }
    let forbidden = &refused[2]["results"][0];
    assert!(
        forbidden.as_str().unwrap().contains("403")
            && forbidden.as_str().unwrap().contains("web-app"),
        "{forbidden}"
    );
    // The web token may write its own role.
    let own = sender.send("grpc", &grpc, Some(web), "web", "w1");
    assert!(all(&own, "SUCCESS"), "{own}");
    wait_for(&up, "job = 'web/prod/checkout'", 3);
    assert_eq!(count(&up, "fields['tag'] LIKE 'evil%'"), 0);
    assert_eq!(count(&up, job), 7);
}

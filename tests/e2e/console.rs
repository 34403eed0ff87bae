//! The console (`sluice up` serves it), attacked the way
//! a browser session and a script can be: no token, a wrong one, a
//! plain-text client, another role's rows, a cross-site request riding the
//! session cookie, a token revoked after its login, a logged-out session.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Up, dump, sluice_ok, write_spec};

/// An HTTPS client for one console, trusting `up`'s CA.
struct Https {
    addr: String,
    tls: tokio_rustls::TlsConnector,
}

/// A reply: status, `Set-Cookie` if any, the body as JSON.
struct Reply {
    status: u16,
    cookie: Option<String>,
    body: Value,
}

impl Https {
    fn new(addr: &str, ca_pem: &str) -> Https {
        use tokio_rustls::rustls::pki_types::CertificateDer;
        use tokio_rustls::rustls::pki_types::pem::PemObject as _;
        use tokio_rustls::rustls::{ClientConfig, RootCertStore};
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Https {
            addr: addr.to_string(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        use http_body_util::BodyExt as _;
        use tokio_rustls::rustls::pki_types::ServerName;
        let tcp = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        let host = self.addr.rsplit_once(':').unwrap().0.to_string();
        let name = ServerName::try_from(host).unwrap();
        let tls = self.tls.connect(name, tcp).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.addr);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let cookie = response
            .headers()
            .get(hyper::header::SET_COOKIE)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {bytes:?}"));
        Reply {
            status,
            cookie,
            body,
        }
    }

    /// The `data:` lines of a server-sent event stream, and whether an
    /// `event: error` came, until `want` data lines (or `patience`); then
    /// the connection is dropped, as a page that is left.
    async fn events(
        &self,
        path: &str,
        auth: (&str, &str),
        want: usize,
        patience: Duration,
    ) -> (Vec<Value>, Option<String>) {
        use http_body_util::BodyExt as _;
        use tokio_rustls::rustls::pki_types::ServerName;
        let tcp = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        let host = self.addr.rsplit_once(':').unwrap().0.to_string();
        let tls = self
            .tls
            .connect(ServerName::try_from(host).unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, &self.addr)
            .header(auth.0, auth.1)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()[hyper::header::CONTENT_TYPE],
            "text/event-stream"
        );
        let mut body = response.into_body();
        let (mut text, mut data, mut failed) = (String::new(), Vec::new(), None);
        let deadline = tokio::time::Instant::now() + patience;
        while data.len() < want && failed.is_none() {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(frame)) => frame.unwrap(),
                _ => break,
            };
            let Ok(bytes) = frame.into_data() else {
                continue;
            };
            text.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(end) = text.find("\n\n") {
                let event: String = text.drain(..end + 2).collect();
                let payload = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect::<String>();
                if event.starts_with("event: error") {
                    failed = Some(payload);
                } else if !payload.is_empty() {
                    data.push(serde_json::from_str(&payload).unwrap());
                }
            }
        }
        (data, failed)
    }

    async fn query(&self, auth: (&str, &str), sql: &str) -> Reply {
        let body = json!({ "sql": sql }).to_string();
        self.call(
            "POST",
            "/api/v1/query",
            &[auth, ("content-type", "application/json")],
            &body,
        )
        .await
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The `name=value` part of a `Set-Cookie` header.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_string()
}

fn console_addr(up: &Up) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(addr) = up.printed().lines().find_map(|l| {
            l.trim()
                .strip_prefix("console on https://")
                .and_then(|l| l.split_once('/'))
                .map(|(addr, _)| addr.to_string())
        }) {
            return addr;
        }
        assert!(
            Instant::now() < deadline,
            "no console address: {}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tokens(dir: &Path, entries: &[(&str, &str, &str)]) {
    let text: String = entries
        .iter()
        .map(|(user, token, role)| {
            format!("[[tokens]]\nuser = \"{user}\"\ntoken = \"{token}\"\nroles = [\"{role}\"]\n")
        })
        .collect();
    std::fs::write(dir.join("tokens.toml"), text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_api_scopes_rows_and_refuses_strangers_forgeries_and_revoked_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let alice = "alice-token-0123456789abcdef";
    let bob = "bob-token-0123456789abcdef01";
    tokens(&dir, &[("alice", alice, "www"), ("bob", bob, "batch")]);
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
    let https = Https::new(&console_addr(&up), client["ca"].as_str().unwrap());
    let admin = client["token"].as_str().unwrap().to_string();

    // Strangers: no token, a wrong one, a malformed header; nothing else
    // than JSON saying why.
    let no_token = https.call("GET", "/api/v1/whoami", &[], "").await;
    assert_eq!(no_token.status, 401, "{}", no_token.body);
    assert!(no_token.body["error"].as_str().unwrap().contains("log in"));
    let wrong = bearer("wrong-token-0123456789abcdef");
    let wrong = https.query(("authorization", &wrong), "SELECT 1").await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let odd = https
        .call(
            "GET",
            "/api/v1/whoami",
            &[("authorization", "Basic YTpi")],
            "",
        )
        .await;
    assert_eq!(odd.status, 401, "{}", odd.body);
    let login = https
        .call(
            "POST",
            "/api/v1/login",
            &[],
            &json!({"token": "nope-0123456789abcdef"}).to_string(),
        )
        .await;
    assert_eq!(login.status, 401);
    assert!(login.cookie.is_none());
    // A plain-text client gets no HTTP answer.
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = tokio::net::TcpStream::connect(&https.addr).await.unwrap();
        tcp.write_all(b"GET /api/v1/whoami HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got)).await;
        assert!(
            !got.starts_with(b"HTTP/"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }

    // Each role reads its own rows through the query service, by bearer.
    let alice_auth = bearer(alice);
    let sql = "SELECT job, count(*) AS n FROM logs GROUP BY job ORDER BY job";
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let reply = https.query(("authorization", &alice_auth), sql).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let rows = reply.body["rows"].as_array().unwrap().clone();
        if !rows.is_empty() {
            assert_eq!(reply.body["columns"], json!(["job", "n"]));
            break rows;
        }
        assert!(Instant::now() < deadline, "nothing archived: {}", up.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(rows.iter().all(|r| r["job"] == "www/prod/site"), "{rows:?}");
    let bob_auth = bearer(bob);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = https.query(("authorization", &bob_auth), sql).await;
        let rows = reply.body["rows"].as_array().unwrap().clone();
        assert!(
            rows.iter().all(|r| r["job"] == "batch/prod/secret"),
            "{rows:?}"
        );
        if !rows.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing archived for bob: {}",
            up.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A bad query says what is wrong, with the service's words.
    let bad = https
        .query(("authorization", &alice_auth), "SELEC nonsense")
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.body["code"], "invalid_argument");

    // Status, search with its histogram, context and events, each scoped
    // by the services.
    let status = https
        .call(
            "GET",
            "/api/v1/status",
            &[("authorization", &alice_auth)],
            "",
        )
        .await;
    assert_eq!(status.status, 200, "{}", status.body);
    let text = status.body.to_string();
    assert!(
        text.contains("www/prod/site") && !text.contains("batch/prod/secret"),
        "{text}"
    );
    let post = |path: &'static str, auth: String, body: Value| {
        let https = &https;
        async move {
            https
                .call(
                    "POST",
                    path,
                    &[
                        ("authorization", &auth),
                        ("content-type", "application/json"),
                    ],
                    &body.to_string(),
                )
                .await
        }
    };
    let found = post(
        "/api/v1/search",
        alice_auth.clone(),
        json!({"query": "site-line", "bucket_seconds": 60, "limit": 5}),
    )
    .await;
    assert_eq!(found.status, 200, "{}", found.body);
    let rows = found.body["rows"].as_array().unwrap();
    assert!(!rows.is_empty() && rows.len() <= 5, "{}", found.body);
    assert!(
        rows.iter()
            .all(|r| r["job"] == "www/prod/site" && r["line"] == "site-line")
    );
    let histogram = found.body["histogram"].as_array().unwrap();
    let counted: u64 = histogram.iter().map(|b| b["n"].as_u64().unwrap()).sum();
    assert!(counted >= rows.len() as u64, "{histogram:?}");
    assert!(
        histogram
            .iter()
            .all(|b| b["job"] == "www/prod/site" && b["bucket"].is_string())
    );
    let hidden = post(
        "/api/v1/search",
        alice_auth.clone(),
        json!({"query": "secret-line"}),
    )
    .await;
    assert_eq!(hidden.body["rows"], json!([]), "{}", hidden.body);
    let hit = &rows[0];
    let around = post(
        "/api/v1/context",
        alice_auth.clone(),
        json!({"hits": [{
            "job": hit["job"], "source_id": hit["source_id"], "offset": hit["offset"],
            "ts_unix_nanos": hit["ts_nanos"],
        }], "before": 2, "after": 0}),
    )
    .await;
    assert_eq!(around.status, 200, "{}", around.body);
    let lines = around.body["groups"][0]["lines"].as_array().unwrap();
    assert!(!lines.is_empty() && lines.len() <= 3, "{}", around.body);
    assert!(
        lines
            .iter()
            .any(|l| l["hit"] == true && l["line"] == "site-line")
    );
    let bad = post("/api/v1/search", alice_auth.clone(), json!({"q": "x"})).await;
    assert_eq!(bad.status, 400, "{}", bad.body);

    // Live tail: lines arrive as they are written (the backfill is 2 a
    // source; the job writes one every 200 ms); another role's job is not
    // followed.
    let (lines, failed) = https
        .events(
            "/api/v1/tail?job=www%2Fprod%2Fsite&lines=2",
            ("authorization", &alice_auth),
            6,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(failed, None);
    let records: Vec<&Value> = lines.iter().filter(|l| l.get("line").is_some()).collect();
    assert!(records.len() >= 4, "{lines:?}");
    assert!(
        records
            .iter()
            .all(|l| l["job"] == "www/prod/site" && l["line"] == "site-line")
    );
    let newest = records
        .iter()
        .map(|l| l["ts"].as_i64().unwrap())
        .max()
        .unwrap();
    assert!(
        newest > sluice_schema::time::now_unix_nanos() - 20_000_000_000,
        "{lines:?}"
    );
    let (lines, failed) = https
        .events(
            "/api/v1/tail?job=batch%2Fprod%2Fsecret",
            ("authorization", &alice_auth),
            1,
            Duration::from_secs(20),
        )
        .await;
    assert!(lines.iter().all(|l| l.get("line").is_none()), "{lines:?}");
    assert!(
        failed
            .as_ref()
            .is_some_and(|f| f.contains("may not read role batch")),
        "{failed:?}"
    );
    let no_job = https
        .call("GET", "/api/v1/tail", &[("authorization", &alice_auth)], "")
        .await;
    assert_eq!(no_job.status, 400, "{}", no_job.body);

    // A browser: the token in the body, a session cookie back.
    let login = https
        .call(
            "POST",
            "/api/v1/login",
            &[("content-type", "application/json")],
            &json!({"token": alice}).to_string(),
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert_eq!(login.body["user"], "alice");
    assert_eq!(login.body["readable_roles"], json!(["www"]));
    let set_cookie = login.cookie.unwrap();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(flag), "{set_cookie}");
    }
    let session = cookie_pair(&set_cookie);
    let me = https
        .call("GET", "/api/v1/whoami", &[("cookie", &session)], "")
        .await;
    assert_eq!((me.status, me.body["user"].clone()), (200, json!("alice")));
    // The session reads as alice does.
    let reply = https.query(("cookie", &session), sql).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["job"] == "www/prod/site")
    );
    // Cross-site forgeries riding the cookie: a form's content type, and
    // another origin.
    let form = https
        .call(
            "POST",
            "/api/v1/query",
            &[
                ("cookie", &session),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            "sql=SELECT+1",
        )
        .await;
    assert_eq!(form.status, 415, "{}", form.body);
    let elsewhere = https
        .call(
            "POST",
            "/api/v1/query",
            &[
                ("cookie", &session),
                ("content-type", "application/json"),
                ("origin", "https://evil.example"),
            ],
            &json!({"sql": "SELECT 1"}).to_string(),
        )
        .await;
    assert_eq!(elsewhere.status, 403, "{}", elsewhere.body);

    // Bob logs out: his cookie is worth nothing after.
    let login = https
        .call(
            "POST",
            "/api/v1/login",
            &[],
            &json!({"token": bob}).to_string(),
        )
        .await;
    let bob_session = cookie_pair(&login.cookie.unwrap());
    let out = https
        .call(
            "POST",
            "/api/v1/logout",
            &[
                ("cookie", &bob_session),
                ("content-type", "application/json"),
            ],
            "{}",
        )
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out.cookie.unwrap().contains("Max-Age=0"));
    let after = https
        .call("GET", "/api/v1/whoami", &[("cookie", &bob_session)], "")
        .await;
    assert_eq!(after.status, 401, "{}", after.body);

    // Alice's token is revoked: her session ends with it.
    let file = dir.join("tokens.toml");
    let mut table: toml::Table = toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    table["tokens"]
        .as_array_mut()
        .unwrap()
        .retain(|t| t["user"].as_str() != Some("alice"));
    std::fs::write(&file, toml::to_string(&table).unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let me = https
            .call("GET", "/api/v1/whoami", &[("cookie", &session)], "")
            .await;
        if me.status == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a revoked token's session still works"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let me = https
        .call(
            "GET",
            "/api/v1/whoami",
            &[("authorization", &alice_auth)],
            "",
        )
        .await;
    assert_eq!(me.status, 401);

    // Logins and refusals are on the audit trail; the queries are too,
    // as the query service records them, with the user who asked.
    let admin_auth = bearer(&admin);
    let me = https
        .call(
            "GET",
            "/api/v1/whoami",
            &[("authorization", &admin_auth)],
            "",
        )
        .await;
    assert_eq!(me.body["admin"], true);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let trail = post(
            "/api/v1/events",
            admin_auth.clone(),
            json!({"kind": "api_call", "actor": "ali*"}),
        )
        .await;
        assert_eq!(trail.status, 200, "{}", trail.body);
        let rows = trail.body["rows"].as_array().unwrap();
        assert!(
            rows.iter()
                .all(|r| r["actor"] == "alice" && r["kind"] == "api_call"),
            "{rows:?}"
        );
        if rows.iter().any(|r| {
            r["message"]
                .as_str()
                .unwrap_or("")
                .contains("/console/api/v1/login")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice's login is not in the events table: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = dump(&up, "sluice.events");
        let logins = events
            .lines()
            .filter(|l| l.contains("/console/api/v1/login"))
            .collect::<Vec<_>>();
        let ok = logins
            .iter()
            .any(|l| l.contains(r#""actor":"alice""#) && l.contains(r#""outcome":"ok""#));
        let refused = logins.iter().any(|l| l.contains(r#""actor":"anonymous""#));
        let queried = events
            .lines()
            .any(|l| l.contains(r#""actor":"bob""#) && l.contains("/sluice.v1.Query/Run"));
        if ok && refused && queried {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not on the audit trail: {logins:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A program on the PATH (or named by `SLUICE_<VAR>`), as a full path, if
/// it runs.
fn program(var: &str, name: &str) -> Option<String> {
    let path = std::env::var(var).ok().or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
    })?;
    std::process::Command::new(&path)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        .then_some(path)
}

/// The console in a real browser (Debian's headless Chromium, driven by
/// selenium) against `sluice up --demo`, trusting the CA `up` made through
/// an NSS database of its own: log in, search with the histogram and a
/// row's context, a live tail that keeps lines while paused, the events
/// timeline, status. Screenshots are kept in target/tmp/console-screenshots.
#[test]
fn the_console_in_a_real_browser_against_the_demo() {
    let python = crate::harness::python_with("BROWSER", "import selenium", "selenium");
    let tools = (
        program("SLUICE_CHROMIUM", "chromium"),
        program("SLUICE_CHROMEDRIVER", "chromedriver"),
        std::process::Command::new("certutil")
            .arg("-H")
            .output()
            .is_ok()
            .then_some(()),
    );
    let (Some(python), (Some(chromium), Some(chromedriver), Some(()))) = (python, tools) else {
        assert!(
            std::env::var("SLUICE_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "SLUICE_REQUIRE_BROWSER=1 but chromium, chromedriver or certutil is missing"
        );
        eprintln!("skipping: no chromium, chromedriver or certutil; scripts/test.sh installs them");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    let up = Up::start(&dir, &["--demo"]);
    let addr = console_addr(&up);
    let client: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.join("client.toml")).unwrap()).unwrap();
    let token = client["token"].as_str().unwrap().to_string();
    // Something to find: a failed checkout of the demo's web service (one
    // request in twenty) in the archive.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let https = Https::new(&addr, client["ca"].as_str().unwrap());
    let auth = bearer(&token);
    let deadline = Instant::now() + Duration::from_secs(90);
    while runtime
        .block_on(https.query(
            ("authorization", &auth),
            "SELECT count(*) AS n FROM logs WHERE job = 'demo/prod/web' AND search(line, 'checkout')",
        ))
        .body["rows"][0]["n"]
        .as_u64()
        .unwrap_or(0)
        < 1
    {
        assert!(
            Instant::now() < deadline,
            "the demo's lines are not archived: {}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // HOME with an NSS database that trusts up's CA, as a user would add it.
    let home = tmp.path().join("home");
    let nss = home.join(".pki/nssdb");
    std::fs::create_dir_all(&nss).unwrap();
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, client["ca"].as_str().unwrap()).unwrap();
    let db = format!("sql:{}", nss.display());
    for args in [
        vec!["-N", "-d", &db, "--empty-password"],
        vec![
            "-A",
            "-d",
            &db,
            "-t",
            "C,,",
            "-n",
            "sluice-up",
            "-i",
            ca.to_str().unwrap(),
        ],
    ] {
        let out = std::process::Command::new("certutil")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/console_browser.py");
    let out = std::process::Command::new(&python)
        .args([
            script,
            "--url",
            &format!("https://{addr}/"),
            "--token",
            &token,
            "--shots",
            shots.to_str().unwrap(),
            "--search",
            "checkout",
            "--job",
            "demo/prod/web",
            "--chromium",
            &chromium,
            "--chromedriver",
            &chromedriver,
        ])
        .env("HOME", &home)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        up.log()
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(
        summary["who"].as_str().unwrap().starts_with("admin"),
        "{summary}"
    );
    assert_eq!(summary["cookie_visible_to_scripts"], false, "{summary}");
    // The histogram counts what the search found, by job.
    let rows: u64 = summary["result_info"]
        .as_str()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        rows > 0 && summary["histogram_total"].as_u64().unwrap() >= rows,
        "{summary}"
    );
    assert_eq!(
        summary["histogram_jobs"],
        json!(["demo/prod/web"]),
        "{summary}"
    );
    assert!(
        summary["first_row"].as_str().unwrap().contains("checkout"),
        "{summary}"
    );
    assert!(
        summary["context_hit"]
            .as_str()
            .unwrap()
            .contains("checkout"),
        "{summary}"
    );
    assert!(summary["context_lines"].as_u64().unwrap() > 1, "{summary}");
    // Live tail: every instance of the job, paused without losing a line.
    assert_eq!(
        summary["tail_instances"],
        json!(["0", "1", "2"]),
        "{summary}"
    );
    assert_eq!(summary["grew_while_paused"], 0, "{summary}");
    let held = summary["held_while_paused"].as_u64().unwrap();
    assert!(held > 0, "{summary}");
    assert!(
        summary["shown_after_resume"].as_u64().unwrap() >= held,
        "{summary}"
    );
    let kinds = summary["event_kinds"].as_array().unwrap();
    assert!(kinds.contains(&json!("task_state")), "{summary}");
    assert_eq!(summary["status_has_jobs"], true, "{summary}");
    for shot in [
        "1-login",
        "2-explore",
        "3-live-tail",
        "4-events",
        "5-status",
    ] {
        let png = std::fs::read(shots.join(format!("{shot}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 2_000, "{shot}");
    }
}

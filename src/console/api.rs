//! The `/api/v1/…` handlers (documented in `docs/API.md`).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use std::convert::Infallible;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};
use sluice_schema::audit::{ANONYMOUS, Call, code_name, sql_target};
use sluice_schema::auth::{BearerInterceptor, Principal};
use sluice_schema::pb;
use sluice_schema::time::now_unix_nanos;
use tonic::service::interceptor::InterceptedService;

use super::{COOKIE, Console, MAX_BODY_BYTES, SESSION_TTL};

type Reply = Response<BoxBody<Bytes, Infallible>>;

/// What is wrong with a request, before it becomes a [`Reply`].
struct Refusal {
    status: StatusCode,
    code: String,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    fn reply(self) -> Reply {
        error(self.status, &self.code, &self.message)
    }
}

/// Someone the API has authenticated, and how.
struct Caller {
    principal: Arc<Principal>,
    token: String,
    /// The session of a browser; `None` for a bearer token.
    session: Option<String>,
}

/// One request.
pub(super) async fn answer(
    console: &Console,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Reply {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    if path == "/api/v1/login" {
        return match method {
            Method::POST => login(console, request, peer).await,
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method",
                "POST /api/v1/login",
            ),
        };
    }
    if method == Method::GET
        && let Some((media, body)) = asset(&path)
    {
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, media)
            .header(header::CACHE_CONTROL, "no-cache")
            .header("x-content-type-options", "nosniff")
            .header("x-frame-options", "DENY")
            .header(
                "content-security-policy",
                "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
            )
            .header("referrer-policy", "no-referrer")
            .body(Full::new(Bytes::from_static(body.as_bytes())).boxed())
            .expect("a valid response");
    }
    if !path.starts_with("/api/v1/") {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("{path}: the console's API is under /api/v1/"),
        );
    }
    let caller = match authenticate(console, &request) {
        Ok(caller) => caller,
        Err(why) => {
            refused(console, &path, ANONYMOUS, "unauthenticated", &why, peer);
            return error(StatusCode::UNAUTHORIZED, "unauthenticated", &why);
        }
    };
    if method == Method::POST
        && caller.session.is_some()
        && let Err(refusal) = same_origin(&request)
    {
        refused(
            console,
            &path,
            &caller.principal.user,
            &refusal.code,
            &refusal.message,
            peer,
        );
        return refusal.reply();
    }
    match (method, path.as_str()) {
        (Method::GET, "/api/v1/whoami") => whoami(&caller),
        (Method::POST, "/api/v1/logout") => logout(console, &caller),
        (Method::POST, "/api/v1/query") => query(console, &caller, request).await,
        (Method::POST, "/api/v1/events") => events(console, &caller, request).await,
        (Method::POST, "/api/v1/search") => search(console, &caller, request).await,
        (Method::POST, "/api/v1/context") => context(console, &caller, request).await,
        (Method::GET, "/api/v1/status") => status(console, &caller).await,
        (Method::GET, "/api/v1/tail") => tail(console, &caller, &request),
        (_, "/api/v1/whoami" | "/api/v1/status" | "/api/v1/tail") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
            &format!("GET {path}"),
        ),
        (
            _,
            "/api/v1/logout" | "/api/v1/query" | "/api/v1/events" | "/api/v1/search"
            | "/api/v1/context",
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
            &format!("POST {path}"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("{path}: no such API (see docs/API.md)"),
        ),
    }
}

/// The console's pages, embedded in the binary (no build step: plain
/// HTML, CSS and JavaScript in `src/console/assets/`).
fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    Some(match path {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            include_str!("assets/index.html"),
        ),
        "/app.js" => (
            "text/javascript; charset=utf-8",
            include_str!("assets/app.js"),
        ),
        "/style.css" => ("text/css; charset=utf-8", include_str!("assets/style.css")),
        _ => return None,
    })
}

/// `POST /api/v1/login` `{"token": "…"}`: a session cookie for a good
/// token.
async fn login(console: &Console, request: Request<Incoming>, peer: SocketAddr) -> Reply {
    const METHOD: &str = "/api/v1/login";
    let body = match json_body(request).await {
        Ok(body) => body,
        Err(refusal) => return refusal.reply(),
    };
    let Some(token) = body.get("token").and_then(Value::as_str) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "expected {\"token\": \"…\"}",
        );
    };
    let Some(principal) = console.guard.tokens.authenticate(token.trim()) else {
        refused(
            console,
            METHOD,
            ANONYMOUS,
            "unauthenticated",
            "invalid token",
            peer,
        );
        return error(StatusCode::UNAUTHORIZED, "unauthenticated", "invalid token");
    };
    let id = console.sessions.open(token.trim());
    console.guard.audit.record(
        Call {
            actor: principal.user.clone(),
            method: format!("/console{METHOD}"),
            target: String::new(),
            job: String::new(),
            outcome: "ok".into(),
            peer: Some(peer),
        },
        now_unix_nanos(),
    );
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    let mut reply = ok(who(&principal));
    reply
        .headers_mut()
        .insert(header::SET_COOKIE, cookie.parse().expect("a valid header"));
    reply
}

/// `POST /api/v1/logout`: the session ends (a bearer token has none).
fn logout(console: &Console, caller: &Caller) -> Reply {
    if let Some(id) = &caller.session {
        console.sessions.close(id);
    }
    let mut reply = ok(json!({"logged_out": caller.session.is_some()}));
    let expired = format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0");
    reply
        .headers_mut()
        .insert(header::SET_COOKIE, expired.parse().expect("a valid header"));
    reply
}

/// `GET /api/v1/whoami`: the caller's user and roles.
fn whoami(caller: &Caller) -> Reply {
    ok(who(&caller.principal))
}

fn who(principal: &Principal) -> Value {
    json!({
        "user": principal.user,
        "admin": principal.is_admin(),
        // null: every role.
        "readable_roles": principal.readable_roles(),
    })
}

/// `POST /api/v1/query` `{"sql": "…", "from_unix_nanos": …, "to_unix_nanos":
/// …, "limit": …}`: the rows as JSON objects, through the query service with
/// the caller's token.
async fn query(console: &Console, caller: &Caller, request: Request<Incoming>) -> Reply {
    let body = match json_body(request).await {
        Ok(body) => body,
        Err(refusal) => return refusal.reply(),
    };
    let Some(sql) = body.get("sql").and_then(Value::as_str) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "expected {\"sql\": \"…\"}",
        );
    };
    match run(console, caller, sql, &Scope::of(&body)).await {
        Ok(table) => ok(table.json()),
        Err(refusal) => refusal.reply(),
    }
}

/// `POST /api/v1/events` `{"job": GLOB, "kind": K, "actor": GLOB, …}`: the
/// audit trail and the cluster's events, oldest first, as `sluice events`
/// asks for them.
async fn events(console: &Console, caller: &Caller, request: Request<Incoming>) -> Reply {
    let body = match json_body(request).await {
        Ok(body) => body,
        Err(refusal) => return refusal.reply(),
    };
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_string);
    let sql = crate::shared::sql::events(&crate::shared::sql::EventFilter {
        job: text("job"),
        kind: text("kind"),
        actor: text("actor"),
    });
    match run(console, caller, &sql, &Scope::of(&body)).await {
        Ok(table) => ok(table.json()),
        Err(refusal) => refusal.reply(),
    }
}

/// `POST /api/v1/search` `{"query": "…", "job": GLOB, "bucket_seconds": N,
/// …}`: the newest matching lines (at most `limit`, 1,000 by default) and
/// the matches per time bucket, by job and level, for the histogram.
async fn search(console: &Console, caller: &Caller, request: Request<Incoming>) -> Reply {
    use crate::shared::sql::{matches, quote};
    let body = match json_body(request).await {
        Ok(body) => body,
        Err(refusal) => return refusal.reply(),
    };
    let Some(query) = body.get("query").and_then(Value::as_str) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "expected {\"query\": \"…\"} (search() syntax)",
        );
    };
    let mut filter = format!("search(line, {})", quote(query));
    if let Some(job) = body.get("job").and_then(Value::as_str) {
        filter.push_str(&format!(" AND {}", matches("job", job)));
    }
    let bucket = body
        .get("bucket_seconds")
        .and_then(Value::as_u64)
        .unwrap_or(60)
        .max(1);
    let mut scope = Scope::of(&body);
    let limit = match scope.limit {
        0 => 1_000,
        n => n,
    };
    scope.limit = 0;
    let rows_sql = format!(
        "SELECT ts, CAST(ts_nanos AS VARCHAR) AS ts_nanos, job, instance, level, line, \
         CAST(source_id AS VARCHAR) AS source_id, \"offset\" FROM logs WHERE {filter} ORDER BY ts DESC LIMIT {limit}"
    );
    let histogram_sql = format!(
        "SELECT date_bin(INTERVAL '{bucket} seconds', ts) AS bucket, job, level, count(*) AS n \
         FROM logs WHERE {filter} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    );
    let (rows, histogram) = tokio::join!(
        run(console, caller, &rows_sql, &scope),
        run(console, caller, &histogram_sql, &scope)
    );
    match (rows, histogram) {
        (Ok(rows), Ok(histogram)) => ok(json!({
            "columns": rows.columns,
            "rows": rows.rows,
            "histogram": histogram.rows,
            "bucket_seconds": bucket,
            "warnings": rows.warnings,
            "stats": rows.stats,
        })),
        (Err(refusal), _) | (_, Err(refusal)) => refusal.reply(),
    }
}

/// `POST /api/v1/context` `{"hits": [{"job", "source_id", "offset",
/// "ts_unix_nanos"}], "before": B, "after": A}`: the lines around each hit,
/// as `sluice query -C` shows them.
async fn context(console: &Console, caller: &Caller, request: Request<Incoming>) -> Reply {
    let body = match json_body(request).await {
        Ok(body) => body,
        Err(refusal) => return refusal.reply(),
    };
    let Some(hits) = body.get("hits").and_then(Value::as_array) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "expected {\"hits\": [{\"job\", \"source_id\", \"offset\", \"ts_unix_nanos\"}]}",
        );
    };
    // The 64-bit ones come as strings (a browser's numbers keep 53 bits);
    // source_id is a u64 the archive keeps as the i64 of its bits.
    let int = |v: &Value, key: &str| {
        v.get(key).and_then(|n| {
            n.as_i64()
                .or_else(|| n.as_u64().map(|u| u as i64))
                .or_else(|| n.as_str().and_then(|s| s.parse::<i64>().ok()))
                .or_else(|| {
                    n.as_str()
                        .and_then(|s| s.parse::<u64>().ok().map(|u| u as i64))
                })
        })
    };
    let number = |v: &Value, key: &str| int(v, key).map(|i| i as u64);
    let mut wanted = Vec::with_capacity(hits.len());
    for hit in hits.iter().take(100) {
        let (Some(job), Some(source_id), Some(offset), Some(ts)) = (
            hit.get("job").and_then(Value::as_str),
            number(hit, "source_id"),
            number(hit, "offset"),
            int(hit, "ts_unix_nanos"),
        ) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                &format!("a hit needs job, source_id, offset and ts_unix_nanos: {hit}"),
            );
        };
        wanted.push(pb::Hit {
            job: job.to_string(),
            source_id,
            offset,
            ts_unix_nanos: ts,
        });
    }
    let lines = |key: &str| body.get(key).and_then(Value::as_u64).unwrap_or(3).min(100) as u32;
    let scope = Scope::of(&body);
    let request = pb::ContextRequest {
        hits: wanted,
        before: lines("before"),
        after: lines("after"),
        from_unix_nanos: scope.from,
        to_unix_nanos: scope.to,
    };
    let mut client = match query_client(console, caller) {
        Ok(client) => client,
        Err(refusal) => return refusal.reply(),
    };
    let reply = match client.context(request).await {
        Ok(reply) => reply.into_inner(),
        Err(status) => return grpc_error(&status),
    };
    let groups: Vec<Value> = reply
        .groups
        .iter()
        .map(|g| {
            json!({
                "hit": g.hit.as_ref().map(|h| json!({
                    "job": h.job,
                    "source_id": h.source_id.to_string(),
                    "offset": h.offset,
                    "ts_unix_nanos": h.ts_unix_nanos,
                })),
                "lines": g.lines.iter().map(|l| json!({
                    "ts_unix_nanos": l.ts_unix_nanos,
                    "instance": l.instance,
                    "offset": l.offset,
                    "line": l.line,
                    "hit": l.hit,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    ok(json!({ "groups": groups }))
}

/// `GET /api/v1/status`: what `sluice status --json` prints, scoped to the
/// caller's roles by the admin service.
async fn status(console: &Console, caller: &Caller) -> Reply {
    let mut client = match authed(console, caller) {
        Ok(channel) => pb::admin_client::AdminClient::new(channel),
        Err(refusal) => return refusal.reply(),
    };
    let reply = match client.status(pb::StatusRequest {}).await {
        Ok(reply) => reply.into_inner(),
        Err(status) => return grpc_error(&status),
    };
    let detail: Value = serde_json::from_str(&reply.detail_json).unwrap_or(Value::Null);
    ok(json!({
        "version": reply.version,
        "user": reply.user,
        "uptime_seconds": reply.uptime_seconds,
        "bus_url": reply.bus_url,
        "detail": detail,
    }))
}

/// `GET /api/v1/tail?job=GLOB&instances=LIST&grep=RE&level=L&lines=N&since=D`:
/// the live tail as server-sent events, one `data:` line per record as
/// `tailll --output json` prints it (lines and lifecycle notices: restarts,
/// moves), through tailll's own code with the caller's token. It follows
/// instances as they restart or move, until the client goes away; a tail
/// that cannot start sends one `event: error`.
fn tail(console: &Console, caller: &Caller, request: &Request<Incoming>) -> Reply {
    let query = request.uri().query().unwrap_or("");
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let param = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let Some(job) = param("job") else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "expected ?job=ROLE/ENV/NAME (or a glob)",
        );
    };
    let data_dir = console.upstream.data_dir.display().to_string();
    let mut argv: Vec<&str> = vec![
        "tailll",
        job,
        "--data-dir",
        &data_dir,
        "--token",
        &caller.token,
        "--output",
        "json",
        "--color",
        "never",
    ];
    for (key, flag) in [
        ("instances", "--instances"),
        ("grep", "--grep"),
        ("level", "--level"),
        ("lines", "--lines"),
        ("since", "--since"),
    ] {
        if let Some(value) = param(key) {
            argv.extend([flag, value]);
        }
    }
    let args = match <tailll::args::Args as clap::Parser>::try_parse_from(&argv) {
        Ok(args) => args,
        Err(e) => {
            let text = e.to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ");
            return error(StatusCode::BAD_REQUEST, "invalid_argument", first);
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let output = tailll::output::Output::new(SseWriter {
        tx: tx.clone(),
        pending: Vec::new(),
    });
    let user = caller.principal.user.clone();
    tokio::spawn(async move {
        let terminal = tailll::Terminal {
            stdout_is_terminal: false,
            no_color: true,
        };
        let run = tailll::follow(args, terminal, output, tailll::session::Interrupts::never());
        let gone = tx.clone();
        let keep_alive = async {
            // A comment now and then: a client that went away is noticed
            // even when no line comes.
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(15)).await;
                if tx
                    .send(Bytes::from_static(b": keep-alive\n\n"))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        };
        tokio::select! {
            result = run => {
                if let Err(e) = result {
                    let body = json!({"error": format!("{e:#}")});
                    let _ = gone.send(Bytes::from(format!("event: error\ndata: {body}\n\n"))).await;
                }
            }
            () = gone.closed() => {}
            () = keep_alive => {}
        }
        tracing::debug!(user = %user, "console live tail ended");
    });
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(hyper::body::Frame::data(bytes)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-content-type-options", "nosniff")
        .body(StreamBody::new(frames).boxed())
        .expect("a valid response")
}

/// tailll's output as server-sent events: each JSON line one `data:` frame.
/// Written from tailll's output thread; a client gone is a closed pipe to
/// it.
struct SseWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    pending: Vec<u8>,
}

impl std::io::Write for SseWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return Ok(buf.len());
        };
        let mut frames = Vec::with_capacity(end + 16);
        for line in self.pending[..end].split(|&b| b == b'\n') {
            frames.extend_from_slice(b"data: ");
            frames.extend_from_slice(line);
            frames.extend_from_slice(b"\n\n");
        }
        self.pending.drain(..=end);
        self.tx
            .blocking_send(Bytes::from(frames))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The time range and row limit every query endpoint takes.
struct Scope {
    from: i64,
    to: i64,
    limit: u64,
}

impl Scope {
    fn of(body: &Value) -> Scope {
        let int = |key: &str| body.get(key).and_then(Value::as_i64).unwrap_or(0);
        Scope {
            from: int("from_unix_nanos"),
            to: int("to_unix_nanos"),
            limit: int("limit").max(0) as u64,
        }
    }
}

/// A query's answer: column names, rows as JSON objects, warnings, what the
/// scan read.
struct Table {
    columns: Vec<String>,
    rows: Vec<Value>,
    warnings: Vec<String>,
    stats: Value,
}

impl Table {
    fn json(self) -> Value {
        json!({
            "columns": self.columns,
            "rows": self.rows,
            "warnings": self.warnings,
            "stats": self.stats,
        })
    }
}

/// The cluster's services as the caller: the shared channel with the
/// caller's token on every call.
type Authed = InterceptedService<tonic::transport::Channel, BearerInterceptor>;

fn authed(console: &Console, caller: &Caller) -> Result<Authed, Refusal> {
    let auth = BearerInterceptor::new(&caller.token)
        .map_err(|e| Refusal::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string()))?;
    Ok(InterceptedService::new(
        console.upstream.channel.clone(),
        auth,
    ))
}

/// A query client with the caller's token.
fn query_client(
    console: &Console,
    caller: &Caller,
) -> Result<pb::query_client::QueryClient<Authed>, Refusal> {
    Ok(pb::query_client::QueryClient::new(authed(console, caller)?)
        .max_decoding_message_size(64 << 20))
}

/// Runs `sql` on the query service as the caller.
async fn run(
    console: &Console,
    caller: &Caller,
    sql: &str,
    scope: &Scope,
) -> Result<Table, Refusal> {
    let mut client = query_client(console, caller)?;
    let request = pb::QueryRequest {
        sql: sql.to_string(),
        from_unix_nanos: scope.from,
        to_unix_nanos: scope.to,
        limit: scope.limit,
        ..Default::default()
    };
    let mut stream = client
        .run(request)
        .await
        .map_err(|status| grpc_refusal(&status))?
        .into_inner();
    let mut table = Table {
        columns: Vec::new(),
        rows: Vec::new(),
        warnings: Vec::new(),
        stats: Value::Null,
    };
    while let Some(reply) = stream
        .message()
        .await
        .map_err(|status| grpc_refusal(&status))?
    {
        if !reply.arrow_ipc.is_empty() {
            let (schema, batches) = sluice_query::service::decode_ipc(&reply.arrow_ipc)
                .map_err(|e| Refusal::new(StatusCode::BAD_GATEWAY, "internal", e))?;
            table.columns = schema.fields().iter().map(|f| f.name().clone()).collect();
            table.rows.extend(
                json_rows(&batches)
                    .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?,
            );
        }
        table.warnings.extend(reply.warnings);
        if let Some(s) = reply.stats {
            table.stats = json!({
                "splits_total": s.splits_total,
                "splits_pruned": s.splits_pruned,
                "splits_searched": s.splits_searched,
                "splits_read": s.splits_read,
                "rows_in_splits_read": s.rows_in_splits_read,
                "rows_selected_by_index": s.rows_selected_by_index,
            });
        }
    }
    tracing::debug!(user = %caller.principal.user, target = %sql_target(sql), rows = table.rows.len(), "console query");
    Ok(table)
}

/// Rows of `batches` as JSON objects (null columns left out, as Arrow's
/// JSON writer does).
fn json_rows(
    batches: &[datafusion::arrow::record_batch::RecordBatch],
) -> Result<Vec<Value>, String> {
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&_> = batches.iter().collect();
    writer
        .write_batches(&refs)
        .and_then(|()| writer.finish())
        .map_err(|e| format!("rows as JSON: {e}"))?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("rows as JSON: {e}"))
}

/// The caller: a bearer token, else a session cookie whose token still
/// authenticates; else why not.
fn authenticate(console: &Console, request: &Request<Incoming>) -> Result<Caller, String> {
    let headers = request.headers();
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or("the Authorization header is not `Bearer TOKEN`")?;
        let principal = console
            .guard
            .tokens
            .authenticate(token)
            .ok_or("invalid bearer token")?;
        return Ok(Caller {
            principal,
            token: token.to_string(),
            session: None,
        });
    }
    let id = cookie(request, COOKIE)
        .ok_or("log in first (POST /api/v1/login) or send a bearer token")?;
    let token = console
        .sessions
        .token(&id)
        .ok_or("the session has ended: log in again")?;
    match console.guard.tokens.authenticate(&token) {
        Some(principal) => Ok(Caller {
            principal,
            token,
            session: Some(id),
        }),
        None => {
            // Revoked since the login.
            console.sessions.close(&id);
            Err("the session's token is no longer valid: log in again".into())
        }
    }
}

/// The value of cookie `name`.
fn cookie(request: &Request<Incoming>, name: &str) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A cookie-authenticated `POST` must be JSON from this origin.
fn same_origin(request: &Request<Incoming>) -> Result<(), Refusal> {
    let headers = request.headers();
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_argument",
            "a request with the session cookie must be application/json",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if origin != format!("https://{host}") {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "permission_denied",
                format!("{origin} is not this console's origin"),
            ));
        }
    }
    Ok(())
}

/// The JSON object of the body, or what is wrong with it.
async fn json_body(request: Request<Incoming>) -> Result<Value, Refusal> {
    let bytes = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "resource_exhausted",
                format!("the body is larger than {MAX_BODY_BYTES} bytes, or was cut off"),
            ));
        }
    };
    let bad = |message: String| Refusal::new(StatusCode::BAD_REQUEST, "invalid_argument", message);
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(value) if value.is_object() => Ok(value),
        Ok(_) => Err(bad("the body must be a JSON object".into())),
        Err(e) => Err(bad(format!("the body is not JSON: {e}"))),
    }
}

/// A refused request on the audit trail (at its rate limit for refusals).
fn refused(console: &Console, method: &str, actor: &str, code: &str, why: &str, peer: SocketAddr) {
    console.guard.audit.refused(
        Call {
            actor: actor.to_string(),
            method: format!("/console{method}"),
            target: String::new(),
            job: String::new(),
            outcome: format!("{code}: {why}"),
            peer: Some(peer),
        },
        now_unix_nanos(),
    );
}

/// A gRPC failure as the HTTP status that means the same.
fn grpc_refusal(status: &tonic::Status) -> Refusal {
    use tonic::Code;
    let http = match status.code() {
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Refusal {
        status: http,
        code: code_name(status.code()),
        message: status.message().to_string(),
    }
}

fn grpc_error(status: &tonic::Status) -> Reply {
    grpc_refusal(status).reply()
}

fn ok(body: Value) -> Reply {
    json_reply(StatusCode::OK, &body)
}

/// `{"error": "…", "code": "…"}` with `status`.
fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    json_reply(status, &json!({"error": message, "code": code}))
}

fn json_reply(status: StatusCode, body: &Value) -> Reply {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-content-type-options", "nosniff")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("a valid response")
}
